//! Benchmark load generator, not a test: N simulated agents speaking the real protocol (join, one mutual-TLS stream each, Hello, Inventory, heartbeats, instant run results, reconnects with the agent's backoff) against a running controller, measuring the fleet goals of issue 18 and printing each as MET or NOT MET.
//!
//!   fleet_load --data-dir DIR --pid PID [--systems N] [--tasks T] [--restart CMD]
//!              [--run-now K] [--steady-secs S] [--list-calls L]
//!              [--enroll-concurrency C] [--online-timeout SECS] [--big-snapshots B]
//!              [--check]
//!
//! `--big-snapshots B` (default 1,000,000; 0: none): the first system has B
//! more snapshots, in 100 datasets under `tank/big`, sent in pages after its
//! inventory as the agent sends them; a phase after Run-Now waits until the
//! controller counts them all, then compares Run-Now on it (a replication
//! source, so retention's protected bases are read) with a small system.
//!
//! `--check` (what the e2e test of a small fleet uses): exit 1 when the
//! controller got something wrong, whatever the timings: a system never
//! ONLINE or shown OFFLINE while connected, a Run-Now or due task whose
//! StartRun never came or came twice, a fleet not back after the restart.
//!
//! deploy/bench-fleet.sh builds, starts a controller and runs this. DIR is
//! the controller's data dir: `admin.crt`, `admin.key` and `ca.crt` are the
//! admin's credentials, `controller.toml` gives the URL and must say
//! `timezone = "UTC"` (the scheduled phase writes its cron in UTC). PID is
//! the controller's process, read in /proc for RSS and CPU. CMD (run with
//! `sh -c`) stops the controller, starts it again and prints the new PID
//! as its last line of output; without it the restart phase is skipped.
//!
//! Phases, each bounded by a deadline so that a missed goal prints NOT MET
//! instead of hanging:
//! 1. enrolment (setup, timed but no goal): per system a join token
//!    (Fleet.CreateToken as admin), a key and CSR made here, Enrollment.Join
//!    as `simNNNNN`; C at a time over one shared channel each for admin and
//!    enrolment calls;
//! 2. all N connect at once, each over its own TCP + TLS connection with its
//!    own certificate (the agent's `dial`); time until ListSystems counts
//!    all ONLINE;
//! 3. steady window of S seconds: controller RSS and CPU, and ListSystems
//!    polls every 3 s counting systems shown OFFLINE while their stream is up;
//! 4. L ListSystems calls one after another: p50 (the goal) and p99;
//! 5. Run-Now: K snapshot tasks (disabled, on `tank/home`), each run with
//!    Fleet.RunTask one at a time, from the call to the agent's StartRun;
//! 6. T snapshot tasks (on `tank/data` of the first T systems) whose cron
//!    fires at one whole minute: from that minute to the last StartRun, and
//!    StartRuns received more than once;
//! 7. restart storm: CMD with all N connected, then the time until all are
//!    ONLINE again.
//!
//! The simulated agent's backoff is the real agent's (agent/src/link/backoff.rs):
//! 1 s doubling to 60 s, each delay drawn from the upper half of its step,
//! reset after a session of 30 s.

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Timelike, Utc};
use nasfleet_common::dial::{ClientIdentity, DialOptions, ServerTrust, dial};
use nasfleet_common::identity::Principal;
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::MAX_MESSAGE_BYTES;
use nasfleet_proto::v1::agent_link_client::AgentLinkClient;
use nasfleet_proto::v1::agent_message::Body as Up;
use nasfleet_proto::v1::controller_message::Body as Down;
use nasfleet_proto::v1::enrollment_client::EnrollmentClient;
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::{
    AgentMessage, AgentResponse, ControllerMessage, CreateTokenRequest, Dataset, GetSystemRequest,
    Heartbeat, Hello, Inventory, InventoryPage, JoinRequest, ListSystemsRequest, Pool,
    ReplicationSource, ReplicationTaskSpec, RunResult, RunState, RunStep, Service, Snapshot,
    SnapshotTaskSpec, StartRun, SystemStatus, TaskRef, TaskSpec, ZfsDialect, start_run, task_spec,
};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

// ---- goals (issue 18, stated for 10,000 systems) ----

const GOAL_ALL_ONLINE: Duration = Duration::from_secs(15);
const GOAL_RSS_BYTES: u64 = 512 * 1024 * 1024;
const GOAL_LIST_P50: Duration = Duration::from_millis(20);
const GOAL_RUN_NOW_P99: Duration = Duration::from_millis(20);
const GOAL_DUE_SPREAD: Duration = Duration::from_secs(2);
const GOAL_RESTART_ONLINE: Duration = Duration::from_secs(30);

// ---- limits ----

/// Deadline of one admin or enrolment call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the controller may take to answer Connect and send Welcome (the agent's).
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for the StartRun of one Run-Now.
const RUN_NOW_RECEIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the due minute the scheduled phase waits for StartRuns.
const DUE_WAIT: Duration = Duration::from_secs(60);
/// How long after the last StartRun of the scheduled phase duplicates are awaited.
const DUPLICATE_WAIT: Duration = Duration::from_secs(5);
/// The soonest the due minute of the scheduled phase may be after its tasks exist.
const DUE_LEAD: Duration = Duration::from_secs(20);
/// Deadline of the restart command.
const RESTART_CMD_TIMEOUT: Duration = Duration::from_secs(90);
/// Sessions one simulated agent may open before it gives up (a bound, never reached).
const MAX_SESSIONS: u32 = 10_000;
/// Tasks created at a time.
const CREATE_CONCURRENCY: usize = 16;
/// Attempts to enrol one system.
const ENROLL_ATTEMPTS: u32 = 3;
/// Period of the ListSystems polls while waiting for all ONLINE.
const ONLINE_POLL: Duration = Duration::from_millis(500);
/// Period of the false-OFFLINE polls in the steady window.
const STEADY_POLL: Duration = Duration::from_secs(3);
/// A stream welcomed less than this before a poll does not count as alive
/// (the controller sends Welcome a moment before it registers the session).
const SETTLED: Duration = Duration::from_secs(2);
/// Backoff of the real agent.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// Distinct reasons for lost sessions kept (the rest count as "other").
const MAX_REASONS: usize = 40;

const SCHEDULED_DATASET: &str = "tank/data";
const RUN_NOW_DATASET: &str = "tank/home";
/// Datasets the big system's extra snapshots are spread over.
const BIG_DATASETS: usize = 100;
/// The dataset of the big system its Run-Now task snapshots.
const BIG_RUN_DATASET: &str = "tank/big/d00";
/// How long the controller may take to store and count the big inventory.
const BIG_WAIT: Duration = Duration::from_secs(300);
/// Run-Now calls on each of the big and the small system.
const BIG_RUN_NOW: usize = 30;
const GOAL_BIG_RUN_NOW_EXTRA: Duration = Duration::from_millis(5);

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("fleet_load: {e:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fleet_load: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet_load: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: fleet_load --data-dir DIR --pid PID [--systems N] [--tasks T] \
[--restart CMD] [--run-now K] [--steady-secs S] [--list-calls L] [--enroll-concurrency C] \
[--online-timeout SECS] [--big-snapshots B] [--check]";

struct Args {
    data_dir: PathBuf,
    pid: u32,
    systems: usize,
    tasks: usize,
    restart: Option<String>,
    run_now: usize,
    steady: Duration,
    list_calls: usize,
    enroll_concurrency: usize,
    online_timeout: Duration,
    big_snapshots: usize,
    check: bool,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut data_dir = None;
        let mut pid = None;
        let mut args = Args {
            data_dir: PathBuf::new(),
            pid: 0,
            systems: 10_000,
            tasks: 2_000,
            restart: None,
            run_now: 200,
            steady: Duration::from_secs(30),
            list_calls: 50,
            enroll_concurrency: 64,
            online_timeout: Duration::from_secs(120),
            big_snapshots: 1_000_000,
            check: false,
        };
        let mut given = std::env::args().skip(1);
        while let Some(flag) = given.next() {
            let mut value = || {
                given
                    .next()
                    .with_context(|| format!("{flag} needs a value"))
            };
            let count = |v: String| -> Result<usize> {
                v.parse()
                    .with_context(|| format!("{flag}: {v:?} is not a count"))
            };
            match flag.as_str() {
                "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
                "--pid" => {
                    let v = value()?;
                    pid = Some(v.parse().with_context(|| format!("--pid: {v:?}"))?);
                }
                "--systems" => args.systems = count(value()?)?,
                "--tasks" => args.tasks = count(value()?)?,
                "--restart" => args.restart = Some(value()?).filter(|c| !c.trim().is_empty()),
                "--run-now" => args.run_now = count(value()?)?,
                "--steady-secs" => args.steady = Duration::from_secs(count(value()?)? as u64),
                "--list-calls" => args.list_calls = count(value()?)?,
                "--enroll-concurrency" => args.enroll_concurrency = count(value()?)?.max(1),
                "--online-timeout" => {
                    args.online_timeout = Duration::from_secs(count(value()?)? as u64)
                }
                "--check" => args.check = true,
                "--big-snapshots" => args.big_snapshots = count(value()?)?,
                "-h" | "--help" => bail!("help asked for"),
                other => bail!("unknown argument {other:?}"),
            }
        }
        args.data_dir = data_dir.context("--data-dir is required")?;
        args.pid = pid.context("--pid is required")?;
        if args.systems == 0 || args.systems > 99_999 {
            bail!("--systems: from 1 to 99999");
        }
        args.tasks = args.tasks.min(args.systems);
        args.run_now = args.run_now.min(args.systems);
        args.list_calls = args.list_calls.max(1);
        Ok(args)
    }
}

