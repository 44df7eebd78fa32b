//! The invite endpoints end to end, with request authentication and remote keys: the real
//! binary over loopback, a test origin that serves its keys over real HTTPS (test CA) and
//! signs requests and events with ruma, an independent implementation.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::time::{Duration, Instant};

use common::invites::{
    Answer, Harness, Invite, US, assert_error, enc, invite_path, published_keys, put_raw,
    start_invited, stored_answer, stored_invite, valid_invite,
};
use common::origin::{KeyServerMode, TestOrigin, now_ms, public_b64, rules, to_canonical};
use common::*;
use serde_json::{Value as J, json};

/// PUTs `body` to `path`, signed by `origin` (unless `auth` overrides the header).
fn put(
    invited: &Invited,
    path: &str,
    body: &J,
    auth: Option<String>,
    origin: &TestOrigin,
) -> Answer {
    let header = auth.unwrap_or_else(|| origin.sign_request("PUT", path, US, Some(body)));
    put_raw(
        invited,
        path,
        &serde_json::to_vec(body).unwrap(),
        Some(&header),
    )
}

/// Checks the answered event is the sent one plus exactly one new signature, ours, which
/// ruma verifies with the key invited publishes.
fn check_cosigned(invited: &Invited, sent: &J, answered: &J, version: &str) {
    let mut expected = sent.clone();
    let ours = answered["signatures"][US]
        .as_object()
        .expect("our signature");
    assert_eq!(ours.len(), 1);
    expected["signatures"][US] = J::Object(ours.clone());
    assert_eq!(
        answered, &expected,
        "the event must come back unchanged but for our signature"
    );

    let map = published_keys(invited);
    // Only check our signature here (the map has only our key).
    let mut only_ours = answered.clone();
    only_ours["signatures"] = json!({ US: answered["signatures"][US] });
    ruma_signatures::verify_json(&map, &{
        let mut c = to_canonical(&only_ours);
        // verify_json checks the full object; events are signed redacted: redact first.
        c = ruma_common::canonical_json::redact(c, &rules(version).redaction, None).unwrap();
        c
    })
    .expect("ruma verifies invited's signature");
}

#[test]
fn every_room_version_over_v2_and_v1() {
    let h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);
    for version in [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
    ] {
        let Invite {
            path,
            body,
            event,
            event_id,
            ..
        } = valid_invite(origin, version, &format!("@bob:{US}"));
        let Answer {
            status,
            json: answer,
            ..
        } = put(invited, &path, &body, None, origin);
        assert_eq!(status, 200, "room version {version}: {answer}");
        check_cosigned(invited, &event, &answer["event"], version);
        let stored = stored_invite(invited, &event_id).expect("stored");
        assert_eq!(stored.origin, origin.name());
        assert_eq!(
            stored_answer(invited, &event_id).unwrap(),
            serde_json::to_string(&answer)
                .unwrap()
                .as_str()
                .pipe_canonical()
        );
    }
    // The v1 endpoint, for room versions 1 and 2: the body is the event, state in unsigned.
    for version in ["1", "2"] {
        let (create, room_id) = origin.create_event(version, "alice");
        let mut raw = origin.raw_invite(version, &room_id, &format!("@carol:{US}"));
        raw["unsigned"]["invite_room_state"] = json!([create]);
        let event = origin.hash_and_sign(&raw, version);
        let event_id = TestOrigin::event_id(&event, version);
        let path = invite_path(1, &room_id, &event_id);
        let Answer {
            status,
            json: answer,
            ..
        } = put(invited, &path, &event, None, origin);
        assert_eq!(status, 200, "v1, room version {version}: {answer}");
        assert_eq!(answer[0], json!(200));
        check_cosigned(invited, &event, &answer[1]["event"], version);
        assert!(stored_invite(invited, &event_id).is_some());
    }
    // One info line per request with the authenticated origin.
    let log = invited.log();
    assert!(
        log.lines()
            .any(|l| l.contains("PUT /_matrix/federation/v2/invite/")
                && l.contains(&format!("origin={}", origin.name()))
                && l.contains(" 200 ")),
        "{log}"
    );
}

/// Helper: canonical re-encoding of a JSON text (serde_json's map order is sorted too).
trait PipeCanonical {
    fn pipe_canonical(&self) -> String;
}
impl PipeCanonical for str {
    fn pipe_canonical(&self) -> String {
        invited_matrix::json::parse(self)
            .unwrap()
            .to_canonical_string()
    }
}

