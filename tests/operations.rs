//! Operating invited: what an operator runs beside the server, against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::invites::{Harness, US, put_signed, valid_invite};
use common::run_cli;

/// `invited backup FILE` while invites keep arriving: the copy is one committed state (every
/// invite in it has its room state with it), passes SQLite's integrity check, holds every
/// invite answered before the backup began and none that was not answered, and opens as an
/// ordinary database with nothing beside it.
#[test]
fn a_backup_under_load_is_consistent() {
    let h =
        Harness::start("[rate_limits]\nper_invitee_burst = 100000\nper_origin_burst = 100000\n");
    let stop = AtomicBool::new(false);
    let answered = AtomicUsize::new(0);
    let dest = h.dir.path().join("backups").join("invited-backup.db");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let (before, after, out) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let inv = valid_invite(&h.origin, "11", &format!("@bob:{US}"));
                if put_signed(&h.invited, &h.origin, &inv).status == 200 {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(1500));
        let before = answered.load(Ordering::SeqCst);
        let out = run_cli(
            Some(&h.invited.config_path),
            &["backup", dest.to_str().unwrap()],
        );
        let after = answered.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        load.join().unwrap();
        (before, after, out)
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("integrity check: ok"), "{stdout}");
    assert!(
        before > 10,
        "the load ran: {before} invites before the backup"
    );

    let copy =
        rusqlite::Connection::open_with_flags(&dest, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let one = |sql: &str| -> i64 { copy.query_row(sql, [], |r| r.get(0)).unwrap() };
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let invites = one("SELECT count(*) FROM invites");
    assert!(
        (before as i64..=after as i64 + 2).contains(&invites),
        "{invites} invites in the copy; {before} answered before it began, {after} when it ended"
    );
    assert!(
        stdout.contains(&format!("backed up {invites} invite(s)")),
        "{stdout}"
    );
    // One committed state: each invite came with two room-state entries, and they are there.
    assert_eq!(one("SELECT count(*) FROM invite_room_state"), 2 * invites);
    let journal: String = copy
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "delete", "a self-contained file");
    drop(copy);
    let beside: Vec<String> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        beside,
        ["invited-backup.db"],
        "nothing else written beside it"
    );
}

