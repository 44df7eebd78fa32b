//! Push notifications end to end: pushers set with the real CLI, invites sent to the real
//! binary over HTTPS, and a test push gateway on loopback (HTTPS, certificate from the test
//! CA) that records what it is sent and answers as told. Each notification is checked against
//! the push gateway API's schema
//! (<https://spec.matrix.org/v1.16/push-gateway-api/#post_matrixpushv1notify>).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::invites::{Harness, Invite, invite_in_room, metrics_url, put_signed, valid_invite};
use common::origin::{TestOrigin, https_server};
use common::*;
use invited_http::{EdgeError, Handler, Request, Response, Server, ServerOptions, ShutdownHandle};
use serde_json::{Value as J, json};

const BOB: &str = "@bob:invited.test";
const CAROL: &str = "@carol:invited.test";

/// Loopback gateways allowed, fast retries (0.3 s doubling up to 1 s).
const PUSH: &str = "[push]\nip_range_allowlist = [\"127.0.0.0/8\"]\nfirst_retry_secs = 0.3\n\
                    max_retry_secs = 1\nrequest_timeout_secs = 5\n";

/// One request the gateway received, and when.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    path: String,
    body: J,
}

#[derive(Default)]
struct GatewayState {
    received: Vec<Received>,
    /// Statuses and bodies to answer with, in order; then `200 {"rejected":[]}`.
    script: VecDeque<(u16, J)>,
}

struct GatewayHandler(Arc<Mutex<GatewayState>>);

impl Handler for GatewayHandler {
    fn handle(&self, request: &Request) -> Response {
        let mut state = self.0.lock().unwrap();
        state.received.push(Received {
            at: Instant::now(),
            path: request.path().to_owned(),
            body: serde_json::from_slice(&request.body).unwrap_or(J::Null),
        });
        let (status, body) = state
            .script
            .pop_front()
            .unwrap_or((200, json!({"rejected": []})));
        Response::json(status, serde_json::to_vec(&body).unwrap())
    }

    fn edge_error(&self, error: &EdgeError) -> Response {
        Response::json(error.status(), b"{}".to_vec())
    }
}

/// A push gateway on 127.0.0.1 over HTTPS.
struct TestGateway {
    state: Arc<Mutex<GatewayState>>,
    scheme: &'static str,
    port: u16,
    shutdown: Option<ShutdownHandle>,
}

impl TestGateway {
    /// Over HTTPS with a certificate from `ca`, or (`None`) plain HTTP.
    fn start(ca: Option<&TestCa>) -> TestGateway {
        let server = match ca {
            Some(ca) => https_server(ca),
            None => Server::bind("127.0.0.1:0".parse().unwrap(), ServerOptions::default()).unwrap(),
        };
        let port = server.local_addr().port();
        let state = Arc::new(Mutex::new(GatewayState::default()));
        let shutdown = server.shutdown_handle();
        let handler: Arc<dyn Handler> = Arc::new(GatewayHandler(state.clone()));
        std::thread::spawn(move || {
            let _ = server.run(handler);
        });
        TestGateway {
            state,
            scheme: if ca.is_some() { "https" } else { "http" },
            port,
            shutdown: Some(shutdown),
        }
    }

    fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}/_matrix/push/v1/notify",
            self.scheme, self.port
        )
    }

    /// Answers the next requests with these, in order.
    fn script(&self, answers: &[(u16, J)]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(answers.iter().cloned());
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits up to `limit` until at least `n` requests arrived; returns them all.
    fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < limit,
                "the gateway got {} request(s), expected {n}: {got:#?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            s.shutdown();
        }
    }
}

fn cli(h: &Harness, args: &[&str]) -> String {
    cli_ok(&h.invited.config_path, args)
}

fn set_pusher(h: &Harness, user: &str, pushkey: &str, url: &str, extra: &[&str]) {
    let mut args = vec![
        "users",
        "set-pusher",
        user,
        "--app-id",
        "org.example.app",
        "--pushkey",
        pushkey,
        "--url",
        url,
    ];
    args.extend_from_slice(extra);
    cli(h, &args);
}

fn pushers(h: &Harness, user: &str) -> J {
    serde_json::from_str(&cli(h, &["users", "pushers", user, "--json"])).unwrap()
}

