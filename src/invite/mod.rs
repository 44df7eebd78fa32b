//! `PUT /_matrix/federation/{v1,v2}/invite/{roomId}/{eventId}`: the reason invited exists.
//!
//! [`handle`] reads like the pipeline of `shared/spec/invite.md` §6: each step either passes
//! or answers with the spec's error and stops. We check everything the spec asks (some real
//! servers skip parts), never sign what we should not, and return exactly what we received
//! plus our signature.

use invited_http::{Request, Response};
use invited_matrix::json::{self, Object, Value};
use invited_matrix::{
    ErrCode, EventBytes, EventFormat, RoomId, RoomVersion, ServerName, SigningKey, UserId, base64,
    check_content_hash, check_strict, event_id_with, sign_event_with, verify_event_signatures_with,
};
use sha2::{Digest, Sha256};

use crate::config::RoomStateChecks;
use crate::error::MatrixError;
use crate::federation::auth::authenticate;
use crate::federation::keyring::Keyring;
use crate::policy::{Decision, InviteFacts, Policy};
mod room_state;

pub use room_state::VerifiedPdus;
use room_state::check_room_state;

use crate::store::{InviteState, NewInvite, RefusalRow, StoreError, StorePool, StoredInvite};
use crate::writer::Writer;

/// The largest invite event we accept, as canonical JSON (the spec's PDU limit).
pub const MAX_EVENT_BYTES: usize = 65_536;

/// Which invite endpoint a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/invite`: the body is the event; answers `[200, {"event": …}]`; room versions 1–2.
    V1,
    /// `/v2/invite`: `{room_version, event, invite_room_state}`; answers `{"event": …}`.
    V2,
}

impl Api {
    fn number(self) -> i64 {
        match self {
            Api::V1 => 1,
            Api::V2 => 2,
        }
    }
}

/// What the invite handler needs from the rest of the server.
pub struct InviteContext<'a> {
    pub our_name: &'a ServerName,
    pub signing_key: &'a SigningKey,
    pub keyring: &'a Keyring,
    pub store: &'a StorePool,
    pub room_state_checks: RoomStateChecks,
    pub policy: &'a Policy,
    /// Where invites and refusals are written (group commit).
    pub writer: &'a Writer,
    /// State PDUs whose signatures already verified (invite waves repeat the same room state).
    pub verified_state: &'a VerifiedPdus,
    pub now_ms: i64,
}

/// A refusal after authentication: the error, and the rule or check to log.
struct Refused {
    error: MatrixError,
    rule: Option<String>,
}

impl From<MatrixError> for Refused {
    fn from(error: MatrixError) -> Refused {
        Refused { error, rule: None }
    }
}

/// What we knew about a refused invite when we refused it, for the refusal log.
#[derive(Default)]
struct Known {
    sender: Option<String>,
    invitee: Option<String>,
    room_id: Option<String>,
    event_id: Option<String>,
}

pub(super) fn invalid(why: impl Into<String>) -> MatrixError {
    MatrixError::new(ErrCode::InvalidParam, why)
}

fn store_failed(e: StoreError) -> MatrixError {
    log::error!("{e}");
    MatrixError::internal()
}

