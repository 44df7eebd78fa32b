//! The public server: binding, the accept loop, thread start-up and graceful shutdown.
//!
//! Threads: the caller of [`Server::run`] accepts connections; one I/O thread polls every
//! connection that is waiting for bytes (see `io_loop`); `workers` threads run the handler.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use crate::api::{ConnectionRefused, Handler, Limits};
use crate::io_loop::{IoLoop, ToIo};
use crate::quota::{PeerQuota, Quota};
use crate::shared::Shared;
use crate::sys::{self, WakeReceiver};
use crate::worker::Worker;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Handler threads (at least one is started). They are never blocked by slow clients, so
    /// size this by how many requests may run the handler at once.
    pub workers: usize,
    pub limits: Limits,
    /// Serve TLS with this configuration (see [`crate::load_tls_config`]); `None` for plain
    /// HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            workers: 4,
            limits: Limits::default(),
            tls: None,
        }
    }
}

/// A bound HTTP server, not yet serving.
pub struct Server {
    listener: TcpListener,
    options: ServerOptions,
    shared: Arc<Shared>,
    accept_wake: WakeReceiver,
    io_wake: WakeReceiver,
    local_addr: SocketAddr,
    /// The connection cap; made at bind so that [`ConnectionCount`] can be handed out first.
    slots: Arc<Quota>,
}

/// Stops a running (or not yet running) [`Server`] from any thread, e.g. a signal handler's.
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Asks the server to stop: it stops accepting, closes idle connections, finishes the
    /// requests already being handled, and then [`Server::run`] returns. Returns at once.
    pub fn shutdown(&self) {
        self.shared.stop();
    }
}

/// Reads how many connections a [`Server`] has open, from any thread (e.g. a metrics scrape).
#[derive(Clone)]
pub struct ConnectionCount {
    slots: Arc<Quota>,
}

impl ConnectionCount {
    /// Connections open now: queued, reading, or being answered. One atomic load.
    pub fn open(&self) -> usize {
        self.slots.used()
    }
}

/// How the accept loop gets a connection; tests substitute one that fails.
pub(crate) type AcceptFn<'a> = dyn FnMut(&TcpListener) -> io::Result<(TcpStream, SocketAddr)> + 'a;

