//! The fleet's people: creating a user with a single-use sign-in token, their login (a CSR made on their own machine becomes their certificate), listing, editing role and systems, and removal, which revokes their certificate at once; the last admin always stays.

use crate::engine::access::{Access, Actor, Scope};
use crate::engine::error::FleetError;
use crate::engine::state::SharedState;
use crate::store::{CertRecord, LoginCert, LoginError, UserRecord, UserTokenRecord, token_hash};
use nasfleet_common::echo::echo;
use nasfleet_common::identity::Principal;
use nasfleet_common::names::validate_user_name;
use nasfleet_common::roles::{Role, check_scope};
use nasfleet_common::status::now_unix_ms;
use std::time::Duration;

/// Sign-in tokens are for handing to a person now; a week at most.
pub const MAX_USER_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_USER_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// What `user create` and `user edit` ask for.
#[derive(Debug, Clone)]
pub struct UserSpec {
    pub role: Role,
    pub systems: Vec<String>,
    pub all_systems: bool,
}

/// The role and scope a stored user has; a record that does not parse
/// (written by hand, or by a newer controller) is refused, not guessed.
pub fn actor_of(user: &UserRecord) -> Result<Actor, FleetError> {
    let role: Role = user
        .role
        .parse()
        .map_err(|_| FleetError::Internal(format!("user '{}' has an unknown role", user.name)))?;
    let scope = if role == Role::Admin || user.all_systems {
        Scope::All
    } else {
        Scope::Systems(user.systems.iter().cloned().collect())
    };
    Ok(Actor::Person {
        name: user.name.clone(),
        role,
        scope,
    })
}

/// Checks a spec: the scope rule, and every named system enrolled.
fn check_spec(state: &SharedState, spec: &UserSpec) -> Result<(), FleetError> {
    check_scope(spec.role, &spec.systems, spec.all_systems)
        .map_err(|e| FleetError::invalid_message(&e.to_string()))?;
    for system in &spec.systems {
        if state.store.system(system)?.is_none() {
            return Err(FleetError::invalid(
                "systems",
                format!("no system named '{}' is enrolled", echo(system)),
            ));
        }
    }
    Ok(())
}

/// A user as `user show` prints it.
pub fn get(state: &SharedState, actor: &Actor, name: &str) -> Result<UserRecord, FleetError> {
    actor.require(Access::Administer)?;
    state
        .store
        .user(name)?
        .ok_or_else(|| FleetError::NotFound(format!("user '{}' does not exist", echo(name))))
}

pub fn list(state: &SharedState, actor: &Actor) -> Result<Vec<UserRecord>, FleetError> {
    actor.require(Access::Administer)?;
    Ok(state.store.users()?)
}

/// Creates `name` and mints their sign-in token; returns the user, the
/// token (shown once, stored only as a hash) and its expiry.
pub async fn create(
    state: &SharedState,
    actor: &Actor,
    name: &str,
    spec: UserSpec,
    ttl: Duration,
) -> Result<(UserRecord, String, i64), FleetError> {
    actor.require(Access::Administer)?;
    validate_user_name(name).map_err(|e| FleetError::invalid_message(&e.to_string()))?;
    check_ttl(ttl)?;
    check_spec(state, &spec)?;
    let now = now_unix_ms();
    let user = UserRecord {
        name: name.to_owned(),
        role: spec.role.as_str().to_owned(),
        systems: spec.systems,
        all_systems: spec.all_systems,
        created_unix_ms: now,
        created_by: actor.label(),
        cert_serial: None,
        cert_expires_unix_ms: None,
        password_hash: None,
    };
    let (token, record) = new_token(name, now, ttl);
    let expires = record.expires_unix_ms;
    let hash = token_hash(&token);
    let stored = user.clone();
    let wanted = name.to_owned();
    state
        .store
        .write(move |w| {
            // Writes are serialised: this check cannot race another create.
            if let Some(taken) = w.user_named_like(&wanted)? {
                return Ok(Err(taken));
            }
            w.put_user(&stored)?;
            w.put_user_token(&hash, &record)?;
            Ok(Ok(()))
        })
        .await?
        .map_err(|taken| {
            FleetError::AlreadyExists(format!("name: a user named '{taken}' exists already"))
        })?;
    Ok((user, token, expires))
}

/// A new sign-in token for an existing user (a new machine, a lost key,
/// a certificate near its end); their current certificate stays valid
/// until the token is used.
pub async fn issue_token(
    state: &SharedState,
    actor: &Actor,
    name: &str,
    ttl: Duration,
) -> Result<(String, i64), FleetError> {
    actor.require(Access::Administer)?;
    check_ttl(ttl)?;
    let (token, record) = new_token(name, now_unix_ms(), ttl);
    let expires = record.expires_unix_ms;
    let hash = token_hash(&token);
    let wanted = name.to_owned();
    state
        .store
        .write(move |w| {
            if w.user(&wanted)?.is_none() {
                return Ok(false);
            }
            w.put_user_token(&hash, &record)?;
            Ok(true)
        })
        .await?
        .then_some((token, expires))
        .ok_or_else(|| FleetError::NotFound(format!("user '{}' does not exist", echo(name))))
}

