//! Hostile federation against the real binary: what one authenticated but hostile origin can
//! make invited spend. Each test names the bound it proves. All traffic stays on loopback;
//! the "servers" a hostile invite names are listeners here that accept and never answer, so
//! any connection invited makes to them is counted.
//!
//! These tests run the release binary when `INVITED_RELEASE_BIN` names it (`scripts/test.sh`
//! builds it and sets it), so their memory and latency figures are a deployment's; otherwise
//! the debug build.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use common::invites::{
    Answer, Harness, Invite, US, assert_error, invite_in_room, invite_path, put_raw, put_signed,
    valid_invite,
};
use common::origin::{KeyServerMode, TestOrigin};
use common::wire::{exchange_on, request_bytes};
use common::{connect_from, release_bin, run_cli};
use serde_json::{Value as J, json};

const BOB: &str = "@bob:invited.test";

/// [`under_every_attack_at_once_a_known_origin_is_served`] measures latency and memory on what
/// may be a two-core machine: it runs alone (`write`), the other tests of this file side by
/// side (`read`).
static MACHINE: RwLock<()> = RwLock::new(());

/// The machine, shared with the other tests of this file but not with the measuring one.
fn shared_machine() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(PoisonError::into_inner)
}

/// Listeners on loopback that accept connections (the kernel does) and never answer.
struct SilentServers(Vec<TcpListener>);

impl SilentServers {
    fn new(n: usize) -> SilentServers {
        SilentServers(
            (0..n)
                .map(|_| {
                    let l = TcpListener::bind("127.0.0.1:0").unwrap();
                    l.set_nonblocking(true).unwrap();
                    l
                })
                .collect(),
        )
    }

    fn names(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|l| format!("127.0.0.1:{}", l.local_addr().unwrap().port()))
            .collect()
    }

    /// Connections made to any of them so far.
    fn connections(&self) -> usize {
        self.per_server().iter().sum()
    }

    /// Connections made to each of them so far.
    fn per_server(&self) -> Vec<usize> {
        self.0
            .iter()
            .map(|l| std::iter::from_fn(|| l.accept().ok()).count())
            .collect()
    }
}

/// invited (the release binary, see above) with 2 workers and `extra` TOML, with its test
/// origin.
fn start(extra: &str) -> Harness {
    Harness::start_bin(&release_bin(), Some(2), extra)
}

fn put(h: &Harness, inv: &Invite) -> Answer {
    put_signed(&h.invited, &h.origin, inv)
}

/// Invites in the database.
fn stored_invites(h: &Harness) -> i64 {
    h.invited
        .db()
        .query_row("SELECT count(*) FROM invites", [], |r| r.get(0))
        .unwrap()
}

/// A room-state PDU that claims to come from `server`: an origin-signed state event whose
/// sender and signature are moved to that server's name (its signature cannot verify, but
/// checking it needs `server`'s key).
fn pdu_from(origin: &TestOrigin, version: &str, room_id: &str, server: &str) -> J {
    let mut pdu = origin.state_event(
        version,
        room_id,
        "m.room.member",
        json!({"membership": "join"}),
    );
    let user = format!("@u:{server}");
    pdu["sender"] = json!(user);
    pdu["state_key"] = json!(user);
    let signature = pdu["signatures"][origin.name()].clone();
    pdu["signatures"] = json!({ server: signature });
    pdu
}

