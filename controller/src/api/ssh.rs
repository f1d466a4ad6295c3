//! Handlers for SSH connections between systems.

use super::Answer;
use crate::auth::{Call, authorize};
use crate::engine::ssh_trust;
use crate::engine::state::SharedState;
use nasfleet_proto::v1::{
    ListSshConnectionsRequest, ListSshConnectionsResponse, SshConnection, SshConnectionRef,
};
use tonic::{Request, Response};

pub fn list(
    state: &SharedState,
    request: Request<ListSshConnectionsRequest>,
) -> Answer<ListSshConnectionsResponse> {
    authorize(&state.store, &request, Call::ListSshConnections)?;
    let connections = state
        .store
        .ssh_connections()
        .map_err(crate::engine::error::FleetError::from)?
        .iter()
        .map(ssh_trust::to_proto)
        .collect();
    Ok(Response::new(ListSshConnectionsResponse { connections }))
}

pub async fn create(
    state: &SharedState,
    request: Request<SshConnectionRef>,
) -> Answer<SshConnection> {
    let caller = authorize(&state.store, &request, Call::CreateSshConnection)?;
    let req = request.into_inner();
    let record = ssh_trust::create(state, &req.source, &req.target).await?;
    tracing::info!(source = %req.source, target = %req.target, by = %caller.principal, "SSH connection created");
    Ok(Response::new(ssh_trust::to_proto(&record)))
}

pub async fn delete(
    state: &SharedState,
    request: Request<SshConnectionRef>,
) -> Answer<SshConnection> {
    let caller = authorize(&state.store, &request, Call::DeleteSshConnection)?;
    let req = request.into_inner();
    let record = ssh_trust::delete(state, &req.source, &req.target).await?;
    tracing::info!(source = %req.source, target = %req.target, by = %caller.principal, "SSH connection deleted");
    Ok(Response::new(ssh_trust::to_proto(&record)))
}
