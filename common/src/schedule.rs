//! Task schedules: presets, 5-field cron and the CLI's `--period` form, validated with clear messages and evaluated in a time zone across DST changes.
//!
//! # What a schedule means
//!
//! A schedule is a standard 5-field cron expression `MINUTE HOUR DAY-OF-MONTH
//! MONTH DAY-OF-WEEK`; the presets are names for four of them (hourly
//! `0 * * * *`, daily `0 0 * * *`, weekly `0 0 * * sun`, monthly `0 0 1 * *`).
//! Evaluation uses the `cron` crate, but that crate differs from crontab(5) in
//! three ways, and this module papers over each, so that an expression means
//! here what it means in a crontab:
//!
//! * **Day-of-week numbering.** The crate numbers weekdays 1 = Sunday ..
//!   7 = Saturday; crontab numbers them 0 = Sunday .. 6 = Saturday and also
//!   accepts 7 for Sunday. We expand the day-of-week field ourselves and hand
//!   the crate weekday *names*, which mean the same in both.
//! * **Day-of-month OR day-of-week.** The crate requires both fields to match.
//!   crontab(5): "If both fields are restricted (i.e., don't start with \*),
//!   the command will be run when either field matches the current time", so
//!   `0 0 1 * mon` is the 1st of the month *and* every Monday. When both are
//!   restricted we evaluate two crate schedules (one per field) and merge them.
//! * **Daylight saving.** The crate skips a wall-clock time that does not exist
//!   (a daily 02:30 job silently misses the spring-forward day) and yields a
//!   repeated wall-clock time twice (it runs twice on the fall-back day). We
//!   follow what cron daemons do instead:
//!   - a job at *fixed hours* (hour field not starting with `*`) runs once per
//!     matching wall-clock time: when that time is skipped it runs at the
//!     moment the clocks jump (03:00 in Europe/Berlin on 2026-03-29), and when
//!     it happens twice it runs at the first occurrence only;
//!   - a job whose hour field starts with `*` (hourly, every 15 minutes, ...)
//!     runs by the clock: a skipped hour has nothing to run, and a repeated
//!     hour runs again, so an hourly job fires every real hour, never twice at
//!     the same instant and never with a gap.
//!
//! The crate is therefore only asked about *wall-clock* times (we evaluate it
//! in UTC, which has no transitions, on the local wall-clock time), and this
//! module maps each wall-clock match to real instants in the caller's zone.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One of the four named schedules; also the `--period` of the wizard form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::Hourly,
        Preset::Daily,
        Preset::Weekly,
        Preset::Monthly,
    ];

    /// The cron expression the preset stands for (DESIGN.md, "Schedule").
    pub fn expression(self) -> &'static str {
        match self {
            Preset::Hourly => "0 * * * *",
            Preset::Daily => "0 0 * * *",
            Preset::Weekly => "0 0 * * sun",
            Preset::Monthly => "0 0 1 * *",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Hourly => "hourly",
            Preset::Daily => "daily",
            Preset::Weekly => "weekly",
            Preset::Monthly => "monthly",
        }
    }

    /// Case-insensitive name lookup; `None` when `text` names no preset.
    fn from_name(text: &str) -> Option<Preset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(text))
    }

    /// What one period is, for "runs every ..." messages.
    fn unit(self) -> &'static str {
        match self {
            Preset::Hourly => "hour",
            Preset::Daily => "day",
            Preset::Weekly => "week",
            Preset::Monthly => "month",
        }
    }

    fn from_expression(expression: &str) -> Option<Preset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.expression() == expression)
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a `--period` given as text (the controller receives it that way);
/// errors name the field `period`.
impl FromStr for Preset {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Preset, ScheduleError> {
        Preset::from_name(text.trim()).ok_or_else(|| ScheduleError::UnknownPeriod {
            value: text.to_owned(),
        })
    }
}

/// The user input an error is about; its `Display` is the field name that
/// starts every message, `flag()` the CLI flag that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Schedule,
    Cron,
    Period,
    Day,
    At,
    Timezone,
}

impl Input {
    pub fn name(self) -> &'static str {
        match self {
            Input::Schedule => "schedule",
            Input::Cron => "cron",
            Input::Period => "period",
            Input::Day => "day",
            Input::At => "at",
            Input::Timezone => "timezone",
        }
    }

    pub fn flag(self) -> String {
        format!("--{}", self.name())
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One of the five fields of a cron expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const WEEKDAY_FULL_NAMES: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

impl CronField {
    const ALL: [CronField; 5] = [
        CronField::Minute,
        CronField::Hour,
        CronField::DayOfMonth,
        CronField::Month,
        CronField::DayOfWeek,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        }
    }

    /// Smallest value a number may take.
    pub fn min(self) -> u32 {
        match self {
            CronField::DayOfMonth | CronField::Month => 1,
            _ => 0,
        }
    }

    /// Largest value a number may take (7 is the crontab alias for Sunday).
    pub fn max(self) -> u32 {
        match self {
            CronField::Minute => 59,
            CronField::Hour => 23,
            CronField::DayOfMonth => 31,
            CronField::Month => 12,
            CronField::DayOfWeek => 7,
        }
    }

    /// Last value `*` covers: Sunday is 0, so `*` in day-of-week stops at 6
    /// (otherwise `*/2` would also pick 7 = Sunday a second time).
    fn star_max(self) -> u32 {
        match self {
            CronField::DayOfWeek => 6,
            other => other.max(),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            CronField::Month => &MONTH_NAMES,
            CronField::DayOfWeek => &WEEKDAY_NAMES,
            _ => &[],
        }
    }

    /// What a value of this field may look like, for "is not ..." messages.
    fn expected(self) -> String {
        match self {
            CronField::Month => "a number 1-12 or a name jan-dec".to_owned(),
            CronField::DayOfWeek => "a number 0-7 or a name sun-sat".to_owned(),
            other => format!("a number {}-{}", other.min(), other.max()),
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can be wrong with a schedule, a wizard flag or a time
/// zone. Each message starts with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScheduleError {
    #[error(
        "{input}: is empty; give a preset (hourly, daily, weekly, monthly) or a 5-field cron expression"
    )]
    Empty { input: Input },
    #[error(
        "{input}: \"{text}\" is neither a preset (hourly, daily, weekly, monthly) nor a 5-field cron expression \"MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\""
    )]
    Unknown { input: Input, text: String },
    #[error("{input}: expected 5 fields \"MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\", got {got}")]
    FieldCount { input: Input, got: usize },
    #[error("{input}: {field} has an empty list item in \"{expr}\"")]
    EmptyItem {
        input: Input,
        field: CronField,
        expr: String,
    },
    #[error("{input}: {field} \"{value}\" is not {expected} in \"{expr}\"", expected = .field.expected())]
    NotAValue {
        input: Input,
        field: CronField,
        value: String,
        expr: String,
    },
    #[error("{input}: {field} {value} is out of range {min}-{max} in \"{expr}\"", min = .field.min(), max = .field.max())]
    OutOfRange {
        input: Input,
        field: CronField,
        value: String,
        expr: String,
    },
    #[error(
        "{input}: {field} range {range} runs backwards in \"{expr}\"; ranges do not wrap around, list both parts instead, e.g. {hint}"
    )]
    Backwards {
        input: Input,
        field: CronField,
        range: String,
        hint: String,
        expr: String,
    },
    #[error(
        "{input}: {field} step \"{step}\" must be a whole number from 1 to {max} in \"{expr}\""
    )]
    BadStep {
        input: Input,
        field: CronField,
        step: String,
        max: u32,
        expr: String,
    },
    #[error("{input}: {field} \"{item}\" has a step but no range; write \"{hint}\" in \"{expr}\"")]
    StepWithoutRange {
        input: Input,
        field: CronField,
        item: String,
        hint: String,
        expr: String,
    },
    #[error(
        "{input}: \"{expr}\" would never run: none of its months has the day-of-month it asks for"
    )]
    NeverFires { input: Input, expr: String },
    #[error(
        "{input}: {flag} and {other_flag} cannot be combined; give only one of --schedule, --cron or --period", flag = .input.flag(), other_flag = .other.flag()
    )]
    Conflict { input: Input, other: Input },
    #[error(
        "day: --day works only together with --period weekly or monthly (e.g. --period weekly --day sun); --schedule and --cron carry their own day"
    )]
    DayWithoutPeriod,
    #[error(
        "at: --at works only together with --period (e.g. --period daily --at 02:30); --schedule and --cron carry their own time"
    )]
    AtWithoutPeriod,
    #[error("period: \"{value}\" is not a period; use hourly, daily, weekly or monthly")]
    UnknownPeriod { value: String },
    #[error(
        "day: --period {period} runs every {unit}, so it takes no --day; --day is for --period weekly or monthly", unit = .period.unit()
    )]
    DayNotAllowed { period: Preset },
    #[error(
        "day: \"{value}\" is not a day of the week for --period weekly; use sun..sat, sunday..saturday or 0-7 (0 and 7 are Sunday)"
    )]
    BadWeekday { value: String },
    #[error("day: \"{value}\" is not a day of the month for --period monthly; use 1-31")]
    BadMonthDay { value: String },
    #[error("at: \"{value}\" is not a time of day; use HH:MM from 00:00 to 23:59")]
    BadTime { value: String },
    #[error(
        "at: --period hourly runs every hour, so --at takes only the minute (\"15\", \":15\" or \"00:15\"), got \"{value}\""
    )]
    BadHourlyAt { value: String },
    #[error("timezone: is empty; give an IANA time zone name such as \"Europe/Berlin\" or \"UTC\"")]
    EmptyTimezone,
    #[error(
        "timezone: \"{value}\" is not an IANA time zone name such as \"Europe/Berlin\" or \"UTC\""
    )]
    UnknownTimezone { value: String },
}

