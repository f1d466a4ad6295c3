//! Snapshot naming schemas (`auto-%Y-%m-%d_%H-%M`): validation with TrueNAS's rules and messages, rendering an instant into a snapshot name, and exact parsing of a name back into the date-time it encodes.
//!
//! Controller and agent must agree on which snapshots belong to a schema:
//! the controller renders the name of a periodic snapshot, the agent's
//! retention destroys only names that parse under the task's schema. So
//! parsing is exact (fixed-width fields, literal text matched byte for
//! byte, nothing left over) and hand-written: chrono's `parse_from_str`
//! accepts `auto-2026-1-5_3-4` for `auto-%Y-%m-%d_%H-%M`, which would let
//! retention claim snapshots it never made.
//!
//! Supported conversions, deliberately few:
//!
//! | conversion | renders | parses |
//! | --- | --- | --- |
//! | `%Y` | year, 4 digits | exactly 4 digits |
//! | `%m` `%d` `%H` `%M` `%S` | month, day, hour, minute, second | exactly 2 digits each, range-checked |
//! | `%s` | seconds since the Unix epoch | 1+ digits, no sign, no leading zero |
//!
//! `%%` is refused even though strftime knows it: it renders a `%`, which
//! zfs refuses in snapshot names (`invalid character % in name`), so the
//! schema could never produce a snapshot. Names are rendered for years
//! 0000-9999 and, with `%s`, for instants from 1970 on; other instants
//! render names that do not parse back.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Schema of periodic snapshot tasks unless the task says otherwise.
pub const DEFAULT_PERIODIC_SCHEMA: &str = "auto-%Y-%m-%d_%H-%M";

/// Schema of one-time (manual) snapshots unless the request says otherwise.
pub const DEFAULT_MANUAL_SCHEMA: &str = "manual-%Y-%m-%d_%H-%M";

/// Longest snapshot name (the part after '@') a schema may render, leaving
/// room for the dataset name within zfs's 255-character limit.
pub const MAX_RENDERED_NAME: usize = 200;

/// Widest rendering of `%s`: 253402300799 is 9999-12-31T23:59:59Z.
const MAX_EPOCH_DIGITS: usize = 12;

/// Why a naming schema was refused. The messages are TrueNAS's where
/// TrueNAS has one, so people moving from it recognise them.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum NamingError {
    #[error("Naming schema is required")]
    Empty,
    /// One of `%Y %m %d %H %M` is missing (and the schema is not `%s` alone).
    #[error("%{0} must be present in snapshot naming schema")]
    Missing(char),
    #[error("'{0}' is not an allowed character in ZFS snapshot name")]
    BadCharacter(char),
    #[error("Unsupported conversion '%{0}' in snapshot naming schema")]
    UnsupportedConversion(char),
    #[error("Snapshot naming schema must not end with a lone '%'")]
    TrailingPercent,
    #[error("%s must be the only conversion in snapshot naming schema")]
    EpochNotAlone,
    #[error(
        "Snapshot names rendered from this naming schema can be {0} characters long; at most {MAX_RENDERED_NAME} are allowed"
    )]
    TooLong(usize),
}

/// One date-time field a conversion stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Field {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Epoch,
}

impl Field {
    fn from_conversion(c: char) -> Option<Field> {
        Some(match c {
            'Y' => Field::Year,
            'm' => Field::Month,
            'd' => Field::Day,
            'H' => Field::Hour,
            'M' => Field::Minute,
            'S' => Field::Second,
            's' => Field::Epoch,
            _ => return None,
        })
    }

