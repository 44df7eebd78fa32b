//! The checks of an invite request that need no keys and no storage, and the invite answer.
//!
//! `PUT /_matrix/federation/{v1,v2}/invite/{roomId}/{eventId}`
//! (<https://spec.matrix.org/v1.16/server-server-api/#inviting-to-a-room>): [`check_request`]
//! takes an authenticated body to the point where only signatures, the content hash, the room
//! state's signatures and policy are left, answering every refusal with the spec's error.
//! Being pure, it is fuzzed alone.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::base64;
use crate::errcode::ErrCode;
use crate::event::{EventBytes, event_id_with};
use crate::ids::{EventId, MAX_ID_BYTES, RoomId, ServerName, UserId};
use crate::json::{self, Object, Value, check_strict};
use crate::pdu::check_pdu_format;
use crate::room_version::RoomVersion;

/// The largest invite event we accept, as canonical JSON: the spec's limit for a whole PDU
/// (<https://spec.matrix.org/v1.16/client-server-api/#size-limits>).
pub const MAX_EVENT_BYTES: usize = 65_536;

/// Which invite endpoint a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `/v1/invite`: the body is the event; answers `[200, {"event": …}]`; room versions 1–2
    /// (<https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv1inviteroomideventid>).
    V1,
    /// `/v2/invite`: `{room_version, event, invite_room_state}`; answers `{"event": …}`
    /// (<https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv2inviteroomideventid>).
    V2,
}

impl Api {
    /// The version number in the path (what the store records, so a retry through the other
    /// endpoint gets that endpoint's answer shape).
    pub const fn number(self) -> i64 {
        match self {
            Api::V1 => 1,
            Api::V2 => 2,
        }
    }
}

/// Why an invite request is refused: the error code (and so the status), the message for
/// the `error` field, and for `M_INCOMPATIBLE_ROOM_VERSION` the `room_version` the response
/// body must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteError {
    pub code: ErrCode,
    pub message: String,
    pub room_version: Option<String>,
}

impl InviteError {
    fn new(code: ErrCode, message: impl Into<String>) -> InviteError {
        InviteError {
            code,
            message: message.into(),
            room_version: None,
        }
    }

    fn incompatible(version: &str) -> InviteError {
        InviteError {
            room_version: Some(version.to_owned()),
            ..InviteError::new(
                ErrCode::IncompatibleRoomVersion,
                format!("This server does not support room version {version}"),
            )
        }
    }
}

impl fmt::Display for InviteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code.status(), self.code, self.message)
    }
}

impl std::error::Error for InviteError {}

fn invalid(why: impl Into<String>) -> InviteError {
    InviteError::new(ErrCode::InvalidParam, why)
}

fn bad_json(why: impl Into<String>) -> InviteError {
    InviteError::new(ErrCode::BadJson, why)
}

/// An invite request that passed every check needing no keys or storage.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRequest {
    pub version: &'static RoomVersion,
    /// The event exactly as received (`unsigned` included).
    pub event: Object,
    /// What the event's signatures cover (redacted canonical bytes), computed once for the
    /// event ID, the signature checks and our co-signature.
    pub bytes: EventBytes,
    /// `invite_room_state` as received: only its shape is checked here (an array or absent),
    /// its entries need keys.
    pub room_state: Vec<Value>,
    pub invite: CheckedInvite,
    pub event_id: EventId,
}

/// What makes the event an invite for one of our users, from the requesting server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedInvite {
    pub sender: UserId,
    pub invitee: UserId,
    pub room_id: RoomId,
    pub origin_server_ts: i64,
}

