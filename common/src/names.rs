//! Names of things in the fleet (systems, users, notification channels) and the rules they must follow.

use crate::echo::echo;
use thiserror::Error;

/// Why a name was refused; the message names the field and the rule, and
/// quotes the name through [`echo`] (a hostile name may be very long).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{field}: {}", self.rule())]
    Empty { field: &'static str },
    #[error("{field}: {}", self.rule())]
    TooLong {
        field: &'static str,
        name: String,
        max: usize,
    },
    #[error("{field}: {}", self.rule())]
    BadCharacters { field: &'static str, name: String },
}

impl NameError {
    /// The rule without the field in front, for messages that name the
    /// thing themselves (`sources: system 'a/b' may only contain ...`).
    pub fn rule(&self) -> String {
        match self {
            NameError::Empty { .. } => "must not be empty".into(),
            NameError::TooLong { name, max, .. } => {
                format!("'{}' is longer than {max} characters", echo(name))
            }
            NameError::BadCharacters { name, .. } => format!(
                "'{}' may only contain letters, digits, '.', '-' and '_', and must start and end with a letter or digit",
                echo(name)
            ),
        }
    }
}

/// Longest system name: a DNS label, so the name can double as a host name.
pub const MAX_SYSTEM_NAME: usize = 63;

/// Checks a system name. System names become certificate common names,
/// store keys and target path components (`TARGET/<system>/pool/...`), so
/// they stay within a conservative host-name alphabet.
pub fn validate_system_name(name: &str) -> Result<(), NameError> {
    validate_simple_name("name", name, MAX_SYSTEM_NAME)
}

/// Checks a user name carried in a `user:<name>` certificate.
pub fn validate_user_name(name: &str) -> Result<(), NameError> {
    validate_simple_name("user", name, MAX_SYSTEM_NAME)
}

/// Checks the name of a notification channel.
pub fn validate_channel_name(name: &str) -> Result<(), NameError> {
    validate_simple_name("name", name, MAX_SYSTEM_NAME)
}

fn validate_simple_name(field: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { field });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            field,
            name: name.to_owned(),
            max,
        });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    let edges_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !name.chars().all(allowed) || !edges_ok {
        return Err(NameError::BadCharacters {
            field,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Whether dataset `name` lies strictly below `parent` in the dataset tree
/// (`tank/a/b` is below `tank/a`; `tank/ab` is not).
pub fn is_below(name: &str, parent: &str) -> bool {
    name.strip_prefix(parent)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Where a replicated source dataset lands: `pool/a/b` of system `nas1`
/// under target `backup` is `backup/nas1/pool/a/b`, so several sources can
/// share one target without colliding.
pub fn replication_target_path(
    target_dataset: &str,
    source_system: &str,
    source_dataset: &str,
) -> String {
    format!(
        "{}/{source_system}/{source_dataset}",
        target_dataset.trim_end_matches('/')
    )
}

/// The `zfs hold` tag a replication task puts on its incremental base, on
/// the source and on the target: `nasfleet:TASKID`.
pub fn replication_hold_tag(task_id: u64) -> String {
    format!("{REPLICATION_HOLD_PREFIX}{task_id}")
}

const REPLICATION_HOLD_PREFIX: &str = "nasfleet:";

/// Whether `tag` is one of [`replication_hold_tag`]'s: the only tags the
/// agents and a replication key's gate place or release.
pub fn is_replication_hold_tag(tag: &str) -> bool {
    replication_hold_task(tag).is_some()
}

/// The task whose hold tag `tag` is; `None` for any other tag.
pub fn replication_hold_task(tag: &str) -> Option<u64> {
    tag.strip_prefix(REPLICATION_HOLD_PREFIX)
        .filter(|id| !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

/// The name (after '#') of the bookmark that keeps a replication task's
/// incremental base on the source (its cursor): the task and the base's
/// GUID, so that a new base's bookmark never collides with the old one
/// it replaces.
pub fn replication_bookmark(task_id: u64, guid: u64) -> String {
    format!("{REPLICATION_BOOKMARK_PREFIX}{task_id}-{guid:016x}")
}

const REPLICATION_BOOKMARK_PREFIX: &str = "nasfleet-";

/// The task whose cursor `name` (after '#') is, as
/// [`replication_bookmark`] made it; `None` for any other bookmark.
pub fn replication_bookmark_task(name: &str) -> Option<u64> {
    let (task, guid) = name
        .strip_prefix(REPLICATION_BOOKMARK_PREFIX)?
        .split_once('-')?;
    let hex = guid.len() == 16 && guid.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = !task.is_empty() && task.len() <= 20 && task.bytes().all(|b| b.is_ascii_digit());
    if hex && digits {
        task.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_bookmarks_name_their_task_and_base() {
        let name = replication_bookmark(7, 0xabc);
        assert_eq!(name, "nasfleet-7-0000000000000abc");
        assert_eq!(replication_bookmark_task(&name), Some(7));
        for other in [
            "nasfleet-7",
            "nasfleet--0000000000000abc",
            "nasfleet-7-abc",
            "zrepl_CURSOR_G_0000000000000abc",
            "nasfleet-x-0000000000000abc",
        ] {
            assert_eq!(replication_bookmark_task(other), None, "{other}");
        }
    }

    #[test]
    fn hold_tags_are_the_prefix_and_a_task_id() {
        assert_eq!(replication_hold_tag(42), "nasfleet:42");
        assert!(is_replication_hold_tag("nasfleet:42"));
        for other in [
            "nasfleet:",
            "nasfleet:4x",
            "zrepl:42",
            "nasfleet:-1",
            "nasfleet:42 ",
        ] {
            assert!(!is_replication_hold_tag(other), "{other:?}");
        }
    }

    #[test]
    fn replication_targets_fan_in_by_system() {
        assert_eq!(
            replication_target_path("backup/", "nas1", "pool/a/b"),
            "backup/nas1/pool/a/b"
        );
    }

    #[test]
    fn accepts_host_like_names() {
        for name in ["nas1", "nas-01.example.com", "a", "Backup_2"] {
            assert_eq!(validate_system_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn below_means_a_descendant_not_a_name_prefix() {
        assert!(is_below("tank/a/b", "tank/a"));
        assert!(is_below("tank/a/b/c", "tank/a"));
        assert!(!is_below("tank/a", "tank/a"));
        assert!(!is_below("tank/ab", "tank/a"));
        assert!(!is_below("tank", "tank/a"));
    }

    #[test]
    fn refuses_hostile_names() {
        for name in ["", "-x", "x-", "a/b", "a b", "a;rm", "sys:x", "..", "ä"] {
            let refused = validate_system_name(name);
            assert!(
                matches!(
                    refused,
                    Err(NameError::Empty { field: "name" })
                        | Err(NameError::BadCharacters { field: "name", .. })
                ),
                "{name:?}: {refused:?}"
            );
        }
        let long = "a".repeat(64);
        assert!(matches!(
            validate_system_name(&long),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn message_names_field_and_rule() {
        let err = validate_system_name("a/b").unwrap_err().to_string();
        assert!(err.starts_with("name: 'a/b' may only contain"), "{err}");
        let rule = validate_system_name("a/b").unwrap_err().rule();
        assert!(rule.starts_with("'a/b' may only contain"), "{rule}");
        assert_eq!(
            validate_user_name("").unwrap_err().to_string(),
            "user: must not be empty"
        );
    }

    #[test]
    fn long_names_are_not_echoed_whole() {
        let long = "a".repeat(10_000);
        let err = validate_system_name(&long).unwrap_err().to_string();
        assert!(err.starts_with("name: 'aaa"), "{err}");
        assert!(err.len() < 200, "{err}");
    }
}
