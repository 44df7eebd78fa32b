//! Part A: the spec's own vectors
//! (<https://spec.matrix.org/v1.16/appendices/#cryptographic-test-vectors>); Part B: vectors
//! derived from the spec's key and algorithms.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use invited_matrix::{
    KeyId, Object, RoomVersion, ServerName, SigningKey, Value, base64, check_content_hash,
    content_hash, event_id, event_signing_bytes, json, reference_hash, room_id_from_create_event,
    sign_event, sign_json, signing_bytes, verify_event_signatures, verify_json,
};

const SEED_B64: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";

fn key() -> SigningKey {
    let seed: [u8; 32] = base64::decode(SEED_B64).unwrap().try_into().unwrap();
    SigningKey::from_seed(KeyId::parse("ed25519:1").unwrap(), &seed)
}

fn obj(text: &str) -> Object {
    json::parse(text).unwrap().as_object().unwrap().clone()
}

fn rv(id: &str) -> &'static RoomVersion {
    RoomVersion::by_id(id).unwrap()
}

fn domain() -> ServerName {
    ServerName::parse("domain").unwrap()
}

#[test]
fn b1_public_key_of_test_seed() {
    assert_eq!(
        key().verify_key().to_base64(),
        "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"
    );
    assert_eq!(
        base64::encode(&key().seed()),
        "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0"
    );
}

#[test]
fn a_json_signing_empty_object() {
    let mut o = Object::new();
    sign_json(&mut o, "domain", &key()).unwrap();
    assert_eq!(
        Value::Object(o.clone()).to_canonical_string(),
        r#"{"signatures":{"domain":{"ed25519:1":"K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}}"#
    );
    verify_json(&o, "domain", key().key_id(), &key().verify_key()).unwrap();
}

#[test]
fn a_json_signing_one_two() {
    let mut o = obj(r#"{"one": 1, "two": "Two"}"#);
    sign_json(&mut o, "domain", &key()).unwrap();
    assert_eq!(
        Value::Object(o.clone()).to_canonical_string(),
        r#"{"one":1,"signatures":{"domain":{"ed25519:1":"KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}},"two":"Two"}"#
    );
    verify_json(&o, "domain", key().key_id(), &key().verify_key()).unwrap();
}

const MINIMAL_EVENT: &str = r#"{
    "room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
    "origin_server_ts": 1000000, "signatures": {}, "hashes": {}, "type": "X",
    "content": {}, "prev_events": [], "auth_events": [], "depth": 3,
    "unsigned": {"age_ts": 1000000}
}"#;

/// The spec's "sign an event" procedure: content hash first, then the signature. The spec's
/// inputs carry empty `hashes`/`signatures`, which both steps leave out.
fn hash_and_sign(event: &mut Object, version: &RoomVersion) {
    event.remove("signatures");
    invited_matrix::add_content_hash(event);
    sign_event(event, version, &domain(), &key()).unwrap();
}

#[test]
fn a_event_signing_minimal() {
    let mut e = obj(MINIMAL_EVENT);
    hash_and_sign(&mut e, rv("1"));
    assert_eq!(
        Value::Object(e.clone()).to_canonical_string(),
        r#"{"auth_events":[],"content":{},"depth":3,"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},"origin":"domain","origin_server_ts":1000000,"prev_events":[],"room_id":"!x:domain","sender":"@a:domain","signatures":{"domain":{"ed25519:1":"KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"}},"type":"X","unsigned":{"age_ts":1000000}}"#
    );
    // The same signature for every room version with v1–v10 redaction rules.
    for v in ["2", "3", "4", "5", "6", "7", "8", "9", "10"] {
        let mut e2 = obj(MINIMAL_EVENT);
        hash_and_sign(&mut e2, rv(v));
        assert_eq!(e2, e, "room version {v}");
    }
    check_content_hash(&e).unwrap();
}

