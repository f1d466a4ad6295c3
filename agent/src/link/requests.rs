//! The controller's one-time requests, answered in the background on the session they came on: one handler per kind, each within a timeout, each answer an [`AgentResponse`] whose `error` is empty on success.

use crate::rsync::validate_on_host;
use crate::runs::RunManager;
use crate::runs::replication::cursor;
use crate::runs::replication::holds::release_all;
use crate::runs::replication::{check_target, estimate_replication, list_replicas};
use crate::ssh;
use crate::zfs::{Dialect, Zfs, ZfsError};
use nasfleet_common::echo::echo;
use nasfleet_common::names::{is_replication_hold_tag, replication_hold_task};
use nasfleet_proto::v1::agent_message::Body as Up;
use nasfleet_proto::v1::{
    AgentErrorKind, AgentMessage, AgentRequest, AgentResponse, AllowReplication, AuthorizeKey,
    CheckSsh, CreateSnapshots, EstimateReplication, ListReplicas, ReleaseHolds, RevokeKey,
    ValidateRsync, agent_request,
};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest a one-time request (e.g. taking a snapshot) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What the handlers may use.
pub(super) struct Handlers {
    pub(super) zfs: Arc<Zfs>,
    pub(super) runs: Arc<RunManager>,
    /// The pools this agent owns (empty = every pool).
    pub(super) pools: Vec<String>,
}

/// Answers a controller request in the background; the answer goes up the
/// session it came on (if that session is gone, the controller times out).
pub(super) fn answer(request: AgentRequest, handlers: Handlers, tx: mpsc::Sender<AgentMessage>) {
    tokio::spawn(async move {
        let mut response = handlers.respond(request.body).await;
        response.request_id = request.request_id;
        let _ = tx
            .send(AgentMessage {
                body: Some(Up::Response(response)),
            })
            .await;
    });
}

impl Handlers {
    async fn respond(&self, body: Option<agent_request::Body>) -> AgentResponse {
        use agent_request::Body;
        match body {
            Some(Body::AuthorizeKey(authorize)) => self.authorize_key(authorize).await,
            Some(Body::AllowReplication(allow)) => self.allow_replication(allow).await,
            Some(Body::ValidateRsync(validate)) => self.validate_rsync(validate).await,
            Some(Body::RevokeKey(revoke)) => revoke_key(revoke).await,
            Some(Body::CheckSsh(check)) => self.check_ssh(check).await,
            Some(Body::CreateSnapshots(create)) => self.create_snapshots(create).await,
            Some(Body::ListReplicas(list)) => self.list_replicas(list).await,
            Some(Body::EstimateReplication(estimate)) => self.estimate_replication(estimate).await,
            Some(Body::ReleaseHolds(release)) => self.release_holds(release).await,
            None => failed("this agent does not understand the request; upgrade it".into()),
        }
    }

    async fn validate_rsync(&self, validate: ValidateRsync) -> AgentResponse {
        let spec = validate.spec.unwrap_or_default();
        match validate_on_host(&spec, &self.zfs, &self.pools).await {
            Ok(()) => AgentResponse::default(),
            // Every refusal of these checks names the field and the rule.
            Err(e) => failed_as(AgentErrorKind::Invalid, e.to_string()),
        }
    }

    async fn check_ssh(&self, check: CheckSsh) -> AgentResponse {
        match check.target {
            Some(target) => outcome(check_target(&self.runs.identity, &target).await),
            None => failed("the check names no target".into()),
        }
    }

