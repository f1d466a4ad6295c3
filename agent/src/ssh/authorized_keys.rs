//! The target side: authorizing a source's replication key in a user's `~/.ssh/authorized_keys`, and revoking it again, as root in a directory the user controls (`openat`, `O_NOFOLLOW`, `flock`, never a link followed).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nasfleet_common::names::validate_system_name;

use super::argv::validate_user;
use super::error::{SshError, io_error};
use super::keys::{KeyLine, parse_replication_key};
use crate::host::files::FileError;
use crate::host::nofollow::{is_link_or_not_dir, open_at};
use crate::host::passwd::{Account, lookup_user};

/// Largest authorized_keys file read; a real one is a few KiB, anything far
/// larger is not worth loading into memory as root.
const MAX_AUTHORIZED_KEYS: u64 = 16 * 1024 * 1024;

/// What [`authorize_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizeOutcome {
    Added,
    /// The key was there with other options (e.g. from before the gate);
    /// its lines were replaced by the one asked for.
    Replaced,
    /// The key (same type and data) was already there; nothing was written.
    AlreadyPresent,
}

/// Homes that mean "this user has none": sshd would look for keys there in
/// vain (or, for `/`, in the root of the system).
const NOT_A_HOME: &[&str] = &["/", "/var/empty", "/nonexistent", "/dev/null"];

/// Refuses homes that cannot hold `~/.ssh/authorized_keys`.
fn check_home(user: &str, home: &Path) -> Result<(), SshError> {
    let text = home.to_string_lossy();
    let trimmed = match text.trim_end_matches('/') {
        "" => "/",
        t => t,
    };
    let usable = home.is_absolute() && !NOT_A_HOME.contains(&trimmed);
    if usable {
        Ok(())
    } else {
        Err(SshError::NoHome {
            user: user.to_owned(),
            home: if text.is_empty() {
                "none set".to_owned()
            } else {
                text.into_owned()
            },
        })
    }
}

/// Authorizes `public_key` (one `ssh-ed25519 BASE64[ comment]` line) to log
/// in as `user`, for replication from `source_system`.
///
/// The user comes from the passwd database (NSS, so directory users count
/// too) and must have a real home directory. `~/.ssh` (0700) and
/// `authorized_keys` (0600) are created owned by the user when missing; the
/// key is appended as `ssh-ed25519 BASE64 nasfleet-replication from
/// SOURCE` unless the same type and data are already there. Other lines
/// are never touched.
pub async fn authorize_key(
    user: &str,
    public_key: &str,
    source_system: &str,
    options: Option<&str>,
) -> Result<AuthorizeOutcome, SshError> {
    validate_user(user)?;
    validate_system_name(source_system)?;
    // Refuse a bad key before touching anything of the user's.
    parse_replication_key(public_key)?;
    let account = find_account(user).await?;
    check_home(user, &account.home)?;
    match tokio::fs::metadata(&account.home).await {
        Ok(meta) if meta.is_dir() => {}
        _ => {
            return Err(SshError::NoHome {
                user: user.to_owned(),
                home: format!("{}, which does not exist", account.home.display()),
            });
        }
    }
    authorize_in_home(
        &account.home,
        account.uid,
        account.gid,
        public_key,
        source_system,
        options,
    )
    .await
}

/// The file work of [`authorize_key`] for a known home directory and owner.
///
/// This runs as root in a directory the user controls, so it never follows
/// a symbolic link below `home`: `.ssh` and `authorized_keys` are opened
/// relative to the directory already opened (`openat`, `O_NOFOLLOW`), a
/// non-regular or multiply linked `authorized_keys` is refused, and an
/// exclusive lock keeps two concurrent authorizations from both appending.
pub async fn authorize_in_home(
    home: &Path,
    uid: u32,
    gid: u32,
    public_key: &str,
    source_system: &str,
    options: Option<&str>,
) -> Result<AuthorizeOutcome, SshError> {
    validate_system_name(source_system)?;
    let key = parse_replication_key(public_key)?;
    let prefix = options.map(|o| format!("{o} ")).unwrap_or_default();
    let line = format!(
        "{prefix}{} nasfleet-replication from {source_system}\n",
        key.joined()
    );
    let home = home.to_owned();
    tokio::task::spawn_blocking(move || {
        match append_authorized_key(&home, uid, gid, &key, &line)? {
            // Another line carries the key (without the gate, say): it
            // goes, then ours is added. Two locked steps; in between the
            // key logs in nowhere, which fails safe.
            AuthorizeOutcome::Replaced => {
                remove_authorized_key(&home, &key)?;
                append_authorized_key(&home, uid, gid, &key, &line)?;
                Ok(AuthorizeOutcome::Replaced)
            }
            outcome => Ok(outcome),
        }
    })
    .await?
}

