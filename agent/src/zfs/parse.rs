//! Parsers of zfs and zpool output (pure): pools, datasets and snapshots for the inventory, snapshot GUIDs for replication planning, versions; both dialects, with exact and human-readable numbers.

use std::collections::HashMap;

use super::dialect::Dialect;
use nasfleet_proto::v1;
use thiserror::Error;

/// Why a number printed by zfs could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("'{0}' is not a size")]
pub struct SizeError(String);

/// Parses a zfs size: exact bytes (`123456`, from `-p`) or human-readable
/// (`248M`, `1.45G`, `512B`, `16.0E`) as zfs-fuse prints for pools. Human
/// forms are binary multiples rounded by zfs, so the result is approximate.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let err = || SizeError(text.to_owned());
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let t = t.strip_suffix('B').unwrap_or(t);
    let (number, shift) = match t.char_indices().last() {
        Some((i, unit)) if unit.is_ascii_alphabetic() => {
            let shift = match unit.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                'P' => 50,
                'E' => 60,
                _ => return Err(err()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(err());
    }
    let value: f64 = number.parse().map_err(|_| err())?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes.round() as u64)
}

/// Pools from [`super::argv::list_pools_args`] output, plus a message per skipped line.
pub fn parse_pool_list(text: &str) -> (Vec<v1::Pool>, Vec<String>) {
    let mut pools = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, size, free, health] = fields.as_slice() else {
            errors.push(format!(
                "zpool list line {}: expected 4 tab-separated fields, got {:?}",
                n + 1,
                line
            ));
            continue;
        };
        match (parse_size(size), parse_size(free)) {
            (Ok(size), Ok(free)) => pools.push(v1::Pool {
                name: (*name).to_owned(),
                size,
                free,
                health: (*health).to_owned(),
            }),
            (Err(e), _) | (_, Err(e)) => {
                errors.push(format!("zpool list: pool '{name}': {e}"));
            }
        }
    }
    (pools, errors)
}

/// Datasets and snapshots of one pool, plus what could not be read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DatasetListing {
    pub datasets: Vec<v1::Dataset>,
    pub snapshots: Vec<v1::Snapshot>,
    /// One message per skipped line or unreadable value.
    pub errors: Vec<String>,
}

/// Properties of one object in `zfs get` output, in first-seen order.
struct Object<'a> {
    name: &'a str,
    props: HashMap<&'a str, &'a str>,
}

/// Groups `zfs get -H -o name,property,value` lines by object name. The
/// value is everything after the second tab: names and property names never
/// contain tabs, but a mountpoint path may.
fn group_get_output<'a>(text: &'a str, errors: &mut Vec<String>) -> Vec<Object<'a>> {
    let mut objects: Vec<Object<'a>> = Vec::new();
    let mut index: HashMap<&'a str, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut fields = line.splitn(3, '\t');
        let (Some(name), Some(property), Some(value)) =
            (fields.next(), fields.next(), fields.next())
        else {
            errors.push(format!(
                "zfs get line {}: expected name, property and value separated by tabs, got {:?}",
                n + 1,
                line
            ));
            continue;
        };
        if name.is_empty() || property.is_empty() {
            errors.push(format!(
                "zfs get line {}: empty name or property in {:?}",
                n + 1,
                line
            ));
            continue;
        }
        let i = *index.entry(name).or_insert_with(|| {
            objects.push(Object {
                name,
                props: HashMap::new(),
            });
            objects.len() - 1
        });
        objects[i].props.insert(property, value);
    }
    objects
}

/// Reads one numeric property; `-` (and absence) mean "not applicable".
fn number<T: std::str::FromStr>(
    obj: &Object<'_>,
    prop: &str,
    errors: &mut Vec<String>,
) -> Option<T> {
    let value = *obj.props.get(prop)?;
    if value == "-" {
        return None;
    }
    match value.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(format!("{}: {prop} is not a number: {value:?}", obj.name));
            None
        }
    }
}

fn text_prop(obj: &Object<'_>, prop: &str) -> String {
    match obj.props.get(prop) {
        Some(&"-") | None => String::new(),
        Some(v) => (*v).to_owned(),
    }
}

/// The object's type: the `type` property when present, else inferred from
/// the name so a listing without `type` still sorts snapshots correctly.
fn kind_of<'a>(obj: &Object<'a>) -> &'a str {
    match obj.props.get("type") {
        Some(kind) => kind,
        None if obj.name.contains('@') => "snapshot",
        None if obj.name.contains('#') => "bookmark",
        None => "filesystem",
    }
}

fn snapshot_of(obj: &Object<'_>, errors: &mut Vec<String>) -> v1::Snapshot {
    v1::Snapshot {
        name: obj.name.to_owned(),
        guid: number(obj, "guid", errors).unwrap_or(0),
        creation_unix: number(obj, "creation", errors).unwrap_or(0),
        used: number(obj, "used", errors).unwrap_or(0),
        referenced: number(obj, "referenced", errors).unwrap_or(0),
        // Absent from a listing without it: no holds known.
        holds: number(obj, "userrefs", errors).unwrap_or(0),
    }
}

