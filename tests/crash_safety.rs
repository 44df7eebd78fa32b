//! Crash safety under load: the real binary answers valid v12 invites from several threads
//! (each on its own keep-alive connection) and is killed with SIGKILL at a random moment. After
//! a restart on the same data directory, every invite that was answered 200 must be in the
//! database with the exact body we received (a 200 means "committed", `src/writer.rs`), the
//! database must pass `PRAGMA integrity_check`, and a retry of an answered invite must get the
//! byte-identical answer. Then the next round runs on the same data directory.
//!
//! Rounds: 3 by default, `CRASH_ROUNDS=20` for the long version. The kill moments come from a
//! seeded PRNG; the seed is printed, and `CRASH_SEED=<seed>` replays the same choices (the
//! server's timing is of course not replayed).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::invites::{
    Harness, Invite, STORED_ANSWER_SQL, US, invite_in_room, put_signed, stored_answer, valid_invite,
};
use common::origin::TestOrigin;
use common::wire::*;
use common::*;
use rusqlite::OptionalExtension;
use serde_json::json;

/// Client threads, each with its own keep-alive connection.
const THREADS: usize = 6;
/// Invites one thread sends in one round at most (the kill normally comes long before).
const PER_THREAD_MAX: usize = 3000;

/// Rate limits out of the way: this test is about durability, not policy.
const NO_RATE_LIMITS: &str = "[rate_limits]\nper_origin_per_second = 1000000.0\n\
    per_origin_burst = 1000000\nper_invitee_per_second = 1000000.0\nper_invitee_burst = 1000000\n";

/// One invite request as sent (so it can be retried byte for byte).
#[derive(Clone)]
struct Sent {
    event_id: String,
    path: String,
    auth: String,
    body: Vec<u8>,
}

/// An invite answered 200, with the exact response body.
#[derive(Clone)]
struct Answered {
    sent: Sent,
    response: Vec<u8>,
    round: usize,
}

/// What one round's load produced.
struct Load {
    answered: Vec<Answered>,
    /// Sent but not answered (in flight at the kill): may or may not be stored.
    in_flight: Vec<Sent>,
    /// Anything that went wrong before the kill (non-200 answers, I/O errors).
    unexpected: Vec<String>,
    /// The last invite each thread got a 200 for (the ones most at risk).
    last_per_thread: Vec<Answered>,
}

/// Runs the load until the server is killed `kill_after` after its first 200 of the round.
fn load_and_kill(
    invited: &mut Invited,
    origin: &TestOrigin,
    round: usize,
    kill_after: Duration,
) -> Load {
    let addr = invited.addr;
    let pid = invited.pid();
    let killed = AtomicBool::new(false);
    let ok_count = AtomicUsize::new(0);
    let unexpected = Mutex::new(Vec::new());
    let results: Vec<(Vec<Answered>, Option<Sent>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (killed, ok_count, unexpected) = (&killed, &ok_count, &unexpected);
                scope.spawn(move || {
                    // One room per thread and round; every invite goes to another local user.
                    let (create, room_id) = origin.create_event("12", "alice");
                    let name = origin.state_event(
                        "12",
                        &room_id,
                        "m.room.name",
                        json!({"name": format!("round {round} thread {t}")}),
                    );
                    let state = [create, name];
                    let mut done = Vec::new();
                    let mut conn = match KeepAlive::connect(addr) {
                        Ok(c) => c,
                        Err(e) => {
                            unexpected
                                .lock()
                                .unwrap()
                                .push(format!("t{t}: connect: {e}"));
                            return (done, None);
                        }
                    };
                    for i in 0..PER_THREAD_MAX {
                        if killed.load(Ordering::SeqCst) {
                            return (done, None);
                        }
                        let invitee = format!("@r{round}t{t}n{i}:{US}");
                        let Invite {
                            path,
                            body,
                            event_id,
                            ..
                        } = invite_in_room(origin, "12", &room_id, &state, &invitee);
                        let auth = origin.sign_request("PUT", &path, US, Some(&body));
                        let sent = Sent {
                            event_id,
                            path,
                            auth,
                            body: serde_json::to_vec(&body).unwrap(),
                        };
                        match conn.put(&sent.path, &sent.auth, &sent.body) {
                            Ok(reply) if reply.status == 200 => {
                                ok_count.fetch_add(1, Ordering::SeqCst);
                                done.push(Answered {
                                    sent,
                                    response: reply.body,
                                    round,
                                });
                            }
                            Ok(reply) => {
                                if !killed.load(Ordering::SeqCst) {
                                    unexpected.lock().unwrap().push(format!(
                                        "t{t} invite {i}: status {} {}",
                                        reply.status,
                                        reply.text()
                                    ));
                                }
                                return (done, None);
                            }
                            Err(e) => {
                                if !killed.load(Ordering::SeqCst) {
                                    unexpected
                                        .lock()
                                        .unwrap()
                                        .push(format!("t{t} invite {i}: {e} before the kill"));
                                }
                                return (done, Some(sent));
                            }
                        }
                    }
                    (done, None)
                })
            })
            .collect();

        // The killer: wait for the round's first 200 (keys fetched, load running), then a
        // random delay, then SIGKILL.
        let started = Instant::now();
        while ok_count.load(Ordering::SeqCst) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "round {round}: no invite answered within 30 s; unexpected: {:?}; log:\n{}",
                unexpected.lock().unwrap(),
                invited.log()
            );
            assert!(
                handles.iter().any(|h| !h.is_finished()),
                "round {round}: every client thread stopped before a 200: {:?}",
                unexpected.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(kill_after);
        killed.store(true, Ordering::SeqCst);
        signal(pid, "KILL");
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let status = invited.child.wait().unwrap();
    assert!(!status.success(), "round {round}: killed, yet {status:?}");
    let mut load = Load {
        answered: Vec::new(),
        in_flight: Vec::new(),
        unexpected: unexpected.into_inner().unwrap(),
        last_per_thread: Vec::new(),
    };
    for (done, in_flight) in results {
        if let Some(last) = done.last() {
            load.last_per_thread.push(last.clone());
        }
        load.answered.extend(done);
        load.in_flight.extend(in_flight);
    }
    load
}

