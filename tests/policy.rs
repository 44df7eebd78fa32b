//! The invite policy end to end: one test per rule of `src/policy.rs` (operator deny and
//! allow rules, the switches, known users, the invitee's own MSC4380/MSC4155/ignore settings,
//! ignore rules, rate limits), the refusal log, and the operator CLI's contract.
//!
//! The real binary runs over loopback; a test origin serves its keys over HTTPS (test CA) and
//! signs requests and events with ruma. Rules are changed with the real CLI while the server
//! runs, so every test also shows that a change takes effect on the next request. The
//! database is read directly (rusqlite) to check what was stored.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::invites::{Answer, Harness, Invite, US, assert_error, put_raw, sign_invite};
use common::origin::{TestOrigin, new_key, now_ms, unique};
use common::*;
use rusqlite::OptionalExtension;
use serde_json::{Value as J, json};

const BOB: &str = "@bob:invited.test";

// ---------------------------------------------------------------------------------------------
// Helpers

/// A complete, valid v2 invite for `version` from `@{sender_localpart}:origin` to `invitee`,
/// with a create and an `m.room.name` event as room state.
fn invite_from(
    origin: &TestOrigin,
    version: &str,
    sender_localpart: &str,
    invitee: &str,
) -> Invite {
    let (create, room_id) = origin.create_event(version, "alice");
    let name = origin.state_event(
        version,
        &room_id,
        "m.room.name",
        json!({"name": "Test room"}),
    );
    let mut raw = origin.raw_invite(version, &room_id, invitee);
    raw["sender"] = json!(format!("@{sender_localpart}:{}", origin.name()));
    // Invites made within one millisecond would otherwise be identical (same event ID: a
    // retry, not a new invite), as room version 12 room IDs have no random part.
    raw["content"]["reason"] = json!(format!("test invite {}", unique()));
    sign_invite(origin, version, &room_id, &[create, name], &raw)
}

/// An invite from @alice (room version 12).
fn invite(origin: &TestOrigin, invitee: &str) -> Invite {
    invite_from(origin, "12", "alice", invitee)
}

/// PUTs the invite with this Authorization header.
fn put_auth(invited: &Invited, inv: &Invite, header: &str) -> Answer {
    put_raw(
        invited,
        &inv.path,
        &serde_json::to_vec(&inv.body).unwrap(),
        Some(header),
    )
}

/// PUTs the invite, signed by `origin`.
fn put(invited: &Invited, origin: &TestOrigin, inv: &Invite) -> Answer {
    let header = origin.sign_request("PUT", &inv.path, US, Some(&inv.body));
    put_auth(invited, inv, &header)
}

/// Asserts a 200 whose event is the sent one plus exactly one new signature, ours.
fn assert_cosigned(answer: &Answer, inv: &Invite, what: &str) {
    assert_eq!(answer.status, 200, "{what}: {}", answer.text);
    let answered = &answer.json["event"];
    let ours = answered["signatures"][US]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no signature of ours in {}", answer.text));
    assert_eq!(ours.len(), 1, "{what}");
    let mut expected = inv.event.clone();
    expected["signatures"][US] = J::Object(ours.clone());
    assert_eq!(
        answered, &expected,
        "{what}: the event must come back unchanged but for our signature"
    );
}

// --- the database -----------------------------------------------------------------------------

/// The stored state of an invite: Some("pending"), Some("ignored"), ... or None (no such row).
/// A failing query fails the test.
fn state_of(invited: &Invited, event_id: &str) -> Option<String> {
    invited
        .db()
        .query_row(
            "SELECT state FROM invites WHERE event_id = ?1",
            [event_id],
            |r| r.get(0),
        )
        .optional()
        .expect("reading an invite's state")
}

fn in_view(invited: &Invited, view: &str, event_id: &str) -> bool {
    let n: i64 = invited
        .db()
        .query_row(
            &format!("SELECT count(*) FROM {view} WHERE event_id = ?1"),
            [event_id],
            |r| r.get(0),
        )
        .unwrap();
    n > 0
}

fn refusal_count(invited: &Invited) -> i64 {
    invited
        .db()
        .query_row("SELECT count(*) FROM refusals", [], |r| r.get(0))
        .unwrap()
}

