//! Load benchmark: the real release binary, a fake origin serving its keys over HTTPS (so
//! invited fetches and caches them the normal way), N distinct fully signed room-v12 invites
//! with realistic invite_room_state, replayed over keep-alive connections at several
//! concurrency levels; then a retry-heavy run; then the crypto floor of one invite measured in
//! this process on the same machine.
//!
//! Run: `cargo bench -p invited --bench load` (env: INVITES=N, LEVELS=1,4,16,64).
//! It prints a Markdown table. Figures depend on the machine; compare ratios.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

// The integration tests' harness, as a module of this bench. A bench target is its own crate
// and can share tests/common only by including its source: a library crate for it would not
// get `CARGO_BIN_EXE_invited` (cargo sets it for this package's tests and benches only), which
// the harness needs to start the binary. Its submodules (origin, invites, wire) follow it.
#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::invites::invite_path;
use common::origin::TestOrigin;
use common::{Invited, TestCa, write_config};
use serde_json::{Value as J, json};

const US: &str = "invited.bench";

struct Prepared {
    path: String,
    request: Vec<u8>,
}

/// One complete v12 invite request (head + body), signed by the origin.
fn prepare(
    origin: &TestOrigin,
    state: &[J],
    room_id: &str,
    i: usize,
    addr: SocketAddr,
) -> Prepared {
    let mut raw = origin.raw_invite("12", room_id, &format!("@user{}:{US}", i % 1000));
    raw["content"]["displayname"] = json!(format!("User {i}"));
    raw["content"]["is_direct"] = json!(false);
    let event = origin.hash_and_sign(&raw, "12");
    let event_id = TestOrigin::event_id(&event, "12");
    let body = json!({"room_version": "12", "event": event, "invite_room_state": state});
    let path = invite_path(2, room_id, &event_id);
    let auth = origin.sign_request("PUT", &path, US, Some(&body));
    let body = serde_json::to_vec(&body).unwrap();
    let mut request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    Prepared { path, request }
}

/// Sends one request on a keep-alive connection; returns the status and whether the server
/// closes the connection afterwards (it does after `max_requests_per_connection`).
fn exchange_keep_alive(conn: &mut BufReader<TcpStream>, request: &[u8]) -> (u16, bool) {
    conn.get_mut().write_all(request).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    let status: u16 = line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    let mut close = false;
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        close |= lower.starts_with("connection:") && lower.contains("close");
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).unwrap();
    (status, close)
}

fn exchange(conn: &mut BufReader<TcpStream>, request: &[u8]) -> u16 {
    exchange_keep_alive(conn, request).0
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    BufReader::new(stream)
}

struct RunResult {
    rate: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    non_200: usize,
}

