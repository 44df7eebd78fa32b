//! Attacks on the HTTP edge, against the real `invited` binary over real sockets: the attack set
//! of DEPENDENCIES.md ("Why not tiny_http" and "What our edge must do").
//!
//! Every test checks the documented status code, that the answer is a Matrix error
//! (`Content-Type: application/json`, `{"errcode": "M_…", "error": "…"}`) where an answer is
//! expected, and that afterwards the process is still alive and a normal
//! `GET /_matrix/federation/v1/version` gets 200.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const VERSION_PATH: &str = "/_matrix/federation/v1/version";
const MIB: usize = 1024 * 1024;
/// How long a read blocks before looking at the clock again.
const TICK: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// Harness: a server with its temporary directory, raw connections, response parsing.

/// A running server and the temporary directory it lives in (removed after the server stops).
struct Srv {
    server: Invited,
    _dir: tempfile::TempDir,
}

impl Deref for Srv {
    type Target = Invited;
    fn deref(&self) -> &Invited {
        &self.server
    }
}

impl DerefMut for Srv {
    fn deref_mut(&mut self) -> &mut Invited {
        &mut self.server
    }
}

/// Starts plain-HTTP `invited` with `extra` TOML appended to the harness config.
fn start(extra: &str) -> Srv {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "invited.test", extra);
    let server = Invited::start(&config);
    assert!(!server.tls);
    Srv { server, _dir: dir }
}

/// Starts HTTPS `invited` with a certificate for `localhost` from a fresh test CA.
fn start_tls(extra: &str) -> (Srv, TestCa) {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let config = write_config(
        dir.path(),
        "invited.test",
        &format!("{extra}\n[tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n"),
    );
    let server = Invited::start(&config);
    assert!(server.tls);
    (Srv { server, _dir: dir }, ca)
}

/// A normal request that asks for the connection to be closed after it.
fn version_request_close() -> Vec<u8> {
    format!("GET {VERSION_PATH} HTTP/1.1\r\nHost: invited.test\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// A connection whose reads come back every [`TICK`] (so loops can watch a deadline).
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TICK)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// How a connection ended, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server closed it (FIN, or TLS close_notify).
    Closed,
    /// The server reset it.
    Reset,
    /// Still open at the deadline.
    TimedOut,
}

/// Reads until the server closes or `deadline` passes. Reads must time out within about
/// [`TICK`] (see [`connect`]).
fn drain(r: &mut impl Read, deadline: Instant) -> (Vec<u8>, End) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if Instant::now() >= deadline {
            return (out, End::TimedOut);
        }
        match r.read(&mut buf) {
            Ok(0) => return (out, End::Closed),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (out, End::Closed),
            Err(_) => return (out, End::Reset),
        }
    }
}

/// Sends `bytes` on a new connection and reads until the server closes (at most 5 s).
/// Returns what was read, how it ended, and the time from the write to the end.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, End, Duration) {
    let mut s = connect(addr);
    let t = Instant::now();
    // The server may refuse (and close) before it has read everything: ignore write errors.
    let _ = s.write_all(bytes);
    let (raw, end) = drain(&mut s, t + Duration::from_secs(5));
    (raw, end, t.elapsed())
}

/// One HTTP response as received.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits `raw` into the complete responses at its start, framed by `Content-Length` (which
/// the edge puts on every response; checked here). Returns them and the bytes after them.
fn parse_responses(raw: &[u8]) -> (Vec<Resp>, Vec<u8>) {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(end) = find(rest, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "not an HTTP/1.1 status line: {status_line:?} in {:?}",
                    String::from_utf8_lossy(raw)
                )
            });
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("malformed response header line {l:?}"));
                (n.to_owned(), v.trim().to_owned())
            })
            .collect();
        let lengths: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(
            lengths.len(),
            1,
            "every response carries exactly one Content-Length: {head:?}"
        );
        let len: usize = lengths[0].parse().unwrap();
        let start = end + 4;
        if rest.len() < start + len {
            break;
        }
        out.push(Resp {
            status,
            headers,
            body: rest[start..start + len].to_vec(),
        });
        rest = &rest[start + len..];
    }
    (out, rest.to_vec())
}

/// Reads until at least `n` whole responses are in (the connection may stay open).
fn read_responses(s: &mut impl Read, n: usize, timeout: Duration) -> Vec<Resp> {
    let deadline = Instant::now() + timeout;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let (rs, _) = parse_responses(&raw);
        if rs.len() >= n {
            return rs;
        }
        let got = || format!("{} of {n}: {:?}", rs.len(), String::from_utf8_lossy(&raw));
        assert!(Instant::now() < deadline, "timed out after {}", got());
        match s.read(&mut buf) {
            Ok(0) => panic!("connection closed after {}", got()),
            Ok(k) => raw.extend_from_slice(&buf[..k]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("read failed ({e}) after {}", got()),
        }
    }
}

/// Checks a Matrix error response: status, JSON content type, `errcode` and `error`.
/// Returns the errcode.
fn assert_matrix_error(r: &Resp, status: u16, what: &str) -> String {
    assert_eq!(
        r.status,
        status,
        "{what}: wrong status; body {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{what}: Content-Type; headers {:?}",
        r.headers
    );
    let v = r.json();
    let errcode = v["errcode"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no errcode in {v}"));
    assert!(errcode.starts_with("M_"), "{what}: errcode {errcode}");
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: no error message in {v}"
    );
    errcode.to_owned()
}

