//! Which zfs CLI this host speaks: zfs-fuse (pool version 23) or OpenZFS 2.x, and how the wire spells it.

use nasfleet_proto::v1;

/// Which zfs CLI this host has. The differences matter for parsing: zfs-fuse
/// prints human-readable numbers where OpenZFS can print exact ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// zfs-fuse, pool version 23: `zfs list` and `zpool list/get` have no
    /// `-p`, `zfs get` has no `-t`, there is no `zfs version`.
    Legacy,
    /// OpenZFS 2.x as on TrueNAS SCALE.
    OpenZfs,
}

impl Dialect {
    pub fn to_proto(self) -> v1::ZfsDialect {
        match self {
            Dialect::Legacy => v1::ZfsDialect::Legacy,
            Dialect::OpenZfs => v1::ZfsDialect::Openzfs,
        }
    }

    /// The dialect an inventory reported (the wire's i32); `None` when unspecified or unknown.
    pub fn from_proto(value: i32) -> Option<Dialect> {
        match v1::ZfsDialect::try_from(value) {
            Ok(v1::ZfsDialect::Legacy) => Some(Dialect::Legacy),
            Ok(v1::ZfsDialect::Openzfs) => Some(Dialect::OpenZfs),
            _ => None,
        }
    }
}
