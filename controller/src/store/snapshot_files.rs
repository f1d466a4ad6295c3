//! Long lists of one dataset's snapshots kept in files inside the store's directory, with only a small reference in sled: sled keeps every value it wrote or read in memory whatever its cache bound, so a million snapshots' 60 MB would otherwise stay resident for good.
//!
//! A file is named after its dataset and its content (two SHA-256
//! prefixes), written whole under a temporary name, synced and renamed, so
//! a name always holds the complete list it stands for and the same list is
//! never written twice. A file whose reference was replaced or removed is
//! deleted only once that change is durable in sled (see
//! [`SnapshotFiles::after_flush`]); a crash in between leaves an orphan,
//! which the next [`SnapshotFiles::sweep`] at open deletes.

use super::StoreError;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Encoded lists longer than this (about a thousand snapshots) go to a file;
/// shorter ones stay in sled, where a small value costs less than a file.
pub(super) const FILE_THRESHOLD: usize = 64 * 1024;

/// The directory, inside sled's own, that holds the files.
const DIR_NAME: &str = "snapshot-lists";

/// Starts a reference value. 0xFF cannot start an encoded
/// `DatasetSnapshots` (wire type 7 does not exist), so a value is a
/// reference exactly when it starts with this.
const MARK: [u8; 2] = [0xFF, b'F'];

/// What sled keeps for a list kept in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reference {
    /// Snapshots in the list, so counting them reads no file.
    pub count: u64,
    /// The file's length, checked when it is read.
    pub len: u64,
    /// The file's name in the directory.
    pub name: String,
}

impl Reference {
    pub fn encode(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(MARK.len() + 16 + self.name.len());
        value.extend_from_slice(&MARK);
        value.extend_from_slice(&self.count.to_le_bytes());
        value.extend_from_slice(&self.len.to_le_bytes());
        value.extend_from_slice(self.name.as_bytes());
        value
    }

    /// `None` when `value` is a list itself; an error when it starts like a
    /// reference but is not a whole one.
    pub fn decode(key: &[u8], value: &[u8]) -> Option<Result<Reference, StoreError>> {
        let rest = value.strip_prefix(&MARK)?;
        let bad = || StoreError::SnapshotFile {
            path: String::from_utf8_lossy(key).replace('\0', "/"),
            source: io::Error::new(io::ErrorKind::InvalidData, "a malformed file reference"),
        };
        let Some((count, rest)) = rest.split_first_chunk::<8>() else {
            return Some(Err(bad()));
        };
        let Some((len, name)) = rest.split_first_chunk::<8>() else {
            return Some(Err(bad()));
        };
        let name = match std::str::from_utf8(name) {
            Ok(name) if is_file_name(name) => name.to_owned(),
            _ => return Some(Err(bad())),
        };
        Some(Ok(Reference {
            count: u64::from_le_bytes(*count),
            len: u64::from_le_bytes(*len),
            name,
        }))
    }
}

/// `<16 hex digits of the dataset>-<32 hex digits of the content>`: what
/// [`SnapshotFiles::put`] names files; nothing else is ever opened.
fn is_file_name(name: &str) -> bool {
    name.len() == 16 + 1 + 32
        && name.bytes().enumerate().all(|(i, b)| {
            if i == 16 {
                b == b'-'
            } else {
                b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
            }
        })
}

fn file_name(system: &str, dataset: &str, list: &[u8]) -> String {
    let mut owner = Sha256::new();
    owner.update(system.as_bytes());
    owner.update([0]);
    owner.update(dataset.as_bytes());
    let owner = hex::encode(owner.finalize());
    let content = hex::encode(Sha256::digest(list));
    format!("{}-{}", &owner[..16], &content[..32])
}

/// The files, and what the writer thread must do around its next flush.
pub(super) struct SnapshotFiles {
    dir: PathBuf,
    /// A file was renamed into the directory since its last sync.
    renamed: AtomicBool,
    /// Files whose reference went in a write not yet flushed, with the key
    /// it was under: deleted after the flush unless the key refers to them
    /// again by then.
    doomed: Mutex<Vec<(Vec<u8>, String)>>,
}

impl SnapshotFiles {
    /// The files of the store at `store_dir`; creates the directory.
    pub fn open(store_dir: &Path) -> Result<SnapshotFiles, StoreError> {
        let dir = store_dir.join(DIR_NAME);
        fs::create_dir_all(&dir).map_err(|source| file_error(&dir, source))?;
        Ok(SnapshotFiles {
            dir,
            renamed: AtomicBool::new(false),
            doomed: Mutex::default(),
        })
    }

    /// Keeps `list` (the encoded `DatasetSnapshots` of `dataset` of
    /// `system`, `count` snapshots) in a file, unless that file is there
    /// already, and returns its reference. Call it on the writer thread.
    pub fn put(
        &self,
        system: &str,
        dataset: &str,
        list: &[u8],
        count: u64,
    ) -> Result<Reference, StoreError> {
        let name = file_name(system, dataset, list);
        let path = self.dir.join(&name);
        if !path.exists() {
            let temporary = self.dir.join(format!("{name}.tmp"));
            let write = || -> io::Result<()> {
                let mut file = fs::File::create(&temporary)?;
                file.write_all(list)?;
                file.sync_all()?;
                fs::rename(&temporary, &path)
            };
            if let Err(source) = write() {
                let _ = fs::remove_file(&temporary);
                return Err(file_error(&path, source));
            }
            self.renamed.store(true, Ordering::Release);
        }
        Ok(Reference {
            count,
            len: list.len() as u64,
            name,
        })
    }

