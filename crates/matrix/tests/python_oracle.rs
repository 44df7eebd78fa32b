//! Differential test against Synapse's own Python libraries: `canonicaljson` 2.0.0 (the
//! canonical encoding, floats included, as room versions 1–5 tolerate them) and `signedjson`
//! 1.1.4 (signing and verifying JSON).
//!
//! 1,500 generated JSON texts (`INVITED_ORACLE_CASES=N` for more) (seeded, so every run is the same) plus hand-picked ones go to
//! ONE Python process as JSON lines (`tests/oracle/oracle.py`). Python parses the very same
//! text, so both sides read the same literals. For each text we require:
//! * our canonical bytes == `encode_canonical_json(json.loads(text))`, byte for byte;
//! * for objects: our `sign_json(…, "domain", ed25519:1 from the spec seed)` gives exactly the
//!   object Python's `sign_json` gives (same signature, merged `signatures`, `unsigned` kept);
//! * Python's `verify_signed_json` accepts the object we signed.
//!
//! Intentional differences, not generated here: we refuse duplicate keys, lone surrogates and
//! nesting beyond 128 levels, all of which Python's `json` accepts (see `we_are_stricter`).
//!
//! Python is found via `INVITED_ORACLE_PYTHON`, else `<repo>/target/oracle-venv/bin/python`
//! (made by `scripts/setup-oracles.sh`). Without it the test fails; it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{Rng, gen_deep_text, gen_object_text, gen_value_text, spec_key};
use invited_matrix::{JsonErrorKind, Object, Value, json, sign_json};

/// How many generated texts; `INVITED_ORACLE_CASES` raises it for a longer search.
fn generated() -> usize {
    std::env::var("INVITED_ORACLE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500)
}

fn oracle_python() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidate = match std::env::var_os("INVITED_ORACLE_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo.join("target/oracle-venv/bin/python"),
    };
    assert!(
        candidate.exists(),
        "Python oracle not found at {}: run scripts/setup-oracles.sh (or set \
         INVITED_ORACLE_PYTHON to a python with signedjson==1.1.4 and canonicaljson==2.0.0)",
        candidate.display()
    );
    candidate
}

struct Case {
    text: String,
    /// Our parse; `None` when we refuse the text (then Python must fail too).
    ours: Option<Value>,
    /// Our signed object, for objects.
    signed: Option<Object>,
}

