//! Arbitrary bytes through the JSON parser; whatever parses must canonicalize stably, pass or
//! fail `check_strict` without panicking, and (for objects) redact and hash under every room
//! version without panicking.
#![no_main]

use invited_matrix::json::{self, Value};
use invited_matrix::{
    ROOM_VERSIONS, check_strict, content_hash, event_id, event_signing_bytes, redact,
    reference_hash, required_signers,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = json::parse_bytes(data) else {
        return;
    };
    let canonical = value.to_canonical_string();
    let reparsed = json::parse(&canonical).expect("canonical output must parse");
    assert_eq!(
        reparsed, value,
        "canonical output must parse to the same value"
    );
    assert_eq!(
        reparsed.to_canonical_string(),
        canonical,
        "canonical form must be stable"
    );
    let strict = check_strict(&value);
    assert_eq!(check_strict(&reparsed).is_ok(), strict.is_ok());

    if let Value::Object(obj) = &value {
        let _ = content_hash(obj);
        for v in &ROOM_VERSIONS {
            let redacted = redact(obj, &v.redaction);
            // Redaction is idempotent and keeps `content` an object.
            assert_eq!(redact(&redacted, &v.redaction), redacted);
            assert!(matches!(redacted.get("content"), Some(Value::Object(_))));
            let _ = event_signing_bytes(obj, v);
            let _ = reference_hash(obj, v);
            let _ = event_id(obj, v);
            let _ = required_signers(obj, v);
        }
    }
});
