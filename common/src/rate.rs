//! Transfer rates as people write them (`50M`, `1.5G`, `800K`, `50MB/s`) and as the fleet prints them (`50.0M/s`): one syntax for the CLI's flags, task files and every display.
//!
//! Units are binary (K = 1024, M = 1024², G = 1024³, T = 1024⁴), as zfs and
//! pv count, and case-insensitive; a trailing `B`, `iB` and `/s` are
//! allowed and mean nothing more. A lower-case `b` is refused: it usually
//! means bits, and taking it as bytes would be eight times off.
//! Fractions are exact (`1.5G` is 1610612736), rounded down to whole bytes.

use crate::echo::echo;
use thiserror::Error;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const TIB: u64 = 1 << 40;

/// Digits after the point at most: 12 keep even `T` exact to the byte
/// (10¹² > 2⁴⁰), and the arithmetic inside `u128`.
const MAX_FRACTION_DIGITS: u32 = 12;

/// The units from the largest down, as [`format_rate`] picks them.
const UNITS: [(u64, char); 4] = [(TIB, 'T'), (GIB, 'G'), (MIB, 'M'), (KIB, 'K')];

/// Why a text is not a rate. The messages quote the input through
/// [`echo`] and leave naming the field to the caller.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RateError {
    #[error(
        "'{}' is not a rate; give bytes per second with an optional binary unit K, M, G or T (e.g. 50M, 1.5G, 800K, 1048576, 50MB/s)",
        echo(.input)
    )]
    Syntax { input: String },
    #[error("'{}' is more bytes per second than a rate can be", echo(.input))]
    TooLarge { input: String },
}

/// Bytes per second from `50M`, `1.5G`, `800K`, `512k`, `1048576`,
/// `50MB/s`, `50M/s` or `64KiB/s`. Zero is a rate like any other; what it
/// means (no limit) is the caller's rule.
pub fn parse_rate(text: &str) -> Result<u64, RateError> {
    let syntax = || RateError::Syntax {
        input: text.to_owned(),
    };
    let rest = text.trim();
    let rest = rest.strip_suffix("/s").unwrap_or(rest);
    let rest = rest.strip_suffix('B').unwrap_or(rest).trim_end();
    let (number, unit) = match rest.char_indices().last() {
        Some((_, c)) if c.is_ascii_digit() => (rest, 1),
        Some((at, 'i' | 'I')) => {
            let number = &rest[..at];
            match number.chars().last().and_then(unit_of) {
                Some(unit) => (&number[..number.len() - 1], unit),
                None => return Err(syntax()),
            }
        }
        Some((at, c)) => (&rest[..at], unit_of(c).ok_or_else(syntax)?),
        None => return Err(syntax()),
    };
    let number = number.trim_end();
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let fraction_ok = number.len() == whole.len()
        || (all_digits(fraction) && fraction.len() <= MAX_FRACTION_DIGITS as usize);
    if !all_digits(whole) || !fraction_ok {
        return Err(syntax());
    }
    let too_large = || RateError::TooLarge {
        input: text.to_owned(),
    };
    // whole.fraction × unit, computed as (whole·10ⁿ + fraction) × unit / 10ⁿ
    // in integers so that `1.5G` is exact rather than a float's guess.
    let scale = 10u128.pow(fraction.len() as u32);
    let digits = format!("{whole}{fraction}");
    // Leading zeros say nothing, however many there are.
    let digits = digits.trim_start_matches('0');
    let scaled: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| too_large())?
    };
    let bytes = scaled.checked_mul(u128::from(unit)).ok_or_else(too_large)? / scale;
    u64::try_from(bytes).map_err(|_| too_large())
}

fn unit_of(c: char) -> Option<u64> {
    match c.to_ascii_uppercase() {
        'K' => Some(KIB),
        'M' => Some(MIB),
        'G' => Some(GIB),
        'T' => Some(TIB),
        _ => None,
    }
}

