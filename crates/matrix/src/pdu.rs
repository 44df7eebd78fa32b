//! The shape of a PDU (a federation event) in a room version: which fields it must have, of
//! which JSON types. Spec: <https://spec.matrix.org/v1.16/server-server-api/#pdus> and each
//! version's "Event format", e.g. <https://spec.matrix.org/v1.16/rooms/v1/#event-format>,
//! <https://spec.matrix.org/v1.16/rooms/v3/#event-format>,
//! <https://spec.matrix.org/v1.16/rooms/v12/#event-format>.
//!
//! Only the shape: whether IDs parse, hashes match and signatures verify is checked elsewhere
//! ([`crate::event`]), and canonical numbers by [`crate::check_strict`].

use crate::json::{Object, Value};
use crate::room_version::{EventFormat, RoomVersion};

/// Checks the fields every PDU of `version` has, and their types; the error names the first
/// field that is wrong. Keys it does not know are allowed (the spec lets PDUs carry more).
pub fn check_pdu_format(event: &Object, version: &RoomVersion) -> Result<(), String> {
    let string = |f: &str| match event.get(f) {
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(format!("'{f}' is not a string")),
        None => Err(format!("'{f}' is missing")),
    };
    let integer = |f: &str| match event.get(f).map(Value::as_i64) {
        Some(Some(i)) => Ok(i),
        Some(None) => Err(format!("'{f}' is not an integer")),
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
    // A v12 room ID is the create event's hash, so the create event cannot contain it.
    let is_v12_create = version.room_id_is_create_event_hash
        && event.get("type").and_then(Value::as_str) == Some("m.room.create");
    if is_v12_create {
        if event.contains_key("room_id") {
            return Err(format!(
                "a room version {} create event must not have 'room_id'",
                version.id
            ));
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

/// Whether a room state entry is (meant as) a full PDU rather than stripped state, which has
/// only `type`, `state_key`, `sender` and `content`
/// (<https://spec.matrix.org/v1.16/client-server-api/#stripped-state>): any PDU-only key
/// decides, so a half-stripped PDU is still checked as a PDU, and fails.
pub fn is_full_pdu(entry: &Object) -> bool {
    [
        "hashes",
        "signatures",
        "auth_events",
        "prev_events",
        "depth",
    ]
    .iter()
    .any(|k| entry.contains_key(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    fn v(id: &str) -> &'static RoomVersion {
        RoomVersion::by_id(id).unwrap()
    }

    fn obj(text: &str) -> Object {
        json::parse(text).unwrap().as_object().unwrap().clone()
    }

    /// A v3+ member event; `extra` is spliced in as more members.
    fn v3_event(extra: &str) -> Object {
        obj(&format!(
            r#"{{"type":"m.room.member","sender":"@a:x","state_key":"@b:y","room_id":"!r:x",
                "content":{{"membership":"invite"}},"signatures":{{}},"hashes":{{"sha256":"h"}},
                "origin_server_ts":1,"depth":3,"prev_events":["$p"],"auth_events":["$a1","$a2"]
                {extra}}}"#
        ))
    }

    fn with(mut e: Object, key: &str, value: &str) -> Object {
        e.insert(key.to_owned(), json::parse(value).unwrap());
        e
    }

    fn without(mut e: Object, key: &str) -> Object {
        e.remove(key);
        e
    }

    #[test]
    fn a_good_event_passes_in_its_format() {
        for id in ["3", "4", "6", "10", "11", "12"] {
            assert_eq!(check_pdu_format(&v3_event(""), v(id)), Ok(()), "v{id}");
        }
        // v1/v2: an event_id field and [id, {hashes}] pairs.
        let v1 = with(
            with(
                with(v3_event(""), "event_id", r#""$e:x""#),
                "prev_events",
                r#"[["$p:x",{"sha256":"h"}]]"#,
            ),
            "auth_events",
            "[]",
        );
        assert_eq!(check_pdu_format(&v1, v("1")), Ok(()));
        assert_eq!(check_pdu_format(&v1, v("2")), Ok(()));
        // …which is not the v3 format, and v3 lists are not the v1 format.
        assert_eq!(
            check_pdu_format(&v1, v("3")),
            Err("'prev_events' entries are not in room version 3's format".into())
        );
        assert_eq!(
            check_pdu_format(&with(v3_event(""), "event_id", r#""$e:x""#), v("1")),
            Err("'prev_events' entries are not in room version 1's format".into())
        );
        assert_eq!(
            check_pdu_format(&v3_event(""), v("2")),
            Err("'event_id' is missing".into())
        );
    }

    #[test]
    fn fields_and_types() {
        let e = v3_event("");
        let v10 = v("10");
        for (key, want) in [
            ("type", "'type' is missing"),
            ("sender", "'sender' is missing"),
            ("content", "'content' is missing"),
            ("signatures", "'signatures' is missing"),
            ("hashes", "'hashes' is missing"),
            ("origin_server_ts", "'origin_server_ts' is missing"),
            ("depth", "'depth' is missing"),
            ("room_id", "'room_id' is missing"),
            ("prev_events", "'prev_events' is missing"),
            ("auth_events", "'auth_events' is missing"),
        ] {
            assert_eq!(
                check_pdu_format(&without(e.clone(), key), v10),
                Err(want.into())
            );
        }
        for (key, value, want) in [
            ("type", "1", "'type' is not a string"),
            ("content", "[]", "'content' is not an object"),
            ("hashes", "{}", "'hashes.sha256' is missing or not a string"),
            (
                "hashes",
                r#"{"sha256":1}"#,
                "'hashes.sha256' is missing or not a string",
            ),
            (
                "origin_server_ts",
                "1.5",
                "'origin_server_ts' is not an integer",
            ),
            ("depth", r#""3""#, "'depth' is not an integer"),
            ("depth", "-1", "'depth' -1 is out of range"),
            ("state_key", "null", "'state_key' is not a string"),
            ("prev_events", "{}", "'prev_events' is not an array"),
            ("unsigned", "[]", "'unsigned' is not an object"),
        ] {
            assert_eq!(
                check_pdu_format(&with(e.clone(), key, value), v10),
                Err(want.into()),
                "{key}: {value}"
            );
        }
        // No state_key is fine (not every PDU is a state event); unknown keys are fine.
        assert_eq!(
            check_pdu_format(&without(e.clone(), "state_key"), v10),
            Ok(())
        );
        assert_eq!(check_pdu_format(&with(e, "x.custom", "1"), v10), Ok(()));
    }

    /// Versions 6+ limit `depth` to canonical JSON's integer range; 1–5 to an i64.
    #[test]
    fn depth_limit_follows_the_version() {
        let deep = with(v3_event(""), "depth", "9007199254740992");
        assert_eq!(check_pdu_format(&deep, v("5")), Ok(()));
        assert_eq!(
            check_pdu_format(&deep, v("6")),
            Err("'depth' 9007199254740992 is out of range".into())
        );
        let max = with(v3_event(""), "depth", "9007199254740991");
        assert_eq!(check_pdu_format(&max, v("6")), Ok(()));
    }

    /// Versions 11+ moved `redacts` into `content`.
    #[test]
    fn top_level_redacts() {
        let e = with(v3_event(""), "redacts", r#""$x""#);
        assert_eq!(check_pdu_format(&e, v("10")), Ok(()));
        assert_eq!(
            check_pdu_format(&e, v("11")),
            Err("room version 11 has no top-level 'redacts'".into())
        );
    }

    /// The v12 create event has no room_id (its hash is the room ID); other v12 events need one.
    #[test]
    fn v12_create_event() {
        let create = with(
            without(v3_event(""), "room_id"),
            "type",
            r#""m.room.create""#,
        );
        let create = with(create, "state_key", r#""""#);
        assert_eq!(check_pdu_format(&create, v("12")), Ok(()));
        assert_eq!(
            check_pdu_format(&create, v("11")),
            Err("'room_id' is missing".into())
        );
        assert_eq!(
            check_pdu_format(&with(create, "room_id", r#""!r:x""#), v("12")),
            Err("a room version 12 create event must not have 'room_id'".into())
        );
        assert_eq!(
            check_pdu_format(&without(v3_event(""), "room_id"), v("12")),
            Err("'room_id' is missing".into())
        );
    }

    #[test]
    fn full_or_stripped() {
        let stripped = obj(r#"{"type":"m.room.name","state_key":"","sender":"@a:x","content":{}}"#);
        assert!(!is_full_pdu(&stripped));
        assert!(is_full_pdu(&v3_event("")));
        for key in [
            "hashes",
            "signatures",
            "auth_events",
            "prev_events",
            "depth",
        ] {
            assert!(is_full_pdu(&with(stripped.clone(), key, "{}")), "{key}");
        }
        assert!(!is_full_pdu(&with(stripped, "origin_server_ts", "1")));
    }
}
