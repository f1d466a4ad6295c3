//! What rsync says (pure): its exit codes as its manual names them and which count as success, the reason for a failed run, progress lines, and the failure of a remote path probe.

/// rsync's exit codes, as its manual names them.
pub fn exit_code_name(code: i32) -> &'static str {
    match code {
        0 => "Success",
        1 => "Syntax or usage error",
        2 => "Protocol incompatibility",
        3 => "Errors selecting input/output files, dirs",
        4 => "Requested action not supported",
        5 => "Error starting client-server protocol",
        6 => "Daemon unable to append to log-file",
        10 => "Error in socket I/O",
        11 => "Error in file I/O",
        12 => "Error in rsync protocol data stream",
        13 => "Errors with program diagnostics",
        14 => "Error in IPC code",
        20 => "Received SIGUSR1 or SIGINT",
        21 => "Some error returned by waitpid()",
        22 => "Error allocating core memory buffers",
        23 => "Partial transfer due to error",
        24 => "Partial transfer due to vanished source files",
        25 => "The --max-delete limit stopped deletions",
        30 => "Timeout in data send/receive",
        35 => "Timeout waiting for daemon connection",
        _ => "Unknown error",
    }
}

/// Exit codes that count as success: 24 (files vanished while copying) and
/// 25 (--max-delete reached) leave a usable copy, as TrueNAS treats them.
pub fn is_success(code: i32) -> bool {
    matches!(code, 0 | 24 | 25)
}

/// The reason for a failed run: `rsync command returned CODE - NAME.` and
/// the last lines rsync wrote to stderr.
pub fn failure_reason(code: i32, stderr: &str) -> String {
    let tail: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = tail[tail.len().saturating_sub(5)..].join("\n");
    let mut reason = format!("rsync command returned {code} - {}.", exit_code_name(code));
    if !tail.is_empty() {
        reason.push('\n');
        reason.push_str(&tail);
    }
    reason
}

/// Progress from one `--info=progress2` line, e.g.
/// `    32,768 100%   31.25MB/s    0:00:00 (xfr#1, to-chk=0/2)`:
/// bytes so far, the percentage, and files transferred.
pub fn parse_progress(line: &str) -> Option<(u64, u8, u64)> {
    let mut words = line.split_whitespace();
    let bytes: u64 = words.next()?.replace(',', "").parse().ok()?;
    let percent: u8 = words.next()?.strip_suffix('%')?.parse().ok()?;
    let files = line
        .split("xfr#")
        .nth(1)
        .and_then(|rest| rest.split([',', ')']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some((bytes, percent, files))
}

/// rsync's stdout cut into lines as it arrives: `--info=progress2`
/// rewrites its line with `\r`, other output ends in `\n`.
#[derive(Debug, Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// Takes the next chunk of output; returns the lines it completed,
    /// trimmed, blank ones left out.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\r' || *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim().to_owned();
            if !line.is_empty() {
                lines.push(line);
            }
        }
        lines
    }
}

/// Why a remote path probe ([`super::argv::ssh_mkdir_probe`],
/// [`super::argv::daemon_mkpath_probe`]) failed:
/// `'PATH' WHAT: FIRST LINE OF STDERR`.
pub fn remote_path_failure(remote_path: &str, stderr: &str) -> String {
    let first = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed")
        .trim();
    let what = if stderr.contains("Connection refused") {
        "connection refused"
    } else if stderr.contains("Not a directory") || stderr.contains("File exists") {
        "not a directory"
    } else {
        "could not be created or reached"
    };
    format!("'{remote_path}' {what}: {first}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_at_carriage_returns_and_newlines() {
        let mut lines = Lines::default();
        assert!(lines.feed(b"  1,024  50%").is_empty());
        assert_eq!(
            lines.feed(b"\r  2,048 100%\r\nsent 10 bytes\n\n"),
            ["1,024  50%", "2,048 100%", "sent 10 bytes"]
        );
    }

    #[test]
    fn exit_codes_and_progress() {
        assert!(is_success(0) && is_success(24) && is_success(25) && !is_success(23));
        assert_eq!(
            failure_reason(
                5,
                "@ERROR: Unknown module 'nope'\nrsync error: error starting client-server protocol (code 5)\n"
            ),
            "rsync command returned 5 - Error starting client-server protocol.\n@ERROR: Unknown module 'nope'\nrsync error: error starting client-server protocol (code 5)"
        );
        assert_eq!(
            parse_progress("     32,768 100%   31.25MB/s    0:00:00 (xfr#1, to-chk=0/2)"),
            Some((32_768, 100, 1))
        );
        assert_eq!(parse_progress("sending incremental file list"), None);
    }
}
