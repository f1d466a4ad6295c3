//! `nasfleet notify add|list|remove|test`: notification channels (webhooks and SMTP mail) that the controller tells of every alert raised or cleared; secrets are read from files and never shown again.

use super::{read_secret_line, status_error};
use crate::context::Context;
use crate::output::{OutputFormat, Table, cell, print_json, time_or_dash};
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use nasfleet_common::echo::echo;
use nasfleet_common::status::rfc3339_from_unix_ms;
use nasfleet_proto::v1::add_channel_request::Target;
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::{
    AddChannelRequest, ChannelRef, HttpHeader, ListChannelsRequest, NotificationChannel,
    SmtpTarget, WebhookTarget,
};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum NotifyCommand {
    /// Add a channel: a webhook (a JSON POST with a Slack-compatible `text`) or mail over SMTP.
    Add(Box<AddArgs>),
    /// Channels, where they deliver (secrets hidden), and how delivery has gone.
    List,
    /// Remove a channel and the messages still waiting for it.
    Remove { name: String },
    /// Send a test message over a channel now; fails with the receiver's reason.
    Test { name: String },
}

#[derive(Args)]
pub struct AddArgs {
    name: String,
    /// POST each message as JSON to this http:// or https:// URL.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "smtp",
        required_unless_present = "smtp"
    )]
    webhook: Option<String>,
    /// An extra request header, e.g. `Authorization=Bearer ...` (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE", requires = "webhook")]
    headers: Vec<String>,
    /// Send mail through this relay.
    #[arg(long, value_name = "HOST:PORT")]
    smtp: Option<String>,
    /// The mail's sender, `name@example.com` or `"Name <name@example.com>"`.
    #[arg(long, requires = "smtp")]
    from: Option<String>,
    /// A recipient (repeatable).
    #[arg(long, requires = "smtp")]
    to: Vec<String>,
    /// Upgrade the connection with STARTTLS (required: never falls back to plain).
    #[arg(long, requires = "smtp", conflicts_with = "tls")]
    starttls: bool,
    /// Speak TLS from the first byte (SMTPS, usually port 465).
    #[arg(long, requires = "smtp")]
    tls: bool,
    /// Sign in to the relay as this user (with --password-file).
    #[arg(long, requires = "smtp", requires = "password_file")]
    user: Option<String>,
    /// The relay password, on the first line of this file.
    #[arg(long, value_name = "FILE", requires = "user")]
    password_file: Option<PathBuf>,
    /// Also trust the CA certificates in this PEM file (a private relay or receiver).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Send alerts of this level and above.
    #[arg(long, default_value = "warning", value_parser = ["info", "warning", "critical"])]
    min_level: String,
}

/// `NAME=VALUE`; the value is a secret, so the error repeats only the name.
fn parse_header(text: &str) -> anyhow::Result<HttpHeader> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok(HttpHeader {
            name: name.to_owned(),
            value: value.to_owned(),
        }),
        _ => bail!(
            "header: '{}…' must be NAME=VALUE",
            echo(&text.chars().take(20).collect::<String>())
        ),
    }
}

async fn read_ca(file: Option<&Path>) -> anyhow::Result<String> {
    match file {
        Some(path) => tokio::fs::read_to_string(path)
            .await
            .with_context(|| format!("reading --ca-file {}", path.display())),
        None => Ok(String::new()),
    }
}

impl AddArgs {
    /// The request, with the flags checked that need no controller.
    async fn request(self) -> anyhow::Result<AddChannelRequest> {
        let ca_pem = read_ca(self.ca_file.as_deref()).await?;
        let target = match (self.webhook, self.smtp) {
            (Some(url), None) => Target::Webhook(WebhookTarget {
                url,
                headers: self
                    .headers
                    .iter()
                    .map(|h| parse_header(h))
                    .collect::<anyhow::Result<_>>()?,
                ca_pem,
            }),
            (None, Some(address)) => {
                let Some(from) = self.from else {
                    bail!("from: --smtp needs --from ADDRESS");
                };
                if self.to.is_empty() {
                    bail!("to: --smtp needs at least one --to ADDRESS");
                }
                let password = match &self.password_file {
                    Some(file) => {
                        let password = read_secret_line(Some(file), "--password-file").await?;
                        if password.is_empty() {
                            bail!("password: the first line of --password-file is empty");
                        }
                        password
                    }
                    None => String::new(),
                };
                let security = if self.tls {
                    "tls"
                } else if self.starttls {
                    "starttls"
                } else {
                    "none"
                };
                Target::Smtp(SmtpTarget {
                    address,
                    security: security.into(),
                    from,
                    to: self.to,
                    user: self.user.unwrap_or_default(),
                    password,
                    ca_pem,
                })
            }
            _ => bail!("channel: give exactly one of --webhook URL or --smtp HOST:PORT"),
        };
        Ok(AddChannelRequest {
            name: self.name,
            min_level: self.min_level,
            target: Some(target),
        })
    }
}

#[derive(Serialize)]
struct ChannelJson {
    name: String,
    kind: String,
    min_level: String,
    destination: String,
    header_names: Vec<String>,
    smtp_user: Option<String>,
    password_set: bool,
    custom_ca: bool,
    created_by: String,
    created: Option<String>,
    delivered: u64,
    pending: u32,
    dropped: u64,
    last_success: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<String>,
    failures_in_a_row: u32,
}

