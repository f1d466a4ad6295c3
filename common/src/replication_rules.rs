//! The rules a replication task's spec must follow that need no store, one home for the CLI's pre-checks and the controller: the task name, required sources and target, system, dataset and naming-schema names, where each source dataset lands, a target that must not lie inside a source, and the bandwidth limit's range.
//!
//! Everything here is pure. What needs the fleet's state (the systems are
//! enrolled, the datasets and the target's pool exist, the name is not
//! taken) stays with the controller, which checks it after these rules.
//!
//! [`check_spec`] applies every rule, first broken rule first; the single
//! rules are public too for a caller that wants to interleave its own
//! checks. The rules judge the spec as given: [`normalize`] first turns a
//! spec from the wire into the form the controller stores (trimmed name,
//! no trailing '/', the default naming schema spelled out).

use crate::dataset_names::{DatasetNameError, validate_dataset_name};
use crate::echo::echo;
use crate::names::{NameError, is_below, replication_target_path, validate_system_name};
use crate::naming::{DEFAULT_PERIODIC_SCHEMA, NamingError, NamingSchema};
use crate::rate::{KIB, TIB, format_rate};
use nasfleet_proto::v1::{ReplicationSource, ReplicationTaskSpec};
use thiserror::Error;

/// Longest replication task name, in bytes.
pub const MAX_TASK_NAME: usize = 120;

/// Smallest bandwidth limit other than 0 (none), bytes per second. Below
/// it a run of any real dataset takes days, and so small a value is more
/// likely a forgotten unit (`64` meant as `64M`) than a wish.
pub const MIN_BANDWIDTH_LIMIT: u64 = 64 * KIB;

/// Largest bandwidth limit, bytes per second: no link a NAS has carries
/// that much, so a larger value caps nothing and is a mistake.
pub const MAX_BANDWIDTH_LIMIT: u64 = TIB;

/// What a bandwidth limit may be, for callers that name the field their
/// own way (the CLI says `--bandwidth-limit`).
pub fn bandwidth_limit_rule() -> String {
    format!(
        "0 (no limit) or from {} ({MIN_BANDWIDTH_LIMIT}) to {} ({MAX_BANDWIDTH_LIMIT}) bytes per second",
        format_rate(MIN_BANDWIDTH_LIMIT),
        format_rate(MAX_BANDWIDTH_LIMIT)
    )
}

/// Why a replication spec is refused. Every message is `field: rule`
/// (TrueNAS's wording where it has one) and quotes input through [`echo`];
/// [`ReplicationRuleError::field`] gives the field alone.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReplicationRuleError {
    #[error("name: Name is required")]
    NameRequired,
    #[error(
        "name: '{}' must be 1-{MAX_TASK_NAME} printable characters and not a number",
        echo(.name)
    )]
    BadName { name: String },
    #[error("sources: At least one source is required")]
    NoSources,
    #[error("target: Destination is required")]
    NoTarget,
    /// A source's (`sources`) or the target's (`target`) system name.
    #[error("{field}: system {}", .error.rule())]
    BadSystem {
        field: &'static str,
        error: NameError,
    },
    /// A source dataset (`sources`) or the target dataset (`target`).
    #[error("{field}: {error}")]
    BadDataset {
        field: &'static str,
        error: DatasetNameError,
    },
    #[error("naming_schema: {error}")]
    BadNamingSchema { error: NamingError },
    #[error(
        "target: the target dataset must not be inside source dataset {}:{}",
        echo(.system),
        echo(.dataset)
    )]
    TargetInsideSource { system: String, dataset: String },
    /// The same dataset of one system is named twice, so both copies would
    /// be received into one target dataset.
    #[error(
        "sources: {0}:{1} and {0}:{1} both land on {2}",
        echo(.system),
        echo(.dataset),
        echo(.landing)
    )]
    SameLanding {
        system: String,
        dataset: String,
        landing: String,
    },
    #[error(
        "sources: {0}:{1} is already replicated as a child of recursive source {0}:{2}",
        echo(.system),
        echo(.dataset),
        echo(.parent)
    )]
    BelowRecursiveSource {
        system: String,
        dataset: String,
        parent: String,
    },
    #[error(
        "bandwidth_limit: {limit} bytes per second is out of range; the limit must be {}",
        bandwidth_limit_rule()
    )]
    BadBandwidthLimit { limit: u64 },
}

