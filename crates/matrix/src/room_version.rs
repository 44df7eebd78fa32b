//! The one table of room versions 1–12.
//!
//! Every difference between room versions that this project cares about is a field here, so
//! no other code compares version strings. Source: the spec's room version pages,
//! <https://spec.matrix.org/v1.16/rooms/>.

/// How events of a room version are laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    /// Versions 1–2: an `event_id` field; `prev_events`/`auth_events` are `[id, {hashes}]` pairs.
    V1,
    /// Versions 3+: no `event_id` field; `prev_events`/`auth_events` are lists of ID strings.
    V3,
}

/// How an event's ID is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventIdFormat {
    /// Versions 1–2: the `event_id` field, `$opaque:server`.
    Field,
    /// Version 3: `$` + standard unpadded base64 of the reference hash.
    HashStandard,
    /// Versions 4+: `$` + URL-safe unpadded base64 of the reference hash.
    HashUrlSafe,
}

/// What a room version's redaction algorithm keeps. Each flag is one change a later room
/// version made to the v1 rules (<https://spec.matrix.org/v1.16/client-server-api/#redactions>
/// and each version's page, e.g. <https://spec.matrix.org/v1.16/rooms/v11/#redactions>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedactionRules {
    /// v1–v10 keep top-level `origin`, `membership` and `prev_state`; v11 drops them.
    pub keep_origin_membership_prev_state: bool,
    /// v1–v5 keep `m.room.aliases` `aliases`; v6 empties it.
    pub keep_aliases: bool,
    /// v8+ keep `m.room.join_rules` `allow`.
    pub keep_join_rules_allow: bool,
    /// v9+ keep `m.room.member` `join_authorised_via_users_server`.
    pub keep_join_authorised_via_users_server: bool,
    /// v11+ keep all of `m.room.create` content (and no longer single out `creator`).
    pub keep_all_create_content: bool,
    /// v11+ keep `m.room.redaction` `content.redacts`.
    pub keep_redaction_redacts: bool,
    /// v11+ keep `m.room.power_levels` `invite`.
    pub keep_power_levels_invite: bool,
    /// v11+ keep `m.room.member` `third_party_invite`, reduced to its `signed` key.
    pub keep_third_party_invite_signed: bool,
}

/// Everything about one room version that the invite path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomVersion {
    /// The version string, e.g. `"12"`.
    pub id: &'static str,
    pub event_format: EventFormat,
    pub event_id_format: EventIdFormat,
    pub redaction: RedactionRules,
    /// Versions 6+ must refuse non-canonical JSON (floats, integers beyond ±(2^53−1)).
    pub strict_canonical_json: bool,
    /// Versions 5+: an event key must be valid (`valid_until_ts`, capped at fetch + 7 days) at
    /// the event's `origin_server_ts`; versions 1–4 ignore `valid_until_ts`.
    pub enforce_key_validity: bool,
    /// Version 12: the room ID is `!` + the create event's reference hash, and the create
    /// event has no `room_id`.
    pub room_id_is_create_event_hash: bool,
    /// Versions 1–10 allow a top-level `redacts` key on redaction events (v11 moved it).
    pub top_level_redacts: bool,
    /// The largest `depth` the PDU format allows.
    pub max_depth: i64,
    /// Versions 1–2 are the only ones `PUT /_matrix/federation/v1/invite` can carry: "Servers
    /// which receive a v1 invite request must assume that the room version is either "1" or
    /// "2"" (<https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv1inviteroomideventid>).
    pub v1_invite_api: bool,
    /// Version 12: clients get the room's create event as the full PDU rather than stripped
    /// state, so they can check the room ID is its hash (MSC4311,
    /// <https://github.com/matrix-org/matrix-spec-proposals/pull/4311>).
    pub create_event_full_pdu_for_clients: bool,
}

