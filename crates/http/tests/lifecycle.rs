//! Connection cap and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use invited_http::{Server, ServerOptions};

/// With every connection in the middle of a request, nothing can make room: a new connection
/// is closed at once. Once they are idle again, a new connection takes the oldest one's place.
#[test]
fn connections_above_the_cap_are_closed_at_once_while_all_are_busy() {
    let mut limits = test_limits();
    limits.max_connections = 2;
    let (server, handler) = TestServer::start(options(limits));
    let (tx, started) = std::sync::mpsc::channel();
    *handler.started.lock().unwrap() = Some(tx);
    let mut a = server.connect();
    let mut b = server.connect();
    a.send(b"GET /sleep/600 HTTP/1.1\r\n\r\n");
    b.send(b"GET /sleep/1000 HTTP/1.1\r\n\r\n");
    for _ in 0..2 {
        started.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    let start = Instant::now();
    for _ in 0..3 {
        let mut extra = connect(server.addr);
        expect_eof(&mut extra);
    }
    assert!(start.elapsed() < Duration::from_millis(500));
    assert_eq!(a.response().status, 200);
    assert_eq!(b.response().status, 200);
    // A worker hands a connection back to the I/O thread just after writing its response.
    std::thread::sleep(Duration::from_millis(200));
    // Both idle now: a new connection is served, and `a`, idle longest, makes room for it.
    let mut c = server.connect();
    assert_eq!(c.request(b"GET /c HTTP/1.1\r\n\r\n").status, 200);
    let start = Instant::now();
    a.expect_closed();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "not closed at once"
    );
    assert_eq!(b.request(b"GET /b2 HTTP/1.1\r\n\r\n").status, 200);
}

#[test]
fn shutdown_finishes_in_flight_requests_and_closes_idle_connections() {
    let (server, handler) = TestServer::start(options(test_limits()));
    let (tx, started) = std::sync::mpsc::channel();
    *handler.started.lock().unwrap() = Some(tx);

    let mut idle = server.connect();
    assert_eq!(idle.request(b"GET /first HTTP/1.1\r\n\r\n").status, 200);
    assert_eq!(started.recv().unwrap(), "/first");
    let mut partial = server.connect();
    partial.send(b"GET /never-finished HTTP/1.1\r\nX: ");

    let mut busy = server.connect();
    busy.send(b"GET /sleep/600 HTTP/1.1\r\n\r\n");
    assert_eq!(started.recv().unwrap(), "/sleep/600");

    let addr = server.addr;
    let start = Instant::now();
    server.stop().unwrap();
    // run() returned only after the in-flight handler finished...
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert!(start.elapsed() < Duration::from_secs(3));
    // ...and its response was written, announcing the close.
    let r = busy.response();
    assert_eq!(r.status, 200);
    assert!(r.closes());
    busy.expect_closed();
    idle.expect_closed();
    partial.expect_closed();
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2);
    // Nothing listens any more.
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn shutdown_before_run_returns_at_once() {
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), ServerOptions::default()).unwrap();
    let handle = server.shutdown_handle();
    handle.shutdown();
    handle.clone().shutdown();
    let start = Instant::now();
    server.run(Arc::new(TestHandler::default())).unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn from_listener_serves_on_a_given_socket() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::from_listener(listener, options(test_limits())).unwrap();
    assert_eq!(server.local_addr(), addr);
    let handle = server.shutdown_handle();
    let t = std::thread::spawn(move || server.run(Arc::new(TestHandler::default())));
    let mut c = Client::new(connect(addr));
    assert_eq!(c.request(b"GET / HTTP/1.1\r\n\r\n").status, 200);
    handle.shutdown();
    t.join().unwrap().unwrap();
}
