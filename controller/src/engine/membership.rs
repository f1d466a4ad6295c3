//! Joining and leaving the fleet: join tokens (single-use, expiring secrets that let one system enroll; only their hash is stored), the renewal of a system's certificate before it expires, and the removal of a system.

use crate::engine::access::not_found_system;
use crate::engine::error::FleetError;
use crate::engine::ssh_trust;
use crate::engine::state::SharedState;
use crate::engine::systems::record;
use crate::engine::tasks;
use crate::store::{CertRecord, TokenRecord, new_token, token_hash};
use nasfleet_common::identity::Principal;
use nasfleet_common::status::now_unix_ms;
use nasfleet_common::status::task_kind_word;
use std::time::Duration;

/// Longest accepted token lifetime; join tokens are meant to be used right away.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Creates and records a token valid for `ttl`; returns it and its expiry.
pub async fn create_token(
    state: &SharedState,
    created_by: &str,
    ttl: Duration,
) -> Result<(String, i64), FleetError> {
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(FleetError::invalid(
            "ttl",
            format!(
                "must be between 1s and {}d",
                MAX_TOKEN_TTL.as_secs() / 86_400
            ),
        ));
    }
    let token = new_token("nfj1.");
    let now = now_unix_ms();
    let expires = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let record = TokenRecord {
        created_unix_ms: now,
        expires_unix_ms: expires,
        created_by: created_by.to_owned(),
        used_by: None,
        used_unix_ms: None,
    };
    let hash = token_hash(&token);
    state
        .store
        .write(move |w| w.put_token(&hash, &record))
        .await?;
    Ok((token, expires))
}

/// Signs a renewed certificate for `system` (a CSR made on its agent) and
/// records it as the system's next one: the current one stays valid until
/// the agent connects with the new one ([`promote_certificate`]). Returns
/// the certificate and when it expires.
pub async fn renew_certificate(
    state: &SharedState,
    system: &str,
    csr_pem: &str,
) -> Result<(String, i64), FleetError> {
    // Agents ask with a third of the lifetime left; one asking with more
    // than half of it left is refused, so an agent cannot mint certificates
    // at will. An expiry not on record (enrolled before it was kept) is due.
    let current = record(state, system)?;
    let now = now_unix_ms();
    if current.cert_expires_unix_ms > 0
        && current.cert_expires_unix_ms - now > state.ca.leaf_lifetime_ms() / 2
    {
        return Err(FleetError::Conflict(format!(
            "the certificate of system '{system}' is not due for renewal yet (it expires {})",
            nasfleet_common::status::rfc3339_from_unix_ms(current.cert_expires_unix_ms)
                .unwrap_or_default()
        )));
    }
    let issued = state
        .ca
        .sign_system_csr(system, csr_pem)
        .map_err(|e| FleetError::invalid_message(&e.to_string()))?;
    let cert = CertRecord {
        principal: Principal::System(system.to_owned()).common_name(),
        role: None,
        issued_unix_ms: now_unix_ms(),
        revoked_unix_ms: None,
    };
    let (name, serial, expires) = (
        system.to_owned(),
        issued.serial_hex.clone(),
        issued.expires_unix_ms,
    );
    let recorded = state
        .store
        .write(move |w| {
            w.put_cert(&serial, &cert)?;
            w.update_system(&name, |r| {
                r.next_cert_serial = Some(serial.clone());
                r.next_cert_expires_unix_ms = expires;
            })
        })
        .await?;
    if recorded.is_none() {
        return Err(not_found_system(system));
    }
    tracing::info!(%system, serial = %issued.serial_hex, "certificate renewed; in force once the agent connects with it");
    Ok((issued.cert_pem, issued.expires_unix_ms))
}

/// The agent of `system` connected with its renewed certificate: it
/// becomes the current one and the one before is revoked.
pub async fn promote_certificate(state: &SharedState, system: &str) -> Result<(), FleetError> {
    let name = system.to_owned();
    let now = now_unix_ms();
    let old = state
        .store
        .write(move |w| {
            let mut old = None;
            w.update_system(&name, |r| {
                if let Some(next) = r.next_cert_serial.take() {
                    old = Some(std::mem::replace(&mut r.cert_serial, next));
                    r.cert_expires_unix_ms = r.next_cert_expires_unix_ms;
                    r.next_cert_expires_unix_ms = 0;
                }
            })?;
            if let Some(serial) = &old
                && let Some(mut cert) = w.cert(serial)?
            {
                cert.revoked_unix_ms = Some(now);
                w.put_cert(serial, &cert)?;
            }
            Ok(old)
        })
        .await?;
    if let Some(old) = old {
        tracing::info!(%system, revoked = %old, "renewed certificate in use; the one before is revoked");
    }
    Ok(())
}