const R_V1: RedactionRules = RedactionRules {
    keep_origin_membership_prev_state: true,
    keep_aliases: true,
    keep_join_rules_allow: false,
    keep_join_authorised_via_users_server: false,
    keep_all_create_content: false,
    keep_redaction_redacts: false,
    keep_power_levels_invite: false,
    keep_third_party_invite_signed: false,
};
const R_V6: RedactionRules = RedactionRules {
    keep_aliases: false,
    ..R_V1
};
const R_V8: RedactionRules = RedactionRules {
    keep_join_rules_allow: true,
    ..R_V6
};
const R_V9: RedactionRules = RedactionRules {
    keep_join_authorised_via_users_server: true,
    ..R_V8
};
const R_V11: RedactionRules = RedactionRules {
    keep_origin_membership_prev_state: false,
    keep_all_create_content: true,
    keep_redaction_redacts: true,
    keep_power_levels_invite: true,
    keep_third_party_invite_signed: true,
    ..R_V9
};

const I64_MAX: i64 = i64::MAX;
const SAFE_MAX: i64 = crate::json::MAX_SAFE_INTEGER;

// One positional argument per table column keeps the table below readable as a table.
#[allow(clippy::too_many_arguments)]
const fn v(
    id: &'static str,
    event_format: EventFormat,
    event_id_format: EventIdFormat,
    redaction: RedactionRules,
    strict: bool,
    keys: bool,
    v12: bool,
    top_level_redacts: bool,
    max_depth: i64,
    v1_api: bool,
    full_create: bool,
) -> RoomVersion {
    RoomVersion {
        id,
        event_format,
        event_id_format,
        redaction,
        strict_canonical_json: strict,
        enforce_key_validity: keys,
        room_id_is_create_event_hash: v12,
        top_level_redacts,
        max_depth,
        v1_invite_api: v1_api,
        create_event_full_pdu_for_clients: full_create,
    }
}

use crate::json::Value;
use EventFormat::{V1 as F1, V3 as F3};
use EventIdFormat::{Field, HashStandard, HashUrlSafe};

/// Every room version we support, in order.
#[rustfmt::skip]
pub static ROOM_VERSIONS: [RoomVersion; 12] = [
    //  id    format id-format     redaction strict keys   v12    redacts depth     v1-api full-create
    v("1",  F1, Field,        R_V1,  false, false, false, true,  I64_MAX,  true,  false),
    v("2",  F1, Field,        R_V1,  false, false, false, true,  I64_MAX,  true,  false),
    v("3",  F3, HashStandard, R_V1,  false, false, false, true,  I64_MAX,  false, false),
    v("4",  F3, HashUrlSafe,  R_V1,  false, false, false, true,  I64_MAX,  false, false),
    v("5",  F3, HashUrlSafe,  R_V1,  false, true,  false, true,  I64_MAX,  false, false),
    v("6",  F3, HashUrlSafe,  R_V6,  true,  true,  false, true,  SAFE_MAX, false, false),
    v("7",  F3, HashUrlSafe,  R_V6,  true,  true,  false, true,  SAFE_MAX, false, false),
    v("8",  F3, HashUrlSafe,  R_V8,  true,  true,  false, true,  SAFE_MAX, false, false),
    v("9",  F3, HashUrlSafe,  R_V9,  true,  true,  false, true,  SAFE_MAX, false, false),
    v("10", F3, HashUrlSafe,  R_V9,  true,  true,  false, true,  SAFE_MAX, false, false),
    v("11", F3, HashUrlSafe,  R_V11, true,  true,  false, false, SAFE_MAX, false, false),
    v("12", F3, HashUrlSafe,  R_V11, true,  true,  true,  false, SAFE_MAX, false, true),
];

/// What an `m.room.create` event without `content.room_version` means: "Defaults to "1" if
/// the key does not exist" (<https://spec.matrix.org/v1.16/client-server-api/#mroomcreate>).
const CREATE_EVENT_DEFAULT: &str = "1";

