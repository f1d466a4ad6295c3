//! `nasfleet system list|show|services|remove`: the systems of the fleet.

use super::{confirm, status_error};
use crate::context::Context;
use crate::output::{OutputFormat, Table, human_bytes, human_time, print_json};
use anyhow::bail;
use clap::Subcommand;
use nasfleet_common::status::{rfc3339_from_unix_ms, system_status_word};
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::{
    GetSystemRequest, Inventory, ListSystemsRequest, Pool, RemoveSystemRequest, Service,
    SystemDetail, SystemSummary, ZfsDialect,
};
use serde::Serialize;
use std::collections::HashMap;
use tonic::transport::Channel;

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Every system with its status.
    List,
    /// One system in detail: inventory, datasets, services.
    Show {
        name: String,
        /// Ask the agent for a fresh inventory first.
        #[arg(long)]
        refresh: bool,
    },
    /// The services of a system, with SSH state and host keys.
    Services { name: String },
    /// Remove a system no task uses: revoke its certificate, end its SSH connections.
    Remove {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

impl SystemCommand {
    /// Runs one `system` subcommand; none has flags to check beforehand.
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect().await?;
        let output = ctx.output;
        match self {
            SystemCommand::List => list(channel, output).await,
            SystemCommand::Show { name, refresh } => show(channel, &name, refresh, output).await,
            SystemCommand::Services { name } => services(channel, &name, output).await,
            SystemCommand::Remove { name, yes } => remove(channel, &name, yes).await,
        }
    }
}

#[derive(Serialize)]
struct SystemJson {
    name: String,
    status: &'static str,
    last_seen: Option<String>,
    address: String,
    version: String,
    pools: Vec<String>,
    enrolled: Option<String>,
    /// When the controller's inventory of it was collected.
    inventory_collected: Option<String>,
    /// Why that inventory is stale; null while it is current.
    inventory_problem: Option<String>,
}

impl From<&SystemSummary> for SystemJson {
    fn from(s: &SystemSummary) -> Self {
        SystemJson {
            name: s.name.clone(),
            status: system_status_word(s.status()),
            last_seen: rfc3339_from_unix_ms(s.last_seen_unix_ms),
            address: s.address.clone(),
            version: s.agent_version.clone(),
            pools: s.pools.clone(),
            enrolled: rfc3339_from_unix_ms(s.enrolled_unix_ms),
            inventory_collected: rfc3339_from_unix_ms(s.inventory_unix_ms),
            inventory_problem: Some(s.inventory_problem.clone()).filter(|p| !p.is_empty()),
        }
    }
}

#[derive(Serialize)]
struct ServiceJson {
    name: String,
    state: &'static str,
    running: bool,
    address: String,
    host_key_fingerprints: Vec<String>,
    detail: String,
}

impl From<&Service> for ServiceJson {
    fn from(s: &Service) -> Self {
        ServiceJson {
            name: s.name.clone(),
            state: service_state(s),
            running: s.running,
            address: s.address.clone(),
            host_key_fingerprints: s.host_key_fingerprints.clone(),
            detail: s.detail.clone(),
        }
    }
}

#[derive(Serialize)]
struct DatasetJson {
    name: String,
    used: u64,
    available: u64,
    mountpoint: String,
    readonly: bool,
    kind: String,
    snapshot_count: usize,
}

#[derive(Serialize)]
struct SystemDetailJson {
    #[serde(flatten)]
    summary: SystemJson,
    certificate_serial: String,
    certificate_expires: Option<String>,
    hostname: Option<String>,
    os: Option<String>,
    zfs_version: Option<String>,
    zfs_dialect: Option<&'static str>,
    inventory_collected: Option<String>,
    pools: Vec<PoolJson>,
    datasets: Vec<DatasetJson>,
    services: Vec<ServiceJson>,
    inventory_errors: Vec<String>,
}

/// One pool in `system show -o json`, as `zpool list -H -p` reports it.
#[derive(Serialize)]
struct PoolJson {
    name: String,
    size: u64,
    free: u64,
    /// Used share of `size`, as `zpool list`'s CAP; `null` without a size.
    capacity_percent: Option<u64>,
    health: String,
}