/// Removes a system from the fleet: refused while a task uses it; its SSH
/// connections end (its key revoked on its targets first) and its
/// certificate is revoked at once. Returns the revoked serial.
pub async fn remove(state: &SharedState, name: &str) -> Result<String, FleetError> {
    record(state, name)?;
    // Nothing may keep pointing at a system that is gone: its tasks
    // would fail on every run, and its replication key would still log
    // in to the systems it replicated to.
    let using = tasks::tasks_using(state, name)?;
    if !using.is_empty() {
        let named: Vec<String> = using
            .iter()
            .map(|t| {
                format!(
                    "{} task '{}' (id {})",
                    task_kind_word(t.kind()),
                    t.name,
                    t.id
                )
            })
            .collect();
        return Err(FleetError::Conflict(format!(
            "System '{name}' is used by {}; delete those tasks (or edit them to leave it out) first",
            named.join(", ")
        )));
    }
    ssh_trust::forget_system(state, name).await?;
    let removed = name.to_owned();
    let serial = state
        .store
        .write(move |w| w.remove_system(&removed, now_unix_ms()))
        .await?
        .ok_or_else(|| not_found_system(name))?;
    state.sessions.disconnect(
        name,
        "this system was removed from the fleet; its certificate is revoked",
    );
    Ok(serial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixtures::{enroll, inventory_of, store};
    use crate::engine::state::test_state;
    use nasfleet_proto::v1::{SnapshotTaskSpec, Task, TaskSpec, task_spec};

    #[tokio::test]
    async fn tokens_live_between_one_second_and_a_week_and_only_their_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        for ttl in [Duration::ZERO, MAX_TOKEN_TTL + Duration::from_secs(1)] {
            assert!(matches!(
                create_token(&state, "user:admin", ttl).await,
                Err(FleetError::Invalid { field, rule }) if field == "ttl" && rule == "must be between 1s and 7d"
            ));
        }
        let (token, expires) = create_token(&state, "user:admin", DEFAULT_TOKEN_TTL)
            .await
            .unwrap();
        assert!(token.starts_with("nfj1.") && expires > now_unix_ms());
        assert!(state.store.tokens_contain(&token_hash(&token)).unwrap());
        assert!(!state.store.tokens_contain(&token).unwrap());
    }

    #[tokio::test]
    async fn a_system_in_use_is_not_removed_and_a_free_one_is_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        enroll(&state, "nas1", &inventory_of(&["tank"], Vec::new())).await;
        enroll(&state, "nas2", &inventory_of(&["tank"], Vec::new())).await;
        let task = Task {
            id: 7,
            name: "nas1:tank".into(),
            kind: nasfleet_proto::v1::TaskKind::Snapshot.into(),
            spec: Some(TaskSpec {
                kind: Some(task_spec::Kind::Snapshot(SnapshotTaskSpec {
                    system: "nas1".into(),
                    dataset: "tank".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        store(&state, vec![task], Vec::new()).await;
        assert!(matches!(
            remove(&state, "nas1").await,
            Err(FleetError::Conflict(m)) if m.starts_with("System 'nas1' is used by snapshot task 'nas1:tank' (id 7)")
        ));
        assert_eq!(remove(&state, "nas2").await.unwrap(), "serial-nas2");
        assert!(state.store.system("nas2").unwrap().is_none());
        assert!(matches!(
            remove(&state, "nas2").await,
            Err(FleetError::NotFound(m)) if m == "system 'nas2' is not enrolled"
        ));
    }

    #[tokio::test]
    async fn a_certificate_is_renewed_only_when_due_and_then_promoted() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::engine::state::test_state(dir.path());
        crate::engine::fixtures::store(&state, vec![], vec![("nas1", None)]).await;
        let csr = || {
            let key = rcgen::KeyPair::generate().unwrap();
            rcgen::CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap()
        };
        // Years left: refused, nothing recorded.
        let far = now_unix_ms() + state.ca.leaf_lifetime_ms();
        state
            .store
            .write(move |w| w.update_system("nas1", |r| r.cert_expires_unix_ms = far))
            .await
            .unwrap();
        let refused = renew_certificate(&state, "nas1", &csr()).await.unwrap_err();
        assert!(matches!(refused, FleetError::Conflict(m) if m.contains("not due for renewal")));
        assert!(
            state
                .store
                .system("nas1")
                .unwrap()
                .unwrap()
                .next_cert_serial
                .is_none()
        );
        // A third left: renewed as the next certificate, promoted on use.
        let soon = now_unix_ms() + state.ca.leaf_lifetime_ms() / 3;
        state
            .store
            .write(move |w| w.update_system("nas1", |r| r.cert_expires_unix_ms = soon))
            .await
            .unwrap();
        renew_certificate(&state, "nas1", &csr()).await.unwrap();
        let next = state
            .store
            .system("nas1")
            .unwrap()
            .unwrap()
            .next_cert_serial
            .unwrap();
        promote_certificate(&state, "nas1").await.unwrap();
        let system = state.store.system("nas1").unwrap().unwrap();
        assert_eq!(system.cert_serial, next);
        assert!(system.next_cert_serial.is_none());
        assert!(system.cert_expires_unix_ms > soon);
    }
}
