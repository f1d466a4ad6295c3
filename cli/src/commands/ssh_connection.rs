//! `nasfleet ssh-connection list|create|delete`: the SSH trust the controller sets up from one system to another, which replication between them needs.

use super::{confirm, status_error};
use crate::context::Context;
use crate::output::{OutputFormat, Table, human_time, print_json, time_or_dash};
use anyhow::{anyhow, bail};
use clap::Subcommand;
use nasfleet_common::names::validate_system_name;
use nasfleet_common::status::rfc3339_from_unix_ms;
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::{ListSshConnectionsRequest, SshConnection, SshConnectionRef};
use serde::Serialize;
use tonic::transport::Channel;

#[derive(Subcommand)]
pub enum SshConnectionCommand {
    /// Every SSH connection between systems.
    List,
    /// Let SOURCE log in to TARGET over SSH: the controller pins TARGET's
    /// host keys on SOURCE and authorizes SOURCE's replication key on TARGET.
    Create {
        /// The system that connects (replication source).
        source: String,
        /// The system connected to (replication target).
        target: String,
    },
    /// Remove an SSH connection; replication from SOURCE to TARGET stops working.
    Delete {
        source: String,
        target: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

impl SshConnectionCommand {
    /// Refuses system names that cannot be, before any connection.
    pub fn precheck(&self) -> anyhow::Result<()> {
        match self {
            SshConnectionCommand::Create { source, target }
            | SshConnectionCommand::Delete { source, target, .. } => check_pair(source, target),
            SshConnectionCommand::List => Ok(()),
        }
    }

    /// Runs one `ssh-connection` subcommand.
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect_after(self.precheck()).await?;
        let output = ctx.output;
        match self {
            SshConnectionCommand::List => list(channel, output).await,
            SshConnectionCommand::Create { source, target } => {
                create(channel, &source, &target, output).await
            }
            SshConnectionCommand::Delete {
                source,
                target,
                yes,
            } => delete(channel, &source, &target, yes, output).await,
        }
    }
}

/// An SSH connection as `-o json` prints it.
#[derive(Debug, Serialize)]
pub struct SshConnectionJson {
    pub source: String,
    pub target: String,
    pub address: String,
    pub user: String,
    pub host_key_fingerprints: Vec<String>,
    pub created: Option<String>,
}

impl From<&SshConnection> for SshConnectionJson {
    fn from(c: &SshConnection) -> Self {
        SshConnectionJson {
            source: c.source.clone(),
            target: c.target.clone(),
            address: c.address.clone(),
            user: c.user.clone(),
            host_key_fingerprints: c.host_key_fingerprints.clone(),
            created: rfc3339_from_unix_ms(c.created_unix_ms),
        }
    }
}

/// Checks both system names before anything travels.
pub fn check_pair(source: &str, target: &str) -> anyhow::Result<()> {
    for (field, name) in [("source", source), ("target", target)] {
        validate_system_name(name).map_err(|e| anyhow!("{field}: system {}", e.rule()))?;
    }
    Ok(())
}

fn connections_table(connections: &[SshConnection]) -> String {
    let mut table = Table::new(&[
        "SOURCE",
        "TARGET",
        "ADDRESS",
        "USER",
        "HOST KEYS",
        "CREATED",
    ]);
    for c in connections {
        table.row(vec![
            c.source.clone(),
            c.target.clone(),
            c.address.clone(),
            c.user.clone(),
            if c.host_key_fingerprints.is_empty() {
                "-".into()
            } else {
                c.host_key_fingerprints.join(", ")
            },
            time_or_dash(c.created_unix_ms),
        ]);
    }
    table.render()
}

fn connection_text(c: &SshConnection) -> String {
    let mut lines = vec![
        format!("Source:     {}", c.source),
        format!("Target:     {}", c.target),
        format!("Address:    {}", c.address),
        format!("User:       {}", c.user),
    ];
    if c.host_key_fingerprints.is_empty() {
        lines.push("Host keys:  -".into());
    }
    for (i, key) in c.host_key_fingerprints.iter().enumerate() {
        lines.push(if i == 0 {
            format!("Host keys:  {key}")
        } else {
            format!("            {key}")
        });
    }
    lines.push(format!("Created:    {}", human_time(c.created_unix_ms)));
    lines.join("\n")
}

pub async fn list(channel: Channel, output: OutputFormat) -> anyhow::Result<()> {
    let connections = FleetClient::new(channel)
        .list_ssh_connections(ListSshConnectionsRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .connections;
    match output {
        OutputFormat::Json => {
            let rows: Vec<SshConnectionJson> =
                connections.iter().map(SshConnectionJson::from).collect();
            print_json(&rows)
        }
        OutputFormat::Table => {
            if connections.is_empty() {
                outln!("No SSH connections configured")?;
            } else {
                outln!("{}", connections_table(&connections))?;
            }
            Ok(())
        }
    }
}

pub async fn create(
    channel: Channel,
    source: &str,
    target: &str,
    output: OutputFormat,
) -> anyhow::Result<()> {
    check_pair(source, target)?;
    let created = FleetClient::new(channel)
        .create_ssh_connection(SshConnectionRef {
            source: source.to_owned(),
            target: target.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match output {
        OutputFormat::Json => print_json(&SshConnectionJson::from(&created)),
        OutputFormat::Table => {
            outln!(
                "Created SSH connection {} → {}.\n",
                created.source,
                created.target
            )?;
            outln!("{}", connection_text(&created))?;
            Ok(())
        }
    }
}

pub async fn delete(
    channel: Channel,
    source: &str,
    target: &str,
    yes: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    check_pair(source, target)?;
    if !yes
        && !confirm(format!(
            "Delete the SSH connection {source} → {target}? Replication from {source} to {target} fails until it is created again."
        ))
        .await?
    {
        bail!("not deleted: confirm on a terminal or pass --yes");
    }
    let deleted = FleetClient::new(channel)
        .delete_ssh_connection(SshConnectionRef {
            source: source.to_owned(),
            target: target.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match output {
        OutputFormat::Json => print_json(&SshConnectionJson::from(&deleted)),
        OutputFormat::Table => {
            outln!(
                "Deleted SSH connection {} → {}.",
                deleted.source,
                deleted.target
            )?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn connection() -> SshConnection {
        SshConnection {
            source: "nas1".into(),
            target: "nas2".into(),
            address: "127.0.0.3:22".into(),
            user: "nasfleet".into(),
            host_key_fingerprints: vec![
                "ssh-ed25519 SHA256:abc".into(),
                "ecdsa-sha2-nistp256 SHA256:def".into(),
            ],
            created_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn json_shape() {
        let value = serde_json::to_value(SshConnectionJson::from(&connection())).unwrap();
        assert_eq!(
            value,
            json!({
                "source": "nas1",
                "target": "nas2",
                "address": "127.0.0.3:22",
                "user": "nasfleet",
                "host_key_fingerprints": ["ssh-ed25519 SHA256:abc", "ecdsa-sha2-nistp256 SHA256:def"],
                "created": "2023-11-14T22:13:20Z",
            })
        );
    }

    #[test]
    fn table_and_detail() {
        let table = connections_table(&[connection()]);
        let mut lines = table.lines();
        assert_eq!(
            lines.next(),
            Some(
                "SOURCE  TARGET  ADDRESS       USER      HOST KEYS                                               CREATED"
            )
        );
        let row = lines.next().unwrap_or_default();
        assert!(
            row.starts_with("nas1    nas2    127.0.0.3:22  nasfleet  ssh-ed25519 SHA256:abc, ecdsa-sha2-nistp256 SHA256:def  "),
            "{row}"
        );
        let text = connection_text(&connection());
        assert!(
            text.contains(
                "Host keys:  ssh-ed25519 SHA256:abc\n            ecdsa-sha2-nistp256 SHA256:def"
            ),
            "{text}"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_pair("nas1", "nas2").is_ok());
        let e = check_pair("nas1", "a b").unwrap_err().to_string();
        assert!(
            e.starts_with("target: system 'a b' may only contain"),
            "{e}"
        );
        let e = check_pair("", "nas2").unwrap_err().to_string();
        assert!(e.starts_with("source: system "), "{e}");
    }
}
