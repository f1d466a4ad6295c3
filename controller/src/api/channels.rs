//! Handlers for notification channels: add, list (without secrets), remove, send a test message.

use super::Answer;
use crate::auth::{Call, Subject, authorize, settle};
use crate::delivery;
use crate::delivery::webhook::host_of;
use crate::engine::notify::{self, ChannelSpec, SmtpSpec, WebhookSpec};
use crate::engine::state::SharedState;
use crate::store::{ChannelRecord, ChannelTarget};
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1 as pb;
use nasfleet_proto::v1::add_channel_request::Target;
use tonic::{Request, Response};

/// A channel as people may see it: no URL path, header value or password.
pub fn to_proto(channel: &ChannelRecord, pending: usize) -> pb::NotificationChannel {
    let mut shown = pb::NotificationChannel {
        name: channel.name.clone(),
        min_level: channel.min_level.clone(),
        created_by: channel.created_by.clone(),
        created_unix_ms: channel.created_unix_ms,
        delivered: channel.delivery.delivered,
        last_success_unix_ms: channel.delivery.last_success_unix_ms,
        last_error: channel.delivery.last_error.clone().unwrap_or_default(),
        last_error_unix_ms: channel.delivery.last_error_unix_ms,
        failures_in_a_row: channel.delivery.failures_in_a_row,
        pending: u32::try_from(pending).unwrap_or(u32::MAX),
        dropped: channel.delivery.dropped,
        ..Default::default()
    };
    match &channel.target {
        ChannelTarget::Webhook {
            url,
            headers,
            ca_pem,
        } => {
            shown.kind = "webhook".into();
            shown.destination = format!("{}/…", host_of(url));
            shown.header_names = headers.iter().map(|(name, _)| name.clone()).collect();
            shown.custom_ca = ca_pem.is_some();
        }
        ChannelTarget::Smtp(relay) => {
            shown.kind = "smtp".into();
            let host = if relay.host.contains(':') {
                format!("[{}]", relay.host)
            } else {
                relay.host.clone()
            };
            shown.destination = format!(
                "{host}:{} ({}) from {} to {}",
                relay.port,
                relay.security.as_str(),
                relay.from,
                relay.to.join(", ")
            );
            shown.smtp_user = relay.user.clone().unwrap_or_default();
            shown.password_set = relay.password.is_some();
            shown.custom_ca = relay.ca_pem.is_some();
        }
    }
    shown
}

fn spec_of(request: pb::AddChannelRequest) -> ChannelSpec {
    let mut spec = ChannelSpec {
        name: request.name,
        min_level: request.min_level,
        ..Default::default()
    };
    match request.target {
        Some(Target::Webhook(w)) => {
            spec.webhook = Some(WebhookSpec {
                url: w.url,
                headers: w.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                ca_pem: w.ca_pem,
            });
        }
        Some(Target::Smtp(m)) => {
            spec.smtp = Some(SmtpSpec {
                address: m.address,
                security: m.security,
                from: m.from,
                to: m.to,
                user: m.user,
                password: m.password,
                ca_pem: m.ca_pem,
            });
        }
        None => {}
    }
    spec
}

pub async fn add(
    state: &SharedState,
    request: Request<pb::AddChannelRequest>,
) -> Answer<pb::NotificationChannel> {
    let (actor, origin) = authorize(state, &request, Call::AddChannel).await?;
    let object = request.get_ref().subject();
    let added = notify::add(state, &actor, spec_of(request.into_inner()), now_unix_ms()).await;
    let channel = settle(state, &origin, Call::AddChannel, &object, added).await?;
    Ok(Response::new(to_proto(&channel, 0)))
}

pub async fn list(
    state: &SharedState,
    request: Request<pb::ListChannelsRequest>,
) -> Answer<pb::ListChannelsResponse> {
    let (actor, _) = authorize(state, &request, Call::ListChannels).await?;
    Ok(Response::new(pb::ListChannelsResponse {
        channels: notify::list(state, &actor)?
            .iter()
            .map(|(channel, pending)| to_proto(channel, *pending))
            .collect(),
    }))
}

pub async fn remove(
    state: &SharedState,
    request: Request<pb::ChannelRef>,
) -> Answer<pb::NotificationChannel> {
    let (actor, origin) = authorize(state, &request, Call::RemoveChannel).await?;
    let object = request.get_ref().subject();
    let removed = notify::remove(state, &actor, &request.get_ref().name).await;
    let channel = settle(state, &origin, Call::RemoveChannel, &object, removed).await?;
    Ok(Response::new(to_proto(&channel, 0)))
}

pub async fn test(
    state: &SharedState,
    request: Request<pb::ChannelRef>,
) -> Answer<pb::NotificationChannel> {
    let (actor, origin) = authorize(state, &request, Call::TestChannel).await?;
    let object = request.get_ref().subject();
    let name = request.get_ref().name.clone();
    let sent = match notify::get(state, &actor, &name) {
        Ok((channel, _)) => delivery::test(state, &channel).await,
        Err(e) => Err(e),
    };
    settle(state, &origin, Call::TestChannel, &object, sent).await?;
    let (channel, pending) = notify::get(state, &actor, &name)?;
    Ok(Response::new(to_proto(&channel, pending)))
}
