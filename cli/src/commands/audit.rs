//! `nasfleet audit list`: the fleet's audit log (every change and every refused call, who, from where, when, on what, and the outcome), newest first, for admins.

use super::status_error;
use crate::context::Context;
use crate::output::{OutputFormat, Table, cell, human_time, print_json};
use anyhow::anyhow;
use clap::Subcommand;
use nasfleet_common::duration::parse_duration;
use nasfleet_common::status::{now_unix_ms, rfc3339_from_unix_ms};
use nasfleet_proto::v1::ListAuditRequest;
use nasfleet_proto::v1::fleet_client::FleetClient;
use serde::Serialize;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Audit entries, newest first.
    List {
        /// Only this user's (or system's) calls.
        #[arg(long)]
        user: Option<String>,
        /// Only this action (an RPC name such as CreateTask, RemoveUser, Login).
        #[arg(long)]
        action: Option<String>,
        /// Only entries this recent (24h, 7d) or since this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// `--since` as unix ms: a duration back from now, or an RFC 3339 time.
fn since_unix_ms(since: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(back) = parse_duration("--since", since) {
        return Ok(now_ms - i64::try_from(back.as_millis()).unwrap_or(i64::MAX / 2));
    }
    chrono::DateTime::parse_from_rfc3339(since)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            anyhow!(
                "--since: a duration back from now (24h, 7d) or a time such as 2026-11-30T12:00:00Z, not '{}'",
                nasfleet_common::echo::echo(since)
            )
        })
}

impl AuditCommand {
    pub fn precheck(&self) -> anyhow::Result<()> {
        match self {
            AuditCommand::List { since, .. } => {
                if let Some(since) = since {
                    since_unix_ms(since, now_unix_ms())?;
                }
                Ok(())
            }
        }
    }

    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect_after(self.precheck()).await?;
        let AuditCommand::List {
            user,
            action,
            since,
            limit,
        } = self;
        let since_unix_ms = match since {
            Some(since) => since_unix_ms(&since, now_unix_ms())?,
            None => 0,
        };
        let answer = FleetClient::new(channel)
            .list_audit(ListAuditRequest {
                actor: user.unwrap_or_default(),
                action: action.unwrap_or_default(),
                since_unix_ms,
                limit,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        match ctx.output {
            OutputFormat::Json => print_json(&AuditJson {
                entries: answer
                    .entries
                    .iter()
                    .map(|e| EntryJson {
                        seq: e.seq,
                        time: rfc3339_from_unix_ms(e.unix_ms),
                        actor: e.actor.clone(),
                        address: e.address.clone(),
                        action: e.action.clone(),
                        object: e.object.clone(),
                        outcome: if e.refused { "refused" } else { "ok" },
                        reason: e.refused.then(|| e.reason.clone()),
                    })
                    .collect(),
                dropped: answer.dropped,
            }),
            OutputFormat::Table => {
                let mut table = Table::new(&["TIME", "WHO", "FROM", "ACTION", "OBJECT", "OUTCOME"]);
                for e in &answer.entries {
                    let outcome = if e.refused {
                        format!("refused: {}", e.reason)
                    } else {
                        "ok".to_owned()
                    };
                    table.row(vec![
                        human_time(e.unix_ms),
                        e.actor.clone(),
                        e.address.clone(),
                        e.action.clone(),
                        cell(&e.object, 60),
                        cell(&outcome, 80),
                    ]);
                }
                outln!("{}", table.render())?;
                if answer.dropped > 0 {
                    outln!(
                        "({} older entries were dropped by the retention settings)",
                        answer.dropped
                    )?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Serialize)]
struct AuditJson {
    entries: Vec<EntryJson>,
    dropped: u64,
}

#[derive(Serialize)]
struct EntryJson {
    seq: u64,
    time: Option<String>,
    actor: String,
    address: String,
    action: String,
    object: String,
    outcome: &'static str,
    reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_back_or_a_time() {
        assert_eq!(
            since_unix_ms("1h", 10_000_000).unwrap(),
            10_000_000 - 3_600_000
        );
        assert_eq!(
            since_unix_ms("2026-11-30T00:00:00Z", 0).unwrap(),
            1_795_996_800_000
        );
        let err = since_unix_ms("yesterday", 0).unwrap_err().to_string();
        assert!(err.starts_with("--since: "), "{err}");
    }
}
