//! Every refusal of the edge, over real TCP: the status, `Connection: close`, the connection
//! actually closing, and that nothing after a refused request is ever answered.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use invited_http::EdgeError;

/// Sends `raw` on a fresh connection, expects `status` from `edge_error`, then a close.
fn refused(server: &TestServer, raw: &[u8], status: u16) {
    let mut c = server.connect();
    // The refused request may be followed by bytes the server never reads: ignore write errors.
    let _ = c.stream.write_all(raw);
    let r = c.response();
    assert_eq!(
        (r.status, r.text()),
        (status, format!("edge {status}")),
        "for {:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(200)])
    );
    assert!(r.closes(), "refusals close the connection");
    c.expect_closed();
}

#[test]
fn oversized_heads_get_431() {
    let (server, handler) = TestServer::start(options(test_limits()));
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(5000));
    refused(&server, big.as_bytes(), 431);
    let many = "GET / HTTP/1.1\r\n".to_owned() + &"X: y\r\n".repeat(17) + "\r\n";
    refused(&server, many.as_bytes(), 431);
    let ok = "GET / HTTP/1.1\r\n".to_owned() + &"X: y\r\n".repeat(16) + "\r\n";
    assert_eq!(server.request(ok.as_bytes()).status, 200);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_64_mib_header_line_is_refused_without_buffering_it() {
    let (server, handler) = TestServer::start(options(test_limits()));
    let mut c = server.connect();
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut sent = 0usize;
        let chunk = vec![b'a'; 64 * 1024];
        if writer.write_all(b"GET / HTTP/1.1\r\nX-Huge: ").is_err() {
            return sent;
        }
        while sent < 64 * 1024 * 1024 {
            match writer.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    let started = Instant::now();
    let r = c.response();
    assert_eq!(r.status, 431);
    assert!(started.elapsed() < Duration::from_secs(3));
    c.expect_closed();
    let sent = sender.join().unwrap();
    // The server stopped reading at the limit and hung up: the client could not push it all.
    assert!(sent < 64 * 1024 * 1024, "all 64 MiB were accepted");
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
    assert_eq!(server.request(b"GET / HTTP/1.1\r\n\r\n").status, 200);
}

#[test]
fn long_target_gets_414() {
    let (server, _) = TestServer::start(options(test_limits()));
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(1100));
    refused(&server, long.as_bytes(), 414);
    // Noticed before the head ends, and before the head limit.
    let endless = format!("GET /{}", "a".repeat(3000));
    refused(&server, endless.as_bytes(), 414);
}

#[test]
fn other_http_versions_get_505() {
    let (server, _) = TestServer::start(options(test_limits()));
    refused(&server, b"GET / HTTP/2.0\r\n\r\n", 505);
    refused(&server, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505);
    refused(&server, b"GET / HTTP/0.9\r\n\r\n", 505);
}

#[test]
fn malformed_requests_get_400() {
    let (server, handler) = TestServer::start(options(test_limits()));
    for raw in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
        b"G\x00T / HTTP/1.1\r\n\r\n",
        b"GET / FOO/1.1\r\n\r\n",
        // obs-fold
        b"GET / HTTP/1.1\r\nX: a\r\n  folded\r\n\r\n",
        // bare LF and bare CR
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        refused(&server, raw, 400);
    }
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
    assert!(
        handler
            .edge_errors
            .lock()
            .unwrap()
            .iter()
            .all(|e| matches!(e, EdgeError::BadRequest(_)))
    );
}

#[test]
fn any_transfer_encoding_gets_411() {
    let (server, _) = TestServer::start(options(test_limits()));
    refused(
        &server,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        411,
    );
    refused(
        &server,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
        411,
    );
}

#[test]
fn bad_or_duplicate_content_length_gets_400() {
    let (server, _) = TestServer::start(options(test_limits()));
    for value in [
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5\r\ncontent-length: 7",
        "Content-Length: 5, 5",
        "Content-Length: +5",
        "Content-Length: -1",
        "Content-Length: 0x5",
        "Content-Length: five",
        "Content-Length: 200000000000000000000",
    ] {
        let raw = format!("PUT / HTTP/1.1\r\n{value}\r\n\r\nhello");
        refused(&server, raw.as_bytes(), 400);
    }
}

#[test]
fn oversized_body_gets_413_without_reading_it() {
    let (server, handler) = TestServer::start(options(test_limits()));
    let started = Instant::now();
    refused(
        &server,
        b"PUT / HTTP/1.1\r\nContent-Length: 200000000000\r\n\r\nsome body bytes",
        413,
    );
    refused(
        &server,
        format!(
            "PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            64 * 1024 + 1
        )
        .as_bytes(),
        413,
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        handler.edge_errors.lock().unwrap()[0],
        EdgeError::PayloadTooLarge { limit: 64 * 1024 }
    );
    // The body at the limit is read in full.
    let body = vec![b'b'; 64 * 1024];
    let mut raw = format!(
        "PUT /max HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let r = server.request(&raw);
    assert!(r.text().starts_with("PUT /max len=65536 has_body=true"));
}

#[test]
fn body_is_read_exactly_and_the_rest_is_the_next_request() {
    let (server, handler) = TestServer::start(options(test_limits()));
    let mut c = server.connect();
    c.send(b"PUT /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n");
    assert_eq!(
        c.response().text(),
        "PUT /a len=5 has_body=true tls=false body=hello"
    );
    assert_eq!(c.response().text(), "GET /b len=0 has_body=false tls=false");
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn smuggling_shapes_never_desynchronise() {
    let (server, handler) = TestServer::start(options(test_limits()));
    // Each hides a second request that a confused parser would answer.
    let smuggled = [
        (
            &b"POST / HTTP/1.1\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"[..],
            411,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            411,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 26\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nX: y\r\n Content-Length: 26\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nX: y\nContent-Length: 26\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length : 26\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            400,
        ),
    ];
    for (raw, status) in smuggled {
        refused(&server, raw, status);
    }
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        0,
        "nothing reached the handler"
    );
}

#[test]
fn refusal_after_good_pipelined_requests() {
    let (server, handler) = TestServer::start(options(test_limits()));
    let mut c = server.connect();
    c.send(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/2.0\r\n\r\nGET /4 HTTP/1.1\r\n\r\n");
    assert_eq!(c.response().text(), "GET /1 len=0 has_body=false tls=false");
    assert_eq!(c.response().text(), "GET /2 len=0 has_body=false tls=false");
    let r = c.response();
    assert_eq!(r.status, 505);
    assert!(r.closes());
    c.expect_closed();
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2);
}
