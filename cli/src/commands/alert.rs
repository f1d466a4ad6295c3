//! `nasfleet alert list|dismiss`: the alerts the controller raised (systems offline, certificates expiring, pools unhealthy or full, SSH down, failed runs, datasets no longer protected) for the systems the user sees.

use super::status_error;
use crate::context::Context;
use crate::output::{OutputFormat, Table, cell, human_time, print_json};
use clap::Subcommand;
use nasfleet_common::status::rfc3339_from_unix_ms;
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::{Alert, AlertRef, ListAlertsRequest};
use serde::Serialize;

#[derive(Subcommand)]
pub enum AlertCommand {
    /// Active alerts, newest first (with --all, cleared ones too).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Quiet an active alert until its condition clears (and comes back).
    Dismiss { id: u64 },
}

#[derive(Serialize)]
struct AlertJson {
    id: u64,
    kind: String,
    level: String,
    systems: Vec<String>,
    object: String,
    text: String,
    first_seen: Option<String>,
    last_seen: Option<String>,
    cleared: Option<String>,
    dismissed_by: Option<String>,
}

impl From<&Alert> for AlertJson {
    fn from(a: &Alert) -> Self {
        AlertJson {
            id: a.id,
            kind: a.kind.clone(),
            level: a.level.clone(),
            systems: a.systems.clone(),
            object: a.object.clone(),
            text: a.text.clone(),
            first_seen: rfc3339_from_unix_ms(a.first_seen_unix_ms),
            last_seen: rfc3339_from_unix_ms(a.last_seen_unix_ms),
            cleared: rfc3339_from_unix_ms(a.cleared_unix_ms),
            dismissed_by: Some(a.dismissed_by.clone()).filter(|d| !d.is_empty()),
        }
    }
}

/// `ACTIVE`, `DISMISSED` or `CLEARED`.
fn state_word(alert: &Alert) -> &'static str {
    if alert.cleared_unix_ms > 0 {
        "CLEARED"
    } else if !alert.dismissed_by.is_empty() {
        "DISMISSED"
    } else {
        "ACTIVE"
    }
}

impl AlertCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect_after(Ok(())).await?;
        let mut client = FleetClient::new(channel);
        match self {
            AlertCommand::List { all } => {
                let alerts = client
                    .list_alerts(ListAlertsRequest { all })
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .alerts;
                match ctx.output {
                    OutputFormat::Json => {
                        print_json(&alerts.iter().map(AlertJson::from).collect::<Vec<_>>())
                    }
                    OutputFormat::Table if alerts.is_empty() => outln!(
                        "{}",
                        if all {
                            "No alerts."
                        } else {
                            "No active alerts."
                        }
                    ),
                    OutputFormat::Table => {
                        let mut table =
                            Table::new(&["ID", "LEVEL", "STATE", "SINCE", "OBJECT", "WHAT TO DO"]);
                        for a in &alerts {
                            table.row(vec![
                                a.id.to_string(),
                                a.level.to_uppercase(),
                                state_word(a).to_owned(),
                                human_time(a.first_seen_unix_ms),
                                cell(&a.object, 50),
                                cell(&a.text, 120),
                            ]);
                        }
                        outln!("{}", table.render())
                    }
                }
            }
            AlertCommand::Dismiss { id } => {
                let alert = client
                    .dismiss_alert(AlertRef { id })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match ctx.output {
                    OutputFormat::Json => print_json(&AlertJson::from(&alert)),
                    OutputFormat::Table => outln!(
                        "Dismissed alert {} ({}); it stays quiet until its condition clears.",
                        alert.id,
                        alert.object
                    ),
                }
            }
        }
    }
}
