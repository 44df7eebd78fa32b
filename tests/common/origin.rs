//! A test origin homeserver: serves its keys over real HTTPS (test CA) and signs requests and
//! events with ruma (an implementation independent of ours). Optionally acts as a notary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use invited_http::{EdgeError, Handler, Request, Response, Server, ServerOptions, ShutdownHandle};
use ruma_common::CanonicalJsonObject;
use ruma_common::room_version_rules::RoomVersionRules;
use ruma_signatures::Ed25519KeyPair;
use serde_json::{Value as J, json};

use super::TestCa;

/// A server for a test peer on 127.0.0.1 with an ephemeral port and 2 workers, serving HTTPS
/// with a certificate from `ca` for `127.0.0.1` and `localhost`.
pub fn https_server(ca: &TestCa) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
    std::fs::write(dir.path().join("c.pem"), cert).unwrap();
    std::fs::write(dir.path().join("k.pem"), key).unwrap();
    let tls =
        invited_http::load_tls_config(dir.path().join("c.pem"), dir.path().join("k.pem")).unwrap();
    Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        ServerOptions {
            workers: 2,
            tls: Some(tls),
            ..ServerOptions::default()
        },
    )
    .unwrap()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn rules(version: &str) -> RoomVersionRules {
    match version {
        "1" => RoomVersionRules::V1,
        "2" => RoomVersionRules::V2,
        "3" => RoomVersionRules::V3,
        "4" => RoomVersionRules::V4,
        "5" => RoomVersionRules::V5,
        "6" => RoomVersionRules::V6,
        "7" => RoomVersionRules::V7,
        "8" => RoomVersionRules::V8,
        "9" => RoomVersionRules::V9,
        "10" => RoomVersionRules::V10,
        "11" => RoomVersionRules::V11,
        "12" => RoomVersionRules::V12,
        other => panic!("no rules for room version {other}"),
    }
}

pub fn to_canonical(v: &J) -> CanonicalJsonObject {
    serde_json::from_value(v.clone()).unwrap()
}

pub fn from_canonical(o: &CanonicalJsonObject) -> J {
    serde_json::to_value(o).unwrap()
}

/// An ed25519 key pair (ruma) with its key ID version.
pub fn new_key(version: &str) -> Ed25519KeyPair {
    let doc = Ed25519KeyPair::generate();
    Ed25519KeyPair::from_der(&doc, version.to_owned()).unwrap()
}

pub fn public_b64(key: &Ed25519KeyPair) -> String {
    invited_matrix::base64::encode(&key.public_key())
}

/// What the origin's key endpoint answers; tests change it to provoke each failure.
#[derive(Debug, Clone)]
pub struct KeyServerMode {
    pub valid_until_ts: i64,
    /// Publish the current key only in old_verify_keys (with this expired_ts).
    pub only_old_key: Option<i64>,
    /// Claim another server_name.
    pub wrong_server_name: bool,
    /// Sign the response with a different key than the one published.
    pub bad_self_signature: bool,
    /// Answer 500 instead.
    pub broken: bool,
    /// List this many extra keys in `verify_keys` (each our public key under another ID),
    /// still correctly self-signed: a response as large as a hostile server cares to make it
    /// (about 75 bytes a key).
    pub padding_keys: usize,
}

impl Default for KeyServerMode {
    fn default() -> Self {
        KeyServerMode {
            valid_until_ts: now_ms() + 24 * 3600 * 1000,
            only_old_key: None,
            wrong_server_name: false,
            bad_self_signature: false,
            broken: false,
            padding_keys: 0,
        }
    }
}

/// A padded key response, with the `(padding_keys, valid_until_ts)` it was made for.
type PaddedResponse = ((usize, i64), Vec<u8>);

struct OriginInner {
    name: String,
    key: Ed25519KeyPair,
    mode: Mutex<KeyServerMode>,
    hits: AtomicUsize,
    /// As a notary: the servers we vouch for, with their signed key responses.
    notarised: Mutex<BTreeMap<String, J>>,
    /// As a notary: sign with a wrong key.
    notary_bad_signature: Mutex<bool>,
    /// As a notary: the last query body received.
    last_query: Mutex<Option<J>>,
    /// As a server of rooms: how make_leave and send_leave answer, and what they received.
    rooms: Mutex<RoomServer>,
    /// The last padded key response served: signing one costs the (unoptimised) test origin
    /// tens of milliseconds.
    padded: Mutex<Option<PaddedResponse>>,
}

