//! `nasfleet-controller check`: whether the controller of a data dir is healthy, for systemd and monitoring: its gRPC listener answers SERVING (grpc.health.v1, trusting the data dir's CA) and its console and metrics listeners accept connections.

use crate::config::{ControllerConfig, DataDir};
use nasfleet_common::dial::ServerTrust;
use nasfleet_common::health::{CHECK_TIMEOUT, controller_serving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One line per part checked; `Err` holds the lines too, with what failed.
pub async fn check(dir: &DataDir, config: &ControllerConfig) -> Result<Vec<String>, Vec<String>> {
    let mut lines = Vec::new();
    let mut healthy = true;
    let ca = match tokio::fs::read(dir.ca_cert()).await {
        Ok(ca) => ca,
        Err(e) => {
            return Err(vec![format!(
                "cannot read {}: {e}",
                dir.ca_cert().display()
            )]);
        }
    };
    match controller_serving(&config.url, &ServerTrust::CaPem(ca), None).await {
        Ok(()) => lines.push(format!("gRPC {}: SERVING", config.url)),
        Err(reason) => {
            healthy = false;
            lines.push(format!("gRPC: {reason}"));
        }
    }
    let web = config.web().ok().flatten().map(|w| ("console", w.listen));
    let metrics = config.metrics_listen.map(|m| ("metrics", m));
    for (what, addr) in web.into_iter().chain(metrics) {
        match accepts(addr).await {
            Ok(()) => lines.push(format!("{what} {addr}: accepting connections")),
            Err(reason) => {
                healthy = false;
                lines.push(format!("{what} {addr}: {reason}"));
            }
        }
    }
    if healthy { Ok(lines) } else { Err(lines) }
}

/// Whether something accepts TCP connections on `addr` (an unspecified
/// address is tried on loopback).
async fn accepts(addr: SocketAddr) -> Result<(), String> {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    match tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("not accepting connections ({e})")),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}
