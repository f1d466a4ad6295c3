//! Every zfs and zpool command line the agent runs, for both CLI dialects (zfs-fuse/pool v23 and OpenZFS 2.x), and the parsers of their output.
//!
//! Command lines are built by pure functions so unit tests can check both
//! dialects without running anything; the async functions only run what the
//! builders produce and hand the text to the pure parsers.

use std::collections::HashMap;
use std::time::Duration;

// The name rules are shared with the controller and the CLI; re-exported
// here because every zfs argv builder checks them.
pub use nasfleet_common::dataset_names::{
    DatasetNameError, MAX_DATASET_NAME, check_snapshot_component, validate_dataset_name,
    validate_snapshot_component, validate_snapshot_name,
};
use nasfleet_proto::v1;
use thiserror::Error;

use crate::host::process::{self, ProcessError};

/// Default limit for one zfs/zpool call. Listing tens of thousands of
/// snapshots takes seconds, not minutes; anything slower is a hung pool.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

const ZFS: &str = "zfs";
const ZPOOL: &str = "zpool";

/// Properties read for every dataset and snapshot of a pool, in one call.
const INVENTORY_PROPERTIES: &str =
    "type,used,available,mountpoint,readonly,guid,creation,referenced";

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

/// What the zfs CLI of this host is, probed once at start (the CLI does not
/// change under a running agent) and passed to everything that runs zfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zfs {
    pub dialect: Dialect,
    /// Human-readable version, e.g. `zfs-2.2.4-1` or `zfs-fuse (pool version 23)`.
    pub version: String,
    /// Limit for each zfs/zpool call.
    pub timeout: Duration,
}

/// Why a zfs operation failed, in words a person can act on.
#[derive(Debug, Error)]
pub enum ZfsError {
    #[error(transparent)]
    InvalidName(#[from] DatasetNameError),
    #[error("Dataset not found: '{name}'")]
    DatasetNotFound { name: String },
    #[error("snapshot '{name}' already exists")]
    SnapshotExists { name: String },
    #[error("snapshot '{name}' does not exist")]
    SnapshotNotFound { name: String },
    #[error("pool '{name}' does not exist")]
    PoolNotFound { name: String },
    /// `zfs receive` refused an incremental stream: the target was modified
    /// since its most recent snapshot, or that snapshot is not the base.
    #[error(
        "Target dataset '{dataset}' has been modified or has diverged since its most recent snapshot; refusing to overwrite it without --allow-overwrite"
    )]
    Diverged { dataset: String },
    /// `zfs receive` of a full stream found the target dataset there already.
    #[error(
        "Target dataset '{dataset}' already exists and is not a replica of the source; refusing to overwrite it without --allow-overwrite"
    )]
    TargetExists { dataset: String },
    /// zfs succeeded but printed something the agent cannot read.
    #[error("could not read the output of `{command}`: {detail}")]
    UnexpectedOutput { command: String, detail: String },
    #[error(transparent)]
    Process(ProcessError),
}

impl ZfsError {
    /// Turns known zfs stderr into a typed reason; everything else keeps the
    /// command and its stderr.
    pub(crate) fn from_process(err: ProcessError, subject: &str) -> ZfsError {
        let err = without_usage(err);
        if let Some(stderr) = err.stderr() {
            if stderr.contains("dataset does not exist") {
                return ZfsError::DatasetNotFound {
                    name: subject.to_owned(),
                };
            }
            if stderr.contains("no such pool") {
                return ZfsError::PoolNotFound {
                    name: subject.to_owned(),
                };
            }
        }
        ZfsError::Process(err)
    }

    /// Turns the stderr of `zfs snapshot` into a typed reason. zfs names
    /// the object it complains about in quotes: `cannot create snapshot
    /// 'tank/a@x': dataset already exists`, `cannot open 'tank/nope':
    /// dataset does not exist` (OpenZFS may quote `tank/nope@x` there).
    fn from_snapshot_process(err: ProcessError, names: &[String]) -> ZfsError {
        let err = without_usage(err);
        let first = names.first().map(String::as_str).unwrap_or_default();
        if let Some(stderr) = err.stderr() {
            let quoted = first_quoted(stderr);
            if stderr.contains("dataset already exists") {
                let name = quoted.filter(|q| q.contains('@')).unwrap_or(first);
                return ZfsError::SnapshotExists {
                    name: name.to_owned(),
                };
            }
            if stderr.contains("dataset does not exist") {
                let name = quoted.unwrap_or(first);
                let dataset = name.split_once('@').map_or(name, |(d, _)| d);
                return ZfsError::DatasetNotFound {
                    name: dataset.to_owned(),
                };
            }
            if stderr.contains("no such pool") {
                let name = quoted.unwrap_or(first);
                let pool = name.split(['/', '@']).next().unwrap_or(name);
                return ZfsError::PoolNotFound {
                    name: pool.to_owned(),
                };
            }
        }
        ZfsError::Process(err)
    }

    /// Turns the stderr of `zfs destroy` of one snapshot into a typed
    /// reason. zfs says "dataset does not exist" for a missing snapshot
    /// and for a missing dataset alike; either way the snapshot is absent.
    pub(crate) fn from_destroy_process(err: ProcessError, full_name: &str) -> ZfsError {
        let err = without_usage(err);
        if err
            .stderr()
            .is_some_and(|e| e.contains("dataset does not exist") || e.contains("no such pool"))
        {
            return ZfsError::SnapshotNotFound {
                name: full_name.to_owned(),
            };
        }
        ZfsError::Process(err)
    }
}

/// The first `'...'` in a zfs message. Validated names never contain a quote.
fn first_quoted(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once('\'')?;
    let (quoted, _) = rest.split_once('\'')?;
    Some(quoted)
}

/// zfs and zpool follow a one-line complaint with their whole usage text
/// (dozens of lines on zfs-fuse); only the complaint helps a person.
fn without_usage(err: ProcessError) -> ProcessError {
    match err {
        ProcessError::Failed {
            command,
            code,
            stderr,
        } => {
            let cut = if stderr.starts_with("usage:") {
                stderr.find('\n')
            } else {
                stderr.find("\nusage:")
            };
            let stderr = match cut {
                Some(i) => stderr[..i].trim_end().to_owned(),
                None => stderr,
            };
            ProcessError::Failed {
                command,
                code,
                stderr,
            }
        }
        other => other,
    }
}

