//! The rules an rsync task's fields obey on their own, without its host or the network: one home for the CLI's pre-checks and the agent's checks (at create and again before every run).
//!
//! Every message starts with the field it is about (`remote_host: ...`),
//! the same words whichever side refuses, so a script sees one text. The
//! rules that need the task's host (the user exists, the path lies inside
//! a pool, the user's SSH key, the remote path reachable) live with the
//! agent.

use crate::rsync_aux::{AuxError, check_auxiliary};
use nasfleet_proto::v1::{RsyncDirection, RsyncMode, RsyncTaskSpec};
use thiserror::Error;

/// The port rsync's remote shell talks to in SSH mode unless told otherwise.
pub const DEFAULT_SSH_PORT: u32 = 22;
/// The port of an rsync daemon (MODULE mode) unless told otherwise.
pub const DEFAULT_MODULE_PORT: u32 = 873;
/// TrueNAS's limit on the remote path, in characters.
pub const MAX_REMOTE_PATH: usize = 255;

/// The messages the CLI's tests and scripts compare against, whole.
pub const REMOTE_HOST_REQUIRED: &str = "remote_host: Remote host is required";
pub const REMOTE_MODULE_REQUIRED: &str = "remote_module: Remote module is required in MODULE mode";
pub const REMOTE_PATH_REQUIRED: &str = "remote_path: Remote path is required in SSH mode";
pub const REMOTE_PATH_TOO_LONG: &str = "remote_path: Remote path must be at most 255 characters";
pub const PORT_OUT_OF_RANGE: &str = "remote_port: Port must be between 1 and 65535";

/// Which rule an rsync task's fields break; the message names the field.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RsyncRuleError {
    #[error("path: Path is required")]
    PathRequired,
    #[error("path: The path must be absolute")]
    PathNotAbsolute,
    #[error("user: User is required")]
    UserRequired,
    #[error("direction: Direction is required (push or pull)")]
    DirectionRequired,
    #[error("{}", REMOTE_HOST_REQUIRED)]
    RemoteHostRequired,
    #[error("remote_host: '{0}' is not HOST or USER@HOST")]
    RemoteHostInvalid(String),
    #[error("{}", REMOTE_MODULE_REQUIRED)]
    RemoteModuleRequired,
    #[error("remote_module: '{0}' is not a module name")]
    RemoteModuleInvalid(String),
    #[error("{}", REMOTE_PATH_REQUIRED)]
    RemotePathRequired,
    #[error("{}", REMOTE_PATH_TOO_LONG)]
    RemotePathTooLong,
    #[error("{}", PORT_OUT_OF_RANGE)]
    PortOutOfRange,
    /// Its message starts with `auxiliary: ` like the others' field names.
    #[error(transparent)]
    Auxiliary(#[from] AuxError),
}

/// `user@host` splits into its parts; a bare host has no user.
pub fn split_remote_host(remote_host: &str) -> (Option<&str>, &str) {
    match remote_host.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, remote_host),
    }
}

/// A host rsync and ssh take as a host, never as an option.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '[' | ']'))
}