/// Refusals are logged by the writer thread after the answer is sent (without a waiter), so
/// a row appears shortly after the response: wait until there are at least `n` rows for
/// this event ID (at most 10 s), then return them all.
fn wait_refusals(invited: &Invited, event_id: &str, n: usize) -> Vec<J> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = refusals_for(invited, event_id);
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The refusal rows for an event ID, as JSON objects.
fn refusals_for(invited: &Invited, event_id: &str) -> Vec<J> {
    let conn = invited.db();
    let mut stmt = conn
        .prepare(
            "SELECT ts, origin, sender, invitee, room_id, event_id, rule, errcode, status
             FROM refusals WHERE event_id = ?1 ORDER BY id",
        )
        .unwrap();
    stmt.query_map([event_id], |r| {
        Ok(json!({
            "ts": r.get::<_, i64>(0)?,
            "origin": r.get::<_, String>(1)?,
            "sender": r.get::<_, Option<String>>(2)?,
            "invitee": r.get::<_, Option<String>>(3)?,
            "room_id": r.get::<_, Option<String>>(4)?,
            "event_id": r.get::<_, Option<String>>(5)?,
            "rule": r.get::<_, String>(6)?,
            "errcode": r.get::<_, String>(7)?,
            "status": r.get::<_, i64>(8)?,
        }))
    })
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

/// Asserts the invite was refused with this status and errcode, is not stored, and has
/// exactly one refusal row naming `rule`, the origin, sender, invitee and room.
fn assert_refused(
    invited: &Invited,
    origin: &TestOrigin,
    inv: &Invite,
    answer: &Answer,
    status: u16,
    errcode: &str,
    rule: &str,
) {
    assert_error(answer, status, errcode, rule);
    assert_eq!(
        state_of(invited, &inv.event_id),
        None,
        "{rule}: a refused invite is not stored"
    );
    let rows = wait_refusals(invited, &inv.event_id, 1);
    assert_eq!(
        rows.len(),
        1,
        "{rule}: one refusal row: {rows:?}; server log:\n{}",
        invited.log()
    );
    let row = &rows[0];
    assert_eq!(row["rule"], json!(rule), "{row}");
    assert_eq!(row["errcode"], json!(errcode), "{row}");
    assert_eq!(row["status"], json!(status), "{row}");
    assert_eq!(row["origin"], json!(origin.name()), "{row}");
    assert_eq!(row["sender"], json!(inv.sender), "{row}");
    assert_eq!(row["invitee"], json!(inv.invitee), "{row}");
    assert_eq!(row["room_id"], json!(inv.room_id), "{row}");
    let age = now_ms() - row["ts"].as_i64().unwrap();
    assert!((0..120_000).contains(&age), "{row}: ts is now");
}

/// Asserts a 200 co-signed answer and the stored state.
fn assert_accepted(invited: &Invited, inv: &Invite, answer: &Answer, state: &str, what: &str) {
    assert_cosigned(answer, inv, what);
    assert_eq!(
        state_of(invited, &inv.event_id).as_deref(),
        Some(state),
        "{what}"
    );
    assert!(
        refusals_for(invited, &inv.event_id).is_empty(),
        "{what}: no refusal row"
    );
}

// --- the CLI ----------------------------------------------------------------------------------

/// Runs the CLI against the server's config; asserts success and returns stdout.
fn cli(invited: &Invited, args: &[&str]) -> String {
    cli_ok(&invited.config_path, args)
}

/// Runs the CLI expecting an error: non-zero exit, no panic, exactly one line on stderr
/// (`invited: error: …`). Returns that line.
fn cli_err(config: &Path, args: &[&str]) -> String {
    let out = run_cli(Some(config), args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "invited {args:?} should fail");
    assert_eq!(out.status.code(), Some(1), "invited {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "invited {args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "invited {args:?}: exactly one line on stderr, got {stderr:?}"
    );
    assert!(
        lines[0].starts_with("invited: error: "),
        "invited {args:?}: {stderr:?}"
    );
    lines[0].to_owned()
}

fn cli_json(invited: &Invited, args: &[&str]) -> J {
    let out = cli(invited, args);
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("invited {args:?}: not JSON ({e}): {out}"))
}

// ---------------------------------------------------------------------------------------------
// One test per rule

#[test]
fn deny_server_glob_refuses_403() {
    let h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);

    // A glob for another server does not match.
    cli(invited, &["policy", "deny-server", "*.spam.example"]);
    let first = invite(origin, BOB);
    let answer = put(invited, origin, &first);
    assert_accepted(invited, &first, &answer, "pending", "no matching deny rule");

    // The origin is 127.0.0.1:PORT; server rules match the host without the port.
    let out = cli(invited, &["policy", "deny-server", "127.0.0.*"]);
    assert!(out.contains("added server deny rule 127.0.0.*"), "{out}");
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_FORBIDDEN",
        "server deny 127.0.0.*",
    );

    // Adding it again is a no-op; `policy show --json` lists it.
    let out = cli(invited, &["policy", "deny-server", "127.0.0.*"]);
    assert!(out.contains("already had"), "{out}");
    let shown = cli_json(invited, &["policy", "show", "--json"]);
    let rules = shown["rules"].as_array().unwrap();
    assert!(
        rules.contains(
            &json!({"kind": "server", "pattern": "127.0.0.*", "action": "deny", "source": "cli"})
        ),
        "{shown}"
    );

    // A retry of the earlier, accepted invite is still answered (it was answered before the
    // rule existed): same bytes.
    let again = put(invited, origin, &first);
    assert_eq!(again.status, 200, "{}", again.text);

    // Deny rules on users match the full sender ID.
    cli(invited, &["policy", "remove", "127.0.0.*"]);
    cli(invited, &["policy", "deny-user", "@mallory:*"]);
    let from_mallory = invite_from(origin, "12", "mallory", BOB);
    let answer = put(invited, origin, &from_mallory);
    assert_refused(
        invited,
        origin,
        &from_mallory,
        &answer,
        403,
        "M_FORBIDDEN",
        "user deny @mallory:*",
    );
    let from_alice = invite(origin, BOB);
    let answer = put(invited, origin, &from_alice);
    assert_accepted(
        invited,
        &from_alice,
        &answer,
        "pending",
        "deny-user for another user",
    );
}