/// Checks a set of snapshots to be taken together: each name is valid, all
/// are in one pool (OpenZFS takes several snapshots atomically only within
/// a pool), and no dataset gets two of them (nor, when `recursive`, a
/// dataset and its descendant, which `-r` would snapshot twice).
fn validate_snapshot_set(names: &[String], recursive: bool) -> Result<(), DatasetNameError> {
    let Some(first) = names.first() else {
        return Err(DatasetNameError::NoSnapshots);
    };
    let (first_dataset, _) = validate_snapshot_name(first)?;
    let pool_of = |dataset: &str| dataset.split('/').next().unwrap_or(dataset).to_owned();
    let pool = pool_of(first_dataset);
    let mut seen: Vec<(&str, &str)> = Vec::with_capacity(names.len());
    for name in names {
        let (dataset, _) = validate_snapshot_name(name)?;
        if pool_of(dataset) != pool {
            return Err(DatasetNameError::SeveralPools {
                first: first.clone(),
                other: name.clone(),
            });
        }
        let below = |upper: &str, lower: &str| {
            lower
                .strip_prefix(upper)
                .is_some_and(|rest| rest.starts_with('/'))
        };
        if let Some((earlier, _)) = seen
            .iter()
            .find(|(_, d)| *d == dataset || (recursive && (below(d, dataset) || below(dataset, d))))
        {
            return Err(DatasetNameError::Overlapping {
                first: (*earlier).to_owned(),
                other: name.clone(),
            });
        }
        seen.push((name, dataset));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Command-line builders (pure).

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// `zfs version`: OpenZFS 0.8+ only; zfs-fuse answers "unrecognized command".
pub fn version_args() -> Vec<String> {
    args(&["version"])
}

/// `zpool upgrade -v`: prints the pool version on legacy implementations.
pub fn pool_version_args() -> Vec<String> {
    args(&["upgrade", "-v"])
}

/// `zpool list` of every pool. zfs-fuse has no `-p` here (nor on `zpool
/// get`), so its sizes are human-readable and only approximately exact.
/// All pools are listed rather than named ones: a missing name makes zpool
/// exit non-zero, and the caller wants to say which pool is missing anyway.
pub fn list_pools_args(dialect: Dialect) -> Vec<String> {
    match dialect {
        Dialect::Legacy => args(&["list", "-H", "-o", "name,size,free,health"]),
        Dialect::OpenZfs => args(&["list", "-H", "-p", "-o", "name,size,free,health"]),
    }
}

/// One recursive `zfs get` for every dataset and snapshot of a pool. This
/// form is the same in both dialects: `zfs get -p` prints exact numbers even
/// on zfs-fuse, and without `-t` it includes snapshots.
pub fn list_datasets_and_snapshots_args(pool: &str) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(pool)?;
    let mut out = args(&[
        "get",
        "-H",
        "-p",
        "-o",
        "name,property,value",
        "-r",
        INVENTORY_PROPERTIES,
        "--",
    ]);
    out.push(pool.to_owned());
    Ok(out)
}

/// Lists the snapshots of `dataset` (and of its descendants if `recursive`).
///
/// OpenZFS has `zfs list -p -t snapshot`. zfs-fuse's `zfs list` has no `-p`
/// and prints even `guid` human-readable ("7.74E"), so there the `zfs get`
/// form is used. Non-recursive listing uses `-d 1`, which also yields
/// direct child datasets; the parser keeps only the dataset's own snapshots.
pub fn list_snapshots_args(
    dialect: Dialect,
    dataset: &str,
    recursive: bool,
) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(dataset)?;
    let depth: &[&str] = if recursive { &["-r"] } else { &["-d", "1"] };
    let mut out = match dialect {
        Dialect::OpenZfs => args(&[
            "list",
            "-H",
            "-p",
            "-t",
            "snapshot",
            "-o",
            "name,guid,creation,used,referenced",
        ]),
        Dialect::Legacy => args(&["get", "-H", "-p", "-o", "name,property,value"]),
    };
    out.extend(args(depth));
    if dialect == Dialect::Legacy {
        out.push("type,guid,creation,used,referenced".to_owned());
    }
    out.push("--".to_owned());
    out.push(dataset.to_owned());
    Ok(out)
}

/// `zfs snapshot [-r] -- a@x [b@x ...]`: the OpenZFS form, which takes all
/// the snapshots atomically (all or none) in one transaction group.
///
/// zfs-fuse takes one snapshot per call ("too many arguments"); use
/// [`create_snapshots_commands`] to get the right form for a dialect.
pub fn create_snapshots_args(
    names: &[String],
    recursive: bool,
) -> Result<Vec<String>, DatasetNameError> {
    validate_snapshot_set(names, recursive)?;
    let mut out = args(&["snapshot"]);
    if recursive {
        out.push("-r".to_owned());
    }
    out.push("--".to_owned());
    out.extend(names.iter().cloned());
    Ok(out)
}

/// The zfs calls that take `names`: one atomic call on OpenZFS, one call
/// per snapshot on zfs-fuse. The whole set is validated first either way.
pub fn create_snapshots_commands(
    dialect: Dialect,
    names: &[String],
    recursive: bool,
) -> Result<Vec<Vec<String>>, DatasetNameError> {
    let all = create_snapshots_args(names, recursive)?;
    Ok(match dialect {
        Dialect::OpenZfs => vec![all],
        Dialect::Legacy => names
            .iter()
            .map(|name| {
                let mut one = args(&["snapshot"]);
                if recursive {
                    one.push("-r".to_owned());
                }
                one.push("--".to_owned());
                one.push(name.clone());
                one
            })
            .collect(),
    })
}

/// `zfs destroy -- dataset@snapshot`, the same in both dialects. Refuses
/// anything that is not a snapshot name, so no bug upstream can turn this
/// into the destruction of a dataset; never recursive.
pub fn destroy_snapshot_args(full_name: &str) -> Result<Vec<String>, DatasetNameError> {
    validate_snapshot_name(full_name)?;
    let mut out = args(&["destroy", "--"]);
    out.push(full_name.to_owned());
    Ok(out)
}

// ---------------------------------------------------------------------------
// Replication command lines (pure): `zfs send`, `zfs receive` and what is
// run on the target around them.

/// Properties read per snapshot for replication planning: exact `guid`
/// (the identity of a snapshot across systems), and `createtxg` with
/// `creation` for the order (`creation` has one-second resolution, so two
/// snapshots taken in the same second need `createtxg`).
const SNAPSHOT_GUID_PROPERTIES: &str = "name,guid,creation,createtxg";

