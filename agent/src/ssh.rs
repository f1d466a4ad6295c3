//! SSH between NAS systems for replication: this agent's replication keypair, the `ssh` command lines (with shell-quoted remote words and a pinned known_hosts file), pre-flight checks with reasons a person can act on, and, on the target side, authorizing a source's key.
//!
//! Trust is never established by ssh itself: the controller tells the source
//! which host keys to expect (written with [`write_known_hosts`] and used
//! with `StrictHostKeyChecking=yes`, so there is no trust on first use), and
//! asks the target's agent to [`authorize_key`] the source's public key. The
//! private key is made on the host that uses it and never leaves it.
//!
//! The local side never goes through a shell (`ssh` gets one argv entry per
//! argument), but the remote side of ssh *is* a shell: every remote word is
//! quoted with [`shell_quote`], so dataset names and paths stay data.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nasfleet_common::names::{NameError, validate_system_name};
use thiserror::Error;
use tokio::net::TcpStream;

use crate::host::nofollow::{is_link_or_not_dir, open_at};
use crate::host::passwd::{Account, lookup_user};
use crate::host::process::{self, ProcessError};
use crate::host::time::display_duration;
use crate::ssh_service::{KeyParseError, fingerprint_public_key};

/// The replication private key, in the agent's state dir (`.pub` next to it).
pub const REPLICATION_KEY_FILE: &str = "replication_ed25519";

/// Limit for `ssh-keygen` making or reading the replication key.
pub const KEYGEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The port sshd listens on unless told otherwise; known_hosts entries for
/// it are written without a port.
pub const DEFAULT_SSH_PORT: u16 = 22;

/// Longest user name accepted (Linux `useradd` and FreeBSD `pw` limits).
const MAX_USER: usize = 32;
/// Longest DNS name (RFC 1035).
const MAX_HOST: usize = 253;
/// Largest authorized_keys file read; a real one is a few KiB, anything far
/// larger is not worth loading into memory as root.
const MAX_AUTHORIZED_KEYS: u64 = 16 * 1024 * 1024;
/// Key types accepted as host keys. DSA is gone from current OpenSSH, and
/// security-key (`sk-`) types need a touch, so they cannot be host keys.
const HOST_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];
/// The only type of replication key nasfleet makes.
const REPLICATION_KEY_TYPE: &str = "ssh-ed25519";
/// Size of an ed25519 public key blob: string "ssh-ed25519" and 32 key bytes.
const ED25519_BLOB_LEN: usize = 4 + 11 + 4 + 32;