/// An invite whose room state names 40 servers (each a silent listener) makes no connection
/// to any of them: their keys are not ours to fetch for room state. Room version 11 answers
/// 200 with warnings; version 12 (where MSC4311 failures are fatal) refuses, also at once.
#[test]
fn room_state_signers_are_never_fetched() {
    let _machine = shared_machine();
    let h = start("");
    let silent = SilentServers::new(40);
    for (version, expect) in [("11", 200), ("12", 400)] {
        let (create, room_id) = h.origin.create_event(version, "alice");
        let mut state = vec![create];
        state.extend(
            silent
                .names()
                .iter()
                .map(|s| pdu_from(&h.origin, version, &room_id, s)),
        );
        let inv = invite_in_room(&h.origin, version, &room_id, &state, BOB);
        let started = Instant::now();
        let answer = put(&h, &inv);
        assert_eq!(
            answer.status, expect,
            "room version {version}: {}",
            answer.text
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "room version {version}: took {:?}",
            started.elapsed()
        );
        assert_eq!(silent.connections(), 0, "room version {version}");
    }
    // Warnings are capped per invite (20, then a count) and cut to size.
    let (warnings, longest): (i64, i64) = h
        .invited
        .db()
        .query_row(
            "SELECT count(*), max(length(CAST(warning AS BLOB))) FROM invite_warnings",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(warnings, 21, "20 warnings and one that counts the rest");
    assert!(longest <= 512, "a warning of {longest} bytes");
}

/// Room state is capped: more entries than `[invites] max_room_state_entries`, or more bytes
/// than `max_room_state_bytes`, is 413 M_TOO_LARGE, and nothing is stored.
#[test]
fn room_state_is_capped() {
    let _machine = shared_machine();
    let h = start("[invites]\nmax_room_state_entries = 10\nmax_room_state_bytes = 65536\n");
    let (create, room_id) = h.origin.create_event("11", "alice");
    let mut state = vec![create.clone()];
    for i in 0..10 {
        state.push(
            h.origin
                .state_event("11", &room_id, &format!("m.example.{i}"), json!({})),
        );
    }
    let inv = invite_in_room(&h.origin, "11", &room_id, &state, BOB);
    assert_error(&put(&h, &inv), 413, "M_TOO_LARGE", "11 entries");

    // Three events of 30 kB each (a PDU may be 64 kB): 90 kB in all.
    let mut state = vec![create];
    for i in 0..3 {
        state.push(h.origin.state_event(
            "11",
            &room_id,
            &format!("m.example.{i}"),
            json!({"filler": "x".repeat(30_000)}),
        ));
    }
    let inv = invite_in_room(&h.origin, "11", &room_id, &state, BOB);
    assert_error(&put(&h, &inv), 413, "M_TOO_LARGE", "90 kB of room state");
    assert_eq!(stored_invites(&h), 0);
}

/// Policy runs before any key is fetched for the invite: a refused invite whose create event
/// names a silent server (whose keys MSC4311 would otherwise make us fetch) is refused at once,
/// without a connection.
#[test]
fn policy_refuses_before_fetching_keys() {
    let _machine = shared_machine();
    let h = start("");
    let silent = SilentServers::new(1);
    let creator = format!("@c:{}", silent.names()[0]);
    let out = run_cli(
        Some(&h.invited.config_path),
        &["policy", "deny-server", h.origin.name()],
    );
    assert!(out.status.success(), "{out:?}");
    let (mut create, room_id) = h.origin.create_event("11", "alice");
    create["sender"] = json!(creator);
    let inv = invite_in_room(&h.origin, "11", &room_id, &[create], BOB);
    let started = Instant::now();
    assert_error(&put(&h, &inv), 403, "M_FORBIDDEN", "denied origin");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(silent.connections(), 0);
}

/// A refused request's fields are cut before they reach the refusal log (a 200 kB `sender`
/// costs at most a few hundred bytes), and a flood of refusals from one origin is logged at a
/// bounded rate, the rest counted in `suppressed`.
#[test]
fn the_refusal_log_is_bounded() {
    let _machine = shared_machine();
    let h = start("");
    let mut raw = h.origin.raw_invite("11", "!r:elsewhere.test", BOB);
    raw["sender"] = json!(format!("@{}:{}", "m".repeat(200_000), h.origin.name()));
    let body = json!({"room_version": "11", "event": raw, "invite_room_state": []});
    let path = common::invites::invite_path(2, "!r:elsewhere.test", "$e");
    let sent = 120;
    for _ in 0..sent {
        let header = h.origin.sign_request("PUT", &path, US, Some(&body));
        let answer = put_raw(
            &h.invited,
            &path,
            &serde_json::to_vec(&body).unwrap(),
            Some(&header),
        );
        // Over the event size limit: refused before the 255-byte check of `sender`.
        assert_eq!(answer.status, 413, "{}", answer.text);
    }
    // The writer logs refusals without a waiter: give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let (rows, longest, suppressed): (i64, i64, i64) = h
        .invited
        .db()
        .query_row(
            "SELECT count(*), max(length(CAST(sender AS BLOB))), sum(suppressed) FROM refusals",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(longest <= 255, "a sender of {longest} bytes was logged");
    assert!((1..40).contains(&rows), "{rows} rows for {sent} refusals");
    assert!(rows + suppressed <= sent, "{rows} + {suppressed} > {sent}");
}

/// Below the free-space watermark, a valid invite gets 503 with `Retry-After` (senders retry
/// later) and nothing is stored; the disk never fills with invites.
#[test]
fn low_disk_space_is_a_503_not_a_full_disk() {
    // A watermark of 1 PiB: no test machine has that much free.
    let h = start("[invites]\nmin_free_disk_mb = 1073741824\n");
    let inv = common::invites::valid_invite(&h.origin, "11", BOB);
    let answer = put(&h, &inv);
    assert_error(&answer, 503, "M_UNKNOWN", "low disk space");
    assert_eq!(answer.retry_after.as_deref(), Some("60"));
    assert_eq!(stored_invites(&h), 0);
}

/// Past the ceiling on new invites over all origins, 503 with `Retry-After`: our capacity, a
/// status senders retry, never one they drop the invite on.
#[test]
fn new_invites_have_a_ceiling_over_all_origins() {
    let _machine = shared_machine();
    let h = start("[rate_limits]\ntotal_per_second = 0.01\ntotal_burst = 2\n");
    for i in 0..2 {
        let inv = common::invites::valid_invite(&h.origin, "11", BOB);
        assert_eq!(put(&h, &inv).status, 200, "invite {i}");
    }
    let inv = common::invites::valid_invite(&h.origin, "11", BOB);
    let answer = put(&h, &inv);
    assert_error(&answer, 503, "M_UNKNOWN", "over the ceiling");
    assert!(answer.retry_after.is_some());
}

/// Keys fetched for a request that does not authenticate are kept in memory only: a
/// throw-away name costs no row in `remote_keys`. Once the server authenticates a request,
/// its keys are stored.
#[test]
fn keys_of_servers_that_never_authenticated_are_not_stored() {
    let _machine = shared_machine();
    let h = start("");
    let inv = common::invites::valid_invite(&h.origin, "11", BOB);
    let good = h.origin.sign_request("PUT", &inv.path, US, Some(&inv.body));
    // The same header with a signature that cannot verify (invited fetches the key to see).
    let sig = good.split("sig=\"").nth(1).unwrap().trim_end_matches('"');
    let bad = good.replace(sig, &format!("A{}", &sig[1..]));
    let body = serde_json::to_vec(&inv.body).unwrap();
    let answer = put_raw(&h.invited, &inv.path, &body, Some(&bad));
    assert_error(&answer, 401, "M_UNAUTHORIZED", "bad signature");
    let rows = |h: &Harness| -> i64 {
        h.invited
            .db()
            .query_row(
                "SELECT count(*) FROM remote_keys WHERE server_name = ?1",
                [h.origin.name()],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(rows(&h), 0, "keys of a server that authenticated nothing");
    assert_eq!(
        put_raw(&h.invited, &inv.path, &body, Some(&good)).status,
        200
    );
    assert!(
        rows(&h) >= 1,
        "keys of a server that authenticated a request"
    );
}

/// One key fetch has one deadline, covering discovery, the server itself and every notary.
/// An origin and a notary that accept connections and never answer cost
/// `key_fetch_deadline_secs` in all, not a timeout per step; the request is then answered 401.
/// A key that was not fetched because fetch capacity was busy says nothing about the invite:
/// the answer is 503 (which senders retry), not the 400 a room version 12 invite with an
/// unverifiable create event gets, nor a stored warning. Once capacity is free, the same
/// invite is accepted.
#[test]
fn busy_key_fetches_are_a_503_not_a_verdict() {
    let _machine = shared_machine();
    let silent = SilentServers::new(1);
    // Two workers: one may wait on fetches; a silent origin holds it for the deadline.
    let h = start("key_fetch_deadline_secs = 3\n");
    let warm = common::invites::valid_invite(&h.origin, "12", BOB);
    assert_eq!(put(&h, &warm).status, 200, "the origin's key is cached");
    let creator = TestOrigin::start_as(&h.ca, "localhost");
    let (create, room_id) = creator.create_event("12", "founder");
    let inv = invite_in_room(&h.origin, "12", &room_id, &[create], BOB);

    let held = {
        let other = common::invites::valid_invite(&h.origin, "11", BOB);
        let header = h
            .origin
            .sign_request("PUT", &other.path, US, Some(&other.body))
            .replace(
                &format!("origin=\"{}\"", h.origin.name()),
                &format!("origin=\"{}\"", silent.names()[0]),
            );
        let body = serde_json::to_vec(&other.body).unwrap();
        let invited = &h.invited;
        let path = other.path.clone();
        std::thread::scope(|s| {
            let holder = s.spawn(move || put_raw(invited, &path, &body, Some(&header)).status);
            std::thread::sleep(Duration::from_millis(500));
            let busy = put(&h, &inv);
            (holder.join().unwrap(), busy)
        })
    };
    assert_eq!(held.0, 401, "the silent origin's request");
    assert_error(
        &held.1,
        503,
        "M_UNKNOWN",
        "a key not fetched for want of capacity",
    );
    assert!(
        creator.hits() == 0,
        "the creator was not asked while capacity was busy"
    );
    assert_eq!(put(&h, &inv).status, 200, "the retry, capacity free");
    assert!(creator.hits() >= 1);
}

#[test]
fn a_key_fetch_has_one_deadline() {
    let _machine = shared_machine();
    let silent = SilentServers::new(2);
    let names = silent.names();
    let h = start(&format!(
        "trusted_key_servers = [\"{}\"]\nkey_fetch_deadline_secs = 2\n",
        names[1]
    ));
    let inv = common::invites::valid_invite(&h.origin, "11", BOB);
    let header = h
        .origin
        .sign_request("PUT", &inv.path, US, Some(&inv.body))
        .replace(
            &format!("origin=\"{}\"", h.origin.name()),
            &format!("origin=\"{}\"", names[0]),
        );
    let body = serde_json::to_vec(&inv.body).unwrap();
    let started = Instant::now();
    let answer = put_raw(&h.invited, &inv.path, &body, Some(&header));
    let took = started.elapsed();
    assert_error(&answer, 401, "M_UNAUTHORIZED", "no key in time");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "the fetch took {took:?} with a deadline of 2 s"
    );
    assert!(silent.connections() >= 1, "the origin was asked");
}

// ---------------------------------------------------------------------------------------------
// Every attack at once, against the release binary with its default limits.

/// How long the attacks run, the prober with them (env `ABUSE_ATTACK_SECS` to run longer and
/// see whether memory levels off).
const ATTACK: Duration = Duration::from_secs(30);
/// The prober sends a fresh valid invite this often...
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// ...and each must be answered 200 within this.
const PROBE_MAX: Duration = Duration::from_secs(2);
/// invited's resident memory is read this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Hostile key servers, and the extra `verify_keys` each one's response lists: some 75 bytes
/// a key, so about 500 KiB in all, just under the 512 KiB invited reads of a response.
const KEY_SERVERS: usize = 20;
const PADDING_KEYS: usize = 6_700;

/// Invites whose room state names silent servers, and how many each names: with the create
/// event, `[invites] max_room_state_entries` (50 by default).
const FAN_OUT_INVITES: usize = 30;
const SIGNERS_PER_INVITE: usize = 49;
/// Every this many fan-out invites, the room's create event is sent by a silent server too:
/// the one room-state server MSC4311 makes invited fetch keys of (besides the origin).
const SILENT_CREATOR_EVERY: usize = 3;

/// Threads sending ~1 MiB unauthenticated bodies, each one at a time.
const FLOOD_THREADS: usize = 16;

/// Connections one client (127.0.0.2) keeps trying to hold: four times
/// `[http] max_connections_per_ip` (64 by default).
const HELD_CONNECTIONS: usize = 256;
const MAX_CONNECTIONS_PER_IP: usize = 64;

/// Peak resident memory under all the attacks. What the design bounds it by: request bodies
/// buffered at once (`[http] max_buffered_body_mb`, 32 MiB), the memory every JSON body
/// reserves until answered (`[http] max_json_memory_mb`, 64 MiB: 24 bytes a byte, the
/// parser's own budget plus the canonical copies for signatures), the binary and its caches
/// (~12 MiB), and what the allocator keeps (two arenas, 4 MiB trim threshold): ~110 MiB.
/// Measured on the development machine (2 cores, 16 workers): 125 MiB peak, ~100 MiB after.
/// The bound is 1.5 times that. (Before objects were flat vectors, the parser had a budget
/// and bodies a shared reservation, the same attacks took 690-900 MiB.)
const RSS_BOUND_KIB: u64 = 192 * 1024;
/// Database + WAL after the attacks. Measured 1.5-2.0 MiB at 30 s: the probes' 120 invites
/// and the 15 stored fan-out invites (50 room-state entries each) are most of it; the 400+ MB
/// of long refused fields cost 50 refusal rows, ~23 KB of text in all. Twice that.
const DB_BOUND_BYTES: u64 = 4 * 1024 * 1024;
/// Refusal rows at most: each origin's log is a token bucket of 20 and 1 a second.
const REFUSAL_BURST: u64 = 20;

fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Sends `bytes` on a new connection from `from`; the status of the answer, or why there is
/// none.
fn send_from(from: Ipv4Addr, to: SocketAddr, bytes: Vec<u8>) -> Result<u16, String> {
    let stream = connect_from(from, to).map_err(|e| format!("connect from {from}: {e}"))?;
    exchange_on(stream, bytes, Duration::from_secs(20), Duration::ZERO).map(|r| r.status)
}

/// Answers counted by status (`0`: no answer).
type Tally = BTreeMap<u16, usize>;

fn count(tally: &mut Tally, answer: &Result<u16, String>) {
    *tally.entry(*answer.as_ref().unwrap_or(&0)).or_default() += 1;
}

fn merge(tallies: impl IntoIterator<Item = Tally>) -> Tally {
    let mut all = Tally::new();
    for t in tallies {
        for (status, n) in t {
            *all.entry(status).or_default() += n;
        }
    }
    all
}

/// The bytes of a PUT of `body` to `path`, with this `Authorization` if any.
fn put_bytes(path: &str, auth: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut headers: Vec<(&str, &[u8])> = vec![("Content-Type", b"application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a.as_bytes()));
    }
    request_bytes("PUT", path, &headers, Some(body))
}

/// Sleeps until `due` (at once if it has passed).
fn sleep_until(due: Instant) {
    if let Some(left) = due.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
}

/// a. Each hostile key server is named as the origin of signed requests, in turn a profile
/// query and an invite, from an address of its own (so the per-address share of key fetches
/// does not hide the load). Their keys never verify anything: the answers must be 401, or
/// 503 while key fetches are busy.
fn name_hostile_key_servers(h: &Harness, servers: &[TestOrigin], stop: &AtomicBool) -> Vec<Tally> {
    std::thread::scope(|s| {
        let threads: Vec<_> = servers
            .iter()
            .enumerate()
            .map(|(i, server)| {
                let uri = format!("/_matrix/federation/v1/query/profile?user_id=%40bob%3A{US}");
                let query = request_bytes(
                    "GET",
                    &uri,
                    &[(
                        "Authorization",
                        server.sign_request("GET", &uri, US, None).as_bytes(),
                    )],
                    None,
                );
                let inv = valid_invite(server, "11", BOB);
                let invite = put_bytes(
                    &inv.path,
                    Some(&server.sign_request("PUT", &inv.path, US, Some(&inv.body))),
                    &serde_json::to_vec(&inv.body).unwrap(),
                );
                let from = loopback(10 + u8::try_from(i).unwrap());
                let to = h.invited.addr;
                s.spawn(move || {
                    let mut tally = Tally::new();
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let bytes = if n % 2 == 0 { &query } else { &invite };
                        count(&mut tally, &send_from(from, to, bytes.clone()));
                        n += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    tally
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

/// b. Invites from `evil` whose room state names silent servers: one naming all of them (over
/// the entry cap), then [`FAN_OUT_INVITES`] naming [`SIGNERS_PER_INVITE`] fresh ones each,
/// spread over the first half of the attack; every [`SILENT_CREATOR_EVERY`]th also has a silent room creator.
/// Room version 11 answers 200 (with warnings), 12 refuses with 400.
struct FanOut {
    /// Named as signers of room state only.
    signers: SilentServers,
    /// Named as room creators.
    creators: SilentServers,
    /// (request bytes, the status expected).
    requests: Vec<(Vec<u8>, u16)>,
}

impl FanOut {
    fn new(evil: &TestOrigin) -> FanOut {
        let signers = SilentServers::new(FAN_OUT_INVITES * SIGNERS_PER_INVITE);
        let creators = SilentServers::new(FAN_OUT_INVITES.div_ceil(SILENT_CREATOR_EVERY));
        let (signer_names, creator_names) = (signers.names(), creators.names());
        let mut all_state = Vec::new();
        let mut requests = Vec::new();
        for i in 0..FAN_OUT_INVITES {
            let version = if i % 2 == 0 { "11" } else { "12" };
            let (mut create, room_id) = evil.create_event(version, "alice");
            if i % SILENT_CREATOR_EVERY == 0 {
                let creator = &creator_names[i / SILENT_CREATOR_EVERY];
                create["sender"] = json!(format!("@c:{creator}"));
                let signature = create["signatures"][evil.name()].clone();
                create["signatures"] = json!({ creator.as_str(): signature });
            }
            let mut state = vec![create];
            let names = &signer_names[i * SIGNERS_PER_INVITE..(i + 1) * SIGNERS_PER_INVITE];
            state.extend(names.iter().map(|n| pdu_from(evil, version, &room_id, n)));
            let inv = invite_in_room(evil, version, &room_id, &state, &format!("@fan{i}:{US}"));
            all_state.extend(state);
            let expect = if version == "11" { 200 } else { 400 };
            requests.push((signed_put(evil, &inv), expect));
        }
        // One invite naming every one of them: refused by the entry cap, before any key.
        let (create, room_id) = evil.create_event("11", "alice");
        all_state.insert(0, create);
        let inv = invite_in_room(evil, "11", &room_id, &all_state, &format!("@fan:{US}"));
        let everything = signed_put(evil, &inv);
        assert!(everything.len() < 1024 * 1024, "{} bytes", everything.len());
        requests.insert(0, (everything, 413));
        FanOut {
            signers,
            creators,
            requests,
        }
    }

    /// Sends the requests from `from`, each on its own thread, spread over the first half of
    /// the attack (a silent creator holds its request for the key fetch's deadline); the
    /// answers that were not as expected.
    fn send(&self, from: Ipv4Addr, to: SocketAddr, begin: Instant) -> Vec<String> {
        let n = u32::try_from(self.requests.len()).unwrap();
        let spacing = attack_duration() / 2 / n;
        std::thread::scope(|s| {
            let sent: Vec<_> = (0..n)
                .zip(&self.requests)
                .map(|(i, (bytes, expect))| {
                    s.spawn(move || {
                        sleep_until(begin + spacing * i);
                        // A 503 (our memory or fetch capacity is busy) is retried, as senders
                        // do, for longer than one key fetch's deadline (15 s): the answer that
                        // counts is the one after.
                        let mut answer = send_from(from, to, bytes.clone());
                        for _ in 0..40 {
                            if answer != Ok(503) {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(500));
                            answer = send_from(from, to, bytes.clone());
                        }
                        (answer.as_ref() != Ok(expect))
                            .then(|| format!("fan-out invite {i}: {answer:?}, expected {expect}"))
                    })
                })
                .collect();
            sent.into_iter().filter_map(|t| t.join().unwrap()).collect()
        })
    }
}

/// The bytes of `inv` as a PUT signed by `origin`.
fn signed_put(origin: &TestOrigin, inv: &Invite) -> Vec<u8> {
    put_bytes(
        &inv.path,
        Some(&origin.sign_request("PUT", &inv.path, US, Some(&inv.body))),
        &serde_json::to_vec(&inv.body).unwrap(),
    )
}

/// c. Invites from `evil` (authenticated) whose sender, room ID and invitee are each hundreds
/// of kilobytes: refused 413 (over the event size limit), each a refusal to log.
fn long_field_invites(evil: &TestOrigin) -> Vec<Vec<u8>> {
    let path = invite_path(2, "!r:elsewhere.test", "$e");
    let long = |c: &str, n: usize| c.repeat(n);
    let variants: Vec<(usize, usize, usize)> = vec![
        (900_000, 10, 10),
        (10, 900_000, 10),
        (10, 10, 900_000),
        (300_000, 300_000, 300_000),
    ];
    variants
        .into_iter()
        .map(|(sender, room, invitee)| {
            let mut raw = evil.raw_invite("11", "!r:elsewhere.test", BOB);
            raw["sender"] = json!(format!("@{}:{}", long("m", sender), evil.name()));
            raw["room_id"] = json!(format!("!{}:{}", long("r", room), evil.name()));
            raw["state_key"] = json!(format!("@{}:{US}", long("s", invitee)));
            let body = json!({"room_version": "11", "event": raw, "invite_room_state": []});
            let bytes = serde_json::to_vec(&body).unwrap();
            assert!(bytes.len() < 1024 * 1024, "{} bytes", bytes.len());
            put_bytes(
                &path,
                Some(&evil.sign_request("PUT", &path, US, Some(&body))),
                &bytes,
            )
        })
        .collect()
}

/// d. Request bodies of up to 1 MiB that are not authenticated: no `Authorization`, or one
/// naming the prober's origin with a signature that does not verify. Each is read and parsed
/// (the signature covers the parsed content) before it is refused. They go to `/send`, whose
/// limit is the edge's 1 MiB (invites stop at `[invites] max_request_bytes`, 384 KiB, before
/// parsing). (bytes, what it is).
fn unauthenticated_bodies(origin: &TestOrigin) -> Vec<(Vec<u8>, &'static str)> {
    let path = "/_matrix/federation/v1/send/t1".to_owned();
    let list = |item: &str, n: usize| format!("[{}]", vec![item; n].join(","));
    // A signature by the origin's key over something else: well-formed, wrong.
    let forged = origin.sign_request("PUT", "/elsewhere", US, None);
    // Chains of 99 objects of one key each: the shape that costs the parser most per byte.
    let chain = format!("{}{{}}{}", "{\"a\":".repeat(99), "}".repeat(99));
    vec![
        (
            put_bytes(
                &path,
                None,
                format!("{{\"a\":\"{}\"}}", "x".repeat(1_000_000)).as_bytes(),
            ),
            "a 1 MB string, no Authorization",
        ),
        (
            put_bytes(
                &path,
                Some(&forged),
                list("\"aaaaaaaa\"", 95_000).as_bytes(),
            ),
            "95,000 strings, forged Authorization",
        ),
        (
            put_bytes(&path, None, list(&chain, 999).as_bytes()),
            "999 chains of 99 nested one-key objects, no Authorization",
        ),
        (
            put_bytes(&path, None, list("0", 200_000).as_bytes()),
            "200,000 values (over the parser's cap), no Authorization",
        ),
        (
            put_bytes(&path, Some(&forged), &vec![b' '; 1024 * 1024 + 1]),
            "1 MiB + 1 byte (over max_body_bytes), forged Authorization",
        ),
    ]
}

/// e. One client (127.0.0.2) keeps [`HELD_CONNECTIONS`] connections open: a third silent, a
/// third with half a request head, a third with a head and part of its body. Every half
/// second it reopens those invited closed. Returns (the most seen open half a second after a
/// round of reopening, connections made).
fn hold_connections(to: SocketAddr, stop: &AtomicBool) -> (usize, usize) {
    use std::io::{ErrorKind, Read, Write};
    let from = loopback(2);
    let mut held: Vec<Option<TcpStream>> = (0..HELD_CONNECTIONS).map(|_| None).collect();
    let (mut most_open, mut made) = (0, 0);
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::SeqCst) {
        for (i, slot) in held.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let Ok(mut c) = connect_from(from, to) else {
                continue;
            };
            made += 1;
            let start: &[u8] = match i % 3 {
                0 => b"",
                1 => b"PUT /_matrix/federation/v2/invite/%21r%3Aa/%24e HTTP/1.1\r\nHost: in",
                _ => b"PUT /_matrix/federation/v2/invite/%21r%3Aa/%24e HTTP/1.1\r\nHost: invited.test\r\nContent-Length: 65536\r\n\r\n{\"event\":",
            };
            let _ = c.write_all(start);
            c.set_nonblocking(true).unwrap();
            *slot = Some(c);
        }
        std::thread::sleep(Duration::from_millis(500));
        // Closed (EOF, reset) or answered (a 408 before closing): reopen next round.
        for slot in held.iter_mut() {
            let open = slot.as_mut().is_some_and(
                |c| matches!(c.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock),
            );
            if !open {
                *slot = None;
            }
        }
        most_open = most_open.max(held.iter().filter(|c| c.is_some()).count());
    }
    (most_open, made)
}

/// Sizes of the database, its WAL and its shared-memory index, in bytes.
fn database_bytes(h: &Harness) -> [u64; 3] {
    ["invited.db", "invited.db-wal", "invited.db-shm"]
        .map(|f| std::fs::metadata(h.invited.dir.join("data").join(f)).map_or(0, |m| m.len()))
}

/// How long the attacks run: [`ATTACK`], or `ABUSE_ATTACK_SECS`.
fn attack_duration() -> Duration {
    std::env::var("ABUSE_ATTACK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(ATTACK, Duration::from_secs)
}

/// The issue "Hostile federation: every resource an unauthenticated or throw-away origin can
/// reach is bounded", proven on the real release binary with its default limits: for
/// [`ATTACK`] every attack of this file runs at once, each from its own threads and address,
/// while a prober on 127.0.0.1 sends a fresh valid invite from a known origin every 250 ms.
/// Every probe must be answered 200 within [`PROBE_MAX`]; memory, disk and outbound
/// connections must stay within the stated bounds. Run with `--nocapture` for the figures:
/// `INVITED_RELEASE_BIN=target/release/invited cargo test --test abuse -- --nocapture
/// under_every_attack`.
#[test]
fn under_every_attack_at_once_a_known_origin_is_served() {
    let _machine = MACHINE.write().unwrap_or_else(PoisonError::into_inner);
    let test_began = Instant::now();
    let h = Harness::start_bin(&release_bin(), None, "");
    // "... (16 workers)" ends the start-up line, which may reach the log a moment after start.
    let workers = (0..100)
        .find_map(|_| {
            let log = h.invited.log();
            let found = log
                .split_once(" workers)")
                .map(|(before, _)| before.rsplit_once('(').map_or("?", |(_, n)| n).to_owned());
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            found
        })
        .unwrap_or_default();
    // The prober's origin is known: its key is cached (and stored) after a first invite.
    assert_eq!(put(&h, &valid_invite(&h.origin, "11", BOB)).status, 200);
    let evil = TestOrigin::start(&h.ca);
    assert_eq!(
        put_signed(&h.invited, &evil, &valid_invite(&evil, "11", BOB)).status,
        200
    );

    let key_servers: Vec<TestOrigin> = (0..KEY_SERVERS)
        .map(|_| {
            let o = TestOrigin::start(&h.ca);
            o.set_mode(KeyServerMode {
                padding_keys: PADDING_KEYS,
                ..KeyServerMode::default()
            });
            o
        })
        .collect();
    let key_response_bytes = key_servers[0].served_key_response().len();
    assert!(
        (400 * 1024..512 * 1024).contains(&key_response_bytes),
        "a padded key response of {key_response_bytes} bytes"
    );
    let fan_out = FanOut::new(&evil);
    let long_fields = long_field_invites(&evil);
    let bodies = unauthenticated_bodies(&h.origin);
    let setup = test_began.elapsed();
    let baseline_kib = h.invited.rss_kib();

    let attack = attack_duration();
    let stop = AtomicBool::new(false);
    let begin = Instant::now();
    let addr = h.invited.addr;
    let (probes, samples, key_tallies, fan_out_unexpected, long_tallies, flood, held) =
        std::thread::scope(|s| {
            let sampler = s.spawn(|| {
                let mut samples = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    samples.push((begin.elapsed(), h.invited.rss_kib()));
                    std::thread::sleep(SAMPLE_EVERY);
                }
                samples
            });
            let prober = s.spawn(|| {
                let mut probes = Vec::new();
                let mut i = 0u32;
                while PROBE_EVERY * i < attack {
                    let inv = valid_invite(&h.origin, "11", &format!("@probe{i}:{US}"));
                    let header = h.origin.sign_request("PUT", &inv.path, US, Some(&inv.body));
                    let body = serde_json::to_vec(&inv.body).unwrap();
                    sleep_until(begin + PROBE_EVERY * i);
                    let sent = Instant::now();
                    let answer = put_raw(&h.invited, &inv.path, &body, Some(&header));
                    probes.push((sent.elapsed(), answer.status, answer.text));
                    i += 1;
                }
                probes
            });
            let keys = s.spawn(|| name_hostile_key_servers(&h, &key_servers, &stop));
            let fan = s.spawn(|| fan_out.send(loopback(3), addr, begin));
            let long: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut tally = Tally::new();
                        for bytes in long_fields.iter().cycle() {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            count(&mut tally, &send_from(loopback(3), addr, bytes.clone()));
                        }
                        tally
                    })
                })
                .collect();
            let flood: Vec<_> = (0..FLOOD_THREADS)
                .map(|t| {
                    let bodies = &bodies;
                    let stop = &stop;
                    s.spawn(move || {
                        let mut tallies: Vec<Tally> = vec![Tally::new(); bodies.len()];
                        let mut n = t;
                        while !stop.load(Ordering::SeqCst) {
                            let kind = n % bodies.len();
                            let answer = send_from(loopback(4), addr, bodies[kind].0.clone());
                            count(&mut tallies[kind], &answer);
                            n += 1;
                        }
                        tallies
                    })
                })
                .collect();
            let held = s.spawn(|| hold_connections(addr, &stop));

            std::thread::sleep(attack);
            stop.store(true, Ordering::SeqCst);
            let flood: Vec<Vec<Tally>> = flood.into_iter().map(|t| t.join().unwrap()).collect();
            let by_kind: Vec<Tally> = (0..bodies.len())
                .map(|k| merge(flood.iter().map(|t| t[k].clone())))
                .collect();
            (
                prober.join().unwrap(),
                sampler.join().unwrap(),
                keys.join().unwrap(),
                fan.join().unwrap(),
                merge(long.into_iter().map(|t| t.join().unwrap())),
                by_kind,
                held.join().unwrap(),
            )
        });
    let attacked = begin.elapsed();
    // The writer logs refusals without a waiter, and checkpoints every 500 ms.
    std::thread::sleep(Duration::from_secs(1));
    let after_kib = h.invited.rss_kib();
    let [db, wal, shm] = database_bytes(&h);
    let db_bytes = db + wal;

    // --- the figures
    let peak = samples.iter().max_by_key(|(_, kib)| *kib).unwrap();
    let mut latencies: Vec<Duration> = probes.iter().map(|(t, _, _)| *t).collect();
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    let slowest = *latencies.last().unwrap();
    let hits: Vec<usize> = key_servers.iter().map(TestOrigin::hits).collect();
    let signer_connections = fan_out.signers.per_server();
    let creator_connections = fan_out.creators.per_server();
    let key_rows: i64 = {
        let db = h.invited.db();
        key_servers
            .iter()
            .map(|o| {
                db.query_row(
                    "SELECT count(*) FROM remote_keys WHERE server_name = ?1",
                    [o.name()],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
            })
            .sum()
    };
    let (refusal_rows, longest_field, refusal_bytes, suppressed): (i64, i64, i64, i64) = h
        .invited
        .db()
        .query_row(
            "SELECT count(*),
                    max(max(length(CAST(sender AS BLOB)), length(CAST(room_id AS BLOB)),
                        length(CAST(invitee AS BLOB)), length(CAST(event_id AS BLOB)))),
                    coalesce(sum(length(CAST(origin AS BLOB)) + length(CAST(sender AS BLOB))
                        + length(CAST(room_id AS BLOB)) + length(CAST(invitee AS BLOB))
                        + length(CAST(event_id AS BLOB)) + length(CAST(rule AS BLOB))), 0),
                    coalesce(sum(suppressed), 0)
             FROM refusals",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    // Each hostile key response was read whole and refused for its size in keys (not cut
    // short by the 512 KiB read limit, which would make it cheaper).
    let too_many_keys = format!("lists {} keys", PADDING_KEYS + 1);
    let parsed_key_responses = h.invited.log().matches(&too_many_keys).count();
    let long_sent: usize = long_tallies.values().sum();
    let offered_mb = long_sent as f64 * long_fields[0].len() as f64 / 1e6;
    let threads = std::fs::read_to_string(format!("/proc/{}/status", h.invited.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:").map(|t| t.trim().to_owned()))
        .unwrap_or_default();
    eprintln!("== every attack at once, {attacked:.1?} ({workers} workers, setup {setup:.1?})");
    eprintln!(
        "RSS: baseline {:.1} MiB, peak {:.1} MiB at {:.1?}, {:.1} MiB after; {threads} threads",
        baseline_kib as f64 / 1024.0,
        peak.1 as f64 / 1024.0,
        peak.0,
        after_kib as f64 / 1024.0
    );
    eprintln!(
        "probes: {} sent, statuses {:?}; latency median {median:.1?}, p99 {p99:.1?}, max {slowest:.1?}",
        probes.len(),
        probes.iter().fold(Tally::new(), |mut t, p| {
            *t.entry(p.1).or_default() += 1;
            t
        }),
    );
    eprintln!(
        "a. hostile key servers ({key_response_bytes} bytes a response): answers {:?}; \
         key fetches per server {hits:?}, {parsed_key_responses} read whole and refused \
         ({too_many_keys}); rows in remote_keys {key_rows}",
        merge(key_tallies.clone()),
    );
    eprintln!(
        "b. fan-out: {} invites naming {} silent servers; connections to room-state signers {}, \
         to silent room creators {creator_connections:?}",
        fan_out.requests.len(),
        signer_connections.len() + creator_connections.len(),
        signer_connections.iter().sum::<usize>(),
    );
    eprintln!(
        "c. long fields: answers {long_tallies:?}, {offered_mb:.0} MB offered; {refusal_rows} \
         refusal rows (+{suppressed} counted in `suppressed`) of {refusal_bytes} bytes of text, \
         longest field {longest_field} bytes; database {:.2} MiB + WAL {:.2} MiB (+ index {} KiB)",
        db as f64 / 1024.0 / 1024.0,
        wal as f64 / 1024.0 / 1024.0,
        shm / 1024
    );
    for ((_, what), tally) in bodies.iter().zip(&flood) {
        eprintln!("d. {what}: {tally:?}");
    }
    eprintln!(
        "e. held connections from 127.0.0.2: at most {} open (cap {MAX_CONNECTIONS_PER_IP}), {} made",
        held.0, held.1
    );
    eprintln!("RSS, the most each second (s:MiB):");
    for chunk in samples.chunks(10) {
        let (t, kib) = chunk.iter().max_by_key(|(_, k)| *k).unwrap();
        eprint!(" {:.0}:{:.0}", t.as_secs_f64(), *kib as f64 / 1024.0);
    }
    eprintln!("\ntotal wall time {:.1?}", test_began.elapsed());

    // --- the bounds
    let mut h = h;
    assert!(h.invited.alive(), "invited died; log:\n{}", h.invited.log());
    for (i, (took, status, text)) in probes.iter().enumerate() {
        assert_eq!(*status, 200, "probe {i}: {text}");
        assert!(*took < PROBE_MAX, "probe {i} took {took:?}");
    }
    // a. Only 401 (and 503 while fetches are busy); each server fetched at most once per
    // backoff (30 s, doubling); nothing stored.
    for (i, tally) in key_tallies.iter().enumerate() {
        assert!(
            tally.keys().all(|s| [401, 503].contains(s)) && tally.contains_key(&401),
            "hostile key server {i}: {tally:?}"
        );
    }
    // After a failed fetch a server is not asked again for 30 s, then 60, 120...
    let (mut most_fetches, mut next, mut wait) = (1, 30, 30);
    while next <= attacked.as_secs() {
        most_fetches += 1;
        wait *= 2;
        next += wait;
    }
    assert!(
        hits.iter().all(|&n| (1..=most_fetches).contains(&n)),
        "{hits:?}"
    );
    assert_eq!(
        parsed_key_responses,
        hits.iter().sum::<usize>(),
        "{}",
        h.invited
            .log()
            .lines()
            .filter(|l| l.contains("key fetch for"))
            .map(|l| l.chars().take(300).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(key_rows, 0, "keys of hostile key servers were stored");
    // b. Room-state signers are never contacted; a silent creator once at most.
    assert!(fan_out_unexpected.is_empty(), "{fan_out_unexpected:#?}");
    assert_eq!(signer_connections.iter().sum::<usize>(), 0);
    assert!(
        creator_connections.iter().all(|&n| n <= 1),
        "{creator_connections:?}"
    );
    // c. All refused (413, or 503 while the JSON memory is taken by the floods); the log is
    // cut and rate-limited.
    assert!(
        long_tallies.contains_key(&413) && long_tallies.keys().all(|s| [413, 503].contains(s)),
        "{long_tallies:?}"
    );
    assert!(
        longest_field <= 255,
        "a refusal field of {longest_field} bytes"
    );
    let refusal_bound = REFUSAL_BURST + attacked.as_secs() + 1;
    assert!(
        u64::try_from(refusal_rows).unwrap() <= refusal_bound,
        "{refusal_rows} refusal rows"
    );
    assert!(
        db_bytes < DB_BOUND_BYTES,
        "database + WAL: {db_bytes} bytes"
    );
    // d. Refused, each the way it should be.
    // The chains are refused by the parser's allocation budget (413), the rest read, parsed
    // and refused for want of a valid signature (401).
    let expected: [&[u16]; 5] = [&[401, 503], &[401, 503], &[413, 503], &[413, 503], &[413]];
    for (((_, what), tally), allowed) in bodies.iter().zip(&flood).zip(expected) {
        assert!(
            tally.keys().all(|s| allowed.contains(s)),
            "{what}: {tally:?}"
        );
    }
    // e. The per-address cap held, and the client did hold connections.
    assert!(
        (MAX_CONNECTIONS_PER_IP * 3 / 4..=MAX_CONNECTIONS_PER_IP).contains(&held.0),
        "{} connections from one address were open at once",
        held.0
    );
    assert!(
        peak.1 < RSS_BOUND_KIB,
        "peak RSS {} KiB (baseline {baseline_kib} KiB)",
        peak.1
    );
}
