//! The invited binary end to end: first start, key endpoint, key persistence and import,
//! config errors, HTTPS, shutdown. Real binary, real sockets, real SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use invited_matrix::{KeyId, Value, json, verify_json};

const SPEC_SEED_FILE: &str = "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n";
const SPEC_PUBLIC_KEY: &str = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";

fn get_json(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    let mut resp = agent.get(url).call().unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/json"), "{url}");
    let body = resp.body_mut().read_to_string().unwrap();
    (status, json::parse(&body).unwrap())
}

/// Checks a key response's self-signature with our crate and returns (key ID, public key).
fn check_key_response(body: &Value, server_name: &str) -> (String, String) {
    assert_eq!(body["server_name"].as_str(), Some(server_name));
    let verify_keys = body["verify_keys"].as_object().unwrap();
    assert_eq!(verify_keys.len(), 1);
    let (key_id, key) = verify_keys.iter().next().unwrap();
    let public = key["key"].as_str().unwrap().to_owned();
    let vk = invited_matrix::VerifyKey::from_base64(&public).unwrap();
    verify_json(
        body.as_object().unwrap(),
        server_name,
        &KeyId::parse(key_id).unwrap(),
        &vk,
    )
    .unwrap();
    let valid_until = body["valid_until_ts"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(valid_until > now + 3_600_000, "valid at least an hour");
    (key_id.to_string(), public)
}

/// Independent check: Python's signedjson verifies the key response's self-signature.
fn python_verifies_key_response(body: &Value, server_name: &str) {
    let script = r#"
import json, sys
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import verify_signed_json
body = json.loads(sys.stdin.read())
name = body["server_name"]
for key_id, k in body["verify_keys"].items():
    vk = decode_verify_key_bytes(key_id, __import__("unpaddedbase64").decode_base64(k["key"]))
    verify_signed_json(body, name, vk)
print("verified")
"#;
    let out = python(script, &body.to_canonical_string());
    assert_eq!(out.trim(), "verified");
    assert_eq!(body["server_name"].as_str(), Some(server_name));
}

#[test]
fn first_start_creates_key_and_database_and_serves_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "invited.test", "");
    let server = Invited::start(&config);
    let data = dir.path().join("data");
    assert!(data.join("invited.db").exists());
    let key_file = data.join("signing.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "signing.key must be private");
    let data_mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(data_mode, 0o700);
    // The database and the WAL files beside it are ours alone (they hold every invite).
    for file in ["invited.db", "invited.db-wal", "invited.db-shm"] {
        let mode = std::fs::metadata(data.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }

    let agent = agent(None);
    let (status, body) = get_json(&agent, &server.url("/_matrix/key/v2/server"));
    assert_eq!(status, 200);
    let (key_id, public) = check_key_response(&body, "invited.test");
    python_verifies_key_response(&body, "invited.test");
    assert!(body["old_verify_keys"].as_object().unwrap().is_empty());

    // The file holds the seed of exactly that key, in Synapse's format.
    let file = std::fs::read_to_string(&key_file).unwrap();
    let key = invited::keys::parse_key_file(&file, "signing.key").unwrap();
    assert_eq!(key.key_id().as_str(), key_id);
    assert_eq!(key.verify_key().to_base64(), public);

    // The legacy /{keyId} form answers the same keys.
    let (status, legacy) = get_json(
        &agent,
        &server.url(&format!("/_matrix/key/v2/server/{key_id}")),
    );
    assert_eq!(status, 200);
    assert_eq!(legacy["verify_keys"], body["verify_keys"]);

    // Version endpoint.
    let (status, version) = get_json(&agent, &server.url("/_matrix/federation/v1/version"));
    assert_eq!(status, 200);
    assert_eq!(version["server"]["name"].as_str(), Some("invited"));
    assert_eq!(
        version["server"]["version"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );

    // The database holds the public key only: the seed appears nowhere in it.
    drop(server);
    let db = std::fs::read(data.join("invited.db")).unwrap();
    let seed_b64 = file.split_whitespace().nth(2).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains(seed_b64));
    let conn = rusqlite_free_check(&data.join("invited.db"));
    assert!(conn.contains(&public), "public key recorded: {conn}");
}

/// Reads the our_keys table with the sqlite3 CLI if present, else via our store module.
fn rusqlite_free_check(db: &std::path::Path) -> String {
    let store = invited::store::Store::open(db).unwrap();
    format!("{:?}", store.our_keys().unwrap())
}

#[test]
fn unknown_paths_and_methods_get_matrix_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Invited::start(&write_config(dir.path(), "invited.test", ""));
    let agent = agent(None);
    for path in [
        "/",
        "/_matrix/federation/v1/nothing",
        "/_matrix/key/v2/server/a/b",
    ] {
        let mut resp = agent.get(&server.url(path)).call().unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        let body = json::parse(&resp.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(body["errcode"].as_str(), Some("M_UNRECOGNIZED"));
        assert!(body["error"].as_str().is_some());
    }
    let mut resp = agent
        .post(&server.url("/_matrix/key/v2/server"))
        .send("{}")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let body = json::parse(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["errcode"].as_str(), Some("M_UNRECOGNIZED"));
    // One info line per request with method, path, status and duration.
    std::thread::sleep(Duration::from_millis(100));
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("POST /_matrix/key/v2/server")
                && l.contains(" 405 ")
                && l.contains("ms")),
        "{log}"
    );
}

