//! `invited invites watch`, end to end: the real binary as a subprocess next to a running
//! server on the same data directory, fed by real signed invites over HTTPS and by the CLI.
//! What it prints is checked against the change log read independently with SQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::invites::{Harness, Invite, invite_in_room, put_signed, valid_invite};
use common::*;
use serde_json::{Value as J, json};

const BOB: &str = "@bob:invited.test";
const CAROL: &str = "@carol:invited.test";

/// How long a change may take to reach the watcher (the promise).
const SECOND: Duration = Duration::from_secs(1);

/// A running `invited invites watch` with its stdout read line by line on a thread.
struct Watcher {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The cursor it said it starts after (its log line on stderr).
    start: i64,
}

impl Watcher {
    /// Starts the watcher with `args` after `invites watch` and waits until it says where it
    /// starts (from then on nothing is missed).
    fn start(h: &Harness, args: &[&str]) -> Watcher {
        let (mut child, stdout) = Watcher::spawn(h, args);
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (stderr, start) = Watcher::read_stderr(&mut child);
        Watcher {
            child,
            lines,
            stderr,
            start,
        }
    }

    /// The process and its stdout, not yet read.
    fn spawn(h: &Harness, args: &[&str]) -> (Child, ChildStdout) {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&h.invited.config_path)
            .args(["invites", "watch"])
            .args(args)
            .env_remove("INVITED_CONFIG")
            .env("RUST_LOG", "info")
            .current_dir(h.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        (child, stdout)
    }

