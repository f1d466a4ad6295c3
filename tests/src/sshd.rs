//! A real OpenSSH server per test "host": its own loopback address, port, host key and config, stopped on drop.

use crate::process::{ChildGuard, run_ok, wait_for_greeting};
use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// sshd must be started by absolute path: it re-executes itself per
/// connection and refuses to run otherwise.
pub const SSHD: &str = "/usr/sbin/sshd";

/// sshd's privilege-separation dir; the Debian package creates it only when
/// its systemd unit starts, which never happens in a container.
const PRIVSEP_DIR: &str = "/run/sshd";

/// How long sshd gets to show its `SSH-2.0` banner.
const BANNER_TIMEOUT: Duration = Duration::from_secs(10);

/// How often start-up is retried when the port picked turns out taken.
const START_ATTEMPTS: usize = 3;

/// A running `sshd -D -e -f CONFIG` listening on one loopback address.
///
/// Root may log in with a key only. Keys are accepted from
/// [`Self::authorized_keys_path`] (a file of this instance) and from the
/// user's own `~/.ssh/authorized_keys`, the file an agent that authorizes
/// replication keys on a real NAS writes to.
pub struct TestSshd {
    child: Option<ChildGuard>,
    ip: Ipv4Addr,
    port: u16,
    dir: PathBuf,
    config: PathBuf,
    log_path: PathBuf,
    host_key: PathBuf,
    fingerprint: String,
}

impl TestSshd {
    /// Starts sshd on the next loopback address of this process (127.0.0.2,
    /// 127.0.0.3, ...) and a free port; files live in `dir/sshd-IP-PORT/`,
    /// the log in `dir/logs/sshd-IP-PORT.log`.
    pub fn start(dir: &Path) -> Result<TestSshd> {
        Self::start_on(dir, crate::next_loopback_ip())
    }

    /// [`Self::start`] on a given loopback address.
    pub fn start_on(dir: &Path, ip: Ipv4Addr) -> Result<TestSshd> {
        if !ip.is_loopback() {
            bail!("test sshd only listens on loopback, not {ip}");
        }
        fs::create_dir_all(PRIVSEP_DIR).with_context(|| format!("creating {PRIVSEP_DIR}"))?;
        // sshd refuses a privsep dir that others can write to.
        fs::set_permissions(PRIVSEP_DIR, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 755 {PRIVSEP_DIR}"))?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = crate::free_port(IpAddr::V4(ip))?;
            match Self::start_once(dir, ip, port) {
                Ok(sshd) => return Ok(sshd),
                // The free port may have been taken between probing and
                // binding; a fresh port is the fix.
                Err(e) if format!("{e:#}").contains("Address already in use") => {
                    last_error = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("sshd did not start")))
    }

    fn start_once(dir: &Path, ip: Ipv4Addr, port: u16) -> Result<TestSshd> {
        let label = format!("sshd-{ip}-{port}");
        let home = dir.join(&label);
        fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        let host_key = home.join("ssh_host_ed25519_key");
        if !host_key.exists() {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-t", "ed25519", "-N", "", "-q", "-C"])
                    .arg(&label)
                    .arg("-f")
                    .arg(&host_key),
            )
            .context("generating the test sshd's host key")?;
        }
        let authorized_keys = home.join("authorized_keys");
        if !authorized_keys.exists() {
            fs::write(&authorized_keys, "")
                .with_context(|| format!("creating {}", authorized_keys.display()))?;
        }
        let config = home.join("sshd_config");
        fs::write(
            &config,
            sshd_config(
                ip,
                port,
                &host_key,
                &home.join("sshd.pid"),
                &authorized_keys,
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        // sshd, as root, insists its config is not writable by others.
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", config.display()))?;
        let fingerprint = fingerprint_of(&host_key.with_extension("pub"))?;

        let log_path = crate::log_path(dir, &label);
        let child = ChildGuard::spawn(
            &label,
            Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config),
            &log_path,
        )?;
        let mut sshd = TestSshd {
            child: Some(child),
            ip,
            port,
            dir: home,
            config,
            log_path,
            host_key,
            fingerprint,
        };
        sshd.wait_for_banner()?;
        Ok(sshd)
    }

    /// Polls the port until it greets with `SSH-2.0`, for at most 10 s;
    /// fails early (with sshd's log) if sshd exits.
    fn wait_for_banner(&mut self) -> Result<()> {
        let socket = self.socket_addr();
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("sshd on {socket} is not running"))?;
        wait_for_greeting(child, socket, "sshd", "SSH-2.0", BANNER_TIMEOUT)
    }