/// Checks an authenticated invite request, in this order: the body's shape and size limits;
/// the room version (from the v2 body, or for v1 the room state's create event); the event's
/// format in that version (canonical JSON from v6); that it is an `invite` membership event
/// from a user of `origin` for a user of `our_name`, in a room ID of the version's form; and
/// that its room ID and event ID are the path's (`path_room_id`, `path_event_id`, already
/// percent-decoded).
///
/// Takes the body by value so the event and (v2) room state are moved out, not copied.
pub fn check_request(
    api: Api,
    body: Value,
    origin: &ServerName,
    our_name: &ServerName,
    path_room_id: &str,
    path_event_id: &str,
) -> Result<CheckedRequest, InviteError> {
    let Body {
        room_version: requested,
        event,
        room_state,
    } = parse_body(body, api)?;
    let version = room_version(api, requested.as_deref(), &room_state)?;

    if version.strict_canonical_json {
        event
            .values()
            .try_for_each(check_strict)
            .map_err(|e| bad_json(format!("The invite event is {e}")))?;
    }
    check_pdu_format(&event, version)
        .map_err(|e| bad_json(format!("The invite event is malformed: {e}")))?;

    let invite = check_invite_semantics(&event, version, origin, our_name)?;
    if invite.room_id.as_str() != path_room_id {
        return Err(invalid(format!(
            "The event's room_id {} does not match the path's {path_room_id}",
            invite.room_id
        )));
    }
    let bytes = EventBytes::of(&event, version);
    let event_id =
        event_id_with(&event, version, Some(&bytes)).map_err(|e| invalid(e.to_string()))?;
    if event_id.as_str() != path_event_id {
        return Err(invalid(format!(
            "The event's ID {event_id} does not match the path's {path_event_id}"
        )));
    }
    Ok(CheckedRequest {
        version,
        event,
        bytes,
        room_state,
        invite,
        event_id,
    })
}

/// The answer to an invite, around our co-signed event's canonical JSON: `{"event":…}` for
/// v2, `[200,{"event":…}]` for v1 (the v1 endpoint's historical shape). The one definition:
/// a retry is answered with the same bytes, whichever endpoint it comes through.
pub fn response_body(api: Api, signed_event: &str) -> String {
    match api {
        Api::V2 => format!("{{\"event\":{signed_event}}}"),
        Api::V1 => format!("[200,{{\"event\":{signed_event}}}]"),
    }
}

/// How a retry is recognised as the same invite: SHA-256 (unpadded base64) of the event's
/// canonical JSON without `unsigned`, which a sending server may change between attempts.
pub fn fingerprint(event: &Object) -> String {
    let text = json::canonical_object_except(event, &["unsigned"]);
    base64::encode(&Sha256::digest(text.as_bytes()))
}

/// The parts of a body, before they are checked.
struct Body {
    room_version: Option<String>,
    event: Object,
    room_state: Vec<Value>,
}

/// The body's shape (v2 wrapper or v1 bare event) and the size limits.
fn parse_body(body: Value, api: Api) -> Result<Body, InviteError> {
    let Value::Object(mut obj) = body else {
        return Err(bad_json("The request body is not a JSON object"));
    };
    let (room_version, event, room_state) = match api {
        Api::V2 => {
            let rv = match obj.remove("room_version") {
                Some(Value::String(s)) => s.into_string(),
                Some(_) => return Err(bad_json("'room_version' is not a string")),
                None => return Err(bad_json("Missing 'room_version'")),
            };
            let event = match obj.remove("event") {
                Some(Value::Object(e)) => e,
                Some(_) => return Err(bad_json("'event' is not an object")),
                None => return Err(bad_json("Missing 'event'")),
            };
            let state = obj.remove("invite_room_state");
            check_room_state_shape(state.as_ref())?;
            let state = match state {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            (Some(rv), event, state)
        }
        Api::V1 => {
            if obj.get("unsigned").is_some_and(|u| u.as_object().is_none()) {
                return Err(bad_json("'unsigned' is not an object"));
            }
            let state = obj.get("unsigned").and_then(|u| u.get("invite_room_state"));
            check_room_state_shape(state)?;
            // Copied: the event keeps its `unsigned`, as received, for the answer.
            let state = state
                .and_then(Value::as_array)
                .map(<[Value]>::to_vec)
                .unwrap_or_default();
            (None, obj, state)
        }
    };
    let size = json::canonical_object_except(&event, &[]).len();
    if size > MAX_EVENT_BYTES {
        return Err(InviteError::new(
            ErrCode::TooLarge,
            format!("The invite event is {size} bytes; the limit is {MAX_EVENT_BYTES}"),
        ));
    }
    for field in ["sender", "room_id", "event_id", "state_key", "type"] {
        if let Some(Value::String(s)) = event.get(field)
            && s.len() > MAX_ID_BYTES
        {
            return Err(bad_json(format!(
                "'{field}' is longer than {MAX_ID_BYTES} bytes"
            )));
        }
    }
    Ok(Body {
        room_version,
        event,
        room_state,
    })
}

/// `invite_room_state` is an array, `null` or absent.
fn check_room_state_shape(state: Option<&Value>) -> Result<(), InviteError> {
    match state {
        None | Some(Value::Null) | Some(Value::Array(_)) => Ok(()),
        Some(_) => Err(bad_json("'invite_room_state' is not an array")),
    }
}

/// The room version: the v2 body's, or for v1 the one the room state's create event declares
/// (version 1 without one), which must be one the v1 API carries.
fn room_version(
    api: Api,
    requested: Option<&str>,
    room_state: &[Value],
) -> Result<&'static RoomVersion, InviteError> {
    match api {
        Api::V2 => {
            let v = requested.unwrap_or_default();
            RoomVersion::by_id(v).ok_or_else(|| InviteError::incompatible(v))
        }
        Api::V1 => {
            let declared = room_state
                .iter()
                .find(|e| e.get("type").and_then(Value::as_str) == Some("m.room.create"))
                .map(|c| RoomVersion::declared_by_create(c.get("content").unwrap_or(&Value::Null)));
            RoomVersion::for_v1_api(declared)
                .ok_or_else(|| InviteError::incompatible(declared.unwrap_or_default()))
        }
    }
}

