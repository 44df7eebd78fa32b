//! A hostile federation: every resource an unauthenticated peer can reach is bounded. One
//! address cannot take every connection; a full server makes room by closing the connection
//! idle longest.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking
#![allow(unsafe_code)] // socket(2) and bind(2), to connect from another loopback address

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use common::*;
use invited_http::{ConnectionRefused, Limits};

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A connection to `addr` from the local address `from` (say 127.0.0.2: all of 127.0.0.0/8 is
/// loopback), so that one test can be several peers.
fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(to) = addr else {
        panic!("IPv4 only: {addr}")
    };
    // SAFETY: socket(2) returns a new descriptor that we own from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` is a valid socket nobody else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sockaddr(SocketAddrV4::new(from, 0));
    // SAFETY: a valid sockaddr_in of the size given, on a socket we own.
    let rc = unsafe { libc::bind(stream.as_raw_fd(), (&raw const local).cast(), len) };
    assert_eq!(rc, 0, "bind {from}: {}", std::io::Error::last_os_error());
    let remote = sockaddr(to);
    // SAFETY: as above.
    let rc = unsafe { libc::connect(stream.as_raw_fd(), (&raw const remote).cast(), len) };
    assert_eq!(rc, 0, "connect {to}: {}", std::io::Error::last_os_error());
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// One keep-alive request from `from`, on a new connection that is returned still open.
fn served_from(from: Ipv4Addr, addr: SocketAddr) -> Client<TcpStream> {
    let mut c = Client::new(connect_from(from, addr));
    let r = c.request(b"GET /hello HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200, "{from}");
    c
}

/// The server has closed `c` already (not at its keep-alive deadline, 5 s away).
fn closed_at_once(c: &mut Client<TcpStream>) {
    let start = Instant::now();
    c.expect_closed();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        start.elapsed()
    );
}

#[test]
fn one_address_cannot_take_every_connection() {
    let (server, handler) = TestServer::start(options(Limits {
        max_connections: 64,
        max_connections_per_ip: 4,
        ..test_limits()
    }));
    let home = Ipv4Addr::new(127, 0, 0, 1);
    let mut mine: Vec<_> = (0..4).map(|_| served_from(home, server.addr)).collect();
    // Over its cap, a connection from the same address is closed at once, unanswered.
    for _ in 0..3 {
        let mut extra = connect_from(home, server.addr);
        let start = Instant::now();
        expect_eof(&mut extra);
        assert!(start.elapsed() < Duration::from_secs(1));
    }
    // Each was told to the handler, which answers none of them.
    assert_eq!(
        *handler.refused.lock().unwrap(),
        [ConnectionRefused::PerIpCap; 3]
    );
    assert_eq!(server.connections.open(), 4);
    // Another address is served meanwhile, and so are the first four.
    let mut other = served_from(Ipv4Addr::new(127, 0, 0, 2), server.addr);
    for c in &mut mine {
        assert_eq!(c.request(b"GET /again HTTP/1.1\r\n\r\n").status, 200);
    }
    assert_eq!(other.request(b"GET /again HTTP/1.1\r\n\r\n").status, 200);
    // A closed connection gives its address's slot back.
    drop(mine.pop());
    assert!(eventually(Duration::from_secs(3), || {
        let mut c = Client::new(connect_from(home, server.addr));
        c.send(b"GET /back HTTP/1.1\r\n\r\n");
        c.try_response().is_ok_and(|r| r.status == 200)
    }));
}

#[test]
fn a_full_server_closes_its_oldest_idle_connection_for_a_new_one() {
    let (server, _) = TestServer::start(options(Limits {
        max_connections: 6,
        ..test_limits()
    }));
    // The oldest connection is in the middle of a request: it is never the one closed.
    let mut busy = server.connect();
    busy.send(b"GET /busy HTTP/1.1\r\nX-Half: ");
    let mut idle: Vec<_> = (0..5)
        .map(|i| {
            let mut c = server.connect();
            assert_eq!(
                c.request(format!("GET /{i} HTTP/1.1\r\n\r\n").as_bytes())
                    .status,
                200
            );
            std::thread::sleep(Duration::from_millis(20));
            c
        })
        .collect();
    // The cap is full. A new client is served, in place of the connection idle longest...
    let mut new = server.connect();
    assert_eq!(new.request(b"GET /new HTTP/1.1\r\n\r\n").status, 200);
    closed_at_once(&mut idle[0]);
    // ...and so is the next one, in place of the next.
    let mut next = server.connect();
    assert_eq!(next.request(b"GET /next HTTP/1.1\r\n\r\n").status, 200);
    closed_at_once(&mut idle[1]);
    // The others are still open, the half-sent request included.
    busy.send(b"1\r\n\r\n");
    assert_eq!(busy.response().status, 200);
    for c in &mut idle[2..] {
        assert_eq!(c.request(b"GET /again HTTP/1.1\r\n\r\n").status, 200);
    }
    assert_eq!(new.request(b"GET /again HTTP/1.1\r\n\r\n").status, 200);
}

/// When every connection is in the middle of a request, a new one is closed at once, the
/// handler is told, and the open count stays at the cap.
#[test]
fn a_full_server_of_busy_connections_closes_a_new_one() {
    let (server, handler) = TestServer::start(options(Limits {
        max_connections: 2,
        ..test_limits()
    }));
    assert_eq!(server.connections.open(), 0);
    let mut busy: Vec<_> = (0..2)
        .map(|_| {
            let mut c = server.connect();
            c.send(b"GET /busy HTTP/1.1\r\nX-Half: ");
            c
        })
        .collect();
    assert!(eventually(Duration::from_secs(3), || server
        .connections
        .open()
        == 2));
    let mut extra = server.connect();
    let start = Instant::now();
    expect_eof(&mut extra.stream);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(
        *handler.refused.lock().unwrap(),
        [ConnectionRefused::ConnectionCap]
    );
    assert_eq!(server.connections.open(), 2);
    for c in &mut busy {
        c.send(b"1\r\nConnection: close\r\n\r\n");
        assert_eq!(c.response().status, 200);
    }
    drop(busy);
    assert!(eventually(Duration::from_secs(3), || server
        .connections
        .open()
        == 0));
}

/// After its TLS handshake, a client has `first_byte_timeout` to start its request, far less
/// than the handshake, request and keep-alive deadlines (5 s here).
#[test]
fn a_silent_client_after_the_tls_handshake_is_closed_at_the_first_byte_deadline() {
    let pki = pki();
    let (server, handler) = TestServer::start(pki.server_options(Limits {
        first_byte_timeout: Duration::from_millis(500),
        ..test_limits()
    }));
    let mut c = pki.connect(server.addr);
    let tls = &mut c.stream;
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let start = Instant::now();
    // Session tickets may arrive; then the server hangs up, with no response.
    let mut got = Vec::new();
    let end = std::io::Read::read_to_end(tls, &mut got);
    let elapsed = start.elapsed();
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // EOF, or rustls' complaint that it came without close_notify; not our read timeout.
    if let Err(e) = &end {
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(1500),
        "closed {elapsed:?} after the handshake"
    );
    assert_eq!(handler.calls.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A client that speaks at once is served as usual.
    let mut c = pki.connect(server.addr);
    assert_eq!(c.request(b"GET / HTTP/1.1\r\n\r\n").status, 200);
}

/// A burst of TLS clients all sending their ClientHello at once costs the I/O thread a key
/// exchange and a signature each; an established client is served between them, not after.
#[test]
fn a_burst_of_tls_handshakes_does_not_hold_up_an_established_client() {
    const BURST: usize = 200;
    let pki = pki();
    let (server, _) = TestServer::start(pki.server_options(Limits {
        max_connections: 1024,
        max_connections_per_ip: 1024,
        ..test_limits()
    }));
    let mut established = pki.connect(server.addr);
    assert_eq!(established.request(b"GET / HTTP/1.1\r\n\r\n").status, 200);
    let hellos: Vec<Vec<u8>> = (0..BURST)
        .map(|_| {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut c = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
            let mut hello = Vec::new();
            c.write_tls(&mut hello).unwrap();
            hello
        })
        .collect();
    let mut burst: Vec<TcpStream> = (0..BURST).map(|_| connect(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    for (s, hello) in burst.iter_mut().zip(&hellos) {
        s.write_all(hello).unwrap();
    }
    let start = Instant::now();
    assert_eq!(established.request(b"GET / HTTP/1.1\r\n\r\n").status, 200);
    let took = start.elapsed();
    eprintln!("answered {took:?} into a burst of {BURST} ClientHellos");
    // Served at most 8 handshakes after its request arrived: some 10 ms here. Had the I/O
    // thread done all 200 first, it would be some 250 ms in a debug build.
    assert!(took < Duration::from_millis(150), "answered after {took:?}");
    // The burst is served too: every client gets its ServerHello.
    for (i, s) in burst.iter_mut().enumerate() {
        let mut first = [0u8; 1];
        s.read_exact(&mut first).unwrap();
        assert_eq!(first[0], 0x16, "client {i}: a handshake record");
    }
}
