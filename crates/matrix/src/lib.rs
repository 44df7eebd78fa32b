//! The Matrix rules invited needs, with no I/O: canonical JSON, unpadded base64, identifiers,
//! the room-version table, redaction, content and reference hashes, event IDs, v12 room IDs,
//! and ed25519 signing and verification of JSON and events.
//!
//! Nothing here reads a clock, a file or a socket; callers pass in what they know (keys, the
//! room version), which keeps every rule testable alone and fuzzable.
//!
//! Start at [`json`] for the value type every other module works on, and at
//! [`RoomVersion`] for how versions differ.

#![forbid(unsafe_code)]

pub mod base64;
pub mod errcode;
pub mod event;
pub mod glob;
pub mod ids;
pub mod invite;
pub mod invitee_settings;
pub mod json;
pub mod pdu;
pub mod redaction;
pub mod room_version;
pub mod server_keys;
pub mod signing;
pub mod x_matrix;

pub use errcode::ErrCode;
pub use event::{
    EventBytes, EventCheckError, EventIdError, EventKeys, add_content_hash, check_content_hash,
    content_hash, event_id, event_id_with, event_signing_bytes, reference_hash, required_signers,
    room_id_from_create_event, sign_event, sign_event_with, verify_event_signatures,
    verify_event_signatures_with,
};
pub use ids::{EventId, Host, IdError, KeyId, RoomId, ServerName, UserId};
pub use json::{JsonError, JsonErrorKind, Number, Object, Value, check_strict};
pub use redaction::redact;
pub use room_version::{EventFormat, EventIdFormat, ROOM_VERSIONS, RedactionRules, RoomVersion};
pub use signing::{
    SignatureError, SigningKey, VerifyKey, sign_json, signature_key_ids, signing_bytes, verify_json,
};