/// Why an SSH operation failed, worded for the person who has to fix it.
#[derive(Debug, Error)]
pub enum SshError {
    /// The message is exactly TrueNAS's wording; the OS reason is the source.
    #[error("[EACCES] Unable to connect to port {port} on {host}")]
    Unreachable {
        host: String,
        port: u16,
        #[source]
        reason: io::Error,
    },
    #[error(
        "Authentication as {user} on {address} failed: the target has not authorized this system's replication key (run `nasfleet ssh-connection create SOURCE TARGET`)"
    )]
    AuthFailed { user: String, address: String },
    #[error(
        "The SSH host key of {address} does not match the host key pinned for it, so the connection was refused (no trust on first use); if that system's host keys were replaced, run `nasfleet ssh-connection create SOURCE TARGET` again once its inventory shows the new keys"
    )]
    HostKeyMismatch { address: String },
    /// An ssh call that failed for another reason: usually the remote
    /// command itself, whose stderr the message keeps; or the local ssh
    /// process timed out, was cancelled or could not start.
    #[error("{}", describe_remote(.address, .error))]
    Remote {
        address: String,
        error: ProcessError,
    },
    #[error(
        "invalid SSH user {user:?}: expected at most {MAX_USER} characters of a-z, 0-9, '_' and '-', starting with a letter or '_'"
    )]
    InvalidUser { user: String },
    #[error("invalid SSH host {host:?}: expected a DNS name, an IPv4 address or an IPv6 address")]
    InvalidHost { host: String },
    #[error("invalid SSH port 0")]
    InvalidPort,
    #[error(
        "{what} path {path:?} cannot be given to ssh: it must be absolute and contain only letters, digits and '_-./+@:,=' (ssh expands '%' and '~' and splits option values at spaces)"
    )]
    InvalidPath { what: &'static str, path: PathBuf },
    #[error("no remote command given")]
    EmptyCommand,
    #[error("remote command word {word:?} contains a NUL byte")]
    InvalidWord { word: String },
    #[error("invalid public key: {reason}")]
    InvalidKey { reason: String },
    #[error(
        "no host keys to pin for {address}: its agent reports none (is sshd running with host keys?)"
    )]
    NoHostKeys { address: String },
    #[error("invalid system name: {0}")]
    InvalidSystem(#[from] NameError),
    #[error("Provided user \"{user}\" does not exist")]
    UnknownUser { user: String },
    #[error(
        "User \"{user}\" has no usable home directory ({home}): replication to this user needs a real home directory"
    )]
    NoHome { user: String, home: String },
    #[error("cannot look up user \"{user}\": {source}")]
    UserLookup {
        user: String,
        #[source]
        source: io::Error,
    },
    #[error("refusing to use {}: {reason}", .path.display())]
    Unsafe { path: PathBuf, reason: &'static str },
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not make or read the replication key: {0}")]
    Keygen(#[source] ProcessError),
    #[error("a background file task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The rendered `ssh -i ... -o ...` command line would fill the message
/// with ssh options (and is cut before the remote command), so a remote
/// failure is told by where it ran and what the remote side said.
fn describe_remote(address: &str, error: &ProcessError) -> String {
    match error {
        ProcessError::Failed {
            code: Some(code),
            stderr,
            ..
        } if stderr.is_empty() => {
            format!("the remote command on {address} failed (exit code {code})")
        }
        ProcessError::Failed {
            code: Some(code),
            stderr,
            ..
        } => format!("the remote command on {address} failed (exit code {code}): {stderr}"),
        other => other.to_string(),
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SshError + 'a {
    move |source| SshError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

// ---------------------------------------------------------------------------
// Public keys

/// A validated public key: type and base64 data (the comment is dropped,
/// nasfleet writes its own).
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyLine {
    kind: String,
    data: String,
}

impl KeyLine {
    fn joined(&self) -> String {
        format!("{} {}", self.kind, self.data)
    }
}

fn invalid_key(reason: impl Into<String>) -> SshError {
    SshError::InvalidKey {
        reason: reason.into(),
    }
}

/// Parses one `TYPE BASE64[ comment]` line whose type is in `allowed`.
///
/// Surrounding whitespace (a `.pub` file's final newline) is ignored, but a
/// line break or other control character inside is refused: a second line
/// smuggled into authorized_keys or known_hosts would be a second key.
/// Anything before the type, such as authorized_keys options
/// (`command="..."`, `from=...`), is refused because the type must come first.
fn parse_key_line(text: &str, allowed: &[&str]) -> Result<KeyLine, SshError> {
    let line = text.trim();
    if line.is_empty() {
        return Err(invalid_key("it is empty"));
    }
    if line.chars().any(char::is_control) {
        return Err(invalid_key(
            "it must be a single line without control characters",
        ));
    }
    let mut words = line.split(' ').filter(|w| !w.is_empty());
    let (Some(kind), Some(data)) = (words.next(), words.next()) else {
        return Err(invalid_key("expected 'TYPE BASE64 [comment]'"));
    };
    if !allowed.contains(&kind) {
        let shown: String = kind.chars().take(40).collect();
        return Err(invalid_key(format!(
            "'{shown}' is not an accepted key type (expected {}; options before the key are not accepted)",
            allowed.join(", ")
        )));
    }
    fingerprint_public_key(&format!("{kind} {data}")).map_err(|err| match err {
        KeyParseError::BadBase64 => invalid_key("key data is not valid base64"),
        other => invalid_key(other.to_string()),
    })?;
    Ok(KeyLine {
        kind: kind.to_owned(),
        data: data.to_owned(),
    })
}

/// A replication public key: exactly one `ssh-ed25519 BASE64[ comment]`.
fn parse_replication_key(text: &str) -> Result<KeyLine, SshError> {
    let key = parse_key_line(text, &[REPLICATION_KEY_TYPE])?;
    // The embedded type was checked; the length catches truncated or padded
    // keys that sshd would silently ignore.
    let blob_len = STANDARD.decode(&key.data).map(|b| b.len()).unwrap_or(0);
    if blob_len != ED25519_BLOB_LEN {
        return Err(invalid_key("ssh-ed25519 key data has the wrong length"));
    }
    Ok(key)
}

// ---------------------------------------------------------------------------
// The replication keypair

/// This agent's replication keypair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationKey {
    /// The private key file (0600); it never leaves this host.
    pub private_key: PathBuf,
    /// One line: `ssh-ed25519 AAAA... nasfleet-replication@NAME`.
    pub public_key: String,
}

fn key_comment(system_name: &str) -> String {
    format!("nasfleet-replication@{system_name}")
}

fn public_path(private_key: &Path) -> PathBuf {
    let mut name = private_key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Creates the replication keypair in `state_dir` on first use
/// (`ssh-keygen -q -t ed25519 -N '' -C nasfleet-replication@NAME`), else
/// loads it.
///
/// A new key is generated under a temporary name and claimed with a hard
/// link, which fails if the key already exists: of two tasks racing
/// here exactly one key wins, and nobody ever sees a half-written pair. The
/// public half is derived again from the private key (`ssh-keygen -y`) if
/// its file is missing or damaged.
pub async fn ensure_replication_key(
    state_dir: &Path,
    system_name: &str,
) -> Result<ReplicationKey, SshError> {
    validate_system_name(system_name)?;
    let private_key = state_dir.join(REPLICATION_KEY_FILE);
    let comment = key_comment(system_name);

    let exists = match tokio::fs::symlink_metadata(&private_key).await {
        Ok(meta) if meta.is_file() => true,
        Ok(_) => {
            return Err(SshError::Unsafe {
                path: private_key,
                reason: "the replication key is not a regular file",
            });
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => false,
        Err(err) => return Err(io_error("inspect", &private_key)(err)),
    };
    if !exists {
        generate_key(&private_key, &comment).await?;
    }
    restrict_private_key(&private_key).await?;

    let public_file = public_path(&private_key);
    let key = match tokio::fs::read_to_string(&public_file).await {
        Ok(text) => parse_replication_key(&text).ok(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(io_error("read", &public_file)(err)),
    };
    let key = match key {
        Some(key) => key,
        None => {
            let key = derive_public_key(&private_key).await?;
            let line = format!("{} {comment}\n", key.joined());
            let path = public_file.clone();
            tokio::task::spawn_blocking(move || write_atomic(&path, line.as_bytes(), 0o644))
                .await??;
            key
        }
    };
    Ok(ReplicationKey {
        private_key,
        public_key: format!("{} {comment}", key.joined()),
    })
}

async fn generate_key(private_key: &Path, comment: &str) -> Result<(), SshError> {
    let tmp = temp_sibling(private_key);
    let tmp_pub = public_path(&tmp);
    let args: [&OsStr; 9] = [
        "-q".as_ref(),
        "-t".as_ref(),
        "ed25519".as_ref(),
        "-N".as_ref(),
        "".as_ref(),
        "-C".as_ref(),
        comment.as_ref(),
        "-f".as_ref(),
        tmp.as_os_str(),
    ];
    let made = process::run("ssh-keygen", &args, KEYGEN_TIMEOUT).await;
    let claimed = match made {
        Ok(_) => match tokio::fs::hard_link(&tmp, private_key).await {
            Ok(()) => Ok(true),
            // Someone else's key won; ours is thrown away below.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(io_error("create", private_key)(err)),
        },
        Err(err) => Err(SshError::Keygen(err)),
    };
    let _ = tokio::fs::remove_file(&tmp).await;
    if matches!(claimed, Ok(true)) {
        let public_file = public_path(private_key);
        if let Err(err) = tokio::fs::rename(&tmp_pub, &public_file).await {
            // Not fatal: the public half is derived from the private key.
            tracing::warn!(path = %public_file.display(), %err, "could not store the replication public key");
        }
    }
    let _ = tokio::fs::remove_file(&tmp_pub).await;
    claimed.map(|_| ())
}

/// ssh refuses private keys others can read; ssh-keygen makes them 0600,
/// but a restored backup or a copied state dir may not be.
async fn restrict_private_key(private_key: &Path) -> Result<(), SshError> {
    let meta = tokio::fs::metadata(private_key)
        .await
        .map_err(io_error("inspect", private_key))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tokio::fs::set_permissions(private_key, std::fs::Permissions::from_mode(0o600))
            .await
            .map_err(io_error("restrict permissions of", private_key))?;
    }
    Ok(())
}

async fn derive_public_key(private_key: &Path) -> Result<KeyLine, SshError> {
    let args: [&OsStr; 3] = ["-y".as_ref(), "-f".as_ref(), private_key.as_os_str()];
    let out = process::run("ssh-keygen", &args, KEYGEN_TIMEOUT)
        .await
        .map_err(SshError::Keygen)?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_replication_key(&text)
}

/// A name next to `path` that no other writer uses.
fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = format!(
        ".{name}.tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    );
    path.with_file_name(tmp)
}

/// Writes `contents` to `path` with `mode` so readers see the old file or
/// the new one, never a part: a temporary sibling, fsync, rename.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), SshError> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_error("create", &tmp))?;
        // The umask may have taken bits away; set exactly what was asked.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_error("set permissions of", &tmp))?;
        file.write_all(contents).map_err(io_error("write", &tmp))?;
        file.sync_all().map_err(io_error("write", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io_error("replace", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

// ---------------------------------------------------------------------------
// Quoting for the remote shell

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

// ---------------------------------------------------------------------------
// Targets and command lines

/// Where and as whom a replication source logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// This system's replication private key.
    pub identity: PathBuf,
    /// A known_hosts file holding exactly the target's pinned host keys
    /// (see [`write_known_hosts`]).
    pub known_hosts: PathBuf,
    /// The control socket of a master connection ([`start_master`]) to
    /// share, so the many short zfs commands of a run skip a TCP connect,
    /// key exchange and login each.
    pub control_path: Option<PathBuf>,
}

impl SshTarget {
    /// `host:port` (`[v6]:port`) for messages.
    pub fn address(&self) -> String {
        let host = normalize_host(&self.host).unwrap_or_else(|_| self.host.clone());
        display_address(&host, self.port)
    }
}

fn display_address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Checks a login name: `[a-z_][a-z0-9_-]*[$]?`, at most 32 characters (the
/// `useradd` rule; `$` ends Samba machine accounts). Never starts with `-`,
/// so it cannot become an ssh option.
pub fn validate_user(user: &str) -> Result<(), SshError> {
    let body = user.strip_suffix('$').unwrap_or(user);
    let ok = !body.is_empty()
        && user.len() <= MAX_USER
        && body.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SshError::InvalidUser {
            user: user.to_owned(),
        })
    }
}

/// Checks a host and returns it as ssh will use it: IPv4 as is, IPv6
/// without brackets (`root@[::1]` would make ssh look up the name
/// `[::1]`), DNS names lowercased (ssh lowercases them, and the
/// known_hosts entry must match what ssh looks up). Nothing that starts
/// with `-` or holds spaces, `@`, `%` or shell characters gets through.
pub fn normalize_host(host: &str) -> Result<String, SshError> {
    let invalid = || SshError::InvalidHost {
        host: host.to_owned(),
    };
    let unbracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if let Some(inner) = unbracketed {
        return inner
            .parse::<Ipv6Addr>()
            .map(|_| inner.to_ascii_lowercase())
            .map_err(|_| invalid());
    }
    if host.parse::<Ipv6Addr>().is_ok() {
        return Ok(host.to_ascii_lowercase());
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host.to_owned());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            // '_' is not DNS, but common in /etc/hosts and mDNS names.
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() <= MAX_HOST && host.split('.').all(label_ok) {
        Ok(host.to_ascii_lowercase())
    } else {
        Err(invalid())
    }
}

/// A path handed to ssh in an option. ssh expands `%` tokens and `~` in
/// IdentityFile and UserKnownHostsFile, and splits the latter at spaces,
/// so only plain absolute paths are passed.
fn ssh_path(what: &'static str, path: &Path) -> Result<String, SshError> {
    let invalid = || SshError::InvalidPath {
        what,
        path: path.to_owned(),
    };
    let text = path.to_str().ok_or_else(invalid)?;
    let ok = text.starts_with('/')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./+@:,=".contains(&b));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(invalid())
    }
}

/// argv (after the program name `ssh`) that runs `remote_words` on the
/// target, each word quoted for the remote shell:
///
/// `-i IDENTITY -p PORT -o BatchMode=yes -o StrictHostKeyChecking=yes
/// -o UserKnownHostsFile=KNOWN_HOSTS -o GlobalKnownHostsFile=/dev/null
/// -o IdentitiesOnly=yes -o ConnectTimeout=10 -o ServerAliveInterval=15
/// -o ServerAliveCountMax=4 -o LogLevel=ERROR -- USER@HOST COMMAND`
///
/// BatchMode: never prompt (there is nobody to answer). Strict checking
/// against only our known_hosts file: the pinned keys, nothing learnt on
/// the way. IdentitiesOnly: only the replication key, not whatever an
/// ssh-agent offers. The keepalives notice a dead peer within a minute
/// instead of leaving a `zfs send` blocked for hours. No HostKeyAlias: the
/// known_hosts entry is written for the host and port ssh looks up.
pub fn ssh_args(target: &SshTarget, remote_words: &[String]) -> Result<Vec<String>, SshError> {
    ssh_args_chain(target, &[remote_words.to_vec()])
}

/// Like [`ssh_args`], for several remote commands run one after the other
/// in one session, each only if the one before succeeded (`A && B`, which
/// every common login shell understands). One session instead of several
/// saves a round trip and a login shell start per command.
pub fn ssh_args_chain(
    target: &SshTarget,
    remote_commands: &[Vec<String>],
) -> Result<Vec<String>, SshError> {
    validate_user(&target.user)?;
    let host = normalize_host(&target.host)?;
    if target.port == 0 {
        return Err(SshError::InvalidPort);
    }
    let identity = ssh_path("identity", &target.identity)?;
    let known_hosts = ssh_path("known_hosts", &target.known_hosts)?;
    if remote_commands.is_empty() || remote_commands.iter().any(Vec::is_empty) {
        return Err(SshError::EmptyCommand);
    }
    // A NUL cannot travel in argv; refusing here beats a spawn error.
    if let Some(word) = remote_commands.iter().flatten().find(|w| w.contains('\0')) {
        return Err(SshError::InvalidWord { word: word.clone() });
    }
    let mut args: Vec<String> = vec!["-i".into(), identity, "-p".into(), target.port.to_string()];
    if let Some(control) = &target.control_path {
        // Use the run's master if it is there, never become one.
        let control = ssh_path("control_path", control)?;
        args.extend(["-o".into(), format!("ControlPath={control}")]);
        args.extend(["-o".into(), "ControlMaster=no".into()]);
    }
    for option in [
        "BatchMode=yes".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        format!("UserKnownHostsFile={known_hosts}"),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        "IdentitiesOnly=yes".to_owned(),
        "ConnectTimeout=10".to_owned(),
        "ServerAliveInterval=15".to_owned(),
        "ServerAliveCountMax=4".to_owned(),
        "LogLevel=ERROR".to_owned(),
    ] {
        args.push("-o".into());
        args.push(option);
    }
    args.push("--".into());
    args.push(format!("{}@{host}", target.user));
    let line: Vec<String> = remote_commands.iter().map(|c| remote_command(c)).collect();
    args.push(line.join(" && "));
    Ok(args)
}

/// A master SSH connection shared by the commands of one run; closed when dropped.
pub struct SshMaster {
    child: tokio::process::Child,
    dir: PathBuf,
}

impl Drop for SshMaster {
    fn drop(&mut self) {
        // kill_on_drop ends the master; the socket goes with its directory.
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Prefix of the private directories holding master sockets, followed by
/// the owning agent's pid: `nasfleet-ssh-PID-RANDOM`.
const CONTROL_DIR_PREFIX: &str = "nasfleet-ssh-";

/// Removes the master-socket directories under `tmp` that agents no longer
/// running left behind (killed with SIGKILL, so no [`SshMaster`] was
/// dropped; the master itself died with them). A directory whose pid is
/// alive is kept: other agents may share the host (and a reused pid only
/// delays the sweep). Returns how many were removed.
pub fn sweep_stale_control_dirs(tmp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CONTROL_DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            // SAFETY: geteuid has no preconditions and cannot fail.
            m.is_dir() && m.uid() == unsafe { libc::geteuid() }
        });
        if !ours || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::debug!(dir = %entry.path().display(), error = %e, "could not remove a stale SSH control directory")
            }
        }
    }
    removed
}

/// Opens a master connection for `target` and returns the target set up to
/// share it. The socket lives in a fresh private directory under /tmp (unix
/// socket paths are limited to about 100 bytes, state dirs can be longer).
/// On any failure the caller simply goes on without sharing.
pub async fn start_master(
    target: &SshTarget,
    timeout: Duration,
) -> Result<(SshMaster, SshTarget), SshError> {
    let dir = std::env::temp_dir().join(format!(
        "{CONTROL_DIR_PREFIX}{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_error("create", &dir))?;
    }
    let socket = dir.join("ctl");
    let master_target = SshTarget {
        control_path: None,
        ..target.clone()
    };
    // `-N`: no command, just the connection; `-M` with an explicit
    // ControlPath makes this process the master, in the foreground, so it
    // is our child (never a daemon holding our pipes open).
    let mut args = ssh_args(&master_target, &["true".to_owned()])?;
    let destination = args.len() - 2;
    args.truncate(destination + 1);
    args.splice(
        0..0,
        [
            "-M".to_owned(),
            "-N".to_owned(),
            "-o".to_owned(),
            format!("ControlPath={}", socket.display()),
            "-o".to_owned(),
            "ControlPersist=no".to_owned(),
        ],
    );
    let mut command = tokio::process::Command::new("ssh");
    command
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    // If the agent dies without dropping the master (SIGKILL, crash), the
    // kernel ends the master too instead of leaving it connected forever.
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches only
    // the child's own process attributes between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(io_error("start", Path::new("ssh")))?;
    let mut master = SshMaster { child, dir };
    let deadline = tokio::time::Instant::now() + timeout;
    while !socket.exists() {
        if tokio::time::Instant::now() >= deadline || matches!(master.child.try_wait(), Ok(Some(_)))
        {
            return Err(SshError::Unreachable {
                host: target.host.clone(),
                port: target.port,
                reason: io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the shared SSH connection did not come up",
                ),
            });
        }
        // Short: every millisecond here is a millisecond of every run.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shared = SshTarget {
        control_path: Some(socket),
        ..target.clone()
    };
    Ok((master, shared))
}

/// The host field of a known_hosts line, as ssh looks it up: `host` for
/// port 22, `[host]:port` otherwise.
fn known_hosts_name(host: &str, port: u16) -> String {
    if port == DEFAULT_SSH_PORT {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The known_hosts text for `host_keys` (validated) of `host:port`.
fn known_hosts_text(host: &str, port: u16, host_keys: &[String]) -> Result<String, SshError> {
    let host = normalize_host(host)?;
    if port == 0 {
        return Err(SshError::InvalidPort);
    }
    if host_keys.is_empty() {
        return Err(SshError::NoHostKeys {
            address: display_address(&host, port),
        });
    }
    let name = known_hosts_name(&host, port);
    let mut text = String::new();
    let mut seen = Vec::new();
    for key in host_keys {
        let key = parse_key_line(key, HOST_KEY_TYPES)?;
        if !seen.contains(&key) {
            text.push_str(&format!("{name} {}\n", key.joined()));
            seen.push(key);
        }
    }
    Ok(text)
}

/// Writes a known_hosts file holding exactly `host_keys` for `host:port`
/// (`[host]:port TYPE BASE64`, or `host TYPE BASE64` for port 22), mode
/// 0600, atomically. Every key must be `TYPE BASE64[ comment]` with a known
/// host key type; comments are not written.
pub async fn write_known_hosts(
    path: &Path,
    host: &str,
    port: u16,
    host_keys: &[String],
) -> Result<(), SshError> {
    let text = known_hosts_text(host, port, host_keys)?;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || write_atomic(&path, text.as_bytes(), 0o600)).await?
}

// ---------------------------------------------------------------------------
// Pre-flight checks and error classification

/// Pre-flight: can a TCP connection to `host:port` be made within `timeout`?
pub async fn check_reachable(host: &str, port: u16, timeout: Duration) -> Result<(), SshError> {
    let host = normalize_host(host)?;
    if port == 0 {
        return Err(SshError::InvalidPort);
    }
    let connect = TcpStream::connect((host.as_str(), port));
    let reason = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_stream)) => return Ok(()),
        Ok(Err(err)) => err,
        Err(_) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {}", display_duration(timeout)),
        ),
    };
    Err(SshError::Unreachable { host, port, reason })
}

