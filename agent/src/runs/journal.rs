//! The run journal in `STATE_DIR/runs/`: `<id>.work` is written when a run starts (so a second StartRun for the same id is ignored) and `<id>.result` when it ends; both go once the controller acknowledges the result. Records appear whole or not at all.

use nasfleet_proto::v1::RunResult;
use prost::Message;
use std::path::PathBuf;
use thiserror::Error;

use crate::host::files::{FileError, io_error};

/// Why the journal could not be read or written.
#[derive(Debug, Error)]
pub enum JournalError {
    #[error(transparent)]
    Io(#[from] FileError),
}

/// The journal directory.
pub(super) struct Journal {
    pub(super) dir: PathBuf,
}

impl Journal {
    /// The journal in `dir`, created if missing.
    pub(super) async fn create(dir: PathBuf) -> Result<Journal, JournalError> {
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_error("create", &dir))?;
        Ok(Journal { dir })
    }

    fn path(&self, run_id: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("{run_id}.{ext}"))
    }

    pub(super) async fn write(
        &self,
        run_id: u64,
        ext: &str,
        bytes: Vec<u8>,
    ) -> Result<(), JournalError> {
        let path = self.path(run_id, ext);
        let tmp = self.path(run_id, &format!("{ext}.tmp"));
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(io_error("write", &tmp))?;
        // Rename makes the record appear whole or not at all.
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(io_error("rename", &path))?;
        Ok(())
    }

    pub(super) async fn remove(&self, run_id: u64) {
        for ext in ["work", "result"] {
            let _ = tokio::fs::remove_file(self.path(run_id, ext)).await;
        }
    }

    pub(super) fn has(&self, run_id: u64) -> bool {
        self.path(run_id, "work").exists() || self.path(run_id, "result").exists()
    }

    pub(super) async fn result(&self, run_id: u64) -> Option<RunResult> {
        let bytes = tokio::fs::read(self.path(run_id, "result")).await.ok()?;
        RunResult::decode(bytes.as_slice()).ok()
    }

    /// Ids with a journal entry, by kind of file.
    pub(super) fn entries(&self) -> (Vec<u64>, Vec<u64>) {
        let mut work = Vec::new();
        let mut results = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let Some((id, ext)) = name.split_once('.') else {
                    continue;
                };
                let Ok(id) = id.parse::<u64>() else { continue };
                match ext {
                    "work" => work.push(id),
                    "result" => results.push(id),
                    _ => {}
                }
            }
        }
        work.sort_unstable();
        results.sort_unstable();
        (work, results)
    }
}