/// The edge refused a request: exactly one response, a Matrix error with `status` and
/// `Connection: close`, nothing after it, and the server closed the connection. Whatever was
/// sent after the refused request on that connection was therefore never answered.
fn assert_refused(raw: &[u8], end: End, status: u16, what: &str) -> String {
    let (rs, rest) = parse_responses(raw);
    assert_eq!(
        rs.len(),
        1,
        "{what}: exactly one response expected, got {}: {:?}",
        rs.len(),
        String::from_utf8_lossy(raw)
    );
    assert!(
        rest.is_empty(),
        "{what}: bytes after the response: {:?}",
        String::from_utf8_lossy(&rest)
    );
    let errcode = assert_matrix_error(&rs[0], status, what);
    assert!(
        rs[0].says_close(),
        "{what}: a refusal must say Connection: close; headers {:?}",
        rs[0].headers
    );
    assert_ne!(
        end,
        End::TimedOut,
        "{what}: the server kept the connection open after refusing"
    );
    errcode
}

/// `GET /_matrix/federation/v1/version` on a new connection; the response and how long the
/// whole exchange (connect to close) took.
fn get_version(addr: SocketAddr) -> (Resp, Duration) {
    let t = Instant::now();
    let (raw, end, _) = exchange(addr, &version_request_close());
    let took = t.elapsed();
    let (mut rs, _) = parse_responses(&raw);
    assert_eq!(
        rs.len(),
        1,
        "GET version: {:?} ({end:?})",
        String::from_utf8_lossy(&raw)
    );
    (rs.remove(0), took)
}

/// The process is alive and a normal request on a new connection gets 200.
fn assert_healthy(srv: &mut Srv, what: &str) {
    assert!(srv.alive(), "{what}: the server died; log:\n{}", srv.log());
    let (r, _) = get_version(srv.addr);
    assert_eq!(r.status, 200, "{what}: GET version afterwards");
    assert_eq!(r.json()["server"]["name"].as_str(), Some("invited"));
}

