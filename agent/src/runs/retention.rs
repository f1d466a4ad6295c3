//! Retention of a periodic snapshot task: which of a host's snapshots the task's lifetime says to destroy. Pure; the caller lists and destroys.
//!
//! The rule errs on the side of keeping: a snapshot is destroyed only when
//! it belongs to one of the task's datasets, its name parses exactly under
//! the task's naming schema, the instant it encodes is strictly older than
//! the lifetime, and it is not protected (e.g. the incremental base of a
//! replication). Manual snapshots, other tasks' schemas, other datasets and
//! names that do not parse are never touched.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use nasfleet_common::naming::NamingSchema;

/// The retention part of one periodic snapshot task.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// The task's naming schema; only names that parse under it are candidates.
    pub schema: NamingSchema,
    /// How long a snapshot is kept. Zero keeps everything: a task without
    /// a lifetime must not destroy the snapshot it just took.
    pub lifetime: Duration,
    /// The zone the schema's dates were rendered in (the controller's).
    pub timezone: chrono_tz::Tz,
    /// Full names (`dataset@snapshot`) that must survive whatever their age.
    pub protected: HashSet<String>,
}

/// From `snapshots` (full names `dataset@snap`), those to destroy, in the
/// order given and without duplicates.
///
/// `datasets` is the task's final dataset set: the dataset, plus its
/// descendants when recursive, minus excluded ones. A snapshot is expired
/// when its dataset is in that set, its name parses under the schema, the
/// instant it encodes (read in `timezone`) is older than `now - lifetime`,
/// and it is not protected. A snapshot exactly `lifetime` old is kept: it
/// expires at the next run after that, never before its time.
///
/// Names read in `timezone` that fall into a DST gap cannot have been
/// rendered there and are kept (see [`NamingSchema::parse_in`]); a name in
/// the repeated hour when clocks go back is read as the earlier instant.
pub fn expired(
    snapshots: &[String],
    datasets: &HashSet<String>,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Vec<String> {
    if policy.lifetime.is_zero() {
        return Vec::new();
    }
    // A lifetime too long to subtract keeps everything.
    let Some(cutoff) = TimeDelta::from_std(policy.lifetime)
        .ok()
        .and_then(|lifetime| now.checked_sub_signed(lifetime))
    else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    snapshots
        .iter()
        .filter(|full| {
            let Some((dataset, name)) = full.split_once('@') else {
                return false;
            };
            datasets.contains(dataset)
                && !policy.protected.contains(full.as_str())
                && policy
                    .schema
                    .parse_in(name, &policy.timezone)
                    .is_some_and(|taken| taken.with_timezone(&Utc) < cutoff)
        })
        .filter(|full| seen.insert(full.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::Europe::Berlin;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn set(v: &[&str]) -> HashSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn policy(lifetime: Duration, timezone: chrono_tz::Tz) -> RetentionPolicy {
        RetentionPolicy {
            schema: NamingSchema::default_periodic(),
            lifetime,
            timezone,
            protected: HashSet::new(),
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn only_expired_snapshots_of_the_schema() {
        let now = utc(2026, 1, 10, 12, 0);
        let snapshots = list(&[
            "tank/a@auto-2026-01-01_00-00",
            "tank/a@auto-2026-01-08_00-00",
            "tank/a@auto-2026-01-10_11-00",
            "tank/a@manual-2026-01-01_00-00",
            "tank/a@auto-2026-01-01_00-00-extra",
            "tank/a@auto-2026-1-1_0-0",
            "tank/a@auto-2026-02-30_00-00",
            "tank/a@replica-base",
            "tank/a@auto-2026-01-02_00-00",
            "tank/a",
            "tank/a@auto-2026-01-01_00-00",
        ]);
        let datasets = set(&["tank/a"]);
        let got = expired(&snapshots, &datasets, &policy(7 * DAY, chrono_tz::UTC), now);
        assert_eq!(
            got,
            [
                "tank/a@auto-2026-01-01_00-00",
                "tank/a@auto-2026-01-02_00-00"
            ]
        );
    }

    #[test]
    fn other_schemas_are_kept() {
        let now = utc(2030, 1, 1, 0, 0);
        let snapshots = list(&[
            "tank/a@manual-2026-01-01_00-00",
            "tank/a@auto-2026-01-01_00-00",
        ]);
        let datasets = set(&["tank/a"]);
        let mut manual = policy(DAY, chrono_tz::UTC);
        manual.schema = NamingSchema::default_manual();
        assert_eq!(
            expired(&snapshots, &datasets, &manual, now),
            ["tank/a@manual-2026-01-01_00-00"]
        );
        let mut hourly = policy(DAY, chrono_tz::UTC);
        hourly.schema = NamingSchema::new("hourly-%Y%m%d%H%M").unwrap();
        assert!(expired(&snapshots, &datasets, &hourly, now).is_empty());
    }

    #[test]
    fn protected_are_kept() {
        let now = utc(2026, 6, 1, 0, 0);
        let snapshots = list(&[
            "tank/a@auto-2026-01-01_00-00",
            "tank/a@auto-2026-01-02_00-00",
        ]);
        let mut p = policy(DAY, chrono_tz::UTC);
        p.protected = set(&[
            "tank/a@auto-2026-01-01_00-00",
            "tank/b@auto-2026-01-02_00-00",
        ]);
        assert_eq!(
            expired(&snapshots, &set(&["tank/a"]), &p, now),
            ["tank/a@auto-2026-01-02_00-00"]
        );
    }

    #[test]
    fn only_the_tasks_datasets() {
        let now = utc(2026, 6, 1, 0, 0);
        let snapshots = list(&[
            "tank/a@auto-2026-01-01_00-00",
            "tank/a/child@auto-2026-01-01_00-00",
            "tank/a/excluded@auto-2026-01-01_00-00",
            "tank/ab@auto-2026-01-01_00-00",
            "tank/b@auto-2026-01-01_00-00",
            "tank@auto-2026-01-01_00-00",
            "other/a@auto-2026-01-01_00-00",
        ]);
        let datasets = set(&["tank/a", "tank/a/child"]);
        assert_eq!(
            expired(&snapshots, &datasets, &policy(DAY, chrono_tz::UTC), now),
            [
                "tank/a@auto-2026-01-01_00-00",
                "tank/a/child@auto-2026-01-01_00-00"
            ]
        );
        assert!(
            expired(
                &snapshots,
                &HashSet::new(),
                &policy(DAY, chrono_tz::UTC),
                now
            )
            .is_empty()
        );
    }

    #[test]
    fn exactly_lifetime_old_is_kept() {
        let snapshots = list(&["tank/a@auto-2026-01-01_00-00"]);
        let datasets = set(&["tank/a"]);
        let p = policy(DAY, chrono_tz::UTC);
        assert!(expired(&snapshots, &datasets, &p, utc(2026, 1, 2, 0, 0)).is_empty());
        let just_after = utc(2026, 1, 2, 0, 0) + TimeDelta::seconds(1);
        assert_eq!(expired(&snapshots, &datasets, &p, just_after), snapshots);
        // Future-dated names (clock skew) are young, not expired.
        let future = list(&["tank/a@auto-2027-01-01_00-00"]);
        assert!(expired(&future, &datasets, &p, utc(2026, 1, 2, 0, 0)).is_empty());
    }

    #[test]
    fn zero_or_huge_lifetime_keeps_everything() {
        let snapshots = list(&["tank/a@auto-2000-01-01_00-00"]);
        let datasets = set(&["tank/a"]);
        let now = utc(2026, 1, 1, 0, 0);
        assert!(
            expired(
                &snapshots,
                &datasets,
                &policy(Duration::ZERO, chrono_tz::UTC),
                now
            )
            .is_empty()
        );
        assert!(
            expired(
                &snapshots,
                &datasets,
                &policy(Duration::MAX, chrono_tz::UTC),
                now
            )
            .is_empty()
        );
    }

    #[test]
    fn time_zone_matters() {
        // Rendered in Berlin (CET, UTC+1) at 2026-01-01 09:30 UTC.
        let taken = utc(2026, 1, 1, 9, 30);
        let name = format!(
            "tank/a@{}",
            NamingSchema::default_periodic().render(&taken.with_timezone(&Berlin))
        );
        assert_eq!(name, "tank/a@auto-2026-01-01_10-30");
        let snapshots = vec![name];
        let datasets = set(&["tank/a"]);
        // 30 minutes past an hour's lifetime: expired when read in Berlin.
        let now = utc(2026, 1, 1, 11, 0);
        assert_eq!(
            expired(&snapshots, &datasets, &policy(HOUR, Berlin), now),
            snapshots
        );
        // Read as UTC it would look 30 minutes old and be kept: the zone
        // must be the one the name was rendered in.
        assert!(expired(&snapshots, &datasets, &policy(HOUR, chrono_tz::UTC), now).is_empty());
    }

    #[test]
    fn dst_gap_names_are_kept() {
        // 02:30 on 2026-03-29 does not exist in Berlin.
        let snapshots = list(&[
            "tank/a@auto-2026-03-29_02-30",
            "tank/a@auto-2026-03-29_01-30",
        ]);
        let now = utc(2027, 1, 1, 0, 0);
        assert_eq!(
            expired(&snapshots, &set(&["tank/a"]), &policy(DAY, Berlin), now),
            ["tank/a@auto-2026-03-29_01-30"]
        );
    }
}
