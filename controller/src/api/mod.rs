//! The Fleet service the CLI calls: join tokens and the systems of the fleet.

mod status;

use crate::agents::enrollment::{DEFAULT_TOKEN_TTL, create_token};
use crate::auth::require_user;
use crate::engine::runs::{self, Trigger};
use crate::engine::ssh_trust;
use crate::engine::tasks;
use crate::state::SharedState;
use crate::store::SystemRecord;
use crate::store::is_final;
use chrono::Utc;
use nasfleet_common::dataset_names::validate_dataset_name;
use nasfleet_common::echo::echo;
use nasfleet_common::identity::Principal;
use nasfleet_common::naming::{DEFAULT_MANUAL_SCHEMA, DEFAULT_PERIODIC_SCHEMA, NamingSchema};
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1::fleet_server::Fleet;
use nasfleet_proto::v1::{
    CreateSnapshotRequest, CreateSnapshotResponse, CreateSnapshots, CreateTokenRequest,
    CreateTokenResponse, DatasetSummary, GetSystemRequest, Inventory, ListDatasetsRequest,
    ListDatasetsResponse, ListRunsRequest, ListRunsResponse, ListSnapshotsRequest,
    ListSnapshotsResponse, ListSshConnectionsRequest, ListSshConnectionsResponse,
    ListSystemsRequest, ListSystemsResponse, ListTasksRequest, ListTasksResponse,
    RemoveSystemRequest, RemoveSystemResponse, Run, RunEvent, RunRef, SetTaskEnabledRequest,
    SshConnection, SshConnectionRef, SystemDetail, SystemStatus, SystemSummary, Task, TaskRef,
    TaskSpec, UpdateTaskRequest, agent_request, run_event, task_spec,
};
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// How long a one-time snapshot may take on the agent.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Runs listed when the caller gives no limit.
const DEFAULT_RUN_LIMIT: usize = 20;

/// How long `system show --refresh` waits for the agent's fresh inventory.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);

pub struct FleetService {
    pub state: SharedState,
    /// Ends `run watch` streams at shutdown, so graceful shutdown can finish.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("controller store failure: {e}"))
}

impl FleetService {
    fn summary(&self, record: &SystemRecord) -> SystemSummary {
        let live = self.state.sessions.live(&record.name);
        let (status, last_seen, address, version) = match &live {
            Some(l) => (
                SystemStatus::Online,
                l.last_heartbeat_unix_ms.max(record.last_seen_unix_ms),
                l.address.clone(),
                l.agent_version.clone(),
            ),
            None => (
                SystemStatus::Offline,
                record.last_seen_unix_ms,
                record.address.clone(),
                record.agent_version.clone(),
            ),
        };
        SystemSummary {
            name: record.name.clone(),
            status: status.into(),
            last_seen_unix_ms: last_seen,
            address,
            agent_version: version,
            pools: record.pools.clone(),
            enrolled_unix_ms: record.enrolled_unix_ms,
        }
    }

    /// For `--create-snapshot-task`: a periodic snapshot task on the
    /// replication's schedule for every source dataset that no snapshot
    /// task with the replication's (first) naming schema covers yet.
    async fn companion_snapshot_tasks(&self, task: &Task) -> Result<Vec<Task>, Status> {
        let Some(task_spec::Kind::Replication(spec)) =
            task.spec.as_ref().and_then(|s| s.kind.as_ref())
        else {
            return Ok(Vec::new());
        };
        if !spec.create_snapshot_task {
            return Ok(Vec::new());
        }
        let existing: Vec<nasfleet_proto::v1::SnapshotTaskSpec> = self
            .state
            .store
            .tasks()
            .map_err(internal)?
            .into_iter()
            .filter_map(|t| match t.spec?.kind? {
                task_spec::Kind::Snapshot(s) => Some(s),
                task_spec::Kind::Replication(_) | task_spec::Kind::Rsync(_) => None,
            })
            .collect();
        let mut companions = Vec::new();
        for source in &spec.sources {
            let schema = source
                .naming_schemas
                .first()
                .cloned()
                .unwrap_or_else(|| DEFAULT_PERIODIC_SCHEMA.into());
            for dataset in &source.datasets {
                let covered = existing.iter().any(|s| {
                    s.system == source.system && s.naming_schema == schema && covers(s, dataset)
                });
                if covered {
                    continue;
                }
                let spec = TaskSpec {
                    schedule: task.schedule.clone(),
                    enabled: true,
                    kind: Some(task_spec::Kind::Snapshot(
                        nasfleet_proto::v1::SnapshotTaskSpec {
                            system: source.system.clone(),
                            dataset: dataset.clone(),
                            recursive: source.recursive,
                            exclude: Vec::new(),
                            naming_schema: schema.clone(),
                            lifetime: String::new(),
                        },
                    )),
                };
                companions.push(tasks::validate(&self.state, spec, None).await?);
            }
        }
        Ok(companions)
    }

