//! Load benchmark on the traffic real servers send: the real release binary serving HTTPS, a
//! fake origin serving its keys over HTTPS (invited fetches and caches them the normal way),
//! and room-v12 invites shaped as Synapse 1.163 sends them: **a distinct room per invite**,
//! with the create, join rules, name and inviter's member events as full PDUs signed by the
//! origin in `invite_room_state` (so no cache makes the room state free). Requests go over
//! HTTPS keep-alive connections at several concurrency levels; then the same-room shape (every
//! invite in one room, the room state verified once and cached) as a second row; then retries;
//! then a paced run at half the peak rate for its latency.
//!
//! It prints, per run, the server's CPU time per invite (from /proc), the WAL's largest size
//! seen, the database bytes per invite (after a truncating checkpoint), the server's peak RSS,
//! and the floor of the real request — every signature and hash the server must do for it,
//! measured in this process — so the ratio to the floor means something.
//!
//! Run: `cargo bench -p invited --bench load` (env: INVITES=N per level, LEVELS=1,4,16,32,64,
//! KEEP_DB=path to keep a copy of the database after the real-shape rows,
//! WORKERS). It prints Markdown tables. Figures depend on the machine; compare ratios.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

// The integration tests' harness, as a module of this bench. A bench target is its own crate
// and can share tests/common only by including its source: a library crate for it would not
// get `CARGO_BIN_EXE_invited` (cargo sets it for this package's tests and benches only), which
// the harness needs to start the binary. Its submodules (origin, invites, wire) follow it.
#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
#[path = "support/proc_stat.rs"]
mod proc_stat;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::invites::invite_path;
use common::origin::TestOrigin;
use common::{Invited, TestCa, write_config};
use serde_json::{Value as J, json};

const US: &str = "invited.bench";

/// One complete request (head + body) and its parts.
struct Prepared {
    path: String,
    request: Vec<u8>,
}

/// A fake but well-formed event reference, as `auth_events`/`prev_events` carry them.
fn reference(i: usize, n: usize) -> String {
    let base = format!("{i:020}{n:023}");
    format!("${base}")
}

/// The invite_room_state Synapse 1.163 sends for a room-v12 invite: create, join rules,
/// name and the inviter's member event, each as the full PDU signed by the origin.
fn synapse_room_state(origin: &TestOrigin, i: usize) -> (Vec<J>, String) {
    let (create, room_id) = origin.create_event("12", "alice");
    let alice = format!("@alice:{}", origin.name());
    let pdu = |depth: usize, kind: &str, state_key: &str, content: J| {
        let mut ev = json!({
            "type": kind, "state_key": state_key, "sender": alice, "content": content,
            "room_id": room_id, "origin_server_ts": common::origin::now_ms(), "depth": depth,
            "prev_events": [reference(i, depth - 1)],
            "auth_events": [reference(i, 100), reference(i, 101)],
        });
        if kind == "m.room.member" {
            ev["auth_events"] = json!([]);
        }
        origin.hash_and_sign(&ev, "12")
    };
    let member = pdu(
        2,
        "m.room.member",
        &alice,
        json!({"membership": "join", "displayname": "Alice Liddell"}),
    );
    let join_rules = pdu(4, "m.room.join_rules", "", json!({"join_rule": "invite"}));
    let name = pdu(
        5,
        "m.room.name",
        "",
        json!({"name": format!("Room number {i}")}),
    );
    (vec![create, join_rules, name, member], room_id)
}

/// One complete v12 invite request (head + body), signed by the origin.
fn prepare(origin: &TestOrigin, state: &[J], room_id: &str, i: usize) -> Prepared {
    let mut raw = origin.raw_invite("12", room_id, &format!("@user{}:{US}", i % 1000));
    raw["content"]["displayname"] = json!(format!("User {i}"));
    raw["content"]["is_direct"] = json!(false);
    raw["auth_events"] = json!([reference(i, 200), reference(i, 201), reference(i, 202)]);
    raw["prev_events"] = json!([reference(i, 6)]);
    let event = origin.hash_and_sign(&raw, "12");
    let event_id = TestOrigin::event_id(&event, "12");
    let body = json!({"room_version": "12", "event": event, "invite_room_state": state});
    let path = invite_path(2, room_id, &event_id);
    let auth = origin.sign_request("PUT", &path, US, Some(&body));
    let bytes = serde_json::to_vec(&body).unwrap();
    let mut request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {US}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    )
    .into_bytes();
    request.extend_from_slice(&bytes);
    Prepared { path, request }
}

