//! Properties of the Matrix rules, checked with proptest:
//! * canonical JSON is a fixed point: canonicalize(parse(canonicalize(v))) == canonicalize(v),
//!   and parsing it back gives the same value (floats included: our repr round-trips);
//! * any text that parses canonicalizes to text that re-parses to the same canonical form;
//! * sign → verify round-trips for JSON objects and for events of every room version;
//! * flipping any byte of a signed object's canonical text breaks verification whenever the
//!   result still parses to something different;
//! * changing any field an event signature covers breaks verification; changing one it does
//!   not cover (a message's `content.body`) keeps the signature valid but breaks the content
//!   hash;
//! * identifier parsers never panic, and what they accept is self-consistent;
//! * the redacted canonical text written straight from an event (what signatures and event
//!   IDs cover) is the canonical text of `redact`'s copy, for every type and room version.
//!
//! Strict ed25519 verification costs ~10 ms in debug builds, so the crypto properties run
//! fewer cases than the pure ones.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use common::spec_key;
use invited_matrix::json::{self, Number};
use invited_matrix::{
    EventId, KeyId, Object, ROOM_VERSIONS, RoomId, RoomVersion, ServerName, UserId, Value,
    add_content_hash, base64, check_content_hash, sign_event, sign_json, signing_bytes,
    verify_event_signatures, verify_json,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Strategies

fn string_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,6}",
        // Words the parser keeps as shared static text (`json::Str`), and near misses: both
        // kinds must sort, compare and encode as the same text.
        prop::sample::select(vec![
            "",
            "type",
            "types",
            "typf",
            "content",
            "m.room.member",
            "m.room.membe",
            "12",
            "13",
            "signatures",
            "state_key",
            "state_kex",
            "origin_server_ts",
            "unsigned",
            "age",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
        "[\\x00-\\x1f\"\\\\/\\x7f]{0,4}",
        "[\u{fffe}\u{ffff}\u{1f600}\u{10ffff}\u{e000}\u{2028}]{0,3}",
    ]
}

fn number_strategy(floats: bool) -> BoxedStrategy<Number> {
    let ints = prop_oneof![
        any::<i64>().prop_map(|i| Number::Int(i.to_string().into())),
        (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(|i| Number::Int(i.to_string().into())),
        // Beyond 64 bits, exact.
        ("-?[1-9][0-9]{19,40}").prop_map(|s| Number::Int(s.into())),
    ];
    if floats {
        prop_oneof![
            3 => ints,
            1 => any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Number::Float),
            1 => (-1_000_000i64..1_000_000, -30i32..30)
                .prop_map(|(m, e)| Number::Float(m as f64 * 10f64.powi(e))),
        ]
        .boxed()
    } else {
        (-(1i64 << 53) + 1..(1i64 << 53))
            .prop_map(|i| Number::Int(i.to_string().into()))
            .boxed()
    }
}