fn cases() -> Vec<String> {
    let mut rng = Rng::new(0x1D0C_0FFE_E5EE_D001);
    let mut texts: Vec<String> = [
        "{}",
        "[]",
        "{\"a\":{},\"b\":[]}",
        r#"{ "one": 1, "two": "Two" }"#,
        r#"{ "本": 2, "日": 1 }"#,
        r#"{ "a": "\u65E5" }"#,
        r#"{ "a": -0, "b": 1e10 }"#,
        "{\"\u{1f600}\":1,\"\u{ffff}\":2,\"\u{e000}\":3,\"\u{d7ff}\":4}",
        r#"{"\ud83d\ude00":1,"\uffff":2}"#,
        r#""\u0000\u001f\u007f\u2028\/\b\f\n\r\t""#,
        r#"{"signatures":{"other":{"ed25519:x":"abc"}},"unsigned":{"age":1},"x":1.5}"#,
        r#"{"signatures":{"domain":{"ed25519:0":"old"}},"a":[1e16,1e15,-0.0]}"#,
        "[9007199254740991,9007199254740992,-9007199254740992,123456789012345678901234567890]",
        "[1e400]",
        "[-1e400]",
        "{\"big\":1.7976931348623159e308}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Exactly the parser's depth limit.
    let max = json::MAX_DEPTH;
    texts.push("[".repeat(max) + &"]".repeat(max));
    texts.push("{\"a\":".repeat(max) + "0.5" + &"}".repeat(max));
    for i in 0..generated() {
        let mut t = String::new();
        match i % 10 {
            // Mostly objects, so most cases are also signed.
            0..=6 => {
                let n = rng.below(8);
                gen_object_text(&mut rng, 0, true, n, &mut t);
                if rng.chance(1, 4) {
                    add_signature_fields(&mut rng, &mut t);
                }
            }
            7 => gen_deep_text(&mut rng, 0, true, &mut t),
            _ => gen_value_text(&mut rng, 0, true, &mut t),
        }
        texts.push(t);
    }
    texts
}

/// Prepends `signatures` (other entities, or an old key of ours) and `unsigned` members to a
/// generated object's text, to test that signing merges and leaves `unsigned` alone.
fn add_signature_fields(rng: &mut Rng, text: &mut String) {
    let Some(rest) = text.strip_prefix('{') else {
        return;
    };
    let sigs = *rng.pick(&[
        r#""signatures":{"other.example":{"ed25519:a":"c2ln"}},"#,
        r#""signatures":{"domain":{"ed25519:0":"b2xk"}},"#,
        r#""signatures":{},"#,
        "",
    ]);
    let unsigned = *rng.pick(&[
        r#""unsigned":{"age_ts":1000000,"f":0.5},"#,
        r#""unsigned":null,"#,
        "",
    ]);
    // Generated keys never spell "signatures"/"unsigned", so no duplicates arise.
    let mut members = format!("{sigs}{unsigned}");
    if rest.trim_start().starts_with('}') {
        members = members.trim_end_matches(',').to_owned();
    }
    let t = format!("{{{members}{rest}");
    *text = t;
}

#[test]
fn matches_canonicaljson_and_signedjson() {
    let python = oracle_python();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/oracle.py");
    let key = spec_key();

    let cases: Vec<Case> = cases()
        .into_iter()
        .map(|text| {
            let ours = json::parse(&text).ok();
            let signed = ours.as_ref().and_then(Value::as_object).map(|o| {
                let mut o = o.clone();
                sign_json(&mut o, "domain", &key).expect("sign");
                o
            });
            Case { text, ours, signed }
        })
        .collect();
    let refused = cases.iter().filter(|c| c.ours.is_none()).count();
    assert!(refused <= 40, "we refused {refused} generated texts");

    let mut lines = Vec::new();
    for (id, c) in cases.iter().enumerate() {
        let req = serde_json::json!({
            "id": id,
            "text": c.text,
            "sign": c.signed.is_some(),
            "ours": c.signed.as_ref().map(|o| Value::Object(o.clone()).to_canonical_string()),
        });
        lines.push(serde_json::to_string(&req).unwrap());
    }

    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; run scripts/setup-oracles.sh",
                python.display()
            )
        });
    let mut stdin = child.stdin.take().unwrap();
    // Write from another thread so neither side can block on a full pipe.
    let writer = std::thread::spawn(move || {
        for l in &lines {
            stdin.write_all(l.as_bytes())?;
            stdin.write_all(b"\n")?;
        }
        Ok::<_, std::io::Error>(())
    });
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let answers: Vec<serde_json::Value> = stdout
        .split(b'\n')
        .map(|l| serde_json::from_slice(&l.unwrap()).unwrap())
        .collect();
    let write_result = writer.join().unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        answers.len() == cases.len() && write_result.is_ok(),
        "the Python oracle answered {} of {} requests ({write_result:?}); stderr:\n{}\n\
         (run scripts/setup-oracles.sh?)",
        answers.len(),
        cases.len(),
        String::from_utf8_lossy(&output.stderr)
    );

    let b64 = |a: &serde_json::Value, field: &str| -> Option<Vec<u8>> {
        a[field]
            .as_str()
            .map(|s| invited_matrix::base64::decode(s).expect("oracle base64"))
    };
    let mut failures = Vec::new();
    let (mut compared, mut signed, mut verified) = (0, 0, 0);
    for (id, (c, a)) in cases.iter().zip(&answers).enumerate() {
        assert_eq!(a["id"].as_u64(), Some(id as u64));
        let Some(v) = &c.ours else {
            // We refused it: only out-of-range floats are generated that way, and Python
            // must refuse them too (it reads inf, which canonical JSON cannot encode).
            let err = json::parse(&c.text).unwrap_err();
            if err.kind != JsonErrorKind::NumberOutOfRange || a["error"].is_null() {
                failures.push(format!(
                    "case {id}: we refused ({err}), Python: {a}\n  {}",
                    c.text
                ));
            }
            continue;
        };
        let Some(canon) = b64(a, "canon") else {
            failures.push(format!(
                "case {id}: Python failed: {}\n  {}",
                a["error"], c.text
            ));
            continue;
        };
        compared += 1;
        let ours = v.to_canonical_bytes();
        if ours != canon {
            failures.push(format!(
                "case {id}: canonical JSON differs\n  input:  {}\n  ours:   {}\n  python: {}",
                c.text,
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&canon)
            ));
            continue;
        }
        // Our output must itself parse back to the same canonical text.
        let again = json::parse_bytes(&ours).expect("our canonical output parses");
        assert_eq!(
            again.to_canonical_bytes(),
            ours,
            "case {id}: re-parse unstable"
        );

        if let Some(obj) = &c.signed {
            let mut obj = obj.clone();
            // signedjson drops an `"unsigned": null` member when it re-attaches `unsigned`
            // (`if unsigned is not None`); the spec says to re-attach it unchanged, as we do.
            // The signature is unaffected (`unsigned` is never signed): compare without it.
            if obj.get("unsigned") == Some(&Value::Null) {
                obj.remove("unsigned");
            }
            let ours_signed = Value::Object(obj).to_canonical_bytes();
            match b64(a, "signed") {
                Some(py) if py == ours_signed => signed += 1,
                other => failures.push(format!(
                    "case {id}: signed object differs\n  input:  {}\n  ours:   {}\n  python: {:?} {}",
                    c.text,
                    String::from_utf8_lossy(&ours_signed),
                    other.map(|b| String::from_utf8_lossy(&b).into_owned()),
                    a["error"]
                )),
            }
            if a["verify_ours"] == serde_json::Value::Bool(true) {
                verified += 1;
            } else {
                failures.push(format!(
                    "case {id}: Python does not verify our signature: {}\n  {}",
                    a["verify_ours"], c.text
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches with the Python oracle:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared >= 1000, "only {compared} values compared");
    assert!(signed >= 700, "only {signed} signatures compared");
    eprintln!(
        "python oracle: {compared} canonical encodings, {signed} signatures, {verified} \
         verifications identical ({refused} refused by both)"
    );
}

/// Inputs Python's `json` accepts and we refuse on purpose: the spec's canonical JSON has no
/// duplicate keys, and lone surrogates cannot be UTF-8; duplicates are a classic way to make
/// a signature cover something other than what is acted upon.
#[test]
fn we_are_stricter() {
    for text in [
        r#"{"a":1,"a":2}"#,
        r#""\ud800""#,
        r#""\udc00x""#,
        r#"{"\ud83d":1}"#,
        "NaN",
        "[Infinity]",
    ] {
        assert!(json::parse(text).is_err(), "{text}");
    }
    let deep = "[".repeat(json::MAX_DEPTH + 1) + &"]".repeat(json::MAX_DEPTH + 1);
    assert!(json::parse(&deep).is_err());
}
