//! Console sessions: the cookie that names one, idle and absolute timeouts, the per-session CSRF token every state-changing request must carry, and the signed-in person each request acts as (re-read from the store on every request, so a changed role or a removal applies at once).

use super::error::PageError;
use super::form::FormData;
use super::{ClientAddr, ConsoleState, MAX_BODY_BYTES};
use crate::auth::{Call, Origin, refuse};
use crate::engine::access::{Access, Actor};
use crate::engine::error::FleetError;
use crate::engine::users::actor_of;
use crate::store::{UserRecord, new_token, token_hash};
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nasfleet_common::status::now_unix_ms;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub const COOKIE: &str = "nasfleet_session";
/// Sessions kept at most; the least recently used go first.
const MAX_SESSIONS: usize = 10_000;
/// Header a script sends the CSRF token in (forms send `_csrf`).
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const CSRF_FIELD: &str = "_csrf";

#[derive(Debug, Clone)]
struct Session {
    user: String,
    csrf: String,
    created_unix_ms: i64,
    last_used_unix_ms: i64,
}

/// Open sessions, keyed by the SHA-256 of their cookie value.
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
    idle: Duration,
    lifetime: Duration,
}

impl Sessions {
    pub fn new(idle: Duration, lifetime: Duration) -> Self {
        Sessions {
            inner: Mutex::new(HashMap::new()),
            idle,
            lifetime,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn alive(&self, session: &Session, now: i64) -> bool {
        now - session.last_used_unix_ms < self.idle.as_millis() as i64
            && now - session.created_unix_ms < self.lifetime.as_millis() as i64
    }

    /// A new session for `user`: the cookie value (only ever in the cookie).
    pub fn open(&self, user: &str) -> String {
        let id = new_token("");
        let now = now_unix_ms();
        let mut sessions = self.lock();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| self.alive(s, now));
        }
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used_unix_ms)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            token_hash(&id),
            Session {
                user: user.to_owned(),
                csrf: new_token(""),
                created_unix_ms: now,
                last_used_unix_ms: now,
            },
        );
        id
    }

    /// The live session of a cookie value, marked as used now.
    fn find(&self, id: &str) -> Option<Session> {
        let now = now_unix_ms();
        let key = token_hash(id);
        let mut sessions = self.lock();
        let session = sessions.get_mut(&key)?;
        if !self.alive(session, now) {
            sessions.remove(&key);
            return None;
        }
        session.last_used_unix_ms = now;
        Some(session.clone())
    }

    /// Whether a cookie value names a live session, without counting as
    /// use: an open page's event stream must not keep an idle session alive.
    pub fn is_open(&self, id: &str) -> bool {
        let now = now_unix_ms();
        self.lock()
            .get(&token_hash(id))
            .is_some_and(|s| self.alive(s, now))
    }

    pub fn close(&self, id: &str) {
        self.lock().remove(&token_hash(id));
    }

    /// Ends every session of `user` (removed users).
    pub fn close_user(&self, user: &str) {
        self.lock().retain(|_, s| s.user != user);
    }
}

/// The cookie that opens a session, as the browser must keep it.
pub fn session_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict")
}

/// The cookie that ends one.
pub fn expired_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// The session cookie's value in `headers`, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

/// The audit log's view of a console request: the person by name, as
/// the gRPC API records them, and the address marked as the console's.
pub fn web_origin(who: &str, peer: &str) -> Origin {
    Origin {
        address: format!("web {peer}"),
        who: who.to_owned(),
    }
}

/// The signed-in person a request acts as.
pub struct Person {
    pub user: UserRecord,
    pub actor: Actor,
    pub csrf: String,
    pub session_id: String,
    pub address: String,
}

impl Person {
    /// The audit log's view of who called from where.
    pub fn origin(&self) -> Origin {
        web_origin(&format!("user:{}", self.user.name), &self.address)
    }

