//! Who is calling: the client certificate of every request checked against the certificates this controller issued.
//!
//! TLS already proved the certificate chains to our CA; here we add what a
//! CA check cannot: the certificate must be one we recorded and not revoked,
//! and its principal must fit the call.

use crate::store::Store;
use nasfleet_common::identity::{PeerCertificate, Principal};
use tonic::{Request, Status};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub role: Option<String>,
    pub serial_hex: String,
}

pub const ROLE_ADMIN: &str = "admin";

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "store failure during authentication");
    Status::internal(format!("controller store failure: {e}"))
}

/// Reads and checks the client certificate of `request`.
pub fn authenticate<T>(store: &Store, request: &Request<T>) -> Result<Caller, Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated(
            "no client certificate: this call needs nasfleet credentials (see `nasfleet --config`)",
        )
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    let peer = PeerCertificate::from_der(leaf)
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
    let record = store
        .cert(&peer.serial_hex)
        .map_err(internal)?
        .ok_or_else(|| {
            Status::unauthenticated(format!(
                "client certificate {} was not issued by this controller",
                peer.serial_hex
            ))
        })?;
    // Revoked or mismatched credentials are refused credentials, not a
    // lack of permission: the caller must get new ones, not a new role.
    if record.revoked_unix_ms.is_some() {
        return Err(Status::unauthenticated(format!(
            "certificate of {} has been revoked",
            peer.principal
        )));
    }
    if record.principal != peer.principal.common_name() {
        return Err(Status::unauthenticated(
            "client certificate does not match the identity it was issued to",
        ));
    }
    Ok(Caller {
        principal: peer.principal,
        role: record.role,
        serial_hex: peer.serial_hex,
    })
}

/// A person; `admin_only` calls also need the admin role.
pub fn require_user<T>(
    store: &Store,
    request: &Request<T>,
    admin_only: bool,
) -> Result<Caller, Status> {
    let caller = authenticate(store, request)?;
    match &caller.principal {
        Principal::User(_) => {
            if admin_only && caller.role.as_deref() != Some(ROLE_ADMIN) {
                return Err(Status::permission_denied(format!(
                    "{} lacks the admin role this call needs",
                    caller.principal
                )));
            }
            Ok(caller)
        }
        Principal::System(_) => Err(Status::permission_denied(
            "agent certificates cannot call the fleet administration API",
        )),
    }
}

/// An enrolled agent; returns its system name.
pub fn require_system<T>(store: &Store, request: &Request<T>) -> Result<String, Status> {
    let caller = authenticate(store, request)?;
    let Principal::System(name) = caller.principal else {
        return Err(Status::permission_denied(
            "only agent certificates may open the agent link",
        ));
    };
    let system = store.system(&name).map_err(internal)?.ok_or_else(|| {
        Status::permission_denied(format!("system '{name}' is not enrolled in this fleet"))
    })?;
    if system.cert_serial != caller.serial_hex {
        return Err(Status::permission_denied(format!(
            "certificate {} is not the current certificate of system '{name}'",
            caller.serial_hex
        )));
    }
    Ok(name)
}
