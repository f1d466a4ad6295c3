//! The Fleet service the CLI calls: join tokens and the systems of the fleet.

use crate::auth::require_user;
use crate::enrollment::{DEFAULT_TOKEN_TTL, create_token};
use crate::state::SharedState;
use crate::store::SystemRecord;
use nasfleet_proto::status::now_unix_ms;
use nasfleet_proto::v1::fleet_server::Fleet;
use nasfleet_proto::v1::{
    CreateTokenRequest, CreateTokenResponse, GetSystemRequest, Inventory, ListSystemsRequest,
    ListSystemsResponse, RemoveSystemRequest, RemoveSystemResponse, SystemDetail, SystemStatus,
    SystemSummary,
};
use prost::Message;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long `system show --refresh` waits for the agent's fresh inventory.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);

pub struct FleetService {
    pub state: SharedState,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("controller store failure: {e}"))
}

impl FleetService {
    fn summary(&self, record: &SystemRecord) -> SystemSummary {
        let live = self.state.sessions.live(&record.name);
        let (status, last_seen, address, version) = match &live {
            Some(l) => (
                SystemStatus::Online,
                l.last_heartbeat_unix_ms.max(record.last_seen_unix_ms),
                l.address.clone(),
                l.agent_version.clone(),
            ),
            None => (
                SystemStatus::Offline,
                record.last_seen_unix_ms,
                record.address.clone(),
                record.agent_version.clone(),
            ),
        };
        SystemSummary {
            name: record.name.clone(),
            status: status.into(),
            last_seen_unix_ms: last_seen,
            address,
            agent_version: version,
            pools: record.pools.clone(),
            enrolled_unix_ms: record.enrolled_unix_ms,
        }
    }

    fn record(&self, name: &str) -> Result<SystemRecord, Status> {
        self.state
            .store
            .system(name)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("system '{name}' is not enrolled")))
    }
}

#[tonic::async_trait]
impl Fleet for FleetService {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let caller = require_user(&self.state.store, &request, true)?;
        let ttl = match request.get_ref().ttl_secs {
            0 => DEFAULT_TOKEN_TTL,
            secs => Duration::from_secs(secs),
        };
        let (token, expires) =
            create_token(&self.state, &caller.principal.common_name(), ttl).await?;
        tracing::info!(by = %caller.principal, ttl_secs = ttl.as_secs(), "join token created");
        Ok(Response::new(CreateTokenResponse {
            token,
            ca_fingerprint: self.state.ca.fingerprint().to_owned(),
            expires_unix_ms: expires,
            controller_url: self.state.url.clone(),
        }))
    }

    async fn list_systems(
        &self,
        request: Request<ListSystemsRequest>,
    ) -> Result<Response<ListSystemsResponse>, Status> {
        require_user(&self.state.store, &request, false)?;
        let systems = self.state.store.systems().map_err(internal)?;
        Ok(Response::new(ListSystemsResponse {
            systems: systems.iter().map(|r| self.summary(r)).collect(),
        }))
    }

    async fn get_system(
        &self,
        request: Request<GetSystemRequest>,
    ) -> Result<Response<SystemDetail>, Status> {
        require_user(&self.state.store, &request, false)?;
        let req = request.into_inner();
        self.record(&req.name)?;
        if req.refresh {
            let Some(waiter) = self.state.sessions.request_inventory(&req.name) else {
                return Err(Status::unavailable(format!(
                    "System '{}' is offline; cannot refresh its inventory",
                    req.name
                )));
            };
            if tokio::time::timeout(REFRESH_TIMEOUT, waiter).await.is_err() {
                return Err(Status::deadline_exceeded(format!(
                    "system '{}' did not send its inventory within {}s",
                    req.name,
                    REFRESH_TIMEOUT.as_secs()
                )));
            }
        }
        let record = self.record(&req.name)?;
        let inventory = match self.state.store.inventory(&req.name).map_err(internal)? {
            Some(bytes) => Some(Inventory::decode(bytes.as_slice()).map_err(internal)?),
            None => None,
        };
        Ok(Response::new(SystemDetail {
            summary: Some(self.summary(&record)),
            inventory,
            certificate_serial: record.cert_serial,
        }))
    }

    async fn remove_system(
        &self,
        request: Request<RemoveSystemRequest>,
    ) -> Result<Response<RemoveSystemResponse>, Status> {
        let caller = require_user(&self.state.store, &request, true)?;
        let name = request.into_inner().name;
        let serial = self
            .state
            .store
            .remove_system(&name, now_unix_ms())
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("system '{name}' is not enrolled")))?;
        self.state.store.flush().await.map_err(internal)?;
        self.state.sessions.disconnect(
            &name,
            Status::permission_denied(
                "this system was removed from the fleet; its certificate is revoked",
            ),
        );
        tracing::info!(system = %name, by = %caller.principal, %serial, "system removed, certificate revoked");
        Ok(Response::new(RemoveSystemResponse {
            revoked_serial: serial,
        }))
    }
}
