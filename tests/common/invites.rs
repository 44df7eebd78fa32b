//! Invite helpers shared by the end-to-end tests: the usual setup ([`Harness`]: a test CA, a
//! test origin, and invited trusting that CA), valid signed invites, encoded invite paths, and
//! sending an invite and checking the answer.
#![allow(dead_code)]

use rusqlite::OptionalExtension;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value as J, json};

use super::origin::TestOrigin;
use super::{BIN, Invited, TestCa, agent, write_config_opt_workers};

/// The server name of invited in the tests.
pub const US: &str = "invited.test";

/// Starts invited trusting `ca` for outbound HTTPS and allowing loopback key fetches.
pub fn start_invited(dir: &Path, ca: &TestCa, extra: &str) -> Invited {
    start_invited_with_workers(dir, ca, 2, extra)
}

/// [`start_invited`] with this many workers.
pub fn start_invited_with_workers(dir: &Path, ca: &TestCa, workers: usize, extra: &str) -> Invited {
    start_invited_bin(Path::new(BIN), dir, ca, Some(workers), extra)
}

/// [`start_invited`] running `bin`, with this many workers (`None`: invited's default).
pub fn start_invited_bin(
    bin: &Path,
    dir: &Path,
    ca: &TestCa,
    workers: Option<usize>,
    extra: &str,
) -> Invited {
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    let config = write_config_opt_workers(
        dir,
        US,
        workers,
        &format!(
            "[federation]\nca_file = \"ca.pem\"\nip_range_allowlist = [\"127.0.0.0/8\", \"::1/128\"]\n{extra}"
        ),
    );
    Invited::start_bin(bin, &config, &[])
}

/// The usual end-to-end setup: a test CA, a test origin serving its keys over HTTPS with a
/// certificate from that CA, and invited trusting the CA, on a fresh data directory.
pub struct Harness {
    // Fields are dropped in this order: invited is stopped first, its directory removed last.
    pub invited: Invited,
    pub origin: TestOrigin,
    /// A plain HTTP client for invited (4xx/5xx are answers, not errors).
    pub agent: ureq::Agent,
    pub ca: TestCa,
    pub dir: tempfile::TempDir,
}

impl Harness {
    /// Starts all three, with `extra` TOML appended to invited's config.
    pub fn start(extra: &str) -> Harness {
        Harness::start_with_workers(2, extra)
    }

    /// [`Harness::start`] with this many invited workers.
    pub fn start_with_workers(workers: usize, extra: &str) -> Harness {
        Harness::start_bin(Path::new(BIN), Some(workers), extra)
    }

    /// [`Harness::start`] running `bin` (e.g. [`super::release_bin`]) with this many workers
    /// (`None`: invited's default, 8 per core).
    pub fn start_bin(bin: &Path, workers: Option<usize>, extra: &str) -> Harness {
        let ca = TestCa::new();
        let origin = TestOrigin::start(&ca);
        let dir = tempfile::tempdir().unwrap();
        let invited = start_invited_bin(bin, dir.path(), &ca, workers, extra);
        Harness {
            invited,
            origin,
            agent: agent(None),
            ca,
            dir,
        }
    }

    /// Kills invited (if it still runs) and starts it again on the same data directory and
    /// config.
    pub fn restart(&mut self) {
        self.invited.kill();
        self.invited = Invited::start_bin(&self.invited.bin, &self.invited.config_path, &[]);
    }