/// A remote login name that cannot become an option.
fn valid_remote_user(user: &str) -> bool {
    !user.is_empty()
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The remote host is given.
pub fn check_remote_host_given(remote_host: &str) -> Result<(), RsyncRuleError> {
    if remote_host.is_empty() {
        return Err(RsyncRuleError::RemoteHostRequired);
    }
    Ok(())
}

/// The remote host is given and is `HOST` or `USER@HOST`.
pub fn check_remote_host(remote_host: &str) -> Result<(), RsyncRuleError> {
    check_remote_host_given(remote_host)?;
    let (user, host) = split_remote_host(remote_host);
    if !valid_host(host) || user.is_some_and(|u| !valid_remote_user(u)) {
        return Err(RsyncRuleError::RemoteHostInvalid(remote_host.to_owned()));
    }
    Ok(())
}

/// What the mode requires: a module in MODULE mode (the default), a remote
/// path in SSH mode.
pub fn check_given_for_mode(
    mode: RsyncMode,
    remote_module: &str,
    remote_path: &str,
) -> Result<(), RsyncRuleError> {
    match mode {
        RsyncMode::Module | RsyncMode::Unspecified if remote_module.is_empty() => {
            Err(RsyncRuleError::RemoteModuleRequired)
        }
        RsyncMode::Ssh if remote_path.is_empty() => Err(RsyncRuleError::RemotePathRequired),
        _ => Ok(()),
    }
}

/// A module name is one path component that cannot become an option.
pub fn check_module_name(remote_module: &str) -> Result<(), RsyncRuleError> {
    if remote_module.contains('/') || remote_module.starts_with('-') {
        return Err(RsyncRuleError::RemoteModuleInvalid(
            remote_module.to_owned(),
        ));
    }
    Ok(())
}

/// At most [`MAX_REMOTE_PATH`] characters.
pub fn check_remote_path_length(remote_path: &str) -> Result<(), RsyncRuleError> {
    if remote_path.chars().count() > MAX_REMOTE_PATH {
        return Err(RsyncRuleError::RemotePathTooLong);
    }
    Ok(())
}

/// A port in a spec: 0 means the mode's default ([`effective_port`]), so
/// only ports above 65535 are refused.
pub fn check_port(port: u32) -> Result<(), RsyncRuleError> {
    if port > u32::from(u16::MAX) {
        return Err(RsyncRuleError::PortOutOfRange);
    }
    Ok(())
}

/// A port someone chose (a flag, a form field): a real one, 1 to 65535;
/// leaving it out is how the mode's default is asked for.
pub fn check_chosen_port(port: u32) -> Result<(), RsyncRuleError> {
    if port == 0 {
        return Err(RsyncRuleError::PortOutOfRange);
    }
    check_port(port)
}

/// The port a mode talks to unless told otherwise.
pub fn default_port(mode: RsyncMode) -> u32 {
    match mode {
        RsyncMode::Ssh => DEFAULT_SSH_PORT,
        RsyncMode::Module | RsyncMode::Unspecified => DEFAULT_MODULE_PORT,
    }
}

/// The port rsync talks to: the spec's, or its mode's default for 0.
pub fn effective_port(spec: &RsyncTaskSpec) -> u32 {
    match spec.remote_port {
        0 => default_port(spec.mode()),
        port => port,
    }
}

/// Every rule of the fields that needs no host, in order; the first broken
/// one is reported. The auxiliary allow-list ([`crate::rsync_aux`]) is part
/// of it, so a task that predates a rule is refused before it runs.
pub fn check_fields(spec: &RsyncTaskSpec) -> Result<(), RsyncRuleError> {
    if spec.path.is_empty() {
        return Err(RsyncRuleError::PathRequired);
    }
    if !spec.path.starts_with('/') {
        return Err(RsyncRuleError::PathNotAbsolute);
    }
    if spec.user.is_empty() {
        return Err(RsyncRuleError::UserRequired);
    }
    if spec.direction() == RsyncDirection::Unspecified {
        return Err(RsyncRuleError::DirectionRequired);
    }
    check_remote_host(&spec.remote_host)?;
    check_given_for_mode(spec.mode(), &spec.remote_module, &spec.remote_path)?;
    if spec.mode() != RsyncMode::Ssh {
        check_module_name(&spec.remote_module)?;
    }
    check_remote_path_length(&spec.remote_path)?;
    check_port(spec.remote_port)?;
    check_auxiliary(&spec.auxiliary)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module-mode push that breaks no rule.
    fn spec() -> RsyncTaskSpec {
        let mut spec = RsyncTaskSpec {
            path: "/mnt/tank/data".into(),
            user: "backup".into(),
            remote_host: "127.0.0.4".into(),
            remote_module: "mod".into(),
            ..Default::default()
        };
        spec.set_direction(RsyncDirection::Push);
        spec.set_mode(RsyncMode::Module);
        spec
    }

    #[test]
    fn field_checks_name_the_field() {
        let check = |f: fn(&mut RsyncTaskSpec)| {
            let mut s = spec();
            f(&mut s);
            check_fields(&s).unwrap_err().to_string()
        };
        assert!(
            check(|s| s.remote_host.clear()).starts_with("remote_host: Remote host is required")
        );
        assert!(check(|s| s.remote_module.clear()).starts_with("remote_module:"));
        assert!(
            check(|s| {
                s.set_mode(RsyncMode::Ssh);
                s.remote_path.clear();
            })
            .starts_with("remote_path: Remote path is required")
        );
        assert!(
            check(|s| s.remote_path = "a".repeat(256))
                .starts_with("remote_path: Remote path must be at most 255")
        );
        assert!(check(|s| s.auxiliary = vec!["--a\n--b".into()]).starts_with("auxiliary:"));
        assert!(check(|s| s.auxiliary = vec!["-essh evil".into()]).starts_with("auxiliary:"));
        assert!(check(|s| s.auxiliary = vec!["--rsync-path=sh".into()]).starts_with("auxiliary:"));
        assert!(check(|s| s.remote_host = "-oProxyCommand=x".into()).starts_with("remote_host:"));
        assert!(check(|s| s.path = "relative".into()).starts_with("path:"));
        assert!(check_fields(&spec()).is_ok());
    }

    #[test]
    fn each_rule_names_its_field_in_the_shared_words() {
        assert_eq!(
            check_remote_host_given("").unwrap_err().to_string(),
            REMOTE_HOST_REQUIRED
        );
        assert_eq!(
            check_remote_host("user@-x").unwrap_err(),
            RsyncRuleError::RemoteHostInvalid("user@-x".into())
        );
        assert!(check_remote_host("alice@nas-2.lan").is_ok());
        assert_eq!(
            check_given_for_mode(RsyncMode::Unspecified, "", "/p")
                .unwrap_err()
                .to_string(),
            REMOTE_MODULE_REQUIRED
        );
        assert_eq!(
            check_given_for_mode(RsyncMode::Ssh, "", "")
                .unwrap_err()
                .to_string(),
            REMOTE_PATH_REQUIRED
        );
        assert_eq!(
            check_module_name("a/b").unwrap_err().to_string(),
            "remote_module: 'a/b' is not a module name"
        );
        assert_eq!(
            check_remote_path_length(&"p".repeat(256))
                .unwrap_err()
                .to_string(),
            REMOTE_PATH_TOO_LONG
        );
        assert!(check_remote_path_length(&"p".repeat(255)).is_ok());
        assert_eq!(
            check_port(65_536).unwrap_err().to_string(),
            PORT_OUT_OF_RANGE
        );
        assert!(check_port(0).is_ok());
        assert_eq!(check_chosen_port(0), Err(RsyncRuleError::PortOutOfRange));
        assert!(check_chosen_port(65_535).is_ok());
    }

    #[test]
    fn port_zero_means_the_modes_default() {
        let mut s = spec();
        assert_eq!(effective_port(&s), DEFAULT_MODULE_PORT);
        s.set_mode(RsyncMode::Ssh);
        assert_eq!(effective_port(&s), DEFAULT_SSH_PORT);
        s.remote_port = 2222;
        assert_eq!(effective_port(&s), 2222);
    }
}