    /// The names of the systems the person sees, for pickers.
    pub fn system_names(&self, console: &ConsoleState) -> Result<Vec<String>, FleetError> {
        Ok(crate::engine::systems::list(&console.state, &self.actor)?
            .into_iter()
            .map(|s| s.name)
            .collect())
    }

    /// Whether the person's role allows `access`: what a page offers.
    pub fn can(&self, access: Access) -> bool {
        self.actor.require(access).is_ok()
    }

    /// Refuses (and audits) a call the person's role does not allow; every
    /// handler asks, whatever its page showed.
    pub async fn allow(
        &self,
        console: &ConsoleState,
        call: Call,
        subject: &str,
    ) -> Result<(), PageError> {
        if let Err(refusal) = self.actor.require(call.access()) {
            refuse(
                &console.state,
                &self.origin(),
                call.name(),
                subject,
                &refusal,
            )
            .await?;
            return Err(refusal.into());
        }
        Ok(())
    }
}

fn address_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ClientAddr>()
        .map(|a| a.0.to_string())
        .unwrap_or_default()
}

impl FromRequestParts<ConsoleState> for Person {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let id = cookie_value(&parts.headers).ok_or(PageError::SignIn)?;
        let session = console.sessions.find(&id).ok_or(PageError::SignIn)?;
        let Some(user) = console
            .state
            .store
            .user(&session.user)
            .map_err(FleetError::from)?
        else {
            console.sessions.close(&id);
            return Err(PageError::SignIn);
        };
        let actor = actor_of(&user)?;
        Ok(Person {
            user,
            actor,
            csrf: session.csrf,
            session_id: id,
            address: address_of(parts),
        })
    }
}

/// Paths a browser without a session may post to.
fn exempt(path: &str) -> bool {
    path == "/signin"
}

fn same_token(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Refuses any state-changing request whose CSRF token (form field `_csrf`
/// or header `X-CSRF-Token`) is not its session's. The body is read here
/// (bounded) and handed on unchanged.
pub async fn require_csrf(
    State(console): State<ConsoleState>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) || exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return PageError::TooLarge.into_response();
    };
    let Some(id) = cookie_value(&parts.headers) else {
        return PageError::SignIn.into_response();
    };
    let Some(session) = console.sessions.find(&id) else {
        return PageError::SignIn.into_response();
    };
    let given = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| FormData::parse(&bytes).get(CSRF_FIELD).map(str::to_owned));
    if !given.is_some_and(|g| same_token(&g, &session.csrf)) {
        let origin = web_origin(&format!("user:{}", session.user), &address_of(&parts));
        let refusal = FleetError::PermissionDenied(
            "the request carried no valid CSRF token; reload the page and try again".into(),
        );
        let subject = format!("POST {}", nasfleet_common::echo::echo(parts.uri.path()));
        if let Err(e) = refuse(
            &console.state,
            &origin,
            "ConsoleRequest",
            &subject,
            &refusal,
        )
        .await
        {
            return PageError::from(e).into_response();
        }
        return PageError::Fleet(refusal).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_after_idle_time_and_on_close() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(3600));
        let id = sessions.open("ann");
        assert_eq!(sessions.find(&id).map(|s| s.user), Some("ann".into()));
        assert!(sessions.find("not-a-session").is_none());
        sessions.close(&id);
        assert!(sessions.find(&id).is_none());
        let idle = Sessions::new(Duration::from_millis(0), Duration::from_secs(3600));
        let id = idle.open("ann");
        assert!(idle.find(&id).is_none());
    }

    #[test]
    fn the_cookie_is_read_among_others_and_is_strict() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; nasfleet_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&headers).as_deref(), Some("abc"));
        let cookie = session_cookie("abc");
        for part in ["HttpOnly", "Secure", "SameSite=Strict"] {
            assert!(cookie.contains(part), "{cookie}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abcd", "abcd"));
        assert!(!same_token("abc", "abcd"));
        assert!(!same_token("abce", "abcd"));
    }
}
