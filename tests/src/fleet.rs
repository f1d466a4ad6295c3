//! The fleet under test: the real `nasfleet-controller`, `nasfleet-agent` and `nasfleet` binaries, started, stopped and queried by guards.
//!
//! Everything is synchronous: tests may be plain `#[test]`s, and the waits
//! are on other processes, so blocking is what they mean.

use crate::process::{ChildGuard, binary, check_output, command_line, run_output, wait_until};
use crate::sshd::TestSshd;
use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

/// Deadline of one CLI call or `agent join`.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a started controller gets to accept connections.
const CONTROLLER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `stop()` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Heartbeat period the tests run the controller with: short, so that
/// OFFLINE (three missed heartbeats) shows within seconds.
pub const TEST_HEARTBEAT_INTERVAL: &str = "1s";

/// Environment shared by every binary the harness starts.
fn set_child_env(cmd: &mut Command) {
    // Debug logs of our own crates make a CI failure diagnosable from the
    // dumped logs alone; a developer's RUST_LOG wins.
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env(
            "RUST_LOG",
            "info,nasfleet_controller=debug,nasfleet_agent=debug,nasfleet_proto=debug",
        );
    }
    // Logs are files, not terminals: no colour escapes.
    cmd.env("NO_COLOR", "1");
    // The agent runs zfs and zpool, which live in /usr/sbin.
    let mut paths: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    for dir in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !paths.iter().any(|p| p == Path::new(dir)) {
            paths.push(PathBuf::from(dir));
        }
    }
    if let Ok(path) = std::env::join_paths(paths) {
        cmd.env("PATH", path);
    }
}

/// The first `<base>`, `<base>-2`, `<base>-3`, ... not yet in `dir`, so two
/// controllers (or agents of the same name) in one test dir never share state.
fn fresh_subdir(dir: &Path, base: &str) -> PathBuf {
    let mut n = 1;
    loop {
        let name = if n == 1 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        let path = dir.join(&name);
        if !path.exists() && !crate::log_path(dir, &name).exists() {
            return path;
        }
        n += 1;
    }
}

/// Appends a command's output to a log file: one-shot commands (init, join)
/// belong in the same log as the daemon they prepare.
fn append_to_log(log: &Path, line: &str, output: &Output) -> Result<()> {
    if let Some(parent) = log.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(
        file,
        "==== {} ran: {line} ({})",
        chrono::Utc::now().to_rfc3339(),
        output.status
    )
    .and_then(|()| file.write_all(&output.stdout))
    .and_then(|()| file.write_all(&output.stderr))
    .with_context(|| format!("writing {}", log.display()))
}

/// What `nasfleet token create -o json` prints.
#[derive(Debug, Clone, Deserialize)]
pub struct JoinToken {
    pub token: String,
    pub ca_fingerprint: String,
    #[serde(default)]
    pub join_command: String,
    #[serde(default)]
    pub expires: Value,
}

/// One `nasfleet-controller`: a data dir made by `init`, a process while
/// started, and the admin CLI config to drive it. Killed on drop.
pub struct Controller {
    tmp: PathBuf,
    data_dir: PathBuf,
    name: String,
    listen: SocketAddr,
    url: String,
    log_path: PathBuf,
    /// `--heartbeat-interval` of the next start; default 1s.
    pub heartbeat_interval: String,
    /// `--log-format` of the next start; default "text".
    pub log_format: String,
    /// Extra `run` arguments of the next start.
    pub extra_run_args: Vec<String>,
    /// Where the web console listens (a free port, passed as --web-listen).
    web_listen: SocketAddr,
    /// Where `/metrics` is served (a free port, passed as --metrics-listen).
    metrics_listen: SocketAddr,
    child: Option<ChildGuard>,
}

impl Controller {
    /// `nasfleet-controller init --data-dir TMP/controller --listen
    /// 127.0.0.1:<free port>`; not started yet (see [`Self::start`]).
    pub fn init(tmp: &Path) -> Result<Controller> {
        Self::init_with(tmp, &[])
    }