impl ReplicationRuleError {
    /// The spec field the rule is about: `name`, `sources`, `target`,
    /// `naming_schema` or `bandwidth_limit`, for callers that report field
    /// and rule apart.
    pub fn field(&self) -> &'static str {
        match self {
            Self::NameRequired | Self::BadName { .. } => "name",
            Self::NoSources | Self::SameLanding { .. } | Self::BelowRecursiveSource { .. } => {
                "sources"
            }
            Self::NoTarget | Self::TargetInsideSource { .. } => "target",
            Self::BadSystem { field, .. } | Self::BadDataset { field, .. } => field,
            Self::BadNamingSchema { .. } => "naming_schema",
            Self::BadBandwidthLimit { .. } => "bandwidth_limit",
        }
    }
}

type Result<T = ()> = std::result::Result<T, ReplicationRuleError>;

/// The naming schemas a source replicates: its own, or the default
/// periodic schema when it names none.
pub fn effective_schemas(source: &ReplicationSource) -> Vec<String> {
    if source.naming_schemas.is_empty() {
        vec![DEFAULT_PERIODIC_SCHEMA.to_owned()]
    } else {
        source.naming_schemas.clone()
    }
}

/// The spec as it is stored: the name trimmed, datasets without trailing
/// '/', and every source's naming schemas spelled out (the default when it
/// names none), so what a run replicates does not change with the default.
pub fn normalize(spec: &mut ReplicationTaskSpec) {
    spec.name = spec.name.trim().to_owned();
    spec.target_dataset = spec.target_dataset.trim_end_matches('/').to_owned();
    for source in &mut spec.sources {
        for dataset in &mut source.datasets {
            *dataset = dataset.trim_end_matches('/').to_owned();
        }
        source.naming_schemas = effective_schemas(source);
    }
}

/// Every rule of this module, in the order a person fixes them: name,
/// required fields, each source, the target, how the sources land, then
/// how fast they are sent.
pub fn check_spec(spec: &ReplicationTaskSpec) -> Result {
    check_task_name(&spec.name)?;
    check_required(spec)?;
    for source in &spec.sources {
        check_source(source)?;
    }
    check_target(spec)?;
    check_landings(spec)?;
    check_target_outside_sources(spec)?;
    check_bandwidth_limit(spec.bandwidth_limit)
}

