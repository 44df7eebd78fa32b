//! One client connection and its state machine.
//!
//! The I/O thread drives [`Conn::pump`] on a non-blocking socket: it buffers bytes (and, for
//! TLS, runs the handshake and decrypts) until a whole request is in, so a slow client costs a
//! buffer, never a thread. A worker then owns the connection just long enough to run the handler
//! and write the response under a deadline ([`Conn::send`]), and hands it back.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConnection;

use crate::api::{EdgeError, Limits, Request};
use crate::head::{Head, Parsed, parse_head};
use crate::quota::{PeerShare, Quota, Share};
use crate::sys;
use crate::tls::{flush_tls, flush_tls_until, handshake, read_plaintext};

/// How long a closing connection is drained before the socket is closed. Closing a socket with
/// unread input makes the kernel send RST, which can destroy the response we just wrote (a 413
/// sent without reading the body, say) before the client reads it.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How many bytes a closing connection may still send us, read and thrown away.
const LINGER_BYTES: usize = 256 * 1024;

/// Where a connection is in its life; every waiting phase carries its own deadline.
#[derive(Debug)]
pub(crate) enum Phase {
    /// TLS handshake in progress.
    Handshake { deadline: Instant },
    /// Waiting for the first byte of the next request.
    Idle { deadline: Instant },
    /// Reading a request head; the deadline was set by its first byte.
    Head { deadline: Instant },
    /// Reading a body of known length; same deadline as the head.
    Body {
        deadline: Instant,
        head: Head,
        total: usize,
    },
    /// Owned by a worker.
    Busy,
    /// Response written and write side shut: draining input until the client closes.
    Linger { deadline: Instant, budget: usize },
}

/// What a worker is handed.
#[derive(Debug)]
pub(crate) enum Work {
    Request {
        request: Request,
        keep_alive: bool,
        minor: u8,
    },
    Refuse(EdgeError),
}

/// What the I/O thread does next with a connection.
#[derive(Debug)]
pub(crate) enum Step {
    /// Keep polling it.
    Wait,
    /// Hand it to a worker.
    Dispatch(Work),
    /// Drop it (closing the socket).
    Close,
}

pub(crate) struct Conn {
    stream: TcpStream,
    tls: Option<Box<ServerConnection>>,
    peer: SocketAddr,
    /// Bytes of the request being read (and any pipelined bytes after it): never more than
    /// `max_head_bytes + 1` while reading a head, `head + Content-Length` while reading a body.
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no complete head, to avoid re-parsing on every byte.
    scanned: usize,
    /// Whether `buf` holds a line end, i.e. the request line is complete.
    line_seen: bool,
    pub(crate) phase: Phase,
    /// Requests answered on this connection.
    pub(crate) served: usize,
    /// When the connection last started to wait with no request in progress (accepted, idle
    /// after a response, or closing): the oldest such is closed first when the cap is full.
    since: Instant,
    /// This connection's slot of the connection cap, and of its peer's.
    _slot: Share,
    _peer_slot: PeerShare,
    /// The current request's declared body, counted in `max_buffered_body_bytes` from its
    /// head until its response is written.
    body_share: Option<Share>,
}

enum Advance {
    Ready(Work),
    /// Read at most this many more bytes (at least 1).
    Need(usize),
}