#[test]
fn a_event_signing_redactable_content() {
    let mut e = obj(
        r#"{"content": {"body": "Here is the message content"}, "event_id": "$0:domain",
        "origin": "domain", "origin_server_ts": 1000000, "type": "m.room.message",
        "room_id": "!r:domain", "sender": "@u:domain", "signatures": {},
        "unsigned": {"age_ts": 1000000}}"#,
    );
    hash_and_sign(&mut e, rv("1"));
    assert_eq!(
        Value::Object(e.clone()).to_canonical_string(),
        r#"{"content":{"body":"Here is the message content"},"event_id":"$0:domain","hashes":{"sha256":"onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},"origin":"domain","origin_server_ts":1000000,"room_id":"!r:domain","sender":"@u:domain","signatures":{"domain":{"ed25519:1":"Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"}},"type":"m.room.message","unsigned":{"age_ts":1000000}}"#
    );
    let vk = key().verify_key();
    let keys = |s: &str, k: &KeyId| (s == "domain" && k.as_str() == "ed25519:1").then_some(vk);
    verify_event_signatures(&e, rv("1"), &keys).unwrap();
}

#[test]
fn b2_signed_bytes_and_content_hash_input() {
    let mut e = obj(MINIMAL_EVENT);
    hash_and_sign(&mut e, rv("1"));
    assert_eq!(
        String::from_utf8(event_signing_bytes(&e, rv("1"))).unwrap(),
        r#"{"auth_events":[],"content":{},"depth":3,"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},"origin":"domain","origin_server_ts":1000000,"prev_events":[],"room_id":"!x:domain","sender":"@a:domain","type":"X"}"#
    );
    assert_eq!(
        base64::encode(&content_hash(&e)),
        "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
    );
}

#[test]
fn b3_reference_hash_and_event_ids() {
    let mut e = obj(MINIMAL_EVENT);
    hash_and_sign(&mut e, rv("1"));
    assert_eq!(
        base64::encode(&reference_hash(&e, rv("3"))),
        "8yif6p8EqgoSten2BLje9ntKm720NyFLWQv9tn8memc"
    );
    assert_eq!(
        event_id(&e, rv("3")).unwrap().as_str(),
        "$8yif6p8EqgoSten2BLje9ntKm720NyFLWQv9tn8memc"
    );
    assert_eq!(
        event_id(&e, rv("4")).unwrap().as_str(),
        "$8yif6p8EqgoSten2BLje9ntKm720NyFLWQv9tn8memc"
    );
    assert_eq!(
        base64::encode(&reference_hash(&e, rv("11"))),
        "70O/oKlXzFbkfu0KE88USi98DjSWrOELrPj+8tisl8I"
    );
    assert_eq!(
        event_id(&e, rv("11")).unwrap().as_str(),
        "$70O_oKlXzFbkfu0KE88USi98DjSWrOELrPj-8tisl8I"
    );
    assert_eq!(
        event_id(&e, rv("12")).unwrap().as_str(),
        "$70O_oKlXzFbkfu0KE88USi98DjSWrOELrPj-8tisl8I"
    );
    assert_eq!(
        room_id_from_create_event(&e, rv("12")).as_str(),
        "!70O_oKlXzFbkfu0KE88USi98DjSWrOELrPj-8tisl8I"
    );
}

#[test]
fn b4_minimal_event_v11_rules() {
    for v in ["11", "12"] {
        let mut e = obj(MINIMAL_EVENT);
        hash_and_sign(&mut e, rv(v));
        assert_eq!(
            e["hashes"].get("sha256").unwrap().as_str(),
            Some("5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos")
        );
        assert_eq!(
            e["signatures"]["domain"].get("ed25519:1").unwrap().as_str(),
            Some(
                "Jxp+1glFcZM+nnHpY0EkedRR7u0VmKsJYGnQqIvqus3UvL5X/p1y6wSkLhGoTBel6MZ9lrMIzUqrjqFquWJKBw"
            )
        );
        assert_eq!(
            String::from_utf8(event_signing_bytes(&e, rv(v))).unwrap(),
            r#"{"auth_events":[],"content":{},"depth":3,"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},"origin_server_ts":1000000,"prev_events":[],"room_id":"!x:domain","sender":"@a:domain","type":"X"}"#
        );
    }
}