/// Parses the output of [`super::argv::list_datasets_and_snapshots_args`].
pub fn parse_datasets_and_snapshots(text: &str) -> DatasetListing {
    let mut listing = DatasetListing::default();
    let errors = &mut listing.errors;
    for obj in group_get_output(text, errors) {
        match kind_of(&obj) {
            "filesystem" | "volume" => {
                let readonly = match obj.props.get("readonly") {
                    Some(&"on") => true,
                    Some(&"off") | Some(&"-") | None => false,
                    Some(other) => {
                        errors.push(format!(
                            "{}: readonly is neither on nor off: {other:?}",
                            obj.name
                        ));
                        false
                    }
                };
                let dataset = v1::Dataset {
                    name: obj.name.to_owned(),
                    used: number(&obj, "used", errors).unwrap_or(0),
                    available: number(&obj, "available", errors).unwrap_or(0),
                    mountpoint: text_prop(&obj, "mountpoint"),
                    readonly,
                    kind: kind_of(&obj).to_owned(),
                    // Counted by the controller.
                    snapshot_count: 0,
                };
                listing.datasets.push(dataset);
            }
            "snapshot" => {
                let snapshot = snapshot_of(&obj, errors);
                listing.snapshots.push(snapshot);
            }
            // Bookmarks are not part of the inventory; `zfs get -r` does not
            // list them today, but a future version might.
            "bookmark" => {}
            other => errors.push(format!("{}: unknown type {other:?}", obj.name)),
        }
    }
    listing
}

/// Parses the output of [`super::argv::list_snapshots_args`]. Only snapshots of `dataset`
/// itself are kept unless `recursive`, which also keeps its descendants'.
pub fn parse_snapshot_list(
    dialect: Dialect,
    dataset: &str,
    recursive: bool,
    text: &str,
) -> (Vec<v1::Snapshot>, Vec<String>) {
    let mut errors = Vec::new();
    let mut snapshots = Vec::new();
    match dialect {
        Dialect::Legacy => {
            for obj in group_get_output(text, &mut errors) {
                if kind_of(&obj) == "snapshot" {
                    snapshots.push(snapshot_of(&obj, &mut errors));
                }
            }
        }
        Dialect::OpenZfs => {
            for (n, line) in text.lines().enumerate() {
                if line.is_empty() {
                    continue;
                }
                let fields: Vec<&str> = line.split('\t').collect();
                let [name, guid, creation, used, referenced] = fields.as_slice() else {
                    errors.push(format!(
                        "zfs list line {}: expected 5 tab-separated fields, got {:?}",
                        n + 1,
                        line
                    ));
                    continue;
                };
                let props = HashMap::from([
                    ("guid", *guid),
                    ("creation", *creation),
                    ("used", *used),
                    ("referenced", *referenced),
                ]);
                snapshots.push(snapshot_of(&Object { name, props }, &mut errors));
            }
        }
    }
    let own_prefix = format!("{dataset}@");
    let child_prefix = format!("{dataset}/");
    snapshots.retain(|s| {
        s.name.starts_with(&own_prefix) || (recursive && s.name.starts_with(&child_prefix))
    });
    (snapshots, errors)
}

/// One snapshot of a dataset as replication planning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The part after '@'.
    pub name: String,
    /// Identity of the snapshot's content, equal on every replica of it
    /// whatever it is called there.
    pub guid: u64,
    /// Unix time, one-second resolution.
    pub creation: i64,
    /// Transaction group that created it; orders snapshots of one dataset
    /// exactly (not comparable across pools).
    pub createtxg: u64,
}

/// What [`super::argv::snapshot_guids_args`] says of one dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotListing {
    /// Oldest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// The dataset's bookmarks (names after '#'), oldest first; OpenZFS
    /// only.
    pub bookmarks: Vec<SnapshotInfo>,
    /// The dataset's `receive_resume_token`: an interrupted `receive -s`
    /// waits to be resumed. OpenZFS only.
    pub resume_token: Option<String>,
    /// OpenZFS only.
    pub encryption: Option<Encryption>,
}

/// Parses the output of [`super::argv::snapshot_guids_args`] into the snapshots of
/// `dataset`, oldest first (by createtxg, then creation, then listing
/// order), its bookmarks and its resume token.
///
/// Strict: a line or value that cannot be read is an error rather than a
/// skipped snapshot, since a snapshot missing from a target's list could
/// hide a divergence, and a wrong guid could pick a wrong incremental base.
pub fn parse_snapshot_guids(
    dialect: Dialect,
    dataset: &str,
    text: &str,
) -> Result<SnapshotListing, String> {
    let own_prefix = format!("{dataset}@");
    let mut listing = match dialect {
        Dialect::Legacy => SnapshotListing {
            snapshots: legacy_snapshot_guids(text, &own_prefix)?,
            ..SnapshotListing::default()
        },
        Dialect::OpenZfs => openzfs_snapshot_guids(text, dataset)?,
    };
    for (list, mark) in [(&mut listing.snapshots, '@'), (&mut listing.bookmarks, '#')] {
        if let Some(bad) = list.iter().find(|s| s.name.is_empty()) {
            return Err(format!("{dataset}{mark}{}: empty name", bad.name));
        }
        // Stable: equal keys keep the listing order.
        list.sort_by_key(|s| (s.createtxg, s.creation));
    }
    Ok(listing)
}

