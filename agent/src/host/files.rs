//! Writing a file so that readers see the old one or the new one, never a part (a temporary sibling, fsync, rename), with the mode asked for.

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A file operation that failed, with what was being done and where: the
/// one shape of "cannot ACTION PATH: REASON" for every layer of the agent.
#[derive(Debug, Error)]
#[error("cannot {action} {}: {source}", .path.display())]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Names what was being done where, for `map_err`.
pub fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError {
        action,
        path: path.to_owned(),
        source,
    }
}

/// A name next to `path` that no other writer uses.
pub fn temp_sibling(path: &Path) -> PathBuf {
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
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
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
