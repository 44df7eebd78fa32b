//! Worker threads: run the handler on a complete request and write the response.
//!
//! A fixed number of them, so the application's own resources (one database connection per
//! worker, say) are bounded. A worker never reads from a client, so it is never held by a slow
//! one; writing is bounded by `write_timeout`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::api::{EdgeError, Handler, Limits, Response};
use crate::conn::{Work, after};
use crate::io_loop::{Job, ToIo};
use crate::response::{Persist, serialize};
use crate::shared::Shared;

pub(crate) struct Worker {
    pub jobs: Arc<Mutex<Receiver<Job>>>,
    pub to_io: Sender<ToIo>,
    pub shared: Arc<Shared>,
    pub handler: Arc<dyn Handler>,
    pub limits: Limits,
}

impl Worker {
    /// Serves jobs until the queue is closed and empty (the I/O thread has stopped).
    pub(crate) fn run(self) {
        loop {
            let job = {
                let queue = self
                    .jobs
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                queue.recv()
            };
            let Ok(job) = job else { return };
            // The handler has its own catch_unwind; this one keeps a bug in the edge from
            // shrinking the pool.
            if catch_unwind(AssertUnwindSafe(|| self.serve(job))).is_err() {
                log::error!("worker recovered from a panic outside the handler");
            }
        }
    }

    fn serve(&self, job: Job) {
        let Job {
            mut conn,
            work,
            queued_at,
        } = job;
        let work = match work {
            Work::Request { request, .. } if queued_at.elapsed() > self.limits.max_queue_wait => {
                log::info!(
                    "{}: {} {} waited {:?} for a worker; answered 503",
                    conn.peer(),
                    request.method,
                    request.path(),
                    queued_at.elapsed()
                );
                Work::Refuse(EdgeError::Overloaded)
            }
            work => work,
        };
        let (response, persist, head) = match work {
            Work::Request {
                request,
                keep_alive,
                minor,
            } => {
                conn.served += 1;
                let head = request.method == "HEAD";
                let response = match catch_unwind(AssertUnwindSafe(|| {
                    self.handler.handle(&request)
                })) {
                    Ok(response) => response,
                    Err(_) => {
                        log::error!("handler panicked on {} {}", request.method, request.path());
                        self.edge_response(&EdgeError::HandlerPanicked)
                    }
                };
                let keep = keep_alive
                    && conn.served < self.limits.max_requests_per_connection
                    && !self.shared.stopping();
                let persist = match (keep, minor) {
                    (false, _) => Persist::Close,
                    (true, 0) => Persist::KeepAlive10,
                    (true, _) => Persist::KeepAlive11,
                };
                (response, persist, head)
            }
            // The framing can no longer be trusted, or the client is too slow: always close.
            Work::Refuse(error) => {
                let mut response = self.edge_response(&error);
                let retry_set = response
                    .headers
                    .iter()
                    .any(|(name, _)| name.eq_ignore_ascii_case("retry-after"));
                if error == EdgeError::Overloaded && !retry_set {
                    response
                        .headers
                        .push(("Retry-After".to_owned(), "1".to_owned()));
                }
                (response, Persist::Close, false)
            }
        };
        let deadline = after(Instant::now(), self.limits.write_timeout);
        if let Err(e) = conn.send(&serialize(&response, persist, head), deadline) {
            log::debug!("{}: writing the response failed: {e}", conn.peer());
            return;
        }
        if persist == Persist::Close {
            conn.start_close(deadline);
        } else {
            conn.start_idle(&self.limits);
        }
        if self.shared.stopping() {
            // The I/O thread may be gone; dropping closes the connection.
            return;
        }
        if self.to_io.send(ToIo::Back(conn)).is_ok() {
            self.shared.wake_io();
        }
    }

    /// The application's response to an edge error, or a plain one if that panics too.
    fn edge_response(&self, error: &EdgeError) -> Response {
        catch_unwind(AssertUnwindSafe(|| self.handler.edge_error(error))).unwrap_or_else(|_| {
            log::error!("edge_error handler panicked on {error:?}");
            Response {
                status: error.status(),
                headers: vec![("Content-Type".to_owned(), "text/plain".to_owned())],
                body: error.to_string().into_bytes(),
            }
        })
    }
}
