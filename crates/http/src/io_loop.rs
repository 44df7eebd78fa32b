//! The I/O thread: one `poll(2)` loop over every connection that is not with a worker.
//!
//! It owns connections while they handshake, wait, or trickle in a request, enforces their
//! deadlines, and hands each complete request (or edge error) to the worker pool. Nothing here
//! blocks, so thousands of slow clients cannot delay a fast one.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use crate::api::{ConnectionRefused, Handler, Limits};
use crate::conn::{Conn, Phase, Step, Work};
use crate::quota::{PeerShare, Quota, Share};
use crate::shared::Shared;
use crate::sys::{self, WakeReceiver};

/// Messages to the I/O thread; each is followed by a wake-up of its poll.
pub(crate) enum ToIo {
    /// A freshly accepted (non-blocking) connection, with its slot of its peer's cap and of the
    /// global cap; without the latter when the cap was full (room is made for it here).
    New(TcpStream, SocketAddr, PeerShare, Option<Share>),
    /// A kept-alive or closing connection back from a worker.
    Back(Box<Conn>),
}

/// A connection and the work a worker must do on it.
pub(crate) struct Job {
    pub conn: Box<Conn>,
    pub work: Work,
    /// When it was queued, for [`crate::Limits::max_queue_wait`].
    pub queued_at: Instant,
}

/// Read chunk size; reads never ask for more than the current request still needs.
const SCRATCH: usize = 16 * 1024;

/// Connections in their TLS handshake that are served per poll round at most. A handshake
/// step can cost a key exchange and a signature (about a millisecond on a small device, several
/// with an RSA key): a burst of new TLS clients is served a few at a time, and the connections
/// already established are served between each few.
const HANDSHAKES_PER_ROUND: usize = 8;

/// Connections travel between threads boxed; keeping the box here too means a hand-off never
/// reallocates.
#[allow(clippy::vec_box)]
type Conns = Vec<Box<Conn>>;

pub(crate) struct IoLoop {
    pub inbox: Receiver<ToIo>,
    pub wake: WakeReceiver,
    pub jobs: Sender<Job>,
    pub shared: Arc<Shared>,
    pub limits: Limits,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The connection cap, shared with the accept loop.
    pub slots: Arc<Quota>,
    /// The budget for request bodies (`max_buffered_body_bytes`).
    pub bodies: Arc<Quota>,
    /// Told of connections closed at the cap (it answers no request here).
    pub handler: Arc<dyn Handler>,
}

/// Leaves at most [`HANDSHAKES_PER_ROUND`] ready handshakes in `fds` (one per connection of
/// `conns`), those accepted first; the others are left unread, so the next poll reports them
/// again at once.
fn ration_handshakes(conns: &[Box<Conn>], fds: &mut [sys::pollfd]) {
    let ready: Vec<(Instant, usize)> = conns
        .iter()
        .zip(fds.iter())
        .enumerate()
        .filter_map(|(i, (conn, fd))| match conn.phase {
            Phase::Handshake { deadline } if fd.revents != 0 => Some((deadline, i)),
            _ => None,
        })
        .collect();
    for i in deferred(ready, HANDSHAKES_PER_ROUND) {
        if let Some(fd) = fds.get_mut(i) {
            fd.revents = 0;
        }
    }
}

/// Of the `ready` (deadline, index) pairs, the indexes of all but the `keep` earliest.
fn deferred(mut ready: Vec<(Instant, usize)>, keep: usize) -> Vec<usize> {
    if ready.len() <= keep {
        return Vec::new();
    }
    ready.select_nth_unstable(keep);
    ready.drain(keep..).map(|(_, i)| i).collect()
}