/// Handles one invite request for the (percent-decoded) room and event IDs of its path;
/// `origin` is set as soon as the request is authenticated (for the request log).
pub fn handle(
    ctx: &InviteContext<'_>,
    request: &Request,
    api: Api,
    path_room_id: &str,
    path_event_id: &str,
    origin: &mut Option<ServerName>,
) -> Result<Response, MatrixError> {
    // 1. The body must be JSON before we can check the signature over it; then authenticate.
    if request.body.is_empty() {
        return Err(MatrixError::not_json("The request body is empty"));
    }
    let body = json::parse_bytes(&request.body).map_err(|e| {
        if e.is_syntax() {
            MatrixError::not_json(format!("Content not JSON: {e}"))
        } else {
            // JSON, but not JSON we accept (duplicate keys, a number out of range).
            MatrixError::bad_json(format!("Content refused: {e}"))
        }
    })?;
    let sender_server = authenticate(request, Some(&body), ctx.our_name, ctx.keyring, ctx.now_ms)?;
    *origin = Some(sender_server.clone());

    // From here on every refusal is logged for the operator.
    let mut known = Known::default();
    let result = handle_authenticated(
        ctx,
        api,
        path_room_id,
        path_event_id,
        &body,
        &sender_server,
        &mut known,
    );
    match result {
        Ok(response) => Ok(response),
        Err(Refused { error, rule }) => {
            if error.status() < 500 {
                let row = RefusalRow {
                    ts: ctx.now_ms,
                    origin: sender_server.to_string(),
                    sender: known.sender,
                    invitee: known.invitee,
                    room_id: known.room_id,
                    event_id: known.event_id,
                    rule: rule.unwrap_or_else(|| error.message.chars().take(300).collect()),
                    errcode: error.errcode().to_owned(),
                    status: i64::from(error.status()),
                };
                ctx.writer.log_refusal(row);
            }
            Err(error)
        }
    }
}

/// Steps 2–9, for an authenticated request.
fn handle_authenticated(
    ctx: &InviteContext<'_>,
    api: Api,
    path_room_id: &str,
    path_event_id: &str,
    body: &Value,
    sender_server: &ServerName,
    known: &mut Known,
) -> Result<Response, Refused> {
    let event_field = |e: &Value, f: &str| e.get(f).and_then(Value::as_str).map(str::to_owned);
    let raw_event = match api {
        Api::V2 => body.get("event").unwrap_or(&Value::Null),
        Api::V1 => body,
    };
    known.sender = event_field(raw_event, "sender");
    known.invitee = event_field(raw_event, "state_key");
    known.room_id = event_field(raw_event, "room_id").or_else(|| Some(path_room_id.to_owned()));
    known.event_id = Some(path_event_id.to_owned());

    let CheckedRequest {
        version,
        event,
        bytes,
        room_state: raw_room_state,
        invite: checked,
        event_id,
    } = check_request(
        api,
        body,
        sender_server,
        ctx.our_name,
        path_room_id,
        path_event_id,
    )?;

    // A retry of an invite we already answered: same answer, no second effect. The request
    // signature above was checked, so a stored event only goes back to its own origin.
    let fingerprint = fingerprint(&event);
    if let Some(stored) = ctx
        .store
        .with(|s| s.find_invite(event_id.as_str()))
        .map_err(store_failed)?
    {
        return Ok(replay(&stored, sender_server, &fingerprint, api)?);
    }

    // 6. Signatures (sender's server; v1/v2 also the event ID's server) and content hash.
    let keys = ctx
        .keyring
        .event_keys(checked.origin_server_ts, version.enforce_key_validity);
    verify_event_signatures_with(&event, version, &bytes, &keys)
        .map_err(|e| invalid(format!("The invite event's signature check failed: {e}")))?;
    check_content_hash(&event).map_err(|e| invalid(format!("The invite event's {e}")))?;

    // 7. invite_room_state (MSC4311).
    let (room_state, warnings) = check_room_state(
        &raw_room_state,
        version,
        &checked.room_id,
        ctx.keyring,
        ctx.room_state_checks,
        ctx.verified_state,
    )?;

    // 8. Policy: operator rules, the invitee's settings, rate limits.
    let decision = ctx
        .policy
        .evaluate(
            ctx.store,
            &InviteFacts {
                origin: sender_server,
                sender: &checked.sender,
                invitee: &checked.invitee,
                room_id: &checked.room_id,
            },
        )
        .map_err(|r| Refused {
            error: r.error,
            rule: Some(r.rule),
        })?;
    let state = match &decision {
        Decision::Accept => InviteState::Pending,
        Decision::Ignore(rule) => {
            log::info!("invite {event_id} from {sender_server} ignored by {rule}");
            InviteState::Ignored
        }
    };

    // 9. Co-sign: our signature over the redacted event; nothing else changes.
    let mut signed = event.clone();
    sign_event_with(&mut signed, &bytes, ctx.our_name, ctx.signing_key).map_err(|e| {
        log::error!("cannot co-sign {event_id}: {e}");
        MatrixError::internal()
    })?;
    let signed_text = Value::Object(signed).to_canonical_string();

    // 10. Persist durably, then answer (with whatever won a concurrent race).
    let new = NewInvite {
        event_id: event_id.to_string(),
        room_id: checked.room_id.to_string(),
        room_version: version.id.to_owned(),
        invitee: checked.invitee.to_string(),
        sender: checked.sender.to_string(),
        origin: sender_server.to_string(),
        origin_server_ts: checked.origin_server_ts,
        received_ts: ctx.now_ms,
        api_version: api.number(),
        event_fingerprint: fingerprint.clone(),
        signed_event: signed_text,
        state,
        room_state,
        warnings,
    };
    for w in &new.warnings {
        log::info!("invite {event_id}: warning: {w}");
    }
    let stored = ctx.writer.store_invite(new).map_err(store_failed)?;
    Ok(replay(&stored, sender_server, &fingerprint, api)?)
}

