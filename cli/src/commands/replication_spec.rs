//! Replication task specs on the CLI side: parsing `SYSTEM:DATASET[,DATASET...]` and bandwidth limits, where each source dataset lands, and merging `edit` flags into the current spec.
//!
//! Everything here is pure, so a mistake is reported before any credentials
//! are read or connections opened. The rules a spec must follow live in
//! [`nasfleet_common::replication_rules`], shared with the controller, which
//! checks everything again and alone knows whether systems and datasets exist.

use super::schedule_args::edited_stale_after;
use anyhow::{anyhow, bail};
use nasfleet_common::echo::echo;
use nasfleet_common::rate::{RateError, parse_rate};
use nasfleet_common::replication_rules::{bandwidth_limit_rule, check_bandwidth_limit, check_spec};
use nasfleet_proto::v1::task_spec::Kind;
use nasfleet_proto::v1::{ReplicationSource, ReplicationTaskSpec, TaskSpec};

/// One `--source SYSTEM:DATASET[,DATASET...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceArg {
    pub system: String,
    pub datasets: Vec<String>,
}

/// The `--target SYSTEM:DATASET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetArg {
    pub system: String,
    pub dataset: String,
}

/// `tank/a/` and ` tank/a` mean `tank/a`.
pub fn normalize_dataset(dataset: &str) -> String {
    dataset.trim().trim_end_matches('/').to_owned()
}

/// Parses `--source nas1:tank/a,tank/b`. Only the shape is checked here;
/// names are checked with the rest of the spec by
/// [`nasfleet_common::replication_rules::check_spec`].
pub fn parse_source(text: &str) -> anyhow::Result<SourceArg> {
    let shape = || anyhow!("source: expected SYSTEM:DATASET[,DATASET...], got {text:?}");
    let (system, datasets) = text.split_once(':').ok_or_else(shape)?;
    let system = system.trim();
    if system.is_empty() {
        return Err(shape());
    }
    let datasets: Vec<String> = datasets.split(',').map(normalize_dataset).collect();
    if datasets.iter().any(String::is_empty) {
        bail!("source: empty dataset name in {text:?}; expected SYSTEM:DATASET[,DATASET...]");
    }
    Ok(SourceArg {
        system: system.to_owned(),
        datasets,
    })
}

/// Parses `--target nas2:backup` (exactly one dataset).
pub fn parse_target(text: &str) -> anyhow::Result<TargetArg> {
    let shape = || anyhow!("target: expected SYSTEM:DATASET, got {text:?}");
    let (system, dataset) = text.split_once(':').ok_or_else(shape)?;
    let system = system.trim();
    if system.is_empty() {
        return Err(shape());
    }
    if dataset.contains(',') {
        bail!("target: expected exactly one dataset (SYSTEM:DATASET), got {text:?}");
    }
    let dataset = normalize_dataset(dataset);
    if dataset.is_empty() {
        bail!("target: empty dataset name in {text:?}; expected SYSTEM:DATASET");
    }
    Ok(TargetArg {
        system: system.to_owned(),
        dataset,
    })
}

/// Bytes per second from `--bandwidth-limit RATE` or a task file's
/// `bandwidth_limit`, named `field` in messages: a rate in the shared
/// syntax (`50M`, `1.5G`, `50MB/s`), or `0` or `none` for no limit. The
/// range is the shared rule's, checked here too so that the message names
/// the flag and repeats what was typed rather than the bytes it came to.
pub fn parse_bandwidth_limit(field: &str, text: &str) -> anyhow::Result<u64> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    let bytes = match parse_rate(text) {
        Ok(limit) if check_bandwidth_limit(limit).is_ok() => return Ok(limit),
        Ok(limit) => format!(" ({limit} bytes per second)"),
        // Beyond any number of bytes is out of range like the rest.
        Err(RateError::TooLarge { .. }) => String::new(),
        Err(e) => bail!("{field}: {e}, or none for no limit"),
    };
    bail!(
        "{field}: '{}'{bytes} is out of range; the limit must be {}",
        echo(text),
        bandwidth_limit_rule()
    )
}

