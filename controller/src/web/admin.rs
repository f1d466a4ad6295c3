//! The admin pages: users (create with a sign-in token, remove with confirmation), join tokens with the line that enrolls a NAS, and the audit log.

use super::ConsoleState;
use super::error::PageResult;
use super::form::FormData;
use super::layout::{self, Nav, csrf, field_error, post_button, when};
use super::session::Person;
use crate::api::subjects;
use crate::auth::{Call, settle};
use crate::engine::error::FleetError;
use crate::engine::users::{self, DEFAULT_USER_TOKEN_TTL, UserSpec};
use crate::engine::{audit, membership};
use crate::store::AuditFilter;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use nasfleet_common::duration::parse_duration;
use nasfleet_common::enroll_lines::{join_command, login_command};
use nasfleet_common::roles::Role;
use serde::Deserialize;
use std::time::Duration;

/// Audit entries one page shows.
const AUDIT_SHOWN: usize = 200;

/// The form's `ttl` (e.g. `1h`, `2d`), or `default` when empty.
fn ttl_field(form: &FormData, default: Duration) -> Result<Duration, FleetError> {
    match form.text("ttl").as_str() {
        "" => Ok(default),
        text => {
            parse_duration("ttl", text).map_err(|e| FleetError::invalid_message(&e.to_string()))
        }
    }
}

pub async fn users(State(console): State<ConsoleState>, person: Person) -> PageResult {
    users_page(&console, &person, None, &[]).await
}

async fn users_page(
    console: &ConsoleState,
    person: &Person,
    created: Option<Markup>,
    errors: &[(String, String)],
) -> PageResult {
    person.allow(console, Call::ListUsers, "").await?;
    let state = &console.state;
    let list = users::list(state, &person.actor)?;
    let system_names = person.system_names(console)?;
    let tz = state.timezone;
    let body = html! {
        @if let Some(created) = created { (created) }
        table #users {
            thead { tr { th { "Name" } th { "Role" } th { "Systems" } th { "Logged in" } th { "Password" } th { "Created" } th {} } }
            tbody {
                @for user in &list {
                    tr data-user=(user.name) {
                        td { (user.name) }
                        td { (user.role) }
                        td { @if user.role == "admin" || user.all_systems { "all" } @else { (user.systems.join(", ")) } }
                        td { @if user.cert_serial.is_some() { "yes" } @else { "no" } }
                        td { @if user.password_hash.is_some() { "set" } @else { "-" } }
                        td { (when(tz, user.created_unix_ms)) " by " (user.created_by) }
                        td.actions {
                            @if user.name != person.user.name {
                                (post_button(person, &format!("/users/{}/remove", user.name), "REMOVE", "danger",
                                    Some(&format!("Remove user '{}'? Their certificate is revoked at once.", user.name))))
                            }
                        }
                    }
                }
            }
        }
        h2 { "Add User" }
        form.stack #add-user method="post" action="/users" {
            (csrf(person))
            label { "Name" input name="name" #user-name; }
            (field_error(errors, "name"))
            label { "Role"
                select name="role" #user-role {
                    @for role in ["viewer", "operator", "admin"] { option value=(role) { (role) } }
                }
            }
            (field_error(errors, "role"))
            fieldset { legend { "Systems (operators and viewers)" }
                @for name in &system_names { label.check { input type="checkbox" name="systems" value=(name); (name) } }
                label.check { input type="checkbox" name="all_systems"; "All systems, present and future" }
            }
            (field_error(errors, "systems"))
            label { "Sign-in token valid for" input name="ttl" value="1d"; }
            (field_error(errors, "ttl"))
            @for (field, message) in errors {
                @if !["name", "role", "systems", "ttl"].contains(&field.as_str()) { p.error { (message) } }
            }
            button.primary type="submit" { "ADD USER" }
        }
    };
    Ok(layout::page(person, Nav::Users, "Users", body))
}