/// Maps an `openat(..., O_NOFOLLOW)` failure: a symbolic link (`ELOOP`) or
/// a non-directory in the way (`ENOTDIR`) is refused as unsafe, anything
/// else is an I/O error.
fn not_followed(path: &Path, reason: &'static str) -> impl FnOnce(io::Error) -> SshError {
    let path = path.to_owned();
    move |err: io::Error| {
        if is_link_or_not_dir(&err) {
            SshError::Unsafe { path, reason }
        } else {
            SshError::File(FileError {
                action: "open",
                path,
                source: err,
            })
        }
    }
}

/// Refuses an opened authorized_keys that root should not write through:
/// anything but a regular file, or a file with other hard links.
fn check_keys_file(file: &File, keys_path: &Path) -> Result<(), SshError> {
    let meta = file.metadata().map_err(io_error("inspect", keys_path))?;
    if !meta.is_file() {
        return Err(SshError::Unsafe {
            path: keys_path.to_owned(),
            reason: "it is not a regular file",
        });
    }
    // A hard link could point a root-owned write at some other file.
    if meta.nlink() > 1 {
        return Err(SshError::Unsafe {
            path: keys_path.to_owned(),
            reason: "it has other hard links",
        });
    }
    Ok(())
}

/// Takes the exclusive lock that serializes nasfleet's changes to one
/// authorized_keys file; it is released when `file` is closed.
fn lock_keys_file(file: &File, keys_path: &Path) -> Result<(), SshError> {
    // SAFETY: flock(2) on a descriptor we hold open; released on close.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_error("lock", keys_path)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Reads the rest of an authorized_keys file, refusing one over 16 MiB.
fn read_keys_file(file: &mut File, keys_path: &Path) -> Result<Vec<u8>, SshError> {
    let mut content = Vec::new();
    file.take(MAX_AUTHORIZED_KEYS + 1)
        .read_to_end(&mut content)
        .map_err(io_error("read", keys_path))?;
    if content.len() as u64 > MAX_AUTHORIZED_KEYS {
        return Err(SshError::Unsafe {
            path: keys_path.to_owned(),
            reason: "it is larger than 16 MiB",
        });
    }
    Ok(content)
}

fn append_authorized_key(
    home: &Path,
    uid: u32,
    gid: u32,
    key: &KeyLine,
    line: &str,
) -> Result<AuthorizeOutcome, SshError> {
    let ssh_dir = home.join(".ssh");
    let keys_path = ssh_dir.join("authorized_keys");

    // The home itself may be a symbolic link (e.g. /home -> /mnt/tank/home):
    // it comes from the passwd database, not from the user.
    let home_dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(home)
        .map_err(io_error("open home directory", home))?;

    let ssh_name = c".ssh";
    // SAFETY: `ssh_name` is NUL-terminated; `home_dir` is open.
    let rc = unsafe { libc::mkdirat(home_dir.as_raw_fd(), ssh_name.as_ptr(), 0o700) };
    let created_dir = if rc == 0 {
        true
    } else {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::AlreadyExists {
            return Err(io_error("create", &ssh_dir)(err));
        }
        false
    };
    let dir = open_at(&home_dir, ssh_name, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(
        not_followed(&ssh_dir, "it is a symbolic link or not a directory"),
    )?;
    if created_dir {
        dir.set_permissions(std::fs::Permissions::from_mode(0o700))
            .map_err(io_error("set permissions of", &ssh_dir))?;
        std::os::unix::fs::fchown(&dir, Some(uid), Some(gid))
            .map_err(io_error("change owner of", &ssh_dir))?;
    }

    // O_NONBLOCK: opening a FIFO planted there must not hang (it is then
    // refused as not a regular file); it changes nothing for a plain file.
    let keys_name = c"authorized_keys";
    let flags = libc::O_RDWR | libc::O_APPEND | libc::O_NONBLOCK;
    let (mut file, created_file) =
        match open_at(&dir, keys_name, flags | libc::O_CREAT | libc::O_EXCL, 0o600) {
            Ok(file) => (file, true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let file = open_at(&dir, keys_name, flags, 0)
                    .map_err(not_followed(&keys_path, "it is a symbolic link"))?;
                (file, false)
            }
            Err(err) => {
                return Err(not_followed(&keys_path, "it is a symbolic link")(err));
            }
        };
    check_keys_file(&file, &keys_path)?;
    if created_file {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_error("set permissions of", &keys_path))?;
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .map_err(io_error("change owner of", &keys_path))?;
    }

    lock_keys_file(&file, &keys_path)?;
    let content = read_keys_file(&mut file, &keys_path)?;
    if has_key(&content, key) {
        let wanted = line.trim_end().as_bytes();
        let exact = content
            .split(|b| *b == b'\n')
            .any(|l| l.strip_suffix(b"\r").unwrap_or(l) == wanted);
        return Ok(if exact {
            AuthorizeOutcome::AlreadyPresent
        } else {
            AuthorizeOutcome::Replaced
        });
    }
    let mut addition = String::new();
    // A last line without its newline would otherwise run into ours.
    if content.last().is_some_and(|b| *b != b'\n') {
        addition.push('\n');
    }
    addition.push_str(line);
    file.write_all(addition.as_bytes())
        .map_err(io_error("write", &keys_path))?;
    file.sync_all().map_err(io_error("write", &keys_path))?;
    Ok(AuthorizeOutcome::Added)
}

/// Whether an authorized_keys text already holds `key` (same type and
/// data), with or without options or a comment. Commented-out lines do not
/// count.
fn has_key(content: &[u8], key: &KeyLine) -> bool {
    content
        .split(|b| *b == b'\n')
        .any(|line| line_has_key(line, key))
}

/// Splits one authorized_keys line into words at ASCII whitespace outside
/// double quotes, the way sshd reads an options field: `\"` does not end a
/// quoted string. So `command="echo ssh-ed25519 AAAA..."` is one word.
fn authorized_keys_words(line: &[u8]) -> Vec<&[u8]> {
    let mut words = Vec::new();
    let mut start = None;
    let mut quoted = false;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if !quoted && b.is_ascii_whitespace() {
            if let Some(s) = start.take() {
                words.push(&line[s..i]);
            }
        } else {
            start.get_or_insert(i);
            if b == b'\\' && line.get(i + 1) == Some(&b'"') {
                i += 1;
            } else if b == b'"' {
                quoted = !quoted;
            }
        }
        i += 1;
    }
    if let Some(s) = start {
        words.push(&line[s..]);
    }
    words
}

