//! The store's single writer thread: applies every write in arrival order and makes each batch durable with one blocking flush (group commit) before answering its callers.
//!
//! sled 0.34's `flush_async` deadlocks when several callers flush at once
//! (sled #1308), and concurrent writers plus flushers have hung it under
//! load (#1412). Here exactly one thread writes and exactly one thread
//! flushes (sled's own background flusher is off), so neither can happen;
//! callers on the async runtime only wait on a channel. While one batch is
//! being flushed, new writes queue up and become the next batch, so the
//! number of flushes grows with time spent flushing, not with callers.

use super::{StoreError, Tables};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Writes applied before one flush at most; bounds how long the first
/// caller of a batch waits behind the others.
const MAX_BATCH: usize = 1024;

/// What the writer runs: applies a write and returns how to answer its
/// caller once the batch's flush has an outcome.
pub(super) type Job = Box<dyn FnOnce(&Tables) -> Reply + Send>;
/// Answers one caller with the flush's outcome.
pub(super) type Reply = Box<dyn FnOnce(Result<(), Arc<str>>) + Send>;

/// Handle to the writer thread, shared by every clone of the store.
pub(super) struct Writer {
    /// `None` once the store is closing: new writes are refused.
    queue: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub(super) fn start(tables: Arc<Tables>) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&tables, &rx))
            .map_err(StoreError::Thread)?;
        Ok(Writer {
            queue: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a write; refused once the store is closing.
    pub(super) fn submit(&self, job: Job) -> Result<(), StoreError> {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        match queue.as_ref() {
            // The thread only stops after the queue is closed, so a send
            // can fail only if it died; that is a refusal too.
            Some(tx) => tx.send(job).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    /// Refuses new writes, lets the writer make every queued one durable
    /// and answer it, and waits for it up to `deadline`. Returns whether it
    /// finished in time. Blocking: call it off the async runtime.
    pub(super) fn close(&self, deadline: Duration) -> bool {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return true;
        };
        let until = Instant::now() + deadline;
        while !thread.is_finished() {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = thread.join();
        true
    }
}

fn run(tables: &Tables, rx: &Receiver<Job>) {
    // Ends when the queue is closed and empty: every write that made it
    // into the queue has been applied, flushed and answered by then.
    while let Ok(first) = rx.recv() {
        let mut replies = vec![apply(tables, first)];
        while replies.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => replies.push(apply(tables, job)),
                Err(_) => break,
            }
        }
        let flushed = tables
            .before_flush()
            .and_then(|()| tables.db.flush().map(drop).map_err(StoreError::from))
            .map_err(|e| Arc::<str>::from(e.to_string()));
        if flushed.is_ok() {
            tables.after_flush();
        }
        if let Err(e) = &flushed {
            tracing::error!(error = %e, writes = replies.len(), "store flush failed; the batch's writes are refused");
        }
        for reply in replies {
            reply(flushed.clone());
        }
    }
}

/// A write that panics must not take the writer down with it: its caller
/// sees its reply channel dropped, everyone else carries on.
fn apply(tables: &Tables, job: Job) -> Reply {
    match std::panic::catch_unwind(AssertUnwindSafe(|| job(tables))) {
        Ok(reply) => reply,
        Err(_) => {
            tracing::error!("a store write panicked; it was refused");
            Box::new(|_| {})
        }
    }
}