fn run(addr: SocketAddr, requests: &[Arc<Vec<u8>>], concurrency: usize) -> RunResult {
    let chunk = requests.len().div_ceil(concurrency);
    let started = Instant::now();
    let threads: Vec<_> = requests
        .chunks(chunk)
        .map(|part| {
            let part: Vec<Arc<Vec<u8>>> = part.to_vec();
            std::thread::spawn(move || {
                let mut conn = connect(addr);
                let mut lat = Vec::with_capacity(part.len());
                let mut bad = 0;
                for r in &part {
                    let t = Instant::now();
                    let (status, close) = exchange_keep_alive(&mut conn, r);
                    if status != 200 {
                        bad += 1;
                    }
                    lat.push(t.elapsed());
                    if close {
                        conn = connect(addr);
                    }
                }
                (lat, bad)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut non_200 = 0;
    for t in threads {
        let (l, b) = t.join().unwrap();
        lat.extend(l);
        non_200 += b;
    }
    let elapsed = started.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    RunResult {
        rate: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p90: pct(0.90),
        p99: pct(0.99),
        max: *lat.last().unwrap(),
        non_200,
    }
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The crypto and hashing one invite needs, measured here: request-signature verify, event
/// signature verify, content hash, reference hash (event ID), co-sign.
fn crypto_floor(origin: &TestOrigin, sample: &Prepared) -> Duration {
    use invited_matrix::{KeyId, ServerName, VerifyKey, json, x_matrix};
    let text = String::from_utf8_lossy(&sample.request).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let auth = head
        .lines()
        .find_map(|l| l.strip_prefix("Authorization: "))
        .unwrap()
        .to_owned();
    let body = json::parse(body).unwrap();
    let event = body["event"].as_object().unwrap().clone();
    let creds = x_matrix::parse_header(auth.as_bytes()).unwrap().unwrap();
    let vk = VerifyKey::from_base64(&common::origin::public_b64(origin.key())).unwrap();
    let us = ServerName::parse(US).unwrap();
    let rv = invited_matrix::RoomVersion::by_id("12").unwrap();
    let ours = invited_matrix::SigningKey::from_seed(KeyId::parse("ed25519:b").unwrap(), &[7; 32]);
    let keys = |_: &str, _: &KeyId| Some(vk);
    let rounds = 2000;
    let started = Instant::now();
    for _ in 0..rounds {
        let signed = x_matrix::request_object("PUT", &sample.path, &creds.origin, &us, Some(&body));
        x_matrix::verify_request(&creds, &signed, &vk).unwrap();
        invited_matrix::verify_event_signatures(&event, rv, &keys).unwrap();
        invited_matrix::check_content_hash(&event).unwrap();
        let _ = invited_matrix::event_id(&event, rv).unwrap();
        let mut e = event.clone();
        invited_matrix::sign_event(&mut e, rv, &us, &ours).unwrap();
    }
    started.elapsed() / rounds
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let n: usize = std::env::var("INVITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let levels: Vec<usize> = std::env::var("LEVELS")
        .unwrap_or_else(|_| "1,4,16,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let ca = TestCa::new();
    let origin = TestOrigin::start(&ca);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // The server's default: eight workers per core (they mostly wait for the group commit).
    let workers: usize = std::env::var("WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cores * 8);
    let config = write_config(
        dir.path(),
        US,
        "[federation]\nca_file = \"ca.pem\"\nip_range_allowlist = [\"127.0.0.0/8\"]\n\
         [rate_limits]\nper_origin_per_second = 1000000.0\nper_origin_burst = 1000000\n\
         per_invitee_per_second = 1000000.0\nper_invitee_burst = 1000000\n\
         total_per_second = 1000000.0\ntotal_burst = 1000000\n\
         [http]\nmax_connections_per_ip = 1024\n",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("workers = 2", &format!("workers = {workers}"));
    std::fs::write(&config, text).unwrap();
    // Per-request info lines would cost the server time; keep the start-up line.
    let invited = Invited::start_with_env(&config, &[("RUST_LOG", "warn,invited::server=info")]);
    let addr = invited.addr;

    // Realistic room state: the full create PDU plus a few state events.
    let (create, room_id) = origin.create_event("12", "alice");
    let state = vec![
        create,
        origin.state_event(
            "12",
            &room_id,
            "m.room.name",
            json!({"name": "Benchmark room"}),
        ),
        origin.state_event(
            "12",
            &room_id,
            "m.room.join_rules",
            json!({"join_rule": "invite"}),
        ),
        origin.state_event(
            "12",
            &room_id,
            "m.room.topic",
            json!({"topic": "Where invites are measured"}),
        ),
        origin.state_event(
            "12",
            &room_id,
            "m.room.encryption",
            json!({"algorithm": "m.megolm.v1.aes-sha2"}),
        ),
    ];
    eprintln!("preparing {n} signed invites…");
    let total = n * levels.len();
    let prepared: Vec<Prepared> = (0..total)
        .map(|i| prepare(&origin, &state, &room_id, i, addr))
        .collect();
    // Warm the key cache.
    let warm = prepare(&origin, &state, &room_id, total + 1, addr);
    let stream = TcpStream::connect(addr).unwrap();
    assert_eq!(
        exchange(&mut BufReader::new(stream), &warm.request),
        200,
        "warm-up invite"
    );

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "machine: {cores} cores, {cpu}; server workers: {workers}; load generator on the same cores"
    );
    println!(
        "request size: {} bytes; {n} new invites per level\n",
        prepared[0].request.len()
    );
    println!("| run | connections | invites/s | p50 | p90 | p99 | max | non-200 |");
    println!("|---|---|---|---|---|---|---|---|");
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let mut best = 0.0f64;
    for (li, c) in levels.iter().enumerate() {
        let reqs: Vec<Arc<Vec<u8>>> = prepared[li * n..(li + 1) * n]
            .iter()
            .map(|p| Arc::new(p.request.clone()))
            .collect();
        let r = run(addr, &reqs, *c);
        best = best.max(r.rate);
        println!(
            "| new invites | {c} | {:.0} | {} | {} | {} | {} | {} |",
            r.rate,
            ms(r.p50),
            ms(r.p90),
            ms(r.p99),
            ms(r.max),
            r.non_200
        );
    }
    let retry: Vec<Arc<Vec<u8>>> = (0..n).map(|_| Arc::new(warm.request.clone())).collect();
    for c in [1usize, 16] {
        let r = run(addr, &retry, c);
        println!(
            "| retries of one invite | {c} | {:.0} | {} | {} | {} | {} | {} |",
            r.rate,
            ms(r.p50),
            ms(r.p90),
            ms(r.p99),
            ms(r.max),
            r.non_200
        );
    }
    let rss = peak_rss_mib(invited.pid());
    let floor = crypto_floor(&origin, &warm);
    let floor_rate_one_core = 1.0 / floor.as_secs_f64();
    println!("\npeak RSS of the server: {rss:.1} MiB");
    println!(
        "crypto floor of one invite (request verify + event verify + content hash + reference hash + co-sign), one core: {:.1} µs = {:.0} invites/s",
        floor.as_secs_f64() * 1e6,
        floor_rate_one_core
    );
    println!(
        "best end-to-end rate / one-core crypto floor: {:.0} %  (/ all-cores floor: {:.0} %)",
        best / floor_rate_one_core * 100.0,
        best / (floor_rate_one_core * cores as f64) * 100.0
    );
}