/// The snapshots named `OWN_PREFIX...` in zfs-fuse's `zfs get` form, in
/// listing order; the first unreadable line or value is the error.
fn legacy_snapshot_guids(text: &str, own_prefix: &str) -> Result<Vec<SnapshotInfo>, String> {
    let mut errors = Vec::new();
    let objects = group_get_output(text, &mut errors);
    if let Some(first) = errors.into_iter().next() {
        return Err(first);
    }
    let mut snapshots = Vec::new();
    for obj in objects {
        if !obj.name.starts_with(own_prefix) {
            continue;
        }
        let kind = kind_of(&obj);
        if kind != "snapshot" {
            return Err(format!("{}: type {kind:?} is not a snapshot", obj.name));
        }
        let get = |prop: &str| guid_field(obj.name, prop, obj.props.get(prop).copied());
        snapshots.push(guid_info(
            own_prefix,
            obj.name,
            get("guid")?,
            get("creation")?,
            get("createtxg")?,
        )?);
    }
    Ok(snapshots)
}

/// The same from OpenZFS's `zfs list -p` form, with the dataset's own line
/// (its resume token) and its bookmarks; children's lines are skipped.
fn openzfs_snapshot_guids(text: &str, dataset: &str) -> Result<SnapshotListing, String> {
    let snapshot_prefix = format!("{dataset}@");
    let bookmark_prefix = format!("{dataset}#");
    let mut listing = SnapshotListing::default();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [
            name,
            guid,
            creation,
            createtxg,
            token,
            encryption,
            keystatus,
        ] = fields.as_slice()
        else {
            return Err(format!(
                "zfs list line {}: expected 7 tab-separated fields, got {:?}",
                n + 1,
                line
            ));
        };
        let (prefix, list) = if name.starts_with(&snapshot_prefix) {
            (&snapshot_prefix, &mut listing.snapshots)
        } else if name.starts_with(&bookmark_prefix) {
            (&bookmark_prefix, &mut listing.bookmarks)
        } else {
            if *name == dataset {
                listing.resume_token =
                    Some((*token).to_owned()).filter(|t| !t.is_empty() && t != "-");
                listing.encryption = Some(Encryption::from_properties(encryption, keystatus));
            }
            continue;
        };
        let get = |prop: &str, value: &str| guid_field(name, prop, Some(value));
        list.push(guid_info(
            prefix,
            name,
            get("guid", guid)?,
            get("creation", creation)?,
            get("createtxg", createtxg)?,
        )?);
    }
    Ok(listing)
}

/// A value planning needs: present, not empty, not zfs's `-`.
fn guid_field(snapshot: &str, prop: &str, value: Option<&str>) -> Result<String, String> {
    match value {
        Some(v) if !v.is_empty() && v != "-" => Ok(v.to_owned()),
        _ => Err(format!("{snapshot}: no {prop}")),
    }
}

/// One snapshot from its full name and the three numbers, read exactly.
fn guid_info(
    own_prefix: &str,
    name: &str,
    guid: String,
    creation: String,
    createtxg: String,
) -> Result<SnapshotInfo, String> {
    let bad = |prop: &str, value: &str| format!("{name}: {prop} is not a number: {value:?}");
    Ok(SnapshotInfo {
        name: name[own_prefix.len()..].to_owned(),
        guid: guid.parse().map_err(|_| bad("guid", &guid))?,
        creation: creation.parse().map_err(|_| bad("creation", &creation))?,
        createtxg: createtxg
            .parse()
            .map_err(|_| bad("createtxg", &createtxg))?,
    })
}

/// The snapshots with at least one hold in [`held_snapshots_args`]'s
/// output (`name<TAB>userrefs` per line).
pub fn parse_held_snapshots(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let (name, refs) = line.split_once('\t')?;
            let held = refs.trim().parse::<u64>().is_ok_and(|n| n > 0);
            (held && name.contains('@')).then(|| name.to_owned())
        })
        .collect()
}

/// The stream size from `zfs send -n -P` ([`send_estimate_args`]): its
/// `size<TAB>BYTES` line. `None` when there is none (an unexpected output).
pub fn parse_send_estimate(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|line| line.strip_prefix("size\t"))
        .find_map(|bytes| bytes.trim().parse().ok())
}

/// Where an interrupted receive stopped, from `zfs send -n -v -P -t
/// TOKEN` ([`super::argv::send_resume_info_args`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeInfo {
    /// Stream bytes the target received before the stream was cut.
    pub received: u64,
    /// The snapshot the interrupted stream was bringing (full name) and
    /// its GUID.
    pub snapshot: String,
    pub guid: u64,
    /// What is left to send, where zfs says.
    pub remaining: Option<u64>,
}