/// An invite request that passed steps 2–5 (everything that needs no keys or storage).
pub struct CheckedRequest {
    pub version: &'static RoomVersion,
    pub event: Object,
    /// What the event's signatures cover (redacted canonical bytes).
    pub bytes: EventBytes,
    /// `invite_room_state` as received (checked later, with keys).
    pub room_state: Vec<Value>,
    pub invite: CheckedInvite,
    pub event_id: invited_matrix::EventId,
}

/// Steps 2–5 of the pipeline: body shape and size, room version, event format, invite
/// semantics, path agreement. Pure: no keys, no storage, so it can be fuzzed alone.
pub fn check_request(
    api: Api,
    body: &Value,
    origin: &ServerName,
    our_name: &ServerName,
    path_room_id: &str,
    path_event_id: &str,
) -> Result<CheckedRequest, MatrixError> {
    // 2. Body shape.
    let parsed = parse_body(body, api)?;
    let event = parsed.event;

    // 3. Room version.
    let version = room_version(api, parsed.room_version.as_deref(), &parsed.room_state)?;

    // 4. Event format for that version (strict canonical JSON from v6).
    if version.strict_canonical_json {
        event
            .values()
            .try_for_each(check_strict)
            .map_err(|e| MatrixError::bad_json(format!("The invite event is {e}")))?;
    }
    check_pdu_format(&event, version)
        .map_err(|e| MatrixError::bad_json(format!("The invite event is malformed: {e}")))?;

    // 5. What makes it an invite for one of our users, from the origin, for this path.
    let checked = check_invite_semantics(&event, version, origin, our_name)?;
    if checked.room_id.as_str() != path_room_id {
        return Err(invalid(format!(
            "The event's room_id {} does not match the path's {path_room_id}",
            checked.room_id
        )));
    }
    // The redacted canonical bytes give the event ID (v3+), and later the signature checks
    // and our co-signature: compute them once.
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
        room_state: parsed.room_state,
        invite: checked,
        event_id,
    })
}

/// The answer for a stored invite, if this request is the same invite from the same origin.
fn replay(
    stored: &StoredInvite,
    origin: &ServerName,
    fingerprint: &str,
    api: Api,
) -> Result<Response, MatrixError> {
    if stored.origin != origin.as_str() || stored.event_fingerprint != fingerprint {
        return Err(invalid(format!(
            "A different invite event was already received with the ID {}",
            stored.event_id
        )));
    }
    let body = if stored.api_version == api.number() {
        stored.response_body.clone()
    } else {
        response_body(api, &stored.signed_event)
    };
    Ok(Response::json(200, body.into_bytes()))
}

fn response_body(api: Api, signed_event: &str) -> String {
    match api {
        Api::V2 => format!("{{\"event\":{signed_event}}}"),
        Api::V1 => format!("[200,{{\"event\":{signed_event}}}]"),
    }
}