impl Server {
    /// Binds `addr` with an accept queue of up to 1024 connections.
    pub fn bind(addr: SocketAddr, options: ServerOptions) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        if let Err(e) = sys::set_backlog(&listener, 1024) {
            log::debug!("keeping the default accept queue: {e}");
        }
        Server::from_listener(listener, options)
    }

    /// Serves on an already bound listener (socket activation, or a port picked by a test).
    pub fn from_listener(listener: TcpListener, options: ServerOptions) -> io::Result<Server> {
        // Non-blocking, so that the accept loop can also watch its shutdown wake-up.
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let (accept_waker, accept_wake) = sys::waker()?;
        let (io_waker, io_wake) = sys::waker()?;
        let slots = Quota::new(options.limits.max_connections);
        Ok(Server {
            listener,
            options,
            shared: Arc::new(Shared::new(accept_waker, io_waker)),
            accept_wake,
            io_wake,
            local_addr,
            slots,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn connection_count(&self) -> ConnectionCount {
        ConnectionCount {
            slots: Arc::clone(&self.slots),
        }
    }

    /// Serves until shutdown is requested; then stops accepting, finishes in-flight requests,
    /// returns. Errors only if a thread cannot be started or the I/O thread died.
    pub fn run(self, handler: Arc<dyn Handler>) -> io::Result<()> {
        self.run_with(handler, &mut |listener: &TcpListener| listener.accept())
    }

    pub(crate) fn run_with(
        self,
        handler: Arc<dyn Handler>,
        accept: &mut AcceptFn,
    ) -> io::Result<()> {
        let Server {
            listener,
            options,
            shared,
            accept_wake,
            io_wake,
            slots,
            ..
        } = self;
        let (job_tx, job_rx) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (io_tx, io_rx) = mpsc::channel();

        let mut workers = Vec::new();
        for i in 0..options.workers.max(1) {
            let worker = Worker {
                jobs: Arc::clone(&job_rx),
                to_io: io_tx.clone(),
                shared: Arc::clone(&shared),
                handler: Arc::clone(&handler),
                limits: options.limits.clone(),
            };
            match thread::Builder::new()
                .name(format!("http-worker-{i}"))
                .spawn(move || worker.run())
            {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    // Dropping the job queue's sender makes the started workers exit.
                    drop(job_tx);
                    join_all(workers);
                    return Err(e);
                }
            }
        }
        let io_loop = IoLoop {
            inbox: io_rx,
            wake: io_wake,
            jobs: job_tx,
            shared: Arc::clone(&shared),
            limits: options.limits.clone(),
            tls: options.tls.clone(),
            slots: Arc::clone(&slots),
            bodies: Quota::new(options.limits.max_buffered_body_bytes),
            handler: Arc::clone(&handler),
        };
        let io_shared = Arc::clone(&shared);
        let io_thread = match thread::Builder::new()
            .name("http-io".to_owned())
            .spawn(move || {
                // If this thread ever dies, stop the whole server rather than accept
                // connections that nobody reads.
                let _stop = StopOnDrop(io_shared);
                io_loop.run();
            }) {
            Ok(handle) => handle,
            Err(e) => {
                join_all(workers);
                return Err(e);
            }
        };

        let peer_slots = PeerQuota::new(options.limits.max_connections_per_ip);
        accept_loop(
            &listener,
            &shared,
            &accept_wake,
            &io_tx,
            (&slots, &peer_slots),
            &*handler,
            accept,
        );
        // Refuse new connections from here on instead of leaving them in the backlog.
        drop(listener);
        drop(io_tx);
        let io_result = io_thread.join();
        join_all(workers);
        io_result.map_err(|_| io::Error::other("the HTTP I/O thread panicked"))
    }
}

struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

fn join_all(threads: Vec<thread::JoinHandle<()>>) {
    for t in threads {
        let _ = t.join();
    }
}

/// Accepts until shutdown. No error ends it: a failing accept is logged, and when the process
/// is out of file descriptors (or memory) it pauses briefly rather than spin.
fn accept_loop(
    listener: &TcpListener,
    shared: &Shared,
    wake: &WakeReceiver,
    io_tx: &mpsc::Sender<ToIo>,
    (slots, peer_slots): (&Arc<Quota>, &Arc<PeerQuota>),
    handler: &dyn Handler,
    accept: &mut AcceptFn,
) {
    while !shared.stopping() {
        let mut fds = [
            sys::want(listener.as_raw_fd(), sys::POLLIN),
            sys::want(wake.fd(), sys::POLLIN),
        ];
        if let Err(e) = sys::poll(&mut fds, None) {
            log::error!("poll on the listener failed: {e}");
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        if fds[1].revents != 0 {
            wake.drain();
        }
        while !shared.stopping() {
            match accept(listener) {
                Ok((stream, peer)) => {
                    // Dropping the stream closes it: refusals need no more than `continue`.
                    let Some(peer_slot) = peer_slots.take(peer.ip()) else {
                        log::debug!("{peer}: too many connections from this address; closing");
                        handler.connection_refused(ConnectionRefused::PerIpCap);
                        continue;
                    };
                    // When the cap is full, the I/O thread makes room by closing an idle
                    // connection (or closes this one if none is idle).
                    let slot = slots.take(1);
                    if let Err(e) = stream.set_nonblocking(true) {
                        log::debug!("{peer}: cannot make the socket non-blocking: {e}");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    if io_tx
                        .send(ToIo::New(stream, peer, peer_slot, slot))
                        .is_err()
                    {
                        return;
                    }
                    shared.wake_io();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    accept_failed(&e);
                    break;
                }
            }
        }
    }
}

fn accept_failed(e: &io::Error) {
    match e.raw_os_error() {
        // The connection is still queued, so accept would fail again at once: pause.
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            log::warn!("accept failed: {e}; pausing for 100 ms");
            thread::sleep(Duration::from_millis(100));
        }
        // The client gave up before we accepted it: nothing to do.
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM) => {
            log::debug!("accept failed: {e}");
        }
        _ => {
            log::warn!("accept failed: {e}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EdgeError, Request, Response};
    use std::io::{Read, Write};

    struct Ok200;

    impl Handler for Ok200 {
        fn handle(&self, _: &Request) -> Response {
            Response::json(200, b"{}".to_vec())
        }
        fn edge_error(&self, e: &EdgeError) -> Response {
            Response::json(e.status(), Vec::new())
        }
    }

    /// Every kind of accept failure is survived: the loop logs, pauses where needed, and
    /// goes on to accept the connection that was waiting all along.
    #[test]
    fn accept_errors_never_end_the_loop() {
        let server =
            Server::bind("127.0.0.1:0".parse().unwrap(), ServerOptions::default()).unwrap();
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let errors = Arc::new(Mutex::new(vec![
            libc::EMFILE,
            libc::ENFILE,
            libc::ECONNABORTED,
            libc::EPROTO,
            libc::EINTR,
            libc::EINVAL,
            libc::ENOBUFS,
        ]));
        let left = Arc::clone(&errors);
        let runner = thread::spawn(move || {
            let mut accept = |l: &TcpListener| match left.lock().unwrap().pop() {
                Some(code) => Err(io::Error::from_raw_os_error(code)),
                None => l.accept(),
            };
            server.run_with(Arc::new(Ok200), &mut accept)
        });
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(errors.lock().unwrap().is_empty());
        handle.shutdown();
        runner.join().unwrap().unwrap();
    }
}
