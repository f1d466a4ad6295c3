//! Collecting the inventory this agent reports: host, OS, zfs version and dialect, its own pools with their datasets and snapshots, and the SSH service.
//!
//! Collection never fails as a whole. A NAS with a degraded pool or a
//! stopped sshd is exactly the system an administrator needs to see, so every
//! part that cannot be read becomes a sentence in `errors` and the rest is
//! still reported.

use std::path::PathBuf;

use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1;

use crate::ssh::service as ssh_service;
use crate::zfs::{self, Zfs};

/// What this agent reports about, from its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventorySettings {
    /// Pools that belong to this agent; empty means every pool on the host.
    /// Several agents may share one zfs daemon (as on the test machines), so
    /// each must be told which pools are its own.
    pub pools: Vec<String>,
    /// `host:port` where other systems reach sshd; `None` reports
    /// `<hostname>:22` and probes 127.0.0.1:22.
    pub ssh_address: Option<String>,
    /// Host public keys to fingerprint; empty means every
    /// `/etc/ssh/ssh_host_*_key.pub`.
    pub ssh_host_key_files: Vec<PathBuf>,
}

/// Collects a fresh inventory. `zfs` is the CLI probed once at start.
pub async fn collect(settings: &InventorySettings, zfs: &Zfs) -> v1::Inventory {
    let mut errors = Vec::new();

    let hostname = match tokio::fs::read_to_string("/proc/sys/kernel/hostname").await {
        Ok(name) => name.trim().to_owned(),
        Err(err) => {
            errors.push(format!(
                "cannot read the host name from /proc/sys/kernel/hostname: {err}"
            ));
            String::new()
        }
    };
    let os = os_description().await;

    let (pools, datasets, snapshots) = collect_zfs(settings, zfs, &mut errors).await;

    let ssh = ssh_service::collect(
        settings.ssh_address.as_deref(),
        &settings.ssh_host_key_files,
        if hostname.is_empty() {
            "localhost"
        } else {
            &hostname
        },
        &mut errors,
    )
    .await;

    v1::Inventory {
        hostname,
        os,
        agent_version: nasfleet_proto::VERSION.to_owned(),
        zfs_version: zfs.version.clone(),
        zfs_dialect: zfs.dialect.to_proto() as i32,
        pools,
        datasets,
        snapshots,
        services: vec![ssh],
        collected_unix_ms: now_unix_ms(),
        errors,
        // Filled in by the link, which owns the replication key.
        replication_public_key: String::new(),
        // The link pages the snapshots when there are many.
        snapshot_pages: 0,
        snapshot_count: 0,
    }
}

async fn collect_zfs(
    settings: &InventorySettings,
    zfs: &Zfs,
    errors: &mut Vec<String>,
) -> (Vec<v1::Pool>, Vec<v1::Dataset>, Vec<v1::Snapshot>) {
    let mut datasets = Vec::new();
    let mut snapshots = Vec::new();

    let all_pools = match zfs.list_pools().await {
        Ok((pools, parse_errors)) => {
            errors.extend(parse_errors);
            pools
        }
        Err(err) => {
            errors.push(format!("cannot list pools: {err}"));
            // Without the pool list nothing below can be trusted to exist;
            // asking zfs per pool would only repeat the same failure.
            return (Vec::new(), datasets, snapshots);
        }
    };
    let pools = select_pools(all_pools, &settings.pools, errors);

    // One pool after another: zfs-fuse serves every request through one
    // daemon, so parallel calls would not finish sooner.
    for pool in &pools {
        match zfs.list_datasets_and_snapshots(&pool.name).await {
            Ok(listing) => {
                datasets.extend(listing.datasets);
                snapshots.extend(listing.snapshots);
                errors.extend(
                    listing
                        .errors
                        .into_iter()
                        .map(|e| format!("pool '{}': {e}", pool.name)),
                );
            }
            Err(err) => errors.push(format!(
                "cannot list datasets of pool '{}': {err}",
                pool.name
            )),
        }
    }
    (pools, datasets, snapshots)
}

