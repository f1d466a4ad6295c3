//! `nasfleet token create`: a single-use join token and the command that enrolls a NAS with it.

use super::status_error;
use crate::context::Context;
use crate::output::{OutputFormat, human_time, print_json};
use clap::Subcommand;
use nasfleet_common::duration::parse_duration;
pub use nasfleet_common::enroll_lines::join_command;
use nasfleet_common::status::rfc3339_from_unix_ms;
use nasfleet_proto::v1::CreateTokenRequest;
use nasfleet_proto::v1::fleet_client::FleetClient;
use serde::Serialize;
use tonic::transport::Channel;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint a single-use join token.
    Create {
        /// How long the token stays valid (e.g. 30m, 1h, 2d).
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

impl TokenCommand {
    /// Refuses a lifetime that is no duration, before any connection.
    pub fn precheck(&self) -> anyhow::Result<()> {
        match self {
            TokenCommand::Create { ttl } => Ok(parse_duration("--ttl", ttl).map(drop)?),
        }
    }

    /// Runs one `token` subcommand.
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect_after(self.precheck()).await?;
        match self {
            TokenCommand::Create { ttl } => create(channel, &ttl, ctx.output).await,
        }
    }
}

#[derive(Serialize)]
struct TokenJson {
    token: String,
    ca_fingerprint: String,
    join_command: String,
    expires: Option<String>,
    controller: String,
}

pub async fn create(channel: Channel, ttl: &str, output: OutputFormat) -> anyhow::Result<()> {
    let ttl = parse_duration("--ttl", ttl)?;
    let answer = FleetClient::new(channel)
        .create_token(CreateTokenRequest {
            ttl_secs: ttl.as_secs(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let command = join_command(
        &answer.controller_url,
        &answer.token,
        &answer.ca_fingerprint,
    );
    match output {
        OutputFormat::Json => print_json(&TokenJson {
            token: answer.token,
            ca_fingerprint: answer.ca_fingerprint,
            join_command: command,
            expires: rfc3339_from_unix_ms(answer.expires_unix_ms),
            controller: answer.controller_url,
        }),
        OutputFormat::Table => {
            outln!("Join token:      {}", answer.token)?;
            outln!(
                "Expires:         {} (single use)",
                human_time(answer.expires_unix_ms)
            )?;
            outln!("CA fingerprint:  {}", answer.ca_fingerprint)?;
            outln!("On the NAS, run (with its name in place of <NAME>):")?;
            outln!("  {command}")?;
            Ok(())
        }
    }
}