/// [`assert_healthy`] over HTTPS.
fn assert_healthy_tls(srv: &mut Srv, ca: &TestCa, what: &str) {
    assert!(srv.alive(), "{what}: the server died; log:\n{}", srv.log());
    let mut resp = agent(Some(ca))
        .get(&srv.url(VERSION_PATH))
        .call()
        .unwrap_or_else(|e| panic!("{what}: HTTPS GET version failed: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "{what}");
    assert!(
        resp.body_mut()
            .read_to_string()
            .unwrap()
            .contains("\"invited\"")
    );
}

/// Waits (up to 2 s) until the server's log has a line containing `needle`: the harness reads
/// the log on another thread, so a line may arrive a moment after the response.
fn assert_logged(srv: &Srv, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !srv.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in the log:\n{}",
            srv.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// No request for a path containing `marker` was ever handled. A request for a barrier path is
/// sent first and awaited in the log, so every earlier log line has been read.
fn assert_never_served(srv: &Srv, marker: &str) {
    let (raw, _, _) = exchange(
        srv.addr,
        b"GET /log-barrier HTTP/1.1\r\nHost: invited.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&raw), Some(404));
    assert_logged(srv, "GET /log-barrier");
    let log = srv.log();
    assert!(
        !log.contains(marker),
        "a request sent after a refused one (or inside a body) was processed:\n{log}"
    );
}

fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        thread::sleep(when - now);
    }
}

/// Sends `first`, then one byte of `rest` every `step` until the server answers, then reads
/// until it closes (at most `give_up` after `first`). The stream's reads must time out within
/// about [`TICK`]. Returns everything read, how it ended, and the time from `first` to the
/// first byte of the answer.
fn trickle<S: Read + Write>(
    s: &mut S,
    first: &[u8],
    rest: &[u8],
    step: Duration,
    give_up: Duration,
) -> (Vec<u8>, End, Option<Duration>) {
    s.write_all(first).unwrap();
    s.flush().unwrap();
    let t0 = Instant::now();
    let mut next = t0 + step;
    let mut sent = 0;
    let mut out = Vec::new();
    let mut answered = None;
    let mut buf = [0u8; 4096];
    loop {
        if t0.elapsed() > give_up {
            return (out, End::TimedOut, answered);
        }
        match s.read(&mut buf) {
            Ok(0) => return (out, End::Closed, answered),
            Ok(n) => {
                answered.get_or_insert(t0.elapsed());
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return (out, End::Closed, answered);
            }
            Err(_) => return (out, End::Reset, answered),
        }
        if answered.is_none() && sent < rest.len() && Instant::now() >= next {
            let _ = s.write_all(&rest[sent..=sent]).and_then(|()| s.flush());
            sent += 1;
            next += step;
        }
    }
}

/// Whether a connection has been closed by the server (without data pending).
fn closed_by_server(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let r = s.peek(&mut [0u8; 1]);
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(0) => true,
        Ok(_) => panic!("an idle connection received data"),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Body size

/// tiny_http's remote crash: `Content-Length: 200000000000` and a few body bytes. The edge
/// answers 413 M_TOO_LARGE at once and closes, without waiting for or reading the body: more
/// body bytes pushed after the answer are refused by the connection long before 64 MiB.
#[test]
fn huge_content_length_gets_413_without_reading_the_body() {
    let mut srv = start("");
    let mut s = connect(srv.addr);
    let t = Instant::now();
    s.write_all(
        format!(
            "PUT {VERSION_PATH} HTTP/1.1\r\nHost: invited.test\r\n\
             Content-Length: 200000000000\r\n\r\nabc"
        )
        .as_bytes(),
    )
    .unwrap();
    let (raw, end) = drain(&mut s, t + Duration::from_secs(5));
    let took = t.elapsed();
    let errcode = assert_refused(&raw, end, 413, "Content-Length: 200000000000");
    assert_eq!(errcode, "M_TOO_LARGE");
    assert!(
        took < Duration::from_secs(1),
        "413 and close took {took:?}: the server waited for the body"
    );
    // Keep sending the "body": the server does not consume it, so the connection soon fails
    // (reset once the server's small drain budget is used up), or blocks.
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut pushed = 0usize;
    let stopped = loop {
        if pushed >= 64 * MIB {
            break false;
        }
        match s.write(&chunk) {
            Ok(n) => pushed += n,
            Err(_) => break true,
        }
    };
    assert!(
        stopped,
        "the server took 64 MiB of the body of a refused request"
    );
    eprintln!(
        "413: answered and closed in {took:?}; connection failed after {pushed} more body bytes"
    );
    assert_logged(&srv, "edge: 413");
    assert_healthy(&mut srv, "after Content-Length: 200000000000");
}

/// `[http] max_body_bytes` is honoured and inclusive: a body of exactly the limit is read whole
/// (the next pipelined request is then served), one byte more gets 413.
#[test]
fn body_limit_follows_the_config() {
    let mut srv = start("[http]\nmax_body_bytes = 4096\n");
    let put = |len: usize| {
        let mut req = format!(
            "PUT {VERSION_PATH} HTTP/1.1\r\nHost: invited.test\r\nContent-Length: {len}\r\n\r\n"
        )
        .into_bytes();
        req.extend(std::iter::repeat_n(b'{', len));
        req.extend(version_request_close());
        req
    };
    let (raw, end, _) = exchange(srv.addr, &put(4096));
    let (rs, rest) = parse_responses(&raw);
    assert_eq!(
        rs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [405, 200],
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_matrix_error(&rs[0], 405, "PUT with a body of exactly the limit");
    assert!(rest.is_empty() && end == End::Closed, "{end:?}");

    let (raw, end, _) = exchange(srv.addr, &put(4097));
    let errcode = assert_refused(&raw, end, 413, "body one byte over the limit");
    assert_eq!(errcode, "M_TOO_LARGE");
    assert_healthy(&mut srv, "after the body-limit checks");
}

// ---------------------------------------------------------------------------------------------
// Head size

/// Streams `prefix` and then filler bytes up to `total` on one connection, stopping as soon as
/// the server answers or closes. Returns what was read, how it ended, and how many bytes had
/// been written when the first byte of the answer arrived.
fn stream_until_answered(srv: &Srv, prefix: &[u8], total: usize) -> (Vec<u8>, End, usize, u64) {
    let s = connect(srv.addr);
    let mut reader = s.try_clone().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let answered_at = Arc::new(AtomicUsize::new(usize::MAX));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (written, answered_at, done) = (written.clone(), answered_at.clone(), done.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut out = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            let end = loop {
                if Instant::now() >= deadline {
                    break End::TimedOut;
                }
                match reader.read(&mut buf) {
                    Ok(0) => break End::Closed,
                    Ok(n) => {
                        if out.is_empty() {
                            answered_at.store(written.load(Ordering::SeqCst), Ordering::SeqCst);
                        }
                        out.extend_from_slice(&buf[..n]);
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => break End::Reset,
                }
            };
            done.store(true, Ordering::SeqCst);
            (out, end)
        })
    };
    let mut w = s;
    w.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    w.write_all(prefix).unwrap();
    written.store(prefix.len(), Ordering::SeqCst);
    let chunk = vec![b'a'; 256 * 1024];
    let mut max_rss = srv.rss_kib();
    let mut since_sample = 0;
    while written.load(Ordering::SeqCst) < total
        && !done.load(Ordering::SeqCst)
        && answered_at.load(Ordering::SeqCst) == usize::MAX
    {
        let left = total - written.load(Ordering::SeqCst);
        match w.write(&chunk[..left.min(chunk.len())]) {
            Ok(n) => {
                written.fetch_add(n, Ordering::SeqCst);
                since_sample += n;
                if since_sample >= 4 * MIB {
                    since_sample = 0;
                    max_rss = max_rss.max(srv.rss_kib());
                }
            }
            Err(_) => break,
        }
    }
    let (out, end) = reader.join().unwrap();
    max_rss = max_rss.max(srv.rss_kib());
    (out, end, answered_at.load(Ordering::SeqCst), max_rss)
}

/// A 64 MiB header line (and a 64 MiB request target) streamed at the server: 431 (414) as
/// soon as the 16 KiB head limit (8 KiB target limit) is passed, long before the line ends,
/// and the server's memory does not grow by more than a few MB.
#[test]
fn a_64_mib_header_line_gets_431_and_memory_stays_bounded() {
    let mut srv = start("");
    for _ in 0..4 {
        assert_eq!(get_version(srv.addr).0.status, 200);
    }
    let rss_before = srv.rss_kib();
    let header_line =
        format!("GET {VERSION_PATH} HTTP/1.1\r\nHost: invited.test\r\nX-Big: ").into_bytes();
    let target_line = format!("GET {VERSION_PATH}?q=").into_bytes();
    let mut max_rss = rss_before;
    for (prefix, status, what) in [
        (&header_line, 431, "64 MiB header line"),
        (&target_line, 414, "64 MiB request target"),
    ] {
        let (raw, end, answered_at, rss) = stream_until_answered(&srv, prefix, 64 * MIB);
        max_rss = max_rss.max(rss);
        assert_refused(&raw, end, status, what);
        assert!(
            answered_at < 64 * MIB,
            "{what}: the answer came only after all 64 MiB were sent"
        );
        eprintln!("{what}: {status} after {answered_at} bytes written");
        assert_healthy(&mut srv, what);
    }
    let rss_after = srv.rss_kib();
    eprintln!("RSS: {rss_before} KiB before, {max_rss} KiB at most during, {rss_after} KiB after");
    assert!(
        max_rss <= rss_before + 4096 && rss_after <= rss_before + 4096,
        "RSS grew from {rss_before} KiB to {max_rss} KiB (during) / {rss_after} KiB (after)"
    );
}

// ---------------------------------------------------------------------------------------------
// Transfer-Encoding

/// Any `Transfer-Encoding` gets 411 and the connection is closed: a chunked body, and the chunk
/// size that aborted `touche` (`fffffffffff`).
#[test]
fn transfer_encoding_gets_411() {
    let mut srv = start("");
    let cases: [(&str, Vec<u8>); 2] = [
        (
            "chunked body",
            format!(
                "POST {VERSION_PATH} HTTP/1.1\r\nHost: invited.test\r\n\
                 Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
                 GET /smuggled-te-1 HTTP/1.1\r\nHost: invited.test\r\n\r\n"
            )
            .into_bytes(),
        ),
        (
            "chunk size fffffffffff",
            format!(
                "POST {VERSION_PATH} HTTP/1.1\r\nHost: invited.test\r\n\
                 Transfer-Encoding: chunked\r\n\r\nfffffffffff\r\nabcdefgh"
            )
            .into_bytes(),
        ),
    ];
    for (what, bytes) in cases {
        let (raw, end, took) = exchange(srv.addr, &bytes);
        assert_refused(&raw, end, 411, what);
        assert!(took < Duration::from_secs(1), "{what}: took {took:?}");
        assert_healthy(&mut srv, what);
    }
    assert_never_served(&srv, "/smuggled");
}

// ---------------------------------------------------------------------------------------------
// Slow clients and the connection cap

/// 300 connections trickle a request head one byte a second. Meanwhile a new connection is
/// answered within 1 s, and the trickling connections all stay open; trickling does not extend
/// the request deadline, so each gets 408 about `request_timeout_secs` (4 s) after its first
/// byte although its bytes keep coming.
#[test]
fn trickling_connections_do_not_delay_a_fresh_request() {
    const N: usize = 300;
    let mut srv = start(
        "[http]\nmax_connections = 1000\nmax_connections_per_ip = 1000\nrequest_timeout_secs = 4\n",
    );
    let addr = srv.addr;
    let request: &'static [u8] = b"GET /_matrix/federation/v1/version HTTP/1.1\r\n\
        Host: invited.test\r\nX-Trickle: one byte a second\r\n\r\n";
    let opening = Instant::now();
    let mut conns = Vec::with_capacity(N);
    let mut first_byte = Vec::with_capacity(N);
    for _ in 0..N {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&request[..1]).unwrap();
        first_byte.push(Instant::now());
        conns.push(s);
    }
    let t0 = Instant::now();
    assert!(
        t0 - opening < Duration::from_secs(2),
        "opening {N} connections took {:?}",
        t0 - opening
    );

    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let mut writers: Vec<TcpStream> = conns.iter().map(|s| s.try_clone().unwrap()).collect();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut open = [true; N];
            for k in 1..request.len() {
                let when = t0 + Duration::from_secs(k as u64);
                while Instant::now() < when {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                for (i, w) in writers.iter_mut().enumerate() {
                    if open[i] && w.write(&request[k..=k]).is_err() {
                        open[i] = false;
                    }
                }
            }
        })
    };

    sleep_until(t0 + Duration::from_millis(1500));
    for i in 0..3 {
        let (r, took) = get_version(addr);
        assert_eq!(r.status, 200);
        eprintln!("fresh request {i} with {N} trickling connections: {took:?}");
        assert!(
            took < Duration::from_secs(1),
            "fresh request {i} took {took:?} while {N} connections trickle"
        );
    }
    let open = conns.iter().filter(|s| !closed_by_server(s)).count();
    assert_eq!(
        open, N,
        "trickling connections closed before their deadline"
    );

    for s in &conns {
        s.set_nonblocking(true).unwrap();
    }
    let mut answered: Vec<Option<Duration>> = vec![None; N];
    let give_up = t0 + Duration::from_secs(10);
    while answered.iter().any(Option::is_none) && Instant::now() < give_up {
        for (i, s) in conns.iter().enumerate() {
            if answered[i].is_none() {
                match s.peek(&mut [0u8; 1]) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    _ => answered[i] = Some(first_byte[i].elapsed()),
                }
            }
        }
        thread::sleep(Duration::from_millis(25));
    }
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    let mut slowest = Duration::ZERO;
    for (i, s) in conns.iter_mut().enumerate() {
        let took = answered[i].unwrap_or_else(|| {
            panic!("trickling connection {i}: no answer within 10 s; the trickle kept it alive")
        });
        slowest = slowest.max(took);
        assert!(
            took >= Duration::from_millis(3500) && took <= Duration::from_secs(6),
            "trickling connection {i}: answered {took:?} after its first byte (deadline 4 s)"
        );
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(TICK)).unwrap();
        let (raw, end) = drain(s, Instant::now() + Duration::from_secs(3));
        assert_refused(&raw, end, 408, &format!("trickling connection {i}"));
    }
    eprintln!("all {N} trickling connections got 408 by {slowest:?} after their first byte");
    assert_healthy(&mut srv, "after 300 trickling connections");
}