    /// [`Self::init`] with extra `init` arguments, e.g. `["--name", "lab"]`.
    pub fn init_with(tmp: &Path, extra_init_args: &[&str]) -> Result<Controller> {
        let data_dir = fresh_subdir(tmp, "controller");
        let name = data_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("controller")
            .to_string();
        let log_path = crate::log_path(tmp, &name);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let listen = SocketAddr::new(ip, crate::free_port(ip)?);
        let mut web_port = crate::free_port(ip)?;
        while web_port == listen.port() {
            web_port = crate::free_port(ip)?;
        }
        let web_listen = SocketAddr::new(ip, web_port);
        let mut metrics_port = crate::free_port(ip)?;
        while metrics_port == listen.port() || metrics_port == web_port {
            metrics_port = crate::free_port(ip)?;
        }
        let metrics_listen = SocketAddr::new(ip, metrics_port);
        let mut cmd = Command::new(binary("nasfleet-controller")?);
        cmd.arg("init")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(listen.to_string())
            .args(extra_init_args);
        set_child_env(&mut cmd);
        let line = command_line(&cmd);
        let output = run_output(&mut cmd, CLI_TIMEOUT)?;
        append_to_log(&log_path, &line, &output)?;
        check_output(&line, &output)?;

        let mut controller = Controller {
            tmp: tmp.to_path_buf(),
            data_dir,
            name,
            listen,
            url: format!("https://{listen}"),
            log_path,
            heartbeat_interval: TEST_HEARTBEAT_INTERVAL.to_string(),
            log_format: "text".to_string(),
            extra_run_args: Vec::new(),
            web_listen,
            metrics_listen,
            child: None,
        };
        // The CLI config names the URL init chose; agents must dial the same.
        if let Some(url) = controller.url_from_admin_config()? {
            controller.url = url;
        }
        controller.write_listeners()?;
        Ok(controller)
    }

    /// Puts the console and metrics listeners this test chose into
    /// controller.toml (init put them on the ports after the gRPC one,
    /// which other tests may hold), so `run` and `check` agree on them.
    fn write_listeners(&self) -> Result<()> {
        let path = self.data_dir.join("controller.toml");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        table.insert("web_listen".into(), self.web_listen.to_string().into());
        table.insert("web_url".into(), self.web_url().into());
        table.insert(
            "metrics_listen".into(),
            self.metrics_listen.to_string().into(),
        );
        fs::write(&path, toml::to_string(&table)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    fn url_from_admin_config(&self) -> Result<Option<String>> {
        let path = self.admin_config();
        let text = fs::read_to_string(&path)
            .with_context(|| format!("reading {} written by `init`", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(table
            .get("controller")
            .and_then(|v| v.as_str())
            .map(str::to_string))
    }

    /// `nasfleet-controller run`, then waits (30 s at most) until it accepts
    /// TCP connections on its listen address.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("controller {} is already running", self.name);
        }
        let mut cmd = Command::new(binary("nasfleet-controller")?);
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--heartbeat-interval", &self.heartbeat_interval])
            .args(["--log-format", &self.log_format])
            .args(&self.extra_run_args);
        set_child_env(&mut cmd);
        let mut child = ChildGuard::spawn(&self.name, &mut cmd, &self.log_path)?;
        let deadline = Instant::now() + CONTROLLER_START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "controller exited during start-up ({status}); log:\n{}",
                    child.log()
                );
            }
            if TcpStream::connect_timeout(&self.listen, Duration::from_secs(1)).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "controller does not listen on {} after {CONTROLLER_START_TIMEOUT:?}; log:\n{}",
                    self.listen,
                    child.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Graceful stop: SIGTERM, then waits (SIGKILL after 10 s). Returns the
    /// exit status so a test can check the shutdown was clean.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("controller {} is not running", self.name))?;
        child.terminate_with_grace(STOP_GRACE)
    }

