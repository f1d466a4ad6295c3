//! The target side of a replication key: the forced command sshd runs instead of whatever the source asked for, which allows only the zfs operations a replication needs, below the datasets this source may write.
//!
//! sshd puts what the source asked for in `SSH_ORIGINAL_COMMAND`. The
//! source builds it from words quoted with [`super::quote::shell_quote`]
//! and joined by ` && `; the gate reads exactly that grammar (no shell is
//! ever involved), checks every command, and only then runs them one after
//! the other, each only if the one before succeeded, with zfs's own exit
//! status. zrepl's `stdinserver` forced command is the model.

use crate::host::files::write_atomic;
use nasfleet_common::dataset_names::{validate_dataset_name, validate_snapshot_name};
use nasfleet_common::echo::echo;
use nasfleet_common::names::{is_below, is_replication_hold_tag, validate_system_name};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why the gate refused a request; the source reports it as the run's reason.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GateError {
    #[error("this key only runs replication commands (no shell, no interactive login)")]
    NoCommand,
    #[error("the request is not a command line the replication gate reads: {0}")]
    Syntax(String),
    #[error("'{}' is not a replication command", echo(.0))]
    NotAllowed(String),
    #[error("'{}' is outside the datasets {system} may replicate to ({roots})", echo(.dataset))]
    OutsideRoots {
        dataset: String,
        system: String,
        roots: String,
    },
    #[error("no replication task lets {0} write to this system")]
    NoRoots(String),
    #[error("cannot read the replication allow-list {path}: {reason}")]
    Rules { path: PathBuf, reason: String },
}

/// Splits `SSH_ORIGINAL_COMMAND` into commands of words: words are bare or
/// single-quoted (`'\''` for a quote inside), separated by single spaces,
/// commands by ` && `.
pub fn parse_command_line(line: &str) -> Result<Vec<Vec<String>>, GateError> {
    let syntax = |what: &str| GateError::Syntax(what.to_owned());
    let mut commands = vec![Vec::new()];
    let mut chars = line.chars().peekable();
    loop {
        // One word, or `&&`.
        let mut word = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            match c {
                ' ' => break,
                '\'' => {
                    chars.next();
                    quoted = true;
                    loop {
                        match chars.next() {
                            Some('\'') => break,
                            Some(c) => word.push(c),
                            None => return Err(syntax("an unterminated quote")),
                        }
                    }
                }
                '\\' => {
                    chars.next();
                    match chars.next() {
                        Some('\'') => word.push('\''),
                        _ => return Err(syntax("a backslash outside '\\''")),
                    }
                }
                c if c.is_ascii_alphanumeric() || "_./:@%+=,-&".contains(c) => {
                    chars.next();
                    word.push(c);
                }
                _ => return Err(syntax("a character that must be quoted")),
            }
        }
        if word == "&&" && !quoted {
            if commands.last().is_none_or(Vec::is_empty) {
                return Err(syntax("an empty command"));
            }
            commands.push(Vec::new());
        } else if word.contains('&') && !quoted {
            return Err(syntax("'&' outside '&&'"));
        } else if word.is_empty() && !quoted {
            return Err(syntax(
                "two spaces in a row, or a leading or trailing space",
            ));
        } else if let Some(command) = commands.last_mut() {
            command.push(word);
        }
        match chars.next() {
            None => break,
            Some(' ') => {}
            Some(_) => return Err(syntax("words not separated by a space")),
        }
    }
    if commands.iter().any(Vec::is_empty) {
        return Err(if line.is_empty() {
            GateError::NoCommand
        } else {
            syntax("an empty command")
        });
    }
    Ok(commands)
}

/// What one source may do on this target: the datasets below which its
/// replicas land (`TARGET/<source>` of each task replicating from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub source: String,
    pub roots: Vec<String>,
}

impl Rules {
    fn inside(&self, dataset: &str) -> bool {
        self.roots
            .iter()
            .any(|root| dataset == root || is_below(dataset, root))
    }