/// With `max_connections = 50`, 60 idle connections: each one over the cap takes the place of
/// the connection that has waited longest with no request, so the 10 oldest are closed and the
/// newest 50 kept. A request arriving while every slot is idle is served the same way, and the
/// server stays healthy.
#[test]
fn connections_over_the_cap_replace_the_longest_idle() {
    // All from one address: the per-address cap must not be what closes them.
    let mut srv = start("[http]\nmax_connections = 50\nmax_connections_per_ip = 100\n");
    let addr = srv.addr;
    let conns: Vec<TcpStream> = (0..60)
        .map(|_| {
            let c = TcpStream::connect(addr).unwrap();
            // Accept order is arrival order: give each its own moment.
            thread::sleep(Duration::from_millis(5));
            c
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let closed: Vec<bool> = conns.iter().map(closed_by_server).collect();
    assert!(
        closed[..10].iter().all(|&c| c) && closed[10..].iter().all(|&c| !c),
        "the 10 idle longest are closed, the newest 50 kept: {closed:?}"
    );

    let (raw, _, took) = exchange(addr, &version_request_close());
    assert_eq!(
        status_of(&raw),
        Some(200),
        "a request over a cap full of idle connections is served: {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(conns);
    assert_healthy(&mut srv, "after the connection cap");
}

/// Slowloris on the body: heads complete, bodies trickled one byte per 200 ms, on more
/// connections than there are workers. Each gets 408 after `request_timeout_secs` (2 s), and
/// meanwhile new requests are answered at once (no worker is pinned).
#[test]
fn slow_body_gets_408_without_pinning_a_worker() {
    let mut srv = start("[http]\nrequest_timeout_secs = 2\n");
    let addr = srv.addr;
    let slow: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut s = connect(addr);
                let head = format!(
                    "PUT {VERSION_PATH} HTTP/1.1\r\nHost: invited.test\r\nContent-Length: 1000\r\n\r\nx"
                );
                trickle(
                    &mut s,
                    head.as_bytes(),
                    &[b'x'; 999],
                    Duration::from_millis(200),
                    Duration::from_secs(8),
                )
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(400));
    for i in 0..3 {
        let (r, took) = get_version(addr);
        assert_eq!(r.status, 200);
        assert!(
            took < Duration::from_secs(1),
            "request {i} took {took:?} while 4 bodies trickle on 2 workers"
        );
        thread::sleep(Duration::from_millis(300));
    }
    for (i, h) in slow.into_iter().enumerate() {
        let (raw, end, answered) = h.join().unwrap();
        let took = answered.unwrap_or_else(|| panic!("slow body {i}: never answered ({end:?})"));
        assert!(
            took >= Duration::from_millis(1500) && took <= Duration::from_secs(5),
            "slow body {i}: answered after {took:?} (request_timeout_secs = 2)"
        );
        assert_refused(&raw, end, 408, &format!("slow body {i}"));
    }
    assert_healthy(&mut srv, "after slow bodies");
}

// ---------------------------------------------------------------------------------------------
// Keep-alive and pipelining

/// Pipelined requests are answered in order; keep-alive works for HTTP/1.1 and (when asked)
/// HTTP/1.0; `Connection: close` and HTTP/1.0's default close are honoured; a body is read
/// exactly (a request inside it is never served); an idle kept-alive connection is closed after
/// `keep_alive_secs`; a connection serves at most 1000 requests.
#[test]
fn pipelining_and_keep_alive() {
    let mut srv = start("[http]\nkeep_alive_secs = 2\n");
    let addr = srv.addr;
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: invited.test\r\n{extra}\r\n").into_bytes()
    };

    // Three GETs in one write: three responses, in order, and the connection stays open.
    let mut s = connect(addr);
    let mut three = get(VERSION_PATH, "");
    three.extend(get("/_matrix/key/v2/server", ""));
    three.extend(get("/_matrix/nope", ""));
    s.write_all(&three).unwrap();
    let rs = read_responses(&mut s, 3, Duration::from_secs(5));
    assert_eq!(
        rs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 404]
    );
    assert_eq!(rs[0].json()["server"]["name"].as_str(), Some("invited"));
    assert_eq!(rs[1].json()["server_name"].as_str(), Some("invited.test"));
    assert_eq!(
        assert_matrix_error(&rs[2], 404, "pipelined unknown path"),
        "M_UNRECOGNIZED"
    );
    assert!(rs.iter().all(|r| !r.says_close()));
    // Keep-alive: the same connection answers again...
    s.write_all(&get(VERSION_PATH, "")).unwrap();
    let rs = read_responses(&mut s, 1, Duration::from_secs(5));
    assert_eq!((rs.len(), rs[0].status), (1, 200));
    // ...until the client asks to close.
    s.write_all(&get(VERSION_PATH, "Connection: close\r\n"))
        .unwrap();
    let (raw, end) = drain(&mut s, Instant::now() + Duration::from_secs(5));
    let (rs, rest) = parse_responses(&raw);
    assert_eq!(end, End::Closed, "Connection: close not honoured");
    assert!(rs.len() == 1 && rs[0].status == 200 && rs[0].says_close() && rest.is_empty());

    // A body is read exactly: a request inside it is not served, the one after it is.
    let smuggled = b"GET /smuggled-in-body HTTP/1.1\r\nHost: invited.test\r\n\r\n";
    let mut req = format!(
        "PUT {VERSION_PATH} HTTP/1.1\r\nHost: invited.test\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    )
    .into_bytes();
    req.extend_from_slice(smuggled);
    req.extend(version_request_close());
    let (raw, end, _) = exchange(addr, &req);
    let (rs, rest) = parse_responses(&raw);
    assert_eq!(
        rs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [405, 200],
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(end == End::Closed && rest.is_empty());

    // HTTP/1.0 closes by default, and keeps the connection when asked to.
    let (raw, end, _) = exchange(
        addr,
        format!("GET {VERSION_PATH} HTTP/1.0\r\n\r\n").as_bytes(),
    );
    let (rs, _) = parse_responses(&raw);
    assert!(rs.len() == 1 && rs[0].status == 200 && rs[0].says_close() && end == End::Closed);
    let mut s = connect(addr);
    let ten_keep = format!("GET {VERSION_PATH} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    s.write_all(ten_keep.as_bytes()).unwrap();
    let rs = read_responses(&mut s, 1, Duration::from_secs(5));
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].header("connection"), Some("keep-alive"));
    s.write_all(ten_keep.as_bytes()).unwrap();
    let rs = read_responses(&mut s, 1, Duration::from_secs(5));
    assert_eq!(rs[0].status, 200);

    // An idle kept-alive connection is closed after keep_alive_secs (2 s).
    let idle_from = Instant::now();
    let (raw, end) = drain(&mut s, idle_from + Duration::from_secs(6));
    let idle = idle_from.elapsed();
    assert!(raw.is_empty() && end == End::Closed, "{end:?}");
    assert!(
        idle >= Duration::from_millis(1500) && idle <= Duration::from_millis(4000),
        "idle keep-alive connection closed after {idle:?} (keep_alive_secs = 2)"
    );

    // At most 1000 requests per connection: 1001 pipelined GETs get 1000 answers, the last
    // one saying Connection: close.
    let s = connect(addr);
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let all: Vec<u8> = (0..1001).flat_map(|_| get(VERSION_PATH, "")).collect();
        let _ = w.write_all(&all);
    });
    let mut s = s;
    let (raw, end) = drain(&mut s, Instant::now() + Duration::from_secs(20));
    writer.join().unwrap();
    let (rs, rest) = parse_responses(&raw);
    assert_eq!(rs.len(), 1000, "{end:?}");
    assert!(rs.iter().all(|r| r.status == 200));
    assert!(rs[..999].iter().all(|r| !r.says_close()));
    assert!(rs[999].says_close());
    assert!(rest.is_empty() && end != End::TimedOut, "{end:?}");

    assert_never_served(&srv, "/smuggled");
    assert_healthy(&mut srv, "after pipelining");
}

