//! A corpus of malformed requests, each sent to ONE running `invited` (plus a second one with a
//! small body limit for the cases that need it). For every case: a response arrives, its status
//! is the documented 4xx from README.md ("Errors we answer") — never a 5xx —, it is a Matrix
//! error (`Content-Type: application/json`, `{"errcode": "M_…", "error": "…"}`) with the
//! documented errcode, and the process is still alive. After the whole corpus a valid invite is
//! still answered 200 and the server's resident memory has not grown by more than a few MB.
//!
//! Cases that must get past authentication to reach the step they test are signed correctly by
//! the test origin (the X-Matrix signature is computed here over our own canonical JSON text, so
//! bodies ruma cannot represent — floats, huge integers, deep nesting — are signed too).
//! Request-level junk goes over raw TCP, byte for byte; well-formed requests go through ureq.
//!
//! The corpus table is [`corpus`]: each case names its expected status and errcode.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::invites::{
    Harness, Invite, US, enc, invite_path, put_raw, start_invited, valid_invite,
};
use common::origin::{TestOrigin, new_key};
use common::wire::*;
use common::*;
use serde_json::{Value as J, json};

/// How a case is sent.
enum Req {
    /// A well-formed request through ureq: method, path, `Authorization` values, body.
    Ureq {
        method: &'static str,
        path: String,
        auth: Vec<String>,
        body: Option<Vec<u8>>,
    },
    /// Exactly these bytes over a new TCP connection.
    Raw(Vec<u8>),
    /// Raw bytes of a HEAD request: the response must end after its head (no content).
    Head(Vec<u8>),
}

/// One corpus entry: what is sent and what must come back.
struct Case {
    group: &'static str,
    name: String,
    req: Req,
    status: u16,
    errcode: &'static str,
}

/// What came back.
struct Got {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
    /// Bytes after the response (content after a HEAD response, or anything unexpected).
    trailing: Vec<u8>,
}

// Expected answers (README "Errors we answer").
const NOT_JSON: (u16, &str) = (400, "M_NOT_JSON");
const BAD_JSON: (u16, &str) = (400, "M_BAD_JSON");
const INVALID: (u16, &str) = (400, "M_INVALID_PARAM");
const TOO_LARGE: (u16, &str) = (413, "M_TOO_LARGE");
const UNAUTHORIZED: (u16, &str) = (401, "M_UNAUTHORIZED");
const NOT_FOUND: (u16, &str) = (404, "M_UNRECOGNIZED");
const NO_METHOD: (u16, &str) = (405, "M_UNRECOGNIZED");
/// The edge's refusals of malformed HTTP (`EdgeError::BadRequest`, errcode M_UNKNOWN).
const EDGE_400: (u16, &str) = (400, "M_UNKNOWN");
const EDGE_411: (u16, &str) = (411, "M_UNKNOWN");
const EDGE_414: (u16, &str) = (414, "M_UNKNOWN");
const EDGE_431: (u16, &str) = (431, "M_UNKNOWN");
const EDGE_505: (u16, &str) = (505, "M_UNKNOWN");

/// Builds the corpus around one test origin.
struct Corpus<'a> {
    o: &'a TestOrigin,
    cases: Vec<Case>,
}

