//! Handlers for SSH connections between systems.

use super::Answer;
use crate::auth::{Call, Subject, authorize, settle};
use crate::engine::ssh_trust;
use crate::engine::state::SharedState;
use nasfleet_proto::v1::{
    ListSshConnectionsRequest, ListSshConnectionsResponse, SshConnection, SshConnectionRef,
};
use tonic::{Request, Response};

pub async fn list(
    state: &SharedState,
    request: Request<ListSshConnectionsRequest>,
) -> Answer<ListSshConnectionsResponse> {
    let (actor, _) = authorize(state, &request, Call::ListSshConnections).await?;
    let connections = ssh_trust::list(state, &actor)?
        .iter()
        .map(ssh_trust::to_proto)
        .collect();
    Ok(Response::new(ListSshConnectionsResponse { connections }))
}

pub async fn create(
    state: &SharedState,
    request: Request<SshConnectionRef>,
) -> Answer<SshConnection> {
    let (actor, origin) = authorize(state, &request, Call::CreateSshConnection).await?;
    let req = request.into_inner();
    let created = ssh_trust::create(state, &req.source, &req.target).await;
    let object = req.subject();
    let record = settle(state, &origin, Call::CreateSshConnection, &object, created).await?;
    tracing::info!(source = %req.source, target = %req.target, by = %actor.label(), "SSH connection created");
    Ok(Response::new(ssh_trust::to_proto(&record)))
}

pub async fn delete(
    state: &SharedState,
    request: Request<SshConnectionRef>,
) -> Answer<SshConnection> {
    let (actor, origin) = authorize(state, &request, Call::DeleteSshConnection).await?;
    let req = request.into_inner();
    let deleted = ssh_trust::delete(state, &req.source, &req.target).await;
    let object = req.subject();
    let record = settle(state, &origin, Call::DeleteSshConnection, &object, deleted).await?;
    tracing::info!(source = %req.source, target = %req.target, by = %actor.label(), "SSH connection deleted");
    Ok(Response::new(ssh_trust::to_proto(&record)))
}
