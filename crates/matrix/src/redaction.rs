//! The redaction algorithm of every room version.
//!
//! Redaction decides far more than what a redacted message looks like: signatures and
//! reference hashes (so event IDs and v12 room IDs) are computed over the redacted form.
//! The differences between versions are flags in [`RedactionRules`]; this file only applies
//! them.

use crate::json::{Object, Value, write_canonical, write_canonical_object, write_canonical_str};
use crate::room_version::RedactionRules;

/// Top-level keys every rule set keeps.
const KEPT_TOP_LEVEL: &[&str] = &[
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
];

/// Top-level keys that room versions 1–10 keep and 11+ drop.
const KEPT_TOP_LEVEL_BEFORE_V11: &[&str] = &["origin", "membership", "prev_state"];

/// Returns the redacted copy of an event under `rules`. The input is not changed. A missing
/// or non-object `content` becomes `{}`.
pub fn redact(event: &Object, rules: &RedactionRules) -> Object {
    let mut out = Object::new();
    for (key, value) in event {
        if keeps_top_level(key, rules) && key != "content" {
            out.insert_str(key.clone(), value.clone());
        }
    }
    let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
    let content = match event.get("content") {
        Some(Value::Object(c)) => redact_content(event_type, c, rules),
        _ => Object::new(),
    };
    out.insert("content".to_owned(), Value::Object(content));
    out
}

/// The canonical JSON text of `redact(event, rules)` without the top-level keys in `skip`,
/// written straight from the event, with no redacted copy: signing bytes and reference
/// hashes are this, for every event the server checks or signs, and the copy was most of
/// their cost. `tests` holds it to [`redact`] followed by `canonical_object_except`.
pub fn redacted_canonical_except(event: &Object, rules: &RedactionRules, skip: &[&str]) -> String {
    // Events are about a kilobyte: start there rather than grow through reallocs.
    let mut out = String::with_capacity(1024);
    out.push('{');
    let mut first = true;
    // `redact` always has `content` (`{}` when the event has none or not an object); it
    // goes where its key sorts.
    let mut content_written = skip.contains(&"content");
    for (key, value) in event {
        let key = key.as_str();
        if !content_written && key >= "content" {
            // Here is `content`, or where it would sort: the event has none.
            member(&mut out, &mut first, "content");
            match value {
                Value::Object(c) if key == "content" => {
                    write_redacted_content(&mut out, event, c, rules)
                }
                _ => out.push_str("{}"),
            }
            content_written = true;
        }
        if key != "content" && keeps_top_level(key, rules) && !skip.contains(&key) {
            member(&mut out, &mut first, key);
            write_canonical(&mut out, value);
        }
    }
    if !content_written {
        member(&mut out, &mut first, "content");
        out.push_str("{}");
    }
    out.push('}');
    out
}

/// Starts an object member: a comma unless it is the first, the key, a colon.
fn member(out: &mut String, first: &mut bool, key: &str) {
    if !*first {
        out.push(',');
    }
    *first = false;
    write_canonical_str(out, key);
    out.push(':');
}

/// The canonical text of [`redact_content`]'s result, written from the original content.
fn write_redacted_content(
    out: &mut String,
    event: &Object,
    content: &Object,
    rules: &RedactionRules,
) {
    let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
    if event_type == "m.room.create" && rules.keep_all_create_content {
        write_canonical_object(out, content);
        return;
    }
    let keep = kept_content_keys(event_type, rules);
    let reduce_third_party_invite =
        event_type == "m.room.member" && rules.keep_third_party_invite_signed;
    out.push('{');
    let mut first = true;
    for (key, value) in content {
        if keep.contains(&key.as_str()) {
            member(out, &mut first, key);
            write_canonical(out, value);
        } else if reduce_third_party_invite
            && key == "third_party_invite"
            && let Value::Object(tpi) = value
        {
            member(out, &mut first, key);
            out.push('{');
            if let Some(signed) = tpi.get("signed") {
                out.push_str("\"signed\":");
                write_canonical(out, signed);
            }
            out.push('}');
        }
    }
    out.push('}');
}

