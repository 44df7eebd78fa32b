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

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::invites::{Answer, Harness, Invite, US, assert_error, invite_in_room, put_raw};
use common::{release_bin, run_cli};
use serde_json::{Value as J, json};

const BOB: &str = "@bob:invited.test";

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
        self.0
            .iter()
            .map(|l| std::iter::from_fn(|| l.accept().ok()).count())
            .sum()
    }
}

/// invited (the release binary, see above) with 2 workers and `extra` TOML, with its test
/// origin.
fn start(extra: &str) -> Harness {
    Harness::start_bin(&release_bin(), Some(2), extra)
}

fn put(h: &Harness, inv: &Invite) -> Answer {
    let header = h.origin.sign_request("PUT", &inv.path, US, Some(&inv.body));
    put_raw(
        &h.invited,
        &inv.path,
        &serde_json::to_vec(&inv.body).unwrap(),
        Some(&header),
    )
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
fn pdu_from(h: &Harness, version: &str, room_id: &str, server: &str) -> J {
    let mut pdu = h.origin.state_event(
        version,
        room_id,
        "m.room.member",
        json!({"membership": "join"}),
    );
    let user = format!("@u:{server}");
    pdu["sender"] = json!(user);
    pdu["state_key"] = json!(user);
    let signature = pdu["signatures"][h.origin.name()].clone();
    pdu["signatures"] = json!({ server: signature });
    pdu
}

/// An invite whose room state names 40 servers (each a silent listener) makes no connection
/// to any of them: their keys are not ours to fetch for room state. Room version 11 answers
/// 200 with warnings; version 12 (where MSC4311 failures are fatal) refuses, also at once.
#[test]
fn room_state_signers_are_never_fetched() {
    let h = start("");
    let silent = SilentServers::new(40);
    for (version, expect) in [("11", 200), ("12", 400)] {
        let (create, room_id) = h.origin.create_event(version, "alice");
        let mut state = vec![create];
        state.extend(
            silent
                .names()
                .iter()
                .map(|s| pdu_from(&h, version, &room_id, s)),
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
#[test]
fn a_key_fetch_has_one_deadline() {
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
