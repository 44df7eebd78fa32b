//! Deadlines: per request (not extended by trickling), idle keep-alive, silent connections and
//! writes to a client that does not read.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use invited_http::{Limits, ServerOptions};

fn limits() -> Limits {
    Limits {
        request_timeout: Duration::from_millis(800),
        keep_alive_timeout: Duration::from_millis(600),
        first_byte_timeout: Duration::from_millis(600),
        write_timeout: Duration::from_millis(500),
        ..test_limits()
    }
}

/// Writes `bytes` one every 100 ms until the response arrives; returns it and how long it took.
fn trickle_until_answer(c: &mut Client<std::net::TcpStream>, bytes: &[u8]) -> (Resp, Duration) {
    let mut writer = c.stream.try_clone().unwrap();
    let bytes = bytes.to_vec();
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let start = Instant::now();
    let trickler = std::thread::spawn(move || {
        for b in bytes {
            if stop.load(Ordering::SeqCst) || writer.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let r = c.response();
    let elapsed = start.elapsed();
    done.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    (r, elapsed)
}

#[test]
fn trickled_head_gets_408_at_the_request_deadline() {
    let (server, handler) = TestServer::start(options(limits()));
    let mut c = server.connect();
    // 40 bytes at 10 per second would take 4 s; the deadline is 0.8 s after the first byte.
    let (r, elapsed) =
        trickle_until_answer(&mut c, b"GET /slow HTTP/1.1\r\nX-Slow: aaaaaaaaaa\r\n\r\n");
    assert_eq!(r.status, 408);
    assert!(r.closes());
    assert!(
        elapsed >= Duration::from_millis(700) && elapsed < Duration::from_millis(1500),
        "answered after {elapsed:?}"
    );
    c.expect_closed();
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn trickled_body_gets_408_at_the_request_deadline() {
    let (server, _) = TestServer::start(options(limits()));
    let mut c = server.connect();
    c.send(b"PUT / HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
    let (r, elapsed) = trickle_until_answer(&mut c, &[b'x'; 50]);
    assert_eq!(r.status, 408);
    assert!(
        elapsed >= Duration::from_millis(700) && elapsed < Duration::from_millis(1500),
        "answered after {elapsed:?}"
    );
    c.expect_closed();
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let (server, _) = TestServer::start(options(limits()));
    let mut c = server.connect();
    assert_eq!(c.request(b"GET / HTTP/1.1\r\n\r\n").status, 200);
    let start = Instant::now();
    c.expect_closed();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(1500),
        "closed after {elapsed:?}"
    );
}

#[test]
fn silent_connection_is_closed_without_a_response() {
    let (server, _) = TestServer::start(options(limits()));
    let mut s = connect(server.addr);
    let start = Instant::now();
    expect_eof(&mut s);
    // first_byte_timeout, counted from accept.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(1500),
        "closed after {elapsed:?}"
    );
}

#[test]
fn a_client_that_does_not_read_holds_a_worker_only_until_the_write_deadline() {
    let (server, _) = TestServer::start(ServerOptions {
        workers: 1,
        ..options(limits())
    });
    let mut stuck = server.connect();
    // Far more than loopback socket buffers hold; the client never reads it.
    stuck.send(b"GET /big/67108864 HTTP/1.1\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let r = server.request(b"GET /next HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "answered after {elapsed:?}"
    );
    drop(stuck);
}

/// A request that waited longer than `max_queue_wait` for a worker is answered 503 with
/// `Retry-After` without reaching the handler; its client has likely given up already.
#[test]
fn a_request_that_waited_too_long_for_a_worker_gets_503() {
    let (server, _handler) = TestServer::start(ServerOptions {
        workers: 1,
        ..options(Limits {
            max_queue_wait: Duration::from_millis(300),
            ..test_limits()
        })
    });
    let mut slow = server.connect();
    slow.send(b"GET /sleep/1000 HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let mut queued = server.connect();
    let started = Instant::now();
    let late = queued.request(b"GET /sleep/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(late.status, 503, "{}", late.text());
    assert_eq!(late.header("retry-after"), Some("1"));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(slow.response().status, 200);
    // Once the worker is free, requests are served again.
    let fresh = server.request(b"GET /sleep/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(fresh.status, 200);
}
