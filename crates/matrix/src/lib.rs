//! The Matrix rules invited needs, with no I/O: canonical JSON, unpadded base64, identifiers,
//! the room-version table, redaction, content and reference hashes, event IDs, v12 room IDs,
//! ed25519 signing and verification of JSON and events, errcodes with their statuses, PDU
//! formats, the checks of an invite request and its answer, server key responses, Matrix
//! globs, and the invitee's own invite settings.
//!
//! Nothing here reads a clock, a file or a socket; callers pass in what they know (keys, the
//! room version, the invitee's account data), which keeps every rule testable alone and
//! fuzzable.
//!
//! Start at [`json`] for the value type every other module works on, at [`RoomVersion`] for
//! how versions differ, and at [`invite::check_request`] for the invite path. The main items
//! of most modules are re-exported here; [`invite`]'s names are generic (`Api`,
//! `fingerprint`), so it is used by path, like [`base64`], [`x_matrix`] and [`glob::host`].

#![forbid(unsafe_code)]

pub mod base64;
pub mod errcode;
pub mod event;
pub mod glob;
pub mod ids;
pub mod invite;
pub mod invitee_settings;
pub mod json;
pub mod leave;
pub mod pdu;
pub mod push;
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
pub use glob::glob_match;
pub use ids::{EventId, Host, IdError, KeyId, RoomId, ServerName, UserId};
pub use invitee_settings::{InviteeSettings, InviteeVerdict, invitee_verdict};
pub use json::{JsonError, JsonErrorKind, Number, Object, Value, check_strict};
pub use pdu::{check_pdu_format, is_full_pdu};
pub use redaction::redact;
pub use room_version::{EventFormat, EventIdFormat, ROOM_VERSIONS, RedactionRules, RoomVersion};
pub use server_keys::{MAX_KEYS_PER_RESPONSE, ServerKeys, ServerKeysError, parse_server_keys};
pub use signing::{
    SignatureError, SigningKey, VerifyKey, sign_json, signature_key_ids, signing_bytes, verify_json,
};