/// Reads [`ResumeInfo`] from the token's contents zfs prints
/// (`\tbytes = 0x2f9d920`, `\ttoguid = 0x...`, `\ttoname = pool/a@s`) and
/// the `size` line. `None` when a field is missing.
pub fn parse_resume_info(text: &str) -> Option<ResumeInfo> {
    let field = |key: &str| {
        text.lines()
            .filter_map(|line| line.trim().split_once(" = "))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.trim())
    };
    let hex = |key: &str| {
        let value = field(key)?;
        u64::from_str_radix(value.strip_prefix("0x").unwrap_or(value), 16).ok()
    };
    Some(ResumeInfo {
        received: hex("bytes")?,
        snapshot: field("toname")?.to_owned(),
        guid: hex("toguid")?,
        remaining: parse_send_estimate(text),
    })
}

/// Whether a dataset is encrypted, and whether its key is loaded here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encryption {
    pub encrypted: bool,
    pub key_loaded: bool,
}

impl Encryption {
    /// From the `encryption` (`off` or a cipher) and `keystatus`
    /// (`available`, `unavailable`, `-`) properties.
    pub fn from_properties(encryption: &str, keystatus: &str) -> Encryption {
        Encryption {
            encrypted: !matches!(encryption.trim(), "off" | "-" | ""),
            key_loaded: keystatus.trim() == "available",
        }
    }
}

/// Turns the first line of `zpool upgrade -v` into a version string for
/// legacy implementations ("zfs-fuse (pool version 23)").
pub fn parse_legacy_version(text: &str) -> Option<String> {
    let first = text.lines().next()?.trim();
    let rest = &first[first.find("pool version ")? + "pool version ".len()..];
    let version: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if version.is_empty() {
        return None;
    }
    Some(format!("zfs-fuse (pool version {version})"))
}

