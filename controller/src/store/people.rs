//! The fleet's people in the store: one record per user (role, the systems they see, their current certificate) and their sign-in tokens, single-use and expiring, kept only as hashes.

use super::{CertRecord, StoreError, Tables, Write, decode, encode, flatten};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use thiserror::Error;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    /// `admin`, `operator` or `viewer` (`nasfleet_common::roles::Role`).
    pub role: String,
    /// The systems an operator or viewer sees; empty for an admin and
    /// with `all_systems`.
    pub systems: Vec<String>,
    pub all_systems: bool,
    pub created_unix_ms: i64,
    pub created_by: String,
    /// The serial of the certificate that speaks for this user now;
    /// `None` until the first login. Any other serial is refused.
    pub cert_serial: Option<String>,
    pub cert_expires_unix_ms: Option<i64>,
    /// argon2id hash (PHC string) of the console password; `None` turns
    /// password sign-in off for this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

/// A sign-in token for one user, as `user create` minted it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserTokenRecord {
    pub user: String,
    pub created_unix_ms: i64,
    pub expires_unix_ms: i64,
    pub used_unix_ms: Option<i64>,
}

/// Why a login was refused. Nothing is written in any of these cases.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LoginRefusal {
    #[error("token: unknown sign-in token (an admin makes one with `nasfleet user create`)")]
    UnknownToken,
    #[error("token: this sign-in token was already used; ask an admin for a new one")]
    TokenUsed,
    #[error("token: this sign-in token expired; ask an admin for a new one")]
    TokenExpired,
    #[error("token: user '{0}' was removed")]
    UserGone(String),
}

#[derive(Debug, Error)]
pub enum LoginError {
    #[error(transparent)]
    Refused(#[from] LoginRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The new certificate of a login, for [`Write::login`].
pub struct LoginCert<'a> {
    pub serial: &'a str,
    pub expires_unix_ms: i64,
    pub record: &'a CertRecord,
}

impl Tables {
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.users
            .get(name)?
            .map(|bytes| decode(name.as_bytes(), &bytes))
            .transpose()
    }

    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.users
            .iter()
            .map(|item| {
                let (key, bytes) = item?;
                decode(&key, &bytes)
            })
            .collect()
    }

    /// The user a sign-in token was minted for, used or not.
    pub fn user_token_owner(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        self.user_tokens
            .get(token_hash)?
            .map(|bytes| decode::<UserTokenRecord>(token_hash.as_bytes(), &bytes).map(|t| t.user))
            .transpose()
    }

    /// The user whose name equals `name` ignoring case, if any.
    pub fn user_named_like(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .users()?
            .into_iter()
            .map(|u| u.name)
            .find(|n| n.eq_ignore_ascii_case(name)))
    }
}

impl Write<'_> {
    pub fn put_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.users.insert(user.name.as_bytes(), encode(user)?)?;
        Ok(())
    }

    /// Removes the user and revokes their certificate in one transaction,
    /// so the next call with it is refused.
    pub fn remove_user(&self, name: &str, now_unix_ms: i64) -> Result<(), StoreError> {
        let Some(user) = self.user(name)? else {
            return Ok(());
        };
        let revoked = match &user.cert_serial {
            Some(serial) => self
                .cert(serial)?
                .map(|mut cert| {
                    cert.revoked_unix_ms = Some(now_unix_ms);
                    encode(&cert).map(|bytes| (serial.clone(), bytes))
                })
                .transpose()?,
            None => None,
        };
        let result = (&self.users, &self.certs).transaction(|(users, certs)| {
            users.remove(name.as_bytes())?;
            if let Some((serial, bytes)) = &revoked {
                certs.insert(serial.as_bytes(), bytes.clone())?;
            }
            Ok::<(), ConflictableTransactionError<StoreError>>(())
        });
        result.map_err(|e| match flatten(e) {
            Ok(inner) | Err(inner) => inner,
        })
    }

    /// Sign-in tokens are keyed by the SHA-256 of the secret, like join tokens.
    pub fn put_user_token(
        &self,
        token_hash: &str,
        record: &UserTokenRecord,
    ) -> Result<(), StoreError> {
        self.user_tokens.insert(token_hash, encode(record)?)?;
        Ok(())
    }

    /// Consumes the token, records the new certificate as the user's and
    /// revokes the one before (if any), in one transaction. Returns the user.
    pub fn login(
        &self,
        token_hash: &str,
        now_unix_ms: i64,
        cert: LoginCert<'_>,
    ) -> Result<UserRecord, LoginError> {
        let Some(raw) = self.user_tokens.get(token_hash).map_err(StoreError::from)? else {
            return Err(LoginRefusal::UnknownToken.into());
        };
        let mut token: UserTokenRecord = decode(token_hash.as_bytes(), &raw)?;
        if token.used_unix_ms.is_some() {
            return Err(LoginRefusal::TokenUsed.into());
        }
        if token.expires_unix_ms <= now_unix_ms {
            return Err(LoginRefusal::TokenExpired.into());
        }
        let Some(mut user) = self.user(&token.user)? else {
            return Err(LoginRefusal::UserGone(token.user).into());
        };
        let previous = match &user.cert_serial {
            Some(serial) => self.cert(serial)?.map(|mut old| {
                old.revoked_unix_ms = Some(now_unix_ms);
                (serial.clone(), old)
            }),
            None => None,
        };
        token.used_unix_ms = Some(now_unix_ms);
        user.cert_serial = Some(cert.serial.to_owned());
        user.cert_expires_unix_ms = Some(cert.expires_unix_ms);
        let token_bytes = encode(&token)?;
        let user_bytes = encode(&user)?;
        let cert_bytes = encode(cert.record)?;
        let previous_bytes = previous
            .map(|(serial, old)| encode(&old).map(|bytes| (serial, bytes)))
            .transpose()?;
        // Writes are serialised by the writer: the checks above cannot race
        // another login, and the transaction makes the four writes one.
        let result =
            (&self.user_tokens, &self.users, &self.certs).transaction(|(tokens, users, certs)| {
                tokens.insert(token_hash.as_bytes(), token_bytes.clone())?;
                users.insert(user.name.as_bytes(), user_bytes.clone())?;
                certs.insert(cert.serial.as_bytes(), cert_bytes.clone())?;
                if let Some((serial, bytes)) = &previous_bytes {
                    certs.insert(serial.as_bytes(), bytes.clone())?;
                }
                Ok::<(), ConflictableTransactionError<StoreError>>(())
            });
        result.map_err(|e| match flatten(e) {
            Ok(inner) | Err(inner) => LoginError::Store(inner),
        })?;
        Ok(user)
    }
}