    /// Kills invited and starts another on a fresh data directory, with `extra` TOML; the CA
    /// and the origin stay.
    pub fn restart_fresh(&mut self, extra: &str) {
        self.invited.kill();
        self.dir = tempfile::tempdir().unwrap();
        let bin = self.invited.bin.clone();
        self.invited = start_invited_bin(&bin, self.dir.path(), &self.ca, Some(2), extra);
    }
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/_matrix/federation/v{api}/invite/{roomId}/{eventId}`, encoded.
pub fn invite_path(api: u8, room_id: &str, event_id: &str) -> String {
    format!(
        "/_matrix/federation/v{api}/invite/{}/{}",
        enc(room_id),
        enc(event_id)
    )
}

/// A signed v2 invite request, ready to send.
#[derive(Debug, Clone)]
pub struct Invite {
    pub path: String,
    pub body: J,
    /// The signed invite event (also in `body`).
    pub event: J,
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub invitee: String,
}

/// A complete, valid v2 invite from @alice to `invitee` in a fresh room of `version`, with the
/// room's create and `m.room.name` events as `invite_room_state`.
pub fn valid_invite(origin: &TestOrigin, version: &str, invitee: &str) -> Invite {
    let (create, room_id) = origin.create_event(version, "alice");
    let name = origin.state_event(
        version,
        &room_id,
        "m.room.name",
        json!({"name": "Test room"}),
    );
    invite_in_room(origin, version, &room_id, &[create, name], invitee)
}

/// A valid v2 invite from @alice into an existing room with this `invite_room_state`.
pub fn invite_in_room(
    origin: &TestOrigin,
    version: &str,
    room_id: &str,
    state: &[J],
    invitee: &str,
) -> Invite {
    let raw = origin.raw_invite(version, room_id, invitee);
    sign_invite(origin, version, room_id, state, &raw)
}

/// The v2 invite request for `raw`, an invite event (made by [`TestOrigin::raw_invite`] and
/// maybe edited), hashed and signed by `origin` (ruma).
pub fn sign_invite(
    origin: &TestOrigin,
    version: &str,
    room_id: &str,
    state: &[J],
    raw: &J,
) -> Invite {
    let event = origin.hash_and_sign(raw, version);
    let event_id = TestOrigin::event_id(&event, version);
    let body = json!({"room_version": version, "event": event, "invite_room_state": state});
    Invite {
        path: invite_path(2, room_id, &event_id),
        body,
        sender: raw["sender"].as_str().unwrap().to_owned(),
        invitee: raw["state_key"].as_str().unwrap().to_owned(),
        event,
        event_id,
        room_id: room_id.to_owned(),
    }
}

/// An answer from invited.
pub struct Answer {
    pub status: u16,
    pub text: String,
    /// The body as JSON, or a JSON string holding `text` when it is not JSON.
    pub json: J,
    pub retry_after: Option<String>,
}

impl Answer {
    /// Reads a whole response.
    pub fn read(mut resp: ureq::http::Response<ureq::Body>) -> Answer {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.body_mut().read_to_string().unwrap();
        let json = serde_json::from_str(&text).unwrap_or(J::String(text.clone()));
        Answer {
            status,
            text,
            json,
            retry_after,
        }
    }
}

/// PUTs `body` (`Content-Type: application/json`) with this `Authorization` header, if any, on
/// a new connection.
pub fn put_raw(invited: &Invited, path: &str, body: &[u8], auth: Option<&str>) -> Answer {
    let mut req = agent(None)
        .put(&invited.url(path))
        .header("Content-Type", "application/json");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    Answer::read(req.send(body).unwrap())
}

/// PUTs invite `inv` (its v2 path and body) signed by `origin`, on a new connection.
pub fn put_signed(invited: &Invited, origin: &TestOrigin, inv: &Invite) -> Answer {
    let header = origin.sign_request("PUT", &inv.path, US, Some(&inv.body));
    put_raw(
        invited,
        &inv.path,
        &serde_json::to_vec(&inv.body).unwrap(),
        Some(&header),
    )
}

/// The keys invited publishes (`/_matrix/key/v2/server`), as ruma's public key map, to
/// check what invited signs with an independent implementation.
pub fn published_keys(invited: &Invited) -> ruma_signatures::PublicKeyMap {
    let mut resp = agent(None)
        .get(&invited.url("/_matrix/key/v2/server"))
        .call()
        .unwrap();
    let keys: J = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    let (key_id, key) = keys["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let mut map = ruma_signatures::PublicKeyMap::new();
    map.insert(
        US.to_owned(),
        [(
            key_id.clone(),
            ruma_common::serde::Base64::parse(key["key"].as_str().unwrap()).unwrap(),
        )]
        .into(),
    );
    map
}

/// Asserts a Matrix error: this status, this `errcode`, and an `error` string.
pub fn assert_error(answer: &Answer, status: u16, errcode: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.text);
    assert_eq!(
        answer.json["errcode"].as_str(),
        Some(errcode),
        "{what}: {}",
        answer.text
    );
    assert!(
        answer.json["error"].as_str().is_some(),
        "{what}: {}",
        answer.text
    );
}

/// SQL for the answer invited owes a stored invite, from its row: the test's own statement of
/// the two wire shapes (v2 `{"event":…}`, v1 `[200,{"event":…}]`), independent of the code's.
pub const STORED_ANSWER_SQL: &str = "CASE api_version WHEN 1 THEN '[200,{\"event\":' || signed_event || '}]' ELSE '{\"event\":' || signed_event || '}' END";

/// The answer invited owes a stored invite (see [`STORED_ANSWER_SQL`]).
pub fn stored_answer(invited: &Invited, event_id: &str) -> Option<String> {
    invited
        .db()
        .query_row(
            &format!("SELECT {STORED_ANSWER_SQL} FROM invites WHERE event_id = ?1"),
            [event_id],
            |r| r.get(0),
        )
        .optional()
        .expect("reading a stored invite")
}

/// The stored invite with this event ID, read through invited's own store.
pub fn stored_invite(invited: &Invited, event_id: &str) -> Option<invited::store::StoredInvite> {
    let store = invited::store::Store::open(&invited.dir.join("data/invited.db")).unwrap();
    store.find_invite(event_id).unwrap()
}

/// The metrics URL, from the log line that announces it.
pub fn metrics_url(h: &Harness) -> String {
    let started = Instant::now();
    loop {
        if let Some(line) = h
            .invited
            .log()
            .lines()
            .find(|l| l.contains("metrics on http://"))
        {
            let at = line.find("http://").unwrap();
            return line[at..].split_whitespace().next().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            h.invited.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
