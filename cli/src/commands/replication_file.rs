//! The replication task file of `nasfleet replication create|edit -f FILE`: a whole task in TOML or JSON, with recursion and naming schemas per source.
//!
//! ```toml
//! name = "offsite"
//! schedule = "weekly"          # optional, preset or cron; default weekly Sunday 00:00
//! enabled = true               # optional
//! allow_overwrite = false      # optional
//! create_snapshot_task = false # optional
//! raw = true                   # optional; false sends encrypted datasets decrypted (--no-raw)
//! bandwidth_limit = "50M"      # optional; bytes per second each source sends at, as
//!                              # --bandwidth-limit takes it ("1.5G", "800K", "50MB/s",
//!                              # "none") or a number of bytes (52428800); 0: no cap
//! [target]
//! system = "nas2"
//! dataset = "backup"
//! [[sources]]
//! system = "nas1"
//! datasets = ["tank/a", "tank/b"]
//! recursive = true             # optional
//! naming_schemas = ["auto-%Y-%m-%d_%H-%M"]   # optional
//! ```
//!
//! Unknown keys are refused (a misspelt `recursve = true` must not quietly
//! mean "not recursive"). Missing `name`, `sources` or `target` are left
//! to [`check_spec`], so they are reported in the controller's words.

use super::replication_spec::{normalize_dataset, parse_bandwidth_limit};
use anyhow::{Context, bail};
use nasfleet_common::replication_rules::check_spec;
use nasfleet_common::schedule::Schedule;
use nasfleet_proto::v1::task_spec::Kind;
use nasfleet_proto::v1::{ReplicationSource, ReplicationTaskSpec, TaskSpec};
use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};
use std::fmt;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    #[serde(default)]
    name: String,
    schedule: Option<String>,
    /// A duration (36h, 3d); absent: twice the schedule's period.
    stale_after: Option<String>,
    enabled: Option<bool>,
    allow_overwrite: Option<bool>,
    create_snapshot_task: Option<bool>,
    raw: Option<bool>,
    bandwidth_limit: Option<RateFile>,
    target: Option<TargetFile>,
    #[serde(default)]
    sources: Vec<SourceFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    #[serde(default)]
    system: String,
    #[serde(default)]
    dataset: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    #[serde(default)]
    system: String,
    #[serde(default)]
    datasets: Vec<String>,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    naming_schemas: Vec<String>,
}

/// `bandwidth_limit` as written: text in the rate syntax, or a number of
/// bytes per second (TOML and JSON people write both).
#[derive(Debug, PartialEq, Eq)]
enum RateFile {
    Text(String),
    Bytes(u64),
}

impl RateFile {
    fn bytes(&self) -> anyhow::Result<u64> {
        match self {
            RateFile::Text(text) => parse_bandwidth_limit("bandwidth_limit", text),
            // The range is check_spec's, which names this field too.
            RateFile::Bytes(bytes) => Ok(*bytes),
        }
    }
}

/// By hand rather than `#[serde(untagged)]`, whose "did not match any
/// variant" would not say what was expected.
impl<'de> Deserialize<'de> for RateFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl Visitor<'_> for RateVisitor {
            type Value = RateFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate such as \"50M\" or a whole number of bytes per second")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RateFile, E> {
                Ok(RateFile::Text(text.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<RateFile, E> {
                Ok(RateFile::Bytes(bytes))
            }
            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<RateFile, E> {
                u64::try_from(bytes)
                    .map(RateFile::Bytes)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(bytes), &self))
            }
        }
        deserializer.deserialize_any(RateVisitor)
    }
}

/// How a task file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

/// The format a file's extension says; `None` without an extension (then
/// the content decides). Other extensions are refused rather than guessed.
pub fn format_of(path: &Path) -> anyhow::Result<Option<Format>> {
    match path.extension().and_then(|e| e.to_str()) {
        None => Ok(None),
        Some(ext) if ext.eq_ignore_ascii_case("toml") => Ok(Some(Format::Toml)),
        Some(ext) if ext.eq_ignore_ascii_case("json") => Ok(Some(Format::Json)),
        Some(ext) => bail!(
            "{}: unknown file type .{ext}; write the task as .toml or .json (or without an extension)",
            path.display()
        ),
    }
}

fn parse_toml(text: &str) -> anyhow::Result<TaskFile> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
}

