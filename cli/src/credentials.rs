//! Finding and loading the CLI's credentials: `--config`, else `NASFLEET_CONFIG`, else the user's config dir.

use anyhow::{Context, bail};
use nasfleet_proto::cli_config::CliConfig;
use nasfleet_proto::dial::{ClientIdentity, DialOptions, ServerTrust, dial};
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// The user's default config file: `$XDG_CONFIG_HOME/nasfleet/config.toml` or `~/.config/nasfleet/config.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("nasfleet").join("config.toml"))
}

/// Picks the config file by precedence; errors name every place looked at.
pub fn locate(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path.to_owned());
    }
    if let Some(env) = std::env::var_os("NASFLEET_CONFIG").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(env));
    }
    match default_config_path() {
        Some(path) if path.exists() => Ok(path),
        other => bail!(
            "no credentials: pass --config FILE, set NASFLEET_CONFIG, or copy the admin.toml written by `nasfleet-controller init` to {}",
            other
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "~/.config/nasfleet/config.toml".into())
        ),
    }
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

async fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    tokio::fs::read(path)
        .await
        .with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// Loads the config and opens an authenticated channel to the controller.
pub async fn connect(flag: Option<&Path>) -> anyhow::Result<Channel> {
    let path = locate(flag)?;
    let text = tokio::fs::read_to_string(&path)
        .await
        .with_context(|| format!("cannot read the CLI config {}", path.display()))?;
    let config: CliConfig = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid nasfleet CLI config", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let ca = read(&resolve(base, &config.ca), "CA certificate").await?;
    let identity = ClientIdentity {
        cert_pem: read(&resolve(base, &config.cert), "client certificate").await?,
        key_pem: read(&resolve(base, &config.key), "client key").await?,
    };
    let channel = dial(
        &config.controller,
        &ServerTrust::CaPem(ca),
        Some(&identity),
        &DialOptions::default(),
    )
    .await?;
    Ok(channel)
}
