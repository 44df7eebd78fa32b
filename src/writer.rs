//! The one thread that writes invites and refusals: group commit.
//!
//! An answered invite must be on disk before its 200, and one fsync per invite would cap us
//! at the disk's sync rate. Workers hand their writes to this thread and wait; it takes
//! everything queued, writes it in one transaction (one fsync), and then wakes each waiter.
//! Under load many invites share one commit; alone, an invite waits for just its own.
//! Refusals ride along without a waiter (losing the last few in a crash is acceptable), each
//! cut to a bounded size and rate limited per origin, so a flood of refused requests costs a
//! bounded number of rows (the rest are counted in the next row's `suppressed`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use std::collections::HashMap;
use std::time::Instant;

use crate::fatal::Error;
use crate::outbox::Doorbell;
use crate::rate_limit::TokenBuckets;
use crate::store::{InviteState, NewInvite, RefusalRow, Store, StoreError, StoredInvite};

/// Writes queued at most before senders wait (back-pressure).
const QUEUE: usize = 4096;
/// Writes per transaction at most.
const BATCH: usize = 512;

enum Job {
    Invite(
        Box<NewInvite>,
        mpsc::Sender<Result<StoredInvite, StoreError>>,
    ),
    Refusal(RefusalRow),
}

/// Refusal rows logged per origin: this many per second, in bursts of up to [`REFUSAL_BURST`].
const REFUSALS_PER_ORIGIN_PER_SECOND: f64 = 1.0;
const REFUSAL_BURST: u32 = 20;
/// Refusal rows logged per second over all origins (a wave of throw-away origins).
const REFUSALS_PER_SECOND: f64 = 20.0;
const REFUSAL_BURST_ALL: u32 = 200;
/// Origins whose left-out refusals are counted at most (beyond, counts start over).
const MAX_COUNTED_ORIGINS: usize = 10_000;

/// Which refusals are logged: per-origin and global token buckets, and the count of those
/// left out per origin, carried by that origin's next logged row.
struct RefusalLimiter {
    per_origin: TokenBuckets,
    all: TokenBuckets,
    left_out: HashMap<String, i64>,
}

impl RefusalLimiter {
    fn new() -> RefusalLimiter {
        RefusalLimiter {
            per_origin: TokenBuckets::new(REFUSALS_PER_ORIGIN_PER_SECOND, REFUSAL_BURST),
            all: TokenBuckets::new(REFUSALS_PER_SECOND, REFUSAL_BURST_ALL),
            left_out: HashMap::new(),
        }
    }

    /// `Some(n)`: log this refusal, with `n` left out before it; `None`: leave it out.
    fn admit(&mut self, origin: &str, now: Instant) -> Option<i64> {
        if self.per_origin.take(origin, now).is_ok() && self.all.take("", now).is_ok() {
            return Some(self.left_out.remove(origin).unwrap_or(0));
        }
        if self.left_out.len() >= MAX_COUNTED_ORIGINS && !self.left_out.contains_key(origin) {
            self.left_out.clear();
        }
        *self.left_out.entry(origin.to_owned()).or_insert(0) += 1;
        None
    }
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL in use past which the checkpointer makes the WAL start over (a RESTART checkpoint).
/// Under sustained writes a passive checkpoint never lets it: the file would grow without
/// bound, and every new block of it costs the kernel zeroing on top of the write.
const WAL_RESTART_BYTES: u64 = 16 * 1024 * 1024;

/// Before asking for a restart, the checkpointer catches up until a pass finds less than
/// this much new WAL (64 frames of 4 KiB pages)…
const CATCH_UP_BYTES: u64 = 64 * 4120;
/// …or it has made this many passes (writes outpacing its copies).
const CATCH_UP_PASSES: usize = 10;

/// Passes the checkpointer skips at most while a restart it asked for is not done (1 s).
const MAX_HELD_BACK: u32 = 10;

/// How long a restarting checkpoint may wait for readers (the writer waits meanwhile).
const WAL_RESTART_WAIT: Duration = Duration::from_millis(100);

/// Handle to the writer thread (and its checkpointer).
pub struct Writer {
    sender: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    stopping: Arc<AtomicBool>,
    refusals: Mutex<RefusalLimiter>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Writer {
    /// Starts the writer with its own connection to `db` (already migrated). `refusal_limits` bounds the
    /// refusal log: (max age in ms, max rows).
    /// `doorbell` is rung after a commit that stored a pending invite (the schema may have
    /// queued push notifications for it).
    pub fn start(
        db: &Path,
        refusal_limits: (i64, i64),
        metrics: Arc<crate::metrics::Metrics>,
        doorbell: Arc<Doorbell>,
    ) -> Result<Writer, Error> {
        let store = Store::connect(db)?;
        // Checkpoints happen on their own thread (below), never in the commit path.
        store.disable_auto_checkpoint()?;
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        let restart_wanted = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("writer".into())
            .spawn({
                let metrics = metrics.clone();
                let restart_wanted = restart_wanted.clone();
                move || {
                    run(
                        store,
                        receiver,
                        refusal_limits,
                        &metrics,
                        &doorbell,
                        &restart_wanted,
                    )
                }
            })
            .map_err(|e| Error::new(format!("cannot start the writer thread: {e}")))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let checkpoints = Store::connect(db)?;
        let stop = stopping.clone();
        let checkpointer = std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(move || checkpoint_loop(checkpoints, &stop, &restart_wanted))
            .map_err(|e| Error::new(format!("cannot start the checkpointer thread: {e}")))?;
        Ok(Writer {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            checkpointer: Mutex::new(Some(checkpointer)),
            stopping,
            refusals: Mutex::new(RefusalLimiter::new()),
            metrics,
        })
    }

    fn sender(&self) -> Option<SyncSender<Job>> {
        self.sender.lock().ok().and_then(|s| s.clone())
    }

    /// Stores an invite durably; returns when it is committed (or what was already stored
    /// under its event ID).
    pub fn store_invite(&self, invite: NewInvite) -> Result<StoredInvite, StoreError> {
        let stopped = || StoreError {
            context: "the writer has stopped".to_owned(),
            source: None,
        };
        let sender = self.sender().ok_or_else(stopped)?;
        let (reply, answer) = mpsc::channel();
        self.metrics.writer_queue(1);
        sender
            .send(Job::Invite(Box::new(invite), reply))
            .map_err(|_| {
                self.metrics.writer_queue(-1);
                stopped()
            })?;
        answer.recv().map_err(|_| stopped())?
    }

    /// Queues a refusal for the log, cut to size, if its origin's rate allows (else it is
    /// counted); never blocks (dropped, with a warning, when the queue is full).
    pub fn log_refusal(&self, row: RefusalRow) {
        let admitted = match self.refusals.lock() {
            Ok(mut limiter) => limiter.admit(&row.origin, Instant::now()),
            Err(_) => Some(0),
        };
        let Some(suppressed) = admitted else { return };
        let row = RefusalRow { suppressed, ..row }.bounded();
        let Some(sender) = self.sender() else { return };
        self.metrics.writer_queue(1);
        match sender.try_send(Job::Refusal(row)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.writer_queue(-1);
                log::warn!("writer queue full: a refusal was not logged");
            }
            Err(TrySendError::Disconnected(_)) => self.metrics.writer_queue(-1),
        }
    }

