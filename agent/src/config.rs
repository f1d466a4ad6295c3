//! The agent's settings: its config file (deploy/agent.toml), command-line overrides, and its state dir.

use crate::inventory::InventorySettings;
use crate::zfs::validate_dataset_name;
use nasfleet_common::daemon::LogFormat;
use nasfleet_common::duration::parse_duration;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid agent config: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

pub const DEFAULT_INVENTORY_INTERVAL: Duration = Duration::from_secs(300);

/// The agent config file. Every key is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Pools this system owns; empty means every pool on the host.
    #[serde(default)]
    pub pools: Vec<String>,
    /// `host:port` where other systems reach this host's sshd.
    pub ssh_address: Option<String>,
    /// Host public key files to report; empty means every /etc/ssh/ssh_host_*_key.pub.
    #[serde(default)]
    pub ssh_host_keys: Vec<PathBuf>,
    /// How often the full inventory is re-sent (e.g. "5m").
    pub inventory_interval: Option<String>,
    pub log_format: Option<LogFormat>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// Settings the running agent uses, after validation.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub state_dir: PathBuf,
    pub inventory: InventorySettings,
    pub inventory_interval: Duration,
}

/// Checks `host:port`; the host may be a name, an IPv4 address or `[v6]`.
pub fn validate_ssh_address(address: &str) -> Result<(), ConfigError> {
    let invalid = |message: &str| ConfigError::Invalid {
        field: "ssh_address",
        message: format!("'{address}' {message}"),
    };
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid("must be HOST:PORT"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid("has no valid port (1-65535)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host_ok = !host.is_empty()
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !host_ok {
        return Err(invalid("has an invalid host part"));
    }
    Ok(())
}

impl RunSettings {
    /// Merges the config file with command-line overrides (flags win) and validates the result.
    pub fn build(
        state_dir: PathBuf,
        file: AgentConfig,
        pools: Vec<String>,
        ssh_address: Option<String>,
        ssh_host_keys: Vec<PathBuf>,
        inventory_interval: Option<String>,
    ) -> Result<Self, ConfigError> {
        let pools = if pools.is_empty() { file.pools } else { pools };
        for pool in &pools {
            if pool.contains('/') {
                return Err(ConfigError::Invalid {
                    field: "pools",
                    message: format!("'{pool}' is a dataset, not a pool name"),
                });
            }
            validate_dataset_name(pool).map_err(|e| ConfigError::Invalid {
                field: "pools",
                message: e.to_string(),
            })?;
        }
        let ssh_address = ssh_address.or(file.ssh_address);
        if let Some(address) = &ssh_address {
            validate_ssh_address(address)?;
        }
        let ssh_host_key_files = if ssh_host_keys.is_empty() {
            file.ssh_host_keys
        } else {
            ssh_host_keys
        };
        let inventory_interval = match inventory_interval.or(file.inventory_interval) {
            Some(text) => {
                parse_duration("inventory_interval", &text).map_err(|e| ConfigError::Invalid {
                    field: "inventory_interval",
                    message: e.to_string(),
                })?
            }
            None => DEFAULT_INVENTORY_INTERVAL,
        };
        Ok(RunSettings {
            state_dir,
            inventory: InventorySettings {
                pools,
                ssh_address,
                ssh_host_key_files,
            },
            inventory_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_in_deploy_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.toml");
        let file = AgentConfig::load(&path).unwrap();
        let settings =
            RunSettings::build(PathBuf::from("/x"), file, vec![], None, vec![], None).unwrap();
        assert!(!settings.inventory.pools.is_empty());
    }

    #[test]
    fn flags_override_file() {
        let file = AgentConfig {
            pools: vec!["tank".into()],
            ssh_address: Some("nas:22".into()),
            ..Default::default()
        };
        let s = RunSettings::build(
            PathBuf::from("/x"),
            file,
            vec!["other".into()],
            Some("127.0.0.2:2222".into()),
            vec![],
            Some("30s".into()),
        )
        .unwrap();
        assert_eq!(s.inventory.pools, vec!["other".to_string()]);
        assert_eq!(s.inventory.ssh_address.as_deref(), Some("127.0.0.2:2222"));
        assert_eq!(s.inventory_interval, Duration::from_secs(30));
    }

    #[test]
    fn bad_values_name_their_field() {
        let build = |pools: Vec<&str>, ssh: Option<&str>| {
            RunSettings::build(
                PathBuf::from("/x"),
                AgentConfig::default(),
                pools.into_iter().map(String::from).collect(),
                ssh.map(String::from),
                vec![],
                None,
            )
            .unwrap_err()
            .to_string()
        };
        assert!(build(vec!["-rf"], None).starts_with("pools:"));
        assert!(build(vec!["tank/child"], None).starts_with("pools:"));
        assert!(build(vec![], Some("nas")).starts_with("ssh_address:"));
        assert!(build(vec![], Some("nas:0")).starts_with("ssh_address:"));
        assert!(build(vec![], Some("-oProxyCommand=x:22")).starts_with("ssh_address:"));
    }
}
