//! Events: content hash, reference hash, event IDs, v12 room IDs, signing and verifying.
//!
//! All of it is "redact per the room version, drop some keys, canonical JSON, then SHA-256 or
//! ed25519" — the details of which keys and which version are what this file pins down.
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#signing-events> (content hash,
//! reference hash, signing) and the room version pages for event IDs
//! (<https://spec.matrix.org/v1.16/rooms/v4/#event-ids>).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::base64;
use crate::ids::{EventId, KeyId, RoomId, ServerName, UserId};
use crate::json::{Object, Value, canonical_object_except};
use crate::redaction::redacted_canonical_except;
use crate::room_version::{EventIdFormat, RoomVersion};
use crate::signing::{
    SignatureError, SigningKey, UNSIGNED_KEYS, add_signature, signature_key_ids, verify_with_bytes,
};

/// The keys the content hash leaves out.
const NOT_CONTENT_HASHED: &[&str] = &["signatures", "unsigned", "hashes"];

/// SHA-256 over the event without `signatures`, `unsigned` and `hashes` (the value of
/// `hashes.sha256`). Covers the full, unredacted event.
pub fn content_hash(event: &Object) -> [u8; 32] {
    Sha256::digest(canonical_object_except(event, NOT_CONTENT_HASHED).as_bytes()).into()
}

/// The bytes signatures over this event cover: the redacted event without `signatures` and
/// `unsigned`. The reference hash is the SHA-256 of the same bytes.
pub fn event_signing_bytes(event: &Object, version: &RoomVersion) -> Vec<u8> {
    redacted_canonical_except(event, &version.redaction, UNSIGNED_KEYS).into_bytes()
}

/// The bytes an event's signatures cover (see [`event_signing_bytes`]), computed once.
///
/// Signing, verifying and the reference hash (event ID) all start from the same redacted
/// canonical bytes; the invite path needs all three, so it computes them once. Only valid for
/// the event they were computed from: adding signatures does not change them, anything else
/// does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBytes(Vec<u8>);

impl EventBytes {
    pub fn of(event: &Object, version: &RoomVersion) -> EventBytes {
        EventBytes(event_signing_bytes(event, version))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The reference hash: SHA-256 of these bytes.
    pub fn reference_hash(&self) -> [u8; 32] {
        Sha256::digest(&self.0).into()
    }
}

/// SHA-256 of the redacted event without `signatures` and `unsigned`: the basis of event IDs
/// (v3+) and of room IDs (v12).
pub fn reference_hash(event: &Object, version: &RoomVersion) -> [u8; 32] {
    Sha256::digest(event_signing_bytes(event, version)).into()
}

/// Why an event has no usable event ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventIdError {
    /// Room versions 1–2 need an `event_id` string field.
    MissingField,
    /// The `event_id` field is not a valid event ID.
    Invalid(String),
}

impl fmt::Display for EventIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventIdError::MissingField => f.write_str("the event has no 'event_id' string"),
            EventIdError::Invalid(why) => write!(f, "the event's 'event_id' is invalid: {why}"),
        }
    }
}

impl std::error::Error for EventIdError {}

/// The event's ID under its room version: the `event_id` field (v1–v2), or `$` + the reference
/// hash in standard (v3) or URL-safe (v4+) unpadded base64.
pub fn event_id(event: &Object, version: &RoomVersion) -> Result<EventId, EventIdError> {
    match version.event_id_format {
        EventIdFormat::Field => event_id_with(event, version, None),
        _ => event_id_with(event, version, Some(&EventBytes::of(event, version))),
    }
}

/// [`event_id`] with the signed bytes already computed (`None` is fine for v1–v2).
pub fn event_id_with(
    event: &Object,
    version: &RoomVersion,
    bytes: Option<&EventBytes>,
) -> Result<EventId, EventIdError> {
    let hash = || match bytes {
        Some(b) => b.reference_hash(),
        None => reference_hash(event, version),
    };
    match version.event_id_format {
        EventIdFormat::Field => {
            let text = event
                .get("event_id")
                .and_then(Value::as_str)
                .ok_or(EventIdError::MissingField)?;
            EventId::parse(text).map_err(|e| EventIdError::Invalid(e.to_string()))
        }
        EventIdFormat::HashStandard => Ok(EventId::from_hash_unchecked(format!(
            "${}",
            base64::encode(&hash())
        ))),
        EventIdFormat::HashUrlSafe => Ok(EventId::from_hash_unchecked(format!(
            "${}",
            base64::encode_url_safe(&hash())
        ))),
    }
}