fn parse_json(text: &str) -> anyhow::Result<TaskFile> {
    serde_json::from_str(text).map_err(anyhow::Error::from)
}

fn parse(text: &str, format: Option<Format>) -> anyhow::Result<TaskFile> {
    match format {
        Some(Format::Toml) => parse_toml(text),
        Some(Format::Json) => parse_json(text),
        // JSON first, then TOML. A text that is well-formed in one of them
        // gets that format's complaint about the fields; one that is neither
        // gets the complaint of the format it looks like.
        None => {
            if serde_json::from_str::<serde_json::Value>(text).is_ok() {
                parse_json(text)
            } else if toml::from_str::<toml::Table>(text).is_ok() {
                parse_toml(text)
            } else if text.trim_start().starts_with(['{', '[']) {
                parse_json(text).context("neither JSON nor TOML (read as JSON)")
            } else {
                parse_toml(text).context("neither JSON nor TOML (read as TOML)")
            }
        }
    }
}

impl TaskFile {
    fn into_spec(self) -> anyhow::Result<TaskSpec> {
        let schedule = match self.schedule.as_deref() {
            None => Schedule::weekly(),
            Some(text) => Schedule::parse(text)?,
        };
        let bandwidth_limit = self
            .bandwidth_limit
            .as_ref()
            .map(RateFile::bytes)
            .transpose()?
            .unwrap_or(0);
        let target = self.target.unwrap_or(TargetFile {
            system: String::new(),
            dataset: String::new(),
        });
        let replication = ReplicationTaskSpec {
            name: self.name.trim().to_owned(),
            sources: self
                .sources
                .into_iter()
                .map(|s| ReplicationSource {
                    system: s.system.trim().to_owned(),
                    datasets: s.datasets.iter().map(|d| normalize_dataset(d)).collect(),
                    recursive: s.recursive,
                    naming_schemas: s
                        .naming_schemas
                        .iter()
                        .map(|n| n.trim().to_owned())
                        .collect(),
                })
                .collect(),
            target_system: target.system.trim().to_owned(),
            target_dataset: normalize_dataset(&target.dataset),
            allow_overwrite: self.allow_overwrite.unwrap_or(false),
            no_raw: !self.raw.unwrap_or(true),
            bandwidth_limit,
            create_snapshot_task: self.create_snapshot_task.unwrap_or(false),
        };
        check_spec(&replication)?;
        Ok(TaskSpec {
            schedule: schedule.expression().to_owned(),
            enabled: self.enabled.unwrap_or(true),
            stale_after: self
                .stale_after
                .as_deref()
                .map(super::schedule_args::stale_after_value)
                .transpose()?
                .unwrap_or_default(),
            kind: Some(Kind::Replication(replication)),
        })
    }
}

/// The task a file's text describes, checked like the flags would be.
pub fn spec_from_text(text: &str, format: Option<Format>) -> anyhow::Result<TaskSpec> {
    parse(text, format)?.into_spec()
}