/// A validated schedule: the normalised 5-field expression, plus the preset
/// it equals if any. Serialised as the expression string; deserialising
/// validates again, so a hand-edited store cannot smuggle in a bad one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Schedule {
    expression: String,
    // Derived from `expression`, never set independently: an expression that
    // spells a preset *is* that preset, which keeps equality and round trips
    // (`parse(s.expression()) == s`) simple.
    preset: Option<Preset>,
    fields: Fields,
}

impl Schedule {
    pub fn preset(p: Preset) -> Schedule {
        // The preset expressions are constants that the tests validate.
        Schedule::validated(Input::Cron, p.expression())
            .expect("preset expressions are valid cron expressions")
    }

    pub fn hourly() -> Schedule {
        Schedule::preset(Preset::Hourly)
    }

    pub fn daily() -> Schedule {
        Schedule::preset(Preset::Daily)
    }

    pub fn weekly() -> Schedule {
        Schedule::preset(Preset::Weekly)
    }

    pub fn monthly() -> Schedule {
        Schedule::preset(Preset::Monthly)
    }

    /// "hourly"/"daily"/"weekly"/"monthly" (case-insensitive, an `@` in
    /// front as in crontab is fine) or a 5-field cron expression. Errors
    /// name the field `schedule`.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty {
                input: Input::Schedule,
            });
        }
        let word = trimmed.strip_prefix('@').unwrap_or(trimmed);
        if let Some(p) = Preset::from_name(word) {
            return Ok(Schedule::preset(p));
        }
        if trimmed.split_whitespace().count() == 1 {
            return Err(ScheduleError::Unknown {
                input: Input::Schedule,
                text: trimmed.to_owned(),
            });
        }
        Schedule::validated(Input::Schedule, trimmed)
    }

    /// A 5-field cron expression "M H DOM MON DOW" only. Errors name the
    /// field `cron`.
    pub fn cron(expr: &str) -> Result<Schedule, ScheduleError> {
        Schedule::validated(Input::Cron, expr)
    }

    /// The wizard form: `--period hourly|daily|weekly|monthly [--day DAY] [--at HH:MM]`.
    ///
    /// * hourly: `--at` is the minute past every hour, as `MM`, `:MM` or
    ///   `00:MM` (`--at 00:15` gives `15 * * * *`); another hour than `00` is
    ///   refused rather than silently ignored. No `--day`.
    /// * daily: `--at HH:MM` (default 00:00). No `--day`.
    /// * weekly: `--day` sun..sat, sunday..saturday or 0-7 (0 and 7 = Sunday;
    ///   default Sunday), `--at` as for daily.
    /// * monthly: `--day` 1-31 (default 1; as in cron, months without that
    ///   day are skipped), `--at` as for daily.
    ///
    /// The defaults give exactly the preset (`--period weekly` is `weekly`).
    pub fn from_period(
        period: Preset,
        day: Option<&str>,
        at: Option<&str>,
    ) -> Result<Schedule, ScheduleError> {
        let expression = match period {
            Preset::Hourly | Preset::Daily if day.is_some() => {
                return Err(ScheduleError::DayNotAllowed { period });
            }
            Preset::Hourly => {
                let minute = at.map(parse_hourly_at).transpose()?.unwrap_or(0);
                format!("{minute} * * * *")
            }
            Preset::Daily => {
                let (hour, minute) = at.map(parse_time_of_day).transpose()?.unwrap_or((0, 0));
                format!("{minute} {hour} * * *")
            }
            Preset::Weekly => {
                let weekday = day.map(parse_weekday).transpose()?.unwrap_or(0);
                let (hour, minute) = at.map(parse_time_of_day).transpose()?.unwrap_or((0, 0));
                format!("{minute} {hour} * * {}", WEEKDAY_NAMES[weekday as usize])
            }
            Preset::Monthly => {
                let day_of_month = day.map(parse_month_day).transpose()?.unwrap_or(1);
                let (hour, minute) = at.map(parse_time_of_day).transpose()?.unwrap_or((0, 0));
                format!("{minute} {hour} {day_of_month} * *")
            }
        };
        Schedule::validated(Input::Period, &expression)
    }

    /// The CLI's three mutually exclusive forms (`--schedule`, `--cron`,
    /// `--period` with optional `--day`/`--at`); none given → `default`.
    pub fn from_flags(
        schedule: Option<&str>,
        cron: Option<&str>,
        period: Option<Preset>,
        day: Option<&str>,
        at: Option<&str>,
        default: Schedule,
    ) -> Result<Schedule, ScheduleError> {
        let given: Vec<Input> = [
            (Input::Schedule, schedule.is_some()),
            (Input::Cron, cron.is_some()),
            (Input::Period, period.is_some()),
        ]
        .into_iter()
        .filter_map(|(input, present)| present.then_some(input))
        .collect();
        if let [first, second, ..] = given[..] {
            return Err(ScheduleError::Conflict {
                input: first,
                other: second,
            });
        }
        if period.is_none() {
            if day.is_some() {
                return Err(ScheduleError::DayWithoutPeriod);
            }
            if at.is_some() {
                return Err(ScheduleError::AtWithoutPeriod);
            }
        }
        match (schedule, cron, period) {
            (Some(text), _, _) => Schedule::parse(text),
            (_, Some(expr), _) => Schedule::cron(expr),
            (_, _, Some(period)) => Schedule::from_period(period, day, at),
            (None, None, None) => Ok(default),
        }
    }

    /// The normalised 5 fields, e.g. `0 0 * * sun`: single spaces, lower case.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn preset_name(&self) -> Option<Preset> {
        self.preset
    }

    /// For people: `weekly (Sunday at 00:00)`, `hourly (at minute 00)`,
    /// `cron 30 2 * * 1-5`, and for the simple shapes the wizard produces
    /// a reading too: `cron 30 2 * * * (daily at 02:30)`.
    pub fn describe(&self) -> String {
        match self.preset {
            Some(Preset::Hourly) => "hourly (at minute 00)".to_owned(),
            Some(Preset::Daily) => "daily (at 00:00)".to_owned(),
            Some(Preset::Weekly) => "weekly (Sunday at 00:00)".to_owned(),
            Some(Preset::Monthly) => "monthly (day 1 at 00:00)".to_owned(),
            None => match self.wizard_reading() {
                Some(reading) => format!("cron {} ({reading})", self.expression),
                None => format!("cron {}", self.expression),
            },
        }
    }

    /// Next fire strictly after `after`, evaluated in `after`'s time zone.
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.fires(after, None, 1).into_iter().next()
    }

    /// Fire times in `(after, until]`, at most `limit` of them, oldest first.
    pub fn fires_between<Tz: TimeZone>(
        &self,
        after: &DateTime<Tz>,
        until: &DateTime<Tz>,
        limit: usize,
    ) -> Vec<DateTime<Tz>> {
        if until <= after {
            return Vec::new();
        }
        self.fires(after, Some(until), limit)
    }

    /// The next `count` fires strictly after `after`, oldest first.
    pub fn upcoming<Tz: TimeZone>(&self, after: &DateTime<Tz>, count: usize) -> Vec<DateTime<Tz>> {
        self.fires(after, None, count)
    }

    fn validated(input: Input, text: &str) -> Result<Schedule, ScheduleError> {
        let (expression, fields) = parse_expression(input, text)?;
        Ok(Schedule {
            preset: Preset::from_expression(&expression),
            expression,
            fields,
        })
    }

    /// "daily at 02:30" etc. for expressions of the wizard's shapes.
    fn wizard_reading(&self) -> Option<String> {
        let parts: Vec<&str> = self.expression.split(' ').collect();
        let [minute, hour, dom, month, dow] = parts[..] else {
            return None;
        };
        let minute: u32 = minute.parse().ok()?;
        if month != "*" {
            return None;
        }
        if hour == "*" {
            return (dom == "*" && dow == "*").then(|| format!("hourly at minute {minute:02}"));
        }
        let hour: u32 = hour.parse().ok()?;
        match (dom, dow) {
            ("*", "*") => Some(format!("daily at {hour:02}:{minute:02}")),
            ("*", dow) => {
                let weekday = lookup_weekday(dow)?;
                Some(format!(
                    "weekly on {} at {hour:02}:{minute:02}",
                    weekday_title(weekday)
                ))
            }
            (dom, "*") => {
                let day: u32 = dom.parse().ok()?;
                Some(format!("monthly on day {day} at {hour:02}:{minute:02}"))
            }
            _ => None,
        }
    }

    /// Real instants of the schedule in `(after, until]` (no upper bound when
    /// `until` is `None`), at most `limit`, oldest first.
    ///
    /// The crate walks wall-clock times in order, but the instants those map
    /// to are not quite in order around a fall-back: the second 02:30 of the
    /// night comes after the first 02:45. So we start the walk a margin of
    /// wall-clock time before `after` and keep walking until the wall clock
    /// is that margin past the last instant we need. The margin (4 hours) is
    /// larger than any backward clock change a zone makes today (DST shifts
    /// are 1 hour, 2 in Antarctica/Troll).
    fn fires<Tz: TimeZone>(
        &self,
        after: &DateTime<Tz>,
        until: Option<&DateTime<Tz>>,
        limit: usize,
    ) -> Vec<DateTime<Tz>> {
        let margin = TimeDelta::hours(4);
        let mut found: Vec<DateTime<Tz>> = Vec::new();
        if limit == 0 {
            return found;
        }
        let tz = after.timezone();
        let stop_at = until.map(|u| u.naive_local() + margin);
        for wall in self.fields.wall_clock_matches(after.naive_local() - margin) {
            if stop_at.is_some_and(|stop| wall > stop) {
                break;
            }
            if found.len() == limit && wall > found[limit - 1].naive_local() + margin {
                break;
            }
            for instant in self.fields.instants(&tz, wall) {
                if instant <= *after || until.is_some_and(|u| instant > *u) {
                    continue;
                }
                if let Err(at) = found.binary_search(&instant) {
                    found.insert(at, instant);
                    found.truncate(limit);
                }
            }
        }
        found
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse(text)
    }
}

