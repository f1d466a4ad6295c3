//! Handlers for alerts: list the ones the caller sees, dismiss one.

use super::Answer;
use crate::auth::{Call, Subject, authorize, settle};
use crate::engine::alerts;
use crate::engine::state::SharedState;
use crate::store::AlertRecord;
use nasfleet_proto::v1 as pb;
use tonic::{Request, Response};

pub fn to_proto(alert: &AlertRecord) -> pb::Alert {
    pb::Alert {
        id: alert.id,
        kind: alert.kind.clone(),
        level: alert.level.clone(),
        systems: alert.systems.clone(),
        object: alert.object.clone(),
        text: alert.text.clone(),
        first_seen_unix_ms: alert.first_seen_unix_ms,
        last_seen_unix_ms: alert.last_seen_unix_ms,
        cleared_unix_ms: alert.cleared_unix_ms.unwrap_or(0),
        dismissed_by: alert.dismissed_by.clone().unwrap_or_default(),
    }
}

pub async fn list(
    state: &SharedState,
    request: Request<pb::ListAlertsRequest>,
) -> Answer<pb::ListAlertsResponse> {
    let (actor, _) = authorize(state, &request, Call::ListAlerts).await?;
    let all = request.get_ref().all;
    Ok(Response::new(pb::ListAlertsResponse {
        alerts: alerts::list(state, &actor, all)?
            .iter()
            .map(to_proto)
            .collect(),
    }))
}

pub async fn dismiss(state: &SharedState, request: Request<pb::AlertRef>) -> Answer<pb::Alert> {
    let (actor, origin) = authorize(state, &request, Call::DismissAlert).await?;
    let object = request.get_ref().subject();
    let dismissed = alerts::dismiss(state, &actor, request.get_ref().id).await;
    let alert = settle(state, &origin, Call::DismissAlert, &object, dismissed).await?;
    Ok(Response::new(to_proto(&alert)))
}