    /// Collects stderr on a thread; returns it and the start cursor from its first line.
    fn read_stderr(child: &mut Child) -> (Arc<Mutex<String>>, i64) {
        let stderr = child.stderr.take().unwrap();
        let text = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = channel();
        {
            let text = text.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some((_, n)) = line.split_once("after cursor ") {
                        let _ = tx.send(n.trim().parse::<i64>().unwrap());
                    }
                    let mut t = text.lock().unwrap();
                    t.push_str(&line);
                    t.push('\n');
                }
            });
        }
        let start = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("the watcher did not start: {}", text.lock().unwrap()));
        (text, start)
    }

    /// The next line within `limit`, as JSON.
    fn next(&self, limit: Duration) -> J {
        match self.lines.recv_timeout(limit) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")),
            Err(e) => panic!("no line within {limit:?} ({e}); stderr: {}", self.stderr()),
        }
    }

    /// The next text line within `limit`.
    fn next_text(&self, limit: Duration) -> String {
        self.lines
            .recv_timeout(limit)
            .unwrap_or_else(|e| panic!("no line within {limit:?} ({e}); stderr: {}", self.stderr()))
    }

    /// Asserts that nothing more is printed for `wait`.
    fn assert_quiet(&self, wait: Duration) {
        match self.lines.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            other => panic!("expected nothing more, got {other:?}"),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Waits up to `limit` for the exit.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the watcher did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `inv` and checks the 200; returns when the answer arrived.
fn send(h: &Harness, inv: &Invite) -> Instant {
    let answer = put_signed(&h.invited, &h.origin, inv);
    assert_eq!(answer.status, 200, "{}", answer.text);
    Instant::now()
}

/// `invites reject EVENT_ID --local-only`; returns when the command has exited.
fn reject_locally(h: &Harness, event_id: &str) -> Instant {
    let out = run_cli(
        Some(&h.invited.config_path),
        &["invites", "reject", event_id, "--local-only"],
    );
    assert!(out.status.success(), "{out:?}");
    Instant::now()
}

/// The change log as SQL sees it: (cursor, event_id, state, ts) after `cursor`.
fn log_after(h: &Harness, cursor: i64) -> Vec<(i64, String, String, i64)> {
    let db = h.invited.db();
    let mut stmt = db
        .prepare(
            "SELECT cursor, event_id, state, ts FROM invite_changes WHERE cursor > ?1
             ORDER BY cursor",
        )
        .unwrap();
    stmt.query_map([cursor], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn last_cursor(h: &Harness) -> i64 {
    h.invited
        .db()
        .query_row(
            "SELECT coalesce(max(cursor), 0) FROM invite_changes",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// An invite for `invitee` whose room state has no `m.room.name`.
fn unnamed_invite(h: &Harness, invitee: &str) -> Invite {
    let (create, room_id) = h.origin.create_event("11", "alice");
    invite_in_room(&h.origin, "11", &room_id, &[create], invitee)
}

/// (cursor, event_id, state) of printed JSON lines.
fn summary(lines: &[J]) -> Vec<(i64, String, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l["cursor"].as_i64().unwrap(),
                l["event_id"].as_str().unwrap().to_owned(),
                l["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn without_ts(log: &[(i64, String, String, i64)]) -> Vec<(i64, String, String)> {
    log.iter()
        .map(|(c, e, s, _)| (*c, e.clone(), s.clone()))
        .collect()
}

#[test]
fn new_invites_and_state_changes_are_printed_within_a_second() {
    let h = Harness::start("");
    // Before the watcher: not printed, as it starts with what happens from now on.
    let before = valid_invite(&h.origin, "11", CAROL);
    send(&h, &before);

    let w = Watcher::start(&h, &["--json"]);
    let text = Watcher::start(&h, &[]);
    assert_eq!(w.start, last_cursor(&h), "starts after the newest change");
    assert!(w.start >= 1);

    let inv = valid_invite(&h.origin, "11", BOB);
    let answered = send(&h, &inv);
    let line = w.next(SECOND);
    assert!(answered.elapsed() <= SECOND, "{:?}", answered.elapsed());
    let log = log_after(&h, w.start);
    assert_eq!(log.len(), 1, "{log:?}");
    let (cursor, _, _, ts) = log[0].clone();
    assert_eq!(cursor, w.start + 1);
    assert_eq!(
        line,
        json!({
            "cursor": cursor, "event_id": inv.event_id, "room_id": inv.room_id,
            "invitee": BOB, "sender": inv.sender, "state": "pending",
            "room_name": "Test room", "ts": ts,
        })
    );
    let received: i64 = h
        .invited
        .db()
        .query_row(
            "SELECT received_ts FROM invites WHERE event_id = ?1",
            [&inv.event_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ts, received, "a new invite's time is its arrival");
    assert!(inv.sender.starts_with("@alice:"), "{}", inv.sender);

    // The same change for a human: cursor, UTC time, state, who, the room's name, the ID.
    let human = text.next_text(SECOND);
    let words: Vec<&str> = human.split(' ').collect();
    assert_eq!(words[0], cursor.to_string(), "{human}");
    let time = words[1];
    assert!(
        time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T",
        "{human}"
    );
    let secs = std::time::UNIX_EPOCH + Duration::from_millis(ts as u64);
    let age = std::time::SystemTime::now().duration_since(secs).unwrap();
    assert!(age < Duration::from_secs(60), "{human}");
    assert_eq!(
        &human[human.find(" pending ").unwrap()..],
        format!(
            " pending {BOB} from {} in \"Test room\" {}",
            inv.sender, inv.event_id
        )
    );

    // No room name in the room state: null, and the room ID for a human.
    let unnamed = unnamed_invite(&h, BOB);
    let answered = send(&h, &unnamed);
    let line = w.next(SECOND);
    assert!(answered.elapsed() <= SECOND, "{:?}", answered.elapsed());
    assert_eq!(line["cursor"], json!(cursor + 1));
    assert_eq!(line["event_id"], json!(unnamed.event_id));
    assert_eq!(line["room_name"], J::Null);
    assert!(
        text.next_text(SECOND)
            .ends_with(&format!(" in {} {}", unnamed.room_id, unnamed.event_id))
    );

    // A change of state.
    let rejected = reject_locally(&h, &inv.event_id);
    let line = w.next(SECOND);
    assert!(rejected.elapsed() <= SECOND, "{:?}", rejected.elapsed());
    let log = log_after(&h, cursor + 1);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        line,
        json!({
            "cursor": cursor + 2, "event_id": inv.event_id, "room_id": inv.room_id,
            "invitee": BOB, "sender": inv.sender, "state": "rejected_locally",
            "room_name": "Test room", "ts": log[0].3,
        })
    );
    assert!(text.next_text(SECOND).contains(" rejected_locally "));
    w.assert_quiet(Duration::from_millis(300));
}

#[test]
fn since_resumes_without_gaps_or_duplicates() {
    let mut h = Harness::start("");
    let mut first = Watcher::start(&h, &["--json"]);
    let a = valid_invite(&h.origin, "11", BOB);
    send(&h, &a);
    let b = valid_invite(&h.origin, "11", CAROL);
    send(&h, &b);
    let seen = [first.next(SECOND), first.next(SECOND)];
    assert_eq!(
        summary(&seen),
        without_ts(&log_after(&h, first.start)),
        "{seen:?}"
    );
    let last_seen = seen[1]["cursor"].as_i64().unwrap();
    first.child.kill().unwrap();
    first.wait(Duration::from_secs(5));

    // Missed while no watcher ran: two new invites and two changes of state.
    let c = valid_invite(&h.origin, "11", BOB);
    send(&h, &c);
    reject_locally(&h, &a.event_id);
    let d = unnamed_invite(&h, CAROL);
    send(&h, &d);
    reject_locally(&h, &c.event_id);
    let missed = without_ts(&log_after(&h, last_seen));
    assert_eq!(
        missed
            .iter()
            .map(|(_, e, s)| (e.as_str(), s.as_str()))
            .collect::<Vec<_>>(),
        [
            (c.event_id.as_str(), "pending"),
            (a.event_id.as_str(), "rejected_locally"),
            (d.event_id.as_str(), "pending"),
            (c.event_id.as_str(), "rejected_locally"),
        ]
    );

    let since = last_seen.to_string();
    let resumed = Watcher::start(&h, &["--json", "--since", &since]);
    assert_eq!(resumed.start, last_seen);
    let lines: Vec<J> = (0..4).map(|_| resumed.next(SECOND)).collect();
    resumed.assert_quiet(Duration::from_millis(300));
    assert_eq!(summary(&lines), missed, "exactly the missed rows");
    let cursors: Vec<i64> = lines
        .iter()
        .map(|l| l["cursor"].as_i64().unwrap())
        .collect();
    assert_eq!(
        cursors,
        (last_seen + 1..=last_seen + 4).collect::<Vec<_>>(),
        "contiguous, no gaps or duplicates"
    );
    // It goes on following after the backlog.
    let e = valid_invite(&h.origin, "11", BOB);
    let answered = send(&h, &e);
    let line = resumed.next(SECOND);
    assert!(answered.elapsed() <= SECOND);
    assert_eq!(line["cursor"], json!(last_seen + 5));
    assert_eq!(line["event_id"], json!(e.event_id));

    // From the beginning: the whole log, once each, in order, as SQL sees it.
    let all = Watcher::start(&h, &["--json", "--since", "0"]);
    let log = log_after(&h, 0);
    let lines: Vec<J> = (0..log.len()).map(|_| all.next(SECOND)).collect();
    all.assert_quiet(Duration::from_millis(300));
    assert_eq!(summary(&lines), without_ts(&log));
    assert_eq!(
        summary(&lines).iter().map(|l| l.0).collect::<Vec<_>>(),
        (1..=log.len() as i64).collect::<Vec<_>>()
    );
    assert_eq!(&lines[0], &seen[0], "the same line for the same row");
    drop((resumed, all));

    // A watcher commits nothing: a connection open across its whole life sees no other
    // connection's commit (PRAGMA data_version), with the server stopped.
    h.invited.kill();
    let db = rusqlite::Connection::open(h.invited.dir.join("data/invited.db")).unwrap();
    let version = |db: &rusqlite::Connection| -> i64 {
        db.query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap()
    };
    // Rows deleted (as retention does) are skipped with a warning on stderr.
    db.execute("DELETE FROM invite_changes WHERE cursor IN (2, 3)", [])
        .unwrap();
    let before = version(&db);
    let mut quiet = Watcher::start(&h, &["--json", "--since", "0"]);
    let lines: Vec<J> = (0..log.len() - 2).map(|_| quiet.next(SECOND)).collect();
    quiet.assert_quiet(Duration::from_millis(300));
    let mut expected = without_ts(&log);
    expected.drain(1..3);
    assert_eq!(summary(&lines), expected);
    assert!(
        quiet
            .stderr()
            .contains("changes 2 to 3 are no longer in the change log"),
        "{}",
        quiet.stderr()
    );
    quiet.signal("INT");
    assert!(quiet.wait(Duration::from_secs(5)).success());
    assert_eq!(version(&db), before, "the watcher wrote to the database");
}

#[test]
fn signals_and_a_closed_pipe_end_it_with_status_zero() {
    let h = Harness::start("");
    for signal in ["INT", "TERM"] {
        let mut w = Watcher::start(&h, &["--json"]);
        let sent = Instant::now();
        w.signal(signal);
        let status = w.wait(Duration::from_secs(2));
        assert_eq!(
            status.code(),
            Some(0),
            "SIG{signal}: {status:?}; {}",
            w.stderr()
        );
        assert!(sent.elapsed() < SECOND, "{signal}: {:?}", sent.elapsed());
        assert!(!w.stderr().contains("panicked"), "{}", w.stderr());
    }

    // The reader goes away: the next change ends the watcher, quietly.
    let (mut child, stdout) = Watcher::spawn(&h, &["--json"]);
    let (stderr, _) = Watcher::read_stderr(&mut child);
    drop(stdout);
    send(&h, &valid_invite(&h.origin, "11", BOB));
    let status = wait_exit(&mut child, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(50)); // let the stderr thread drain
    let stderr = stderr.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{status:?}; {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

#[test]
fn without_a_database_it_says_so_like_other_commands() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "invited.test", "");
    let watch = run_cli(Some(&config), &["invites", "watch", "--json"]);
    let list = run_cli(Some(&config), &["invites", "list"]);
    assert_eq!(watch.status.code(), Some(1));
    assert!(watch.stdout.is_empty());
    let said = String::from_utf8_lossy(&watch.stderr);
    assert!(said.contains("no database at "), "{said}");
    assert_eq!(said, String::from_utf8_lossy(&list.stderr));
    assert!(!dir.path().join("data/invited.db").exists());
}
