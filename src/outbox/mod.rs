//! The outbox: work that must reach another server, delivered from the database on a thread
//! of its own, never on the workers that answer requests.
//!
//! A row of the `outbox` table is one thing to deliver (a rejection, a push notification).
//! This thread looks for due rows at least every second — so a row written by the CLI or by
//! the host's own SQL is picked up within about a second, and an idle server costs one
//! indexed query a second — and at once when its [`Doorbell`] rings (the writer rings it
//! after storing a pending invite, which may have queued notifications), at most
//! [`MIN_GAP`]-apart. It runs each due row on a delivery thread, at most
//! [`MAX_PARALLEL`] at once and never two for one row. A kind ([`Kind`]) makes one attempt;
//! failed attempts are retried on one schedule for all kinds ([`Schedule`]), until the kind's
//! give-up time. Rows survive restarts and crashes: nothing is only in memory.

pub mod push;
pub mod rejection;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::fatal::Error;
use crate::metrics::Metrics;
use crate::store::{OutboxItem, StoreError, StorePool};
use crate::text::printable;
use crate::time::now_ms;

/// Deliveries running at once, at most: each may wait on another server for its deadline.
pub const MAX_PARALLEL: usize = 4;

/// How often the database is looked at when nothing wakes the thread.
const POLL: Duration = Duration::from_secs(1);

/// The least time between two looks at the database, however often the doorbell rings (the
/// writer may commit hundreds of times a second under load).
pub const MIN_GAP: Duration = Duration::from_millis(50);

/// Wakes the outbox thread before its next look at the database.
#[derive(Debug, Default)]
pub struct Doorbell {
    rung: Mutex<bool>,
    bell: Condvar,
}

impl Doorbell {
    /// Asks for a look at the database soon (never blocks for long: one uncontended lock).
    pub fn ring(&self) {
        *self
            .rung
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.bell.notify_all();
    }

    /// Waits until rung or `timeout`, and resets it.
    fn wait(&self, timeout: Duration) {
        let rung = self
            .rung
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut rung = self
            .bell
            .wait_timeout_while(rung, timeout, |r| !*r)
            .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        *rung = false;
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing left to do: the kind recorded the result.
    Finished(Ended),
    /// Try again later; this says why it failed.
    Retry(String),
}

/// How a delivery ended (the `result` label of `invited_deliveries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The other side took it.
    Delivered,
    /// The other side refused it for good (a 4xx that asking again will not change).
    Refused,
    /// Nothing to deliver any more (the invite changed meanwhile, the pusher went).
    Dropped,
    /// Retried until the kind's give-up time.
    GivenUp,
}

impl Ended {
    pub const fn as_str(self) -> &'static str {
        match self {
            Ended::Delivered => "delivered",
            Ended::Refused => "refused",
            Ended::Dropped => "dropped",
            Ended::GivenUp => "given_up",
        }
    }
}

/// One kind of delivery.
pub trait Kind: Send + Sync {
    /// The `outbox.kind` it handles.
    fn name(&self) -> &'static str;
    /// One attempt at delivering `item`.
    fn attempt(&self, item: &OutboxItem) -> Result<Outcome, StoreError>;
    /// Gives up on `item` after its last failure `error` (records the result).
    fn give_up(&self, item: &OutboxItem, error: &str) -> Result<(), StoreError>;
    /// The retry schedule of this kind.
    fn schedule(&self) -> &Schedule;
}

/// Retries: exponential backoff with jitter, until a give-up time counted from the row's
/// creation.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub first_retry: Duration,
    pub max_retry: Duration,
    pub give_up_after: Duration,
}

