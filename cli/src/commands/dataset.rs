//! `nasfleet dataset list`: a system's datasets with their snapshots and the snapshot tasks that cover them.

use super::status_error;
use crate::context::Context;
use crate::output::{OutputFormat, Table, cell, human_bytes, print_json};
use clap::Subcommand;
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::{DatasetSummary, ListDatasetsRequest};
use serde::Serialize;
use tonic::transport::Channel;

/// Widest SNAPSHOT TASKS cell; task names are long and `-o json` has them whole.
const TASKS_CELL: usize = 50;

#[derive(Subcommand)]
pub enum DatasetCommand {
    /// The datasets of a system with their snapshots and snapshot tasks.
    List {
        system: String,
        /// Ask the agent for a fresh inventory first.
        #[arg(long)]
        refresh: bool,
    },
}

impl DatasetCommand {
    /// Runs one `dataset` subcommand.
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect().await?;
        match self {
            DatasetCommand::List { system, refresh } => {
                list(channel, &system, refresh, ctx.output).await
            }
        }
    }
}

/// A dataset as `dataset list -o json` prints it.
#[derive(Debug, Serialize)]
pub struct DatasetJson {
    pub name: String,
    pub used: u64,
    pub available: u64,
    pub mountpoint: String,
    pub readonly: bool,
    pub kind: String,
    pub snapshot_count: u32,
    pub newest_snapshot: Option<String>,
    pub snapshot_tasks: Vec<String>,
}

impl From<&DatasetSummary> for DatasetJson {
    fn from(s: &DatasetSummary) -> Self {
        let d = s.dataset.clone().unwrap_or_default();
        DatasetJson {
            name: d.name,
            used: d.used,
            available: d.available,
            mountpoint: d.mountpoint,
            readonly: d.readonly,
            kind: d.kind,
            snapshot_count: s.snapshot_count,
            newest_snapshot: Some(s.newest_snapshot.clone()).filter(|n| !n.is_empty()),
            snapshot_tasks: s.snapshot_tasks.clone(),
        }
    }
}

pub async fn list(
    channel: Channel,
    system: &str,
    refresh: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let datasets = FleetClient::new(channel)
        .list_datasets(ListDatasetsRequest {
            system: system.to_owned(),
            refresh,
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .datasets;
    let rows: Vec<DatasetJson> = datasets.iter().map(DatasetJson::from).collect();
    match output {
        OutputFormat::Json => print_json(&rows),
        OutputFormat::Table => {
            if rows.is_empty() {
                outln!("System '{system}' has reported no datasets.")?;
            } else {
                outln!("{}", datasets_table(&rows))?;
            }
            Ok(())
        }
    }
}

fn datasets_table(rows: &[DatasetJson]) -> String {
    let mut table = Table::new(&[
        "NAME",
        "USED",
        "AVAIL",
        "SNAPSHOTS",
        "NEWEST SNAPSHOT",
        "SNAPSHOT TASKS",
        "MOUNTPOINT",
    ]);
    for d in rows {
        table.row(vec![
            d.name.clone(),
            human_bytes(d.used),
            human_bytes(d.available),
            d.snapshot_count.to_string(),
            d.newest_snapshot.clone().unwrap_or_else(|| "-".into()),
            if d.snapshot_tasks.is_empty() {
                "-".into()
            } else {
                cell(&d.snapshot_tasks.join(", "), TASKS_CELL)
            },
            d.mountpoint.clone(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasfleet_proto::v1::Dataset;
    use serde_json::json;

    #[test]
    fn dataset_json_shape() {
        let summary = DatasetSummary {
            dataset: Some(Dataset {
                name: "tank/data".into(),
                used: 2048,
                available: 1 << 30,
                mountpoint: "/tank/data".into(),
                readonly: false,
                kind: "filesystem".into(),
                snapshot_count: 3,
            }),
            snapshot_count: 3,
            newest_snapshot: "tank/data@auto-2023-11-14_22-13".into(),
            snapshot_tasks: vec!["nas1:tank/data (auto-%Y-%m-%d_%H-%M)".into()],
        };
        let value = serde_json::to_value(DatasetJson::from(&summary)).unwrap();
        assert_eq!(
            value,
            json!({
                "name": "tank/data",
                "used": 2048,
                "available": 1073741824,
                "mountpoint": "/tank/data",
                "readonly": false,
                "kind": "filesystem",
                "snapshot_count": 3,
                "newest_snapshot": "tank/data@auto-2023-11-14_22-13",
                "snapshot_tasks": ["nas1:tank/data (auto-%Y-%m-%d_%H-%M)"],
            })
        );
        let table = datasets_table(&[DatasetJson::from(&DatasetSummary::default())]);
        assert!(table.lines().nth(1).unwrap_or_default().contains(" -  "));
    }
}