/// The room ID a room version 12 create event defines: `!` + URL-safe unpadded base64 of its
/// reference hash (v11 redaction rules, which v12 uses).
pub fn room_id_from_create_event(create: &Object, version: &RoomVersion) -> RoomId {
    RoomId::from_hash_unchecked(format!(
        "!{}",
        base64::encode_url_safe(&reference_hash(create, version))
    ))
}

/// Adds our signature to an event, as co-signing an invite needs: signs the redacted event
/// (minus `signatures`/`unsigned`) and puts the result in `signatures.<server>`, replacing
/// whatever the sender put there under our name (as Synapse does): only we sign as us.
/// Nothing else in the event changes: not `hashes`, not other signatures, not `unsigned`.
pub fn sign_event(
    event: &mut Object,
    version: &RoomVersion,
    server: &ServerName,
    key: &SigningKey,
) -> Result<(), SignatureError> {
    sign_event_with(event, &EventBytes::of(event, version), server, key)
}

/// [`sign_event`] with the signed bytes already computed for this event.
pub fn sign_event_with(
    event: &mut Object,
    bytes: &EventBytes,
    server: &ServerName,
    key: &SigningKey,
) -> Result<(), SignatureError> {
    let signature = base64::encode(&key.sign_bytes(bytes.as_bytes()));
    if let Some(Value::Object(signatures)) = event.get_mut("signatures") {
        signatures.remove(server.as_str());
    }
    add_signature(event, server.as_str(), key.key_id(), signature)
}

/// Looks up the public key a server signed an event with, already filtered by the caller's
/// key-validity rule for this event (room version and `origin_server_ts`). `None` means "not
/// known or not valid for this event", and the signature is skipped.
pub trait EventKeys {
    fn event_key(&self, server: &str, key_id: &KeyId) -> Option<crate::signing::VerifyKey>;
}

impl<F> EventKeys for F
where
    F: Fn(&str, &KeyId) -> Option<crate::signing::VerifyKey>,
{
    fn event_key(&self, server: &str, key_id: &KeyId) -> Option<crate::signing::VerifyKey> {
        self(server, key_id)
    }
}

/// Why an event's signatures or hash do not check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventCheckError {
    /// `sender` is missing or not a user ID.
    BadSender(String),
    /// A required signature failed (which server and why).
    Signature(SignatureError),
    /// `hashes.sha256` is missing or not base64 of 32 bytes.
    MissingHash,
    /// `hashes.sha256` does not match the event's content hash.
    HashMismatch,
    /// Room versions 1–2: the `event_id` field is missing or invalid.
    EventId(EventIdError),
}