/// A server rule or MSC4155 server entry that names a port matches that server name only,
/// port included (as Synapse matches them); one without a port covers the host on any port.
/// The origin here is 127.0.0.1:PORT.
#[test]
fn server_rules_with_a_port_match_that_port() {
    let h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);
    let (host, port) = origin.name().rsplit_once(':').unwrap();
    let other_port = format!("{host}:{}", port.parse::<u32>().unwrap() + 1);

    // Another port of the same host: not this origin.
    cli(invited, &["policy", "deny-server", &other_port]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "pending", "a rule for another port");

    // This origin's exact name, port included.
    cli(invited, &["policy", "deny-server", origin.name()]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    let rule = format!("server deny {}", origin.name());
    assert_refused(invited, origin, &inv, &answer, 403, "M_FORBIDDEN", &rule);
    cli(invited, &["policy", "remove", origin.name()]);

    // The invitee blocks the sender's server by its full name (MSC4155).
    let config = format!(r#"{{"blocked_servers":["{}"]}}"#, origin.name());
    cli(invited, &["users", "set-config", BOB, "msc4155", &config]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_INVITE_BLOCKED",
        "invitee msc4155 blocked_servers",
    );
    // ... and an entry for another port does not block it.
    let config = format!(r#"{{"blocked_servers":["{other_port}"]}}"#);
    cli(invited, &["users", "set-config", BOB, "msc4155", &config]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_accepted(
        invited,
        &inv,
        &answer,
        "pending",
        "blocked_servers for another port",
    );
}

#[test]
fn allow_list_mode() {
    let h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);

    cli(invited, &["policy", "set", "allow-list-mode", "on"]);
    cli(invited, &["policy", "allow-server", "*.friends.example"]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_FORBIDDEN",
        &format!("allow_list_mode: {} not allowed", origin.name()),
    );

    cli(invited, &["policy", "allow-server", "127.0.0.1"]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "pending", "allowed origin");

    // A deny rule still wins over an allow rule.
    cli(invited, &["policy", "deny-server", "127.*"]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_FORBIDDEN",
        "server deny 127.*",
    );
    cli(invited, &["policy", "remove", "127.*"]);

    // Switching the mode off lets everyone in again, even without an allow rule.
    cli(invited, &["policy", "remove", "127.0.0.1"]);
    cli(invited, &["policy", "set", "allow-list-mode", "off"]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "pending", "allow-list mode off");
}

#[test]
fn refuse_all_switch_and_config_default() {
    let mut h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);

    cli(invited, &["policy", "set", "refuse-all", "on"]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_FORBIDDEN",
        "refuse_all",
    );
    let shown = cli_json(invited, &["policy", "show", "--json"]);
    assert_eq!(shown["switches"]["refuse_all"], json!(true), "{shown}");

    // `default`: back to the config file's value (off here).
    cli(invited, &["policy", "set", "refuse-all", "default"]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_accepted(
        invited,
        &inv,
        &answer,
        "pending",
        "refuse-all default (off)",
    );

    // With refuse_all = true in the config file: `off` overrides it, `default` restores it.
    h.restart_fresh("[policy]\nrefuse_all = true\n");
    let (invited, origin) = (&h.invited, &h.origin);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_FORBIDDEN",
        "refuse_all",
    );
    cli(invited, &["policy", "set", "refuse-all", "off"]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_accepted(
        invited,
        &inv,
        &answer,
        "pending",
        "refuse-all off over config",
    );
    cli(invited, &["policy", "set", "refuse-all", "default"]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_FORBIDDEN",
        "refuse_all",
    );
}

#[test]
fn known_users_only() {
    let h = Harness::start("[policy]\nknown_users_only = true\n");
    let (invited, origin) = (&h.invited, &h.origin);

    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_FORBIDDEN",
        "known_users_only",
    );

    let out = cli(invited, &["users", "add", BOB]);
    assert!(out.contains(&format!("added {BOB}")), "{out}");
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "pending", "known user");

    // Other users are still unknown; the CLI switch overrides the config, `default` restores.
    let carol = format!("@carol:{US}");
    let inv = invite(origin, &carol);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_FORBIDDEN",
        "known_users_only",
    );
    cli(invited, &["policy", "set", "known-users-only", "off"]);
    let inv = invite(origin, &carol);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "pending", "known-users-only off");
    cli(invited, &["policy", "set", "known-users-only", "default"]);
    let inv = invite(origin, &carol);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_FORBIDDEN",
        "known_users_only",
    );

    // A user of another server cannot be added.
    let line = cli_err(
        &invited.config_path,
        &["users", "add", "@eve:elsewhere.test"],
    );
    assert!(line.contains("not a user of"), "{line}");
}

