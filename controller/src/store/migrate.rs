//! Store migrations, applied when the store opens, before any write: each brings records written by an older controller up to today's shape.
//!
//! Version 1 kept a task's kind and a run's trigger and task kind as
//! strings (`"snapshot"`, `"manual"`); version 2 keeps them as the
//! contract's enums, at new field numbers. A record is read twice: as
//! today's message (the old fields are unknown to it and skipped) and as
//! the legacy fields alone. Version 3 has a record per user: a person's
//! certificate of an older controller (the first admin's) becomes one.

use super::{CertRecord, StoreError, Tables, UserRecord};
use nasfleet_common::identity::Principal;
use nasfleet_common::status::task_kind_from_word;
use nasfleet_proto::v1::{Run, RunTrigger, Task, TaskKind};
use prost::Message;

/// The shape of the records this controller writes.
pub const SCHEMA_VERSION: u64 = 3;
const VERSION_KEY: &str = "schema_version";

#[derive(Clone, PartialEq, prost::Message)]
struct LegacyTask {
    #[prost(string, tag = "2")]
    kind: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LegacyRun {
    #[prost(string, tag = "5")]
    trigger: String,
    #[prost(string, tag = "16")]
    task_kind: String,
}

fn legacy_kind(word: &str) -> TaskKind {
    task_kind_from_word(word).unwrap_or(TaskKind::Unspecified)
}

/// Brings the store to [`SCHEMA_VERSION`]; a no-op when it is there.
/// Blocking; runs before the writer starts, so nothing else writes.
pub(super) fn migrate(tables: &Tables) -> Result<(), StoreError> {
    let version = tables
        .meta
        .get(VERSION_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(1, u64::from_be_bytes);
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let (tasks, runs) = if version < 2 {
        enums_from_words(tables)?
    } else {
        (0, 0)
    };
    let users = users_from_certificates(tables)?;
    tables
        .meta
        .insert(VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())?;
    tables.db.flush()?;
    tracing::info!(
        from = version,
        to = SCHEMA_VERSION,
        tasks,
        runs,
        users,
        "store migrated"
    );
    Ok(())
}

/// Version 3: a user record for every person's certificate that is in
/// force and has no record yet, with the role the certificate was issued
/// for. Returns how many were made.
fn users_from_certificates(tables: &Tables) -> Result<usize, StoreError> {
    let mut made = 0;
    for item in tables.certs.iter() {
        let (key, bytes) = item?;
        let cert: CertRecord = super::decode(&key, &bytes)?;
        let Ok(Principal::User(name)) = Principal::parse(&cert.principal) else {
            continue;
        };
        let Some(role) = cert.role.clone().filter(|_| cert.revoked_unix_ms.is_none()) else {
            continue;
        };
        if tables.user(&name)?.is_some() {
            continue;
        }
        let user = UserRecord {
            name: name.clone(),
            role,
            systems: Vec::new(),
            all_systems: false,
            created_unix_ms: cert.issued_unix_ms,
            created_by: "nasfleet-controller init".into(),
            cert_serial: Some(String::from_utf8_lossy(&key).into_owned()),
            cert_expires_unix_ms: None,
            password_hash: None,
        };
        tables
            .users
            .insert(name.as_bytes(), super::encode(&user)?)?;
        made += 1;
    }
    Ok(made)
}

/// Version 2: kinds and triggers as enums. Returns the tasks and runs changed.
fn enums_from_words(tables: &Tables) -> Result<(usize, usize), StoreError> {
    let mut tasks = 0;
    for item in tables.tasks.iter() {
        let (key, bytes) = item?;
        let mut task = super::decode_proto::<Task>("task", &bytes)?;
        let legacy = super::decode_proto::<LegacyTask>("task", &bytes)?;
        if task.kind() == TaskKind::Unspecified && !legacy.kind.is_empty() {
            task.set_kind(legacy_kind(&legacy.kind));
            tables.tasks.insert(key, task.encode_to_vec())?;
            tasks += 1;
        }
    }
    let mut runs = 0;
    for item in tables.runs.iter() {
        let (key, bytes) = item?;
        let mut run = super::decode_proto::<Run>("run", &bytes)?;
        let legacy = super::decode_proto::<LegacyRun>("run", &bytes)?;
        if legacy.trigger.is_empty() && legacy.task_kind.is_empty() {
            continue;
        }
        if run.trigger() == RunTrigger::Unspecified {
            run.set_trigger(match legacy.trigger.as_str() {
                "manual" => RunTrigger::Manual,
                "scheduled" => RunTrigger::Scheduled,
                _ => RunTrigger::Unspecified,
            });
        }
        if run.task_kind() == TaskKind::Unspecified {
            run.set_task_kind(legacy_kind(&legacy.task_kind));
        }
        tables.runs.insert(key, run.encode_to_vec())?;
        runs += 1;
    }
    Ok((tasks, runs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// Bytes as a version-1 controller wrote them: the kind, trigger and
    /// task kind as strings at their old field numbers.
    fn legacy_task_bytes(id: u64, kind: &str) -> Vec<u8> {
        #[derive(Clone, PartialEq, prost::Message)]
        struct V1Task {
            #[prost(uint64, tag = "1")]
            id: u64,
            #[prost(string, tag = "2")]
            kind: String,
            #[prost(string, tag = "3")]
            name: String,
            #[prost(string, tag = "7")]
            status: String,
        }
        V1Task {
            id,
            kind: kind.into(),
            name: "nas1:tank".into(),
            status: "FINISHED".into(),
        }
        .encode_to_vec()
    }

    fn legacy_run_bytes(id: u64, trigger: &str, kind: &str) -> Vec<u8> {
        #[derive(Clone, PartialEq, prost::Message)]
        struct V1Run {
            #[prost(uint64, tag = "1")]
            id: u64,
            #[prost(uint64, tag = "2")]
            task_id: u64,
            #[prost(string, tag = "5")]
            trigger: String,
            #[prost(string, tag = "6")]
            triggered_by: String,
            #[prost(string, tag = "16")]
            task_kind: String,
        }
        V1Run {
            id,
            task_id: 1,
            trigger: trigger.into(),
            triggered_by: "admin".into(),
            task_kind: kind.into(),
        }
        .encode_to_vec()
    }

    #[test]
    fn version_1_records_come_back_with_their_kinds_and_triggers() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let tasks = db.open_tree("tasks").unwrap();
            tasks
                .insert(1u64.to_be_bytes(), legacy_task_bytes(1, "replication"))
                .unwrap();
            let runs = db.open_tree("runs").unwrap();
            runs.insert(
                2u64.to_be_bytes(),
                legacy_run_bytes(2, "manual", "replication"),
            )
            .unwrap();
            runs.insert(
                3u64.to_be_bytes(),
                legacy_run_bytes(3, "scheduled", "rsync"),
            )
            .unwrap();
            db.flush().unwrap();
        }
        let store = crate::store::tests::reopen(dir.path());
        let task = store.task(1).unwrap().unwrap();
        assert_eq!(
            (task.kind(), task.name.as_str()),
            (TaskKind::Replication, "nas1:tank")
        );
        let run = store.run(2).unwrap().unwrap();
        assert_eq!(
            (run.trigger(), run.task_kind(), run.triggered_by.as_str()),
            (RunTrigger::Manual, TaskKind::Replication, "admin")
        );
        let run = store.run(3).unwrap().unwrap();
        assert_eq!(
            (run.trigger(), run.task_kind()),
            (RunTrigger::Scheduled, TaskKind::Rsync)
        );
        // Migrated once: a second open finds the version and changes nothing.
        assert!(store.close_blocking(crate::store::CLOSE_DEADLINE));
        drop(store);
        let store: Store = crate::store::tests::reopen(dir.path());
        assert_eq!(
            store.task(1).unwrap().unwrap().kind(),
            TaskKind::Replication
        );
    }

    #[test]
    fn version_2_admins_become_users_and_revoked_or_agent_certificates_do_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let meta = db.open_tree("meta").unwrap();
            meta.insert(VERSION_KEY, &2u64.to_be_bytes()).unwrap();
            let certs = db.open_tree("certs").unwrap();
            let cert = |principal: &str, role: Option<&str>, revoked: Option<i64>| {
                serde_json::to_vec(&CertRecord {
                    principal: principal.into(),
                    role: role.map(str::to_owned),
                    issued_unix_ms: 5,
                    revoked_unix_ms: revoked,
                })
                .unwrap()
            };
            certs
                .insert("0a", cert("user:admin", Some("admin"), None))
                .unwrap();
            certs
                .insert("0b", cert("user:old", Some("admin"), Some(9)))
                .unwrap();
            certs.insert("0c", cert("system:nas1", None, None)).unwrap();
            db.flush().unwrap();
        }
        let store = crate::store::tests::reopen(dir.path());
        let users = store.users().unwrap();
        assert_eq!(users.len(), 1, "{users:?}");
        assert_eq!(
            (users[0].name.as_str(), users[0].role.as_str()),
            ("admin", "admin")
        );
        assert_eq!(users[0].cert_serial.as_deref(), Some("0a"));
    }
}
