//! The budget for buffered request bodies: many clients declaring large bodies get 503 once it
//! is spent, memory stays bounded whatever they declare and send, and requests without a body
//! are served meanwhile. Its own test binary, because it measures the process's memory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use invited_http::{EdgeError, Limits};

const MIB: usize = 1024 * 1024;

/// Resident memory of this process (the server runs in it), in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn large_declared_bodies_get_503_once_the_budget_is_spent() {
    const CLIENTS: usize = 64;
    let (server, handler) = TestServer::start(options(Limits {
        max_connections: 256,
        max_connections_per_ip: 256,
        max_body_bytes: MIB,
        max_buffered_body_bytes: 4 * MIB,
        request_timeout: Duration::from_secs(20),
        ..test_limits()
    }));
    let body = vec![b'x'; MIB];
    let before = rss();

    // 64 clients declare 1 MiB each: 64 MiB, where the budget is 4 MiB.
    let head = format!("PUT /upload HTTP/1.1\r\nContent-Length: {MIB}\r\n\r\n");
    let mut clients: Vec<Client<TcpStream>> = (0..CLIENTS)
        .map(|_| {
            let mut c = server.connect();
            c.stream
                .set_write_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            c.send(head.as_bytes());
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut admitted = Vec::new();
    for (i, mut c) in clients.drain(..).enumerate() {
        c.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match c.try_response() {
            Ok(r) => {
                // Refused before its body was read, with a hint to come back.
                assert_eq!(r.status, 503, "client {i}: {}", r.text());
                assert_eq!(r.header("retry-after"), Some("1"), "client {i}");
                assert!(r.closes(), "client {i}");
                // Whatever it sends now is thrown away, and the connection closes.
                let _ = c.stream.write_all(&body);
                c.stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                c.expect_closed();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                admitted.push(c);
            }
            Err(e) => panic!("client {i}: {e}"),
        }
    }
    assert_eq!(admitted.len(), 4, "the budget holds four 1 MiB bodies");
    let refused = handler.edge_errors.lock().unwrap().clone();
    assert_eq!(refused.len(), CLIENTS - 4);
    assert!(refused.iter().all(|e| *e == EdgeError::Overloaded));

    // The admitted ones send all of their bodies but the last byte: the server holds them.
    for c in &mut admitted {
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        c.send(&body[..MIB - 1]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let grown = rss().saturating_sub(before);
    eprintln!("RSS grew by {} KiB for 64 declared MiB", grown / 1024);
    assert!(grown < 16 * MIB, "RSS grew by {grown} bytes");

    // A request without a body is served while the budget is spent...
    assert_eq!(
        server.request(b"GET /meanwhile HTTP/1.1\r\n\r\n").status,
        200
    );
    // ...and once the held bodies are complete and answered, the budget is free again.
    for c in &mut admitted {
        c.send(b"x");
        let r = c.response();
        assert_eq!(r.status, 200);
        assert!(
            r.text()
                .starts_with("PUT /upload len=1048576 has_body=true")
        );
    }
    let mut c = server.connect();
    c.send(head.as_bytes());
    c.send(&body);
    assert_eq!(c.response().status, 200);
}
