//! rsync tasks on this host: the command line built from TrueNAS's fields, the checks that need the host, and running it as the task's user.
//!
//! Every argument is its own argv entry and no local shell is involved, so
//! paths and auxiliary parameters are data. The one string that rsync
//! itself hands to a shell is the `-e` remote-shell command, which is built
//! here from validated numbers and fixed options only.

pub use crate::host::passwd::Account;
use crate::host::passwd::lookup_user;
use nasfleet_common::echo::echo;
use nasfleet_common::rsync_rules::{self, RsyncRuleError, split_remote_host};
use nasfleet_proto::v1::{RsyncDirection, RsyncMode, RsyncTaskSpec};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// How long `--validate-remote-path` may take.
pub const VALIDATE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RsyncCheckError {
    #[error("{field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    /// A rule of the fields alone ([`nasfleet_common::rsync_rules`]).
    #[error(transparent)]
    Rule(#[from] RsyncRuleError),
}

fn field(field: &'static str, message: impl Into<String>) -> RsyncCheckError {
    RsyncCheckError::Field {
        field,
        message: message.into(),
    }
}

/// Looks a user up in the passwd database (NSS), on a blocking thread.
pub async fn lookup_account(user: &str) -> Result<Option<Account>, RsyncCheckError> {
    let name = user.to_owned();
    let found = tokio::task::spawn_blocking(move || lookup_user(&name))
        .await
        .map_err(|e| field("user", format!("cannot look the user up: {e}")))?;
    found.map_err(|e| field("user", format!("cannot look the user up: {e}")))
}

/// The remote end as rsync spells it.
pub fn remote_location(spec: &RsyncTaskSpec) -> String {
    let (user, host) = split_remote_host(&spec.remote_host);
    match spec.mode() {
        RsyncMode::Ssh => {
            let user = user.unwrap_or(&spec.user);
            format!("{user}@{host}:{}", spec.remote_path)
        }
        RsyncMode::Module | RsyncMode::Unspecified => {
            let user = user.map(|u| format!("{u}@")).unwrap_or_default();
            let path = spec.remote_path.trim_start_matches('/');
            format!(
                "rsync://{user}{host}:{}/{}/{path}",
                rsync_rules::effective_port(spec),
                spec.remote_module
            )
        }
    }
}

/// How a run names the task's directory to rsync: the working directory
/// it was started in.
pub const LOCAL_DIR: &str = "./";

/// The `-e` value for SSH mode. Only the port (a number) varies.
pub fn remote_shell(port: u32) -> String {
    format!("ssh -p {port} -o BatchMode=yes -o StrictHostKeyChecking=yes")
}

/// rsync's arguments for a task, in order: flags from the fields, the
/// auxiliary parameters (each its own word), then source and destination.
/// `local` is the task's directory as rsync is to name it: a run gives
/// [`LOCAL_DIR`] and starts rsync in the directory it opened
/// ([`open_task_dir`]), so rsync never resolves the task's path itself.
pub fn build_args(spec: &RsyncTaskSpec, local: &str) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let flags = [
        (spec.archive, "-a"),
        (spec.compress, "-z"),
        (spec.delay_updates, "--delay-updates"),
        (spec.delete, "--delete-delay"),
        (spec.preserve_xattrs, "-X"),
        (spec.preserve_permissions, "-p"),
        (spec.recursive, "-r"),
        (spec.times, "-t"),
    ];
    args.extend(
        flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, f)| (*f).to_owned()),
    );
    // Byte and file progress for `run watch`, one line per update.
    args.push("--info=progress2,stats2".into());
    args.push("--outbuf=L".into());
    if spec.quiet {
        args.push("--quiet".into());
    }
    if spec.mode() == RsyncMode::Ssh {
        args.push("-e".into());
        args.push(remote_shell(rsync_rules::effective_port(spec)));
    }
    args.extend(spec.auxiliary.iter().cloned());
    // `--` ends the options: a local path can never be read as one.
    args.push("--".into());
    let local = if local.ends_with('/') {
        local.to_owned()
    } else {
        format!("{local}/")
    };
    let remote = remote_location(spec);
    match spec.direction() {
        RsyncDirection::Pull => {
            let remote = if remote.ends_with('/') {
                remote
            } else {
                format!("{remote}/")
            };
            args.push(remote);
            args.push(local);
        }
        RsyncDirection::Push | RsyncDirection::Unspecified => {
            args.push(local);
            args.push(remote);
        }
    }
    args
}