fn value_strategy(floats: bool) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number_strategy(floats).prop_map(Value::Number),
        string_strategy().prop_map(Value::string),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(string_strategy(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object_strategy(floats: bool) -> impl Strategy<Value = Object> {
    prop::collection::btree_map(string_strategy(), value_strategy(floats), 0..6).prop_map(|m| {
        let mut o: Object = m.into_iter().collect();
        // Keep `signatures`/`unsigned` out: the properties below add or reason about them.
        o.remove("signatures");
        o.remove("unsigned");
        o
    })
}

fn version_strategy() -> impl Strategy<Value = &'static RoomVersion> {
    (0..ROOM_VERSIONS.len()).prop_map(|i| &ROOM_VERSIONS[i])
}

/// A hashed, unsigned event sent by `@alice:domain` (room versions 1–2 get an event ID on
/// the same server, so `domain` is the only required signer).
fn event_strategy() -> impl Strategy<Value = (&'static RoomVersion, Object)> {
    let types = prop_oneof![
        Just("m.room.member"),
        Just("m.room.message"),
        Just("m.room.create"),
        Just("m.room.power_levels"),
        Just("m.room.join_rules"),
        Just("com.example.x"),
    ];
    (
        version_strategy(),
        types,
        object_strategy(false),
        1i64..(1 << 53),
        any::<bool>(),
    )
        .prop_map(|(v, ty, mut content, depth, origin)| {
            if ty == "m.room.member" {
                content.insert("membership".into(), Value::string("invite"));
            }
            if ty == "m.room.message" {
                content.insert("body".into(), Value::string("hello"));
            }
            let mut e = Object::new();
            e.insert("type".into(), Value::string(ty));
            e.insert("sender".into(), Value::string("@alice:domain"));
            e.insert("room_id".into(), Value::string("!r:domain"));
            e.insert("content".into(), Value::Object(content));
            e.insert("depth".into(), Value::int(depth));
            e.insert("origin_server_ts".into(), Value::int(1_700_000_000_000));
            e.insert("prev_events".into(), Value::Array(vec![]));
            e.insert("auth_events".into(), Value::Array(vec![]));
            if ty == "m.room.member" {
                e.insert("state_key".into(), Value::string("@bob:remote"));
            }
            if origin {
                e.insert("origin".into(), Value::string("domain"));
            }
            if v.has_event_id_field() {
                e.insert("event_id".into(), Value::string("$abc:domain"));
            }
            add_content_hash(&mut e);
            (v, e)
        })
}

fn domain() -> ServerName {
    ServerName::parse("domain").unwrap()
}

fn verify_ev(e: &Object, v: &RoomVersion) -> Result<(), invited_matrix::EventCheckError> {
    let vk = spec_key().verify_key();
    let keys = |s: &str, k: &KeyId| (s == "domain" && k.as_str() == "ed25519:1").then_some(vk);
    verify_event_signatures(e, v, &keys)
}

fn signed_event(v: &RoomVersion, mut e: Object) -> Object {
    sign_event(&mut e, v, &domain(), &spec_key()).unwrap();
    e
}

// ---------------------------------------------------------------------------------------------
// Canonical JSON

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn canonical_form_is_a_fixed_point(v in value_strategy(true)) {
        let c1 = v.to_canonical_string();
        let parsed = json::parse(&c1).expect("our canonical output parses");
        prop_assert_eq!(&parsed, &v);
        prop_assert_eq!(parsed.to_canonical_string(), c1);
    }

    #[test]
    fn parsed_text_canonicalizes_stably(text in "[\\[\\]{}:,\" a-c0-9.eE+\\-\\\\u]{0,40}") {
        if let Ok(v) = json::parse(&text) {
            let c1 = v.to_canonical_string();
            let again = json::parse(&c1).expect("canonical output parses");
            prop_assert_eq!(again.to_canonical_string(), c1);
        }
    }

    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = json::parse_bytes(&bytes);
    }

    #[test]
    fn strict_values_pass_check_strict(v in value_strategy(false)) {
        prop_assert!(json::check_strict(&v).is_ok());
    }
}