    /// Rendered width; `%s` varies and is given as its maximum.
    fn max_width(self) -> usize {
        match self {
            Field::Year => 4,
            Field::Epoch => MAX_EPOCH_DIGITS,
            _ => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Token {
    Literal(String),
    Field(Field),
}

/// A validated snapshot naming schema. Serialised as its plain text and
/// validated again when deserialised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NamingSchema {
    text: String,
    /// `text` split into literals and fields, so render and parse need
    /// not re-validate.
    tokens: Vec<Token>,
}

fn allowed_literal(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '.' | ':' | '-')
}

fn tokenize(schema: &str) -> Result<Vec<Token>, NamingError> {
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut chars = schema.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            let conversion = chars.next().ok_or(NamingError::TrailingPercent)?;
            if conversion == '%' {
                return Err(NamingError::BadCharacter('%'));
            }
            let field = Field::from_conversion(conversion)
                .ok_or(NamingError::UnsupportedConversion(conversion))?;
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            }
            tokens.push(Token::Field(field));
        } else if allowed_literal(c) {
            literal.push(c);
        } else {
            return Err(NamingError::BadCharacter(c));
        }
    }
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal));
    }
    Ok(tokens)
}

impl NamingSchema {
    /// Validates `schema`; the first rule broken is reported.
    pub fn new(schema: &str) -> Result<NamingSchema, NamingError> {
        if schema.is_empty() {
            return Err(NamingError::Empty);
        }
        let tokens = tokenize(schema)?;
        let has = |f: Field| tokens.contains(&Token::Field(f));
        if has(Field::Epoch) {
            let fields = tokens
                .iter()
                .filter(|t| matches!(t, Token::Field(_)))
                .count();
            if fields > 1 {
                return Err(NamingError::EpochNotAlone);
            }
        } else {
            for (f, c) in [
                (Field::Year, 'Y'),
                (Field::Month, 'm'),
                (Field::Day, 'd'),
                (Field::Hour, 'H'),
                (Field::Minute, 'M'),
            ] {
                if !has(f) {
                    return Err(NamingError::Missing(c));
                }
            }
        }
        let longest: usize = tokens
            .iter()
            .map(|t| match t {
                Token::Literal(s) => s.len(),
                Token::Field(f) => f.max_width(),
            })
            .sum();
        if longest > MAX_RENDERED_NAME {
            return Err(NamingError::TooLong(longest));
        }
        Ok(NamingSchema {
            text: schema.to_owned(),
            tokens,
        })
    }

    /// The default schema of periodic snapshot tasks.
    pub fn default_periodic() -> NamingSchema {
        Self::known_good(DEFAULT_PERIODIC_SCHEMA)
    }

    /// The default schema of one-time snapshots.
    pub fn default_manual() -> NamingSchema {
        Self::known_good(DEFAULT_MANUAL_SCHEMA)
    }