    /// `"127.0.0.N:PORT"`, what an agent reports as its SSH address.
    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.port)
    }

    /// The address alone, `"127.0.0.N"`.
    pub fn host(&self) -> String {
        self.ip.to_string()
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// This instance's directory (config, host key, pid file, authorized_keys).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn host_key_path(&self) -> &Path {
        &self.host_key
    }

    /// The public host key file, for `nasfleet-agent run --ssh-host-key`.
    pub fn host_key_pub_path(&self) -> PathBuf {
        self.host_key.with_extension("pub")
    }

    /// The public host key line, `"ssh-ed25519 AAAA... comment"`.
    pub fn host_key_pub(&self) -> Result<String> {
        let path = self.host_key_pub_path();
        Ok(fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    }

    /// `"ssh-ed25519 SHA256:..."`, from `ssh-keygen -lf`.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A known_hosts line for this server, `"[127.0.0.N]:PORT ssh-ed25519 AAAA..."`.
    pub fn known_hosts_line(&self) -> Result<String> {
        let key = self.host_key_pub()?;
        let mut words = key.split_whitespace();
        let (Some(kind), Some(blob)) = (words.next(), words.next()) else {
            bail!("malformed host key {key:?}");
        };
        Ok(format!("[{}]:{} {kind} {blob}", self.ip, self.port))
    }

    /// This instance's own authorized_keys file (see the type's docs).
    pub fn authorized_keys_path(&self) -> PathBuf {
        self.dir.join("authorized_keys")
    }

    /// Appends a public key line to [`Self::authorized_keys_path`].
    pub fn authorize_key(&self, public_key_line: &str) -> Result<()> {
        use std::io::Write;
        let path = self.authorized_keys_path();
        let mut file = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(file, "{}", public_key_line.trim())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// An `ssh` client command that logs in as root with `identity`, trusts
    /// exactly this server's host key (a known_hosts file in [`Self::dir`])
    /// and never prompts; append the remote command's words with `.arg()`.
    pub fn ssh_command(&self, identity: &Path) -> Result<Command> {
        let known_hosts = self.dir.join("known_hosts");
        fs::write(&known_hosts, format!("{}\n", self.known_hosts_line()?))
            .with_context(|| format!("writing {}", known_hosts.display()))?;
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(identity)
            .args(["-p", &self.port.to_string()])
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .args(["-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg(format!("root@{}", self.ip))
            .arg("--");
        Ok(cmd)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log_path.display()),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// True while sshd runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// Stops sshd (SIGTERM) and the sessions it spawned, e.g. to test a
    /// target host that is down. Address, port and key stay reserved for
    /// [`Self::restart`].
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.terminate()?;
        }
        Ok(())
    }

    /// Starts sshd again on the same address, port and host key.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let child = ChildGuard::spawn(
            &format!("sshd-{}-{}", self.ip, self.port),
            Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&self.config),
            &self.log_path,
        )?;
        self.child = Some(child);
        self.wait_for_banner()
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        // A running sshd's guard prints its log in a panic; a stopped one's
        // log is printed here.
        if self.child.take().is_none() && std::thread::panicking() {
            eprintln!(
                "===== log of stopped sshd {} =====\n{}",
                self.address(),
                crate::read_log_tail(&self.log_path, 256 * 1024)
            );
        }
    }
}

/// The whole sshd config of a test host. Nothing is included from
/// /etc/ssh, so the machine's own settings cannot leak in.
fn sshd_config(
    ip: Ipv4Addr,
    port: u16,
    host_key: &Path,
    pid_file: &Path,
    authorized_keys: &Path,
) -> String {
    format!(
        "# Written by the nasfleet test harness.\n\
         ListenAddress {ip}:{port}\n\
         AddressFamily inet\n\
         HostKey {host_key}\n\
         PidFile {pid_file}\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         # Temp dirs live under /tmp, which is world-writable: StrictModes\n\
         # would reject every authorized_keys file below it.\n\
         StrictModes no\n\
         AuthorizedKeysFile {authorized_keys} .ssh/authorized_keys\n\
         UseDNS no\n\
         PrintMotd no\n\
         # Replication and rsync tests open several sessions at once.\n\
         MaxStartups 50:30:100\n\
         MaxSessions 50\n\
         LogLevel VERBOSE\n\
         Subsystem sftp internal-sftp\n",
        host_key = host_key.display(),
        pid_file = pid_file.display(),
        authorized_keys = authorized_keys.display(),
    )
}

/// `"ssh-ed25519 SHA256:..."` from `ssh-keygen -lf KEY.pub`.
fn fingerprint_of(public_key: &Path) -> Result<String> {
    let out = run_ok(Command::new("ssh-keygen").arg("-lf").arg(public_key))?;
    parse_fingerprint(&out).with_context(|| {
        format!(
            "unexpected `ssh-keygen -lf {}` output {out:?}",
            public_key.display()
        )
    })
}

/// Turns `256 SHA256:abc comment (ED25519)` into `ssh-ed25519 SHA256:abc`.
pub(crate) fn parse_fingerprint(line: &str) -> Option<String> {
    let line = line.trim();
    let hash = line.split_whitespace().nth(1)?;
    if !hash.starts_with("SHA256:") {
        return None;
    }
    let kind = line.rsplit_once('(')?.1.strip_suffix(')')?;
    let algorithm = match kind {
        "ED25519" => "ssh-ed25519",
        "RSA" => "ssh-rsa",
        _ => return None,
    };
    Some(format!("{algorithm} {hash}"))
}

/// Generates a client key pair `dir/NAME` + `dir/NAME.pub` (ed25519, no
/// passphrase) and returns the private key's path.
pub fn generate_client_key(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    run_ok(
        Command::new("ssh-keygen")
            .args(["-t", "ed25519", "-N", "", "-q", "-C", name, "-f"])
            .arg(&path),
    )
    .context("generating a client key")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_line_is_reformatted() {
        assert_eq!(
            parse_fingerprint("256 SHA256:n1Pk9xX3+u0ZyQ sshd-127.0.0.2-2222 (ED25519)\n"),
            Some("ssh-ed25519 SHA256:n1Pk9xX3+u0ZyQ".to_string())
        );
        assert_eq!(parse_fingerprint("256 MD5:aa:bb x (ED25519)"), None);
        assert_eq!(parse_fingerprint(""), None);
    }

    #[test]
    fn config_listens_on_its_address_only() {
        let config = sshd_config(
            Ipv4Addr::new(127, 0, 0, 3),
            2022,
            Path::new("/t/key"),
            Path::new("/t/pid"),
            Path::new("/t/ak"),
        );
        assert!(config.contains("ListenAddress 127.0.0.3:2022\n"));
        assert!(config.contains("PermitRootLogin prohibit-password\n"));
        assert!(config.contains("AuthorizedKeysFile /t/ak .ssh/authorized_keys\n"));
    }
}
