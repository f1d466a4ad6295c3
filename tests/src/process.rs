//! Child processes for tests: a guard that always kills and reaps, command runs with a deadline, bounded polling, and finding the project's binaries.

use anyhow::{Context, Result, anyhow, bail};
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a guarded process gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// Deadline of [`run_ok`]: generous for zfs-fuse on a busy 2-core machine,
/// yet a hung command fails the test instead of the CI run.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a SIGKILLed process may take to be reaped. A process stuck in a
/// FUSE call (zfs-fuse) can sit in D state for a while.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// A long-running child (controller, agent, sshd) whose stdout and stderr go
/// to a log file, killed and reaped on drop.
///
/// Drop sends SIGTERM, then SIGKILL after [`TERM_GRACE`], and also SIGKILLs
/// whatever descendants the child had (ssh, zfs, rsync): a test must leave no
/// process behind. While the thread panics, drop prints the log to stderr.
pub struct ChildGuard {
    name: String,
    command_line: String,
    log_path: PathBuf,
    child: Child,
    exit: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin from /dev/null and stdout+stderr appended to
    /// `log_path` (created with its parent dirs). Appending keeps the whole
    /// history when a process is restarted onto the same log; each start
    /// writes a `==== starting` header line.
    pub fn spawn(name: &str, cmd: &mut Command, log_path: &Path) -> Result<ChildGuard> {
        let command_line = command_line(cmd);
        if let Some(parent) = log_path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("creating log dir {}", parent.display()))?;
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening log {}", log_path.display()))?;
        writeln!(
            log,
            "==== {} starting {name}: {command_line}",
            chrono::Utc::now().to_rfc3339()
        )
        .with_context(|| format!("writing log {}", log_path.display()))?;
        let stderr = log
            .try_clone()
            .with_context(|| format!("duplicating log {}", log_path.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("starting {name}: {command_line}"))?;
        Ok(ChildGuard {
            name: name.to_string(),
            command_line,
            log_path: log_path.to_path_buf(),
            child,
            exit: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far (lossy UTF-8); an error text if unreadable.
    pub fn log(&self) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log_path.display()),
        }
    }

    /// The exit status if the process has exited (and reaps it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self
                .child
                .try_wait()
                .with_context(|| format!("checking whether {} exited", self.name))?;
        }
        Ok(self.exit)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits at most `timeout` for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Waits at most `timeout` for the process to exit by itself; an error
    /// (with the log) if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        match self.wait_timeout(timeout)? {
            Some(status) => Ok(status),
            None => Err(anyhow!(
                "{} still running after {timeout:?}; log:\n{}",
                self.name,
                crate::read_log_tail(&self.log_path, 64 * 1024)
            )),
        }
    }

    /// Sends `signal` unless the process was already reaped (a reaped pid may
    /// belong to someone else by now).
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        send_signal(self.child.id(), signal)
            .with_context(|| format!("sending signal {signal} to {}", self.name))
    }

    /// Graceful stop: SIGTERM, SIGKILL after `grace`, reap; then SIGKILL any
    /// descendant left over. Returns the exit status (a SIGKILL shows as
    /// "signal: 9").
    pub fn terminate_with_grace(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // Descendants are found now: once the child exits they are
        // re-parented and can no longer be told apart from strangers.
        let descendants = descendants(self.child.id());
        self.signal(libc::SIGTERM)?;
        let status = match self.wait_timeout(grace)? {
            Some(status) => status,
            None => {
                eprintln!(
                    "{} ignored SIGTERM for {grace:?}; sending SIGKILL",
                    self.name
                );
                self.signal(libc::SIGKILL)?;
                self.wait_exit(REAP_TIMEOUT)?
            }
        };
        kill_leftovers(&descendants);
        Ok(status)
    }

    /// [`Self::terminate_with_grace`] with the default 5 s grace.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.terminate_with_grace(TERM_GRACE)
    }

    /// Crash: SIGKILL the process and its descendants at once, then reap.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let descendants = descendants(self.child.id());
        self.signal(libc::SIGKILL)?;
        kill_leftovers(&descendants);
        self.wait_exit(REAP_TIMEOUT)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!("cleanup of {} failed: {e:#}", self.name);
        }
        if std::thread::panicking() {
            eprintln!(
                "===== log of {} ({}) =====\n{}",
                self.name,
                self.log_path.display(),
                crate::read_log_tail(&self.log_path, 256 * 1024)
            );
        }
    }
}

