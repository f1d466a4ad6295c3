//! `nasfleet-controller init`: a new data dir with CA, server certificate, first admin and config files.

use crate::config::{ControllerConfig, DataDir};
use crate::pki::{CaMaterial, CertificateAuthority, IssuedCertificate, PkiError};
use crate::store::{CLOSE_DEADLINE, CertRecord, Store, StoreError, UserRecord};
use nasfleet_common::cli_config::CliConfig;
use nasfleet_common::daemon::LogFormat;
use nasfleet_common::names::{NameError, validate_user_name};
use nasfleet_common::roles::Role;
use nasfleet_common::status::now_unix_ms;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InitError {
    #[error("data dir {0} already exists and is not empty; refusing to overwrite it")]
    NotEmpty(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: toml::ser::Error,
    },
}

pub struct InitOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// DNS name agents use to reach the controller; defaults to the host name.
    pub name: Option<String>,
    pub admin: String,
}

pub struct InitSummary {
    pub url: String,
    pub ca_fingerprint: String,
    pub cli_config: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InitError + '_ {
    move |source| InitError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a file that must not exist yet, with the given mode from the start
/// (a key is never briefly world-readable).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), InitError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(contents).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// This host's name as the kernel knows it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The host part of the URL clients dial: the listen IP when it is a
/// concrete address, else the controller's name.
fn url_for(listen: SocketAddr, name: &str) -> String {
    let ip = listen.ip();
    if ip.is_unspecified() {
        format!("https://{name}:{}", listen.port())
    } else {
        match ip {
            IpAddr::V4(v4) => format!("https://{v4}:{}", listen.port()),
            IpAddr::V6(v6) => format!("https://[{v6}]:{}", listen.port()),
        }
    }
}

pub fn init(options: &InitOptions) -> Result<InitSummary, InitError> {
    validate_user_name(&options.admin)?;
    let dir = DataDir::new(&options.data_dir);
    create_empty_dir(&dir.root)?;

    let explicit_name = options.name.is_some();
    let name = options.name.clone().unwrap_or_else(host_name);
    let (ca, material) = CertificateAuthority::create(&name)?;
    let mut hosts = vec![name.clone()];
    if !options.listen.ip().is_unspecified() {
        hosts.push(options.listen.ip().to_string());
    }
    hosts.extend(["localhost".into(), "127.0.0.1".into(), "::1".into()]);
    let server = match ca.issue_server(&hosts) {
        Ok(server) => server,
        // A host name that is not a valid DNS name is only fatal when the
        // administrator asked for it; otherwise serve by address.
        Err(PkiError::BadServerName(_)) if !explicit_name => ca.issue_server(&hosts[1..])?,
        Err(e) => return Err(e.into()),
    };
    let admin = ca.issue_user(&options.admin, "admin")?;
    write_pki(&dir, &ca, &material, &server, &admin, &options.admin)?;

    let url = url_for(options.listen, &name);
    // The console beside the gRPC port, on the same address and name.
    let web_listen = SocketAddr::new(options.listen.ip(), options.listen.port().wrapping_add(1));
    let web_url = url_for(web_listen, &name);
    write_controller_config(&dir, options.listen, &url, web_listen, &web_url)?;
    let cli_path = write_admin_cli_config(&dir, &url, &options.admin)?;
    record_admin(&dir, &options.admin, &admin)?;
    Ok(InitSummary {
        url,
        ca_fingerprint: ca.fingerprint().to_owned(),
        cli_config: cli_path,
    })
}

/// The data dir must be new or empty: init never overwrites a fleet.
fn create_empty_dir(root: &Path) -> Result<(), InitError> {
    match std::fs::read_dir(root) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(InitError::NotEmpty(root.to_owned()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io_err(root)),
        Err(e) => Err(io_err(root)(e)),
    }
}

/// The CA, the server's chain and key, and the first admin's certificate
/// and key; private keys 0600.
fn write_pki(
    dir: &DataDir,
    ca: &CertificateAuthority,
    material: &CaMaterial,
    server: &IssuedCertificate,
    admin: &IssuedCertificate,
    admin_name: &str,
) -> Result<(), InitError> {
    write_new(&dir.ca_cert(), material.cert_pem.as_bytes(), 0o644)?;
    write_new(&dir.ca_key(), material.key_pem.as_bytes(), 0o600)?;
    let chain = format!("{}{}", server.cert_pem, ca.cert_pem());
    write_new(&dir.server_chain(), chain.as_bytes(), 0o644)?;
    write_new(
        &dir.server_key(),
        server.key_pem.as_deref().unwrap_or_default().as_bytes(),
        0o600,
    )?;
    write_new(&dir.user_cert(admin_name), admin.cert_pem.as_bytes(), 0o644)?;
    write_new(
        &dir.user_key(admin_name),
        admin.key_pem.as_deref().unwrap_or_default().as_bytes(),
        0o600,
    )
}

fn write_controller_config(
    dir: &DataDir,
    listen: SocketAddr,
    url: &str,
    web_listen: SocketAddr,
    web_url: &str,
) -> Result<(), InitError> {
    let config = ControllerConfig {
        listen,
        url: url.to_owned(),
        heartbeat_interval: "10s".into(),
        log_format: LogFormat::Text,
        timezone: None,
        missed_run_grace: "1h".into(),
        run_history: 100,
        audit_max_age: "90d".into(),
        audit_max_entries: crate::store::DEFAULT_AUDIT_RETENTION.max_entries,
        cert_lifetime: "5y".into(),
        web_listen: Some(web_listen),
        web_url: Some(web_url.to_owned()),
        web_cert: None,
        web_key: None,
        web_idle_timeout: "30m".into(),
        web_session_lifetime: "12h".into(),
        // Metrics two ports after the gRPC one, on loopback whatever `listen` is.
        metrics_listen: Some(SocketAddr::new(
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            listen.port().wrapping_add(2),
        )),
        metrics_tls: false,
        alert_interval: "30s".into(),
        offline_grace: "5m".into(),
        pool_capacity_warning: 80,
        pool_capacity_critical: 90,
        certificate_warning: "30d".into(),
    };
    let config_text = toml::to_string(&config).map_err(|source| InitError::Encode {
        what: "controller.toml",
        source,
    })?;
    write_new(
        &dir.config(),
        format!("# nasfleet controller configuration; see deploy/controller.toml for every key.\n{config_text}")
            .as_bytes(),
        0o644,
    )
}

/// The first admin's CLI config (0600); returns its absolute path.
fn write_admin_cli_config(dir: &DataDir, url: &str, admin: &str) -> Result<PathBuf, InitError> {
    // Absolute paths: the CLI may run from anywhere.
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let cli = CliConfig {
        controller: url.to_owned(),
        ca: absolute(dir.ca_cert()),
        cert: absolute(dir.user_cert(admin)),
        key: absolute(dir.user_key(admin)),
    };
    let cli_text = toml::to_string(&cli).map_err(|source| InitError::Encode {
        what: "CLI config",
        source,
    })?;
    let cli_path = dir.cli_config(admin);
    write_new(&cli_path, cli_text.as_bytes(), 0o600)?;
    Ok(absolute(cli_path))
}

/// The first admin: a user like the others, whose certificate is recorded
/// as issued by this controller.
fn record_admin(dir: &DataDir, admin: &str, issued: &IssuedCertificate) -> Result<(), InitError> {
    let store = Store::open(&dir.store())?;
    let now = now_unix_ms();
    let admin_cert = CertRecord {
        principal: nasfleet_common::identity::Principal::User(admin.to_owned()).common_name(),
        role: None,
        issued_unix_ms: now,
        revoked_unix_ms: None,
    };
    let user = UserRecord {
        name: admin.to_owned(),
        role: Role::Admin.as_str().to_owned(),
        systems: Vec::new(),
        all_systems: false,
        created_unix_ms: now,
        created_by: "nasfleet-controller init".into(),
        cert_serial: Some(issued.serial_hex.clone()),
        cert_expires_unix_ms: Some(issued.expires_unix_ms),
        password_hash: None,
    };
    let serial = issued.serial_hex.clone();
    store.write_blocking(move |w| {
        w.put_cert(&serial, &admin_cert)?;
        w.put_user(&user)
    })?;
    store.close_blocking(CLOSE_DEADLINE);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_uses_ip_unless_unspecified() {
        assert_eq!(
            url_for("127.0.0.1:7443".parse().unwrap(), "ctl"),
            "https://127.0.0.1:7443"
        );
        assert_eq!(
            url_for("0.0.0.0:7443".parse().unwrap(), "ctl.example"),
            "https://ctl.example:7443"
        );
        assert_eq!(url_for("[::1]:9".parse().unwrap(), "x"), "https://[::1]:9");
    }

    #[test]
    fn init_writes_keys_private_and_refuses_second_time() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let options = InitOptions {
            data_dir: tmp.path().join("data"),
            listen: "127.0.0.1:7443".parse().unwrap(),
            name: Some("ctl.test".into()),
            admin: "admin".into(),
        };
        let summary = init(&options).unwrap();
        assert_eq!(summary.url, "https://127.0.0.1:7443");
        for key in ["ca.key", "server.key", "admin.key", "admin.toml"] {
            let mode = std::fs::metadata(options.data_dir.join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        assert!(matches!(init(&options), Err(InitError::NotEmpty(_))));
    }
}
