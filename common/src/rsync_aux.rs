//! The rsync task's auxiliary parameters: the allow-list of rsync options a backup task may add, one rule set for the CLI, the controller and the agent.
//!
//! Each auxiliary parameter is one argv word for rsync, so a word is judged
//! the way rsync's option parser (popt) reads it:
//!
//! - `--name=VALUE` or `--name`: `name` must be on the allow-list, exactly
//!   (rsync takes no abbreviations). An option that takes a value must get
//!   it in the same word: `--exclude=*.tmp`, not `--exclude` followed by
//!   another word, because the next word rsync would read is whatever comes
//!   next on its command line (another parameter, or the `--` that ends the
//!   options). `--no-NAME` is allowed for every allowed flag.
//! - `-abc`: a bundle of short options, read letter by letter. Only flags
//!   (letters without a value) are allowed; a letter that takes a value
//!   would swallow the rest of the word (`-ave/some/script.sh` is
//!   `-a -v -e /some/script.sh`), so it is refused wherever it appears.
//! - Anything else (`-`, `--`, words without a leading `-`) is refused:
//!   rsync would take it for one more file to copy.
//!
//! Allowed flags: `-a/--archive`, `-r/--recursive`, `-d/--dirs`,
//! `-l/--links`, `-p/--perms`, `-E/--executability`, `-A/--acls`,
//! `-X/--xattrs`, `-o/--owner`, `-g/--group`, `-D`, `--devices`,
//! `--specials`, `-t/--times`, `-O/--omit-dir-times`,
//! `-J/--omit-link-times`, `-H/--hard-links`, `-S/--sparse`, `--partial`,
//! `--inplace`, `--append-verify`, `-c/--checksum`, `-z/--compress`,
//! `--numeric-ids`, `-x/--one-file-system`, `-i/--itemize-changes`,
//! `-n/--dry-run`, `-v/--verbose`, `-q/--quiet`, `--stats`, `--delete`,
//! `--del`, `--delete-before`, `--delete-during`, `--delete-delay`,
//! `--delete-after`, `--delete-excluded`, `--delay-updates`, `-b/--backup`,
//! `-u/--update`, `--existing`, `--ignore-existing`, `-I/--ignore-times`,
//! `--size-only`, `-W/--whole-file`, `-m/--prune-empty-dirs`,
//! `--safe-links`, `--munge-links`, `--force`, `--ignore-errors`,
//! `-y/--fuzzy`, `-4/--ipv4`, `-6/--ipv6`, `--no-motd`.
//!
//! Allowed with a value (`--name=VALUE`): `--exclude`, `--include`
//! (patterns), `--bwlimit`, `--max-size`, `--min-size` (sizes),
//! `--compress-level`, `--timeout`, `--contimeout`, `--max-delete`,
//! `--modify-window` (numbers), `--chmod` (a chmod spec), `--chown`,
//! `--usermap`, `--groupmap` (user and group names or ids), `--info`,
//! `--compress-choice`, `--checksum-choice` (words), `--suffix` (no `/`).
//!
//! Refused on purpose, each with its reason in the message:
//! - options that choose which program runs or how rsync connects
//!   (`-e/--rsh`, `--rsync-path`, `-M/--remote-option`, `--server`,
//!   `--sender`, `--daemon`, `--address`, `--port`, `--sockopts`,
//!   `--copy-as`, `--dparam`): nasfleet sets those itself, and they run
//!   arbitrary programs as the task's user (often root);
//! - options whose value names a file or directory (`--log-file`,
//!   `--files-from`, `--link-dest`, `--compare-dest`, `--copy-dest`,
//!   `--backup-dir`, `--temp-dir`, `--partial-dir`, `--config`,
//!   `--password-file`, `--exclude-from`, `--include-from`, `-f/--filter`
//!   (merge rules read files), `--write-batch`, `--read-batch`,
//!   `--only-write-batch`, `--early-input`): such a path can lie anywhere
//!   on the host, outside the task's path, and rsync would read or write it;
//! - options that follow symbolic links (`-L/--copy-links`,
//!   `--copy-unsafe-links`, `-k/--copy-dirlinks`, `-K/--keep-dirlinks`): a
//!   link inside the task's path can point anywhere.
//!
//! Left out because they disturb what nasfleet reads from rsync: `-h`
//! (human-readable numbers break the byte counts of progress) and
//! `-P/--progress` (a line per file floods the run's log).

