//! Handlers for systems, their datasets and snapshots, and join tokens.

use super::Answer;
use crate::auth::{Call, Subject, authorize, settle};
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
    let (actor, origin) = authorize(state, &request, Call::CreateToken).await?;
    let ttl = match request.get_ref().ttl_secs {
        0 => membership::DEFAULT_TOKEN_TTL,
        secs => Duration::from_secs(secs),
    };
    let object = format!("join token valid {}s", ttl.as_secs());
    let made = membership::create_token(state, &actor.label(), ttl).await;
    let (token, expires) = settle(state, &origin, Call::CreateToken, &object, made).await?;
    tracing::info!(by = %actor.label(), ttl_secs = ttl.as_secs(), "join token created");
    Ok(Response::new(CreateTokenResponse {
        token,
        ca_fingerprint: state.ca.fingerprint().to_owned(),
        expires_unix_ms: expires,
        controller_url: state.url.clone(),
    }))
}

pub async fn list(
    state: &SharedState,
    request: Request<ListSystemsRequest>,
) -> Answer<ListSystemsResponse> {
    let (actor, _) = authorize(state, &request, Call::ListSystems).await?;
    Ok(Response::new(systems::list_response(state, &actor)?))
}

pub async fn get(state: &SharedState, request: Request<GetSystemRequest>) -> Answer<SystemDetail> {
    let (actor, _) = authorize(state, &request, Call::GetSystem).await?;
    let req = request.into_inner();
    Ok(Response::new(
        systems::detail(state, &actor, &req.name, req.refresh).await?,
    ))
}

pub async fn remove(
    state: &SharedState,
    request: Request<RemoveSystemRequest>,
) -> Answer<RemoveSystemResponse> {
    let (actor, origin) = authorize(state, &request, Call::RemoveSystem).await?;
    let object = request.get_ref().subject();
    let name = request.into_inner().name;
    let removed = membership::remove(state, &name).await;
    let serial = settle(state, &origin, Call::RemoveSystem, &object, removed).await?;
    tracing::info!(system = %name, by = %actor.label(), %serial, "system removed, certificate revoked");
    Ok(Response::new(RemoveSystemResponse {
        revoked_serial: serial,
    }))
}

pub async fn create_snapshot(
    state: &SharedState,
    request: Request<CreateSnapshotRequest>,
) -> Answer<CreateSnapshotResponse> {
    let (actor, origin) = authorize(state, &request, Call::CreateSnapshot).await?;
    let req = request.into_inner();
    let taken = systems::take_snapshot(
        state,
        &actor,
        &req.system,
        &req.dataset,
        req.recursive,
        &req.naming_schema,
    )
    .await;
    let object = req.subject();
    let created = settle(state, &origin, Call::CreateSnapshot, &object, taken).await?;
    Ok(Response::new(CreateSnapshotResponse { created }))
}

pub async fn list_snapshots(
    state: &SharedState,
    request: Request<ListSnapshotsRequest>,
) -> Answer<ListSnapshotsResponse> {
    let (actor, _) = authorize(state, &request, Call::ListSnapshots).await?;
    let req = request.into_inner();
    let snapshots = systems::snapshots(
        state,
        &actor,
        &req.system,
        &req.dataset,
        req.recursive,
        req.refresh,
    )
    .await?;
    Ok(Response::new(ListSnapshotsResponse { snapshots }))
}

pub async fn list_datasets(
    state: &SharedState,
    request: Request<ListDatasetsRequest>,
) -> Answer<ListDatasetsResponse> {
    let (actor, _) = authorize(state, &request, Call::ListDatasets).await?;
    let req = request.into_inner();
    let datasets = systems::datasets(state, &actor, &req.system, req.refresh).await?;
    Ok(Response::new(ListDatasetsResponse { datasets }))
}