/// The outbox rows of push notifications: (subject, finished, last_error).
fn push_rows(h: &Harness) -> Vec<(String, bool, Option<String>)> {
    let db = h.invited.db();
    let mut stmt = db
        .prepare(
            "SELECT subject, finished_ts IS NOT NULL, last_error FROM outbox
             WHERE kind = 'push' ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Waits until every push row is finished; returns them.
fn wait_all_finished(h: &Harness, limit: Duration) -> Vec<(String, bool, Option<String>)> {
    let start = Instant::now();
    loop {
        let rows = push_rows(h);
        if rows.iter().all(|r| r.1) {
            return rows;
        }
        assert!(start.elapsed() < limit, "unfinished: {rows:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An invite for `invitee` whose room state names the room and has the inviter's member
/// event with a display name.
fn named_invite(origin: &TestOrigin, invitee: &str) -> Invite {
    let (create, room_id) = origin.create_event("11", "alice");
    let name = origin.state_event("11", &room_id, "m.room.name", json!({"name": "Garden"}));
    let alice = format!("@alice:{}", origin.name());
    let member = origin.hash_and_sign(
        &json!({
            "type": "m.room.member", "state_key": alice, "sender": alice,
            "content": {"membership": "join", "displayname": "Alice A."},
            "room_id": room_id, "origin_server_ts": 1, "depth": 3,
            "prev_events": [], "auth_events": [],
        }),
        "11",
    );
    invite_in_room(origin, "11", &room_id, &[create, name, member], invitee)
}

fn put_ok(h: &Harness, inv: &Invite) {
    let answer = put_signed(&h.invited, &h.origin, inv);
    assert_eq!(answer.status, 200, "{}", answer.text);
}

/// Checks a request body against the push gateway API's schema for
/// `POST /_matrix/push/v1/notify`: `notification` required, in it `devices` required (objects
/// with required `app_id` and `pushkey`), every other field optional with its type.
fn assert_notify_schema(body: &J) {
    let n = body["notification"]
        .as_object()
        .expect("notification: an object");
    type IsType = fn(&J) -> bool;
    let types: &[(&str, IsType)] = &[
        ("event_id", J::is_string),
        ("room_id", J::is_string),
        ("type", J::is_string),
        ("sender", J::is_string),
        ("sender_display_name", J::is_string),
        ("room_name", J::is_string),
        ("room_alias", J::is_string),
        ("user_is_target", J::is_boolean),
        ("content", J::is_object),
        ("counts", J::is_object),
        ("devices", J::is_array),
    ];
    for (field, ok) in types {
        if let Some(v) = n.get(*field) {
            assert!(ok(v), "notification.{field} has the wrong type: {v}");
        }
    }
    if let Some(p) = n.get("prio") {
        assert!(p == "high" || p == "low", "prio {p}");
    }
    if let Some(counts) = n.get("counts").and_then(J::as_object) {
        for (k, v) in counts {
            assert!(
                ["unread", "missed_calls"].contains(&k.as_str()),
                "counts.{k}"
            );
            assert!(
                v.is_i64() && v.as_i64().unwrap() > 0,
                "counts.{k}: {v} (omit zeros)"
            );
        }
    }
    let devices = n["devices"].as_array().expect("devices is required");
    assert!(!devices.is_empty());
    for d in devices {
        assert!(d["app_id"].is_string() && d["pushkey"].is_string(), "{d}");
        if let Some(ts) = d.get("pushkey_ts") {
            assert!(ts.is_i64(), "{d}");
        }
        for f in ["data", "tweaks"] {
            if let Some(v) = d.get(f) {
                assert!(v.is_object(), "device {f}: {d}");
            }
        }
    }
}

#[test]
fn a_new_invite_is_pushed_once_to_each_pusher_of_its_invitee_with_the_spec_fields() {
    let h = Harness::start(PUSH);
    let gw = TestGateway::start(Some(&h.ca));
    set_pusher(
        &h,
        BOB,
        "bob-full",
        &gw.url(),
        &["--data", r#"{"custom":"x"}"#],
    );
    set_pusher(
        &h,
        BOB,
        "bob-short",
        &gw.url(),
        &["--format", "event_id_only"],
    );
    set_pusher(&h, CAROL, "carol", &gw.url(), &[]);
    let listed = pushers(&h, BOB);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[0]["data"]["url"], gw.url().as_str());

    let inv = named_invite(&h.origin, BOB);
    let sent = Instant::now();
    put_ok(&h, &inv);
    let got = gw.wait_for(2, Duration::from_secs(10));
    assert!(
        got.iter()
            .all(|r| r.at.duration_since(sent) < Duration::from_secs(2)),
        "pushed at once, not on the next poll"
    );
    // A retry of the same invite is answered from the database and pushes nothing.
    put_ok(&h, &inv);
    std::thread::sleep(Duration::from_millis(1500));
    let got = gw.received();
    assert_eq!(got.len(), 2, "one per pusher, none for Carol: {got:#?}");
    for r in &got {
        assert_eq!(r.path, "/_matrix/push/v1/notify");
        assert_notify_schema(&r.body);
    }
    let by_key = |k: &str| {
        got.iter()
            .map(|r| &r.body["notification"])
            .find(|n| n["devices"][0]["pushkey"] == k)
            .unwrap_or_else(|| panic!("no notification for {k}"))
            .clone()
    };
    let full = by_key("bob-full");
    let alice = format!("@alice:{}", h.origin.name());
    assert_eq!(full["event_id"], inv.event_id.as_str());
    assert_eq!(full["room_id"], inv.room_id.as_str());
    assert_eq!(full["type"], "m.room.member");
    assert_eq!(full["sender"], alice.as_str());
    assert_eq!(full["sender_display_name"], "Alice A.");
    assert_eq!(full["room_name"], "Garden");
    assert_eq!(full["user_is_target"], true);
    assert_eq!(full["prio"], "high");
    assert_eq!(full["content"]["membership"], "invite");
    assert_eq!(full["counts"], json!({"unread": 1}));
    let device = &full["devices"][0];
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["data"], json!({"custom": "x"}), "data without url");
    assert_eq!(
        device["tweaks"],
        json!({"sound": "default", "highlight": false})
    );
    let now_s = common::origin::now_ms() / 1000;
    let ts = device["pushkey_ts"].as_i64().unwrap();
    assert!(
        (now_s - 120..=now_s).contains(&ts),
        "pushkey_ts in seconds: {ts}"
    );

    let short = by_key("bob-short");
    let mut keys: Vec<_> = short.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["counts", "devices", "event_id", "prio", "room_id"]);
    assert_eq!(
        short["devices"][0]["data"],
        json!({"format": "event_id_only"})
    );
    assert!(short["devices"][0].get("tweaks").is_none());

    // A second pending invite counts both.
    put_ok(&h, &valid_invite(&h.origin, "11", BOB));
    let got = gw.wait_for(4, Duration::from_secs(10));
    assert_eq!(got[3].body["notification"]["counts"]["unread"], 2);

    // Ignored (the user ignores the inviter) and refused invites push nothing.
    cli(
        &h,
        &[
            "users",
            "set-config",
            BOB,
            "ignored-users",
            &json!({"ignored_users": {alice.as_str(): {}}}).to_string(),
        ],
    );
    let ignored = valid_invite(&h.origin, "11", BOB);
    put_ok(&h, &ignored);
    let state: String = h
        .invited
        .db()
        .query_row(
            "SELECT state FROM invites WHERE event_id = ?1",
            [&ignored.event_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(state, "ignored");
    let mut forged = valid_invite(&h.origin, "11", BOB);
    forged.body["event"]["content"]["displayname"] = json!("Mallory");
    let refused = put_signed(&h.invited, &h.origin, &forged);
    assert!(refused.status >= 400, "{}", refused.text);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        gw.received().len(),
        4,
        "nothing for an ignored or refused invite"
    );
    let rows = wait_all_finished(&h, Duration::from_secs(5));
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.2.is_none()),
        "all delivered: {rows:?}"
    );
}

#[test]
fn a_failed_push_is_retried_and_a_rejected_pushkey_removes_its_pusher() {
    let h = Harness::start(&format!("{PUSH}[metrics]\nlisten = \"127.0.0.1:0\"\n"));
    let gw = TestGateway::start(Some(&h.ca));
    set_pusher(&h, BOB, "doomed", &gw.url(), &[]);
    gw.script(&[
        (503, json!({"errcode": "M_UNKNOWN", "error": "busy"})),
        (200, json!({"rejected": ["someone-else", "doomed"]})),
    ]);
    let inv = valid_invite(&h.origin, "11", BOB);
    put_ok(&h, &inv);
    let got = gw.wait_for(2, Duration::from_secs(10));
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(200),
        "retried after the backoff: {gap:?}"
    );
    assert_eq!(
        got[0].body, got[1].body,
        "a retry sends the same notification"
    );
    let rows = wait_all_finished(&h, Duration::from_secs(5));
    assert_eq!(
        rows[0].2.as_deref(),
        Some("the gateway rejected the pushkey"),
        "{rows:?}"
    );
    assert_eq!(
        pushers(&h, BOB),
        json!([]),
        "the rejected pushkey's pusher is gone"
    );
    let metrics = agent(None)
        .get(&metrics_url(&h))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    for line in [
        r#"invited_deliveries_total{kind="push",result="retried"} 1"#,
        r#"invited_deliveries_total{kind="push",result="refused"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    // No pusher, no notification.
    put_ok(&h, &valid_invite(&h.origin, "11", BOB));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(gw.received().len(), 2);
}

#[test]
fn a_notification_survives_a_restart_before_delivery() {
    let mut h = Harness::start(PUSH);
    let gw = TestGateway::start(Some(&h.ca));
    set_pusher(&h, BOB, "pk", &gw.url(), &[]);
    gw.script(&[(503, json!({})), (503, json!({})), (503, json!({}))]);
    let inv = valid_invite(&h.origin, "11", BOB);
    put_ok(&h, &inv);
    gw.wait_for(1, Duration::from_secs(10));
    // Killed with the notification still undelivered: it is in the database.
    h.restart();
    let got = gw.wait_for(4, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1500));
    let got_after = gw.received();
    assert_eq!(got_after.len(), 4, "delivered once, then no more: {got:#?}");
    assert_eq!(
        got_after[3].body["notification"]["event_id"],
        inv.event_id.as_str()
    );
    let rows = wait_all_finished(&h, Duration::from_secs(5));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, None, "delivered: {rows:?}");
}