// ---------------------------------------------------------------------------------------------
// Signatures

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sign_then_verify_json(obj in object_strategy(true), unsigned in value_strategy(false)) {
        let key = spec_key();
        let mut o = obj.clone();
        o.insert("unsigned".into(), unsigned);
        sign_json(&mut o, "domain", &key).unwrap();
        prop_assert!(verify_json(&o, "domain", key.key_id(), &key.verify_key()).is_ok());
        // Signing changes nothing but `signatures`.
        o.remove("signatures");
        o.remove("unsigned");
        prop_assert_eq!(o, obj);
    }

    #[test]
    fn sign_then_verify_event((v, e) in event_strategy()) {
        let signed = signed_event(v, e.clone());
        prop_assert!(verify_ev(&signed, v).is_ok());
        prop_assert!(check_content_hash(&signed).is_ok());
        let mut without = signed.clone();
        without.remove("signatures");
        prop_assert_eq!(without, e);
    }

    /// Every field the signature covers (the redacted event minus `signatures`/`unsigned`)
    /// breaks verification when changed.
    #[test]
    fn changed_covered_field_breaks_signature(
        (v, e) in event_strategy(),
        which in 0usize..10,
    ) {
        let signed = signed_event(v, e);
        let mut t = signed.clone();
        let bump = |x: &Value| Value::int(x.as_i64().unwrap() - 1);
        let field = match which {
            0 => { let d = bump(&t["depth"]); t.insert("depth".into(), d); "depth" }
            1 => { let d = bump(&t["origin_server_ts"]); t.insert("origin_server_ts".into(), d); "ts" }
            2 => { t.insert("sender".into(), Value::string("@mallory:domain")); "sender" }
            3 => { t.insert("room_id".into(), Value::string("!other:domain")); "room_id" }
            4 => { t.insert("type".into(), Value::string("m.room.messagf")); "type" }
            5 => { t.insert("prev_events".into(), Value::Array(vec![Value::string("$x")])); "prev_events" }
            6 => { t.insert("auth_events".into(), Value::Array(vec![Value::string("$x")])); "auth_events" }
            7 => {
                let mut h = Object::new();
                h.insert("sha256".into(), Value::string(base64::encode(&[0u8; 32])));
                t.insert("hashes".into(), Value::Object(h));
                "hashes"
            }
            8 => { t.insert("state_key".into(), Value::string("@eve:remote")); "state_key" }
            _ => {
                if let Some(Value::Object(c)) = t.get_mut("content") {
                    c.insert("membership".into(), Value::string("ban"));
                }
                "content.membership"
            }
        };
        let covered = match field {
            // Only member events keep `content.membership` through redaction.
            "content.membership" => t["type"].as_str() == Some("m.room.member")
                || (t["type"].as_str() == Some("m.room.create") && v.redaction.keep_all_create_content),
            _ => true,
        };
        let verdict = verify_ev(&t, v);
        prop_assert_eq!(verdict.is_err(), covered, "{} in v{}", field, v.id);
        // Top-level `origin` is covered exactly by v1–v10.
        if signed.contains_key("origin") {
            let mut t = signed.clone();
            t.insert("origin".into(), Value::string("elsewhere"));
            prop_assert_eq!(
                verify_ev(&t, v).is_err(),
                v.redaction.keep_origin_membership_prev_state,
                "origin in v{}", v.id
            );
        }
    }

    /// `content.body` of a message is not covered by the signature (redaction drops it), but
    /// the content hash covers the whole event.
    #[test]
    fn changed_message_body_keeps_signature_breaks_hash(
        v in version_strategy(),
        body in any::<String>(),
    ) {
        let mut e = Object::new();
        for (k, val) in [
            ("type", Value::string("m.room.message")),
            ("sender", Value::string("@alice:domain")),
            ("room_id", Value::string("!r:domain")),
            ("depth", Value::int(5)),
            ("origin_server_ts", Value::int(1)),
            ("prev_events", Value::Array(vec![])),
            ("auth_events", Value::Array(vec![])),
            ("event_id", Value::string("$e:domain")),
        ] {
            e.insert(k.into(), val);
        }
        let mut content = Object::new();
        content.insert("body".into(), Value::string("original"));
        content.insert("msgtype".into(), Value::string("m.text"));
        e.insert("content".into(), Value::Object(content));
        add_content_hash(&mut e);
        let signed = signed_event(v, e);
        prop_assume!(body != "original");
        let mut t = signed;
        if let Some(Value::Object(c)) = t.get_mut("content") {
            c.insert("body".into(), Value::String(body.into()));
        }
        prop_assert!(verify_ev(&t, v).is_ok());
        prop_assert_eq!(
            check_content_hash(&t),
            Err(invited_matrix::EventCheckError::HashMismatch)
        );
    }
}