use crate::echo::echo;
use thiserror::Error;

/// Why an auxiliary parameter is refused. Every message starts with
/// `auxiliary: `, quotes the word (at most [`crate::echo::ECHO_LIMIT`]
/// characters of it), names the option and the rule.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuxError {
    #[error(
        "auxiliary: {:?} is not a single rsync parameter (empty, or with a line break)",
        echo(.word)
    )]
    NotOneWord { word: String },
    #[error(
        "auxiliary: '{}' is not an rsync option: rsync would take it for one more file to copy; only options starting with - are allowed",
        echo(.word)
    )]
    NotAnOption { word: String },
    #[error(
        "auxiliary: '{}': {} is refused: it chooses the program rsync runs or how it connects, which nasfleet sets itself",
        echo(.word),
        echo(.option)
    )]
    RunsProgram { word: String, option: String },
    #[error(
        "auxiliary: '{}': {} is refused: its value names a file or directory, which could lie outside the task's path",
        echo(.word),
        echo(.option)
    )]
    NamesFile { word: String, option: String },
    #[error(
        "auxiliary: '{}': {} is refused: it follows symbolic links, which could lead outside the task's path",
        echo(.word),
        echo(.option)
    )]
    FollowsLinks { word: String, option: String },
    #[error(
        "auxiliary: '{}': {} takes a value, which would swallow the rest of the word; write {}=VALUE as a parameter of its own",
        echo(.word),
        echo(.option),
        .long
    )]
    ShortWithValue {
        word: String,
        option: String,
        long: &'static str,
    },
    #[error(
        "auxiliary: '{}': {} takes a value; write {}=VALUE in one parameter (each auxiliary parameter is one word)",
        echo(.word),
        echo(.option),
        echo(.option)
    )]
    NeedsValue { word: String, option: String },
    #[error(
        "auxiliary: '{}': {} takes no value",
        echo(.word),
        echo(.option)
    )]
    TakesNoValue { word: String, option: String },
    #[error(
        "auxiliary: '{}': the value of {} must be {}",
        echo(.word),
        echo(.option),
        .rule
    )]
    BadValue {
        word: String,
        option: String,
        rule: &'static str,
    },
    #[error(
        "auxiliary: '{}': {} is not among the rsync options nasfleet allows (see `nasfleet rsync create --help`)",
        echo(.word),
        echo(.option)
    )]
    NotAllowed { word: String, option: String },
}

/// What the value of an allowed `--name=VALUE` option must look like.
#[derive(Debug, Clone, Copy)]
enum ValueRule {
    /// A filter pattern (`--exclude`, `--include`): any text. rsync reads
    /// it as a pattern only (merge rules need `--filter`, refused).
    Pattern,
    /// A whole number, maybe negative (`--modify-window=-1`).
    Number,
    /// A size such as `100`, `1.5M`, `10KiB`, `1g+1` (rsync's size syntax).
    Size,
    /// A chmod spec such as `Dg+s,ug+w,Fo-w,+X` or `F644`.
    Chmod,
    /// User and group names or ids, maps such as `*:backup,0:1000`.
    Names,
    /// A list of words such as `progress2,stats2` or `zstd`.
    Words,
    /// A backup suffix: anything but `/`, so a backup stays beside its file.
    Suffix,
}

