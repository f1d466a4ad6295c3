//! Keys and targets the ssh modules' unit tests share.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::argv::SshTarget;

/// A real ed25519 key ([`FIXED_KEY`] without its newline).
pub(crate) const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILHk76+FWY7+2MM/cLoPnfrCUvM3deT9GCjPz+IG7LBW fixture@nasfleet";

pub(crate) const KEY_NO_COMMENT: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILHk76+FWY7+2MM/cLoPnfrCUvM3deT9GCjPz+IG7LBW";

pub(crate) const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIPdJgGH4IUkwbgW/pkpaWT4+IzhRht3v1+3DrxrZuVV+becdifOIr+XZPgaIckMZi3OhjMBxOjpjv5879HkjKQ=";

pub(crate) fn target() -> SshTarget {
    SshTarget {
        user: "root".into(),
        host: "127.0.0.3".into(),
        port: 22,
        identity: "/var/lib/nasfleet-agent/replication_ed25519".into(),
        known_hosts: "/var/lib/nasfleet-agent/known_hosts/nas2".into(),
        control_path: None,
    }
}

pub(crate) fn owner_of(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

pub(crate) fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// Generated with `ssh-keygen -t ed25519 -C fixture@nasfleet`; the
/// fingerprint is what `ssh-keygen -lf` printed for it.
pub(crate) const FIXED_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILHk76+FWY7+2MM/cLoPnfrCUvM3deT9GCjPz+IG7LBW fixture@nasfleet\n";

pub(crate) const FIXED_FINGERPRINT: &str =
    "ssh-ed25519 SHA256:3Q/IG8LjQqBSzknP+6jd5W9NNNfmcn7vwxWz1H3bVO4";

/// An ECDSA key without a comment, as `ssh-keygen -C ''` writes it.
pub(crate) const FIXED_ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIPdJgGH4IUkwbgW/pkpaWT4+IzhRht3v1+3DrxrZuVV+becdifOIr+XZPgaIckMZi3OhjMBxOjpjv5879HkjKQ= \n";