    /// Crash: SIGKILL, no chance to flush anything.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("controller {} is not running", self.name))?;
        child.kill().map(drop)
    }

    /// [`Self::stop`] (if running) then [`Self::start`].
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.start()
    }

    /// The controller's process id while started, for tests that signal it
    /// while other threads drive it through the CLI.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// True while the controller process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// Waits at most `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.child
            .as_mut()
            .ok_or_else(|| anyhow!("controller {} is not running", self.name))?
            .wait_exit(timeout)
    }

    /// `https://127.0.0.1:PORT` (as written into admin.toml by init).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The web console's URL, `https://127.0.0.1:PORT`.
    pub fn web_url(&self) -> String {
        format!("https://{}", self.web_listen)
    }

    /// `http://127.0.0.1:PORT/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_listen)
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The test dir this controller (and its agents) live in.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// `DATA_DIR/admin.toml`, the first admin's CLI config.
    pub fn admin_config(&self) -> PathBuf {
        self.data_dir.join("admin.toml")
    }

    /// The log so far: `init` output and every run.
    pub fn log(&self) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log_path.display()),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `nasfleet --config admin.toml ARGS`, whatever its exit status.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = self.cli_command(args)?;
        run_output(&mut cmd, CLI_TIMEOUT)
    }

    /// The CLI command, for tests that need to tweak it (env, config).
    pub fn cli_command(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(binary("nasfleet")?);
        cmd.arg("--config").arg(self.admin_config()).args(args);
        // Quiet by default: stdout must stay machine-readable.
        cmd.env("NO_COLOR", "1");
        Ok(cmd)
    }

    /// [`Self::cli`] that must exit 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.cli_command(args)?;
        let line = command_line(&cmd);
        let output = run_output(&mut cmd, CLI_TIMEOUT)?;
        check_output(&line, &output)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `nasfleet --config admin.toml -o json ARGS`, which must exit 0 and
    /// print JSON.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value> {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let stdout = self.cli_ok(&full)?;
        serde_json::from_str(&stdout).with_context(|| {
            format!(
                "`nasfleet -o json {}` printed no JSON: {stdout}",
                args.join(" ")
            )
        })
    }

    /// A fresh single-use join token (`token create`).
    pub fn create_token(&self) -> Result<JoinToken> {
        self.create_token_with(&[])
    }

    /// `token create EXTRA`, e.g. `["--ttl", "1s"]`.
    pub fn create_token_with(&self, extra: &[&str]) -> Result<JoinToken> {
        let mut args = vec!["token", "create"];
        args.extend_from_slice(extra);
        let value = self.cli_json(&args)?;
        serde_json::from_value(value.clone())
            .with_context(|| format!("unexpected `token create` output: {value}"))
    }

    /// `system list` as JSON objects.
    pub fn systems(&self) -> Result<Vec<Value>> {
        match self.cli_json(&["system", "list"])? {
            Value::Array(systems) => Ok(systems),
            other => bail!("`system list` printed no JSON array: {other}"),
        }
    }

    /// The `system list` entry named `name`, if listed.
    pub fn system(&self, name: &str) -> Result<Option<Value>> {
        Ok(self
            .systems()?
            .into_iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(name)))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // A running child prints its log itself when dropped in a panic; a
        // stopped one (or a failed start) leaves that to us.
        if self.child.take().is_none() && std::thread::panicking() {
            eprintln!(
                "===== log of {} ({}) =====\n{}",
                self.name,
                self.log_path.display(),
                crate::read_log_tail(&self.log_path, 256 * 1024)
            );
        }
    }
}

/// One enrolled `nasfleet-agent`: a state dir made by `join`, a process
/// while started. Killed on drop.
pub struct Agent {
    name: String,
    state_dir: PathBuf,
    log_path: PathBuf,
    pools: Vec<String>,
    ssh_address: Option<String>,
    ssh_host_keys: Vec<PathBuf>,
    /// `--log-format` of the next start; default "text".
    pub log_format: String,
    /// Extra `run` arguments of the next start.
    pub extra_run_args: Vec<String>,
    child: Option<ChildGuard>,
}

impl Agent {
    /// Enrolls system `name` with a fresh token: `nasfleet-agent join` into
    /// `TMP/agent-NAME`. Not started yet (see [`Self::start`]).
    pub fn join(controller: &Controller, name: &str) -> Result<Agent> {
        let token = controller.create_token()?;
        Self::join_with_token(controller, name, &token)
    }

    /// [`Self::join`] with a given token (which must work).
    pub fn join_with_token(
        controller: &Controller,
        name: &str,
        token: &JoinToken,
    ) -> Result<Agent> {
        let state_dir = fresh_subdir(controller.tmp_dir(), &format!("agent-{name}"));
        let log_name = state_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("agent")
            .to_string();
        let log_path = crate::log_path(controller.tmp_dir(), &log_name);
        let mut cmd = join_command(
            controller.url(),
            &token.token,
            &token.ca_fingerprint,
            name,
            &state_dir,
        )?;
        let line = command_line(&cmd);
        let output = run_output(&mut cmd, CLI_TIMEOUT)?;
        append_to_log(&log_path, &line, &output)?;
        check_output(&line, &output).context("agent join failed")?;
        Ok(Agent {
            name: name.to_string(),
            state_dir,
            log_path,
            pools: Vec::new(),
            ssh_address: None,
            ssh_host_keys: Vec::new(),
            log_format: "text".to_string(),
            extra_run_args: Vec::new(),
            child: None,
        })
    }

