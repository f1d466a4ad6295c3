//! The checks of an rsync task that need its host: the user exists (and has an SSH key in SSH mode), the path is a directory inside this system's pools (opened without following links for a run), and the remote path answers when asked.
//!
//! The rules of the fields alone live in [`nasfleet_common::rsync_rules`]
//! and are checked first.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::argv::{daemon_mkpath_probe, ssh_mkdir_probe};
use super::output::remote_path_failure;
use super::runner;
use crate::host::nofollow;
use crate::host::passwd::{Account, lookup_user};
use crate::host::process::ProcessError;
use crate::zfs::Zfs;
use nasfleet_common::echo::echo;
use nasfleet_common::rsync_rules::{self, RsyncRuleError};
use nasfleet_proto::v1::{RsyncMode, RsyncTaskSpec};
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

/// `--validate-remote-path`: the remote path exists (or is created) and is a
/// directory, within [`VALIDATE_TIMEOUT`]. The probe runs as the task's
/// user, as the run will.
pub async fn validate_remote_path(
    spec: &RsyncTaskSpec,
    account: &Account,
) -> Result<(), RsyncCheckError> {
    let fail = |message: String| field("remote_path", message);
    // MODULE mode sends an empty directory: a fresh one with a random
    // name, removed below, so nobody can prepare files to be sent in its
    // place.
    let empty = match spec.mode() {
        RsyncMode::Ssh => None,
        RsyncMode::Module | RsyncMode::Unspecified => {
            let empty = std::env::temp_dir().join(format!(
                "nasfleet-rsync-empty-{:016x}",
                rand::random::<u64>()
            ));
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&empty)
                .map_err(|e| fail(format!("cannot create {}: {e}", empty.display())))?;
            Some(empty)
        }
    };
    let (program, args) = match &empty {
        None => ssh_mkdir_probe(spec),
        Some(empty) => daemon_mkpath_probe(spec, empty),
    };
    let probed = runner::probe(program, &args, account, VALIDATE_TIMEOUT).await;
    if let Some(dir) = empty {
        let _ = tokio::fs::remove_dir(&dir).await;
    }
    match probed {
        Ok(ended) if ended.status.success() => Ok(()),
        Err(ProcessError::TimedOut { .. }) => Err(fail(format!(
            "checking the remote path timed out after {}s",
            VALIDATE_TIMEOUT.as_secs()
        ))),
        Err(ProcessError::NotFound { .. }) => Err(fail(format!(
            "cannot start {program}: {}",
            std::io::Error::from_raw_os_error(libc::ENOENT)
        ))),
        Err(ProcessError::Spawn { source, .. }) => {
            Err(fail(format!("cannot start {program}: {source}")))
        }
        Err(other) => Err(fail(format!("{program} failed to run: {other}"))),
        Ok(ended) => Err(fail(remote_path_failure(
            &spec.remote_path,
            &String::from_utf8_lossy(&ended.stderr),
        ))),
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
    zfs: &Zfs,
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
/// time without following any symbolic link (`host::nofollow::open_dir`).
/// A link swapped into the path after the check makes the open fail, with
/// the same refusal as a path outside the pools; the directory opened is
/// the one that was checked, and rsync is started in it, so nothing can
/// redirect the run once this returns.
pub async fn open_task_dir(
    path: &str,
    zfs: &Zfs,
    pools: &[String],
) -> Result<std::fs::File, RsyncCheckError> {
    let real = check_path_in_pools(path, zfs, pools).await?;
    let opened = tokio::task::spawn_blocking(move || nofollow::open_dir(&real))
        .await
        .map_err(|e| field("path", format!("cannot open '{}': {e}", echo(path))))?;
    opened.map_err(|e| {
        if nofollow::is_link_or_not_dir(&e) {
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
    zfs: &Zfs,
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

    #[test]
    fn paths_must_be_inside_pool_mountpoints() {
        let mounts = vec![PathBuf::from("/mnt/tank"), PathBuf::from("/")];
        assert!(inside_mountpoints(Path::new("/mnt/tank/data"), &mounts));
        assert!(!inside_mountpoints(Path::new("/etc"), &mounts));
        assert!(!inside_mountpoints(Path::new("/mnt/tankx"), &mounts));
    }
}
