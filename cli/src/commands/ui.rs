//! `nasfleet ui`: a one-time, short-lived sign-in link to the web console for the CLI's user, printed and with `--open` opened in the desktop's browser.

use super::status_error;
use crate::context::Context;
use crate::output::{OutputFormat, human_time, print_json};
use anyhow::Context as _;
use clap::Args;
use nasfleet_proto::v1::ConsoleLinkRequest;
use nasfleet_proto::v1::fleet_client::FleetClient;
use serde::Serialize;
use std::time::Duration;

/// How long opening the browser may take before we stop waiting for it.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct UiArgs {
    /// Open the link in the desktop's browser (xdg-open) as well.
    #[arg(long)]
    pub open: bool,
}

#[derive(Serialize)]
struct LinkJson {
    url: String,
    expires: Option<String>,
}

impl UiArgs {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect_after(Ok(())).await?;
        let link = FleetClient::new(channel)
            .create_console_link(ConsoleLinkRequest {})
            .await
            .map_err(status_error)?
            .into_inner();
        match ctx.output {
            OutputFormat::Json => print_json(&LinkJson {
                url: link.url.clone(),
                expires: nasfleet_common::status::rfc3339_from_unix_ms(link.expires_unix_ms),
            })?,
            OutputFormat::Table => {
                outln!("{}", link.url)?;
                eprintln!(
                    "Open it once, before {}; it signs this browser in as you.",
                    human_time(link.expires_unix_ms)
                );
            }
        }
        if self.open {
            open(&link.url).await?;
        }
        Ok(())
    }
}

/// The URL is one argument of xdg-open; no shell sees it, and only an
/// https:// URL is handed on (never something xdg-open reads as an option).
async fn open(url: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        url.starts_with("https://") && !url.chars().any(char::is_whitespace),
        "the controller's console link is not an https:// URL: {}",
        nasfleet_common::echo::echo(url)
    );
    let mut child = tokio::process::Command::new("xdg-open")
        .arg(url)
        .kill_on_drop(true)
        .spawn()
        .context(
            "starting xdg-open to open the link (print it without --open and open it by hand)",
        )?;
    match tokio::time::timeout(OPEN_TIMEOUT, child.wait()).await {
        Ok(status) => {
            let status = status.context("waiting for xdg-open")?;
            anyhow::ensure!(
                status.success(),
                "xdg-open could not open the link ({status})"
            );
            Ok(())
        }
        // A browser that keeps xdg-open waiting has the link already.
        Err(_) => Ok(()),
    }
}
