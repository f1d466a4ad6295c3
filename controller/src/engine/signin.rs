//! How people sign in to the web console: one-time, short-lived sign-in links minted for a person who already holds a certificate (`nasfleet ui`), passwords kept only as argon2id hashes, and the limit on failed password attempts.

use crate::engine::access::{Access, Actor};
use crate::engine::error::FleetError;
use crate::engine::state::SharedState;
use crate::store::{UserRecord, new_token, token_hash};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use nasfleet_common::echo::echo;
use nasfleet_common::status::now_unix_ms;
use rand::RngCore;
use std::time::Duration;

/// A sign-in link is for opening now, in the browser beside the terminal.
pub const LINK_TTL: Duration = Duration::from_secs(120);
/// Links not yet opened; more are refused until some expire, so a script
/// calling `ui` in a loop cannot grow the controller's memory.
const MAX_PENDING_LINKS: usize = 1000;
pub const MIN_PASSWORD_CHARS: usize = 12;
/// argon2 reads all of it; a bound keeps one sign-in cheap to refuse.
const MAX_PASSWORD_BYTES: usize = 1024;
/// Failed password sign-ins allowed per user name, and per address, within
/// the window of [`crate::engine::signins`]; then every attempt is refused
/// until the window ends.
const MAX_FAILURES_PER_NAME: u32 = 5;
const MAX_FAILURES_PER_ADDRESS: u32 = 20;
/// One answer for an unknown user and a wrong password, so the form does
/// not tell which user names exist.
pub const WRONG_CREDENTIALS: &str = "user name or password is wrong";

/// A minted link: its secret (only in the URL) and when it expires.
pub struct Link {
    pub token: String,
    pub expires_unix_ms: i64,
}

/// A one-time link for the person making the call.
pub fn mint_link(state: &SharedState, actor: &Actor) -> Result<Link, FleetError> {
    let Actor::Person { name, .. } = actor else {
        return Err(FleetError::PermissionDenied(
            "only a person signs in to the console".into(),
        ));
    };
    let now = now_unix_ms();
    let token = new_token("nfc1.");
    let expires_unix_ms = now + LINK_TTL.as_millis() as i64;
    if !state.signins.add_link(
        token_hash(&token),
        name,
        expires_unix_ms,
        now,
        MAX_PENDING_LINKS,
    ) {
        return Err(FleetError::Unavailable(format!(
            "{MAX_PENDING_LINKS} sign-in links are waiting to be opened; try again in {} s",
            LINK_TTL.as_secs()
        )));
    }
    Ok(Link {
        token,
        expires_unix_ms,
    })
}

/// Opens a link once: the user it was minted for, as stored now.
pub fn redeem_link(state: &SharedState, token: &str) -> Result<UserRecord, FleetError> {
    let refused = || {
        FleetError::Unauthenticated(
            "this sign-in link is unknown, was already used or expired; run `nasfleet ui` for a new one"
                .into(),
        )
    };
    let user = state
        .signins
        .take_link(&token_hash(token.trim()), now_unix_ms())
        .ok_or_else(refused)?;
    state
        .store
        .user(&user)?
        .ok_or_else(|| FleetError::Unauthenticated(format!("user '{user}' was removed")))
}

/// Checks a new password against the rules, naming the field.
pub fn check_password_rules(password: &str) -> Result<(), FleetError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(FleetError::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(FleetError::invalid(
            "password",
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String, FleetError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| FleetError::Internal(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| FleetError::Internal(format!("hashing the password: {e}")))
}

fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// `nasfleet user set-password`: admins set (or with an empty password,
/// clear) any user's console password.
pub async fn set_password(
    state: &SharedState,
    actor: &Actor,
    name: &str,
    password: String,
) -> Result<UserRecord, FleetError> {
    actor.require(Access::Administer)?;
    let hash = if password.is_empty() {
        None
    } else {
        check_password_rules(&password)?;
        // argon2id costs tens of milliseconds of CPU by design.
        Some(
            tokio::task::spawn_blocking(move || hash_password(&password))
                .await
                .map_err(|e| FleetError::Internal(format!("hashing the password: {e}")))??,
        )
    };
    if state.store.user(name)?.is_none() {
        return Err(FleetError::NotFound(format!(
            "no user named '{}'",
            echo(name)
        )));
    }
    let name = name.to_owned();
    state
        .store
        .write(move |w| {
            let Some(mut user) = w.user(&name)? else {
                return Ok(None);
            };
            user.password_hash = hash;
            w.put_user(&user)?;
            Ok(Some(user))
        })
        .await?
        .ok_or_else(|| FleetError::NotFound("the user was removed meanwhile".into()))
}

/// A password sign-in from `address`: the user, or one refusal for an
/// unknown name and a wrong password alike. Too many failures for the name
/// or the address refuse further attempts for a while.
pub async fn check_password(
    state: &SharedState,
    name: &str,
    password: String,
    address: &str,
) -> Result<UserRecord, FleetError> {
    let now = now_unix_ms();
    let name_key = format!("user:{}", name.to_lowercase());
    let address_key = format!("address:{address}");
    if let Some(wait) = state
        .signins
        .blocked(&name_key, MAX_FAILURES_PER_NAME, now)
        .or(state
            .signins
            .blocked(&address_key, MAX_FAILURES_PER_ADDRESS, now))
    {
        return Err(FleetError::Unavailable(format!(
            "too many failed sign-ins; try again in {} min",
            wait.as_secs().div_ceil(60).max(1)
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(FleetError::Unauthenticated(WRONG_CREDENTIALS.into()));
    }
    let user = state.store.user(name)?;
    // An unknown user costs the same hash as a known one, so the time of
    // the answer does not tell which names exist either.
    let stored = user
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.to_owned());
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &stored))
        .await
        .map_err(|e| FleetError::Internal(format!("checking the password: {e}")))?;
    match user {
        Some(user) if matches && user.password_hash.is_some() => {
            state.signins.forget_failures(&name_key);
            Ok(user)
        }
        _ => {
            state.signins.count_failure(&name_key, now);
            state.signins.count_failure(&address_key, now);
            Err(FleetError::Unauthenticated(WRONG_CREDENTIALS.into()))
        }
    }
}

/// The argon2id hash of a password nobody knows, with the default
/// parameters, checked for unknown users.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bmFzZmxlZXQtZHVtbXk$5J7yGq7H0vJk0v8t8oQp3wq9pN2m6cXw0r1n3bTq0aE";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_hash_verifies_only_its_password() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterz", &hash));
        assert!(!verify_password("anything", DUMMY_HASH));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn password_rules_name_the_field() {
        let err = check_password_rules("short").unwrap_err().to_string();
        assert!(err.contains("password") && err.contains("12"), "{err}");
        assert!(check_password_rules("twelve chars").is_ok());
    }
}
