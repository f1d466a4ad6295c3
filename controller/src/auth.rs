//! Who is calling, and may they: the client certificate of every request checked against the certificates this controller issued and the user it speaks for, the access a call needs checked against that user's role, and every refusal and every change written to the audit log before it is answered.
//!
//! TLS already proved the certificate chains to our CA; here we add what a
//! CA check cannot: the certificate must be one we recorded, not revoked,
//! and the current one of its user or system. Both edges (the Fleet API and
//! the agent link) use this module.

use crate::engine::access::{Access, Actor};
use crate::engine::audit::{self, Audited};
use crate::engine::error::FleetError;
use crate::engine::state::SharedState;
use crate::engine::users::actor_of;
use crate::store::{CertRecord, Store};
use nasfleet_common::identity::{PeerCertificate, Principal};
use tonic::Request;

/// An authenticated certificate.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub serial_hex: String,
}

/// Where a call came from and which certificate it presented, as the
/// audit log records it; read before the request is consumed.
#[derive(Debug, Clone)]
pub struct Origin {
    pub address: String,
    /// `user:NAME`, `system:NAME`, or `unknown` without a usable certificate.
    pub who: String,
}

impl Origin {
    pub fn of<T>(request: &Request<T>) -> Origin {
        Origin {
            address: request
                .remote_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            who: peer_certificate(request)
                .map(|peer| peer.principal.to_string())
                .unwrap_or_else(|_| "unknown".to_owned()),
        }
    }
}

/// Every call of the Fleet service, so which access each one needs is one
/// table ([`Call::access`]) that a test holds against the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    CreateToken,
    ListSystems,
    GetSystem,
    RemoveSystem,
    CreateSnapshot,
    ListSnapshots,
    ListDatasets,
    CreateTask,
    ValidateTask,
    EstimateReplication,
    UpdateTask,
    ListTasks,
    GetTask,
    DeleteTask,
    SetTaskEnabled,
    RunTask,
    ListRuns,
    GetRun,
    WatchRun,
    CancelRun,
    ListSshConnections,
    CreateSshConnection,
    DeleteSshConnection,
    CreateUser,
    CreateUserToken,
    ListUsers,
    GetUser,
    UpdateUser,
    RemoveUser,
    ListAudit,
    CreateConsoleLink,
    SetUserPassword,
    ListAlerts,
    DismissAlert,
    AddChannel,
    ListChannels,
    RemoveChannel,
    TestChannel,
}

impl Call {
    pub const ALL: [Call; 38] = [
        Call::CreateToken,
        Call::ListSystems,
        Call::GetSystem,
        Call::RemoveSystem,
        Call::CreateSnapshot,
        Call::ListSnapshots,
        Call::ListDatasets,
        Call::CreateTask,
        Call::ValidateTask,
        Call::EstimateReplication,
        Call::UpdateTask,
        Call::ListTasks,
        Call::GetTask,
        Call::DeleteTask,
        Call::SetTaskEnabled,
        Call::RunTask,
        Call::ListRuns,
        Call::GetRun,
        Call::WatchRun,
        Call::CancelRun,
        Call::ListSshConnections,
        Call::CreateSshConnection,
        Call::DeleteSshConnection,
        Call::CreateUser,
        Call::CreateUserToken,
        Call::ListUsers,
        Call::GetUser,
        Call::UpdateUser,
        Call::RemoveUser,
        Call::ListAudit,
        Call::CreateConsoleLink,
        Call::SetUserPassword,
        Call::ListAlerts,
        Call::DismissAlert,
        Call::AddChannel,
        Call::ListChannels,
        Call::RemoveChannel,
        Call::TestChannel,
    ];

