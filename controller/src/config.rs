//! The controller's data dir layout and its config file `controller.toml`.

use crate::engine::alerts::AlertSettings;
use crate::store::AuditRetention;
use nasfleet_common::daemon::LogFormat;
use nasfleet_common::duration::parse_duration;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
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
    #[error("{path} is not a valid controller config: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Paths of everything in the data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("controller.toml")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }
    /// Server certificate followed by the CA certificate: agents that pin
    /// the CA fingerprint find the CA in the chain.
    pub fn server_chain(&self) -> PathBuf {
        self.root.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }
    pub fn user_cert(&self, user: &str) -> PathBuf {
        self.root.join(format!("{user}.crt"))
    }
    pub fn user_key(&self, user: &str) -> PathBuf {
        self.root.join(format!("{user}.key"))
    }
    pub fn cli_config(&self, user: &str) -> PathBuf {
        self.root.join(format!("{user}.toml"))
    }
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
}

/// Plain HTTP metrics only on loopback; behind mutual TLS on any address.
pub fn check_metrics_listen(addr: SocketAddr, tls: bool) -> Result<(), String> {
    if tls || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "metrics_listen: {addr} is not a loopback address; plain HTTP metrics are served \
             only on 127.0.0.0/8 or ::1 (set metrics_tls = true to serve them behind mutual TLS)"
        ))
    }
}

/// The web console's checked settings (see [`ControllerConfig::web`]).
#[derive(Debug, Clone)]
pub struct WebSettings {
    pub listen: SocketAddr,
    pub url: String,
    /// Certificate chain and key files; `None` is the server certificate.
    pub identity: Option<(PathBuf, PathBuf)>,
    pub idle_timeout: Duration,
    pub session_lifetime: Duration,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7443))
}

fn default_heartbeat() -> String {
    "10s".into()
}

/// `controller.toml` as written by `init` (see deploy/controller.toml).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// Address the gRPC server binds.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// URL agents and the CLI dial; printed in join commands.
    pub url: String,
    /// Agents heartbeat at this period; a system is OFFLINE after three missed.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval: String,
    #[serde(default)]
    pub log_format: LogFormat,
    /// IANA zone for schedules and snapshot names (default: the host's).
    #[serde(default)]
    pub timezone: Option<String>,
    /// A fire missed while the controller was down still runs at start if it
    /// is at most this old; older ones are recorded as missed.
    #[serde(default = "default_grace")]
    pub missed_run_grace: String,
    /// Runs kept per task.
    #[serde(default = "default_history")]
    pub run_history: usize,
    /// Audit entries older than this are dropped (oldest first).
    #[serde(default = "default_audit_max_age")]
    pub audit_max_age: String,
    /// At most this many audit entries are kept (oldest dropped first).
    #[serde(default = "default_audit_max_entries")]
    pub audit_max_entries: u64,
    /// How long the agent and user certificates it signs are valid; agents
    /// renew theirs with a third of it left.
    #[serde(default = "default_cert_lifetime")]
    pub cert_lifetime: String,
    /// Address the web console binds (HTTPS); absent, no console is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_listen: Option<SocketAddr>,
    /// The URL people open (default `https://` + `web_listen`); sign-in
    /// links start with it, and its host name must match the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
    /// Certificate chain and key (PEM) of the console; absent, the
    /// controller's own server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_key: Option<PathBuf>,
    /// A console session ends after this long without a request...
    #[serde(default = "default_web_idle_timeout")]
    pub web_idle_timeout: String,
    /// ...and after this long in any case.
    #[serde(default = "default_web_session_lifetime")]
    pub web_session_lifetime: String,
    /// Address `/metrics` is served on, plain HTTP, loopback only; absent,
    /// no metrics are served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve `/metrics` over HTTPS and require a client certificate of a
    /// user who sees every system; then any address may be used.
    #[serde(default)]
    pub metrics_tls: bool,
    /// How often the alert conditions are evaluated.
    #[serde(default = "default_alert_interval")]
    pub alert_interval: String,
    /// A system not heard from for longer raises an OFFLINE alert.
    #[serde(default = "default_offline_grace")]
    pub offline_grace: String,
    /// Pool capacity (percent used) that raises a warning, and a critical alert.
    #[serde(default = "default_pool_warning")]
    pub pool_capacity_warning: u64,
    #[serde(default = "default_pool_critical")]
    pub pool_capacity_critical: u64,
    /// A system certificate expiring within this raises an alert.
    #[serde(default = "default_certificate_warning")]
    pub certificate_warning: String,
}

fn default_certificate_warning() -> String {
    "30d".into()
}

fn default_alert_interval() -> String {
    "30s".into()
}

fn default_offline_grace() -> String {
    "5m".into()
}

fn default_pool_warning() -> u64 {
    80
}

fn default_pool_critical() -> u64 {
    90
}

fn default_web_idle_timeout() -> String {
    "30m".into()
}

fn default_web_session_lifetime() -> String {
    "12h".into()
}

fn default_cert_lifetime() -> String {
    "5y".into()
}

fn default_audit_max_age() -> String {
    "90d".into()
}

fn default_audit_max_entries() -> u64 {
    crate::store::DEFAULT_AUDIT_RETENTION.max_entries
}

fn default_grace() -> String {
    "1h".into()
}

fn default_history() -> usize {
    100
}