#[test]
fn invite_permission_config_block_is_403_invite_blocked() {
    let h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);

    cli(
        invited,
        &[
            "users",
            "set-config",
            BOB,
            "invite-permission-config",
            r#"{"default_action":"block"}"#,
        ],
    );
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_INVITE_BLOCKED",
        "invitee invite_permission_config default_action block",
    );

    // Only Bob blocks.
    let carol = format!("@carol:{US}");
    let inv = invite(origin, &carol);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "pending", "another user");

    // 'null' clears the setting.
    cli(
        invited,
        &[
            "users",
            "set-config",
            BOB,
            "invite-permission-config",
            "null",
        ],
    );
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "pending", "setting cleared");
}

#[test]
fn msc4155_allowed_user_beats_blocked_server() {
    let h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);

    let config = format!(
        r#"{{"allowed_users":["@alice:{}"],"blocked_servers":["*"]}}"#,
        origin.name()
    );
    cli(invited, &["users", "set-config", BOB, "msc4155", &config]);

    let from_alice = invite(origin, BOB);
    let answer = put(invited, origin, &from_alice);
    assert_accepted(invited, &from_alice, &answer, "pending", "allowed user");

    let from_mallory = invite_from(origin, "12", "mallory", BOB);
    let answer = put(invited, origin, &from_mallory);
    assert_refused(
        invited,
        origin,
        &from_mallory,
        &answer,
        403,
        "M_INVITE_BLOCKED",
        "invitee msc4155 blocked_servers",
    );

    // "enabled": false turns the lists off.
    let config = r#"{"enabled":false,"blocked_servers":["*"]}"#;
    cli(invited, &["users", "set-config", BOB, "msc4155", config]);
    let from_mallory = invite_from(origin, "12", "mallory", BOB);
    let answer = put(invited, origin, &from_mallory);
    assert_accepted(
        invited,
        &from_mallory,
        &answer,
        "pending",
        "msc4155 disabled",
    );

    // Blocked users.
    let config = format!(r#"{{"blocked_users":["@mallory:{}"]}}"#, origin.name());
    cli(invited, &["users", "set-config", BOB, "msc4155", &config]);
    let from_mallory = invite_from(origin, "12", "mallory", BOB);
    let answer = put(invited, origin, &from_mallory);
    assert_refused(
        invited,
        origin,
        &from_mallory,
        &answer,
        403,
        "M_INVITE_BLOCKED",
        "invitee msc4155 blocked_users",
    );
}

#[test]
fn ignore_rules_answer_200_and_store_as_ignored() {
    let h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);

    let normal = invite(origin, BOB);
    let answer = put(invited, origin, &normal);
    assert_accepted(invited, &normal, &answer, "pending", "before the rule");

    // Operator ignore rule on the origin server.
    cli(invited, &["policy", "ignore-server", "127.0.0.1"]);
    let ignored = invite(origin, BOB);
    let answer = put(invited, origin, &ignored);
    assert_accepted(invited, &ignored, &answer, "ignored", "ignore-server");
    let first_text = answer.text.clone();
    assert!(!in_view(invited, "pending_invites", &ignored.event_id));
    assert!(!in_view(
        invited,
        "pending_invites_readable",
        &ignored.event_id
    ));
    assert!(in_view(invited, "pending_invites", &normal.event_id));
    assert!(in_view(
        invited,
        "pending_invites_readable",
        &normal.event_id
    ));
    let pending = cli_json(
        invited,
        &["invites", "list", "--state", "pending", "--json"],
    );
    let ids: Vec<&str> = pending
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![normal.event_id.as_str()], "{pending}");
    let listed = cli_json(
        invited,
        &["invites", "list", "--state", "ignored", "--json"],
    );
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["event_id"], json!(ignored.event_id));
    assert_eq!(listed[0]["state"], json!("ignored"));
    // A retry gets the same bytes and stays ignored.
    let again = put(invited, origin, &ignored);
    assert_eq!(
        (again.status, again.text.as_str()),
        (200, first_text.as_str())
    );
    assert_eq!(
        state_of(invited, &ignored.event_id).as_deref(),
        Some("ignored")
    );
    cli(invited, &["policy", "remove", "127.0.0.1"]);

    // Operator ignore rule on a user.
    cli(invited, &["policy", "ignore-user", "@mallory:*"]);
    let inv = invite_from(origin, "12", "mallory", BOB);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "ignored", "ignore-user");
    cli(invited, &["policy", "remove", "@mallory:*"]);

    // The invitee's own MSC4155 ignored_users.
    let carol = format!("@carol:{US}");
    let config = format!(r#"{{"ignored_users":["@mallory:{}"]}}"#, origin.name());
    cli(
        invited,
        &["users", "set-config", &carol, "msc4155", &config],
    );
    let inv = invite_from(origin, "12", "mallory", &carol);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "ignored", "msc4155 ignored_users");
    assert!(!in_view(invited, "pending_invites", &inv.event_id));
    let inv = invite(origin, &carol);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "pending", "msc4155: another sender");

    // The invitee's m.ignored_user_list.
    let dave = format!("@dave:{US}");
    let list = format!(
        r#"{{"ignored_users":{{"@mallory:{}":{{}}}}}}"#,
        origin.name()
    );
    cli(
        invited,
        &["users", "set-config", &dave, "ignored-users", &list],
    );
    let inv = invite_from(origin, "12", "mallory", &dave);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "ignored", "m.ignored_user_list");
    let inv = invite(origin, &dave);
    let answer = put(invited, origin, &inv);
    assert_accepted(
        invited,
        &inv,
        &answer,
        "pending",
        "ignored list: another sender",
    );
}

