//! Planning from the target agent's listing (taken at dispatch) on real zfs-fuse: a fresh listing is used as is, and a stale one that zfs refuses ends in what a listing taken at the step would have given.
//!
//! (A snapshot taken on the replica without a data change is not refused by
//! zfs; it stays on the target, as with a listing over ssh a moment old.)
//!
//! Calls the agent's `replicate_dataset` directly, with this system as the
//! target (no ssh), so each stale listing can be set up exactly; the runs
//! over ssh that use such listings are covered by `replication.rs`.

use super::common::{destroy_recursively, runtime, target_is_read_only};
use anyhow::{Context, Result, ensure};
use nasfleet_agent::runs::replication::{
    self, DatasetOutcome, LocalZfs, ReplicateOptions, ReplicationError, Transfer,
};
use nasfleet_agent::zfs::{self, Dialect};
use nasfleet_tests::{TestDir, TestPool, ensure_zfs, run_ok};
use std::process::Command;
use std::time::Duration;

const ZFS_TIMEOUT: Duration = Duration::from_secs(60);

/// A listing as a target's agent answers it: `None` when the dataset is absent.
type Listing = Option<zfs::SnapshotListing>;

/// One source dataset and the target dataset it replicates to, on one pool.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    dialect: Dialect,
    source: String,
    target: String,
}

impl Fixture {
    fn listing(&self) -> Result<Listing> {
        self.runtime
            .block_on(replication::local_snapshots(
                self.dialect,
                &self.target,
                ZFS_TIMEOUT,
            ))
            .context("listing the target")
    }

    /// One dataset's replication with `hint` as the target agent's listing.
    fn replicate(&self, hint: &Listing) -> Result<DatasetOutcome, ReplicationError> {
        let mut options = ReplicateOptions::new(self.dialect, self.dialect);
        options.target_listing = Some(hint.clone());
        let matching = |name: &str| name.starts_with("auto-");
        let (_cancel_tx, mut cancel) = tokio::sync::watch::channel(false);
        self.runtime.block_on(replication::replicate_dataset(
            &self.source,
            &self.target,
            &matching,
            &LocalZfs,
            &options,
            &mut |_, _, _| {},
            &mut cancel,
        ))
    }

    fn target_snapshots(&self) -> Result<Vec<String>> {
        Ok(nasfleet_tests::zfs::snapshots(&self.target)?
            .into_iter()
            .filter_map(|s| s.split_once('@').map(|(_, name)| name.to_owned()))
            .collect())
    }
}

fn names(listing: &Listing) -> Vec<&str> {
    listing
        .iter()
        .flat_map(|l| &l.snapshots)
        .map(|s| s.name.as_str())
        .collect()
}

#[test]
fn stale_target_listings_end_as_a_fresh_listing_would() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("hints")?;
    let pool = TestPool::create(dir.path(), "hint")?;
    let source = pool.create_dataset("src")?;
    let runtime = runtime()?;
    let dialect = runtime
        .block_on(zfs::probe_dialect_with_timeout(ZFS_TIMEOUT))
        .dialect;
    let fixture = Fixture {
        runtime,
        dialect,
        source,
        target: pool.dataset("dst/nas1/src"),
    };
    let snap = |n: u32| -> Result<String> {
        pool.write_file(
            "src",
            &format!("file{n}"),
            format!("content {n}").as_bytes(),
        )?;
        let name = format!("auto-2026-01-0{n}_00-00");
        pool.snapshot("src", &name)?;
        Ok(name)
    };

    // A fresh listing of an absent target: full, straight from the hint.
    let s1 = snap(1)?;
    let absent = fixture.listing()?;
    ensure!(absent.is_none(), "target exists already: {absent:?}");
    let outcome = fixture.replicate(&absent).context("case 1")?;
    ensure!(outcome.transferred == [Transfer::full(&s1)], "{outcome:?}");
    ensure!(outcome.planned_from_target_listing, "{outcome:?}");

    // "Absent", but the target holds s1 by now: the full receive is
    // refused, and the step goes on from s1.
    let s2 = snap(2)?;
    let outcome = fixture.replicate(&absent).context("case 2")?;
    ensure!(
        outcome.transferred == [Transfer::incremental(&s1, &s2)],
        "{outcome:?}"
    );
    ensure!(!outcome.planned_from_target_listing, "{outcome:?}");
    ensure!(
        fixture.target_snapshots()? == [s1.as_str(), &s2],
        "{outcome:?}"
    );

    // A fresh listing of an existing target: the incremental it calls for.
    let s3 = snap(3)?;
    let current = fixture.listing()?;
    ensure!(names(&current) == [s1.as_str(), &s2], "{current:?}");
    let outcome = fixture.replicate(&current).context("case 3")?;
    ensure!(
        outcome.transferred == [Transfer::incremental(&s2, &s3)],
        "{outcome:?}"
    );
    ensure!(outcome.planned_from_target_listing, "{outcome:?}");

    // Says s3 is there, so "up to date"; but the target was rolled back
    // to s2 since. An up-to-date verdict is never taken from the hint: s3
    // is sent again.
    let with_s3 = fixture.listing()?;
    run_ok(Command::new("zfs").args(["rollback", "-r", &format!("{}@{s2}", fixture.target)]))?;
    let outcome = fixture.replicate(&with_s3).context("case 4")?;
    ensure!(
        outcome.transferred == [Transfer::incremental(&s2, &s3)],
        "{outcome:?}"
    );
    ensure!(!outcome.planned_from_target_listing, "{outcome:?}");

    // Says the target is at s3; it was destroyed whole since: the
    // incremental is refused and everything is sent from scratch.
    let s4 = snap(4)?;
    destroy_recursively(&fixture.target)?;
    let outcome = fixture.replicate(&with_s3).context("case 5")?;
    ensure!(
        outcome.transferred
            == [
                Transfer::full(&s1),
                Transfer::Intermediates {
                    from: s1.clone(),
                    to: s4.clone(),
                    count: 3
                },
            ],
        "{outcome:?}"
    );
    ensure!(!outcome.planned_from_target_listing, "{outcome:?}");
    ensure!(
        target_is_read_only(&fixture.target)?,
        "the replica is not read-only"
    );

    // Says the target is at s4; since then it was written to and has a
    // snapshot of its own. zfs refuses the incremental, and the refusal
    // names that snapshot, as a listing at the step would have; nothing on
    // the target is touched.
    let at_s4 = fixture.listing()?;
    run_ok(Command::new("zfs").args(["set", "readonly=off", &fixture.target]))?;
    let mountpoint = nasfleet_tests::zfs::mounted_at(&fixture.target)?;
    std::fs::write(mountpoint.join("local-change"), b"written on the target")
        .context("writing to the target")?;
    run_ok(Command::new("zfs").args(["snapshot", &format!("{}@manual", fixture.target)]))?;
    snap(5)?;
    let err = match fixture.replicate(&at_s4) {
        Ok(outcome) => anyhow::bail!("a diverged target was accepted: {outcome:?}"),
        Err(err) => err.to_string(),
    };
    ensure!(
        err.contains("has diverged") && err.contains("'manual'"),
        "{err}"
    );
    ensure!(
        fixture.target_snapshots()? == [s1.as_str(), &s2, &s3, &s4, "manual"],
        "the target changed: {:?}",
        fixture.target_snapshots()?
    );
    pool.destroy()
}