type Conn = BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// Sends one request on a keep-alive connection; returns the status and whether the server
/// closes the connection afterwards (it does after `max_requests_per_connection`).
fn exchange_keep_alive(conn: &mut Conn, request: &[u8]) -> (u16, bool) {
    conn.get_mut().write_all(request).unwrap();
    conn.get_mut().flush().unwrap();
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

/// An HTTPS client for the server: the test CA as the only root.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl Client {
    fn new(addr: SocketAddr, ca: &TestCa) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().into()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Client {
            addr,
            config: Arc::new(config),
        }
    }

    fn connect(&self) -> Conn {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = rustls::ClientConnection::new(self.config.clone(), name).unwrap();
        BufReader::new(rustls::StreamOwned::new(tls, stream))
    }
}

struct RunResult {
    rate: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    non_200: usize,
    /// Server CPU time (user + system) per request.
    cpu_per_request: Duration,
    /// CPU time of this process (the load generator: TLS, HTTP, the threads) per request.
    generator_cpu_per_request: Duration,
    /// The same, per kind of server thread (name without its number), largest first.
    cpu_by_thread: Vec<(String, Duration)>,
}

/// Sends `requests` over `concurrency` keep-alive connections, each as fast as answers come;
/// with `pace`, each connection sends one request per `pace` (open loop: a late answer does
/// not delay the schedule, it only makes the next request go at once).
fn run(
    client: &Client,
    pid: u32,
    requests: &[Arc<Vec<u8>>],
    concurrency: usize,
    pace: Option<Duration>,
) -> RunResult {
    let chunk = requests.len().div_ceil(concurrency);
    let cpu_before = cpu_time(pid);
    let generator_before = proc_stat::process_cpu("self");
    let threads_before = cpu_by_thread(pid);
    let started = Instant::now();
    let threads: Vec<_> = requests
        .chunks(chunk)
        .enumerate()
        .map(|(k, part)| {
            let part: Vec<Arc<Vec<u8>>> = part.to_vec();
            let client = client.clone();
            std::thread::spawn(move || {
                let mut conn = client.connect();
                let mut lat = Vec::with_capacity(part.len());
                let mut bad = 0;
                // Spread the connections' schedules over one interval.
                let start = Instant::now()
                    + pace.map_or(Duration::ZERO, |p| p * k as u32 / concurrency as u32);
                for (j, r) in part.iter().enumerate() {
                    if let Some(p) = pace {
                        let due = start + p * j as u32;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let t = Instant::now();
                    let (status, close) = exchange_keep_alive(&mut conn, r);
                    if status != 200 {
                        bad += 1;
                    }
                    lat.push(t.elapsed());
                    if close {
                        conn = client.connect();
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
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    let generator = proc_stat::process_cpu("self").saturating_sub(generator_before);
    let n = lat.len().max(1) as u32;
    let mut cpu_by_thread: Vec<(String, Duration)> = cpu_by_thread(pid)
        .into_iter()
        .map(|(kind, t)| {
            let before = threads_before.get(&kind).copied().unwrap_or_default();
            (kind, t.saturating_sub(before) / n)
        })
        .collect();
    cpu_by_thread.sort_by_key(|x| std::cmp::Reverse(x.1));
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    RunResult {
        rate: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p90: pct(0.90),
        p99: pct(0.99),
        max: *lat.last().unwrap(),
        non_200,
        cpu_per_request: cpu / lat.len() as u32,
        generator_cpu_per_request: generator / lat.len() as u32,
        cpu_by_thread,
    }
}

/// User + system CPU time of a process so far (/proc/PID/stat, clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    proc_stat::process_cpu(&pid.to_string())
}

/// CPU time of the server's threads, summed per kind: the thread's name without a trailing
/// number (`http-worker-3` counts as `http-worker`). Threads that ended are not counted.
fn cpu_by_thread(pid: u32) -> std::collections::HashMap<String, Duration> {
    let mut out = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let name = name.trim().trim_end_matches(|c: char| c.is_ascii_digit());
        let kind = name.strip_suffix('-').unwrap_or(name).to_owned();
        let t = proc_stat::stat_cpu(
            &std::fs::read_to_string(task.path().join("stat")).unwrap_or_default(),
        );
        *out.entry(kind).or_default() += t;
    }
    out
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

/// Watches the WAL file's size every 10 ms; `max` holds the largest seen.
struct WalWatch {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WalWatch {
    fn start(wal: &Path) -> WalWatch {
        let max = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (max, stop, wal) = (max.clone(), stop.clone(), wal.to_owned());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
                    max.fetch_max(size, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        WalWatch {
            max,
            stop,
            thread: Some(thread),
        }
    }

    /// The largest size seen since the last call, and starts over.
    fn take(&self) -> u64 {
        self.max.swap(0, Ordering::Relaxed)
    }
}

impl Drop for WalWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every signature and hash the server must compute for one request of the real shape,
/// measured here on one core: the request's signature, the invite's signature, content hash
/// and event ID, each room-state PDU's signature, content hash and event ID (room version 12
/// checks them), and our co-signature.
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
    let state: Vec<_> = body["invite_room_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_object().unwrap().clone())
        .collect();
    let creds = x_matrix::parse_header(auth.as_bytes()).unwrap().unwrap();
    let vk = VerifyKey::from_base64(&common::origin::public_b64(origin.key())).unwrap();
    let us = ServerName::parse(US).unwrap();
    let rv = invited_matrix::RoomVersion::by_id("12").unwrap();
    let ours = invited_matrix::SigningKey::from_seed(KeyId::parse("ed25519:b").unwrap(), &[7; 32]);
    let keys = |_: &str, _: &KeyId| Some(vk);
    let rounds = 1000;
    let started = Instant::now();
    for _ in 0..rounds {
        let signed = x_matrix::request_object("PUT", &sample.path, &creds.origin, &us, Some(&body));
        x_matrix::verify_request(&creds, &signed, &vk).unwrap();
        for pdu in std::iter::once(&event).chain(&state) {
            invited_matrix::verify_event_signatures(pdu, rv, &keys).unwrap();
            invited_matrix::check_content_hash(pdu).unwrap();
            let _ = invited_matrix::event_id(pdu, rv).unwrap();
        }
        let mut e = event.clone();
        invited_matrix::sign_event(&mut e, rv, &us, &ours).unwrap();
    }
    started.elapsed() / rounds
}

/// Database file bytes per stored invite after a truncating checkpoint (the WAL copied in and
/// emptied), and the invites stored.
fn bytes_per_invite(db: &Path) -> (f64, i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let invites: i64 = conn
        .query_row("SELECT count(*) FROM invites", [], |r| r.get(0))
        .unwrap();
    let size = std::fs::metadata(db).unwrap().len();
    // For a look at where the bytes go (e.g. with SQLite's dbstat), keep a copy.
    if let Ok(copy) = std::env::var("KEEP_DB") {
        std::fs::copy(db, copy).unwrap();
    }
    (size as f64 / invites.max(1) as f64, invites)
}

/// One unlabelled sample from the server's `/metrics` (0 when absent).
fn scrape(addr: SocketAddr, name: &str) -> f64 {
    let text = common::agent(None)
        .get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let n: usize = env_or("INVITES", 5_000);
    let levels: Vec<usize> = std::env::var("LEVELS")
        .unwrap_or_else(|_| "1,4,16,32,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let ca = TestCa::new();
    let origin = TestOrigin::start(&ca);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers: Option<usize> = std::env::var("WORKERS").ok().and_then(|v| v.parse().ok());
    // The metrics listener, for the WAL restarts the writer made (a free port, found here).
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let config = write_config(
        dir.path(),
        US,
        &format!(
            "[metrics]\nlisten = \"{metrics_addr}\"\n{}",
            "[federation]\nca_file = \"ca.pem\"\nip_range_allowlist = [\"127.0.0.0/8\"]\n\
         [rate_limits]\nper_origin_per_second = 1000000.0\nper_origin_burst = 1000000\n\
         per_invitee_per_second = 1000000.0\nper_invitee_burst = 1000000\n\
         total_per_second = 1000000.0\ntotal_burst = 1000000\n\
         [http]\nmax_connections_per_ip = 1024\n\
         [tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n"
        ),
    );
    // Without WORKERS, the server's own default.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "workers = 2\n",
        &workers.map_or(String::new(), |w| format!("workers = {w}\n")),
    );
    std::fs::write(&config, text).unwrap();
    // Per-request info lines would cost the server time; keep the start-up line.
    let invited = Invited::start_with_env(&config, &[("RUST_LOG", "warn,invited::server=info")]);
    let pid = invited.pid();
    let client = Client::new(invited.addr, &ca);
    let db = dir.path().join("data").join("invited.db");
    let wal = WalWatch::start(&db.with_extension("db-wal"));

    let real_levels = levels.len() + 1; // and the paced run
    eprintln!(
        "preparing {} invites of the real shape (a room each)…",
        n * real_levels
    );
    let real: Vec<Prepared> = (0..n * real_levels)
        .map(|i| {
            let (state, room_id) = synapse_room_state(&origin, i);
            prepare(&origin, &state, &room_id, i)
        })
        .collect();
    eprintln!("preparing {n} invites of the same-room shape…");
    let (shared_state, shared_room) = synapse_room_state(&origin, usize::MAX / 2);
    let same_room: Vec<Prepared> = (0..n)
        .map(|i| prepare(&origin, &shared_state, &shared_room, n * real_levels + i))
        .collect();
    // Warm the key cache (and the TLS session machinery).
    let (warm_state, warm_room) = synapse_room_state(&origin, usize::MAX / 3);
    let warm = prepare(&origin, &warm_state, &warm_room, usize::MAX / 3);
    assert_eq!(
        exchange_keep_alive(&mut client.connect(), &warm.request).0,
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
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    println!(
        "machine: {cores} cores, {cpu}; server: {} workers ({threads} threads); HTTPS keep-alive; \
         load generator on the same cores",
        workers.map_or("default".to_owned(), |w| w.to_string())
    );
    println!(
        "request: {} bytes (4 full PDUs of room state); {n} invites per row\n",
        real[0].request.len()
    );
    println!(
        "| shape | connections | invites/s | server CPU per invite | p50 | p90 | p99 | max | largest WAL | non-200 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    let row = |shape: &str, c: usize, r: &RunResult, wal_max: u64| {
        println!(
            "| {shape} | {c} | {:.0} | {:.0} µs | {} | {} | {} | {} | {} | {} |",
            r.rate,
            r.cpu_per_request.as_secs_f64() * 1e6,
            ms(r.p50),
            ms(r.p90),
            ms(r.p99),
            ms(r.max),
            mib(wal_max),
            r.non_200
        );
    };
    let arcs = |ps: &[Prepared]| -> Vec<Arc<Vec<u8>>> {
        ps.iter().map(|p| Arc::new(p.request.clone())).collect()
    };
    let mut by_thread: Vec<(String, Vec<(String, Duration)>)> = Vec::new();
    let mut best = 0.0f64;
    let mut best_cpu = Duration::MAX;
    let mut at_32 = None;
    let mut wal_overall = 0u64;
    let mut both_at_32 = None;
    for (li, c) in levels.iter().enumerate() {
        wal.take();
        let r = run(&client, pid, &arcs(&real[li * n..(li + 1) * n]), *c, None);
        let w = wal.take();
        wal_overall = wal_overall.max(w);
        row("real: a room each", *c, &r, w);
        by_thread.push((format!("real, {c} connections"), r.cpu_by_thread.clone()));
        best = best.max(r.rate);
        best_cpu = best_cpu.min(r.cpu_per_request);
        if *c == 32 {
            at_32 = Some(r.rate);
            both_at_32 = Some((r.cpu_per_request, r.generator_cpu_per_request));
        }
    }
    // Half the peak rate (at 32 connections, or the best level), paced.
    let half = at_32.unwrap_or(best) / 2.0;
    let conns = 32;
    let pace = Duration::from_secs_f64(conns as f64 / half);
    wal.take();
    let paced = run(
        &client,
        pid,
        &arcs(&real[levels.len() * n..(levels.len() + 1) * n]),
        conns,
        Some(pace),
    );
    let w = wal.take();
    wal_overall = wal_overall.max(w);
    row(
        &format!("real, paced at {half:.0}/s (half the peak)"),
        conns,
        &paced,
        w,
    );
    // Measured before the same-room rows, whose invites share their room state's PDUs.
    let (per_invite, stored) = bytes_per_invite(&db);
    by_thread.push(("real, paced".into(), paced.cpu_by_thread.clone()));
    let same = run(&client, pid, &arcs(&same_room), 32, None);
    row("same room", 32, &same, wal.take());
    by_thread.push((
        "same room, 32 connections".into(),
        same.cpu_by_thread.clone(),
    ));
    let retry: Vec<Arc<Vec<u8>>> = (0..n).map(|_| Arc::new(warm.request.clone())).collect();
    let r = run(&client, pid, &retry, 16, None);
    row("retries of one invite", 16, &r, wal.take());
    drop(wal);

    // Where the server's CPU went, per kind of thread.
    let mut kinds: Vec<String> = Vec::new();
    for (_, threads) in &by_thread {
        for (kind, t) in threads {
            if !kinds.contains(kind) && !t.is_zero() {
                kinds.push(kind.clone());
            }
        }
    }
    println!("\nserver CPU per invite by thread:\n");
    println!("| run | {} |", kinds.join(" | "));
    println!("|---|{}", "---|".repeat(kinds.len()));
    for (run, threads) in &by_thread {
        let cells: Vec<String> = kinds
            .iter()
            .map(|k| {
                let t = threads
                    .iter()
                    .find(|(n, _)| n == k)
                    .map_or(Duration::ZERO, |x| x.1);
                format!("{:.0} µs", t.as_secs_f64() * 1e6)
            })
            .collect();
        println!("| {run} | {} |", cells.join(" | "));
    }

    let rss = peak_rss_mib(pid);
    let floor = crypto_floor(&origin, &real[0]);
    let floor_rate = 1.0 / floor.as_secs_f64();
    println!(
        "\npeak RSS of the server: {rss:.1} MiB; largest WAL during the real-shape runs: {}",
        mib(wal_overall)
    );
    println!(
        "database: {:.0} bytes per invite of the real shape ({stored} invites, after a truncating \
         checkpoint)",
        per_invite
    );
    println!(
        "floor of one real-shape request (request signature, 5 event signatures + content hashes + \
         event IDs, co-sign), one core: {:.0} µs = {:.0} invites/s per core",
        floor.as_secs_f64() * 1e6,
        floor_rate
    );
    println!(
        "lowest server CPU per invite: {:.0} µs = {:.1}× the floor; best rate {:.0}/s = {:.0} % of the \
         {cores}-core floor",
        best_cpu.as_secs_f64() * 1e6,
        best_cpu.as_secs_f64() / floor.as_secs_f64(),
        best,
        best / (floor_rate * cores as f64) * 100.0
    );
    // How long the writer held batches back to make the WAL start over.
    let restarts = scrape(metrics_addr, "invited_wal_restart_duration_seconds_count");
    let restart_secs = scrape(metrics_addr, "invited_wal_restart_duration_seconds_sum");
    println!(
        "WAL restarts: {restarts:.0}, the writer paused {:.1} ms each on average",
        restart_secs / restarts.max(1.0) * 1000.0
    );
    // The load generator shares the cores: what it spends per invite caps the rate too.
    if let Some((server, generator)) = both_at_32 {
        let both = server + generator;
        println!(
            "at 32 connections: server {:.0} µs + load generator {:.0} µs of CPU per invite = \
             {:.0} µs: the {cores} cores' ceiling for this pair is {:.0} invites/s",
            server.as_secs_f64() * 1e6,
            generator.as_secs_f64() * 1e6,
            both.as_secs_f64() * 1e6,
            cores as f64 / both.as_secs_f64()
        );
    }
}