impl From<Schedule> for String {
    fn from(schedule: Schedule) -> String {
        schedule.expression
    }
}

impl TryFrom<String> for Schedule {
    type Error = ScheduleError;

    fn try_from(text: String) -> Result<Schedule, ScheduleError> {
        Schedule::parse(&text)
    }
}

/// An IANA zone name such as `Europe/Berlin` or `UTC`; case does not matter.
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, ScheduleError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(ScheduleError::EmptyTimezone);
    }
    if let Ok(tz) = trimmed.parse::<chrono_tz::Tz>() {
        return Ok(tz);
    }
    chrono_tz::TZ_VARIANTS
        .iter()
        .copied()
        .find(|tz| tz.name().eq_ignore_ascii_case(trimmed))
        .ok_or_else(|| ScheduleError::UnknownTimezone {
            value: name.to_owned(),
        })
}

/// The zone this host's clock shows: `TZ` when it names an IANA zone (it
/// overrides the system setting for every other program too), else the system
/// zone from `/etc/localtime`, else UTC.
pub fn host_timezone() -> chrono_tz::Tz {
    if let Some(tz) = std::env::var("TZ")
        .ok()
        .and_then(|value| timezone_from_tz_variable(&value))
    {
        return tz;
    }
    iana_time_zone::get_timezone()
        .ok()
        .and_then(|name| parse_timezone(&name).ok())
        .unwrap_or(chrono_tz::Tz::UTC)
}

/// `TZ` may be `Europe/Berlin`, `:Europe/Berlin` or a path into zoneinfo;
/// POSIX rule strings like `CET-1CEST` name no IANA zone and yield `None`.
fn timezone_from_tz_variable(value: &str) -> Option<chrono_tz::Tz> {
    let value = value.trim();
    let value = value.strip_prefix(':').unwrap_or(value);
    let name = match value.find("zoneinfo/") {
        Some(at) => &value[at + "zoneinfo/".len()..],
        None => value,
    };
    parse_timezone(name).ok()
}

// ---------------------------------------------------------------------------
// Wizard flags

fn parse_time_of_day(text: &str) -> Result<(u32, u32), ScheduleError> {
    let err = || ScheduleError::BadTime {
        value: text.to_owned(),
    };
    let (hour, minute) = text.trim().split_once(':').ok_or_else(err)?;
    let hour = small_number(hour, 2).filter(|h| *h <= 23).ok_or_else(err)?;
    let minute = (minute.len() == 2)
        .then(|| small_number(minute, 2))
        .flatten()
        .filter(|m| *m <= 59)
        .ok_or_else(err)?;
    Ok((hour, minute))
}

fn parse_hourly_at(text: &str) -> Result<u32, ScheduleError> {
    let err = || ScheduleError::BadHourlyAt {
        value: text.to_owned(),
    };
    let trimmed = text.trim();
    let minute = match trimmed.split_once(':') {
        None => trimmed,
        Some(("", minute)) => minute,
        Some((hour, minute)) if small_number(hour, 2) == Some(0) => minute,
        Some(_) => return Err(err()),
    };
    small_number(minute, 2).filter(|m| *m <= 59).ok_or_else(err)
}

fn parse_weekday(text: &str) -> Result<u32, ScheduleError> {
    let trimmed = text.trim();
    if let Some(n) = small_number(trimmed, 1).filter(|n| *n <= 7) {
        return Ok(n % 7);
    }
    lookup_weekday(&trimmed.to_ascii_lowercase())
        .or_else(|| {
            WEEKDAY_FULL_NAMES
                .iter()
                .position(|name| name.eq_ignore_ascii_case(trimmed))
                .map(|i| i as u32)
        })
        .ok_or_else(|| ScheduleError::BadWeekday {
            value: text.to_owned(),
        })
}

fn parse_month_day(text: &str) -> Result<u32, ScheduleError> {
    small_number(text.trim(), 2)
        .filter(|d| (1..=31).contains(d))
        .ok_or_else(|| ScheduleError::BadMonthDay {
            value: text.to_owned(),
        })
}

/// ASCII digits only (no sign, no spaces), at most `max_digits` of them.
fn small_number(text: &str, max_digits: usize) -> Option<u32> {
    if text.is_empty() || text.len() > max_digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A weekday as it may appear in a normalised day-of-week field: 0-7 or sun-sat.
fn lookup_weekday(token: &str) -> Option<u32> {
    if let Some(n) = small_number(token, 1).filter(|n| *n <= 7) {
        return Some(n % 7);
    }
    WEEKDAY_NAMES
        .iter()
        .position(|name| *name == token)
        .map(|i| i as u32)
}

fn weekday_title(weekday: u32) -> String {
    let name = WEEKDAY_FULL_NAMES[weekday as usize % 7];
    let mut title = name[..1].to_ascii_uppercase();
    title.push_str(&name[1..]);
    title
}

// ---------------------------------------------------------------------------
// Cron expressions

/// The expanded values of each field, as bit sets (bit n = value n; Sunday is
/// bit 0 of `dow`, 7 having been folded onto it), plus whether each field
/// started with `*`, which crontab(5) uses to pick AND or OR for the days and
/// this module uses to pick the daylight-saving behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    hour_star: bool,
    dom_star: bool,
    dow_star: bool,
}

fn parse_expression(input: Input, text: &str) -> Result<(String, Fields), ScheduleError> {
    let lowered = text.to_ascii_lowercase();
    let parts: Vec<&str> = lowered.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(ScheduleError::FieldCount {
            input,
            got: parts.len(),
        });
    }
    let expr = parts.join(" ");
    let mut sets = [0u64; 5];
    for ((set, field), part) in sets.iter_mut().zip(CronField::ALL).zip(&parts) {
        *set = parse_field(input, field, part, &expr)?;
    }
    let [minute, hour, dom, month, dow] = sets;
    let fields = Fields {
        minute,
        hour,
        dom,
        month,
        dow,
        hour_star: parts[1].starts_with('*'),
        dom_star: parts[2].starts_with('*'),
        dow_star: parts[4].starts_with('*'),
    };
    // With the days ANDed (at least one of the two fields starts with `*`),
    // a day-of-month that none of the months has would make the crate search
    // until the year 2100 and then report nothing; say so up front instead.
    let days_are_anded = fields.dom_star || fields.dow_star;
    let some_day_exists = (1..=12u32)
        .filter(|m| month & (1 << m) != 0)
        .any(|m| (1..=longest_month(m)).any(|d| dom & (1 << d) != 0));
    if days_are_anded && !some_day_exists {
        return Err(ScheduleError::NeverFires { input, expr });
    }
    Ok((expr, fields))
}

fn longest_month(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// One field: a comma list of `*`, `*/n`, `a`, `a-b` or `a-b/n`.
fn parse_field(
    input: Input,
    field: CronField,
    text: &str,
    expr: &str,
) -> Result<u64, ScheduleError> {
    let mut set = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(ScheduleError::EmptyItem {
                input,
                field,
                expr: expr.to_owned(),
            });
        }
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (item, None),
        };
        let step = match step {
            None => 1,
            Some(step) => parse_step(input, field, step, expr)?,
        };
        let (low, high) = item_range(input, field, item, base, step, expr)?;
        for value in (low..=high).step_by(step as usize) {
            let value = if field == CronField::DayOfWeek {
                value % 7
            } else {
                value
            };
            set |= 1 << value;
        }
    }
    Ok(set)
}

/// The `N` of `…/N`: at least 1, at most the field's span.
fn parse_step(
    input: Input,
    field: CronField,
    step: &str,
    expr: &str,
) -> Result<u32, ScheduleError> {
    let max = field.star_max() - field.min();
    small_number(step, 2)
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ScheduleError::BadStep {
            input,
            field,
            step: step.to_owned(),
            max,
            expr: expr.to_owned(),
        })
}

