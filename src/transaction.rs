//! `PUT /_matrix/federation/v1/send/{txnId}`
//! (<https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv1sendtxnid>).
//!
//! We are in no room, so the one PDU we act on is an inviter withdrawing an invite we hold
//! (a kick of our invited user; Synapse sends it to the invitee's server since 1.139). Every
//! other PDU gets an error entry in the per-PDU results, EDUs are ignored, and every
//! authenticated, well-formed transaction is answered 200: after anything else a sender backs
//! off from us altogether. A transaction that changed something keeps its answer, so a retry
//! of the same (origin, txnId) gets the same answer and no second effect.

use invited_http::{Request, Response};
use invited_matrix::json::{Object, Value};
use invited_matrix::leave::{HeldInvite, check_rescind, transaction_pdus};
use invited_matrix::{
    EventBytes, RoomVersion, ServerName, check_strict, event_id_with, verify_event_signatures_with,
};

use crate::error::MatrixError;
use crate::federation::auth::authenticate;
use crate::federation::keyring::{EventKeyLookup, FetchScope, Keyring};
use crate::store::{HeldInviteRow, StoreError, StorePool};
use crate::text::printable;

/// Whether a PDU withdrew an invite; the error says why not (its per-PDU result).
type Verdict = Result<(), String>;

/// How long a transaction's answer is kept for retries.
const ANSWERS_KEPT_MS: i64 = 24 * 3600 * 1000;

/// What the transaction handler needs from the rest of the server.
pub struct TransactionContext<'a> {
    pub our_name: &'a ServerName,
    pub keyring: &'a Keyring,
    pub store: &'a StorePool,
    pub now_ms: i64,
    /// The client's address, for its share of key fetches.
    pub peer: Option<std::net::IpAddr>,
    /// Set when a key was not fetched for want of capacity: the transaction then gets 503,
    /// which the sender retries, rather than a verdict on its PDUs.
    pub busy: std::cell::Cell<bool>,
}

/// Handles one transaction with the (percent-decoded) `txn_id` of its path; `origin` is set
/// as soon as the request is authenticated (for the request log).
pub fn handle(
    ctx: &TransactionContext<'_>,
    request: &Request,
    txn_id: &str,
    origin: &mut Option<ServerName>,
) -> Result<Response, MatrixError> {
    let body = MatrixError::parse_body(&request.body)?;
    let sender = authenticate(request, Some(&body), ctx.our_name, ctx.keyring, ctx.now_ms)?;
    *origin = Some(sender.clone());

    if let Some(answer) = ctx
        .store
        .with(|s| s.transaction_answer(sender.as_str(), txn_id))
        .map_err(MatrixError::store_failed)?
    {
        return Ok(Response::json(200, answer.into_bytes()));
    }
    let pdus = transaction_pdus(&body).map_err(MatrixError::bad_json)?;
    let mut results = Object::new();
    let mut changed = false;
    for pdu in pdus {
        let Some((id, result)) = consider(ctx, &sender, pdu).map_err(MatrixError::store_failed)?
        else {
            continue;
        };
        changed |= result.is_ok();
        let mut entry = Object::new();
        if let Err(why) = result {
            entry.insert("error".into(), why.into());
        }
        results.insert(id, Value::Object(entry));
    }
    if ctx.busy.get() {
        return Err(MatrixError::fetches_busy());
    }
    let mut answer = Object::new();
    answer.insert("pdus".into(), Value::Object(results));
    let answer = Value::Object(answer).to_canonical_string();
    if changed {
        ctx.store
            .with(|s| {
                s.save_transaction_answer(
                    sender.as_str(),
                    txn_id,
                    &answer,
                    ctx.now_ms,
                    ctx.now_ms - ANSWERS_KEPT_MS,
                )
            })
            .map_err(MatrixError::store_failed)?;
    }
    Ok(Response::json(200, answer.into_bytes()))
}

/// One PDU: `None` when it concerns no room we hold an invite in (no entry, as Synapse does
/// for rooms it does not know); otherwise its event ID and whether it withdrew an invite
/// (the error says why not).
fn consider(
    ctx: &TransactionContext<'_>,
    origin: &ServerName,
    pdu: &Value,
) -> Result<Option<(String, Verdict)>, StoreError> {
    let Some(pdu) = pdu.as_object() else {
        return Ok(None);
    };
    let Some(room_id) = pdu.get("room_id").and_then(Value::as_str) else {
        return Ok(None);
    };
    let held = ctx.store.with(|s| s.held_invites_in_room(room_id))?;
    let Some(version) = held
        .first()
        .and_then(|h| RoomVersion::by_id(&h.room_version))
    else {
        return Ok(None);
    };
    let bytes = EventBytes::of(pdu, version);
    let Ok(id) = event_id_with(pdu, version, Some(&bytes)) else {
        return Ok(None);
    };
    let id = id.as_str().to_owned();
    let state_key = pdu.get("state_key").and_then(Value::as_str);
    let Some(invite) = held.iter().find(|h| Some(h.invitee.as_str()) == state_key) else {
        return Ok(Some((
            id,
            Err("We hold no invite this event is about".into()),
        )));
    };
    let result = rescind(ctx, origin, pdu, version, &bytes, invite, &id)?;
    Ok(Some((id, result)))
}

/// Checks that `pdu` withdraws `invite` and records it.
fn rescind(
    ctx: &TransactionContext<'_>,
    origin: &ServerName,
    pdu: &Object,
    version: &RoomVersion,
    bytes: &EventBytes,
    invite: &HeldInviteRow,
    id: &str,
) -> Result<Verdict, StoreError> {
    let held = HeldInvite {
        event_id: &invite.event_id,
        room_id: pdu.get("room_id").and_then(Value::as_str).unwrap_or(""),
        invitee: &invite.invitee,
        sender: &invite.sender,
        origin_server_ts: invite.origin_server_ts,
    };
    if let Err(why) = check_rescind(pdu, version, &held) {
        log::info!(
            "transaction from {origin}: {} does not withdraw {}: {}",
            printable(id),
            printable(&invite.event_id),
            printable(&why)
        );
        return Ok(Err(format!("Not acted on: {why}")));
    }
    if version.strict_canonical_json
        && let Err(e) = check_strict(&Value::Object(pdu.clone()))
    {
        return Ok(Err(format!("Not acted on: {e}")));
    }
    // Keys of the inviter's server (the one whose signature counts); cheap checks passed.
    let ts = pdu
        .get("origin_server_ts")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let keys = ctx.keyring.event_keys(
        ts,
        version.enforce_key_validity,
        EventKeyLookup {
            scope: FetchScope::Any,
            requester: ctx.peer,
            busy: &ctx.busy,
        },
    );
    if let Err(e) = verify_event_signatures_with(pdu, version, bytes, &keys) {
        return Ok(Err(format!("Signature check failed: {e}")));
    }
    let text = Value::Object(pdu.clone()).to_canonical_string();
    let changed = ctx
        .store
        .with(|s| s.record_rescind(&invite.event_id, id, &text, origin.as_str(), ctx.now_ms))?;
    if changed {
        log::info!(
            "invite {} rescinded by {} (from {origin})",
            printable(&invite.event_id),
            printable(id)
        );
    }
    Ok(Ok(()))
}