pub struct TestOrigin {
    inner: Arc<OriginInner>,
    shutdown: Option<ShutdownHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestOrigin {
    /// Starts an origin on 127.0.0.1 with an ephemeral port, HTTPS with a cert from `ca`,
    /// named by its IP literal and port (no DNS needed).
    pub fn start(ca: &TestCa) -> TestOrigin {
        TestOrigin::start_as(ca, "127.0.0.1")
    }

    /// Like [`TestOrigin::start`], named `<host>:<port>` (e.g. `localhost`: a DNS name with
    /// an explicit port, which invited resolves and checks the certificate against).
    pub fn start_as(ca: &TestCa, host: &str) -> TestOrigin {
        let server = https_server(ca);
        let name = format!("{host}:{}", server.local_addr().port());
        let inner = Arc::new(OriginInner {
            name,
            key: new_key("k1"),
            mode: Mutex::new(KeyServerMode::default()),
            hits: AtomicUsize::new(0),
            notarised: Mutex::new(BTreeMap::new()),
            notary_bad_signature: Mutex::new(false),
            last_query: Mutex::new(None),
            rooms: Mutex::new(RoomServer::default()),
            padded: Mutex::new(None),
        });
        let shutdown = server.shutdown_handle();
        let handler: Arc<dyn Handler> = Arc::new(OriginHandler(inner.clone()));
        let thread = std::thread::spawn(move || {
            let _ = server.run(handler);
        });
        TestOrigin {
            inner,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn key(&self) -> &Ed25519KeyPair {
        &self.inner.key
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.inner.key.version())
    }

    pub fn set_mode(&self, mode: KeyServerMode) {
        *self.inner.mode.lock().unwrap() = mode;
    }

    /// Requests to the key endpoints so far.
    pub fn hits(&self) -> usize {
        self.inner.hits.load(Ordering::SeqCst)
    }

    /// The origin's signed key response (as its key endpoint would answer).
    pub fn key_response(&self) -> J {
        key_response(&self.inner, &KeyServerMode::default())
    }

    /// The body the key endpoint answers now, in the current mode.
    pub fn served_key_response(&self) -> Vec<u8> {
        let mode = self.inner.mode.lock().unwrap().clone();
        key_response_bytes(&self.inner, &mode)
    }

    /// Makes this origin a notary that vouches for `other`.
    pub fn notarise(&self, other: &TestOrigin) {
        self.inner
            .notarised
            .lock()
            .unwrap()
            .insert(other.name().to_owned(), other.key_response());
    }

    /// As a notary: the last `/_matrix/key/v2/query` body received.
    pub fn last_query(&self) -> Option<J> {
        self.inner.last_query.lock().unwrap().clone()
    }

    pub fn set_notary_bad_signature(&self, bad: bool) {
        *self.inner.notary_bad_signature.lock().unwrap() = bad;
    }

    /// Stops serving (the port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            s.shutdown();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The `Authorization` header value for a request, signed with `key` (default: ours).
    pub fn sign_request(
        &self,
        method: &str,
        uri: &str,
        destination: &str,
        content: Option<&J>,
    ) -> String {
        self.sign_request_with(&self.inner.key, method, uri, destination, content)
    }

    pub fn sign_request_with(
        &self,
        key: &Ed25519KeyPair,
        method: &str,
        uri: &str,
        destination: &str,
        content: Option<&J>,
    ) -> String {
        let mut obj = json!({
            "method": method, "uri": uri, "origin": self.name(), "destination": destination,
        });
        if let Some(c) = content {
            obj["content"] = c.clone();
        }
        let mut canon = to_canonical(&obj);
        ruma_signatures::sign_json(self.name(), key, &mut canon).unwrap();
        let signed = from_canonical(&canon);
        let key_id = format!("ed25519:{}", key.version());
        let sig = signed["signatures"][self.name()][&key_id]
            .as_str()
            .unwrap()
            .to_owned();
        format!(
            "X-Matrix origin=\"{}\",destination=\"{destination}\",key=\"{key_id}\",sig=\"{sig}\"",
            self.name()
        )
    }

    /// Adds hashes and this origin's signature to an event, per the room version (ruma).
    pub fn hash_and_sign(&self, event: &J, version: &str) -> J {
        let mut canon = to_canonical(event);
        ruma_signatures::hash_and_sign_event(
            self.name(),
            &self.inner.key,
            &mut canon,
            &rules(version).redaction,
        )
        .unwrap();
        from_canonical(&canon)
    }

    /// The event ID of an event (v1/v2: its field; v3+: ruma's reference hash).
    pub fn event_id(event: &J, version: &str) -> String {
        if version == "1" || version == "2" {
            return event["event_id"].as_str().unwrap().to_owned();
        }
        let hash = ruma_signatures::reference_hash(&to_canonical(event), &rules(version)).unwrap();
        format!("${hash}")
    }

    /// A signed `m.room.create` event for a new room of `version` created by `creator`.
    /// Returns (event, room ID).
    pub fn create_event(&self, version: &str, creator_localpart: &str) -> (J, String) {
        let sender = format!("@{creator_localpart}:{}", self.name());
        let mut content = json!({"room_version": version});
        if version.parse::<u32>().unwrap() <= 10 {
            content["creator"] = json!(sender);
        }
        let mut ev = json!({
            "type": "m.room.create", "state_key": "", "sender": sender, "content": content,
            "origin_server_ts": now_ms(), "depth": 1, "prev_events": [], "auth_events": [],
        });
        let v12 = version == "12";
        let room_id = if v12 {
            String::new()
        } else {
            format!("!r{}:{}", unique(), self.name())
        };
        if !v12 {
            ev["room_id"] = json!(room_id);
        }
        if version == "1" || version == "2" {
            ev["event_id"] = json!(format!("$c{}:{}", unique(), self.name()));
        }
        let signed = self.hash_and_sign(&ev, version);
        if v12 {
            let id = TestOrigin::event_id(&signed, version);
            let room = format!("!{}", &id[1..]);
            return (signed, room);
        }
        (signed, room_id)
    }

    /// A signed state event (e.g. m.room.name) in `room_id`.
    pub fn state_event(&self, version: &str, room_id: &str, event_type: &str, content: J) -> J {
        let mut ev = json!({
            "type": event_type, "state_key": "", "sender": format!("@alice:{}", self.name()),
            "content": content, "room_id": room_id, "origin_server_ts": now_ms(), "depth": 2,
            "prev_events": [], "auth_events": [],
        });
        if version == "1" || version == "2" {
            ev["event_id"] = json!(format!("$s{}:{}", unique(), self.name()));
        }
        self.hash_and_sign(&ev, version)
    }

    /// An unsigned invite event from @alice on this origin to `invitee` (before hashing and
    /// signing, so tests can tamper first).
    pub fn raw_invite(&self, version: &str, room_id: &str, invitee: &str) -> J {
        let mut ev = json!({
            "type": "m.room.member", "state_key": invitee,
            "sender": format!("@alice:{}", self.name()),
            "content": {"membership": "invite", "displayname": "Bob"},
            "room_id": room_id, "origin_server_ts": now_ms(), "depth": 5,
            "unsigned": {"age": 12},
        });
        if version == "1" || version == "2" {
            ev["event_id"] = json!(format!("$i{}:{}", unique(), self.name()));
            ev["prev_events"] = json!([[format!("$p:{}", self.name()), {"sha256": "aGVsbG8"}]]);
            ev["auth_events"] = json!([[format!("$a:{}", self.name()), {"sha256": "aGVsbG8"}]]);
        } else {
            ev["prev_events"] = json!(["$prevprevprevprevprevprevprevprevprevprevpre"]);
            ev["auth_events"] = json!(["$authauthauthauthauthauthauthauthauthauthaut"]);
        }
        ev
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A process-wide counter for unique IDs.
pub fn unique() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst) + std::process::id() as usize * 1_000_000
}

fn key_response(inner: &OriginInner, mode: &KeyServerMode) -> J {
    let key_id = format!("ed25519:{}", inner.key.version());
    let public = public_b64(&inner.key);
    let mut body = json!({
        "server_name": if mode.wrong_server_name { "someone.else" } else { inner.name.as_str() },
        "valid_until_ts": mode.valid_until_ts,
        "verify_keys": {},
        "old_verify_keys": {},
    });
    match mode.only_old_key {
        Some(expired) => {
            // The current key is another one; ours is retired.
            let other = new_key("k2");
            body["verify_keys"] = json!({"ed25519:k2": {"key": public_b64(&other)}});
            body["old_verify_keys"] =
                json!({ key_id.clone(): {"key": public, "expired_ts": expired}});
            let mut canon = to_canonical(&body);
            ruma_signatures::sign_json(&inner.name, &other, &mut canon).unwrap();
            return from_canonical(&canon);
        }
        None => {
            body["verify_keys"] = json!({ key_id: {"key": public} });
            for i in 0..mode.padding_keys {
                body["verify_keys"][format!("ed25519:pad{i}")] = json!({"key": public});
            }
        }
    }
    let mut canon = to_canonical(&body);
    if mode.bad_self_signature {
        let impostor = new_key(inner.key.version());
        ruma_signatures::sign_json(&inner.name, &impostor, &mut canon).unwrap();
    } else {
        ruma_signatures::sign_json(&inner.name, &inner.key, &mut canon).unwrap();
    }
    from_canonical(&canon)
}

/// [`key_response`] as sent; a padded one is made once per mode and kept.
fn key_response_bytes(inner: &OriginInner, mode: &KeyServerMode) -> Vec<u8> {
    if mode.padding_keys == 0 {
        return serde_json::to_vec(&key_response(inner, mode)).unwrap();
    }
    let made_for = (mode.padding_keys, mode.valid_until_ts);
    let mut padded = inner.padded.lock().unwrap();
    match &*padded {
        Some((m, bytes)) if *m == made_for => bytes.clone(),
        _ => {
            let bytes = serde_json::to_vec(&key_response(inner, mode)).unwrap();
            *padded = Some((made_for, bytes.clone()));
            bytes
        }
    }
}

struct OriginHandler(Arc<OriginInner>);

impl Handler for OriginHandler {
    fn handle(&self, request: &Request) -> Response {
        let inner = &self.0;
        let json_response = |v: &J| Response::json(200, serde_json::to_vec(v).unwrap());
        match (request.method.as_str(), request.path()) {
            ("GET", "/_matrix/key/v2/server") => {
                inner.hits.fetch_add(1, Ordering::SeqCst);
                let mode = inner.mode.lock().unwrap().clone();
                if mode.broken {
                    return Response::json(500, b"{}".to_vec());
                }
                Response::json(200, key_response_bytes(inner, &mode))
            }
            ("POST", "/_matrix/key/v2/query") => {
                inner.hits.fetch_add(1, Ordering::SeqCst);
                let query: J = serde_json::from_slice(&request.body).unwrap_or(J::Null);
                *inner.last_query.lock().unwrap() = Some(query.clone());
                let mut out = Vec::new();
                let bad = *inner.notary_bad_signature.lock().unwrap();
                for (server, response) in inner.notarised.lock().unwrap().iter() {
                    if query["server_keys"].get(server).is_none() {
                        continue;
                    }
                    let mut canon = to_canonical(response);
                    let impostor;
                    let signer: &Ed25519KeyPair = if bad {
                        impostor = new_key(inner.key.version());
                        &impostor
                    } else {
                        &inner.key
                    };
                    ruma_signatures::sign_json(&inner.name, signer, &mut canon).unwrap();
                    out.push(from_canonical(&canon));
                }
                json_response(&json!({"server_keys": out}))
            }
            (method, path)
                if path.starts_with("/_matrix/federation/v1/make_leave/")
                    || path.starts_with("/_matrix/federation/v2/send_leave/") =>
            {
                room_server(inner, method, path, request)
            }
            _ => Response::json(
                404,
                br#"{"errcode":"M_UNRECOGNIZED","error":"no"}"#.to_vec(),
            ),
        }
    }

    fn edge_error(&self, error: &EdgeError) -> Response {
        Response::json(error.status(), b"{}".to_vec())
    }
}

/// A request a room server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The request target as sent (percent-encoded).
    pub path: String,
    pub authorization: String,
    pub body: J,
}

/// The origin as a server of rooms: answers make_leave with a template for the room's version
/// and send_leave with `{}`, unless told to answer other statuses first.
#[derive(Debug, Default)]
pub struct RoomServer {
    /// Room ID → room version, for templates (unknown rooms: 404).
    pub versions: BTreeMap<String, String>,
    /// Statuses make_leave answers first, in order; 200 after.
    pub make_leave_statuses: std::collections::VecDeque<u16>,
    /// Statuses send_leave answers first, in order; 200 after.
    pub send_leave_statuses: std::collections::VecDeque<u16>,
    /// When set, every make_leave / send_leave answers this (after the queues).
    pub always: Option<u16>,
    pub received: Vec<Received>,
}

impl TestOrigin {
    /// Makes this origin a server of `room_id` (of `version`) for make_leave.
    pub fn host_room(&self, room_id: &str, version: &str) {
        self.inner
            .rooms
            .lock()
            .unwrap()
            .versions
            .insert(room_id.to_owned(), version.to_owned());
    }

