//! A real rsync daemon per test "host": its own loopback address, port, config and modules, stopped on drop.

use crate::process::{ChildGuard, wait_for_greeting};
use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long the daemon gets to greet with `@RSYNCD:`.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// How often start-up is retried when the port picked turns out taken.
const START_ATTEMPTS: usize = 3;

/// A running `rsync --daemon --no-detach --config FILE` on one loopback
/// address, serving the modules the test named (read-write, as root, no
/// chroot).
///
/// The daemon runs as root (`uid = root`), so files pushed to a module are
/// owned by root whatever user the client runs as; a test that wants to see
/// "who copied" pulls from a module instead.
pub struct TestRsyncd {
    child: Option<ChildGuard>,
    ip: Ipv4Addr,
    port: u16,
    dir: PathBuf,
    config: PathBuf,
    pid_file: PathBuf,
    log_path: PathBuf,
    modules: Vec<(String, PathBuf)>,
}

impl TestRsyncd {
    /// Starts a daemon on the next loopback address of this process and a
    /// free port, serving `modules` (name → directory, created if missing).
    /// Its config and pid file live in `dir/rsyncd-IP-PORT/`, its log
    /// (daemon log file and stderr together) in `dir/logs/rsyncd-IP-PORT.log`.
    pub fn start(dir: &Path, modules: &[(&str, &Path)]) -> Result<TestRsyncd> {
        Self::start_on(dir, crate::next_loopback_ip(), modules)
    }

    /// [`Self::start`] on a given loopback address.
    pub fn start_on(dir: &Path, ip: Ipv4Addr, modules: &[(&str, &Path)]) -> Result<TestRsyncd> {
        if !ip.is_loopback() {
            bail!("the test rsync daemon only listens on loopback, not {ip}");
        }
        let mut owned = Vec::with_capacity(modules.len());
        for (name, path) in modules {
            check_module(name, path)?;
            fs::create_dir_all(path)
                .with_context(|| format!("creating module dir {}", path.display()))?;
            owned.push((name.to_string(), path.to_path_buf()));
        }
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = crate::free_port(IpAddr::V4(ip))?;
            match Self::start_once(dir, ip, port, owned.clone()) {
                Ok(daemon) => return Ok(daemon),
                // The free port may have been taken between probing and
                // binding; a fresh port is the fix.
                Err(e) if format!("{e:#}").contains("Address already in use") => {
                    last_error = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("rsync daemon did not start")))
    }

    fn start_once(
        dir: &Path,
        ip: Ipv4Addr,
        port: u16,
        modules: Vec<(String, PathBuf)>,
    ) -> Result<TestRsyncd> {
        let label = format!("rsyncd-{ip}-{port}");
        let home = dir.join(&label);
        fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        let config = home.join("rsyncd.conf");
        let pid_file = home.join("rsyncd.pid");
        let log_path = crate::log_path(dir, &label);
        fs::write(
            &config,
            rsyncd_config(ip, port, &pid_file, &log_path, &modules),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let mut daemon = TestRsyncd {
            child: None,
            ip,
            port,
            dir: home,
            config,
            pid_file,
            log_path,
            modules,
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    fn spawn(&mut self) -> Result<()> {
        // rsync creates its pid file exclusively: one left by a killed
        // daemon would stop the next start.
        let _ = fs::remove_file(&self.pid_file);
        let child = ChildGuard::spawn(
            &format!("rsyncd-{}-{}", self.ip, self.port),
            Command::new("rsync")
                .arg("--daemon")
                .arg("--no-detach")
                .arg("--config")
                .arg(&self.config),
            &self.log_path,
        )?;
        self.child = Some(child);
        self.wait_for_greeting()
    }

    /// Polls the port until it greets with `@RSYNCD:`, for at most 10 s;
    /// fails early (with the log) if the daemon exits.
    fn wait_for_greeting(&mut self) -> Result<()> {
        let socket = self.socket_addr();
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("rsync daemon on {socket} is not running"))?;
        wait_for_greeting(child, socket, "rsync daemon", "@RSYNCD:", GREETING_TIMEOUT)
    }

    /// `"127.0.0.N:PORT"`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.port)
    }

    /// The address alone, `"127.0.0.N"`, what an rsync task's remote host is.
    pub fn host(&self) -> String {
        self.ip.to_string()
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory a module serves; an error for a module this daemon
    /// does not have.
    pub fn module_path(&self, name: &str) -> Result<&Path> {
        self.modules
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_path())
            .ok_or_else(|| anyhow!("rsync daemon {} has no module '{name}'", self.address()))
    }

    /// `rsync://127.0.0.N:PORT/NAME/`, for running rsync by hand.
    pub fn module_url(&self, name: &str) -> String {
        format!("rsync://{}:{}/{name}/", self.ip, self.port)
    }

    /// This instance's directory (config, pid file).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The log so far: the daemon's log file and its stderr, in one file.
    pub fn log(&self) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log_path.display()),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// True while the daemon runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// Stops the daemon (SIGTERM, then SIGKILL) and the transfers it forked,
    /// e.g. to test a host that is down. Address, port and config stay
    /// reserved for [`Self::restart`].
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.terminate()?;
        }
        Ok(())
    }

    /// Starts the daemon again on the same address, port and modules.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }
}

