//! The controller's durable state on sled: systems, join tokens, issued certificates, inventories, tasks, runs, SSH connections, users, the audit log, alerts, notification channels and their outbox.
//!
//! Everything sled-specific stays in this module so the embedded store can
//! be swapped. Values are JSON (readable with any sled dump tool) except
//! inventories, tasks and runs, which are kept as protobuf bytes.
//!
//! Reads go straight to sled from any thread. Every write goes through
//! [`Store::write`]: one writer thread applies it and answers only after
//! the flush that made it durable (see `writer`). Write methods exist only
//! on [`Write`], which only the writer hands out, so no code path can write
//! without that guarantee.

mod alerts;
mod audit;
mod inventories;
mod migrate;
mod notify;
mod people;
mod snapshot_files;
mod writer;

pub use alerts::{AlertRecord, MAX_CLEARED_ALERTS};
pub use audit::{AuditEntry, AuditFilter, AuditRetention, DEFAULT_AUDIT_RETENTION};
#[cfg(test)]
pub(crate) use notify::sample_message;
pub use notify::{
    ChannelRecord, ChannelTarget, DeliveryStats, MAX_OUTBOX, OutboxEntry, SmtpRelay, SmtpSecurity,
};
pub use people::{LoginCert, LoginError, LoginRefusal, UserRecord, UserTokenRecord};

use nasfleet_proto::v1::{Run, RunState, StartRun, Task};
use prost::Message;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::oneshot;
use writer::Writer;

pub use inventories::{StoredInventory, count_snapshots, stored_form};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store record '{key}' is not valid protobuf: {source}")]
    CorruptProto {
        key: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("store record '{key}' is corrupt: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("store record could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("store write not made durable: {0}")]
    Flush(String),
    #[error("the store is closing; the write was not made")]
    Closed,
    #[error("the store write failed inside the writer and was not made")]
    Dropped,
    #[error("cannot start the store's writer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("snapshot list file {path}: {source}")]
    SnapshotFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why an enrollment was refused. Nothing is written in any of these cases.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnrollRefusal {
    #[error("token: unknown join token (create one with `nasfleet token create`)")]
    UnknownToken,
    #[error("token: this join token was already used (by system '{0}'); create a new one")]
    TokenUsed(String),
    #[error("token: this join token expired; create a new one")]
    TokenExpired,
    #[error(
        "name: a system named '{0}' is already enrolled; remove it first or choose another name"
    )]
    NameTaken(String),
}

#[derive(Debug, Error)]
pub enum EnrollError {
    #[error(transparent)]
    Refused(#[from] EnrollRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SystemRecord {
    pub name: String,
    pub enrolled_unix_ms: i64,
    pub cert_serial: String,
    /// When `cert_serial` expires; 0 if not known (enrolled before this was kept).
    #[serde(default)]
    pub cert_expires_unix_ms: i64,
    /// A renewed certificate the agent has not connected with yet; the one
    /// before stays valid until it does.
    #[serde(default)]
    pub next_cert_serial: Option<String>,
    #[serde(default)]
    pub next_cert_expires_unix_ms: i64,
    /// 0 until the agent first connects.
    pub last_seen_unix_ms: i64,
    pub address: String,
    pub agent_version: String,
    pub pools: Vec<String>,
    /// When the stored inventory was collected (0: never reported).
    #[serde(default)]
    pub inventory_unix_ms: i64,
    /// Why the stored inventory is stale; cleared by the next whole one.
    #[serde(default)]
    pub inventory_problem: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub created_unix_ms: i64,
    pub expires_unix_ms: i64,
    pub created_by: String,
    pub used_by: Option<String>,
    pub used_unix_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertRecord {
    /// The certificate's common name (`system:<name>` or `user:<name>`).
    pub principal: String,
    /// For users of a controller from before user records: their role
    /// (`admin`), read once to make their record (see `migrate`). The role
    /// lives in the user's record now.
    pub role: Option<String>,
    pub issued_unix_ms: i64,
    pub revoked_unix_ms: Option<i64>,
}

/// Handle to the store; cheap to clone. Reads through `Deref` to [`Tables`];
/// writes through [`Store::write`].
#[derive(Clone)]
pub struct Store {
    tables: Arc<Tables>,
    writer: Arc<Writer>,
}

/// The store's trees; every method here only reads.
pub struct Tables {
    db: sled::Db,
    systems: sled::Tree,
    tokens: sled::Tree,
    certs: sled::Tree,
    /// system → its inventory without snapshots (see `inventories`).
    inventories: sled::Tree,
    /// system \0 dataset → `v1::DatasetSnapshots`, or for a long list a
    /// reference to its file in `snapshot_files`.
    dataset_snapshots: sled::Tree,
    snapshot_files: snapshot_files::SnapshotFiles,
    /// task id (u64 BE) → `v1::Task` (spec and fixed fields; status is derived).
    tasks: sled::Tree,
    /// run id (u64 BE) → `v1::Run`.
    runs: sled::Tree,
    /// task id BE ++ run id BE → (): runs of a task in id order.
    runs_by_task: sled::Tree,
    /// run id BE ++ system → `v1::StartRun` for parts not yet finished; offered again after restarts.
    active_runs: sled::Tree,
    /// task id BE → i64 BE unix ms: the scheduler has handled every fire up to here.
    schedule_marks: sled::Tree,
    /// Counters and other single values.
    meta: sled::Tree,
    /// "source\0target" → SshConnectionRecord.
    ssh_connections: sled::Tree,
    /// task id BE ++ system → PendingRelease: holds of a deleted or
    /// edited replication task that a system has yet to release.
    pending_releases: sled::Tree,
    /// user name → UserRecord.
    users: sled::Tree,
    /// SHA-256 of a sign-in token → UserTokenRecord.
    user_tokens: sled::Tree,
    /// sequence number (u64 BE) → AuditEntry.
    audit: sled::Tree,
    /// alert id (u64 BE) → AlertRecord.
    alerts: sled::Tree,
    /// channel name → ChannelRecord.
    channels: sled::Tree,
    /// message id (u64 BE) → OutboxEntry: notifications not yet delivered.
    outbox: sled::Tree,
    /// What the store measures about itself, for the metrics.
    pub telemetry: Arc<StoreTelemetry>,
    /// task id → id of its run that has not ended: built from the active
    /// runs when the store opens, kept by [`Write::put_run`], so starting
    /// a run need not read every active run.
    running_by_task: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
    /// Bumped by every task write; [`Tables::tasks_shared`] decodes again
    /// only when it moved.
    tasks_generation: std::sync::atomic::AtomicU64,
    /// The decoded tasks and the generation they were read at.
    tasks_decoded: std::sync::Mutex<Option<(u64, Arc<Vec<Task>>)>>,
    /// Every system record, decoded: read when the store opens and kept by
    /// each write of the systems tree, so listing 10,000 systems decodes
    /// none and a session's lookups never touch the disk.
    systems_by_name: std::sync::RwLock<BTreeMap<String, Arc<SystemRecord>>>,
    /// Bumped by every write of a system record.
    systems_generation: std::sync::atomic::AtomicU64,
}

/// Measurements of the store since it was opened.
#[derive(Default)]
pub struct StoreTelemetry {
    /// From a write's submission until its caller is answered: waiting in
    /// the queue, being applied, and the batch's flush.
    pub write_latency: nasfleet_common::histogram::Histogram,
    /// Runs that reached a final state, by task id and state.
    pub runs_finished: std::sync::Mutex<std::collections::BTreeMap<(u64, i32), u64>>,
}

/// Datasets on `system` whose snapshots may still carry task `task_id`'s
/// hold (and on a source its cursor bookmarks), to be released there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingRelease {
    pub task_id: u64,
    pub system: String,
    pub datasets: Vec<String>,
}

fn pending_release_key(task_id: u64, system: &str) -> Vec<u8> {
    let mut key = task_id.to_be_bytes().to_vec();
    key.extend_from_slice(system.as_bytes());
    key
}

/// SSH trust from a source system to a target system, as set up by the controller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshConnectionRecord {
    pub source: String,
    pub target: String,
    /// host:port of the target's sshd.
    pub address: String,
    pub user: String,
    /// The target's host public keys, pinned when the connection was made.
    pub host_keys: Vec<String>,
    pub host_key_fingerprints: Vec<String>,
    /// The source's replication public key the target authorized.
    pub public_key: String,
    pub created_unix_ms: i64,
}