impl ValueRule {
    fn accepts(self, value: &str) -> bool {
        let all = |ok: fn(char) -> bool| !value.is_empty() && value.chars().all(ok);
        match self {
            ValueRule::Pattern => !value.is_empty(),
            ValueRule::Number => {
                let digits = value.strip_prefix('-').unwrap_or(value);
                !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
            }
            ValueRule::Size => {
                value.starts_with(|c: char| c.is_ascii_digit() || c == '.')
                    && all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'))
            }
            ValueRule::Chmod => all(|c| c.is_ascii_digit() || "DFugoa+-=rwxXst,".contains(c)),
            ValueRule::Names => all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, ':' | ',' | '*' | '_' | '.' | '-' | '$')
            }),
            ValueRule::Words => all(|c| c.is_ascii_alphanumeric() || matches!(c, ',' | '-' | '_')),
            ValueRule::Suffix => !value.contains('/'),
        }
    }

    /// What the rule asks for, for the message.
    fn describe(self) -> &'static str {
        match self {
            ValueRule::Pattern => "a non-empty pattern",
            ValueRule::Number => "a whole number",
            ValueRule::Size => "a size such as 500K or 1.5G",
            ValueRule::Chmod => "a chmod spec such as Dg+s,ug+w,Fo-w or F644",
            ValueRule::Names => "user or group names or ids, such as backup:backup or *:1000",
            ValueRule::Words => "letters, digits, '-' and ',' only, such as progress2,stats2",
            ValueRule::Suffix => "a suffix without '/'",
        }
    }
}

/// Long options allowed as flags (no value).
const FLAGS: &[&str] = &[
    "archive",
    "recursive",
    "dirs",
    "links",
    "perms",
    "executability",
    "acls",
    "xattrs",
    "owner",
    "group",
    "devices",
    "specials",
    "times",
    "omit-dir-times",
    "omit-link-times",
    "hard-links",
    "sparse",
    "partial",
    "inplace",
    "append-verify",
    "checksum",
    "compress",
    "numeric-ids",
    "one-file-system",
    "itemize-changes",
    "dry-run",
    "verbose",
    "quiet",
    "stats",
    "delete",
    "del",
    "delete-before",
    "delete-during",
    "delete-delay",
    "delete-after",
    "delete-excluded",
    "delay-updates",
    "backup",
    "update",
    "existing",
    "ignore-existing",
    "ignore-times",
    "size-only",
    "whole-file",
    "prune-empty-dirs",
    "safe-links",
    "munge-links",
    "force",
    "ignore-errors",
    "fuzzy",
    "ipv4",
    "ipv6",
    "no-motd",
];

/// Long options allowed with a value, and the rule for the value.
const VALUED: &[(&str, ValueRule)] = &[
    ("exclude", ValueRule::Pattern),
    ("include", ValueRule::Pattern),
    ("bwlimit", ValueRule::Size),
    ("max-size", ValueRule::Size),
    ("min-size", ValueRule::Size),
    ("compress-level", ValueRule::Number),
    ("timeout", ValueRule::Number),
    ("contimeout", ValueRule::Number),
    ("max-delete", ValueRule::Number),
    ("modify-window", ValueRule::Number),
    ("chmod", ValueRule::Chmod),
    ("chown", ValueRule::Names),
    ("usermap", ValueRule::Names),
    ("groupmap", ValueRule::Names),
    ("info", ValueRule::Words),
    ("compress-choice", ValueRule::Words),
    ("checksum-choice", ValueRule::Words),
    ("suffix", ValueRule::Suffix),
];

/// Short flags allowed, in bundles or alone.
const SHORT_FLAGS: &str = "ardlpEAXogDtOJHSczxinvqbuIWmy46";

/// Why an option is refused whatever its value.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    RunsProgram,
    NamesFile,
    FollowsLinks,
}

