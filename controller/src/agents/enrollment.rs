//! Join tokens and the Enrollment service: a single-use token plus a CSR become an agent certificate.

use crate::state::SharedState;
use crate::store::{CertRecord, EnrollError, EnrollRefusal, SystemRecord, TokenRecord};
use nasfleet_common::identity::Principal;
use nasfleet_common::names::validate_system_name;
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1::enrollment_server::Enrollment;
use nasfleet_proto::v1::{JoinRequest, JoinResponse};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Longest accepted token lifetime; join tokens are meant to be used right away.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Tokens are stored only as this hash.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates and records a token valid for `ttl`; returns it and its expiry.
pub async fn create_token(
    state: &SharedState,
    created_by: &str,
    ttl: Duration,
) -> Result<(String, i64), Status> {
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(Status::invalid_argument(format!(
            "ttl: must be between 1s and {}d",
            MAX_TOKEN_TTL.as_secs() / 86_400
        )));
    }
    // 160 random bits: guessing is hopeless within any token lifetime.
    let secret: [u8; 20] = rand::random();
    let token = format!("nfj1.{}", hex::encode(secret));
    let now = now_unix_ms();
    let expires = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let record = TokenRecord {
        created_unix_ms: now,
        expires_unix_ms: expires,
        created_by: created_by.to_owned(),
        used_by: None,
        used_unix_ms: None,
    };
    let hash = token_hash(&token);
    state
        .store
        .write(move |w| w.put_token(&hash, &record))
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok((token, expires))
}

pub struct EnrollmentService {
    pub state: SharedState,
}

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let peer = request.remote_addr();
        let req = request.into_inner();
        validate_system_name(&req.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if req.token.trim().is_empty() {
            return Err(Status::invalid_argument("token: must not be empty"));
        }
        let issued = self
            .state
            .ca
            .sign_system_csr(&req.name, &req.csr_pem)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = now_unix_ms();
        let system = SystemRecord {
            name: req.name.clone(),
            enrolled_unix_ms: now,
            cert_serial: issued.serial_hex.clone(),
            last_seen_unix_ms: 0,
            address: String::new(),
            agent_version: String::new(),
            pools: Vec::new(),
        };
        let cert = CertRecord {
            principal: Principal::System(req.name.clone()).common_name(),
            role: None,
            issued_unix_ms: now,
            revoked_unix_ms: None,
        };
        let hash = token_hash(req.token.trim());
        let serial = issued.serial_hex.clone();
        let result = self
            .state
            .store
            .write(move |w| Ok(w.enroll(&hash, now, &system, &serial, &cert)))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        match result {
            Ok(()) => {}
            Err(EnrollError::Refused(refusal)) => {
                tracing::warn!(system = %req.name, ?peer, reason = %refusal, "enrollment refused");
                return Err(match refusal {
                    EnrollRefusal::NameTaken(_) => Status::already_exists(refusal.to_string()),
                    _ => Status::permission_denied(refusal.to_string()),
                });
            }
            Err(EnrollError::Store(e)) => return Err(Status::internal(e.to_string())),
        }
        tracing::info!(system = %req.name, ?peer, serial = %issued.serial_hex, "system enrolled");
        Ok(Response::new(JoinResponse {
            certificate_pem: issued.cert_pem,
            ca_certificate_pem: self.state.ca.cert_pem().to_owned(),
        }))
    }
}