/// Whether one authorized_keys line (without its `\n`) carries `key`: the
/// words `TYPE BASE64` next to each other anywhere outside quotes, so with
/// or without options before the key and whatever the comment. Blank and
/// commented-out lines never do. Bytes that are not UTF-8 simply do not
/// match.
fn line_has_key(line: &[u8], key: &KeyLine) -> bool {
    let first = line.iter().position(|b| !b.is_ascii_whitespace());
    match first.map(|i| line[i]) {
        None | Some(b'#') => return false,
        Some(_) => {}
    }
    authorized_keys_words(line)
        .windows(2)
        .any(|pair| pair[0] == key.kind.as_bytes() && pair[1] == key.data.as_bytes())
}

/// What [`revoke_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// This many lines carrying the key were removed.
    Removed(usize),
    /// No line carries the key (or there is no `~/.ssh/authorized_keys` at
    /// all); nothing was written.
    NotPresent,
}

/// Revokes `public_key` (one `ssh-ed25519 BASE64[ comment]` line) for
/// `user`: the inverse of [`authorize_key`], used when an SSH connection is
/// deleted.
///
/// Every line of `~user/.ssh/authorized_keys` carrying the same key type
/// and data is removed, whatever its comment and options; all other lines
/// are kept byte for byte. A user whose home is missing or not a real home
/// (`/nonexistent`, ...), or who has no `.ssh` directory or no
/// `authorized_keys`, has nothing to revoke: [`RevokeOutcome::NotPresent`].
/// A user the passwd database does not know is [`SshError::UnknownUser`],
/// so a mistyped name is not taken for success; a caller deleting a
/// connection whose user is gone may treat it as nothing to revoke.
pub async fn revoke_key(user: &str, public_key: &str) -> Result<RevokeOutcome, SshError> {
    validate_user(user)?;
    // Refuse a bad key before touching anything of the user's.
    parse_replication_key(public_key)?;
    let account = find_account(user).await?;
    if let Err(err) = check_home(user, &account.home) {
        // authorize_key never writes there, so there is nothing of ours.
        tracing::debug!(%err, "no authorized_keys to revoke from");
        return Ok(RevokeOutcome::NotPresent);
    }
    revoke_in_home(&account.home, public_key).await
}

/// The file work of [`revoke_key`] for a known home directory.
///
/// As root in a directory the user controls, with the same care as
/// [`authorize_in_home`]: `.ssh` and `authorized_keys` are opened with
/// `openat` and `O_NOFOLLOW`, a non-regular or multiply linked
/// `authorized_keys` is refused, and the same exclusive lock is held from
/// reading to rewriting. The file is rewritten in place through the
/// descriptor that was checked (never replaced by a file renamed into a
/// directory the user controls), so its owner, mode and inode stay; it is
/// only written when a line is removed. A missing home, `.ssh` or
/// `authorized_keys` is [`RevokeOutcome::NotPresent`].
pub async fn revoke_in_home(home: &Path, public_key: &str) -> Result<RevokeOutcome, SshError> {
    let key = parse_replication_key(public_key)?;
    let home = home.to_owned();
    tokio::task::spawn_blocking(move || remove_authorized_key(&home, &key)).await?
}