/// Long options refused outright.
const REFUSED: &[(&str, Refusal)] = &[
    ("rsh", Refusal::RunsProgram),
    ("rsync-path", Refusal::RunsProgram),
    ("remote-option", Refusal::RunsProgram),
    ("server", Refusal::RunsProgram),
    ("sender", Refusal::RunsProgram),
    ("daemon", Refusal::RunsProgram),
    ("address", Refusal::RunsProgram),
    ("port", Refusal::RunsProgram),
    ("sockopts", Refusal::RunsProgram),
    ("copy-as", Refusal::RunsProgram),
    ("dparam", Refusal::RunsProgram),
    ("log-file", Refusal::NamesFile),
    ("files-from", Refusal::NamesFile),
    ("link-dest", Refusal::NamesFile),
    ("compare-dest", Refusal::NamesFile),
    ("copy-dest", Refusal::NamesFile),
    ("backup-dir", Refusal::NamesFile),
    ("temp-dir", Refusal::NamesFile),
    ("partial-dir", Refusal::NamesFile),
    ("config", Refusal::NamesFile),
    ("password-file", Refusal::NamesFile),
    ("exclude-from", Refusal::NamesFile),
    ("include-from", Refusal::NamesFile),
    ("filter", Refusal::NamesFile),
    ("write-batch", Refusal::NamesFile),
    ("read-batch", Refusal::NamesFile),
    ("only-write-batch", Refusal::NamesFile),
    ("early-input", Refusal::NamesFile),
    ("copy-links", Refusal::FollowsLinks),
    ("copy-unsafe-links", Refusal::FollowsLinks),
    ("copy-dirlinks", Refusal::FollowsLinks),
    ("keep-dirlinks", Refusal::FollowsLinks),
];

/// Short options refused outright, with their long names for the message.
const REFUSED_SHORT: &[(char, &str, Refusal)] = &[
    ('e', "rsh", Refusal::RunsProgram),
    ('M', "remote-option", Refusal::RunsProgram),
    ('f', "filter", Refusal::NamesFile),
    ('T', "temp-dir", Refusal::NamesFile),
    ('L', "copy-links", Refusal::FollowsLinks),
    ('k', "copy-dirlinks", Refusal::FollowsLinks),
    ('K', "keep-dirlinks", Refusal::FollowsLinks),
];

/// Short options that take a value and have no other objection: their
/// long form is the way to give them.
const SHORT_WITH_VALUE: &[(char, &str)] = &[('@', "--modify-window"), ('B', "--block-size")];

fn refuse(why: Refusal, word: &str, option: String) -> AuxError {
    let word = word.to_owned();
    match why {
        Refusal::RunsProgram => AuxError::RunsProgram { word, option },
        Refusal::NamesFile => AuxError::NamesFile { word, option },
        Refusal::FollowsLinks => AuxError::FollowsLinks { word, option },
    }
}

/// Checks every auxiliary parameter against the allow-list (see the module
/// documentation); the first refused word is reported.
pub fn check_auxiliary(words: &[String]) -> Result<(), AuxError> {
    words.iter().try_for_each(|word| check_word(word))
}

fn check_word(word: &str) -> Result<(), AuxError> {
    if word.is_empty() || word.contains(['\0', '\n', '\r']) {
        return Err(AuxError::NotOneWord {
            word: word.to_owned(),
        });
    }
    if let Some(long) = word.strip_prefix("--") {
        if long.is_empty() {
            return Err(AuxError::NotAnOption {
                word: word.to_owned(),
            });
        }
        return check_long(word, long);
    }
    match word.strip_prefix('-') {
        Some(bundle) if !bundle.is_empty() => check_bundle(word, bundle),
        _ => Err(AuxError::NotAnOption {
            word: word.to_owned(),
        }),
    }
}

/// `--name` or `--name=value` (`long` is the word without its `--`).
fn check_long(word: &str, long: &str) -> Result<(), AuxError> {
    let (name, value) = match long.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (long, None),
    };
    let option = format!("--{name}");
    if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == name) {
        return Err(refuse(*why, word, option));
    }
    let negated_flag = name.strip_prefix("no-").is_some_and(|flag| {
        FLAGS.contains(&flag) || (flag.chars().count() == 1 && SHORT_FLAGS.contains(flag))
    });
    if FLAGS.contains(&name) || negated_flag {
        return match value {
            None => Ok(()),
            Some(_) => Err(AuxError::TakesNoValue {
                word: word.to_owned(),
                option,
            }),
        };
    }
    let Some((_, rule)) = VALUED.iter().find(|(n, _)| *n == name) else {
        return Err(AuxError::NotAllowed {
            word: word.to_owned(),
            option,
        });
    };
    match value {
        None => Err(AuxError::NeedsValue {
            word: word.to_owned(),
            option,
        }),
        Some(value) if rule.accepts(value) => Ok(()),
        Some(_) => Err(AuxError::BadValue {
            word: word.to_owned(),
            option,
            rule: rule.describe(),
        }),
    }
}