/// A task name (surrounding spaces aside) is 1 to [`MAX_TASK_NAME`] bytes
/// without control characters, and not a number, which would read as a
/// task id wherever a task is named.
pub fn check_task_name(name: &str) -> Result {
    let name = name.trim();
    if name.is_empty() {
        return Err(ReplicationRuleError::NameRequired);
    }
    if name.len() > MAX_TASK_NAME
        || name.parse::<u64>().is_ok()
        || name.chars().any(char::is_control)
    {
        return Err(ReplicationRuleError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// At least one source dataset (a source without datasets adds nothing but
/// is no mistake while another has some), and a target system and dataset.
pub fn check_required(spec: &ReplicationTaskSpec) -> Result {
    if spec.sources.iter().all(|s| s.datasets.is_empty()) {
        return Err(ReplicationRuleError::NoSources);
    }
    if spec.target_system.trim().is_empty()
        || spec.target_dataset.trim().trim_end_matches('/').is_empty()
    {
        return Err(ReplicationRuleError::NoTarget);
    }
    Ok(())
}

fn system_name(field: &'static str, name: &str) -> Result {
    validate_system_name(name).map_err(|error| ReplicationRuleError::BadSystem { field, error })
}

fn dataset_name(field: &'static str, name: &str) -> Result {
    validate_dataset_name(name).map_err(|error| ReplicationRuleError::BadDataset { field, error })
}

/// One source: its system's name, its datasets' names and its naming schemas.
pub fn check_source(source: &ReplicationSource) -> Result {
    system_name("sources", &source.system)?;
    for dataset in &source.datasets {
        dataset_name("sources", dataset)?;
    }
    for schema in &source.naming_schemas {
        NamingSchema::new(schema)
            .map_err(|error| ReplicationRuleError::BadNamingSchema { error })?;
    }
    Ok(())
}

/// The target's system and dataset names.
pub fn check_target(spec: &ReplicationTaskSpec) -> Result {
    system_name("target", &spec.target_system)?;
    dataset_name("target", &spec.target_dataset)
}

/// Whether `inner` is `outer` or lies below it.
fn within(outer: &str, inner: &str) -> bool {
    inner == outer || is_below(inner, outer)
}

/// One source dataset with its system and whether its children go along.
struct Landing<'a> {
    system: &'a str,
    dataset: &'a str,
    recursive: bool,
}

fn landings(spec: &ReplicationTaskSpec) -> Vec<Landing<'_>> {
    spec.sources
        .iter()
        .flat_map(|s| {
            s.datasets.iter().map(|d| Landing {
                system: &s.system,
                dataset: d,
                recursive: s.recursive,
            })
        })
        .collect()
}

/// No two source datasets land on the same target dataset: the same
/// dataset of one system is named once, and a dataset below a recursive
/// source of its system is not named again (the source carries it).
/// Source systems are part of the landing path, so one dataset name on
/// two systems is no collision.
pub fn check_landings(spec: &ReplicationTaskSpec) -> Result {
    let landings = landings(spec);
    for (i, a) in landings.iter().enumerate() {
        for b in landings[i + 1..].iter().filter(|b| b.system == a.system) {
            if a.dataset == b.dataset {
                return Err(ReplicationRuleError::SameLanding {
                    system: a.system.to_owned(),
                    dataset: a.dataset.to_owned(),
                    landing: replication_target_path(&spec.target_dataset, a.system, a.dataset),
                });
            }
            for (outer, inner) in [(a, b), (b, a)] {
                if outer.recursive && is_below(inner.dataset, outer.dataset) {
                    return Err(ReplicationRuleError::BelowRecursiveSource {
                        system: inner.system.to_owned(),
                        dataset: inner.dataset.to_owned(),
                        parent: outer.dataset.to_owned(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// On the target's own system, the target dataset is neither a source
/// dataset nor below one: a run would receive into what it sends.
pub fn check_target_outside_sources(spec: &ReplicationTaskSpec) -> Result {
    let same_system = spec
        .sources
        .iter()
        .filter(|s| s.system == spec.target_system);
    for source in same_system {
        if let Some(dataset) = source
            .datasets
            .iter()
            .find(|d| within(d, &spec.target_dataset))
        {
            return Err(ReplicationRuleError::TargetInsideSource {
                system: source.system.clone(),
                dataset: dataset.clone(),
            });
        }
    }
    Ok(())
}

/// A bandwidth limit (bytes per second each source sends at) is 0, no
/// limit, or from [`MIN_BANDWIDTH_LIMIT`] to [`MAX_BANDWIDTH_LIMIT`].
pub fn check_bandwidth_limit(limit: u64) -> Result {
    if limit == 0 || (MIN_BANDWIDTH_LIMIT..=MAX_BANDWIDTH_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(ReplicationRuleError::BadBandwidthLimit { limit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::NamingError;
    use ReplicationRuleError as E;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn source(system: &str, datasets: &[&str], recursive: bool) -> ReplicationSource {
        ReplicationSource {
            system: system.into(),
            datasets: strings(datasets),
            recursive,
            naming_schemas: Vec::new(),
        }
    }

    /// nas1:tank/a,tank/b (recursive) and nas3:pool into nas2:backup.
    fn offsite() -> ReplicationTaskSpec {
        ReplicationTaskSpec {
            name: "offsite".into(),
            sources: vec![
                source("nas1", &["tank/a", "tank/b"], true),
                source("nas3", &["pool"], false),
            ],
            target_system: "nas2".into(),
            target_dataset: "backup".into(),
            allow_overwrite: false,
            create_snapshot_task: false,
            no_raw: false,
            bandwidth_limit: 0,
        }
    }

    fn err(spec: &ReplicationTaskSpec) -> ReplicationRuleError {
        match check_spec(spec) {
            Ok(()) => panic!("{spec:?} passed"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_good_spec_passes() {
        assert_eq!(check_spec(&offsite()), Ok(()));
    }

    #[test]
    fn a_name_is_required() {
        let mut spec = offsite();
        spec.name = "  ".into();
        assert_eq!(err(&spec), E::NameRequired);
        assert_eq!(err(&spec).to_string(), "name: Name is required");
        assert_eq!(err(&spec).field(), "name");
    }

    #[test]
    fn names_are_printable_short_and_not_numbers() {
        assert_eq!(
            check_task_name("42").map_err(|e| e.to_string()),
            Err("name: '42' must be 1-120 printable characters and not a number".into())
        );
        assert_eq!(
            check_task_name("a\tb"),
            Err(E::BadName {
                name: "a\tb".into()
            })
        );
        assert_eq!(check_task_name(&"x".repeat(MAX_TASK_NAME)), Ok(()));
        assert_eq!(check_task_name(" offsite "), Ok(()));
        let long = "x".repeat(MAX_TASK_NAME + 1);
        assert_eq!(check_task_name(&long), Err(E::BadName { name: long }));
    }

    #[test]
    fn long_names_are_not_echoed_whole() {
        let message = check_task_name(&"x".repeat(10_000))
            .map_err(|e| e.to_string())
            .unwrap_err();
        assert!(message.contains("…(9900 more characters)"), "{message}");
        assert!(message.len() < 250, "{message}");
    }

    #[test]
    fn sources_are_required() {
        let mut spec = offsite();
        spec.sources.clear();
        assert_eq!(err(&spec), E::NoSources);
        assert_eq!(
            err(&spec).to_string(),
            "sources: At least one source is required"
        );
        // A source without datasets adds nothing but is no mistake as long
        // as another one has some.
        let mut spec = offsite();
        spec.sources[1].datasets.clear();
        assert_eq!(check_spec(&spec), Ok(()));
        spec.sources[0].datasets.clear();
        assert_eq!(err(&spec), E::NoSources);
    }

    #[test]
    fn a_destination_is_required() {
        for (system, dataset) in [("nas2", ""), ("nas2", "/"), (" ", "backup"), ("", "")] {
            let mut spec = offsite();
            spec.target_system = system.into();
            spec.target_dataset = dataset.into();
            assert_eq!(err(&spec), E::NoTarget, "{system:?} {dataset:?}");
        }
        assert_eq!(E::NoTarget.to_string(), "target: Destination is required");
    }

    #[test]
    fn system_names_are_checked() {
        let mut spec = offsite();
        spec.sources[0].system = "a/b".into();
        let e = err(&spec);
        assert!(
            matches!(
                e,
                E::BadSystem {
                    field: "sources",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("sources: system 'a/b' may only contain"),
            "{e}"
        );
        let mut spec = offsite();
        spec.target_system = "x y".into();
        let e = err(&spec);
        assert_eq!(e.field(), "target");
        assert!(e.to_string().starts_with("target: system 'x y'"), "{e}");
    }

    #[test]
    fn dataset_names_are_checked_by_the_shared_rule() {
        let mut spec = offsite();
        spec.sources[0].datasets[0] = "tank/a@snap".into();
        assert_eq!(
            err(&spec),
            E::BadDataset {
                field: "sources",
                error: DatasetNameError::BadCharacter {
                    name: "tank/a@snap".into(),
                    bad: '@'
                }
            }
        );
        assert!(
            err(&spec)
                .to_string()
                .starts_with("sources: dataset name 'tank/a@snap' contains '@'")
        );
        let mut spec = offsite();
        spec.target_dataset = "/backup".into();
        assert_eq!(
            err(&spec),
            E::BadDataset {
                field: "target",
                error: DatasetNameError::BadStart {
                    name: "/backup".into()
                }
            }
        );
    }

    #[test]
    fn naming_schemas_are_checked() {
        let mut spec = offsite();
        spec.sources[1].naming_schemas = strings(&["auto-%Y-%m-%d_%H-%M", "x-%Y"]);
        assert_eq!(
            err(&spec),
            E::BadNamingSchema {
                error: NamingError::Missing('m')
            }
        );
        assert_eq!(
            err(&spec).to_string(),
            "naming_schema: %m must be present in snapshot naming schema"
        );
        assert_eq!(err(&spec).field(), "naming_schema");
    }

    #[test]
    fn one_dataset_named_twice_lands_twice() {
        let mut spec = offsite();
        spec.sources.push(source("nas1", &["tank/a"], false));
        assert_eq!(
            err(&spec).to_string(),
            "sources: nas1:tank/a and nas1:tank/a both land on backup/nas1/tank/a"
        );
        assert_eq!(err(&spec).field(), "sources");
        // The same dataset name on two systems is fine: the system is in the path.
        let mut spec = offsite();
        spec.sources.push(source("nas4", &["tank/a"], false));
        assert_eq!(check_spec(&spec), Ok(()));
    }

    #[test]
    fn a_dataset_below_a_recursive_source_is_carried_already() {
        let mut spec = offsite();
        spec.sources.push(source("nas1", &["tank/a/x"], false));
        assert_eq!(
            err(&spec),
            E::BelowRecursiveSource {
                system: "nas1".into(),
                dataset: "tank/a/x".into(),
                parent: "tank/a".into(),
            }
        );
        assert_eq!(
            err(&spec).to_string(),
            "sources: nas1:tank/a/x is already replicated as a child of recursive source nas1:tank/a"
        );
        // Named first, the child is found all the same.
        let mut spec = offsite();
        spec.sources.insert(0, source("nas1", &["tank/b/y"], false));
        assert!(matches!(err(&spec), E::BelowRecursiveSource { .. }));
        // Without recursion the parent does not carry the child.
        let mut spec = offsite();
        spec.sources[0].recursive = false;
        spec.sources.push(source("nas1", &["tank/a/x"], false));
        assert_eq!(check_spec(&spec), Ok(()));
        // tank/ab is no child of tank/a, and another system's tank/a/x is its own.
        let mut spec = offsite();
        spec.sources.push(source("nas1", &["tank/ab"], false));
        spec.sources.push(source("nas4", &["tank/a/x"], false));
        assert_eq!(check_spec(&spec), Ok(()));
    }

    #[test]
    fn the_target_must_not_be_inside_a_source_of_its_system() {
        let mut spec = offsite();
        spec.sources.push(source("nas2", &["tank"], false));
        spec.target_dataset = "tank/backup".into();
        let inside = E::TargetInsideSource {
            system: "nas2".into(),
            dataset: "tank".into(),
        };
        assert_eq!(err(&spec), inside);
        assert_eq!(
            inside.to_string(),
            "target: the target dataset must not be inside source dataset nas2:tank"
        );
        spec.target_dataset = "tank".into();
        assert_eq!(err(&spec), inside);
        spec.target_dataset = "tankbackup".into();
        assert_eq!(check_spec(&spec), Ok(()));
        // Another system's dataset of the same name is no problem.
        let mut spec = offsite();
        spec.target_dataset = "tank/a/backup".into();
        assert_eq!(check_spec(&spec), Ok(()));
    }

    #[test]
    fn a_bandwidth_limit_is_none_or_within_range() {
        for limit in [0, 65_536, 50 << 20, 1 << 40] {
            assert_eq!(check_bandwidth_limit(limit), Ok(()), "{limit}");
        }
        for limit in [1, 65_535, (1 << 40) + 1, u64::MAX] {
            assert_eq!(
                check_bandwidth_limit(limit),
                Err(E::BadBandwidthLimit { limit }),
                "{limit}"
            );
        }
        let mut spec = offsite();
        spec.bandwidth_limit = 1000;
        assert_eq!(err(&spec), E::BadBandwidthLimit { limit: 1000 });
        assert_eq!(err(&spec).field(), "bandwidth_limit");
        assert_eq!(
            err(&spec).to_string(),
            "bandwidth_limit: 1000 bytes per second is out of range; the limit must be 0 (no limit) or from 64.0K/s (65536) to 1.0T/s (1099511627776) bytes per second"
        );
        spec.bandwidth_limit = 50 << 20;
        assert_eq!(check_spec(&spec), Ok(()));
        // Raw or not, the spec is as good.
        spec.no_raw = true;
        assert_eq!(check_spec(&spec), Ok(()));
    }

    #[test]
    fn the_first_broken_rule_is_reported() {
        let mut spec = offsite();
        spec.name.clear();
        spec.sources.clear();
        assert_eq!(err(&spec), E::NameRequired);
        spec.name = "x".into();
        assert_eq!(err(&spec), E::NoSources);
    }

    #[test]
    fn normalize_gives_the_stored_form() {
        let mut spec = offsite();
        spec.name = " offsite ".into();
        spec.target_dataset = "backup/".into();
        spec.sources[0].datasets[0] = "tank/a/".into();
        spec.sources[1].naming_schemas = strings(&["x-%s"]);
        normalize(&mut spec);
        assert_eq!(spec.name, "offsite");
        assert_eq!(spec.target_dataset, "backup");
        assert_eq!(spec.sources[0].datasets, strings(&["tank/a", "tank/b"]));
        assert_eq!(
            spec.sources[0].naming_schemas,
            strings(&[DEFAULT_PERIODIC_SCHEMA])
        );
        assert_eq!(spec.sources[1].naming_schemas, strings(&["x-%s"]));
        assert_eq!(check_spec(&spec), Ok(()));
    }

    #[test]
    fn every_error_names_its_field_first() {
        let errors = [
            E::NameRequired,
            E::BadName { name: "1".into() },
            E::NoSources,
            E::NoTarget,
            E::BadSystem {
                field: "target",
                error: NameError::Empty { field: "name" },
            },
            E::BadDataset {
                field: "sources",
                error: DatasetNameError::Empty,
            },
            E::BadNamingSchema {
                error: NamingError::Empty,
            },
            E::TargetInsideSource {
                system: "a".into(),
                dataset: "b".into(),
            },
            E::SameLanding {
                system: "a".into(),
                dataset: "b".into(),
                landing: "c".into(),
            },
            E::BelowRecursiveSource {
                system: "a".into(),
                dataset: "b/c".into(),
                parent: "b".into(),
            },
            E::BadBandwidthLimit { limit: 1 },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(text.starts_with(&format!("{}: ", e.field())), "{text}");
        }
    }
}