#[test]
fn request_authentication_failures() {
    let h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);
    let bob = format!("@bob:{US}");
    let Invite {
        path,
        body,
        event_id,
        ..
    } = valid_invite(origin, "12", &bob);
    let name = origin.name().to_owned();

    // Missing header.
    let resp = h
        .agent
        .put(&invited.url(&path))
        .send(serde_json::to_vec(&body).unwrap())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    let sig_of = |h: &str| {
        h.split("sig=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"')
            .to_owned()
    };
    let good = origin.sign_request("PUT", &path, US, Some(&body));

    // Garbage header; bad signature; wrong destination.
    assert_error(
        &put(
            invited,
            &path,
            &body,
            Some("X-Matrix nonsense".into()),
            origin,
        ),
        401,
        "M_UNAUTHORIZED",
        "garbage",
    );
    let bad_sig = good.replace(&sig_of(&good), &"A".repeat(86));
    assert_error(
        &put(invited, &path, &body, Some(bad_sig), origin),
        401,
        "M_UNAUTHORIZED",
        "bad signature",
    );
    let elsewhere = origin.sign_request("PUT", &path, "elsewhere.test", Some(&body));
    assert_error(
        &put(invited, &path, &body, Some(elsewhere), origin),
        401,
        "M_UNAUTHORIZED",
        "wrong destination",
    );
    // Unknown key ID.
    let other_key = common::origin::new_key("nope");
    let unknown = origin.sign_request_with(&other_key, "PUT", &path, US, Some(&body));
    assert_error(
        &put(invited, &path, &body, Some(unknown), origin),
        401,
        "M_UNAUTHORIZED",
        "unknown key",
    );
    // Signed for another URI, or another body.
    let other_uri = origin.sign_request("PUT", &format!("{path}x"), US, Some(&body));
    assert_error(
        &put(invited, &path, &body, Some(other_uri), origin),
        401,
        "M_UNAUTHORIZED",
        "other uri",
    );
    let other_body = origin.sign_request("PUT", &path, US, Some(&json!({"x": 1})));
    assert_error(
        &put(invited, &path, &body, Some(other_body), origin),
        401,
        "M_UNAUTHORIZED",
        "other body",
    );
    // Several Authorization headers: one with a key invited cannot find is skipped as long as
    // another verifies; a known key with a bad signature fails the request; other schemes are
    // ignored; two origins are refused.
    let two = |a: &str, b: &str| {
        let resp = h
            .agent
            .put(&invited.url(&path))
            .header("Authorization", a)
            .header("Authorization", b)
            .send(serde_json::to_vec(&body).unwrap())
            .unwrap();
        resp.status().as_u16()
    };
    let unknown_key = origin.sign_request_with(
        &common::origin::new_key("zz"),
        "PUT",
        &path,
        US,
        Some(&body),
    );
    let bad_known = good.replace(&sig_of(&good), &"B".repeat(86));
    assert_eq!(
        two(&bad_known, &good),
        401,
        "a bad signature with a known key fails"
    );
    assert_eq!(two("Bearer whatever", &bad_known), 401);
    let other_origin = good.replacen(&format!("origin=\"{name}\""), "origin=\"other.test\"", 1);
    assert_eq!(two(&other_origin, &good), 401, "two origins");
    // A request in our own name is refused before any key is looked up for it.
    let from_us = good.replacen(
        &format!("origin=\"{name}\""),
        &format!("origin=\"{US}\""),
        1,
    );
    let answer = put(invited, &path, &body, Some(from_us), origin);
    assert_error(&answer, 401, "M_UNAUTHORIZED", "origin is our own name");
    assert!(answer.text.contains("own name"), "{}", answer.text);
    // Nothing was stored by any of these.
    assert!(stored_invite(invited, &event_id).is_none());
    // The good one works, also beside an unknown key and another scheme.
    assert_eq!(two(&unknown_key, &good), 200);
    assert_eq!(two("Bearer whatever", &good), 200);
    assert!(stored_invite(invited, &event_id).is_some());
}

/// Synapse asks for the invitee's profile before inviting: an authenticated query gets the
/// spec's 404 M_NOT_FOUND (we keep no profiles); an unauthenticated one 401.
#[test]
fn profile_queries_before_an_invite() {
    let h = Harness::start("");
    let (invited, origin) = (&h.invited, &h.origin);
    let get = |path: &str, auth: Option<String>| {
        let mut req = h.agent.get(&invited.url(path));
        if let Some(a) = auth {
            req = req.header("Authorization", &a);
        }
        Answer::read(req.call().unwrap())
    };
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}&field=displayname",
        enc(&format!("@bob:{US}"))
    );
    let signed = origin.sign_request("GET", &path, US, None);
    assert_error(&get(&path, Some(signed)), 404, "M_NOT_FOUND", "our user");
    assert_error(&get(&path, None), 401, "M_UNAUTHORIZED", "unauthenticated");
    let other = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        enc("@x:elsewhere.test")
    );
    let signed = origin.sign_request("GET", &other, US, None);
    assert_error(
        &get(&other, Some(signed)),
        400,
        "M_INVALID_PARAM",
        "not our user",
    );
}