pub async fn create_user(
    State(console): State<ConsoleState>,
    person: Person,
    form: FormData,
) -> PageResult {
    let name = form.text("name");
    let object = subjects::user(&name);
    person.allow(&console, Call::CreateUser, &object).await?;
    let state = &console.state;
    let made = async {
        let role: Role =
            form.text("role")
                .parse()
                .map_err(|e: nasfleet_common::roles::RoleError| {
                    FleetError::invalid_message(&e.to_string())
                })?;
        let ttl = ttl_field(&form, DEFAULT_USER_TOKEN_TTL)?;
        let spec = UserSpec {
            role,
            systems: form.all("systems"),
            all_systems: form.checked("all_systems"),
        };
        users::create(state, &person.actor, &name, spec, ttl).await
    }
    .await;
    match settle(state, &person.origin(), Call::CreateUser, &object, made).await {
        Ok((user, token, expires)) => {
            let line = login_command(&state.url, &token, state.ca.fingerprint());
            let created = html! {
                div.notice #user-created {
                    p { "User " strong { (user.name) } " was created. Hand them this line; it works once, until " (when(state.timezone, expires)) ":" }
                    pre.command #login-line { (line) }
                }
            };
            users_page(&console, &person, Some(created), &[]).await
        }
        Err(FleetError::Invalid { field, rule }) => {
            let message = format!("{field}: {rule}");
            users_page(&console, &person, None, &[(field, message)]).await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn remove_user(
    State(console): State<ConsoleState>,
    person: Person,
    Path(name): Path<String>,
    _form: FormData,
) -> PageResult<Response> {
    let object = subjects::user(&name);
    person.allow(&console, Call::RemoveUser, &object).await?;
    let removed = users::remove(&console.state, &person.actor, &name).await;
    settle(
        &console.state,
        &person.origin(),
        Call::RemoveUser,
        &object,
        removed,
    )
    .await?;
    console.sessions.close_user(&name);
    Ok(Redirect::to("/users").into_response())
}

pub async fn tokens(State(console): State<ConsoleState>, person: Person) -> PageResult {
    tokens_page(&console, &person, None).await
}

async fn tokens_page(console: &ConsoleState, person: &Person, made: Option<Markup>) -> PageResult {
    person.allow(console, Call::CreateToken, "").await?;
    let body = html! {
        p { "A join token enrolls one NAS: run the line it gives on the NAS, with the name the system should have." }
        @if let Some(made) = made { (made) }
        form.row #create-token method="post" action="/tokens" {
            (csrf(person))
            label { "Valid for" input name="ttl" value="1h"; }
            button.primary type="submit" { "CREATE JOIN TOKEN" }
        }
    };
    Ok(layout::page(person, Nav::Tokens, "Join Tokens", body))
}

pub async fn create_token(
    State(console): State<ConsoleState>,
    person: Person,
    form: FormData,
) -> PageResult {
    person.allow(&console, Call::CreateToken, "").await?;
    let state = &console.state;
    let ttl = ttl_field(&form, membership::DEFAULT_TOKEN_TTL);
    let object = match &ttl {
        Ok(ttl) => format!("join token valid {}s", ttl.as_secs()),
        Err(_) => "join token".into(),
    };
    let made = match ttl {
        Ok(ttl) => membership::create_token(state, &person.actor.label(), ttl).await,
        Err(e) => Err(e),
    };
    let made = match settle(state, &person.origin(), Call::CreateToken, &object, made).await {
        Ok((token, expires)) => html! {
            div.notice #token-created {
                p { "Run this on the NAS before " (when(state.timezone, expires)) " (it works once):" }
                pre.command #join-line { (join_command(&state.url, &token, state.ca.fingerprint())) }
            }
        },
        Err(e) => html! { p.error { (e.to_string()) } },
    };
    tokens_page(&console, &person, Some(made)).await
}

#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    user: String,
    #[serde(default)]
    action: String,
}

pub async fn audit(
    State(console): State<ConsoleState>,
    person: Person,
    Query(query): Query<AuditQuery>,
) -> PageResult {
    person.allow(&console, Call::ListAudit, "").await?;
    let filter = AuditFilter {
        actor: Some(query.user.clone()).filter(|a| !a.is_empty()),
        action: Some(query.action.clone()).filter(|a| !a.is_empty()),
        since_unix_ms: None,
        limit: AUDIT_SHOWN,
    };
    let (entries, dropped) = audit::list(&console.state, &person.actor, &filter)?;
    let tz = console.state.timezone;
    let body = html! {
        form.row method="get" action="/audit" {
            label { "User" input name="user" value=(query.user); }
            label { "Action" input name="action" value=(query.action); }
            button type="submit" { "FILTER" }
        }
        @if dropped > 0 { p.muted { (dropped) " older entries were dropped by retention." } }
        table #audit {
            thead { tr { th { "#" } th { "Time" } th { "Who" } th { "From" } th { "Action" } th { "Object" } th { "Outcome" } } }
            tbody {
                @for e in &entries {
                    tr class=[e.refused.is_some().then_some("refused")] {
                        td { (e.seq) }
                        td { (when(tz, e.unix_ms)) }
                        td { (e.actor) }
                        td { (e.address) }
                        td { (e.action) }
                        td { (e.object) }
                        td { @match &e.refused { Some(reason) => { "refused: " (reason) }, None => "done" } }
                    }
                }
            }
        }
    };
    Ok(layout::page(&person, Nav::Audit, "Audit Log", body))
}
