//! Benchmark, not a test: acknowledged (durable) store writes per second and latency percentiles at 1, 8 and 64 concurrent writers, against raw sled with one flush per write in the same run.
//!
//!   cargo run --release -p nasfleet-controller --example bench_store [WRITES_PER_LEVEL] [DIR]
//!
//! Each level runs WRITES_PER_LEVEL (default 2000) writes of a ~200-byte
//! record, spread over the writers, each writer waiting for its answer
//! before its next write (as an RPC handler does). "nasfleet" is
//! `Store::write` (one writer thread, group commit). "raw" is the same
//! insert into sled followed by its own blocking `flush()`, one write at a
//! time behind a mutex: what durability costs without grouping. DIR
//! (default: a temporary dir) should be on the disk the controller uses.

use anyhow::{Context, Result};
use nasfleet_controller::store::{Store, TokenRecord};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LEVELS: [usize; 3] = [1, 8, 64];

struct Figures {
    writes: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }
}

fn record(i: usize) -> TokenRecord {
    TokenRecord {
        created_unix_ms: i as i64,
        expires_unix_ms: i64::MAX,
        created_by: "user:bench-writer-with-a-name-of-ordinary-length".into(),
        used_by: None,
        used_unix_ms: None,
    }
}

async fn nasfleet(store: &Store, writers: usize, writes: usize, round: usize) -> Result<Figures> {
    let each = writes / writers;
    let started = Instant::now();
    let mut handles = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(each);
            for i in 0..each {
                let key = format!("n{round}-{writer}-{i}");
                let value = record(i);
                let t = Instant::now();
                store.write(move |w| w.put_token(&key, &value)).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(each * writers);
    for handle in handles {
        latencies.extend(handle.await.context("writer task")??);
    }
    Ok(Figures {
        writes: each * writers,
        elapsed: started.elapsed(),
        latencies,
    })
}

fn raw(db: &sled::Db, writers: usize, writes: usize, round: usize) -> Result<Figures> {
    let tree = db.open_tree("tokens")?;
    let each = writes / writers;
    let serial = Arc::new(Mutex::new(()));
    let started = Instant::now();
    let latencies = std::thread::scope(|scope| -> Result<Vec<Duration>> {
        let handles: Vec<_> = (0..writers)
            .map(|writer| {
                let (tree, serial) = (tree.clone(), serial.clone());
                scope.spawn(move || -> Result<Vec<Duration>> {
                    let mut latencies = Vec::with_capacity(each);
                    for i in 0..each {
                        let key = format!("r{round}-{writer}-{i}");
                        let bytes = serde_json::to_vec(&record(i))?;
                        let t = Instant::now();
                        {
                            let _one_at_a_time = serial.lock().unwrap_or_else(|p| p.into_inner());
                            tree.insert(key, bytes)?;
                            db.flush()?;
                        }
                        latencies.push(t.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            all.extend(
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("raw writer panicked"))??,
            );
        }
        Ok(all)
    })?;
    Ok(Figures {
        writes: each * writers,
        elapsed: started.elapsed(),
        latencies,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let writes: usize = match args.next() {
        Some(n) => n.parse().context("WRITES_PER_LEVEL must be a number")?,
        None => 2000,
    };
    let temp = tempfile::tempdir()?;
    let base: PathBuf = args
        .next()
        .map_or_else(|| temp.path().to_owned(), PathBuf::from);
    let store_dir = base.join("bench-store-nasfleet");
    let raw_dir = base.join("bench-store-raw");
    let store = Store::open(&store_dir)?;
    let raw_db = {
        let dir = raw_dir.clone();
        tokio::task::spawn_blocking(move || {
            sled::Config::new().path(dir).flush_every_ms(None).open()
        })
        .await??
    };
    println!(
        "store benchmark: {writes} acknowledged writes per level, in {}",
        base.display()
    );
    println!(
        "{:>8}  {:>12} {:>10} {:>10}   {:>12} {:>10} {:>10}   {:>6}",
        "writers", "nasfleet w/s", "p50", "p99", "raw w/s", "p50", "p99", "ratio"
    );
    for (round, writers) in LEVELS.into_iter().enumerate() {
        let mut ours = nasfleet(&store, writers, writes, round).await?;
        let db = raw_db.clone();
        let mut theirs =
            tokio::task::spawn_blocking(move || raw(&db, writers, writes, round)).await??;
        println!(
            "{:>8}  {:>12.0} {:>10} {:>10}   {:>12.0} {:>10} {:>10}   {:>6.2}",
            writers,
            ours.per_second(),
            ms(ours.percentile(0.5)),
            ms(ours.percentile(0.99)),
            theirs.per_second(),
            ms(theirs.percentile(0.5)),
            ms(theirs.percentile(0.99)),
            ours.per_second() / theirs.per_second(),
        );
    }
    println!("ratio = nasfleet writes/s / raw writes/s (higher is better)");
    store.close(Duration::from_secs(10)).await;
    Ok(())
}