/// rsync's exit codes, as its manual names them.
pub fn exit_code_name(code: i32) -> &'static str {
    match code {
        0 => "Success",
        1 => "Syntax or usage error",
        2 => "Protocol incompatibility",
        3 => "Errors selecting input/output files, dirs",
        4 => "Requested action not supported",
        5 => "Error starting client-server protocol",
        6 => "Daemon unable to append to log-file",
        10 => "Error in socket I/O",
        11 => "Error in file I/O",
        12 => "Error in rsync protocol data stream",
        13 => "Errors with program diagnostics",
        14 => "Error in IPC code",
        20 => "Received SIGUSR1 or SIGINT",
        21 => "Some error returned by waitpid()",
        22 => "Error allocating core memory buffers",
        23 => "Partial transfer due to error",
        24 => "Partial transfer due to vanished source files",
        25 => "The --max-delete limit stopped deletions",
        30 => "Timeout in data send/receive",
        35 => "Timeout waiting for daemon connection",
        _ => "Unknown error",
    }
}

/// Exit codes that count as success: 24 (files vanished while copying) and
/// 25 (--max-delete reached) leave a usable copy, as TrueNAS treats them.
pub fn is_success(code: i32) -> bool {
    matches!(code, 0 | 24 | 25)
}

/// The reason for a failed run: `rsync command returned CODE - NAME.` and
/// the last lines rsync wrote to stderr.
pub fn failure_reason(code: i32, stderr: &str) -> String {
    let tail: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = tail[tail.len().saturating_sub(5)..].join("\n");
    let mut reason = format!("rsync command returned {code} - {}.", exit_code_name(code));
    if !tail.is_empty() {
        reason.push('\n');
        reason.push_str(&tail);
    }
    reason
}