/// Whether redaction keeps this top-level key.
fn keeps_top_level(key: &str, rules: &RedactionRules) -> bool {
    KEPT_TOP_LEVEL.contains(&key)
        || (rules.keep_origin_membership_prev_state && KEPT_TOP_LEVEL_BEFORE_V11.contains(&key))
}

fn redact_content(event_type: &str, content: &Object, rules: &RedactionRules) -> Object {
    if event_type == "m.room.create" && rules.keep_all_create_content {
        return content.clone();
    }
    let keep = kept_content_keys(event_type, rules);
    let mut out: Object = keep
        .iter()
        .filter_map(|k| content.get(k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    // v11+: keep only `signed` of a third-party invite. The spec is silent about an object
    // without `signed`; like Synapse, keep `{}` for an object and drop anything else.
    if event_type == "m.room.member"
        && rules.keep_third_party_invite_signed
        && let Some(Value::Object(tpi)) = content.get("third_party_invite")
    {
        let mut reduced = Object::new();
        if let Some(signed) = tpi.get("signed") {
            reduced.insert("signed".to_owned(), signed.clone());
        }
        out.insert("third_party_invite".to_owned(), Value::Object(reduced));
    }
    out
}

/// The content keys redaction keeps for an event of this type (besides the special cases:
/// all of a v11+ create event's, the `signed` part of a v11+ member's third-party invite).
fn kept_content_keys(event_type: &str, rules: &RedactionRules) -> Vec<&'static str> {
    let mut keep: Vec<&'static str> = Vec::new();
    match event_type {
        "m.room.member" => {
            keep.push("membership");
            if rules.keep_join_authorised_via_users_server {
                keep.push("join_authorised_via_users_server");
            }
        }
        "m.room.create" => keep.push("creator"),
        "m.room.join_rules" => {
            keep.push("join_rule");
            if rules.keep_join_rules_allow {
                keep.push("allow");
            }
        }
        "m.room.power_levels" => {
            keep.extend([
                "ban",
                "events",
                "events_default",
                "kick",
                "redact",
                "state_default",
                "users",
                "users_default",
            ]);
            if rules.keep_power_levels_invite {
                keep.push("invite");
            }
        }
        "m.room.aliases" if rules.keep_aliases => keep.push("aliases"),
        "m.room.history_visibility" => keep.push("history_visibility"),
        "m.room.redaction" if rules.keep_redaction_redacts => keep.push("redacts"),
        _ => {}
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;
    use crate::room_version::RoomVersion;

    fn redacted(version: &str, event: &str) -> String {
        let v = parse(event).unwrap();
        let rules = &RoomVersion::by_id(version).unwrap().redaction;
        Value::Object(redact(v.as_object().unwrap(), rules)).to_canonical_string()
    }

    #[test]
    fn top_level_keys_by_version() {
        let ev = r#"{"type":"m.room.message","origin":"o","membership":"join","prev_state":[],
            "unsigned":{"age":1},"redacts":"$x","extra":1,"content":{"body":"hi"},"depth":1}"#;
        assert_eq!(
            redacted("10", ev),
            r#"{"content":{},"depth":1,"membership":"join","origin":"o","prev_state":[],"type":"m.room.message"}"#
        );
        assert_eq!(
            redacted("11", ev),
            r#"{"content":{},"depth":1,"type":"m.room.message"}"#
        );
    }

    #[test]
    fn content_rules_by_version() {
        let aliases = r##"{"type":"m.room.aliases","content":{"aliases":["#a:b"],"x":1}}"##;
        assert_eq!(
            redacted("5", aliases),
            r##"{"content":{"aliases":["#a:b"]},"type":"m.room.aliases"}"##
        );
        assert_eq!(
            redacted("6", aliases),
            r#"{"content":{},"type":"m.room.aliases"}"#
        );

        let jr = r#"{"type":"m.room.join_rules","content":{"join_rule":"restricted","allow":[{"a":1}],"x":1}}"#;
        assert_eq!(
            redacted("7", jr),
            r#"{"content":{"join_rule":"restricted"},"type":"m.room.join_rules"}"#
        );
        assert_eq!(
            redacted("8", jr),
            r#"{"content":{"allow":[{"a":1}],"join_rule":"restricted"},"type":"m.room.join_rules"}"#
        );

        let member = r#"{"type":"m.room.member","content":{"membership":"join","join_authorised_via_users_server":"@u:s","displayname":"d","third_party_invite":{"signed":{"k":1},"display_name":"x"}}}"#;
        assert_eq!(
            redacted("8", member),
            r#"{"content":{"membership":"join"},"type":"m.room.member"}"#
        );
        assert_eq!(
            redacted("9", member),
            r#"{"content":{"join_authorised_via_users_server":"@u:s","membership":"join"},"type":"m.room.member"}"#
        );
        assert_eq!(
            redacted("11", member),
            r#"{"content":{"join_authorised_via_users_server":"@u:s","membership":"join","third_party_invite":{"signed":{"k":1}}},"type":"m.room.member"}"#
        );
        let tpi_no_signed = r#"{"type":"m.room.member","content":{"membership":"invite","third_party_invite":{"x":1}}}"#;
        assert_eq!(
            redacted("12", tpi_no_signed),
            r#"{"content":{"membership":"invite","third_party_invite":{}},"type":"m.room.member"}"#
        );
        let tpi_string = r#"{"type":"m.room.member","content":{"membership":"invite","third_party_invite":"x"}}"#;
        assert_eq!(
            redacted("12", tpi_string),
            r#"{"content":{"membership":"invite"},"type":"m.room.member"}"#
        );

        let create = r#"{"type":"m.room.create","content":{"creator":"@a:b","room_version":"10","m.federate":false}}"#;
        assert_eq!(
            redacted("10", create),
            r#"{"content":{"creator":"@a:b"},"type":"m.room.create"}"#
        );
        assert_eq!(
            redacted("11", create),
            r#"{"content":{"creator":"@a:b","m.federate":false,"room_version":"10"},"type":"m.room.create"}"#
        );

        let pl = r#"{"type":"m.room.power_levels","content":{"ban":50,"invite":0,"notifications":{"room":50},"users":{"@a:b":100}}}"#;
        assert_eq!(
            redacted("10", pl),
            r#"{"content":{"ban":50,"users":{"@a:b":100}},"type":"m.room.power_levels"}"#
        );
        assert_eq!(
            redacted("11", pl),
            r#"{"content":{"ban":50,"invite":0,"users":{"@a:b":100}},"type":"m.room.power_levels"}"#
        );

        let red =
            r#"{"type":"m.room.redaction","redacts":"$a","content":{"redacts":"$a","reason":"r"}}"#;
        assert_eq!(
            redacted("10", red),
            r#"{"content":{},"type":"m.room.redaction"}"#
        );
        assert_eq!(
            redacted("11", red),
            r#"{"content":{"redacts":"$a"},"type":"m.room.redaction"}"#
        );

        let hv = r#"{"type":"m.room.history_visibility","content":{"history_visibility":"shared","x":1}}"#;
        assert_eq!(
            redacted("1", hv),
            r#"{"content":{"history_visibility":"shared"},"type":"m.room.history_visibility"}"#
        );
    }

    #[test]
    fn odd_content() {
        assert_eq!(
            redacted("12", r#"{"type":"m.room.member","content":"x"}"#),
            r#"{"content":{},"type":"m.room.member"}"#
        );
        assert_eq!(redacted("1", r#"{"type":5}"#), r#"{"content":{},"type":5}"#);
    }
}