/// Checks an incremental base: `@short` (a snapshot of the sent dataset) or
/// a full `dataset@snapshot` name (e.g. a clone's origin).
fn validate_incremental_base(base: &str) -> Result<(), DatasetNameError> {
    match base.strip_prefix('@') {
        Some(short) => check_snapshot_component(short, base),
        None => validate_snapshot_name(base).map(|_| ()),
    }
}

/// `zfs send [-i BASE] -- DATASET@SNAPSHOT`: a full stream, or an
/// incremental one from `from` (`@short` or a full snapshot name).
///
/// The same in both dialects, and deliberately plain: no `-p` (properties
/// such as `mountpoint` would come along and could mount the replica over
/// something on the target), no `-R` (children are replicated one dataset
/// at a time by the caller), and none of OpenZFS's `-L`/`-c`/`-e`/`-w`
/// stream features, so a stream from an OpenZFS source stays receivable by
/// an old (pool version 23) target. zfs-fuse's getopt accepts `--` here.
pub fn send_args(
    dialect: Dialect,
    from: Option<&str>,
    snapshot: &str,
) -> Result<Vec<String>, DatasetNameError> {
    let _same_in_both = dialect;
    validate_snapshot_name(snapshot)?;
    let mut out = args(&["send"]);
    if let Some(from) = from {
        validate_incremental_base(from)?;
        out.push("-i".to_owned());
        out.push(from.to_owned());
    }
    out.push("--".to_owned());
    out.push(snapshot.to_owned());
    Ok(out)
}

/// `zfs receive [-u] [-F] -- TARGET`.
///
/// `-F` (only when the caller chose to overwrite) rolls the target back to
/// its most recent snapshot first, discarding changes made there. OpenZFS
/// also gets `-u`: the replica is not mounted, so it cannot cover another
/// file system at an inherited mountpoint, and nothing (not even atime
/// updates) modifies it between runs. zfs-fuse has no `-u` (it mounts the
/// replica; the caller sets `readonly=on`).
pub fn recv_args(
    dialect: Dialect,
    target_dataset: &str,
    force: bool,
) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(target_dataset)?;
    let mut out = args(&["receive"]);
    if dialect == Dialect::OpenZfs {
        out.push("-u".to_owned());
    }
    if force {
        out.push("-F".to_owned());
    }
    out.push("--".to_owned());
    out.push(target_dataset.to_owned());
    Ok(out)
}

/// Lists the snapshots of `dataset` itself (not of its children) with exact
/// guid, creation and createtxg; parse with [`parse_snapshot_guids`].
///
/// zfs-fuse's `zfs list` prints `guid` human-readable ("7.74E"), useless
/// for comparing snapshots, so the Legacy form is a `zfs get -p -d 1`
/// (which also lists the dataset and its direct children; the parser keeps
/// only the snapshots).
pub fn snapshot_guids_args(
    dialect: Dialect,
    dataset: &str,
) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(dataset)?;
    let mut out = match dialect {
        Dialect::OpenZfs => args(&[
            "list",
            "-H",
            "-p",
            "-t",
            "snapshot",
            "-d",
            "1",
            "-o",
            SNAPSHOT_GUID_PROPERTIES,
        ]),
        Dialect::Legacy => args(&[
            "get",
            "-H",
            "-p",
            "-o",
            "name,property,value",
            "-d",
            "1",
            "type,guid,creation,createtxg",
        ]),
    };
    out.push("--".to_owned());
    out.push(dataset.to_owned());
    Ok(out)
}

/// `zfs list -H -o name -- DATASET`: exits 0 if the dataset exists; if not,
/// it fails with "dataset does not exist" (see [`is_missing_dataset`]).
/// The same in both dialects.
pub fn dataset_exists_args(dataset: &str) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(dataset)?;
    let mut out = args(&["list", "-H", "-o", "name", "--"]);
    out.push(dataset.to_owned());
    Ok(out)
}

/// Whether a failed zfs call's stderr says the dataset it was given does
/// not exist (both dialects: `cannot open 'X': dataset does not exist`).
pub fn is_missing_dataset(stderr: &str) -> bool {
    stderr.contains("dataset does not exist")
}

/// The parent of a dataset name, `None` for a pool's root dataset.
pub fn parent_dataset(dataset: &str) -> Option<&str> {
    dataset.rsplit_once('/').map(|(parent, _)| parent)
}

/// `zfs create -p -- PARENT`: creates the parent of `dataset` and any
/// missing ancestors, so `zfs receive` can create `dataset` itself. `None`
/// for a pool's root dataset, which has no parent to create. Succeeds when
/// the parent exists already (checked on zfs-fuse), but the caller checks
/// first: a delegated replication user may lack the `create` permission.
pub fn create_parents_args(dataset: &str) -> Result<Option<Vec<String>>, DatasetNameError> {
    validate_dataset_name(dataset)?;
    Ok(parent_dataset(dataset).map(|parent| {
        let mut out = args(&["create", "-p", "--"]);
        out.push(parent.to_owned());
        out
    }))
}

/// `zfs set readonly=on DATASET`, for a replica. No `--`: zfs-fuse's
/// `zfs set` takes no options and would treat `--` as a dataset name
/// ("cannot open '--'"); the validated name cannot start with '-'.
///
/// On zfs-fuse a mounted dataset then reads back as `readonly off
/// temporary` (the fuse mount reports rw) although writes fail with EROFS.
pub fn set_readonly_args(dataset: &str) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(dataset)?;
    let mut out = args(&["set", "readonly=on"]);
    out.push(dataset.to_owned());
    Ok(out)
}

// ---------------------------------------------------------------------------
// Parsers (pure).

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

/// Pools from [`list_pools_args`] output, plus a message per skipped line.
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
    }
}

/// Parses the output of [`list_datasets_and_snapshots_args`].
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

/// Parses the output of [`list_snapshots_args`]. Only snapshots of `dataset`
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