/// `content` without the lines that carry `key`, and how many those were.
/// Every other byte, line ending (`\n`, `\r\n`) and a missing final newline
/// are kept as they are.
fn without_key(content: &[u8], key: &KeyLine) -> (Vec<u8>, usize) {
    let mut kept = Vec::with_capacity(content.len());
    let mut removed = 0;
    for line in content.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if line_has_key(body, key) {
            removed += 1;
        } else {
            kept.extend_from_slice(line);
        }
    }
    (kept, removed)
}

fn remove_authorized_key(home: &Path, key: &KeyLine) -> Result<RevokeOutcome, SshError> {
    let ssh_dir = home.join(".ssh");
    let keys_path = ssh_dir.join("authorized_keys");
    let not_found = |err: &io::Error| err.kind() == io::ErrorKind::NotFound;

    // The home itself may be a symbolic link: it comes from the passwd
    // database, not from the user.
    let home_dir = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(home)
    {
        Ok(dir) => dir,
        Err(err) if not_found(&err) => return Ok(RevokeOutcome::NotPresent),
        Err(err) => return Err(io_error("open home directory", home)(err)),
    };
    let dir = match open_at(&home_dir, c".ssh", libc::O_RDONLY | libc::O_DIRECTORY, 0) {
        Ok(dir) => dir,
        Err(err) if not_found(&err) => return Ok(RevokeOutcome::NotPresent),
        Err(err) => {
            return Err(not_followed(
                &ssh_dir,
                "it is a symbolic link or not a directory",
            )(err));
        }
    };

    // No O_APPEND: the rewrite writes at offset 0. O_NONBLOCK: a FIFO
    // planted there must not hang (it is then refused as not a regular
    // file). A file root may not write (read-only file system, immutable)
    // is still read, so that a key that is not there is not an error.
    let keys_name = c"authorized_keys";
    let (mut file, write_error) = match open_at(&dir, keys_name, libc::O_RDWR | libc::O_NONBLOCK, 0)
    {
        Ok(file) => (file, None),
        Err(err) if not_found(&err) => return Ok(RevokeOutcome::NotPresent),
        Err(err) if err.raw_os_error() == Some(libc::EISDIR) => {
            return Err(SshError::Unsafe {
                path: keys_path,
                reason: "it is not a regular file",
            });
        }
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS)
            ) =>
        {
            let file = open_at(&dir, keys_name, libc::O_RDONLY | libc::O_NONBLOCK, 0)
                .map_err(not_followed(&keys_path, "it is a symbolic link"))?;
            (file, Some(err))
        }
        Err(err) => return Err(not_followed(&keys_path, "it is a symbolic link")(err)),
    };
    check_keys_file(&file, &keys_path)?;
    lock_keys_file(&file, &keys_path)?;
    let content = read_keys_file(&mut file, &keys_path)?;
    let (kept, removed) = without_key(&content, key);
    if removed == 0 {
        return Ok(RevokeOutcome::NotPresent);
    }
    if let Some(err) = write_error {
        return Err(io_error("open for writing", &keys_path)(err));
    }
    // The new content (never longer than the old) is written over the old
    // from offset 0 and the file then cut to its length, rather than
    // emptied first: sshd, which takes no lock, never finds the file empty
    // (every other key missing) in between.
    file.write_all_at(&kept, 0)
        .map_err(io_error("write", &keys_path))?;
    file.set_len(kept.len() as u64)
        .map_err(io_error("truncate", &keys_path))?;
    file.sync_all().map_err(io_error("write", &keys_path))?;
    Ok(RevokeOutcome::Removed(removed))
}