impl Schedule {
    /// The wait after the `attempts`-th failed attempt (1: the first): `first_retry` doubled
    /// per earlier failure, capped at `max_retry`, times a jitter in [0.8, 1.2) so that many
    /// rows failing together do not retry together. `jitter` is a number in [0, 1).
    pub fn delay(&self, attempts: i64, jitter: f64) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let base = self
            .first_retry
            .saturating_mul(1 << doublings)
            .min(self.max_retry);
        base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
    }

    /// When a row created at `created_ts` is given up (ms).
    pub fn give_up_ts(&self, created_ts: i64) -> i64 {
        created_ts.saturating_add(i64::try_from(self.give_up_after.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A number in [0, 1) from the OS (for jitter); 0.5 if it has none to give.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

struct Shared {
    store: Arc<StorePool>,
    metrics: Arc<Metrics>,
    kinds: Vec<Arc<dyn Kind>>,
    /// Rows being delivered now.
    running: Mutex<HashSet<i64>>,
    doorbell: Arc<Doorbell>,
    stop: AtomicBool,
}

/// Handle to the outbox thread.
pub struct Outbox {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Outbox {
    /// Starts the outbox thread over `store` with these kinds; `doorbell` wakes it; each
    /// attempt's outcome is counted in `metrics`.
    pub fn start(
        store: Arc<StorePool>,
        kinds: Vec<Arc<dyn Kind>>,
        doorbell: Arc<Doorbell>,
        metrics: Arc<Metrics>,
    ) -> Result<Outbox, Error> {
        let shared = Arc::new(Shared {
            store,
            metrics,
            kinds,
            running: Mutex::new(HashSet::new()),
            doorbell,
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("outbox".into())
                .spawn(move || run(&shared))
                .map_err(|e| Error::new(format!("cannot start the outbox thread: {e}")))?
        };
        Ok(Outbox {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops looking for work; deliveries under way finish on their own threads (their rows
    /// are in the database either way).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.doorbell.ring();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn run(shared: &Arc<Shared>) {
    let poll_ms = i64::try_from(POLL.as_millis()).unwrap_or(1000);
    while !shared.stop.load(Ordering::SeqCst) {
        // One look at the database: rows due now are started, the rest say how long to wait.
        let now = now_ms();
        let soon = match shared
            .store
            .with(|s| s.due_outbox(now + poll_ms, MAX_PARALLEL * 4))
        {
            Ok(soon) => soon,
            Err(e) => {
                log::warn!("outbox: {e}");
                Vec::new()
            }
        };
        start_due(
            shared,
            soon.iter().filter(|item| item.next_attempt_ts <= now),
        );
        // Until the next row is due, a delivery ends, the doorbell rings, or the next look
        // at the database. Rows being delivered are due too, but their end rings anyway.
        let wait = {
            let running = shared
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            soon.iter()
                .find(|item| running.len() < MAX_PARALLEL && !running.contains(&item.id))
                .map_or(POLL, |item| {
                    let ms =
                        u64::try_from(item.next_attempt_ts.saturating_sub(now_ms())).unwrap_or(0);
                    POLL.min(Duration::from_millis(ms.max(10)))
                })
        };
        let looked = std::time::Instant::now();
        shared.doorbell.wait(wait);
        if let Some(left) = MIN_GAP.checked_sub(looked.elapsed())
            && !shared.stop.load(Ordering::SeqCst)
        {
            std::thread::sleep(left);
        }
    }
}

/// Starts every due row that is not running, while fewer than [`MAX_PARALLEL`] run.
fn start_due<'a>(shared: &Arc<Shared>, due: impl Iterator<Item = &'a OutboxItem>) {
    for item in due.cloned() {
        let Some(kind) = shared.kinds.iter().find(|k| k.name() == item.kind).cloned() else {
            continue;
        };
        {
            let mut running = shared
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if running.len() >= MAX_PARALLEL || !running.insert(item.id) {
                continue;
            }
        }
        let worker = shared.clone();
        let id = item.id;
        let spawned = std::thread::Builder::new()
            .name("delivery".into())
            .spawn(move || {
                deliver(&worker, kind.as_ref(), &item);
                if let Ok(mut running) = worker.running.lock() {
                    running.remove(&item.id);
                }
                worker.doorbell.ring();
            });
        if let Err(e) = spawned {
            log::warn!("outbox: cannot start a delivery thread: {e}");
            if let Ok(mut running) = shared.running.lock() {
                running.remove(&id);
            }
        }
    }
}

/// One attempt, then the schedule's verdict on a failure.
fn deliver(shared: &Shared, kind: &dyn Kind, item: &OutboxItem) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kind.attempt(item)))
        .unwrap_or_else(|_| Ok(Outcome::Retry("the delivery panicked".into())));
    let error = match result {
        Ok(Outcome::Finished(ended)) => {
            shared.metrics.delivery(kind.name(), ended.as_str());
            return;
        }
        Ok(Outcome::Retry(error)) => error,
        Err(e) => e.to_string(),
    };
    let schedule = kind.schedule();
    let now = now_ms();
    let delay = schedule.delay(item.attempts + 1, jitter());
    let next = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    let recorded = if now >= schedule.give_up_ts(item.created_ts) {
        log::info!(
            "{} {}: giving up after {} attempt(s): {}",
            item.kind,
            printable(&item.subject),
            item.attempts + 1,
            printable(&error)
        );
        shared
            .metrics
            .delivery(kind.name(), Ended::GivenUp.as_str());
        kind.give_up(item, &error)
    } else {
        shared.metrics.delivery(kind.name(), "retried");
        log::info!(
            "{} {}: attempt {} failed, next in {:.0?}: {}",
            item.kind,
            printable(&item.subject),
            item.attempts + 1,
            delay,
            printable(&error)
        );
        // Never past the give-up time by more than one attempt.
        shared.store.with(|s| {
            s.outbox_retry(
                item.id,
                next.min(schedule.give_up_ts(item.created_ts)),
                &error,
            )
        })
    };
    if let Err(e) = recorded {
        log::warn!("outbox: cannot record the outcome for {}: {e}", item.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_the_first_up_to_the_cap_with_jitter() {
        let s = Schedule {
            first_retry: Duration::from_secs(30),
            max_retry: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
        };
        let mid = |n| s.delay(n, 0.5).as_secs();
        assert_eq!((mid(1), mid(2), mid(3), mid(8)), (30, 60, 120, 3600));
        assert_eq!(mid(1000), 3600, "capped, without overflow");
        assert_eq!(s.delay(1, 0.0), Duration::from_secs(24));
        assert!(s.delay(1, 0.999) < Duration::from_secs(36));
        assert_eq!(s.give_up_ts(1_000), 1_000 + 24 * 3600 * 1000);
    }
}
