//! Benchmark, not a test: server-side time and weight of the web console's heaviest pages (Dashboard, Replication, Data Protection) at fleet size, against reading the same records from the store in the same run.
//!
//!   cargo run --release -p nasfleet-controller --example bench_console [SYSTEMS [TASKS [ROUNDS]]]
//!
//! The store gets SYSTEMS (default 1000) enrolled systems, each with an
//! inventory of 2 pools, 20 datasets and an SSH service, and TASKS
//! (default 5000) tasks (3 in 5 replication with two sources, 1 in 5
//! rsync, 1 in 5 periodic snapshot), each with one finished or failed run.
//! Each page is asked for ROUNDS times (default 20) through the console's
//! router, as an admin who sees everything; a page's time runs from the
//! request to the last byte of its body, without TLS. "raw" reads what
//! the dashboard shows straight from the store (every system, its
//! inventory decoded, every task) with no access checks or markup.

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::{Request, header};
use nasfleet_controller::config::WebSettings;
use nasfleet_controller::engine::run_hub::RunHub;
use nasfleet_controller::engine::state::{ControllerState, SharedState};
use nasfleet_controller::pki::CertificateAuthority;
use nasfleet_controller::sessions::Sessions;
use nasfleet_controller::store::{
    CertRecord, DEFAULT_AUDIT_RETENTION, Store, SystemRecord, TokenRecord, UserRecord,
};
use nasfleet_controller::web::{self, ClientAddr, Console};
use nasfleet_proto::v1::task_spec::Kind;
use nasfleet_proto::v1::{
    Dataset, Inventory, Pool, ReplicationSource, ReplicationTaskSpec, RsyncTaskSpec, Run, RunState,
    Service, SnapshotTaskSpec, Task, TaskKind, TaskSpec,
};
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn inventory(system: &str) -> Inventory {
    Inventory {
        hostname: system.to_owned(),
        zfs_version: "zfs-2.3.2".into(),
        pools: ["tank", "backup"]
            .iter()
            .map(|p| Pool {
                name: (*p).into(),
                size: 8 << 40,
                free: 3 << 40,
                health: "ONLINE".into(),
            })
            .collect(),
        datasets: (0..20)
            .map(|i| Dataset {
                name: format!("tank/share{i}"),
                used: 1 << 30,
                available: 3 << 40,
                kind: "filesystem".into(),
                ..Default::default()
            })
            .collect(),
        services: vec![Service {
            name: "ssh".into(),
            running: true,
            address: "127.0.0.1:22".into(),
            host_key_fingerprints: vec![
                "ssh-ed25519 SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into(),
            ],
            ..Default::default()
        }],
        collected_unix_ms: 1,
        ..Default::default()
    }
}

fn task(id: u64, systems: usize) -> Task {
    let system = |n: u64| format!("nas{}", n as usize % systems);
    let (kind, spec) = match id % 5 {
        0 => (
            TaskKind::Snapshot,
            Kind::Snapshot(SnapshotTaskSpec {
                system: system(id),
                dataset: format!("tank/share{}", id % 20),
                naming_schema: "auto-%Y-%m-%d_%H-%M".into(),
                lifetime: "2w".into(),
                ..Default::default()
            }),
        ),
        1 => (
            TaskKind::Rsync,
            Kind::Rsync(RsyncTaskSpec {
                system: system(id),
                path: format!("/mnt/tank/share{}", id % 20),
                user: "root".into(),
                description: format!("rsync-{id}"),
                remote_host: "backup.example".into(),
                remote_module: "mod".into(),
                direction: 1,
                mode: 1,
                ..Default::default()
            }),
        ),
        _ => (
            TaskKind::Replication,
            Kind::Replication(ReplicationTaskSpec {
                name: format!("offsite-{id}"),
                sources: [id, id + 1]
                    .iter()
                    .map(|n| ReplicationSource {
                        system: system(*n),
                        datasets: vec![format!("tank/share{}", n % 20)],
                        recursive: true,
                        naming_schemas: Vec::new(),
                    })
                    .collect(),
                target_system: system(id + 2),
                target_dataset: "backup/fleet".into(),
                ..Default::default()
            }),
        ),
    };
    let mut task = Task {
        id,
        name: format!("task-{id}"),
        spec: Some(TaskSpec {
            stale_after: String::new(),
            schedule: "0 0 * * sun".into(),
            enabled: true,
            kind: Some(spec),
        }),
        schedule: "0 0 * * sun".into(),
        schedule_description: "weekly (Sunday at 00:00)".into(),
        created_unix_ms: 1,
        ..Default::default()
    };
    task.set_kind(kind);
    task
}

