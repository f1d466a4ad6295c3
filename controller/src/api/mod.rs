//! The Fleet service people call (CLI, scripts): one thin handler per RPC, grouped by resource in the submodules; each authenticates, authorizes, calls the engine and turns its error into a status.

mod alerts;
mod channels;
mod runs;
mod ssh;
mod status;
pub(crate) mod subjects;
mod systems;
pub(crate) mod tasks;
mod users;

use crate::engine::state::SharedState;
use nasfleet_proto::v1 as pb;
use nasfleet_proto::v1::fleet_server::Fleet;
use nasfleet_proto::v1::{
    CreateSnapshotRequest, CreateSnapshotResponse, CreateTokenRequest, CreateTokenResponse,
    GetSystemRequest, ListDatasetsRequest, ListDatasetsResponse, ListRunsRequest, ListRunsResponse,
    ListSnapshotsRequest, ListSnapshotsResponse, ListSshConnectionsRequest,
    ListSshConnectionsResponse, ListSystemsRequest, ListSystemsResponse, ListTasksRequest,
    ListTasksResponse, RemoveSystemRequest, RemoveSystemResponse, ReplicationEstimate, Run, RunRef,
    SetTaskEnabledRequest, SshConnection, SshConnectionRef, SystemDetail, Task, TaskRef, TaskSpec,
    UpdateTaskRequest,
};
use tonic::{Request, Response, Status};

pub struct FleetService {
    pub state: SharedState,
    /// Ends `run watch` streams at shutdown, so graceful shutdown can finish.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Fleet for FleetService {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Answer<CreateTokenResponse> {
        systems::create_token(&self.state, request).await
    }

    async fn list_systems(
        &self,
        request: Request<ListSystemsRequest>,
    ) -> Answer<ListSystemsResponse> {
        systems::list(&self.state, request).await
    }

    async fn get_system(&self, request: Request<GetSystemRequest>) -> Answer<SystemDetail> {
        systems::get(&self.state, request).await
    }

    async fn remove_system(
        &self,
        request: Request<RemoveSystemRequest>,
    ) -> Answer<RemoveSystemResponse> {
        systems::remove(&self.state, request).await
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Answer<CreateSnapshotResponse> {
        systems::create_snapshot(&self.state, request).await
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Answer<ListSnapshotsResponse> {
        systems::list_snapshots(&self.state, request).await
    }

    async fn list_datasets(
        &self,
        request: Request<ListDatasetsRequest>,
    ) -> Answer<ListDatasetsResponse> {
        systems::list_datasets(&self.state, request).await
    }

    async fn create_task(&self, request: Request<TaskSpec>) -> Answer<Task> {
        tasks::create(&self.state, request).await
    }

    async fn validate_task(&self, request: Request<UpdateTaskRequest>) -> Answer<Task> {
        tasks::check(&self.state, request).await
    }

    async fn estimate_replication(
        &self,
        request: Request<UpdateTaskRequest>,
    ) -> Answer<ReplicationEstimate> {
        tasks::estimate(&self.state, request).await
    }

    async fn update_task(&self, request: Request<UpdateTaskRequest>) -> Answer<Task> {
        tasks::update(&self.state, request).await
    }

    async fn list_tasks(&self, request: Request<ListTasksRequest>) -> Answer<ListTasksResponse> {
        tasks::list(&self.state, request).await
    }

    async fn get_task(&self, request: Request<TaskRef>) -> Answer<Task> {
        tasks::get(&self.state, request).await
    }

    async fn delete_task(&self, request: Request<TaskRef>) -> Answer<Task> {
        tasks::delete(&self.state, request).await
    }

    async fn set_task_enabled(&self, request: Request<SetTaskEnabledRequest>) -> Answer<Task> {
        tasks::set_enabled(&self.state, request).await
    }

    async fn run_task(&self, request: Request<TaskRef>) -> Answer<Run> {
        tasks::run_now(&self.state, request).await
    }

    async fn list_ssh_connections(
        &self,
        request: Request<ListSshConnectionsRequest>,
    ) -> Answer<ListSshConnectionsResponse> {
        ssh::list(&self.state, request).await
    }

    async fn create_ssh_connection(
        &self,
        request: Request<SshConnectionRef>,
    ) -> Answer<SshConnection> {
        ssh::create(&self.state, request).await
    }

    async fn delete_ssh_connection(
        &self,
        request: Request<SshConnectionRef>,
    ) -> Answer<SshConnection> {
        ssh::delete(&self.state, request).await
    }

    async fn list_runs(&self, request: Request<ListRunsRequest>) -> Answer<ListRunsResponse> {
        runs::list(&self.state, request).await
    }

    async fn get_run(&self, request: Request<RunRef>) -> Answer<Run> {
        runs::get(&self.state, request).await
    }

    type WatchRunStream = runs::WatchStream;

    async fn watch_run(&self, request: Request<RunRef>) -> Answer<Self::WatchRunStream> {
        runs::watch(&self.state, request, self.shutdown.clone()).await
    }

    async fn cancel_run(&self, request: Request<RunRef>) -> Answer<Run> {
        runs::cancel(&self.state, request).await
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Answer<pb::CreateUserResponse> {
        users::create(&self.state, request).await
    }

    async fn create_user_token(
        &self,
        request: Request<pb::CreateUserTokenRequest>,
    ) -> Answer<pb::CreateUserResponse> {
        users::create_token(&self.state, request).await
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Answer<pb::ListUsersResponse> {
        users::list(&self.state, request).await
    }

    async fn get_user(&self, request: Request<pb::UserRef>) -> Answer<pb::User> {
        users::get(&self.state, request).await
    }

    async fn update_user(&self, request: Request<pb::UpdateUserRequest>) -> Answer<pb::User> {
        users::update(&self.state, request).await
    }

    async fn remove_user(&self, request: Request<pb::UserRef>) -> Answer<pb::User> {
        users::remove(&self.state, request).await
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Answer<pb::ListAuditResponse> {
        users::audit_list(&self.state, request).await
    }

    async fn create_console_link(
        &self,
        request: Request<pb::ConsoleLinkRequest>,
    ) -> Answer<pb::ConsoleLink> {
        users::console_link(&self.state, request).await
    }

    async fn set_user_password(
        &self,
        request: Request<pb::SetUserPasswordRequest>,
    ) -> Answer<pb::User> {
        users::set_password(&self.state, request).await
    }

    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Answer<pb::ListAlertsResponse> {
        alerts::list(&self.state, request).await
    }

    async fn dismiss_alert(&self, request: Request<pb::AlertRef>) -> Answer<pb::Alert> {
        alerts::dismiss(&self.state, request).await
    }

    async fn add_channel(
        &self,
        request: Request<pb::AddChannelRequest>,
    ) -> Answer<pb::NotificationChannel> {
        channels::add(&self.state, request).await
    }

    async fn list_channels(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Answer<pb::ListChannelsResponse> {
        channels::list(&self.state, request).await
    }

    async fn remove_channel(
        &self,
        request: Request<pb::ChannelRef>,
    ) -> Answer<pb::NotificationChannel> {
        channels::remove(&self.state, request).await
    }

    async fn test_channel(
        &self,
        request: Request<pb::ChannelRef>,
    ) -> Answer<pb::NotificationChannel> {
        channels::test(&self.state, request).await
    }
}