/// `50.0M/s`, `1.5G/s`, `512B/s`: the largest unit the rate reaches, one
/// decimal (rounded to nearest), so people compare at a glance; JSON
/// carries the exact bytes. What 0 means is the caller's to print.
pub fn format_rate(bytes_per_second: u64) -> String {
    let value = u128::from(bytes_per_second);
    for (unit, letter) in UNITS {
        let unit = u128::from(unit);
        // A unit is taken once the next smaller one would print 1024.0 or
        // more, so 1048575 is 1.0M/s rather than 1024.0K/s.
        let smaller = unit / 1024;
        if (value * 10 + smaller / 2) / smaller >= 10_240 {
            let tenths = (value * 10 + unit / 2) / unit;
            return format!("{}.{}{letter}/s", tenths / 10, tenths % 10);
        }
    }
    format!("{bytes_per_second}B/s")
}

/// Bytes in binary units with one decimal, as `zfs list` shows them.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_binary_and_case_insensitive() {
        for (text, bytes) in [
            ("50M", 50 * MIB),
            ("1.5G", 3 * GIB / 2),
            ("800K", 800 * KIB),
            ("512k", 512 * KIB),
            ("1048576", MIB),
            ("2t", 2 * TIB),
            ("0", 0),
            ("0K", 0),
        ] {
            assert_eq!(parse_rate(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bytes_and_per_second_may_be_spelt_out() {
        for text in [
            "50MB/s",
            "50M/s",
            "50MB",
            "50MiB/s",
            "50mIB",
            " 50M ",
            "50 M",
            "52428800B/s",
        ] {
            assert_eq!(parse_rate(text), Ok(50 * MIB), "{text}");
        }
        assert_eq!(parse_rate("100B"), Ok(100));
    }

    #[test]
    fn fractions_are_exact_and_round_down() {
        assert_eq!(parse_rate("1.5G"), Ok(1_610_612_736));
        assert_eq!(parse_rate("0.5K"), Ok(512));
        assert_eq!(parse_rate("0.1K"), Ok(102));
        assert_eq!(parse_rate("1.000000000001T"), Ok(TIB + 1));
        assert!(parse_rate("1.0000000000001T").is_err());
        assert_eq!(parse_rate(&format!("{}1K", "0".repeat(60))), Ok(KIB));
        assert_eq!(parse_rate("0.000"), Ok(0));
    }

    #[test]
    fn anything_else_is_refused_with_examples() {
        for text in [
            "", " ", "M", "/s", "-5M", "+5M", "5Mb", "50Mib", "5 Mbit", "5.M", ".5M", "5..0M",
            "1e6", "5X", "5i", "5KK", "five", "5M/h", "0x10",
        ] {
            assert_eq!(
                parse_rate(text),
                Err(RateError::Syntax {
                    input: text.to_owned()
                }),
                "{text}"
            );
        }
        assert_eq!(
            parse_rate("50Q").map_err(|e| e.to_string()),
            Err("'50Q' is not a rate; give bytes per second with an optional binary unit K, M, G or T (e.g. 50M, 1.5G, 800K, 1048576, 50MB/s)".into())
        );
    }

    #[test]
    fn rates_beyond_u64_are_too_large() {
        assert_eq!(parse_rate(&u64::MAX.to_string()), Ok(u64::MAX));
        for text in ["18446744073709551616", "16777216T", &"9".repeat(60)] {
            assert_eq!(
                parse_rate(text),
                Err(RateError::TooLarge {
                    input: text.to_owned()
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn long_input_is_not_echoed_whole() {
        let text = format!("{}Q", "5".repeat(10_000));
        let message = parse_rate(&text).map_err(|e| e.to_string()).unwrap_err();
        assert!(message.contains("…(9901 more characters)"), "{message}");
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn rates_print_in_the_largest_unit_they_reach() {
        assert_eq!(format_rate(50 * MIB), "50.0M/s");
        assert_eq!(format_rate(3 * GIB / 2), "1.5G/s");
        assert_eq!(format_rate(64 * KIB), "64.0K/s");
        assert_eq!(format_rate(TIB), "1.0T/s");
        assert_eq!(format_rate(1_000_000), "976.6K/s");
        assert_eq!(format_rate(MIB - 1), "1.0M/s");
        assert_eq!(format_rate(1023), "1023B/s");
        assert_eq!(format_rate(0), "0B/s");
        assert_eq!(format_rate(u64::MAX), "16777216.0T/s");
    }

    #[test]
    fn printed_rates_read_back() {
        for bytes in [64 * KIB, 50 * MIB, 3 * GIB / 2, TIB, 700] {
            assert_eq!(parse_rate(&format_rate(bytes)), Ok(bytes), "{bytes}");
        }
    }
}
