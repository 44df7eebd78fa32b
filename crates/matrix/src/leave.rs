//! The end of an invite we hold but never acted on, with no I/O.
//!
//! Rejecting it over federation borrows a leave template from a server in the room
//! (`make_leave`), checks it, completes and signs it as ours, and sends it back (`send_leave`):
//! <https://spec.matrix.org/v1.16/server-server-api/#leaving-rooms-rejecting-invites>. The
//! template is another server's word, so [`leave_from_template`] accepts only a leave of our
//! user in the room and room version we stored with the invite.
//!
//! The inviter withdrawing it ("rescinding": a kick of our invited user) reaches us as a PDU in
//! a `/send` transaction (<https://spec.matrix.org/v1.16/server-server-api/#transactions>).
//! Holding no room state, we cannot run the auth rules; [`check_rescind`] accepts what the
//! inviter alone could have sent: a leave or ban of the invitee, by the invite's sender, that
//! names the invite among its `auth_events` (Synapse checks the same since 1.139).

use crate::event::add_content_hash;
use crate::ids::ServerName;
use crate::json::{Object, Value};
use crate::pdu::check_pdu_format;
use crate::room_version::{EventIdFormat, RoomVersion};

/// The largest PDU the spec allows, in bytes of canonical JSON
/// (<https://spec.matrix.org/v1.16/client-server-api/#size-limits>).
pub const MAX_PDU_BYTES: usize = 65_536;

/// At most this many PDUs and EDUs in one transaction
/// (<https://spec.matrix.org/v1.16/server-server-api/#transactions>).
pub const MAX_TRANSACTION_PDUS: usize = 50;
pub const MAX_TRANSACTION_EDUS: usize = 100;

/// Whose leave, where, and what we add to the template.
#[derive(Debug, Clone, Copy)]
pub struct LeaveFor<'a> {
    pub room_id: &'a str,
    pub user_id: &'a str,
    /// The room version the invite said (the template must say the same).
    pub version: &'a RoomVersion,
    pub our_name: &'a ServerName,
    pub reason: Option<&'a str>,
    /// Fills `origin_server_ts` when the template has none.
    pub now_ms: i64,
    /// Makes the event ID of room versions 1 and 2, `$<opaque>:<our name>` (the resident's own
    /// ID in the template would need its signature too); later versions get theirs from the
    /// reference hash once signed.
    pub opaque: &'a str,
}

/// Checks a `make_leave` answer against `leave` and turns it into our leave event, hashed but
/// not yet signed. The template's `origin_server_ts` is kept (Synapse's practice), `reason`
/// goes into the content.
pub fn leave_from_template(answer: &Value, leave: &LeaveFor<'_>) -> Result<Object, String> {
    let LeaveFor {
        room_id,
        user_id,
        version: stored,
        our_name,
        reason,
        now_ms,
        opaque,
    } = *leave;
    let answer = answer
        .as_object()
        .ok_or("the answer is not a JSON object")?;
    // No room_version means "1" or "2", which share one event format.
    match answer.get("room_version") {
        None if stored.event_id_format == EventIdFormat::Field => {}
        None => return Err(format!("no room_version, where the room is {}", stored.id)),
        Some(Value::String(v)) if v == stored.id => {}
        Some(v) => {
            return Err(format!(
                "room_version {v}, where the invite said {}",
                stored.id
            ));
        }
    }
    let template = answer
        .get("event")
        .and_then(Value::as_object)
        .ok_or("no 'event' object")?;
    let field = |f: &str| template.get(f).and_then(Value::as_str);
    if field("type") != Some("m.room.member") {
        return Err("the template is not an m.room.member event".into());
    }
    if field("state_key") != Some(user_id) || field("sender") != Some(user_id) {
        return Err(format!(
            "the template's sender and state_key are not {user_id}"
        ));
    }
    if field("room_id") != Some(room_id) {
        return Err(format!("the template is not for room {room_id}"));
    }
    let content = template
        .get("content")
        .and_then(Value::as_object)
        .ok_or("the template has no content")?;
    if content.get("membership").and_then(Value::as_str) != Some("leave") {
        return Err("the template's membership is not 'leave'".into());
    }
    for f in ["prev_events", "auth_events"] {
        if template.get(f).and_then(Value::as_array).is_none() {
            return Err(format!("the template has no '{f}' array"));
        }
    }

    let mut event = template.clone();
    for f in ["hashes", "signatures", "unsigned"] {
        event.remove(f);
    }
    if let Some(reason) = reason {
        let mut content = content.clone();
        content.insert("reason".into(), reason.into());
        event.insert("content".into(), Value::Object(content));
    }
    if event
        .get("origin_server_ts")
        .and_then(Value::as_i64)
        .is_none()
    {
        event.insert("origin_server_ts".into(), now_ms.into());
    }
    if stored.event_id_format == EventIdFormat::Field {
        event.insert("event_id".into(), format!("${opaque}:{our_name}").into());
    } else {
        event.remove("event_id");
    }
    // What we sign must be a PDU of the room's version (depth, integers, every field).
    let mut probe = event.clone();
    add_content_hash(&mut probe);
    probe.insert("signatures".into(), Value::Object(Object::new()));
    check_pdu_format(&probe, stored).map_err(|e| format!("the template is not a PDU: {e}"))?;
    add_content_hash(&mut event);
    Ok(event)
}