    fn require_inside(&self, dataset: &str) -> Result<(), GateError> {
        validate_dataset_name(dataset).map_err(|_| GateError::NotAllowed(dataset.to_owned()))?;
        if self.roots.is_empty() {
            return Err(GateError::NoRoots(self.source.clone()));
        }
        if self.inside(dataset) {
            Ok(())
        } else {
            Err(GateError::OutsideRoots {
                dataset: dataset.to_owned(),
                system: self.source.clone(),
                roots: self.roots.join(", "),
            })
        }
    }
}

/// Checks one command against what a replication sends (see
/// `crate::zfs::argv`): the login check, the dialect probe, listings of
/// and below the allowed datasets, creating parents there, receiving
/// there (resumable), discarding a partial receive that cannot be
/// resumed, making a replica read-only, destroying one of its snapshots
/// (a discard the task's `--allow-overwrite` asked for), and placing and
/// releasing the task's hold tag (`nasfleet:TASKID`) there.
/// Every flag a command may carry is listed; everything else is refused.
pub fn check_command(words: &[String], rules: &Rules) -> Result<(), GateError> {
    let refused = || GateError::NotAllowed(words.join(" "));
    let text: Vec<&str> = words.iter().map(String::as_str).collect();
    match text.as_slice() {
        ["true"] | ["zfs", "version"] => Ok(()),
        ["zfs", "list", rest @ ..] | ["zfs", "get", rest @ ..] => {
            let (options, dataset) = split_operand(rest).ok_or_else(refused)?;
            if !listing_options(text[1], options) {
                return Err(refused());
            }
            rules.require_inside(dataset)
        }
        ["zfs", "create", "-p", "--", dataset] => rules.require_inside(dataset),
        // Discarding a partial receive whose token cannot be resumed.
        ["zfs", "receive" | "recv", "-A", "--", dataset] => rules.require_inside(dataset),
        ["zfs", "receive" | "recv", rest @ ..] => {
            let (options, dataset) = split_operand(rest).ok_or_else(refused)?;
            if !receive_options(options) {
                return Err(refused());
            }
            rules.require_inside(dataset)
        }
        ["zfs", "set", "readonly=on", dataset] => rules.require_inside(dataset),
        ["zfs", "destroy", "--", snapshot] => {
            let (dataset, _) = validate_snapshot_name(snapshot).map_err(|_| refused())?;
            rules.require_inside(dataset)
        }
        // The task's own hold tag only: a source cannot release a hold a
        // person (or another program) placed.
        ["zfs", "hold" | "release", "--", tag, snapshot] if is_replication_hold_tag(tag) => {
            let (dataset, _) = validate_snapshot_name(snapshot).map_err(|_| refused())?;
            rules.require_inside(dataset)
        }
        _ => Err(refused()),
    }
}

/// `[options...] -- DATASET`: the options and the one operand.
fn split_operand<'a>(rest: &'a [&'a str]) -> Option<(&'a [&'a str], &'a str)> {
    match rest {
        [options @ .., "--", dataset] => Some((options, dataset)),
        _ => None,
    }
}

/// The options of the listings replication makes, in both dialects.
fn listing_options(subcommand: &str, options: &[&str]) -> bool {
    let mut rest = options;
    while let Some((first, tail)) = rest.split_first() {
        rest = match (subcommand, *first) {
            (_, "-H" | "-p" | "-r") => tail,
            (_, "-o" | "-d") | ("list", "-t") => match tail.split_first() {
                Some((value, tail)) if is_plain_value(value) => tail,
                _ => return false,
            },
            // `zfs get`'s property list: a bare word of property names.
            ("get", props) if is_plain_value(props) && !props.starts_with('-') => tail,
            _ => return false,
        };
    }
    true
}

/// The options of a replica's receive: resumable, not mounted, read-only,
/// rolled back (only when the task allows overwriting).
fn receive_options(options: &[&str]) -> bool {
    let mut rest = options;
    while let Some((first, tail)) = rest.split_first() {
        rest = match *first {
            "-s" | "-u" | "-F" => tail,
            "-o" => match tail.split_first() {
                Some((&"readonly=on", tail)) => tail,
                _ => return false,
            },
            _ => return false,
        };
    }
    true
}

/// Property lists, depths and types: letters, digits, `,`, `_`.
fn is_plain_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b',' || b == b'_')
}