/// The first and last value of one list item (`*`, `A-B` or a single
/// value, the part before any `/`); a step needs a range.
fn item_range(
    input: Input,
    field: CronField,
    item: &str,
    base: &str,
    step: u32,
    expr: &str,
) -> Result<(u32, u32), ScheduleError> {
    if base == "*" {
        return Ok((field.min(), field.star_max()));
    }
    let Some((a, b)) = base.split_once('-') else {
        let value = field_value(input, field, base, expr)?;
        if step != 1 || item.contains('/') {
            return Err(ScheduleError::StepWithoutRange {
                input,
                field,
                item: item.to_owned(),
                hint: format!("{base}-{}/{}", field.star_max(), &item[base.len() + 1..]),
                expr: expr.to_owned(),
            });
        }
        return Ok((value, value));
    };
    if a.is_empty() || b.is_empty() {
        return Err(ScheduleError::NotAValue {
            input,
            field,
            value: base.to_owned(),
            expr: expr.to_owned(),
        });
    }
    let (low, high) = (
        field_value(input, field, a, expr)?,
        field_value(input, field, b, expr)?,
    );
    if low > high {
        let (first, last) = if a.bytes().all(|c| c.is_ascii_digit()) {
            (field.min().to_string(), field.star_max().to_string())
        } else {
            let names = field.names();
            (names[0].to_owned(), names[names.len() - 1].to_owned())
        };
        return Err(ScheduleError::Backwards {
            input,
            field,
            range: base.to_owned(),
            hint: format!("{a}-{last},{first}-{b}"),
            expr: expr.to_owned(),
        });
    }
    Ok((low, high))
}

/// A single number or (month, day-of-week) name, range-checked.
fn field_value(
    input: Input,
    field: CronField,
    token: &str,
    expr: &str,
) -> Result<u32, ScheduleError> {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        // Any length of digits is a number, so "100" reads "out of range"
        // rather than "not a number"; saturate instead of overflowing.
        let value = token.parse::<u32>().unwrap_or(u32::MAX);
        if value < field.min() || value > field.max() {
            return Err(ScheduleError::OutOfRange {
                input,
                field,
                value: token.to_owned(),
                expr: expr.to_owned(),
            });
        }
        return Ok(value);
    }
    let names = field.names();
    match names.iter().position(|name| *name == token) {
        Some(i) => Ok(i as u32 + field.min()),
        None => Err(ScheduleError::NotAValue {
            input,
            field,
            value: token.to_owned(),
            expr: expr.to_owned(),
        }),
    }
}

/// Renders a bit set as a comma list for the crate, or `*` when complete.
fn crate_list(set: u64, low: u32, high: u32, render: impl Fn(u32) -> String) -> String {
    let all = (low..=high).all(|v| set & (1 << v) != 0);
    if all {
        return "*".to_owned();
    }
    (low..=high)
        .filter(|v| set & (1 << v) != 0)
        .map(render)
        .collect::<Vec<_>>()
        .join(",")
}

impl Fields {
    /// The crate schedules whose union is this schedule (with a leading
    /// seconds field `0`, which the crate requires). Two when crontab(5) ORs
    /// the days, since the crate always ANDs them.
    fn crate_schedules(&self) -> Vec<cron::Schedule> {
        let number = |v: u32| v.to_string();
        let minute = crate_list(self.minute, 0, 59, number);
        let hour = crate_list(self.hour, 0, 23, number);
        let dom = crate_list(self.dom, 1, 31, number);
        let month = crate_list(self.month, 1, 12, number);
        // Names, because the crate numbers weekdays 1 = Sunday .. 7 = Saturday.
        let dow = crate_list(self.dow, 0, 6, |v| WEEKDAY_NAMES[v as usize].to_owned());
        let expressions = if !self.dom_star && !self.dow_star {
            vec![
                format!("0 {minute} {hour} {dom} {month} *"),
                format!("0 {minute} {hour} * {month} {dow}"),
            ]
        } else {
            vec![format!("0 {minute} {hour} {dom} {month} {dow}")]
        };
        expressions
            .iter()
            .filter_map(|e| {
                let parsed = cron::Schedule::from_str(e);
                debug_assert!(parsed.is_ok(), "cron crate refused {e:?}: {parsed:?}");
                parsed.ok()
            })
            .collect()
    }

    /// Matching wall-clock times strictly after `start`, in order, without
    /// repeats. The crate is run in UTC because UTC has no gaps or repeats,
    /// so it reports every matching wall-clock time exactly once.
    fn wall_clock_matches(&self, start: NaiveDateTime) -> impl Iterator<Item = NaiveDateTime> {
        let start = Utc.from_utc_datetime(&start);
        let mut streams: Vec<_> = self
            .crate_schedules()
            .into_iter()
            .map(|s| s.after_owned(start).map(|t| t.naive_utc()).peekable())
            .collect();
        std::iter::from_fn(move || {
            let next = streams.iter_mut().filter_map(|s| s.peek().copied()).min()?;
            for stream in &mut streams {
                if stream.peek() == Some(&next) {
                    stream.next();
                }
            }
            Some(next)
        })
    }

    /// The real instants at which a matching wall-clock time fires (see the
    /// module documentation for the daylight-saving rules).
    fn instants<Tz: TimeZone>(&self, tz: &Tz, wall: NaiveDateTime) -> Vec<DateTime<Tz>> {
        match tz.from_local_datetime(&wall) {
            LocalResult::Single(at) => vec![at],
            LocalResult::Ambiguous(first, second) if self.hour_star => vec![first, second],
            LocalResult::Ambiguous(first, _) => vec![first],
            LocalResult::None if self.hour_star => Vec::new(),
            LocalResult::None => first_instant_after_gap(tz, wall).into_iter().collect(),
        }
    }
}

