//! Housekeeping for a server that runs for months, on a thread of its own: every hour it
//! forgets other servers' keys not fetched for 30 days (a key still in use is fetched again
//! when needed), so `remote_keys` does not grow with every server ever seen. Start-up does the
//! same once, before serving.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::fatal::Error;
use crate::store::StorePool;
use crate::time::now_ms;

/// Keys fetched longer ago than this are forgotten.
pub const REMOTE_KEYS_KEPT_MS: i64 = 30 * 24 * 3600 * 1000;

const EVERY: Duration = Duration::from_secs(3600);

/// Handle to the housekeeping thread.
pub struct Maintenance {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Maintenance {
    pub fn start(store: Arc<StorePool>) -> Result<Maintenance, Error> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("maintenance".into())
                .spawn(move || {
                    let (lock, wake) = &*stop;
                    let mut stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    loop {
                        let (guard, _) = wake
                            .wait_timeout(stopped, EVERY)
                            .unwrap_or_else(PoisonError::into_inner);
                        stopped = guard;
                        if *stopped {
                            return;
                        }
                        match store.with(|s| s.prune_remote_keys(now_ms() - REMOTE_KEYS_KEPT_MS)) {
                            Ok(0) => {}
                            Ok(n) => {
                                log::info!("forgot {n} remote key(s) fetched over 30 days ago")
                            }
                            Err(e) => log::warn!("maintenance: {e}"),
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