fn check_ttl(ttl: Duration) -> Result<(), FleetError> {
    if ttl.is_zero() || ttl > MAX_USER_TOKEN_TTL {
        return Err(FleetError::invalid(
            "ttl",
            format!(
                "must be between 1s and {}d",
                MAX_USER_TOKEN_TTL.as_secs() / 86_400
            ),
        ));
    }
    Ok(())
}

/// 160 random bits, like join tokens, with a prefix that tells them apart.
fn new_token(user: &str, now: i64, ttl: Duration) -> (String, UserTokenRecord) {
    let token = crate::store::new_token("nfu1.");
    let expires = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let record = UserTokenRecord {
        user: user.to_owned(),
        created_unix_ms: now,
        expires_unix_ms: expires,
        used_unix_ms: None,
    };
    (token, record)
}

/// A signed certificate for the user a sign-in token was minted for.
#[derive(Debug)]
pub struct LoggedIn {
    pub user: UserRecord,
    pub certificate_pem: String,
}

/// `nasfleet login`: the token names the user; the CSR carries the key
/// made on the person's machine. The certificate before (if any) is
/// revoked in the same write.
pub async fn login(
    state: &SharedState,
    token: &str,
    csr_pem: &str,
) -> Result<LoggedIn, FleetError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(FleetError::invalid("token", "must not be empty"));
    }
    let hash = token_hash(token);
    // Whose token it is decides the certificate's name, so look before signing.
    let Some(name) = state.store.user_token_owner(&hash)? else {
        return Err(FleetError::Unauthenticated(
            crate::store::LoginRefusal::UnknownToken.to_string(),
        ));
    };
    let issued = state
        .ca
        .sign_user_csr(&name, csr_pem)
        .map_err(|e| FleetError::invalid_message(&e.to_string()))?;
    let now = now_unix_ms();
    let record = CertRecord {
        principal: Principal::User(name.clone()).common_name(),
        role: None,
        issued_unix_ms: now,
        revoked_unix_ms: None,
    };
    let serial = issued.serial_hex.clone();
    let expires = issued.expires_unix_ms;
    let user = state
        .store
        .write(move |w| {
            let cert = LoginCert {
                serial: &serial,
                expires_unix_ms: expires,
                record: &record,
            };
            Ok(w.login(&hash, now, cert))
        })
        .await?
        .map_err(|e| match e {
            LoginError::Refused(refusal) => FleetError::Unauthenticated(refusal.to_string()),
            LoginError::Store(e) => FleetError::Store(e),
        })?;
    Ok(LoggedIn {
        user,
        certificate_pem: issued.cert_pem,
    })
}

/// Changes a user's role and systems. The last admin stays an admin.
pub async fn update(
    state: &SharedState,
    actor: &Actor,
    name: &str,
    spec: UserSpec,
) -> Result<UserRecord, FleetError> {
    actor.require(Access::Administer)?;
    check_spec(state, &spec)?;
    let wanted = name.to_owned();
    let changed = state
        .store
        .write(move |w| {
            let Some(mut user) = w.user(&wanted)? else {
                return Ok(Err(Refusal::Missing));
            };
            if user.role == Role::Admin.as_str()
                && spec.role != Role::Admin
                && admins(&w.users()?) == 1
            {
                return Ok(Err(Refusal::LastAdmin("demoted")));
            }
            user.role = spec.role.as_str().to_owned();
            user.systems = spec.systems;
            user.all_systems = spec.all_systems;
            w.put_user(&user)?;
            Ok(Ok(user))
        })
        .await?;
    changed.map_err(|refusal| refusal.into_error(name))
}

/// Removes a user and revokes their certificate: their next call is
/// refused. The last admin cannot be removed.
pub async fn remove(
    state: &SharedState,
    actor: &Actor,
    name: &str,
) -> Result<UserRecord, FleetError> {
    actor.require(Access::Administer)?;
    let wanted = name.to_owned();
    let removed = state
        .store
        .write(move |w| {
            let Some(user) = w.user(&wanted)? else {
                return Ok(Err(Refusal::Missing));
            };
            if user.role == Role::Admin.as_str() && admins(&w.users()?) == 1 {
                return Ok(Err(Refusal::LastAdmin("removed")));
            }
            w.remove_user(&wanted, now_unix_ms())?;
            Ok(Ok(user))
        })
        .await?;
    removed.map_err(|refusal| refusal.into_error(name))
}