/// First line of `zfs version` ("zfs-2.2.4-1"); the second names the kernel module.
pub fn parse_openzfs_version(text: &str) -> Option<String> {
    let first = text.lines().next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_snapshots_are_those_with_userrefs() {
        // `zfs list -H -o name,userrefs -t snapshot -d 1 -- hp` on zfs-fuse.
        let text = "hp@a\t1\nhp@b\t0\nhp@c\t2\nhp@d\t-\n";
        assert_eq!(parse_held_snapshots(text), ["hp@a", "hp@c"]);
        assert!(parse_held_snapshots("").is_empty());
    }

    #[test]
    fn send_estimates_are_read_from_the_size_line() {
        // `zfs send -n -P -i @s1 -- tank/a@s2` and a full send, OpenZFS 2.3.
        assert_eq!(
            parse_send_estimate("incremental\ts1\ttank/a@s2\t1071520\nsize\t1071520\n"),
            Some(1_071_520)
        );
        assert_eq!(
            parse_send_estimate("full\ttank/a@s1\t209776448\nsize\t209776448\n"),
            Some(209_776_448)
        );
        assert_eq!(parse_send_estimate("full\ttank/a@s1\t5\n"), None);
        assert_eq!(parse_send_estimate("size\tmany\n"), None);
    }

    /// `zfs get -H -p -o name,property,value -r type,used,available,mountpoint,readonly,guid,creation,referenced -- nfhelper1`
    /// on zfs-fuse (pool version 23). nfhelper1/data/child has readonly=on
    /// and mountpoint=none; nfhelper1/ro has readonly=on but is mounted, so
    /// zfs-fuse reports the fuse mount's "rw" as readonly=off.
    const FUSE_GET: &str = "\
nfhelper1\ttype\tfilesystem
nfhelper1\tused\t1703936
nfhelper1\tavailable\t93716480
nfhelper1\tmountpoint\t/nfhelper1
nfhelper1\treadonly\toff
nfhelper1\tguid\t5157639657322432153
nfhelper1\tcreation\t1795293434
nfhelper1\treferenced\t131072
nfhelper1@rs\ttype\tsnapshot
nfhelper1@rs\tused\t90112
nfhelper1@rs\tavailable\t-
nfhelper1@rs\tmountpoint\t-
nfhelper1@rs\treadonly\t-
nfhelper1@rs\tguid\t16043236968467594541
nfhelper1@rs\tcreation\t1795293434
nfhelper1@rs\treferenced\t122880
nfhelper1/data\ttype\tfilesystem
nfhelper1/data\tused\t737280
nfhelper1/data\tavailable\t93716480
nfhelper1/data\tmountpoint\t/nfhelper1/data
nfhelper1/data\treadonly\toff
nfhelper1/data\tguid\t16490539124152947055
nfhelper1/data\tcreation\t1795293434
nfhelper1/data\treferenced\t516096
nfhelper1/data@snap1\ttype\tsnapshot
nfhelper1/data@snap1\tused\t0
nfhelper1/data@snap1\tavailable\t-
nfhelper1/data@snap1\tmountpoint\t-
nfhelper1/data@snap1\treadonly\t-
nfhelper1/data@snap1\tguid\t8923758841161047367
nfhelper1/data@snap1\tcreation\t1795293434
nfhelper1/data@snap1\treferenced\t524288
nfhelper1/data@rs\ttype\tsnapshot
nfhelper1/data@rs\tused\t0
nfhelper1/data@rs\tavailable\t-
nfhelper1/data@rs\tmountpoint\t-
nfhelper1/data@rs\treadonly\t-
nfhelper1/data@rs\tguid\t2126923976648512249
nfhelper1/data@rs\tcreation\t1795293434
nfhelper1/data@rs\treferenced\t524288
nfhelper1/data/child\ttype\tfilesystem
nfhelper1/data/child\tused\t114688
nfhelper1/data/child\tavailable\t93716480
nfhelper1/data/child\tmountpoint\tnone
nfhelper1/data/child\treadonly\ton
nfhelper1/data/child\tguid\t6170246821974789159
nfhelper1/data/child\tcreation\t1795293434
nfhelper1/data/child\treferenced\t114688
nfhelper1/data/child@rs\ttype\tsnapshot
nfhelper1/data/child@rs\tused\t0
nfhelper1/data/child@rs\tavailable\t-
nfhelper1/data/child@rs\tmountpoint\t-
nfhelper1/data/child@rs\treadonly\t-
nfhelper1/data/child@rs\tguid\t12205238285261821484
nfhelper1/data/child@rs\tcreation\t1795293434
nfhelper1/data/child@rs\treferenced\t114688
nfhelper1/leg\ttype\tfilesystem
nfhelper1/leg\tused\t114688
nfhelper1/leg\tavailable\t93716480
nfhelper1/leg\tmountpoint\tlegacy
nfhelper1/leg\treadonly\toff
nfhelper1/leg\tguid\t6875487657641570335
nfhelper1/leg\tcreation\t1795293441
nfhelper1/leg\treferenced\t114688
nfhelper1/ro\ttype\tfilesystem
nfhelper1/ro\tused\t114688
nfhelper1/ro\tavailable\t93716480
nfhelper1/ro\tmountpoint\t/nfhelper1/ro
nfhelper1/ro\treadonly\toff
nfhelper1/ro\tguid\t17326342341670407595
nfhelper1/ro\tcreation\t1795293443
nfhelper1/ro\treferenced\t114688
nfhelper1/ro@manual-2026-01-01_00-00\ttype\tsnapshot
nfhelper1/ro@manual-2026-01-01_00-00\tused\t0
nfhelper1/ro@manual-2026-01-01_00-00\tavailable\t-
nfhelper1/ro@manual-2026-01-01_00-00\tmountpoint\t-
nfhelper1/ro@manual-2026-01-01_00-00\treadonly\t-
nfhelper1/ro@manual-2026-01-01_00-00\tguid\t12977623390678308102
nfhelper1/ro@manual-2026-01-01_00-00\tcreation\t1795293485
nfhelper1/ro@manual-2026-01-01_00-00\treferenced\t114688
";

    /// `zpool list -H -o name,size,free,health` on zfs-fuse.
    const FUSE_ZPOOL_LIST: &str = "nfhelper1\t123M\t121M\tONLINE\nnftest1\t250M\t249M\tONLINE\n";

    /// `zfs get -H -p -o name,property,value type,guid,creation,used,referenced -r -- nfhelper1/data` on zfs-fuse.
    const FUSE_SNAPSHOTS: &str = "\
nfhelper1/data\ttype\tfilesystem
nfhelper1/data\tguid\t16490539124152947055
nfhelper1/data\tcreation\t1795293434
nfhelper1/data\tused\t737280
nfhelper1/data\treferenced\t516096
nfhelper1/data@snap1\ttype\tsnapshot
nfhelper1/data@snap1\tguid\t8923758841161047367
nfhelper1/data@snap1\tcreation\t1795293434
nfhelper1/data@snap1\tused\t0
nfhelper1/data@snap1\treferenced\t524288
nfhelper1/data@rs\ttype\tsnapshot
nfhelper1/data@rs\tguid\t2126923976648512249
nfhelper1/data@rs\tcreation\t1795293434
nfhelper1/data@rs\tused\t0
nfhelper1/data@rs\treferenced\t524288
nfhelper1/data/child\ttype\tfilesystem
nfhelper1/data/child\tguid\t6170246821974789159
nfhelper1/data/child\tcreation\t1795293434
nfhelper1/data/child\tused\t114688
nfhelper1/data/child\treferenced\t114688
nfhelper1/data/child@rs\ttype\tsnapshot
nfhelper1/data/child@rs\tguid\t12205238285261821484
nfhelper1/data/child@rs\tcreation\t1795293434
nfhelper1/data/child@rs\tused\t0
nfhelper1/data/child@rs\treferenced\t114688
";

    #[test]
    fn parses_sizes() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("123456789", 123_456_789),
            ("512", 512),
            ("512B", 512),
            ("1K", 1024),
            ("248M", 248 << 20),
            ("1.45M", 1_520_435),
            ("1.5G", 3 << 29),
            ("2T", 2 << 40),
            ("1P", 1 << 50),
            ("7.74E", 8_923_612_445_656_995_840),
            ("10.0k", 10240),
            (" 4G ", 4 << 30),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(*want), "{text}");
        }
        for bad in [
            "", "-", "M", "1.2.3M", "12X", "-1", "1e5", "abc", "1,5M", "16.0Z", "20E",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn parses_legacy_pool_list() {
        let (pools, errors) = parse_pool_list(FUSE_ZPOOL_LIST);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            pools,
            [
                v1::Pool {
                    name: "nfhelper1".into(),
                    size: 123 << 20,
                    free: 121 << 20,
                    health: "ONLINE".into()
                },
                v1::Pool {
                    name: "nftest1".into(),
                    size: 250 << 20,
                    free: 249 << 20,
                    health: "ONLINE".into()
                },
            ]
        );
    }

    #[test]
    fn parses_openzfs_pool_list() {
        let text = "tank\t3985729650688\t3968034721792\tONLINE\nboot-pool\t15032385536\t12884901888\tDEGRADED\n";
        let (pools, errors) = parse_pool_list(text);
        assert!(errors.is_empty());
        assert_eq!(pools[0].size, 3_985_729_650_688);
        assert_eq!(pools[1].health, "DEGRADED");
    }

    #[test]
    fn pool_list_skips_malformed_lines() {
        let text = "good\t1M\t1K\tONLINE\nonly two\tfields\n\nbad\tlots\t1K\tONLINE\n";
        let (pools, errors) = parse_pool_list(text);
        assert_eq!(pools.len(), 1);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[1].contains("'lots' is not a size"), "{errors:?}");
    }

    #[test]
    fn parses_zfs_fuse_dataset_listing() {
        let listing = parse_datasets_and_snapshots(FUSE_GET);
        assert!(listing.errors.is_empty(), "{:?}", listing.errors);
        let names: Vec<_> = listing.datasets.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "nfhelper1",
                "nfhelper1/data",
                "nfhelper1/data/child",
                "nfhelper1/leg",
                "nfhelper1/ro"
            ]
        );
        let root = &listing.datasets[0];
        assert_eq!(root.mountpoint, "/nfhelper1");
        assert_eq!(root.kind, "filesystem");
        assert!(!root.readonly);
        assert!(root.used > 0 && root.available > 0);
        let child = &listing.datasets[2];
        assert!(child.readonly);
        assert_eq!(child.mountpoint, "none");
        assert_eq!(listing.datasets[3].mountpoint, "legacy");

        let snaps: Vec<_> = listing.snapshots.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            snaps,
            [
                "nfhelper1@rs",
                "nfhelper1/data@snap1",
                "nfhelper1/data@rs",
                "nfhelper1/data/child@rs",
                "nfhelper1/ro@manual-2026-01-01_00-00"
            ]
        );
        let snap1 = &listing.snapshots[1];
        assert_eq!(snap1.guid, 8_923_758_841_161_047_367);
        assert_eq!(snap1.creation_unix, 1_795_293_434);
        assert_eq!(snap1.used, 0);
        assert_eq!(snap1.referenced, 524_288);
        // guids above i64::MAX must survive.
        assert_eq!(listing.snapshots[0].guid, 16_043_236_968_467_594_541);
    }

    #[test]
    fn parses_volumes_and_absent_values() {
        let text = "\
tank/vol\ttype\tvolume
tank/vol\tused\t16777216
tank/vol\tavailable\t1000
tank/vol\tmountpoint\t-
tank/vol\treadonly\toff
tank/fs\ttype\tfilesystem
tank/fs\tused\t-
tank/fs\tmountpoint\t/mnt/with\ttab
";
        let listing = parse_datasets_and_snapshots(text);
        assert!(listing.errors.is_empty(), "{:?}", listing.errors);
        assert_eq!(listing.datasets[0].kind, "volume");
        assert_eq!(listing.datasets[0].mountpoint, "");
        assert_eq!(listing.datasets[1].used, 0);
        assert_eq!(listing.datasets[1].mountpoint, "/mnt/with\ttab");
    }

    #[test]
    fn malformed_lines_are_skipped_and_recorded() {
        let text = "\
tank\ttype\tfilesystem
tank\tused\tlots
garbage without tabs
tank\treadonly\tmaybe
\tused\t1
tank@s\ttype\tsnapshot
tank@s\tguid\t-12
tank@s\tcreation\t1700000000
tank#b\ttype\tbookmark
tank/x\ttype\tspaceship
";
        let listing = parse_datasets_and_snapshots(text);
        assert_eq!(listing.datasets.len(), 1);
        assert_eq!(listing.datasets[0].used, 0);
        assert_eq!(listing.snapshots.len(), 1);
        assert_eq!(listing.snapshots[0].guid, 0);
        assert_eq!(listing.snapshots[0].creation_unix, 1_700_000_000);
        assert_eq!(listing.errors.len(), 6, "{:?}", listing.errors);
        assert!(listing.errors[0].contains("line 3"));
        assert!(
            listing
                .errors
                .iter()
                .any(|e| e.contains("tank: used is not a number: \"lots\""))
        );
        assert!(
            listing
                .errors
                .iter()
                .any(|e| e.contains("unknown type \"spaceship\""))
        );
    }

    #[test]
    fn type_is_inferred_from_name_when_missing() {
        let listing = parse_datasets_and_snapshots("tank\tused\t5\ntank@a\tguid\t7\n");
        assert_eq!(listing.datasets.len(), 1);
        assert_eq!(listing.snapshots[0].guid, 7);
    }

    #[test]
    fn parses_legacy_snapshot_list() {
        let (snaps, errors) =
            parse_snapshot_list(Dialect::Legacy, "nfhelper1/data", true, FUSE_SNAPSHOTS);
        assert!(errors.is_empty());
        let names: Vec<_> = snaps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "nfhelper1/data@snap1",
                "nfhelper1/data@rs",
                "nfhelper1/data/child@rs"
            ]
        );
        assert_eq!(snaps[2].guid, 12_205_238_285_261_821_484);

        // `-d 1` output also holds direct children; only own snapshots remain.
        let (own, _) =
            parse_snapshot_list(Dialect::Legacy, "nfhelper1/data", false, FUSE_SNAPSHOTS);
        assert_eq!(own.len(), 2);
    }

    #[test]
    fn parses_openzfs_snapshot_list() {
        let text = "\
tank/a@auto-2024-01-01_00-00\t1234567890123456789\t1704067200\t0\t98304
tank/a@auto-2024-01-02_00-00\t18000000000000000000\t1704153600\t4096\t102400
tank/ab@x\t1\t1\t0\t0
broken line
";
        let (snaps, errors) = parse_snapshot_list(Dialect::OpenZfs, "tank/a", false, text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(snaps.len(), 2, "tank/ab@x is not a snapshot of tank/a");
        assert_eq!(snaps[1].guid, 18_000_000_000_000_000_000);
        assert_eq!(snaps[1].creation_unix, 1_704_153_600);
        assert_eq!(snaps[1].used, 4096);
        assert_eq!(snaps[1].referenced, 102_400);
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_openzfs_version("zfs-2.2.4-1\nzfs-kmod-2.2.4-1\n").as_deref(),
            Some("zfs-2.2.4-1")
        );
        assert_eq!(parse_openzfs_version("\n"), None);
        let fuse = "This system is currently running ZFS pool version 23.\n\nThe following versions are supported:\n";
        assert_eq!(
            parse_legacy_version(fuse).as_deref(),
            Some("zfs-fuse (pool version 23)")
        );
        assert_eq!(
            parse_legacy_version("This system supports ZFS pool feature flags.\n"),
            None
        );
        assert_eq!(parse_legacy_version(""), None);
    }

    /// `zfs get -H -p -o name,property,value -d 1 type,guid,creation,createtxg -- nfhelperrsA/src`
    /// on zfs-fuse, plus a child dataset: s1 and s2 share a creation second,
    /// and the listing is not in createtxg order here on purpose.
    const FUSE_GUIDS: &str = "\
nfhelperrsA/src\ttype\tfilesystem
nfhelperrsA/src\tguid\t14503800567064099515
nfhelperrsA/src\tcreation\t1795294806
nfhelperrsA/src\tcreatetxg\t6
nfhelperrsA/src@s2\ttype\tsnapshot
nfhelperrsA/src@s2\tguid\t9605289703653711816
nfhelperrsA/src@s2\tcreation\t1795294806
nfhelperrsA/src@s2\tcreatetxg\t16
nfhelperrsA/src@s1\ttype\tsnapshot
nfhelperrsA/src@s1\tguid\t11105960089012765824
nfhelperrsA/src@s1\tcreation\t1795294806
nfhelperrsA/src@s1\tcreatetxg\t11
nfhelperrsA/src@s3\ttype\tsnapshot
nfhelperrsA/src@s3\tguid\t16108497718134897078
nfhelperrsA/src@s3\tcreation\t1795294810
nfhelperrsA/src@s3\tcreatetxg\t21
nfhelperrsA/src/child\ttype\tfilesystem
nfhelperrsA/src/child\tguid\t1
nfhelperrsA/src/child\tcreation\t1795294810
nfhelperrsA/src/child\tcreatetxg\t22
";

    #[test]
    fn parses_legacy_snapshot_guids_oldest_first() {
        let snaps = parse_snapshot_guids(Dialect::Legacy, "nfhelperrsA/src", FUSE_GUIDS)
            .unwrap()
            .snapshots;
        let order: Vec<_> = snaps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["s1", "s2", "s3"]);
        assert_eq!(
            snaps[0],
            SnapshotInfo {
                name: "s1".into(),
                guid: 11_105_960_089_012_765_824,
                creation: 1_795_294_806,
                createtxg: 11,
            }
        );
        assert!(
            parse_snapshot_guids(Dialect::Legacy, "nfhelperrsA/src", "")
                .unwrap()
                .snapshots
                .is_empty()
        );
        // A dataset whose name is a prefix of another's keeps only its own.
        let other = FUSE_GUIDS.replace("nfhelperrsA/src@", "nfhelperrsA/srcX@");
        assert!(
            parse_snapshot_guids(Dialect::Legacy, "nfhelperrsA/src", &other)
                .unwrap()
                .snapshots
                .is_empty()
        );
    }

    #[test]
    fn parses_openzfs_snapshot_guids_oldest_first() {
        let text = "\
tank/a\t99\t1704067000\t90\t-\toff\t-
tank/a/child\t98\t1704067000\t91\t1-abc-12-789c\taes-256-gcm\tavailable
tank/a@b\t18000000000000000000\t1704067200\t120\t-\toff\t-
tank/a@a\t1234567890123456789\t1704067200\t100\t-\toff\t-
tank/a@same-txg-2\t5\t1704067300\t130\t-\toff\t-
tank/a@same-txg-1\t6\t1704067300\t130\t-\toff\t-
tank/a#nasfleet-7-0000000000000005\t5\t1704067300\t130\t-\t-\t-
";
        let listing = parse_snapshot_guids(Dialect::OpenZfs, "tank/a", text).unwrap();
        let snaps = &listing.snapshots;
        let order: Vec<_> = snaps.iter().map(|s| s.name.as_str()).collect();
        // Equal (createtxg, creation) keep the listing order.
        assert_eq!(order, ["a", "b", "same-txg-2", "same-txg-1"]);
        assert_eq!(snaps[1].guid, 18_000_000_000_000_000_000);
        assert_eq!(listing.bookmarks.len(), 1);
        assert_eq!(listing.bookmarks[0].name, "nasfleet-7-0000000000000005");
        // The child's token and encryption are the child's.
        assert_eq!(listing.resume_token, None);
        assert_eq!(
            listing.encryption,
            Some(Encryption {
                encrypted: false,
                key_loaded: false
            })
        );

        let partial = "\
dst/b/big\t4440838572915340214\t1796048853\t33\t1-10615845e7-f0-789c63\taes-256-gcm\tunavailable
";
        let listing = parse_snapshot_guids(Dialect::OpenZfs, "dst/b/big", partial).unwrap();
        assert!(listing.snapshots.is_empty());
        assert_eq!(
            listing.resume_token.as_deref(),
            Some("1-10615845e7-f0-789c63")
        );
        assert_eq!(
            listing.encryption,
            Some(Encryption {
                encrypted: true,
                key_loaded: false
            })
        );
    }

    #[test]
    fn resume_info_says_where_a_receive_stopped() {
        let text = "resume token contents:
nvlist version: 0
\tobject = 0x2
\toffset = 0x2f60000
\tbytes = 0x2f9d920
\ttoguid = 0x3bab7c04699de4f5
\ttoname = src/big@s1
\tembedok = 1
\tcompressok = 1
full\tsrc/big@s1\t160161104
size\t160161104
";
        assert_eq!(
            parse_resume_info(text),
            Some(ResumeInfo {
                received: 0x2f9d920,
                snapshot: "src/big@s1".into(),
                guid: 0x3bab7c04699de4f5,
                remaining: Some(160_161_104),
            })
        );
        assert_eq!(parse_resume_info("size\t5\n"), None);
    }

    #[test]
    fn snapshot_guid_parsing_is_strict() {
        let cases: &[(Dialect, &str, &str)] = &[
            (Dialect::OpenZfs, "tank/a@x\t12\t1\n", "expected 7"),
            (
                Dialect::OpenZfs,
                "tank/a@x\t7.74E\t1\t1\t-\toff\t-\n",
                "guid is not a number",
            ),
            (
                Dialect::OpenZfs,
                "tank/a@x\t-\t1\t1\t-\toff\t-\n",
                "no guid",
            ),
            (
                Dialect::OpenZfs,
                "tank/a@x\t-1\t1\t1\t-\toff\t-\n",
                "guid is not a number",
            ),
            (Dialect::Legacy, "tank/a@x\tguid\t12\n", "no creation"),
            (
                Dialect::Legacy,
                "tank/a@x\tguid\t12\ntank/a@x\tcreation\t1\n",
                "no createtxg",
            ),
            (
                Dialect::Legacy,
                "tank/a@x\tguid\t12\ntank/a@x\tcreation\tsoon\ntank/a@x\tcreatetxg\t1\n",
                "creation is not a number",
            ),
            (
                Dialect::Legacy,
                "garbage\n",
                "expected name, property and value",
            ),
            (
                Dialect::Legacy,
                "tank/a@x\ttype\tfilesystem\ntank/a@x\tguid\t1\n",
                "is not a snapshot",
            ),
        ];
        for (dialect, text, want) in cases {
            let err = parse_snapshot_guids(*dialect, "tank/a", text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