impl IoLoop {
    /// Runs until shutdown; dropping `self` then closes every connection still held here and
    /// the job queue, which lets the workers finish what is queued and exit.
    pub(crate) fn run(self) {
        let mut conns: Conns = Vec::new();
        let mut scratch = vec![0u8; SCRATCH];
        let mut fds = Vec::new();
        while !self.shared.stopping() {
            let now = Instant::now();
            while let Ok(msg) = self.inbox.try_recv() {
                match msg {
                    ToIo::New(stream, peer, peer_slot, slot) => {
                        let Some(slot) = slot.or_else(|| self.make_room(peer, &mut conns)) else {
                            continue;
                        };
                        if let Some(conn) = self.admit(stream, peer, (slot, peer_slot), now) {
                            conns.push(conn);
                        }
                    }
                    ToIo::Back(mut conn) => {
                        // Pipelined bytes may already be buffered: no poll would report them.
                        let step = conn.pump(now, &self.limits, &self.bodies, &mut scratch);
                        self.apply(step, conn, &mut conns);
                    }
                }
            }
            let mut next: Option<Instant> = None;
            let mut i = 0;
            while i < conns.len() {
                match conns[i].deadline() {
                    Some(deadline) if deadline <= now => {
                        let mut conn = conns.swap_remove(i);
                        let step = conn.on_timeout();
                        self.apply(step, conn, &mut conns);
                        // `apply` may have pushed the connection back at the end; it is
                        // looked at again in its new place, with a new deadline.
                        continue;
                    }
                    Some(deadline) => next = Some(next.map_or(deadline, |n| n.min(deadline))),
                    None => {}
                }
                i += 1;
            }
            fds.clear();
            fds.push(sys::want(self.wake.fd(), sys::POLLIN));
            fds.extend(conns.iter().map(|c| sys::want(c.fd(), c.interest())));
            let timeout = next.map(|d| d.saturating_duration_since(now));
            if let Err(e) = sys::poll(&mut fds, timeout) {
                log::error!("poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            if fds[0].revents != 0 {
                self.wake.drain();
            }
            let now = Instant::now();
            if let Some(conn_fds) = fds.get_mut(1..) {
                ration_handshakes(&conns, conn_fds);
            }
            // Backwards, so that swap_remove(i) only moves an already handled connection.
            for i in (0..conns.len()).rev() {
                let revents = fds.get(i + 1).map_or(0, |f| f.revents);
                if revents == 0 {
                    continue;
                }
                let mut step = conns[i].pump(now, &self.limits, &self.bodies, &mut scratch);
                if matches!(step, Step::Wait)
                    && revents & (sys::POLLERR | sys::POLLHUP | sys::POLLNVAL) != 0
                {
                    // Nothing more will come, and poll would keep reporting it.
                    step = Step::Close;
                }
                if !matches!(step, Step::Wait) {
                    let conn = conns.swap_remove(i);
                    self.apply(step, conn, &mut conns);
                }
            }
        }
        log::debug!("I/O thread stopping; closing {} connections", conns.len());
        for conn in &mut conns {
            conn.close_notify_nonblocking();
        }
    }

    fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        slots: (Share, PeerShare),
        now: Instant,
    ) -> Option<Box<Conn>> {
        let tls = match &self.tls {
            None => None,
            Some(config) => match rustls::ServerConnection::new(Arc::clone(config)) {
                Ok(mut tls) => {
                    // Responses are already in memory; let the worker hand them over whole.
                    tls.set_buffer_limit(None);
                    Some(tls)
                }
                Err(e) => {
                    log::error!("cannot start a TLS session: {e}");
                    return None;
                }
            },
        };
        log::debug!("{peer}: connected");
        Some(Box::new(Conn::new(
            stream,
            peer,
            slots,
            tls,
            &self.limits,
            now,
        )))
    }

    /// A slot for a new connection from `peer` while the cap is full: closes the connection
    /// that has waited longest with no request in progress, or says no (`None`: every
    /// connection is busy with a request, and the new one is closed).
    fn make_room(&self, peer: SocketAddr, conns: &mut Conns) -> Option<Share> {
        loop {
            // The accept loop may take a freed slot first: then close another.
            if let Some(slot) = self.slots.take(1) {
                return Some(slot);
            }
            let Some((_, oldest)) = conns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| Some((c.evictable_since()?, i)))
                .min()
            else {
                let max = self.slots.max();
                log::debug!("{peer}: connection cap of {max} reached, none idle; closing");
                self.handler
                    .connection_refused(ConnectionRefused::ConnectionCap);
                return None;
            };
            let mut victim = conns.swap_remove(oldest);
            log::debug!(
                "{}: closed to make room for {peer} (connection cap reached)",
                victim.peer()
            );
            victim.close_notify_nonblocking();
        }
    }

    /// Carries out `step` for a connection not currently in `conns`.
    fn apply(&self, step: Step, conn: Box<Conn>, conns: &mut Conns) {
        match step {
            Step::Wait => conns.push(conn),
            Step::Close => log::debug!("{}: closed", conn.peer()),
            Step::Dispatch(work) => {
                if self
                    .jobs
                    .send(Job {
                        conn,
                        work,
                        queued_at: Instant::now(),
                    })
                    .is_err()
                {
                    log::error!("no worker left to take a request");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_served_oldest_first_a_few_per_round() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(deferred(vec![(at(3), 0), (at(1), 1)], 2).is_empty());
        let ready = vec![(at(5), 0), (at(1), 1), (at(4), 2), (at(2), 3), (at(3), 4)];
        let mut later = deferred(ready, 2);
        later.sort_unstable();
        assert_eq!(later, vec![0, 2, 4]);
        assert_eq!(deferred(vec![(at(1), 7)], 0), vec![7]);
    }
}