/// SHA-256 of the event without `unsigned`: a retry may carry different `unsigned` data.
fn fingerprint(event: &Object) -> String {
    let text = json::canonical_object_except(event, &["unsigned"]);
    base64::encode(&Sha256::digest(text.as_bytes()))
}

struct Body {
    room_version: Option<String>,
    event: Object,
    room_state: Vec<Value>,
}

/// Step 2: the body's shape (v2 wrapper or v1 bare event) and the size limits.
fn parse_body(body: &Value, api: Api) -> Result<Body, MatrixError> {
    let obj = body
        .as_object()
        .ok_or_else(|| MatrixError::bad_json("The request body is not a JSON object"))?;
    let (room_version, event, state) = match api {
        Api::V2 => {
            let rv = match obj.get("room_version") {
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(MatrixError::bad_json("'room_version' is not a string")),
                None => return Err(MatrixError::bad_json("Missing 'room_version'")),
            };
            let event = match obj.get("event") {
                Some(Value::Object(e)) => e.clone(),
                Some(_) => return Err(MatrixError::bad_json("'event' is not an object")),
                None => return Err(MatrixError::bad_json("Missing 'event'")),
            };
            (Some(rv), event, obj.get("invite_room_state"))
        }
        Api::V1 => {
            let state = obj.get("unsigned").and_then(|u| u.get("invite_room_state"));
            if obj.get("unsigned").is_some_and(|u| u.as_object().is_none()) {
                return Err(MatrixError::bad_json("'unsigned' is not an object"));
            }
            (None, obj.clone(), state)
        }
    };
    let room_state = match state {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err(MatrixError::bad_json("'invite_room_state' is not an array")),
    };
    let size = json::canonical_object_except(&event, &[]).len();
    if size > MAX_EVENT_BYTES {
        return Err(MatrixError::new(
            ErrCode::TooLarge,
            format!("The invite event is {size} bytes; the limit is {MAX_EVENT_BYTES}"),
        ));
    }
    for field in ["sender", "room_id", "event_id", "state_key", "type"] {
        if let Some(Value::String(s)) = event.get(field)
            && s.len() > invited_matrix::ids::MAX_ID_BYTES
        {
            return Err(MatrixError::bad_json(format!(
                "'{field}' is longer than 255 bytes"
            )));
        }
    }
    Ok(Body {
        room_version,
        event,
        room_state,
    })
}

/// Step 3: the room version, from the v2 body, or for v1 from the create event in the room
/// state (a v1 request can only be for room versions 1–2; "1" when nothing says otherwise).
fn room_version(
    api: Api,
    requested: Option<&str>,
    room_state: &[Value],
) -> Result<&'static RoomVersion, MatrixError> {
    let incompatible = |v: &str| {
        MatrixError::new(
            ErrCode::IncompatibleRoomVersion,
            format!("This server does not support room version {v}"),
        )
        .with("room_version", v.into())
    };
    match api {
        Api::V2 => {
            let v = requested.unwrap_or_default();
            RoomVersion::by_id(v).ok_or_else(|| incompatible(v))
        }
        Api::V1 => {
            let from_create = room_state
                .iter()
                .find(|e| e.get("type").and_then(Value::as_str) == Some("m.room.create"))
                .map(|c| {
                    c.get("content")
                        .and_then(|c| c.get("room_version"))
                        .and_then(Value::as_str)
                        .unwrap_or("1")
                        .to_owned()
                });
            match from_create.as_deref() {
                None | Some("1") => RoomVersion::by_id("1").ok_or_else(|| incompatible("1")),
                Some("2") => RoomVersion::by_id("2").ok_or_else(|| incompatible("2")),
                Some(other) => Err(incompatible(other)),
            }
        }
    }
}

