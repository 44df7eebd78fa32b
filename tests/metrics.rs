//! `GET /metrics` on its own listener, read by the Prometheus project's own parser (Python
//! `prometheus_client`, OpenMetrics), with each counter moving as the requests it counts are
//! made.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::invites::{Harness, US, assert_error, metrics_url, put_raw, valid_invite};
use common::{agent, python, run_cli};

/// The samples of an exposition as `name{labels} → value`, parsed by prometheus_client.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let script = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    serde_json::from_str(&python(script, text)).unwrap()
}

/// The series names an exposition offers to a query: a counter `x` is `x_total`, a histogram
/// `x_bucket`, `x_sum` and `x_count`, a gauge `x` (whether or not a labelled child exists yet).
fn exposed_names(text: &str) -> BTreeSet<String> {
    let script = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
out = set()
for family in text_string_to_metric_families(sys.stdin.read()):
    for suffix in suffixes.get(family.type, [""]):
        out.add(family.name + suffix)
    out.update(s.name for s in family.samples)
print(json.dumps(sorted(out)))
"#;
    serde_json::from_str(&python(script, text)).unwrap()
}

/// The `invited_…` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    for (at, _) in expr.match_indices("invited_") {
        if expr[..at].chars().next_back().is_some_and(word) {
            continue;
        }
        let end = expr[at..]
            .find(|c: char| !word(c))
            .map_or(expr.len(), |n| at + n);
        names.push(expr[at..end].to_owned());
    }
    names
}

