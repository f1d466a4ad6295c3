//! How the CLI prints: aligned tables for people, JSON for scripts, and human spellings of sizes and times.

use chrono::{DateTime, Local, Utc};
pub use nasfleet_common::rate::human_bytes;
use serde::Serialize;

/// `-o table|json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

/// `println!` that hands a failed write back instead of panicking, so the
/// command can stop and `main` can decide what a closed stdout means.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_line("")
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(&::std::format!($($arg)*))
    };
}

/// Stdout's reader went away (`nasfleet ... | head`). Not a failure: the
/// command stops writing and exits 0, as `rg`, `ls` and `cat` do.
#[derive(Debug)]
pub struct ReaderGone;

impl std::fmt::Display for ReaderGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed by its reader")
    }
}

impl std::error::Error for ReaderGone {}

/// Writes one line to stdout; use [`outln!`]. A broken pipe becomes
/// [`ReaderGone`], told apart by type from any broken pipe of the network.
pub fn write_line(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    // Stdout is line buffered: the newline flushes, so a closed pipe shows here.
    writeln!(std::io::stdout().lock(), "{text}").map_err(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            anyhow::Error::new(ReaderGone)
        } else {
            anyhow::Error::new(e).context("cannot write to standard output")
        }
    })
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    write_line(&serde_json::to_string_pretty(value)?)
}

/// A plain text table with left-aligned columns separated by two spaces.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate().take(columns) {
                if i + 1 == columns {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = line(&self.header);
        for row in &self.rows {
            out.push('\n');
            out.push_str(&line(row));
        }
        out
    }
}

/// `2026-11-21 20:41:07` in local time, or `never`.
pub fn human_time(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".into();
    }
    DateTime::<Utc>::from_timestamp_millis(unix_ms)
        .map(|t| {
            t.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "invalid time".into())
}

/// Like [`human_time`], but `-` for "not yet", which reads better in table cells.
pub fn time_or_dash(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        "-".into()
    } else {
        human_time(unix_ms)
    }
}

/// Shortens text to one table cell: line breaks become spaces and anything
/// past `max` characters is cut with an ellipsis (the full text is in `show`).
pub fn cell(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() <= max {
        return flat.to_owned();
    }
    let mut out: String = flat.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `yes` / `no` for boolean table cells.
pub fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["NAME", "STATUS"]);
        t.row(vec!["nas-long".into(), "ONLINE".into()]);
        t.row(vec!["b".into(), "OFFLINE".into()]);
        assert_eq!(
            t.render(),
            "NAME      STATUS\nnas-long  ONLINE\nb         OFFLINE"
        );
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.5K");
        assert_eq!(human_bytes(228_057_088), "217.5M");
    }

    #[test]
    fn cells_are_flat_and_short() {
        assert_eq!(cell("short", 10), "short");
        assert_eq!(cell("line one\nline two", 40), "line one line two");
        assert_eq!(cell("abcdefghijkl", 5), "abcd…");
        assert_eq!(cell("äöüäöüäöü", 4), "äöü…");
    }
}