/// The authorized_keys options of `source`'s replication key on this
/// target: sshd runs the gate instead of what the source asks for
/// (`command=`), and `restrict` takes away port, agent and X11 forwarding,
/// a terminal and `~/.ssh/rc`.
pub fn key_options(agent: &Path, state_dir: &Path, source: &str) -> Result<String, GateError> {
    validate_system_name(source).map_err(|e| GateError::Syntax(e.to_string()))?;
    let words: Vec<String> = vec![
        path_word(agent)?,
        "ssh-gate".into(),
        "--source".into(),
        source.into(),
        "--state-dir".into(),
        path_word(state_dir)?,
    ];
    Ok(format!(
        "command=\"{}\",restrict",
        super::quote::remote_command(&words)
    ))
}

/// An absolute path that can sit inside the double quotes of an
/// authorized_keys option (sshd ends the option at `"`, and `\` escapes).
fn path_word(path: &Path) -> Result<String, GateError> {
    let text = path.to_str().unwrap_or_default();
    if !path.is_absolute()
        || text.is_empty()
        || text.contains(['"', '\\'])
        || text.chars().any(char::is_control)
    {
        return Err(GateError::Syntax(format!(
            "'{}' cannot be written into authorized_keys",
            echo(text)
        )));
    }
    Ok(text.to_owned())
}

/// Where the allow-list of `source` is kept in the agent's state dir.
pub fn rules_path(state_dir: &Path, source: &str) -> PathBuf {
    state_dir.join("gate").join(format!("{source}.roots"))
}

/// Reads the allow-list of `source`: one dataset per line; none yet means
/// no dataset (the login check and the dialect probe still pass).
pub fn load_rules(state_dir: &Path, source: &str) -> Result<Rules, GateError> {
    validate_system_name(source).map_err(|e| GateError::Syntax(e.to_string()))?;
    let path = rules_path(state_dir, source);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(GateError::Rules {
                path,
                reason: e.to_string(),
            });
        }
    };
    let roots: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| validate_dataset_name(l).is_ok())
        .map(str::to_owned)
        .collect();
    Ok(Rules {
        source: source.to_owned(),
        roots,
    })
}

