//! Quoting for the remote side of ssh, which is a shell: every remote word quoted so dataset names and paths stay data.

/// Bytes that mean nothing special to sh, bash or zsh in any position.
fn is_bare_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_./:@%+=,-".contains(&b)
}

/// `NAME=...` as a command's first word is a variable assignment, not a
/// command, so such words are quoted wherever they appear.
fn looks_like_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// Quotes one word for the remote side of ssh, which hands the command line
/// to the user's login shell (POSIX sh, bash or zsh; csh cannot take a
/// newline inside quotes).
///
/// Words made only of `[A-Za-z0-9_./:@%+=,-]` stay bare, so command lines
/// read like what a person would type; a leading `-` is fine bare (it is
/// the program that interprets it, not the shell). Everything else is
/// wrapped in single quotes, inside which no character is special, with
/// each `'` written as `'\''`. A leading `=` (zsh's `=cmd` expansion) and
/// `NAME=value` (an assignment in command position) are quoted too. The
/// empty word becomes `''`.
pub fn shell_quote(word: &str) -> String {
    let bare = !word.is_empty()
        && word.bytes().all(is_bare_byte)
        && !word.starts_with('=')
        && !looks_like_assignment(word);
    if bare {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str(r"'\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The remote command line: every word quoted with [`shell_quote`], joined
/// by single spaces.
pub fn remote_command<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn hostile_words(dir: &Path) -> Vec<String> {
        let d = dir.display();
        vec![
            format!("$(touch {d}/pwned1)"),
            format!("`touch {d}/pwned2`"),
            format!("; touch {d}/pwned3"),
            format!("a'b'; touch {d}/pwned4; echo '"),
            format!("x\ntouch {d}/pwned5"),
            "; rm -rf /".to_owned(),
            "a'b".to_owned(),
            "'".to_owned(),
            "''".to_owned(),
            "\\'".to_owned(),
            "two words".to_owned(),
            "  lead and trail  ".to_owned(),
            "tab\there".to_owned(),
            "new\nline".to_owned(),
            String::new(),
            "-rf".to_owned(),
            "--".to_owned(),
            "$HOME".to_owned(),
            "${HOME}".to_owned(),
            "*".to_owned(),
            "~".to_owned(),
            "~root".to_owned(),
            "a=b".to_owned(),
            "=ls".to_owned(),
            "!!".to_owned(),
            "#comment".to_owned(),
            "a&b|c>d<e".to_owned(),
            "\"double\"".to_owned(),
            "back\\slash".to_owned(),
            "tank/a b@auto-2024-01-01_00-00".to_owned(),
            "ünïcødé".to_owned(),
        ]
    }

    /// Runs `printf '%s\0' COMMAND_LINE` in `shell` and splits the output.
    fn echo_through(shell: &str, command_line: &str) -> Vec<String> {
        let out = std::process::Command::new(shell)
            .arg("-c")
            .arg(format!("printf '%s\\0' {command_line}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut words: Vec<String> = text.split('\0').map(str::to_owned).collect();
        assert_eq!(words.pop().as_deref(), Some(""));
        words
    }

    fn shells() -> Vec<&'static str> {
        ["sh", "bash", "dash", "zsh"]
            .into_iter()
            .filter(|s| {
                std::process::Command::new(s)
                    .args(["-c", "true"])
                    .status()
                    .is_ok_and(|st| st.success())
            })
            .collect()
    }

    #[test]
    fn quoted_words_come_back_byte_identical_and_run_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let words = hostile_words(dir.path());
        let shells = shells();
        assert!(shells.contains(&"sh"));
        for shell in &shells {
            for word in &words {
                assert_eq!(
                    echo_through(shell, &shell_quote(word)),
                    std::slice::from_ref(word),
                    "{shell}: {word:?} quoted as {}",
                    shell_quote(word)
                );
            }
            assert_eq!(
                echo_through(shell, &remote_command(&words)),
                words,
                "{shell}"
            );
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "a quoted word was executed: {left:?}");
    }

    #[test]
    fn quoting_is_readable_where_safe() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("-rf"), "-rf");
        assert_eq!(shell_quote("$(touch /tmp/pwned)"), "'$(touch /tmp/pwned)'");
        assert_eq!(shell_quote("; rm -rf /"), "'; rm -rf /'");
        assert_eq!(
            shell_quote("tank/a@auto-2024-01-01_00-00"),
            "tank/a@auto-2024-01-01_00-00"
        );
        assert_eq!(shell_quote("mountpoint=none"), "'mountpoint=none'");
        assert_eq!(shell_quote("=ls"), "'=ls'");
        assert_eq!(shell_quote("-o"), "-o");
        assert_eq!(shell_quote("a,b:c%d+e"), "a,b:c%d+e");
        assert_eq!(
            remote_command(&["zfs", "recv", "-F", "back up/nas1"]),
            "zfs recv -F 'back up/nas1'"
        );
    }
}
