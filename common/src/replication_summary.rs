//! How a replication task is told to people, shared by the CLI's summaries and `show` and the web console's wizard, so both say the same: where each dataset lands, the naming schemas, the schedule and what differs from the defaults.

use crate::names::replication_target_path;
use crate::rate::format_rate;
use crate::replication_rules::effective_schemas;
use nasfleet_proto::v1::task_spec::Kind;
use nasfleet_proto::v1::{ReplicationTaskSpec, Task};

/// Width of the labels of summaries and `show`.
pub const LABEL: usize = 18;

/// The task's replication spec, or an empty one.
pub fn replication_spec(task: &Task) -> ReplicationTaskSpec {
    match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(Kind::Replication(r)) => r.clone(),
        _ => ReplicationTaskSpec::default(),
    }
}

/// The task's normalised schedule, falling back to what the spec says.
pub fn task_schedule(task: &Task) -> &str {
    if !task.schedule.is_empty() {
        return &task.schedule;
    }
    task.spec
        .as_ref()
        .map(|s| s.schedule.as_str())
        .unwrap_or("")
}

/// One source dataset and where it lands, for summaries and `show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `nas1:tank/a`.
    pub source: String,
    /// `nas2:backup/nas1/tank/a`.
    pub target: String,
    pub recursive: bool,
}

/// Every source dataset of a spec with its target path, in order.
pub fn routes(spec: &ReplicationTaskSpec) -> Vec<Route> {
    spec.sources
        .iter()
        .flat_map(|s| {
            s.datasets.iter().map(|d| Route {
                source: format!("{}:{d}", s.system),
                target: format!(
                    "{}:{}",
                    spec.target_system,
                    replication_target_path(&spec.target_dataset, &s.system, d)
                ),
                recursive: s.recursive,
            })
        })
        .collect()
}

/// `nas1:tank/a,tank/b nas3:pool`: the sources in one table cell, the
/// datasets of one system together.
pub fn sources_text(spec: &ReplicationTaskSpec) -> String {
    let mut systems: Vec<(&str, Vec<&str>)> = Vec::new();
    for source in &spec.sources {
        let datasets = source.datasets.iter().map(String::as_str);
        match systems
            .iter_mut()
            .find(|(system, _)| *system == source.system)
        {
            Some((_, list)) => list.extend(datasets),
            None => systems.push((&source.system, datasets.collect())),
        }
    }
    systems
        .iter()
        .map(|(system, datasets)| format!("{system}:{}", datasets.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `nas2:backup`.
pub fn target_text(spec: &ReplicationTaskSpec) -> String {
    format!("{}:{}", spec.target_system, spec.target_dataset)
}

pub fn label(name: &str, value: impl std::fmt::Display) -> String {
    format!("{:<LABEL$}{value}", format!("{name}:"))
}

/// Continuation lines under a label.
pub fn indent(value: impl std::fmt::Display) -> String {
    format!("{:LABEL$}{value}", "")
}

/// `nas1:tank/a  →  nas2:backup/nas1/tank/a (and children)`, one per
/// source dataset, the arrows aligned.
pub fn route_lines(spec: &ReplicationTaskSpec) -> Vec<String> {
    let routes = routes(spec);
    let width = routes
        .iter()
        .map(|r| r.source.chars().count())
        .max()
        .unwrap_or(0);
    routes
        .iter()
        .map(|r| {
            let pad = width - r.source.chars().count();
            format!(
                "{}{:pad$}  →  {}{}",
                r.source,
                "",
                r.target,
                if r.recursive { " (and children)" } else { "" }
            )
        })
        .collect()
}

/// The naming schemas: one line when every source replicates the same,
/// otherwise one line per source.
pub fn schema_lines(spec: &ReplicationTaskSpec) -> Vec<String> {
    let lists: Vec<Vec<String>> = spec.sources.iter().map(effective_schemas).collect();
    let all_same = lists.windows(2).all(|w| w[0] == w[1]);
    if all_same {
        let text = lists.first().map(|l| l.join(", ")).unwrap_or_default();
        return vec![label("Naming schemas", text)];
    }
    spec.sources
        .iter()
        .zip(&lists)
        .enumerate()
        .map(|(i, (source, list))| {
            let text = format!(
                "{}:{}: {}",
                source.system,
                source.datasets.join(","),
                list.join(", ")
            );
            if i == 0 {
                label("Naming schemas", text)
            } else {
                indent(text)
            }
        })
        .collect()
}

/// `Raw sends:` in `show`, and in summaries when off.
pub fn raw_text(spec: &ReplicationTaskSpec) -> &'static str {
    if spec.no_raw {
        "no (--no-raw: encrypted datasets are sent decrypted)"
    } else {
        "yes"
    }
}

/// `Bandwidth limit:` as people read it; 0 is no limit.
pub fn bandwidth_text(spec: &ReplicationTaskSpec) -> String {
    match spec.bandwidth_limit {
        0 => "none".into(),
        limit => format_rate(limit),
    }
}

pub fn schedule_description(task: &Task) -> String {
    if task.schedule_description.is_empty() {
        task_schedule(task).to_owned()
    } else {
        task.schedule_description.clone()
    }
}

/// What will be saved, for confirmation and `--dry-run`: the task as the
/// controller validated it (schedule description, next run).
pub fn summary_lines(heading: &str, task: &Task, next_run: &str) -> Vec<String> {
    let spec = replication_spec(task);
    let mut lines = vec![heading.to_owned()];
    lines.push(label("Name", &spec.name));
    for (i, route) in route_lines(&spec).into_iter().enumerate() {
        lines.push(if i == 0 {
            label("Datasets", route)
        } else {
            indent(route)
        });
    }
    lines.extend(schema_lines(&spec));
    lines.push(label("Schedule", schedule_description(task)));
    lines.push(label("Next run", next_run));
    if spec.create_snapshot_task {
        lines.push(label(
            "Snapshot first",
            "yes (every source dataset is snapshotted when a run starts)",
        ));
    }
    if spec.allow_overwrite {
        lines.push(label(
            "Allow overwrite",
            "yes (target datasets that changed or diverged are rolled back and overwritten)",
        ));
    }
    // Like the lines above, only what differs from the defaults.
    if spec.no_raw {
        lines.push(label("Raw sends", raw_text(&spec)));
    }
    if spec.bandwidth_limit > 0 {
        lines.push(label("Bandwidth limit", bandwidth_text(&spec)));
    }
    lines
}
