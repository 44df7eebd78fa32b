//! `invite_room_state` (MSC4311): which entries are full PDUs, whether they belong to the
//! invite's room and verify, and what to store. Spec:
//! <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv2inviteroomideventid>
//! and MSC4311 (room version 12 makes failures fatal).

use invited_matrix::json::{Value, canonical_object_except};
use invited_matrix::pdu::{check_pdu_format, is_full_pdu};
use invited_matrix::{
    ErrCode, RoomId, RoomVersion, ServerName, UserId, check_strict, room_id_from_create_event,
    verify_event_signatures,
};
use sha2::{Digest, Sha256};

use super::invalid;
use crate::config::RoomStateChecks;
use crate::error::{MatrixError, Refusal, RefusalKind};
use crate::federation::keyring::{EventKeyLookup, FetchScope, Keyring};
use crate::store::RoomStateRow;

/// A bounded memory of `invite_room_state` PDUs whose signatures verified recently, keyed by
/// the SHA-256 of the room version and the PDU's exact canonical JSON (signatures included).
///
/// Every invite to a room carries the same create event and state; a wave of invites to one
/// room would otherwise verify the same signatures again and again. Identical bytes verify
/// identically under the same keys, and entries expire so key changes are seen.
pub struct VerifiedPdus {
    seen: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>,
}

impl VerifiedPdus {
    /// How long a verification is remembered.
    const TTL: std::time::Duration = std::time::Duration::from_secs(600);
    /// Entries at most.
    const MAX: usize = 8192;