/// Pre-flight: log in and run `true`. Fails with [`SshError::Unreachable`],
/// [`SshError::AuthFailed`] or [`SshError::HostKeyMismatch`] where ssh says
/// so, [`SshError::Remote`] otherwise.
pub async fn check_login(target: &SshTarget, timeout: Duration) -> Result<(), SshError> {
    let args = ssh_args(target, &["true".to_owned()])?;
    match process::run("ssh", &args, timeout).await {
        Ok(_) => Ok(()),
        // `true` takes no time: a login that hangs is a network or sshd
        // that does not answer.
        Err(ProcessError::TimedOut { after, .. }) => Err(SshError::Unreachable {
            host: normalize_host(&target.host).unwrap_or_else(|_| target.host.clone()),
            port: target.port,
            reason: io::Error::new(
                io::ErrorKind::TimedOut,
                format!("ssh did not log in within {}", display_duration(after)),
            ),
        }),
        Err(err) => Err(classify(target, err)),
    }
}

/// What ssh itself (not the remote command) reported.
#[derive(Debug, PartialEq, Eq)]
enum SshFailure {
    Auth,
    HostKey,
    Unreachable(io::ErrorKind, String),
}

/// Recognises ssh's own messages in stderr (OpenSSH wording, `LC_ALL=C`).
fn ssh_failure(stderr: &str) -> Option<SshFailure> {
    const HOST_KEY: &[&str] = &[
        "Host key verification failed",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        // "No ED25519 host key is known for ... and you have requested
        // strict checking": the server offers no key type that is pinned.
        "host key is known for",
    ];
    const AUTH: &[&str] = &["Permission denied (", "Too many authentication failures"];
    const UNREACHABLE: &[(&str, io::ErrorKind)] = &[
        ("Connection refused", io::ErrorKind::ConnectionRefused),
        ("Connection timed out", io::ErrorKind::TimedOut),
        ("Operation timed out", io::ErrorKind::TimedOut),
        ("No route to host", io::ErrorKind::Other),
        ("Network is unreachable", io::ErrorKind::Other),
        ("Could not resolve hostname", io::ErrorKind::NotFound),
        ("Name or service not known", io::ErrorKind::NotFound),
    ];
    if HOST_KEY.iter().any(|p| stderr.contains(p)) {
        return Some(SshFailure::HostKey);
    }
    if AUTH.iter().any(|p| stderr.contains(p)) {
        return Some(SshFailure::Auth);
    }
    for (pattern, kind) in UNREACHABLE {
        if let Some(line) = stderr.lines().find(|l| l.contains(pattern)) {
            return Some(SshFailure::Unreachable(*kind, line.trim().to_owned()));
        }
    }
    None
}

