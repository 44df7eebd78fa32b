//! Operating invited: what an operator runs beside the server, against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::invites::{Harness, US, put_raw, valid_invite};
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
                let header = h.origin.sign_request("PUT", &inv.path, US, Some(&inv.body));
                let body = serde_json::to_vec(&inv.body).unwrap();
                if put_raw(&h.invited, &inv.path, &body, Some(&header)).status == 200 {
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