/// The instant the clocks jump over `wall`, which does not exist: the first
/// whole minute after it that does. Zones change offset on whole minutes,
/// and no gap lasts longer than a day (Samoa skipped 2011-12-30).
fn first_instant_after_gap<Tz: TimeZone>(tz: &Tz, wall: NaiveDateTime) -> Option<DateTime<Tz>> {
    (1..=2 * 24 * 60).find_map(|minutes| {
        match tz.from_local_datetime(&(wall + TimeDelta::minutes(minutes))) {
            LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => Some(at),
            LocalResult::None => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, FixedOffset, NaiveDate, Timelike, Weekday};
    use chrono_tz::Europe::Berlin;

    fn cron(expr: &str) -> Schedule {
        Schedule::cron(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    fn cron_err(expr: &str) -> String {
        Schedule::cron(expr).unwrap_err().to_string()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn berlin(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<chrono_tz::Tz> {
        Berlin
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
    }

    /// Weekdays of the fires in the week starting Sunday 2026-03-01.
    fn weekdays(expr: &str) -> Vec<Weekday> {
        let after = utc(2026, 2, 28, 23, 59);
        let until = utc(2026, 3, 7, 23, 59);
        cron(expr)
            .fires_between(&after, &until, 100)
            .iter()
            .map(|t| t.weekday())
            .collect()
    }

    fn days_of_month(expr: &str, y: i32, mo: u32) -> Vec<u32> {
        let after = utc(y, mo, 1, 0, 0) - TimeDelta::minutes(1);
        let until = NaiveDate::from_ymd_opt(y, mo, 1)
            .unwrap()
            .checked_add_months(chrono::Months::new(1))
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            - TimeDelta::minutes(1);
        cron(expr)
            .fires_between(&after, &until, 100)
            .iter()
            .map(|t| t.day())
            .collect()
    }

    // --- presets -------------------------------------------------------

    #[test]
    fn presets_have_the_design_expressions() {
        assert_eq!(Schedule::hourly().expression(), "0 * * * *");
        assert_eq!(Schedule::daily().expression(), "0 0 * * *");
        assert_eq!(Schedule::weekly().expression(), "0 0 * * sun");
        assert_eq!(Schedule::monthly().expression(), "0 0 1 * *");
        for p in Preset::ALL {
            assert_eq!(Schedule::preset(p).preset_name(), Some(p));
            assert_eq!(Schedule::preset(p).expression(), p.expression());
        }
    }

    #[test]
    fn presets_describe_themselves() {
        assert_eq!(Schedule::hourly().describe(), "hourly (at minute 00)");
        assert_eq!(Schedule::daily().describe(), "daily (at 00:00)");
        assert_eq!(Schedule::weekly().describe(), "weekly (Sunday at 00:00)");
        assert_eq!(Schedule::monthly().describe(), "monthly (day 1 at 00:00)");
    }

    #[test]
    fn custom_expressions_describe_themselves() {
        assert_eq!(cron("30 2 * * 1-5").describe(), "cron 30 2 * * 1-5");
        assert_eq!(
            cron("15 * * * *").describe(),
            "cron 15 * * * * (hourly at minute 15)"
        );
        assert_eq!(
            cron("30 2 * * *").describe(),
            "cron 30 2 * * * (daily at 02:30)"
        );
        assert_eq!(
            cron("30 2 * * 7").describe(),
            "cron 30 2 * * 7 (weekly on Sunday at 02:30)"
        );
        assert_eq!(
            cron("0 1 15 * *").describe(),
            "cron 0 1 15 * * (monthly on day 15 at 01:00)"
        );
        assert_eq!(cron("0 1 15 * mon").describe(), "cron 0 1 15 * mon");
    }

    #[test]
    fn preset_from_str_names_the_period_field() {
        assert_eq!("Weekly".parse::<Preset>(), Ok(Preset::Weekly));
        assert_eq!(
            "fortnightly".parse::<Preset>().unwrap_err().to_string(),
            "period: \"fortnightly\" is not a period; use hourly, daily, weekly or monthly"
        );
    }

    #[test]
    fn preset_is_a_clap_value_enum() {
        use clap::ValueEnum;
        let names: Vec<String> = Preset::value_variants()
            .iter()
            .map(|p| p.to_possible_value().unwrap().get_name().to_owned())
            .collect();
        assert_eq!(names, ["hourly", "daily", "weekly", "monthly"]);
    }

    // --- parse and cron forms ---------------------------------------------

    #[test]
    fn parse_accepts_presets_in_any_case_and_with_at() {
        assert_eq!(Schedule::parse("hourly").unwrap(), Schedule::hourly());
        assert_eq!(Schedule::parse(" DAILY ").unwrap(), Schedule::daily());
        assert_eq!(Schedule::parse("Weekly").unwrap(), Schedule::weekly());
        assert_eq!(Schedule::parse("@monthly").unwrap(), Schedule::monthly());
    }

    #[test]
    fn parse_accepts_cron_and_normalises_it() {
        let s = Schedule::parse("  30\t2  *  *   MON-FRI ").unwrap();
        assert_eq!(s.expression(), "30 2 * * mon-fri");
        assert_eq!(s.preset_name(), None);
        assert_eq!(s.to_string(), "30 2 * * mon-fri");
    }

    #[test]
    fn an_expression_that_spells_a_preset_is_that_preset() {
        assert_eq!(cron("0 0 * * SUN"), Schedule::weekly());
        assert_eq!(cron("0 0 * * sun").preset_name(), Some(Preset::Weekly));
        // Same days but not the same spelling: stays a custom expression.
        assert_eq!(cron("0 0 * * 0").preset_name(), None);
    }

    #[test]
    fn parse_refuses_empty_and_unknown_words() {
        assert_eq!(
            Schedule::parse("  ").unwrap_err().to_string(),
            "schedule: is empty; give a preset (hourly, daily, weekly, monthly) or a 5-field cron expression"
        );
        assert_eq!(
            Schedule::parse("fortnightly").unwrap_err().to_string(),
            "schedule: \"fortnightly\" is neither a preset (hourly, daily, weekly, monthly) nor a 5-field cron expression \"MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\""
        );
    }

    #[test]
    fn parse_errors_name_the_schedule_field() {
        assert_eq!(
            Schedule::parse("0 24 * * *").unwrap_err().to_string(),
            "schedule: hour 24 is out of range 0-23 in \"0 24 * * *\""
        );
    }

    #[test]
    fn cron_wants_exactly_five_fields() {
        assert_eq!(
            cron_err("0 0 0 * * *"),
            "cron: expected 5 fields \"MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\", got 6"
        );
        assert_eq!(
            cron_err("0 0 * *"),
            "cron: expected 5 fields \"MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\", got 4"
        );
        assert_eq!(
            cron_err(""),
            "cron: expected 5 fields \"MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\", got 0"
        );
        // A preset is not a cron expression.
        assert_eq!(
            cron_err("daily"),
            "cron: expected 5 fields \"MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\", got 1"
        );
    }

    #[test]
    fn cron_checks_each_field_range() {
        assert_eq!(
            cron_err("60 0 * * *"),
            "cron: minute 60 is out of range 0-59 in \"60 0 * * *\""
        );
        assert_eq!(
            cron_err("0 24 * * *"),
            "cron: hour 24 is out of range 0-23 in \"0 24 * * *\""
        );
        assert_eq!(
            cron_err("0 0 0 * *"),
            "cron: day-of-month 0 is out of range 1-31 in \"0 0 0 * *\""
        );
        assert_eq!(
            cron_err("0 0 32 * *"),
            "cron: day-of-month 32 is out of range 1-31 in \"0 0 32 * *\""
        );
        assert_eq!(
            cron_err("0 0 * 13 *"),
            "cron: month 13 is out of range 1-12 in \"0 0 * 13 *\""
        );
        assert_eq!(
            cron_err("0 0 * 0 *"),
            "cron: month 0 is out of range 1-12 in \"0 0 * 0 *\""
        );
        assert_eq!(
            cron_err("0 0 * * 8"),
            "cron: day-of-week 8 is out of range 0-7 in \"0 0 * * 8\""
        );
        assert_eq!(
            cron_err("0 1-99999999999 * * *"),
            "cron: hour 99999999999 is out of range 0-23 in \"0 1-99999999999 * * *\""
        );
        assert_eq!(
            cron_err("0,5,60 0 * * *"),
            "cron: minute 60 is out of range 0-59 in \"0,5,60 0 * * *\""
        );
    }

    #[test]
    fn cron_refuses_what_is_not_a_value() {
        assert_eq!(
            cron_err("x 0 * * *"),
            "cron: minute \"x\" is not a number 0-59 in \"x 0 * * *\""
        );
        assert_eq!(
            cron_err("0 -1 * * *"),
            "cron: hour \"-1\" is not a number 0-23 in \"0 -1 * * *\""
        );
        assert_eq!(
            cron_err("0 0 L * *"),
            "cron: day-of-month \"l\" is not a number 1-31 in \"0 0 l * *\""
        );
        assert_eq!(
            cron_err("0 0 * january *"),
            "cron: month \"january\" is not a number 1-12 or a name jan-dec in \"0 0 * january *\""
        );
        assert_eq!(
            cron_err("0 0 ? * funday"),
            "cron: day-of-month \"?\" is not a number 1-31 in \"0 0 ? * funday\""
        );
        assert_eq!(
            cron_err("0 0 * * funday"),
            "cron: day-of-week \"funday\" is not a number 0-7 or a name sun-sat in \"0 0 * * funday\""
        );
        assert_eq!(
            cron_err("0 0 * * mon#2"),
            "cron: day-of-week \"mon#2\" is not a number 0-7 or a name sun-sat in \"0 0 * * mon#2\""
        );
    }

    #[test]
    fn cron_refuses_empty_list_items() {
        assert_eq!(
            cron_err("1,,2 0 * * *"),
            "cron: minute has an empty list item in \"1,,2 0 * * *\""
        );
        assert_eq!(
            cron_err("0 0 * * mon,"),
            "cron: day-of-week has an empty list item in \"0 0 * * mon,\""
        );
    }

    #[test]
    fn cron_refuses_backwards_ranges_with_a_hint() {
        assert_eq!(
            cron_err("0 22-2 * * *"),
            "cron: hour range 22-2 runs backwards in \"0 22-2 * * *\"; ranges do not wrap around, list both parts instead, e.g. 22-23,0-2"
        );
        assert_eq!(
            cron_err("0 0 * * fri-mon"),
            "cron: day-of-week range fri-mon runs backwards in \"0 0 * * fri-mon\"; ranges do not wrap around, list both parts instead, e.g. fri-sat,sun-mon"
        );
        assert_eq!(
            cron_err("0 0 * nov-feb *"),
            "cron: month range nov-feb runs backwards in \"0 0 * nov-feb *\"; ranges do not wrap around, list both parts instead, e.g. nov-dec,jan-feb"
        );
    }

    #[test]
    fn cron_checks_steps() {
        assert_eq!(
            cron_err("*/0 * * * *"),
            "cron: minute step \"0\" must be a whole number from 1 to 59 in \"*/0 * * * *\""
        );
        assert_eq!(
            cron_err("0 */24 * * *"),
            "cron: hour step \"24\" must be a whole number from 1 to 23 in \"0 */24 * * *\""
        );
        assert_eq!(
            cron_err("*/x * * * *"),
            "cron: minute step \"x\" must be a whole number from 1 to 59 in \"*/x * * * *\""
        );
        assert_eq!(
            cron_err("*/5/2 * * * *"),
            "cron: minute step \"5/2\" must be a whole number from 1 to 59 in \"*/5/2 * * * *\""
        );
        assert_eq!(
            cron_err("0 0 * * */7"),
            "cron: day-of-week step \"7\" must be a whole number from 1 to 6 in \"0 0 * * */7\""
        );
        assert_eq!(
            cron_err("5/15 * * * *"),
            "cron: minute \"5/15\" has a step but no range; write \"5-59/15\" in \"5/15 * * * *\""
        );
    }

    #[test]
    fn cron_refuses_a_schedule_that_never_runs() {
        assert_eq!(
            cron_err("0 0 30 2 *"),
            "cron: \"0 0 30 2 *\" would never run: none of its months has the day-of-month it asks for"
        );
        assert_eq!(
            cron_err("0 0 31 apr,jun *"),
            "cron: \"0 0 31 apr,jun *\" would never run: none of its months has the day-of-month it asks for"
        );
        // February 29 exists (in leap years), and with a weekday as well the
        // days are ORed, so these run.
        cron("0 0 29 2 *");
        cron("0 0 30 2 mon");
    }

    #[test]
    fn cron_accepts_the_standard_forms() {
        for expr in [
            "* * * * *",
            "*/15 * * * *",
            "0,30 8-18 * * mon-fri",
            "0 8-18/2 * * 1-5",
            "0 0 1,15 * *",
            "0 0 * jan-mar,dec *",
            "0 0 * */3 *",
            "59 23 31 12 0-7",
            "00 02 01 01 00",
        ] {
            let schedule = cron(expr);
            // Accepted as written, and it fires within the next year.
            assert_eq!(schedule.expression(), expr);
            let start = utc(2026, 1, 1, 0, 0);
            let next = schedule.next_after(&start);
            assert!(
                next.is_some_and(|t| t > start && t - start <= TimeDelta::days(366)),
                "{expr}: next fire {next:?}"
            );
        }
    }

    #[test]
    fn minute_hour_month_lists_steps_and_ranges_evaluate_as_cron_does() {
        let day = utc(2026, 3, 2, 0, 0) - TimeDelta::minutes(1);
        let end = utc(2026, 3, 3, 0, 0) - TimeDelta::minutes(1);
        let times = |expr: &str| -> Vec<String> {
            cron(expr)
                .fires_between(&day, &end, 100)
                .iter()
                .map(|t| t.format("%H:%M").to_string())
                .collect()
        };
        assert_eq!(times("*/20 3 * * *"), ["03:00", "03:20", "03:40"]);
        assert_eq!(times("5 8-16/4 * * *"), ["08:05", "12:05", "16:05"]);
        assert_eq!(times("0,30 23 * * *"), ["23:00", "23:30"]);
        assert_eq!(times("0 0 * feb *"), Vec::<String>::new());
        assert_eq!(times("0 12 * mar *"), ["12:00"]);
        assert_eq!(
            cron("0 0 1 */4 *")
                .upcoming(&utc(2026, 1, 1, 0, 0), 3)
                .iter()
                .map(|t| t.month())
                .collect::<Vec<_>>(),
            [5, 9, 1]
        );
    }

    #[test]
    fn crate_evaluation_agrees_with_a_minute_by_minute_crontab_reading() {
        // An independent reading of crontab(5) over the parsed bit sets,
        // checked minute by minute; catches any slip in what we hand the crate.
        let matches = |f: &Fields, t: DateTime<Utc>| {
            let bit = |set: u64, v: u32| set & (1 << v) != 0;
            let dom = bit(f.dom, t.day());
            let dow = bit(f.dow, t.weekday().num_days_from_sunday());
            let day = if !f.dom_star && !f.dow_star {
                dom || dow
            } else {
                dom && dow
            };
            bit(f.minute, t.minute()) && bit(f.hour, t.hour()) && bit(f.month, t.month()) && day
        };
        let after = utc(2026, 1, 25, 0, 0);
        let until = utc(2026, 3, 5, 0, 0);
        for expr in [
            "0 0 1 * mon",
            "*/7 1-3 * * 5-7",
            "30 */5 */3 * *",
            "0 12 13 * fri",
            "15 6 * feb,mar sun,wed",
            "0 0 29-31 * *",
            "0 0 */10 * sat",
            "45 23 * * 0-7/3",
        ] {
            let s = cron(expr);
            let mut expected = Vec::new();
            let mut t = after + TimeDelta::minutes(1);
            while t <= until {
                if matches(&s.fields, t) {
                    expected.push(t);
                }
                t += TimeDelta::minutes(1);
            }
            assert!(!expected.is_empty(), "{expr}");
            assert_eq!(s.fires_between(&after, &until, 100_000), expected, "{expr}");
        }
    }

    // --- day of week numbering ------------------------------------------

    #[test]
    fn the_cron_crate_numbers_weekdays_from_one_for_sunday() {
        // What we found in cron 0.17 (and 0.15): 1 = Sunday .. 7 = Saturday,
        // and 0 is refused. Hence the translation to names.
        let crate_schedule = cron::Schedule::from_str("0 0 0 * * 1").unwrap();
        let next = crate_schedule.after(&utc(2026, 3, 2, 0, 0)).next().unwrap();
        assert_eq!(next.weekday(), Weekday::Sun);
        assert!(cron::Schedule::from_str("0 0 0 * * 0").is_err());
    }

    #[test]
    fn zero_seven_and_sun_are_all_sunday() {
        assert_eq!(weekdays("0 0 * * 0"), [Weekday::Sun]);
        assert_eq!(weekdays("0 0 * * 7"), [Weekday::Sun]);
        assert_eq!(weekdays("0 0 * * sun"), [Weekday::Sun]);
        assert_eq!(weekdays("0 0 * * SUN"), [Weekday::Sun]);
    }

    #[test]
    fn each_weekday_number_and_name_fires_on_its_day() {
        let expected = [
            Weekday::Sun,
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
        ];
        for (n, day) in expected.into_iter().enumerate() {
            assert_eq!(weekdays(&format!("0 0 * * {n}")), [day], "number {n}");
            let name = WEEKDAY_NAMES[n];
            assert_eq!(weekdays(&format!("0 0 * * {name}")), [day], "name {name}");
        }
    }

    #[test]
    fn weekday_ranges_and_steps() {
        use Weekday::*;
        assert_eq!(weekdays("0 0 * * 1-5"), [Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(weekdays("0 0 * * mon-fri"), [Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(weekdays("0 0 * * 5-7"), [Sun, Fri, Sat]);
        assert_eq!(weekdays("0 0 * * 0-7"), [Sun, Mon, Tue, Wed, Thu, Fri, Sat]);
        assert_eq!(weekdays("0 0 * * */2"), [Sun, Tue, Thu, Sat]);
        assert_eq!(weekdays("0 0 * * 1-5/2"), [Mon, Wed, Fri]);
        assert_eq!(weekdays("0 0 * * sat,sun"), [Sun, Sat]);
        assert_eq!(weekdays("0 0 * * 6,0"), [Sun, Sat]);
    }

    // --- day of month OR day of week --------------------------------------

    #[test]
    fn the_cron_crate_ands_day_of_month_and_day_of_week() {
        // What we found: the crate fires only on a Monday that is the 1st.
        let crate_schedule = cron::Schedule::from_str("0 0 0 1 * Mon").unwrap();
        let next = crate_schedule.after(&utc(2026, 1, 1, 0, 0)).next().unwrap();
        assert_eq!(next, utc(2026, 6, 1, 0, 0));
    }

    #[test]
    fn restricted_day_of_month_and_day_of_week_are_ored() {
        // March 2026: the 1st is a Sunday; Mondays are 2, 9, 16, 23, 30.
        assert_eq!(days_of_month("0 0 1 * mon", 2026, 3), [1, 2, 9, 16, 23, 30]);
        // Friday the 13th style: the 13th and every Friday (6, 13, 20, 27).
        assert_eq!(days_of_month("0 0 13 * fri", 2026, 3), [6, 13, 20, 27]);
        // A day in both fires once.
        assert_eq!(days_of_month("0 0 2 * 1", 2026, 3), [2, 9, 16, 23, 30]);
    }

    #[test]
    fn a_field_starting_with_star_makes_the_days_anded() {
        // crontab(5): the OR applies only when neither field starts with `*`.
        assert_eq!(days_of_month("0 0 */2 * mon", 2026, 3), [9, 23]);
        assert_eq!(days_of_month("0 0 1-7 * *", 2026, 3), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(days_of_month("0 0 * * mon", 2026, 3), [2, 9, 16, 23, 30]);
    }

    #[test]
    fn monthly_on_the_31st_skips_short_months() {
        let s = Schedule::from_period(Preset::Monthly, Some("31"), None).unwrap();
        let months: Vec<u32> = s
            .upcoming(&utc(2026, 1, 1, 0, 0), 4)
            .iter()
            .map(|t| t.month())
            .collect();
        assert_eq!(months, [1, 3, 5, 7]);
    }

    // --- evaluation ---------------------------------------------------------

    #[test]
    fn next_after_is_strictly_after() {
        let daily = Schedule::daily();
        assert_eq!(
            daily.next_after(&utc(2026, 3, 2, 0, 0)),
            Some(utc(2026, 3, 3, 0, 0))
        );
        assert_eq!(
            daily.next_after(&(utc(2026, 3, 2, 0, 0) - TimeDelta::seconds(1))),
            Some(utc(2026, 3, 2, 0, 0))
        );
        assert_eq!(
            Schedule::weekly().next_after(&utc(2026, 3, 2, 12, 0)),
            Some(utc(2026, 3, 8, 0, 0))
        );
        assert_eq!(
            Schedule::monthly().next_after(&utc(2026, 12, 15, 0, 0)),
            Some(utc(2027, 1, 1, 0, 0))
        );
    }

    #[test]
    fn next_after_works_in_any_chrono_zone() {
        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        let after = plus2.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap();
        let next = Schedule::daily().next_after(&after).unwrap();
        assert_eq!(next, plus2.with_ymd_and_hms(2026, 3, 3, 0, 0, 0).unwrap());
        assert_eq!(next.offset(), &plus2);
        let berlin_next = Schedule::daily()
            .next_after(&berlin(2026, 7, 1, 12, 0))
            .unwrap();
        assert_eq!(berlin_next, berlin(2026, 7, 2, 0, 0));
        assert_eq!(berlin_next.with_timezone(&Utc), utc(2026, 7, 1, 22, 0));
    }

    #[test]
    fn fires_between_a_week_holds_exactly_one_weekly_fire() {
        let s = Schedule::weekly();
        for start_day in 1..=7 {
            let after = utc(2026, 3, start_day, 13, 0);
            let until = after + TimeDelta::weeks(1);
            assert_eq!(
                s.fires_between(&after, &until, 10).len(),
                1,
                "from day {start_day}"
            );
        }
        // In a DST zone across the spring-forward week too.
        let after = berlin(2026, 3, 25, 0, 0);
        let fires = s.fires_between(&after, &(after + TimeDelta::weeks(1)), 10);
        assert_eq!(fires, [berlin(2026, 3, 29, 0, 0)]);
    }

    #[test]
    fn fires_between_is_half_open_limited_and_ordered() {
        let s = Schedule::daily();
        let after = utc(2026, 3, 1, 0, 0);
        let until = utc(2026, 3, 4, 0, 0);
        assert_eq!(
            s.fires_between(&after, &until, 10),
            [
                utc(2026, 3, 2, 0, 0),
                utc(2026, 3, 3, 0, 0),
                utc(2026, 3, 4, 0, 0)
            ]
        );
        assert_eq!(
            s.fires_between(&after, &until, 2),
            [utc(2026, 3, 2, 0, 0), utc(2026, 3, 3, 0, 0)]
        );
        assert!(s.fires_between(&after, &until, 0).is_empty());
        assert!(s.fires_between(&until, &after, 10).is_empty());
        assert!(s.fires_between(&after, &after, 10).is_empty());
    }

    #[test]
    fn every_minute_is_cheap_and_complete() {
        let s = cron("* * * * *");
        let after = berlin(2026, 10, 25, 0, 0);
        let until = berlin(2026, 10, 26, 0, 0);
        let fires = s.fires_between(&after, &until, 10_000);
        // 25 real hours that day, the first midnight excluded, the last included.
        assert_eq!(fires.len(), 25 * 60);
        assert!(
            fires
                .windows(2)
                .all(|w| w[1] - w[0] == TimeDelta::minutes(1))
        );
    }

    // --- daylight saving (Europe/Berlin, 2026) -----------------------------

    #[test]
    fn the_cron_crate_alone_mishandles_dst() {
        // Documents why `instants` exists: on its own the crate skips the
        // spring-forward day and runs twice on the fall-back day.
        let crate_schedule = cron::Schedule::from_str("0 30 2 * * *").unwrap();
        let spring: Vec<_> = crate_schedule
            .after(&berlin(2026, 3, 28, 12, 0))
            .take(1)
            .collect();
        assert_eq!(spring, [berlin(2026, 3, 30, 2, 30)]);
        let fall: Vec<_> = crate_schedule
            .after(&berlin(2026, 10, 25, 0, 0))
            .take(2)
            .collect();
        assert_eq!(fall[0].date_naive(), fall[1].date_naive());
    }

    #[test]
    fn daily_0230_runs_once_at_0300_on_the_spring_forward_day() {
        let s = Schedule::from_period(Preset::Daily, None, Some("02:30")).unwrap();
        let fires = s.fires_between(&berlin(2026, 3, 28, 12, 0), &berlin(2026, 3, 30, 12, 0), 10);
        assert_eq!(
            fires,
            [
                berlin(2026, 3, 29, 3, 0), // 02:30 does not exist: at the jump
                berlin(2026, 3, 30, 2, 30),
            ]
        );
        assert_eq!(fires[0].with_timezone(&Utc), utc(2026, 3, 29, 1, 0));
        assert_eq!(
            s.next_after(&berlin(2026, 3, 29, 1, 59)),
            Some(berlin(2026, 3, 29, 3, 0))
        );
        assert_eq!(
            s.next_after(&berlin(2026, 3, 29, 3, 0)),
            Some(berlin(2026, 3, 30, 2, 30))
        );
    }

    #[test]
    fn daily_0230_runs_once_on_the_fall_back_day() {
        let s = Schedule::from_period(Preset::Daily, None, Some("02:30")).unwrap();
        let fires = s.fires_between(
            &berlin(2026, 10, 24, 12, 0),
            &berlin(2026, 10, 26, 12, 0),
            10,
        );
        assert_eq!(fires.len(), 2);
        // The first 02:30, still summer time (UTC+2).
        assert_eq!(fires[0].with_timezone(&Utc), utc(2026, 10, 25, 0, 30));
        assert_eq!(fires[1], berlin(2026, 10, 26, 2, 30));
        // Asked during the repeated hour, after the first 02:30: not again.
        let second_0210 = utc(2026, 10, 25, 1, 10).with_timezone(&Berlin);
        assert_eq!(
            s.next_after(&second_0210),
            Some(berlin(2026, 10, 26, 2, 30))
        );
    }

    #[test]
    fn a_fixed_hour_job_with_several_times_in_the_gap_runs_once() {
        let s = cron("*/15 2 * * *");
        let day = s.fires_between(&berlin(2026, 3, 29, 0, 0), &berlin(2026, 3, 29, 23, 0), 10);
        assert_eq!(day, [berlin(2026, 3, 29, 3, 0)]);
        // And a time right after the gap is not doubled by the catch-up run.
        let s = cron("0 2,3 * * *");
        let day = s.fires_between(&berlin(2026, 3, 29, 0, 0), &berlin(2026, 3, 29, 23, 0), 10);
        assert_eq!(day, [berlin(2026, 3, 29, 3, 0)]);
    }

    fn assert_hourly_steps(fires: &[DateTime<chrono_tz::Tz>]) {
        for pair in fires.windows(2) {
            assert_eq!(
                pair[1] - pair[0],
                TimeDelta::hours(1),
                "{} -> {}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn hourly_across_spring_forward_has_no_duplicates_and_no_gaps() {
        let s = Schedule::hourly();
        let fires = s.fires_between(
            &berlin(2026, 3, 28, 23, 30),
            &berlin(2026, 3, 29, 23, 30),
            100,
        );
        // 23 real hours in that day; wall clock goes 01:00 -> 03:00.
        assert_eq!(fires.len(), 23);
        assert_hourly_steps(&fires);
        let hours: Vec<String> = fires[..4]
            .iter()
            .map(|t| t.format("%H:%M %Z").to_string())
            .collect();
        assert_eq!(
            hours,
            ["00:00 CET", "01:00 CET", "03:00 CEST", "04:00 CEST"]
        );
    }

    #[test]
    fn hourly_across_fall_back_has_no_duplicates_and_no_gaps() {
        let s = Schedule::hourly();
        let fires = s.fires_between(
            &berlin(2026, 10, 24, 23, 30),
            &berlin(2026, 10, 25, 23, 30),
            100,
        );
        // 25 real hours in that day; 02:00 comes twice.
        assert_eq!(fires.len(), 25);
        assert_hourly_steps(&fires);
        let hours: Vec<String> = fires[1..5]
            .iter()
            .map(|t| t.format("%H:%M %Z").to_string())
            .collect();
        assert_eq!(
            hours,
            ["01:00 CEST", "02:00 CEST", "02:00 CET", "03:00 CET"]
        );
    }

    #[test]
    fn hourly_asked_inside_the_repeated_hour_finds_the_second_pass() {
        // 02:40 summer time: the next :30 is 02:30 winter time, 50 minutes
        // later, although it reads earlier on the wall clock.
        let s = cron("30 * * * *");
        let first_0240 = utc(2026, 10, 25, 0, 40).with_timezone(&Berlin);
        let next = s.next_after(&first_0240).unwrap();
        assert_eq!(next.with_timezone(&Utc), utc(2026, 10, 25, 1, 30));
        let quarter = cron("*/15 * * * *");
        assert_eq!(
            quarter.next_after(&first_0240).unwrap().with_timezone(&Utc),
            utc(2026, 10, 25, 0, 45)
        );
    }

    #[test]
    fn fires_are_the_same_whichever_zone_type_carries_them() {
        // Evaluating in Berlin and converting equals evaluating in Berlin
        // from a UTC start converted first: the zone of `after` decides.
        let s = cron("0 9 * * mon-fri");
        let after = utc(2026, 3, 27, 0, 0).with_timezone(&Berlin);
        let fires = s.upcoming(&after, 3);
        assert_eq!(
            fires
                .iter()
                .map(|t| t.with_timezone(&Utc))
                .collect::<Vec<_>>(),
            [
                utc(2026, 3, 27, 8, 0), // Friday, CET
                utc(2026, 3, 30, 7, 0), // Monday, CEST
                utc(2026, 3, 31, 7, 0),
            ]
        );
    }

    // --- wizard form --------------------------------------------------------

    fn period(p: Preset, day: Option<&str>, at: Option<&str>) -> String {
        Schedule::from_period(p, day, at)
            .map(|s| s.expression().to_owned())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn period_defaults_are_the_presets() {
        for p in Preset::ALL {
            assert_eq!(
                Schedule::from_period(p, None, None).unwrap(),
                Schedule::preset(p)
            );
        }
    }

    #[test]
    fn period_hourly_at_takes_the_minute() {
        assert_eq!(period(Preset::Hourly, None, Some("00:15")), "15 * * * *");
        assert_eq!(period(Preset::Hourly, None, Some(":15")), "15 * * * *");
        assert_eq!(period(Preset::Hourly, None, Some("15")), "15 * * * *");
        assert_eq!(period(Preset::Hourly, None, Some("5")), "5 * * * *");
        assert_eq!(period(Preset::Hourly, None, Some("0:00")), "0 * * * *");
        for bad in ["02:15", "60", ":75", "quarter", "", "00:1:2"] {
            assert_eq!(
                period(Preset::Hourly, None, Some(bad)),
                format!(
                    "at: --period hourly runs every hour, so --at takes only the minute (\"15\", \":15\" or \"00:15\"), got \"{bad}\""
                )
            );
        }
    }

    #[test]
    fn period_daily() {
        assert_eq!(period(Preset::Daily, None, Some("02:30")), "30 2 * * *");
        assert_eq!(period(Preset::Daily, None, Some("2:30")), "30 2 * * *");
        assert_eq!(period(Preset::Daily, None, Some("23:59")), "59 23 * * *");
        for bad in [
            "24:00", "02:60", "0230", "2:3", "02:30:00", "", "-1:00", "+2:30",
        ] {
            assert_eq!(
                period(Preset::Daily, None, Some(bad)),
                format!("at: \"{bad}\" is not a time of day; use HH:MM from 00:00 to 23:59")
            );
        }
    }

    #[test]
    fn period_weekly() {
        assert_eq!(
            period(Preset::Weekly, Some("sun"), Some("02:30")),
            "30 2 * * sun"
        );
        assert_eq!(period(Preset::Weekly, None, Some("02:30")), "30 2 * * sun");
        assert_eq!(period(Preset::Weekly, Some("mon"), None), "0 0 * * mon");
        assert_eq!(
            period(Preset::Weekly, Some("Saturday"), None),
            "0 0 * * sat"
        );
        assert_eq!(period(Preset::Weekly, Some("WED"), None), "0 0 * * wed");
        assert_eq!(period(Preset::Weekly, Some("0"), None), "0 0 * * sun");
        assert_eq!(period(Preset::Weekly, Some("7"), None), "0 0 * * sun");
        assert_eq!(period(Preset::Weekly, Some("5"), None), "0 0 * * fri");
        // Sunday midnight by any spelling is the weekly preset.
        assert_eq!(
            Schedule::from_period(Preset::Weekly, Some("7"), Some("00:00")).unwrap(),
            Schedule::weekly()
        );
        for bad in ["8", "funday", "", "mon-fri", "1,2"] {
            assert_eq!(
                period(Preset::Weekly, Some(bad), None),
                format!(
                    "day: \"{bad}\" is not a day of the week for --period weekly; use sun..sat, sunday..saturday or 0-7 (0 and 7 are Sunday)"
                )
            );
        }
        assert_eq!(
            period(Preset::Weekly, Some("sun"), Some("25:00")),
            "at: \"25:00\" is not a time of day; use HH:MM from 00:00 to 23:59"
        );
    }

    #[test]
    fn period_monthly() {
        assert_eq!(
            period(Preset::Monthly, Some("15"), Some("01:00")),
            "0 1 15 * *"
        );
        assert_eq!(period(Preset::Monthly, None, Some("01:00")), "0 1 1 * *");
        assert_eq!(period(Preset::Monthly, Some("31"), None), "0 0 31 * *");
        for bad in ["0", "32", "first", "", "sun"] {
            assert_eq!(
                period(Preset::Monthly, Some(bad), None),
                format!("day: \"{bad}\" is not a day of the month for --period monthly; use 1-31")
            );
        }
    }

    #[test]
    fn period_hourly_and_daily_refuse_a_day() {
        assert_eq!(
            period(Preset::Hourly, Some("mon"), None),
            "day: --period hourly runs every hour, so it takes no --day; --day is for --period weekly or monthly"
        );
        assert_eq!(
            period(Preset::Daily, Some("1"), Some("02:00")),
            "day: --period daily runs every day, so it takes no --day; --day is for --period weekly or monthly"
        );
    }

    // --- CLI flags ----------------------------------------------------------

    fn flags(
        schedule: Option<&str>,
        cron: Option<&str>,
        period: Option<Preset>,
        day: Option<&str>,
        at: Option<&str>,
    ) -> Result<Schedule, String> {
        Schedule::from_flags(schedule, cron, period, day, at, Schedule::weekly())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flags_pick_the_one_form_given_or_the_default() {
        assert_eq!(flags(None, None, None, None, None), Ok(Schedule::weekly()));
        assert_eq!(
            flags(Some("daily"), None, None, None, None),
            Ok(Schedule::daily())
        );
        assert_eq!(
            flags(None, Some("30 2 * * 1-5"), None, None, None).map(|s| s.expression().to_owned()),
            Ok("30 2 * * 1-5".to_owned())
        );
        assert_eq!(
            flags(None, None, Some(Preset::Weekly), Some("sun"), Some("02:30"))
                .map(|s| s.expression().to_owned()),
            Ok("30 2 * * sun".to_owned())
        );
        assert_eq!(
            flags(None, None, Some(Preset::Monthly), None, None),
            Ok(Schedule::monthly())
        );
    }

    #[test]
    fn flags_refuse_two_forms_naming_both() {
        let tail = "cannot be combined; give only one of --schedule, --cron or --period";
        assert_eq!(
            flags(Some("daily"), Some("0 0 * * *"), None, None, None),
            Err(format!("schedule: --schedule and --cron {tail}"))
        );
        assert_eq!(
            flags(Some("daily"), None, Some(Preset::Daily), None, None),
            Err(format!("schedule: --schedule and --period {tail}"))
        );
        assert_eq!(
            flags(
                None,
                Some("0 0 * * *"),
                Some(Preset::Daily),
                None,
                Some("01:00")
            ),
            Err(format!("cron: --cron and --period {tail}"))
        );
        assert_eq!(
            flags(
                Some("daily"),
                Some("0 0 * * *"),
                Some(Preset::Daily),
                None,
                None
            ),
            Err(format!("schedule: --schedule and --cron {tail}"))
        );
    }

    #[test]
    fn flags_refuse_day_or_at_without_period() {
        let day = "day: --day works only together with --period weekly or monthly (e.g. --period weekly --day sun); --schedule and --cron carry their own day";
        let at = "at: --at works only together with --period (e.g. --period daily --at 02:30); --schedule and --cron carry their own time";
        assert_eq!(
            flags(None, None, None, Some("sun"), None),
            Err(day.to_owned())
        );
        assert_eq!(
            flags(None, None, None, None, Some("02:30")),
            Err(at.to_owned())
        );
        assert_eq!(
            flags(Some("weekly"), None, None, Some("sun"), None),
            Err(day.to_owned())
        );
        assert_eq!(
            flags(None, Some("0 0 * * *"), None, None, Some("02:30")),
            Err(at.to_owned())
        );
    }

    #[test]
    fn flags_pass_on_the_errors_of_each_form() {
        assert_eq!(
            flags(Some("0 0 * * 9"), None, None, None, None),
            Err("schedule: day-of-week 9 is out of range 0-7 in \"0 0 * * 9\"".to_owned())
        );
        assert_eq!(
            flags(None, Some("0 0 * * 9"), None, None, None),
            Err("cron: day-of-week 9 is out of range 0-7 in \"0 0 * * 9\"".to_owned())
        );
        assert_eq!(
            flags(None, None, Some(Preset::Daily), Some("sun"), None),
            Err("day: --period daily runs every day, so it takes no --day; --day is for --period weekly or monthly".to_owned())
        );
    }

    // --- round trips --------------------------------------------------------

    fn samples() -> Vec<Schedule> {
        let mut all: Vec<Schedule> = Preset::ALL.into_iter().map(Schedule::preset).collect();
        for expr in [
            "30 2 * * 1-5",
            "*/15 * * * *",
            "0 0 1 * mon",
            "0 0 * * 7",
            "5 4 * jan-mar,dec sun",
        ] {
            all.push(cron(expr));
        }
        all.push(Schedule::from_period(Preset::Weekly, Some("fri"), Some("23:45")).unwrap());
        all
    }

    #[test]
    fn parse_of_expression_round_trips() {
        for s in samples() {
            let again = Schedule::parse(s.expression()).unwrap();
            assert_eq!(again, s);
            assert_eq!(again.preset_name(), s.preset_name());
            assert_eq!(Schedule::cron(s.expression()).unwrap(), s);
            assert_eq!(s.to_string().parse::<Schedule>().unwrap(), s);
        }
    }

    #[test]
    fn serde_round_trips_as_the_expression_string() {
        for s in samples() {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.expression()));
            let back: Schedule = serde_json::from_str(&json).unwrap();
            assert_eq!(back, s);
            assert_eq!(back.preset_name(), s.preset_name());
        }
        let named: Schedule = serde_json::from_str("\"weekly\"").unwrap();
        assert_eq!(named, Schedule::weekly());
        let bad = serde_json::from_str::<Schedule>("\"0 24 * * *\"").unwrap_err();
        assert!(
            bad.to_string()
                .contains("schedule: hour 24 is out of range 0-23 in \"0 24 * * *\""),
            "{bad}"
        );
        assert_eq!(
            serde_json::to_string(&Preset::Monthly).unwrap(),
            "\"monthly\""
        );
        assert_eq!(
            serde_json::from_str::<Preset>("\"hourly\"").unwrap(),
            Preset::Hourly
        );
    }

    // --- time zones ---------------------------------------------------------

    #[test]
    fn parse_timezone_takes_iana_names() {
        assert_eq!(parse_timezone("Europe/Berlin"), Ok(Berlin));
        assert_eq!(parse_timezone(" europe/berlin "), Ok(Berlin));
        assert_eq!(parse_timezone("UTC"), Ok(chrono_tz::Tz::UTC));
        assert_eq!(
            parse_timezone("America/New_York"),
            Ok(chrono_tz::America::New_York)
        );
    }

    #[test]
    fn parse_timezone_errors_name_the_timezone_field() {
        assert_eq!(
            parse_timezone("Europe/Berln").unwrap_err().to_string(),
            "timezone: \"Europe/Berln\" is not an IANA time zone name such as \"Europe/Berlin\" or \"UTC\""
        );
        assert_eq!(
            parse_timezone("").unwrap_err().to_string(),
            "timezone: is empty; give an IANA time zone name such as \"Europe/Berlin\" or \"UTC\""
        );
    }

    #[test]
    fn tz_variable_forms() {
        assert_eq!(timezone_from_tz_variable("Europe/Berlin"), Some(Berlin));
        assert_eq!(timezone_from_tz_variable(":Europe/Berlin"), Some(Berlin));
        assert_eq!(
            timezone_from_tz_variable("/usr/share/zoneinfo/Europe/Berlin"),
            Some(Berlin)
        );
        assert_eq!(
            timezone_from_tz_variable("CET-1CEST,M3.5.0,M10.5.0/3"),
            None
        );
        assert_eq!(timezone_from_tz_variable(""), None);
    }

    #[test]
    fn host_timezone_always_answers() {
        // Whatever this machine is set to, a zone comes back and evaluates.
        let tz = host_timezone();
        let now = Utc::now().with_timezone(&tz);
        assert!(Schedule::hourly().next_after(&now).is_some());
    }
}
