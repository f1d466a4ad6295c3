//! The Enrollment service: a single-use join token plus a CSR become an agent certificate; a person's sign-in token plus a CSR become that person's certificate (`nasfleet login`). Both are in the audit log, refused or done.

use crate::engine::audit::{self, Audited};
use crate::engine::state::SharedState;
use crate::engine::users;
use crate::store::{CertRecord, EnrollError, EnrollRefusal, SystemRecord, token_hash};
use nasfleet_common::identity::Principal;
use nasfleet_common::names::validate_system_name;
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1::enrollment_server::Enrollment;
use nasfleet_proto::v1::{JoinRequest, JoinResponse, LoginRequest, LoginResponse};
use tonic::{Request, Response, Status};

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
            cert_expires_unix_ms: issued.expires_unix_ms,
            next_cert_serial: None,
            next_cert_expires_unix_ms: 0,
            last_seen_unix_ms: 0,
            address: String::new(),
            agent_version: String::new(),
            pools: Vec::new(),
            inventory_unix_ms: 0,
            inventory_problem: None,
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
        let address = peer.map(|a| a.to_string()).unwrap_or_default();
        let who = Principal::System(req.name.clone()).to_string();
        let call = Audited {
            actor: &who,
            address: &address,
            action: "Join",
            object: &format!("system '{}'", req.name),
        };
        audit::record(&self.state, &call, Ok(())).await?;
        Ok(Response::new(JoinResponse {
            certificate_pem: issued.cert_pem,
            ca_certificate_pem: self.state.ca.cert_pem().to_owned(),
        }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let address = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let req = request.into_inner();
        let outcome = users::login(&self.state, &req.token, &req.csr_pem).await;
        // The token is a secret: the log names the user it signed in, never the token.
        let (who, object) = match &outcome {
            Ok(done) => (
                Principal::User(done.user.name.clone()).to_string(),
                format!("user '{}'", done.user.name),
            ),
            Err(_) => ("unknown".to_owned(), "a sign-in token".to_owned()),
        };
        let call = Audited {
            actor: &who,
            address: &address,
            action: "Login",
            object: &object,
        };
        audit::record(&self.state, &call, outcome.as_ref().map(|_| ())).await?;
        let done = outcome?;
        tracing::info!(user = %done.user.name, %address, "user logged in");
        Ok(Response::new(LoginResponse {
            user: done.user.name.clone(),
            certificate_pem: done.certificate_pem,
            ca_certificate_pem: self.state.ca.cert_pem().to_owned(),
            role: done.user.role.clone(),
            expires_unix_ms: done.user.cert_expires_unix_ms.unwrap_or(0),
        }))
    }
}