/// Sources from parsed `--source` flags; `--recursive` and
/// `--naming-schema` apply to every one of them, so several flags naming
/// the same system become one source (in the order first given).
pub fn sources_from_args(
    sources: &[SourceArg],
    recursive: bool,
    naming_schemas: &[String],
) -> Vec<ReplicationSource> {
    let mut out: Vec<ReplicationSource> = Vec::new();
    for arg in sources {
        match out.iter_mut().find(|s| s.system == arg.system) {
            Some(source) => source.datasets.extend(arg.datasets.iter().cloned()),
            None => out.push(ReplicationSource {
                system: arg.system.clone(),
                datasets: arg.datasets.clone(),
                recursive,
                naming_schemas: naming_schemas.iter().map(|n| n.trim().to_owned()).collect(),
            }),
        }
    }
    out
}

/// The replication part of a task spec, if it is one.
pub fn replication_of(spec: &TaskSpec) -> Option<&ReplicationTaskSpec> {
    match &spec.kind {
        Some(Kind::Replication(r)) => Some(r),
        _ => None,
    }
}

/// The changes `replication edit` was asked for, apart from the schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationEdit {
    pub name: Option<String>,
    /// Replaces every current source.
    pub sources: Option<Vec<SourceArg>>,
    pub target: Option<TargetArg>,
    /// Applies to every source (the new ones with `sources`).
    pub recursive: Option<bool>,
    /// Replaces the schemas of every source.
    pub naming_schemas: Option<Vec<String>>,
    pub allow_overwrite: Option<bool>,
    /// `Some(false)` is `--no-raw`: encrypted datasets are sent decrypted.
    pub raw: Option<bool>,
    /// Bytes per second; `Some(0)` removes the limit.
    pub bandwidth_limit: Option<u64>,
    pub create_snapshot_task: Option<bool>,
    pub enabled: Option<bool>,
    /// `--stale-after`, as given.
    pub stale_after: Option<String>,
}

/// The value every item agrees on, if they all do.
fn common<T: PartialEq + Clone>(mut items: impl Iterator<Item = T>) -> Option<T> {
    let first = items.next()?;
    items.all(|i| i == first).then_some(first)
}