impl Conn {
    /// A freshly accepted connection; `stream` must already be non-blocking.
    pub(crate) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        (slot, peer_slot): (Share, PeerShare),
        tls: Option<ServerConnection>,
        limits: &Limits,
        now: Instant,
    ) -> Conn {
        let phase = match tls {
            Some(_) => Phase::Handshake {
                deadline: after(now, limits.tls_handshake_timeout),
            },
            None => Phase::Idle {
                deadline: after(now, limits.first_byte_timeout),
            },
        };
        Conn {
            stream,
            tls: tls.map(Box::new),
            peer,
            buf: Vec::new(),
            scanned: 0,
            line_seen: false,
            phase,
            served: 0,
            since: now,
            _slot: slot,
            _peer_slot: peer_slot,
            body_share: None,
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Since when this connection has waited with no request in progress, if it is: such a
    /// connection may be closed to make room for a new one.
    pub(crate) fn evictable_since(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshake { .. } | Phase::Linger { .. } => Some(self.since),
            Phase::Idle { .. } if self.buf.is_empty() => Some(self.since),
            Phase::Idle { .. } | Phase::Head { .. } | Phase::Body { .. } | Phase::Busy => None,
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Handshake { deadline }
            | Phase::Idle { deadline }
            | Phase::Head { deadline }
            | Phase::Body { deadline, .. }
            | Phase::Linger { deadline, .. } => Some(*deadline),
            Phase::Busy => None,
        }
    }

    /// The poll events this connection waits for.
    pub(crate) fn interest(&self) -> i16 {
        let tls_out = match (&self.phase, &self.tls) {
            (Phase::Linger { .. }, _) | (_, None) => false,
            (_, Some(tls)) => tls.wants_write(),
        };
        if tls_out {
            sys::POLLIN | sys::POLLOUT
        } else {
            sys::POLLIN
        }
    }

    /// Called when the phase deadline has passed.
    pub(crate) fn on_timeout(&mut self) -> Step {
        match self.phase {
            // Bytes of a request arrived but not all of them: tell the client why we hang up.
            Phase::Head { .. } | Phase::Body { .. } => {
                log::debug!("{}: request not received in time", self.peer);
                self.phase = Phase::Busy;
                Step::Dispatch(Work::Refuse(EdgeError::Timeout))
            }
            _ => {
                log::debug!(
                    "{}: connection timed out ({:?})",
                    self.peer,
                    self.phase_name()
                );
                Step::Close
            }
        }
    }

    /// Makes all the progress possible without blocking: handshake, reads, parsing.
    pub(crate) fn pump(
        &mut self,
        now: Instant,
        limits: &Limits,
        bodies: &Arc<Quota>,
        scratch: &mut [u8],
    ) -> Step {
        if let Phase::Linger { budget, .. } = &mut self.phase {
            return linger(&mut self.stream, budget, scratch);
        }
        if let Some(tls) = &mut self.tls
            && let Err(e) = flush_tls(tls, &mut self.stream)
        {
            log::debug!("{}: TLS write failed: {e}", self.peer);
            return Step::Close;
        }
        if let (Phase::Handshake { .. }, Some(tls)) = (&self.phase, &mut self.tls) {
            match handshake(tls, &mut self.stream) {
                Ok(true) => {
                    self.phase = Phase::Idle {
                        deadline: after(now, limits.first_byte_timeout),
                    };
                }
                Ok(false) => return Step::Wait,
                Err(e) => {
                    log::debug!("{}: TLS handshake failed: {e}", self.peer);
                    return Step::Close;
                }
            }
        }
        loop {
            let want = match self.advance(now, limits, bodies) {
                Advance::Ready(work) => {
                    self.phase = Phase::Busy;
                    return Step::Dispatch(work);
                }
                Advance::Need(want) => want.max(1).min(scratch.len()),
            };
            let chunk = &mut scratch[..want];
            let read = match &mut self.tls {
                None => (&self.stream).read(chunk),
                Some(tls) => read_plaintext(tls, &mut self.stream, chunk),
            };
            match read {
                Ok(0) => {
                    if !self.buf.is_empty() {
                        log::debug!("{}: closed in the middle of a request", self.peer);
                    }
                    return Step::Close;
                }
                Ok(n) => {
                    let got = &chunk[..n.min(chunk.len())];
                    if let Phase::Body { total, .. } = self.phase {
                        reserve_up_to(&mut self.buf, got.len(), total);
                    }
                    self.buf.extend_from_slice(got);
                    if let Phase::Idle { .. } = self.phase {
                        self.phase = Phase::Head {
                            deadline: after(now, limits.request_timeout),
                        };
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("{}: read failed: {e}", self.peer);
                    return Step::Close;
                }
            }
        }
    }

    /// Completes the request in `buf` if it can, or says how much more to read.
    fn advance(&mut self, now: Instant, limits: &Limits, bodies: &Arc<Quota>) -> Advance {
        let head_room = limits.max_head_bytes.saturating_add(1);
        match &self.phase {
            Phase::Body { total, .. } => {
                let total = *total;
                if self.buf.len() < total {
                    return Advance::Need(total - self.buf.len());
                }
                match std::mem::replace(&mut self.phase, Phase::Busy) {
                    Phase::Body { head, .. } => Advance::Ready(self.take_request(head)),
                    _ => Advance::Ready(Work::Refuse(EdgeError::BadRequest(
                        "internal framing state".to_owned(),
                    ))),
                }
            }
            Phase::Idle { .. } | Phase::Head { .. } => {
                if self.buf.is_empty() {
                    return Advance::Need(head_room);
                }
                let deadline = match self.phase {
                    Phase::Head { deadline } => deadline,
                    // Pipelined bytes left over from the previous request: its clock starts now.
                    _ => after(now, limits.request_timeout),
                };
                self.phase = Phase::Head { deadline };
                let fresh = self.buf.get(self.scanned..).unwrap_or_default();
                let line_ended = fresh.contains(&b'\n');
                self.line_seen |= line_ended;
                // An over-long target is worth a precise 414 before the head limit is hit.
                let target_growing = !self.line_seen && self.buf.len() > limits.max_target_bytes;
                if !line_ended && !target_growing && self.buf.len() <= limits.max_head_bytes {
                    // No line ended since the last parse, so the head cannot have ended either.
                    self.scanned = self.buf.len();
                    return Advance::Need(head_room - self.buf.len());
                }
                match parse_head(&self.buf, limits) {
                    Parsed::Partial => {
                        self.scanned = self.buf.len();
                        Advance::Need(head_room.saturating_sub(self.buf.len()))
                    }
                    Parsed::Refused(e) => {
                        log::debug!("{}: refused: {e}", self.peer);
                        Advance::Ready(Work::Refuse(e))
                    }
                    Parsed::Complete(head) => {
                        let declared = head.content_length.unwrap_or(0);
                        if declared > 0 {
                            match bodies.take(declared) {
                                Some(share) => self.body_share = Some(share),
                                None => return Advance::Ready(self.over_budget(declared, bodies)),
                            }
                        }
                        let total = head.len.saturating_add(declared);
                        if self.buf.len() >= total {
                            Advance::Ready(self.take_request(head))
                        } else {
                            let need = total - self.buf.len();
                            self.phase = Phase::Body {
                                deadline,
                                head,
                                total,
                            };
                            Advance::Need(need)
                        }
                    }
                }
            }
            Phase::Handshake { .. } | Phase::Busy | Phase::Linger { .. } => {
                Advance::Ready(Work::Refuse(EdgeError::BadRequest(
                    "internal connection state".to_owned(),
                )))
            }
        }
    }

    /// The refusal of a body that does not fit in the body budget.
    fn over_budget(&self, declared: usize, bodies: &Quota) -> Work {
        let budget = bodies.max();
        log::debug!(
            "{}: body of {declared} bytes over the {budget}-byte budget",
            self.peer
        );
        Work::Refuse(if declared > budget {
            EdgeError::PayloadTooLarge { limit: budget }
        } else {
            EdgeError::Overloaded
        })
    }

    /// Moves one complete request out of `buf`, keeping any pipelined bytes after it.
    fn take_request(&mut self, head: Head) -> Work {
        let total = head.len.saturating_add(head.content_length.unwrap_or(0));
        let rest = self.buf.split_off(total.min(self.buf.len()));
        let mut bytes = std::mem::replace(&mut self.buf, rest);
        // The body stays where it was read (no copy, no second buffer of its size).
        let body = if bytes.len() > head.len {
            bytes.drain(..head.len);
            bytes
        } else {
            Vec::new()
        };
        self.scanned = 0;
        self.line_seen = false;
        Work::Request {
            keep_alive: head.keep_alive,
            minor: head.minor,
            request: Request {
                method: head.method,
                target: head.target,
                headers: head.headers,
                body,
                has_body: head.content_length.is_some(),
                peer: self.peer,
                tls: self.tls.is_some(),
            },
        }
    }

    /// Writes all of `bytes` (a worker calls this) or fails once `deadline` passes, so a client
    /// that does not read holds a worker for `write_timeout` at most.
    pub(crate) fn send(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        match &mut self.tls {
            None => {
                let mut rest = bytes;
                while !rest.is_empty() {
                    match (&self.stream).write(rest) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            sys::wait_writable(self.stream.as_raw_fd(), deadline)?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Some(tls) => {
                // The buffer limit was lifted at accept, so this only encrypts into memory.
                tls.writer().write_all(bytes)?;
                flush_tls_until(tls, &mut self.stream, deadline)
            }
        }
    }

    /// Ends our side of the connection after the last response; the I/O thread then drains
    /// what the client still sends until it closes (see [`LINGER_TIME`]).
    pub(crate) fn start_close(&mut self, deadline: Instant) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = flush_tls_until(tls, &mut self.stream, deadline);
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        self.body_share = None;
        self.since = Instant::now();
        self.phase = Phase::Linger {
            deadline: after(self.since, LINGER_TIME),
            budget: LINGER_BYTES,
        };
    }

    /// Readies a kept-alive connection for its next request.
    pub(crate) fn start_idle(&mut self, limits: &Limits) {
        self.body_share = None;
        self.since = Instant::now();
        self.phase = Phase::Idle {
            deadline: after(self.since, limits.keep_alive_timeout),
        };
        if self.buf.is_empty() {
            // Give back the memory of a large body.
            self.buf = Vec::new();
        }
    }

    /// Best-effort goodbye to an idle TLS client at shutdown.
    pub(crate) fn close_notify_nonblocking(&mut self) {
        if let Some(tls) = &mut self.tls
            && !tls.is_handshaking()
        {
            tls.send_close_notify();
            let _ = flush_tls(tls, &mut self.stream);
        }
    }

    fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Handshake { .. } => "TLS handshake",
            Phase::Idle { .. } => "idle",
            Phase::Head { .. } => "head",
            Phase::Body { .. } => "body",
            Phase::Busy => "busy",
            Phase::Linger { .. } => "closing",
        }
    }
}