/// Keeps the pools this agent owns, in the configured order, and names every
/// configured pool that is missing or could never be a pool name.
pub fn select_pools(
    all: Vec<v1::Pool>,
    wanted: &[String],
    errors: &mut Vec<String>,
) -> Vec<v1::Pool> {
    if wanted.is_empty() {
        return all;
    }
    let mut selected = Vec::with_capacity(wanted.len());
    for name in wanted {
        if let Err(err) = validate_pool_name(name) {
            errors.push(format!(
                "configured pool '{name}' is not a valid pool name: {err}"
            ));
            continue;
        }
        match all.iter().find(|p| &p.name == name) {
            Some(pool) => {
                if !selected.iter().any(|p: &v1::Pool| &p.name == name) {
                    selected.push(pool.clone());
                }
            }
            None => errors.push(format!("pool '{name}' not found on this host")),
        }
    }
    selected
}

fn validate_pool_name(name: &str) -> Result<(), String> {
    zfs::validate_dataset_name(name).map_err(|e| e.to_string())?;
    if name.contains('/') {
        return Err("a pool name has no '/'".to_owned());
    }
    Ok(())
}

/// "Debian GNU/Linux 12 (bookworm), kernel 6.1.0-18-amd64".
async fn os_description() -> String {
    let mut pretty = None;
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Ok(text) = tokio::fs::read_to_string(path).await {
            pretty = pretty_name(&text);
            break;
        }
    }
    let kernel = tokio::fs::read_to_string("/proc/sys/kernel/osrelease")
        .await
        .ok()
        .map(|k| k.trim().to_owned());
    describe_os(pretty.as_deref(), kernel.as_deref())
}

/// Combines the distribution name and kernel release into one line.
pub fn describe_os(pretty: Option<&str>, kernel: Option<&str>) -> String {
    let distro = pretty.unwrap_or("unknown OS");
    match kernel {
        Some(kernel) if !kernel.is_empty() => format!("{distro}, kernel {kernel}"),
        _ => distro.to_owned(),
    }
}

/// PRETTY_NAME from os-release(5) text (shell-style assignments, values
/// optionally quoted), falling back to NAME.
pub fn pretty_name(os_release: &str) -> Option<String> {
    let value_of = |key: &str| {
        os_release.lines().find_map(|line| {
            let (k, v) = line.trim().split_once('=')?;
            (k == key)
                .then(|| unquote(v.trim()))
                .filter(|v| !v.is_empty())
        })
    };
    value_of("PRETTY_NAME").or_else(|| value_of("NAME"))
}

fn unquote(value: &str) -> String {
    let inner = if value.len() >= 2
        && ((value.starts_with('"') && value.ends_with('"'))
            || (value.starts_with('\'') && value.ends_with('\'')))
    {
        &value[1..value.len() - 1]
    } else {
        value
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> v1::Pool {
        v1::Pool {
            name: name.into(),
            size: 1,
            free: 1,
            health: "ONLINE".into(),
        }
    }

    #[test]
    fn empty_selection_means_every_pool() {
        let mut errors = Vec::new();
        let pools = select_pools(vec![pool("a"), pool("b")], &[], &mut errors);
        assert_eq!(pools.len(), 2);
        assert!(errors.is_empty());
    }

    #[test]
    fn selection_reports_missing_and_invalid_pools() {
        let mut errors = Vec::new();
        let wanted = ["b", "x", "-rf", "a/b", "b"].map(String::from);
        let pools = select_pools(vec![pool("a"), pool("b")], &wanted, &mut errors);
        assert_eq!(pools, [pool("b")]);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(errors[0], "pool 'x' not found on this host");
        assert!(errors[1].starts_with("configured pool '-rf' is not a valid pool name"));
        assert!(errors[2].contains("a pool name has no '/'"));
    }

    #[test]
    fn reads_pretty_name() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n";
        assert_eq!(
            pretty_name(debian).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        let truenas = "NAME='TrueNAS SCALE'\nPRETTY_NAME=\"TrueNAS \\\"SCALE\\\" 24.04\"\n";
        assert_eq!(
            pretty_name(truenas).as_deref(),
            Some("TrueNAS \"SCALE\" 24.04")
        );
        assert_eq!(pretty_name("NAME=Alpine\n").as_deref(), Some("Alpine"));
        assert_eq!(pretty_name("ID=x\nPRETTY_NAME=\n"), None);
        assert_eq!(pretty_name(""), None);
    }

    #[test]
    fn describes_os() {
        assert_eq!(
            describe_os(
                Some("Debian GNU/Linux 12 (bookworm)"),
                Some("6.1.0-18-amd64")
            ),
            "Debian GNU/Linux 12 (bookworm), kernel 6.1.0-18-amd64"
        );
        assert_eq!(describe_os(None, None), "unknown OS");
        assert_eq!(describe_os(Some("X"), Some("")), "X");
    }
}