/// Every answered invite is stored with its exact answer and both state rows; the database
/// is intact.
fn check_database(invited: &Invited, answered: &[Answered], what: &str) {
    let conn = invited.db();
    let check: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(check, ["ok"], "{what}: integrity_check");
    let mut body = conn
        .prepare(&format!(
            "SELECT {STORED_ANSWER_SQL} FROM invites WHERE event_id = ?1"
        ))
        .unwrap();
    let mut state = conn
        .prepare("SELECT count(*) FROM invite_room_state WHERE event_id = ?1")
        .unwrap();
    let mut missing = Vec::new();
    for a in answered {
        let stored: Option<String> = body
            .query_row([&a.sent.event_id], |r| r.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .unwrap();
        match stored {
            None => missing.push(format!(
                "{} (answered 200 in round {}) is not in the database",
                a.sent.event_id, a.round
            )),
            Some(s) if s.as_bytes() != a.response.as_slice() => missing.push(format!(
                "{} (round {}): stored body differs from the answer:\n  stored {s}\n  answered {}",
                a.sent.event_id,
                a.round,
                String::from_utf8_lossy(&a.response)
            )),
            Some(_) => {}
        }
        let rows: i64 = state.query_row([&a.sent.event_id], |r| r.get(0)).unwrap();
        if rows != 2 {
            missing.push(format!(
                "{} (round {}): {rows} room state rows, want 2",
                a.sent.event_id, a.round
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "{what}: {} of {} answered invites lost or changed:\n{}",
        missing.len(),
        answered.len(),
        missing.join("\n")
    );
}

#[test]
fn answered_invites_survive_sigkill_under_load() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed = seed_from_env("CRASH_SEED");
    eprintln!("crash_safety: seed {seed} (replay with CRASH_SEED={seed}), {rounds} rounds");
    let mut rng = Rng::new(seed);
    let test_started = Instant::now();

    let mut h = Harness::start(NO_RATE_LIMITS);
    let mut all: Vec<Answered> = Vec::new();

    // One invite first, so the origin's keys are fetched and cached (in the database too)
    // before concurrent load: concurrent requests waiting on a first key fetch are refused by
    // design (`Keyring::max_blocked`), which is not what this test is about.
    {
        let Invite {
            path,
            body,
            event_id,
            ..
        } = valid_invite(&h.origin, "12", &format!("@warmup:{US}"));
        let auth = h.origin.sign_request("PUT", &path, US, Some(&body));
        let body = serde_json::to_vec(&body).unwrap();
        let reply = KeepAlive::connect(h.invited.addr)
            .unwrap()
            .put(&path, &auth, &body)
            .unwrap();
        assert_eq!(reply.status, 200, "warm-up invite: {}", reply.text());
        all.push(Answered {
            sent: Sent {
                event_id,
                path,
                auth,
                body,
            },
            response: reply.body,
            round: 0,
        });
    }

    for round in 0..rounds {
        let kill_after = Duration::from_millis(rng.range(0, 1500));
        let t = Instant::now();
        let load = load_and_kill(&mut h.invited, &h.origin, round, kill_after);
        assert!(
            load.unexpected.is_empty(),
            "round {round}: before the kill:\n{}\nlog:\n{}",
            load.unexpected.join("\n"),
            h.invited.log()
        );
        assert!(!load.answered.is_empty(), "round {round}: nothing answered");
        eprintln!(
            "round {round}: SIGKILL {kill_after:?} after the first 200; {} answered, {} in flight \
             ({:?})",
            load.answered.len(),
            load.in_flight.len(),
            t.elapsed()
        );
        all.extend(load.answered.iter().cloned());

        // What was on disk at the kill, before anything touches it again.
        let in_flight_stored: Vec<(Sent, Option<String>)> = {
            let conn = h.invited.db();
            load.in_flight
                .iter()
                .map(|s| {
                    let stored = conn
                        .query_row(
                            &format!("SELECT {STORED_ANSWER_SQL} FROM invites WHERE event_id = ?1"),
                            [&s.event_id],
                            |r| r.get(0),
                        )
                        .optional()
                        .expect("reading an in-flight invite");
                    (s.clone(), stored)
                })
                .collect()
        };

        // Restart on the same data directory.
        h.restart();
        check_database(&h.invited, &all, &format!("after round {round}"));

        // Retries after the restart get the stored answer, byte for byte: the last answered
        // invite of every thread (the ones closest to the kill) and a few random earlier ones.
        let mut retry: Vec<Answered> = load.last_per_thread.clone();
        for _ in 0..3 {
            retry.push(all[rng.range(0, all.len() as u64) as usize].clone());
        }
        let mut conn = KeepAlive::connect(h.invited.addr).unwrap();
        for a in &retry {
            let reply = conn.put(&a.sent.path, &a.sent.auth, &a.sent.body).unwrap();
            assert_eq!(
                reply.status,
                200,
                "round {round}: retry of {}: {}",
                a.sent.event_id,
                reply.text()
            );
            assert_eq!(
                reply.body, a.response,
                "round {round}: the retry of {} (answered in round {}) is not byte-identical",
                a.sent.event_id, a.round
            );
        }
        // An invite in flight at the kill was either committed whole or not at all: its retry
        // is answered 200, with the stored answer if there was one.
        for (s, stored) in &in_flight_stored {
            let reply = conn.put(&s.path, &s.auth, &s.body).unwrap();
            assert_eq!(
                reply.status,
                200,
                "round {round}: retry of in-flight {}: {}",
                s.event_id,
                reply.text()
            );
            if let Some(stored) = stored {
                assert_eq!(
                    reply.text(),
                    *stored,
                    "round {round}: in-flight {} was stored, but its retry got another answer",
                    s.event_id
                );
            }
            all.push(Answered {
                sent: s.clone(),
                response: reply.body,
                round,
            });
        }
        let rows: i64 = h
            .invited
            .db()
            .query_row("SELECT count(*) FROM invites", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            rows as usize,
            all.len(),
            "round {round}: one row per invite answered (retries add none)"
        );
    }
    check_database(&h.invited, &all, "at the end");
    assert!(h.invited.alive());
    eprintln!(
        "crash_safety: {rounds} rounds, {} invites answered and found intact, seed {seed}, {:?}",
        all.len(),
        test_started.elapsed()
    );
}

/// Another process opening and closing the live database (the hosting homeserver reading
/// invites, an operator's `sqlite3`) must leave the server's WAL alone. It would not if the
/// server held no lock on the database file: that process would take itself for the last
/// user, checkpoint, and delete the WAL the server goes on committing to, and the invites
/// answered after that would be gone at the next restart. The other process here is the
/// system's SQLite, through Python's `sqlite3` (the oracle interpreter), opening the file for
/// writing as the homeserver does.
#[test]
fn another_process_closing_the_database_keeps_later_invites() {
    let mut h = Harness::start(NO_RATE_LIMITS);
    let db = h.invited.dir.join("data/invited.db");
    let send = |h: &Harness, who: &str| {
        let inv = valid_invite(&h.origin, "12", &format!("@{who}:{US}"));
        let answer = put_signed(&h.invited, &h.origin, &inv);
        assert_eq!(answer.status, 200, "{who}: {}", answer.text);
        inv.event_id
    };
    let first = send(&h, "first");
    // Long enough for the checkpointer to copy the commit and sync the database file.
    std::thread::sleep(Duration::from_millis(400));
    let seen = python(
        "import sqlite3, sys\n\
         c = sqlite3.connect(sys.stdin.read())\n\
         print(c.execute('SELECT count(*) FROM invites').fetchone()[0])\n\
         c.close()\n",
        db.to_str().unwrap(),
    );
    assert_eq!(seen.trim(), "1", "the other process sees the first invite");
    assert!(
        db.with_extension("db-wal").exists(),
        "the other process deleted the WAL the server writes to"
    );
    let second = send(&h, "second");
    h.restart(); // SIGKILL
    for (which, event_id) in [("first", &first), ("second", &second)] {
        assert!(
            stored_answer(&h.invited, event_id).is_some(),
            "the {which} invite, answered 200, is gone after a restart"
        );
    }
}