    /// `nasfleet-agent run --state-dir DIR --pool P... [--ssh-address A
    /// --ssh-host-key K]`. Returns once spawned; wait for the controller to
    /// see it with [`wait_for_status`].
    pub fn start(&mut self, pools: &[&str], sshd: Option<&TestSshd>) -> Result<()> {
        self.pools = pools.iter().map(|p| p.to_string()).collect();
        self.ssh_address = sshd.map(TestSshd::address);
        self.ssh_host_keys = sshd.map(TestSshd::host_key_pub_path).into_iter().collect();
        self.spawn()
    }

    /// Starts again with the arguments of the last [`Self::start`].
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("agent {} is already running", self.name);
        }
        let mut cmd = Command::new(binary("nasfleet-agent")?);
        cmd.arg("run").arg("--state-dir").arg(&self.state_dir);
        for pool in &self.pools {
            cmd.args(["--pool", pool]);
        }
        if let Some(address) = &self.ssh_address {
            cmd.args(["--ssh-address", address]);
        }
        for key in &self.ssh_host_keys {
            cmd.arg("--ssh-host-key").arg(key);
        }
        cmd.args(["--log-format", &self.log_format])
            .args(&self.extra_run_args);
        set_child_env(&mut cmd);
        let label = format!("agent-{}", self.name);
        self.child = Some(ChildGuard::spawn(&label, &mut cmd, &self.log_path)?);
        Ok(())
    }

    /// Graceful stop: SIGTERM, then waits (SIGKILL after 10 s).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("agent {} is not running", self.name))?;
        child.terminate_with_grace(STOP_GRACE)
    }

    /// Crash: SIGKILL the agent and whatever it was running (zfs, ssh).
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("agent {} is not running", self.name))?;
        child.kill().map(drop)
    }

    /// True while the agent process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// Sends `signal` to the agent process alone, leaving what it started
    /// to the agent (unlike [`Self::stop`], which also kills leftovers):
    /// e.g. SIGTERM, to see what the agent cleans up itself.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        self.child
            .as_mut()
            .ok_or_else(|| anyhow!("agent {} was not started", self.name))?
            .signal(signal)
    }

    /// Waits at most `timeout` for the agent to exit by itself, e.g. with 78
    /// after its certificate was revoked.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.child
            .as_mut()
            .ok_or_else(|| anyhow!("agent {} was not started", self.name))?
            .wait_exit(timeout)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The log so far: `join` output and every run.
    pub fn log(&self) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log_path.display()),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // See `Drop for Controller`.
        if self.child.take().is_none() && std::thread::panicking() {
            eprintln!(
                "===== log of agent {} ({}) =====\n{}",
                self.name,
                self.log_path.display(),
                crate::read_log_tail(&self.log_path, 256 * 1024)
            );
        }
    }
}

/// `nasfleet-agent join --controller URL --token T --ca-fingerprint FP
/// --name NAME --state-dir DIR`, for tests that expect it to fail (reused or
/// expired token, wrong fingerprint). Run it with [`run_output`].
pub fn join_command(
    url: &str,
    token: &str,
    ca_fingerprint: &str,
    name: &str,
    state_dir: &Path,
) -> Result<Command> {
    let mut cmd = Command::new(binary("nasfleet-agent")?);
    cmd.arg("join")
        .args(["--controller", url])
        .args(["--token", token])
        .args(["--ca-fingerprint", ca_fingerprint])
        .args(["--name", name])
        .arg("--state-dir")
        .arg(state_dir);
    set_child_env(&mut cmd);
    Ok(cmd)
}

/// Polls `system list` (every 250 ms, at most `timeout`) until system `name`
/// has `status` ("ONLINE"/"OFFLINE"); returns its entry. The error quotes
/// the last entry seen.
pub fn wait_for_status(
    controller: &Controller,
    name: &str,
    status: &str,
    timeout: Duration,
) -> Result<Value> {
    let mut last: Option<Value> = None;
    let result = wait_until(timeout, Duration::from_millis(250), || {
        let system = controller.system(name)?;
        let matches = system
            .as_ref()
            .and_then(|s| s.get("status"))
            .and_then(Value::as_str)
            == Some(status);
        last = system;
        Ok(matches)
    });
    match result {
        Ok(()) => last.ok_or_else(|| anyhow!("system {name} vanished")),
        Err(e) => {
            let seen = match &last {
                Some(s) => s.to_string(),
                None => "not listed".to_string(),
            };
            Err(e.context(format!(
                "system {name} did not become {status} within {timeout:?}; last seen: {seen}"
            )))
        }
    }
}