proptest! {
    // Most flips make invalid JSON and cost nothing; only the ones that parse are verified.
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Flip one byte of the canonical text of a signed object. If the result still parses to a
    /// different object (other signed bytes, or another signature), verification must fail.
    #[test]
    fn flipped_byte_breaks_signature(
        obj in object_strategy(true),
        pos in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let key = spec_key();
        let mut o = obj;
        sign_json(&mut o, "domain", &key).unwrap();
        let mut bytes = Value::Object(o.clone()).to_canonical_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= mask;
        let Ok(Value::Object(changed)) = json::parse_bytes(&bytes) else {
            return Ok(());
        };
        let sig = |o: &Object| {
            o.get("signatures")
                .and_then(|s| s.get("domain"))
                .and_then(|s| s.get("ed25519:1"))
                .and_then(Value::as_str)
                .and_then(base64::decode)
        };
        let same = signing_bytes(&changed) == signing_bytes(&o) && sig(&changed) == sig(&o);
        let verdict = verify_json(&changed, "domain", key.key_id(), &key.verify_key());
        prop_assert_eq!(verdict.is_ok(), same, "byte {} of {:?}", i, String::from_utf8_lossy(&bytes));
    }
}

// ---------------------------------------------------------------------------------------------
// Identifiers

fn id_input() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[@!$#]?[a-zA-Z0-9._=/:\\-]{0,20}(:[a-z0-9.\\-]{0,12}(:[0-9]{0,6})?)?",
        "[@!$]?[a-z]{0,5}:\\[[0-9a-fA-F:.]{0,20}\\](:[0-9]{0,6})?",
        "[a-z0-9_]{0,8}:[a-zA-Z0-9_\\-:]{0,8}",
        "[@!$]?[\\x00-\\x7f\u{e9}\u{1f600}]{0,300}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn identifier_parsers_never_panic(s in id_input()) {
        if let Ok(n) = ServerName::parse(&s) {
            prop_assert_eq!(n.as_str(), s.as_str());
            prop_assert!(s.len() <= 255);
            let _ = (n.host(), n.port(), n.host_str());
        }
        if let Ok(u) = UserId::parse(&s) {
            prop_assert_eq!(u.as_str(), s.as_str());
            prop_assert!(ServerName::parse(u.server_str()).is_ok());
            let server = u.server_name();
            prop_assert_eq!(server.as_str(), u.server_str());
            prop_assert_eq!(format!("@{}:{}", u.localpart(), u.server_str()), s.clone());
        }
        if let Ok(r) = RoomId::parse(&s) {
            prop_assert_eq!(r.as_str(), s.as_str());
            match r.server_str() {
                Some(server) => prop_assert!(ServerName::parse(server).is_ok()),
                None => prop_assert!(r.is_hash_id() && s.len() == 44),
            }
        }
        if let Ok(e) = EventId::parse(&s) {
            prop_assert_eq!(e.as_str(), s.as_str());
            let _ = e.server_str();
        }
        if let Ok(k) = KeyId::parse(&s) {
            prop_assert_eq!(format!("{}:{}", k.algorithm(), k.version()), s.clone());
            let _ = k.is_ed25519();
        }
        let _ = KeyId::ed25519(&s);
        let _ = RoomVersion::by_id(&s);
        let _ = base64::decode(&s);
        let _ = base64::decode_url_safe(&s);
    }
}

// ---------------------------------------------------------------------------------------------
// Redacted canonical text, written without a redacted copy

/// Top-level keys a redaction rule names, plus neighbours in sort order around `content`
/// (the one key the redacted form always has). Events also get [`CONTENT_KEYS`] at the top.
const TOP_LEVEL_KEYS: &[&str] = &[
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
    "origin",
    "membership",
    "prev_state",
    "unsigned",
    "a",
    "conten",
    "content2",
    "contenT",
    "zzz",
];