enum Refusal {
    Missing,
    LastAdmin(&'static str),
}

impl Refusal {
    fn into_error(self, name: &str) -> FleetError {
        match self {
            Refusal::Missing => {
                FleetError::NotFound(format!("user '{}' does not exist", echo(name)))
            }
            Refusal::LastAdmin(what) => FleetError::Conflict(format!(
                "user '{}' is the last admin and cannot be {what}; make another admin first",
                echo(name)
            )),
        }
    }
}

fn admins(users: &[UserRecord]) -> usize {
    users
        .iter()
        .filter(|u| u.role == Role::Admin.as_str())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::test_state;

    fn admin_actor() -> Actor {
        Actor::Person {
            name: "root".into(),
            role: Role::Admin,
            scope: Scope::All,
        }
    }

    fn spec(role: Role, systems: &[&str], all: bool) -> UserSpec {
        UserSpec {
            role,
            systems: systems.iter().map(|s| (*s).to_owned()).collect(),
            all_systems: all,
        }
    }

    fn csr(name: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("user:{name}"));
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[tokio::test]
    async fn a_token_logs_its_user_in_once_and_a_new_login_revokes_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        let (_, token, _) = create(
            &state,
            &admin_actor(),
            "root",
            spec(Role::Admin, &[], false),
            DEFAULT_USER_TOKEN_TTL,
        )
        .await
        .unwrap();
        assert!(token.starts_with("nfu1."));
        let first = login(&state, &token, &csr("root")).await.unwrap();
        let serial = first.user.cert_serial.clone().unwrap();
        assert!(first.user.cert_expires_unix_ms.is_some());
        let again = login(&state, &token, &csr("root")).await.unwrap_err();
        assert!(matches!(again, FleetError::Unauthenticated(m) if m.contains("already used")));
        let unknown = login(&state, "nfu1.00", &csr("root")).await.unwrap_err();
        assert!(matches!(unknown, FleetError::Unauthenticated(m) if m.contains("unknown")));
        // A second token, a second login: the first certificate is revoked.
        let (second, _) = issue_token(&state, &admin_actor(), "root", DEFAULT_USER_TOKEN_TTL)
            .await
            .unwrap();
        let next = login(&state, &second, &csr("root")).await.unwrap();
        assert_ne!(next.user.cert_serial.as_deref(), Some(serial.as_str()));
        assert!(
            state
                .store
                .cert(&serial)
                .unwrap()
                .unwrap()
                .revoked_unix_ms
                .is_some()
        );
    }

    #[tokio::test]
    async fn bad_specs_names_and_duplicates_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        let admin = admin_actor();
        let cases = [
            (
                "ann",
                spec(Role::Viewer, &[], false),
                "systems: name the systems",
            ),
            (
                "ann",
                spec(Role::Admin, &["nas1"], false),
                "an admin sees every system",
            ),
            (
                "ann",
                spec(Role::Viewer, &["nas9"], false),
                "no system named 'nas9'",
            ),
            ("-ann", spec(Role::Viewer, &[], true), "user"),
        ];
        for (name, spec, words) in cases {
            let err = create(&state, &admin, name, spec, DEFAULT_USER_TOKEN_TTL)
                .await
                .unwrap_err();
            assert!(err.to_string().contains(words), "{name}: {err}");
        }
        assert!(state.store.users().unwrap().is_empty());
        create(
            &state,
            &admin,
            "ann",
            spec(Role::Viewer, &[], true),
            DEFAULT_USER_TOKEN_TTL,
        )
        .await
        .unwrap();
        let dup = create(
            &state,
            &admin,
            "ANN",
            spec(Role::Viewer, &[], true),
            DEFAULT_USER_TOKEN_TTL,
        )
        .await
        .unwrap_err();
        assert!(matches!(dup, FleetError::AlreadyExists(m) if m.contains("'ann' exists")));
        let viewer = actor_of(&state.store.user("ann").unwrap().unwrap()).unwrap();
        let refused = create(
            &state,
            &viewer,
            "bob",
            spec(Role::Viewer, &[], true),
            DEFAULT_USER_TOKEN_TTL,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(refused, FleetError::PermissionDenied(m) if m.contains("needs the admin role"))
        );
    }

    #[tokio::test]
    async fn the_last_admin_can_be_neither_removed_nor_demoted() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        let admin = admin_actor();
        for name in ["root", "ann"] {
            create(
                &state,
                &admin,
                name,
                spec(Role::Admin, &[], false),
                DEFAULT_USER_TOKEN_TTL,
            )
            .await
            .unwrap();
        }
        update(&state, &admin, "ann", spec(Role::Viewer, &[], true))
            .await
            .unwrap();
        let demote = update(&state, &admin, "root", spec(Role::Operator, &[], true))
            .await
            .unwrap_err();
        assert!(
            matches!(demote, FleetError::Conflict(m) if m.contains("last admin and cannot be demoted"))
        );
        let remove_last = remove(&state, &admin, "root").await.unwrap_err();
        assert!(matches!(remove_last, FleetError::Conflict(m) if m.contains("cannot be removed")));
        remove(&state, &admin, "ann").await.unwrap();
        assert!(state.store.user("ann").unwrap().is_none());
        let gone = remove(&state, &admin, "ann").await.unwrap_err();
        assert!(matches!(gone, FleetError::NotFound(_)));
    }
}