/// A new secret: `prefix` and 160 random bits in hex. Guessing one is
/// hopeless within any token's lifetime.
pub fn new_token(prefix: &str) -> String {
    let secret: [u8; 20] = rand::random();
    format!("{prefix}{}", hex::encode(secret))
}

/// Secrets (join, sign-in and console tokens, session ids) are kept only
/// as this hash: a copy of the store cannot sign anyone in.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(StoreError::Encode)
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// Sled's transaction error carrying our abort reason, flattened.
fn flatten<E>(err: TransactionError<E>) -> Result<E, StoreError> {
    match err {
        TransactionError::Abort(e) => Ok(e),
        TransactionError::Storage(e) => Err(StoreError::Sled(e)),
    }
}

/// sled's page cache (its default is 1 GiB). What the controller reads
/// often is decoded in memory anyway (systems, tasks, running runs); without
/// a bound, each inventory written (60 MB for a million snapshots) would stay
/// in the cache.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// How long closing the store waits for queued writes by default.
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

impl Store {
    /// Opens (or creates) the store and starts its writer.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // The writer flushes every batch itself; sled's timer-driven flusher
        // would be a second, concurrent flusher.
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        let tables = Arc::new(Tables {
            systems: db.open_tree("systems")?,
            tokens: db.open_tree("tokens")?,
            certs: db.open_tree("certs")?,
            inventories: db.open_tree("inventories")?,
            dataset_snapshots: db.open_tree("dataset_snapshots")?,
            snapshot_files: snapshot_files::SnapshotFiles::open(path)?,
            tasks: db.open_tree("tasks")?,
            runs: db.open_tree("runs")?,
            runs_by_task: db.open_tree("runs_by_task")?,
            active_runs: db.open_tree("active_runs")?,
            schedule_marks: db.open_tree("schedule_marks")?,
            meta: db.open_tree("meta")?,
            ssh_connections: db.open_tree("ssh_connections")?,
            pending_releases: db.open_tree("pending_releases")?,
            users: db.open_tree("users")?,
            user_tokens: db.open_tree("user_tokens")?,
            audit: db.open_tree("audit")?,
            alerts: db.open_tree("alerts")?,
            channels: db.open_tree("channels")?,
            outbox: db.open_tree("outbox")?,
            telemetry: Arc::default(),
            running_by_task: Default::default(),
            tasks_generation: Default::default(),
            tasks_decoded: Default::default(),
            systems_by_name: Default::default(),
            systems_generation: Default::default(),
            db,
        });
        migrate::migrate(&tables)?;
        tables.index_running()?;
        tables.load_systems()?;
        tables.sweep_snapshot_files()?;
        let writer = Arc::new(Writer::start(tables.clone())?);
        Ok(Store { tables, writer })
    }

    /// Applies `op` on the writer thread and answers once it is durable.
    /// Writes are applied one at a time in arrival order, so `op` may read
    /// and then write without another write slipping in between. `op`
    /// must not block on anything but the store.
    pub async fn write<R: Send + 'static>(
        &self,
        op: impl FnOnce(&Write<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.submit(op)?.await.map_err(|_| StoreError::Dropped)?
    }

    /// [`Store::write`] for callers outside the async runtime (init, tests).
    pub fn write_blocking<R: Send + 'static>(
        &self,
        op: impl FnOnce(&Write<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.submit(op)?
            .blocking_recv()
            .map_err(|_| StoreError::Dropped)?
    }

    fn submit<R: Send + 'static>(
        &self,
        op: impl FnOnce(&Write<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<R, StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let (telemetry, submitted) = (self.tables.telemetry.clone(), std::time::Instant::now());
        self.writer.submit(Box::new(move |tables: &Tables| {
            let outcome = op(&Write { tables });
            Box::new(move |flushed: Result<(), Arc<str>>| {
                telemetry.write_latency.observe(submitted.elapsed());
                let answer = match (outcome, flushed) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(StoreError::Flush(e.to_string())),
                    (Ok(value), Ok(())) => Ok(value),
                };
                // A caller that gave up waiting is no reason to fail others.
                let _ = tx.send(answer);
            })
        }))?;
        Ok(rx)
    }

    /// Refuses new writes, makes every queued write durable and answers it,
    /// and waits for that at most `deadline`. Returns whether the writer
    /// finished in time. Callers that wrote afterwards get
    /// [`StoreError::Closed`].
    pub async fn close(&self, deadline: Duration) -> bool {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || writer.close(deadline))
            .await
            .unwrap_or(false)
    }

    /// [`Store::close`] outside the async runtime.
    pub fn close_blocking(&self, deadline: Duration) -> bool {
        self.writer.close(deadline)
    }

    /// A new id for a task or run: 1, 2, 3, ... durable before it is
    /// returned, so an id is never handed out twice, not even after a
    /// crash. (sled's own generate_id jumps by a million per restart,
    /// which makes ids people must type needlessly long.)
    pub async fn next_id(&self) -> Result<u64, StoreError> {
        self.write(|w| w.next_id()).await
    }
}