// ---- small helpers ----

/// A line of progress, stamped with the time since the generator started.
macro_rules! say {
    ($started:expr, $($arg:tt)*) => {
        println!("[{:>7.1}s] {}", $started.elapsed().as_secs_f64(), format!($($arg)*))
    };
}

fn system_name(index: usize) -> String {
    format!("sim{:05}", index + 1)
}

fn system_index(name: &str) -> Option<usize> {
    name.strip_prefix("sim")?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

/// The value at fraction `p` of `sorted` (nearest rank).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Answers of a gRPC call within [`CALL_TIMEOUT`], with what was called in its error.
async fn call<T>(
    what: &str,
    fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(answer)) => Ok(answer.into_inner()),
        Ok(Err(status)) => Err(anyhow!("{what}: {:?}: {}", status.code(), status.message())),
        Err(_) => bail!("{what}: no answer within {}s", CALL_TIMEOUT.as_secs()),
    }
}

/// splitmix64: jitter without a dependency.
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Jitter {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
        Jitter(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos)
    }

    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The real agent's backoff: the step doubles from 1 s to 60 s, each delay
/// is drawn from the upper half of the step.
struct Backoff {
    step: Duration,
    jitter: Jitter,
}

impl Backoff {
    fn new(seed: u64) -> Backoff {
        Backoff {
            step: BACKOFF_START,
            jitter: Jitter::new(seed),
        }
    }

    fn reset(&mut self) {
        self.step = BACKOFF_START;
    }

    fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(BACKOFF_MAX);
        let half = step / 2;
        half + half.mul_f64(self.jitter.next())
    }
}

// ---- the controller's process ----

/// What /proc says of a process: resident and peak memory, CPU ticks.
#[derive(Clone, Copy, Default)]
struct ProcSample {
    rss: u64,
    hwm: u64,
    cpu_ticks: u64,
    at: Option<Instant>,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn sample(pid: &str) -> Result<ProcSample> {
    let status_path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&status_path).with_context(|| format!("reading {status_path}"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let stat_path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&stat_path).with_context(|| format!("reading {stat_path}"))?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{stat_path}: no ')'"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{stat_path}: field {} unreadable", i + 3))
    };
    Ok(ProcSample {
        rss: kib("VmRSS:"),
        hwm: kib("VmHWM:"),
        cpu_ticks: field(11)? + field(12)?,
        at: Some(Instant::now()),
    })
}