// ---------------------------------------------------------------------------------------------
// Smuggling shapes and malformed heads

/// Request-smuggling shapes and malformed heads, each followed on the same connection by a
/// well-formed request for a marker path. Each gets exactly one answer (the documented
/// refusal, a Matrix error with `Connection: close`), the connection is closed, the marker
/// request is never processed (nor logged), and a new connection is served normally.
#[test]
fn smuggling_shapes_are_refused_without_desync() {
    let mut srv = start("");
    let addr = srv.addr;
    let v = VERSION_PATH;
    let h = "Host: invited.test\r\n";
    let headers_65: String = (0..64).map(|i| format!("X-H{i}: v\r\n")).collect();
    let target_8193 = format!("{v}?p={}", "a".repeat(8193 - v.len() - 3));
    assert_eq!(target_8193.len(), 8193);
    let head_16385 = head_of_size(16385);

    // (what, request head and body, accepted statuses)
    let cases: Vec<(&str, String, &[u16])> = vec![
        (
            "Content-Length + Transfer-Encoding",
            format!(
                "POST {v} HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            &[411],
        ),
        (
            "Transfer-Encoding + Content-Length",
            format!(
                "POST {v} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
            ),
            &[411],
        ),
        (
            "Transfer-Encoding: xchunked",
            format!(
                "POST {v} HTTP/1.1\r\n{h}Content-Length: 0\r\nTransfer-Encoding: xchunked\r\n\r\n"
            ),
            &[411],
        ),
        (
            "Transfer-Encoding with a tab",
            format!(
                "POST {v} HTTP/1.1\r\n{h}Content-Length: 0\r\nTransfer-Encoding:\tchunked\r\n\r\n"
            ),
            &[411],
        ),
        (
            "Transfer-Encoding: identity",
            format!("POST {v} HTTP/1.1\r\n{h}Transfer-Encoding: identity\r\n\r\n"),
            &[411],
        ),
        (
            "Transfer-Encoding with space before the colon",
            format!(
                "POST {v} HTTP/1.1\r\n{h}Content-Length: 0\r\nTransfer-Encoding : chunked\r\n\r\n"
            ),
            &[400],
        ),
        (
            "two equal Content-Length",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length: 0\r\nContent-Length: 0\r\n\r\n"),
            &[400],
        ),
        (
            "two different Content-Length",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length: 0\r\ncontent-length: 51\r\n\r\n"),
            &[400],
        ),
        (
            "Content-Length list",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length: 0, 0\r\n\r\n"),
            &[400],
        ),
        (
            "Content-Length with +",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length: +0\r\n\r\n"),
            &[400],
        ),
        (
            "Content-Length with -",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length: -1\r\n\r\n"),
            &[400],
        ),
        (
            "Content-Length hex",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length: 0x0\r\n\r\n"),
            &[400],
        ),
        (
            "Content-Length trailing garbage",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length: 0abc\r\n\r\n"),
            &[400],
        ),
        (
            "Content-Length with inner space",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length: 0 0\r\n\r\n"),
            &[400],
        ),
        (
            "empty Content-Length",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length: \r\n\r\n"),
            &[400],
        ),
        (
            "Content-Length with space before the colon",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length : 0\r\n\r\n"),
            &[400],
        ),
        // A syntactically valid number too large for 64 bits: refusing it as invalid (400) or
        // as too large (413) are both sound; wrapping around would not be.
        (
            "Content-Length 2^64",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length: 18446744073709551616\r\n\r\n"),
            &[400, 413],
        ),
        (
            "Content-Length 2^64 + 51 (wraps to 51)",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length: 18446744073709551667\r\n\r\n"),
            &[400, 413],
        ),
        (
            "Content-Length of 40 digits",
            format!(
                "PUT {v} HTTP/1.1\r\n{h}Content-Length: {}\r\n\r\n",
                "9".repeat(40)
            ),
            &[400, 413],
        ),
        (
            "obs-fold header continuation",
            format!("GET {v} HTTP/1.1\r\n{h}X-Folded: a\r\n b\r\n\r\n"),
            &[400],
        ),
        (
            "obs-fold on Content-Length",
            format!("PUT {v} HTTP/1.1\r\n{h}Content-Length: 0\r\n 51\r\n\r\n"),
            &[400],
        ),
        (
            "bare LF everywhere",
            format!("GET {v} HTTP/1.1\nHost: invited.test\n\n"),
            &[400],
        ),
        (
            "bare LF after the request line",
            format!("GET {v} HTTP/1.1\n{h}\r\n"),
            &[400],
        ),
        (
            "bare LF after a header",
            format!("GET {v} HTTP/1.1\r\nHost: invited.test\nX-A: b\r\n\r\n"),
            &[400],
        ),
        (
            "bare LF as the blank line",
            format!("GET {v} HTTP/1.1\r\n{h}\n"),
            &[400],
        ),
        (
            "bare CR after the request line",
            format!("GET {v} HTTP/1.1\r{h}\r\n"),
            &[400],
        ),
        (
            "bare CR in a header value",
            format!("GET {v} HTTP/1.1\r\n{h}X-A: a\rb\r\n\r\n"),
            &[400],
        ),
        (
            "NUL in a header value",
            format!("GET {v} HTTP/1.1\r\n{h}X-A: a\0b\r\n\r\n"),
            &[400],
        ),
        (
            "two Host headers",
            format!("GET {v} HTTP/1.1\r\n{h}Host: other.test\r\n\r\n"),
            &[400],
        ),
        (
            "double space in the request line",
            format!("GET  {v} HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        ("HTTP/2.0", format!("GET {v} HTTP/2.0\r\n{h}\r\n"), &[505]),
        (
            "HTTP/2 preface",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
            &[505],
        ),
        ("HTTP/3", format!("GET {v} HTTP/3\r\n{h}\r\n"), &[505]),
        ("HTTP/1.2", format!("GET {v} HTTP/1.2\r\n{h}\r\n"), &[505]),
        (
            "request target of 8193 bytes",
            format!("GET {target_8193} HTTP/1.1\r\n{h}\r\n"),
            &[414],
        ),
        (
            "65 headers",
            format!("GET {v} HTTP/1.1\r\n{h}{headers_65}\r\n"),
            &[431],
        ),
        ("head of 16385 bytes", head_16385, &[431]),
    ];

    for (i, (what, malformed, statuses)) in cases.iter().enumerate() {
        let mut bytes = malformed.clone().into_bytes();
        bytes.extend(format!("GET /smuggled-{i} HTTP/1.1\r\n{h}\r\n").as_bytes());
        let (raw, end, _) = exchange(addr, &bytes);
        let (rs, _) = parse_responses(&raw);
        let seen = rs.first().map(|r| r.status);
        assert!(
            seen.is_some_and(|s| statuses.contains(&s)),
            "{what}: status {seen:?}, expected one of {statuses:?}; sent {:?}; got {:?}",
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&raw)
        );
        assert_refused(&raw, end, seen.unwrap(), what);
        assert!(srv.alive(), "{what}: the server died");
        let (r, _) = get_version(addr);
        assert_eq!(r.status, 200, "{what}: the next connection is not served");
    }
    assert_never_served(&srv, "/smuggled");

    // The limits are inclusive: exactly 64 headers, a 16384-byte head, an 8192-byte target.
    let headers_64: String = (0..62).map(|i| format!("X-H{i}: v\r\n")).collect();
    let target_8192 = format!("{v}?p={}", "a".repeat(8192 - v.len() - 3));
    for (what, bytes) in [
        (
            "64 headers",
            format!("GET {v} HTTP/1.1\r\n{h}Connection: close\r\n{headers_64}\r\n"),
        ),
        ("head of 16384 bytes", head_of_size(16384)),
        (
            "target of 8192 bytes",
            format!("GET {target_8192} HTTP/1.1\r\n{h}Connection: close\r\n\r\n"),
        ),
    ] {
        let (raw, _, _) = exchange(addr, bytes.as_bytes());
        assert_eq!(
            status_of(&raw),
            Some(200),
            "{what} is within the limits: {:?}",
            String::from_utf8_lossy(&raw)
        );
    }
    assert_healthy(&mut srv, "after the smuggling shapes");
}

/// A `GET version` head of exactly `size` bytes (blank line included), `Connection: close`.
fn head_of_size(size: usize) -> String {
    let start = format!(
        "GET {VERSION_PATH} HTTP/1.1\r\nHost: invited.test\r\nConnection: close\r\nX-Pad: "
    );
    let head = format!("{start}{}\r\n\r\n", "p".repeat(size - start.len() - 4));
    assert_eq!(head.len(), size);
    head
}

// ---------------------------------------------------------------------------------------------
// TLS

fn tls_client_config(ca: &TestCa) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.cert_der()))
        .unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection with its handshake done; reads time out after [`TICK`].
