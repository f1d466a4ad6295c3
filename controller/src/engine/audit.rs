//! The audit log: every call that changes something and every refused call, recorded durably before it is answered (who, from where, what, on what, and the outcome), never with a secret in it; and reading it back, for admins only.

use crate::engine::access::{Access, Actor};
use crate::engine::error::FleetError;
use crate::engine::state::SharedState;
use crate::store::{AuditEntry, AuditFilter};
use nasfleet_common::status::now_unix_ms;

/// Longest object or reason kept in an entry: they echo names a caller
/// chose, and a log must not grow by whatever a caller sends.
const MAX_FIELD: usize = 300;

/// One call as the audit log records it. `object` and the reason of a
/// refusal are built by the controller from names, never from secrets
/// (tokens, keys and passwords are not part of either).
pub struct Audited<'a> {
    pub actor: &'a str,
    pub address: &'a str,
    pub action: &'a str,
    pub object: &'a str,
}

/// Appends the call and its outcome; returns only once it is durable.
pub async fn record(
    state: &SharedState,
    call: &Audited<'_>,
    outcome: Result<(), &FleetError>,
) -> Result<(), FleetError> {
    let entry = AuditEntry {
        seq: 0,
        unix_ms: now_unix_ms(),
        actor: clip(call.actor),
        address: clip(call.address),
        action: clip(call.action),
        object: clip(call.object),
        refused: outcome.err().map(|e| clip(&e.to_string())),
    };
    let retention = state.audit_retention;
    state
        .store
        .write(move |w| w.append_audit(entry, retention))
        .await?;
    Ok(())
}

/// The entries `filter` selects, newest first, and how many retention has
/// dropped since the log began.
pub fn list(
    state: &SharedState,
    actor: &Actor,
    filter: &AuditFilter,
) -> Result<(Vec<AuditEntry>, u64), FleetError> {
    actor.require(Access::Administer)?;
    Ok((
        state.store.audit_entries(filter)?,
        state.store.audit_dropped()?,
    ))
}

fn clip(text: &str) -> String {
    if text.len() <= MAX_FIELD {
        return text.to_owned();
    }
    let mut end = MAX_FIELD;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::test_state;
    use crate::store::AuditRetention;
    use nasfleet_common::roles::Role;

    fn admin() -> Actor {
        Actor::Person {
            name: "root".into(),
            role: Role::Admin,
            scope: crate::engine::access::Scope::All,
        }
    }

    #[tokio::test]
    async fn entries_come_back_newest_first_filtered_and_only_for_admins() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        for (actor, action, refused) in [
            ("user:ann", "CreateTask", None),
            (
                "user:bob",
                "DeleteTask",
                Some(FleetError::PermissionDenied("no".into())),
            ),
            ("user:ann", "CreateUser", None),
        ] {
            let call = Audited {
                actor,
                address: "127.0.0.1:5000",
                action,
                object: "task 'a'",
            };
            record(&state, &call, refused.as_ref().map_or(Ok(()), Err))
                .await
                .unwrap();
        }
        let all = list(&state, &admin(), &AuditFilter::default()).unwrap().0;
        let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["CreateUser", "DeleteTask", "CreateTask"]);
        assert_eq!(all[1].refused.as_deref(), Some("no"));
        assert_eq!(all[0].seq, 3);
        let ann = AuditFilter {
            actor: Some("ann".into()),
            action: Some("createtask".into()),
            ..AuditFilter::default()
        };
        let only = list(&state, &admin(), &ann).unwrap().0;
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].action, "CreateTask");
        let viewer = Actor::Person {
            name: "vic".into(),
            role: Role::Viewer,
            scope: crate::engine::access::Scope::All,
        };
        assert!(matches!(
            list(&state, &viewer, &AuditFilter::default()),
            Err(FleetError::PermissionDenied(_))
        ));
    }

    #[tokio::test]
    async fn retention_drops_the_oldest_first_and_counts_the_drops() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        let retention = AuditRetention {
            max_entries: 3,
            max_age_ms: i64::MAX,
        };
        for n in 0..5 {
            let entry = AuditEntry {
                seq: 0,
                unix_ms: 1_000 + n,
                actor: "user:ann".into(),
                address: String::new(),
                action: format!("a{n}"),
                object: String::new(),
                refused: None,
            };
            state
                .store
                .write(move |w| w.append_audit(entry, retention))
                .await
                .unwrap();
        }
        let (kept, dropped) = list(&state, &admin(), &AuditFilter::default()).unwrap();
        let actions: Vec<&str> = kept.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["a4", "a3", "a2"]);
        assert_eq!(dropped, 2);
        // By age: only what is younger than the limit stays.
        let young = AuditRetention {
            max_entries: 100,
            max_age_ms: 10,
        };
        let entry = AuditEntry {
            seq: 0,
            unix_ms: 2_000,
            actor: "user:ann".into(),
            address: String::new(),
            action: "a5".into(),
            object: String::new(),
            refused: None,
        };
        state
            .store
            .write(move |w| w.append_audit(entry, young))
            .await
            .unwrap();
        let (kept, dropped) = list(&state, &admin(), &AuditFilter::default()).unwrap();
        let actions: Vec<&str> = kept.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["a5"]);
        assert_eq!(dropped, 5);
    }

    #[test]
    fn long_fields_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(400);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_FIELD + '…'.len_utf8());
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short"), "short");
    }
}