#[test]
fn rate_limit_per_invitee_429_then_recovers() {
    let h = Harness::start_with_workers(
        4,
        "[rate_limits]\nper_invitee_per_second = 1.0\nper_invitee_burst = 2\n\
         per_origin_per_second = 1000.0\nper_origin_burst = 1000\n",
    );
    let (invited, origin) = (&h.invited, &h.origin);
    // Warm the origin's keys with another invitee (its own bucket), and sign everything
    // first. The burst is sent at once (the server has 4 workers), so that it fits in the
    // one second a token takes to come back even on a loaded machine.
    let warm = invite(origin, &format!("@warm:{US}"));
    assert_eq!(put(invited, origin, &warm).status, 200);
    let invites: Vec<Invite> = (0..4).map(|_| invite(origin, BOB)).collect();
    let headers: Vec<String> = invites[..3]
        .iter()
        .map(|i| origin.sign_request("PUT", &i.path, US, Some(&i.body)))
        .collect();

    let started = Instant::now();
    let barrier = std::sync::Barrier::new(3);
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let (invited, inv, header, barrier) = (invited, &invites[i], &headers[i], &barrier);
                s.spawn(move || {
                    barrier.wait();
                    put_auth(invited, inv, header)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let burst_took = started.elapsed();
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    let refused: Vec<usize> = (0..3).filter(|i| answers[*i].status == 429).collect();
    assert_eq!(
        refused.len(),
        1,
        "exactly one of a burst of three is refused: {statuses:?} (burst took {burst_took:?})"
    );
    let r = refused[0];
    for i in (0..3).filter(|i| *i != r) {
        assert_accepted(
            invited,
            &invites[i],
            &answers[i],
            "pending",
            "burst, within the limit",
        );
    }
    let a2 = &answers[r];
    assert_refused(
        invited,
        origin,
        &invites[r],
        a2,
        429,
        "M_LIMIT_EXCEEDED",
        "rate limit per invitee",
    );
    let retry_ms = a2.json["retry_after_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("retry_after_ms in {}", a2.text));
    assert!(
        (1..=1000).contains(&retry_ms),
        "retry_after_ms {retry_ms}: at most one token's time at 1/s"
    );
    let header = a2.retry_after.as_deref().expect("a Retry-After header");
    let secs: u64 = header.parse().expect("Retry-After in whole seconds");
    assert!(
        secs >= 1 && secs * 1000 >= retry_ms as u64 && secs <= 2,
        "Retry-After {secs} s for retry_after_ms {retry_ms}"
    );

    // After waiting as told, a new invite goes through.
    std::thread::sleep(Duration::from_millis(retry_ms as u64));
    let a3 = put(invited, origin, &invites[3]);
    assert_accepted(invited, &invites[3], &a3, "pending", "after retry_after_ms");
}

#[test]
fn rate_limit_per_origin() {
    let h = Harness::start("[rate_limits]\nper_origin_per_second = 0.01\nper_origin_burst = 2\n");
    let (invited, origin) = (&h.invited, &h.origin);
    let a = invite(origin, &format!("@a:{US}"));
    let b = invite(origin, &format!("@b:{US}"));
    let c = invite(origin, &format!("@c:{US}"));
    let answer = put(invited, origin, &a);
    assert_accepted(invited, &a, &answer, "pending", "1st from the origin");
    let answer = put(invited, origin, &b);
    assert_accepted(invited, &b, &answer, "pending", "2nd from the origin");
    let answer = put(invited, origin, &c);
    assert_refused(
        invited,
        origin,
        &c,
        &answer,
        429,
        "M_LIMIT_EXCEEDED",
        "rate limit per origin",
    );
    assert!(answer.json["retry_after_ms"].as_i64().unwrap() > 1000);
    assert!(answer.retry_after.is_some());
}

#[test]
fn retries_are_not_charged_against_rate_limits() {
    // Two tokens per invitee, practically no refill during the test.
    let h = Harness::start(
        "[rate_limits]\nper_invitee_per_second = 0.01\nper_invitee_burst = 2\n\
         per_origin_per_second = 1000.0\nper_origin_burst = 1000\n",
    );
    let (invited, origin) = (&h.invited, &h.origin);
    let a = invite(origin, BOB);
    let first = put(invited, origin, &a);
    assert_accepted(invited, &a, &first, "pending", "A");
    for n in 0..5 {
        let again = put(invited, origin, &a);
        assert_eq!(again.status, 200, "retry {n} of A: {}", again.text);
        assert_eq!(again.text, first.text, "retry {n} of A: the same bytes");
    }
    // Had the five retries been charged, B would be refused.
    let b = invite(origin, BOB);
    let answer = put(invited, origin, &b);
    assert_accepted(invited, &b, &answer, "pending", "B after five retries of A");
    // And the limiter is on: C, a third new invite, is refused.
    let c = invite(origin, BOB);
    let answer = put(invited, origin, &c);
    assert_refused(
        invited,
        origin,
        &c,
        &answer,
        429,
        "M_LIMIT_EXCEEDED",
        "rate limit per invitee",
    );
    // Retries of A and B still answer 200 with the limit exhausted.
    assert_eq!(put(invited, origin, &a).text, first.text);
    assert_eq!(put(invited, origin, &b).status, 200);
}

#[test]
fn a_rule_changed_with_the_cli_takes_effect_on_the_next_request() {
    let mut h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);

    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "pending", "before the rule");

    cli(invited, &["policy", "deny-server", "127.0.0.1"]);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_FORBIDDEN",
        "server deny 127.0.0.1",
    );

    let out = cli(invited, &["policy", "remove", "127.0.0.1"]);
    assert!(out.contains("removed 1 rule(s)"), "{out}");
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_accepted(invited, &inv, &answer, "pending", "after policy remove");

    // Rules from the config file apply from the start.
    h.restart_fresh("[policy]\ndeny_servers = [\"127.0.0.*\"]\n");
    let (invited, origin) = (&h.invited, &h.origin);
    let inv = invite(origin, BOB);
    let answer = put(invited, origin, &inv);
    assert_refused(
        invited,
        origin,
        &inv,
        &answer,
        403,
        "M_FORBIDDEN",
        "server deny 127.0.0.*",
    );
}