/// Step 4: the PDU format of the room version (field presence and types).
pub fn check_pdu_format(event: &Object, version: &RoomVersion) -> Result<(), String> {
    let string = |f: &str| match event.get(f) {
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(format!("'{f}' is not a string")),
        None => Err(format!("'{f}' is missing")),
    };
    let integer = |f: &str| match event.get(f) {
        Some(v) if v.as_i64().is_some() => Ok(v.as_i64().unwrap_or(0)),
        Some(_) => Err(format!("'{f}' is not an integer")),
        None => Err(format!("'{f}' is missing")),
    };
    let object = |f: &str| match event.get(f) {
        Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(format!("'{f}' is not an object")),
        None => Err(format!("'{f}' is missing")),
    };
    string("type")?;
    string("sender")?;
    object("content")?;
    object("signatures")?;
    object("hashes")?;
    if event
        .get("hashes")
        .and_then(|h| h.get("sha256"))
        .and_then(Value::as_str)
        .is_none()
    {
        return Err("'hashes.sha256' is missing or not a string".to_owned());
    }
    integer("origin_server_ts")?;
    let depth = integer("depth")?;
    if depth < 0 || depth > version.max_depth {
        return Err(format!("'depth' {depth} is out of range"));
    }
    if let Some(sk) = event.get("state_key")
        && sk.as_str().is_none()
    {
        return Err("'state_key' is not a string".to_owned());
    }
    let is_v12_create = version.room_id_is_create_event_hash
        && event.get("type").and_then(Value::as_str) == Some("m.room.create");
    if is_v12_create {
        if event.contains_key("room_id") {
            return Err("a room version 12 create event must not have 'room_id'".to_owned());
        }
    } else {
        string("room_id")?;
    }
    if version.has_event_id_field() {
        string("event_id")?;
    }
    for list in ["prev_events", "auth_events"] {
        let items = match event.get(list) {
            Some(Value::Array(items)) => items,
            Some(_) => return Err(format!("'{list}' is not an array")),
            None => return Err(format!("'{list}' is missing")),
        };
        let ok = match version.event_format {
            EventFormat::V1 => items.iter().all(|i| {
                i.as_array().is_some_and(|pair| {
                    pair.len() == 2 && pair[0].as_str().is_some() && pair[1].as_object().is_some()
                })
            }),
            EventFormat::V3 => items.iter().all(|i| i.as_str().is_some()),
        };
        if !ok {
            return Err(format!(
                "'{list}' entries are not in room version {}'s format",
                version.id
            ));
        }
    }
    if event
        .get("unsigned")
        .is_some_and(|u| u.as_object().is_none())
    {
        return Err("'unsigned' is not an object".to_owned());
    }
    if !version.top_level_redacts && event.contains_key("redacts") {
        return Err(format!(
            "room version {} has no top-level 'redacts'",
            version.id
        ));
    }
    Ok(())
}

/// The invite facts step 5 established.
pub struct CheckedInvite {
    pub sender: UserId,
    pub invitee: UserId,
    pub room_id: RoomId,
    pub origin_server_ts: i64,
}

/// Step 5: type, membership, sender's server == origin, invitee on our server, room ID form.
fn check_invite_semantics(
    event: &Object,
    version: &RoomVersion,
    origin: &ServerName,
    our_name: &ServerName,
) -> Result<CheckedInvite, MatrixError> {
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

    #[test]
    fn v1_room_version_from_create_event() {
        let state = |v: &str| {
            vec![
                json::parse(&format!(
                    r#"{{"type":"m.room.create","state_key":"","sender":"@a:b","content":{v}}}"#
                ))
                .unwrap(),
            ]
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
        assert_eq!(err.extra.get("room_version"), Some(&Value::from("10")));
        let err = room_version(Api::V2, Some("99"), &[]).unwrap_err();
        assert_eq!(err.code, ErrCode::IncompatibleRoomVersion);
    }

    #[test]
    fn response_shapes() {
        assert_eq!(response_body(Api::V2, "{}"), r#"{"event":{}}"#);
        assert_eq!(response_body(Api::V1, "{}"), r#"[200,{"event":{}}]"#);
    }
}