impl From<&Pool> for PoolJson {
    fn from(p: &Pool) -> Self {
        PoolJson {
            name: p.name.clone(),
            size: p.size,
            free: p.free,
            capacity_percent: capacity_percent(p.size, p.free),
            health: p.health.clone(),
        }
    }
}

fn service_state(s: &Service) -> &'static str {
    if s.running { "RUNNING" } else { "STOPPED" }
}

fn dialect_word(d: ZfsDialect) -> &'static str {
    match d {
        ZfsDialect::Legacy => "legacy (zfs-fuse)",
        ZfsDialect::Openzfs => "OpenZFS",
        ZfsDialect::Unspecified => "unknown",
    }
}

/// Snapshots per dataset: as the controller counted them, or (from a
/// controller before it did) counted here.
fn snapshot_counts(inventory: &Inventory) -> HashMap<&str, usize> {
    let mut counts: HashMap<&str, usize> = inventory
        .datasets
        .iter()
        .filter(|d| d.snapshot_count > 0)
        .map(|d| (d.name.as_str(), d.snapshot_count as usize))
        .collect();
    if !counts.is_empty() {
        return counts;
    }
    for snapshot in &inventory.snapshots {
        if let Some((dataset, _)) = snapshot.name.split_once('@') {
            *counts.entry(dataset).or_insert(0) += 1;
        }
    }
    counts
}

