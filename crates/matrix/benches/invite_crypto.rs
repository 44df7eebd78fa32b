//! What one invite costs us in CPU: a realistic room version 12 `m.room.member` invite, as
//! `PUT /_matrix/federation/v2/invite` delivers it, through each step of the rules.
//!
//! Run with `cargo bench -p invited-matrix`. Plain `Instant` loops: each row is calibrated to
//! run about 0.4 s and reports the best of 3 rounds, in ns per operation and operations per
//! second (on one core).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::hint::black_box;
use std::time::{Duration, Instant};

use invited_matrix::json::{self, Value};
use invited_matrix::{
    KeyId, Object, RoomVersion, ServerName, SigningKey, VerifyKey, add_content_hash, base64,
    check_content_hash, content_hash, event_id, sign_event, sign_json, verify_event_signatures,
    verify_json,
};

const SENDER: &str = "sender.example";
const US: &str = "invited.example";

fn key(seed_byte: u8, version: &str) -> SigningKey {
    SigningKey::from_seed(KeyId::ed25519(version).unwrap(), &[seed_byte; 32])
}

fn id(n: u8) -> String {
    format!("${}", base64::encode_url_safe(&[n; 32]))
}

/// The invite event as the inviting server sends it: hashed and signed by the sender.
fn invite_event(sender_key: &SigningKey, v: &RoomVersion) -> Object {
    let text = format!(
        r#"{{
        "type": "m.room.member",
        "room_id": "!{room}",
        "sender": "@alice:{SENDER}",
        "state_key": "@bob:{US}",
        "content": {{
            "membership": "invite",
            "displayname": "Bob Example",
            "avatar_url": "mxc://{US}/AbCdEfGhIjKlMnOpQrStUvWx",
            "is_direct": true
        }},
        "auth_events": ["{a1}", "{a2}", "{a3}", "{a4}"],
        "prev_events": ["{p1}", "{p2}", "{p3}"],
        "depth": 1342,
        "origin_server_ts": 1767225600000,
        "unsigned": {{"age": 12}}
    }}"#,
        room = &id(1)[1..],
        a1 = id(2),
        a2 = id(3),
        a3 = id(4),
        a4 = id(5),
        p1 = id(6),
        p2 = id(7),
        p3 = id(8),
    );
    let mut e = json::parse(&text).unwrap().as_object().unwrap().clone();
    add_content_hash(&mut e);
    sign_event(&mut e, v, &ServerName::parse(SENDER).unwrap(), sender_key).unwrap();
    e
}