    /// Builds a schema from a constant known to be valid (unit tests check
    /// the defaults), without a fallible path for callers to handle.
    fn known_good(text: &str) -> NamingSchema {
        NamingSchema {
            text: text.to_owned(),
            tokens: tokenize(text).unwrap_or_default(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether names carry seconds (`%S` or `%s`); otherwise minutes are
    /// the finest unit and two snapshots in one minute collide.
    pub fn has_seconds(&self) -> bool {
        self.tokens
            .iter()
            .any(|t| matches!(t, Token::Field(Field::Second | Field::Epoch)))
    }

    /// Snapshot name (the part after '@') for this instant, rendered in
    /// `at`'s time zone (`%s` is the same in every zone).
    pub fn render<Tz: TimeZone>(&self, at: &DateTime<Tz>) -> String
    where
        Tz::Offset: fmt::Display,
    {
        let local = at.naive_local();
        let mut out = String::new();
        for token in &self.tokens {
            match token {
                Token::Literal(s) => out.push_str(s),
                Token::Field(Field::Year) => out.push_str(&format!("{:04}", local.year())),
                Token::Field(Field::Month) => out.push_str(&format!("{:02}", local.month())),
                Token::Field(Field::Day) => out.push_str(&format!("{:02}", local.day())),
                Token::Field(Field::Hour) => out.push_str(&format!("{:02}", local.hour())),
                Token::Field(Field::Minute) => out.push_str(&format!("{:02}", local.minute())),
                Token::Field(Field::Second) => out.push_str(&format!("{:02}", local.second())),
                Token::Field(Field::Epoch) => out.push_str(&at.timestamp().to_string()),
            }
        }
        out
    }

    /// The local date-time a snapshot name encodes, or `None` when the name
    /// does not match the schema exactly. With `%s` the name encodes an
    /// instant, returned as the UTC date-time.
    pub fn parse(&self, snapshot_name: &str) -> Option<NaiveDateTime> {
        match self.parse_fields(snapshot_name)? {
            Parsed::Local(local) => Some(local),
            Parsed::Epoch(instant) => Some(instant.naive_utc()),
        }
    }

    /// The instant a snapshot name encodes, reading its local date-time in
    /// `tz`.
    ///
    /// When clocks go back, a local time happens twice; the earlier instant
    /// is taken. When clocks go forward, the skipped local times (the DST
    /// gap) never happen in `tz`, so no snapshot rendered in `tz` can carry
    /// one: such a name gives `None`, and retention leaves it alone. With
    /// `%s` the name is an instant already and `tz` only changes its
    /// representation.
    pub fn parse_in<Tz: TimeZone>(&self, snapshot_name: &str, tz: &Tz) -> Option<DateTime<Tz>> {
        match self.parse_fields(snapshot_name)? {
            Parsed::Local(local) => tz.from_local_datetime(&local).earliest(),
            Parsed::Epoch(instant) => Some(instant.with_timezone(tz)),
        }
    }

    fn parse_fields(&self, name: &str) -> Option<Parsed> {
        let bytes = name.as_bytes();
        let mut pos = 0;
        let mut values: [Option<u32>; 6] = [None; 6];
        let mut epoch: Option<i64> = None;
        for (i, token) in self.tokens.iter().enumerate() {
            match token {
                Token::Literal(lit) => {
                    if !bytes[pos..].starts_with(lit.as_bytes()) {
                        return None;
                    }
                    pos += lit.len();
                }
                Token::Field(Field::Epoch) => {
                    // `%s` is the only field, so everything after it is
                    // literal text of a known length.
                    let rest: usize = self.tokens[i + 1..]
                        .iter()
                        .map(|t| match t {
                            Token::Literal(s) => s.len(),
                            Token::Field(_) => 0,
                        })
                        .sum();
                    let end = bytes.len().checked_sub(rest)?;
                    let digits = name.get(pos..end)?;
                    let leading_zero = digits.len() > 1 && digits.starts_with('0');
                    if digits.is_empty()
                        || leading_zero
                        || !digits.bytes().all(|b| b.is_ascii_digit())
                    {
                        return None;
                    }
                    epoch = Some(digits.parse().ok()?);
                    pos = end;
                }
                Token::Field(field) => {
                    let width = field.max_width();
                    let digits = bytes.get(pos..pos + width)?;
                    if !digits.iter().all(u8::is_ascii_digit) {
                        return None;
                    }
                    let value = digits
                        .iter()
                        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
                    let slot = &mut values[*field as usize];
                    if slot.is_some_and(|v| v != value) {
                        return None;
                    }
                    *slot = Some(value);
                    pos += width;
                }
            }
        }
        if pos != bytes.len() {
            return None;
        }
        if let Some(seconds) = epoch {
            return DateTime::from_timestamp(seconds, 0).map(Parsed::Epoch);
        }
        let [year, month, day, hour, minute, second] = values;
        let date = NaiveDate::from_ymd_opt(i32::try_from(year?).ok()?, month?, day?)?;
        date.and_hms_opt(hour?, minute?, second.unwrap_or(0))
            .map(Parsed::Local)
    }
}

/// What a name encodes: a wall-clock time, or (with `%s`) an instant.
enum Parsed {
    Local(NaiveDateTime),
    Epoch(DateTime<Utc>),
}

impl fmt::Display for NamingSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for NamingSchema {
    type Err = NamingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NamingSchema::new(s)
    }
}

impl TryFrom<String> for NamingSchema {
    type Error = NamingError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NamingSchema::new(&s)
    }
}

impl From<NamingSchema> for String {
    fn from(schema: NamingSchema) -> String {
        schema.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use chrono_tz::Europe::Berlin;

    fn schema(s: &str) -> NamingSchema {
        NamingSchema::new(s).unwrap()
    }

    fn err(s: &str) -> String {
        NamingSchema::new(s).unwrap_err().to_string()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(
            schema(DEFAULT_PERIODIC_SCHEMA),
            NamingSchema::default_periodic()
        );
        assert_eq!(
            schema(DEFAULT_MANUAL_SCHEMA),
            NamingSchema::default_manual()
        );
        assert_eq!(
            NamingSchema::default_periodic().as_str(),
            DEFAULT_PERIODIC_SCHEMA
        );
        assert!(!NamingSchema::default_periodic().has_seconds());
        for ok in [
            "%Y%m%d%H%M",
            "%s",
            "snap-%s",
            "%s.x",
            "a b_c.d:e-%Y-%m-%d_%H:%M:%S",
            "%d.%m.%Y %H-%M",
            "%Y-%m-%d_%H-%M_%Y",
        ] {
            assert!(NamingSchema::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn every_message() {
        assert_eq!(err(""), "Naming schema is required");
        assert_eq!(err("auto"), "%Y must be present in snapshot naming schema");
        assert_eq!(
            err("auto-%Y"),
            "%m must be present in snapshot naming schema"
        );
        assert_eq!(err("%Y%m"), "%d must be present in snapshot naming schema");
        assert_eq!(
            err("%Y%m%d%M"),
            "%H must be present in snapshot naming schema"
        );
        assert_eq!(
            err("%Y%m%d%H"),
            "%M must be present in snapshot naming schema"
        );
        assert_eq!(
            err("%H%M%S"),
            "%Y must be present in snapshot naming schema"
        );
        assert_eq!(
            err("a/%Y%m%d%H%M"),
            "'/' is not an allowed character in ZFS snapshot name"
        );
        assert_eq!(
            err("a@%Y%m%d%H%M"),
            "'@' is not an allowed character in ZFS snapshot name"
        );
        assert_eq!(
            err("%Y%m%d%H%M%%"),
            "'%' is not an allowed character in ZFS snapshot name"
        );
        for bad in ['#', '$', ';', '\'', '"', '\t', '\n', 'ä', '`', '(', '*'] {
            assert_eq!(
                err(&format!("{bad}%Y%m%d%H%M")),
                format!("'{bad}' is not an allowed character in ZFS snapshot name")
            );
        }
        assert_eq!(
            err("%Y%m%d%H%M%q"),
            "Unsupported conversion '%q' in snapshot naming schema"
        );
        assert_eq!(
            err("%Y%m%d%H%M-%y"),
            "Unsupported conversion '%y' in snapshot naming schema"
        );
        assert_eq!(
            err("%Y%m%d%H%M%"),
            "Snapshot naming schema must not end with a lone '%'"
        );
        assert_eq!(
            err("%s-%Y%m%d%H%M"),
            "%s must be the only conversion in snapshot naming schema"
        );
        assert_eq!(
            err("%s%S"),
            "%s must be the only conversion in snapshot naming schema"
        );
        assert_eq!(
            err(&format!("{}%s", "a".repeat(189))),
            "Snapshot names rendered from this naming schema can be 201 characters long; at most 200 are allowed"
        );
        assert!(NamingSchema::new(&format!("{}%s", "a".repeat(188))).is_ok());
        let long = format!("{}%Y%m%d%H%M", "a".repeat(188));
        assert!(NamingSchema::new(&long).is_ok());
        assert_eq!(
            err(&format!("a{long}")),
            "Snapshot names rendered from this naming schema can be 201 characters long; at most 200 are allowed"
        );
    }

    #[test]
    fn renders_in_the_instants_zone() {
        let s = NamingSchema::default_periodic();
        let t = utc(2026, 7, 1, 22, 5, 59);
        assert_eq!(s.render(&t), "auto-2026-07-01_22-05");
        // CEST is UTC+2: the Berlin rendering is already the next day.
        assert_eq!(s.render(&t.with_timezone(&Berlin)), "auto-2026-07-02_00-05");
        let winter = utc(2026, 1, 5, 3, 4, 0);
        assert_eq!(
            s.render(&winter.with_timezone(&Berlin)),
            "auto-2026-01-05_04-04"
        );
        assert_eq!(schema("%s").render(&t), "1782943559");
        assert_eq!(schema("%s").render(&t.with_timezone(&Berlin)), "1782943559");
        assert_eq!(
            schema("x %H:%M:%S %d.%m.%Y").render(&t),
            "x 22:05:59 01.07.2026"
        );
    }

    #[test]
    fn round_trips() {
        let schemas = [
            DEFAULT_PERIODIC_SCHEMA,
            DEFAULT_MANUAL_SCHEMA,
            "%Y%m%d%H%M%S",
            "x-%d.%m.%Y_%H:%M",
            "%s",
            "pre%spost",
            "%s0",
            "1%s",
        ];
        let mut instants = vec![
            utc(2024, 2, 29, 23, 59, 59),
            utc(2024, 3, 1, 0, 0, 0),
            utc(2025, 12, 31, 23, 59, 59),
            utc(2026, 1, 1, 0, 0, 0),
            utc(1970, 1, 1, 0, 0, 0),
            utc(2000, 2, 29, 12, 0, 1),
            utc(9999, 12, 31, 23, 59, 59),
        ];
        // Every 7 hours 13 minutes 17 seconds over about three years.
        let mut t = utc(2023, 1, 1, 0, 0, 0);
        for _ in 0..3_700 {
            instants.push(t);
            t += Duration::seconds(7 * 3600 + 13 * 60 + 17);
        }
        for text in schemas {
            let s = schema(text);
            for at in &instants {
                let name = s.render(at);
                let expected = if s.has_seconds() {
                    *at
                } else {
                    at.with_second(0).unwrap()
                };
                assert_eq!(s.parse_in(&name, &Utc), Some(expected), "{text} {name}");
                assert_eq!(s.parse(&name), Some(expected.naive_utc()), "{text} {name}");
            }
        }
    }

    #[test]
    fn round_trips_in_berlin() {
        let s = NamingSchema::default_periodic();
        let mut t = utc(2026, 1, 1, 0, 0, 0);
        for _ in 0..2_000 {
            let name = s.render(&t.with_timezone(&Berlin));
            let back = s.parse_in(&name, &Berlin).unwrap();
            // The fall-back hour renders twice; the earlier instant is read.
            let ambiguous = t.with_timezone(&Berlin).naive_local()
                == (t - Duration::hours(1))
                    .with_timezone(&Berlin)
                    .naive_local();
            let expected = if ambiguous { t - Duration::hours(1) } else { t };
            assert_eq!(back, expected.with_second(0).unwrap(), "{name}");
            t += Duration::minutes(263);
        }
    }

    #[test]
    fn dst_gap_and_overlap() {
        let s = NamingSchema::default_periodic();
        // 2026-03-29 02:00 CET jumps to 03:00 CEST: 02:30 never happens.
        assert_eq!(s.parse_in("auto-2026-03-29_02-30", &Berlin), None);
        assert!(s.parse("auto-2026-03-29_02-30").is_some());
        assert_eq!(
            s.parse_in("auto-2026-03-29_03-00", &Berlin).unwrap(),
            utc(2026, 3, 29, 1, 0, 0)
        );
        // 2026-10-25 03:00 CEST goes back to 02:00 CET: 02:30 happens twice.
        assert_eq!(
            s.parse_in("auto-2026-10-25_02-30", &Berlin).unwrap(),
            utc(2026, 10, 25, 0, 30, 0)
        );
    }

    #[test]
    fn parsing_is_exact() {
        let s = NamingSchema::default_periodic();
        let expected = NaiveDate::from_ymd_opt(2026, 1, 5)
            .unwrap()
            .and_hms_opt(3, 4, 0)
            .unwrap();
        assert_eq!(s.parse("auto-2026-01-05_03-04"), Some(expected));
        // chrono is lenient where we must not be.
        assert!(NaiveDateTime::parse_from_str("auto-2026-1-5_3-4", "auto-%Y-%m-%d_%H-%M").is_ok());
        for name in [
            "auto-2026-1-5_3-4",
            "manual-2026-01-05_03-04",
            "auto-2026-01-01_00-00-extra",
            "auto-2026-01-01_00-00 ",
            " auto-2026-01-01_00-00",
            "xauto-2026-01-01_00-00",
            "auto-2026-01-01_00",
            "auto-2026-01-01-00-00",
            "Auto-2026-01-01_00-00",
            "auto-02026-01-01_00-00",
            "auto-+026-01-01_00-00",
            "auto-2026-13-01_00-00",
            "auto-2026-00-01_00-00",
            "auto-2026-02-29_00-00",
            "auto-2025-04-31_00-00",
            "auto-2026-01-00_00-00",
            "auto-2026-01-01_24-00",
            "auto-2026-01-01_00-60",
            "auto-2026-01-01_0a-00",
            "auto-2026-01-01_00-0",
            "auto-2026-01-01_00-00\n",
            "auto-2026-01-01_00-0ä",
            "auto-ä026-01-01_00-00",
            "",
            "auto-",
        ] {
            assert_eq!(s.parse(name), None, "{name:?} parsed");
        }
        assert!(s.parse("auto-2024-02-29_00-00").is_some());
        let seconds = schema("%Y%m%d%H%M%S");
        assert_eq!(seconds.parse("20260101000060"), None);
        assert!(seconds.parse("20260101000059").is_some());
        // A repeated field must agree with itself.
        let twice = schema("%Y-%m-%d_%H-%M_%Y");
        assert!(twice.parse("2026-01-01_00-00_2026").is_some());
        assert_eq!(twice.parse("2026-01-01_00-00_2027"), None);
    }

    #[test]
    fn epoch_parsing_is_exact() {
        let s = schema("snap-%s");
        assert_eq!(
            s.parse_in("snap-1782943559", &Utc),
            Some(utc(2026, 7, 1, 22, 5, 59))
        );
        assert_eq!(
            s.parse_in("snap-1782943559", &Berlin).unwrap().to_string(),
            "2026-07-02 00:05:59 CEST"
        );
        assert_eq!(
            s.parse("snap-0"),
            Some(utc(1970, 1, 1, 0, 0, 0).naive_utc())
        );
        for name in [
            "snap-",
            "snap--1",
            "snap-+1",
            "snap-01",
            "snap-1 ",
            "snap-1a",
            "snap-99999999999999999999",
            "snap-999999999999999999",
            "snap1",
            "auto-2026-01-01_00-00",
        ] {
            assert_eq!(s.parse(name), None, "{name:?} parsed");
        }
        // A digit right after %s belongs to the literal, not the number.
        let s = schema("%s0");
        assert_eq!(s.parse("10"), Some(utc(1970, 1, 1, 0, 0, 1).naive_utc()));
        assert_eq!(s.parse("0"), None);
    }

    #[test]
    fn serde_is_the_plain_string_and_validates() {
        let s = NamingSchema::default_periodic();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"auto-%Y-%m-%d_%H-%M\"");
        assert_eq!(serde_json::from_str::<NamingSchema>(&json).unwrap(), s);
        let bad = serde_json::from_str::<NamingSchema>("\"auto/%Y\"").unwrap_err();
        assert!(
            bad.to_string()
                .contains("'/' is not an allowed character in ZFS snapshot name"),
            "{bad}"
        );
        assert_eq!("%s".parse::<NamingSchema>().unwrap().to_string(), "%s");
    }
}
