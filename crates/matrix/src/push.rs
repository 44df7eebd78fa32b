//! What a homeserver tells a push gateway about an invite, with no I/O: the body of
//! `POST /_matrix/push/v1/notify`
//! (<https://spec.matrix.org/v1.16/push-gateway-api/#post_matrixpushv1notify>), and what the
//! gateway's answer means for the pusher.
//!
//! The spec's default push rule `.m.rule.invite_for_me` notifies a user of their invites with
//! a sound (<https://spec.matrix.org/v1.16/client-server-api/#default-override-rules>), so the
//! notification is `prio: high` with the `sound` tweak, as Synapse sends it.

use crate::json::{Object, Value};

/// The path every gateway URL must have: a pusher's `data.url`
/// (<https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3pushersset>).
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// The one device a notification goes to: a pusher as the client set it.
#[derive(Debug, Clone, Copy)]
pub struct Device<'a> {
    pub app_id: &'a str,
    pub pushkey: &'a str,
    /// When the pushkey was set, in seconds (`pushkey_ts`).
    pub pushkey_ts_secs: i64,
    /// The pusher's `data`, `url` included (it is not forwarded).
    pub data: &'a Object,
}

/// The invite a notification is about.
#[derive(Debug, Clone, Copy)]
pub struct InviteNotice<'a> {
    pub event_id: &'a str,
    /// The co-signed invite event (for `room_id`, `type`, `sender`, `content`).
    pub event: &'a Value,
    /// `m.room.name` from the invite's room state, if any.
    pub room_name: Option<&'a str>,
    /// The inviter's display name from their member event in the room state, if any.
    pub sender_display_name: Option<&'a str>,
    /// The invitee's pending invites, this one included (`counts.unread`).
    pub unread: i64,
}

/// Whether the pusher wants only the event's ID (`data.format = "event_id_only"`).
pub fn event_id_only(data: &Object) -> bool {
    data.get("format").and_then(Value::as_str) == Some("event_id_only")
}

/// The body of the notification about `notice` for `device`. With `event_id_only`, only what
/// that format allows: `event_id`, `room_id`, `prio`, `counts` and the device without tweaks.
pub fn invite_notification(notice: &InviteNotice<'_>, device: &Device<'_>) -> Value {
    let only_id = event_id_only(device.data);
    let mut n = Object::new();
    n.insert("event_id".into(), notice.event_id.into());
    if let Some(room_id) = notice.event.get("room_id") {
        n.insert("room_id".into(), room_id.clone());
    }
    n.insert("prio".into(), "high".into());
    if notice.unread > 0 {
        let mut counts = Object::new();
        counts.insert("unread".into(), notice.unread.into());
        n.insert("counts".into(), Value::Object(counts));
    }
    if !only_id {
        for field in ["type", "sender", "content"] {
            if let Some(v) = notice.event.get(field) {
                n.insert(field.into(), v.clone());
            }
        }
        // The invite's state_key is the user being told.
        n.insert("user_is_target".into(), Value::Bool(true));
        if let Some(name) = notice.sender_display_name {
            n.insert("sender_display_name".into(), name.into());
        }
        if let Some(name) = notice.room_name {
            n.insert("room_name".into(), name.into());
        }
    }
    let mut d = Object::new();
    d.insert("app_id".into(), device.app_id.into());
    d.insert("pushkey".into(), device.pushkey.into());
    d.insert("pushkey_ts".into(), device.pushkey_ts_secs.into());
    let mut data = device.data.clone();
    data.remove("url");
    d.insert("data".into(), Value::Object(data));
    if !only_id {
        let mut tweaks = Object::new();
        tweaks.insert("sound".into(), "default".into());
        tweaks.insert("highlight".into(), Value::Bool(false));
        d.insert("tweaks".into(), Value::Object(tweaks));
    }
    n.insert("devices".into(), Value::Array(vec![Value::Object(d)]));
    let mut body = Object::new();
    body.insert("notification".into(), Value::Object(n));
    Value::Object(body)
}

/// Whether the gateway's answer lists `pushkey` in `rejected`: the pusher must then be
/// deleted. Other values there are about other pushkeys and are ignored.
pub fn pushkey_rejected(answer: Option<&Value>, pushkey: &str) -> bool {
    answer
        .and_then(|a| a.get("rejected"))
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|k| k.as_str() == Some(pushkey)))
}