    /// The list a reference stands for.
    pub fn read(&self, reference: &Reference) -> Result<Vec<u8>, StoreError> {
        let path = self.dir.join(&reference.name);
        let list = fs::read(&path).map_err(|source| file_error(&path, source))?;
        if list.len() as u64 != reference.len {
            return Err(file_error(
                &path,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} bytes where {} were written", list.len(), reference.len),
                ),
            ));
        }
        Ok(list)
    }

    /// `value`, just replaced or removed under `key`, is no longer needed
    /// once that is durable (if it is a reference at all).
    pub fn release(&self, key: &[u8], value: &[u8]) {
        if let Some(Ok(reference)) = Reference::decode(key, value) {
            self.doomed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((key.to_vec(), reference.name));
        }
    }

    /// Before sled's flush: the renames of the batch's new files become
    /// durable first, so no durable reference names a file that is not.
    pub fn before_flush(&self) -> Result<(), StoreError> {
        if self.renamed.swap(false, Ordering::AcqRel) {
            let sync = fs::File::open(&self.dir).and_then(|dir| dir.sync_all());
            if let Err(source) = sync {
                self.renamed.store(true, Ordering::Release);
                return Err(file_error(&self.dir, source));
            }
        }
        Ok(())
    }

    /// After a successful flush: deletes the released files that `current`
    /// (the value now under their key) does not refer to again.
    pub fn after_flush(&self, current: impl Fn(&[u8]) -> Option<Vec<u8>>) {
        let doomed = std::mem::take(&mut *self.doomed.lock().unwrap_or_else(|p| p.into_inner()));
        for (key, name) in doomed {
            let again = current(&key)
                .and_then(|value| Reference::decode(&key, &value)?.ok())
                .is_some_and(|reference| reference.name == name);
            if !again {
                let path = self.dir.join(&name);
                if let Err(e) = fs::remove_file(&path)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete a snapshot list no longer used");
                }
            }
        }
    }

    /// At open: deletes every file no reference names (left by a crash
    /// between a write and its flush, or before a deletion), and temporary
    /// files. Returns how many it deleted.
    pub fn sweep(&self, referenced: &HashSet<String>) -> Result<usize, StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| file_error(&self.dir, source))?;
        let mut deleted = 0;
        for entry in entries {
            let entry = entry.map_err(|source| file_error(&self.dir, source))?;
            let name = entry.file_name();
            if referenced.contains(name.to_string_lossy().as_ref()) {
                continue;
            }
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => deleted += 1,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete an unused snapshot list")
                }
            }
        }
        Ok(deleted)
    }
}

fn file_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::SnapshotFile {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_survives_encoding_and_nothing_else_passes_for_one() {
        let reference = Reference {
            count: 1_000_000,
            len: 61_000_000,
            name: file_name("nas1", "tank/a", b"list"),
        };
        let value = reference.encode();
        assert!(value.len() < 80);
        assert_eq!(Reference::decode(b"k", &value).unwrap().unwrap(), reference);
        // A list itself (field 1, length-delimited) or an empty one is no reference.
        assert!(Reference::decode(b"k", &[0x0a, 0x02, 0x08, 0x01]).is_none());
        assert!(Reference::decode(b"k", &[]).is_none());
        // A name that could leave the directory is refused.
        let mut evil = value[..18].to_vec();
        evil.extend_from_slice(b"../../../../etc/passwd");
        assert!(Reference::decode(b"k", &evil).unwrap().is_err());
        // Cut short: an error too.
        assert!(Reference::decode(b"k", &value[..9]).unwrap().is_err());
    }

    #[test]
    fn a_file_is_written_once_read_back_checked_and_deleted_only_when_unreferenced() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        let list = vec![7u8; FILE_THRESHOLD + 1];
        let first = files.put("nas1", "tank/a", &list, 3).unwrap();
        let path = dir.path().join(DIR_NAME).join(&first.name);
        let written = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let again = files.put("nas1", "tank/a", &list, 3).unwrap();
        assert_eq!(again, first);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), written);
        assert_eq!(files.read(&first).unwrap(), list);
        files.before_flush().unwrap();

        // Released, then referred to again before the flush: kept.
        let value = first.encode();
        files.release(b"nas1\0tank/a", &value);
        files.after_flush(|_| Some(value.clone()));
        assert!(path.exists());
        // Released and not referred to: deleted.
        files.release(b"nas1\0tank/a", &value);
        files.after_flush(|_| None);
        assert!(!path.exists());
        assert!(files.read(&first).is_err());
    }

    #[test]
    fn a_truncated_file_is_an_error_not_a_shorter_list() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        let reference = files.put("nas1", "tank/a", &[1, 2, 3, 4], 1).unwrap();
        fs::write(dir.path().join(DIR_NAME).join(&reference.name), [1, 2]).unwrap();
        let err = files.read(&reference).unwrap_err().to_string();
        assert!(err.contains("2 bytes where 4 were written"), "{err}");
    }

    #[test]
    fn the_sweep_deletes_what_no_reference_names() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        let kept = files.put("nas1", "tank/a", b"kept", 1).unwrap();
        let orphan = files.put("nas1", "tank/b", b"orphan", 1).unwrap();
        fs::write(dir.path().join(DIR_NAME).join("x.tmp"), b"half").unwrap();
        let referenced = HashSet::from([kept.name.clone()]);
        assert_eq!(files.sweep(&referenced).unwrap(), 2);
        assert!(files.read(&kept).is_ok());
        assert!(files.read(&orphan).is_err());
    }
}