/// Reads and checks a task file; errors start with the file's path.
pub fn read(path: &Path) -> anyhow::Result<TaskSpec> {
    let format = format_of(path)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    spec_from_text(&text, format).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::replication_spec::replication_of;
    use crate::commands::replication_spec::tests::strings;
    use nasfleet_common::replication_rules::ReplicationRuleError;

    const TOML: &str = r#"
name = "offsite"
schedule = "daily"
enabled = false
allow_overwrite = true
[target]
system = "nas2"
dataset = "backup/"
[[sources]]
system = "nas1"
datasets = ["tank/a", "tank/b"]
recursive = true
naming_schemas = ["auto-%Y-%m-%d_%H-%M", "hourly-%Y%m%d%H%M"]
[[sources]]
system = "nas3"
datasets = ["pool"]
"#;

    const JSON: &str = r#"{
  "name": "offsite",
  "target": {"system": "nas2", "dataset": "backup"},
  "sources": [
    {"system": "nas1", "datasets": ["tank/a", "tank/b"], "recursive": true},
    {"system": "nas3", "datasets": ["pool"], "naming_schemas": ["x-%s"]}
  ]
}"#;

    fn err(text: &str, format: Option<Format>) -> String {
        format!("{:#}", spec_from_text(text, format).unwrap_err())
    }

    #[test]
    fn toml_file_with_per_source_settings() {
        let spec = spec_from_text(TOML, Some(Format::Toml)).unwrap();
        assert_eq!(spec.schedule, "0 0 * * *");
        assert!(!spec.enabled);
        let r = replication_of(&spec).unwrap();
        assert_eq!(r.name, "offsite");
        assert_eq!(r.target_system, "nas2");
        assert_eq!(r.target_dataset, "backup");
        assert!(r.allow_overwrite);
        assert!(!r.create_snapshot_task);
        assert_eq!(r.sources.len(), 2);
        assert!(r.sources[0].recursive);
        assert_eq!(
            r.sources[0].naming_schemas,
            strings(&["auto-%Y-%m-%d_%H-%M", "hourly-%Y%m%d%H%M"])
        );
        assert!(!r.sources[1].recursive);
        assert!(r.sources[1].naming_schemas.is_empty());
    }

    #[test]
    fn json_file_with_defaults() {
        let spec = spec_from_text(JSON, Some(Format::Json)).unwrap();
        assert_eq!(spec.schedule, "0 0 * * sun");
        assert!(spec.enabled);
        let r = replication_of(&spec).unwrap();
        assert!(r.sources[0].recursive);
        assert!(!r.sources[1].recursive);
        assert_eq!(r.sources[1].naming_schemas, strings(&["x-%s"]));
        assert!(!r.allow_overwrite);
        // Raw sends and no bandwidth limit unless the file says otherwise.
        assert!(!r.no_raw);
        assert_eq!(r.bandwidth_limit, 0);
    }

    fn with_top(line: &str) -> String {
        format!("{line}\n{TOML}")
    }

    #[test]
    fn raw_and_bandwidth_limit() {
        let spec = spec_from_text(
            &with_top("raw = false\nbandwidth_limit = \"50M\""),
            Some(Format::Toml),
        )
        .unwrap();
        let r = replication_of(&spec).unwrap();
        assert!(r.no_raw);
        assert_eq!(r.bandwidth_limit, 50 << 20);
        let spec = spec_from_text(&with_top("raw = true"), None).unwrap();
        assert!(!replication_of(&spec).unwrap().no_raw);
        for (value, bytes) in [
            ("\"1.5G/s\"", 1_610_612_736),
            ("\"800K\"", 800 << 10),
            ("1048576", 1 << 20),
            ("\"none\"", 0),
            ("0", 0),
        ] {
            let spec =
                spec_from_text(&with_top(&format!("bandwidth_limit = {value}")), None).unwrap();
            assert_eq!(
                replication_of(&spec).unwrap().bandwidth_limit,
                bytes,
                "{value}"
            );
        }
        let json = JSON.replacen('{', "{\"raw\": false, \"bandwidth_limit\": 65536,", 1);
        let spec = spec_from_text(&json, Some(Format::Json)).unwrap();
        let r = replication_of(&spec).unwrap();
        assert!(r.no_raw);
        assert_eq!(r.bandwidth_limit, 65_536);
        let json = JSON.replacen('{', "{\"bandwidth_limit\": \"50MB/s\",", 1);
        let spec = spec_from_text(&json, None).unwrap();
        assert_eq!(replication_of(&spec).unwrap().bandwidth_limit, 50 << 20);
    }

    #[test]
    fn bad_bandwidth_limits_name_the_field() {
        let e = err(&with_top("bandwidth_limit = \"fast\""), None);
        assert!(
            e.starts_with("bandwidth_limit: 'fast' is not a rate; give bytes per second"),
            "{e}"
        );
        let e = err(&with_top("bandwidth_limit = \"1K\""), None);
        assert!(
            e.starts_with("bandwidth_limit: '1K' (1024 bytes per second) is out of range; the limit must be 0 (no limit) or from 64.0K/s"),
            "{e}"
        );
        let e = err(&with_top("bandwidth_limit = 1000"), None);
        assert_eq!(
            e,
            ReplicationRuleError::BadBandwidthLimit { limit: 1000 }.to_string()
        );
        for (value, complaint) in [
            (
                "-1",
                "invalid value: integer `-1`, expected a rate such as \"50M\"",
            ),
            (
                "1.5",
                "invalid type: floating point `1.5`, expected a rate such as \"50M\"",
            ),
        ] {
            let e = err(&with_top(&format!("bandwidth_limit = {value}")), None);
            assert!(e.contains(complaint), "{value}: {e}");
        }
        let e = err(&with_top("raw = \"no\""), None);
        assert!(
            e.contains("invalid type: string \"no\", expected a boolean"),
            "{e}"
        );
        // The proto's name is not the file's: `raw` says what is on.
        let e = err(&with_top("no_raw = true"), None);
        assert!(e.contains("unknown field `no_raw`"), "{e}");
    }

    #[test]
    fn content_decides_without_an_extension() {
        assert_eq!(
            spec_from_text(JSON, None).unwrap(),
            spec_from_text(JSON, Some(Format::Json)).unwrap()
        );
        assert_eq!(
            spec_from_text(TOML, None).unwrap(),
            spec_from_text(TOML, Some(Format::Toml)).unwrap()
        );
        let e = err("{\"name\": ", None);
        assert!(
            e.starts_with("neither JSON nor TOML (read as JSON): "),
            "{e}"
        );
        let e = err("name = ", None);
        assert!(
            e.starts_with("neither JSON nor TOML (read as TOML): "),
            "{e}"
        );
        // Well-formed TOML with a wrong field gets TOML's complaint alone.
        let e = err(&TOML.replace("recursive = true", "recursve = true"), None);
        assert!(e.starts_with("TOML parse error at line 12"), "{e}");
    }

    #[test]
    fn extensions_choose_the_format() {
        assert_eq!(format_of(Path::new("a.toml")).unwrap(), Some(Format::Toml));
        assert_eq!(format_of(Path::new("a.JSON")).unwrap(), Some(Format::Json));
        assert_eq!(format_of(Path::new("dir/task")).unwrap(), None);
        let e = format_of(Path::new("a.yaml")).unwrap_err().to_string();
        assert!(e.contains("unknown file type .yaml"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(
            &TOML.replace("recursive = true", "recursve = true"),
            Some(Format::Toml),
        );
        assert!(e.contains("unknown field `recursve`"), "{e}");
        let e = err(
            &JSON.replace("\"recursive\"", "\"recurse\""),
            Some(Format::Json),
        );
        assert!(e.contains("unknown field `recurse`"), "{e}");
        let e = err(&format!("colour = \"blue\"\n{TOML}"), None);
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = err(
            &TOML.replace("dataset = \"backup/\"", "datasets = [\"x\"]"),
            None,
        );
        assert!(e.contains("unknown field `datasets`"), "{e}");
    }

    #[test]
    fn file_content_is_checked_like_flags() {
        let e = err(
            "name = \"x\"\n[target]\nsystem = \"nas2\"\ndataset = \"b\"\n",
            None,
        );
        assert_eq!(e, ReplicationRuleError::NoSources.to_string());
        let e = err(
            "name = \"x\"\n[[sources]]\nsystem = \"nas1\"\ndatasets = [\"tank\"]\n",
            None,
        );
        assert_eq!(e, ReplicationRuleError::NoTarget.to_string());
        let e = err(&TOML.replace("\"daily\"", "\"fortnightly\""), None);
        assert!(e.starts_with("schedule: \"fortnightly\""), "{e}");
        let e = err(&TOML.replace("hourly-%Y%m%d%H%M", "bad"), None);
        assert!(e.starts_with("naming_schema: "), "{e}");
        let e = err(
            &TOML
                .replace("[\"pool\"]", "[\"tank/a\"]")
                .replace("nas3", "nas1"),
            None,
        );
        assert_eq!(
            e,
            "sources: nas1:tank/a and nas1:tank/a both land on backup/nas1/tank/a"
        );
    }

    #[test]
    fn wrong_types_are_reported() {
        let e = err(
            &TOML.replace("recursive = true", "recursive = \"yes\""),
            None,
        );
        assert!(
            e.contains("invalid type: string \"yes\", expected a boolean"),
            "{e}"
        );
        let e = err(&JSON.replace("[\"pool\"]", "\"pool\""), None);
        assert!(
            e.contains("invalid type: string \"pool\", expected a sequence"),
            "{e}"
        );
    }

    #[test]
    fn read_names_the_file() {
        let dir = std::env::temp_dir().join(format!("nasfleet-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("offsite.json");
        std::fs::write(&path, TOML).unwrap();
        let e = format!("{:#}", read(&path).unwrap_err());
        assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
        let path = dir.join("offsite");
        std::fs::write(&path, TOML).unwrap();
        assert!(read(&path).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
