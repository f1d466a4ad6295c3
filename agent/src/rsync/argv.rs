//! rsync's command lines from TrueNAS's fields (pure): the run's argv, the remote end as rsync spells it, the `-e` remote shell, and the probe that checks a remote path.
//!
//! Every argument is its own argv entry and no local shell is involved, so
//! paths and auxiliary parameters are data. The one string that rsync
//! itself hands to a shell is the `-e` remote-shell command, which is built
//! here from validated numbers and fixed options only; the remote path
//! probe quotes every word it sends to the remote shell.

use std::path::Path;

use crate::ssh::shell_quote;
use nasfleet_common::rsync_rules::{effective_port, split_remote_host};
use nasfleet_proto::v1::{RsyncDirection, RsyncMode, RsyncTaskSpec};

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
                effective_port(spec),
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
/// ([`super::checks::open_task_dir`]), so rsync never resolves the task's path itself.
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
        args.push(remote_shell(effective_port(spec)));
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

/// The probe that makes sure an SSH-mode remote path exists and is a
/// directory, and nothing else: `mkdir -p` then `test -d` over ssh, each
/// word quoted for the remote shell. A short connect timeout: this answers
/// a person waiting for `rsync create`.
pub fn ssh_mkdir_probe(spec: &RsyncTaskSpec) -> (&'static str, Vec<String>) {
    let (user, host) = split_remote_host(&spec.remote_host);
    let quoted = shell_quote(&spec.remote_path);
    let remote = format!("mkdir -p -- {quoted} && test -d {quoted}");
    let user = user.unwrap_or(&spec.user);
    (
        "ssh",
        vec![
            "-p".into(),
            effective_port(spec).to_string(),
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

/// The same for MODULE mode: rsync sends the empty directory `empty` with
/// `--mkpath`, which creates the path on the daemon side (and fails if it
/// is a file).
pub fn daemon_mkpath_probe(spec: &RsyncTaskSpec, empty: &Path) -> (&'static str, Vec<String>) {
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
}