/// [`lookup_user`] on a blocking thread; an unknown user is an error.
async fn find_account(user: &str) -> Result<Account, SshError> {
    let name = user.to_owned();
    tokio::task::spawn_blocking(move || lookup_user(&name))
        .await?
        .map_err(|source| SshError::UserLookup {
            user: user.to_owned(),
            source,
        })?
        .ok_or_else(|| SshError::UnknownUser {
            user: user.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::fixtures::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use std::path::PathBuf;

    #[tokio::test]
    async fn authorize_in_home_creates_and_is_idempotent() {
        let home = tempfile::tempdir().unwrap();
        let (uid, gid) = owner_of(home.path());
        let outcome = authorize_in_home(home.path(), uid, gid, KEY, "nas1", None)
            .await
            .unwrap();
        assert_eq!(outcome, AuthorizeOutcome::Added);
        let ssh_dir = home.path().join(".ssh");
        let keys = ssh_dir.join("authorized_keys");
        assert_eq!(mode_of(&ssh_dir), 0o700);
        assert_eq!(mode_of(&keys), 0o600);
        assert_eq!(owner_of(&keys), (uid, gid));
        let expected = format!("{KEY_NO_COMMENT} nasfleet-replication from nas1\n");
        assert_eq!(std::fs::read_to_string(&keys).unwrap(), expected);

        // The same line again: no change.
        let outcome = authorize_in_home(home.path(), uid, gid, KEY, "nas1", None)
            .await
            .unwrap();
        assert_eq!(outcome, AuthorizeOutcome::AlreadyPresent);
        assert_eq!(std::fs::read_to_string(&keys).unwrap(), expected);
        // The same key for another source: its one line now says so.
        let outcome = authorize_in_home(home.path(), uid, gid, KEY_NO_COMMENT, "nas3", None)
            .await
            .unwrap();
        assert_eq!(outcome, AuthorizeOutcome::Replaced);
        assert_eq!(
            std::fs::read_to_string(&keys).unwrap(),
            format!("{KEY_NO_COMMENT} nasfleet-replication from nas3\n")
        );
    }

    #[tokio::test]
    async fn authorize_in_home_keeps_other_lines() {
        let home = tempfile::tempdir().unwrap();
        let (uid, gid) = owner_of(home.path());
        let ssh_dir = home.path().join(".ssh");
        std::fs::create_dir(&ssh_dir).unwrap();
        std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        let keys = ssh_dir.join("authorized_keys");
        // The key commented out does not count; the last line lacks its newline.
        let before = format!(
            "# admin keys\n{ECDSA} admin@laptop\n# {KEY_NO_COMMENT} old\nfrom=\"10.0.0.1\" ssh-rsa AAAAB3 x"
        );
        std::fs::write(&keys, &before).unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o640)).unwrap();
        let outcome = authorize_in_home(home.path(), uid, gid, KEY, "nas1", None)
            .await
            .unwrap();
        assert_eq!(outcome, AuthorizeOutcome::Added);
        assert_eq!(
            std::fs::read_to_string(&keys).unwrap(),
            format!("{before}\n{KEY_NO_COMMENT} nasfleet-replication from nas1\n")
        );
        // Existing files keep the permissions their owner chose.
        assert_eq!(mode_of(&ssh_dir), 0o750);
        assert_eq!(mode_of(&keys), 0o640);

        // A key present with other options (or none: from before the gate)
        // gets exactly the line asked for; other lines stay as they were.
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(other.path().join(".ssh")).unwrap();
        let file = other.path().join(".ssh/authorized_keys");
        std::fs::write(&file, format!("{ECDSA} admin\n{KEY}\n")).unwrap();
        let gate = "command=\"/a ssh-gate --source nas1 --state-dir /s\",restrict";
        let outcome = authorize_in_home(other.path(), uid, gid, KEY, "nas1", Some(gate))
            .await
            .unwrap();
        assert_eq!(outcome, AuthorizeOutcome::Replaced);
        let gated = format!("{gate} {KEY_NO_COMMENT} nasfleet-replication from nas1\n");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("{ECDSA} admin\n{gated}")
        );
        let outcome = authorize_in_home(other.path(), uid, gid, KEY, "nas1", Some(gate))
            .await
            .unwrap();
        assert_eq!(outcome, AuthorizeOutcome::AlreadyPresent);
    }

    #[tokio::test]
    async fn authorize_in_home_never_follows_links() {
        let (uid, gid) = owner_of(Path::new("/proc/self"));
        let victim_dir = tempfile::tempdir().unwrap();
        let victim = victim_dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();

        // ~/.ssh as a symbolic link to another directory.
        let home = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(victim_dir.path(), home.path().join(".ssh")).unwrap();
        let err = authorize_in_home(home.path(), uid, gid, KEY, "nas1", None)
            .await
            .unwrap_err();
        assert!(matches!(err, SshError::Unsafe { .. }), "{err}");
        assert!(!victim_dir.path().join("authorized_keys").exists());

        // authorized_keys as a symbolic link or a hard link to another file.
        for hard in [false, true] {
            let home = tempfile::tempdir().unwrap();
            std::fs::create_dir(home.path().join(".ssh")).unwrap();
            let keys = home.path().join(".ssh/authorized_keys");
            if hard {
                std::fs::hard_link(&victim, &keys).unwrap();
            } else {
                std::os::unix::fs::symlink(&victim, &keys).unwrap();
            }
            let err = authorize_in_home(home.path(), uid, gid, KEY, "nas1", None)
                .await
                .unwrap_err();
            assert!(matches!(err, SshError::Unsafe { .. }), "{err}");
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        }

        // A FIFO is refused rather than hanging.
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".ssh")).unwrap();
        let fifo = home.path().join(".ssh/authorized_keys");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = authorize_in_home(home.path(), uid, gid, KEY, "nas1", None)
            .await
            .unwrap_err();
        assert!(matches!(err, SshError::Unsafe { .. }), "{err}");
    }

    #[tokio::test]
    async fn authorize_refuses_bad_input() {
        let home = tempfile::tempdir().unwrap();
        let (uid, gid) = owner_of(home.path());
        let err = authorize_in_home(
            home.path(),
            uid,
            gid,
            &format!("command=\"x\" {KEY}"),
            "nas1",
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SshError::InvalidKey { .. }), "{err}");
        let err = authorize_in_home(home.path(), uid, gid, KEY, "nas 1; x", None)
            .await
            .unwrap_err();
        assert!(matches!(err, SshError::InvalidSystem(_)), "{err}");
        assert!(!home.path().join(".ssh").exists());

        let err = authorize_key("nasfleet-no-such-user", KEY, "nas1", None)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Provided user \"nasfleet-no-such-user\" does not exist"
        );
        let err = authorize_key("-oX", KEY, "nas1", None).await.unwrap_err();
        assert!(matches!(err, SshError::InvalidUser { .. }), "{err}");
    }

    /// Another valid ed25519 key (`ssh-ed25519 BASE64`) for each `n`.
    fn other_key(n: u8) -> String {
        let mut blob = Vec::new();
        blob.extend_from_slice(&11u32.to_be_bytes());
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend_from_slice(&[n; 32]);
        let key = format!("ssh-ed25519 {}", STANDARD.encode(blob));
        parse_replication_key(&key).unwrap();
        key
    }

    /// A home with `~/.ssh/authorized_keys` holding `content` (mode 0640).
    fn home_with_keys(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".ssh")).unwrap();
        let keys = home.path().join(".ssh/authorized_keys");
        std::fs::write(&keys, content).unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o640)).unwrap();
        (home, keys)
    }

    #[tokio::test]
    async fn revoke_removes_only_that_key_and_keeps_the_rest_byte_exact() {
        let other = other_key(7);
        let before = format!(
            "# admin keys\r\n\
             {ECDSA} admin@laptop\r\n\
             \n\
             {KEY_NO_COMMENT} nasfleet-replication from nas1\n\
             \t  \n\
             # {KEY_NO_COMMENT} commented out\n\
             {other} nasfleet-replication from nas1\n\
             from=\"10.0.0.1\",no-pty {KEY_NO_COMMENT} by hand\r\n\
             command=\"echo {KEY_NO_COMMENT}\" {other} mentions it quoted\n\
             {ECDSA}{KEY_NO_COMMENT}\n\
             ssh-rsa AAAAB3 last line without newline"
        );
        let mut bytes = before.into_bytes();
        // Bytes that are not UTF-8 on a kept line survive too.
        bytes.extend_from_slice(b" \xff\xfe");
        let (home, keys) = home_with_keys(&bytes);
        let ino = std::fs::metadata(&keys).unwrap().ino();
        let (uid, gid) = owner_of(&keys);

        let outcome = revoke_in_home(home.path(), KEY).await.unwrap();
        assert_eq!(outcome, RevokeOutcome::Removed(2));
        let mut expected = format!(
            "# admin keys\r\n\
             {ECDSA} admin@laptop\r\n\
             \n\
             \t  \n\
             # {KEY_NO_COMMENT} commented out\n\
             {other} nasfleet-replication from nas1\n\
             command=\"echo {KEY_NO_COMMENT}\" {other} mentions it quoted\n\
             {ECDSA}{KEY_NO_COMMENT}\n\
             ssh-rsa AAAAB3 last line without newline"
        )
        .into_bytes();
        expected.extend_from_slice(b" \xff\xfe");
        assert_eq!(std::fs::read(&keys).unwrap(), expected);
        // Rewritten in place: same file, owner and mode.
        let meta = std::fs::symlink_metadata(&keys).unwrap();
        assert_eq!(meta.ino(), ino);
        assert_eq!((meta.uid(), meta.gid()), (uid, gid));
        assert_eq!(mode_of(&keys), 0o640);
        // Nothing else left in ~/.ssh.
        assert_eq!(
            std::fs::read_dir(home.path().join(".ssh")).unwrap().count(),
            1
        );

        // Idempotent: a second revocation finds nothing and writes nothing.
        let modified = meta.modified().unwrap();
        let outcome = revoke_in_home(home.path(), KEY).await.unwrap();
        assert_eq!(outcome, RevokeOutcome::NotPresent);
        assert_eq!(std::fs::read(&keys).unwrap(), expected);
        assert_eq!(
            std::fs::metadata(&keys).unwrap().modified().unwrap(),
            modified
        );
    }

    #[tokio::test]
    async fn revoke_matches_type_and_data_not_the_comment() {
        // The given key's comment does not matter; options before the key
        // and CRLF line ends do not hide it.
        let other = other_key(9);
        let before = format!(
            "restrict,command=\"zfs recv -F tank/x\" {KEY} \r\n\
             {other} nasfleet-replication from nas1\n\
             {KEY_NO_COMMENT}\r\n\
             environment=\"A=\\\"q b\\\"\"\t{KEY_NO_COMMENT}"
        );
        let (home, keys) = home_with_keys(before.as_bytes());
        let outcome = revoke_in_home(home.path(), &format!("{KEY_NO_COMMENT} another comment"))
            .await
            .unwrap();
        assert_eq!(outcome, RevokeOutcome::Removed(3));
        // A different key with the same comment stays.
        assert_eq!(
            std::fs::read_to_string(&keys).unwrap(),
            format!("{other} nasfleet-replication from nas1\n")
        );
    }

    #[tokio::test]
    async fn revoke_of_the_last_or_only_line() {
        let (home, keys) = home_with_keys(format!("{ECDSA} a\n{KEY}").as_bytes());
        let outcome = revoke_in_home(home.path(), KEY).await.unwrap();
        assert_eq!(outcome, RevokeOutcome::Removed(1));
        assert_eq!(
            std::fs::read_to_string(&keys).unwrap(),
            format!("{ECDSA} a\n")
        );

        let (home, keys) = home_with_keys(format!("{KEY}\n").as_bytes());
        let outcome = revoke_in_home(home.path(), KEY).await.unwrap();
        assert_eq!(outcome, RevokeOutcome::Removed(1));
        assert_eq!(std::fs::read(&keys).unwrap(), b"");
        assert_eq!(mode_of(&keys), 0o640);
    }

    #[tokio::test]
    async fn revoke_undoes_authorize() {
        let before = format!("# mine\n{ECDSA} me@laptop");
        let (home, keys) = home_with_keys(before.as_bytes());
        let (uid, gid) = owner_of(home.path());
        let outcome = authorize_in_home(home.path(), uid, gid, KEY, "nas1", None)
            .await
            .unwrap();
        assert_eq!(outcome, AuthorizeOutcome::Added);
        let outcome = revoke_in_home(home.path(), KEY).await.unwrap();
        assert_eq!(outcome, RevokeOutcome::Removed(1));
        // The newline authorize had to add after the last line stays.
        assert_eq!(
            std::fs::read_to_string(&keys).unwrap(),
            format!("{before}\n")
        );
    }

    #[tokio::test]
    async fn revoke_without_a_file_is_not_present() {
        // No home, no ~/.ssh, no authorized_keys: nothing is created.
        let home = tempfile::tempdir().unwrap();
        let missing = home.path().join("gone");
        let outcome = revoke_in_home(&missing, KEY).await.unwrap();
        assert_eq!(outcome, RevokeOutcome::NotPresent);
        assert!(!missing.exists());

        let outcome = revoke_in_home(home.path(), KEY).await.unwrap();
        assert_eq!(outcome, RevokeOutcome::NotPresent);
        assert!(!home.path().join(".ssh").exists());

        std::fs::create_dir(home.path().join(".ssh")).unwrap();
        let outcome = revoke_in_home(home.path(), KEY).await.unwrap();
        assert_eq!(outcome, RevokeOutcome::NotPresent);
        assert!(!home.path().join(".ssh/authorized_keys").exists());

        // An empty file, or one with only other keys, is left alone.
        let (home, keys) = home_with_keys(b"");
        let outcome = revoke_in_home(home.path(), KEY).await.unwrap();
        assert_eq!(outcome, RevokeOutcome::NotPresent);
        assert_eq!(std::fs::read(&keys).unwrap(), b"");
        let (home, keys) = home_with_keys(format!("{ECDSA}\r\n{}", other_key(1)).as_bytes());
        let outcome = revoke_in_home(home.path(), KEY).await.unwrap();
        assert_eq!(outcome, RevokeOutcome::NotPresent);
        assert_eq!(
            std::fs::read_to_string(&keys).unwrap(),
            format!("{ECDSA}\r\n{}", other_key(1))
        );
    }

    #[tokio::test]
    async fn revoke_never_follows_links() {
        let victim_dir = tempfile::tempdir().unwrap();
        let victim = victim_dir.path().join("victim");
        let precious = format!("{KEY}\nprecious\n");
        std::fs::write(&victim, &precious).unwrap();
        std::fs::write(victim_dir.path().join("authorized_keys"), &precious).unwrap();

        // ~/.ssh as a symbolic link to another directory.
        let home = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(victim_dir.path(), home.path().join(".ssh")).unwrap();
        let err = revoke_in_home(home.path(), KEY).await.unwrap_err();
        assert!(matches!(err, SshError::Unsafe { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(victim_dir.path().join("authorized_keys")).unwrap(),
            precious
        );

        // ~/.ssh as a dangling symbolic link, or a plain file.
        let home = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/nonexistent/nasfleet", home.path().join(".ssh")).unwrap();
        let err = revoke_in_home(home.path(), KEY).await.unwrap_err();
        assert!(matches!(err, SshError::Unsafe { .. }), "{err}");
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".ssh"), "").unwrap();
        let err = revoke_in_home(home.path(), KEY).await.unwrap_err();
        assert!(matches!(err, SshError::Unsafe { .. }), "{err}");

        // authorized_keys as a symbolic link (also dangling) or a hard link.
        for kind in ["symlink", "dangling", "hard"] {
            let home = tempfile::tempdir().unwrap();
            std::fs::create_dir(home.path().join(".ssh")).unwrap();
            let keys = home.path().join(".ssh/authorized_keys");
            match kind {
                "symlink" => std::os::unix::fs::symlink(&victim, &keys).unwrap(),
                "dangling" => {
                    std::os::unix::fs::symlink(victim_dir.path().join("none"), &keys).unwrap()
                }
                _ => std::fs::hard_link(&victim, &keys).unwrap(),
            }
            let err = revoke_in_home(home.path(), KEY).await.unwrap_err();
            assert!(matches!(err, SshError::Unsafe { .. }), "{kind}: {err}");
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), precious);
            assert!(!victim_dir.path().join("none").exists());
        }

        // A FIFO or a directory is refused rather than hanging or read.
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".ssh")).unwrap();
        let fifo = home.path().join(".ssh/authorized_keys");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = revoke_in_home(home.path(), KEY).await.unwrap_err();
        assert!(matches!(err, SshError::Unsafe { .. }), "{err}");
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".ssh/authorized_keys")).unwrap();
        let err = revoke_in_home(home.path(), KEY).await.unwrap_err();
        assert!(matches!(err, SshError::Unsafe { .. }), "{err}");
    }

    #[tokio::test]
    async fn revoke_refuses_bad_input() {
        let (home, keys) = home_with_keys(format!("{KEY}\n").as_bytes());
        for bad in [
            format!("command=\"x\" {KEY}"),
            format!("{KEY}\n{ECDSA}"),
            ECDSA.to_owned(),
            "ssh-ed25519 AAAA".to_owned(),
            String::new(),
        ] {
            let err = revoke_in_home(home.path(), &bad).await.unwrap_err();
            assert!(matches!(err, SshError::InvalidKey { .. }), "{bad:?}: {err}");
        }
        assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{KEY}\n"));

        let err = revoke_key("nasfleet-no-such-user", KEY).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "Provided user \"nasfleet-no-such-user\" does not exist"
        );
        let err = revoke_key("-oX", KEY).await.unwrap_err();
        assert!(matches!(err, SshError::InvalidUser { .. }), "{err}");
        let err = revoke_key("root", "garbage").await.unwrap_err();
        assert!(matches!(err, SshError::InvalidKey { .. }), "{err}");
    }

    #[tokio::test]
    async fn concurrent_authorize_and_revoke_lose_nothing() {
        let home = tempfile::tempdir().unwrap();
        let (uid, gid) = owner_of(home.path());
        for n in 0..8 {
            authorize_in_home(home.path(), uid, gid, &other_key(n), "nas1", None)
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for n in 0..8 {
            let home = home.path().to_owned();
            tasks.push(tokio::spawn(async move {
                if n < 4 {
                    let outcome = revoke_in_home(&home, &other_key(n)).await.unwrap();
                    assert_eq!(outcome, RevokeOutcome::Removed(1));
                } else {
                    let outcome =
                        authorize_in_home(&home, uid, gid, &other_key(n + 4), "nas2", None)
                            .await
                            .unwrap();
                    assert_eq!(outcome, AuthorizeOutcome::Added);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let text = std::fs::read_to_string(home.path().join(".ssh/authorized_keys")).unwrap();
        let mut left: Vec<u8> = (0..16).filter(|n| text.contains(&other_key(*n))).collect();
        left.sort();
        assert_eq!(left, [4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(text.lines().count(), 8);
    }

    #[test]
    fn authorized_keys_words_respect_quotes() {
        let words = authorized_keys_words(
            b"  from=\"a b\",command=\"say \\\"x y\\\"\"\tssh-ed25519  AAAA c d\r",
        );
        let words: Vec<&str> = words
            .iter()
            .map(|w| std::str::from_utf8(w).unwrap())
            .collect();
        assert_eq!(
            words,
            [
                "from=\"a b\",command=\"say \\\"x y\\\"\"",
                "ssh-ed25519",
                "AAAA",
                "c",
                "d"
            ]
        );
        assert!(authorized_keys_words(b" \t\r").is_empty());
        // An unclosed quote runs to the end of the line, as in sshd.
        assert_eq!(authorized_keys_words(b"a=\"b c d").len(), 1);
    }

    #[test]
    fn homes_that_are_not_homes() {
        for home in [
            "/var/empty",
            "/var/empty/",
            "/nonexistent",
            "/",
            "",
            "relative",
        ] {
            let err = check_home("backup", Path::new(home)).unwrap_err();
            assert!(matches!(err, SshError::NoHome { .. }), "{home}");
        }
        assert_eq!(
            check_home("backup", Path::new("/nonexistent"))
                .unwrap_err()
                .to_string(),
            "User \"backup\" has no usable home directory (/nonexistent): replication to this user needs a real home directory"
        );
        check_home("backup", Path::new("/home/backup")).unwrap();
        check_home("root", Path::new("/root")).unwrap();
    }
}
