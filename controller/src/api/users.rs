//! Handlers for the fleet's people and the audit log: create a user with a sign-in token, mint a new token, list, show, edit, remove; list the audit log.

use super::{Answer, subjects};
use crate::auth::{Call, authorize, settle};
use crate::engine::audit;
use crate::engine::error::FleetError;
use crate::engine::signin;
use crate::engine::state::SharedState;
use crate::engine::users::{self, DEFAULT_USER_TOKEN_TTL, UserSpec};
use crate::store::{AuditEntry, AuditFilter, UserRecord};
use nasfleet_common::roles::Role;
use nasfleet_proto::v1 as pb;
use std::time::Duration;
use tonic::{Request, Response};

/// Audit entries listed when the caller gives no limit.
const DEFAULT_AUDIT_LIMIT: usize = 100;

pub fn to_proto(user: &UserRecord) -> pb::User {
    pb::User {
        name: user.name.clone(),
        role: user.role.clone(),
        systems: user.systems.clone(),
        all_systems: user.all_systems,
        created_unix_ms: user.created_unix_ms,
        created_by: user.created_by.clone(),
        logged_in: user.cert_serial.is_some(),
        cert_expires_unix_ms: user.cert_expires_unix_ms.unwrap_or(0),
        password_set: user.password_hash.is_some(),
    }
}

fn spec(role: &str, systems: Vec<String>, all_systems: bool) -> Result<UserSpec, FleetError> {
    let role: Role = role
        .parse()
        .map_err(|e: nasfleet_common::roles::RoleError| {
            FleetError::invalid_message(&e.to_string())
        })?;
    Ok(UserSpec {
        role,
        systems,
        all_systems,
    })
}

fn ttl(secs: u64) -> Duration {
    match secs {
        0 => DEFAULT_USER_TOKEN_TTL,
        secs => Duration::from_secs(secs),
    }
}

pub async fn create(
    state: &SharedState,
    request: Request<pb::CreateUserRequest>,
) -> Answer<pb::CreateUserResponse> {
    let (actor, origin) = authorize(state, &request, Call::CreateUser).await?;
    let req = request.into_inner();
    let made = match spec(&req.role, req.systems, req.all_systems) {
        Ok(spec) => users::create(state, &actor, &req.name, spec, ttl(req.ttl_secs)).await,
        Err(e) => Err(e),
    };
    let object = match &made {
        Ok((user, _, _)) => format!("{} as {}", subjects::user(&user.name), user.role),
        Err(_) => subjects::user(&req.name),
    };
    let (user, token, expires) = settle(state, &origin, Call::CreateUser, &object, made).await?;
    Ok(Response::new(token_answer(state, &user, token, expires)))
}

/// A sign-in token with what `nasfleet login` needs beside it.
fn token_answer(
    state: &SharedState,
    user: &UserRecord,
    token: String,
    expires_unix_ms: i64,
) -> pb::CreateUserResponse {
    pb::CreateUserResponse {
        user: Some(to_proto(user)),
        token,
        expires_unix_ms,
        ca_fingerprint: state.ca.fingerprint().to_owned(),
        controller_url: state.url.clone(),
    }
}

pub async fn create_token(
    state: &SharedState,
    request: Request<pb::CreateUserTokenRequest>,
) -> Answer<pb::CreateUserResponse> {
    let (actor, origin) = authorize(state, &request, Call::CreateUserToken).await?;
    let req = request.into_inner();
    let made = users::issue_token(state, &actor, &req.name, ttl(req.ttl_secs)).await;
    let object = subjects::user(&req.name);
    let (token, expires) = settle(state, &origin, Call::CreateUserToken, &object, made).await?;
    let user = users::get(state, &actor, &req.name)?;
    Ok(Response::new(token_answer(state, &user, token, expires)))
}

pub async fn list(
    state: &SharedState,
    request: Request<pb::ListUsersRequest>,
) -> Answer<pb::ListUsersResponse> {
    let (actor, _) = authorize(state, &request, Call::ListUsers).await?;
    let users = users::list(state, &actor)?;
    Ok(Response::new(pb::ListUsersResponse {
        users: users.iter().map(to_proto).collect(),
    }))
}

pub async fn get(state: &SharedState, request: Request<pb::UserRef>) -> Answer<pb::User> {
    let (actor, _) = authorize(state, &request, Call::GetUser).await?;
    let user = users::get(state, &actor, &request.into_inner().name)?;
    Ok(Response::new(to_proto(&user)))
}