    /// Writes what is queued, then stops the threads.
    pub fn stop(&self) {
        if let Ok(mut s) = self.sender.lock() {
            s.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
        self.stopping.store(true, Ordering::SeqCst);
        let checkpointer = self.checkpointer.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = checkpointer {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies the WAL into the database file every [`CHECKPOINT_EVERY`], without blocking the
/// writer (a passive checkpoint), until `stop` is set. When more than [`WAL_RESTART_BYTES`]
/// of WAL is in use it asks the writer (`restart_wanted`) to make the WAL start over: only
/// the writer can, between its batches — from here the writer's next commit would always
/// come first.
fn checkpoint_loop(store: Store, stop: &AtomicBool, restart_wanted: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    let mut copied = 0;
    let mut held_back = 0;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(step);
        waited += step;
        if waited >= CHECKPOINT_EVERY {
            waited = Duration::ZERO;
            // While the writer has a restart to do, stay out of its way: a pass holds the
            // checkpoint lock, and a restart that meets it gives up at once (SQLite does not
            // wait for that lock), to be asked for again after the next pass. Only for a
            // while: a writer that went idle restarts nothing until its next batch.
            if restart_wanted.load(Ordering::SeqCst) && held_back < MAX_HELD_BACK {
                held_back += 1;
                continue;
            }
            held_back = 0;
            if let Some(in_use) = checkpoint_pass(&store, &mut copied)
                && in_use > WAL_RESTART_BYTES
            {
                catch_up(&store, in_use, &mut copied);
                restart_wanted.store(true, Ordering::SeqCst);
            }
        }
    }
    if let Err(e) = store.close() {
        log::error!("checkpointer: {e}");
    }
}

/// A passive checkpoint, then the database file synced: the bytes of WAL in use, or `None`
/// (logged). The sync matters: SQLite syncs the database file only when a checkpoint reaches
/// the end of the WAL, which under sustained writes only the writer's restart does; every
/// page the passive checkpoints had copied since was written back inside it, while the
/// writer waited (3–18 ms in the load benchmark, the p99 of every invite in flight then;
/// 2–6 ms with the sync here). It syncs only after a pass that copied something (`copied`
/// is the WAL's count of copied frames after the last pass): an idle server would otherwise
/// sync an unchanged file ten times a second, and that is not free (37 µs each on the
/// development machine's ext4, which still asks the disk to flush its cache).
fn checkpoint_pass(store: &Store, copied: &mut u64) -> Option<u64> {
    let wal = store
        .checkpoint_passive()
        .map_err(|e| log::warn!("{e}"))
        .ok()?;
    if wal.copied_frames != *copied {
        *copied = wal.copied_frames;
        if let Err(e) = store.flush_database_file() {
            log::warn!("{e}");
        }
    }
    Some(wal.in_use)
}

/// Checkpoint passes back to back until one finds less than [`CATCH_UP_BYTES`] written since
/// the one before (at most [`CATCH_UP_PASSES`]), so that the writer's restart, which holds
/// back the next batch, has little left to copy.
fn catch_up(store: &Store, mut in_use: u64, copied: &mut u64) {
    for _ in 0..CATCH_UP_PASSES {
        let Some(now) = checkpoint_pass(store, copied) else {
            return;
        };
        let written_meanwhile = now.saturating_sub(in_use);
        in_use = now;
        if written_meanwhile < CATCH_UP_BYTES {
            return;
        }
    }
}

fn run(
    mut store: Store,
    jobs: Receiver<Job>,
    (max_age, max_rows): (i64, i64),
    metrics: &crate::metrics::Metrics,
    doorbell: &Doorbell,
    restart_wanted: &AtomicBool,
) {
    while let Ok(first) = jobs.recv() {
        let mut invites = Vec::new();
        let mut replies = Vec::new();
        let mut refusals = Vec::new();
        let mut take = |job: Job| {
            metrics.writer_queue(-1);
            match job {
                Job::Invite(invite, reply) => {
                    invites.push(*invite);
                    replies.push(reply);
                }
                Job::Refusal(row) => refusals.push(row),
            }
        };
        take(first);
        for _ in 1..BATCH {
            match jobs.try_recv() {
                Ok(job) => take(job),
                Err(_) => break,
            }
        }
        if !invites.is_empty() {
            let started = Instant::now();
            let results = store.insert_invites(&invites);
            metrics.commit(invites.len(), started.elapsed().as_secs_f64());
            log::debug!(
                "writer: committed {} invite(s) in one transaction",
                invites.len()
            );
            let pending = invites
                .iter()
                .zip(&results)
                .any(|(i, r)| i.state == InviteState::Pending && r.is_ok());
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
            if pending {
                doorbell.ring();
            }
        }
        if !refusals.is_empty()
            && let Err(e) = store.record_refusals(&refusals, max_age, max_rows)
        {
            log::error!("cannot record {} refusal(s): {e}", refusals.len());
        }
        // Between batches, every answer sent: the WAL starts over (the checkpointer copied
        // nearly all of it already), holding back only the next batch, briefly.
        if restart_wanted.swap(false, Ordering::SeqCst) {
            let started = Instant::now();
            let restarted = store.checkpoint_restart(WAL_RESTART_WAIT);
            metrics.wal_restart(started.elapsed().as_secs_f64());
            match restarted {
                Ok(true) => log::debug!("writer: the WAL starts over"),
                Ok(false) => log::debug!("writer: WAL restart put off, readers busy"),
                Err(e) => log::warn!("writer: {e}"),
            }
        }
    }
    if let Err(e) = store.close() {
        log::error!("writer: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restart the writer never gets to (it went idle right after the checkpointer asked)
    /// holds the checkpointer back for a while only: what the writer committed is still
    /// copied into the database file.
    #[test]
    fn an_unserved_restart_holds_the_checkpointer_back_only_for_a_while() {
        let (dir, mut store) = crate::store::tests::temp_store();
        store.disable_auto_checkpoint().unwrap();
        let db = dir.path().join("t.db");
        let size = || std::fs::metadata(&db).unwrap().len();
        let before = size();
        let invites: Vec<_> = (0..200)
            .map(|i| {
                let mut invite = crate::store::tests::sample_invite(&format!("$e{i}"));
                invite.signed_event = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
                invite
            })
            .collect();
        assert!(store.insert_invites(&invites).iter().all(Result::is_ok));
        assert_eq!(size(), before, "committed to the WAL only, so far");

        let stop = AtomicBool::new(false);
        let restart_wanted = AtomicBool::new(true); // asked for; no writer will do it
        let checkpointer = Store::connect(&db).unwrap();
        let grew = std::thread::scope(|s| {
            s.spawn(|| checkpoint_loop(checkpointer, &stop, &restart_wanted));
            let deadline = Instant::now() + Duration::from_secs(10);
            while size() == before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, Ordering::SeqCst);
            size() > before
        });
        assert!(
            grew,
            "the checkpointer never copied the WAL into the database file"
        );
    }

    #[test]
    fn refusal_logging_is_rate_limited_per_origin_and_counts_the_rest() {
        let mut limiter = RefusalLimiter::new();
        let t0 = Instant::now();
        let logged = (0..100)
            .filter(|_| limiter.admit("spam.example", t0).is_some())
            .count();
        assert_eq!(logged, REFUSAL_BURST as usize);
        // Another origin is not held back by the first one's flood.
        assert_eq!(limiter.admit("other.example", t0), Some(0));
        // The next row of the flooding origin carries the count of what was left out.
        let later = t0 + std::time::Duration::from_secs(2);
        assert_eq!(
            limiter.admit("spam.example", later),
            Some(100 - logged as i64)
        );
        assert_eq!(limiter.admit("spam.example", later), Some(0));
    }
}
