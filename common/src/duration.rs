//! Human durations such as `90s`, `15m`, `1h`, `2w` used by token TTLs, intervals and (later) retention lifetimes.

use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "{field}: '{input}' is not a duration; use a whole number followed by s, m, h, d, w, or y (e.g. 1h, 2w)"
)]
pub struct DurationError {
    pub field: &'static str,
    pub input: String,
}

/// Parses `<n><unit>` with unit s, m (minutes), h, d, w or y (365 days).
/// A month (`mo`) is 30 days. Zero is refused: no duration here means "never".
pub fn parse_duration(field: &'static str, input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        field,
        input: input.to_owned(),
    };
    let trimmed = input.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(err)?;
    let (digits, unit) = trimmed.split_at(split);
    let count: u64 = digits.parse().map_err(|_| err())?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "mo" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(err()),
    };
    let secs = count.checked_mul(unit_secs).ok_or_else(err)?;
    if secs == 0 {
        return Err(err());
    }
    Ok(Duration::from_secs(secs))
}

/// Snapshot lifetimes as TrueNAS spells them: `<n><unit>` with unit h, d,
/// w, m (MONTH, taken as 30 days) or y (365 days). Unlike [`parse_duration`],
/// `m` means months here, because that is what retention settings mean by it.
pub fn parse_lifetime(field: &'static str, input: &str) -> Result<Duration, DurationError> {
    let trimmed = input.trim();
    match trimmed.strip_suffix('m') {
        Some(months) if !months.is_empty() && months.chars().all(|c| c.is_ascii_digit()) => {
            parse_duration(field, &format!("{months}mo"))
        }
        _ if trimmed.ends_with('s') => Err(DurationError {
            field,
            input: input.to_owned(),
        }),
        _ => parse_duration(field, trimmed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_use_months_for_m() {
        assert_eq!(
            parse_lifetime("lifetime", "2w"),
            Ok(Duration::from_secs(14 * 86_400))
        );
        assert_eq!(
            parse_lifetime("lifetime", "3m"),
            Ok(Duration::from_secs(90 * 86_400))
        );
        assert_eq!(
            parse_lifetime("lifetime", "1y"),
            Ok(Duration::from_secs(365 * 86_400))
        );
        for refused in ["10s", "m"] {
            let error = parse_lifetime("lifetime", refused).unwrap_err();
            assert_eq!(
                (error.field, error.input.as_str()),
                ("lifetime", refused),
                "{error}"
            );
        }
    }

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("ttl", "90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("ttl", "1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(
            parse_duration("ttl", "2w"),
            Ok(Duration::from_secs(14 * 86_400))
        );
    }

    #[test]
    fn refuses_garbage_and_zero() {
        for bad in [
            "",
            "h",
            "1",
            "0h",
            "1x",
            "-1h",
            "1.5h",
            "99999999999999999999y",
        ] {
            let err = parse_duration("ttl", bad).unwrap_err();
            assert_eq!(err.field, "ttl");
        }
    }
}