#[test]
fn key_server_defects_are_refused() {
    let ca = TestCa::new();
    let bob = format!("@bob:{US}");
    let cases: Vec<(&str, KeyServerMode)> = vec![
        (
            "expired key",
            KeyServerMode {
                valid_until_ts: now_ms() - 1000,
                ..Default::default()
            },
        ),
        (
            "key only in old_verify_keys",
            KeyServerMode {
                only_old_key: Some(now_ms() + 3_600_000),
                ..Default::default()
            },
        ),
        (
            "wrong server_name",
            KeyServerMode {
                wrong_server_name: true,
                ..Default::default()
            },
        ),
        (
            "bad self-signature",
            KeyServerMode {
                bad_self_signature: true,
                ..Default::default()
            },
        ),
        (
            "key server error",
            KeyServerMode {
                broken: true,
                ..Default::default()
            },
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let invited = start_invited(dir.path(), &ca, "");
    for (what, mode) in cases {
        // A fresh origin per case: invited caches per server name.
        let origin = TestOrigin::start(&ca);
        origin.set_mode(mode);
        let Invite {
            path,
            body,
            event_id,
            ..
        } = valid_invite(&origin, "11", &bob);
        assert_error(
            &put(&invited, &path, &body, None, &origin),
            401,
            "M_UNAUTHORIZED",
            what,
        );
        assert!(stored_invite(&invited, &event_id).is_none(), "{what}");
    }
}

#[test]
fn notary_path_when_the_origin_is_unreachable() {
    let ca = TestCa::new();
    let notary = TestOrigin::start(&ca);
    let bad_notary = TestOrigin::start(&ca);
    let mut origin = TestOrigin::start(&ca);
    notary.notarise(&origin);
    bad_notary.notarise(&origin);
    bad_notary.set_notary_bad_signature(true);
    let bob = format!("@bob:{US}");
    let Invite { path, body, .. } = valid_invite(&origin, "12", &bob);
    let header = origin.sign_request("PUT", &path, US, Some(&body));
    origin.stop();

    // A notary whose signature is bad is refused.
    let dir = tempfile::tempdir().unwrap();
    let invited = start_invited(
        dir.path(),
        &ca,
        &format!("trusted_key_servers = [\"{}\"]\n", bad_notary.name()),
    );
    assert_error(
        &put(&invited, &path, &body, Some(header.clone()), &origin),
        401,
        "M_UNAUTHORIZED",
        "bad notary",
    );
    drop(invited);

    let dir = tempfile::tempdir().unwrap();
    let invited = start_invited(
        dir.path(),
        &ca,
        &format!("trusted_key_servers = [\"{}\"]\n", notary.name()),
    );
    let Answer {
        status,
        json: answer,
        ..
    } = put(&invited, &path, &body, Some(header), &origin);
    assert_eq!(status, 200, "{answer}");
    assert!(
        notary.hits() >= 2,
        "the notary was asked (and its own key fetched)"
    );
    // The query names the key and asks for it to be valid at least until now (spec: MUST set
    // minimum_valid_until_ts).
    let query = notary.last_query().expect("a key query");
    let wanted = &query["server_keys"][origin.name()][origin.key_id().as_str()];
    let minimum = wanted["minimum_valid_until_ts"]
        .as_i64()
        .expect("minimum_valid_until_ts");
    assert!((now_ms() - 60_000..=now_ms()).contains(&minimum), "{query}");
}

/// A server name that is a DNS name with an explicit port: invited resolves it (no
/// well-known), connects with SNI and checks the certificate against the name.
#[test]
fn a_dns_server_name_with_a_port() {
    let ca = TestCa::new();
    let origin = TestOrigin::start_as(&ca, "localhost");
    assert!(origin.name().starts_with("localhost:"));
    let dir = tempfile::tempdir().unwrap();
    let invited = start_invited(dir.path(), &ca, "");
    let Invite {
        path, body, event, ..
    } = valid_invite(&origin, "12", &format!("@bob:{US}"));
    let Answer {
        status,
        json: answer,
        ..
    } = put(&invited, &path, &body, None, &origin);
    assert_eq!(status, 200, "{answer}");
    check_cosigned(&invited, &event, &answer["event"], "12");

    // A certificate from a CA we do not trust is refused.
    let other_ca = TestCa::new();
    let impostor = TestOrigin::start_as(&other_ca, "localhost");
    let Invite { path, body, .. } = valid_invite(&impostor, "12", &format!("@bob:{US}"));
    assert_error(
        &put(&invited, &path, &body, None, &impostor),
        401,
        "M_UNAUTHORIZED",
        "certificate from an untrusted CA",
    );
}

#[test]
fn cached_keys_survive_a_restart() {
    let mut h = Harness::start("");
    let bob = format!("@bob:{US}");
    let Invite { path, body, .. } = valid_invite(&h.origin, "10", &bob);
    assert_eq!(put(&h.invited, &path, &body, None, &h.origin).status, 200);
    h.invited.kill();
    let hits = h.origin.hits();
    assert!(hits >= 1);
    h.restart();
    let Invite { path, body, .. } = valid_invite(&h.origin, "10", &bob);
    assert_eq!(put(&h.invited, &path, &body, None, &h.origin).status, 200);
    assert_eq!(
        h.origin.hits(),
        hits,
        "a key still valid is not fetched again"
    );
}

#[test]
fn a_flood_naming_a_dead_server_causes_few_fetches() {
    let h = Harness::start("");
    let (invited, healthy) = (&h.invited, &h.origin);
    // A "dead" server: TCP accepts, then silence (no TLS). Count connection attempts.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_name = format!("127.0.0.1:{}", dead.local_addr().unwrap().port());
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let attempts = attempts.clone();
        std::thread::spawn(move || {
            for conn in dead.incoming() {
                attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(conn);
            }
        });
    }
    let bob = format!("@bob:{US}");
    // Warm the healthy origin's keys.
    let Invite { path, body, .. } = valid_invite(healthy, "12", &bob);
    assert_eq!(put(invited, &path, &body, None, healthy).status, 200);

    let flood_path = "/_matrix/federation/v2/invite/%21x%3Ay/%24e";
    let header = format!(
        "X-Matrix origin=\"{dead_name}\",destination=\"{US}\",key=\"ed25519:k1\",sig=\"{}\"",
        "A".repeat(86)
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flooders = Vec::new();
    for _ in 0..4 {
        let url = invited.url(flood_path);
        let header = header.clone();
        flooders.push(std::thread::spawn(move || {
            let agent = agent(None);
            let mut statuses = Vec::new();
            for _ in 0..250 {
                let resp = agent
                    .put(&url)
                    .header("Authorization", &header)
                    .send("{}")
                    .unwrap();
                statuses.push(resp.status().as_u16());
            }
            statuses
        }));
    }
    // Meanwhile a healthy origin is served promptly.
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let Invite { path, body, .. } = valid_invite(healthy, "12", &bob);
        let started = Instant::now();
        let Answer {
            status,
            json: answer,
            ..
        } = put(invited, &path, &body, None, healthy);
        worst = worst.max(started.elapsed());
        assert_eq!(status, 200, "{answer}");
    }
    let mut all = Vec::new();
    for f in flooders {
        all.extend(f.join().unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(all.len(), 1000);
    // 401 once the fetch failed (then backed off); 503 "retry shortly" while the few workers
    // allowed to wait on key fetches are all waiting.
    assert!(
        all.iter().all(|s| *s == 401 || *s == 503),
        "every flood request is refused (401, or 503 while fetches are busy): {:?}",
        all.iter()
            .filter(|s| **s != 401 && **s != 503)
            .collect::<Vec<_>>()
    );
    assert!(
        all.iter().filter(|s| **s == 401).count() >= 900,
        "mostly refused outright"
    );
    let n = attempts.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        n <= 5,
        "{n} outbound connection attempts for 1,000 requests"
    );
    assert!(
        worst < Duration::from_secs(2),
        "healthy requests waited {worst:?}"
    );
    let _ = public_b64;
}

/// Proxy variables in invited's environment are ignored: a proxy would make the connections
/// for us, to addresses the IP filter never saw. The key fetch goes straight to the origin.
#[test]
fn outbound_requests_ignore_proxy_variables() {
    let mut h = Harness::start("");
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let url = format!("http://{}", proxy.local_addr().unwrap());
    h.invited.kill();
    h.invited = Invited::start_with_env(
        &h.invited.config_path,
        &[
            ("HTTPS_PROXY", url.as_str()),
            ("https_proxy", url.as_str()),
            ("ALL_PROXY", url.as_str()),
            ("all_proxy", url.as_str()),
            ("HTTP_PROXY", url.as_str()),
        ],
    );
    let Invite { path, body, .. } = valid_invite(&h.origin, "10", &format!("@bob:{US}"));
    let answer = put(&h.invited, &path, &body, None, &h.origin);
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(
        proxy.accept().is_err(),
        "invited connected to the proxy from its environment"
    );
}