/// Progress from one `--info=progress2` line, e.g.
/// `    32,768 100%   31.25MB/s    0:00:00 (xfr#1, to-chk=0/2)`:
/// bytes so far, the percentage, and files transferred.
pub fn parse_progress(line: &str) -> Option<(u64, u8, u64)> {
    let mut words = line.split_whitespace();
    let bytes: u64 = words.next()?.replace(',', "").parse().ok()?;
    let percent: u8 = words.next()?.strip_suffix('%')?.parse().ok()?;
    let files = line
        .split("xfr#")
        .nth(1)
        .and_then(|rest| rest.split([',', ')']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some((bytes, percent, files))
}

/// The SSH key the task's user would use: a private key in `~/.ssh` with
/// permissions no looser than 0600, as TrueNAS requires for SSH mode.
pub async fn check_user_key(account: &Account) -> Result<PathBuf, RsyncCheckError> {
    let dir = account.home.join(".ssh");
    let mut found_loose = None;
    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
        let path = dir.join(name);
        let Ok(meta) = tokio::fs::metadata(&path).await else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if meta.mode() & 0o077 != 0 {
            found_loose = Some(path);
            continue;
        }
        return Ok(path);
    }
    Err(match found_loose {
        Some(path) => field(
            "user",
            format!(
                "Permissions {:o} of {} are too open; the private key must not be readable by others (0600)",
                std::fs::metadata(&path)
                    .map(|m| m.mode() & 0o777)
                    .unwrap_or(0),
                path.display()
            ),
        ),
        None => field(
            "user",
            format!(
                "In SSH mode user \"{}\" needs a private key in {} (id_ed25519, id_ecdsa or id_rsa)",
                account.name,
                dir.display()
            ),
        ),
    })
}

/// Whether `path` lies inside one of the pools' mountpoints.
pub fn inside_mountpoints(path: &Path, mountpoints: &[PathBuf]) -> bool {
    mountpoints
        .iter()
        .filter(|m| m.is_absolute() && m.as_os_str() != "/")
        .any(|m| path.starts_with(m))
}

/// A child's setup to run as `account` (not root unless the task's user is root).
pub fn as_user(command: &mut tokio::process::Command, account: &Account) {
    command
        .uid(account.uid)
        .gid(account.gid)
        .env("HOME", &account.home)
        .env("USER", &account.name)
        .env("LOGNAME", &account.name);
}

/// `--validate-remote-path`: the remote path exists (or is created) and is a
/// directory, within [`VALIDATE_TIMEOUT`].
pub async fn validate_remote_path(
    spec: &RsyncTaskSpec,
    account: &Account,
) -> Result<(), RsyncCheckError> {
    let fail = |message: String| field("remote_path", message);
    let (user, host) = split_remote_host(&spec.remote_host);
    let mut temp_dir: Option<PathBuf> = None;
    let (program, args): (&str, Vec<String>) = match spec.mode() {
        RsyncMode::Ssh => {
            // mkdir -p makes it; test -d proves it is a directory. Each word quoted.
            let quoted = crate::ssh::shell_quote(&spec.remote_path);
            let remote = format!("mkdir -p -- {quoted} && test -d {quoted}");
            let user = user.unwrap_or(&spec.user);
            (
                "ssh",
                vec![
                    "-p".into(),
                    rsync_rules::effective_port(spec).to_string(),
                    "-o".into(),
                    "BatchMode=yes".into(),
                    "-o".into(),
                    "StrictHostKeyChecking=yes".into(),
                    "-o".into(),
                    "ConnectTimeout=4".into(),
                    "--".into(),
                    format!("{user}@{host}"),
                    remote,
                ],
            )
        }
        RsyncMode::Module | RsyncMode::Unspecified => {
            // Sending an empty directory with --mkpath creates the path on
            // the daemon side (and fails if it is a file).
            // A fresh directory with a random name, removed below: nobody
            // can prepare files to be sent in its place.
            let empty = std::env::temp_dir().join(format!(
                "nasfleet-rsync-empty-{:016x}",
                rand::random::<u64>()
            ));
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&empty)
                    .map_err(|e| fail(format!("cannot create {}: {e}", empty.display())))?;
            }
            temp_dir = Some(empty.clone());
            let mut spec_dir = spec.clone();
            spec_dir.remote_path = format!("{}/", spec.remote_path.trim_end_matches('/'));
            (
                "rsync",
                vec![
                    "--mkpath".into(),
                    "-d".into(),
                    "--contimeout=4".into(),
                    "--timeout=4".into(),
                    "--".into(),
                    format!("{}/", empty.display()),
                    remote_location(&spec_dir),
                ],
            )
        }
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    as_user(&mut command, account);
    let child = command
        .spawn()
        .map_err(|e| fail(format!("cannot start {program}: {e}")))?;
    let waited = tokio::time::timeout(VALIDATE_TIMEOUT, child.wait_with_output()).await;
    if let Some(dir) = temp_dir {
        let _ = tokio::fs::remove_dir(&dir).await;
    }
    match waited {
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Err(_) => Err(fail(format!(
            "checking the remote path timed out after {}s",
            VALIDATE_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) => Err(fail(format!("{program} failed to run: {e}"))),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first = stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("failed")
                .trim();
            let what = if stderr.contains("Connection refused") {
                "connection refused"
            } else if stderr.contains("Not a directory") || stderr.contains("File exists") {
                "not a directory"
            } else {
                "could not be created or reached"
            };
            Err(fail(format!("'{}' {what}: {first}", spec.remote_path)))
        }
    }
}

/// The refusal of a path outside every pool, worded as TrueNAS words it.
const OUTSIDE_POOLS: &str = "The path must reside within a pool mount point";

/// The task's path must be an existing directory inside one of `pools`'
/// dataset mountpoints (empty = every pool). Judged on the real path, with
/// `..` and symbolic links resolved: `/mnt/tank/x/../../../etc` or a link
/// to `/etc` inside a dataset is not inside the pool. Returns that real path.
pub async fn check_path_in_pools(
    path: &str,
    zfs: &crate::zfs::Zfs,
    pools: &[String],
) -> Result<PathBuf, RsyncCheckError> {
    let real = match tokio::fs::canonicalize(path).await {
        Ok(real) if tokio::fs::metadata(&real).await.is_ok_and(|m| m.is_dir()) => real,
        _ => {
            return Err(field(
                "path",
                format!("'{}' does not exist or is not a directory", echo(path)),
            ));
        }
    };
    let pools: Vec<String> = if pools.is_empty() {
        zfs.list_pools()
            .await
            .map_err(|e| field("path", format!("cannot list pools: {e}")))?
            .0
            .into_iter()
            .map(|p| p.name)
            .collect()
    } else {
        pools.to_vec()
    };
    let mut mountpoints = Vec::new();
    for pool in &pools {
        if let Ok(listing) = zfs.list_datasets_and_snapshots(pool).await {
            for dataset in listing.datasets {
                let mountpoint = PathBuf::from(dataset.mountpoint);
                if mountpoint.is_absolute() {
                    let real = tokio::fs::canonicalize(&mountpoint)
                        .await
                        .unwrap_or(mountpoint);
                    mountpoints.push(real);
                }
            }
        }
    }
    if !inside_mountpoints(&real, &mountpoints) {
        return Err(field("path", OUTSIDE_POOLS));
    }
    Ok(real)
}

/// The task's directory for a run: checked again as at create
/// ([`check_path_in_pools`]), then opened from `/` one component at a
/// time without following any symbolic link ([`crate::host::nofollow::open_dir`]).
/// A link swapped into the path after the check makes the open fail, with
/// the same refusal as a path outside the pools; the directory opened is
/// the one that was checked, and rsync is started in it, so nothing can
/// redirect the run once this returns.
pub async fn open_task_dir(
    path: &str,
    zfs: &crate::zfs::Zfs,
    pools: &[String],
) -> Result<std::fs::File, RsyncCheckError> {
    let real = check_path_in_pools(path, zfs, pools).await?;
    let opened = tokio::task::spawn_blocking(move || crate::host::nofollow::open_dir(&real))
        .await
        .map_err(|e| field("path", format!("cannot open '{}': {e}", echo(path))))?;
    opened.map_err(|e| {
        if crate::host::nofollow::is_link_or_not_dir(&e) {
            field("path", OUTSIDE_POOLS)
        } else {
            field("path", format!("cannot open '{}': {e}", echo(path)))
        }
    })
}

/// Every check of an rsync task that needs its host, in order: the fields,
/// the user, the path (an existing directory inside one of this system's
/// pools), the SSH key in SSH mode, and the remote path when asked.
/// `pools`: the pools this agent owns (empty = every pool).
pub async fn validate_on_host(
    spec: &RsyncTaskSpec,
    zfs: &crate::zfs::Zfs,
    pools: &[String],
) -> Result<(), RsyncCheckError> {
    rsync_rules::check_fields(spec)?;
    let account = lookup_account(&spec.user).await?.ok_or_else(|| {
        field(
            "user",
            format!("Provided user \"{}\" does not exist", spec.user),
        )
    })?;
    check_path_in_pools(&spec.path, zfs, pools).await?;
    if spec.mode() == RsyncMode::Ssh {
        check_user_key(&account).await?;
    }
    if spec.validate_remote_path {
        validate_remote_path(spec, &account).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RsyncTaskSpec {
        let mut spec = RsyncTaskSpec {
            system: "nas1".into(),
            path: "/mnt/tank/data".into(),
            user: "backup".into(),
            remote_host: "127.0.0.4".into(),
            remote_module: "mod".into(),
            recursive: true,
            times: true,
            compress: true,
            delay_updates: true,
            ..Default::default()
        };
        spec.set_direction(RsyncDirection::Push);
        spec.set_mode(RsyncMode::Module);
        spec
    }

    #[test]
    fn module_push_uses_the_daemon_url_and_truenas_default_flags() {
        let args = build_args(&spec(), LOCAL_DIR);
        assert_eq!(
            args,
            [
                "-z",
                "--delay-updates",
                "-r",
                "-t",
                "--info=progress2,stats2",
                "--outbuf=L",
                "--",
                "./",
                "rsync://127.0.0.4:873/mod/"
            ]
        );
    }

    #[test]
    fn ssh_pull_swaps_ends_and_sets_the_remote_shell() {
        let mut s = spec();
        s.set_mode(RsyncMode::Ssh);
        s.set_direction(RsyncDirection::Pull);
        s.remote_host = "alice@127.0.0.5".into();
        s.remote_path = "/srv/in".into();
        s.remote_port = 2222;
        s.archive = true;
        s.delete = true;
        s.preserve_xattrs = true;
        s.preserve_permissions = true;
        s.auxiliary = vec!["--exclude=*.tmp".into(), "$(touch /tmp/pwned)".into()];
        let args = build_args(&s, "/mnt/tank/data");
        assert_eq!(
            args[..6],
            ["-a", "-z", "--delay-updates", "--delete-delay", "-X", "-p"]
        );
        let e = args.iter().position(|a| a == "-e").unwrap();
        assert_eq!(
            args[e + 1],
            "ssh -p 2222 -o BatchMode=yes -o StrictHostKeyChecking=yes"
        );
        // Auxiliary words stay single argv entries, after the flags, before `--`.
        let aux = args
            .iter()
            .position(|a| a == "$(touch /tmp/pwned)")
            .unwrap();
        assert!(aux < args.iter().position(|a| a == "--").unwrap());
        assert_eq!(
            args[args.len() - 2..],
            ["alice@127.0.0.5:/srv/in/", "/mnt/tank/data/"]
        );
    }

    #[test]
    fn exit_codes_and_progress() {
        assert!(is_success(0) && is_success(24) && is_success(25) && !is_success(23));
        assert_eq!(
            failure_reason(
                5,
                "@ERROR: Unknown module 'nope'\nrsync error: error starting client-server protocol (code 5)\n"
            ),
            "rsync command returned 5 - Error starting client-server protocol.\n@ERROR: Unknown module 'nope'\nrsync error: error starting client-server protocol (code 5)"
        );
        assert_eq!(
            parse_progress("     32,768 100%   31.25MB/s    0:00:00 (xfr#1, to-chk=0/2)"),
            Some((32_768, 100, 1))
        );
        assert_eq!(parse_progress("sending incremental file list"), None);
    }

    #[test]
    fn paths_must_be_inside_pool_mountpoints() {
        let mounts = vec![PathBuf::from("/mnt/tank"), PathBuf::from("/")];
        assert!(inside_mountpoints(Path::new("/mnt/tank/data"), &mounts));
        assert!(!inside_mountpoints(Path::new("/etc"), &mounts));
        assert!(!inside_mountpoints(Path::new("/mnt/tankx"), &mounts));
    }
}
