//! Signing in and out of the console: the password form, the one-time link `nasfleet ui` prints, and sign-out; each sign-in, refused or not, goes to the audit log.

use super::error::{PageError, PageResult, status_of};
use super::form::FormData;
use super::frame;
use super::session::{Person, cookie_value, expired_cookie, session_cookie, web_origin};
use super::{ClientAddr, ConsoleState};
use crate::auth::Origin;
use crate::engine::audit::{self, Audited};
use crate::engine::error::FleetError;
use crate::engine::signin;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use nasfleet_common::echo::echo;
use serde::Deserialize;

fn form_page(message: Option<&str>, name: &str) -> Markup {
    frame::bare(
        "Sign in",
        html! {
            form.signin method="post" action="/signin" {
                label { "User name" input #username name="name" value=(name) autocomplete="username" required; }
                label { "Password" input #password type="password" name="password" autocomplete="current-password" required; }
                @if let Some(message) = message { p.error #signin-error { (message) } }
                button.primary type="submit" #signin-submit { "SIGN IN" }
            }
            p.hint { "Or run " code { "nasfleet ui" } " and open the link it prints." }
        },
    )
}

pub async fn form(State(console): State<ConsoleState>, headers: HeaderMap) -> Response {
    // Already signed in: straight to the dashboard.
    if cookie_value(&headers).is_some_and(|id| console.sessions.is_open(&id)) {
        return Redirect::to("/").into_response();
    }
    Html(form_page(None, "").into_string()).into_response()
}

fn signed_in(console: &ConsoleState, user: &str) -> Response {
    let id = console.sessions.open(user);
    let mut response = Redirect::to("/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session_cookie(&id)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn audit_sign_in(
    console: &ConsoleState,
    origin: &Origin,
    action: &str,
    outcome: Result<(), &FleetError>,
) -> Result<(), PageError> {
    let entry = Audited {
        actor: &origin.who,
        address: &origin.address,
        action,
        object: "web console",
    };
    audit::record(&console.state, &entry, outcome)
        .await
        .map_err(PageError::from)
}

pub async fn password(
    State(console): State<ConsoleState>,
    Extension(ClientAddr(peer)): Extension<ClientAddr>,
    form: FormData,
) -> PageResult {
    let name = form.text("name");
    let password = form.get("password").unwrap_or_default().to_owned();
    let origin = web_origin(&format!("user:{}", echo(&name)), &peer.to_string());
    match signin::check_password(&console.state, &name, password, &peer.ip().to_string()).await {
        Ok(user) => {
            audit_sign_in(&console, &origin, "ConsoleSignIn", Ok(())).await?;
            Ok(signed_in(&console, &user.name))
        }
        Err(refusal) => {
            // Attempts refused for too many failures are not written one by
            // one: a flood of them must not become a flood of store writes.
            if !matches!(refusal, FleetError::Unavailable(_)) {
                audit_sign_in(&console, &origin, "ConsoleSignIn", Err(&refusal)).await?;
            }
            let page = form_page(Some(&refusal.to_string()), &name);
            Ok((status_of(&refusal), Html(page.into_string())).into_response())
        }
    }
}

#[derive(Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    token: String,
}

pub async fn link(
    State(console): State<ConsoleState>,
    Extension(ClientAddr(peer)): Extension<ClientAddr>,
    Query(query): Query<LinkQuery>,
) -> PageResult {
    match signin::redeem_link(&console.state, &query.token) {
        Ok(user) => {
            let origin = web_origin(&format!("user:{}", user.name), &peer.to_string());
            audit_sign_in(&console, &origin, "ConsoleSignInLink", Ok(())).await?;
            Ok(signed_in(&console, &user.name))
        }
        Err(refusal) => {
            let origin = web_origin("unknown", &peer.to_string());
            audit_sign_in(&console, &origin, "ConsoleSignInLink", Err(&refusal)).await?;
            Err(refusal.into())
        }
    }
}

pub async fn sign_out(State(console): State<ConsoleState>, person: Person) -> Response {
    console.sessions.close(&person.session_id);
    let mut response = Redirect::to("/signin").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&expired_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}