impl Drop for TestRsyncd {
    fn drop(&mut self) {
        // A running daemon's guard prints its log in a panic; a stopped
        // one's log is printed here.
        if self.child.take().is_none() && std::thread::panicking() {
            eprintln!(
                "===== log of stopped rsync daemon {} =====\n{}",
                self.address(),
                crate::read_log_tail(&self.log_path, 256 * 1024)
            );
        }
    }
}

/// Module names end up in URLs and in the config's `[section]` headers;
/// paths end up on config lines.
fn check_module(name: &str, path: &Path) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("module name {name:?} must be letters, digits, '-', '_' or '.'");
    }
    let text = path.to_string_lossy();
    if !path.is_absolute() || text.contains(['\n', '\r', '\0']) {
        bail!("module path {text:?} must be absolute and on one line");
    }
    Ok(())
}

/// The whole daemon config. Nothing is read from /etc/rsyncd.conf.
fn rsyncd_config(
    ip: Ipv4Addr,
    port: u16,
    pid_file: &Path,
    log_file: &Path,
    modules: &[(String, PathBuf)],
) -> String {
    let mut config = format!(
        "# Written by the nasfleet test harness.\n\
         address = {ip}\n\
         port = {port}\n\
         pid file = {pid_file}\n\
         log file = {log_file}\n\
         use chroot = no\n\
         uid = root\n\
         gid = root\n\
         # No DNS on loopback test hosts.\n\
         reverse lookup = no\n\
         # Tests run several transfers at once.\n\
         max connections = 0\n",
        pid_file = pid_file.display(),
        log_file = log_file.display(),
    );
    for (name, path) in modules {
        config.push_str(&format!(
            "\n[{name}]\n    path = {}\n    read only = no\n",
            path.display()
        ));
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_its_address_and_serves_writable_modules() {
        let config = rsyncd_config(
            Ipv4Addr::new(127, 0, 0, 4),
            8873,
            Path::new("/t/pid"),
            Path::new("/t/log"),
            &[("data".to_string(), PathBuf::from("/t/data"))],
        );
        assert!(config.contains("address = 127.0.0.4\nport = 8873\n"));
        assert!(config.contains("use chroot = no\nuid = root\ngid = root\n"));
        assert!(config.contains("\n[data]\n    path = /t/data\n    read only = no\n"));
    }

    #[test]
    fn module_names_and_paths_are_checked() {
        assert!(check_module("data-1", Path::new("/t/x")).is_ok());
        assert!(check_module("a b", Path::new("/t/x")).is_err());
        assert!(check_module("x]", Path::new("/t/x")).is_err());
        assert!(check_module("x", Path::new("rel")).is_err());
        assert!(check_module("x", Path::new("/t/a\nb")).is_err());
    }
}