async fn fill(store: &Store, systems: usize, tasks: usize) -> Result<()> {
    store
        .write(move |w| {
            for n in 0..systems {
                let name = format!("nas{n}");
                let token = format!("token-{n}");
                w.put_token(
                    &token,
                    &TokenRecord {
                        created_unix_ms: 0,
                        expires_unix_ms: i64::MAX,
                        created_by: "bench".into(),
                        used_by: None,
                        used_unix_ms: None,
                    },
                )?;
                let record = SystemRecord {
                    name: name.clone(),
                    enrolled_unix_ms: 1,
                    cert_serial: format!("serial-{n}"),
                    cert_expires_unix_ms: 0,
                    next_cert_serial: None,
                    next_cert_expires_unix_ms: 0,
                    last_seen_unix_ms: 1,
                    address: "127.0.0.1:1".into(),
                    agent_version: "bench".into(),
                    pools: vec!["tank".into(), "backup".into()],
                    inventory_unix_ms: 1,
                    inventory_problem: None,
                };
                let cert = CertRecord {
                    principal: format!("system:{name}"),
                    role: None,
                    issued_unix_ms: 1,
                    revoked_unix_ms: None,
                };
                w.enroll(&token, 1, &record, &format!("serial-{n}"), &cert)
                    .map_err(|e| nasfleet_controller::store::StoreError::Corrupt {
                        key: name.clone(),
                        source: serde_json::Error::io(std::io::Error::other(e.to_string())),
                    })?;
                let (header, datasets) = nasfleet_controller::store::stored_form(inventory(&name));
                w.put_inventory(&name, &header, &datasets)?;
            }
            for id in 1..=tasks as u64 {
                let task = task(id, systems);
                w.put_task(&task)?;
                let mut run = Run {
                    id: 1_000_000 + id,
                    task_id: id,
                    task_name: task.name.clone(),
                    system: "nas0".into(),
                    started_unix_ms: 1,
                    finished_unix_ms: 2,
                    reason: if id % 7 == 0 {
                        "ssh: connection refused".into()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                };
                run.set_state(if id % 7 == 0 {
                    RunState::Failed
                } else {
                    RunState::Finished
                });
                run.set_task_kind(task.kind());
                w.put_run(&run)?;
            }
            w.put_user(&UserRecord {
                name: "admin".into(),
                role: "admin".into(),
                systems: Vec::new(),
                all_systems: false,
                created_unix_ms: 1,
                created_by: "bench".into(),
                cert_serial: None,
                cert_expires_unix_ms: None,
                password_hash: None,
            })?;
            Ok(())
        })
        .await
        .context("filling the store")
}

struct Figures {
    times: Vec<Duration>,
    bytes: usize,
}

impl Figures {
    fn percentile(&mut self, p: f64) -> Duration {
        self.times.sort_unstable();
        let index = ((self.times.len() as f64 - 1.0) * p).round() as usize;
        self.times.get(index).copied().unwrap_or_default()
    }
}

async fn page(router: &axum::Router, cookie: &str, path: &str, rounds: usize) -> Result<Figures> {
    let mut figures = Figures {
        times: Vec::with_capacity(rounds),
        bytes: 0,
    };
    for _ in 0..rounds {
        let mut request = Request::get(path)
            .header(header::COOKIE, format!("nasfleet_session={cookie}"))
            .body(Body::empty())?;
        request
            .extensions_mut()
            .insert(ClientAddr(([127, 0, 0, 1], 1).into()));
        let started = Instant::now();
        let response = router.clone().oneshot(request).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        figures.times.push(started.elapsed());
        figures.bytes = body.len();
    }
    Ok(figures)
}

fn raw(state: &SharedState, rounds: usize) -> Result<Figures> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let mut pools = 0;
        for system in state.store.systems()? {
            if let Some(bytes) = state.store.inventory(&system.name)? {
                pools += Inventory::decode(bytes.as_slice())?.pools.len();
            }
        }
        let tasks = state.store.tasks()?.len();
        std::hint::black_box((pools, tasks));
        times.push(started.elapsed());
    }
    Ok(Figures { times, bytes: 0 })
}

