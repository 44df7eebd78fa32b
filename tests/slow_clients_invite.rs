//! Slow clients must not delay invites. `tests/http_attacks.rs` shows this for a GET of the
//! version endpoint; here the victim is what the server exists for: a valid signed invite.
//!
//! Hundreds of connections hold the server busy with invite requests that never complete — some
//! send their head one byte at a time, some send a whole head and half the body and then stop,
//! some trickle the body one byte at a time — while fresh, valid, signed invites must each be
//! answered 200 within 1 s. The slow requests are still pending while that is measured; they
//! then each get 408 at their deadline (not extended by trickling), none of them is stored, and
//! a last invite is still answered.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::invites::{Harness, Invite, US, valid_invite};
use common::origin::TestOrigin;
use common::wire::*;
use common::*;

const HEAD_TRICKLERS: usize = 200;
const STALLED_BODIES: usize = 150;
const BODY_TRICKLERS: usize = 150;
const REQUEST_TIMEOUT_SECS: u64 = 5;

/// A valid invite, signed, as request bytes (keep-alive: no `Connection: close`), with the
/// offset where its body starts and its event ID.
fn invite_request(origin: &TestOrigin, invitee: &str) -> (Vec<u8>, usize, String) {
    let Invite {
        path,
        body,
        event_id,
        ..
    } = valid_invite(origin, "12", invitee);
    let auth = x_matrix(origin, "PUT", &path, Some(&body));
    let body = canonical(&body);
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {US}\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut bytes = head.clone().into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    (bytes, head.len(), event_id)
}

