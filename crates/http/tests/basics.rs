//! Requests, keep-alive, pipelining and handler panics over real loopback TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use invited_http::{EdgeError, Handler, Request, Response, ServerOptions};

#[test]
fn get_and_put_reach_the_handler() {
    let (server, _) = TestServer::start(options(test_limits()));
    let r = server.request(b"GET /a/b?c=d%20e HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "GET /a/b?c=d%20e len=0 has_body=false tls=false");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = server.request(b"PUT /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.text(), "PUT /p len=5 has_body=true tls=false body=hello");
    let r = server.request(b"POST /p HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.text(), "POST /p len=0 has_body=true tls=false");
    // Methods are not the edge's business (the application answers HEAD with 405), but a
    // response to HEAD must carry no body: its bytes would be read as the next response. The
    // Content-Length still says how long the body would have been.
    let mut raw = std::net::TcpStream::connect(server.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    use std::io::{Read, Write};
    raw.write_all(b"HEAD /h HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    raw.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    let expected = "HEAD /h len=0 has_body=false tls=false";
    let (head_response, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head_response.contains(&format!("Content-Length: {}", expected.len())),
        "{text}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200"),
        "the next response follows at once: {text}"
    );
    assert!(!text.contains(expected), "no body for HEAD: {text}");
    assert!(text.contains("GET /after"), "{text}");
}

#[test]
fn ureq_client_works() {
    let (server, _) = TestServer::start(options(test_limits()));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let base = format!("http://{}", server.addr);
    for i in 0..3 {
        let body = agent
            .get(format!("{base}/x/{i}"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        assert_eq!(body, format!("GET /x/{i} len=0 has_body=false tls=false"));
    }
    let body = agent
        .put(format!("{base}/put"))
        .send("payload")
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert_eq!(body, "PUT /put len=7 has_body=true tls=false body=payload");
}

#[test]
fn http11_keeps_the_connection_open() {
    let (server, handler) = TestServer::start(options(test_limits()));
    let mut c = server.connect();
    for i in 0..5 {
        let r = c.request(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.text(), format!("GET /{i} len=0 has_body=false tls=false"));
        assert_eq!(r.header("connection"), None);
    }
    assert_eq!(handler.calls.load(Ordering::SeqCst), 5);
    let r = c.request(b"GET /last HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(r.closes());
    c.expect_closed();
}

#[test]
fn http10_closes_unless_asked_to_keep_alive() {
    let (server, _) = TestServer::start(options(test_limits()));
    let mut c = server.connect();
    let r = c.request(b"GET /a HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.closes());
    c.expect_closed();

    let mut c = server.connect();
    for _ in 0..2 {
        let r = c.request(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    let r = c.request(b"GET /c HTTP/1.0\r\n\r\n");
    assert!(r.closes());
    c.expect_closed();
}

#[test]
fn requests_per_connection_are_capped() {
    let mut limits = test_limits();
    limits.max_requests_per_connection = 3;
    let (server, _) = TestServer::start(options(limits));
    let mut c = server.connect();
    assert!(!c.request(b"GET /1 HTTP/1.1\r\n\r\n").closes());
    assert!(!c.request(b"GET /2 HTTP/1.1\r\n\r\n").closes());
    assert!(c.request(b"GET /3 HTTP/1.1\r\n\r\n").closes());
    c.expect_closed();
}

#[test]
fn pipelined_requests_are_answered_in_order_exactly_once() {
    let (server, handler) = TestServer::start(options(test_limits()));
    let mut c = server.connect();
    let mut batch = Vec::new();
    for i in 0..20 {
        if i % 3 == 0 {
            batch.extend_from_slice(
                format!("PUT /{i} HTTP/1.1\r\nContent-Length: 4\r\n\r\nb{i:03}").as_bytes(),
            );
        } else {
            batch.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        }
    }
    c.send(&batch);
    for i in 0..20 {
        let r = c.response();
        let expected = if i % 3 == 0 {
            format!("PUT /{i} len=4 has_body=true tls=false body=b{i:03}")
        } else {
            format!("GET /{i} len=0 has_body=false tls=false")
        };
        assert_eq!(r.text(), expected);
    }
    assert_eq!(handler.calls.load(Ordering::SeqCst), 20);
    // Nothing more arrives: no request was answered twice.
    c.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    let err = c.stream.read(&mut b).unwrap_err();
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
}

#[test]
fn pipelined_request_split_across_writes() {
    let (server, _) = TestServer::start(options(test_limits()));
    let mut c = server.connect();
    let all = b"PUT /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.1\r\n\r\n";
    for chunk in all.chunks(7) {
        c.send(chunk);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        c.response().text(),
        "PUT /x len=3 has_body=true tls=false body=abc"
    );
    assert_eq!(c.response().text(), "GET /y len=0 has_body=false tls=false");
}

#[test]
fn handler_panic_is_a_500_for_that_request_only() {
    let (server, handler) = TestServer::start(ServerOptions {
        workers: 1,
        ..options(test_limits())
    });
    let mut c = server.connect();
    for _ in 0..3 {
        let r = c.request(b"GET /panic HTTP/1.1\r\n\r\n");
        assert_eq!((r.status, r.text().as_str()), (500, "edge 500"));
        // Same connection, same (only) worker: still serving.
        assert_eq!(c.request(b"GET /ok HTTP/1.1\r\n\r\n").status, 200);
    }
    assert_eq!(server.request(b"GET /new HTTP/1.1\r\n\r\n").status, 200);
    assert!(
        handler
            .edge_errors
            .lock()
            .unwrap()
            .iter()
            .all(|e| *e == EdgeError::HandlerPanicked)
    );
}

/// A handler whose error page panics too still gets its client a well-framed answer.
struct PanickyEverywhere;

impl Handler for PanickyEverywhere {
    fn handle(&self, _: &Request) -> Response {
        panic!("handle panics");
    }
    fn edge_error(&self, _: &EdgeError) -> Response {
        panic!("edge_error panics");
    }
}

#[test]
fn edge_error_panic_falls_back_to_plain_text() {
    let server = TestServer::start_with(
        ServerOptions {
            workers: 1,
            ..options(test_limits())
        },
        Arc::new(PanickyEverywhere),
    );
    let r = server.request(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 500);
    let r = server.request(b"GET / HTTP/9.9\r\n\r\n");
    assert_eq!(r.status, 505);
    assert!(r.closes());
}