fn send_signal(pid: u32, signal: i32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::other(format!("pid {pid} out of range")))?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        // Already gone: that is what we wanted.
        return Ok(());
    }
    Err(err)
}

/// `(ppid, starttime)` from the text of `/proc/PID/stat`. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted from the
/// last `)`.
pub(crate) fn parse_proc_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... starttime(22).
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    parse_proc_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every live descendant of `pid` as `(pid, start time)`; the start time lets
/// [`kill_leftovers`] skip a pid that was reused meanwhile.
fn descendants(pid: u32) -> Vec<(u32, u64)> {
    let mut children: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((ppid, start)) = proc_stat(p) {
                children.entry(ppid).or_default().push((p, start));
            }
        }
    }
    let mut out = Vec::new();
    let mut queue = VecDeque::from([pid]);
    while let Some(p) = queue.pop_front() {
        for &(c, start) in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push((c, start));
            queue.push_back(c);
        }
    }
    out
}

fn kill_leftovers(procs: &[(u32, u64)]) {
    for &(pid, start) in procs {
        if proc_stat(pid).map(|(_, s)| s) == Some(start) {
            let _ = send_signal(pid, libc::SIGKILL);
        }
    }
}

/// The command line for messages, words with odd characters single-quoted.
pub fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|w| quote_word(&w.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn quote_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` to completion within `timeout` and returns its output whatever
/// the exit status. stdin is /dev/null; stdout and stderr go through
/// anonymous temp files rather than pipes, so a daemon that forks and keeps
/// them open (zfs-fuse) cannot hang the reader. On timeout the command and
/// its descendants are SIGKILLed and an error carries what it printed.
pub fn run_output(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let line = command_line(cmd);
    let mut out = tempfile::tempfile().context("creating a temp file for stdout")?;
    let mut err = tempfile::tempfile().context("creating a temp file for stderr")?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            out.try_clone().context("duplicating stdout file")?,
        ))
        .stderr(Stdio::from(
            err.try_clone().context("duplicating stderr file")?,
        ))
        .spawn()
        .with_context(|| format!("starting `{line}`"))?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{line}`"))?
        {
            break Some(status);
        }
        let now = Instant::now();
        if now >= deadline {
            break None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    };
    let status = match status {
        Some(status) => status,
        None => {
            let descendants = descendants(child.id());
            let _ = child.kill();
            kill_leftovers(&descendants);
            let _ = child.wait();
            bail!(
                "`{line}` did not finish within {timeout:?}; stdout: {}; stderr: {}",
                read_all(&mut out).trim(),
                read_all(&mut err).trim()
            );
        }
    };
    Ok(Output {
        status,
        stdout: read_bytes(&mut out).with_context(|| format!("reading stdout of `{line}`"))?,
        stderr: read_bytes(&mut err).with_context(|| format!("reading stderr of `{line}`"))?,
    })
}

fn read_bytes(file: &mut File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read_all(file: &mut File) -> String {
    match read_bytes(file) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<unreadable: {e}>"),
    }
}

/// Runs `cmd` (deadline [`DEFAULT_COMMAND_TIMEOUT`]) and returns its stdout;
/// fails with the command line, exit status and stderr unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    run_ok_timeout(cmd, DEFAULT_COMMAND_TIMEOUT)
}