    /// Stores a task, tells the scheduler, and returns it as callers see it.
    async fn save_task(&self, task: Task) -> Result<Response<Task>, Status> {
        let stored = task.clone();
        self.state
            .store
            .write(move |w| w.put_task(&stored))
            .await
            .map_err(internal)?;
        self.state.scheduler_wake.notify_one();
        Ok(Response::new(tasks::present(&self.state, task)?))
    }

    /// Scheduled fires while a task was disabled are not owed: enabling
    /// starts its schedule from now.
    async fn reset_schedule_mark(&self, task_id: u64) -> Result<(), Status> {
        let now = Utc::now().timestamp_millis();
        self.state
            .store
            .write(move |w| w.set_schedule_mark(task_id, now))
            .await
            .map_err(internal)
    }

    /// The inventory of a system, fresh from its agent when asked.
    async fn inventory(&self, system: &str, refresh: bool) -> Result<Inventory, Status> {
        self.record(system)?;
        if refresh {
            let waiter = self
                .state
                .sessions
                .request_inventory(system)
                .ok_or_else(|| {
                    Status::unavailable(format!(
                        "System '{system}' is offline; cannot refresh its inventory"
                    ))
                })?;
            if tokio::time::timeout(REFRESH_TIMEOUT, waiter).await.is_err() {
                return Err(Status::deadline_exceeded(format!(
                    "system '{system}' did not send its inventory within {}s",
                    REFRESH_TIMEOUT.as_secs()
                )));
            }
        }
        tasks::inventory(&self.state, system)?.ok_or_else(|| {
            Status::failed_precondition(format!(
                "system '{system}' has not reported its inventory yet"
            ))
        })
    }

    fn record(&self, name: &str) -> Result<SystemRecord, Status> {
        self.state
            .store
            .system(name)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("system '{}' is not enrolled", echo(name))))
    }
}