impl Corpus<'_> {
    fn add(
        &mut self,
        group: &'static str,
        name: impl Into<String>,
        req: Req,
        want: (u16, &'static str),
    ) {
        self.cases.push(Case {
            group,
            name: name.into(),
            req,
            status: want.0,
            errcode: want.1,
        });
    }

    /// PUT `body` (bytes as given) with these `Authorization` values, through ureq.
    fn put(
        &mut self,
        group: &'static str,
        name: impl Into<String>,
        path: &str,
        auth: Vec<String>,
        body: Vec<u8>,
        want: (u16, &'static str),
    ) {
        let req = Req::Ureq {
            method: "PUT",
            path: path.to_owned(),
            auth,
            body: Some(body),
        };
        self.add(group, name, req, want);
    }

    /// PUT canonical JSON `text`, correctly signed by the origin over exactly that text.
    fn put_signed_text(
        &mut self,
        group: &'static str,
        name: impl Into<String>,
        path: &str,
        text: &str,
        want: (u16, &'static str),
    ) {
        let auth = x_matrix_for_text(self.o, "PUT", path, US, Some(text));
        self.put(
            group,
            name,
            path,
            vec![auth],
            text.as_bytes().to_vec(),
            want,
        );
    }

    /// PUT a JSON value (sent as canonical JSON), correctly signed by the origin.
    fn put_signed(
        &mut self,
        group: &'static str,
        name: impl Into<String>,
        path: &str,
        body: &J,
        want: (u16, &'static str),
    ) {
        self.put_signed_text(group, name, path, &canonical(body), want);
    }
}

/// Puts the placeholder somewhere in a body.
type Edit = fn(&mut J);

/// `text` with the JSON string `"__X__"` replaced by the literal `lit` (a number, say). The
/// key order of canonical text does not depend on values, so a canonical `text` stays
/// canonical when `lit` is in invited's canonical form.
fn inject(text: &str, lit: &str) -> String {
    assert_eq!(
        text.matches("\"__X__\"").count(),
        1,
        "one placeholder in {text}"
    );
    text.replace("\"__X__\"", lit)
}

/// Canonical text of `body` after `edit` put the placeholder somewhere, with `lit` there.
fn with_literal(body: &J, lit: &str, edit: impl FnOnce(&mut J)) -> String {
    let mut b = body.clone();
    edit(&mut b);
    inject(&canonical(&b), lit)
}

fn bob() -> String {
    format!("@bob:{US}")
}

/// A valid v12 invite of its own (another invitee each time: two invites made in the same
/// millisecond for the same user would otherwise be the same event).
fn fresh_invite(o: &TestOrigin) -> Invite {
    valid_invite(o, "12", &format!("@u{}:{US}", common::origin::unique()))
}

/// The whole corpus for the main server.
fn corpus(o: &TestOrigin) -> Vec<Case> {
    let mut c = Corpus {
        o,
        cases: Vec::new(),
    };
    // The base: a valid, correctly signed v12 invite (never sent as is, so never stored).
    let Invite {
        path,
        body,
        event_id,
        ..
    } = valid_invite(o, "12", &bob());
    let room_id = body["event"]["room_id"].as_str().unwrap().to_owned();
    let body_text = canonical(&body);
    let good_auth = x_matrix(o, "PUT", &path, Some(&body));

    // -----------------------------------------------------------------------------------------
    // 1. Truncated bodies: a valid signed invite cut at many offsets. Not JSON (step 1).
    let bytes = body_text.as_bytes();
    let n = bytes.len();
    let mut offsets: Vec<usize> = (0..60).map(|i| i * n / 60).collect();
    offsets.extend([1, 2, n - 2, n - 1]);
    offsets.sort_unstable();
    offsets.dedup();
    for at in offsets {
        c.put(
            "truncated",
            format!("v2 invite cut at byte {at} of {n}"),
            &path,
            vec![good_auth.clone()],
            bytes[..at].to_vec(),
            NOT_JSON,
        );
    }
    // The same over v1 (the body is the event itself).
    let (v1_create, v1_room) = o.create_event("1", "alice");
    let mut v1_raw = o.raw_invite("1", &v1_room, &bob());
    v1_raw["unsigned"]["invite_room_state"] = json!([v1_create]);
    let v1_event = o.hash_and_sign(&v1_raw, "1");
    let v1_id = TestOrigin::event_id(&v1_event, "1");
    let v1_path = invite_path(1, &v1_room, &v1_id);
    let v1_text = canonical(&v1_event);
    let v1_auth = x_matrix(o, "PUT", &v1_path, Some(&v1_event));
    let m = v1_text.len();
    for i in 1..=10 {
        let at = i * m / 11;
        c.put(
            "truncated",
            format!("v1 invite cut at byte {at} of {m}"),
            &v1_path,
            vec![v1_auth.clone()],
            v1_text.as_bytes()[..at].to_vec(),
            NOT_JSON,
        );
    }

    // -----------------------------------------------------------------------------------------
    // 2. Not JSON at all (step 1, before authentication).
    let not_json: &[(&str, &[u8])] = &[
        ("lone '{'", b"{"),
        ("lone '}'", b"}"),
        ("lone '['", b"["),
        ("whitespace only", b"   \r\n\t "),
        ("missing value", br#"{"a":}"#),
        ("single-quoted strings", b"{'room_version':'12'}"),
        ("trailing comma in object", br#"{"a":1,}"#),
        ("trailing comma in array", b"[1,]"),
        ("missing colon", br#"{"a" 1}"#),
        ("missing comma", br#"{"a":1 "b":2}"#),
        ("array without comma", b"[1 2]"),
        ("unquoted key", b"{a:1}"),
        ("numeric key", b"{1:2}"),
        ("bare key without value", br#"{"a"}"#),
        ("truncated literal nul", b"nul"),
        ("capitalised True", br#"{"a":True}"#),
        ("NaN", b"NaN"),
        ("Infinity", br#"{"a":Infinity}"#),
        ("bare minus", b"-"),
        ("leading zero", b"01"),
        ("number ending in a dot", b"1."),
        ("number starting with a dot", b".5"),
        ("exponent without digits", b"1e"),
        ("explicit plus sign", b"+1"),
        ("hex number", b"0x10"),
        ("unterminated string", br#"{"a":"abc"#),
        ("bad escape", br#"{"a":"\x41"}"#),
        ("short unicode escape", br#"{"a":"\u12"}"#),
        ("lone high surrogate", br#"{"a":"\uD800"}"#),
        ("lone low surrogate", br#"{"a":"\uDC00x"}"#),
        ("raw control character in a string", b"{\"a\":\"x\x01y\"}"),
        ("raw newline in a string", b"{\"a\":\"x\ny\"}"),
        ("two JSON values", b"{}{}"),
        ("JSON followed by garbage", b"{} x"),
        ("extra closing brace", br#"{"a":1}}"#),
        ("C comment", b"/* hi */ {}"),
        ("line comment after the value", b"{} // hi"),
        ("byte order mark", b"\xEF\xBB\xBF{}"),
        ("a NUL byte", b"{\x00}"),
        ("XML", b"<invite/>"),
        ("form encoding", b"room_version=12&event=x"),
    ];
    for (name, b) in not_json {
        c.put(
            "invalid-json",
            *name,
            &path,
            vec![good_auth.clone()],
            b.to_vec(),
            NOT_JSON,
        );
    }
    // JSON syntax, but refused by the parser: duplicate keys, numbers beyond f64 (M_BAD_JSON).
    let dup_top = body_text.replacen("{\"event\":", "{\"room_version\":\"11\",\"event\":", 1);
    c.put(
        "invalid-json",
        "duplicate room_version at the top",
        &path,
        vec![good_auth.clone()],
        dup_top.into_bytes(),
        BAD_JSON,
    );
    let dup_event = body_text.replacen(
        "\"membership\":\"invite\"",
        "\"membership\":\"invite\",\"membership\":\"join\"",
        1,
    );
    c.put(
        "invalid-json",
        "duplicate membership in the event content",
        &path,
        vec![good_auth.clone()],
        dup_event.into_bytes(),
        BAD_JSON,
    );
    for (name, text) in [
        ("number 1e400 (beyond f64)", r#"{"a":1e400}"#),
        ("number -1e400 (beyond f64)", r#"{"a":-1e400}"#),
        ("number 1.0e999999999", r#"[1.0e999999999]"#),
    ] {
        c.put(
            "invalid-json",
            name,
            &path,
            vec![good_auth.clone()],
            text.as_bytes().to_vec(),
            BAD_JSON,
        );
    }

    // -----------------------------------------------------------------------------------------
    // 3. Invalid UTF-8 in the body (not JSON, RFC 8259 §8.1).
    let display = "\"displayname\":\"Bob\"";
    assert!(body_text.contains(display));
    let mut utf8: Vec<(String, Vec<u8>)> = Vec::new();
    for (what, bad) in [
        ("a lone 0xFF byte", &b"\xFF"[..]),
        ("a lone continuation byte", b"\x80"),
        ("an overlong '/'", b"\xC0\xAF"),
        ("an encoded surrogate", b"\xED\xA0\x80"),
        ("a truncated 3-byte sequence", b"\xE2\x82"),
        ("a 5-byte sequence", b"\xF8\x88\x80\x80\x80"),
        ("a code point above U+10FFFF", b"\xF4\x90\x80\x80"),
        ("Latin-1 e-acute", b"\xE9"),
    ] {
        let mut b = body_text.as_bytes().to_vec();
        let at = body_text.find(display).unwrap() + display.len() - 2;
        b.splice(at..at, bad.iter().copied());
        utf8.push((format!("{what} inside the signed invite's displayname"), b));
    }
    utf8.push(("0xFF as a whole key".into(), b"{\"\xFF\":1}".to_vec()));
    let mut utf16 = vec![0xFF, 0xFE];
    for u in "{\"room_version\":\"12\"}".encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    utf8.push(("UTF-16LE body with BOM".into(), utf16));
    for (name, b) in utf8 {
        c.put("utf8", name, &path, vec![good_auth.clone()], b, NOT_JSON);
    }

    // -----------------------------------------------------------------------------------------
    // 4. Wrong types for every member of the v2 body, signed (step 2, M_BAD_JSON).
    let wrong = |keep: &str| -> Vec<(&'static str, J)> {
        let all: Vec<(&'static str, J)> = vec![
            ("a number", json!(12)),
            ("a string", json!("x")),
            ("null", J::Null),
            ("a boolean", json!(true)),
            ("an array", json!([])),
            ("an object", json!({})),
            ("a float", json!(1.5)),
        ];
        all.into_iter().filter(|(n, _)| *n != keep).collect()
    };
    for (what, v) in [
        ("an array", json!([body.clone()])),
        ("a string", json!("invite")),
        ("a number", json!(42)),
        ("null", J::Null),
        ("a boolean", json!(true)),
        ("an empty array", json!([])),
    ] {
        c.put_signed(
            "body-types",
            format!("v2 body is {what}"),
            &path,
            &v,
            BAD_JSON,
        );
    }
    for key in ["room_version", "event"] {
        let mut b = body.clone();
        b.as_object_mut().unwrap().remove(key);
        c.put_signed(
            "body-types",
            format!("v2 body without {key}"),
            &path,
            &b,
            BAD_JSON,
        );
    }
    for (what, v) in wrong("a string") {
        let mut b = body.clone();
        b["room_version"] = v;
        c.put_signed(
            "body-types",
            format!("room_version is {what}"),
            &path,
            &b,
            BAD_JSON,
        );
    }
    for (what, v) in wrong("an object") {
        let mut b = body.clone();
        b["event"] = v;
        c.put_signed(
            "body-types",
            format!("event is {what}"),
            &path,
            &b,
            BAD_JSON,
        );
    }
    for (what, v) in wrong("an array") {
        if what == "null" {
            continue; // null means "no state" (then refused by the v12 state rules, below)
        }
        let mut b = body.clone();
        b["invite_room_state"] = v;
        c.put_signed(
            "body-types",
            format!("invite_room_state is {what}"),
            &path,
            &b,
            BAD_JSON,
        );
    }
    // invite_room_state of the right type but wrong content: the v12 state rules (step 7,
    // after the event's own checks and signatures) refuse it. Each case has its own valid
    // invite: were one accepted by mistake, the others would otherwise get its stored answer
    // (a retry) instead of being checked.
    for (what, v) in [
        ("null (no state)", J::Null),
        ("empty", json!([])),
        ("[1]", json!([1])),
        ("[null]", json!([null])),
        ("[[]]", json!([[]])),
        ("[{}]", json!([{}])),
        (
            "a stripped create event only",
            json!([{"type": "m.room.create", "state_key": "", "sender": format!("@alice:{}", o.name()), "content": {"room_version": "12"}}]),
        ),
        (
            "the name event only (no create)",
            J::String("name only".into()),
        ),
    ] {
        let Invite {
            path: p,
            body: mut b,
            ..
        } = fresh_invite(o);
        b["invite_room_state"] = if v == "name only" {
            json!([b["invite_room_state"][1].clone()])
        } else {
            v
        };
        c.put_signed(
            "body-types",
            format!("invite_room_state is {what} (room version 12)"),
            &p,
            &b,
            INVALID,
        );
    }
    // v1: the body is the event; unsigned must be an object, its invite_room_state an array.
    for (what, v) in [
        ("an array", json!([v1_event.clone()])),
        ("a string", json!("invite")),
        ("a number", json!(1)),
        ("null", J::Null),
    ] {
        c.put_signed(
            "body-types",
            format!("v1 body is {what}"),
            &v1_path,
            &v,
            BAD_JSON,
        );
    }
    for (what, v) in [
        ("a string", json!("x")),
        ("a number", json!(1)),
        ("an array", json!([])),
    ] {
        let mut e = v1_event.clone();
        e["unsigned"] = v;
        c.put_signed(
            "body-types",
            format!("v1 unsigned is {what}"),
            &v1_path,
            &e,
            BAD_JSON,
        );
    }
    for (what, v) in [
        ("an object", json!({})),
        ("a string", json!("x")),
        ("a number", json!(1)),
    ] {
        let mut e = v1_event.clone();
        e["unsigned"]["invite_room_state"] = v;
        c.put_signed(
            "body-types",
            format!("v1 unsigned.invite_room_state is {what}"),
            &v1_path,
            &e,
            BAD_JSON,
        );
    }

    // -----------------------------------------------------------------------------------------
    // 5. Wrong types for every field of the v12 event (steps 4–5), request signed correctly.
    let event_case = |c: &mut Corpus, name: String, edit: &dyn Fn(&mut J), want| {
        let mut b = body.clone();
        edit(&mut b["event"]);
        c.put_signed("event-types", name, &path, &b, want);
    };
    let fields: &[(&str, &[&str])] = &[
        ("type", &["a string"]),
        ("sender", &["a string"]),
        ("room_id", &["a string"]),
        ("state_key", &["a string"]),
        ("content", &["an object"]),
        ("signatures", &["an object"]),
        ("hashes", &["an object"]),
        ("origin_server_ts", &["a number", "a float"]),
        ("depth", &["a number", "a float"]),
        ("prev_events", &["an array"]),
        ("auth_events", &["an array"]),
    ];
    for (field, skip) in fields {
        for (what, v) in wrong("") {
            if skip.contains(&what) {
                continue;
            }
            // A float is refused as non-canonical (step 4) before its type is looked at;
            // either way M_BAD_JSON.
            let v2 = v.clone();
            event_case(
                &mut c,
                format!("event.{field} is {what}"),
                &move |e: &mut J| e[*field] = v2.clone(),
                BAD_JSON,
            );
        }
    }
    for (what, v) in wrong("a string") {
        if what == "a float" {
            continue;
        }
        event_case(
            &mut c,
            format!("event.hashes.sha256 is {what}"),
            &move |e: &mut J| e["hashes"]["sha256"] = v.clone(),
            BAD_JSON,
        );
    }
    for (what, v) in [
        ("[1]", json!([1])),
        ("[null]", json!([null])),
        ("[{}]", json!([{}])),
        (
            "v1-format pairs",
            json!([["$p:elsewhere.test", {"sha256": "aGVsbG8"}]]),
        ),
    ] {
        for list in ["prev_events", "auth_events"] {
            let v = v.clone();
            event_case(
                &mut c,
                format!("event.{list} entries are {what}"),
                &move |e: &mut J| e[list] = v.clone(),
                BAD_JSON,
            );
        }
    }
    for field in [
        "type",
        "sender",
        "room_id",
        "content",
        "signatures",
        "hashes",
        "origin_server_ts",
        "depth",
        "prev_events",
        "auth_events",
    ] {
        event_case(
            &mut c,
            format!("event without {field}"),
            &move |e: &mut J| _ = e.as_object_mut().unwrap().remove(field),
            BAD_JSON,
        );
    }
    for (what, v, want) in [
        ("depth is -1", json!(-1), BAD_JSON),
        ("redacts at the top level (v12)", json!("$x"), BAD_JSON),
    ] {
        let key = if what.starts_with("depth") {
            "depth"
        } else {
            "redacts"
        };
        event_case(
            &mut c,
            format!("event.{what}"),
            &move |e: &mut J| e[key] = v.clone(),
            want,
        );
    }
    event_case(
        &mut c,
        "event without state_key".into(),
        &|e: &mut J| _ = e.as_object_mut().unwrap().remove("state_key"),
        INVALID,
    );
    for (what, v) in wrong("a string") {
        if what == "a float" {
            continue;
        }
        event_case(
            &mut c,
            format!("event.content.membership is {what}"),
            &move |e: &mut J| e["content"]["membership"] = v.clone(),
            INVALID,
        );
    }
    // Signature values of the wrong type (step 6: a bad event signature, M_INVALID_PARAM).
    for (what, at) in [("a string", 0), ("a number under the key ID", 1)] {
        let Invite {
            path: p,
            body: mut b,
            ..
        } = fresh_invite(o);
        let origin_sigs = &mut b["event"]["signatures"][o.name()];
        if at == 0 {
            *origin_sigs = json!("sig");
        } else {
            origin_sigs[o.key_id()] = json!(7);
        }
        c.put_signed(
            "event-types",
            format!("event.signatures.<origin> is {what}"),
            &p,
            &b,
            INVALID,
        );
    }
    // `unsigned` is an object in every PDU; the v1 endpoint refuses other types (M_BAD_JSON),
    // so must v2. (Own invites: `unsigned` is not part of the event's identity, so an accepted
    // one would turn the others into retries.)
    for (what, v) in [
        ("a string", json!("x")),
        ("a number", json!(1)),
        ("an array", json!([])),
    ] {
        let Invite {
            path: p,
            body: mut b,
            ..
        } = fresh_invite(o);
        b["event"]["unsigned"] = v;
        c.put_signed(
            "event-types",
            format!("event.unsigned is {what}"),
            &p,
            &b,
            BAD_JSON,
        );
    }
    // Room version 1: event_id is a required string.
    let v1_body = json!({"room_version": "1", "event": v1_event.clone(), "invite_room_state": []});
    let v1_v2_path = invite_path(2, &v1_room, &v1_id);
    for (what, v) in [
        ("a number", json!(1)),
        ("null", J::Null),
        ("an object", json!({})),
    ] {
        let mut b = v1_body.clone();
        b["event"]["event_id"] = v;
        c.put_signed(
            "event-types",
            format!("room version 1: event.event_id is {what}"),
            &v1_v2_path,
            &b,
            BAD_JSON,
        );
    }
    let mut b = v1_body.clone();
    b["event"]["prev_events"] = json!(["$prevprevprevprevprevprevprevprevprevprevpre"]);
    c.put_signed(
        "event-types",
        "room version 1: v3-format prev_events",
        &v1_v2_path,
        &b,
        BAD_JSON,
    );

    // -----------------------------------------------------------------------------------------
    // 6. Floats and integers beyond ±(2^53−1) in room versions 6+ (step 4, M_BAD_JSON). The
    // request is signed over the exact text; the event's own signature does not matter (step 4
    // comes before step 6).
    for version in ["6", "7", "8", "9", "10", "11", "12"] {
        let Invite {
            path: vpath,
            body: vbody,
            ..
        } = valid_invite(o, version, &bob());
        for lit in ["1.5", "9007199254740992"] {
            let text = with_literal(&vbody, lit, |b| b["event"]["content"]["x"] = json!("__X__"));
            c.put_signed_text(
                "canonical",
                format!("room version {version}: content.x = {lit}"),
                &vpath,
                &text,
                BAD_JSON,
            );
        }
    }
    let positions: &[(&str, &str, Edit)] = &[
        ("content.x", "-0.25", |b| {
            b["event"]["content"]["x"] = json!("__X__")
        }),
        ("content.x", "1e+16", |b| {
            b["event"]["content"]["x"] = json!("__X__")
        }),
        ("content.x", "-9007199254740992", |b| {
            b["event"]["content"]["x"] = json!("__X__")
        }),
        ("content.x", "18446744073709551616", |b| {
            b["event"]["content"]["x"] = json!("__X__")
        }),
        (
            "content.x",
            "1000000000000000000000000000000000000000",
            |b| b["event"]["content"]["x"] = json!("__X__"),
        ),
        ("depth", "5.0", |b| b["event"]["depth"] = json!("__X__")),
        ("depth", "9223372036854775808", |b| {
            b["event"]["depth"] = json!("__X__")
        }),
        ("origin_server_ts", "1e+16", |b| {
            b["event"]["origin_server_ts"] = json!("__X__")
        }),
        ("origin_server_ts", "18446744073709551616", |b| {
            b["event"]["origin_server_ts"] = json!("__X__")
        }),
        ("unsigned.age", "1.5", |b| {
            b["event"]["unsigned"]["age"] = json!("__X__")
        }),
        ("content.nested[1].y", "0.5", |b| {
            b["event"]["content"]["nested"] = json!([1, {"y": "__X__"}])
        }),
        ("content.nested[1].y", "1152921504606846976", |b| {
            b["event"]["content"]["nested"] = json!([1, {"y": "__X__"}])
        }),
        ("hashes.other", "2.5", |b| {
            b["event"]["hashes"]["other"] = json!("__X__")
        }),
    ];
    for (at, lit, edit) in positions {
        let text = with_literal(&body, lit, edit);
        c.put_signed_text(
            "canonical",
            format!("room version 12: {at} = {lit}"),
            &path,
            &text,
            BAD_JSON,
        );
    }
    // In the room state of a v12 invite (step 7: bad invite_room_state, M_INVALID_PARAM).
    for lit in ["1.5", "9007199254740993"] {
        let Invite {
            path: p, body: b, ..
        } = fresh_invite(o);
        let text = with_literal(&b, lit, |b| {
            b["invite_room_state"][0]["content"]["x"] = json!("__X__")
        });
        c.put_signed_text(
            "canonical",
            format!("room version 12: the create event in invite_room_state has {lit}"),
            &p,
            &text,
            INVALID,
        );
    }

    // -----------------------------------------------------------------------------------------
    // 7. Deep nesting. Beyond 128 levels the parser stops (not JSON we can read: M_NOT_JSON);
    // exactly 128 parses, and then fails the body shape (signed, M_BAD_JSON).
    let arrays = |d: usize| format!("{}{}", "[".repeat(d), "]".repeat(d));
    let objects = |d: usize| format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d));
    for d in [129, 130, 200, 1000, 100_000] {
        c.put(
            "deep",
            format!("{d} nested arrays"),
            &path,
            vec![good_auth.clone()],
            arrays(d).into_bytes(),
            NOT_JSON,
        );
    }
    for d in [129, 500, 50_000] {
        c.put(
            "deep",
            format!("{d} nested objects"),
            &path,
            vec![good_auth.clone()],
            objects(d).into_bytes(),
            NOT_JSON,
        );
    }
    c.put(
        "deep",
        "300000 unclosed '['",
        &path,
        vec![good_auth.clone()],
        "[".repeat(300_000).into_bytes(),
        NOT_JSON,
    );
    let mixed: String = (0..300)
        .map(|i| if i % 2 == 0 { "[" } else { "{\"k\":" })
        .collect();
    c.put(
        "deep",
        "300 levels of mixed arrays and objects, unclosed",
        &path,
        vec![good_auth.clone()],
        mixed.into_bytes(),
        NOT_JSON,
    );
    let text = with_literal(&body, &arrays(140), |b| {
        b["event"]["content"]["x"] = json!("__X__")
    });
    c.put_signed_text(
        "deep",
        "140 nested arrays in the signed invite's content",
        &path,
        &text,
        NOT_JSON,
    );
    c.put_signed_text(
        "deep",
        "exactly 128 nested arrays (parses; not an object)",
        &path,
        &arrays(128),
        BAD_JSON,
    );
    c.put_signed_text(
        "deep",
        "exactly 128 nested objects (parses; no room_version)",
        &path,
        &objects(128),
        BAD_JSON,
    );

    // -----------------------------------------------------------------------------------------
    // 8. Sizes: the event limit (65,536 bytes) and the ID limit (255 bytes), signed (step 2).
    let mut b = body.clone();
    b["event"]["content"]["reason"] = json!("x".repeat(70_000));
    c.put_signed(
        "size",
        "event over 65,536 bytes (body under 1 MiB)",
        &path,
        &b,
        TOO_LARGE,
    );
    let mut b = body.clone();
    b["event"]["content"]["reason"] = json!("x".repeat(900_000));
    c.put_signed(
        "size",
        "event of 900 kB (body under 1 MiB)",
        &path,
        &b,
        TOO_LARGE,
    );
    for field in ["sender", "room_id", "state_key", "type"] {
        let mut b = body.clone();
        b["event"][field] = json!(format!("@{}:{}", "a".repeat(300), o.name()));
        c.put_signed(
            "size",
            format!("event.{field} over 255 bytes"),
            &path,
            &b,
            BAD_JSON,
        );
    }
    // Body limits at the edge (1 MiB by default): raw, see raw_cases().

    // -----------------------------------------------------------------------------------------
    // 9. X-Matrix defects (step 1), with the valid body.
    let body_bytes = body_text.clone().into_bytes();
    let name = o.name().to_owned();
    let kid = o.key_id();
    let sig_of = |h: &str| {
        h.split("sig=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"')
            .to_owned()
    };
    let sig = sig_of(&good_auth);
    let params = |origin: &str, dest: &str, key: &str, sig: &str| {
        format!("X-Matrix origin=\"{origin}\",destination=\"{dest}\",key=\"{key}\",sig=\"{sig}\"")
    };
    let mut xm: Vec<(String, Vec<String>)> = vec![
        ("no Authorization header".into(), vec![]),
        ("empty Authorization header".into(), vec![String::new()]),
        ("Bearer token only".into(), vec!["Bearer abc.def".into()]),
        (
            "Basic credentials only".into(),
            vec!["Basic YWxhZGRpbjpvcGVuc2VzYW1l".into()],
        ),
        (
            "scheme spelled XMatrix".into(),
            vec![good_auth.replacen("X-Matrix", "XMatrix", 1)],
        ),
        (
            "scheme X-Matrix-Foo".into(),
            vec![good_auth.replacen("X-Matrix", "X-Matrix-Foo", 1)],
        ),
        (
            "X-Matrix without parameters".into(),
            vec!["X-Matrix".into()],
        ),
        ("unquoted junk".into(), vec!["X-Matrix garbage".into()]),
        (
            "junk after the parameters".into(),
            vec![format!("{good_auth} junk")],
        ),
        ("only commas".into(), vec!["X-Matrix ,,,".into()]),
        (
            "parameter without '='".into(),
            vec!["X-Matrix origin".into()],
        ),
        (
            "empty unquoted value".into(),
            vec![good_auth.replacen(&format!("origin=\"{name}\""), "origin=", 1)],
        ),
        (
            "unterminated quoted value".into(),
            vec![format!(
                "X-Matrix origin=\"{name},key=\"{kid}\",sig=\"{sig}"
            )],
        ),
        (
            "unquoted value with a space".into(),
            vec![good_auth.replacen(&format!("origin=\"{name}\""), "origin=a b", 1)],
        ),
        (
            "semicolons between parameters".into(),
            vec![good_auth.replace("\",", "\";")],
        ),
        (
            "tab inside a quoted value".into(),
            vec![good_auth.replacen(
                &format!("origin=\"{name}\""),
                &format!("origin=\"{name}\t\""),
                1,
            )],
        ),
        (
            "duplicate origin (same value)".into(),
            vec![format!("{good_auth},origin=\"{name}\"")],
        ),
        (
            "duplicate origin (other case)".into(),
            vec![format!("{good_auth},Origin=\"{name}\"")],
        ),
        (
            "duplicate key".into(),
            vec![format!("{good_auth},key=\"{kid}\"")],
        ),
        (
            "duplicate sig".into(),
            vec![format!("{good_auth},sig=\"{sig}\"")],
        ),
        (
            "duplicate destination".into(),
            vec![format!("{good_auth},destination=\"{US}\"")],
        ),
        (
            "missing origin".into(),
            vec![format!(
                "X-Matrix destination=\"{US}\",key=\"{kid}\",sig=\"{sig}\""
            )],
        ),
        (
            "missing key".into(),
            vec![format!(
                "X-Matrix origin=\"{name}\",destination=\"{US}\",sig=\"{sig}\""
            )],
        ),
        (
            "missing sig".into(),
            vec![format!(
                "X-Matrix origin=\"{name}\",destination=\"{US}\",key=\"{kid}\""
            )],
        ),
        (
            "header over 4096 bytes".into(),
            vec![format!("{good_auth},junk=\"{}\"", "j".repeat(5000))],
        ),
    ];
    for bad_origin in [
        "",
        "a b",
        "host:99999",
        "host:",
        "[::1",
        "host/path",
        "user@host",
        ":8448",
        "[::1]x",
    ] {
        xm.push((
            format!("origin {bad_origin:?} (bad server name grammar)"),
            vec![params(bad_origin, US, &kid, &sig)],
        ));
    }
    for bad_key in ["ed25519", ":abc", "ed25519:", "ed25519:a-b", "ed/25519:a"] {
        xm.push((
            format!("key {bad_key:?} (bad key ID grammar)"),
            vec![params(&name, US, bad_key, &sig)],
        ));
    }
    xm.push((
        "destination \"dest!\" (bad grammar)".into(),
        vec![params(&name, "dest!", &kid, &sig)],
    ));
    xm.push((
        "wrong destination (signed for it)".into(),
        vec![x_matrix_for_text(
            o,
            "PUT",
            &path,
            "elsewhere.test",
            Some(&body_text),
        )],
    ));
    xm.push((
        "header names another destination than the one signed".into(),
        vec![params(&name, "elsewhere.test", &kid, &sig)],
    ));
    let other_key = new_key("nope");
    xm.push((
        "unknown key ID (signed with another key)".into(),
        vec![o.sign_request_with(&other_key, "PUT", &path, US, Some(&body))],
    ));
    xm.push((
        "known key ID, signature made with another key".into(),
        vec![params(
            &name,
            US,
            &kid,
            &sig_of(&o.sign_request_with(&new_key(&kid[8..]), "PUT", &path, US, Some(&body))),
        )],
    ));
    xm.push((
        "unsupported key algorithm".into(),
        vec![params(&name, US, "rsa:k1", &sig)],
    ));
    for (what, bad_sig) in [
        ("'!!!!'", "!!!!".to_owned()),
        ("empty", String::new()),
        ("one character", "A".to_owned()),
        ("86 x 'A' (decodes, wrong)", "A".repeat(86)),
        ("too short (63 bytes)", sig[..84].to_owned()),
        ("too long (66 bytes)", format!("{sig}AAA")),
        (
            "a '-' (URL-safe alphabet) as first character",
            format!("-{}", &sig[1..]),
        ),
        (
            "with a space inside",
            format!("{} {}", &sig[..40], &sig[40..]),
        ),
    ] {
        xm.push((
            format!("bad base64 signature: {what}"),
            vec![params(&name, US, &kid, &bad_sig)],
        ));
    }
    for (what, method, uri, content) in [
        (
            "another method (POST)",
            "POST",
            path.clone(),
            Some(body_text.clone()),
        ),
        (
            "another method (GET)",
            "GET",
            path.clone(),
            Some(body_text.clone()),
        ),
        (
            "another URI (v1 path)",
            "PUT",
            path.replacen("/v2/", "/v1/", 1),
            Some(body_text.clone()),
        ),
        (
            "another URI (with a query)",
            "PUT",
            format!("{path}?x=1"),
            Some(body_text.clone()),
        ),
        (
            "another URI (the room ID's '!' not escaped)",
            "PUT",
            path.replacen("%21", "!", 1),
            Some(body_text.clone()),
        ),
        (
            "another body",
            "PUT",
            path.clone(),
            Some("{\"x\":1}".to_owned()),
        ),
        ("no body", "PUT", path.clone(), None),
        (
            "another URI (/)",
            "PUT",
            "/".to_owned(),
            Some(body_text.clone()),
        ),
    ] {
        xm.push((
            format!("signature over {what}"),
            vec![x_matrix_for_text(o, method, &uri, US, content.as_deref())],
        ));
    }
    let other_origin =
        good_auth.replacen(&format!("origin=\"{name}\""), "origin=\"other.test\"", 1);
    xm.push((
        "two origins (good header + another origin)".into(),
        vec![good_auth.clone(), other_origin.clone()],
    ));
    xm.push((
        "two origins (other first)".into(),
        vec![other_origin, good_auth.clone()],
    ));
    xm.push((
        "a bad signature with a known key beside a good one".into(),
        vec![params(&name, US, &kid, &"B".repeat(86)), good_auth.clone()],
    ));
    xm.push((
        "lower-case scheme, bad signature".into(),
        vec![params(&name, US, &kid, &"C".repeat(86)).replacen("X-Matrix", "x-matrix", 1)],
    ));
    xm.push((
        "origin with a closed port (keys not fetchable)".into(),
        vec![x_matrix_for_text_as(o, "127.0.0.1:1", &path, &body_text)],
    ));
    xm.push((
        "origin in a blocked IP range (keys not fetchable)".into(),
        vec![x_matrix_for_text_as(
            o,
            "10.255.255.1:8448",
            &path,
            &body_text,
        )],
    ));
    for (name, auth) in xm {
        c.put(
            "x-matrix",
            name,
            &path,
            auth,
            body_bytes.clone(),
            UNAUTHORIZED,
        );
    }

    // -----------------------------------------------------------------------------------------
    // 10. Unknown endpoints (404) and wrong methods (405), through ureq.
    let v1_same = path.replacen("/v2/", "/v1/", 1);
    for p in [
        "/".to_owned(),
        "/_matrix".to_owned(),
        "/_matrix/federation/v2/invite".to_owned(),
        "/_matrix/federation/v2/invite/".to_owned(),
        format!("/_matrix/federation/v2/invite/{}", enc(&room_id)),
        format!("/_matrix/federation/v2/invite/{}/", enc(&room_id)),
        format!("{path}/"),
        format!("{path}/extra"),
        format!("/_matrix/federation/v2/invite//{}", enc(&event_id)),
        path.replacen("/v2/", "/v3/", 1),
        path.replacen("/v2/", "/V2/", 1),
        path.replacen("/invite/", "/Invite/", 1),
        path.replacen("/_matrix/", "/_matrix//", 1),
        format!(
            "/_matrix/federation/v2/invite/../../../key/v2/server/{}",
            enc(&event_id)
        ),
        path.replacen("/_matrix/", "/_MATRIX/", 1),
        "/_matrix/key/v2/query".to_owned(),
        "/_matrix/key/v2/server/".to_owned(),
        "/.well-known/matrix/server".to_owned(),
    ] {
        // Raw, so that no client normalises the path.
        let bytes = request_bytes("PUT", &p, &[], Some(body_text.as_bytes()));
        c.add(
            "paths",
            format!("PUT {}", short(&p)),
            Req::Raw(bytes),
            NOT_FOUND,
        );
    }
    // Transactions exist (rescinds arrive there); unsigned, they are refused like invites.
    c.add(
        "paths",
        "PUT /_matrix/federation/v1/send/txn1 (unsigned)".to_owned(),
        Req::Raw(request_bytes(
            "PUT",
            "/_matrix/federation/v1/send/txn1",
            &[],
            Some(body_text.as_bytes()),
        )),
        UNAUTHORIZED,
    );
    for (method, p) in [
        ("GET", path.clone()),
        ("DELETE", path.clone()),
        ("POST", path.clone()),
        ("GET", v1_same.clone()),
        ("DELETE", v1_same.clone()),
        ("POST", v1_same),
        ("PUT", "/_matrix/key/v2/server".to_owned()),
        ("POST", "/_matrix/federation/v1/version".to_owned()),
        ("DELETE", "/_matrix/key/v2/server/ed25519:a".to_owned()),
    ] {
        let auth = x_matrix_for_text(
            o,
            method,
            &p,
            US,
            (method != "GET" && method != "DELETE").then_some(body_text.as_str()),
        );
        let body = (method != "GET" && method != "DELETE").then(|| body_bytes.clone());
        c.add(
            "methods",
            format!("{method} {}", short(&p)),
            Req::Ureq {
                method,
                path: p,
                auth: vec![auth],
                body,
            },
            NO_METHOD,
        );
    }

    c.cases.extend(raw_cases(
        o, &path, &body, &body_text, &good_auth, &event_id,
    ));
    c.cases
}

/// X-Matrix as another origin name, signed with our origin's key (so the keys for that name
/// must be fetched, which fails).
fn x_matrix_for_text_as(o: &TestOrigin, origin: &str, path: &str, body_text: &str) -> String {
    let real = x_matrix_for_text(o, "PUT", path, US, Some(body_text));
    real.replacen(
        &format!("origin=\"{}\"", o.name()),
        &format!("origin=\"{origin}\""),
        1,
    )
}

fn short(s: &str) -> String {
    if s.len() > 60 {
        format!("{}…", &s[..57])
    } else {
        s.to_owned()
    }
}

/// Request-level cases, byte for byte over raw TCP.
fn raw_cases(
    o: &TestOrigin,
    path: &str,
    body: &J,
    body_text: &str,
    good_auth: &str,
    event_id: &str,
) -> Vec<Case> {
    let mut out = Vec::new();
    let mut add = |group: &'static str, name: String, req: Req, want: (u16, &'static str)| {
        out.push(Case {
            group,
            name,
            req,
            status: want.0,
            errcode: want.1,
        })
    };
    let b = body_text.as_bytes();
    let valid = |extra: &[(&str, &[u8])]| {
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("Authorization", good_auth.as_bytes()),
            ("Content-Type", b"application/json"),
        ];
        headers.extend_from_slice(extra);
        request_bytes("PUT", path, &headers, Some(b))
    };
    // A valid request with its head edited: replace the first `from` by `to`.
    let edited = |from: &[u8], to: &[u8]| {
        let mut r = valid(&[("X-Junk", &b"junk"[..])]);
        let at = r
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern");
        r.splice(at..at + from.len(), to.iter().copied());
        r
    };

    // --- Header junk (the edge: 400/431/411/505).
    let head_cases: Vec<(&str, Vec<u8>, (u16, &'static str))> = vec![
        (
            "NUL byte in a header value",
            edited(b"X-Junk: junk", b"X-Junk: ju\0nk"),
            EDGE_400,
        ),
        (
            "NUL byte in the Authorization value",
            edited(b"Authorization: X-Matrix", b"Authorization: X-Ma\0trix"),
            EDGE_400,
        ),
        (
            "NUL byte in a header name",
            edited(b"X-Junk:", b"X-J\0unk:"),
            EDGE_400,
        ),
        (
            "NUL byte in the method",
            edited(b"PUT ", b"P\0UT "),
            EDGE_400,
        ),
        (
            "NUL byte in the path",
            edited(b"/_matrix/federation", b"/_matrix/fed\0eration"),
            EDGE_400,
        ),
        (
            "UTF-8 letter in a header name",
            edited(b"X-Junk:", "X-Jünk:".as_bytes()),
            EDGE_400,
        ),
        (
            "0xFF byte in a header name",
            edited(b"X-Junk:", b"X-J\xFFunk:"),
            EDGE_400,
        ),
        (
            "header line without a colon",
            edited(b"X-Junk: junk", b"X-Junk junk"),
            EDGE_400,
        ),
        (
            "space before the colon",
            edited(b"X-Junk:", b"X-Junk :"),
            EDGE_400,
        ),
        ("empty header name", edited(b"X-Junk:", b":"), EDGE_400),
        (
            "space inside a header name",
            edited(b"X-Junk:", b"X Junk:"),
            EDGE_400,
        ),
        (
            "obsolete line folding",
            edited(b"X-Junk: junk", b"X-Junk: ju\r\n nk"),
            EDGE_400,
        ),
        (
            "control byte 0x01 in a header value",
            edited(b"X-Junk: junk", b"X-Junk: ju\x01nk"),
            EDGE_400,
        ),
        (
            "DEL byte in a header value",
            edited(b"X-Junk: junk", b"X-Junk: ju\x7Fnk"),
            EDGE_400,
        ),
        (
            "bare LF after a header",
            edited(b"X-Junk: junk\r\n", b"X-Junk: junk\n"),
            EDGE_400,
        ),
        (
            "bare CR inside a header value",
            edited(b"X-Junk: junk", b"X-Junk: ju\rnk"),
            EDGE_400,
        ),
        (
            "Content-Length not a number",
            edited(b"X-Junk: junk", b"Content-Length: abc"),
            EDGE_400,
        ),
        (
            "second, different Content-Length",
            edited(b"X-Junk: junk", b"Content-Length: 5"),
            EDGE_400,
        ),
        (
            "Content-Length list",
            edited(
                format!("Content-Length: {}", b.len()).as_bytes(),
                format!("Content-Length: {0}, {0}", b.len()).as_bytes(),
            ),
            EDGE_400,
        ),
        (
            "negative Content-Length",
            edited(
                format!("Content-Length: {}", b.len()).as_bytes(),
                b"Content-Length: -1",
            ),
            EDGE_400,
        ),
        (
            "second Host header",
            edited(b"X-Junk: junk", b"Host: other.test"),
            EDGE_400,
        ),
        (
            "Transfer-Encoding: chunked",
            edited(b"X-Junk: junk", b"Transfer-Encoding: chunked"),
            EDGE_411,
        ),
        (
            "HTTP/2.0 request line",
            edited(b"HTTP/1.1\r\n", b"HTTP/2.0\r\n"),
            EDGE_505,
        ),
        (
            "HTTP/1.2 request line",
            edited(b"HTTP/1.1\r\n", b"HTTP/1.2\r\n"),
            EDGE_505,
        ),
        (
            "garbled version",
            edited(b"HTTP/1.1\r\n", b"HTTX/1.1\r\n"),
            EDGE_400,
        ),
        (
            "request line without a version",
            edited(b" HTTP/1.1\r\n", b"\r\n"),
            EDGE_400,
        ),
        (
            "two spaces in the request line",
            edited(b"PUT ", b"PUT  "),
            EDGE_400,
        ),
        ("lower-case method", edited(b"PUT ", b"put "), NO_METHOD),
        (
            "a 17 KiB header",
            edited(
                b"X-Junk: junk",
                format!("X-Junk: {}", "j".repeat(17 * 1024)).as_bytes(),
            ),
            EDGE_431,
        ),
        (
            "a 64 KiB header",
            edited(
                b"X-Junk: junk",
                format!("X-Junk: {}", "j".repeat(64 * 1024)).as_bytes(),
            ),
            EDGE_431,
        ),
    ];
    for (name, bytes, want) in head_cases {
        add("headers", name.to_owned(), Req::Raw(bytes), want);
    }
    for count in [65, 100, 1000] {
        let names: Vec<String> = (0..count).map(|i| format!("X-H{i}")).collect();
        let extra: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"v"[..])).collect();
        add(
            "headers",
            format!("{count} extra headers"),
            Req::Raw(valid(&extra)),
            EDGE_431,
        );
    }
    // Non-ASCII in the Authorization value passes the edge (obs-text) and fails X-Matrix.
    add(
        "headers",
        "0xFF bytes in the Authorization value".into(),
        Req::Raw(edited(
            b"Authorization: X-Matrix",
            b"Authorization: X-Matrix \xFF\xFE,",
        )),
        UNAUTHORIZED,
    );
    let utf8_origin =
        good_auth.replacen(&format!("origin=\"{}\"", o.name()), "origin=\"é.test\"", 1);
    add(
        "headers",
        "UTF-8 server name in the Authorization value".into(),
        Req::Raw(edited(good_auth.as_bytes(), utf8_origin.as_bytes())),
        UNAUTHORIZED,
    );

    // --- Body sizes at the edge (default max_body_bytes = 1 MiB).
    let big_head = |len: usize| {
        format!(
            "PUT {path} HTTP/1.1\r\nHost: {US}\r\nAuthorization: {good_auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
    };
    let mut ten_mb = big_head(10 * 1024 * 1024);
    ten_mb.extend(std::iter::repeat_n(b' ', 10 * 1024 * 1024));
    add("size", "10 MB body".into(), Req::Raw(ten_mb), TOO_LARGE);
    add(
        "size",
        "Content-Length 10 MB, no body sent".into(),
        Req::Raw(big_head(10 * 1024 * 1024)),
        TOO_LARGE,
    );
    let mut over = big_head(1024 * 1024 + 1);
    over.extend(std::iter::repeat_n(b'x', 1024 * 1024 + 1));
    add(
        "size",
        "body one byte over 1 MiB".into(),
        Req::Raw(over),
        TOO_LARGE,
    );
    add(
        "size",
        "Content-Length 2^63".into(),
        Req::Raw(replace_content_length(big_head(0), "9223372036854775808")),
        TOO_LARGE,
    );
    let mut exact = big_head(1024 * 1024);
    exact.extend(std::iter::repeat_n(b'x', 1024 * 1024));
    add(
        "size",
        "body of exactly 1 MiB of 'x' (read, over the invite limit)".into(),
        Req::Raw(exact),
        TOO_LARGE,
    );
    let mut within = big_head(384 * 1024);
    within.extend(std::iter::repeat_n(b'x', 384 * 1024));
    add(
        "size",
        "body of exactly 384 KiB of 'x' (the invite limit; read, not JSON)".into(),
        Req::Raw(within),
        NOT_JSON,
    );

    // --- Bad percent-encoding in the path (before anything else: M_INVALID_PARAM).
    let (room_seg, event_seg) = {
        let rest = path.strip_prefix("/_matrix/federation/v2/invite/").unwrap();
        let (r, e) = rest.split_once('/').unwrap();
        (r.to_owned(), e.to_owned())
    };
    let signed_put = |target: &str| {
        let auth = x_matrix(o, "PUT", target, Some(body));
        request_bytes(
            "PUT",
            target,
            &[
                ("Authorization", auth.as_bytes()),
                ("Content-Type", b"application/json"),
            ],
            Some(b),
        )
    };
    for bad in [
        "%zz",
        "%2",
        "%",
        "%g1",
        "%ff",
        "%C3%28",
        "%E2%82",
        "%ED%A0%80",
        "%C0%AF",
        "%F8%88%80%80%80",
    ] {
        let target = format!("/_matrix/federation/v2/invite/{room_seg}{bad}/{event_seg}");
        add(
            "path-encoding",
            format!("room segment ends in {bad}"),
            Req::Raw(signed_put(&target)),
            INVALID,
        );
    }
    for bad in ["%zz", "%2", "%", "%ff", "%80"] {
        let target = format!("/_matrix/federation/v2/invite/{room_seg}/{event_seg}{bad}");
        add(
            "path-encoding",
            format!("event segment ends in {bad}"),
            Req::Raw(signed_put(&target)),
            INVALID,
        );
    }
    // Well-formed escapes of the wrong thing: the path disagrees with the event (step 5).
    for (what, target) in [
        (
            "%00 as the room",
            format!("/_matrix/federation/v2/invite/%00/{event_seg}"),
        ),
        (
            "a raw UTF-8 'é' in the room segment",
            format!("/_matrix/federation/v2/invite/{room_seg}é/{event_seg}"),
        ),
        (
            "the event ID double-escaped",
            format!(
                "/_matrix/federation/v2/invite/{room_seg}/{}",
                enc(&enc(event_id))
            ),
        ),
    ] {
        add(
            "path-encoding",
            what.to_owned(),
            Req::Raw(signed_put(&target)),
            INVALID,
        );
    }
    add(
        "path-encoding",
        "a raw 0xFF byte in the path".into(),
        Req::Raw(edited(b"/_matrix/federation", b"/_matrix/fed\xFFeration")),
        EDGE_400,
    );

    // --- Absurd path lengths (limit 8 KiB → 414).
    for len in [8193, 9000, 16 * 1024, 64 * 1024, 1024 * 1024] {
        let target = format!("{path}{}", "a".repeat(len - path.len()));
        assert_eq!(target.len(), len);
        add(
            "path-length",
            format!("target of {len} bytes"),
            Req::Raw(request_bytes("PUT", &target, &[], Some(b))),
            EDGE_414,
        );
    }
    let query = format!("{path}?q={}", "q".repeat(9000));
    add(
        "path-length",
        "query string over 8 KiB".into(),
        Req::Raw(request_bytes("PUT", &query, &[], Some(b))),
        EDGE_414,
    );
    // Exactly at the limit the request is served: an invite path with a long event segment,
    // unauthenticated → 401; an unknown path → 404.
    let at_limit = format!("{path}{}", "e".repeat(8192 - path.len()));
    assert_eq!(at_limit.len(), 8192);
    add(
        "path-length",
        "invite target of exactly 8192 bytes, no Authorization".into(),
        Req::Raw(request_bytes("PUT", &at_limit, &[], Some(b))),
        UNAUTHORIZED,
    );
    let unknown = format!("/{}", "u".repeat(8191));
    add(
        "path-length",
        "unknown target of exactly 8192 bytes".into(),
        Req::Raw(request_bytes("PUT", &unknown, &[], Some(b))),
        NOT_FOUND,
    );

    // --- Methods ureq does not send plainly (405), and HEAD (405, no content).
    for method in ["PATCH", "OPTIONS", "TRACE", "CONNECT", "FOO"] {
        add(
            "methods",
            format!("{method} on the invite path"),
            Req::Raw(request_bytes(method, path, &[], Some(b))),
            NO_METHOD,
        );
    }
    add(
        "methods",
        "HEAD on the invite path".into(),
        Req::Head(request_bytes("HEAD", path, &[], None)),
        NO_METHOD,
    );
    // --- Odd targets.
    add(
        "paths",
        "asterisk-form target".into(),
        Req::Raw(request_bytes("PUT", "*", &[], Some(b))),
        NOT_FOUND,
    );
    let absolute = format!("http://{US}{path}");
    add(
        "paths",
        "absolute-form target".into(),
        Req::Raw(request_bytes("PUT", &absolute, &[], Some(b))),
        NOT_FOUND,
    );
    out
}

/// A request head with its `Content-Length` value replaced.
fn replace_content_length(head: Vec<u8>, value: &str) -> Vec<u8> {
    let text = String::from_utf8(head).unwrap();
    let start = text.find("Content-Length: ").unwrap() + "Content-Length: ".len();
    let end = start + text[start..].find("\r\n").unwrap();
    format!("{}{value}{}", &text[..start], &text[end..]).into_bytes()
}

/// Sends one case and returns what came back (or why nothing usable did).
fn send(invited: &Invited, req: &Req) -> Result<Got, String> {
    match req {
        Req::Ureq {
            method,
            path,
            auth,
            body,
        } => {
            let agent = agent(None);
            let url = invited.url(path);
            let mut builder = ureq::http::Request::builder().method(*method).uri(&url);
            for a in auth {
                builder = builder.header("Authorization", a.as_str());
            }
            if body.is_some() {
                builder = builder.header("Content-Type", "application/json");
            }
            let result = match body {
                Some(b) => agent.run(builder.body(b.clone()).map_err(|e| e.to_string())?),
                None => agent.run(builder.body(()).map_err(|e| e.to_string())?),
            };
            let mut resp = result.map_err(|e| format!("ureq: {e}"))?;
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp
                .body_mut()
                .with_config()
                .limit(64 * 1024 * 1024)
                .read_to_vec()
                .map_err(|e| format!("reading the body: {e}"))?;
            Ok(Got {
                status: resp.status().as_u16(),
                content_type,
                body,
                trailing: Vec::new(),
            })
        }
        Req::Raw(bytes) => {
            let reply = exchange(
                invited.addr,
                bytes.clone(),
                Duration::from_secs(15),
                Duration::from_millis(0),
            )?;
            Ok(Got {
                status: reply.status,
                content_type: reply.header("content-type").map(str::to_owned),
                body: reply.body,
                trailing: reply.trailing,
            })
        }
        Req::Head(bytes) => {
            // The response to HEAD ends with its head: read to the close, split there.
            let raw = raw_exchange(invited.addr, bytes, Duration::from_secs(5));
            let end = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .ok_or_else(|| format!("no response head: {:?}", String::from_utf8_lossy(&raw)))?;
            let status = status_of(&raw).ok_or("no status line")?;
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let content_type = head.split("\r\n").find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                    .map(|(_, v)| v.trim().to_owned())
            });
            Ok(Got {
                status,
                content_type,
                body: Vec::new(),
                trailing: raw[end + 4..].to_vec(),
            })
        }
    }
}

/// Everything wrong with one answer (empty: as documented).
fn problems(case: &Case, got: &Got) -> Vec<String> {
    let mut p = Vec::new();
    // No 5xx, but for the documented 505 of an unsupported HTTP version.
    if got.status >= 500 && got.status != case.status {
        p.push(format!("a server error ({})", got.status));
    }
    if got.status != case.status {
        p.push(format!("status {} (want {})", got.status, case.status));
    }
    if got.content_type.as_deref() != Some("application/json") {
        p.push(format!("Content-Type {:?}", got.content_type));
    }
    if !got.trailing.is_empty() {
        p.push(format!(
            "{} bytes after the response: {:?}",
            got.trailing.len(),
            String::from_utf8_lossy(&got.trailing[..got.trailing.len().min(200)])
        ));
    }
    if let Req::Head(_) = case.req {
        return p;
    }
    match serde_json::from_slice::<J>(&got.body) {
        Ok(v) => {
            let errcode = v["errcode"].as_str();
            if !errcode.is_some_and(|e| e.starts_with("M_")) {
                p.push("no M_ errcode".to_owned());
            } else if errcode != Some(case.errcode) {
                p.push(format!(
                    "errcode {} (want {})",
                    errcode.unwrap(),
                    case.errcode
                ));
            }
            if v["error"].as_str().is_none_or(str::is_empty) {
                p.push("no error message".to_owned());
            }
        }
        Err(e) => p.push(format!(
            "body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&got.body[..got.body.len().min(200)])
        )),
    }
    p
}

/// The bytes a case sends, abbreviated for a report.
fn describe(req: &Req) -> String {
    let esc = |b: &[u8]| {
        let s: String = b
            .iter()
            .take(300)
            .flat_map(|&c| std::ascii::escape_default(c))
            .map(char::from)
            .collect();
        if b.len() > 300 {
            format!("{s}… ({} bytes)", b.len())
        } else {
            s
        }
    };
    match req {
        Req::Ureq {
            method,
            path,
            auth,
            body,
        } => format!(
            "{method} {} auth={:?} body={}",
            short(path),
            auth.iter().map(|a| short(a)).collect::<Vec<_>>(),
            body.as_deref().map_or("none".to_owned(), esc)
        ),
        Req::Raw(b) | Req::Head(b) => esc(b),
    }
}

/// Runs `cases` one by one; returns (summary per group, failures).
fn run(
    invited: &mut Invited,
    cases: &[Case],
) -> (BTreeMap<&'static str, (usize, usize)>, Vec<String>) {
    let mut summary: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let t = Instant::now();
        let result = send(invited, &case.req);
        let took = t.elapsed();
        let mut p = match &result {
            Ok(got) => problems(case, got),
            Err(e) => vec![format!("no usable response: {e}")],
        };
        if !invited.alive() {
            p.push("THE SERVER DIED".to_owned());
        }
        if took > Duration::from_secs(5) {
            p.push(format!("took {took:?}"));
        }
        let entry = summary.entry(case.group).or_default();
        entry.0 += 1;
        if p.is_empty() {
            entry.1 += 1;
        } else {
            let got = match &result {
                Ok(g) => format!(
                    "{} {}",
                    g.status,
                    String::from_utf8_lossy(&g.body[..g.body.len().min(300)])
                ),
                Err(e) => e.clone(),
            };
            failures.push(format!(
                "#{i} [{}] {}: {}\n    sent: {}\n    want: {} {}\n    got:  {got}",
                case.group,
                case.name,
                p.join("; "),
                describe(&case.req),
                case.status,
                case.errcode
            ));
        }
        assert!(
            invited.alive(),
            "the server died on case #{i} {}; log:\n{}",
            case.name,
            invited.log()
        );
    }
    (summary, failures)
}

/// PUTs a valid invite (signed by ruma) and returns the status and body.
fn put_valid(invited: &Invited, o: &TestOrigin, who: &str) -> (u16, String) {
    let Invite { path, body, .. } = valid_invite(o, "12", who);
    let auth = o.sign_request("PUT", &path, US, Some(&body));
    let answer = put_raw(
        invited,
        &path,
        &serde_json::to_vec(&body).unwrap(),
        Some(&auth),
    );
    (answer.status, answer.text)
}

#[test]
fn malformed_requests_get_documented_4xx() {
    let started = Instant::now();
    let mut h = Harness::start("");
    let origin = &h.origin;

    // Warm up: the origin's keys are fetched, the pools are started.
    for i in 0..3 {
        let (status, text) = put_valid(&h.invited, origin, &format!("@warm{i}:{US}"));
        assert_eq!(status, 200, "{text}");
    }
    let rss_before = h.invited.rss_kib();

    let cases = corpus(origin);
    let n = cases.len();
    assert!(n >= 200, "only {n} cases");
    let (summary, mut failures) = run(&mut h.invited, &cases);

    // Afterwards: a valid invite is still answered, and memory has not grown much.
    let (status, text) = put_valid(&h.invited, origin, &format!("@after:{US}"));
    if status != 200 {
        failures.push(format!("a valid invite after the corpus: {status} {text}"));
    }
    let rss_after = h.invited.rss_kib();
    let growth = rss_after.saturating_sub(rss_before);

    // A second server for the case that needs other limits: max_body_bytes = 4096, and a
    // valid signed invite larger than that.
    let dir2 = tempfile::tempdir().unwrap();
    let mut small = start_invited(dir2.path(), &h.ca, "[http]\nmax_body_bytes = 4096\n");
    let Invite { path, mut body, .. } = valid_invite(origin, "12", &bob());
    body["event"]["content"]["reason"] = json!("r".repeat(5000));
    let small_cases = vec![
        Case {
            group: "size",
            name: "signed invite over max_body_bytes = 4096".into(),
            req: Req::Ureq {
                method: "PUT",
                path: path.clone(),
                auth: vec![x_matrix(origin, "PUT", &path, Some(&body))],
                body: Some(canonical(&body).into_bytes()),
            },
            status: 413,
            errcode: "M_TOO_LARGE",
        },
        Case {
            group: "size",
            name: "Content-Length 4097 on a 4096-byte limit".into(),
            req: Req::Raw(request_bytes("PUT", &path, &[], Some(&[b' '; 4097]))),
            status: 413,
            errcode: "M_TOO_LARGE",
        },
    ];
    let (summary2, failures2) = run(&mut small, &small_cases);
    failures.extend(failures2);

    let mut total = (0, 0);
    eprintln!("malformed corpus: {} cases", n + small_cases.len());
    eprintln!("  {:<14} {:>6} {:>6}", "group", "cases", "ok");
    let mut merged = summary;
    for (g, (a, b)) in summary2 {
        let e = merged.entry(g).or_default();
        e.0 += a;
        e.1 += b;
    }
    for (group, (count, ok)) in &merged {
        eprintln!("  {group:<14} {count:>6} {ok:>6}");
        total.0 += count;
        total.1 += ok;
    }
    eprintln!("  {:<14} {:>6} {:>6}", "total", total.0, total.1);
    eprintln!(
        "RSS {rss_before} KiB before, {rss_after} KiB after (+{growth} KiB); {:?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases not answered as documented:\n{}",
        failures.len(),
        total.0,
        failures.join("\n")
    );
    assert!(
        growth < 16 * 1024,
        "RSS grew by {growth} KiB over the corpus ({rss_before} → {rss_after})"
    );
    assert!(h.invited.alive() && small.alive());
}