/// Parses the output of [`snapshot_guids_args`] into the snapshots of
/// `dataset`, oldest first (by createtxg, then creation, then listing
/// order).
///
/// Strict: a line or value that cannot be read is an error rather than a
/// skipped snapshot, since a snapshot missing from a target's list could
/// hide a divergence, and a wrong guid could pick a wrong incremental base.
pub fn parse_snapshot_guids(
    dialect: Dialect,
    dataset: &str,
    text: &str,
) -> Result<Vec<SnapshotInfo>, String> {
    let own_prefix = format!("{dataset}@");
    let mut snapshots = Vec::new();
    let field = |snapshot: &str, prop: &str, value: Option<&str>| -> Result<String, String> {
        match value {
            Some(v) if !v.is_empty() && v != "-" => Ok(v.to_owned()),
            _ => Err(format!("{snapshot}: no {prop}")),
        }
    };
    let info = |name: &str, guid: String, creation: String, createtxg: String| {
        let bad = |prop: &str, value: &str| format!("{name}: {prop} is not a number: {value:?}");
        Ok::<_, String>(SnapshotInfo {
            name: name[own_prefix.len()..].to_owned(),
            guid: guid.parse().map_err(|_| bad("guid", &guid))?,
            creation: creation.parse().map_err(|_| bad("creation", &creation))?,
            createtxg: createtxg
                .parse()
                .map_err(|_| bad("createtxg", &createtxg))?,
        })
    };
    match dialect {
        Dialect::Legacy => {
            let mut errors = Vec::new();
            let objects = group_get_output(text, &mut errors);
            if let Some(first) = errors.into_iter().next() {
                return Err(first);
            }
            for obj in objects {
                if !obj.name.starts_with(&own_prefix) {
                    continue;
                }
                let kind = kind_of(&obj);
                if kind != "snapshot" {
                    return Err(format!("{}: type {kind:?} is not a snapshot", obj.name));
                }
                let get = |prop: &str| field(obj.name, prop, obj.props.get(prop).copied());
                snapshots.push(info(
                    obj.name,
                    get("guid")?,
                    get("creation")?,
                    get("createtxg")?,
                )?);
            }
        }
        Dialect::OpenZfs => {
            for (n, line) in text.lines().enumerate() {
                if line.is_empty() {
                    continue;
                }
                let fields: Vec<&str> = line.split('\t').collect();
                let [name, guid, creation, createtxg] = fields.as_slice() else {
                    return Err(format!(
                        "zfs list line {}: expected 4 tab-separated fields, got {:?}",
                        n + 1,
                        line
                    ));
                };
                if !name.starts_with(&own_prefix) {
                    continue;
                }
                let get = |prop: &str, value: &str| field(name, prop, Some(value));
                snapshots.push(info(
                    name,
                    get("guid", guid)?,
                    get("creation", creation)?,
                    get("createtxg", createtxg)?,
                )?);
            }
        }
    }
    if let Some(bad) = snapshots.iter().find(|s| s.name.is_empty()) {
        return Err(format!("{dataset}@{}: empty snapshot name", bad.name));
    }
    // Stable: equal keys keep the listing order.
    snapshots.sort_by_key(|s| (s.createtxg, s.creation));
    Ok(snapshots)
}

/// Turns the stderr of a failed `zfs receive` into a typed reason, if it
/// is a known one. zfs-fuse wraps its messages at 80 columns ("... does
/// not\nmatch incremental source"), so whitespace is normalised first.
pub fn recv_error(stderr: &str, target_dataset: &str) -> Option<ZfsError> {
    let text = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    let dataset = || target_dataset.to_owned();
    if text.contains("has been modified since most recent snapshot")
        || text.contains("does not match incremental source")
    {
        return Some(ZfsError::Diverged { dataset: dataset() });
    }
    // Full stream onto an existing dataset: "destination 'X' exists / must
    // specify -F to overwrite it", or with -F onto one that has snapshots:
    // "destination has snapshots (eg. X@s) / must destroy them".
    if (text.contains("destination '") && text.contains("' exists"))
        || text.contains("destination has snapshots")
    {
        return Some(ZfsError::TargetExists { dataset: dataset() });
    }
    if text.contains("no such pool") {
        let name = first_quoted(&text).unwrap_or(target_dataset);
        let pool = name.split(['/', '@']).next().unwrap_or(name);
        return Some(ZfsError::PoolNotFound {
            name: pool.to_owned(),
        });
    }
    if text.contains("does not exist") {
        let name = first_quoted(&text).unwrap_or(target_dataset);
        return Some(ZfsError::DatasetNotFound {
            name: name.to_owned(),
        });
    }
    None
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

// ---------------------------------------------------------------------------
// Running.

/// Probes which CLI dialect this host has. Never fails: a host whose zfs
/// cannot even be asked is treated as legacy with an unknown version, and
/// the calls that follow report the real problem.
pub async fn probe_dialect() -> Zfs {
    probe_dialect_with_timeout(DEFAULT_TIMEOUT).await
}

/// [`probe_dialect`] with a chosen per-call timeout, kept for later calls.
pub async fn probe_dialect_with_timeout(timeout: Duration) -> Zfs {
    match process::run(ZFS, &version_args(), timeout).await {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(version) = parse_openzfs_version(&text) {
                return Zfs {
                    dialect: Dialect::OpenZfs,
                    version,
                    timeout,
                };
            }
        }
        Err(err) => {
            // zfs-fuse follows its refusal with sixty lines of usage; the first line says it all.
            let text = err.to_string();
            let first = text.lines().next().unwrap_or_default();
            tracing::debug!(err = %first, "`zfs version` failed; assuming the legacy dialect");
        }
    }
    let version = match process::run(ZPOOL, &pool_version_args(), timeout).await {
        Ok(out) => parse_legacy_version(&String::from_utf8_lossy(&out.stdout)),
        Err(err) => {
            tracing::warn!(%err, "could not determine the zfs version");
            None
        }
    };
    Zfs {
        dialect: Dialect::Legacy,
        version: version.unwrap_or_else(|| "unknown".to_owned()),
        timeout,
    }
}