/// `now + d`, saturating: a huge configured timeout must not panic.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Makes room in `buf` for `more` bytes, growing it geometrically (so appending stays cheap)
/// but never past `cap`, the request's declared size: a body's buffer grows with the bytes that
/// arrive and is never allocated to the declared size before they do.
fn reserve_up_to(buf: &mut Vec<u8>, more: usize, cap: usize) {
    let need = buf.len().saturating_add(more);
    if need <= buf.capacity() {
        return;
    }
    let target = buf.capacity().saturating_mul(2).min(cap).max(need);
    buf.reserve_exact(target - buf.len());
}

/// Reads and discards input of a closing connection.
fn linger(stream: &mut TcpStream, budget: &mut usize, scratch: &mut [u8]) -> Step {
    loop {
        match stream.read(scratch) {
            Ok(0) => return Step::Close,
            Ok(n) if n >= *budget => return Step::Close,
            Ok(n) => *budget -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{PeerQuota, Quota};
    use std::net::TcpListener;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Arbitrary byte streams, cut into arbitrary chunks, through the real connection state
    /// machine on a real socket: no panic, buffers within the limits, and bodies exactly as
    /// declared.
    #[test]
    fn pump_survives_arbitrary_streams() {
        let limits = Limits {
            max_head_bytes: 512,
            max_headers: 8,
            max_target_bytes: 64,
            max_body_bytes: 256,
            ..Limits::default()
        };
        let pieces: [&[u8]; 9] = [
            b"GET / HTTP/1.1\r\n\r\n",
            b"PUT /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"\r\n",
            b"HTTP/1.1",
            b"Content-Length: 300\r\n",
            b"\n",
        ];
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = Quota::new(10);
        let peers = PeerQuota::new(10);
        let bodies = Quota::new(limits.max_buffered_body_bytes);
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut scratch = vec![0u8; 64];
        for _ in 0..300 {
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (stream, peer) = listener.accept().unwrap();
            stream.set_nonblocking(true).unwrap();
            let slots = (open.take(1).unwrap(), peers.take(peer.ip()).unwrap());
            let mut conn = Conn::new(stream, peer, slots, None, &limits, Instant::now());
            let mut bytes = Vec::new();
            for _ in 0..rng.below(6) + 1 {
                let mut piece = pieces[rng.below(pieces.len())].to_vec();
                if rng.below(3) == 0 && !piece.is_empty() {
                    let at = rng.below(piece.len());
                    piece[at] = rng.next() as u8;
                }
                bytes.extend_from_slice(&piece);
            }
            let mut sent = 0;
            'stream: while sent < bytes.len() {
                let end = (sent + 1 + rng.below(40)).min(bytes.len());
                client.write_all(&bytes[sent..end]).unwrap();
                sent = end;
                loop {
                    match conn.pump(Instant::now(), &limits, &bodies, &mut scratch) {
                        Step::Wait => break,
                        Step::Close | Step::Dispatch(Work::Refuse(_)) => break 'stream,
                        Step::Dispatch(Work::Request { request, .. }) => {
                            assert!(request.body.len() <= limits.max_body_bytes);
                            assert_eq!(
                                request.has_body,
                                request.header("content-length").is_some()
                            );
                            let declared = request
                                .header("content-length")
                                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok());
                            assert_eq!(declared.unwrap_or(0), request.body.len());
                            conn.start_idle(&limits);
                            assert_eq!(bodies.used(), 0);
                        }
                    }
                    assert!(conn.buf.len() <= limits.max_head_bytes + 1 + limits.max_body_bytes);
                    // Grown with what arrived: never to a declared size ahead of the bytes.
                    assert!(conn.buf.capacity() <= 2 * (limits.max_head_bytes + 1) + 256);
                }
            }
        }
        assert_eq!(open.used(), 0);
        assert_eq!(peers.open(listener.local_addr().unwrap().ip()), 0);
    }
}
