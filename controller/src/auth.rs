//! Who is calling, and may they: the client certificate of every request checked against the certificates this controller issued, and the access a call needs checked against the caller's role.
//!
//! TLS already proved the certificate chains to our CA; here we add what a
//! CA check cannot: the certificate must be one we recorded and not revoked,
//! and its principal must fit the call. Both edges (the Fleet API and the
//! agent link) use this module.

use crate::engine::error::FleetError;
use crate::store::{CertRecord, Store};
use nasfleet_common::identity::{PeerCertificate, Principal};
use tonic::Request;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub role: Option<String>,
    pub serial_hex: String,
}

impl Caller {
    /// The caller's name without its kind, as runs record who started them.
    pub fn name(&self) -> &str {
        match &self.principal {
            Principal::User(name) | Principal::System(name) => name,
        }
    }
}

pub const ROLE_ADMIN: &str = "admin";

/// What a call does, and so what the caller's role must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Look at systems, datasets, snapshots, tasks, runs and connections.
    Read,
    /// Change or run the fleet's tasks and snapshots.
    Operate,
    /// Manage the fleet itself: join tokens, system removal, SSH trust.
    Administer,
}

impl Access {
    /// Whether `role` may make calls of this access. Today's roles are
    /// `admin` (everything) and `viewer` (read only).
    pub fn allowed_for(self, role: Option<&str>) -> bool {
        match self {
            Access::Read => true,
            Access::Operate | Access::Administer => role == Some(ROLE_ADMIN),
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
}

impl Call {
    pub const ALL: [Call; 23] = [
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
            | Call::ListSshConnections => Access::Read,
            Call::CreateSnapshot
            | Call::CreateTask
            | Call::ValidateTask
            | Call::UpdateTask
            | Call::DeleteTask
            | Call::SetTaskEnabled
            | Call::RunTask
            | Call::CancelRun => Access::Operate,
            Call::CreateToken
            | Call::RemoveSystem
            | Call::CreateSshConnection
            | Call::DeleteSshConnection => Access::Administer,
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
    let record = store.cert(&peer.serial_hex)?;
    check_issued(&peer, record.as_ref())?;
    Ok(Caller {
        role: record.and_then(|r| r.role),
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

/// A person whose role allows `call`.
pub fn authorize<T>(store: &Store, request: &Request<T>, call: Call) -> Result<Caller, FleetError> {
    let caller = authenticate(store, request)?;
    permit(&caller, call.access())?;
    Ok(caller)
}

/// Whether an authenticated caller may make a call of `access`.
pub fn permit(caller: &Caller, access: Access) -> Result<(), FleetError> {
    match &caller.principal {
        Principal::User(_) if access.allowed_for(caller.role.as_deref()) => Ok(()),
        Principal::User(_) => Err(FleetError::PermissionDenied(format!(
            "{} lacks the admin role this call needs",
            caller.principal
        ))),
        Principal::System(_) => Err(FleetError::PermissionDenied(
            "agent certificates cannot call the fleet administration API".into(),
        )),
    }
}

/// An enrolled agent with its current certificate; returns its system name.
pub fn require_system<T>(store: &Store, request: &Request<T>) -> Result<String, FleetError> {
    let caller = authenticate(store, request)?;
    let Principal::System(name) = caller.principal else {
        return Err(FleetError::PermissionDenied(
            "only agent certificates may open the agent link".into(),
        ));
    };
    let system = store.system(&name)?.ok_or_else(|| {
        FleetError::PermissionDenied(format!("system '{name}' is not enrolled in this fleet"))
    })?;
    if system.cert_serial != caller.serial_hex {
        return Err(FleetError::PermissionDenied(format!(
            "certificate {} is not the current certificate of system '{name}'",
            caller.serial_hex
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Option<&str>) -> Caller {
        Caller {
            principal: Principal::User("ann".into()),
            role: role.map(str::to_owned),
            serial_hex: "01".into(),
        }
    }

    fn peer(principal: Principal) -> PeerCertificate {
        PeerCertificate {
            principal,
            serial_hex: "0a".into(),
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
    fn admins_may_do_everything_viewers_only_read() {
        for access in [Access::Read, Access::Operate, Access::Administer] {
            assert!(permit(&user(Some("admin")), access).is_ok(), "{access:?}");
        }
        assert!(permit(&user(Some("viewer")), Access::Read).is_ok());
        for access in [Access::Operate, Access::Administer] {
            assert!(
                matches!(
                    permit(&user(Some("viewer")), access),
                    Err(FleetError::PermissionDenied(m)) if m.contains("lacks the admin role")
                ),
                "{access:?}"
            );
        }
    }

    #[test]
    fn agents_may_not_use_the_fleet_api() {
        let agent = Caller {
            principal: Principal::System("nas1".into()),
            role: None,
            serial_hex: "02".into(),
        };
        assert!(matches!(
            permit(&agent, Access::Read),
            Err(FleetError::PermissionDenied(m)) if m.contains("agent certificates cannot")
        ));
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
    fn reads_are_for_everyone_changes_for_operators_fleet_management_for_admins() {
        for call in Call::ALL {
            let name = call.name();
            let expected = if name.starts_with("List")
                || name.starts_with("Get")
                || name == "WatchRun"
                || name == "EstimateReplication"
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
            // And the roles of today: a viewer may only read.
            assert_eq!(
                permit(&user(Some("viewer")), call.access()).is_ok(),
                expected == Access::Read,
                "{name}"
            );
            assert!(
                permit(&user(Some("admin")), call.access()).is_ok(),
                "{name}"
            );
        }
    }
}