/// Checks a pusher's `data` as the client API would: an object whose `url` is an `http(s)`
/// URL with path [`NOTIFY_PATH`], and whose `format`, if any, is `event_id_only`.
pub fn check_pusher_data(data: &Value) -> Result<(), String> {
    let data = data
        .as_object()
        .ok_or_else(|| "data must be a JSON object".to_owned())?;
    let url = data
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| "data.url is missing (the push gateway's URL)".to_owned())?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("data.url {url:?} is not an http(s) URL"))?;
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let path = path.split(['?', '#']).next().unwrap_or("");
    if rest.starts_with('/') || path != NOTIFY_PATH {
        return Err(format!(
            "data.url {url:?} must be the gateway's {NOTIFY_PATH} (e.g. \
             https://push.example.org{NOTIFY_PATH})"
        ));
    }
    match data.get("format") {
        None => Ok(()),
        Some(f) if f.as_str() == Some("event_id_only") => Ok(()),
        Some(f) => Err(format!(
            "data.format {} is not supported (only \"event_id_only\", or none)",
            f.to_canonical_string()
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::json::parse;

    fn invite() -> Value {
        parse(
            r#"{"type":"m.room.member","room_id":"!r:them","sender":"@alice:them",
                "state_key":"@bob:us","content":{"membership":"invite","displayname":"Bob"},
                "origin_server_ts":1,"depth":3}"#,
        )
        .unwrap()
    }

    fn data(text: &str) -> Object {
        parse(text).unwrap().as_object().unwrap().clone()
    }

    #[test]
    fn the_default_format_says_who_invited_whom_where() {
        let event = invite();
        let data = data(r#"{"url":"https://gw.example/_matrix/push/v1/notify","x":1}"#);
        let body = invite_notification(
            &InviteNotice {
                event_id: "$inv",
                event: &event,
                room_name: Some("Garden"),
                sender_display_name: Some("Alice"),
                unread: 2,
            },
            &Device {
                app_id: "org.example.app",
                pushkey: "pk",
                pushkey_ts_secs: 1_700_000_000,
                data: &data,
            },
        );
        assert_eq!(
            body.to_canonical_string(),
            r#"{"notification":{"content":{"displayname":"Bob","membership":"invite"},"counts":{"unread":2},"devices":[{"app_id":"org.example.app","data":{"x":1},"pushkey":"pk","pushkey_ts":1700000000,"tweaks":{"highlight":false,"sound":"default"}}],"event_id":"$inv","prio":"high","room_id":"!r:them","room_name":"Garden","sender":"@alice:them","sender_display_name":"Alice","type":"m.room.member","user_is_target":true}}"#
        );
    }

    #[test]
    fn event_id_only_sends_only_what_that_format_allows() {
        let event = invite();
        let data = data(r#"{"url":"https://gw/_matrix/push/v1/notify","format":"event_id_only"}"#);
        let body = invite_notification(
            &InviteNotice {
                event_id: "$inv",
                event: &event,
                room_name: Some("Garden"),
                sender_display_name: None,
                unread: 1,
            },
            &Device {
                app_id: "a",
                pushkey: "pk",
                pushkey_ts_secs: 5,
                data: &data,
            },
        );
        assert_eq!(
            body.to_canonical_string(),
            r#"{"notification":{"counts":{"unread":1},"devices":[{"app_id":"a","data":{"format":"event_id_only"},"pushkey":"pk","pushkey_ts":5}],"event_id":"$inv","prio":"high","room_id":"!r:them"}}"#
        );
    }

    #[test]
    fn only_our_own_pushkey_in_rejected_counts() {
        let a = parse(r#"{"rejected":["other","pk"]}"#).unwrap();
        assert!(pushkey_rejected(Some(&a), "pk"));
        assert!(!pushkey_rejected(Some(&a), "p"));
        assert!(!pushkey_rejected(
            Some(&parse(r#"{"rejected":[]}"#).unwrap()),
            "pk"
        ));
        assert!(!pushkey_rejected(None, "pk"));
    }

    #[test]
    fn pusher_data_needs_the_notify_url() {
        let ok = |t: &str| check_pusher_data(&parse(t).unwrap());
        assert!(ok(r#"{"url":"https://gw.example/_matrix/push/v1/notify"}"#).is_ok());
        assert!(ok(r#"{"url":"http://10.0.0.2:8080/_matrix/push/v1/notify"}"#).is_ok());
        assert!(
            ok(r#"{"url":"https://gw/_matrix/push/v1/notify","format":"event_id_only"}"#).is_ok()
        );
        for bad in [
            r#"{}"#,
            r#"{"url":"https://gw.example/notify"}"#,
            r#"{"url":"https://gw.example"}"#,
            r#"{"url":"ftp://gw/_matrix/push/v1/notify"}"#,
            r#"{"url":"https://gw/_matrix/push/v1/notify","format":"full"}"#,
            r#"[]"#,
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
    }
}
