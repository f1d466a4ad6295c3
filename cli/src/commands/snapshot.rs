//! `nasfleet snapshot create|list`: one-time snapshots and the snapshots a system has.

use super::status_error;
use crate::context::Context;
use crate::output::{OutputFormat, Table, human_bytes, human_time, print_json};
use anyhow::anyhow;
use clap::Subcommand;
use nasfleet_common::naming::{DEFAULT_MANUAL_SCHEMA, NamingSchema};
use nasfleet_common::status::rfc3339_from_unix_ms;
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::{CreateSnapshotRequest, ListSnapshotsRequest, Snapshot};
use serde::Serialize;
use tonic::transport::Channel;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot now.
    Create {
        system: String,
        dataset: String,
        /// Snapshot the descendants too, atomically.
        #[arg(long)]
        recursive: bool,
        /// strftime-style name pattern [default: manual-%Y-%m-%d_%H-%M].
        #[arg(long, value_name = "SCHEMA")]
        naming_schema: Option<String>,
    },
    /// The snapshots of a system, or of one dataset.
    List {
        system: String,
        dataset: Option<String>,
        /// With DATASET: its descendants' snapshots too.
        #[arg(long)]
        recursive: bool,
        /// Ask the agent for a fresh inventory first.
        #[arg(long)]
        refresh: bool,
    },
}

impl SnapshotCommand {
    /// Refuses a naming schema that can name no snapshot, before any connection.
    pub fn precheck(&self) -> anyhow::Result<()> {
        match self {
            SnapshotCommand::Create {
                naming_schema: Some(schema),
                ..
            } => check_schema(schema).map(drop),
            _ => Ok(()),
        }
    }

    /// Runs one `snapshot` subcommand.
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect_after(self.precheck()).await?;
        match self {
            SnapshotCommand::Create {
                system,
                dataset,
                recursive,
                naming_schema,
            } => {
                let schema = naming_schema.as_deref();
                create(channel, &system, &dataset, recursive, schema, ctx.output).await
            }
            SnapshotCommand::List {
                system,
                dataset,
                recursive,
                refresh,
            } => {
                let dataset = dataset.as_deref();
                list(channel, &system, dataset, recursive, refresh, ctx.output).await
            }
        }
    }
}

/// A snapshot as `snapshot list -o json` prints it.
#[derive(Debug, Serialize)]
pub struct SnapshotJson {
    /// `dataset@snapshot`.
    pub name: String,
    pub dataset: String,
    /// The part after '@'.
    pub snapshot: String,
    /// A string: guids use all 64 bits, more than a JSON number keeps exactly
    /// in JavaScript (and jq), and a rounded guid names another snapshot.
    pub guid: String,
    pub creation: Option<String>,
    pub used: u64,
    pub referenced: u64,
    /// User holds (`zfs holds`); a held snapshot cannot be destroyed.
    pub holds: u32,
}

impl From<&Snapshot> for SnapshotJson {
    fn from(s: &Snapshot) -> Self {
        let (dataset, snapshot) = s.name.split_once('@').unwrap_or((s.name.as_str(), ""));
        SnapshotJson {
            name: s.name.clone(),
            dataset: dataset.to_owned(),
            snapshot: snapshot.to_owned(),
            guid: s.guid.to_string(),
            creation: rfc3339_from_unix_ms(s.creation_unix.saturating_mul(1000)),
            used: s.used,
            referenced: s.referenced,
            holds: s.holds,
        }
    }
}

#[derive(Debug, Serialize)]
struct CreatedJson {
    created: Vec<String>,
}

/// Checks a naming schema before it travels, with the field name in front
/// of the rule as the controller says it.
pub fn check_schema(schema: &str) -> anyhow::Result<String> {
    NamingSchema::new(schema)
        .map(|s| s.as_str().to_owned())
        .map_err(|e| anyhow!("naming_schema: {e}"))
}

pub async fn create(
    channel: Channel,
    system: &str,
    dataset: &str,
    recursive: bool,
    naming_schema: Option<&str>,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let naming_schema = check_schema(naming_schema.unwrap_or(DEFAULT_MANUAL_SCHEMA))?;
    let created = FleetClient::new(channel)
        .create_snapshot(CreateSnapshotRequest {
            system: system.to_owned(),
            dataset: dataset.to_owned(),
            recursive,
            naming_schema,
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .created;
    match output {
        OutputFormat::Json => print_json(&CreatedJson { created }),
        OutputFormat::Table => {
            match created.len() {
                0 => outln!("The controller reported no new snapshots on {system}.")?,
                1 => outln!("Created snapshot {} on {system}.", created[0])?,
                n => {
                    outln!("Created {n} snapshots on {system}:")?;
                    for name in &created {
                        outln!("  {name}")?;
                    }
                }
            }
            Ok(())
        }
    }
}

pub async fn list(
    channel: Channel,
    system: &str,
    dataset: Option<&str>,
    recursive: bool,
    refresh: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let snapshots = FleetClient::new(channel)
        .list_snapshots(ListSnapshotsRequest {
            system: system.to_owned(),
            dataset: dataset.unwrap_or_default().to_owned(),
            recursive,
            refresh,
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .snapshots;
    match output {
        OutputFormat::Json => {
            let rows: Vec<SnapshotJson> = snapshots.iter().map(SnapshotJson::from).collect();
            print_json(&rows)
        }
        OutputFormat::Table => {
            if snapshots.is_empty() {
                match dataset {
                    Some(d) => outln!("No snapshots of {d} on {system}.")?,
                    None => outln!("No snapshots on {system}.")?,
                }
                return Ok(());
            }
            outln!("{}", snapshots_table(&snapshots))?;
            Ok(())
        }
    }
}

fn snapshots_table(snapshots: &[Snapshot]) -> String {
    let mut table = Table::new(&["NAME", "CREATED", "USED", "REFERENCED", "HOLDS"]);
    for s in snapshots {
        table.row(vec![
            s.name.clone(),
            human_time(s.creation_unix.saturating_mul(1000)),
            human_bytes(s.used),
            human_bytes(s.referenced),
            s.holds.to_string(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshot_json_keeps_guid_exact() {
        let snap = Snapshot {
            name: "tank/data@auto-2023-11-14_22-13".into(),
            guid: 18_446_744_073_709_551_557,
            creation_unix: 1_700_000_000,
            used: 1024,
            referenced: 4096,
            holds: 1,
        };
        let value = serde_json::to_value(SnapshotJson::from(&snap)).unwrap();
        assert_eq!(
            value,
            json!({
                "name": "tank/data@auto-2023-11-14_22-13",
                "dataset": "tank/data",
                "snapshot": "auto-2023-11-14_22-13",
                "guid": "18446744073709551557",
                "creation": "2023-11-14T22:13:20Z",
                "used": 1024,
                "referenced": 4096,
                "holds": 1,
            })
        );
    }

    #[test]
    fn schemas_are_checked_locally() {
        assert_eq!(
            check_schema(DEFAULT_MANUAL_SCHEMA).unwrap(),
            "manual-%Y-%m-%d_%H-%M"
        );
        let err = check_schema("manual-%Y").unwrap_err().to_string();
        assert!(err.starts_with("naming_schema: "), "{err}");
    }
}