const REDACTION_TYPES: &[&str] = &[
    "m.room.member",
    "m.room.create",
    "m.room.join_rules",
    "m.room.power_levels",
    "m.room.aliases",
    "m.room.history_visibility",
    "m.room.redaction",
    "m.room.message",
];

/// Keys content rules name, and two they do not.
const CONTENT_KEYS: &[&str] = &[
    "membership",
    "join_authorised_via_users_server",
    "creator",
    "join_rule",
    "allow",
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
    "invite",
    "aliases",
    "history_visibility",
    "redacts",
    "third_party_invite",
    "room_version",
    "body",
    "m.federate",
];

fn redaction_object(depth: u32) -> BoxedStrategy<Object> {
    keyed_object(&[TOP_LEVEL_KEYS, CONTENT_KEYS], depth)
}

fn content_object() -> BoxedStrategy<Object> {
    keyed_object(&[CONTENT_KEYS], 1)
}

fn keyed_object(lists: &'static [&'static [&'static str]], depth: u32) -> BoxedStrategy<Object> {
    let keys: Vec<&'static str> = lists.iter().flat_map(|l| l.iter().copied()).collect();
    let count = keys.len();
    let key = (0..count).prop_map(move |i| keys[i].to_owned());
    let value = if depth == 0 {
        value_strategy(false).boxed()
    } else {
        prop_oneof![
            3 => value_strategy(false),
            2 => keyed_object(lists, depth - 1).prop_map(Value::Object),
        ]
        .boxed()
    };
    prop::collection::btree_map(key, value, 0..10)
        .prop_map(|m| m.into_iter().collect())
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// `redacted_canonical_except` is `redact` then `canonical_object_except`, byte for
    /// byte, for every room version, event type, shape of content (absent, not an object,
    /// with every key a rule names, third-party invites of every shape) and set of skipped
    /// keys: signatures and event IDs are computed from it.
    #[test]
    fn redacted_canonical_text_is_canonical_text_of_the_redacted_copy(
        mut event in redaction_object(2),
        with_type in prop::bool::weighted(0.9),
        content in prop::option::weighted(0.7, content_object()),
        skip_mask in 0u8..16,
        third_party_invite in 0usize..6,
        any_value in value_strategy(false),
    ) {
        // Mostly a content object (the generic keys above rarely make one); without one, the
        // keys after where `content` would sort must not be taken for it.
        if let Some(content) = content {
            event.insert("content".into(), Value::Object(content));
        }
        // The one content rule with a shape of its own: every shape of it, often.
        let mut tpi = Object::new();
        match third_party_invite {
            1 => {}
            2 => { tpi.insert("signed".into(), any_value); }
            3 => {
                tpi.insert("signed".into(), any_value);
                tpi.insert("display_name".into(), Value::string("x"));
            }
            4 => { tpi.insert("display_name".into(), any_value); }
            _ => {}
        }
        if third_party_invite > 0 {
            let value = if third_party_invite == 5 { Value::string("x") } else { Value::Object(tpi) };
            if let Some(Value::Object(content)) = event.get_mut("content") {
                content.insert("third_party_invite".into(), value);
            }
        }
        let skip: Vec<&str> = ["signatures", "unsigned", "hashes", "content"]
            .into_iter()
            .enumerate()
            .filter(|(i, _)| skip_mask & (1 << i) != 0)
            .map(|(_, k)| k)
            .collect();
        // Every type under every version, or no type at all.
        let types: &[&str] = if with_type { REDACTION_TYPES } else { &[""] };
        for event_type in types {
            if with_type {
                event.insert("type".into(), Value::string(*event_type));
            }
            for version in ROOM_VERSIONS {
                let rules = &version.redaction;
                let expected =
                    json::canonical_object_except(&invited_matrix::redact(&event, rules), &skip);
                let written =
                    invited_matrix::redaction::redacted_canonical_except(&event, rules, &skip);
                prop_assert_eq!(written, expected, "{} in room version {}", event_type, version.id);
            }
        }
    }
}