    /// Changes how this origin answers make_leave/send_leave.
    pub fn rooms(&self, f: impl FnOnce(&mut RoomServer)) {
        f(&mut self.inner.rooms.lock().unwrap());
    }

    /// The make_leave/send_leave requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.rooms.lock().unwrap().received.clone()
    }

    /// A signed kick (or ban) of `invitee` by `@<sender_localpart>:<this origin>` in a room of
    /// `version`, naming `invite_event_id` among its auth events: what Synapse sends the
    /// invitee's server when an invite is withdrawn.
    pub fn kick(
        &self,
        version: &str,
        room_id: &str,
        invite_event_id: &str,
        invitee: &str,
        sender_localpart: &str,
        membership: &str,
    ) -> J {
        let v1 = version == "1" || version == "2";
        let reference = |id: &str| {
            if v1 {
                json!([id, {"sha256": "aGVsbG8"}])
            } else {
                json!(id)
            }
        };
        let mut ev = json!({
            "type": "m.room.member", "state_key": invitee,
            "sender": format!("@{sender_localpart}:{}", self.name()),
            "content": {"membership": membership}, "room_id": room_id,
            "origin_server_ts": now_ms(), "depth": 9,
            "prev_events": [reference(&format!("$prev{}:{}", unique(), self.name()))],
            "auth_events": [
                reference(&format!("$create{}:{}", unique(), self.name())),
                reference(invite_event_id)
            ],
            "unsigned": {"age_ts": now_ms(), "replaces_state": invite_event_id},
        });
        if v1 {
            ev["event_id"] = json!(format!("$kick{}:{}", unique(), self.name()));
        }
        self.hash_and_sign(&ev, version)
    }
}