#[tokio::main]
async fn main() -> Result<()> {
    let arg = |i: usize, default: usize| -> Result<usize> {
        std::env::args()
            .nth(i)
            .map(|a| {
                a.parse()
                    .with_context(|| format!("argument {i}: {a:?} is not a count"))
            })
            .transpose()
            .map(|v| v.unwrap_or(default))
    };
    let systems = arg(1, 1000)?;
    let tasks = arg(2, 5000)?;
    let rounds = arg(3, 20)?.max(1);
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("store"))?;
    let started = Instant::now();
    fill(&store, systems, tasks).await?;
    eprintln!(
        "filled the store with {systems} systems and {tasks} tasks in {:.1?}",
        started.elapsed()
    );
    let state: SharedState = Arc::new(ControllerState {
        store,
        ca: CertificateAuthority::create("bench")?.0,
        sessions: Sessions::new(Duration::from_secs(10)),
        url: "https://127.0.0.1:1".into(),
        timezone: chrono_tz::UTC,
        runs: RunHub::default(),
        history_limit: 100,
        scheduler_wake: Default::default(),
        grace: Duration::from_secs(3600),
        audit_retention: DEFAULT_AUDIT_RETENTION,
        signins: Default::default(),
        console_url: None,
        scheduler_lag: Default::default(),
        system_summaries: Default::default(),
    });
    let settings = WebSettings {
        listen: ([127, 0, 0, 1], 1).into(),
        url: "https://127.0.0.1:1".into(),
        identity: None,
        idle_timeout: Duration::from_secs(3600),
        session_lifetime: Duration::from_secs(3600),
    };
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let console = Arc::new(Console {
        state: state.clone(),
        sessions: web::Sessions::new(settings.idle_timeout, settings.session_lifetime),
        settings,
        shutdown,
    });
    let cookie = console.sessions.open("admin");
    let router = web::router(console);
    let mut baseline = raw(&state, rounds)?;
    let raw_p50 = baseline.percentile(0.5);
    println!("{systems} systems, {tasks} tasks, {rounds} rounds per page (server side, no TLS)");
    println!(
        "{:<16} {:>10} {:>10} {:>12} {:>14}",
        "page", "p50", "p95", "weight", "p50 / raw"
    );
    println!(
        "{:<16} {:>10.1?} {:>10.1?} {:>12} {:>14}",
        "raw store read",
        raw_p50,
        baseline.percentile(0.95),
        "-",
        "1.0"
    );
    // Where a page's time goes: the engine calls the dashboard makes.
    let engine = |name: &str, f: &dyn Fn() -> Result<usize>| -> Result<()> {
        let mut times = Vec::with_capacity(rounds);
        let mut count = 0;
        for _ in 0..rounds {
            let started = Instant::now();
            count = f()?;
            times.push(started.elapsed());
        }
        let mut figures = Figures { times, bytes: 0 };
        println!(
            "{:<16} {:>10.1?} {:>10.1?} {:>9} rows",
            name,
            figures.percentile(0.5),
            figures.percentile(0.95),
            count
        );
        Ok(())
    };
    let actor = nasfleet_controller::engine::access::Actor::Controller;
    engine("  tasks::list", &|| {
        Ok(nasfleet_controller::engine::tasks::list(&state, &actor, TaskKind::Unspecified)?.len())
    })?;
    engine("  systems::list", &|| {
        Ok(nasfleet_controller::engine::systems::list(&state, &actor)?.len())
    })?;
    for path in ["/", "/replication", "/protection"] {
        let mut figures = page(&router, &cookie, path, rounds).await?;
        let p50 = figures.percentile(0.5);
        println!(
            "{:<16} {:>10.1?} {:>10.1?} {:>9} KiB {:>14.1} {}",
            path,
            p50,
            figures.percentile(0.95),
            figures.bytes / 1024,
            p50.as_secs_f64() / raw_p50.as_secs_f64().max(1e-9),
            if p50 < Duration::from_millis(100) {
                "(goal < 100 ms: met)"
            } else {
                "(goal < 100 ms: NOT met)"
            }
        );
    }
    Ok(())
}