pub async fn update(
    state: &SharedState,
    request: Request<pb::UpdateUserRequest>,
) -> Answer<pb::User> {
    let (actor, origin) = authorize(state, &request, Call::UpdateUser).await?;
    let req = request.into_inner();
    let changed = match spec(&req.role, req.systems, req.all_systems) {
        Ok(spec) => users::update(state, &actor, &req.name, spec).await,
        Err(e) => Err(e),
    };
    let object = match &changed {
        Ok(user) => format!("{} to {}", subjects::user(&user.name), describe_scope(user)),
        Err(_) => subjects::user(&req.name),
    };
    let user = settle(state, &origin, Call::UpdateUser, &object, changed).await?;
    Ok(Response::new(to_proto(&user)))
}

/// "operator of nas1, nas2", "viewer of all systems", "admin".
fn describe_scope(user: &UserRecord) -> String {
    if user.role == Role::Admin.as_str() {
        user.role.clone()
    } else if user.all_systems {
        format!("{} of all systems", user.role)
    } else {
        format!("{} of {}", user.role, user.systems.join(", "))
    }
}

pub async fn remove(state: &SharedState, request: Request<pb::UserRef>) -> Answer<pb::User> {
    let (actor, origin) = authorize(state, &request, Call::RemoveUser).await?;
    let name = request.into_inner().name;
    let removed = users::remove(state, &actor, &name).await;
    let object = subjects::user(&name);
    let user = settle(state, &origin, Call::RemoveUser, &object, removed).await?;
    tracing::info!(user = %user.name, by = %actor.label(), "user removed, certificate revoked");
    Ok(Response::new(to_proto(&user)))
}

/// `nasfleet ui`: a one-time console link for the caller.
pub async fn console_link(
    state: &SharedState,
    request: Request<pb::ConsoleLinkRequest>,
) -> Answer<pb::ConsoleLink> {
    let (actor, _) = authorize(state, &request, Call::CreateConsoleLink).await?;
    let Some(base) = &state.console_url else {
        return Err(FleetError::Unavailable(
            "this controller serves no web console (set web_listen in controller.toml)".into(),
        )
        .into());
    };
    let link = signin::mint_link(state, &actor)?;
    Ok(Response::new(pb::ConsoleLink {
        url: format!("{base}/signin/link?token={}", link.token),
        expires_unix_ms: link.expires_unix_ms,
    }))
}

pub async fn set_password(
    state: &SharedState,
    request: Request<pb::SetUserPasswordRequest>,
) -> Answer<pb::User> {
    let (actor, origin) = authorize(state, &request, Call::SetUserPassword).await?;
    let req = request.into_inner();
    let cleared = req.password.is_empty();
    let changed = signin::set_password(state, &actor, &req.name, req.password).await;
    // The password itself never reaches the log.
    let object = format!(
        "{}{}",
        subjects::user(&req.name),
        if cleared {
            " (password sign-in off)"
        } else {
            ""
        }
    );
    let user = settle(state, &origin, Call::SetUserPassword, &object, changed).await?;
    Ok(Response::new(to_proto(&user)))
}

pub async fn audit_list(
    state: &SharedState,
    request: Request<pb::ListAuditRequest>,
) -> Answer<pb::ListAuditResponse> {
    let (actor, _) = authorize(state, &request, Call::ListAudit).await?;
    let req = request.into_inner();
    let filter = AuditFilter {
        actor: Some(req.actor).filter(|a| !a.is_empty()),
        action: Some(req.action).filter(|a| !a.is_empty()),
        since_unix_ms: Some(req.since_unix_ms).filter(|s| *s > 0),
        limit: match req.limit {
            0 => DEFAULT_AUDIT_LIMIT,
            n => n as usize,
        },
    };
    let (entries, dropped) = audit::list(state, &actor, &filter)?;
    Ok(Response::new(pb::ListAuditResponse {
        entries: entries.into_iter().map(audit_to_proto).collect(),
        dropped,
    }))
}

fn audit_to_proto(entry: AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        seq: entry.seq,
        unix_ms: entry.unix_ms,
        actor: entry.actor,
        address: entry.address,
        action: entry.action,
        object: entry.object,
        refused: entry.refused.is_some(),
        reason: entry.refused.unwrap_or_default(),
    }
}
