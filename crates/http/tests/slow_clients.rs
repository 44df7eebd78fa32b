//! Slow clients must not pin workers: 300 connections trickling one header byte per second
//! leave a two-worker server answering a normal request at once. Its own test binary, so the
//! 600 sockets do not compete with other tests' file descriptors.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use invited_http::{Limits, ServerOptions};

#[test]
fn three_hundred_trickling_clients_do_not_delay_a_normal_request() {
    let (server, handler) = TestServer::start(ServerOptions {
        workers: 2,
        limits: Limits {
            max_connections: 1024,
            // All 300 come from 127.0.0.1.
            max_connections_per_ip: 1024,
            request_timeout: Duration::from_secs(30),
            ..test_limits()
        },
        tls: None,
    });
    let mut slow: Vec<TcpStream> = (0..300).map(|_| connect(server.addr)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_trickle = stop.clone();
    let trickler = std::thread::spawn(move || {
        let head = b"GET /slow HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut i = 0;
        while !stop_trickle.load(Ordering::SeqCst) && i < head.len() {
            for s in &mut slow {
                s.write_all(&head[i..i + 1]).unwrap();
            }
            i += 1;
            // One byte per connection per second, checking often for the stop flag.
            for _ in 0..10 {
                if stop_trickle.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        slow
    });
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..5 {
        let start = Instant::now();
        let r = server.request(format!("GET /fast/{i} HTTP/1.1\r\n\r\n").as_bytes());
        let elapsed = start.elapsed();
        assert_eq!(r.status, 200);
        assert!(
            elapsed < Duration::from_secs(1),
            "request {i} took {elapsed:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    let slow = trickler.join().unwrap();
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        5,
        "no slow request was complete"
    );
    // Shutdown closes the 300 half-read connections and returns promptly.
    let start = Instant::now();
    server.stop().unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(slow);
}