#[tonic::async_trait]
impl Fleet for FleetService {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let caller = require_user(&self.state.store, &request, true)?;
        let ttl = match request.get_ref().ttl_secs {
            0 => DEFAULT_TOKEN_TTL,
            secs => Duration::from_secs(secs),
        };
        let (token, expires) =
            create_token(&self.state, &caller.principal.common_name(), ttl).await?;
        tracing::info!(by = %caller.principal, ttl_secs = ttl.as_secs(), "join token created");
        Ok(Response::new(CreateTokenResponse {
            token,
            ca_fingerprint: self.state.ca.fingerprint().to_owned(),
            expires_unix_ms: expires,
            controller_url: self.state.url.clone(),
        }))
    }

    async fn list_systems(
        &self,
        request: Request<ListSystemsRequest>,
    ) -> Result<Response<ListSystemsResponse>, Status> {
        require_user(&self.state.store, &request, false)?;
        let systems = self.state.store.systems().map_err(internal)?;
        Ok(Response::new(ListSystemsResponse {
            systems: systems.iter().map(|r| self.summary(r)).collect(),
        }))
    }

    async fn get_system(
        &self,
        request: Request<GetSystemRequest>,
    ) -> Result<Response<SystemDetail>, Status> {
        require_user(&self.state.store, &request, false)?;
        let req = request.into_inner();
        self.record(&req.name)?;
        if req.refresh {
            let Some(waiter) = self.state.sessions.request_inventory(&req.name) else {
                return Err(Status::unavailable(format!(
                    "System '{}' is offline; cannot refresh its inventory",
                    req.name
                )));
            };
            if tokio::time::timeout(REFRESH_TIMEOUT, waiter).await.is_err() {
                return Err(Status::deadline_exceeded(format!(
                    "system '{}' did not send its inventory within {}s",
                    req.name,
                    REFRESH_TIMEOUT.as_secs()
                )));
            }
        }
        let record = self.record(&req.name)?;
        let inventory = tasks::inventory(&self.state, &req.name)?;
        Ok(Response::new(SystemDetail {
            summary: Some(self.summary(&record)),
            inventory,
            certificate_serial: record.cert_serial,
        }))
    }

    async fn remove_system(
        &self,
        request: Request<RemoveSystemRequest>,
    ) -> Result<Response<RemoveSystemResponse>, Status> {
        let caller = require_user(&self.state.store, &request, true)?;
        let name = request.into_inner().name;
        if self.state.store.system(&name).map_err(internal)?.is_none() {
            return Err(Status::not_found(format!(
                "system '{}' is not enrolled",
                echo(&name)
            )));
        }
        // Nothing may keep pointing at a system that is gone: its tasks
        // would fail on every run, and its replication key would still log
        // in to the systems it replicated to.
        let using = tasks::tasks_using(&self.state, &name)?;
        if !using.is_empty() {
            let named: Vec<String> = using
                .iter()
                .map(|t| format!("{} task '{}' (id {})", t.kind, t.name, t.id))
                .collect();
            return Err(Status::failed_precondition(format!(
                "System '{name}' is used by {}; delete those tasks (or edit them to leave it out) first",
                named.join(", ")
            )));
        }
        ssh_trust::forget_system(&self.state, &name).await?;
        let removed = name.clone();
        let serial = self
            .state
            .store
            .write(move |w| w.remove_system(&removed, now_unix_ms()))
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!("system '{}' is not enrolled", echo(&name)))
            })?;
        self.state.sessions.disconnect(
            &name,
            Status::permission_denied(
                "this system was removed from the fleet; its certificate is revoked",
            ),
        );
        tracing::info!(system = %name, by = %caller.principal, %serial, "system removed, certificate revoked");
        Ok(Response::new(RemoveSystemResponse {
            revoked_serial: serial,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        require_user(&self.state.store, &request, true)?;
        let req = request.into_inner();
        self.record(&req.system)?;
        let schema_text = if req.naming_schema.is_empty() {
            DEFAULT_MANUAL_SCHEMA
        } else {
            req.naming_schema.as_str()
        };
        let schema = NamingSchema::new(schema_text)
            .map_err(|e| Status::invalid_argument(format!("naming_schema: {e}")))?;
        validate_dataset_name(&req.dataset)
            .map_err(|e| Status::invalid_argument(format!("dataset: {e}")))?;
        if !tasks::dataset_exists(&self.state, &req.system, &req.dataset).await? {
            return Err(Status::not_found(format!(
                "dataset: Dataset not found: '{}' on system '{}'",
                echo(&req.dataset),
                echo(&req.system)
            )));
        }
        let name = format!(
            "{}@{}",
            req.dataset,
            schema.render(&Utc::now().with_timezone(&self.state.timezone))
        );
        let answer = self
            .state
            .sessions
            .request(
                &req.system,
                agent_request::Body::CreateSnapshots(CreateSnapshots {
                    names: vec![name],
                    recursive: req.recursive,
                }),
                SNAPSHOT_TIMEOUT,
            )
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if !answer.error.is_empty() {
            return Err(if answer.error.contains("already exists") {
                Status::already_exists(answer.error)
            } else {
                Status::failed_precondition(answer.error)
            });
        }
        // So listings show the new snapshot without waiting for the next period.
        let _ = self.state.sessions.request_inventory(&req.system);
        Ok(Response::new(CreateSnapshotResponse {
            created: answer.created,
        }))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        require_user(&self.state.store, &request, false)?;
        let req = request.into_inner();
        let inventory = self.inventory(&req.system, req.refresh).await?;
        if !req.dataset.is_empty() && !inventory.datasets.iter().any(|d| d.name == req.dataset) {
            return Err(Status::not_found(format!(
                "dataset: Dataset not found: '{}' on system '{}'",
                echo(&req.dataset),
                echo(&req.system)
            )));
        }
        let prefix = format!("{}/", req.dataset);
        let mut snapshots: Vec<_> = inventory
            .snapshots
            .into_iter()
            .filter(|s| {
                let dataset = s.name.split_once('@').map_or("", |(d, _)| d);
                req.dataset.is_empty()
                    || dataset == req.dataset
                    || (req.recursive && dataset.starts_with(&prefix))
            })
            .collect();
        snapshots.sort_by(|a, b| {
            (a.name.split_once('@').map(|p| p.0), a.creation_unix)
                .cmp(&(b.name.split_once('@').map(|p| p.0), b.creation_unix))
        });
        Ok(Response::new(ListSnapshotsResponse { snapshots }))
    }

    async fn list_datasets(
        &self,
        request: Request<ListDatasetsRequest>,
    ) -> Result<Response<ListDatasetsResponse>, Status> {
        require_user(&self.state.store, &request, false)?;
        let req = request.into_inner();
        let inventory = self.inventory(&req.system, req.refresh).await?;
        let snapshot_tasks: Vec<(String, task_spec::Kind)> = self
            .state
            .store
            .tasks()
            .map_err(internal)?
            .into_iter()
            .filter_map(|t| Some((t.name, t.spec?.kind?)))
            .collect();
        let datasets = inventory
            .datasets
            .iter()
            .map(|dataset| {
                let own: Vec<_> = inventory
                    .snapshots
                    .iter()
                    .filter(|s| {
                        s.name
                            .split_once('@')
                            .is_some_and(|(d, _)| d == dataset.name)
                    })
                    .collect();
                let newest = own.iter().max_by_key(|s| s.creation_unix);
                let covering = snapshot_tasks
                    .iter()
                    .filter(|(_, kind)| match kind {
                        task_spec::Kind::Snapshot(spec) => {
                            spec.system == req.system && covers(spec, &dataset.name)
                        }
                        task_spec::Kind::Replication(_) | task_spec::Kind::Rsync(_) => false,
                    })
                    .map(|(name, _)| name.clone())
                    .collect();
                DatasetSummary {
                    dataset: Some(dataset.clone()),
                    snapshot_count: u32::try_from(own.len()).unwrap_or(u32::MAX),
                    newest_snapshot: newest.map(|s| s.name.clone()).unwrap_or_default(),
                    snapshot_tasks: covering,
                }
            })
            .collect();
        Ok(Response::new(ListDatasetsResponse { datasets }))
    }

    async fn create_task(&self, request: Request<TaskSpec>) -> Result<Response<Task>, Status> {
        let caller = require_user(&self.state.store, &request, true)?;
        let mut task = tasks::validate(&self.state, request.into_inner(), None).await?;
        let mut companions = self.companion_snapshot_tasks(&task).await?;
        task.id = self.state.store.next_id().await.map_err(internal)?;
        for companion in &mut companions {
            companion.id = self.state.store.next_id().await.map_err(internal)?;
        }
        tracing::info!(task = %task.name, id = task.id, by = %caller.principal, schedule = %task.schedule, "task created");
        let saved = self.save_task(task).await?;
        for companion in companions {
            tracing::info!(task = %companion.name, id = companion.id, "snapshot task created for replication");
            self.save_task(companion).await?;
        }
        Ok(saved)
    }

    async fn validate_task(
        &self,
        request: Request<UpdateTaskRequest>,
    ) -> Result<Response<Task>, Status> {
        require_user(&self.state.store, &request, true)?;
        let req = request.into_inner();
        let existing = match req.task.as_str() {
            "" => None,
            reference => Some(tasks::find(&self.state, reference)?),
        };
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: the task spec is required"))?;
        let task = tasks::validate(&self.state, spec, existing.as_ref()).await?;
        Ok(Response::new(tasks::present(&self.state, task)?))
    }

    async fn list_ssh_connections(
        &self,
        request: Request<ListSshConnectionsRequest>,
    ) -> Result<Response<ListSshConnectionsResponse>, Status> {
        require_user(&self.state.store, &request, false)?;
        let connections = self
            .state
            .store
            .ssh_connections()
            .map_err(internal)?
            .iter()
            .map(ssh_trust::to_proto)
            .collect();
        Ok(Response::new(ListSshConnectionsResponse { connections }))
    }

    async fn create_ssh_connection(
        &self,
        request: Request<SshConnectionRef>,
    ) -> Result<Response<SshConnection>, Status> {
        let caller = require_user(&self.state.store, &request, true)?;
        let req = request.into_inner();
        let record = ssh_trust::create(&self.state, &req.source, &req.target).await?;
        tracing::info!(source = %req.source, target = %req.target, by = %caller.principal, "SSH connection created");
        Ok(Response::new(ssh_trust::to_proto(&record)))
    }

    async fn delete_ssh_connection(
        &self,
        request: Request<SshConnectionRef>,
    ) -> Result<Response<SshConnection>, Status> {
        let caller = require_user(&self.state.store, &request, true)?;
        let req = request.into_inner();
        let record = self
            .state
            .store
            .ssh_connection(&req.source, &req.target)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no SSH connection from '{}' to '{}'",
                    echo(&req.source),
                    echo(&req.target)
                ))
            })?;
        // The key must stop working, not just be forgotten here: the target
        // revokes it first, and the record goes only when that succeeded.
        ssh_trust::revoke(&self.state, &record).await?;
        ssh_trust::forget(&self.state, &record).await?;
        tracing::info!(source = %req.source, target = %req.target, by = %caller.principal, "SSH connection deleted");
        Ok(Response::new(ssh_trust::to_proto(&record)))
    }

    async fn update_task(
        &self,
        request: Request<UpdateTaskRequest>,
    ) -> Result<Response<Task>, Status> {
        let caller = require_user(&self.state.store, &request, true)?;
        let req = request.into_inner();
        let existing = tasks::find(&self.state, &req.task)?;
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: the new task spec is required"))?;
        if spec.kind.as_ref().map(kind_name)
            != existing
                .spec
                .as_ref()
                .and_then(|s| s.kind.as_ref())
                .map(kind_name)
        {
            return Err(Status::invalid_argument(
                "kind: a task's kind cannot change",
            ));
        }
        let was_enabled = existing.spec.as_ref().is_some_and(|s| s.enabled);
        let task = tasks::validate(&self.state, spec, Some(&existing)).await?;
        if !was_enabled && task.spec.as_ref().is_some_and(|s| s.enabled) {
            self.reset_schedule_mark(task.id).await?;
        }
        tracing::info!(task = %task.name, id = task.id, by = %caller.principal, "task updated");
        self.save_task(task).await
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        require_user(&self.state.store, &request, false)?;
        let kind = request.into_inner().kind;
        let tasks = self
            .state
            .store
            .tasks()
            .map_err(internal)?
            .into_iter()
            .filter(|t| kind.is_empty() || t.kind == kind)
            .map(|t| tasks::present(&self.state, t))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn get_task(&self, request: Request<TaskRef>) -> Result<Response<Task>, Status> {
        require_user(&self.state.store, &request, false)?;
        let task = tasks::find(&self.state, &request.into_inner().task)?;
        Ok(Response::new(tasks::present(&self.state, task)?))
    }

    async fn delete_task(&self, request: Request<TaskRef>) -> Result<Response<Task>, Status> {
        let caller = require_user(&self.state.store, &request, true)?;
        let task = tasks::find(&self.state, &request.into_inner().task)?;
        if let Some(run) = runs::active_run_of(&self.state, task.id)? {
            return Err(Status::failed_precondition(format!(
                "task '{}' is running (run {}); cancel the run first",
                task.name, run.id
            )));
        }
        let shown = tasks::present(&self.state, task.clone())?;
        let id = task.id;
        self.state
            .store
            .write(move |w| w.delete_task(id))
            .await
            .map_err(internal)?;
        self.state.scheduler_wake.notify_one();
        tracing::info!(task = %task.name, id = task.id, by = %caller.principal, "task deleted");
        Ok(Response::new(shown))
    }

    async fn set_task_enabled(
        &self,
        request: Request<SetTaskEnabledRequest>,
    ) -> Result<Response<Task>, Status> {
        let caller = require_user(&self.state.store, &request, true)?;
        let req = request.into_inner();
        let mut task = tasks::find(&self.state, &req.task)?;
        let spec = task
            .spec
            .as_mut()
            .ok_or_else(|| Status::internal(format!("task {} has no spec", task.id)))?;
        if req.enabled && !spec.enabled {
            self.reset_schedule_mark(task.id).await?;
        }
        spec.enabled = req.enabled;
        tracing::info!(task = %task.name, id = task.id, enabled = req.enabled, by = %caller.principal, "task enabled state changed");
        self.save_task(task).await
    }

    async fn run_task(&self, request: Request<TaskRef>) -> Result<Response<Run>, Status> {
        let caller = require_user(&self.state.store, &request, true)?;
        let task = tasks::find(&self.state, &request.into_inner().task)?;
        let parts = tasks::prepare(&self.state, &task, Utc::now()).await;
        let trigger = Trigger::Manual {
            by: user_name(&caller.principal),
        };
        let run = runs::start(&self.state, &task, trigger, parts).await?;
        Ok(Response::new(run))
    }

    async fn list_runs(
        &self,
        request: Request<ListRunsRequest>,
    ) -> Result<Response<ListRunsResponse>, Status> {
        require_user(&self.state.store, &request, false)?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_RUN_LIMIT,
            n => n as usize,
        };
        let runs = if req.task.is_empty() {
            self.state.store.runs(limit)
        } else {
            let task = tasks::find(&self.state, &req.task)?;
            self.state.store.runs_of_task(task.id, limit)
        }
        .map_err(internal)?;
        Ok(Response::new(ListRunsResponse {
            runs: runs
                .into_iter()
                .map(|r| self.state.runs.overlay(r))
                .collect(),
        }))
    }

    async fn get_run(&self, request: Request<RunRef>) -> Result<Response<Run>, Status> {
        require_user(&self.state.store, &request, false)?;
        Ok(Response::new(runs::get(
            &self.state,
            request.into_inner().id,
        )?))
    }

    type WatchRunStream = Pin<Box<dyn Stream<Item = Result<RunEvent, Status>> + Send>>;

    async fn watch_run(
        &self,
        request: Request<RunRef>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        require_user(&self.state.store, &request, false)?;
        let id = request.into_inner().id;
        // Subscribe first, then read: a run ending in between is seen in the read.
        let mut events = self.state.runs.subscribe(id);
        let current = match runs::get(&self.state, id) {
            Ok(run) => run,
            Err(e) => {
                self.state.runs.discard_if_unwatched(id);
                return Err(e.into());
            }
        };
        let done = is_final(current.state());
        if done {
            self.state.runs.discard_if_unwatched(id);
        }
        let mut shutdown = self.shutdown.clone();
        let stream = async_stream(current, move |tx| async move {
            if done {
                return;
            }
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    _ = nasfleet_common::daemon::wait_for_shutdown(&mut shutdown) => return,
                };
                match event {
                    Ok(event) => {
                        let last = matches!(&event.body, Some(run_event::Body::Run(run)) if is_final(run.state()));
                        if tx.send(Ok(event)).await.is_err() || last {
                            return;
                        }
                    }
                    // A slow watcher missed some progress; carry on with newer events.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn cancel_run(&self, request: Request<RunRef>) -> Result<Response<Run>, Status> {
        let caller = require_user(&self.state.store, &request, true)?;
        let run = runs::cancel(
            &self.state,
            request.into_inner().id,
            &user_name(&caller.principal),
        )
        .await?;
        Ok(Response::new(run))
    }
}

fn kind_name(kind: &task_spec::Kind) -> &'static str {
    match kind {
        task_spec::Kind::Snapshot(_) => tasks::KIND_SNAPSHOT,
        task_spec::Kind::Replication(_) => tasks::KIND_REPLICATION,
        task_spec::Kind::Rsync(_) => tasks::KIND_RSYNC,
    }
}

fn user_name(principal: &Principal) -> String {
    match principal {
        Principal::User(name) | Principal::System(name) => name.clone(),
    }
}

/// Whether a periodic snapshot task takes snapshots of `dataset`.
fn covers(spec: &nasfleet_proto::v1::SnapshotTaskSpec, dataset: &str) -> bool {
    let under = |parent: &str| dataset == parent || dataset.starts_with(&format!("{parent}/"));
    if spec.recursive {
        under(&spec.dataset) && !spec.exclude.iter().any(|e| under(e))
    } else {
        dataset == spec.dataset
    }
}

/// A response stream that starts with the current run and continues with
/// whatever `feed` sends.
fn async_stream<F, Fut>(
    first: Run,
    feed: F,
) -> Pin<Box<dyn Stream<Item = Result<RunEvent, Status>> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<RunEvent, Status>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let first = RunEvent {
        body: Some(run_event::Body::Run(first)),
    };
    // Room for the first event is guaranteed: the channel is new.
    let _ = tx.try_send(Ok(first));
    tokio::spawn(feed(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
