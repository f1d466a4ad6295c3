//! The schedule flags every task kind takes (`--schedule`, `--cron`, `--period` with `--day`/`--at`), resolved through the shared `Schedule` vocabulary.

use clap::Args;
use nasfleet_common::schedule::{Preset, Schedule};

/// When a task runs. At most one of `--schedule`, `--cron` and `--period`;
/// `--day` and `--at` refine `--period`. The combinations are checked by
/// `Schedule::from_flags`, not by clap, so the CLI and the controller word
/// the same mistake the same way.
#[derive(Debug, Clone, Default, Args)]
pub struct ScheduleArgs {
    /// A preset (hourly, daily, weekly, monthly) or a 5-field cron expression.
    #[arg(long, value_name = "SCHEDULE")]
    pub schedule: Option<String>,
    /// A 5-field cron expression "MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK", in the controller's time zone.
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// A period whose day and time --day and --at choose.
    #[arg(long, value_enum, value_name = "PERIOD")]
    pub period: Option<Preset>,
    /// Day of the period: a weekday (sun..sat) for weekly, a day of the month (1-31) for monthly.
    #[arg(long, value_name = "DAY")]
    pub day: Option<String>,
    /// Time of day, HH:MM.
    #[arg(long, value_name = "HH:MM")]
    pub at: Option<String>,
    /// Raise a stale-protection alert when the task has protected nothing new for this long (36h, 3d); `default` is twice its schedule's period.
    #[arg(long, value_name = "DURATION")]
    pub stale_after: Option<String>,
}

/// `--stale-after`'s value as a task spec keeps it: empty for `default`,
/// else a duration (the controller checks it again).
pub fn stale_after_value(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    if text == "default" {
        return Ok(String::new());
    }
    nasfleet_common::duration::parse_duration("stale-after", text)?;
    Ok(text.to_owned())
}

/// The stale-after an edit leaves: the flag's, or the task's own.
pub fn edited_stale_after(
    flag: Option<&str>,
    current: &nasfleet_proto::v1::TaskSpec,
) -> anyhow::Result<String> {
    match flag {
        Some(text) => stale_after_value(text),
        None => Ok(current.stale_after.clone()),
    }
}

impl ScheduleArgs {
    /// Whether any schedule flag was given.
    pub fn given(&self) -> bool {
        self.schedule.is_some()
            || self.cron.is_some()
            || self.period.is_some()
            || self.day.is_some()
            || self.at.is_some()
    }

    /// The schedule the flags ask for, built on `default` where they leave
    /// parts open; `None` when no schedule flag was given, so `edit` leaves
    /// the task's schedule exactly as it was.
    pub fn resolve(&self, default: Schedule) -> anyhow::Result<Option<Schedule>> {
        if !self.given() {
            return Ok(None);
        }
        Schedule::from_flags(
            self.schedule.as_deref(),
            self.cron.as_deref(),
            self.period,
            self.day.as_deref(),
            self.at.as_deref(),
            default,
        )
        .map(Some)
        .map_err(anyhow::Error::from)
    }

    /// `--stale-after` for a new task; empty without it.
    pub fn stale_after_or_default(&self) -> anyhow::Result<String> {
        self.stale_after
            .as_deref()
            .map(stale_after_value)
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// The schedule for a new task: the flags, or `default` without any.
    pub fn resolve_or(&self, default: Schedule) -> anyhow::Result<Schedule> {
        Ok(self.resolve(default.clone())?.unwrap_or(default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        schedule: ScheduleArgs,
    }

    fn resolve(flags: &[&str]) -> anyhow::Result<Option<String>> {
        let argv = ["test"].iter().chain(flags.iter());
        let cli = Cli::try_parse_from(argv)?;
        Ok(cli
            .schedule
            .resolve(Schedule::weekly())?
            .map(|s| s.expression().to_owned()))
    }

    #[test]
    fn no_flags_leave_the_schedule_alone() {
        assert_eq!(resolve(&[]).unwrap(), None);
        assert_eq!(
            ScheduleArgs::default()
                .resolve_or(Schedule::hourly())
                .unwrap()
                .expression(),
            "0 * * * *"
        );
    }

    #[test]
    fn each_form_resolves() {
        assert_eq!(
            resolve(&["--schedule", "daily"]).unwrap().as_deref(),
            Some("0 0 * * *")
        );
        assert_eq!(
            resolve(&["--cron", "30 2 * * 1-5"]).unwrap().as_deref(),
            Some("30 2 * * 1-5")
        );
        assert_eq!(
            resolve(&["--period", "weekly", "--day", "mon", "--at", "03:15"])
                .unwrap()
                .as_deref(),
            Some("15 3 * * mon")
        );
    }

    #[test]
    fn mistakes_are_worded_by_the_shared_vocabulary() {
        let err = resolve(&["--schedule", "daily", "--cron", "0 1 * * *"]).unwrap_err();
        assert!(err.to_string().contains("cannot be combined"), "{err}");
        let err = resolve(&["--at", "02:00"]).unwrap_err();
        assert!(err.to_string().starts_with("at: "), "{err}");
    }

    #[test]
    fn stale_after_is_a_duration_or_default() {
        assert_eq!(stale_after_value("36h").unwrap(), "36h");
        assert_eq!(stale_after_value(" default ").unwrap(), "");
        let e = stale_after_value("soon").unwrap_err().to_string();
        assert!(e.starts_with("stale-after"), "{e}");
    }
}