    /// The RPC's name in `nasfleet.proto`.
    pub fn name(self) -> &'static str {
        match self {
            Call::CreateToken => "CreateToken",
            Call::ListSystems => "ListSystems",
            Call::GetSystem => "GetSystem",
            Call::RemoveSystem => "RemoveSystem",
            Call::CreateSnapshot => "CreateSnapshot",
            Call::ListSnapshots => "ListSnapshots",
            Call::ListDatasets => "ListDatasets",
            Call::CreateTask => "CreateTask",
            Call::ValidateTask => "ValidateTask",
            Call::EstimateReplication => "EstimateReplication",
            Call::UpdateTask => "UpdateTask",
            Call::ListTasks => "ListTasks",
            Call::GetTask => "GetTask",
            Call::DeleteTask => "DeleteTask",
            Call::SetTaskEnabled => "SetTaskEnabled",
            Call::RunTask => "RunTask",
            Call::ListRuns => "ListRuns",
            Call::GetRun => "GetRun",
            Call::WatchRun => "WatchRun",
            Call::CancelRun => "CancelRun",
            Call::ListSshConnections => "ListSshConnections",
            Call::CreateSshConnection => "CreateSshConnection",
            Call::DeleteSshConnection => "DeleteSshConnection",
            Call::CreateUser => "CreateUser",
            Call::CreateUserToken => "CreateUserToken",
            Call::ListUsers => "ListUsers",
            Call::GetUser => "GetUser",
            Call::UpdateUser => "UpdateUser",
            Call::RemoveUser => "RemoveUser",
            Call::ListAudit => "ListAudit",
            Call::CreateConsoleLink => "CreateConsoleLink",
            Call::SetUserPassword => "SetUserPassword",
            Call::ListAlerts => "ListAlerts",
            Call::DismissAlert => "DismissAlert",
            Call::AddChannel => "AddChannel",
            Call::ListChannels => "ListChannels",
            Call::RemoveChannel => "RemoveChannel",
            Call::TestChannel => "TestChannel",
        }
    }

    /// The access the call needs.
    pub fn access(self) -> Access {
        match self {
            Call::ListSystems
            | Call::GetSystem
            | Call::ListSnapshots
            | Call::ListDatasets
            | Call::ListTasks
            | Call::GetTask
            // Reads only: the sources run `zfs send -n -P`.
            | Call::EstimateReplication
            | Call::ListRuns
            | Call::GetRun
            | Call::WatchRun
            | Call::ListSshConnections
            | Call::ListAlerts
            // A link signs in the person who asks for it, with their own role.
            | Call::CreateConsoleLink => Access::Read,
            Call::CreateSnapshot
            | Call::CreateTask
            | Call::ValidateTask
            | Call::UpdateTask
            | Call::DeleteTask
            | Call::SetTaskEnabled
            | Call::RunTask
            | Call::CancelRun
            | Call::DismissAlert => Access::Operate,
            Call::CreateToken
            | Call::RemoveSystem
            | Call::CreateSshConnection
            | Call::DeleteSshConnection
            | Call::CreateUser
            | Call::CreateUserToken
            | Call::ListUsers
            | Call::GetUser
            | Call::UpdateUser
            | Call::RemoveUser
            | Call::ListAudit
            | Call::SetUserPassword
            // Channels hold secrets and send the whole fleet's alerts out.
            | Call::AddChannel
            | Call::ListChannels
            | Call::RemoveChannel
            | Call::TestChannel => Access::Administer,
        }
    }
}