/// Every PromQL query of a Grafana dashboard: panel targets' `expr`, variables' `definition`.
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v.as_str()) {
                    ("expr" | "definition", Some(q)) => out.push(q.to_owned()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

fn scrape(url: &str) -> (String, String) {
    let mut resp = agent(None).get(url).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    (ctype, resp.body_mut().read_to_string().unwrap())
}

fn at(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(0.0)
}

#[test]
fn counters_move_with_the_requests_they_count() {
    let h = Harness::start("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let url = metrics_url(&h);
    let (ctype, before) = scrape(&url);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let before = samples(&before);
    assert_eq!(
        before.get(&format!(
            "invited_build_info{{version={}}}",
            env!("CARGO_PKG_VERSION")
        )),
        Some(&1.0)
    );

    // A stored invite (the origin's key is fetched once), its retry, one refused by the
    // signature check and one by a deny rule.
    let inv = valid_invite(&h.origin, "11", &format!("@bob:{US}"));
    let header = h.origin.sign_request("PUT", &inv.path, US, Some(&inv.body));
    let body = serde_json::to_vec(&inv.body).unwrap();
    assert_eq!(
        put_raw(&h.invited, &inv.path, &body, Some(&header)).status,
        200
    );
    assert_eq!(
        put_raw(&h.invited, &inv.path, &body, Some(&header)).status,
        200
    );
    let mut forged = valid_invite(&h.origin, "11", &format!("@bob:{US}"));
    forged.body["event"]["signatures"][h.origin.name()][h.origin.key_id()] =
        serde_json::json!("A".repeat(86));
    let header = h
        .origin
        .sign_request("PUT", &forged.path, US, Some(&forged.body));
    let answer = put_raw(
        &h.invited,
        &forged.path,
        &serde_json::to_vec(&forged.body).unwrap(),
        Some(&header),
    );
    assert_error(&answer, 400, "M_INVALID_PARAM", "forged event signature");
    let out = run_cli(
        Some(&h.invited.config_path),
        &["policy", "deny-user", "@alice:*"],
    );
    assert!(out.status.success());
    let refused = valid_invite(&h.origin, "11", &format!("@bob:{US}"));
    let header = h
        .origin
        .sign_request("PUT", &refused.path, US, Some(&refused.body));
    let answer = put_raw(
        &h.invited,
        &refused.path,
        &serde_json::to_vec(&refused.body).unwrap(),
        Some(&header),
    );
    assert_error(&answer, 403, "M_FORBIDDEN", "denied user");
    let mut keys = agent(None)
        .get(&h.invited.url("/_matrix/key/v2/server"))
        .call()
        .unwrap();
    keys.body_mut().read_to_string().unwrap();

    // A body over max_body_bytes: refused by the edge itself, unread.
    let big =
        common::wire::request_bytes("PUT", &inv.path, &[("Content-Length", b"2000000")], None);
    let reply = common::raw_exchange(h.invited.addr, &big, Duration::from_secs(5));
    assert_eq!(common::status_of(&reply), Some(413));

    let exposition = scrape(&url).1;
    let after = samples(&exposition);
    let moved = |k: &str| at(&after, k) - at(&before, k);
    assert_eq!(
        moved("invited_invites_total{outcome=stored}"),
        1.0,
        "{after:#?}"
    );
    assert_eq!(moved("invited_invites_total{outcome=replayed}"), 1.0);
    // Refusals by errcode and by the kind of rule or check; the rule's text (which names the
    // user) stays out of the labels.
    assert_eq!(
        moved("invited_refusals_total{errcode=M_FORBIDDEN,kind=deny}"),
        1.0
    );
    assert_eq!(
        moved("invited_refusals_total{errcode=M_INVALID_PARAM,kind=signature}"),
        1.0
    );
    assert_eq!(
        moved("invited_http_requests_total{route=invite_v2,status=200}"),
        2.0
    );
    assert_eq!(
        moved("invited_http_requests_total{route=invite_v2,status=403}"),
        1.0
    );
    assert_eq!(
        moved("invited_http_requests_total{route=invite_v2,status=400}"),
        1.0
    );
    assert_eq!(
        moved("invited_http_requests_total{route=keys,status=200}"),
        1.0
    );
    assert_eq!(
        moved("invited_request_duration_seconds_count{route=invite_v2}"),
        4.0
    );
    assert_eq!(moved("invited_key_fetches_total{result=ok}"), 1.0);
    assert!(at(&after, "invited_database_bytes{}") > 0.0);
    assert_eq!(
        moved("invited_edge_refusals_total{kind=payload_too_large,status=413}"),
        1.0
    );
    assert_eq!(moved("invited_key_fetch_duration_seconds_count{}"), 1.0);
    assert!(moved("invited_commit_batch_invites_count{}") >= 1.0);
    assert!(moved("invited_commit_duration_seconds_count{}") >= 1.0);
    // A restart needs 16 MiB of WAL: here only that the series is exposed.
    assert!(after.contains_key("invited_wal_restart_duration_seconds_count{}"));
    assert_eq!(at(&after, "invited_outbox_pending{}"), 0.0);
    assert!(after.contains_key("invited_outbox_pending{}"));
    assert_eq!(
        at(&after, "invited_writer_queue{}"),
        0.0,
        "nothing left queued"
    );
    check_the_grafana_dashboard(&exposition);
    // No label carries a server name or a user ID.
    assert!(
        after
            .keys()
            .all(|k| !k.contains(US) && !k.contains(h.origin.name()))
    );
    // Nothing but /metrics on that listener, and no metrics on the federation port.
    let other = agent(None)
        .get(&url.replace("/metrics", "/"))
        .call()
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);
    let federation = agent(None).get(&h.invited.url("/metrics")).call().unwrap();
    assert_eq!(federation.status().as_u16(), 404);
}

/// `invited_open_connections` follows the federation listener's connections, and connections
/// closed unanswered over the per-address cap count as edge refusals.
#[test]
fn open_connections_and_the_per_address_cap() {
    let h = Harness::start(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [http]\nmax_connections_per_ip = 3\nfirst_byte_timeout_secs = 60\n",
    );
    let url = metrics_url(&h);
    let now = || samples(&scrape(&url).1);
    let open = || at(&now(), "invited_open_connections{}");
    let settles = |want: f64| {
        let started = Instant::now();
        while open() != want {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "open connections: {} (want {want})",
                open()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    settles(0.0);
    let before = now();
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(h.invited.addr).unwrap())
        .collect();
    settles(3.0);
    // Two more from the same address: closed at once, without a response.
    for _ in 0..2 {
        let mut extra = TcpStream::connect(h.invited.addr).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];
        match extra.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected a close without a response, got {other:?}"),
        }
    }
    let after = now();
    assert_eq!(
        at(
            &after,
            "invited_edge_refusals_total{kind=per_ip_cap,status=none}"
        ) - at(
            &before,
            "invited_edge_refusals_total{kind=per_ip_cap,status=none}"
        ),
        2.0,
        "{after:#?}"
    );
    assert_eq!(at(&after, "invited_open_connections{}"), 3.0);
    drop(held);
    settles(0.0);
}

/// contrib/grafana/invited.json asks only for series in `exposition`, so a renamed metric
/// cannot leave the dashboard behind; its data source is the import-time input. A labelled
/// family is exposed only once it has a child: `exposition` is taken after requests that
/// move every family.
fn check_the_grafana_dashboard(exposition: &str) {
    let exposed = exposed_names(exposition);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana/invited.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 20, "{queries:#?}");
    let mut used = BTreeSet::new();
    for q in &queries {
        let names = metric_names(q);
        assert!(!names.is_empty(), "a query of no invited metric: {q}");
        for n in names {
            assert!(
                exposed.contains(&n),
                "contrib/grafana/invited.json: {n} (in {q}) is not exposed; exposed: {exposed:#?}"
            );
            used.insert(n);
        }
    }
    // Issue 15's list: each is on the dashboard.
    for n in [
        "invited_http_requests_total",
        "invited_request_duration_seconds_bucket",
        "invited_invites_total",
        "invited_refusals_total",
        "invited_key_fetches_total",
        "invited_key_fetch_duration_seconds_bucket",
        "invited_writer_queue",
        "invited_commit_duration_seconds_bucket",
        "invited_commit_batch_invites_count",
        "invited_outbox_pending",
        "invited_open_connections",
        "invited_edge_refusals_total",
        "invited_database_bytes",
        "invited_database_wal_bytes",
        "invited_build_info",
    ] {
        assert!(used.contains(n), "{n} is not on the dashboard");
    }
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let text = dashboard.to_string();
    assert_eq!(
        text.matches(r#""type":"prometheus""#).count(),
        text.matches(r#""type":"prometheus","uid":"${DS_PROMETHEUS}""#)
            .count(),
        "every Prometheus data source is the input"
    );
}