/// Replaces the allow-list of `source` (written by the agent when the
/// controller says which tasks replicate from it to here).
pub fn store_rules(state_dir: &Path, source: &str, roots: &[String]) -> Result<(), GateError> {
    validate_system_name(source).map_err(|e| GateError::Syntax(e.to_string()))?;
    let path = rules_path(state_dir, source);
    let failed = |reason: String| GateError::Rules {
        path: path.clone(),
        reason,
    };
    for root in roots {
        validate_dataset_name(root).map_err(|e| failed(e.to_string()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    }
    let mut text = roots.join("\n");
    text.push('\n');
    write_atomic(&path, text.as_bytes(), 0o600).map_err(|e| failed(e.to_string()))
}

/// Everything the gate decides before running anything: the commands of
/// `original` (sshd's `SSH_ORIGINAL_COMMAND`) if every one is allowed.
pub fn admit(original: Option<&str>, rules: &Rules) -> Result<Vec<Vec<String>>, GateError> {
    let line = original.ok_or(GateError::NoCommand)?;
    let commands = parse_command_line(line)?;
    for command in &commands {
        check_command(command, rules)?;
    }
    Ok(commands)
}

/// Where zfs is looked for: sshd's PATH for a forced command may lack the
/// sbin directories.
const ZFS_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Runs as sshd's forced command for `source`'s key: admits or refuses
/// `original`, then runs the admitted commands, each only if the one before
/// succeeded, no shell in between. Returns the exit status for the source:
/// zfs's own, or 126 for a refusal (written to stderr, which the source
/// reports, and to `gate/refused.log`).
///
/// No timeout of its own: the source's relay ends a stalled transfer, and
/// with its connection gone zfs sees the end of its input.
pub fn serve(state_dir: &Path, source: &str, original: Option<&str>) -> i32 {
    let admitted = load_rules(state_dir, source).and_then(|rules| admit(original, &rules));
    let commands = match admitted {
        Ok(commands) => commands,
        Err(refusal) => {
            eprintln!("nasfleet gate: refused: {refusal}");
            log_refusal(state_dir, source, original, &refusal);
            return 126;
        }
    };
    let zfs = ZFS_DIRS
        .iter()
        .map(|dir| Path::new(dir).join("zfs"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("zfs"));
    for words in commands {
        let Some((program, args)) = words.split_first() else {
            continue;
        };
        if program == "true" {
            continue;
        }
        match std::process::Command::new(&zfs).args(args).status() {
            Ok(status) if status.success() => {}
            Ok(status) => return status.code().unwrap_or(1),
            Err(e) => {
                eprintln!("nasfleet gate: cannot run {}: {e}", zfs.display());
                return 127;
            }
        }
    }
    0
}

/// Appends a refusal to `gate/refused.log` (best effort: a full disk must
/// not turn a refusal into something else).
fn log_refusal(state_dir: &Path, source: &str, original: Option<&str>, refusal: &GateError) {
    use std::io::Write;
    let line = format!(
        "{} source={source} command={:?} refused: {refusal}\n",
        nasfleet_common::status::rfc3339_from_unix_ms(nasfleet_common::status::now_unix_ms())
            .unwrap_or_default(),
        echo(original.unwrap_or("")).to_string(),
    );
    let path = state_dir.join("gate").join("refused.log");
    let _ = std::fs::create_dir_all(state_dir.join("gate"));
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::quote::remote_command;
    use crate::zfs::{self, Dialect};

    fn rules() -> Rules {
        Rules {
            source: "nas1".into(),
            roots: vec!["backup/nas1".into()],
        }
    }

    /// What the source sends, built by the same functions it uses.
    fn sent(commands: &[Vec<String>]) -> String {
        commands
            .iter()
            .map(|c| {
                let mut words = vec!["zfs".to_owned()];
                words.extend(c.iter().cloned());
                remote_command(&words)
            })
            .collect::<Vec<_>>()
            .join(" && ")
    }

    #[test]
    fn every_command_a_replication_sends_is_admitted() {
        let target = "backup/nas1/tank/my data";
        for dialect in [Dialect::Legacy, Dialect::OpenZfs] {
            let all = vec![
                zfs::version_args(),
                zfs::snapshot_guids_args(dialect, target).unwrap(),
                zfs::dataset_exists_args(target).unwrap(),
                zfs::create_parents_args(target).unwrap().unwrap(),
                zfs::recv_args(dialect, target, false, true).unwrap(),
                zfs::recv_args(dialect, target, true, false).unwrap(),
                zfs::set_readonly_args(target).unwrap(),
                zfs::destroy_snapshot_args(&format!("{target}@auto-1")).unwrap(),
                zfs::hold_args("nasfleet:7", &format!("{target}@auto-2")).unwrap(),
                zfs::release_args("nasfleet:7", &format!("{target}@auto-1")).unwrap(),
                zfs::held_snapshots_args(target, false).unwrap(),
                zfs::recv_abort_args(target).unwrap(),
            ];
            let line = sent(&all);
            let admitted = admit(Some(&line), &rules()).unwrap();
            assert_eq!(admitted.len(), all.len(), "{dialect:?}");
            assert_eq!(admitted[1][0], "zfs");
            assert_eq!(&admitted[4][1..], &all[4][..]);
        }
        assert_eq!(admit(Some("true"), &rules()).unwrap(), vec![vec!["true"]]);
    }

    #[test]
    fn anything_else_is_refused() {
        let refused = |line: &str| admit(Some(line), &rules()).unwrap_err();
        assert_eq!(admit(None, &rules()).unwrap_err(), GateError::NoCommand);
        for line in [
            "id",
            "sh",
            "cat /etc/shadow",
            "zfs destroy -r backup/nas1",
            "zfs destroy -- backup/nas1",
            "zfs destroy -r -- backup/nas1/tank@a",
            "zfs set mountpoint=/etc -- backup/nas1/x",
            "zfs set readonly=off backup/nas1/x",
            "zfs receive -o mountpoint=/etc -- backup/nas1/x",
            "zfs receive -e -- backup/nas1/x",
            "zfs receive -A -- backup/nas2/x",
            "zfs receive -A -F -- backup/nas1/x",
            "zfs send -- backup/nas1/x@a",
            "zfs list -H -o name -- tank",
            "zpool destroy backup",
            "true && id",
            "zfs hold -- keep backup/nas1/x@a",
            "zfs release -- keep backup/nas1/x@a",
            "zfs release -r -- nasfleet:7 backup/nas1/x@a",
            "zfs hold -- nasfleet:7 backup/nas2/x@a",
            "zfs holds -H -- backup/nas1/x@a",
        ] {
            assert!(
                matches!(
                    refused(line),
                    GateError::NotAllowed(_) | GateError::OutsideRoots { .. }
                ),
                "{line}"
            );
        }
        // Outside the roots, even with allowed words.
        assert!(matches!(
            refused("zfs receive -u -- backup/nas2/tank"),
            GateError::OutsideRoots { dataset, .. } if dataset == "backup/nas2/tank"
        ));
        assert!(matches!(
            refused("zfs create -p -- backup/nas10"),
            GateError::OutsideRoots { .. }
        ));
        // Shell syntax never reaches a shell: it is not even a word here.
        for line in [
            "zfs list -H -o name -- backup/nas1; id",
            "zfs list -H -o name -- $(id)",
            "zfs list -H -o name -- backup/nas1 | sh",
            "zfs list -H -o name -- backup/nas1 & id",
            "zfs list -H -o name -- 'backup/nas1",
            "true &&",
            "true  && true",
            "",
        ] {
            assert!(
                matches!(refused(line), GateError::Syntax(_) | GateError::NoCommand),
                "{line:?}: {:?}",
                refused(line)
            );
        }
    }

    #[test]
    fn quoted_words_come_back_as_they_were_sent() {
        let words = vec![
            "zfs".to_owned(),
            "list".to_owned(),
            "-H".to_owned(),
            "-o".to_owned(),
            "name".to_owned(),
            "--".to_owned(),
            "backup/nas1/it's a name".to_owned(),
        ];
        let parsed = parse_command_line(&remote_command(&words)).unwrap();
        assert_eq!(parsed, vec![words]);
    }

    #[test]
    fn rules_are_kept_per_source_and_an_empty_list_admits_no_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let none = load_rules(dir.path(), "nas1").unwrap();
        assert!(none.roots.is_empty());
        assert_eq!(admit(Some("true"), &none).unwrap().len(), 1);
        assert_eq!(
            admit(Some("zfs list -H -o name -- backup/nas1"), &none).unwrap_err(),
            GateError::NoRoots("nas1".into())
        );
        store_rules(
            dir.path(),
            "nas1",
            &["backup/nas1".into(), "b2/nas1".into()],
        )
        .unwrap();
        let rules = load_rules(dir.path(), "nas1").unwrap();
        assert_eq!(rules.roots, vec!["backup/nas1", "b2/nas1"]);
        assert!(store_rules(dir.path(), "nas1", &["../x".into()]).is_err());
        assert!(load_rules(dir.path(), "../etc").is_err());
        store_rules(dir.path(), "nas1", &[]).unwrap();
        assert!(load_rules(dir.path(), "nas1").unwrap().roots.is_empty());
    }

    #[test]
    fn the_key_runs_the_gate_and_nothing_else() {
        let options = key_options(
            Path::new("/usr/local/bin/nasfleet-agent"),
            Path::new("/var/lib/nasfleet agent"),
            "nas1",
        )
        .unwrap();
        assert_eq!(
            options,
            "command=\"/usr/local/bin/nasfleet-agent ssh-gate --source nas1 --state-dir '/var/lib/nasfleet agent'\",restrict"
        );
        for bad in ["relative/agent", "/a\"b", "/a\\b", "/a\nb"] {
            assert!(
                key_options(Path::new(bad), Path::new("/s"), "nas1").is_err(),
                "{bad:?}"
            );
        }
        assert!(key_options(Path::new("/a"), Path::new("/s"), "nas 1").is_err());
    }
}
