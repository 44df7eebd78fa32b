//! Housekeeping for a server that runs for months, on a thread of its own, and the same work
//! for `invited prune`: retention (finished invites and what refers to them, after
//! `[retention] finished_invites_days`; other servers' keys not fetched for
//! `remote_keys_days`: a key still in use is fetched again when needed). The server runs it
//! at start and then hourly, in batches of short write transactions with pauses between,
//! so invites being written never wait long behind it.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::RetentionConfig;
use crate::fatal::Error;
use crate::store::{PruneCounts, Store, StoreError, StorePool};
use crate::time::now_ms;

const EVERY: Duration = Duration::from_secs(3600);
/// Invites deleted per transaction, and the pause between transactions.
const BATCH: usize = 500;
const PAUSE: Duration = Duration::from_millis(50);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What retention would delete now (`invited prune --dry-run`).
pub fn prunable(store: &Store, retention: &RetentionConfig) -> Result<PruneCounts, StoreError> {
    let now = now_ms();
    store.prunable(
        now - ms(retention.finished_invites),
        now - ms(retention.remote_keys),
    )
}

/// Deletes what retention says, in batches; `pause` between them.
pub fn prune(
    store: &mut Store,
    retention: &RetentionConfig,
    pause: Duration,
) -> Result<PruneCounts, StoreError> {
    let now = now_ms();
    let mut total = PruneCounts {
        remote_keys: store.prune_remote_keys(now - ms(retention.remote_keys))?,
        ..PruneCounts::default()
    };
    loop {
        let batch = store.prune_batch(now - ms(retention.finished_invites), BATCH)?;
        total.invites += batch.invites;
        total.pdus += batch.pdus;
        total.changes += batch.changes;
        total.notifications += batch.notifications;
        if batch.invites < BATCH && batch.changes < BATCH && batch.notifications < BATCH {
            return Ok(total);
        }
        std::thread::sleep(pause);
    }
}

/// Handle to the housekeeping thread.
pub struct Maintenance {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Maintenance {
    /// Starts the thread; its first round runs at once.
    pub fn start(store: Arc<StorePool>, retention: RetentionConfig) -> Result<Maintenance, Error> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("maintenance".into())
                .spawn(move || {
                    let (lock, wake) = &*stop;
                    let mut stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    let mut wait = Duration::ZERO;
                    loop {
                        let (guard, _) = wake
                            .wait_timeout(stopped, wait)
                            .unwrap_or_else(PoisonError::into_inner);
                        stopped = guard;
                        if *stopped {
                            return;
                        }
                        wait = EVERY;
                        match store.with(|s| prune(s, &retention, PAUSE)) {
                            Ok(c) if c == PruneCounts::default() => {}
                            Ok(c) => log::info!(
                                "retention: deleted {} finished invite(s), {} unused PDU(s), \
                                 {} remote key(s), {} change-log row(s), {} finished \
                                 notification(s)",
                                c.invites,
                                c.pdus,
                                c.remote_keys,
                                c.changes,
                                c.notifications
                            ),
                            Err(e) => log::warn!("retention: {e}"),
                        }
                    }
                })
                .map_err(|e| Error::new(format!("cannot start the maintenance thread: {e}")))?
        };
        Ok(Maintenance {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
