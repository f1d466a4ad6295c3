//! How much of a person's (or an attacker's) input an error message may repeat.
//!
//! A message that echoes a hostile value whole becomes unreadable (a 1 MB
//! name) or undeliverable (gRPC metadata limits), so every message that
//! quotes input goes through [`echo`].

use std::fmt;

/// Characters of input an error message repeats at most.
pub const ECHO_LIMIT: usize = 100;

/// A value as an error message may show it: at most [`ECHO_LIMIT`]
/// characters, cut on a character boundary, with `…(N more characters)`
/// saying how much was left out. Control characters are shown escaped so a
/// message stays on one line.
pub struct Echo<'a>(pub &'a str);

/// Shorthand for [`Echo`]: `format!("name: '{}' is too long", echo(name))`.
pub fn echo(value: &str) -> Echo<'_> {
    Echo(value)
}

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.0.chars().enumerate() {
            if shown == ECHO_LIMIT {
                let rest = self.0.chars().count() - shown;
                return write!(f, "…({rest} more characters)");
            }
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_shown_whole() {
        assert_eq!(echo("tank/data").to_string(), "tank/data");
    }

    #[test]
    fn long_values_are_cut_and_say_how_much_is_missing() {
        let long = "é".repeat(1_000_000);
        let shown = echo(&long).to_string();
        assert!(shown.starts_with(&"é".repeat(ECHO_LIMIT)));
        assert!(shown.ends_with("…(999900 more characters)"));
        assert!(shown.chars().count() < ECHO_LIMIT + 30);
    }

    #[test]
    fn control_characters_stay_on_one_line() {
        assert_eq!(echo("a\nb\0").to_string(), "a\\nb\\u{0}");
    }
}