impl ControllerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: ControllerConfig =
            toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        config.heartbeat().map_err(invalid)?;
        config.grace().map_err(invalid)?;
        config.timezone().map_err(invalid)?;
        if config.run_history == 0 {
            return Err(invalid("run_history: must be at least 1".into()));
        }
        config.audit_retention().map_err(invalid)?;
        config.cert_lifetime().map_err(invalid)?;
        config.web().map_err(invalid)?;
        config.alerts().map_err(invalid)?;
        if let Some(addr) = config.metrics_listen {
            check_metrics_listen(addr, config.metrics_tls).map_err(invalid)?;
        }
        Ok(config)
    }

    /// The alert settings, checked: a positive interval, thresholds with
    /// warning below critical, both at most 100.
    pub fn alerts(&self) -> Result<AlertSettings, String> {
        let interval =
            parse_duration("alert_interval", &self.alert_interval).map_err(|e| e.to_string())?;
        if interval.is_zero() {
            return Err("alert_interval: must be longer than 0s".into());
        }
        let offline_grace =
            parse_duration("offline_grace", &self.offline_grace).map_err(|e| e.to_string())?;
        if !(1..=100).contains(&self.pool_capacity_critical)
            || self.pool_capacity_warning == 0
            || self.pool_capacity_warning > self.pool_capacity_critical
        {
            return Err(format!(
                "pool_capacity_warning, pool_capacity_critical: need 1 <= warning <= critical <= 100, got {} and {}",
                self.pool_capacity_warning, self.pool_capacity_critical
            ));
        }
        let cert_warning = parse_duration("certificate_warning", &self.certificate_warning)
            .map_err(|e| e.to_string())?;
        Ok(AlertSettings {
            interval,
            offline_grace,
            cert_warning,
            pool_warning_percent: self.pool_capacity_warning,
            pool_critical_percent: self.pool_capacity_critical,
            ..AlertSettings::default()
        })
    }

    /// The console's settings, checked: both or neither of the certificate
    /// and key, positive timeouts, an `https://` URL.
    pub fn web(&self) -> Result<Option<WebSettings>, String> {
        let idle = parse_duration("web_idle_timeout", &self.web_idle_timeout)
            .map_err(|e| e.to_string())?;
        let lifetime = parse_duration("web_session_lifetime", &self.web_session_lifetime)
            .map_err(|e| e.to_string())?;
        if idle.is_zero() || lifetime.is_zero() {
            return Err("web_idle_timeout, web_session_lifetime: must be longer than 0s".into());
        }
        let identity = match (&self.web_cert, &self.web_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => return Err("web_cert, web_key: give both or neither".into()),
        };
        let Some(listen) = self.web_listen else {
            return Ok(None);
        };
        let url = match &self.web_url {
            Some(url) if url.starts_with("https://") => url.trim_end_matches('/').to_owned(),
            Some(_) => return Err("web_url: must start with https://".into()),
            None => format!("https://{listen}"),
        };
        Ok(Some(WebSettings {
            listen,
            url,
            identity,
            idle_timeout: idle,
            session_lifetime: lifetime,
        }))
    }

    pub fn cert_lifetime(&self) -> Result<Duration, String> {
        let lifetime =
            parse_duration("cert_lifetime", &self.cert_lifetime).map_err(|e| e.to_string())?;
        if lifetime < Duration::from_secs(30) {
            return Err("cert_lifetime: must be at least 30s".into());
        }
        Ok(lifetime)
    }

    pub fn audit_retention(&self) -> Result<AuditRetention, String> {
        let age =
            parse_duration("audit_max_age", &self.audit_max_age).map_err(|e| e.to_string())?;
        if self.audit_max_entries == 0 {
            return Err("audit_max_entries: must be at least 1".into());
        }
        Ok(AuditRetention {
            max_entries: self.audit_max_entries,
            max_age_ms: i64::try_from(age.as_millis()).unwrap_or(i64::MAX),
        })
    }

    pub fn grace(&self) -> Result<Duration, String> {
        parse_duration("missed_run_grace", &self.missed_run_grace).map_err(|e| e.to_string())
    }

    /// The configured zone, or the host's.
    pub fn timezone(&self) -> Result<chrono_tz::Tz, String> {
        match &self.timezone {
            Some(name) => {
                nasfleet_common::schedule::parse_timezone(name).map_err(|e| e.to_string())
            }
            None => Ok(nasfleet_common::schedule::host_timezone()),
        }
    }

    pub fn heartbeat(&self) -> Result<Duration, String> {
        parse_duration("heartbeat_interval", &self.heartbeat_interval).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_in_deploy_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller.toml");
        let config = ControllerConfig::load(&path).unwrap();
        assert!(config.url.starts_with("https://"));
        config.heartbeat().unwrap();
    }

    #[test]
    fn console_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let load = |extra: &str| {
            std::fs::write(&path, format!("url = \"https://x:1\"\n{extra}")).unwrap();
            ControllerConfig::load(&path)
        };
        let config = load("web_listen = \"127.0.0.1:7444\"\n").unwrap();
        let web = config.web().unwrap().unwrap();
        assert_eq!(web.url, "https://127.0.0.1:7444");
        assert!(web.identity.is_none());
        assert!(load("").unwrap().web().unwrap().is_none());
        let err = load("web_cert = \"/x.crt\"\n").unwrap_err().to_string();
        assert!(err.contains("web_cert, web_key"), "{err}");
        let err = load("web_listen = \"127.0.0.1:7444\"\nweb_url = \"http://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("web_url"), "{err}");
    }

    #[test]
    fn bad_heartbeat_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "url = \"https://x:1\"\nheartbeat_interval = \"soon\"\n",
        )
        .unwrap();
        let err = ControllerConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("heartbeat_interval"), "{err}");
    }
}
