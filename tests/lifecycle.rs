//! The rest of an invite's life, end to end against the real binary: rejecting it over
//! federation (make_leave + send_leave to test origins on loopback, retries, fallbacks,
//! giving up, crashes in the middle), and the inviter withdrawing it over `/send`.
//!
//! The leave events invited sends are checked with ruma (an independent implementation):
//! signed with the key invited publishes, hashed, and with the event ID invited stored.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::time::{Duration, Instant};

use common::invites::{
    Answer, Harness, Invite, US, assert_error, published_keys, put_raw, put_signed, valid_invite,
};
use common::origin::{TestOrigin, rules, to_canonical};
use common::*;
use serde_json::{Value as J, json};

const BOB: &str = "@bob:invited.test";

/// Fast retries for tests: 0.3 s, doubling up to 1 s.
const FAST: &str =
    "[rejections]\nfirst_retry_secs = 0.3\nmax_retry_secs = 1\nrequest_timeout_secs = 5\n";

fn put(h: &Harness, origin: &TestOrigin, inv: &Invite) -> Answer {
    put_signed(&h.invited, origin, inv)
}

/// An invite for Bob from the harness's origin in a fresh room of `version` that the origin
/// also serves make_leave for; answered 200.
fn invited_bob(h: &Harness, version: &str) -> Invite {
    let inv = valid_invite(&h.origin, version, BOB);
    h.origin.host_room(&inv.room_id, version);
    let answer = put(h, &h.origin, &inv);
    assert_eq!(answer.status, 200, "{}", answer.text);
    inv
}

fn state_of(h: &Harness, event_id: &str) -> String {
    h.invited
        .db()
        .query_row(
            "SELECT state FROM invites WHERE event_id = ?1",
            [event_id],
            |r| r.get(0),
        )
        .unwrap()
}