impl Zfs {
    /// A handle for a known dialect, e.g. from configuration or in tests.
    pub fn new(dialect: Dialect, version: impl Into<String>) -> Zfs {
        Zfs {
            dialect,
            version: version.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Every pool on the host, with parse problems of individual lines.
    pub async fn list_pools(&self) -> Result<(Vec<v1::Pool>, Vec<String>), ZfsError> {
        let out = process::run(ZPOOL, &list_pools_args(self.dialect), self.timeout)
            .await
            .map_err(|e| ZfsError::Process(without_usage(e)))?;
        Ok(parse_pool_list(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Every dataset and snapshot of `pool`, in one zfs call.
    pub async fn list_datasets_and_snapshots(
        &self,
        pool: &str,
    ) -> Result<DatasetListing, ZfsError> {
        let args = list_datasets_and_snapshots_args(pool)?;
        let out = process::run(ZFS, &args, self.timeout)
            .await
            .map_err(|e| ZfsError::from_process(e, pool))?;
        Ok(parse_datasets_and_snapshots(&String::from_utf8_lossy(
            &out.stdout,
        )))
    }

    /// Snapshots of `dataset` (and of its descendants if `recursive`).
    pub async fn list_snapshots(
        &self,
        dataset: &str,
        recursive: bool,
    ) -> Result<(Vec<v1::Snapshot>, Vec<String>), ZfsError> {
        let args = list_snapshots_args(self.dialect, dataset, recursive)?;
        let out = process::run(ZFS, &args, self.timeout)
            .await
            .map_err(|e| ZfsError::from_process(e, dataset))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(parse_snapshot_list(self.dialect, dataset, recursive, &text))
    }

    /// Takes the snapshots `names` (full `dataset@snapshot` names, one pool,
    /// at most one per dataset), each recursively if `recursive`.
    ///
    /// All or none: OpenZFS takes them atomically in one call. zfs-fuse
    /// takes one per call, so there they are taken one by one and, if one
    /// fails, those this call already took are destroyed again (best
    /// effort; a failure to do so is logged) before the error is returned.
    pub async fn create_snapshots(
        &self,
        names: &[String],
        recursive: bool,
    ) -> Result<(), ZfsError> {
        let commands = create_snapshots_commands(self.dialect, names, recursive)?;
        let mut taken: Vec<&String> = Vec::new();
        for (command, name) in commands.iter().zip(names) {
            if let Err(err) = process::run(ZFS, command, self.timeout).await {
                let err = ZfsError::from_snapshot_process(err, &names[taken.len()..]);
                for done in taken {
                    self.roll_back_snapshot(done, recursive).await;
                }
                return Err(err);
            }
            taken.push(name);
        }
        Ok(())
    }

    /// Destroys what one `zfs snapshot [-r] name` of
    /// [`create_snapshots`](Zfs::create_snapshots) took. After `-r`, every
    /// descendant's snapshot of that name is ours: `-r` fails as a whole
    /// when any of them already exists.
    async fn roll_back_snapshot(&self, full_name: &str, recursive: bool) {
        let Some((dataset, snapshot)) = full_name.split_once('@') else {
            return;
        };
        let mut doomed = vec![full_name.to_owned()];
        if recursive {
            match self.list_snapshots(dataset, true).await {
                Ok((snapshots, _)) => {
                    let suffix = format!("@{snapshot}");
                    doomed = snapshots
                        .into_iter()
                        .map(|s| s.name)
                        .filter(|n| n.ends_with(&suffix))
                        .collect();
                }
                Err(err) => {
                    tracing::warn!(%full_name, %err, "could not list snapshots to roll back");
                }
            }
        }
        for name in doomed {
            if let Err(err) = self.destroy_snapshot(&name).await {
                tracing::warn!(%name, %err, "could not roll back a snapshot taken by a failed call");
            }
        }
    }

    /// Destroys one snapshot. Only ever a snapshot: a name without '@' is
    /// refused before zfs runs.
    pub async fn destroy_snapshot(&self, full_name: &str) -> Result<(), ZfsError> {
        let args = destroy_snapshot_args(full_name)?;
        process::run(ZFS, &args, self.timeout)
            .await
            .map_err(|e| ZfsError::from_destroy_process(e, full_name))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn accepts_valid_dataset_names() {
        for name in ["tank", "tank/a", "tank/a-b/c_d.e:f", "t1/2/3", "Pool/-x"] {
            assert_eq!(validate_dataset_name(name), Ok(()), "{name}");
        }
        assert_eq!(
            validate_dataset_name(&format!("t/{}", "a".repeat(253))),
            Ok(())
        );
    }

    #[test]
    fn refuses_hostile_dataset_names() {
        let hostile = [
            "",
            "-rf",
            "-",
            "a;b",
            "a/../b",
            "a/./b",
            "..",
            "$(x)",
            "tank/$(x)",
            "a b",
            " tank",
            "tank/",
            "/tank",
            "tank//a",
            "1tank",
            "_tank",
            "tank@snap",
            "tank#bm",
            "tank/a\nb",
            "tank\t",
            "tank/`id`",
            "tank/a|b",
            "tank/a'b",
            "tank/ä",
            "tank\\a",
        ];
        for name in hostile {
            assert!(
                validate_dataset_name(name).is_err(),
                "{name:?} was accepted"
            );
        }
        // zfs allows spaces below the pool; they travel as data.
        assert_eq!(validate_dataset_name("tank/a b/c d"), Ok(()));
        assert_eq!(
            validate_dataset_name("-rf"),
            Err(DatasetNameError::BadStart { name: "-rf".into() })
        );
        assert_eq!(
            validate_dataset_name("a;b"),
            Err(DatasetNameError::BadCharacter {
                name: "a;b".into(),
                bad: ';'
            })
        );
        assert!(matches!(
            validate_dataset_name("a/../b"),
            Err(DatasetNameError::DotComponent { .. })
        ));
        assert!(matches!(
            validate_dataset_name(&format!("t/{}", "a".repeat(254))),
            Err(DatasetNameError::TooLong { .. })
        ));
        let msg = validate_dataset_name("a b").unwrap_err().to_string();
        assert_eq!(
            msg,
            "dataset name 'a b' contains ' '; only letters, digits, '_', '.', ':', '-', spaces (not in the pool name) and '/' between components are allowed"
        );
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn snapshot_names_are_checked() {
        assert_eq!(
            validate_snapshot_name("tank/a@auto-2026-01-01_00-00"),
            Ok(("tank/a", "auto-2026-01-01_00-00"))
        );
        assert_eq!(validate_snapshot_name("tank@a b"), Ok(("tank", "a b")));
        assert_eq!(validate_snapshot_component("x:y.z_1-2 3"), Ok(()));
        for bad in [
            "tank/a",
            "tank",
            "",
            "tank/a@",
            "tank/a@.",
            "tank/a@..",
            "tank/a@x@y",
            "tank/a@x/y",
            "tank/a@x;y",
            "tank/a@$(id)",
            "tank/a@x\ny",
            "tank/a@x%y",
            "tank/a@x#y",
            "tank/a@x'y",
            "tank/a@ä",
            "-rf@x",
            "tank/../a@x",
            "@x",
        ] {
            assert!(validate_snapshot_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            validate_snapshot_name("tank/a").unwrap_err().to_string(),
            "'tank/a' is not a snapshot name (dataset@snapshot)"
        );
        assert_eq!(
            validate_snapshot_name("tank/a@x/y")
                .unwrap_err()
                .to_string(),
            "snapshot name 'tank/a@x/y' contains '/'; after '@' only letters, digits, spaces, '_', '.', ':' and '-' are allowed"
        );
        assert_eq!(
            validate_snapshot_component("x@y"),
            Err(DatasetNameError::SnapshotBadCharacter {
                name: "x@y".into(),
                bad: '@'
            })
        );
        let long = format!("tank/{}@{}", "a".repeat(199), "b".repeat(50));
        assert!(validate_snapshot_name(&long).is_ok());
        assert!(matches!(
            validate_snapshot_name(&format!("{long}b")),
            Err(DatasetNameError::TooLong { .. })
        ));
    }

    #[test]
    fn create_snapshots_commands_for_both_dialects() {
        let two = names(&["tank/a@s", "tank/b/c@s"]);
        assert_eq!(
            create_snapshots_args(&two, false).unwrap(),
            ["snapshot", "--", "tank/a@s", "tank/b/c@s"]
        );
        assert_eq!(
            create_snapshots_args(&two, true).unwrap(),
            ["snapshot", "-r", "--", "tank/a@s", "tank/b/c@s"]
        );
        assert_eq!(
            create_snapshots_commands(Dialect::OpenZfs, &two, true).unwrap(),
            [create_snapshots_args(&two, true).unwrap()]
        );
        let legacy = create_snapshots_commands(Dialect::Legacy, &two, true).unwrap();
        assert_eq!(legacy.len(), 2);
        assert_eq!(strs(&legacy[0]), ["snapshot", "-r", "--", "tank/a@s"]);
        assert_eq!(strs(&legacy[1]), ["snapshot", "-r", "--", "tank/b/c@s"]);
        let one = create_snapshots_commands(Dialect::Legacy, &names(&["tank@x"]), false).unwrap();
        assert_eq!(one, [["snapshot", "--", "tank@x"]]);
    }

    #[test]
    fn create_snapshots_refuses_bad_sets() {
        for dialect in [Dialect::Legacy, Dialect::OpenZfs] {
            let refuse = |v: &[&str], recursive: bool| {
                create_snapshots_commands(dialect, &names(v), recursive).unwrap_err()
            };
            assert_eq!(refuse(&[], false), DatasetNameError::NoSnapshots);
            assert!(matches!(
                refuse(&["tank/a"], false),
                DatasetNameError::NotASnapshot { .. }
            ));
            assert!(matches!(
                refuse(&["tank/a@x", "-r"], false),
                DatasetNameError::NotASnapshot { .. }
            ));
            assert!(matches!(
                refuse(&["tank/a@x", "tank/a@y"], false),
                DatasetNameError::Overlapping { .. }
            ));
            assert_eq!(
                refuse(&["tank/a@x", "tank/a/b@x"], true),
                DatasetNameError::Overlapping {
                    first: "tank/a@x".into(),
                    other: "tank/a/b@x".into()
                }
            );
            assert!(matches!(
                refuse(&["tank/a/b@x", "tank/a@x"], true),
                DatasetNameError::Overlapping { .. }
            ));
            assert_eq!(
                refuse(&["tank/a@x", "other/a@x"], false).to_string(),
                "snapshots 'tank/a@x' and 'other/a@x' are in different pools; one zfs call takes snapshots of one pool only"
            );
        }
        // Without -r a dataset and its child may be snapshotted together,
        // and "tank/ab" is no descendant of "tank/a".
        assert!(create_snapshots_args(&names(&["tank/a@x", "tank/a/b@x"]), false).is_ok());
        assert!(create_snapshots_args(&names(&["tank/a@x", "tank/ab@x"]), true).is_ok());
    }

    #[test]
    fn destroy_only_ever_takes_a_snapshot() {
        assert_eq!(
            destroy_snapshot_args("tank/a@auto-2026-01-01_00-00").unwrap(),
            ["destroy", "--", "tank/a@auto-2026-01-01_00-00"]
        );
        for not_a_snapshot in [
            "tank",
            "tank/a",
            "-r",
            "tank/a@",
            "@x",
            "tank/a@x@y",
            "tank/a@x/y",
        ] {
            assert!(
                destroy_snapshot_args(not_a_snapshot).is_err(),
                "{not_a_snapshot:?} would have been destroyed"
            );
        }
    }

    #[test]
    fn snapshot_stderr_becomes_typed_error() {
        let failed = |stderr: &str| ProcessError::Failed {
            command: "zfs snapshot".into(),
            code: Some(1),
            stderr: stderr.into(),
        };
        let req = names(&["nfhelperA/a@s1"]);
        // Captured from zfs-fuse.
        let e = ZfsError::from_snapshot_process(
            failed("cannot create snapshot 'nfhelperA/a@s1': dataset already exists"),
            &req,
        );
        assert_eq!(e.to_string(), "snapshot 'nfhelperA/a@s1' already exists");
        let e = ZfsError::from_snapshot_process(
            failed(
                "cannot create snapshot 'nfhelperA/a/c@s1': dataset already exists\nno snapshots were created",
            ),
            &req,
        );
        assert_eq!(e.to_string(), "snapshot 'nfhelperA/a/c@s1' already exists");
        let e = ZfsError::from_snapshot_process(
            failed("cannot open 'nfhelperA/nope': dataset does not exist"),
            &names(&["nfhelperA/nope@s1"]),
        );
        assert_eq!(e.to_string(), "Dataset not found: 'nfhelperA/nope'");
        // OpenZFS names the snapshot it could not create.
        let e = ZfsError::from_snapshot_process(
            failed("cannot create snapshot 'tank/nope@s1': dataset does not exist"),
            &names(&["tank/a@s1", "tank/nope@s1"]),
        );
        assert!(matches!(&e, ZfsError::DatasetNotFound { name } if name == "tank/nope"));
        let e = ZfsError::from_snapshot_process(
            failed("cannot create snapshot 'nopool/a@s': no such pool"),
            &names(&["nopool/a@s"]),
        );
        assert_eq!(e.to_string(), "pool 'nopool' does not exist");
        let e = ZfsError::from_snapshot_process(failed("out of space"), &req);
        assert!(e.to_string().ends_with(": out of space"), "{e}");

        let e = ZfsError::from_destroy_process(
            failed("cannot open 'nfhelperA/a@nope': dataset does not exist"),
            "nfhelperA/a@nope",
        );
        assert_eq!(e.to_string(), "snapshot 'nfhelperA/a@nope' does not exist");
        let e = ZfsError::from_destroy_process(
            failed(
                "cannot destroy 'tank/a@s': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\ntank/clone",
            ),
            "tank/a@s",
        );
        assert!(matches!(e, ZfsError::Process(_)));
    }

    #[test]
    fn probe_commands() {
        assert_eq!(version_args(), ["version"]);
        assert_eq!(pool_version_args(), ["upgrade", "-v"]);
    }

    #[test]
    fn pool_list_differs_by_dialect() {
        assert_eq!(
            strs(&list_pools_args(Dialect::Legacy)),
            ["list", "-H", "-o", "name,size,free,health"]
        );
        assert_eq!(
            strs(&list_pools_args(Dialect::OpenZfs)),
            ["list", "-H", "-p", "-o", "name,size,free,health"]
        );
    }

    #[test]
    fn dataset_listing_is_one_recursive_get() {
        let a = list_datasets_and_snapshots_args("tank").unwrap();
        assert_eq!(
            strs(&a),
            [
                "get",
                "-H",
                "-p",
                "-o",
                "name,property,value",
                "-r",
                "type,used,available,mountpoint,readonly,guid,creation,referenced",
                "--",
                "tank"
            ]
        );
        assert!(list_datasets_and_snapshots_args("-rf").is_err());
    }

    #[test]
    fn snapshot_listing_differs_by_dialect() {
        let open = list_snapshots_args(Dialect::OpenZfs, "tank/a", true).unwrap();
        assert_eq!(
            strs(&open),
            [
                "list",
                "-H",
                "-p",
                "-t",
                "snapshot",
                "-o",
                "name,guid,creation,used,referenced",
                "-r",
                "--",
                "tank/a"
            ]
        );
        let legacy = list_snapshots_args(Dialect::Legacy, "tank/a", true).unwrap();
        assert_eq!(
            strs(&legacy),
            [
                "get",
                "-H",
                "-p",
                "-o",
                "name,property,value",
                "-r",
                "type,guid,creation,used,referenced",
                "--",
                "tank/a"
            ]
        );
        let legacy_flat = list_snapshots_args(Dialect::Legacy, "tank/a", false).unwrap();
        assert_eq!(
            strs(&legacy_flat)[5..],
            [
                "-d",
                "1",
                "type,guid,creation,used,referenced",
                "--",
                "tank/a"
            ]
        );
        let open_flat = list_snapshots_args(Dialect::OpenZfs, "tank/a", false).unwrap();
        assert_eq!(strs(&open_flat)[7..], ["-d", "1", "--", "tank/a"]);
        assert!(list_snapshots_args(Dialect::OpenZfs, "tank/$(x)", true).is_err());
        assert!(list_snapshots_args(Dialect::Legacy, "-rf", false).is_err());
    }

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

    #[test]
    fn known_stderr_becomes_typed_error() {
        let failed = |stderr: &str| ProcessError::Failed {
            command: "zfs get".into(),
            code: Some(1),
            stderr: stderr.into(),
        };
        let e = ZfsError::from_process(
            failed("cannot open 'nosuch/x': dataset does not exist"),
            "nosuch/x",
        );
        assert_eq!(e.to_string(), "Dataset not found: 'nosuch/x'");
        let e = ZfsError::from_process(
            failed("cannot open 'nosuchpool': no such pool"),
            "nosuchpool",
        );
        assert_eq!(e.to_string(), "pool 'nosuchpool' does not exist");
        let e = ZfsError::from_process(failed("permission denied"), "tank");
        assert!(e.to_string().ends_with(": permission denied"));
        // Captured from zfs-fuse: `zfs get -H bogus nfhelper1`.
        let usage = "bad property list: invalid property 'bogus'\nusage:\n\tget [-rHp] [-d max] [-o \"all\" | field[,...]] [-s source[,...]]\n";
        let e = ZfsError::from_process(failed(usage), "nfhelper1");
        assert!(
            e.to_string()
                .ends_with("(exit code 1): bad property list: invalid property 'bogus'"),
            "{e}"
        );
    }

    // --- replication command lines -----------------------------------------

    #[test]
    fn send_full_and_incremental() {
        for dialect in [Dialect::Legacy, Dialect::OpenZfs] {
            assert_eq!(
                send_args(dialect, None, "tank/a@s1").unwrap(),
                ["send", "--", "tank/a@s1"]
            );
            assert_eq!(
                send_args(dialect, Some("@s1"), "tank/a@s2").unwrap(),
                ["send", "-i", "@s1", "--", "tank/a@s2"]
            );
            assert_eq!(
                send_args(dialect, Some("tank/origin@o"), "tank/a@auto 1").unwrap(),
                ["send", "-i", "tank/origin@o", "--", "tank/a@auto 1"]
            );
            for bad_snapshot in ["tank/a", "-R", "tank/a@", "tank/a@x;y"] {
                assert!(
                    send_args(dialect, None, bad_snapshot).is_err(),
                    "{bad_snapshot}"
                );
            }
            for bad_base in ["@", "s1", "-R", "@x/y", "@$(id)", "tank/a", "@."] {
                assert!(
                    send_args(dialect, Some(bad_base), "tank/a@s2").is_err(),
                    "{bad_base:?} accepted"
                );
            }
        }
    }

    #[test]
    fn recv_differs_by_dialect() {
        assert_eq!(
            recv_args(Dialect::Legacy, "backup/nas1/tank/a", false).unwrap(),
            ["receive", "--", "backup/nas1/tank/a"]
        );
        assert_eq!(
            recv_args(Dialect::Legacy, "backup/a", true).unwrap(),
            ["receive", "-F", "--", "backup/a"]
        );
        assert_eq!(
            recv_args(Dialect::OpenZfs, "backup/a", false).unwrap(),
            ["receive", "-u", "--", "backup/a"]
        );
        assert_eq!(
            recv_args(Dialect::OpenZfs, "backup/a", true).unwrap(),
            ["receive", "-u", "-F", "--", "backup/a"]
        );
        for dialect in [Dialect::Legacy, Dialect::OpenZfs] {
            assert!(recv_args(dialect, "backup/a@s", false).is_err());
            assert!(recv_args(dialect, "-F", false).is_err());
            assert!(recv_args(dialect, "backup/a;rm", true).is_err());
        }
    }

    #[test]
    fn snapshot_guid_listing_differs_by_dialect() {
        assert_eq!(
            snapshot_guids_args(Dialect::Legacy, "tank/a").unwrap(),
            [
                "get",
                "-H",
                "-p",
                "-o",
                "name,property,value",
                "-d",
                "1",
                "type,guid,creation,createtxg",
                "--",
                "tank/a"
            ]
        );
        assert_eq!(
            snapshot_guids_args(Dialect::OpenZfs, "tank/a").unwrap(),
            [
                "list",
                "-H",
                "-p",
                "-t",
                "snapshot",
                "-d",
                "1",
                "-o",
                "name,guid,creation,createtxg",
                "--",
                "tank/a"
            ]
        );
        for dialect in [Dialect::Legacy, Dialect::OpenZfs] {
            assert!(snapshot_guids_args(dialect, "-r").is_err());
            assert!(snapshot_guids_args(dialect, "tank/a@s").is_err());
        }
    }

    #[test]
    fn target_side_commands() {
        assert_eq!(
            dataset_exists_args("backup/a").unwrap(),
            ["list", "-H", "-o", "name", "--", "backup/a"]
        );
        assert_eq!(
            create_parents_args("backup/nas1/tank/a").unwrap(),
            Some(names(&["create", "-p", "--", "backup/nas1/tank"]))
        );
        assert_eq!(create_parents_args("backup").unwrap(), None);
        assert_eq!(
            set_readonly_args("backup/a").unwrap(),
            ["set", "readonly=on", "backup/a"]
        );
        for bad in ["-p", "backup/a@s", "", "backup/../x"] {
            assert!(dataset_exists_args(bad).is_err(), "{bad}");
            assert!(create_parents_args(bad).is_err(), "{bad}");
            assert!(set_readonly_args(bad).is_err(), "{bad}");
        }
        assert_eq!(parent_dataset("a/b/c"), Some("a/b"));
        assert_eq!(parent_dataset("a"), None);
        assert!(is_missing_dataset(
            "cannot open 'nfhelperrsB/nope': dataset does not exist"
        ));
        assert!(!is_missing_dataset("cannot open 'x': permission denied"));
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
        let snaps = parse_snapshot_guids(Dialect::Legacy, "nfhelperrsA/src", FUSE_GUIDS).unwrap();
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
                .is_empty()
        );
        // A dataset whose name is a prefix of another's keeps only its own.
        let other = FUSE_GUIDS.replace("nfhelperrsA/src@", "nfhelperrsA/srcX@");
        assert!(
            parse_snapshot_guids(Dialect::Legacy, "nfhelperrsA/src", &other)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn parses_openzfs_snapshot_guids_oldest_first() {
        let text = "\
tank/a@b\t18000000000000000000\t1704067200\t120
tank/a@a\t1234567890123456789\t1704067200\t100
tank/a@same-txg-2\t5\t1704067300\t130
tank/a@same-txg-1\t6\t1704067300\t130
";
        let snaps = parse_snapshot_guids(Dialect::OpenZfs, "tank/a", text).unwrap();
        let order: Vec<_> = snaps.iter().map(|s| s.name.as_str()).collect();
        // Equal (createtxg, creation) keep the listing order.
        assert_eq!(order, ["a", "b", "same-txg-2", "same-txg-1"]);
        assert_eq!(snaps[1].guid, 18_000_000_000_000_000_000);
    }

    #[test]
    fn snapshot_guid_parsing_is_strict() {
        let cases: &[(Dialect, &str, &str)] = &[
            (Dialect::OpenZfs, "tank/a@x\t12\t1\n", "expected 4"),
            (
                Dialect::OpenZfs,
                "tank/a@x\t7.74E\t1\t1\n",
                "guid is not a number",
            ),
            (Dialect::OpenZfs, "tank/a@x\t-\t1\t1\n", "no guid"),
            (
                Dialect::OpenZfs,
                "tank/a@x\t-1\t1\t1\n",
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

    #[test]
    fn recv_stderr_becomes_typed_error() {
        let target = "nfhelperrsB/dst";
        // Captured from zfs-fuse, line breaks included.
        let cases: &[(&str, &str)] = &[
            (
                "cannot receive incremental stream: most recent snapshot of nfhelperrsB/dst does not\nmatch incremental source",
                "Diverged",
            ),
            (
                "cannot receive incremental stream: destination nfhelperrsB/dst has been modified\nsince most recent snapshot",
                "Diverged",
            ),
            (
                "cannot receive new filesystem stream: destination 'nfhelperrsB/dst' exists\nmust specify -F to overwrite it",
                "TargetExists",
            ),
            (
                "cannot receive new filesystem stream: destination has snapshots (eg. nfhelperrsB/other@o1)\nmust destroy them to overwrite it",
                "TargetExists",
            ),
            (
                "cannot open 'nfhelperrsB/nope/x': dataset does not exist\ncannot receive new filesystem stream: dataset does not exist",
                "DatasetNotFound nfhelperrsB/nope/x",
            ),
            // OpenZFS, incremental onto a missing target.
            (
                "cannot receive incremental stream: destination 'backup/a' does not exist",
                "DatasetNotFound backup/a",
            ),
            (
                "cannot open 'nopool/x': no such pool",
                "PoolNotFound nopool",
            ),
        ];
        for (stderr, want) in cases {
            let got = match recv_error(stderr, target) {
                Some(ZfsError::Diverged { dataset }) if dataset == target => "Diverged".to_owned(),
                Some(ZfsError::TargetExists { dataset }) if dataset == target => {
                    "TargetExists".to_owned()
                }
                Some(ZfsError::DatasetNotFound { name }) => format!("DatasetNotFound {name}"),
                Some(ZfsError::PoolNotFound { name }) => format!("PoolNotFound {name}"),
                other => format!("{other:?}"),
            };
            assert_eq!(&got, want, "{stderr}");
        }
        assert!(recv_error("cannot receive: failed to read from stream", target).is_none());
        assert!(recv_error("out of space", target).is_none());
        assert_eq!(
            recv_error("does not\nmatch incremental source", "backup/a")
                .unwrap()
                .to_string(),
            "Target dataset 'backup/a' has been modified or has diverged since its most recent snapshot; refusing to overwrite it without --allow-overwrite"
        );
    }
}