/// What we stored of an invite, against which a rescind is checked.
#[derive(Debug, Clone, Copy)]
pub struct HeldInvite<'a> {
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub invitee: &'a str,
    pub sender: &'a str,
    pub origin_server_ts: i64,
}

/// Whether `pdu` withdraws `invite`, checked without keys (the caller verifies the sender
/// server's signature, and computes the event ID, afterwards): format of the stored room
/// version, content hash, a leave or ban of the invitee by the invite's own sender, naming the
/// invite among its `auth_events`, not older than the invite.
pub fn check_rescind(
    pdu: &Object,
    version: &RoomVersion,
    invite: &HeldInvite<'_>,
) -> Result<(), String> {
    check_pdu_format(pdu, version)
        .map_err(|e| format!("not a PDU of room version {}: {e}", version.id))?;
    let field = |f: &str| pdu.get(f).and_then(Value::as_str);
    if field("type") != Some("m.room.member") {
        return Err("not an m.room.member event".into());
    }
    if field("room_id") != Some(invite.room_id) || field("state_key") != Some(invite.invitee) {
        return Err("not about an invite we hold".into());
    }
    let membership = pdu
        .get("content")
        .and_then(|c| c.get("membership"))
        .and_then(Value::as_str);
    if !matches!(membership, Some("leave" | "ban")) {
        return Err("its membership is neither 'leave' nor 'ban'".into());
    }
    if field("sender") != Some(invite.sender) {
        return Err(format!(
            "only the inviter ({}) can withdraw the invite here: we hold no room state to check \
             anyone else's power",
            invite.sender
        ));
    }
    let names_invite = pdu
        .get("auth_events")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                // Room versions 1–2: [event ID, {hashes}]; later: the ID alone.
                let id = match r {
                    Value::Array(pair) => pair.first().and_then(Value::as_str),
                    other => other.as_str(),
                };
                id == Some(invite.event_id)
            })
        });
    if !names_invite {
        return Err("the invite is not among its auth_events".into());
    }
    let ts = pdu
        .get("origin_server_ts")
        .and_then(Value::as_i64)
        .unwrap_or(i64::MIN);
    if ts < invite.origin_server_ts {
        return Err("it is older than the invite".into());
    }
    crate::event::check_content_hash(pdu).map_err(|e| format!("its {e}"))?;
    Ok(())
}

