//! `PUT /_matrix/federation/{v1,v2}/invite/{roomId}/{eventId}`: the reason invited exists.
//!
//! [`handle`] reads like the spec's invite pipeline
//! (<https://spec.matrix.org/v1.16/server-server-api/#inviting-to-a-room>): each step either
//! passes or answers with the spec's error and stops. We check everything the spec asks (some
//! real servers skip parts), never sign what we should not, and return exactly what we
//! received plus our signature. The checks that need no keys or storage are the pure crate's
//! (`invited_matrix::invite::check_request`); this module adds what needs I/O: the request's
//! signature, retries, the event's signatures, the room state's, policy, and the write.

mod room_state;

use std::cell::Cell;

use invited_http::{Request, Response};
use invited_matrix::invite::{
    Api, CheckedRequest, InviteError, check_request, fingerprint, response_body,
};
use invited_matrix::json::Value;
use invited_matrix::{
    ErrCode, ServerName, SigningKey, check_content_hash, sign_event_with,
    verify_event_signatures_with,
};

pub use room_state::VerifiedPdus;
use room_state::{RoomStateCheck, check_room_state};

use crate::config::InvitesConfig;
use crate::disk::DiskSpace;
use crate::error::{MatrixError, Refusal, RefusalKind};
use crate::federation::auth::authenticate;
use crate::federation::keyring::{EventKeyLookup, FetchScope, Keyring};
use crate::policy::{Decision, InviteFacts, Policy};
use crate::store::{InviteState, NewInvite, RefusalRow, StorePool, StoredInvite};
use crate::text::printable;
use crate::writer::Writer;

/// What the invite handler needs from the rest of the server.
pub struct InviteContext<'a> {
    pub our_name: &'a ServerName,
    pub signing_key: &'a SigningKey,
    pub keyring: &'a Keyring,
    pub store: &'a StorePool,
    /// `[invites]`: room-state checks and limits.
    pub invites: &'a InvitesConfig,
    pub policy: &'a Policy,
    /// Where invites and refusals are written (group commit).
    pub writer: &'a Writer,
    /// Free space on the data directory's disk, against `[invites] min_free_disk_mb`.
    pub disk: &'a DiskSpace,
    /// State PDUs whose signatures already verified (invite waves repeat the same room state).
    pub verified_state: &'a VerifiedPdus,
    pub now_ms: i64,
    /// The client's address: key fetches an invite causes count against its share.
    pub peer: Option<std::net::IpAddr>,
    pub metrics: &'a crate::metrics::Metrics,
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