    pub fn new() -> VerifiedPdus {
        VerifiedPdus {
            seen: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn key(version: &RoomVersion, canonical_pdu: Option<&str>) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(version.id.as_bytes());
        h.update([0]);
        h.update(canonical_pdu.unwrap_or_default().as_bytes());
        h.finalize().into()
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        self.seen
            .lock()
            .ok()
            .and_then(|m| m.get(key).copied())
            .is_some_and(|at| at.elapsed() < Self::TTL)
    }

    fn insert(&self, key: [u8; 32]) {
        if let Ok(mut m) = self.seen.lock() {
            if m.len() >= Self::MAX {
                m.retain(|_, at| at.elapsed() < Self::TTL);
                if m.len() >= Self::MAX {
                    m.clear();
                }
            }
            m.insert(key, std::time::Instant::now());
        }
    }
}

impl Default for VerifiedPdus {
    fn default() -> Self {
        VerifiedPdus::new()
    }
}

/// What checking an invite's `invite_room_state` needs to know.
pub(super) struct RoomStateCheck<'a> {
    pub version: &'static RoomVersion,
    pub room_id: &'a RoomId,
    /// The authenticated origin: its keys may be fetched for the room state.
    pub origin: &'a ServerName,
    pub keyring: &'a Keyring,
    pub mode: RoomStateChecks,
    /// The client's address, for its share of key fetches.
    pub requester: Option<std::net::IpAddr>,
    pub verified: &'a VerifiedPdus,
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// Step 7: `invite_room_state` (MSC4311). Returns the rows to store and the warnings; refuses
/// (400 `M_INVALID_PARAM`) when the mode and room version say problems are fatal, and
/// (413 `M_TOO_LARGE`) a room state larger than real servers send (5–10 events of a few KB).
///
/// Keys are fetched only for the origin and the create event's sender's server (the two
/// MSC4311 needs), directly; other servers' signatures are checked against keys we already
/// have, and an unknown key is a warning: one invite must not make us connect to every
/// server its room state names.
pub(super) fn check_room_state(
    entries: &[Value],
    check: &RoomStateCheck<'_>,
) -> Result<(Vec<RoomStateRow>, Vec<String>), Refusal> {
    let RoomStateCheck {
        version,
        room_id,
        mode,
        ..
    } = *check;
    if entries.len() > check.max_entries {
        return Err(too_large(format!(
            "invite_room_state has {} entries; the limit is {}",
            entries.len(),
            check.max_entries
        )));
    }
    let create_server = entries
        .iter()
        .find(|e| {
            e["type"].as_str() == Some("m.room.create") && e["state_key"].as_str() == Some("")
        })
        .and_then(|e| e["sender"].as_str())
        .and_then(|sender| UserId::parse(sender).ok());
    let busy = std::cell::Cell::new(false);
    let mut fetchable = vec![check.origin.as_str()];
    fetchable.extend(create_server.as_ref().map(UserId::server_str));
    let mut rows = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut create_seen = false;
    let mut bytes = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        let row = match stripped_row(i, entry) {
            Ok(row) => row,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        bytes += row.content.len() + row.pdu.as_ref().map_or(0, String::len);
        if bytes > check.max_bytes {
            return Err(too_large(format!(
                "invite_room_state is over {} bytes",
                check.max_bytes
            )));
        }
        if mode != RoomStateChecks::Off {
            create_seen |= is_create(&row);
            match pdu_problems(i, entry, &row, version, room_id) {
                // Not a PDU of this version at all: its signatures mean nothing.
                Err(problem) => problems.push(problem),
                Ok(found) => {
                    problems.extend(found);
                    let keys = EventKeyLookup {
                        scope: FetchScope::Only(&fetchable),
                        requester: check.requester,
                        busy: &busy,
                    };
                    problems.extend(signature_problem(i, entry, &row, check, keys));
                }
            }
        }
        rows.push(row);
    }
    // A key not looked up for want of fetch capacity says nothing about the room state.
    if busy.get() {
        return Err(RefusalKind::Unavailable.check(MatrixError::fetches_busy()));
    }
    if mode != RoomStateChecks::Off && !create_seen {
        problems.push("invite_room_state has no m.room.create event".to_owned());
    }
    let fatal = match mode {
        RoomStateChecks::Off => false,
        RoomStateChecks::Strict => true,
        RoomStateChecks::Spec => version.room_id_is_create_event_hash,
    };
    let problems = bounded(problems);
    if fatal && !problems.is_empty() {
        return Err(RefusalKind::RoomState.check(invalid(format!(
            "Invalid invite_room_state: {}",
            problems.join("; ")
        ))));
    }
    Ok((rows, problems))
}

/// Warnings stored per invite at most, and bytes per warning: they quote what the sender sent.
const MAX_WARNINGS: usize = 20;
const MAX_WARNING_BYTES: usize = 512;

/// The problems as stored and answered: each cut to [`MAX_WARNING_BYTES`], at most
/// [`MAX_WARNINGS`] of them, the rest counted in a last one.
fn bounded(mut problems: Vec<String>) -> Vec<String> {
    let more = problems.len().saturating_sub(MAX_WARNINGS);
    problems.truncate(MAX_WARNINGS);
    for p in &mut problems {
        if p.len() > MAX_WARNING_BYTES {
            let mut end = MAX_WARNING_BYTES - 3;
            while !p.is_char_boundary(end) {
                end -= 1;
            }
            p.truncate(end);
            p.push('…');
        }
    }
    if more > 0 {
        problems.push(format!("and {more} more problems"));
    }
    problems
}

fn too_large(why: String) -> Refusal {
    RefusalKind::Size.check(MatrixError::new(ErrCode::TooLarge, why))
}

/// The entry as stored: its client (stripped) form, and the full PDU when it is one. An entry
/// without the four stripped fields is a problem, and not stored.
fn stripped_row(i: usize, entry: &Value) -> Result<RoomStateRow, String> {
    let Some(obj) = entry.as_object() else {
        return Err(format!("invite_room_state[{i}] is not an object"));
    };
    let (Some(event_type), Some(state_key), Some(sender), Some(content)) = (
        obj.get("type").and_then(Value::as_str),
        obj.get("state_key").and_then(Value::as_str),
        obj.get("sender").and_then(Value::as_str),
        obj.get("content").and_then(Value::as_object),
    ) else {
        return Err(format!(
            "invite_room_state[{i}] lacks type, state_key, sender or content"
        ));
    };
    Ok(RoomStateRow {
        event_type: event_type.to_owned(),
        state_key: state_key.to_owned(),
        sender: sender.to_owned(),
        content: canonical_object_except(content, &[]),
        pdu: is_full_pdu(obj).then(|| entry.to_canonical_string()),
    })
}

fn is_create(row: &RoomStateRow) -> bool {
    row.event_type == "m.room.create" && row.state_key.is_empty()
}

fn what(i: usize, row: &RoomStateRow) -> String {
    format!("invite_room_state[{i}] ({})", row.event_type)
}

/// What is wrong with an entry as a PDU of this room, without keys. `Err`: not a full PDU
/// of the version's format (nothing more to check); `Ok`: the problems of a well-formed PDU
/// (not in the invite's room; for the create event, another version), whose signatures are
/// still checked.
fn pdu_problems(
    i: usize,
    entry: &Value,
    row: &RoomStateRow,
    version: &RoomVersion,
    room_id: &RoomId,
) -> Result<Vec<String>, String> {
    // Named only when there is a problem to name: most entries have none.
    let what = || what(i, row);
    let (Some(obj), Some(_)) = (entry.as_object(), &row.pdu) else {
        return Err(format!("{} is not a full PDU", what()));
    };
    if version.strict_canonical_json
        && let Err(e) = check_strict(entry)
    {
        return Err(format!("{} is {e}", what()));
    }
    check_pdu_format(obj, version).map_err(|e| format!("{} is malformed: {e}", what()))?;
    let mut problems = Vec::new();
    if is_create(row) && version.room_id_is_create_event_hash {
        let derived = room_id_from_create_event(obj, version);
        if &derived != room_id {
            problems.push(format!(
                "{} is the create event of {derived}, not of {room_id}",
                what()
            ));
        }
    } else if obj.get("room_id").and_then(Value::as_str) != Some(room_id.as_str()) {
        problems.push(format!("{} is not in room {room_id}", what()));
    }
    if is_create(row) {
        let declared = RoomVersion::declared_by_create(&entry["content"]);
        if declared != version.id {
            problems.push(format!(
                "{} declares room version {declared}, the invite says {}",
                what(),
                version.id
            ));
        }
    }
    Ok(problems)
}

/// Whether a full PDU's signatures verify (remembered, so a wave of invites to one room
/// verifies its state once).
fn signature_problem(
    i: usize,
    entry: &Value,
    row: &RoomStateRow,
    check: &RoomStateCheck<'_>,
    lookup: EventKeyLookup<'_>,
) -> Option<String> {
    let (version, verified) = (check.version, check.verified);
    let obj = entry.as_object()?;
    let fingerprint = VerifiedPdus::key(version, row.pdu.as_deref());
    if verified.contains(&fingerprint) {
        return None;
    }
    let ts = obj
        .get("origin_server_ts")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let keys = check
        .keyring
        .event_keys(ts, version.enforce_key_validity, lookup);
    match verify_event_signatures(obj, version, &keys) {
        Ok(()) => {
            verified.insert(fingerprint);
            if let Ok(sender) = UserId::parse(&row.sender)
                && let Ok(server) = ServerName::parse(sender.server_str())
            {
                check.keyring.confirm(&server);
            }
            None
        }
        Err(e) => Some(format!("{}: {e}", what(i, row))),
    }
}