/// `-abc`: each letter on its own, as rsync reads a bundle.
fn check_bundle(word: &str, bundle: &str) -> Result<(), AuxError> {
    for letter in bundle.chars() {
        if SHORT_FLAGS.contains(letter) {
            continue;
        }
        if let Some((_, long, why)) = REFUSED_SHORT.iter().find(|(c, _, _)| *c == letter) {
            return Err(refuse(*why, word, format!("-{letter} (--{long})")));
        }
        if let Some((_, long)) = SHORT_WITH_VALUE.iter().find(|(c, _)| *c == letter) {
            return Err(AuxError::ShortWithValue {
                word: word.to_owned(),
                option: format!("-{letter}"),
                long,
            });
        }
        return Err(AuxError::NotAllowed {
            word: word.to_owned(),
            option: format!("-{letter}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(word: &str) -> Result<(), AuxError> {
        check_auxiliary(&[word.to_owned()])
    }

    fn refused(word: &str) -> String {
        match check(word) {
            Ok(()) => panic!("{word:?} was allowed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_options_a_backup_needs_are_allowed() {
        for word in [
            "--exclude=*.tmp",
            "--exclude=- has spaces/and slashes/**",
            "--include=*/",
            "--bwlimit=10M",
            "--bwlimit=1.5m",
            "--bwlimit=100",
            "--chmod=Dg+s,ug+w,Fo-w,+X",
            "--chmod=F644",
            "--chown=backup:backup",
            "--usermap=*:1000",
            "--groupmap=0:wheel",
            "--numeric-ids",
            "-H",
            "--hard-links",
            "-A",
            "--acls",
            "-X",
            "--xattrs",
            "-S",
            "--sparse",
            "--partial",
            "--inplace",
            "--append-verify",
            "-c",
            "--checksum",
            "--info=progress2,stats2",
            "-z",
            "--compress-level=9",
            "--timeout=600",
            "--contimeout=30",
            "--max-size=2G",
            "--min-size=1",
            "--delete-excluded",
            "--delete-after",
            "--delete-delay",
            "--backup",
            "--suffix=.bak",
            "--suffix=~",
            "-v",
            "-q",
            "--stats",
            "-a",
            "-avz",
            "-rlptgoD",
            "-x",
            "--one-file-system",
            "-i",
            "--itemize-changes",
            "-n",
            "--dry-run",
            "--modify-window=-1",
            "--no-perms",
            "--no-p",
            "--no-motd",
            "-4",
        ] {
            assert_eq!(check(word), Ok(()), "{word}");
        }
        assert!(check_auxiliary(&[]).is_ok());
    }

    #[test]
    fn the_reproduced_attacks_are_refused_naming_option_and_rule() {
        let e = refused("-ave/some/script.sh");
        assert!(
            e.starts_with(
                "auxiliary: '-ave/some/script.sh': -e (--rsh) is refused: it chooses the program"
            ),
            "{e}"
        );
        let e = refused("-M--rsync-path=/tmp/evil");
        assert!(
            e.contains("-M (--remote-option) is refused: it chooses the program"),
            "{e}"
        );
        let e = refused("--remote-option=--rsync-path=/tmp/evil");
        assert!(
            e.contains("--remote-option is refused: it chooses the program"),
            "{e}"
        );
        let e = refused("--log-file=/etc/cron.d/x");
        assert!(
            e.contains("--log-file is refused: its value names a file"),
            "{e}"
        );
        let e = refused("--files-from=/etc/hostname");
        assert!(
            e.contains("--files-from is refused: its value names a file"),
            "{e}"
        );
        let e = refused("--link-dest=/etc");
        assert!(
            e.contains("--link-dest is refused: its value names a file"),
            "{e}"
        );
        let e = refused("--config=/tmp/rsyncd.conf");
        assert!(
            e.contains("--config is refused: its value names a file"),
            "{e}"
        );
        let e = refused("--server");
        assert!(
            e.contains("--server is refused: it chooses the program"),
            "{e}"
        );
        for e in [
            refused("-ave/some/script.sh"),
            refused("--server"),
            refused("--files-from=/etc/hostname"),
        ] {
            assert!(e.starts_with("auxiliary: "), "{e}");
        }
    }

    #[test]
    fn programs_files_and_links_are_refused_in_every_spelling() {
        for word in [
            "-e",
            "-essh evil",
            "--rsh=sh",
            "--rsync-path=sh",
            "--rsync-path",
            "--sender",
            "--daemon",
            "--address=0.0.0.0",
            "--port=1",
            "--sockopts=x",
            "--copy-as=root",
            "-vM",
        ] {
            assert!(refused(word).contains("chooses the program"), "{word}");
        }
        for word in [
            "--compare-dest=/etc",
            "--copy-dest=/etc",
            "--backup-dir=/etc",
            "--temp-dir=/tmp",
            "-T/tmp",
            "--partial-dir=/etc",
            "--password-file=/etc/shadow",
            "--exclude-from=/etc/shadow",
            "--include-from=/etc/shadow",
            "--filter=merge /etc/shadow",
            "-f. /etc/shadow",
            "--write-batch=/etc/x",
            "--read-batch=/etc/x",
            "--only-write-batch=/etc/x",
            "--early-input=/etc/shadow",
        ] {
            assert!(refused(word).contains("names a file"), "{word}");
        }
        for word in [
            "-L",
            "-aL",
            "--copy-links",
            "--copy-unsafe-links",
            "-k",
            "-K",
            "--keep-dirlinks",
        ] {
            assert!(refused(word).contains("follows symbolic links"), "{word}");
        }
    }

    #[test]
    fn words_that_are_not_options_are_refused() {
        for word in [
            "/etc/shadow",
            "$(touch /tmp/x)",
            "; rm -rf /",
            "-",
            "--",
            "rsync://h/m",
        ] {
            assert!(refused(word).contains("is not an rsync option"), "{word}");
        }
        for word in ["", "--a\n--b", "-a\r", "x\0"] {
            assert!(
                refused(word).contains("is not a single rsync parameter"),
                "{word:?}"
            );
        }
    }

    #[test]
    fn values_go_in_the_same_word_and_follow_their_rule() {
        let e = refused("--exclude");
        assert!(e.contains("write --exclude=VALUE in one parameter"), "{e}");
        let e = refused("--exclude=");
        assert!(e.contains("must be a non-empty pattern"), "{e}");
        let e = refused("--suffix=/../../etc/x");
        assert!(
            e.contains("the value of --suffix must be a suffix without '/'"),
            "{e}"
        );
        let e = refused("--bwlimit=fast");
        assert!(e.contains("must be a size"), "{e}");
        let e = refused("--chown=../../x");
        assert!(e.contains("--chown must be user or group names"), "{e}");
        let e = refused("--archive=yes");
        assert!(e.contains("--archive takes no value"), "{e}");
        let e = refused("-a@1");
        assert!(
            e.contains("-@ takes a value") && e.contains("--modify-window=VALUE"),
            "{e}"
        );
    }

    #[test]
    fn unknown_options_and_letters_are_refused() {
        for (word, option) in [
            ("--remove-source-files", "--remove-source-files"),
            ("--arch", "--arch"),
            ("-h", "-h"),
            ("-P", "-P"),
            ("--progress", "--progress"),
            ("-av=x", "-="),
            ("--no-copy-links", "--no-copy-links"),
        ] {
            let e = refused(word);
            assert!(
                e.contains(&format!(
                    "{option} is not among the rsync options nasfleet allows"
                )),
                "{word}: {e}"
            );
        }
    }

    #[test]
    fn a_hostile_word_is_echoed_at_most_in_part() {
        let long = format!("--{}", "x".repeat(1_000_000));
        let e = refused(&long);
        assert!(e.len() < 400, "{} characters", e.len());
        assert!(e.contains("more characters)"), "{e}");
    }
}