#[test]
fn b5_x_matrix_request_signatures() {
    let mut get = obj(
        r#"{"destination":"remote.example","method":"GET","origin":"domain","uri":"/_matrix/federation/v1/version"}"#,
    );
    assert_eq!(
        String::from_utf8(signing_bytes(&get)).unwrap(),
        r#"{"destination":"remote.example","method":"GET","origin":"domain","uri":"/_matrix/federation/v1/version"}"#
    );
    sign_json(&mut get, "domain", &key()).unwrap();
    assert_eq!(
        get["signatures"]["domain"]
            .get("ed25519:1")
            .unwrap()
            .as_str(),
        Some(
            "wR1E4UZ3G3F2knf0x+RNgxQ2N/hCiZ/ZdOktAey0wSvTWc/nHH8YPJaOvRhipwX46AZPntLZhHd0DFjZ7H7iDQ"
        )
    );

    let mut put = Object::new();
    put.insert(
        "content".into(),
        json::parse(r#"{"room_version":"2","event":{"type":"m.room.member"}}"#).unwrap(),
    );
    put.insert("destination".into(), "remote.example".into());
    put.insert("method".into(), "PUT".into());
    put.insert("origin".into(), "domain".into());
    put.insert(
        "uri".into(),
        "/_matrix/federation/v2/invite/%21r%3Adomain/%24e%3Adomain".into(),
    );
    assert_eq!(
        String::from_utf8(signing_bytes(&put)).unwrap(),
        r#"{"content":{"event":{"type":"m.room.member"},"room_version":"2"},"destination":"remote.example","method":"PUT","origin":"domain","uri":"/_matrix/federation/v2/invite/%21r%3Adomain/%24e%3Adomain"}"#
    );
    sign_json(&mut put, "domain", &key()).unwrap();
    assert_eq!(
        put["signatures"]["domain"]
            .get("ed25519:1")
            .unwrap()
            .as_str(),
        Some(
            "dCW/uJezZl/obi8xMB8YWMNDDcIXijndpRXnm86CC30GANTuNnhjQtDlMPnrgN9ZaVDvRe76WZ/2j0v37L+5Aw"
        )
    );
}

#[test]
fn b6_key_server_response() {
    let mut o = obj(
        r#"{"old_verify_keys":{},"server_name":"domain","valid_until_ts":1700000000000,"verify_keys":{"ed25519:1":{"key":"XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"}}}"#,
    );
    sign_json(&mut o, "domain", &key()).unwrap();
    assert_eq!(
        o["signatures"]["domain"].get("ed25519:1").unwrap().as_str(),
        Some(
            "ewq/uPhfAzmWSa/3PRlr5Q0W59jG75Wtb6mzxIELuVRAxYMHOeMFue6fNXijZkIwLLembQ0+gl7DIkiUGcoUBg"
        )
    );
}

#[test]
fn b7_edge_cases() {
    // A strict decoder refuses the spec's seed; ours accepts it (checked in b1 too).
    assert_eq!(base64::decode(SEED_B64).map(|b| b.len()), Some(32));
    // `-0` is the integer 0; `1e10` is a float: strict mode refuses it.
    let v = json::parse(r#"{"a":-0,"b":1e10}"#).unwrap();
    assert_eq!(v.get("a").unwrap().to_canonical_string(), "0");
    assert!(invited_matrix::check_strict(&v).is_err());
    // Events without `origin` verify (v11+ never sign it anyway).
    let mut e = obj(MINIMAL_EVENT);
    e.remove("origin");
    hash_and_sign(&mut e, rv("12"));
    let vk = key().verify_key();
    let keys = |_: &str, _: &KeyId| Some(vk);
    verify_event_signatures(&e, rv("12"), &keys).unwrap();
    check_content_hash(&e).unwrap();
}