fn tls_connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> TlsStream {
    let sock = connect(addr);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.conn.is_handshaking() {
        match s.conn.complete_io(&mut s.sock) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) && Instant::now() < deadline => {}
            Err(e) => panic!("TLS handshake failed: {e}"),
        }
    }
    s
}

/// Over TLS: the 200 GB Content-Length gets 413 M_TOO_LARGE at once; a trickled body and a
/// trickled head get 408 after `request_timeout_secs` (2 s) while an HTTPS request is answered
/// at once; 20 connections that never finish the handshake do not delay anyone and are closed
/// by the handshake deadline (10 s).
#[test]
fn tls_too_large_and_slow_clients() {
    let (mut srv, ca) = start_tls("[http]\nrequest_timeout_secs = 2\n");
    let addr = srv.addr;
    let config = tls_client_config(&ca);

    // Stalled handshakes: silent connections, and one with a partial ClientHello record.
    let stalled_at = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..20).map(|_| connect(addr)).collect();
    stalled[0]
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .unwrap();

    // 413 without reading the body.
    let mut s = tls_connect(addr, &config);
    let t = Instant::now();
    s.write_all(
        format!(
            "PUT {VERSION_PATH} HTTP/1.1\r\nHost: localhost\r\n\
             Content-Length: 200000000000\r\n\r\nabc"
        )
        .as_bytes(),
    )
    .unwrap();
    s.flush().unwrap();
    let (raw, end) = drain(&mut s, t + Duration::from_secs(5));
    let took = t.elapsed();
    let errcode = assert_refused(&raw, end, 413, "TLS Content-Length: 200000000000");
    assert_eq!(errcode, "M_TOO_LARGE");
    assert!(took < Duration::from_secs(1), "TLS 413 took {took:?}");

    // A trickled body and a trickled head.
    let slow_body = {
        let config = config.clone();
        thread::spawn(move || {
            let mut s = tls_connect(addr, &config);
            let head = format!(
                "PUT {VERSION_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nx"
            );
            trickle(
                &mut s,
                head.as_bytes(),
                &[b'x'; 999],
                Duration::from_millis(200),
                Duration::from_secs(8),
            )
        })
    };
    let slow_head = {
        let config = config.clone();
        thread::spawn(move || {
            let mut s = tls_connect(addr, &config);
            let request = format!("GET {VERSION_PATH} HTTP/1.1\r\nHost: localhost\r\n\r\n");
            trickle(
                &mut s,
                &request.as_bytes()[..1],
                &request.as_bytes()[1..],
                Duration::from_millis(200),
                Duration::from_secs(8),
            )
        })
    };
    thread::sleep(Duration::from_millis(400));
    let https = agent(Some(&ca));
    for i in 0..3 {
        let t = Instant::now();
        let resp = https.get(&srv.url(VERSION_PATH)).call().unwrap();
        let took = t.elapsed();
        assert_eq!(resp.status().as_u16(), 200);
        assert!(
            took < Duration::from_secs(1),
            "HTTPS request {i} took {took:?} with slow TLS clients and stalled handshakes"
        );
        thread::sleep(Duration::from_millis(300));
    }
    for (what, h) in [("TLS slow body", slow_body), ("TLS slow head", slow_head)] {
        let (raw, end, answered) = h.join().unwrap();
        let took = answered.unwrap_or_else(|| panic!("{what}: never answered ({end:?})"));
        assert!(
            took >= Duration::from_millis(1500) && took <= Duration::from_secs(5),
            "{what}: answered after {took:?} (request_timeout_secs = 2)"
        );
        assert_refused(&raw, end, 408, what);
    }

    // The handshake deadline closes the stalled connections.
    for (i, s) in stalled.iter_mut().enumerate() {
        let (raw, end) = drain(s, stalled_at + Duration::from_secs(15));
        assert!(
            end != End::TimedOut,
            "stalled handshake {i} still open after {:?}",
            stalled_at.elapsed()
        );
        assert!(
            !String::from_utf8_lossy(&raw).contains("HTTP/1.1"),
            "stalled handshake {i} got an HTTP answer"
        );
    }
    eprintln!(
        "stalled TLS handshakes closed after {:?}",
        stalled_at.elapsed()
    );
    assert_healthy_tls(&mut srv, &ca, "after the TLS attacks");
}