/// The answer for a request the pure checks refused.
fn refused_by_checks(e: InviteError) -> Refusal {
    let kind = match e.code {
        ErrCode::TooLarge => RefusalKind::Size,
        _ => RefusalKind::EventCheck,
    };
    let error = MatrixError::new(e.code, e.message);
    kind.check(match e.room_version {
        Some(v) => error.with("room_version", v.into()),
        None => error,
    })
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
    if request.body.len() > ctx.invites.max_request_bytes {
        return Err(MatrixError::new(
            ErrCode::TooLarge,
            format!(
                "An invite request may have {} bytes at most ([invites] max_request_bytes)",
                ctx.invites.max_request_bytes
            ),
        ));
    }
    let body = MatrixError::parse_body(&request.body)?;
    let sender_server = authenticate(request, Some(&body), ctx.our_name, ctx.keyring, ctx.now_ms)?;
    *origin = Some(sender_server.clone());

    // From here on every refusal is logged for the operator.
    let mut known = Known::default();
    let result = handle_authenticated(
        ctx,
        api,
        path_room_id,
        path_event_id,
        body,
        &sender_server,
        &mut known,
    );
    match result {
        Ok(response) => Ok(response),
        Err(Refusal { error, rule, kind }) => {
            if error.status() < 500 {
                ctx.metrics.refusal(error.errcode(), kind.as_str());
                let row = RefusalRow {
                    ts: ctx.now_ms,
                    origin: sender_server.to_string(),
                    sender: known.sender,
                    invitee: known.invitee,
                    room_id: known.room_id,
                    event_id: known.event_id,
                    rule,
                    errcode: error.errcode().to_owned(),
                    status: i64::from(error.status()),
                    suppressed: 0,
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
    body: Value,
    sender_server: &ServerName,
    known: &mut Known,
) -> Result<Response, Refusal> {
    let event_field = |e: &Value, f: &str| e.get(f).and_then(Value::as_str).map(str::to_owned);
    let raw_event = match api {
        Api::V2 => body.get("event").unwrap_or(&Value::Null),
        Api::V1 => &body,
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
    )
    .map_err(refused_by_checks)?;

    // A retry of an invite we already answered: same answer, no second effect. The request
    // signature above was checked, so a stored event only goes back to its own origin.
    let fingerprint = fingerprint(&event);
    let held = ctx
        .store
        .with(|s| s.find_invite(event_id.as_str()))
        .map_err(|e| RefusalKind::Internal.check(MatrixError::store_failed(e)))?;
    if let Some(stored) = &held
        && is_retry(stored, sender_server, &fingerprint)
    {
        ctx.metrics.invite("replayed");
        return replay(stored, sender_server, &fingerprint, api)
            .map_err(|e| RefusalKind::Conflict.check(e));
    }

    // 6. Policy first: operator rules, the invitee's settings, room under the rate limits.
    // All cheap, so an invite we refuse anyway costs no key fetch.
    let facts = InviteFacts {
        origin: sender_server,
        sender: &checked.sender,
        invitee: &checked.invitee,
        room_id: &checked.room_id,
    };
    let decision = ctx.policy.evaluate(ctx.store, &facts)?;

    // 7. Signatures (sender's server; v1/v2 also the event ID's server) and content hash.
    let busy = Cell::new(false);
    let keys = ctx.keyring.event_keys(
        checked.origin_server_ts,
        version.enforce_key_validity,
        EventKeyLookup {
            scope: FetchScope::Any,
            requester: ctx.peer,
            busy: &busy,
        },
    );
    verify_event_signatures_with(&event, version, &bytes, &keys).map_err(|e| {
        if busy.get() {
            RefusalKind::Unavailable.check(MatrixError::fetches_busy())
        } else {
            RefusalKind::Signature.check(invalid(format!(
                "The invite event's signature check failed: {e}"
            )))
        }
    })?;
    check_content_hash(&event)
        .map_err(|e| RefusalKind::Signature.check(invalid(format!("The invite event's {e}"))))?;
    // A different event under an ID we hold. Said only now: in room versions 1 and 2 the
    // sender picks the ID, and only the ID's own server (whose signature just verified) may
    // learn that we hold it.
    if let Some(stored) = &held {
        return Err(RefusalKind::Conflict.check(conflict(stored)));
    }

    // 8. invite_room_state (MSC4311).
    let (room_state, warnings) = check_room_state(
        &raw_room_state,
        &RoomStateCheck {
            version,
            room_id: &checked.room_id,
            origin: sender_server,
            keyring: ctx.keyring,
            mode: ctx.invites.room_state_checks,
            requester: ctx.peer,
            verified: ctx.verified_state,
            max_entries: ctx.invites.max_room_state_entries,
            max_bytes: ctx.invites.max_room_state_bytes,
        },
    )?;

    // Only a valid invite is charged against the rate limits.
    ctx.policy.charge(&facts)?;
    let state = match &decision {
        Decision::Accept => InviteState::Pending,
        Decision::Ignore(rule) => {
            log::info!(
                "invite {event_id} from {sender_server} ignored by {}",
                printable(rule)
            );
            InviteState::Ignored
        }
    };

    // Room on disk for it? Below the watermark, 503: senders retry later.
    if !ctx.disk.has_room() {
        return Err(RefusalKind::Unavailable.check(MatrixError::unavailable(
            "This server is low on disk space; try again later",
            60,
        )));
    }

    // 9. Co-sign: our signature over the redacted event; nothing else changes.
    let mut signed = event;
    sign_event_with(&mut signed, &bytes, ctx.our_name, ctx.signing_key).map_err(|e| {
        log::error!("cannot co-sign {event_id}: {e}");
        RefusalKind::Internal.check(MatrixError::internal())
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
        api,
        create_event_as_pdu: version.create_event_full_pdu_for_clients,
        event_fingerprint: fingerprint.clone(),
        signed_event: signed_text,
        state,
        room_state,
        warnings,
    };
    for w in &new.warnings {
        log::info!("invite {event_id}: warning: {}", printable(w));
    }
    let stored = ctx
        .writer
        .store_invite(new)
        .map_err(|e| RefusalKind::Internal.check(MatrixError::store_failed(e)))?;
    // A different event that won a concurrent race for the ID.
    let response = replay(&stored, sender_server, &fingerprint, api)
        .map_err(|e| RefusalKind::Conflict.check(e))?;
    ctx.metrics.invite(match state {
        InviteState::Ignored => "ignored",
        _ => "stored",
    });
    Ok(response)
}

/// The answer for a different event under the ID of `stored`.
fn conflict(stored: &StoredInvite) -> MatrixError {
    invalid(format!(
        "A different invite event was already received with the ID {}",
        stored.event_id
    ))
}

/// Whether a request is a retry of `stored`: the same event from the same origin.
fn is_retry(stored: &StoredInvite, origin: &ServerName, fingerprint: &str) -> bool {
    stored.origin == origin.as_str() && stored.event_fingerprint == fingerprint
}

/// The answer for a stored invite, if this request is the same invite from the same origin.
fn replay(
    stored: &StoredInvite,
    origin: &ServerName,
    fingerprint: &str,
    api: Api,
) -> Result<Response, MatrixError> {
    if !is_retry(stored, origin, fingerprint) {
        return Err(conflict(stored));
    }
    Ok(Response::json(
        200,
        response_body(api, &stored.signed_event).into_bytes(),
    ))
}