/// CPU used between two samples, in % of one core.
fn cpu_percent(a: &ProcSample, b: &ProcSample) -> f64 {
    let (Some(t0), Some(t1)) = (a.at, b.at) else {
        return 0.0;
    };
    let elapsed = t1.duration_since(t0).as_secs_f64();
    if elapsed <= 0.0 {
        return 0.0;
    }
    (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 / clock_ticks() / elapsed * 100.0
}

fn cpu_seconds(a: &ProcSample, b: &ProcSample) -> f64 {
    (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 / clock_ticks()
}

// ---- the admin ----

/// The admin's connection to the controller.
struct Admin {
    url: String,
    trust: ServerTrust,
    identity: ClientIdentity,
    client: FleetClient<Channel>,
}

impl Admin {
    async fn connect(data_dir: &Path, url: &str) -> Result<Admin> {
        let read = |name: &str| -> Result<Vec<u8>> {
            let path = data_dir.join(name);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let trust = ServerTrust::CaPem(read("ca.crt")?);
        let identity = ClientIdentity {
            cert_pem: read("admin.crt")?,
            key_pem: read("admin.key")?,
        };
        let client = Self::dial(url, &trust, &identity).await?;
        Ok(Admin {
            url: url.to_owned(),
            trust,
            identity,
            client,
        })
    }

    async fn dial(
        url: &str,
        trust: &ServerTrust,
        identity: &ClientIdentity,
    ) -> Result<FleetClient<Channel>> {
        let options = DialOptions {
            request_timeout: Some(CALL_TIMEOUT),
            ..DialOptions::default()
        };
        let channel = dial(url, trust, Some(identity), &options)
            .await
            .with_context(|| format!("dialling {url} as the admin"))?;
        Ok(FleetClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A fresh connection (after the controller restarted).
    async fn redial(&mut self) -> Result<()> {
        self.client = Self::dial(&self.url, &self.trust, &self.identity).await?;
        Ok(())
    }

    /// Statuses by system index (systems not named `simNNNNN` are left out).
    async fn statuses(&self, systems: usize) -> Result<Vec<SystemStatus>> {
        let answer = call(
            "ListSystems",
            self.client.clone().list_systems(ListSystemsRequest {}),
        )
        .await?;
        let mut statuses = vec![SystemStatus::Unspecified; systems];
        for system in &answer.systems {
            if let Some(i) = system_index(&system.name).filter(|i| *i < systems) {
                statuses[i] = system.status();
            }
        }
        Ok(statuses)
    }
}

fn online_count(statuses: &[SystemStatus]) -> usize {
    statuses
        .iter()
        .filter(|s| **s == SystemStatus::Online)
        .count()
}

/// The controller's URL and its schedules' time zone, from controller.toml.
fn controller_config(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("controller.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let url = table
        .get("url")
        .and_then(|v| v.as_str())
        .with_context(|| format!("{}: no url", path.display()))?
        .to_owned();
    let zone = table.get("timezone").and_then(|v| v.as_str());
    if !matches!(zone, Some("UTC" | "Etc/UTC" | "UCT" | "Etc/UCT" | "Zulu")) {
        bail!(
            "{}: timezone must be \"UTC\" (the scheduled phase writes its cron in UTC), not {zone:?}",
            path.display()
        );
    }
    Ok(url)
}

// ---- enrolment ----

/// One enrolled simulated system.
struct Member {
    name: String,
    identity: ClientIdentity,
}

/// A key for `system:NAME` and its CSR, as the agent makes them.
fn system_csr(name: &str) -> Result<(KeyPair, String)> {
    let key = KeyPair::generate().context("generating a key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        Principal::System(name.to_owned()).common_name(),
    );
    params.distinguished_name = dn;
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .context("making a CSR")?;
    Ok((key, csr_pem))
}

async fn enroll_one(
    admin: &FleetClient<Channel>,
    enrollment: &EnrollmentClient<Channel>,
    name: &str,
) -> Result<Member> {
    let token = call(
        "CreateToken",
        admin
            .clone()
            .create_token(CreateTokenRequest { ttl_secs: 0 }),
    )
    .await?;
    let (key, csr_pem) = system_csr(name)?;
    let answer = call(
        &format!("Join {name}"),
        enrollment.clone().join(JoinRequest {
            token: token.token,
            name: name.to_owned(),
            csr_pem,
        }),
    )
    .await?;
    Ok(Member {
        name: name.to_owned(),
        identity: ClientIdentity {
            cert_pem: answer.certificate_pem.into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        },
    })
}

async fn enroll_all(
    admin: &Admin,
    url: &str,
    systems: usize,
    concurrency: usize,
    started: Instant,
) -> Result<Vec<Member>> {
    let fingerprint = call(
        "CreateToken",
        admin
            .client
            .clone()
            .create_token(CreateTokenRequest { ttl_secs: 60 }),
    )
    .await?
    .ca_fingerprint;
    // Agents join trusting only the fingerprint that comes with the token.
    let channel = dial(
        url,
        &ServerTrust::PinnedCaFingerprint(fingerprint),
        None,
        &DialOptions::default(),
    )
    .await
    .context("dialling for enrolment")?;
    let enrollment = EnrollmentClient::new(channel);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(systems) {
        let (admin, enrollment) = (admin.client.clone(), enrollment.clone());
        let (next, done) = (next.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut members = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= systems {
                    return Ok::<_, anyhow::Error>(members);
                }
                let name = system_name(i);
                let mut attempt = 0;
                let member = loop {
                    attempt += 1;
                    match enroll_one(&admin, &enrollment, &name).await {
                        Ok(member) => break member,
                        Err(e) if attempt < ENROLL_ATTEMPTS => {
                            eprintln!("enrolling {name} (attempt {attempt}): {e:#}; again");
                        }
                        Err(e) => return Err(e.context(format!("enrolling {name}"))),
                    }
                };
                members.push((i, member));
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 1000 == 0 && n < systems {
                    say!(started, "  enrolled {n}/{systems}");
                }
            }
        }));
    }
    let mut slots: Vec<Option<Member>> = (0..systems).map(|_| None).collect();
    for worker in workers {
        for (i, member) in worker.await.context("an enrolment worker panicked")?? {
            slots[i] = Some(member);
        }
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, m)| m.with_context(|| format!("{} was not enrolled", system_name(i))))
        .collect()
}

// ---- the simulated agents ----

/// A StartRun as an agent received it.
struct Receipt {
    run_id: u64,
    agent: usize,
    dataset: String,
    at: Instant,
    unix_ms: i64,
}

#[derive(Default)]
struct Counters {
    /// Streams welcomed, first ones included.
    sessions: AtomicU64,
    /// Sessions that ended while the generator still ran them.
    lost: AtomicU64,
    /// Dials or Connects that failed before Welcome.
    failed_opens: AtomicU64,
    refused: AtomicU64,
    heartbeats: AtomicU64,
    inventories: AtomicU64,
    results: AtomicU64,
    acks: AtomicU64,
    requests: AtomicU64,
    cancels: AtomicU64,
}

/// What the generator's agents share.
struct Sim {
    /// Extra snapshots of the first system (see `--big-snapshots`).
    big_snapshots: usize,
    url: String,
    trust: ServerTrust,
    members: Vec<Member>,
    /// Per agent: the id of its welcomed stream, 0 while it has none.
    session: Vec<AtomicU64>,
    /// Per agent: when that stream was welcomed (unix ms).
    welcomed_ms: Vec<AtomicI64>,
    next_session: AtomicU64,
    heartbeat_ms: AtomicU64,
    counters: Counters,
    reasons: Mutex<BTreeMap<String, u64>>,
    receipts: Mutex<Vec<Receipt>>,
    receipt_added: Notify,
    stop: watch::Receiver<bool>,
}

impl Sim {
    fn reason(&self, reason: &str) {
        let mut short: String = reason.chars().take(100).collect();
        // Addresses and ports make every reason unique; they do not matter here.
        if let Some(at) = short.find("127.0.0.1") {
            short.truncate(at);
        }
        let mut reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        let key = if reasons.len() >= MAX_REASONS && !reasons.contains_key(&short) {
            "(other)".to_owned()
        } else {
            short
        };
        *reasons.entry(key).or_default() += 1;
    }

    fn connected(&self) -> usize {
        self.session
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != 0)
            .count()
    }

    fn receipts_of<R>(&self, f: impl FnOnce(&[Receipt]) -> R) -> R {
        f(&self.receipts.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

enum End {
    Stop,
    Lost { reason: String, established: bool },
    Refused(String),
}

fn inventory(name: &str) -> Inventory {
    let dataset = |n: &str, used: u64| Dataset {
        name: n.to_owned(),
        used,
        available: 2 << 40,
        mountpoint: format!("/mnt/{n}"),
        readonly: false,
        kind: "filesystem".into(),
        snapshot_count: 0,
    };
    // Recent snapshots, as of tasks that ran on time (no stale-protection alerts).
    let now = Utc::now();
    let snapshot = |dataset: &str, hours_ago: i64, i: u64| {
        let at = now - chrono::Duration::hours(hours_ago);
        Snapshot {
            name: format!("{dataset}@{}", at.format("auto-%Y-%m-%d_%H-%M")),
            guid: 0x5151_0000_0000 + i,
            creation_unix: at.timestamp(),
            used: 1 << 20,
            referenced: 1 << 30,
            holds: 0,
        }
    };
    Inventory {
        hostname: name.to_owned(),
        os: "Linux 6.1 (simulated)".into(),
        agent_version: nasfleet_proto::VERSION.to_owned(),
        zfs_version: "zfs-2.2.6".into(),
        zfs_dialect: ZfsDialect::Openzfs.into(),
        pools: vec![Pool {
            name: "tank".into(),
            size: 4 << 40,
            free: 2 << 40,
            health: "ONLINE".into(),
        }],
        datasets: vec![
            dataset("tank", 2 << 40),
            dataset(SCHEDULED_DATASET, 1 << 40),
            dataset(RUN_NOW_DATASET, 1 << 39),
        ],
        snapshots: vec![
            snapshot(SCHEDULED_DATASET, 2, 1),
            snapshot(SCHEDULED_DATASET, 1, 2),
            snapshot(RUN_NOW_DATASET, 1, 3),
        ],
        services: vec![Service {
            name: "ssh".into(),
            running: true,
            address: "127.0.0.1:22".into(),
            host_key_fingerprints: vec![
                "ssh-ed25519 SHA256:c2ltdWxhdGVkIGhvc3Qga2V5IGZvciBmbGVldCBsb2Fk".into(),
            ],
            detail: String::new(),
            host_keys: vec![
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNpbXVsYXRlZCBob3N0IGtleSBmb3IgZmxlZXQ"
                    .into(),
            ],
        }],
        collected_unix_ms: now_unix_ms(),
        errors: Vec::new(),
        replication_public_key: format!(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNpbXVsYXRlZCByZXBsaWNhdGlvbiBrZXk {name}"
        ),
        snapshot_pages: 0,
        snapshot_count: 0,
    }
}

/// The first system's inventory with `extra` more snapshots: the inventory,
/// then its pages, each made when it is sent.
fn big_inventory(name: &str, extra: usize) -> impl Iterator<Item = Up> {
    let mut head = inventory(name);
    let like = head.datasets[0].clone();
    head.datasets
        .extend((0..BIG_DATASETS).map(|d| big_dataset(&like, d)));
    let small = std::mem::take(&mut head.snapshots);
    let total = small.len() + extra;
    let page_size = nasfleet_proto::INVENTORY_PAGE_SNAPSHOTS;
    head.snapshot_count = total as u64;
    head.snapshot_pages = total.div_ceil(page_size) as u32;
    let now = Utc::now().timestamp();
    let snapshot = move |i: usize| -> Snapshot {
        if let Some(s) = small.get(i) {
            return s.clone();
        }
        let j = i - small.len();
        Snapshot {
            name: format!("tank/big/d{:02}@auto-{j:07}", j % BIG_DATASETS),
            guid: 0x6161_0000_0000 + j as u64,
            creation_unix: now - (extra - j) as i64,
            used: 1 << 16,
            referenced: 1 << 30,
            holds: 0,
        }
    };
    let pages = head.snapshot_pages;
    std::iter::once(Up::Inventory(head)).chain((0..pages).map(move |page| {
        let first = page as usize * page_size;
        Up::InventoryPage(InventoryPage {
            page,
            snapshots: (first..(first + page_size).min(total))
                .map(&snapshot)
                .collect(),
        })
    }))
}

fn big_dataset(like: &Dataset, d: usize) -> Dataset {
    Dataset {
        name: format!("tank/big/d{d:02}"),
        ..like.clone()
    }
}

/// One simulated agent until the generator stops it.
async fn agent(sim: Arc<Sim>, index: usize) {
    let mut backoff = Backoff::new(index as u64 + 1);
    let mut unacked: HashMap<u64, RunResult> = HashMap::new();
    let mut stop = sim.stop.clone();
    for _ in 0..MAX_SESSIONS {
        if stopping(&stop) {
            return;
        }
        let opened_at = Instant::now();
        let end = session(&sim, index, &mut unacked, &mut stop).await;
        sim.session[index].store(0, Ordering::Relaxed);
        let delay = match end {
            End::Stop => return,
            End::Refused(reason) => {
                sim.counters.refused.fetch_add(1, Ordering::Relaxed);
                sim.reason(&format!("refused: {reason}"));
                return;
            }
            End::Lost {
                reason,
                established,
            } => {
                if established {
                    sim.counters.lost.fetch_add(1, Ordering::Relaxed);
                    if opened_at.elapsed() >= STABLE_SESSION {
                        backoff.reset();
                    }
                } else {
                    sim.counters.failed_opens.fetch_add(1, Ordering::Relaxed);
                }
                sim.reason(&reason);
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wait_stop(&mut stop) => return,
        }
    }
}

fn lost(reason: String) -> End {
    End::Lost {
        reason,
        established: false,
    }
}

fn lost_established(reason: String) -> End {
    End::Lost {
        reason,
        established: true,
    }
}

fn is_refusal(code: Code) -> bool {
    matches!(code, Code::PermissionDenied | Code::Unauthenticated)
}

/// One stream, from dialling to its end, like the agent's session.
async fn session(
    sim: &Sim,
    index: usize,
    unacked: &mut HashMap<u64, RunResult>,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let member = &sim.members[index];
    let options = DialOptions {
        request_timeout: None,
        ..DialOptions::default()
    };
    let dialled = tokio::select! {
        d = dial(&sim.url, &sim.trust, Some(&member.identity), &options) => d,
        _ = wait_stop(stop) => return End::Stop,
    };
    let channel = match dialled {
        Ok(channel) => channel,
        Err(e) => return lost(format!("dial: {e}")),
    };
    let mut client = AgentLinkClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<AgentMessage>(16);
    let hello = AgentMessage {
        body: Some(Up::Hello(Hello {
            agent_version: nasfleet_proto::VERSION.to_owned(),
            active_run_ids: Vec::new(),
        })),
    };
    if tx.send(hello).await.is_err() {
        return lost("outbound queue closed".into());
    }
    let opened = tokio::time::timeout(WELCOME_TIMEOUT, async {
        let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
        let first = inbound.message().await?;
        Ok::<_, Status>((inbound, first))
    });
    let (mut inbound, first) = tokio::select! {
        r = opened => match r {
            Ok(Ok(pair)) => pair,
            Ok(Err(status)) if is_refusal(status.code()) => return End::Refused(status.message().to_owned()),
            Ok(Err(status)) => return lost(format!("connect: {:?}: {}", status.code(), status.message())),
            Err(_) => return lost(format!("no Welcome within {}s", WELCOME_TIMEOUT.as_secs())),
        },
        _ = wait_stop(stop) => return End::Stop,
    };
    let heartbeat_every = match first.and_then(|m| m.body) {
        Some(Down::Welcome(welcome)) => {
            sim.heartbeat_ms
                .store(welcome.heartbeat_interval_ms, Ordering::Relaxed);
            Duration::from_millis(welcome.heartbeat_interval_ms.max(100))
        }
        _ => return lost("the controller did not start with Welcome".into()),
    };
    let id = sim.next_session.fetch_add(1, Ordering::Relaxed) + 1;
    sim.welcomed_ms[index].store(now_unix_ms(), Ordering::Relaxed);
    sim.session[index].store(id, Ordering::Relaxed);
    sim.counters.sessions.fetch_add(1, Ordering::Relaxed);

    let send = |message: Up| {
        let tx = tx.clone();
        async move {
            tx.send(AgentMessage {
                body: Some(message),
            })
            .await
            .is_ok()
        }
    };
    if index == 0 && sim.big_snapshots > 0 {
        for message in big_inventory(&member.name, sim.big_snapshots) {
            if !send(message).await {
                return lost_established("outbound stream closed".into());
            }
        }
    } else if !send(Up::Inventory(inventory(&member.name))).await {
        return lost_established("outbound stream closed".into());
    }
    sim.counters.inventories.fetch_add(1, Ordering::Relaxed);
    // Results the controller has not acknowledged go up first, as the agent's do.
    let mut pending: Vec<&RunResult> = unacked.values().collect();
    pending.sort_by_key(|r| r.run_id);
    for result in pending {
        if !send(Up::RunResult(result.clone())).await {
            return lost_established("outbound stream closed".into());
        }
    }
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate; the inventory just sent counts as one.
    heartbeat.tick().await;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                if !send(Up::Heartbeat(Heartbeat { sent_unix_ms: now_unix_ms() })).await {
                    return lost_established("outbound stream closed".into());
                }
                sim.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            message = inbound.message() => match message {
                Ok(Some(ControllerMessage { body: Some(body) })) => {
                    let reply = handle(sim, index, body, unacked);
                    if let Some(reply) = reply
                        && !send(reply).await
                    {
                        return lost_established("outbound stream closed".into());
                    }
                }
                Ok(Some(ControllerMessage { body: None })) => {}
                Ok(None) => return lost_established("the controller closed the stream".into()),
                Err(status) if is_refusal(status.code()) => return End::Refused(status.message().to_owned()),
                Err(status) => return lost_established(format!("stream: {:?}: {}", status.code(), status.message())),
            },
            _ = wait_stop(stop) => return End::Stop,
        }
    }
}

/// What a simulated agent does with one message from the controller; the
/// message it sends back, if any.
fn handle(
    sim: &Sim,
    index: usize,
    body: Down,
    unacked: &mut HashMap<u64, RunResult>,
) -> Option<Up> {
    match body {
        Down::StartRun(work) => {
            let at = Instant::now();
            let run_id = work.run_id;
            let (dataset, snapshot) = match &work.work {
                Some(start_run::Work::Snapshot(s)) => (s.dataset.clone(), s.snapshot_name.clone()),
                _ => (String::from("(not a snapshot)"), String::new()),
            };
            sim.receipts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Receipt {
                    run_id,
                    agent: index,
                    dataset: dataset.clone(),
                    at,
                    unix_ms: now_unix_ms(),
                });
            sim.receipt_added.notify_waiters();
            let result = finished(&sim.members[index].name, &work, &dataset, &snapshot);
            unacked.insert(run_id, result.clone());
            sim.counters.results.fetch_add(1, Ordering::Relaxed);
            Some(Up::RunResult(result))
        }
        Down::AckRunResult(ack) => {
            unacked.remove(&ack.run_id);
            sim.counters.acks.fetch_add(1, Ordering::Relaxed);
            None
        }
        // The big system sent its pages on connect; it answers no requests
        // for more (one reply per request here), so the controller keeps them.
        Down::RequestInventory(_) if index == 0 && sim.big_snapshots > 0 => None,
        Down::RequestInventory(_) => {
            sim.counters.inventories.fetch_add(1, Ordering::Relaxed);
            Some(Up::Inventory(inventory(&sim.members[index].name)))
        }
        Down::Request(request) => {
            sim.counters.requests.fetch_add(1, Ordering::Relaxed);
            Some(Up::Response(AgentResponse {
                request_id: request.request_id,
                ..Default::default()
            }))
        }
        Down::CancelRun(_) => {
            sim.counters.cancels.fetch_add(1, Ordering::Relaxed);
            None
        }
        Down::Welcome(_) | Down::CertificateRenewed(_) => None,
    }
}

/// The result of a run that took no time.
fn finished(system: &str, work: &StartRun, dataset: &str, snapshot: &str) -> RunResult {
    let mut step = RunStep {
        name: format!("{system} {dataset}"),
        detail: format!("took {dataset}@{snapshot}"),
        ..Default::default()
    };
    step.set_state(RunState::Finished);
    let mut result = RunResult {
        run_id: work.run_id,
        steps: vec![step],
        finished_unix_ms: now_unix_ms(),
        ..Default::default()
    };
    result.set_state(RunState::Finished);
    result
}

// ---- the report ----

struct Goal {
    what: String,
    measured: String,
    goal: String,
    met: Option<bool>,
}

#[derive(Default)]
struct Report {
    goals: Vec<Goal>,
    raw: Vec<String>,
    /// What the controller got wrong, timings aside (see `--check`).
    wrong: Vec<String>,
}

impl Report {
    fn wrong(&mut self, what: String) {
        self.wrong.push(what);
    }

    fn goal(&mut self, what: &str, measured: String, goal: &str, met: Option<bool>) {
        self.goals.push(Goal {
            what: what.to_owned(),
            measured,
            goal: goal.to_owned(),
            met,
        });
    }

    fn raw(&mut self, line: String) {
        self.raw.push(line);
    }

    fn print(&self, systems: usize, tasks: usize) {
        println!();
        println!("==== raw numbers ====");
        for line in &self.raw {
            println!("  {line}");
        }
        println!();
        println!(
            "==== summary: {systems} systems, {tasks} tasks due in one minute (goals are stated for 10,000 systems) ===="
        );
        println!(
            "{:<44} {:>24}  {:<18} result",
            "measure", "measured", "goal"
        );
        for g in &self.goals {
            let result = match g.met {
                Some(true) => "MET",
                Some(false) => "NOT MET",
                None => "info",
            };
            println!("{:<44} {:>24}  {:<18} {result}", g.what, g.measured, g.goal);
        }
    }
}

// ---- the phases ----

async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let pid = args.pid.to_string();
    let url = controller_config(&args.data_dir)?;
    let mut admin = Admin::connect(&args.data_dir, &url).await?;
    let before = admin.statuses(args.systems).await?;
    if online_count(&before) > 0 || before.iter().any(|s| *s != SystemStatus::Unspecified) {
        bail!("the controller already has systems named simNNNNN; use a fresh one");
    }
    let first = sample(&pid)?;
    let mut report = Report::default();
    say!(
        started,
        "controller {url} (pid {pid}, RSS {}); {} systems, {} scheduled tasks, {} Run-Now",
        mib(first.rss),
        args.systems,
        args.tasks,
        args.run_now
    );

    // 1. Enrolment.
    let t = Instant::now();
    let members = enroll_all(&admin, &url, args.systems, args.enroll_concurrency, started).await?;
    let enrolled_in = t.elapsed();
    let after_enrol = sample(&pid)?;
    say!(
        started,
        "enrolled {} systems in {} ({:.0}/s, {} at a time; setup, not a goal); controller RSS {}",
        members.len(),
        secs(enrolled_in),
        members.len() as f64 / enrolled_in.as_secs_f64().max(1e-9),
        args.enroll_concurrency,
        mib(after_enrol.rss)
    );
    report.raw(format!(
        "enrolment: {} systems in {} ({:.0}/s), controller RSS after it {}",
        members.len(),
        secs(enrolled_in),
        members.len() as f64 / enrolled_in.as_secs_f64().max(1e-9),
        mib(after_enrol.rss)
    ));

    // 2. All connect at once.
    let (stop_tx, stop) = watch::channel(false);
    let sim = Arc::new(Sim {
        big_snapshots: args.big_snapshots,
        url: url.clone(),
        trust: admin.trust.clone(),
        session: (0..members.len()).map(|_| AtomicU64::new(0)).collect(),
        welcomed_ms: (0..members.len()).map(|_| AtomicI64::new(0)).collect(),
        members,
        next_session: AtomicU64::new(0),
        heartbeat_ms: AtomicU64::new(0),
        counters: Counters::default(),
        reasons: Mutex::new(BTreeMap::new()),
        receipts: Mutex::new(Vec::new()),
        receipt_added: Notify::new(),
        stop,
    });
    let outcome = phases(&args, &pid, &mut admin, &sim, &mut report, started).await;
    // Stop the agents whatever happened.
    let _ = stop_tx.send(true);
    let stopped = tokio::time::timeout(Duration::from_secs(15), async {
        while sim.connected() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if stopped.is_err() {
        eprintln!(
            "{} simulated agents still connected 15 s after the stop",
            sim.connected()
        );
    }
    let c = &sim.counters;
    report.raw(format!(
        "agents: {} streams welcomed, {} lost after Welcome, {} failed before Welcome, {} refused; \
         {} heartbeats, {} inventories, {} run results, {} acks, {} requests, {} cancels; heartbeat {} ms",
        c.sessions.load(Ordering::Relaxed),
        c.lost.load(Ordering::Relaxed),
        c.failed_opens.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        c.heartbeats.load(Ordering::Relaxed),
        c.inventories.load(Ordering::Relaxed),
        c.results.load(Ordering::Relaxed),
        c.acks.load(Ordering::Relaxed),
        c.requests.load(Ordering::Relaxed),
        c.cancels.load(Ordering::Relaxed),
        sim.heartbeat_ms.load(Ordering::Relaxed),
    ));
    let reasons = sim
        .reasons
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (reason, count) in reasons {
        report.raw(format!("  session ended {count}x: {reason}"));
    }
    if let Ok(me) = sample("self") {
        report.raw(format!(
            "generator itself: RSS {} (peak {})",
            mib(me.rss),
            mib(me.hwm)
        ));
    }
    if let Err(e) = &outcome {
        report.raw(format!("stopped early: {e:#}"));
    }
    report.print(args.systems, args.tasks);
    if !report.wrong.is_empty() {
        println!();
        println!("==== wrong, whatever the timings ====");
        for what in &report.wrong {
            println!("  {what}");
        }
        if args.check {
            bail!("{} things went wrong (see above)", report.wrong.len());
        }
    }
    outcome
}

async fn phases(
    args: &Args,
    first_pid: &str,
    admin: &mut Admin,
    sim: &Arc<Sim>,
    report: &mut Report,
    started: Instant,
) -> Result<()> {
    let n = args.systems;
    let mut pid = first_pid.to_owned();

    // 2. Connect all at once.
    let storm_start = sample(&pid)?;
    let me_start = sample("self")?;
    let t = Instant::now();
    let handles: Vec<JoinHandle<()>> = (0..n)
        .map(|i| tokio::spawn(agent(sim.clone(), i)))
        .collect();
    let spawned_in = t.elapsed();
    let online = wait_all_online(admin, sim, n, args.online_timeout, t, started, false).await;
    let storm_end = sample(&pid)?;
    let me_end = sample("self")?;
    let last_welcome = sim
        .welcomed_ms
        .iter()
        .map(|w| w.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    report.raw(format!(
        "connect storm: {n} agents spawned in {}; controller used {:.1} CPU s, generator {:.1} CPU s; \
         controller RSS {}; {} streams welcomed, {} failed before Welcome",
        ms(spawned_in),
        cpu_seconds(&storm_start, &storm_end),
        cpu_seconds(&me_start, &me_end),
        mib(storm_end.rss),
        sim.counters.sessions.load(Ordering::Relaxed),
        sim.counters.failed_opens.load(Ordering::Relaxed),
    ));
    match online {
        Ok(elapsed) => {
            let welcome_span = Duration::from_millis(
                (last_welcome - (now_unix_ms() - t.elapsed().as_millis() as i64)).max(0) as u64,
            );
            report.raw(format!(
                "all {n} ONLINE after {} (ListSystems polled every {}); last Welcome at {}",
                secs(elapsed),
                ms(ONLINE_POLL),
                secs(welcome_span)
            ));
            report.goal(
                "time until all ONLINE",
                secs(elapsed),
                "<= 15 s",
                Some(elapsed <= GOAL_ALL_ONLINE),
            );
        }
        Err(e) => {
            report.raw(format!("not all ONLINE: {e:#}"));
            report.wrong(format!("connect storm: not all {n} ONLINE: {e:#}"));
            report.goal(
                "time until all ONLINE",
                format!("> {}", secs(args.online_timeout)),
                "<= 15 s",
                Some(false),
            );
        }
    }

    // 3. Steady window.
    say!(started, "steady window of {} s", args.steady.as_secs());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s0 = sample(&pid)?;
    let g0 = sample("self")?;
    let window = Instant::now();
    let mut polls = 0;
    let mut false_offline: HashSet<usize> = HashSet::new();
    let mut false_observations = 0usize;
    let mut poll_errors = 0usize;
    while window.elapsed() < args.steady {
        let before: Vec<(u64, i64)> = (0..n)
            .map(|i| {
                (
                    sim.session[i].load(Ordering::Relaxed),
                    sim.welcomed_ms[i].load(Ordering::Relaxed),
                )
            })
            .collect();
        let poll_started = now_unix_ms();
        match admin.statuses(n).await {
            Ok(statuses) => {
                polls += 1;
                for (i, status) in statuses.iter().enumerate() {
                    let (id, welcomed) = before[i];
                    let alive = id != 0
                        && sim.session[i].load(Ordering::Relaxed) == id
                        && poll_started - welcomed >= SETTLED.as_millis() as i64;
                    if alive && *status != SystemStatus::Online {
                        false_observations += 1;
                        false_offline.insert(i);
                    }
                }
            }
            Err(e) => {
                poll_errors += 1;
                eprintln!("steady poll: {e:#}");
            }
        }
        let left = args.steady.saturating_sub(window.elapsed());
        tokio::time::sleep(STEADY_POLL.min(left)).await;
    }
    let s1 = sample(&pid)?;
    let g1 = sample("self")?;
    let cpu = cpu_percent(&s0, &s1);
    say!(
        started,
        "steady: controller RSS {} (peak {}), CPU {:.1}% of one core; {} systems seen OFFLINE while connected",
        mib(s1.rss),
        mib(s1.hwm),
        cpu,
        false_offline.len()
    );
    report.raw(format!(
        "steady window {} s: controller RSS {} (peak so far {}; {} KiB more per connected agent than before they connected), CPU {:.1}% of one core ({} cores here); \
         generator CPU {:.1}%; {} ListSystems polls ({} failed), {} OFFLINE observations of connected systems",
        args.steady.as_secs(),
        mib(s1.rss),
        mib(s1.hwm),
        s1.rss.saturating_sub(storm_start.rss) / 1024 / n as u64,
        cpu,
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(1),
        cpu_percent(&g0, &g1),
        polls,
        poll_errors,
        false_observations
    ));
    report.goal(
        "controller RSS at steady state",
        mib(s1.rss),
        "<= 512 MiB",
        Some(s1.rss <= GOAL_RSS_BYTES),
    );
    report.goal(
        "controller CPU at steady state",
        format!("{cpu:.1}% of a core"),
        "(no goal)",
        None,
    );
    if polls == 0 || !false_offline.is_empty() {
        report.wrong(format!(
            "steady window: {} systems shown OFFLINE while connected ({polls} polls)",
            false_offline.len()
        ));
    }
    report.goal(
        "false OFFLINE in the steady window",
        format!("{} systems", false_offline.len()),
        "0",
        Some(polls > 0 && false_offline.is_empty()),
    );

    // 4. ListSystems latency.
    let mut times = Vec::with_capacity(args.list_calls);
    let mut listed = 0;
    for _ in 0..args.list_calls {
        let t = Instant::now();
        let answer = call(
            "ListSystems",
            admin.client.clone().list_systems(ListSystemsRequest {}),
        )
        .await?;
        times.push(t.elapsed());
        listed = answer.systems.len();
    }
    times.sort_unstable();
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    say!(
        started,
        "ListSystems: p50 {}, p99 {} ({} calls)",
        ms(p50),
        ms(p99),
        times.len()
    );
    report.raw(format!(
        "ListSystems over {} calls (admin, mutual TLS, {} systems each): min {}, p50 {}, p99 {}, max {}",
        times.len(),
        listed,
        ms(times[0]),
        ms(p50),
        ms(p99),
        ms(times[times.len() - 1])
    ));
    report.goal(
        "ListSystems p50",
        ms(p50),
        "<= 20 ms",
        Some(p50 <= GOAL_LIST_P50),
    );
    report.goal("ListSystems p99", ms(p99), "(no goal)", None);

    // 5. Run-Now.
    let create_rate = match run_now(args, admin, sim, report, started).await {
        Ok(rate) => rate,
        Err(e) => {
            report.raw(format!("Run-Now phase failed: {e:#}"));
            report.wrong(format!("Run-Now phase failed: {e:#}"));
            report.goal(
                "Run-Now -> StartRun p99",
                "failed".into(),
                "<= 20 ms",
                Some(false),
            );
            10.0
        }
    };

    // 5b. A system with many snapshots.
    if args.big_snapshots > 0
        && let Err(e) = big_system(args, admin, sim, report, started).await
    {
        report.raw(format!("big-system phase failed: {e:#}"));
        report.wrong(format!("big-system phase failed: {e:#}"));
    }

    // 6. T tasks due in the same minute.
    if args.tasks > 0
        && let Err(e) = due_in_one_minute(args, admin, sim, report, create_rate, started).await
    {
        report.raw(format!("scheduled phase failed: {e:#}"));
        report.wrong(format!("scheduled phase failed: {e:#}"));
        report.goal(
            "T due in one minute: last StartRun",
            "failed".into(),
            "<= 2 s",
            Some(false),
        );
    }

    // 7. Restart storm.
    match &args.restart {
        Some(command) => {
            if let Some(new_pid) = restart(args, command, admin, sim, report, started).await? {
                pid = new_pid;
                if let Ok(s) = sample(&pid) {
                    report.raw(format!(
                        "controller after the restart (pid {pid}): RSS {}",
                        mib(s.rss)
                    ));
                }
            }
        }
        None => report.goal(
            "restart storm: all ONLINE again",
            "skipped".into(),
            "<= 30 s",
            None,
        ),
    }
    drop(handles);
    Ok(())
}

/// Polls ListSystems until all `n` are ONLINE; the time from `since`.
async fn wait_all_online(
    admin: &mut Admin,
    sim: &Sim,
    n: usize,
    timeout: Duration,
    since: Instant,
    started: Instant,
    redial: bool,
) -> Result<Duration> {
    let mut last_print = Instant::now();
    let mut last_error = String::new();
    let mut online = 0;
    let mut needs_dial = redial;
    while since.elapsed() < timeout {
        if needs_dial {
            match admin.redial().await {
                Ok(()) => needs_dial = false,
                Err(e) => last_error = format!("{e:#}"),
            }
        }
        if !needs_dial {
            match admin.statuses(n).await {
                Ok(statuses) => {
                    online = online_count(&statuses);
                    if online == n {
                        let elapsed = since.elapsed();
                        say!(started, "all {n} ONLINE after {}", secs(elapsed));
                        return Ok(elapsed);
                    }
                }
                Err(e) => {
                    last_error = format!("{e:#}");
                    needs_dial = redial;
                }
            }
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            last_print = Instant::now();
            say!(
                started,
                "  {} s: {online}/{n} ONLINE, {} streams up here, {} failed opens, {} lost{}",
                since.elapsed().as_secs(),
                sim.connected(),
                sim.counters.failed_opens.load(Ordering::Relaxed),
                sim.counters.lost.load(Ordering::Relaxed),
                if last_error.is_empty() {
                    String::new()
                } else {
                    format!("; last poll error: {last_error}")
                }
            );
        }
        tokio::time::sleep(ONLINE_POLL).await;
    }
    bail!(
        "{online}/{n} ONLINE after {} s{}",
        timeout.as_secs(),
        if last_error.is_empty() {
            String::new()
        } else {
            format!(" (last poll error: {last_error})")
        }
    )
}

/// Creates snapshot tasks on `dataset` of the given systems, a few at a
/// time; their ids by system index, and how long it took.
async fn create_tasks(
    admin: &Admin,
    systems: &[usize],
    dataset: &str,
    schedule: &str,
    enabled: bool,
) -> Result<(Vec<(usize, u64)>, Duration)> {
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let systems: Arc<Vec<usize>> = Arc::new(systems.to_vec());
    let mut workers = Vec::new();
    for _ in 0..CREATE_CONCURRENCY.min(systems.len()) {
        let (client, next, systems) = (admin.client.clone(), next.clone(), systems.clone());
        let (dataset, schedule) = (dataset.to_owned(), schedule.to_owned());
        workers.push(tokio::spawn(async move {
            let mut made = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = systems.get(k) else {
                    return Ok::<_, anyhow::Error>(made);
                };
                let spec = TaskSpec {
                    schedule: schedule.clone(),
                    enabled,
                    stale_after: String::new(),
                    kind: Some(task_spec::Kind::Snapshot(SnapshotTaskSpec {
                        system: system_name(i),
                        dataset: dataset.clone(),
                        recursive: false,
                        exclude: Vec::new(),
                        naming_schema: "auto-%Y-%m-%d_%H-%M".into(),
                        lifetime: "2w".into(),
                    })),
                };
                let task = call(
                    &format!("CreateTask on {}", system_name(i)),
                    client.clone().create_task(spec),
                )
                .await?;
                made.push((i, task.id));
            }
        }));
    }
    let mut made = Vec::new();
    for worker in workers {
        made.extend(worker.await.context("a task-creating worker panicked")??);
    }
    made.sort_unstable();
    Ok((made, t.elapsed()))
}

/// Waits until `ready` says the receipts hold what is awaited, or `until`.
async fn wait_receipts(sim: &Sim, until: Instant, ready: impl Fn(&[Receipt]) -> bool) -> bool {
    loop {
        let notified = sim.receipt_added.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if sim.receipts_of(&ready) {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // A short poll as well: notify_waiters only wakes who is waiting.
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
    }
}

/// Phase 5; returns the rate tasks were created at (tasks per second).
async fn run_now(
    args: &Args,
    admin: &mut Admin,
    sim: &Sim,
    report: &mut Report,
    started: Instant,
) -> Result<f64> {
    let n = args.systems;
    let k = args.run_now;
    if k == 0 {
        return Ok(50.0);
    }
    // Spread over the fleet; from the end, away from the scheduled phase's first T.
    let systems: Vec<usize> = (0..k).map(|j| n - 1 - j * n / k).collect();
    let (tasks, took) = create_tasks(admin, &systems, RUN_NOW_DATASET, "0 0 1 1 *", false).await?;
    let rate = tasks.len() as f64 / took.as_secs_f64().max(1e-9);
    say!(
        started,
        "created {} Run-Now tasks in {} ({rate:.0}/s)",
        tasks.len(),
        secs(took)
    );
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut call_times = Vec::with_capacity(tasks.len());
    let mut missing = 0;
    let mut failed = 0;
    for (system, task) in &tasks {
        let (call_time, outcome) = run_now_once(admin, sim, *task).await?;
        call_times.push(call_time);
        match outcome {
            RunNow::Started(latency) => latencies.push(latency),
            RunNow::Failed(reason) => {
                failed += 1;
                eprintln!(
                    "task {task} on {} failed at once: {reason}",
                    system_name(*system)
                );
            }
            RunNow::NeverStarted(_) => missing += 1,
        }
    }
    latencies.sort_unstable();
    call_times.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    say!(
        started,
        "Run-Now -> StartRun: p50 {}, p99 {} ({} runs, {} missing, {} failed)",
        ms(p50),
        ms(p99),
        latencies.len(),
        missing,
        failed
    );
    report.raw(format!(
        "Run-Now on {} systems: task creation {} ({rate:.0}/s); RunTask -> StartRun min {}, p50 {}, p99 {}, max {}; \
         RunTask call itself p50 {}, p99 {}; {} StartRuns missing, {} runs failed at once",
        tasks.len(),
        secs(took),
        ms(latencies.first().copied().unwrap_or_default()),
        ms(p50),
        ms(p99),
        ms(latencies.last().copied().unwrap_or_default()),
        ms(percentile(&call_times, 0.5)),
        ms(percentile(&call_times, 0.99)),
        missing,
        failed
    ));
    if missing > 0 || failed > 0 {
        report.wrong(format!(
            "Run-Now: {missing} StartRuns never came, {failed} runs failed at once"
        ));
    }
    report.goal(
        "Run-Now -> StartRun p99",
        ms(p99),
        "<= 20 ms",
        Some(!latencies.is_empty() && missing == 0 && failed == 0 && p99 <= GOAL_RUN_NOW_P99),
    );
    report.goal("Run-Now -> StartRun p50", ms(p50), "(no goal)", None);
    Ok(rate)
}

/// Phase 5b: waits until the controller counts every snapshot of the
/// first system, then times Run-Now on it against a small system, each a
/// replication source (so retention's protected bases are read at dispatch).
async fn big_system(
    args: &Args,
    admin: &mut Admin,
    sim: &Sim,
    report: &mut Report,
    started: Instant,
) -> Result<()> {
    let n = args.systems;
    if n < 4 {
        bail!("needs 4 systems at least");
    }
    let big = system_name(0);
    let total = (args.big_snapshots + inventory(&big).snapshots.len()) as u64;
    let t0 = Instant::now();
    let counted = loop {
        let detail = call(
            "GetSystem",
            admin.client.clone().get_system(GetSystemRequest {
                name: big.clone(),
                refresh: false,
            }),
        )
        .await?;
        let inventory = detail.inventory.unwrap_or_default();
        let counted: u64 = inventory.datasets.iter().map(|d| d.snapshot_count).sum();
        if counted == total || t0.elapsed() > BIG_WAIT {
            break counted;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    say!(
        started,
        "{big}: {counted}/{total} snapshots counted by the controller after {}",
        secs(t0.elapsed())
    );
    report.raw(format!(
        "big system {big}: {total} snapshots sent in pages of {}; the controller counted {counted}          ({} after the phase began)",
        nasfleet_proto::INVENTORY_PAGE_SNAPSHOTS,
        secs(t0.elapsed())
    ));
    if counted != total {
        report.wrong(format!(
            "{big}: the controller counts {counted} of its {total} snapshots"
        ));
    }
    report.goal(
        "snapshots of one system, all kept",
        format!("{counted} of {total}"),
        "all",
        Some(counted == total),
    );
    // Each a source replicating into the next system, then a snapshot task on it.
    let small = 2;
    let mut tasks = Vec::new();
    for (source, dataset) in [(0, BIG_RUN_DATASET), (small, RUN_NOW_DATASET)] {
        let spec = TaskSpec {
            schedule: "0 0 1 1 *".into(),
            enabled: false,
            stale_after: String::new(),
            kind: Some(task_spec::Kind::Replication(ReplicationTaskSpec {
                sources: vec![ReplicationSource {
                    system: system_name(source),
                    datasets: vec![dataset.to_owned()],
                    ..Default::default()
                }],
                target_system: system_name(source + 1),
                target_dataset: "tank/backup".into(),
                name: format!("bench-big-{source}"),
                ..Default::default()
            })),
        };
        call(
            "CreateTask (replication)",
            admin.client.clone().create_task(spec),
        )
        .await?;
        let (made, _) = create_tasks(admin, &[source], dataset, "0 0 1 1 *", false).await?;
        tasks.extend(made);
    }
    let mut latencies: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 0..BIG_RUN_NOW {
        for (which, (_, task)) in tasks.iter().enumerate() {
            match run_now_once(admin, sim, *task).await?.1 {
                RunNow::Started(latency) => latencies[which].push(latency),
                RunNow::Failed(reason) => bail!("task {task} failed at once: {reason}"),
                RunNow::NeverStarted(id) => {
                    bail!("round {round}: the StartRun of run {id} never came")
                }
            }
        }
    }
    for l in &mut latencies {
        l.sort_unstable();
    }
    let (big_p50, small_p50) = (
        percentile(&latencies[0], 0.5),
        percentile(&latencies[1], 0.5),
    );
    let extra = big_p50.saturating_sub(small_p50);
    report.raw(format!(
        "Run-Now -> StartRun, {BIG_RUN_NOW} each, both replication sources: {big} ({total} snapshots) p50 {}, p99 {};          {} (3 snapshots) p50 {}, p99 {}",
        ms(big_p50),
        ms(percentile(&latencies[0], 0.99)),
        system_name(small),
        ms(small_p50),
        ms(percentile(&latencies[1], 0.99)),
    ));
    report.goal(
        "Run-Now on the big system, p50 over a small's",
        format!("+{}", ms(extra)),
        "<= 5 ms",
        Some(extra <= GOAL_BIG_RUN_NOW_EXTRA),
    );
    Ok(())
}

/// What one Run-Now came to.
enum RunNow {
    /// The agent's StartRun came this long after the call.
    Started(Duration),
    /// The run failed at once, for this reason.
    Failed(String),
    /// No StartRun of this run came in time.
    NeverStarted(u64),
}

/// Runs `task` now and waits for its StartRun at the agent; also how long
/// the RunTask call itself took.
async fn run_now_once(admin: &Admin, sim: &Sim, task: u64) -> Result<(Duration, RunNow)> {
    let t0 = Instant::now();
    let run = call(
        "RunTask",
        admin.client.clone().run_task(TaskRef {
            task: task.to_string(),
        }),
    )
    .await?;
    let call_time = t0.elapsed();
    if run.state() == RunState::Failed {
        let reason = format!("run {}: {}", run.id, run.reason);
        return Ok((call_time, RunNow::Failed(reason)));
    }
    let id = run.id;
    if !wait_receipts(sim, t0 + RUN_NOW_RECEIPT_TIMEOUT, |r| {
        r.iter().any(|r| r.run_id == id)
    })
    .await
    {
        return Ok((call_time, RunNow::NeverStarted(id)));
    }
    let outcome = match sim.receipts_of(|r| r.iter().find(|r| r.run_id == id).map(|r| r.at)) {
        Some(at) => RunNow::Started(at.saturating_duration_since(t0)),
        None => RunNow::NeverStarted(id),
    };
    Ok((call_time, outcome))
}

/// Phase 6.
async fn due_in_one_minute(
    args: &Args,
    admin: &mut Admin,
    sim: &Sim,
    report: &mut Report,
    create_rate: f64,
    started: Instant,
) -> Result<()> {
    let t_count = args.tasks;
    let estimate = Duration::from_secs_f64(t_count as f64 / create_rate.max(1.0) * 1.5 + 5.0);
    let earliest = Utc::now()
        + chrono::Duration::from_std(estimate + DUE_LEAD).context("due time out of range")?;
    let due = next_whole_minute(earliest)?;
    let schedule = format!("{} {} * * *", due.minute(), due.hour());
    say!(
        started,
        "creating {t_count} tasks with schedule '{schedule}' (UTC), due at {} (creation estimated at {})",
        due.format("%H:%M:%S"),
        secs(estimate)
    );
    let systems: Vec<usize> = (0..t_count).collect();
    let (tasks, took) = create_tasks(admin, &systems, SCHEDULED_DATASET, &schedule, true).await?;
    let due_ms = due.timestamp_millis();
    let margin_ms = due_ms - now_unix_ms();
    say!(
        started,
        "created {} tasks in {}; due in {:.1} s",
        tasks.len(),
        secs(took),
        margin_ms as f64 / 1000.0
    );
    if margin_ms < 1000 {
        report.raw(format!(
            "scheduled phase: creating the tasks took {} and ended {:.1} s before the due minute; \
             tasks created after it are not due until tomorrow",
            secs(took),
            margin_ms as f64 / 1000.0
        ));
    }
    let wanted: HashSet<usize> = tasks.iter().map(|(i, _)| *i).collect();
    let is_due = |r: &Receipt| r.dataset == SCHEDULED_DATASET && r.unix_ms >= due_ms - 1000;
    let until = Instant::now() + Duration::from_millis(margin_ms.max(0) as u64) + DUE_WAIT;
    let all = wait_receipts(sim, until, |r| {
        let got: HashSet<usize> = r.iter().filter(|r| is_due(r)).map(|r| r.agent).collect();
        wanted.iter().all(|i| got.contains(i))
    })
    .await;
    // Room for duplicates to show.
    tokio::time::sleep(DUPLICATE_WAIT).await;
    let (received, first, last, duplicate_runs, duplicate_tasks, early) = sim.receipts_of(|r| {
        let due_receipts: Vec<&Receipt> = r.iter().filter(|r| is_due(r)).collect();
        let mut per_run: HashMap<u64, usize> = HashMap::new();
        let mut per_agent: HashMap<usize, HashSet<u64>> = HashMap::new();
        for receipt in &due_receipts {
            *per_run.entry(receipt.run_id).or_default() += 1;
            per_agent
                .entry(receipt.agent)
                .or_default()
                .insert(receipt.run_id);
        }
        let duplicate_runs: usize = per_run.values().map(|c| c - 1).sum();
        let duplicate_tasks: usize = per_agent.values().map(|runs| runs.len() - 1).sum();
        let early = due_receipts.iter().filter(|r| r.unix_ms < due_ms).count();
        (
            per_agent.len(),
            due_receipts.iter().map(|r| r.unix_ms).min(),
            due_receipts.iter().map(|r| r.unix_ms).max(),
            duplicate_runs,
            duplicate_tasks,
            early,
        )
    });
    let spread = |at: Option<i64>| at.map(|at| Duration::from_millis((at - due_ms).max(0) as u64));
    let last_after = spread(last);
    say!(
        started,
        "due minute: {received}/{} tasks' StartRuns, first {} and last {} after the minute; {} duplicates",
        tasks.len(),
        spread(first).map(ms).unwrap_or_else(|| "-".into()),
        last_after.map(ms).unwrap_or_else(|| "-".into()),
        duplicate_runs + duplicate_tasks
    );
    report.raw(format!(
        "{} tasks due at {} UTC (created in {}, {:.1} s before it): {received} received a StartRun \
         within {} s; first {} after the minute, last {}; {early} before the minute; \
         {duplicate_runs} run ids received twice, {duplicate_tasks} extra runs of one task",
        tasks.len(),
        due.format("%H:%M"),
        secs(took),
        margin_ms as f64 / 1000.0,
        DUE_WAIT.as_secs(),
        spread(first).map(ms).unwrap_or_else(|| "-".into()),
        last_after.map(ms).unwrap_or_else(|| "-".into()),
    ));
    if !all {
        report.wrong(format!(
            "due in one minute: only {received} of {} tasks were started",
            tasks.len()
        ));
    }
    if duplicate_runs + duplicate_tasks > 0 {
        report.wrong(format!(
            "due in one minute: {duplicate_runs} run ids received twice, {duplicate_tasks} extra runs of one task"
        ));
    }
    let within = all && last_after.is_some_and(|d| d <= GOAL_DUE_SPREAD);
    report.goal(
        "T due in one minute: last StartRun after",
        match (all, last_after) {
            (true, Some(d)) => secs(d),
            (false, _) => format!("{received}/{} arrived", tasks.len()),
            (true, None) => "-".into(),
        },
        "<= 2 s",
        Some(within && margin_ms >= 1000),
    );
    report.goal(
        "T due in one minute: duplicates",
        format!("{}", duplicate_runs + duplicate_tasks),
        "0",
        Some(duplicate_runs + duplicate_tasks == 0),
    );
    Ok(())
}

/// The first whole minute at or after `t`.
fn next_whole_minute(t: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let floor = t
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .context("rounding to the minute")?;
    Ok(if floor < t {
        floor + chrono::Duration::minutes(1)
    } else {
        floor
    })
}

/// Phase 7; the new controller's pid.
async fn restart(
    args: &Args,
    command: &str,
    admin: &mut Admin,
    sim: &Sim,
    report: &mut Report,
    started: Instant,
) -> Result<Option<String>> {
    let n = args.systems;
    let connected = sim.connected();
    let lost_before = sim.counters.lost.load(Ordering::Relaxed);
    let opens_before = sim.counters.failed_opens.load(Ordering::Relaxed);
    say!(
        started,
        "restarting the controller with {connected}/{n} streams up: {command}"
    );
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new("sh");
    child
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RESTART_CMD_TIMEOUT, child.output())
        .await
        .with_context(|| {
            format!(
                "the restart command took longer than {}s",
                RESTART_CMD_TIMEOUT.as_secs()
            )
        })?
        .context("running the restart command")?;
    let restarted_in = t0.elapsed();
    if !output.status.success() {
        bail!("the restart command failed: {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let new_pid = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .filter(|l| l.parse::<u32>().is_ok())
        .context("the restart command did not print the new pid last")?;
    say!(
        started,
        "restart command done in {} (new pid {new_pid})",
        secs(restarted_in)
    );
    let t1 = Instant::now();
    let online = wait_all_online(admin, sim, n, args.online_timeout, t1, started, true).await;
    let lost = sim.counters.lost.load(Ordering::Relaxed) - lost_before;
    let opens = sim.counters.failed_opens.load(Ordering::Relaxed) - opens_before;
    match online {
        Ok(elapsed) => {
            report.raw(format!(
                "restart storm: stop + start took {}; all {n} ONLINE {} after the new process started \
                 ({} after the stop began); {lost} streams lost, {opens} failed reconnect attempts",
                secs(restarted_in),
                secs(elapsed),
                secs(restarted_in + elapsed),
            ));
            report.goal(
                "restart storm: all ONLINE again",
                secs(elapsed),
                "<= 30 s",
                Some(elapsed <= GOAL_RESTART_ONLINE),
            );
        }
        Err(e) => {
            report.raw(format!(
                "restart storm: stop + start took {}; {e:#}; {lost} streams lost, {opens} failed reconnect attempts",
                secs(restarted_in)
            ));
            report.wrong(format!("restart storm: not all {n} ONLINE again: {e:#}"));
            report.goal(
                "restart storm: all ONLINE again",
                format!("> {}", secs(args.online_timeout)),
                "<= 30 s",
                Some(false),
            );
        }
    }
    Ok(Some(new_pid))
}
