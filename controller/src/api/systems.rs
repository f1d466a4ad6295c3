//! Handlers for systems, their datasets and snapshots, and join tokens.

use super::Answer;
use crate::auth::{Call, authorize};
use crate::engine::state::SharedState;
use crate::engine::{membership, systems};
use nasfleet_proto::v1::{
    CreateSnapshotRequest, CreateSnapshotResponse, CreateTokenRequest, CreateTokenResponse,
    GetSystemRequest, ListDatasetsRequest, ListDatasetsResponse, ListSnapshotsRequest,
    ListSnapshotsResponse, ListSystemsRequest, ListSystemsResponse, RemoveSystemRequest,
    RemoveSystemResponse, SystemDetail,
};
use std::time::Duration;
use tonic::{Request, Response};

pub async fn create_token(
    state: &SharedState,
    request: Request<CreateTokenRequest>,
) -> Answer<CreateTokenResponse> {
    let caller = authorize(&state.store, &request, Call::CreateToken)?;
    let ttl = match request.get_ref().ttl_secs {
        0 => membership::DEFAULT_TOKEN_TTL,
        secs => Duration::from_secs(secs),
    };
    let (token, expires) =
        membership::create_token(state, &caller.principal.common_name(), ttl).await?;
    tracing::info!(by = %caller.principal, ttl_secs = ttl.as_secs(), "join token created");
    Ok(Response::new(CreateTokenResponse {
        token,
        ca_fingerprint: state.ca.fingerprint().to_owned(),
        expires_unix_ms: expires,
        controller_url: state.url.clone(),
    }))
}

pub fn list(
    state: &SharedState,
    request: Request<ListSystemsRequest>,
) -> Answer<ListSystemsResponse> {
    authorize(&state.store, &request, Call::ListSystems)?;
    Ok(Response::new(ListSystemsResponse {
        systems: systems::list(state)?,
    }))
}

pub async fn get(state: &SharedState, request: Request<GetSystemRequest>) -> Answer<SystemDetail> {
    authorize(&state.store, &request, Call::GetSystem)?;
    let req = request.into_inner();
    Ok(Response::new(
        systems::detail(state, &req.name, req.refresh).await?,
    ))
}

pub async fn remove(
    state: &SharedState,
    request: Request<RemoveSystemRequest>,
) -> Answer<RemoveSystemResponse> {
    let caller = authorize(&state.store, &request, Call::RemoveSystem)?;
    let name = request.into_inner().name;
    let serial = membership::remove(state, &name).await?;
    tracing::info!(system = %name, by = %caller.principal, %serial, "system removed, certificate revoked");
    Ok(Response::new(RemoveSystemResponse {
        revoked_serial: serial,
    }))
}

pub async fn create_snapshot(
    state: &SharedState,
    request: Request<CreateSnapshotRequest>,
) -> Answer<CreateSnapshotResponse> {
    authorize(&state.store, &request, Call::CreateSnapshot)?;
    let req = request.into_inner();
    let created = systems::take_snapshot(
        state,
        &req.system,
        &req.dataset,
        req.recursive,
        &req.naming_schema,
    )
    .await?;
    Ok(Response::new(CreateSnapshotResponse { created }))
}

pub async fn list_snapshots(
    state: &SharedState,
    request: Request<ListSnapshotsRequest>,
) -> Answer<ListSnapshotsResponse> {
    authorize(&state.store, &request, Call::ListSnapshots)?;
    let req = request.into_inner();
    let snapshots =
        systems::snapshots(state, &req.system, &req.dataset, req.recursive, req.refresh).await?;
    Ok(Response::new(ListSnapshotsResponse { snapshots }))
}

pub async fn list_datasets(
    state: &SharedState,
    request: Request<ListDatasetsRequest>,
) -> Answer<ListDatasetsResponse> {
    authorize(&state.store, &request, Call::ListDatasets)?;
    let req = request.into_inner();
    let datasets = systems::datasets(state, &req.system, req.refresh).await?;
    Ok(Response::new(ListDatasetsResponse { datasets }))
}
