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

#[test]
fn connections_above_the_cap_are_closed_at_once() {
    let mut limits = test_limits();
    limits.max_connections = 2;
    let (server, _) = TestServer::start(options(limits));
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.request(b"GET /a HTTP/1.1\r\n\r\n").status, 200);
    assert_eq!(b.request(b"GET /b HTTP/1.1\r\n\r\n").status, 200);
    for _ in 0..3 {
        let mut extra = connect(server.addr);
        let start = Instant::now();
        expect_eof(&mut extra);
        assert!(start.elapsed() < Duration::from_secs(1));
    }
    // The two admitted connections still work.
    assert_eq!(a.request(b"GET /a2 HTTP/1.1\r\n\r\n").status, 200);
    // Once one goes away its slot is free again.
    drop(b);
    assert!(eventually(Duration::from_secs(3), || {
        let mut c = server.connect();
        c.send(b"GET /c HTTP/1.1\r\n\r\n");
        c.try_response().is_ok_and(|r| r.status == 200)
    }));
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