/// The PDUs of a `/send` transaction body, after its limits: `pdus` an array of at most 50,
/// `edus` (optional) an array of at most 100. The error is the 400's message.
pub fn transaction_pdus(body: &Value) -> Result<&[Value], String> {
    let body = body
        .as_object()
        .ok_or("the transaction is not a JSON object")?;
    let pdus = body
        .get("pdus")
        .and_then(Value::as_array)
        .ok_or("the transaction has no 'pdus' array")?;
    if pdus.len() > MAX_TRANSACTION_PDUS {
        return Err(format!(
            "{} PDUs; a transaction may carry {MAX_TRANSACTION_PDUS} at most",
            pdus.len()
        ));
    }
    match body.get("edus") {
        None => {}
        Some(Value::Array(edus)) if edus.len() <= MAX_TRANSACTION_EDUS => {}
        Some(Value::Array(edus)) => {
            return Err(format!(
                "{} EDUs; a transaction may carry {MAX_TRANSACTION_EDUS} at most",
                edus.len()
            ));
        }
        Some(_) => return Err("'edus' is not an array".into()),
    }
    Ok(pdus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{check_content_hash, event_id, sign_event, verify_event_signatures};
    use crate::json;
    use crate::signing::SigningKey;
    use crate::{EventKeys, KeyId, VerifyKey};

    const BOB: &str = "@bob:us.example";
    const ROOM: &str = "!r:them.example";

    fn v(id: &str) -> &'static RoomVersion {
        RoomVersion::by_id(id).unwrap()
    }

    fn us() -> ServerName {
        ServerName::parse("us.example").unwrap()
    }

    /// A template as Synapse answers make_leave for `version`.
    fn answer(version: &str) -> Value {
        let refs = if version == "1" {
            r#"[["$p:them.example",{"sha256":"aGk"}]]"#
        } else {
            r#"["$prevprevprevprevprevprevprevprevprevprevpre"]"#
        };
        let event_id = if version == "1" {
            r#""event_id":"$res:them.example","#
        } else {
            ""
        };
        json::parse(&format!(
            r#"{{"room_version":"{version}","event":{{{event_id}"type":"m.room.member",
               "state_key":"{BOB}","sender":"{BOB}","room_id":"{ROOM}",
               "content":{{"membership":"leave"}},"origin_server_ts":1700000000000,"depth":12,
               "prev_events":{refs},"auth_events":{refs},"origin":"them.example"}}}}"#
        ))
        .unwrap()
    }

    fn build(answer: &Value, version: &str) -> Result<Object, String> {
        leave_from_template(
            answer,
            &LeaveFor {
                room_id: ROOM,
                user_id: BOB,
                version: v(version),
                our_name: &us(),
                reason: Some("no thanks"),
                now_ms: 5,
                opaque: "abc",
            },
        )
    }

    fn edit(mut a: Value, f: impl FnOnce(&mut Object)) -> Value {
        f(a.as_object_mut()
            .unwrap()
            .get_mut("event")
            .unwrap()
            .as_object_mut()
            .unwrap());
        a
    }

    struct OneKey(String, VerifyKey);
    impl EventKeys for OneKey {
        fn event_key(&self, server: &str, _key_id: &KeyId) -> Option<VerifyKey> {
            (server == self.0).then_some(self.1)
        }
    }

    #[test]
    fn a_template_becomes_our_signed_leave_in_every_event_id_format() {
        let key = SigningKey::from_seed(KeyId::parse("ed25519:k").unwrap(), &[7; 32]);
        for version in ["1", "3", "11", "12"] {
            let mut leave = build(&answer(version), version).unwrap();
            assert_eq!(leave["content"]["reason"].as_str(), Some("no thanks"));
            assert_eq!(leave["origin_server_ts"].as_i64(), Some(1_700_000_000_000));
            check_content_hash(&leave).unwrap();
            sign_event(&mut leave, v(version), &us(), &key).unwrap();
            verify_event_signatures(
                &leave,
                v(version),
                &OneKey("us.example".into(), key.verify_key()),
            )
            .unwrap();
            let id = event_id(&leave, v(version)).unwrap();
            if version == "1" {
                assert_eq!(
                    id.as_str(),
                    "$abc:us.example",
                    "our own ID, not the resident's"
                );
            } else {
                assert!(!leave.contains_key("event_id"));
                assert!(!id.as_str().contains(':'));
            }
        }
    }

    #[test]
    fn a_template_that_is_not_our_users_leave_is_refused() {
        let cases: Vec<(Value, &str)> = vec![
            (
                edit(answer("11"), |e| {
                    e.insert("type".into(), "m.room.message".into());
                }),
                "m.room.member",
            ),
            (
                edit(answer("11"), |e| {
                    e.insert("sender".into(), "@eve:them.example".into());
                }),
                "sender",
            ),
            (
                edit(answer("11"), |e| {
                    e.insert("state_key".into(), "@eve:us.example".into());
                }),
                "state_key",
            ),
            (
                edit(answer("11"), |e| {
                    e.insert("room_id".into(), "!other:them.example".into());
                }),
                "room",
            ),
            (
                edit(answer("11"), |e| {
                    e.insert(
                        "content".into(),
                        json::parse(r#"{"membership":"join"}"#).unwrap(),
                    );
                }),
                "'leave'",
            ),
            (
                edit(answer("11"), |e| {
                    e.remove("prev_events");
                }),
                "prev_events",
            ),
            (
                edit(answer("11"), |e| {
                    e.remove("depth");
                }),
                "depth",
            ),
            (json::parse(r#"{"room_version":"11"}"#).unwrap(), "event"),
            (json::parse("[]").unwrap(), "object"),
        ];
        for (a, why) in cases {
            let e = build(&a, "11").unwrap_err();
            assert!(e.contains(why), "{e} (expected {why})");
        }
        // Another room version than the invite's, or none for a v3+ room.
        let e = build(&answer("10"), "11").unwrap_err();
        assert!(e.contains("room_version \"10\""), "{e}");
        let mut a = answer("11");
        a.as_object_mut().unwrap().remove("room_version");
        assert!(build(&a, "11").is_err());
        // No room_version is fine for rooms of version 1 or 2.
        let mut a = answer("1");
        a.as_object_mut().unwrap().remove("room_version");
        assert!(build(&a, "1").is_ok());
    }

    fn held() -> HeldInvite<'static> {
        HeldInvite {
            event_id: "$invite",
            room_id: ROOM,
            invitee: BOB,
            sender: "@alice:them.example",
            origin_server_ts: 100,
        }
    }

    fn kick(f: impl FnOnce(&mut Object)) -> Object {
        let mut e = json::parse(&format!(
            r#"{{"type":"m.room.member","state_key":"{BOB}","sender":"@alice:them.example",
               "room_id":"{ROOM}","content":{{"membership":"leave"}},"origin_server_ts":200,
               "depth":13,"prev_events":["$p"],"auth_events":["$create","$invite"],
               "signatures":{{}}}}"#
        ))
        .unwrap()
        .as_object()
        .unwrap()
        .clone();
        f(&mut e);
        add_content_hash(&mut e);
        e
    }

    #[test]
    fn only_the_inviters_leave_or_ban_naming_the_invite_rescinds_it() {
        assert_eq!(check_rescind(&kick(|_| {}), v("11"), &held()), Ok(()));
        let ban = kick(|e| {
            e.insert(
                "content".into(),
                json::parse(r#"{"membership":"ban"}"#).unwrap(),
            );
        });
        assert_eq!(check_rescind(&ban, v("11"), &held()), Ok(()));
        let refused: Vec<(Object, &str)> = vec![
            (
                kick(|e| {
                    e.insert("sender".into(), "@mod:them.example".into());
                }),
                "only the inviter",
            ),
            (
                kick(|e| {
                    e.insert("auth_events".into(), json::parse(r#"["$create"]"#).unwrap());
                }),
                "auth_events",
            ),
            (
                kick(|e| {
                    e.insert("origin_server_ts".into(), 99.into());
                }),
                "older",
            ),
            (
                kick(|e| {
                    e.insert("state_key".into(), "@carol:us.example".into());
                }),
                "not about",
            ),
            (
                kick(|e| {
                    e.insert(
                        "content".into(),
                        json::parse(r#"{"membership":"join"}"#).unwrap(),
                    );
                }),
                "neither",
            ),
            (
                kick(|e| {
                    e.remove("depth");
                }),
                "not a PDU",
            ),
        ];
        for (pdu, why) in refused {
            let e = check_rescind(&pdu, v("11"), &held()).unwrap_err();
            assert!(e.contains(why), "{e} (expected {why})");
        }
        let mut tampered = kick(|_| {});
        tampered.insert(
            "content".into(),
            json::parse(r#"{"membership":"leave","x":1}"#).unwrap(),
        );
        assert!(
            check_rescind(&tampered, v("11"), &held())
                .unwrap_err()
                .contains("hash")
        );
        // Room versions 1–2 reference auth events as [ID, hashes] pairs.
        let v1 = kick(|e| {
            e.insert("event_id".into(), "$k:them.example".into());
            e.insert(
                "prev_events".into(),
                json::parse(r#"[["$p:x",{"sha256":"aGk"}]]"#).unwrap(),
            );
            e.insert(
                "auth_events".into(),
                json::parse(r#"[["$invite",{"sha256":"aGk"}]]"#).unwrap(),
            );
        });
        assert_eq!(check_rescind(&v1, v("1"), &held()), Ok(()));
    }

    #[test]
    fn transactions_carry_at_most_50_pdus_and_100_edus() {
        let t = |pdus: usize, edus: Option<usize>| {
            let mut text = format!(
                r#"{{"origin":"x","origin_server_ts":1,"pdus":[{}]"#,
                vec!["{}"; pdus].join(",")
            );
            if let Some(n) = edus {
                text.push_str(&format!(r#","edus":[{}]"#, vec!["{}"; n].join(",")));
            }
            text.push('}');
            transaction_pdus(&json::parse(&text).unwrap()).map(<[Value]>::len)
        };
        assert_eq!(t(50, Some(100)), Ok(50));
        assert_eq!(t(0, None), Ok(0));
        assert!(t(51, None).unwrap_err().contains("51 PDUs"));
        assert!(t(1, Some(101)).unwrap_err().contains("101 EDUs"));
        assert!(transaction_pdus(&json::parse(r#"{"edus":[]}"#).unwrap()).is_err());
    }
}