#[test]
fn an_invite_no_longer_pending_when_its_turn_comes_is_not_pushed() {
    let h = Harness::start(PUSH);
    let gw = TestGateway::start(Some(&h.ca));
    set_pusher(&h, BOB, "pk", &gw.url(), &[]);
    gw.script(&[(503, json!({}))]);
    let inv = valid_invite(&h.origin, "11", BOB);
    put_ok(&h, &inv);
    gw.wait_for(1, Duration::from_secs(10));
    cli(&h, &["invites", "reject", &inv.event_id, "--local-only"]);
    let rows = wait_all_finished(&h, Duration::from_secs(10));
    assert!(
        rows[0].2.as_deref().unwrap().contains("no longer pending"),
        "{rows:?}"
    );
    assert_eq!(gw.received().len(), 1, "the retry was dropped");
}

#[test]
fn gateways_on_private_addresses_need_the_push_allowlist_and_http_needs_allow_http() {
    let h = Harness::start(
        "[push]\nfirst_retry_secs = 0.3\nmax_retry_secs = 1\ngive_up_after_hours = 0.0003\n",
    );
    let gw = TestGateway::start(Some(&h.ca));
    set_pusher(&h, BOB, "https", &gw.url(), &[]);
    let set = |pushkey: &str, url: &str| {
        let args = [
            "users",
            "set-pusher",
            BOB,
            "--app-id",
            "a",
            "--pushkey",
            pushkey,
            "--url",
            url,
        ];
        let out = run_cli(Some(&h.invited.config_path), &args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let plain = format!("http://127.0.0.1:{}/_matrix/push/v1/notify", gw.port);
    let (ok, stderr) = set("plain", &plain);
    assert!(
        ok && stderr.contains("push.allow_http is off"),
        "the CLI warns: {stderr}"
    );
    // A URL that is not a gateway's notify endpoint is refused when set.
    let (ok, stderr) = set("k", "https://127.0.0.1/notify");
    assert!(
        !ok && stderr.contains("/_matrix/push/v1/notify"),
        "{stderr}"
    );
    put_ok(&h, &valid_invite(&h.origin, "11", BOB));
    // Given up after about a second (give_up_after_hours = 0.0003).
    let rows = wait_all_finished(&h, Duration::from_secs(15));
    assert_eq!(rows.len(), 2, "{rows:?}");
    let errors: Vec<String> = rows.iter().map(|r| r.2.clone().unwrap()).collect();
    for why in [
        "blocked by push.ip_range_blocklist",
        "push.allow_http is off",
    ] {
        assert_eq!(
            errors.iter().filter(|e| e.contains(why)).count(),
            1,
            "{why}: {errors:?}"
        );
    }
    assert!(gw.received().is_empty(), "nothing reached the gateway");
}

#[test]
fn a_plain_http_gateway_is_used_when_the_operator_allows_it() {
    let h = Harness::start(&format!("{PUSH}allow_http = true\n"));
    let gw = TestGateway::start(None);
    set_pusher(&h, BOB, "lan", &gw.url(), &[]);
    let inv = valid_invite(&h.origin, "11", BOB);
    put_ok(&h, &inv);
    let got = gw.wait_for(1, Duration::from_secs(10));
    assert_eq!(
        got[0].body["notification"]["event_id"],
        inv.event_id.as_str()
    );
    let rows = wait_all_finished(&h, Duration::from_secs(5));
    assert_eq!(rows[0].2, None, "delivered: {rows:?}");
}
