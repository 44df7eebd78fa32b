//! The writer's store work alone: invites of the real shape (a room each, four room-state PDUs
//! of about 550 bytes, a co-signed event of about 850) stored through `Store::insert_invites`
//! in group-commit batches, on a real SQLite file with the server's settings. No network, no
//! crypto: what a change to the schema or the insert path costs, without the load benchmark's
//! noise from the signature checks and the load generator sharing the cores.
//!
//! Run: `cargo bench -p invited --bench store` (env: INVITES=N, default 20,000; BATCH=N invites
//! per commit, default 16, about what the writer gathers at 32 connections; DROP_INDEXES=a,b
//! to see what those indexes cost). It prints CPU and wall time per invite and database bytes
//! per invite.
//!
//! For a figure that does not depend on the machine's load, count instructions: build once
//! (`cargo bench -p invited --bench store --no-run`), then run the printed binary under
//! `valgrind --tool=callgrind` with the same INVITES and BATCH for each variant, and compare
//! the totals (`Ir`). Making the invites costs the same in every variant, so a difference is
//! the store's. fsync time is not in them: compare wall time for that.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench fails by panicking

use std::time::{Duration, Instant};

#[path = "support/proc_stat.rs"]
mod proc_stat;

use invited::store::{InviteState, NewInvite, RoomStateRow, Store};
use invited_matrix::invite::Api;
use sha2::{Digest, Sha256};

/// Deterministic pseudo-random bytes: the same invites in every run and variant.
fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn b64(bytes: &[u8]) -> String {
    invited_matrix::base64::encode_url_safe(bytes)
}

/// One state PDU of the room, as canonical JSON of about 550 bytes, and its stripped row.
fn pdu(
    room: &str,
    sender: &str,
    kind: &str,
    state_key: &str,
    content: &str,
    n: u64,
) -> RoomStateRow {
    let id = |k: u64| format!("${}", b64(&hash(&[room.as_bytes(), &k.to_be_bytes()])));
    let text = format!(
        r#"{{"auth_events":["{}","{}"],"content":{content},"depth":{n},"hashes":{{"sha256":"{}"}},"origin_server_ts":1796015960143,"prev_events":["{}"],"room_id":"{room}","sender":"{sender}","signatures":{{"origin.example":{{"ed25519:k1":"{}{}"}}}},"state_key":"{state_key}","type":"{kind}"}}"#,
        id(n + 100),
        id(n + 200),
        b64(&hash(&[kind.as_bytes(), room.as_bytes()])),
        id(n + 300),
        b64(&hash(&[b"sig", room.as_bytes(), kind.as_bytes()])),
        b64(&hash(&[b"sig2", room.as_bytes(), kind.as_bytes()])),
    );
    RoomStateRow {
        event_type: kind.into(),
        state_key: state_key.into(),
        sender: sender.into(),
        content: content.into(),
        pdu: Some(text),
    }
}

fn invite(i: u64) -> NewInvite {
    let n = i.to_be_bytes();
    let room_id = format!("!{}", b64(&hash(&[b"room", &n])));
    let event_id = format!("${}", b64(&hash(&[b"event", &n])));
    let sender = "@alice:origin.example".to_owned();
    let invitee = format!("@user{}:invited.bench", i % 256);
    let signed_event = format!(
        r#"{{"auth_events":["${}","${}","${}"],"content":{{"displayname":"User {i}","is_direct":false,"membership":"invite"}},"depth":5,"hashes":{{"sha256":"{}"}},"origin_server_ts":1796015960143,"prev_events":["${}"],"room_id":"{room_id}","sender":"{sender}","signatures":{{"invited.bench":{{"ed25519:a_A306":"{}{}"}},"origin.example":{{"ed25519:k1":"{}{}"}}}},"state_key":"{invitee}","type":"m.room.member","unsigned":{{"age":12}}}}"#,
        b64(&hash(&[b"a1", &n])),
        b64(&hash(&[b"a2", &n])),
        b64(&hash(&[b"a3", &n])),
        b64(&hash(&[b"h", &n])),
        b64(&hash(&[b"p", &n])),
        b64(&hash(&[b"s1", &n])),
        b64(&hash(&[b"s2", &n])),
        b64(&hash(&[b"s3", &n])),
        b64(&hash(&[b"s4", &n])),
    );
    let room_state = vec![
        pdu(
            &room_id,
            &sender,
            "m.room.create",
            "",
            r#"{"room_version":"12"}"#,
            1,
        ),
        pdu(
            &room_id,
            &sender,
            "m.room.member",
            &sender,
            r#"{"displayname":"Alice","membership":"join"}"#,
            2,
        ),
        pdu(
            &room_id,
            &sender,
            "m.room.join_rules",
            "",
            r#"{"join_rule":"invite"}"#,
            3,
        ),
        pdu(
            &room_id,
            &sender,
            "m.room.name",
            "",
            &format!(r#"{{"name":"Room {i}"}}"#),
            4,
        ),
    ];
    NewInvite {
        event_id,
        room_id,
        room_version: "12".into(),
        invitee,
        sender,
        origin: "origin.example".into(),
        origin_server_ts: 1_796_015_960_143,
        received_ts: 1_796_015_960_200 + i as i64,
        api: Api::V2,
        create_event_as_pdu: true,
        event_fingerprint: b64(&hash(&[b"fingerprint", &n])),
        signed_event,
        state: InviteState::Pending,
        room_state,
        warnings: vec![],
    }
}

/// This process's CPU time (user + system).
fn cpu_time() -> Duration {
    proc_stat::process_cpu("self")
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = env_or("INVITES", 20_000) as u64;
    let batch = env_or("BATCH", 16).max(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("invited.db");
    let mut store = Store::open(&path).unwrap();
    // What an index costs: DROP_INDEXES=invites_by_room,invites_by_invitee leaves them out.
    let dropped = std::env::var("DROP_INDEXES").unwrap_or_default();
    for index in dropped.split(',').filter(|s| !s.is_empty()) {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!("DROP INDEX {index}")).unwrap();
    }
    // As the writer: no checkpoint in the commit path; the WAL restarted now and then (here
    // every 1,024 invites, timed apart).
    store.disable_auto_checkpoint().unwrap();
    let invites: Vec<NewInvite> = (0..n).map(invite).collect();
    let (mut cpu, mut wall, mut checkpoint_cpu) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for (k, chunk) in invites.chunks(batch).enumerate() {
        let (cpu0, wall0) = (cpu_time(), Instant::now());
        for r in store.insert_invites(chunk) {
            r.unwrap();
        }
        cpu += cpu_time() - cpu0;
        wall += wall0.elapsed();
        if (k + 1) * batch % 1024 < batch {
            let cpu0 = cpu_time();
            store.checkpoint_restart(Duration::from_secs(1)).unwrap();
            checkpoint_cpu += cpu_time() - cpu0;
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let bytes = std::fs::metadata(&path).unwrap().len();
    println!(
        "{n} invites of the real shape in batches of {batch}: inserts and commits {:.1} µs CPU, \
         {:.1} µs wall per invite; WAL restarts {:.1} µs CPU per invite; {:.0} bytes per invite \
         after a truncating checkpoint",
        us(cpu),
        us(wall),
        us(checkpoint_cpu),
        bytes as f64 / n as f64
    );
}