impl fmt::Display for EventCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventCheckError::BadSender(why) => write!(f, "bad sender: {why}"),
            EventCheckError::Signature(e) => e.fmt(f),
            EventCheckError::MissingHash => {
                f.write_str("'hashes.sha256' is missing or not a base64 SHA-256")
            }
            EventCheckError::HashMismatch => {
                f.write_str("'hashes.sha256' does not match the event's content")
            }
            EventCheckError::EventId(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for EventCheckError {}

/// The servers whose signatures an event needs: the sender's server, and for room versions
/// 1–2 also the server in the event ID when it differs.
pub fn required_signers(
    event: &Object,
    version: &RoomVersion,
) -> Result<Vec<String>, EventCheckError> {
    let sender = event
        .get("sender")
        .and_then(Value::as_str)
        .ok_or_else(|| EventCheckError::BadSender("missing or not a string".to_owned()))?;
    let sender = UserId::parse(sender).map_err(|e| EventCheckError::BadSender(e.to_string()))?;
    let mut servers = vec![sender.server_str().to_owned()];
    if version.has_event_id_field() {
        let id = event_id(event, version).map_err(EventCheckError::EventId)?;
        if let Some(server) = id.server_str()
            && server != servers[0]
        {
            servers.push(server.to_owned());
        }
    }
    Ok(servers)
}

/// Verifies every required signature of an event (see [`required_signers`]) over its redacted
/// form. For each required server, every signature whose key `keys` knows must verify, and at
/// least one must; signatures with unknown keys or algorithms are skipped (the spec's rule,
/// which also skips a policy server's `ed25519:policy_server`).
pub fn verify_event_signatures(
    event: &Object,
    version: &RoomVersion,
    keys: &dyn EventKeys,
) -> Result<(), EventCheckError> {
    verify_event_signatures_with(event, version, &EventBytes::of(event, version), keys)
}

/// [`verify_event_signatures`] with the signed bytes already computed for this event.
pub fn verify_event_signatures_with(
    event: &Object,
    version: &RoomVersion,
    bytes: &EventBytes,
    keys: &dyn EventKeys,
) -> Result<(), EventCheckError> {
    let servers = required_signers(event, version)?;
    let signed = bytes.as_bytes();
    for server in &servers {
        let key_ids = signature_key_ids(event, server).map_err(EventCheckError::Signature)?;
        let mut verified = 0;
        for key_id in &key_ids {
            let Some(key) = keys.event_key(server, key_id) else {
                continue;
            };
            verify_with_bytes(event, signed, server, key_id, &key)
                .map_err(EventCheckError::Signature)?;
            verified += 1;
        }
        if verified == 0 {
            return Err(EventCheckError::Signature(SignatureError::NoKnownKey {
                entity: server.clone(),
            }));
        }
    }
    Ok(())
}

/// Checks `hashes.sha256` against the event's content hash. We never co-sign content its
/// sender did not hash, so a mismatch is an error here (the generic "treat as redacted" rule
/// is for events already in a room).
pub fn check_content_hash(event: &Object) -> Result<(), EventCheckError> {
    let claimed = event
        .get("hashes")
        .and_then(|h| h.get("sha256"))
        .and_then(Value::as_str)
        .and_then(base64::decode)
        .filter(|b| b.len() == 32)
        .ok_or(EventCheckError::MissingHash)?;
    if claimed == content_hash(event) {
        Ok(())
    } else {
        Err(EventCheckError::HashMismatch)
    }
}

/// Sets `hashes.sha256` to the event's content hash (for building events: tests, tools).
pub fn add_content_hash(event: &mut Object) {
    let hash = base64::encode(&content_hash(event));
    let mut hashes = Object::new();
    hashes.insert("sha256".to_owned(), Value::String(hash.into()));
    event.insert("hashes".to_owned(), Value::Object(hashes));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    /// A sender cannot put signatures under our name into what we answer, nor make co-signing
    /// fail by putting a non-object there.
    #[test]
    fn co_signing_replaces_what_the_sender_put_under_our_name() {
        let key = SigningKey::from_seed(KeyId::parse("ed25519:ours").unwrap(), &[7; 32]);
        let us = ServerName::parse("us.example").unwrap();
        let version = RoomVersion::by_id("10").unwrap();
        for planted in [
            r#"{"ed25519:fake":"AAAA","ed25519:ours":"BBBB"}"#,
            r#""junk""#,
        ] {
            let text = format!(
                r#"{{"type":"m.room.member","content":{{"membership":"invite"}},
                   "signatures":{{"them.example":{{"ed25519:t":"CCCC"}},"us.example":{planted}}}}}"#
            );
            let mut event = json::parse(&text).unwrap().as_object().unwrap().clone();
            sign_event(&mut event, version, &us, &key).unwrap();
            let ours = event["signatures"]["us.example"].as_object().unwrap();
            assert_eq!(ours.keys().collect::<Vec<_>>(), ["ed25519:ours"]);
            assert_ne!(ours["ed25519:ours"].as_str(), Some("BBBB"));
            assert_eq!(
                event["signatures"]["them.example"]["ed25519:t"].as_str(),
                Some("CCCC")
            );
        }
    }
}