/// [`run_ok`] with an explicit deadline.
pub fn run_ok_timeout(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let line = command_line(cmd);
    let output = run_output(cmd, timeout)?;
    check_output(&line, &output)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Ok for exit status 0; otherwise an error naming the command, its status
/// and its stderr (stdout too when stderr is empty: some tools print errors
/// there).
pub fn check_output(command_line: &str, output: &Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if stderr.trim().is_empty() {
        bail!(
            "`{command_line}` failed ({}); stderr is empty; stdout: {}",
            output.status,
            stdout.trim()
        )
    }
    bail!(
        "`{command_line}` failed ({}): {}",
        output.status,
        stderr.trim()
    )
}

/// Polls `check` every `poll` until it returns `Ok(true)`, for at most
/// `timeout`. An `Err` from `check` counts as "not yet" (a server that is
/// still starting refuses connections); the last such error is quoted if
/// time runs out. `check` runs at least once, and once more at the deadline.
pub fn wait_until(
    timeout: Duration,
    poll: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut last_error = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(poll.min(deadline - now));
    }
    match last_error {
        Some(e) => Err(e.context(format!(
            "condition not met within {timeout:?} (last check failed)"
        ))),
        None => Err(anyhow!("condition not met within {timeout:?}")),
    }
}

/// Path of one of the workspace's binaries (`nasfleet-controller`,
/// `nasfleet-agent`, `nasfleet`), next to the running test executable:
/// `target/<profile>/deps/e2e-HASH` means `target/<profile>/<name>`.
/// `NASFLEET_BIN_DIR` overrides the directory.
pub fn binary(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("NASFLEET_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().context("locating the test executable")?;
            exe.parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .ok_or_else(|| {
                    anyhow!("test executable {} has no grandparent dir", exe.display())
                })?
        }
    };
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "binary {name} not found at {}: run `cargo build --workspace --bins` first \
             (same profile as the tests), or set NASFLEET_BIN_DIR",
            path.display()
        );
    }
    Ok(path)
}

/// Waits until the TCP server `child` started on `addr` sends a first line
/// beginning with `greeting` (`SSH-2.0`, `@RSYNCD:`), for at most
/// `timeout`; fails early, with the child's log, if it exits. `daemon`
/// names it in errors ("sshd", "rsync daemon").
pub fn wait_for_greeting(
    child: &mut ChildGuard,
    addr: SocketAddr,
    daemon: &str,
    greeting: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{daemon} on {addr} exited ({status}) during start-up; log:\n{}",
                child.log()
            );
        }
        let last = match read_first_line(addr) {
            Ok(line) if line.starts_with(greeting) => return Ok(()),
            Ok(line) => format!("unexpected greeting {line:?}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "{daemon} on {addr} shows no {greeting} greeting after {timeout:?} ({last}); log:\n{}",
                child.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first line (at most 255 bytes) a TCP server sends on connect.
fn read_first_line(addr: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .context("setting a read timeout")?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 255 {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(e).with_context(|| format!("reading the first line of {addr}")),
        }
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_from_the_last_paren() {
        let stat = "4242 (we (ird) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_proc_stat(stat), Some((17, 987654)));
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(quote_word("zfs"), "zfs");
        assert_eq!(quote_word("tank/a@s1"), "tank/a@s1");
        assert_eq!(quote_word("a b"), "'a b'");
        assert_eq!(quote_word("it's"), r"'it'\''s'");
        assert_eq!(quote_word(""), "''");
    }

    #[test]
    fn missing_binary_says_how_to_build() {
        let err = binary("nasfleet-no-such-binary").unwrap_err().to_string();
        assert!(err.contains("cargo build --workspace --bins"), "{err}");
    }

    #[test]
    fn wait_until_times_out_with_the_last_error() {
        let err = wait_until(Duration::from_millis(50), Duration::from_millis(10), || {
            Err(anyhow!("not up yet"))
        })
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("not met within") && text.contains("not up yet"),
            "{text}"
        );
    }

    #[test]
    fn wait_until_returns_once_true() {
        let mut n = 0;
        wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            Ok(n == 3)
        })
        .unwrap();
        assert_eq!(n, 3);
    }
}