/// Type, membership, sender's server == origin, invitee on our server, room ID form.
fn check_invite_semantics(
    event: &Object,
    version: &RoomVersion,
    origin: &ServerName,
    our_name: &ServerName,
) -> Result<CheckedInvite, InviteError> {
    let field = |f: &str| event.get(f).and_then(Value::as_str).unwrap_or_default();
    if field("type") != "m.room.member" {
        return Err(invalid(format!(
            "The event type is {:?}, not m.room.member",
            field("type")
        )));
    }
    let membership = event.get("content").and_then(|c| c.get("membership"));
    if membership.and_then(Value::as_str) != Some("invite") {
        return Err(invalid("The event's content.membership is not \"invite\""));
    }
    let sender = UserId::parse(field("sender")).map_err(|e| invalid(format!("sender: {e}")))?;
    if sender.server_str() != origin.as_str() {
        return Err(invalid(format!(
            "The inviter {sender} is not a user of the requesting server {origin}"
        )));
    }
    let state_key = event.get("state_key").and_then(Value::as_str);
    let invitee = state_key
        .ok_or_else(|| invalid("The event has no state_key"))
        .and_then(|s| UserId::parse(s).map_err(|e| invalid(format!("state_key: {e}"))))?;
    if invitee.server_str() != our_name.as_str() {
        return Err(invalid(format!(
            "The invited user {invitee} is not a user of this server"
        )));
    }
    let room_id = RoomId::parse(field("room_id")).map_err(|e| invalid(format!("room_id: {e}")))?;
    if room_id.is_hash_id() != version.room_id_is_create_event_hash {
        return Err(invalid(format!(
            "The room ID {room_id} is not in room version {}'s format",
            version.id
        )));
    }
    Ok(CheckedInvite {
        sender,
        invitee,
        room_id,
        origin_server_ts: event
            .get("origin_server_ts")
            .and_then(Value::as_i64)
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::event_id;

    const ORIGIN: &str = "origin.example";
    const US: &str = "invited.example";
    /// A v12-shaped room ID (43 URL-safe base64 characters).
    const HASH_ROOM: &str = "!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn parse(text: &str) -> Value {
        json::parse(text).unwrap()
    }

    /// A well-formed invite in room version `version`'s event format.
    fn invite_event(version: &str) -> Object {
        let v = RoomVersion::by_id(version).unwrap();
        let room = if v.room_id_is_create_event_hash {
            HASH_ROOM.to_owned()
        } else {
            format!("!room:{ORIGIN}")
        };
        let refs = if v.has_event_id_field() {
            format!(r#"[["$p:{ORIGIN}",{{"sha256":"h"}}]]"#)
        } else {
            r#"["$p"]"#.to_owned()
        };
        let mut e = parse(&format!(
            r#"{{"type":"m.room.member","sender":"@alice:{ORIGIN}","state_key":"@bob:{US}",
                "room_id":"{room}","content":{{"membership":"invite"}},"signatures":{{}},
                "hashes":{{"sha256":"h"}},"origin_server_ts":1700000000000,"depth":7,
                "prev_events":{refs},"auth_events":{refs},"unsigned":{{"age":3}}}}"#
        ))
        .as_object()
        .unwrap()
        .clone();
        if v.has_event_id_field() {
            e.insert("event_id".into(), format!("$ev:{ORIGIN}").into());
        }
        e
    }

    fn v2_body(version: &str, event: Object, state: &str) -> Value {
        let mut body = Object::new();
        body.insert("room_version".into(), version.into());
        body.insert("event".into(), event.into());
        body.insert("invite_room_state".into(), parse(state));
        body.into()
    }

    fn v1_body(mut event: Object, state: &str) -> Value {
        let unsigned = parse(&format!(r#"{{"invite_room_state":{state}}}"#));
        event.insert("unsigned".into(), unsigned);
        event.into()
    }

    fn create_event(version: &str) -> String {
        format!(
            r#"{{"type":"m.room.create","state_key":"","sender":"@alice:{ORIGIN}",
                "content":{{"room_version":"{version}"}}}}"#
        )
    }

    /// Runs the checks with the paths the event itself names (when it has them).
    fn check(api: Api, body: Value) -> Result<CheckedRequest, InviteError> {
        let event = match api {
            Api::V1 => body.as_object(),
            Api::V2 => body.get("event").and_then(Value::as_object),
        };
        let room = event
            .and_then(|e| e.get("room_id"))
            .and_then(Value::as_str)
            .unwrap_or("!r:x")
            .to_owned();
        let version = match api {
            Api::V1 => RoomVersion::by_id("1"),
            Api::V2 => body
                .get("room_version")
                .and_then(Value::as_str)
                .and_then(RoomVersion::by_id),
        };
        let id = event
            .zip(version)
            .and_then(|(e, v)| event_id(e, v).ok())
            .map_or_else(|| "$e".to_owned(), |id| id.to_string());
        let origin = ServerName::parse(ORIGIN).unwrap();
        let us = ServerName::parse(US).unwrap();
        check_request(api, body, &origin, &us, &room, &id)
    }

    fn refused(api: Api, body: Value) -> (ErrCode, String) {
        let e = check(api, body).unwrap_err();
        assert!(
            e.room_version.is_none() || e.code == ErrCode::IncompatibleRoomVersion,
            "{e:?}"
        );
        (e.code, e.message)
    }

    #[test]
    fn good_invites_pass_in_every_version() {
        for v in crate::ROOM_VERSIONS.iter() {
            let event = invite_event(v.id);
            let state = format!("[{}]", create_event(v.id));
            let checked = check(Api::V2, v2_body(v.id, event.clone(), &state)).unwrap();
            assert_eq!(checked.version, v);
            assert_eq!(
                checked.event, event,
                "the event as received, unsigned included"
            );
            assert_eq!(checked.room_state, parse(&state).as_array().unwrap());
            assert_eq!(checked.event_id, event_id(&event, v).unwrap());
            assert_eq!(checked.bytes, EventBytes::of(&event, v));
            assert_eq!(checked.invite.sender.as_str(), format!("@alice:{ORIGIN}"));
            assert_eq!(checked.invite.invitee.as_str(), format!("@bob:{US}"));
            assert_eq!(checked.invite.origin_server_ts, 1_700_000_000_000);
        }
        // v1: the bare event, room state (and so the version) in its unsigned data.
        for (state, version) in [
            ("[]".to_owned(), "1"),
            (format!("[{}]", create_event("1")), "1"),
            (format!("[{}]", create_event("2")), "2"),
        ] {
            let body = v1_body(invite_event(version), &state);
            let checked = check(Api::V1, body.clone()).unwrap();
            assert_eq!(checked.version.id, version);
            assert_eq!(&Value::from(checked.event), &body);
            assert_eq!(checked.room_state, parse(&state).as_array().unwrap());
        }
    }

    #[test]
    fn v1_room_version_from_create_event() {
        let state = |v: &str| {
            vec![parse(&format!(
                r#"{{"type":"m.room.create","state_key":"","sender":"@a:b","content":{v}}}"#
            ))]
        };
        assert_eq!(room_version(Api::V1, None, &[]).unwrap().id, "1");
        assert_eq!(room_version(Api::V1, None, &state("{}")).unwrap().id, "1");
        assert_eq!(
            room_version(Api::V1, None, &state(r#"{"room_version":"2"}"#))
                .unwrap()
                .id,
            "2"
        );
        let err = room_version(Api::V1, None, &state(r#"{"room_version":"10"}"#)).unwrap_err();
        assert_eq!(err.code, ErrCode::IncompatibleRoomVersion);
        assert_eq!(err.room_version.as_deref(), Some("10"));
        let err = room_version(Api::V2, Some("99"), &[]).unwrap_err();
        assert_eq!(err.code, ErrCode::IncompatibleRoomVersion);
        assert_eq!(err.room_version.as_deref(), Some("99"));
        assert_eq!(err.message, "This server does not support room version 99");
    }

    #[test]
    fn body_shape() {
        use ErrCode::*;
        let ev = || invite_event("10");
        let with = |key: &str, value: &str| {
            let mut b = v2_body("10", ev(), "[]");
            if let Value::Object(o) = &mut b {
                o.insert(key.into(), parse(value));
            }
            b
        };
        let without = |key: &str| {
            let mut b = v2_body("10", ev(), "[]");
            if let Value::Object(o) = &mut b {
                o.remove(key);
            }
            b
        };
        let m = |s: &str| s.to_owned();
        for (api, body, want) in [
            (
                Api::V2,
                parse("[]"),
                (BadJson, m("The request body is not a JSON object")),
            ),
            (
                Api::V1,
                parse("1"),
                (BadJson, m("The request body is not a JSON object")),
            ),
            (
                Api::V2,
                without("room_version"),
                (BadJson, m("Missing 'room_version'")),
            ),
            (
                Api::V2,
                with("room_version", "10"),
                (BadJson, m("'room_version' is not a string")),
            ),
            (Api::V2, without("event"), (BadJson, m("Missing 'event'"))),
            (
                Api::V2,
                with("event", "[]"),
                (BadJson, m("'event' is not an object")),
            ),
            (
                Api::V2,
                with("invite_room_state", "{}"),
                (BadJson, m("'invite_room_state' is not an array")),
            ),
            (
                Api::V1,
                v1_body(ev(), "\"x\""),
                (BadJson, m("'invite_room_state' is not an array")),
            ),
            (
                Api::V2,
                with("room_version", "\"99\""),
                (
                    IncompatibleRoomVersion,
                    m("This server does not support room version 99"),
                ),
            ),
            (
                Api::V1,
                v1_body(ev(), &format!("[{}]", create_event("3"))),
                (
                    IncompatibleRoomVersion,
                    m("This server does not support room version 3"),
                ),
            ),
        ] {
            assert_eq!(refused(api, body), want);
        }
        let mut bad_unsigned = ev();
        bad_unsigned.insert("unsigned".into(), "x".into());
        assert_eq!(
            refused(Api::V1, bad_unsigned.into()),
            (BadJson, m("'unsigned' is not an object"))
        );
        // Absent or null room state is no room state.
        assert!(check(Api::V2, without("invite_room_state")).is_ok());
        assert!(check(Api::V2, with("invite_room_state", "null")).is_ok());
    }

    #[test]
    fn size_limits() {
        let mut big = invite_event("10");
        let pad = MAX_EVENT_BYTES - Value::from(big.clone()).to_canonical_string().len();
        big.insert("x".into(), "a".repeat(pad).into());
        // Adding "x":"" costs 7 bytes on top of the padding: just over the limit.
        let (code, message) = refused(Api::V2, v2_body("10", big.clone(), "[]"));
        assert_eq!(code, ErrCode::TooLarge);
        assert_eq!(
            message,
            format!(
                "The invite event is {} bytes; the limit is 65536",
                MAX_EVENT_BYTES + 7
            )
        );
        big.insert("x".into(), "a".repeat(pad - 7).into());
        assert!(check(Api::V2, v2_body("10", big, "[]")).is_ok());

        let mut long = invite_event("10");
        long.insert("type".into(), "t".repeat(256).into());
        assert_eq!(
            refused(Api::V2, v2_body("10", long, "[]")),
            (
                ErrCode::BadJson,
                "'type' is longer than 255 bytes".to_owned()
            )
        );
    }

    #[test]
    fn event_format() {
        let mut float = invite_event("6");
        float.insert(
            "content".into(),
            parse(r#"{"membership":"invite","x":1.5}"#),
        );
        let (code, message) = refused(Api::V2, v2_body("6", float.clone(), "[]"));
        assert_eq!(code, ErrCode::BadJson);
        assert!(message.starts_with("The invite event is "), "{message}");
        // Versions 1–5 tolerate floats.
        let mut float5 = float;
        float5.insert("room_id".into(), format!("!room:{ORIGIN}").into());
        assert!(check(Api::V2, v2_body("5", float5, "[]")).is_ok());

        let mut no_depth = invite_event("10");
        no_depth.remove("depth");
        assert_eq!(
            refused(Api::V2, v2_body("10", no_depth, "[]")),
            (
                ErrCode::BadJson,
                "The invite event is malformed: 'depth' is missing".to_owned()
            )
        );
    }

    #[test]
    fn invite_semantics() {
        let refused_with = |key: &str, value: &str| {
            let mut e = invite_event("10");
            e.insert(key.into(), parse(value));
            refused(Api::V2, v2_body("10", e, "[]"))
        };
        let invalid = |m: &str| (ErrCode::InvalidParam, m.to_owned());
        assert_eq!(
            refused_with("type", r#""m.room.message""#),
            invalid(r#"The event type is "m.room.message", not m.room.member"#)
        );
        assert_eq!(
            refused_with("content", r#"{"membership":"join"}"#),
            invalid(r#"The event's content.membership is not "invite""#)
        );
        assert_eq!(
            refused_with("sender", r#""@mallory:elsewhere.example""#),
            invalid(
                "The inviter @mallory:elsewhere.example is not a user of the requesting server \
                 origin.example"
            )
        );
        assert!(
            refused_with("sender", r#""alice""#)
                .1
                .starts_with("sender: ")
        );
        assert_eq!(
            refused_with("state_key", r#""@bob:other.example""#),
            invalid("The invited user @bob:other.example is not a user of this server")
        );
        let mut no_key = invite_event("10");
        no_key.remove("state_key");
        assert_eq!(
            refused(Api::V2, v2_body("10", no_key, "[]")),
            invalid("The event has no state_key")
        );
        assert_eq!(
            refused_with("room_id", &format!(r#""{HASH_ROOM}""#)),
            invalid(&format!(
                "The room ID {HASH_ROOM} is not in room version 10's format"
            ))
        );
        let mut v12 = invite_event("12");
        v12.insert("room_id".into(), format!("!room:{ORIGIN}").into());
        assert_eq!(
            refused(Api::V2, v2_body("12", v12, "[]")),
            invalid("The room ID !room:origin.example is not in room version 12's format")
        );
    }

    #[test]
    fn path_agreement() {
        let origin = ServerName::parse(ORIGIN).unwrap();
        let us = ServerName::parse(US).unwrap();
        let event = invite_event("10");
        let id = event_id(&event, RoomVersion::by_id("10").unwrap()).unwrap();
        let body = || v2_body("10", event.clone(), "[]");
        let room = format!("!room:{ORIGIN}");
        let e = check_request(Api::V2, body(), &origin, &us, "!other:x", id.as_str());
        assert_eq!(
            e.unwrap_err().message,
            format!("The event's room_id {room} does not match the path's !other:x")
        );
        let e = check_request(Api::V2, body(), &origin, &us, &room, "$other");
        assert_eq!(
            e.unwrap_err().message,
            format!("The event's ID {id} does not match the path's $other")
        );
        assert!(check_request(Api::V2, body(), &origin, &us, &room, id.as_str()).is_ok());
    }

    #[test]
    fn response_shapes() {
        assert_eq!(response_body(Api::V2, "{}"), r#"{"event":{}}"#);
        assert_eq!(response_body(Api::V1, "{}"), r#"[200,{"event":{}}]"#);
        assert_eq!((Api::V1.number(), Api::V2.number()), (1, 2));
    }

    #[test]
    fn fingerprints_ignore_unsigned() {
        // SHA-256 of "{}".
        assert_eq!(
            fingerprint(&Object::new()),
            "RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o"
        );
        let event = invite_event("10");
        let mut retry = event.clone();
        retry.insert("unsigned".into(), parse(r#"{"age":9000}"#));
        assert_eq!(fingerprint(&event), fingerprint(&retry));
        retry.insert("depth".into(), Value::int(8));
        assert_ne!(fingerprint(&event), fingerprint(&retry));
    }
}