fn still_open(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let r = s.peek(&mut [0u8; 1]);
    s.set_nonblocking(false).unwrap();
    matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[test]
fn slow_invite_clients_do_not_delay_a_valid_invite() {
    let mut h = Harness::start(&format!(
        "[http]\nmax_connections = 1000\nmax_connections_per_ip = 1000\n\
         request_timeout_secs = {REQUEST_TIMEOUT_SECS}\n"
    ));
    let origin = &h.origin;
    let addr = h.invited.addr;

    // The origin's keys are fetched once, before the measurement.
    let (warm, _, _) = invite_request(origin, &format!("@warm:{US}"));
    let r = exchange(addr, warm, Duration::from_secs(10), Duration::ZERO).unwrap();
    assert_eq!(r.status, 200, "warm-up invite: {}", r.text());

    // The invites to measure, and the one the slow clients send, made in advance.
    let fresh: Vec<(Vec<u8>, usize, String)> = (0..6)
        .map(|i| invite_request(origin, &format!("@fresh{i}:{US}")))
        .collect();
    let (slow, body_at, slow_id) = invite_request(origin, &format!("@slow:{US}"));
    let slow: Arc<Vec<u8>> = Arc::new(slow);

    // Open the slow connections.
    let opening = Instant::now();
    let mut head_tricklers = Vec::new();
    let mut body_tricklers = Vec::new();
    let mut stalled = Vec::new();
    for _ in 0..HEAD_TRICKLERS {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&slow[..1]).unwrap();
        head_tricklers.push(s);
    }
    let half_body = body_at + (slow.len() - body_at) / 2;
    for _ in 0..STALLED_BODIES {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&slow[..half_body]).unwrap();
        stalled.push(s);
    }
    for _ in 0..BODY_TRICKLERS {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&slow[..body_at + 1]).unwrap();
        body_tricklers.push(s);
    }
    let t0 = Instant::now();
    let total = HEAD_TRICKLERS + STALLED_BODIES + BODY_TRICKLERS;
    eprintln!(
        "opened {total} slow invite connections in {:?}",
        t0 - opening
    );

    // One byte every 100 ms on each trickling connection, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let mut heads: Vec<TcpStream> = head_tricklers
            .iter()
            .map(|s| s.try_clone().unwrap())
            .collect();
        let mut bodies: Vec<TcpStream> = body_tricklers
            .iter()
            .map(|s| s.try_clone().unwrap())
            .collect();
        let (stop, slow) = (stop.clone(), slow.clone());
        thread::spawn(move || {
            let mut k = 1;
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(100));
                for s in &mut heads {
                    // The head never completes: at 10 bytes/s it takes far longer than the
                    // deadline. Write errors (the server closed at the deadline) are ignored.
                    let _ = s.write(&slow[k..=k]);
                }
                for s in &mut bodies {
                    let i = body_at + 1 + k;
                    if i < slow.len() - 1 {
                        let _ = s.write(&slow[i..=i]);
                    }
                }
                k += 1;
            }
        })
    };

    // While they are all pending: fresh, valid, signed invites, each on a new connection.
    thread::sleep(Duration::from_millis(500));
    let mut slowest = Duration::ZERO;
    for (i, (bytes, _, _)) in fresh[..5].iter().enumerate() {
        let t = Instant::now();
        let mut with_close = bytes.clone();
        // Ask for the connection to be closed after the answer (same request otherwise).
        let at = with_close
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap();
        with_close.splice(at..at, b"\r\nConnection: close".iter().copied());
        let r = exchange(addr, with_close, Duration::from_secs(10), Duration::ZERO)
            .unwrap_or_else(|e| panic!("fresh invite {i}: {e}"));
        let took = t.elapsed();
        slowest = slowest.max(took);
        assert_eq!(r.status, 200, "fresh invite {i}: {}", r.text());
        eprintln!("fresh invite {i} with {total} slow invite connections: {took:?}");
        assert!(
            took < Duration::from_secs(1),
            "fresh invite {i} took {took:?} while {total} slow clients hold connections"
        );
        thread::sleep(Duration::from_millis(150));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(REQUEST_TIMEOUT_SECS - 1),
        "the measurement ran too close to the slow requests' deadline ({:?})",
        t0.elapsed()
    );
    // The slow connections were all still pending during the measurement.
    let open = head_tricklers
        .iter()
        .chain(&stalled)
        .chain(&body_tricklers)
        .filter(|s| still_open(s))
        .count();
    assert_eq!(open, total, "slow connections closed before their deadline");

    // Each slow request gets 408 at its deadline (trickling does not extend it).
    let deadline = t0 + Duration::from_secs(REQUEST_TIMEOUT_SECS + 4);
    let mut failures = Vec::new();
    for (kind, conns) in [
        ("head trickler", &mut head_tricklers),
        ("stalled body", &mut stalled),
        ("body trickler", &mut body_tricklers),
    ] {
        for (i, s) in conns.iter_mut().enumerate() {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while Instant::now() < deadline && !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            if status_of(&got) != Some(408) {
                failures.push(format!(
                    "{kind} {i}: {:?}",
                    String::from_utf8_lossy(&got[..got.len().min(200)])
                ));
            }
        }
    }
    let all_answered = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {total} slow requests not answered 408 by {:?}:\n{}",
        failures.len(),
        all_answered,
        failures.join("\n")
    );
    eprintln!(
        "all {total} slow requests got 408 by {all_answered:?}; slowest fresh invite {slowest:?}"
    );

    // None of the slow invites was stored; the fresh ones were; the server still answers.
    let conn = h.invited.db();
    let stored = |id: &str| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM invites WHERE event_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(stored(&slow_id), 0, "an incomplete request was acted on");
    for (_, _, id) in &fresh[..5] {
        assert_eq!(stored(id), 1);
    }
    assert!(
        h.invited.alive(),
        "the server died; log:\n{}",
        h.invited.log()
    );
    let (last, _, _) = &fresh[5];
    let r = exchange(addr, last.clone(), Duration::from_secs(10), Duration::ZERO).unwrap();
    assert_eq!(
        r.status,
        200,
        "an invite after the slow clients: {}",
        r.text()
    );
}