/// The leaf certificate of `request`, parsed.
fn peer_certificate<T>(request: &Request<T>) -> Result<PeerCertificate, FleetError> {
    let certs = request.peer_certs().ok_or_else(|| {
        FleetError::Unauthenticated(
            "no client certificate: this call needs nasfleet credentials (see `nasfleet --config`)"
                .into(),
        )
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| FleetError::Unauthenticated("empty client certificate chain".into()))?;
    PeerCertificate::from_der(leaf)
        .map_err(|e| FleetError::Unauthenticated(format!("client certificate: {e}")))
}

/// Reads and checks the client certificate of `request`.
pub fn authenticate<T>(store: &Store, request: &Request<T>) -> Result<Caller, FleetError> {
    let peer = peer_certificate(request)?;
    authenticate_peer(store, peer)
}

fn authenticate_peer(store: &Store, peer: PeerCertificate) -> Result<Caller, FleetError> {
    let record = store.cert(&peer.serial_hex)?;
    check_issued(&peer, record.as_ref())?;
    Ok(Caller {
        principal: peer.principal,
        serial_hex: peer.serial_hex,
    })
}

/// The certificate must be one this controller issued to that principal,
/// and not revoked. Revoked or mismatched credentials are refused
/// credentials, not a lack of permission: the caller needs new ones.
fn check_issued(peer: &PeerCertificate, record: Option<&CertRecord>) -> Result<(), FleetError> {
    let record = record.ok_or_else(|| {
        FleetError::Unauthenticated(format!(
            "client certificate {} was not issued by this controller",
            peer.serial_hex
        ))
    })?;
    if record.revoked_unix_ms.is_some() {
        return Err(FleetError::Unauthenticated(format!(
            "certificate of {} has been revoked",
            peer.principal
        )));
    }
    if record.principal != peer.principal.common_name() {
        return Err(FleetError::Unauthenticated(
            "client certificate does not match the identity it was issued to".into(),
        ));
    }
    Ok(())
}

/// The person a request speaks for: a user whose current certificate it is.
pub fn person<T>(store: &Store, request: &Request<T>) -> Result<Actor, FleetError> {
    person_of(store, authenticate(store, request)?)
}

/// The person a client certificate (DER) of another TLS listener speaks
/// for, checked as the API checks its callers'.
pub fn person_by_certificate(store: &Store, leaf_der: &[u8]) -> Result<Actor, FleetError> {
    let peer = PeerCertificate::from_der(leaf_der)
        .map_err(|e| FleetError::Unauthenticated(format!("client certificate: {e}")))?;
    person_of(store, authenticate_peer(store, peer)?)
}

fn person_of(store: &Store, caller: Caller) -> Result<Actor, FleetError> {
    let Principal::User(name) = &caller.principal else {
        return Err(FleetError::PermissionDenied(
            "agent certificates cannot call the fleet administration API".into(),
        ));
    };
    let user = store.user(name)?.ok_or_else(|| {
        FleetError::Unauthenticated(format!("user '{name}' was removed from this fleet"))
    })?;
    if user.cert_serial.as_deref() != Some(caller.serial_hex.as_str()) {
        return Err(FleetError::Unauthenticated(format!(
            "certificate {} is not the current certificate of user '{name}'; log in again",
            caller.serial_hex
        )));
    }
    actor_of(&user)
}

/// What a request is about, as the audit log names it (see `api::subjects`).
pub trait Subject {
    fn subject(&self) -> String;
}

/// A person whose role allows `call`. A refusal is in the audit log, with
/// what the request was about, before it is answered.
pub async fn authorize<T: Subject>(
    state: &SharedState,
    request: &Request<T>,
    call: Call,
) -> Result<(Actor, Origin), FleetError> {
    let origin = Origin::of(request);
    let checked = person(&state.store, request).and_then(|actor| {
        actor.require(call.access())?;
        Ok(actor)
    });
    match checked {
        Ok(actor) => Ok((actor, origin)),
        Err(refusal) => {
            let subject = request.get_ref().subject();
            record(state, &origin, call.name(), &subject, Err(&refusal)).await?;
            Err(refusal)
        }
    }
}

/// The outcome of a call that changes something (or would have), in the
/// audit log before it is answered; reads are not recorded unless refused.
/// When the entry cannot be written the caller is told so: nothing is
/// answered as done without its entry.
pub async fn settle<R>(
    state: &SharedState,
    origin: &Origin,
    call: Call,
    object: &str,
    outcome: Result<R, FleetError>,
) -> Result<R, FleetError> {
    if call.access() == Access::Read {
        return outcome;
    }
    record(
        state,
        origin,
        call.name(),
        object,
        outcome.as_ref().map(|_| ()),
    )
    .await?;
    outcome
}

/// Writes a refusal to the audit log: the web console's own checks (role,
/// CSRF token) refuse through here like [`authorize`] does.
pub async fn refuse(
    state: &SharedState,
    origin: &Origin,
    action: &str,
    object: &str,
    refusal: &FleetError,
) -> Result<(), FleetError> {
    record(state, origin, action, object, Err(refusal)).await
}

async fn record(
    state: &SharedState,
    origin: &Origin,
    action: &str,
    object: &str,
    outcome: Result<(), &FleetError>,
) -> Result<(), FleetError> {
    let entry = Audited {
        actor: &origin.who,
        address: &origin.address,
        action,
        object,
    };
    audit::record(state, &entry, outcome).await.map_err(|e| {
        tracing::error!(error = %e, action, "cannot write the audit log");
        FleetError::Internal(format!(
            "the audit log cannot be written ({e}); nothing is answered as done without its entry"
        ))
    })
}

/// An enrolled agent with its current certificate, or with the renewed
/// one it has not used before; returns its system name and whether it
/// presented the renewed one.
pub fn require_system<T>(
    store: &Store,
    request: &Request<T>,
) -> Result<(String, bool), FleetError> {
    let caller = authenticate(store, request)?;
    let Principal::System(name) = caller.principal else {
        return Err(FleetError::PermissionDenied(
            "only agent certificates may open the agent link".into(),
        ));
    };
    let system = store.system(&name)?.ok_or_else(|| {
        FleetError::PermissionDenied(format!("system '{name}' is not enrolled in this fleet"))
    })?;
    if system.cert_serial == caller.serial_hex {
        return Ok((name, false));
    }
    if system.next_cert_serial.as_deref() == Some(caller.serial_hex.as_str()) {
        return Ok((name, true));
    }
    Err(FleetError::PermissionDenied(format!(
        "certificate {} is not the current certificate of system '{name}'",
        caller.serial_hex
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasfleet_common::roles::Role;

    fn user(role: Role) -> Actor {
        Actor::Person {
            name: "ann".into(),
            role,
            scope: crate::engine::access::Scope::All,
        }
    }

    fn peer(principal: Principal) -> PeerCertificate {
        PeerCertificate {
            principal,
            serial_hex: "0a".into(),
            not_before_unix_ms: 0,
            not_after_unix_ms: 0,
        }
    }

    fn issued(principal: &str, revoked: bool) -> CertRecord {
        CertRecord {
            principal: principal.into(),
            role: Some("admin".into()),
            issued_unix_ms: 1,
            revoked_unix_ms: revoked.then_some(2),
        }
    }

    #[test]
    fn unknown_revoked_or_mismatched_certificates_are_refused_credentials() {
        let ann = peer(Principal::User("ann".into()));
        assert!(matches!(
            check_issued(&ann, None),
            Err(FleetError::Unauthenticated(m)) if m.contains("not issued by this controller")
        ));
        assert!(matches!(
            check_issued(&ann, Some(&issued("user:ann", true))),
            Err(FleetError::Unauthenticated(m)) if m.contains("revoked")
        ));
        assert!(matches!(
            check_issued(&ann, Some(&issued("user:bob", false))),
            Err(FleetError::Unauthenticated(m)) if m.contains("does not match")
        ));
        assert!(check_issued(&ann, Some(&issued("user:ann", false))).is_ok());
    }

    /// The Fleet service's RPCs as `nasfleet.proto` declares them.
    fn contract_rpcs() -> Vec<String> {
        let proto = include_str!("../../proto/proto/nasfleet.proto");
        let service = proto
            .split("service Fleet {")
            .nth(1)
            .and_then(|rest| rest.split("\n}").next())
            .unwrap_or_default();
        service
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_rpc_of_the_contract_has_its_access() {
        let mut named: Vec<&str> = Call::ALL.iter().map(|c| c.name()).collect();
        let mut rpcs = contract_rpcs();
        named.sort_unstable();
        rpcs.sort_unstable();
        assert_eq!(named, rpcs);
    }

    #[test]
    fn reads_are_for_viewers_changes_for_operators_fleet_management_for_admins() {
        for call in Call::ALL {
            let name = call.name();
            let expected = if name.contains("User")
                || name.contains("Audit")
                // Channels hold secrets and carry the whole fleet's alerts.
                || name.contains("Channel")
            {
                Access::Administer
            } else if name.starts_with("List")
                || name.starts_with("Get")
                || name == "WatchRun"
                || name == "EstimateReplication"
                // A console link signs in its own caller, with their role.
                || name == "CreateConsoleLink"
            {
                Access::Read
            } else if matches!(
                call,
                Call::CreateToken
                    | Call::RemoveSystem
                    | Call::CreateSshConnection
                    | Call::DeleteSshConnection
            ) {
                Access::Administer
            } else {
                Access::Operate
            };
            assert_eq!(call.access(), expected, "{name}");
            // Every role against every call.
            assert_eq!(
                user(Role::Viewer).require(call.access()).is_ok(),
                expected == Access::Read,
                "{name}"
            );
            assert_eq!(
                user(Role::Operator).require(call.access()).is_ok(),
                expected != Access::Administer,
                "{name}"
            );
            assert!(user(Role::Admin).require(call.access()).is_ok(), "{name}");
        }
    }
}