/// Waits up to `limit` for the invite to reach `state`.
fn wait_for_state(h: &Harness, event_id: &str, state: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let now = state_of(h, event_id);
        if now == state {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{event_id} is {now} after {limit:?}, not {state}; log:\n{}",
            h.invited.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cli(h: &Harness, args: &[&str]) -> std::process::Output {
    run_cli(Some(&h.invited.config_path), args)
}

fn show(h: &Harness, event_id: &str) -> J {
    let out = cli(h, &["invites", "show", event_id, "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Checks a leave invited sent: Bob's leave in the room, verified by ruma with invited's
/// published key (hash and signature), with the event ID of the request path (ruma's
/// reference hash for v3+); returns that ID.
fn check_leave(
    h: &Harness,
    inv: &Invite,
    version: &str,
    send: &common::origin::Received,
) -> String {
    let leave = &send.body;
    assert_eq!(leave["type"], json!("m.room.member"));
    assert_eq!(leave["sender"], json!(BOB));
    assert_eq!(leave["state_key"], json!(BOB));
    assert_eq!(leave["room_id"], json!(inv.room_id));
    assert_eq!(leave["content"]["membership"], json!("leave"));
    let verified = ruma_signatures::verify_event(
        &published_keys(&h.invited),
        &to_canonical(leave),
        &rules(version),
    )
    .expect("ruma verifies our leave");
    assert_eq!(
        verified,
        ruma_signatures::Verified::All,
        "hash and signature"
    );
    let id = TestOrigin::event_id(leave, version);
    let encoded = common::invites::enc(&id);
    assert!(
        send.path.ends_with(&format!("/{encoded}")),
        "{} does not name {id}",
        send.path
    );
    if version == "1" {
        assert!(id.ends_with(":invited.test"), "our own event ID: {id}");
    }
    // The request itself is signed by us (X-Matrix), over exactly what was sent.
    let sig = send
        .authorization
        .split("sig=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let key_id = send
        .authorization
        .split("key=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let signed = json!({
        "method": send.method, "uri": send.path, "origin": US,
        "destination": h.origin.name(), "content": leave,
        "signatures": {US: {key_id: sig}},
    });
    ruma_signatures::verify_json(&published_keys(&h.invited), &to_canonical(&signed))
        .expect("ruma verifies our X-Matrix signature");
    id
}

#[test]
fn a_rejection_reaches_the_inviting_server_in_every_event_id_format() {
    let h = Harness::start("");
    for version in ["1", "3", "11", "12"] {
        let inv = invited_bob(&h, version);
        let before = h.origin.received().len();
        let out = cli(
            &h,
            &[
                "invites",
                "reject",
                &inv.event_id,
                "--reason",
                "not for me",
                "--wait",
                "20",
            ],
        );
        assert!(
            out.status.success(),
            "v{version}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            h.invited.log()
        );
        let got = h.origin.received()[before..].to_vec();
        assert_eq!(
            got.len(),
            2,
            "v{version}: make_leave then send_leave: {got:?}"
        );
        assert_eq!(got[0].method, "GET");
        assert_eq!(
            got[0].path,
            format!(
                "/_matrix/federation/v1/make_leave/{}/{}",
                common::invites::enc(&inv.room_id),
                common::invites::enc(BOB)
            )
        );
        assert_eq!(got[1].method, "PUT");
        assert!(
            got[1]
                .path
                .starts_with("/_matrix/federation/v2/send_leave/")
        );
        let id = check_leave(&h, &inv, version, &got[1]);
        assert_eq!(got[1].body["content"]["reason"], json!("not for me"));

        assert_eq!(state_of(&h, &inv.event_id), "rejected");
        let shown = show(&h, &inv.event_id);
        assert_eq!(shown["state"], json!("rejected"));
        let rejection = &shown["rejection"];
        assert_eq!(rejection["accepted_by"], json!(h.origin.name()));
        assert_eq!(rejection["leave_event_id"], json!(id));
        assert_eq!(rejection["leave_event"], got[1].body, "stored as sent");
        assert_eq!(rejection["attempts"], json!(1));
        assert_eq!(rejection["reason"], json!("not for me"));
    }
}

/// The inviting server fails (503); a server of the room state is asked next, in the same
/// attempt.
#[test]
fn a_second_server_of_the_room_is_asked_when_the_first_fails() {
    let h = Harness::start("");
    let other = TestOrigin::start_as(&h.ca, "localhost");
    let (create, room_id) = h.origin.create_event("11", "alice");
    let member = other.state_event("11", &room_id, "m.room.name", json!({"name": "shared"}));
    let inv = common::invites::invite_in_room(&h.origin, "11", &room_id, &[create, member], BOB);
    assert_eq!(put(&h, &h.origin, &inv).status, 200);
    h.origin.host_room(&room_id, "11");
    other.host_room(&room_id, "11");
    h.origin.rooms(|r| r.always = Some(503));

    let out = cli(&h, &["invites", "reject", &inv.event_id, "--wait", "20"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        h.origin.received().len(),
        1,
        "the inviting server was asked first"
    );
    let got = other.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        show(&h, &inv.event_id)["rejection"]["accepted_by"],
        json!(other.name())
    );
}

/// send_leave answers 503 twice: the same leave (same event ID) is sent again after each
/// backoff, to the same server, until it is accepted.
#[test]
fn a_failed_send_leave_resends_the_same_event() {
    let h = Harness::start(FAST);
    let inv = invited_bob(&h, "11");
    h.origin
        .rooms(|r| r.send_leave_statuses = [503, 503].into());
    let out = cli(&h, &["invites", "reject", &inv.event_id, "--wait", "20"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = h.origin.received();
    let makes = got.iter().filter(|r| r.method == "GET").count();
    let sends: Vec<&common::origin::Received> = got.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!((makes, sends.len()), (1, 3), "{got:?}");
    assert!(
        sends
            .iter()
            .all(|s| s.body == sends[0].body && s.path == sends[0].path)
    );
    let rejection = show(&h, &inv.event_id)["rejection"].clone();
    assert_eq!(rejection["attempts"], json!(3));
    assert!(
        rejection["last_error"].as_str().unwrap().contains("503"),
        "{rejection}"
    );
}

/// Every candidate refuses for good (403): rejected locally at once, and `--wait` says so.
#[test]
fn refused_by_every_server_is_rejected_locally_at_once() {
    let h = Harness::start("");
    let inv = invited_bob(&h, "11");
    h.origin.rooms(|r| r.always = Some(403));
    let out = cli(&h, &["invites", "reject", &inv.event_id, "--wait", "20"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rejected_locally") && err.contains("403"),
        "{err}"
    );
    assert_eq!(state_of(&h, &inv.event_id), "rejected_locally");
    assert_eq!(h.origin.received().len(), 1, "one make_leave, no retry");
}

/// A server that keeps failing (503) is retried until the give-up time, then the invite is
/// rejected locally.
#[test]
fn delivery_gives_up_after_the_configured_time() {
    let h = Harness::start(&format!("{FAST}give_up_after_hours = 0.0005\n"));
    let inv = invited_bob(&h, "11");
    h.origin.rooms(|r| r.always = Some(503));
    let started = Instant::now();
    let out = cli(&h, &["invites", "reject", &inv.event_id]);
    assert!(out.status.success());
    wait_for_state(
        &h,
        &inv.event_id,
        "rejected_locally",
        Duration::from_secs(15),
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "given up too early"
    );
    let attempts = show(&h, &inv.event_id)["rejection"]["attempts"]
        .as_i64()
        .unwrap();
    assert!(attempts >= 3, "retried before giving up: {attempts}");
    assert_eq!(
        h.origin.received().len() as i64,
        attempts,
        "one make_leave per attempt"
    );
}

/// A rejection asked while no server runs waits in the database; one asked of a running
/// server survives SIGKILL in the middle of its retries; the host can ask by SQL.
#[test]
fn requests_survive_restarts_and_come_by_sql_too() {
    let mut h = Harness::start("[rejections]\nfirst_retry_secs = 2\nrequest_timeout_secs = 5\n");
    let first = invited_bob(&h, "11");
    let second = invited_bob(&h, "12");
    let third = invited_bob(&h, "1");

    // Asked while the server is down.
    h.invited.kill();
    let out = cli(&h, &["invites", "reject", &first.event_id]);
    assert!(out.status.success());
    assert_eq!(state_of(&h, &first.event_id), "rejecting");
    h.restart();
    wait_for_state(&h, &first.event_id, "rejected", Duration::from_secs(10));

    // Killed between a failed attempt and its retry.
    h.origin.rooms(|r| r.send_leave_statuses = [503].into());
    assert!(
        cli(&h, &["invites", "reject", &second.event_id])
            .status
            .success()
    );
    let start = Instant::now();
    while show(&h, &second.event_id)["rejection"]["attempts"] != json!(1) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no first attempt"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    h.restart();
    wait_for_state(&h, &second.event_id, "rejected", Duration::from_secs(15));
    let sends: Vec<_> = h
        .origin
        .received()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains(&common::invites::enc(&second.room_id)))
        .collect();
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert_eq!(
        sends[0].body, sends[1].body,
        "the same leave after the crash"
    );

    // The host's own SQL.
    let conn = rusqlite::Connection::open(h.invited.dir.join("data/invited.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "UPDATE invites SET state = 'rejecting' WHERE event_id = ?1",
        [&third.event_id],
    )
    .unwrap();
    drop(conn);
    wait_for_state(&h, &third.event_id, "rejected", Duration::from_secs(5));
}

/// PUTs a transaction signed by `origin`.
fn send_txn(h: &Harness, origin: &TestOrigin, txn: &str, body: &J) -> Answer {
    let path = format!("/_matrix/federation/v1/send/{txn}");
    let header = origin.sign_request("PUT", &path, US, Some(body));
    put_raw(
        &h.invited,
        &path,
        &serde_json::to_vec(body).unwrap(),
        Some(&header),
    )
}

fn txn(pdus: &[J]) -> J {
    json!({"origin": "x", "origin_server_ts": common::origin::now_ms(), "pdus": pdus})
}

#[test]
fn the_inviter_withdraws_an_invite_in_every_event_id_format() {
    let h = Harness::start("");
    for version in ["1", "11", "12"] {
        let inv = invited_bob(&h, version);
        let kick = h
            .origin
            .kick(version, &inv.room_id, &inv.event_id, BOB, "alice", "leave");
        let kick_id = TestOrigin::event_id(&kick, version);
        let body = txn(std::slice::from_ref(&kick));
        let txn_id = format!("t{version}");
        let answer = send_txn(&h, &h.origin, &txn_id, &body);
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(
            answer.json,
            json!({"pdus": {kick_id.clone(): {}}}),
            "v{version}"
        );
        assert_eq!(state_of(&h, &inv.event_id), "rescinded");
        let shown = show(&h, &inv.event_id);
        assert_eq!(shown["rescind"]["event_id"], json!(kick_id));
        // A retry of the transaction: the same answer, nothing changes.
        let again = send_txn(&h, &h.origin, &txn_id, &body);
        assert_eq!(again.text, answer.text);
        assert_eq!(state_of(&h, &inv.event_id), "rescinded");
    }
}

#[test]
fn only_the_inviters_own_valid_withdrawal_counts() {
    let h = Harness::start("");
    let inv = invited_bob(&h, "11");
    // Another member's kick (they may have the power; we cannot check it).
    let by_mod = h
        .origin
        .kick("11", &inv.room_id, &inv.event_id, BOB, "moderator", "leave");
    // The inviter's kick with a forged signature: signed by another key under the origin's name.
    let mut forged = h
        .origin
        .kick("11", &inv.room_id, &inv.event_id, BOB, "alice", "leave");
    let sigs = forged["signatures"][h.origin.name()]
        .as_object_mut()
        .unwrap();
    let key_id = sigs.keys().next().unwrap().clone();
    sigs.insert(key_id, json!("A".repeat(86)));
    // One that does not name the invite.
    let unrelated = h
        .origin
        .kick("11", &inv.room_id, "$other", BOB, "alice", "leave");
    let pdus = [by_mod, forged, unrelated];
    let answer = send_txn(&h, &h.origin, "mixed", &txn(&pdus));
    assert_eq!(answer.status, 200, "{}", answer.text);
    for pdu in &pdus {
        let id = TestOrigin::event_id(pdu, "11");
        let error = answer.json["pdus"][&id]["error"].as_str();
        assert!(error.is_some(), "{id}: {}", answer.text);
    }
    assert!(answer.text.contains("only the inviter"), "{}", answer.text);
    assert!(answer.text.contains("Signature"), "{}", answer.text);
    assert_eq!(state_of(&h, &inv.event_id), "pending");
    // A ban by the inviter withdraws it too.
    let ban = h
        .origin
        .kick("11", &inv.room_id, &inv.event_id, BOB, "alice", "ban");
    let answer = send_txn(&h, &h.origin, "ban", &txn(&[ban]));
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(state_of(&h, &inv.event_id), "rescinded");
}

#[test]
fn a_rescind_stops_a_rejection_being_delivered() {
    let h = Harness::start("[rejections]\nfirst_retry_secs = 60\nrequest_timeout_secs = 5\n");
    let inv = invited_bob(&h, "11");
    h.origin.rooms(|r| r.always = Some(503));
    assert!(
        cli(&h, &["invites", "reject", &inv.event_id])
            .status
            .success()
    );
    let start = Instant::now();
    while show(&h, &inv.event_id)["rejection"]["attempts"] != json!(1) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no first attempt"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let kick = h
        .origin
        .kick("11", &inv.room_id, &inv.event_id, BOB, "alice", "leave");
    assert_eq!(send_txn(&h, &h.origin, "k", &txn(&[kick])).status, 200);
    assert_eq!(state_of(&h, &inv.event_id), "rescinded");
    let rejection = show(&h, &inv.event_id)["rejection"].clone();
    assert!(rejection["finished_ts"].is_i64(), "{rejection}");
}

#[test]
fn bad_transactions_get_the_error_they_deserve() {
    let h = Harness::start("");
    let inv = invited_bob(&h, "11");
    let too_many = txn(&vec![json!({}); 51]);
    let answer = send_txn(&h, &h.origin, "big", &too_many);
    assert_error(&answer, 400, "M_BAD_JSON", "51 PDUs");
    let no_pdus = json!({"origin": "x", "origin_server_ts": 1});
    assert_error(
        &send_txn(&h, &h.origin, "none", &no_pdus),
        400,
        "M_BAD_JSON",
        "no pdus",
    );
    // Unauthenticated.
    let kick = h
        .origin
        .kick("11", &inv.room_id, &inv.event_id, BOB, "alice", "leave");
    let body = serde_json::to_vec(&txn(&[kick])).unwrap();
    let answer = put_raw(&h.invited, "/_matrix/federation/v1/send/u", &body, None);
    assert_error(&answer, 401, "M_UNAUTHORIZED", "no signature");
    // PDUs of rooms we hold nothing in, and EDUs: 200, no entry, nothing changes.
    let other_room = json!({"room_id": "!elsewhere:x", "type": "m.room.message"});
    let with_edus = json!({"origin": "x", "origin_server_ts": 1, "pdus": [other_room],
                           "edus": [{"edu_type": "m.typing", "content": {}}]});
    let answer = send_txn(&h, &h.origin, "other", &with_edus);
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json, json!({"pdus": {}}));
    assert_eq!(state_of(&h, &inv.event_id), "pending");
}