/// The complete spec `edit` sends: the current one with the requested
/// changes, checked again as a whole. New sources (`--source`) take
/// `--recursive`/`--naming-schema` when given, otherwise the setting all
/// current sources share, otherwise the defaults (not recursive, default
/// schema). `schedule` is the new cron expression, if one was asked for.
pub fn merge_edit(
    current: &TaskSpec,
    edit: &ReplicationEdit,
    schedule: Option<String>,
) -> anyhow::Result<TaskSpec> {
    if *edit == ReplicationEdit::default() && schedule.is_none() {
        bail!("nothing to change: pass at least one flag to edit");
    }
    let Some(repl) = replication_of(current) else {
        bail!("the task's current spec is not a replication task");
    };
    let mut repl = repl.clone();
    if let Some(name) = &edit.name {
        repl.name = name.trim().to_owned();
    }
    if let Some(sources) = &edit.sources {
        let recursive = edit
            .recursive
            .or_else(|| common(repl.sources.iter().map(|s| s.recursive)))
            .unwrap_or(false);
        let schemas = edit
            .naming_schemas
            .clone()
            .or_else(|| common(repl.sources.iter().map(|s| s.naming_schemas.clone())))
            .unwrap_or_default();
        repl.sources = sources_from_args(sources, recursive, &schemas);
    } else {
        for source in &mut repl.sources {
            if let Some(recursive) = edit.recursive {
                source.recursive = recursive;
            }
            if let Some(schemas) = &edit.naming_schemas {
                source.naming_schemas = schemas.iter().map(|n| n.trim().to_owned()).collect();
            }
        }
    }
    if let Some(target) = &edit.target {
        repl.target_system = target.system.clone();
        repl.target_dataset = target.dataset.clone();
    }
    if let Some(allow) = edit.allow_overwrite {
        repl.allow_overwrite = allow;
    }
    if let Some(raw) = edit.raw {
        repl.no_raw = !raw;
    }
    if let Some(limit) = edit.bandwidth_limit {
        repl.bandwidth_limit = limit;
    }
    if let Some(create) = edit.create_snapshot_task {
        repl.create_snapshot_task = create;
    }
    check_spec(&repl)?;
    Ok(TaskSpec {
        schedule: schedule.unwrap_or_else(|| current.schedule.clone()),
        enabled: edit.enabled.unwrap_or(current.enabled),
        stale_after: edited_stale_after(edit.stale_after.as_deref(), current)?,
        kind: Some(Kind::Replication(repl)),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nasfleet_common::replication_summary::{routes, sources_text, target_text};

    pub(crate) fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    pub(crate) fn source(system: &str, datasets: &[&str], recursive: bool) -> ReplicationSource {
        ReplicationSource {
            system: system.into(),
            datasets: strings(datasets),
            recursive,
            naming_schemas: Vec::new(),
        }
    }

    pub(crate) fn offsite() -> ReplicationTaskSpec {
        ReplicationTaskSpec {
            name: "offsite".into(),
            sources: vec![
                source("nas1", &["tank/a", "tank/b"], true),
                source("nas3", &["pool"], false),
            ],
            target_system: "nas2".into(),
            target_dataset: "backup".into(),
            allow_overwrite: false,
            no_raw: false,
            bandwidth_limit: 0,
            create_snapshot_task: false,
        }
    }

    #[test]
    fn sources_parse() {
        assert_eq!(
            parse_source("nas1:tank/a, tank/b/").unwrap(),
            SourceArg {
                system: "nas1".into(),
                datasets: strings(&["tank/a", "tank/b"]),
            }
        );
        // Only the first ':' separates; zfs allows ':' in dataset names.
        assert_eq!(
            parse_source("nas1:tank/a:b").unwrap().datasets,
            strings(&["tank/a:b"])
        );
    }

    #[test]
    fn bad_sources_are_refused() {
        assert_eq!(
            parse_source("x").unwrap_err().to_string(),
            "source: expected SYSTEM:DATASET[,DATASET...], got \"x\""
        );
        assert_eq!(
            parse_source(":tank").unwrap_err().to_string(),
            "source: expected SYSTEM:DATASET[,DATASET...], got \":tank\""
        );
        for bad in [
            "nas1:",
            "nas1:tank/a,",
            "nas1:,tank",
            "nas1:a,,b",
            "nas1: / ",
        ] {
            let e = parse_source(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("source: empty dataset name in "),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn targets_parse_strictly() {
        assert_eq!(
            parse_target("nas2:backup/").unwrap(),
            TargetArg {
                system: "nas2".into(),
                dataset: "backup".into(),
            }
        );
        assert_eq!(
            parse_target("nas2").unwrap_err().to_string(),
            "target: expected SYSTEM:DATASET, got \"nas2\""
        );
        assert!(
            parse_target("nas2:")
                .unwrap_err()
                .to_string()
                .starts_with("target: empty dataset name")
        );
        assert!(
            parse_target("nas2:a,b")
                .unwrap_err()
                .to_string()
                .starts_with("target: expected exactly one dataset")
        );
    }

    #[test]
    fn flags_for_one_system_become_one_source() {
        let args: Vec<SourceArg> = ["nas1:tank/a", "nas3:pool", "nas1:tank/b,tank/c"]
            .iter()
            .map(|s| parse_source(s).unwrap())
            .collect();
        let sources = sources_from_args(&args, true, &strings(&[" x-%s "]));
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].system, "nas1");
        assert_eq!(
            sources[0].datasets,
            strings(&["tank/a", "tank/b", "tank/c"])
        );
        assert!(sources[0].recursive);
        assert_eq!(sources[0].naming_schemas, strings(&["x-%s"]));
        assert_eq!(sources[1].datasets, strings(&["pool"]));
    }

    #[test]
    fn routes_use_the_shared_target_path() {
        let got = routes(&offsite());
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].source, "nas1:tank/a");
        assert_eq!(got[0].target, "nas2:backup/nas1/tank/a");
        assert!(got[0].recursive);
        assert_eq!(got[2].target, "nas2:backup/nas3/pool");
        assert!(!got[2].recursive);
        assert_eq!(sources_text(&offsite()), "nas1:tank/a,tank/b nas3:pool");
        let mut spec = offsite();
        spec.sources.push(source("nas1", &["tank/c"], false));
        assert_eq!(sources_text(&spec), "nas1:tank/a,tank/b,tank/c nas3:pool");
        assert_eq!(target_text(&offsite()), "nas2:backup");
    }

    fn task_spec() -> TaskSpec {
        TaskSpec {
            stale_after: String::new(),
            schedule: "0 0 * * sun".into(),
            enabled: true,
            kind: Some(Kind::Replication(offsite())),
        }
    }

    fn merged(edit: ReplicationEdit, schedule: Option<&str>) -> ReplicationTaskSpec {
        let spec = merge_edit(&task_spec(), &edit, schedule.map(str::to_owned)).unwrap();
        replication_of(&spec).cloned().unwrap_or_default()
    }

    #[test]
    fn edit_needs_a_change() {
        let e = merge_edit(&task_spec(), &ReplicationEdit::default(), None).unwrap_err();
        assert!(e.to_string().starts_with("nothing to change"), "{e}");
    }

    #[test]
    fn edit_keeps_what_it_is_not_told() {
        let spec = merge_edit(
            &task_spec(),
            &ReplicationEdit {
                enabled: Some(false),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert!(!spec.enabled);
        assert_eq!(spec.schedule, "0 0 * * sun");
        assert_eq!(replication_of(&spec), Some(&offsite()));
        let spec = merge_edit(
            &task_spec(),
            &ReplicationEdit::default(),
            Some("0 3 * * *".into()),
        )
        .unwrap();
        assert_eq!(spec.schedule, "0 3 * * *");
        assert!(spec.enabled);
    }

    #[test]
    fn edit_flags_apply_to_every_source() {
        let r = merged(
            ReplicationEdit {
                recursive: Some(false),
                naming_schemas: Some(strings(&["hourly-%Y%m%d%H%M"])),
                allow_overwrite: Some(true),
                target: Some(TargetArg {
                    system: "nas5".into(),
                    dataset: "vault".into(),
                }),
                name: Some("vault".into()),
                ..Default::default()
            },
            None,
        );
        assert!(r.sources.iter().all(|s| !s.recursive));
        assert!(
            r.sources
                .iter()
                .all(|s| s.naming_schemas == strings(&["hourly-%Y%m%d%H%M"]))
        );
        assert_eq!(r.sources[0].datasets, strings(&["tank/a", "tank/b"]));
        assert!(r.allow_overwrite);
        assert_eq!(target_text(&r), "nas5:vault");
        assert_eq!(r.name, "vault");
    }

    #[test]
    fn edit_sources_replace_all() {
        let new = vec![SourceArg {
            system: "nas7".into(),
            datasets: strings(&["data"]),
        }];
        // The current sources disagree on recursion: the new one gets the default.
        let r = merged(
            ReplicationEdit {
                sources: Some(new.clone()),
                ..Default::default()
            },
            None,
        );
        assert_eq!(r.sources, vec![source("nas7", &["data"], false)]);
        let r = merged(
            ReplicationEdit {
                sources: Some(new.clone()),
                recursive: Some(true),
                ..Default::default()
            },
            None,
        );
        assert!(r.sources[0].recursive);
        // When they agree, the new sources keep the shared setting.
        let mut current = task_spec();
        if let Some(Kind::Replication(r)) = current.kind.as_mut() {
            r.sources[1].recursive = true;
            for s in &mut r.sources {
                s.naming_schemas = strings(&["x-%Y-%m-%d-%H-%M"]);
            }
        }
        let spec = merge_edit(
            &current,
            &ReplicationEdit {
                sources: Some(new),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let r = replication_of(&spec).unwrap();
        assert!(r.sources[0].recursive);
        assert_eq!(r.sources[0].naming_schemas, strings(&["x-%Y-%m-%d-%H-%M"]));
    }

    #[test]
    fn bandwidth_limits_parse_in_the_shared_syntax() {
        for (text, bytes) in [
            ("50M", 50 << 20),
            ("1.5G", 1_610_612_736),
            ("800K", 800 << 10),
            ("512k", 512 << 10),
            ("1048576", 1 << 20),
            ("50MB/s", 50 << 20),
            ("0", 0),
            ("none", 0),
            (" None ", 0),
        ] {
            assert_eq!(
                parse_bandwidth_limit("--bandwidth-limit", text).unwrap(),
                bytes,
                "{text}"
            );
        }
    }

    #[test]
    fn bad_bandwidth_limits_name_the_flag_and_the_rule() {
        let e = |text: &str| {
            parse_bandwidth_limit("--bandwidth-limit", text)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e("50Mbit"),
            "--bandwidth-limit: '50Mbit' is not a rate; give bytes per second with an optional binary unit K, M, G or T (e.g. 50M, 1.5G, 800K, 1048576, 50MB/s), or none for no limit"
        );
        assert_eq!(
            e("1K"),
            "--bandwidth-limit: '1K' (1024 bytes per second) is out of range; the limit must be 0 (no limit) or from 64.0K/s (65536) to 1.0T/s (1099511627776) bytes per second"
        );
        assert!(e("2T").starts_with("--bandwidth-limit: '2T' (2199023255552 bytes"));
        assert_eq!(
            e("99999999999999999999T"),
            format!(
                "--bandwidth-limit: '99999999999999999999T' is out of range; the limit must be {}",
                bandwidth_limit_rule()
            )
        );
        let long = e(&"9".repeat(5_000));
        assert!(long.contains("…(4900 more characters)"), "{long}");
        assert!(long.len() < 400, "{long}");
    }

    #[test]
    fn edit_switches_raw_sends_and_the_bandwidth_limit() {
        let r = merged(
            ReplicationEdit {
                raw: Some(false),
                bandwidth_limit: Some(50 << 20),
                ..Default::default()
            },
            None,
        );
        assert!(r.no_raw);
        assert_eq!(r.bandwidth_limit, 50 << 20);
        assert_eq!(r.sources, offsite().sources);
        // Back to raw and no limit; what is not mentioned stays.
        let mut current = task_spec();
        if let Some(Kind::Replication(r)) = current.kind.as_mut() {
            r.no_raw = true;
            r.bandwidth_limit = 1 << 30;
            r.allow_overwrite = true;
        }
        let edit = |edit: ReplicationEdit| {
            let spec = merge_edit(&current, &edit, None).unwrap();
            replication_of(&spec).cloned().unwrap_or_default()
        };
        let r = edit(ReplicationEdit {
            raw: Some(true),
            ..Default::default()
        });
        assert!(!r.no_raw);
        assert_eq!(r.bandwidth_limit, 1 << 30);
        assert!(r.allow_overwrite);
        let r = edit(ReplicationEdit {
            bandwidth_limit: Some(0),
            ..Default::default()
        });
        assert!(r.no_raw);
        assert_eq!(r.bandwidth_limit, 0);
    }

    #[test]
    fn edit_results_are_checked_as_a_whole() {
        let e = merge_edit(
            &task_spec(),
            &ReplicationEdit {
                target: Some(TargetArg {
                    system: "nas1".into(),
                    dataset: "tank/a/copy".into(),
                }),
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "target: the target dataset must not be inside source dataset nas1:tank/a"
        );
    }
}