    async fn create_snapshots(&self, create: CreateSnapshots) -> AgentResponse {
        let taken = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.zfs.create_snapshots(&create.names, create.recursive),
        )
        .await;
        match taken {
            Ok(Ok(())) => {
                tracing::info!(names = ?create.names, recursive = create.recursive, "snapshot taken");
                AgentResponse {
                    created: create.names,
                    ..Default::default()
                }
            }
            Ok(Err(e @ ZfsError::SnapshotExists { .. })) => {
                failed_as(AgentErrorKind::AlreadyExists, e.to_string())
            }
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed_as(
                AgentErrorKind::TimedOut,
                took_too_long("taking the snapshot"),
            ),
        }
    }

    /// Authorizes a source's replication key behind the gate: it may run
    /// only what [`ssh::gate`] admits, below the datasets of its tasks.
    async fn authorize_key(&self, authorize: AuthorizeKey) -> AgentResponse {
        outcome(
            self.authorize_gated(
                &authorize.user,
                &authorize.public_key,
                &authorize.source_system,
            )
            .await,
        )
    }

    async fn authorize_gated(
        &self,
        user: &str,
        public_key: &str,
        source: &str,
    ) -> Result<(), String> {
        let agent = std::env::current_exe()
            .map_err(|e| format!("cannot find this agent's own program: {e}"))?;
        let options = ssh::gate::key_options(&agent, &self.runs.identity.state_dir, source)
            .map_err(|e| e.to_string())?;
        let authorized = within_timeout(
            "authorizing the key",
            ssh::authorize_key(user, public_key, source, Some(&options)),
        )
        .await?;
        tracing::info!(%user, %source, outcome = ?authorized, "replication key authorized behind the gate");
        Ok(())
    }

    /// Replaces the datasets below which a source's key may receive here,
    /// and makes sure its key (when given) is behind the gate.
    async fn allow_replication(&self, allow: AllowReplication) -> AgentResponse {
        let state_dir = self.runs.identity.state_dir.clone();
        let (source, roots) = (allow.source_system.clone(), allow.roots.clone());
        let stored = tokio::task::spawn_blocking(move || {
            ssh::gate::store_rules(&state_dir, &source, &roots)
        })
        .await;
        match stored {
            Ok(Ok(())) => {
                tracing::info!(source = %allow.source_system, roots = ?allow.roots, "replication allow-list updated");
            }
            Ok(Err(e)) => return failed_as(AgentErrorKind::Invalid, e.to_string()),
            Err(e) => return failed(format!("updating the allow-list failed: {e}")),
        }
        if allow.public_key.is_empty() {
            return AgentResponse::default();
        }
        outcome(
            self.authorize_gated(&allow.user, &allow.public_key, &allow.source_system)
                .await,
        )
    }

    async fn estimate_replication(&self, estimate: EstimateReplication) -> AgentResponse {
        let work = estimate.work.unwrap_or_default();
        let system = &self.runs.identity.system;
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            estimate_replication(&self.zfs, system, &work),
        )
        .await
        {
            Ok(estimates) => AgentResponse {
                estimates,
                ..Default::default()
            },
            Err(_) => failed(format!(
                "estimating the replication took longer than {} s",
                REQUEST_TIMEOUT.as_secs()
            )),
        }
    }

    async fn release_holds(&self, release: ReleaseHolds) -> AgentResponse {
        if !is_replication_hold_tag(&release.tag) {
            return failed_as(
                AgentErrorKind::Invalid,
                format!("'{}' is not a nasfleet hold tag", echo(&release.tag)),
            );
        }
        let task = replication_hold_task(&release.tag);
        let (mut released, mut cursors) = (0, 0);
        for dataset in &release.datasets {
            let pool = dataset.split('/').next().unwrap_or_default();
            if !self.pools.is_empty() && !self.pools.iter().any(|p| p == pool) {
                return failed_as(
                    AgentErrorKind::Invalid,
                    format!("'{}' is not on a pool of this agent", echo(dataset)),
                );
            }
            match release_all(&release.tag, dataset, REQUEST_TIMEOUT).await {
                Ok(n) => released += n,
                // Gone with its dataset: nothing left to release.
                Err(e) if e.contains("dataset does not exist") => {}
                Err(e) => return failed(e),
            }
            // The task's cursors go with its holds (OpenZFS sources).
            if let (Dialect::OpenZfs, Some(task)) = (self.zfs.dialect, task) {
                match cursor::remove_all(task, dataset, REQUEST_TIMEOUT).await {
                    Ok(n) => cursors += n,
                    Err(e) => return failed(e),
                }
            }
        }
        tracing::info!(tag = %release.tag, released, cursors, "replication holds and cursors released");
        AgentResponse::default()
    }

    async fn list_replicas(&self, list: ListReplicas) -> AgentResponse {
        AgentResponse {
            replicas: list_replicas(&self.zfs, &list.datasets).await,
            ..Default::default()
        }
    }
}

async fn revoke_key(revoke: RevokeKey) -> AgentResponse {
    let revoked = within_timeout(
        "revoking the key",
        ssh::revoke_key(&revoke.user, &revoke.public_key),
    )
    .await;
    if let Ok(outcome) = &revoked {
        tracing::info!(user = %revoke.user, ?outcome, "replication key revoked");
    }
    outcome(revoked.map(drop))
}

/// Runs `work` for at most [`REQUEST_TIMEOUT`]: its error, or "`doing`
/// took longer than ...", is the answer's reason.
async fn within_timeout<T, E: Display>(
    doing: &str,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(took_too_long(doing)),
    }
}

fn took_too_long(doing: &str) -> String {
    format!("{doing} took longer than {}s", REQUEST_TIMEOUT.as_secs())
}

/// The answer to a request that yields nothing but success or a reason.
fn outcome(result: Result<(), String>) -> AgentResponse {
    AgentResponse {
        error: result.err().unwrap_or_default(),
        ..Default::default()
    }
}

fn failed(error: String) -> AgentResponse {
    failed_as(AgentErrorKind::Unspecified, error)
}

fn failed_as(kind: AgentErrorKind, error: String) -> AgentResponse {
    AgentResponse {
        error,
        error_kind: kind.into(),
        ..Default::default()
    }
}