impl From<&NotificationChannel> for ChannelJson {
    fn from(c: &NotificationChannel) -> Self {
        ChannelJson {
            name: c.name.clone(),
            kind: c.kind.clone(),
            min_level: c.min_level.clone(),
            destination: c.destination.clone(),
            header_names: c.header_names.clone(),
            smtp_user: Some(c.smtp_user.clone()).filter(|u| !u.is_empty()),
            password_set: c.password_set,
            custom_ca: c.custom_ca,
            created_by: c.created_by.clone(),
            created: rfc3339_from_unix_ms(c.created_unix_ms),
            delivered: c.delivered,
            pending: c.pending,
            dropped: c.dropped,
            last_success: rfc3339_from_unix_ms(c.last_success_unix_ms),
            last_error: Some(c.last_error.clone()).filter(|e| !e.is_empty()),
            last_error_at: rfc3339_from_unix_ms(c.last_error_unix_ms),
            failures_in_a_row: c.failures_in_a_row,
        }
    }
}

/// The last error with when it happened, or `-`.
fn last_error(c: &NotificationChannel) -> String {
    if c.last_error.is_empty() {
        return "-".into();
    }
    let state = if c.failures_in_a_row > 0 {
        format!("{} failed in a row", c.failures_in_a_row)
    } else {
        "since delivered".into()
    };
    format!(
        "{} ({}, {state})",
        c.last_error,
        time_or_dash(c.last_error_unix_ms)
    )
}

fn print_table(channels: &[NotificationChannel]) -> anyhow::Result<()> {
    if channels.is_empty() {
        return outln!(
            "No notification channels. Add one with `nasfleet notify add NAME --webhook URL` or `--smtp HOST:PORT`."
        );
    }
    let mut table = Table::new(&[
        "NAME",
        "KIND",
        "LEVEL",
        "DESTINATION",
        "DELIVERED",
        "PENDING",
        "LAST SUCCESS",
        "LAST ERROR",
    ]);
    for c in channels {
        table.row(vec![
            c.name.clone(),
            c.kind.clone(),
            c.min_level.clone(),
            cell(&c.destination, 60),
            c.delivered.to_string(),
            c.pending.to_string(),
            time_or_dash(c.last_success_unix_ms),
            cell(&last_error(c), 120),
        ]);
    }
    outln!("{}", table.render())
}

/// A command with its flags checked, ready to send.
enum Checked {
    Add(AddChannelRequest),
    List,
    Remove(String),
    Test(String),
}

impl NotifyCommand {
    async fn check(self) -> anyhow::Result<Checked> {
        Ok(match self {
            NotifyCommand::Add(args) => Checked::Add(args.request().await?),
            NotifyCommand::List => Checked::List,
            NotifyCommand::Remove { name } => Checked::Remove(name),
            NotifyCommand::Test { name } => Checked::Test(name),
        })
    }

    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let checked = self.check().await;
        let (precheck, checked) = match checked {
            Ok(checked) => (Ok(()), Some(checked)),
            Err(e) => (Err(e), None),
        };
        let channel = ctx.connect_after(precheck).await?;
        let Some(checked) = checked else {
            bail!("internal: a refused command reached the controller");
        };
        let mut client = FleetClient::new(channel);
        let table = ctx.output == OutputFormat::Table;
        let shown = match checked {
            Checked::Add(request) => {
                let added = client
                    .add_channel(request)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                if table {
                    return outln!(
                        "Added notification channel '{}' ({} to {}; {} and above). Try it: nasfleet notify test {}",
                        added.name,
                        added.kind,
                        added.destination,
                        added.min_level,
                        added.name
                    );
                }
                added
            }
            Checked::List => {
                let channels = client
                    .list_channels(ListChannelsRequest {})
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .channels;
                if table {
                    return print_table(&channels);
                }
                return print_json(&channels.iter().map(ChannelJson::from).collect::<Vec<_>>());
            }
            Checked::Remove(name) => {
                let removed = client
                    .remove_channel(ChannelRef { name })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                if table {
                    return outln!(
                        "Removed notification channel '{}' and the messages waiting for it.",
                        removed.name
                    );
                }
                removed
            }
            Checked::Test(name) => {
                let tested = client
                    .test_channel(ChannelRef { name })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                if table {
                    return outln!(
                        "Test message delivered over '{}' ({}).",
                        tested.name,
                        tested.destination
                    );
                }
                tested
            }
        };
        print_json(&ChannelJson::from(&shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_equals_value_and_errors_keep_values_secret() {
        let header = parse_header("Authorization=Bearer a=b").expect("a header");
        assert_eq!(header.name, "Authorization");
        assert_eq!(header.value, "Bearer a=b");
        let refused = parse_header("no-equals-sign-and-a-long-secret-value")
            .expect_err("refused")
            .to_string();
        assert!(refused.starts_with("header: "));
        assert!(!refused.contains("secret-value"), "{refused}");
        assert!(parse_header("=value").is_err());
    }
}