/// Retention deletes exactly the finished invites older than `[retention]
/// finished_invites_days` — with their room state, warnings, rejection and rescind records and
/// outbox rows, and the full PDUs nothing else refers to — and never a pending invite or a
/// rejection being delivered, however old. `--dry-run` counts the same without deleting.
#[test]
fn retention_deletes_exactly_what_is_finished_and_old() {
    use common::invites::invite_in_room;
    let mut h = Harness::start("[retention]\nfinished_invites_days = 30\n");
    let bob = format!("@bob:{US}");
    let send = |h: &Harness, inv: &common::invites::Invite| {
        assert_eq!(put_signed(&h.invited, &h.origin, inv).status, 200);
    };
    let named: Vec<(&str, common::invites::Invite)> = [
        "accepted",
        "rescinded",
        "ignored",
        "pending",
        "rejecting",
        "recent",
    ]
    .into_iter()
    .map(|name| (name, valid_invite(&h.origin, "11", &bob)))
    .collect();
    for (_, inv) in &named {
        send(&h, inv);
    }
    // Two invites in one room share its PDUs: the old one goes, the PDUs stay for the other.
    let (create, room_id) = h.origin.create_event("11", "alice");
    let shared_old = invite_in_room(
        &h.origin,
        "11",
        &room_id,
        std::slice::from_ref(&create),
        &bob,
    );
    let shared_new = invite_in_room(
        &h.origin,
        "11",
        &room_id,
        &[create],
        &format!("@carol:{US}"),
    );
    send(&h, &shared_old);
    send(&h, &shared_new);
    // No server while states change: it would start delivering the rejection.
    h.invited.kill();
    let db = rusqlite::Connection::open(h.invited.dir.join("data/invited.db")).unwrap();
    let day = 24 * 3600 * 1000_i64;
    let now = common::origin::now_ms();
    let set = |id: &str, state: &str, changed: Option<i64>, received: i64| {
        // Through 'rejecting' first where a rejection record is wanted (the trigger makes it).
        db.execute(
            "UPDATE invites SET state = ?2, state_changed_ts = ?3, received_ts = ?4 WHERE event_id = ?1",
            rusqlite::params![id, state, changed, received],
        )
        .unwrap();
    };
    let id = |name: &str| {
        named
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
            .event_id
            .clone()
    };
    set(
        &id("rescinded"),
        "rejecting",
        Some(now - 200 * day),
        now - 200 * day,
    );
    set(
        &id("rescinded"),
        "rescinded",
        Some(now - 100 * day),
        now - 200 * day,
    );
    set(
        &id("accepted"),
        "accepted",
        Some(now - 100 * day),
        now - 200 * day,
    );
    set(&id("ignored"), "ignored", None, now - 100 * day);
    set(&id("pending"), "pending", None, now - 100 * day);
    set(
        &id("rejecting"),
        "rejecting",
        Some(now - 100 * day),
        now - 200 * day,
    );
    set(&id("recent"), "rejected", Some(now - day), now - 200 * day);
    set(
        &shared_old.event_id,
        "accepted",
        Some(now - 100 * day),
        now - 200 * day,
    );
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    let pdus_before = count("SELECT count(*) FROM pdus");
    assert_eq!(
        count("SELECT count(*) FROM outbox"),
        2,
        "two rejections were asked"
    );

    let cli = |args: &[&str]| {
        let out = run_cli(Some(&h.invited.config_path), args);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dry = cli(&["prune", "--dry-run"]);
    assert!(dry.contains("would delete 4 finished invite(s)"), "{dry}");
    assert_eq!(
        count("SELECT count(*) FROM invites"),
        8,
        "a dry run deletes nothing"
    );
    let pdus_said: i64 = dry
        .split(", ")
        .nth(1)
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();

    let done = cli(&["prune"]);
    assert!(done.contains("deleted 4 finished invite(s)"), "{done}");
    let left: std::collections::BTreeSet<String> = {
        let mut stmt = db.prepare("SELECT event_id FROM invites").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let expected: std::collections::BTreeSet<String> = [
        id("pending"),
        id("rejecting"),
        id("recent"),
        shared_new.event_id.clone(),
    ]
    .into();
    assert_eq!(left, expected);
    // Nothing that referred to a deleted invite is left; nothing kept lost its PDUs.
    for table in [
        "invite_room_state",
        "invite_warnings",
        "rejections",
        "rescinds",
    ] {
        assert_eq!(
            count(&format!("SELECT count(*) FROM {table} WHERE event_id NOT IN (SELECT event_id FROM invites)").replace(
                "rescinds WHERE event_id",
                "rescinds WHERE invite_event_id"
            )),
            0,
            "{table}"
        );
    }
    assert_eq!(
        count("SELECT count(*) FROM outbox WHERE subject NOT IN (SELECT event_id FROM invites)"),
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM outbox"),
        1,
        "the rejection being delivered"
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM invite_room_state s WHERE s.pdu_sha256 IS NOT NULL AND s.pdu_sha256 NOT IN (SELECT sha256 FROM pdus)"
        ),
        0,
        "kept invites keep their PDUs (the shared room's too)"
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM pdus p WHERE NOT EXISTS (SELECT 1 FROM invite_room_state s WHERE s.pdu_sha256 = p.sha256)"
        ),
        0,
        "no PDU nothing refers to"
    );
    assert_eq!(count("SELECT count(*) FROM pdus"), pdus_before - pdus_said);
    assert!(pdus_said >= 6, "three rooms' PDUs went: {pdus_said}");
    // And the server starts on the pruned database.
    h.restart();
}