/// Decodes a percent-encoded path segment (tests only: any valid escape).
fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&segment[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn room_server(inner: &OriginInner, method: &str, path: &str, request: &Request) -> Response {
    let mut rooms = inner.rooms.lock().unwrap();
    let authorization = request
        .header("authorization")
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .unwrap_or_default();
    rooms.received.push(Received {
        method: method.to_owned(),
        path: path.to_owned(),
        authorization,
        body: serde_json::from_slice(&request.body).unwrap_or(J::Null),
    });
    let make_leave = path.starts_with("/_matrix/federation/v1/make_leave/");
    let queued = if make_leave {
        rooms.make_leave_statuses.pop_front()
    } else {
        rooms.send_leave_statuses.pop_front()
    };
    let status = queued.or(rooms.always).unwrap_or(200);
    if status != 200 {
        let body = json!({"errcode": if status == 403 { "M_FORBIDDEN" } else { "M_UNKNOWN" },
                          "error": format!("scripted {status}")});
        return Response::json(status, serde_json::to_vec(&body).unwrap());
    }
    if !make_leave {
        return Response::json(200, b"{}".to_vec());
    }
    let mut parts = path["/_matrix/federation/v1/make_leave/".len()..].split('/');
    let room_id = decode(parts.next().unwrap_or(""));
    let user_id = decode(parts.next().unwrap_or(""));
    let Some(version) = rooms.versions.get(&room_id).cloned() else {
        return Response::json(
            404,
            br#"{"errcode":"M_NOT_FOUND","error":"Unknown room"}"#.to_vec(),
        );
    };
    let v1 = version == "1" || version == "2";
    let reference = |id: String| {
        if v1 {
            json!([id, {"sha256": "aGVsbG8"}])
        } else {
            json!(id)
        }
    };
    let mut event = json!({
        "type": "m.room.member", "state_key": user_id, "sender": user_id,
        "room_id": room_id, "content": {"membership": "leave"},
        "origin_server_ts": now_ms(), "depth": 11,
        "prev_events": [reference(format!("$p{}:{}", unique(), inner.name))],
        "auth_events": [reference(format!("$a{}:{}", unique(), inner.name))],
    });
    if v1 {
        event["event_id"] = json!(format!("$resident{}:{}", unique(), inner.name));
    }
    Response::json(
        200,
        serde_json::to_vec(&json!({"room_version": version, "event": event})).unwrap(),
    )
}
