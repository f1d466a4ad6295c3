//! Asking a controller whether it serves (the standard `grpc.health.v1` service), as `nasfleet-controller check` and `nasfleet-agent check` do for systemd and monitoring.

use crate::dial::{ClientIdentity, DialOptions, ServerTrust, dial};
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long connecting and the check may take, each.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Ok when the controller at `url` answers SERVING; else why not, in words
/// a person can act on.
pub async fn controller_serving(
    url: &str,
    trust: &ServerTrust,
    identity: Option<&ClientIdentity>,
) -> Result<(), String> {
    let options = DialOptions {
        connect_timeout: CHECK_TIMEOUT,
        request_timeout: Some(CHECK_TIMEOUT),
        ..DialOptions::default()
    };
    let channel = dial(url, trust, identity, &options)
        .await
        .map_err(|e| format!("cannot reach the controller at {url}: {e}"))?;
    let mut client = HealthClient::new(channel);
    let request = client.check(HealthCheckRequest {
        service: String::new(),
    });
    let answer = tokio::time::timeout(CHECK_TIMEOUT, request)
        .await
        .map_err(|_| {
            format!(
                "the controller at {url} did not answer its health check within {} s",
                CHECK_TIMEOUT.as_secs()
            )
        })?
        .map_err(|status| {
            format!(
                "the controller at {url} refused its health check: {}",
                status.message()
            )
        })?;
    match answer.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!(
            "the controller at {url} answers {}",
            other.as_str_name()
        )),
    }
}