/// The X-Matrix request object the sender signs: method, URI, origin, destination and the
/// whole body (the event, the room version and stripped invite state).
fn request_object(event: &Object, sender_key: &SigningKey) -> Object {
    let stripped = |ty: &str, content: &str| {
        json::parse(&format!(
            r#"{{"type":"{ty}","state_key":"","sender":"@alice:{SENDER}","content":{content}}}"#
        ))
        .unwrap()
    };
    let mut body = Object::new();
    body.insert("event".into(), Value::Object(event.clone()));
    body.insert("room_version".into(), Value::string("12"));
    body.insert(
        "invite_room_state".into(),
        Value::Array(vec![
            stripped(
                "m.room.create",
                r#"{"room_version":"12","additional_creators":[]}"#,
            ),
            stripped("m.room.name", r#"{"name":"Project room"}"#),
            stripped("m.room.join_rules", r#"{"join_rule":"invite"}"#),
            stripped(
                "m.room.encryption",
                r#"{"algorithm":"m.megolm.v1.aes-sha2"}"#,
            ),
        ]),
    );
    let mut req = Object::new();
    req.insert("method".into(), Value::string("PUT"));
    req.insert(
        "uri".into(),
        Value::string(format!(
            "/_matrix/federation/v2/invite/%21{}/%24{}",
            &id(1)[1..],
            &id(9)[1..]
        )),
    );
    req.insert("origin".into(), Value::string(SENDER));
    req.insert("destination".into(), Value::string(US));
    req.insert("content".into(), Value::Object(body));
    sign_json(&mut req, SENDER, sender_key).unwrap();
    req
}

/// Runs `f` in calibrated batches; returns the best ns/op of 3 rounds.
fn measure(mut f: impl FnMut()) -> f64 {
    let target = Duration::from_millis(130);
    let mut iters: u64 = 1;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        let el = t.elapsed();
        if el >= target / 4 {
            iters = (iters as f64 * target.as_secs_f64() / el.as_secs_f64()).ceil() as u64;
            break;
        }
        iters *= 2;
    }
    (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` there is none, so
    // only say how to run it.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("invite_crypto: run with `cargo bench -p invited-matrix` to measure");
        return;
    }

    let v = RoomVersion::by_id("12").unwrap();
    let sender_key = key(7, "a_1");
    let sender_vk: VerifyKey = sender_key.verify_key();
    let our_key = key(9, "auto");
    let us = ServerName::parse(US).unwrap();
    let keys = move |server: &str, k: &KeyId| {
        (server == SENDER && k.as_str() == "ed25519:a_1").then_some(sender_vk)
    };
    let sender_key_id = KeyId::ed25519("a_1").unwrap();

    let event = invite_event(&sender_key, v);
    let event_text = Value::Object(event.clone()).to_canonical_string();
    let request = request_object(&event, &sender_key);
    let request_text = Value::Object(request.clone()).to_canonical_string();

    // Sanity: everything verifies before we time it.
    verify_event_signatures(&event, v, &keys).unwrap();
    check_content_hash(&event).unwrap();
    verify_json(&request, SENDER, &sender_key_id, &sender_vk).unwrap();

    let floor = |event: &Object, request: &Object| {
        verify_json(request, SENDER, &sender_key_id, &sender_vk).unwrap();
        verify_event_signatures(event, v, &keys).unwrap();
        check_content_hash(event).unwrap();
        let id = event_id(event, v).unwrap();
        let mut signed = event.clone();
        sign_event(&mut signed, v, &us, &our_key).unwrap();
        (id, signed)
    };

    let mut rows: Vec<(&str, f64)> = Vec::new();
    rows.push((
        "parse event JSON",
        measure(|| {
            black_box(json::parse(black_box(&event_text)).unwrap());
        }),
    ));
    let event_value = Value::Object(event.clone());
    rows.push((
        "canonicalize event",
        measure(|| {
            black_box(black_box(&event_value).to_canonical_string());
        }),
    ));
    rows.push((
        "content hash",
        measure(|| {
            black_box(content_hash(black_box(&event)));
        }),
    ));
    rows.push((
        "reference hash / event ID",
        measure(|| {
            black_box(event_id(black_box(&event), v).unwrap());
        }),
    ));
    rows.push((
        "verify sender signature",
        measure(|| {
            verify_event_signatures(black_box(&event), v, &keys).unwrap();
        }),
    ));
    let mut cosigned = event.clone();
    rows.push((
        "co-sign (sign_event)",
        measure(|| {
            sign_event(black_box(&mut cosigned), v, &us, &our_key).unwrap();
        }),
    ));
    rows.push((
        "verify request JSON signature",
        measure(|| {
            verify_json(black_box(&request), SENDER, &sender_key_id, &sender_vk).unwrap();
        }),
    ));
    rows.push((
        "floor (req sig + event sig + hashes + co-sign)",
        measure(|| {
            black_box(floor(black_box(&event), black_box(&request)));
        }),
    ));
    rows.push((
        "floor + parse request body",
        measure(|| {
            let req = json::parse(black_box(&request_text)).unwrap();
            let req = req.as_object().unwrap();
            let ev = req["content"]["event"].as_object().unwrap();
            black_box(floor(ev, req));
        }),
    ));

    println!(
        "invite_crypto: room v12 invite event {} bytes, request body {} bytes",
        event_text.len(),
        request_text.len()
    );
    println!("{:<48} {:>12} {:>12}", "operation", "ns/op", "ops/s");
    println!("{}", "-".repeat(74));
    for (name, ns) in rows {
        println!("{name:<48} {ns:>12.0} {:>12.0}", 1e9 / ns);
    }
}