/// Maps a failed ssh call to a reason a person can act on: unreachable,
/// authentication or host key problems when ssh itself says so, else the
/// error as it is ([`SshError::Remote`], keeping the remote stderr).
///
/// Only exit status 255 is ssh's own; any other status belongs to the
/// remote command, whose stderr might mention "Permission denied" for
/// reasons of its own.
pub fn classify(target: &SshTarget, err: ProcessError) -> SshError {
    let failure = match &err {
        ProcessError::Failed {
            code: Some(255),
            stderr,
            ..
        } => ssh_failure(stderr),
        _ => None,
    };
    let host = || normalize_host(&target.host).unwrap_or_else(|_| target.host.clone());
    match failure {
        Some(SshFailure::Auth) => SshError::AuthFailed {
            user: target.user.clone(),
            address: target.address(),
        },
        Some(SshFailure::HostKey) => SshError::HostKeyMismatch {
            address: target.address(),
        },
        Some(SshFailure::Unreachable(kind, line)) => SshError::Unreachable {
            host: host(),
            port: target.port,
            reason: io::Error::new(kind, line),
        },
        None => SshError::Remote {
            address: target.address(),
            error: err,
        },
    }
}

// ---------------------------------------------------------------------------
// Target side: authorizing a source's key

/// What [`authorize_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizeOutcome {
    Added,
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
) -> Result<AuthorizeOutcome, SshError> {
    validate_system_name(source_system)?;
    let key = parse_replication_key(public_key)?;
    let line = format!(
        "{} nasfleet-replication from {source_system}\n",
        key.joined()
    );
    let home = home.to_owned();
    tokio::task::spawn_blocking(move || append_authorized_key(&home, uid, gid, &key, &line)).await?
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
            SshError::Io {
                action: "open",
                path,
                source: err,
            }
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
        return Ok(AuthorizeOutcome::AlreadyPresent);
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

// ---------------------------------------------------------------------------
// Target side: revoking a source's key

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

    /// A real ed25519 key (see ssh_service's fixture).
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILHk76+FWY7+2MM/cLoPnfrCUvM3deT9GCjPz+IG7LBW fixture@nasfleet";
    const KEY_NO_COMMENT: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILHk76+FWY7+2MM/cLoPnfrCUvM3deT9GCjPz+IG7LBW";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIPdJgGH4IUkwbgW/pkpaWT4+IzhRht3v1+3DrxrZuVV+becdifOIr+XZPgaIckMZi3OhjMBxOjpjv5879HkjKQ=";

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

    fn target() -> SshTarget {
        SshTarget {
            user: "root".into(),
            host: "127.0.0.3".into(),
            port: 22,
            identity: "/var/lib/nasfleet-agent/replication_ed25519".into(),
            known_hosts: "/var/lib/nasfleet-agent/known_hosts/nas2".into(),
            control_path: None,
        }
    }

    #[test]
    fn only_control_dirs_of_agents_that_are_gone_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp
            .path()
            .join(format!("{CONTROL_DIR_PREFIX}{}-00ff", i32::MAX));
        let alive = tmp
            .path()
            .join(format!("{CONTROL_DIR_PREFIX}{}-00ff", std::process::id()));
        let other = tmp
            .path()
            .join(format!("nasfleet-rsync-empty-{}", i32::MAX));
        let not_a_pid = tmp.path().join(format!("{CONTROL_DIR_PREFIX}x-00ff"));
        for dir in [&dead, &alive, &other, &not_a_pid] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::write(dead.join("ctl"), b"").unwrap();
        assert_eq!(sweep_stale_control_dirs(tmp.path()), 1);
        assert!(!dead.exists());
        assert!(alive.exists() && other.exists() && not_a_pid.exists());
        assert_eq!(sweep_stale_control_dirs(&tmp.path().join("missing")), 0);
    }

    #[test]
    fn chained_commands_are_quoted_one_by_one_and_joined_by_and() {
        let create = vec![
            "zfs".into(),
            "create".into(),
            "-p".into(),
            "--".into(),
            "b/n; x".into(),
        ];
        let recv = vec![
            "zfs".into(),
            "receive".into(),
            "--".into(),
            "b/n; x/$(id)".into(),
        ];
        let args = ssh_args_chain(&target(), &[create, recv.clone()]).unwrap();
        assert_eq!(
            args.last().map(String::as_str),
            Some("zfs create -p -- 'b/n; x' && zfs receive -- 'b/n; x/$(id)'")
        );
        // One command is exactly what ssh_args builds.
        assert_eq!(
            ssh_args_chain(&target(), std::slice::from_ref(&recv)).unwrap(),
            ssh_args(&target(), &recv).unwrap()
        );
        assert!(matches!(
            ssh_args_chain(&target(), &[]),
            Err(SshError::EmptyCommand)
        ));
        assert!(matches!(
            ssh_args_chain(&target(), &[recv, Vec::new()]),
            Err(SshError::EmptyCommand)
        ));
        let nul = vec!["zfs".into(), "list".into(), "a\0b".into()];
        assert!(matches!(
            ssh_args_chain(&target(), &[nul]),
            Err(SshError::InvalidWord { .. })
        ));
    }

    #[test]
    fn ssh_args_shape() {
        let words = vec![
            "zfs".to_owned(),
            "list".to_owned(),
            "tank/my data".to_owned(),
        ];
        let args = ssh_args(&target(), &words).unwrap();
        assert_eq!(
            args,
            [
                "-i",
                "/var/lib/nasfleet-agent/replication_ed25519",
                "-p",
                "22",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "UserKnownHostsFile=/var/lib/nasfleet-agent/known_hosts/nas2",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=4",
                "-o",
                "LogLevel=ERROR",
                "--",
                "root@127.0.0.3",
                "zfs list 'tank/my data'",
            ]
        );

        let mut v6 = target();
        v6.host = "[FE80::1]".into();
        v6.port = 2222;
        let args = ssh_args(&v6, &["true".to_owned()]).unwrap();
        assert_eq!(args[3], "2222");
        assert_eq!(args[args.len() - 2], "root@fe80::1");
        let mut named = target();
        named.host = "NAS2.Example.com".into();
        named.user = "repl_user-1".into();
        let args = ssh_args(&named, &["true".to_owned()]).unwrap();
        assert_eq!(args[args.len() - 2], "repl_user-1@nas2.example.com");
    }

    #[test]
    fn ssh_args_refuse_bad_input() {
        let words = vec!["true".to_owned()];
        for user in [
            "",
            "-oProxyCommand=touch",
            "Root",
            "a b",
            "root@x",
            "a;b",
            "1abc",
            "$",
            &"a".repeat(33),
        ] {
            let mut t = target();
            t.user = user.to_owned();
            let err = ssh_args(&t, &words).unwrap_err();
            assert!(
                matches!(err, SshError::InvalidUser { .. }),
                "{user:?}: {err}"
            );
        }
        for user in ["root", "_x", "machine$", &"a".repeat(32)] {
            let mut t = target();
            t.user = user.to_owned();
            assert!(ssh_args(&t, &words).is_ok(), "{user:?}");
        }
        for host in [
            "",
            "-oProxyCommand=touch /tmp/x",
            "-host",
            "a b",
            "host;rm",
            "ex..ample",
            "[::1",
            "[127.0.0.1]",
            "user@host",
            "host:22",
            "fe80::1%eth0",
            "a.-b",
            "$(x)",
            &format!("{}.com", "a".repeat(64)),
        ] {
            let mut t = target();
            t.host = host.to_owned();
            let err = ssh_args(&t, &words).unwrap_err();
            assert!(
                matches!(err, SshError::InvalidHost { .. }),
                "{host:?}: {err}"
            );
        }
        let mut t = target();
        t.port = 0;
        assert!(matches!(ssh_args(&t, &words), Err(SshError::InvalidPort)));
        for path in [
            "relative/key",
            "/tmp/a b",
            "/tmp/%h",
            "~/.ssh/id",
            "/tmp/\"x",
        ] {
            let mut t = target();
            t.known_hosts = path.into();
            assert!(
                matches!(ssh_args(&t, &words), Err(SshError::InvalidPath { .. })),
                "{path}"
            );
            let mut t = target();
            t.identity = path.into();
            assert!(
                matches!(ssh_args(&t, &words), Err(SshError::InvalidPath { .. })),
                "{path}"
            );
        }
        assert!(matches!(
            ssh_args(&target(), &[]),
            Err(SshError::EmptyCommand)
        ));
        assert!(matches!(
            ssh_args(&target(), &["a\0b".to_owned()]),
            Err(SshError::InvalidWord { .. })
        ));
    }

    #[tokio::test]
    async fn known_hosts_for_port_22_and_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let keys = vec![
            KEY.to_owned(),
            format!("{ECDSA}\n"),
            KEY_NO_COMMENT.to_owned(),
        ];
        write_known_hosts(&path, "127.0.0.3", 22, &keys)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("127.0.0.3 {KEY_NO_COMMENT}\n127.0.0.3 {ECDSA}\n")
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        write_known_hosts(&path, "NAS2.example", 2222, &keys[..1])
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("[nas2.example]:2222 {KEY_NO_COMMENT}\n")
        );
        write_known_hosts(&path, "::1", 2222, &keys[..1])
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("[::1]:2222 {KEY_NO_COMMENT}\n")
        );
        // Only the file itself is left: no temporary siblings.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn known_hosts_refuses_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        for bad in [
            format!("command=\"x\" {KEY}"),
            format!("@cert-authority * {KEY}"),
            format!("{KEY}\n127.0.0.9 {KEY}"),
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP".to_owned(),
            "ssh-ed25519 !!!".to_owned(),
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAILHk76+FWY7+2MM/cLoPnfrCUvM3deT9GCjPz+IG7LBW"
                .to_owned(),
            "garbage".to_owned(),
            String::new(),
        ] {
            let err = write_known_hosts(&path, "127.0.0.3", 22, std::slice::from_ref(&bad))
                .await
                .unwrap_err();
            assert!(matches!(err, SshError::InvalidKey { .. }), "{bad:?}: {err}");
        }
        let err = write_known_hosts(&path, "127.0.0.3", 22, &[])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no host keys to pin for 127.0.0.3:22: its agent reports none (is sshd running with host keys?)"
        );
        let err = write_known_hosts(&path, "-oX", 22, &[KEY.to_owned()])
            .await
            .unwrap_err();
        assert!(matches!(err, SshError::InvalidHost { .. }));
        assert!(!path.exists());
    }

    #[test]
    fn replication_key_validation_refuses_hostile_input() {
        assert_eq!(
            parse_replication_key(&format!("{KEY}\n")).unwrap().joined(),
            KEY_NO_COMMENT
        );
        for bad in [
            format!("command=\"touch /tmp/pwned\" {KEY}"),
            format!("no-pty,{KEY}"),
            format!("{KEY}\n{KEY}"),
            format!("{KEY}\rssh-ed25519 AAAA"),
            format!("{KEY_NO_COMMENT} comment\0with nul"),
            ECDSA.to_owned(),
            "ssh-ed25519".to_owned(),
            "ssh-ed25519 AAAA".to_owned(),
            "ssh-ed25519 not-base64!".to_owned(),
            // Valid base64, valid type prefix, but padded with extra bytes.
            format!(
                "ssh-ed25519 {}",
                STANDARD
                    .encode([STANDARD.decode(&KEY_NO_COMMENT[12..]).unwrap(), vec![0; 3]].concat())
            ),
            "garbage".to_owned(),
            String::new(),
        ] {
            let err = parse_replication_key(&bad).unwrap_err();
            assert!(matches!(err, SshError::InvalidKey { .. }), "{bad:?}: {err}");
        }
        let err = parse_replication_key(&format!("command=\"x\" {KEY}")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid public key: 'command=\"x\"' is not an accepted key type (expected ssh-ed25519; options before the key are not accepted)"
        );
    }

    fn owner_of(path: &Path) -> (u32, u32) {
        let meta = std::fs::metadata(path).unwrap();
        (meta.uid(), meta.gid())
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[tokio::test]
    async fn authorize_in_home_creates_and_is_idempotent() {
        let home = tempfile::tempdir().unwrap();
        let (uid, gid) = owner_of(home.path());
        let outcome = authorize_in_home(home.path(), uid, gid, KEY, "nas1")
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

        // Same key again, with another comment or from another source: no change.
        for (key, source) in [(KEY, "nas1"), (KEY_NO_COMMENT, "nas3")] {
            let outcome = authorize_in_home(home.path(), uid, gid, key, source)
                .await
                .unwrap();
            assert_eq!(outcome, AuthorizeOutcome::AlreadyPresent);
        }
        assert_eq!(std::fs::read_to_string(&keys).unwrap(), expected);
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
        let outcome = authorize_in_home(home.path(), uid, gid, KEY, "nas1")
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

        // A key present with options counts as present.
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(other.path().join(".ssh")).unwrap();
        let with_options = format!("restrict,command=\"zfs recv\" {KEY}\n");
        std::fs::write(other.path().join(".ssh/authorized_keys"), &with_options).unwrap();
        let outcome = authorize_in_home(other.path(), uid, gid, KEY, "nas1")
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
        let err = authorize_in_home(home.path(), uid, gid, KEY, "nas1")
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
            let err = authorize_in_home(home.path(), uid, gid, KEY, "nas1")
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
        let err = authorize_in_home(home.path(), uid, gid, KEY, "nas1")
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
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SshError::InvalidKey { .. }), "{err}");
        let err = authorize_in_home(home.path(), uid, gid, KEY, "nas 1; x")
            .await
            .unwrap_err();
        assert!(matches!(err, SshError::InvalidSystem(_)), "{err}");
        assert!(!home.path().join(".ssh").exists());

        let err = authorize_key("nasfleet-no-such-user", KEY, "nas1")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Provided user \"nasfleet-no-such-user\" does not exist"
        );
        let err = authorize_key("-oX", KEY, "nas1").await.unwrap_err();
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
        let outcome = authorize_in_home(home.path(), uid, gid, KEY, "nas1")
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
            authorize_in_home(home.path(), uid, gid, &other_key(n), "nas1")
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
                    let outcome = authorize_in_home(&home, uid, gid, &other_key(n + 4), "nas2")
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

    fn failed(code: i32, stderr: &str) -> ProcessError {
        ProcessError::Failed {
            command: "ssh ...".into(),
            code: Some(code),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn classifies_ssh_failures() {
        let mut t = target();
        t.port = 2222;
        let err = classify(
            &t,
            failed(255, "root@127.0.0.3: Permission denied (publickey)."),
        );
        assert_eq!(
            err.to_string(),
            "Authentication as root on 127.0.0.3:2222 failed: the target has not authorized this system's replication key (run `nasfleet ssh-connection create SOURCE TARGET`)"
        );
        for stderr in [
            "Host key verification failed.",
            "No ED25519 host key is known for [127.0.0.3]:2222 and you have requested strict checking.\nHost key verification failed.",
            "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@",
        ] {
            let err = classify(&t, failed(255, stderr));
            assert!(matches!(err, SshError::HostKeyMismatch { .. }), "{stderr}");
            assert!(
                err.to_string().starts_with(
                    "The SSH host key of 127.0.0.3:2222 does not match the host key pinned for it"
                ),
                "{err}"
            );
        }
        let err = classify(
            &t,
            failed(
                255,
                "ssh: connect to host 127.0.0.3 port 2222: Connection refused",
            ),
        );
        assert_eq!(
            err.to_string(),
            "[EACCES] Unable to connect to port 2222 on 127.0.0.3"
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(
            source,
            "ssh: connect to host 127.0.0.3 port 2222: Connection refused"
        );
        let err = classify(
            &t,
            failed(
                255,
                "ssh: connect to host 127.0.0.3 port 2222: Connection timed out",
            ),
        );
        assert!(matches!(err, SshError::Unreachable { .. }));

        // The remote command's own failures keep their text.
        let err = classify(
            &t,
            failed(1, "cannot open 'tank/x': Permission denied (publickey)"),
        );
        assert!(matches!(err, SshError::Remote { .. }));
        let err = classify(&t, failed(1, "cannot receive: destination exists"));
        assert_eq!(
            err.to_string(),
            "the remote command on 127.0.0.3:2222 failed (exit code 1): cannot receive: destination exists"
        );
        let err = classify(
            &t,
            ProcessError::TimedOut {
                command: "ssh ...".into(),
                after: Duration::from_secs(5),
            },
        );
        assert_eq!(err.to_string(), "`ssh ...` timed out after 5s");
    }

    async fn free_port() -> u16 {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn reachability() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        check_reachable("127.0.0.1", port, Duration::from_secs(3))
            .await
            .unwrap();
        drop(listener);
        let err = check_reachable("127.0.0.1", port, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("[EACCES] Unable to connect to port {port} on 127.0.0.1")
        );
        match err {
            SshError::Unreachable { reason, .. } => {
                assert_eq!(reason.kind(), io::ErrorKind::ConnectionRefused)
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn login_to_nothing_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let known_hosts = dir.path().join("known_hosts");
        let port = free_port().await;
        write_known_hosts(&known_hosts, "127.0.0.1", port, &[KEY.to_owned()])
            .await
            .unwrap();
        let t = SshTarget {
            user: "root".into(),
            host: "127.0.0.1".into(),
            port,
            identity: dir.path().join("id"),
            known_hosts,
            control_path: None,
        };
        let err = check_login(&t, Duration::from_secs(20)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("[EACCES] Unable to connect to port {port} on 127.0.0.1"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn replication_key_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = ensure_replication_key(dir.path(), "nas1").await.unwrap();
        assert_eq!(key.private_key, dir.path().join(REPLICATION_KEY_FILE));
        assert_eq!(mode_of(&key.private_key), 0o600);
        assert!(
            key.public_key
                .starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA")
        );
        assert!(key.public_key.ends_with(" nasfleet-replication@nas1"));
        assert_eq!(key.public_key.lines().count(), 1);
        parse_replication_key(&key.public_key).unwrap();

        let again = ensure_replication_key(dir.path(), "nas1").await.unwrap();
        assert_eq!(again, key);

        // A lost public half is derived from the private key again, and
        // loose permissions are tightened.
        std::fs::remove_file(public_path(&key.private_key)).unwrap();
        std::fs::set_permissions(&key.private_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let again = ensure_replication_key(dir.path(), "nas1").await.unwrap();
        assert_eq!(again, key);
        assert_eq!(mode_of(&key.private_key), 0o600);
        // Only the pair is left behind.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["replication_ed25519", "replication_ed25519.pub"]);

        let err = ensure_replication_key(dir.path(), "bad name")
            .await
            .unwrap_err();
        assert!(matches!(err, SshError::InvalidSystem(_)), "{err}");
    }

    #[tokio::test]
    async fn concurrent_first_use_agrees_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = tokio::join!(
            ensure_replication_key(dir.path(), "nas1"),
            ensure_replication_key(dir.path(), "nas1")
        );
        assert_eq!(a.unwrap(), b.unwrap());
    }
}