impl Deref for Store {
    type Target = Tables;
    fn deref(&self) -> &Tables {
        &self.tables
    }
}

impl Tables {
    pub fn cert(&self, serial_hex: &str) -> Result<Option<CertRecord>, StoreError> {
        self.certs
            .get(serial_hex)?
            .map(|v| decode(serial_hex.as_bytes(), &v))
            .transpose()
    }

    /// Whether a token with this hash was ever created (used or not).
    pub fn tokens_contain(&self, token_hash: &str) -> Result<bool, StoreError> {
        Ok(self.tokens.contains_key(token_hash)?)
    }

    pub fn system(&self, name: &str) -> Result<Option<SystemRecord>, StoreError> {
        Ok(self
            .systems_read()
            .get(name)
            .map(|r| SystemRecord::clone(r)))
    }

    /// The enrolled system whose name equals `name` ignoring ASCII case.
    pub fn system_named_like(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .systems_read()
            .keys()
            .find(|key| key.eq_ignore_ascii_case(name))
            .cloned())
    }

    /// All systems, ordered by name.
    pub fn systems(&self) -> Result<Vec<Arc<SystemRecord>>, StoreError> {
        Ok(self.systems_read().values().cloned().collect())
    }

    fn load_systems(&self) -> Result<(), StoreError> {
        let mut loaded = BTreeMap::new();
        for item in self.systems.iter() {
            let (k, v) = item?;
            let record: SystemRecord = decode(&k, &v)?;
            loaded.insert(record.name.clone(), Arc::new(record));
        }
        self.change_systems(true, |systems| *systems = loaded);
        Ok(())
    }

    fn systems_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<SystemRecord>>> {
        self.systems_by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Counts changes of system records other than a new "last seen"
    /// alone (which every inventory brings): equal counts mean the same
    /// systems with the same pools, versions and addresses.
    pub fn systems_generation(&self) -> u64 {
        self.systems_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Only the writer thread calls this, right after the tree changed.
    /// `counts`: whether the change moves [`Tables::systems_generation`].
    fn change_systems(
        &self,
        counts: bool,
        change: impl FnOnce(&mut BTreeMap<String, Arc<SystemRecord>>),
    ) {
        change(
            &mut self
                .systems_by_name
                .write()
                .unwrap_or_else(|p| p.into_inner()),
        );
        // After the change: a reader that saw the old count and the new
        // records only rebuilds once more.
        if counts {
            self.systems_generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    pub fn task(&self, id: u64) -> Result<Option<Task>, StoreError> {
        self.tasks
            .get(id.to_be_bytes())?
            .map(|v| decode_proto(&id.to_string(), &v))
            .transpose()
    }

    /// Every task, in id order.
    pub fn tasks(&self) -> Result<Vec<Task>, StoreError> {
        self.tasks
            .iter()
            .values()
            .map(|v| decode_proto("task", &v?))
            .collect()
    }

    /// Every task, decoded once per change of the tasks: for callers that
    /// look at all tasks often (each snapshot run's retention, say).
    pub fn tasks_shared(&self) -> Result<Arc<Vec<Task>>, StoreError> {
        use std::sync::atomic::Ordering;
        // Read before the tree: a write during the read leaves the result
        // tagged older than the tasks, so the next call decodes again.
        let generation = self.tasks_generation.load(Ordering::Acquire);
        {
            let cached = self.tasks_decoded.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, tasks)) = cached.as_ref()
                && *at == generation
            {
                return Ok(tasks.clone());
            }
        }
        let tasks = Arc::new(self.tasks()?);
        *self.tasks_decoded.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((generation, tasks.clone()));
        Ok(tasks)
    }

    fn tasks_changed(&self) {
        self.tasks_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub fn run(&self, id: u64) -> Result<Option<Run>, StoreError> {
        self.runs
            .get(id.to_be_bytes())?
            .map(|v| decode_proto(&id.to_string(), &v))
            .transpose()
    }

    /// Runs of one task, newest first, at most `limit`.
    pub fn runs_of_task(&self, task_id: u64, limit: usize) -> Result<Vec<Run>, StoreError> {
        let mut runs = Vec::new();
        for key in self
            .runs_by_task
            .scan_prefix(task_id.to_be_bytes())
            .keys()
            .rev()
        {
            if runs.len() >= limit {
                break;
            }
            let key = key?;
            let Some(run_id) = key.get(8..16) else {
                continue;
            };
            if let Some(bytes) = self.runs.get(run_id)? {
                runs.push(decode_proto("run", &bytes)?);
            }
        }
        Ok(runs)
    }

    /// The newest run of one task that `keep` keeps, reading no further
    /// back than `limit` runs.
    pub fn latest_run_of_task(
        &self,
        task_id: u64,
        limit: usize,
        keep: impl Fn(&Run) -> bool,
    ) -> Result<Option<Run>, StoreError> {
        let mut found = None;
        self.visit_runs_of_task(task_id, limit, |run| {
            if keep(&run) {
                found = Some(run);
                return false;
            }
            true
        })?;
        Ok(found)
    }

    /// Hands the runs of one task to `visit`, newest first, at most
    /// `limit`, until it returns false; runs not read are not decoded.
    pub fn visit_runs_of_task(
        &self,
        task_id: u64,
        limit: usize,
        mut visit: impl FnMut(Run) -> bool,
    ) -> Result<(), StoreError> {
        for key in self
            .runs_by_task
            .scan_prefix(task_id.to_be_bytes())
            .keys()
            .rev()
            .take(limit)
        {
            let key = key?;
            let Some(run_id) = key.get(8..16) else {
                continue;
            };
            if let Some(bytes) = self.runs.get(run_id)?
                && !visit(decode_proto("run", &bytes)?)
            {
                break;
            }
        }
        Ok(())
    }

    /// All runs, newest first, at most `limit`.
    pub fn runs(&self, limit: usize) -> Result<Vec<Run>, StoreError> {
        self.runs_where(limit, |_| true)
    }

    /// The newest `limit` runs that `keep` keeps, newest first.
    pub fn runs_where(
        &self,
        limit: usize,
        mut keep: impl FnMut(&Run) -> bool,
    ) -> Result<Vec<Run>, StoreError> {
        let mut out = Vec::new();
        for bytes in self.runs.iter().values().rev() {
            if out.len() >= limit {
                break;
            }
            let run: Run = decode_proto("run", &bytes?)?;
            if keep(&run) {
                out.push(run);
            }
        }
        Ok(out)
    }

    /// Fills the running-run index from the active runs.
    fn index_running(&self) -> Result<(), StoreError> {
        let mut index = self.running_index();
        index.clear();
        for key in self.active_runs.iter().keys() {
            let key = key?;
            let Some(run_key) = key.get(..8) else {
                continue;
            };
            if let Some(bytes) = self.runs.get(run_key)? {
                let run: Run = decode_proto("run", &bytes)?;
                if !is_final(run.state()) {
                    index.insert(run.task_id, run.id);
                }
            }
        }
        Ok(())
    }

    fn running_index(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, u64>> {
        self.running_by_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The id of `task_id`'s run that has not ended, if any.
    pub fn running_run_of_task(&self, task_id: u64) -> Option<u64> {
        self.running_index().get(&task_id).copied()
    }

    /// Parts of runs that are not final yet: the run, the system, and the work it was sent.
    pub fn active_runs(&self) -> Result<Vec<(Run, String, StartRun)>, StoreError> {
        let mut active = Vec::new();
        for item in self.active_runs.iter() {
            let (key, work) = item?;
            let (Some(run_key), Some(system)) = (key.get(..8), key.get(8..)) else {
                continue;
            };
            let work: StartRun = decode_proto("active run", &work)?;
            if let Some(run) = self.runs.get(run_key)? {
                let system = String::from_utf8_lossy(system).into_owned();
                active.push((decode_proto("run", &run)?, system, work));
            }
        }
        Ok(active)
    }

    pub fn ssh_connection(
        &self,
        source: &str,
        target: &str,
    ) -> Result<Option<SshConnectionRecord>, StoreError> {
        let key = connection_key(source, target);
        self.ssh_connections
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    pub fn ssh_connections(&self) -> Result<Vec<SshConnectionRecord>, StoreError> {
        self.ssh_connections
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Every release still to be made, oldest task first.
    pub fn pending_releases(&self) -> Result<Vec<PendingRelease>, StoreError> {
        self.pending_releases
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    pub fn schedule_mark(&self, task_id: u64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .schedule_marks
            .get(task_id.to_be_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(i64::from_be_bytes))
    }
}

/// Write access to the store, handed out only by the writer thread to one
/// write at a time; reads through `Deref` see the writes made so far.
pub struct Write<'a> {
    tables: &'a Tables,
}

impl Deref for Write<'_> {
    type Target = Tables;
    fn deref(&self) -> &Tables {
        self.tables
    }
}

impl Write<'_> {
    pub fn put_cert(&self, serial_hex: &str, record: &CertRecord) -> Result<(), StoreError> {
        self.certs.insert(serial_hex, encode(record)?)?;
        Ok(())
    }

    /// Tokens are keyed by the SHA-256 of the secret, so a copy of the store does not leak usable tokens.
    pub fn put_token(&self, token_hash: &str, record: &TokenRecord) -> Result<(), StoreError> {
        self.tokens.insert(token_hash, encode(record)?)?;
        Ok(())
    }

    /// Consumes the token and records the system and its certificate in one
    /// transaction: either all of it happens or none. A name that differs
    /// from an enrolled one only in case is taken.
    pub fn enroll(
        &self,
        token_hash: &str,
        now_unix_ms: i64,
        system: &SystemRecord,
        cert_serial: &str,
        cert: &CertRecord,
    ) -> Result<(), EnrollError> {
        // Writes are serialised by the writer, so this check cannot race
        // another enrollment; the transaction below repeats the exact one.
        if let Some(taken) = self.system_named_like(&system.name)?
            && taken != system.name
        {
            return Err(EnrollError::Refused(EnrollRefusal::NameTaken(taken)));
        }
        let system_bytes = encode(system)?;
        let cert_bytes = encode(cert)?;
        let result =
            (&self.tokens, &self.systems, &self.certs).transaction(|(tokens, systems, certs)| {
                let abort = |r: EnrollRefusal| ConflictableTransactionError::Abort(Ok(r));
                let Some(raw) = tokens.get(token_hash)? else {
                    return Err(abort(EnrollRefusal::UnknownToken));
                };
                let mut token: TokenRecord = decode(token_hash.as_bytes(), &raw)
                    .map_err(|e| ConflictableTransactionError::Abort(Err(e)))?;
                if let Some(by) = &token.used_by {
                    return Err(abort(EnrollRefusal::TokenUsed(by.clone())));
                }
                if token.expires_unix_ms <= now_unix_ms {
                    return Err(abort(EnrollRefusal::TokenExpired));
                }
                if systems.get(system.name.as_bytes())?.is_some() {
                    return Err(abort(EnrollRefusal::NameTaken(system.name.clone())));
                }
                token.used_by = Some(system.name.clone());
                token.used_unix_ms = Some(now_unix_ms);
                let token_bytes =
                    encode(&token).map_err(|e| ConflictableTransactionError::Abort(Err(e)))?;
                tokens.insert(token_hash.as_bytes(), token_bytes)?;
                systems.insert(system.name.as_bytes(), system_bytes.clone())?;
                certs.insert(cert_serial.as_bytes(), cert_bytes.clone())?;
                Ok(())
            });
        match result {
            Ok(()) => {
                self.change_systems(true, |systems| {
                    systems.insert(system.name.clone(), Arc::new(system.clone()));
                });
                Ok(())
            }
            Err(e) => match flatten(e)? {
                Ok(refusal) => Err(EnrollError::Refused(refusal)),
                Err(store) => Err(EnrollError::Store(store)),
            },
        }
    }

    /// Applies `change` to a system that exists; a removed system stays removed
    /// (an agent disconnecting after its removal must not bring it back).
    pub fn update_system(
        &self,
        name: &str,
        change: impl FnOnce(&mut SystemRecord),
    ) -> Result<Option<SystemRecord>, StoreError> {
        let Some(mut record) = self.system(name)? else {
            return Ok(None);
        };
        let before = record.clone();
        change(&mut record);
        self.systems.insert(name, encode(&record)?)?;
        // Every inventory moves these two; lists are rebuilt each second anyway.
        let counts = SystemRecord {
            last_seen_unix_ms: record.last_seen_unix_ms,
            inventory_unix_ms: record.inventory_unix_ms,
            ..before
        } != record;
        self.change_systems(counts, |systems| {
            systems.insert(name.to_owned(), Arc::new(record.clone()));
        });
        Ok(Some(record))
    }

    /// Removes the system and its inventory and revokes its certificate, atomically.
    /// Returns the revoked serial, or `None` when no such system exists.
    pub fn remove_system(
        &self,
        name: &str,
        now_unix_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let result = (&self.systems, &self.certs, &self.inventories).transaction(
            |(systems, certs, inventories)| {
                let Some(raw) = systems.remove(name.as_bytes())? else {
                    return Ok(None);
                };
                let record: SystemRecord =
                    decode(name.as_bytes(), &raw).map_err(ConflictableTransactionError::Abort)?;
                inventories.remove(name.as_bytes())?;
                if let Some(raw_cert) = certs.get(record.cert_serial.as_bytes())? {
                    let mut cert: CertRecord = decode(record.cert_serial.as_bytes(), &raw_cert)
                        .map_err(ConflictableTransactionError::Abort)?;
                    cert.revoked_unix_ms = Some(now_unix_ms);
                    let bytes = encode(&cert).map_err(ConflictableTransactionError::Abort)?;
                    certs.insert(record.cert_serial.as_bytes(), bytes)?;
                }
                Ok(Some(record.cert_serial))
            },
        );
        let removed = result.or_else(|e| Err(flatten(e)?))?;
        if removed.is_some() {
            self.remove_dataset_snapshots(name)?;
            self.change_systems(true, |systems| {
                systems.remove(name);
            });
        }
        Ok(removed)
    }

    /// See [`Store::next_id`].
    pub fn next_id(&self) -> Result<u64, StoreError> {
        let current = self
            .meta
            .get("next_id")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let next = current + 1;
        self.meta.insert("next_id", &next.to_be_bytes())?;
        Ok(next)
    }

    pub fn put_task(&self, task: &Task) -> Result<(), StoreError> {
        self.tasks
            .insert(task.id.to_be_bytes(), task.encode_to_vec())?;
        self.tasks_changed();
        Ok(())
    }

    /// Removes a task with its run history and scheduler mark.
    pub fn delete_task(&self, id: u64) -> Result<(), StoreError> {
        self.tasks.remove(id.to_be_bytes())?;
        self.tasks_changed();
        self.schedule_marks.remove(id.to_be_bytes())?;
        for key in self.runs_by_task.scan_prefix(id.to_be_bytes()).keys() {
            let key = key?;
            if let Some(run_id) = key.get(8..16) {
                self.runs.remove(run_id)?;
                for entry in self.active_runs.scan_prefix(run_id).keys() {
                    self.active_runs.remove(entry?)?;
                }
            }
            self.runs_by_task.remove(key)?;
        }
        Ok(())
    }

    /// Writes a run. Once it is final, the work kept for its parts is dropped.
    pub fn put_run(&self, run: &Run) -> Result<(), StoreError> {
        let key = run.id.to_be_bytes();
        let previous = self.runs.insert(key, run.encode_to_vec())?;
        let was_final = previous
            .and_then(|bytes| Run::decode(&*bytes).ok())
            .is_some_and(|r| is_final(r.state()));
        {
            let mut index = self.running_index();
            if !is_final(run.state()) {
                index.insert(run.task_id, run.id);
            } else if index.get(&run.task_id) == Some(&run.id) {
                index.remove(&run.task_id);
            }
        }
        if is_final(run.state()) && !was_final {
            let mut finished = self
                .telemetry
                .runs_finished
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *finished.entry((run.task_id, run.state)).or_default() += 1;
        }
        let mut index = run.task_id.to_be_bytes().to_vec();
        index.extend_from_slice(&key);
        self.runs_by_task.insert(index, &[])?;
        if is_final(run.state()) {
            for entry in self.active_runs.scan_prefix(key).keys() {
                self.active_runs.remove(entry?)?;
            }
        }
        Ok(())
    }

    /// Keeps the work sent to one system for an active run, so it can be
    /// offered again after a restart.
    pub fn put_run_work(
        &self,
        run_id: u64,
        system: &str,
        work: &StartRun,
    ) -> Result<(), StoreError> {
        self.active_runs
            .insert(active_key(run_id, system), work.encode_to_vec())?;
        Ok(())
    }

    /// The part of `system` ended: nothing left to offer it.
    pub fn remove_run_work(&self, run_id: u64, system: &str) -> Result<(), StoreError> {
        self.active_runs.remove(active_key(run_id, system))?;
        Ok(())
    }

    /// Keeps the newest `keep` runs of a task and deletes the older ones.
    pub fn prune_runs(&self, task_id: u64, keep: usize) -> Result<usize, StoreError> {
        let keys: Vec<sled::IVec> = self
            .runs_by_task
            .scan_prefix(task_id.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()?;
        let excess = keys.len().saturating_sub(keep);
        for key in keys.iter().take(excess) {
            if let Some(run_id) = key.get(8..16) {
                // Never drop a run that is still going.
                if self.active_runs.scan_prefix(run_id).next().is_some() {
                    continue;
                }
                self.runs.remove(run_id)?;
            }
            self.runs_by_task.remove(key)?;
        }
        Ok(excess)
    }

    pub fn put_ssh_connection(&self, record: &SshConnectionRecord) -> Result<(), StoreError> {
        self.ssh_connections.insert(
            connection_key(&record.source, &record.target),
            encode(record)?,
        )?;
        Ok(())
    }

    pub fn delete_ssh_connection(
        &self,
        source: &str,
        target: &str,
    ) -> Result<Option<SshConnectionRecord>, StoreError> {
        let key = connection_key(source, target);
        self.ssh_connections
            .remove(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    /// Records a release to be made; one per task and system (a later one
    /// adds its datasets to an earlier one's).
    pub fn put_pending_release(&self, release: &PendingRelease) -> Result<(), StoreError> {
        let key = pending_release_key(release.task_id, &release.system);
        let mut merged = match self.pending_releases.get(&key)? {
            Some(bytes) => decode::<PendingRelease>(&key, &bytes)?,
            None => PendingRelease {
                datasets: Vec::new(),
                ..release.clone()
            },
        };
        for dataset in &release.datasets {
            if !merged.datasets.contains(dataset) {
                merged.datasets.push(dataset.clone());
            }
        }
        self.pending_releases.insert(key, encode(&merged)?)?;
        Ok(())
    }

    /// Forgets the release of `datasets` of task `task_id` on `system`,
    /// made; the record goes when none is left.
    pub fn remove_pending_release(
        &self,
        task_id: u64,
        system: &str,
        datasets: &[String],
    ) -> Result<(), StoreError> {
        let key = pending_release_key(task_id, system);
        let Some(bytes) = self.pending_releases.get(&key)? else {
            return Ok(());
        };
        let mut record: PendingRelease = decode(&key, &bytes)?;
        record.datasets.retain(|d| !datasets.contains(d));
        if record.datasets.is_empty() {
            self.pending_releases.remove(key)?;
        } else {
            self.pending_releases.insert(key, encode(&record)?)?;
        }
        Ok(())
    }

    pub fn set_schedule_mark(&self, task_id: u64, unix_ms: i64) -> Result<(), StoreError> {
        self.schedule_marks
            .insert(task_id.to_be_bytes(), &unix_ms.to_be_bytes())?;
        Ok(())
    }
}

/// Whether a run state is an end state.
pub fn is_final(state: RunState) -> bool {
    !matches!(
        state,
        RunState::Running | RunState::Pending | RunState::Unspecified
    )
}

/// Whether a run (or part) ended well: FINISHED for snapshot and
/// replication runs, SUCCESS for rsync runs.
pub fn is_success(state: RunState) -> bool {
    matches!(state, RunState::Finished | RunState::Success)
}

fn connection_key(source: &str, target: &str) -> Vec<u8> {
    format!("{source}\0{target}").into_bytes()
}

/// run id BE ++ system name: one entry per part of an active run.
fn active_key(run_id: u64, system: &str) -> Vec<u8> {
    let mut key = run_id.to_be_bytes().to_vec();
    key.extend_from_slice(system.as_bytes());
    key
}

fn decode_proto<T: Message + Default>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    T::decode(bytes).map_err(|source| StoreError::CorruptProto {
        key: key.to_owned(),
        source,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn inventory_with_snapshot() -> nasfleet_proto::v1::Inventory {
        nasfleet_proto::v1::Inventory {
            snapshots: vec![nasfleet_proto::v1::Snapshot {
                name: "tank@1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn system(name: &str) -> SystemRecord {
        SystemRecord {
            name: name.into(),
            enrolled_unix_ms: 1,
            cert_serial: format!("serial-{name}"),
            cert_expires_unix_ms: 0,
            next_cert_serial: None,
            next_cert_expires_unix_ms: 0,
            last_seen_unix_ms: 0,
            address: String::new(),
            agent_version: String::new(),
            pools: vec![],
            inventory_unix_ms: 0,
            inventory_problem: None,
        }
    }

    fn cert(name: &str) -> CertRecord {
        CertRecord {
            principal: format!("system:{name}"),
            role: None,
            issued_unix_ms: 1,
            revoked_unix_ms: None,
        }
    }

    fn token(expires: i64) -> TokenRecord {
        TokenRecord {
            created_unix_ms: 0,
            expires_unix_ms: expires,
            created_by: "user:admin".into(),
            used_by: None,
            used_unix_ms: None,
        }
    }

    /// One write, made durable, from a test thread.
    fn write<R: Send + 'static>(
        store: &Store,
        op: impl FnOnce(&Write<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> R {
        store.write_blocking(op).unwrap()
    }

    fn enroll(store: &Store, t: &str, n: &str) -> Result<(), EnrollError> {
        let (t, n) = (t.to_owned(), n.to_owned());
        store
            .write_blocking(move |w| {
                Ok(w.enroll(&t, 50, &system(&n), &format!("serial-{n}"), &cert(&n)))
            })
            .unwrap()
    }

    /// sled lets go of its file lock a moment after the last handle (and
    /// here the writer thread) is gone; a real restart is a new process.
    pub(crate) fn reopen(path: &Path) -> Store {
        for _ in 0..50 {
            if let Ok(store) = Store::open(path) {
                return store;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Store::open(path).unwrap()
    }

    #[test]
    fn pending_releases_merge_survive_a_restart_and_go_when_made() {
        let dir = tempfile::tempdir().unwrap();
        let release = |system: &str, datasets: &[&str]| PendingRelease {
            task_id: 7,
            system: system.into(),
            datasets: datasets.iter().map(|d| (*d).to_owned()).collect(),
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let (a, b, c) = (
                release("nas1", &["tank/a"]),
                release("nas1", &["tank/b", "tank/a"]),
                release("nas2", &["backup/nas1/tank/a"]),
            );
            write(&store, move |w| {
                w.put_pending_release(&a)?;
                w.put_pending_release(&b)?;
                w.put_pending_release(&c)
            });
            assert!(store.close_blocking(CLOSE_DEADLINE));
        }
        let store = reopen(dir.path());
        assert_eq!(
            store.pending_releases().unwrap(),
            [
                release("nas1", &["tank/a", "tank/b"]),
                release("nas2", &["backup/nas1/tank/a"])
            ]
        );
        write(&store, |w| {
            w.remove_pending_release(7, "nas1", &["tank/a".to_owned()])?;
            w.remove_pending_release(7, "nas2", &["backup/nas1/tank/a".to_owned()])?;
            w.remove_pending_release(9, "nas3", &[])
        });
        assert_eq!(
            store.pending_releases().unwrap(),
            [release("nas1", &["tank/b"])]
        );
    }

    #[test]
    fn token_is_single_use_and_refusals_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        write(&store, |w| {
            w.put_token("t1", &token(100))?;
            w.put_token("t2", &token(100))?;
            w.put_token("t3", &token(100))?;
            w.put_token("old", &token(10))
        });

        assert!(matches!(
            enroll(&store, "nope", "a"),
            Err(EnrollError::Refused(EnrollRefusal::UnknownToken))
        ));
        assert!(matches!(
            enroll(&store, "old", "a"),
            Err(EnrollError::Refused(EnrollRefusal::TokenExpired))
        ));
        enroll(&store, "t1", "a").unwrap();
        assert!(matches!(
            enroll(&store, "t1", "b"),
            Err(EnrollError::Refused(EnrollRefusal::TokenUsed(by))) if by == "a"
        ));
        // A taken name must not burn the token, whatever its case.
        assert!(matches!(
            enroll(&store, "t2", "a"),
            Err(EnrollError::Refused(EnrollRefusal::NameTaken(_)))
        ));
        assert!(matches!(
            enroll(&store, "t2", "A"),
            Err(EnrollError::Refused(EnrollRefusal::NameTaken(taken))) if taken == "a"
        ));
        enroll(&store, "t2", "b").unwrap();
        assert_eq!(store.systems().unwrap().len(), 2);
        assert!(store.system("b").unwrap().is_some());
        assert_eq!(store.system_named_like("B").unwrap().as_deref(), Some("b"));
    }

    fn run(id: u64, task_id: u64, state: RunState) -> Run {
        let mut run = Run {
            id,
            task_id,
            ..Default::default()
        };
        run.set_state(state);
        run
    }

    #[test]
    fn ids_count_up_from_one_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(write(&store, |w| w.next_id()), 1);
            assert_eq!(write(&store, |w| w.next_id()), 2);
            assert!(store.close_blocking(CLOSE_DEADLINE));
        }
        let store = reopen(dir.path());
        assert_eq!(write(&store, |w| w.next_id()), 3);
    }

    #[test]
    fn runs_are_indexed_per_task_pruned_and_tracked_while_active() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        write(&store, |w| {
            let work = StartRun {
                run_id: 1,
                work: None,
            };
            w.put_run(&run(1, 7, RunState::Running))?;
            w.put_run_work(1, "nas1", &work)?;
            w.put_run_work(1, "nas2", &work)?;
            for id in 2..=5 {
                w.put_run(&run(id, 7, RunState::Finished))?;
            }
            w.put_run(&run(6, 8, RunState::Failed))
        });
        let ids = |runs: Vec<Run>| runs.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.runs_of_task(7, 3).unwrap()), vec![5, 4, 3]);
        assert_eq!(ids(store.runs(2).unwrap()), vec![6, 5]);
        assert_eq!(store.active_runs().unwrap().len(), 2);
        write(&store, |w| w.remove_run_work(1, "nas2"));
        let active = store.active_runs().unwrap();
        assert_eq!((active.len(), active[0].1.as_str()), (1, "nas1"));
        // Pruning to 2 keeps the active run 1 although it is the oldest.
        write(&store, |w| w.prune_runs(7, 2));
        assert_eq!(ids(store.runs_of_task(7, 10).unwrap()), vec![5, 4, 1]);
        write(&store, |w| w.put_run(&run(1, 7, RunState::Failed)));
        assert!(store.active_runs().unwrap().is_empty());
        write(&store, |w| w.delete_task(7));
        assert!(store.runs_of_task(7, 10).unwrap().is_empty());
        assert_eq!(ids(store.runs(10).unwrap()), vec![6]);
    }

    #[test]
    fn the_running_run_of_each_task_is_known_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            write(&store, |w| {
                let work = StartRun {
                    run_id: 3,
                    work: None,
                };
                w.put_run(&run(2, 7, RunState::Finished))?;
                w.put_run(&run(3, 7, RunState::Running))?;
                w.put_run_work(3, "nas1", &work)?;
                w.put_run(&run(4, 8, RunState::Running))?;
                w.put_run(&run(4, 8, RunState::Failed))
            });
            assert_eq!(store.running_run_of_task(7), Some(3));
            assert_eq!(store.running_run_of_task(8), None);
            assert!(store.close_blocking(CLOSE_DEADLINE));
        }
        let store = reopen(dir.path());
        assert_eq!(store.running_run_of_task(7), Some(3));
        write(&store, |w| w.put_run(&run(3, 7, RunState::Finished)));
        assert_eq!(store.running_run_of_task(7), None);
    }

    #[test]
    fn systems_are_read_from_memory_that_follows_every_write_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        write(&store, |w| w.put_token("t1", &token(100)));
        write(&store, |w| w.put_token("t2", &token(100)));
        let at_start = store.systems_generation();
        enroll(&store, "t1", "b").unwrap();
        enroll(&store, "t2", "a").unwrap();
        let enrolled = store.systems_generation();
        assert!(enrolled > at_start);
        let names = |store: &Store| -> Vec<String> {
            store
                .systems()
                .unwrap()
                .iter()
                .map(|r| r.name.clone())
                .collect()
        };
        assert_eq!(names(&store), ["a", "b"]);
        assert_eq!(store.system_named_like("B").unwrap().as_deref(), Some("b"));
        // A new "last seen" alone (every inventory) is not a change lists care about...
        write(&store, |w| {
            w.update_system("a", |r| r.last_seen_unix_ms = 5)
        });
        assert_eq!(store.systems_generation(), enrolled);
        assert_eq!(store.system("a").unwrap().unwrap().last_seen_unix_ms, 5);
        // ...new pools are.
        write(&store, |w| {
            w.update_system("a", |r| r.pools = vec!["tank".into()])
        });
        assert!(store.systems_generation() > enrolled);
        write(&store, |w| w.remove_system("b", 7));
        assert_eq!(names(&store), ["a"]);
        drop(store);
        let store = reopen(dir.path());
        assert_eq!(names(&store), ["a"]);
        let a = store.system("a").unwrap().unwrap();
        assert_eq!(
            (a.last_seen_unix_ms, a.pools),
            (5, vec!["tank".to_string()])
        );
    }

    #[test]
    fn removal_revokes_and_stays_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        write(&store, |w| w.put_token("t", &token(100)));
        enroll(&store, "t", "a").unwrap();
        write(&store, |w| {
            let (header, datasets) = stored_form(inventory_with_snapshot());
            w.put_inventory("a", &header, &datasets)
        });
        assert!(!store.all_dataset_snapshots("a").unwrap().is_empty());
        assert_eq!(
            write(&store, |w| w.remove_system("a", 7)).as_deref(),
            Some("serial-a")
        );
        assert_eq!(
            store.cert("serial-a").unwrap().unwrap().revoked_unix_ms,
            Some(7)
        );
        assert!(store.inventory("a").unwrap().is_none());
        // A late update from the agent's session must not resurrect it.
        assert!(
            write(&store, |w| w
                .update_system("a", |r| r.last_seen_unix_ms = 9))
            .is_none()
        );
        write(&store, |w| {
            let (header, datasets) = stored_form(inventory_with_snapshot());
            w.put_inventory("a", &header, &datasets)
        });
        assert!(store.all_dataset_snapshots("a").unwrap().is_empty());
        assert!(store.system("a").unwrap().is_none());
        assert!(store.inventory("a").unwrap().is_none());
        assert_eq!(write(&store, |w| w.remove_system("a", 8)), None);
    }

    /// `count` snapshots of `tank/big` (guids from `first`), enough to go to a file.
    fn inventory_with_many(first: u64, count: u64) -> nasfleet_proto::v1::Inventory {
        nasfleet_proto::v1::Inventory {
            datasets: vec![nasfleet_proto::v1::Dataset {
                name: "tank/big".into(),
                ..Default::default()
            }],
            snapshots: (first..first + count)
                .map(|guid| nasfleet_proto::v1::Snapshot {
                    name: format!("tank/big@auto-{guid:08}"),
                    guid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn snapshot_list_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshot-lists"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A long list lives in a file, outside sled's memory: read back and
    /// counted as if inline, its old file deleted once a new list is
    /// durable, all of them gone with the system, and an orphan (a crash
    /// between a write and its flush) deleted when the store opens.
    #[test]
    fn long_snapshot_lists_live_in_files_that_follow_their_references() {
        use nasfleet_proto::v1::DatasetSnapshots;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        write(&store, |w| w.put_token("t", &token(100)));
        enroll(&store, "t", "a").unwrap();
        let put = |store: &Store, inventory: nasfleet_proto::v1::Inventory| {
            write(store, move |w| {
                let (header, datasets) = stored_form(inventory);
                w.put_inventory("a", &header, &datasets)
            })
        };
        put(&store, inventory_with_many(0, 5_000));
        let files = snapshot_list_files(dir.path());
        assert_eq!(files.len(), 1);
        let raw = store
            .dataset_snapshots
            .get(b"a\0tank/big")
            .unwrap()
            .unwrap();
        assert!(
            raw.len() < 100,
            "sled holds a reference, not {} bytes",
            raw.len()
        );
        let list = store.dataset_snapshots("a", "tank/big").unwrap().unwrap();
        let list = DatasetSnapshots::decode(list.as_slice()).unwrap().snapshots;
        assert_eq!(list.len(), 5_000);
        assert_eq!(list[4_999].name, "tank/big@auto-00004999");
        assert_eq!(
            store.dataset_snapshot_count("a", "tank/big").unwrap(),
            Some(5_000)
        );

        // The same list again writes nothing; a new one replaces the file.
        put(&store, inventory_with_many(0, 5_000));
        assert_eq!(snapshot_list_files(dir.path()), files);
        put(&store, inventory_with_many(1, 5_000));
        let replaced = snapshot_list_files(dir.path());
        assert_eq!(replaced.len(), 1);
        assert_ne!(replaced, files);
        assert_eq!(
            store.dataset_snapshot_count("a", "tank/big").unwrap(),
            Some(5_000)
        );

        // Few snapshots again: back inline, and the file goes.
        put(&store, inventory_with_many(0, 3));
        assert!(snapshot_list_files(dir.path()).is_empty());
        assert_eq!(
            store.dataset_snapshot_count("a", "tank/big").unwrap(),
            Some(3)
        );

        put(&store, inventory_with_many(0, 5_000));
        assert_eq!(snapshot_list_files(dir.path()).len(), 1);
        write(&store, |w| w.remove_system("a", 7));
        assert!(snapshot_list_files(dir.path()).is_empty());
        assert_eq!(store.dataset_snapshot_count("a", "tank/big").unwrap(), None);

        std::fs::write(
            dir.path()
                .join("snapshot-lists")
                .join("0123456789abcdef-0123456789abcdef0123456789abcdef"),
            b"orphan",
        )
        .unwrap();
        drop(store);
        let _store = reopen(dir.path());
        assert!(snapshot_list_files(dir.path()).is_empty());
    }

    /// Many writers at once, each waiting for its own durable answer: every
    /// write is answered, ids are unique and dense, and what was answered
    /// is there after a reopen. (sled's `flush_async` hung here.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_all_answered_with_unique_durable_ids() {
        const WRITERS: u64 = 64;
        const EACH: u64 = 40;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut handles = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..EACH {
                    let id = store.next_id().await.unwrap();
                    let hash = format!("w{writer}-{i}");
                    store
                        .write(move |w| w.put_token(&hash, &token(id as i64)))
                        .await
                        .unwrap();
                    ids.push(id);
                }
                ids
            }));
        }
        let deadline = std::time::Duration::from_secs(60);
        let mut ids = Vec::new();
        for handle in handles {
            ids.extend(
                tokio::time::timeout(deadline, handle)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        ids.sort_unstable();
        assert_eq!(ids, (1..=WRITERS * EACH).collect::<Vec<_>>());
        assert!(store.close(CLOSE_DEADLINE).await);
        // Writes after closing are refused, not lost silently.
        assert!(matches!(
            store.write(|w| w.put_token("late", &token(1))).await,
            Err(StoreError::Closed)
        ));
        drop(store);
        let path = dir.path().to_owned();
        let reopened = tokio::task::spawn_blocking(move || reopen(&path))
            .await
            .unwrap();
        assert_eq!(reopened.tokens.len(), (WRITERS * EACH) as usize);
        assert!(reopened.tokens.get("late").unwrap().is_none());
        assert_eq!(reopened.next_id().await.unwrap(), WRITERS * EACH + 1);
    }

    /// Closing while writes are queued: each caller gets either a durable
    /// answer or a refusal, and the answered ones survive a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_answers_every_queued_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut handles = Vec::new();
        for i in 0..2000u32 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let key = format!("k{i}");
                let written = key.clone();
                store
                    .write(move |w| w.put_token(&written, &token(1)))
                    .await
                    .map(|()| key)
            }));
        }
        tokio::task::yield_now().await;
        assert!(store.close(CLOSE_DEADLINE).await);
        let mut acknowledged = Vec::new();
        for handle in handles {
            match handle.await.unwrap() {
                Ok(key) => acknowledged.push(key),
                Err(StoreError::Closed) => {}
                Err(other) => panic!("unexpected answer: {other}"),
            }
        }
        drop(store);
        let path = dir.path().to_owned();
        let reopened = tokio::task::spawn_blocking(move || reopen(&path))
            .await
            .unwrap();
        for key in &acknowledged {
            assert!(reopened.tokens.get(key).unwrap().is_some(), "{key} lost");
        }
    }
}