impl RoomVersion {
    /// The room version with this exact identifier, if we support it.
    pub fn by_id(id: &str) -> Option<&'static RoomVersion> {
        ROOM_VERSIONS.iter().find(|v| v.id == id)
    }

    /// The version identifier an `m.room.create` event's `content` declares: its
    /// `room_version` string, or `"1"` when there is none (a non-string counts as none). Not
    /// necessarily a version we support.
    pub fn declared_by_create(content: &Value) -> &str {
        content
            .get("room_version")
            .and_then(Value::as_str)
            .unwrap_or(CREATE_EVENT_DEFAULT)
    }

    /// The room version of a `/v1/invite` request. `declared` is what the create event in its
    /// room state declares ([`RoomVersion::declared_by_create`]); a request without a create
    /// event is for version 1. `None` when the declared version is not one the v1 API carries
    /// ([`RoomVersion::v1_invite_api`]).
    pub fn for_v1_api(declared: Option<&str>) -> Option<&'static RoomVersion> {
        RoomVersion::by_id(declared.unwrap_or(CREATE_EVENT_DEFAULT)).filter(|v| v.v1_invite_api)
    }

    /// Whether events carry an `event_id` field (versions 1–2).
    pub fn has_event_id_field(&self) -> bool {
        self.event_id_format == EventIdFormat::Field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_complete_and_ordered() {
        for (i, rv) in ROOM_VERSIONS.iter().enumerate() {
            assert_eq!(rv.id, (i + 1).to_string());
            assert_eq!(RoomVersion::by_id(rv.id), Some(rv));
        }
        assert!(RoomVersion::by_id("13").is_none());
        assert!(RoomVersion::by_id("org.matrix.msc1234").is_none());
        assert!(RoomVersion::by_id("01").is_none());
        let v = |id| RoomVersion::by_id(id).unwrap();
        assert!(!v("5").strict_canonical_json && v("6").strict_canonical_json);
        assert!(!v("4").enforce_key_validity && v("5").enforce_key_validity);
        assert!(v("12").room_id_is_create_event_hash && !v("11").room_id_is_create_event_hash);
        assert_eq!(v("3").event_id_format, EventIdFormat::HashStandard);
        assert_eq!(v("2").event_format, EventFormat::V1);
        assert_eq!(v("3").event_format, EventFormat::V3);
        assert!(v("5").redaction.keep_aliases && !v("6").redaction.keep_aliases);
        assert!(!v("7").redaction.keep_join_rules_allow && v("8").redaction.keep_join_rules_allow);
        assert!(v("10").redaction.keep_origin_membership_prev_state);
        assert!(!v("11").redaction.keep_origin_membership_prev_state);
        assert_eq!(v("11").redaction, v("12").redaction);
        let v1_api: Vec<_> = ROOM_VERSIONS.iter().filter(|v| v.v1_invite_api).collect();
        assert_eq!(v1_api, [v("1"), v("2")]);
        let full_create: Vec<_> = ROOM_VERSIONS
            .iter()
            .filter(|v| v.create_event_full_pdu_for_clients)
            .collect();
        assert_eq!(full_create, [v("12")]);
    }

    #[test]
    fn declared_by_create_event() {
        let content = |text| crate::json::parse(text).unwrap();
        assert_eq!(RoomVersion::declared_by_create(&content("{}")), "1");
        assert_eq!(
            RoomVersion::declared_by_create(&content(r#"{"room_version":5}"#)),
            "1"
        );
        let v11 = content(r#"{"room_version":"11"}"#);
        assert_eq!(RoomVersion::declared_by_create(&v11), "11");
        let odd = content(r#"{"room_version":"org.example.custom"}"#);
        assert_eq!(RoomVersion::declared_by_create(&odd), "org.example.custom");
    }

    #[test]
    fn v1_api_versions() {
        let id = |declared| RoomVersion::for_v1_api(declared).map(|v| v.id);
        assert_eq!(id(None), Some("1"));
        assert_eq!(id(Some("1")), Some("1"));
        assert_eq!(id(Some("2")), Some("2"));
        assert_eq!(id(Some("3")), None);
        assert_eq!(id(Some("12")), None);
        assert_eq!(id(Some("99")), None);
        assert_eq!(id(Some("")), None);
    }
}