#[test]
fn key_survives_restart_and_rotation_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "invited.test", "");
    let agent = agent(None);
    let first = {
        let server = Invited::start(&config);
        let (_, body) = get_json(&agent, &server.url("/_matrix/key/v2/server"));
        check_key_response(&body, "invited.test")
    };
    let server = Invited::start(&config);
    let (_, body) = get_json(&agent, &server.url("/_matrix/key/v2/server"));
    assert_eq!(
        check_key_response(&body, "invited.test"),
        first,
        "same key after restart"
    );
    let status = server.terminate();
    assert!(status.success());

    let out = run_cli(Some(&config), &["keys", "rotate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Invited::start(&config);
    let (_, body) = get_json(&agent, &server.url("/_matrix/key/v2/server"));
    let second = check_key_response(&body, "invited.test");
    assert_ne!(second, first);
    let old = &body["old_verify_keys"][first.0.as_str()];
    assert_eq!(old["key"].as_str(), Some(first.1.as_str()));
    assert!(old["expired_ts"].as_i64().unwrap() > 0);
    python_verifies_key_response(&body, "invited.test");

    let out = run_cli(Some(&config), &["keys", "show", "--json"]);
    assert!(out.status.success());
    let shown = json::parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(shown["current_key_id"].as_str(), Some(second.0.as_str()));
    assert_eq!(shown["keys"].as_array().unwrap().len(), 2);
}

#[test]
fn imported_synapse_key_is_published_as_synapse_would() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "domain", "");
    let synapse_key = dir.path().join("synapse.signing.key");
    std::fs::write(&synapse_key, SPEC_SEED_FILE).unwrap();
    let out = run_cli(
        Some(&config),
        &["keys", "import", synapse_key.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What Synapse publishes for that file: signedjson's reading of it.
    let expected = python(
        r#"
import sys
from signedjson.key import read_signing_keys, get_verify_key, encode_verify_key_base64
k = read_signing_keys(sys.stdin)[0]
print(k.alg + ":" + k.version, encode_verify_key_base64(get_verify_key(k)))
"#,
        SPEC_SEED_FILE,
    );
    assert_eq!(expected.trim(), format!("ed25519:1 {SPEC_PUBLIC_KEY}"));

    let server = Invited::start(&config);
    let (_, body) = get_json(&agent(None), &server.url("/_matrix/key/v2/server"));
    let (key_id, public) = check_key_response(&body, "domain");
    assert_eq!(format!("{key_id} {public}"), expected.trim());
    python_verifies_key_response(&body, "domain");
}

#[test]
fn https_with_a_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let config = write_config(
        dir.path(),
        "invited.test",
        "[tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n",
    );
    let server = Invited::start(&config);
    assert!(server.tls);
    let (status, body) = get_json(&agent(Some(&ca)), &server.url("/_matrix/key/v2/server"));
    assert_eq!(status, 200);
    check_key_response(&body, "invited.test");
    // A client that does not trust the CA is refused by TLS itself.
    assert!(
        agent(None)
            .get(&server.url("/_matrix/key/v2/server"))
            .call()
            .is_err()
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let raw = raw_exchange(
        server.addr,
        b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(3),
    );
    assert!(!String::from_utf8_lossy(&raw).contains("invited"));
    let mut resp = agent(Some(&ca))
        .get(&server.url("/_matrix/nope"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body = resp.body_mut().read_to_string().unwrap();
    assert!(body.contains("M_UNRECOGNIZED"));
}

/// Every start-up failure is one line on stderr and a non-zero exit, never a panic.
fn assert_clean_failure(out: &std::process::Output, needle: &str) {
    assert!(!out.status.success(), "should fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    assert!(lines[0].contains(needle), "{needle:?} in {stderr}");
}

#[test]
fn bad_configurations_fail_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let typo = cfg("typo.toml", "server_nme = \"a\"\n");
    assert_clean_failure(&run_cli(Some(&typo), &["serve"]), "server_nme");
    assert_clean_failure(&run_cli(Some(&typo), &["check-config"]), "server_nme");
    let bad_listen = cfg("listen.toml", "listen = \"nowhere\"\n");
    assert_clean_failure(&run_cli(Some(&bad_listen), &["serve"]), "listen");
    let bad_name = cfg("name.toml", "server_name = \"no spaces allowed\"\n");
    assert_clean_failure(&run_cli(Some(&bad_name), &["serve"]), "server_name");
    let missing = dir.path().join("missing.toml");
    assert_clean_failure(&run_cli(Some(&missing), &["serve"]), "missing.toml");
    let tls = cfg(
        "tls.toml",
        "listen = \"127.0.0.1:0\"\ndata_dir = \"tlsdata\"\n[tls]\ncertificate = \"nope.pem\"\nprivate_key = \"nope.key\"\n",
    );
    assert_clean_failure(&run_cli(Some(&tls), &["serve"]), "nope.pem");

    // An unreadable (garbage) key file.
    std::fs::create_dir_all(dir.path().join("garbage")).unwrap();
    std::fs::write(dir.path().join("garbage/signing.key"), "not a key\n").unwrap();
    let garbage = cfg(
        "garbage.toml",
        "listen = \"127.0.0.1:0\"\ndata_dir = \"garbage\"\n",
    );
    assert_clean_failure(&run_cli(Some(&garbage), &["serve"]), "signing.key");

    // A data dir that cannot be created (its parent is a file).
    std::fs::write(dir.path().join("afile"), "").unwrap();
    let blocked = cfg(
        "blocked.toml",
        "listen = \"127.0.0.1:0\"\ndata_dir = \"afile/data\"\n",
    );
    assert_clean_failure(&run_cli(Some(&blocked), &["serve"]), "afile");

    // A read-only data dir (permissions do not bind root, so use a read-only filesystem then).
    let ro_dir = if unsafe_is_root() {
        std::path::PathBuf::from("/proc/invited-test-data")
    } else {
        let p = dir.path().join("readonly");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o500)).unwrap();
        p
    };
    let ro = cfg(
        "ro.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            ro_dir.display()
        ),
    );
    // The one error line names the directory, whichever step failed (as root: creating it;
    // otherwise: creating the database in it).
    assert_clean_failure(
        &run_cli(Some(&ro), &["serve"]),
        &ro_dir.display().to_string(),
    );

    // A port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = cfg(
        "busy.toml",
        &format!(
            "listen = \"{}\"\ndata_dir = \"busydata\"\n",
            taken.local_addr().unwrap()
        ),
    );
    assert_clean_failure(&run_cli(Some(&busy), &["serve"]), "cannot listen");
}

fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        .unwrap_or(false)
}

#[test]
fn check_config_reports_ok() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "invited.test", "");
    let out = run_cli(Some(&config), &["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("server_name: invited.test"));
    assert!(stdout.trim_end().ends_with("ok"));
    // check-config does not create anything.
    assert!(!dir.path().join("data").exists());
    assert!(stdout.contains("database: none yet"), "{stdout}");

    // Once the server has run: the database's size, its WAL's, a quick check, free space;
    // while the server runs.
    let invited = Invited::start(&config);
    let out = run_cli(Some(&config), &["check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("MiB, WAL ") && stdout.contains("quick check ok"),
        "{stdout}"
    );
    assert!(stdout.contains("free disk space: "), "{stdout}");
    drop(invited);
}

#[test]
fn sigterm_finishes_and_closes_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "invited.test", "");
    let server = Invited::start(&config);
    let (status, _) = get_json(&agent(None), &server.url("/_matrix/federation/v1/version"));
    assert_eq!(status, 200);
    let log = server.log.clone();
    let exit = server.terminate();
    assert!(exit.success(), "exit status {exit:?}");
    let log = log.lock().unwrap().clone();
    assert!(log.contains("database closed"), "{log}");
    // A clean close checkpoints the WAL away.
    let wal = dir.path().join("data/invited.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
}

#[test]
fn help_and_version() {
    let out = run_cli(None, &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "keys", "check-config", "--config"] {
        assert!(help.contains(word), "{word} in {help}");
    }
    let out = run_cli(None, &["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = run_cli(None, &["no-such-command"]);
    assert!(!out.status.success());
}