pub async fn list(channel: Channel, output: OutputFormat) -> anyhow::Result<()> {
    let systems = FleetClient::new(channel)
        .list_systems(ListSystemsRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .systems;
    match output {
        OutputFormat::Json => {
            let rows: Vec<SystemJson> = systems.iter().map(SystemJson::from).collect();
            print_json(&rows)
        }
        OutputFormat::Table => {
            if systems.is_empty() {
                outln!("No systems enrolled. Add one with `nasfleet token create`.")?;
                return Ok(());
            }
            let mut table =
                Table::new(&["NAME", "STATUS", "ADDRESS", "VERSION", "LAST SEEN", "POOLS"]);
            for s in &systems {
                table.row(vec![
                    s.name.clone(),
                    status_with_inventory(s),
                    s.address.clone(),
                    s.agent_version.clone(),
                    human_time(s.last_seen_unix_ms),
                    s.pools.join(","),
                ]);
            }
            outln!("{}", table.render())?;
            Ok(())
        }
    }
}

/// The datasets of an inventory with how many snapshots each has.
fn dataset_rows(inventory: &Inventory) -> Vec<DatasetJson> {
    let counts = snapshot_counts(inventory);
    inventory
        .datasets
        .iter()
        .map(|d| DatasetJson {
            name: d.name.clone(),
            used: d.used,
            available: d.available,
            mountpoint: d.mountpoint.clone(),
            readonly: d.readonly,
            kind: d.kind.clone(),
            snapshot_count: counts.get(d.name.as_str()).copied().unwrap_or(0),
        })
        .collect()
}

/// `system show -o json`: the summary with the inventory's details; the
/// inventory's fields are null until the agent has reported.
fn detail_json(summary: &SystemSummary, detail: &SystemDetail) -> SystemDetailJson {
    let inventory = detail.inventory.as_ref();
    SystemDetailJson {
        summary: SystemJson::from(summary),
        certificate_serial: detail.certificate_serial.clone(),
        certificate_expires: (detail.certificate_expires_unix_ms > 0)
            .then(|| rfc3339_from_unix_ms(detail.certificate_expires_unix_ms))
            .flatten(),
        hostname: inventory.map(|i| i.hostname.clone()),
        os: inventory.map(|i| i.os.clone()),
        zfs_version: inventory.map(|i| i.zfs_version.clone()),
        zfs_dialect: inventory.map(|i| dialect_word(i.zfs_dialect())),
        inventory_collected: inventory.and_then(|i| rfc3339_from_unix_ms(i.collected_unix_ms)),
        pools: inventory
            .map(|i| i.pools.iter().map(PoolJson::from).collect())
            .unwrap_or_default(),
        datasets: inventory.map(dataset_rows).unwrap_or_default(),
        services: inventory
            .map(|i| i.services.iter().map(ServiceJson::from).collect())
            .unwrap_or_default(),
        inventory_errors: inventory.map(|i| i.errors.clone()).unwrap_or_default(),
    }
}

/// The head of `system show`: what the controller knows of the system itself.
/// The STATUS column: the status, and a word when the inventory is stale.
fn status_with_inventory(s: &SystemSummary) -> String {
    let status = system_status_word(s.status());
    if s.inventory_problem.is_empty() {
        status.to_owned()
    } else {
        format!("{status} (inventory stale)")
    }
}

fn summary_lines(summary: &SystemSummary, detail: &SystemDetail) -> Vec<String> {
    let certificate = match detail.certificate_expires_unix_ms {
        0 => detail.certificate_serial.clone(),
        expires => format!(
            "{} (expires {})",
            detail.certificate_serial,
            human_time(expires)
        ),
    };
    let mut lines = vec![
        format!("Name:         {}", summary.name),
        format!("Status:       {}", system_status_word(summary.status())),
        format!("Address:      {}", summary.address),
        format!("Version:      {}", summary.agent_version),
        format!("Last seen:    {}", human_time(summary.last_seen_unix_ms)),
        format!("Enrolled:     {}", human_time(summary.enrolled_unix_ms)),
        format!("Certificate:  {certificate}"),
    ];
    if summary.inventory_unix_ms > 0 {
        lines.push(format!(
            "Inventory:    {}{}",
            human_time(summary.inventory_unix_ms),
            if summary.inventory_problem.is_empty() {
                String::new()
            } else {
                format!(", STALE: {}", summary.inventory_problem)
            }
        ));
    } else if !summary.inventory_problem.is_empty() {
        lines.push(format!("Inventory:    none: {}", summary.inventory_problem));
    }
    lines
}

fn pools_table(inventory: &Inventory) -> String {
    let mut pools = Table::new(&["NAME", "SIZE", "FREE", "CAP", "HEALTH"]);
    for p in &inventory.pools {
        pools.row(vec![
            p.name.clone(),
            human_bytes(p.size),
            human_bytes(p.free),
            capacity_text(p.size, p.free),
            p.health.clone(),
        ]);
    }
    pools.render()
}

/// How full a pool is, as `zpool list`'s CAP column says it: the used
/// share of its size in whole percent; `-` when the size is unknown.
fn capacity_text(size: u64, free: u64) -> String {
    match capacity_percent(size, free) {
        Some(percent) => format!("{percent}%"),
        None => "-".to_owned(),
    }
}

fn capacity_percent(size: u64, free: u64) -> Option<u64> {
    (size > 0).then(|| size.saturating_sub(free).saturating_mul(100) / size)
}

fn datasets_table(datasets: &[DatasetJson]) -> String {
    let mut table = Table::new(&[
        "NAME",
        "USED",
        "AVAIL",
        "SNAPSHOTS",
        "READONLY",
        "MOUNTPOINT",
    ]);
    for d in datasets {
        table.row(vec![
            d.name.clone(),
            human_bytes(d.used),
            human_bytes(d.available),
            d.snapshot_count.to_string(),
            if d.readonly { "on" } else { "off" }.into(),
            d.mountpoint.clone(),
        ]);
    }
    table.render()
}

/// The rest of `system show`: what the agent reported of its host.
fn inventory_lines(inv: &Inventory) -> Vec<String> {
    let mut lines = vec![
        format!("Host name:    {}", inv.hostname),
        format!("OS:           {}", inv.os),
        format!(
            "ZFS:          {} ({})",
            inv.zfs_version,
            dialect_word(inv.zfs_dialect())
        ),
        format!("Inventory:    {}", human_time(inv.collected_unix_ms)),
        "\nPools:".into(),
        pools_table(inv),
        "\nDatasets:".into(),
        datasets_table(&dataset_rows(inv)),
        "\nServices:".into(),
        services_table(&inv.services),
    ];
    if !inv.errors.is_empty() {
        lines.push("\nProblems reported by the agent:".into());
        lines.extend(inv.errors.iter().map(|e| format!("  - {e}")));
    }
    lines
}

/// `system show` for people.
fn detail_text(summary: &SystemSummary, detail: &SystemDetail) -> String {
    let mut lines = summary_lines(summary, detail);
    match &detail.inventory {
        Some(inv) => lines.extend(inventory_lines(inv)),
        None => lines.push("\nNo inventory yet: the agent has not reported.".into()),
    }
    lines.join("\n")
}

pub async fn show(
    channel: Channel,
    name: &str,
    refresh: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let detail = FleetClient::new(channel)
        .get_system(GetSystemRequest {
            name: name.to_owned(),
            refresh,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let Some(summary) = detail.summary.as_ref() else {
        bail!("the controller sent no summary for system '{name}'");
    };
    match output {
        OutputFormat::Json => print_json(&detail_json(summary, &detail)),
        OutputFormat::Table => {
            outln!("{}", detail_text(summary, &detail))?;
            Ok(())
        }
    }
}

fn services_table(services: &[Service]) -> String {
    let mut table = Table::new(&["SERVICE", "STATE", "ADDRESS", "HOST KEYS", "DETAIL"]);
    for s in services {
        table.row(vec![
            s.name.to_uppercase(),
            service_state(s).into(),
            s.address.clone(),
            s.host_key_fingerprints.join(", "),
            s.detail.clone(),
        ]);
    }
    table.render()
}

pub async fn services(channel: Channel, name: &str, output: OutputFormat) -> anyhow::Result<()> {
    let detail = FleetClient::new(channel)
        .get_system(GetSystemRequest {
            name: name.to_owned(),
            refresh: false,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let services = detail.inventory.map(|inv| inv.services).unwrap_or_default();
    match output {
        OutputFormat::Json => {
            let rows: Vec<ServiceJson> = services.iter().map(ServiceJson::from).collect();
            print_json(&rows)
        }
        OutputFormat::Table => {
            if services.is_empty() {
                outln!("System '{name}' has not reported its services yet.")?;
            } else {
                outln!("{}", services_table(&services))?;
            }
            Ok(())
        }
    }
}

pub async fn remove(channel: Channel, name: &str, yes: bool) -> anyhow::Result<()> {
    if !yes
        && !confirm(format!(
            "Remove system '{name}' from the fleet, revoke its certificate and end its SSH connections (its replication key is revoked on their targets)?"
        ))
        .await?
    {
        bail!("not removed: confirm on a terminal or pass --yes");
    }
    let answer = FleetClient::new(channel)
        .remove_system(RemoveSystemRequest {
            name: name.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    outln!(
        "Removed system '{name}'; certificate {} revoked, its SSH connections ended.",
        answer.revoked_serial
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasfleet_proto::v1::{Dataset, Pool, Snapshot, SystemStatus};

    fn summary() -> SystemSummary {
        SystemSummary {
            name: "nas1".into(),
            status: SystemStatus::Online as i32,
            last_seen_unix_ms: 0,
            address: "127.0.0.2:50000".into(),
            agent_version: "0.1.0".into(),
            pools: vec!["tank".into()],
            enrolled_unix_ms: 0,
            inventory_problem: String::new(),
            inventory_unix_ms: 0,
        }
    }

    fn inventory() -> Inventory {
        Inventory {
            hostname: "nas1.lan".into(),
            os: "Debian 12".into(),
            zfs_version: "0.7.3".into(),
            zfs_dialect: ZfsDialect::Legacy as i32,
            pools: vec![Pool {
                name: "tank".into(),
                size: 1 << 30,
                free: 1 << 29,
                health: "ONLINE".into(),
            }],
            datasets: vec![Dataset {
                name: "tank/data".into(),
                used: 2048,
                available: 1 << 29,
                mountpoint: "/tank/data".into(),
                readonly: true,
                kind: "filesystem".into(),
                snapshot_count: 0,
            }],
            snapshots: ["tank/data@a", "tank/data@b", "tank@c"]
                .iter()
                .map(|n| Snapshot {
                    name: (*n).into(),
                    ..Snapshot::default()
                })
                .collect(),
            services: vec![Service {
                name: "ssh".into(),
                running: true,
                address: "127.0.0.2:22".into(),
                ..Service::default()
            }],
            errors: vec!["pool tank: cannot read capacity".into()],
            ..Inventory::default()
        }
    }

    fn detail(inventory: Option<Inventory>) -> SystemDetail {
        SystemDetail {
            summary: Some(summary()),
            inventory,
            certificate_serial: "0a1b".into(),
            certificate_expires_unix_ms: 0,
        }
    }

    #[test]
    fn capacity_is_the_used_share_in_whole_percent() {
        assert_eq!(capacity_text(1000, 1000), "0%");
        assert_eq!(capacity_text(1000, 199), "80%");
        assert_eq!(capacity_text(1000, 0), "100%");
        assert_eq!(capacity_text(0, 0), "-");
        // A free figure above the size (rounding in zfs-fuse) is not negative.
        assert_eq!(capacity_text(1000, 1200), "0%");
    }

    #[test]
    fn show_text_has_summary_inventory_and_problems() {
        let text = detail_text(&summary(), &detail(Some(inventory())));
        let expected = "\
Name:         nas1
Status:       ONLINE
Address:      127.0.0.2:50000
Version:      0.1.0
Last seen:    never
Enrolled:     never
Certificate:  0a1b
Host name:    nas1.lan
OS:           Debian 12
ZFS:          0.7.3 (legacy (zfs-fuse))
Inventory:    never

Pools:
NAME  SIZE  FREE    CAP  HEALTH
tank  1.0G  512.0M  50%  ONLINE

Datasets:
NAME       USED  AVAIL   SNAPSHOTS  READONLY  MOUNTPOINT
tank/data  2.0K  512.0M  2          on        /tank/data

Services:
SERVICE  STATE    ADDRESS       HOST KEYS  DETAIL
SSH      RUNNING  127.0.0.2:22

Problems reported by the agent:
  - pool tank: cannot read capacity";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_stale_inventory_is_said_in_the_list_and_in_show() {
        let stale = SystemSummary {
            inventory_unix_ms: 1_700_000_000_000,
            inventory_problem: "the connection ended after 3 of the 100 pages".into(),
            ..summary()
        };
        assert_eq!(status_with_inventory(&stale), "ONLINE (inventory stale)");
        assert_eq!(status_with_inventory(&summary()), "ONLINE");
        let lines = summary_lines(&stale, &detail(None));
        let last = lines.last().map(String::as_str).unwrap_or_default();
        assert!(last.starts_with("Inventory:    2023-11-14"), "{last}");
        assert!(
            last.ends_with(", STALE: the connection ended after 3 of the 100 pages"),
            "{last}"
        );
        let json = serde_json::to_value(SystemJson::from(&stale)).unwrap_or_default();
        assert_eq!(
            json["inventory_problem"],
            "the connection ended after 3 of the 100 pages"
        );
        assert_eq!(
            serde_json::to_value(SystemJson::from(&summary())).unwrap_or_default()["inventory_problem"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn show_text_without_inventory_says_so() {
        let text = detail_text(&summary(), &detail(None));
        assert!(
            text.ends_with("Certificate:  0a1b\n\nNo inventory yet: the agent has not reported."),
            "{text}"
        );
    }

    #[test]
    fn show_json_counts_snapshots_per_dataset() {
        let value = serde_json::to_value(detail_json(&summary(), &detail(Some(inventory()))))
            .unwrap_or_default();
        assert_eq!(value["name"], "nas1");
        assert_eq!(value["status"], "ONLINE");
        assert_eq!(value["certificate_serial"], "0a1b");
        assert_eq!(value["zfs_dialect"], "legacy (zfs-fuse)");
        assert_eq!(value["datasets"][0]["snapshot_count"], 2);
        assert_eq!(value["services"][0]["state"], "RUNNING");
        assert_eq!(
            value["inventory_errors"][0],
            "pool tank: cannot read capacity"
        );
        let value =
            serde_json::to_value(detail_json(&summary(), &detail(None))).unwrap_or_default();
        assert_eq!(value["hostname"], serde_json::Value::Null);
        assert_eq!(value["datasets"], serde_json::json!([]));
    }
}