// ---------------------------------------------------------------------------------------------
// The refusal log

#[test]
fn refusal_log() {
    let h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);
    let config = invited.config_path.clone();

    // Nothing yet: an empty JSON array.
    assert_eq!(
        cli_json(invited, &["refusals", "list", "--json"]),
        json!([])
    );

    // Unauthenticated requests are not logged: a signature with a key the origin does not
    // publish, and no signature at all. (Sent first: the refusal log is written in order, so
    // once the later refusals are there, these would be too.)
    let unlogged = invite(origin, BOB);
    let bad = origin.sign_request_with(
        &new_key("zz"),
        "PUT",
        &unlogged.path,
        US,
        Some(&unlogged.body),
    );
    assert_error(
        &put_auth(invited, &unlogged, &bad),
        401,
        "M_UNAUTHORIZED",
        "unknown key",
    );
    let resp = h
        .agent
        .put(&invited.url(&unlogged.path))
        .send(serde_json::to_vec(&unlogged.body).unwrap())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // A policy refusal.
    cli(invited, &["policy", "deny-user", "@mallory:*"]);
    let by_policy = invite_from(origin, "12", "mallory", BOB);
    let answer = put(invited, origin, &by_policy);
    assert_error(&answer, 403, "M_FORBIDDEN", "deny-user");

    // A pipeline refusal: the invitee is not ours.
    let foreign = invite(origin, "@bob:elsewhere.test");
    let answer = put(invited, origin, &foreign);
    assert_error(&answer, 400, "M_INVALID_PARAM", "foreign invitee");

    assert_eq!(wait_refusals(invited, &by_policy.event_id, 1).len(), 1);
    assert_eq!(wait_refusals(invited, &foreign.event_id, 1).len(), 1);
    assert_eq!(
        refusal_count(invited),
        2,
        "only the two authenticated refusals"
    );
    assert!(refusals_for(invited, &unlogged.event_id).is_empty());

    let list = cli_json(invited, &["refusals", "list", "--json"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    let fields: BTreeSet<&str> = [
        "ts",
        "origin",
        "sender",
        "invitee",
        "room_id",
        "event_id",
        "rule",
        "errcode",
        "status",
        "suppressed",
    ]
    .into();
    for row in rows {
        let keys: BTreeSet<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, fields, "{row}");
        assert!(
            row["ts"]
                .as_i64()
                .is_some_and(|t| (now_ms() - t).abs() < 120_000),
            "{row}"
        );
        assert_eq!(row["origin"], json!(origin.name()), "{row}");
    }
    // Newest first.
    let (pipeline, policy) = (&rows[0], &rows[1]);
    assert_eq!(
        policy,
        &json!({
            "ts": policy["ts"], "origin": origin.name(), "sender": by_policy.sender,
            "invitee": BOB, "room_id": by_policy.room_id, "event_id": by_policy.event_id,
            "rule": "user deny @mallory:*", "errcode": "M_FORBIDDEN", "status": 403,
            "suppressed": 0,
        })
    );
    assert_eq!(pipeline["errcode"], json!("M_INVALID_PARAM"), "{pipeline}");
    assert_eq!(pipeline["status"], json!(400), "{pipeline}");
    assert_eq!(
        pipeline["invitee"],
        json!("@bob:elsewhere.test"),
        "{pipeline}"
    );
    assert_eq!(pipeline["sender"], json!(foreign.sender), "{pipeline}");
    assert_eq!(pipeline["event_id"], json!(foreign.event_id), "{pipeline}");
    assert_eq!(pipeline["room_id"], json!(foreign.room_id), "{pipeline}");
    assert!(
        pipeline["rule"]
            .as_str()
            .unwrap()
            .contains("not a user of this server"),
        "{pipeline}"
    );

    // --since: relative and absolute; --limit.
    assert_eq!(
        cli_json(invited, &["refusals", "list", "--since", "1h", "--json"]),
        list
    );
    assert_eq!(
        cli_json(invited, &["refusals", "list", "--since", "30m", "--json"]),
        list
    );
    let future = (now_ms() + 3_600_000).to_string();
    assert_eq!(
        cli_json(invited, &["refusals", "list", "--since", &future, "--json"]),
        json!([])
    );
    let one = cli_json(invited, &["refusals", "list", "--limit", "1", "--json"]);
    assert_eq!(one, json!([rows[0].clone()]));
    // The table form names the rules.
    let table = cli(invited, &["refusals", "list"]);
    assert!(table.contains("user deny @mallory:*"), "{table}");
    assert!(table.contains("M_INVALID_PARAM"), "{table}");

    // The per-server-per-day view counts both.
    let (n, errcodes): (i64, String) = invited
        .db()
        .query_row(
            "SELECT refusals, errcodes FROM refusals_per_server_per_day WHERE origin = ?1",
            [origin.name()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(n, 2);
    assert!(errcodes.contains("M_FORBIDDEN") && errcodes.contains("M_INVALID_PARAM"));

    // A bad --since is one line on stderr.
    for bad in ["5x", "abc", "1w", ""] {
        let line = cli_err(&config, &["refusals", "list", "--since", bad]);
        assert!(line.contains("--since"), "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// The CLI's contract

#[test]
fn invites_cli_contract() {
    let h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);
    let config = invited.config_path.clone();
    let carol = format!("@carol:{US}");

    assert_eq!(cli_json(invited, &["invites", "list", "--json"]), json!([]));

    let for_bob = invite_from(origin, "11", "alice", BOB);
    let bob_answer = put(invited, origin, &for_bob);
    assert_accepted(invited, &for_bob, &bob_answer, "pending", "bob");
    let for_carol = invite(origin, &carol);
    let answer = put(invited, origin, &for_carol);
    assert_accepted(invited, &for_carol, &answer, "pending", "carol");

    // invites list --json: an array of objects with exactly these fields.
    let list = cli_json(invited, &["invites", "list", "--json"]);
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    let fields: BTreeSet<&str> = [
        "event_id",
        "room_id",
        "room_version",
        "room_name",
        "invitee",
        "sender",
        "origin",
        "origin_server_ts",
        "received_ts",
        "state",
    ]
    .into();
    for item in items {
        let keys: BTreeSet<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, fields, "{item}");
    }
    let bob_item = items
        .iter()
        .find(|i| i["event_id"] == json!(for_bob.event_id))
        .expect("bob's invite listed");
    assert_eq!(bob_item["room_id"], json!(for_bob.room_id));
    assert_eq!(bob_item["room_version"], json!("11"));
    assert_eq!(bob_item["room_name"], json!("Test room"));
    assert_eq!(bob_item["invitee"], json!(BOB));
    assert_eq!(bob_item["sender"], json!(for_bob.sender));
    assert_eq!(bob_item["origin"], json!(origin.name()));
    assert_eq!(
        bob_item["origin_server_ts"],
        for_bob.event["origin_server_ts"]
    );
    assert!(
        bob_item["received_ts"]
            .as_i64()
            .is_some_and(|t| (now_ms() - t).abs() < 120_000)
    );
    assert_eq!(bob_item["state"], json!("pending"));
    let only_bob = cli_json(invited, &["invites", "list", "--user", BOB, "--json"]);
    assert_eq!(only_bob, json!([bob_item.clone()]));
    let table = cli(invited, &["invites", "list"]);
    assert!(
        table.contains(&for_bob.event_id) && table.contains("Test room"),
        "{table}"
    );

    // invites show: the co-signed event as answered, the room state, the warnings.
    let shown = cli_json(invited, &["invites", "show", &for_bob.event_id, "--json"]);
    assert_eq!(shown["event"], bob_answer.json["event"], "{shown}");
    assert_eq!(shown["event_id"], json!(for_bob.event_id));
    assert_eq!(shown["state"], json!("pending"));
    assert_eq!(shown["invitee"], json!(BOB));
    let state = shown["invite_room_state"].as_array().unwrap();
    assert_eq!(state.len(), 2, "{shown}");
    assert_eq!(state[0]["type"], json!("m.room.create"));
    assert_eq!(state[1]["type"], json!("m.room.name"));
    assert_eq!(state[1]["content"], json!({"name": "Test room"}));
    assert!(shown["warnings"].is_array(), "{shown}");

    // invites reject EVENT_ID --local-only (delivery over federation: tests/lifecycle.rs).
    let out = cli(
        invited,
        &["invites", "reject", &for_bob.event_id, "--local-only"],
    );
    assert!(
        out.contains(&format!("rejected_locally {}", for_bob.event_id)),
        "{out}"
    );
    assert!(out.contains("1 invite(s) rejected"), "{out}");
    assert_eq!(
        state_of(invited, &for_bob.event_id).as_deref(),
        Some("rejected_locally")
    );
    assert!(!in_view(invited, "pending_invites", &for_bob.event_id));
    let rejected = cli_json(
        invited,
        &["invites", "list", "--state", "rejected_locally", "--json"],
    );
    assert_eq!(rejected.as_array().unwrap().len(), 1);
    assert_eq!(rejected[0]["event_id"], json!(for_bob.event_id));
    // Rejecting it again is an error (it is no longer pending).
    let line = cli_err(&config, &["invites", "reject", &for_bob.event_id]);
    assert!(line.contains(&for_bob.event_id), "{line}");

    // invites reject --from-server GLOB: also ignored invites; a glob that matches nothing
    // changes nothing.
    cli(invited, &["policy", "ignore-user", "@mallory:*"]);
    let ignored = invite_from(origin, "12", "mallory", &carol);
    let answer = put(invited, origin, &ignored);
    assert_accepted(invited, &ignored, &answer, "ignored", "ignored invite");
    let out = cli(
        invited,
        &["invites", "reject", "--from-server", "10.*", "--local-only"],
    );
    assert!(out.contains("0 invite(s) rejected"), "{out}");
    assert_eq!(
        state_of(invited, &for_carol.event_id).as_deref(),
        Some("pending")
    );
    let out = cli(
        invited,
        &[
            "invites",
            "reject",
            "--from-server",
            "127.0.0.*",
            "--local-only",
        ],
    );
    assert!(out.contains("2 invite(s) rejected"), "{out}");
    for id in [&for_carol.event_id, &ignored.event_id, &for_bob.event_id] {
        assert_eq!(
            state_of(invited, id).as_deref(),
            Some("rejected_locally"),
            "{id}"
        );
    }
    assert_eq!(
        cli_json(
            invited,
            &["invites", "list", "--state", "pending", "--json"]
        ),
        json!([])
    );
    // A rejected invite's retry is still answered as before (the inviter learns nothing).
    assert_eq!(put(invited, origin, &for_bob).text, bob_answer.text);

    // Errors: one line on stderr, non-zero exit, no panic.
    let line = cli_err(&config, &["invites", "show", "$nosuchevent"]);
    assert!(line.contains("$nosuchevent"), "{line}");
    let line = cli_err(&config, &["invites", "reject", "$nosuchevent"]);
    assert!(line.contains("$nosuchevent"), "{line}");
    let line = cli_err(&config, &["invites", "reject"]);
    assert!(line.contains("exactly one"), "{line}");
    let line = cli_err(&config, &["invites", "list", "--state", "bogus"]);
    assert!(line.contains("--state"), "{line}");
    let line = cli_err(&config, &["policy", "remove", "no.such.rule"]);
    assert!(line.contains("no.such.rule"), "{line}");
    let line = cli_err(
        &config,
        &["users", "set-config", BOB, "msc4155", "{not json"],
    );
    assert!(!line.is_empty());
    let line = cli_err(&config, &["users", "set-config", BOB, "msc4155", "[1]"]);
    assert!(line.contains("object"), "{line}");
}

#[test]
fn cli_without_a_database_is_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), US, "");
    let commands: &[&[&str]] = &[
        &["invites", "list"],
        &["invites", "list", "--json"],
        &["invites", "show", "$x"],
        &["invites", "reject", "$x"],
        &["policy", "deny-server", "*.spam.example"],
        &["policy", "show"],
        &["policy", "remove", "x"],
        &["policy", "set", "refuse-all", "on"],
        &["refusals", "list", "--json"],
        &["users", "add", BOB],
    ];
    for args in commands {
        let line = cli_err(&config, args);
        assert!(
            line.contains("no database") && line.contains("start the server once"),
            "{args:?}: {line}"
        );
    }
    assert!(
        !dir.path().join("data/invited.db").exists(),
        "the CLI must not create a database"
    );
}
