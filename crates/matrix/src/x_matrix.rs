//! `Authorization: X-Matrix …`: parsing the header, and the object a request signature covers.
//!
//! The grammar is RFC 9110 credentials with the spec's compatibility rules
//! (<https://spec.matrix.org/v1.16/server-server-api/#request-authentication>): the scheme is
//! case-insensitive; parameter names are case-insensitive and unordered; values are tokens or
//! quoted strings with `\` escapes; bare values may contain `:`; unknown parameters are
//! ignored. The prose calls the signature parameter `signature`, but every implementation
//! sends `sig`; we read `sig`.

use std::fmt;

use crate::ids::{KeyId, ServerName};
use crate::json::{Object, Value};
use crate::signing::{SignatureError, VerifyKey, verify_json};

/// One parsed X-Matrix credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    pub origin: ServerName,
    /// Optional in the header (added in spec v1.3); the signed object always has ours.
    pub destination: Option<ServerName>,
    pub key: KeyId,
    /// The unpadded base64 signature, as sent.
    pub sig: String,
}

/// Why an `Authorization` header is not a usable X-Matrix credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrixError(pub String);

impl fmt::Display for XMatrixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed X-Matrix authorization: {}", self.0)
    }
}

impl std::error::Error for XMatrixError {}

fn bad(why: impl Into<String>) -> XMatrixError {
    XMatrixError(why.into())
}

/// Longest header value we parse; real ones are ~200 bytes.
const MAX_HEADER_BYTES: usize = 4096;

/// Parses one `Authorization` header value. `Ok(None)` when the scheme is not X-Matrix (such
/// headers are ignored, not errors).
pub fn parse_header(value: &[u8]) -> Result<Option<XMatrix>, XMatrixError> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(bad("header too long"));
    }
    let text = std::str::from_utf8(value).map_err(|_| bad("not UTF-8"))?;
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = match text.find([' ', '\t']) {
        Some(i) => (&text[..i], &text[i..]),
        None => (text, ""),
    };
    if !scheme.eq_ignore_ascii_case("X-Matrix") {
        return Ok(None);
    }
    let params = parse_params(rest)?;
    let mut origin = None;
    let mut destination = None;
    let mut key = None;
    let mut sig = None;
    for (name, value) in params {
        let slot = match name.to_ascii_lowercase().as_str() {
            "origin" => &mut origin,
            "destination" => &mut destination,
            "key" => &mut key,
            "sig" => &mut sig,
            _ => continue,
        };
        if slot.is_some() {
            return Err(bad(format!("parameter {name:?} appears twice")));
        }
        *slot = Some(value);
    }
    let origin = origin.ok_or_else(|| bad("no origin"))?;
    let origin = ServerName::parse(&origin).map_err(|e| bad(format!("origin: {e}")))?;
    let destination = destination
        .map(|d| ServerName::parse(&d).map_err(|e| bad(format!("destination: {e}"))))
        .transpose()?;
    let key = key.ok_or_else(|| bad("no key"))?;
    let key = KeyId::parse(&key).map_err(|e| bad(format!("key: {e}")))?;
    let sig = sig.ok_or_else(|| bad("no sig"))?;
    Ok(Some(XMatrix {
        origin,
        destination,
        key,
        sig,
    }))
}

/// `name=value` pairs separated by commas, with optional spaces/tabs around commas.
fn parse_params(text: &str) -> Result<Vec<(String, String)>, XMatrixError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && (bytes[*i] == b' ' || bytes[*i] == b'\t') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            break;
        }
        let name_start = i;
        while i < bytes.len() && is_tchar(bytes[i]) {
            i += 1;
        }
        if i == name_start {
            return Err(bad("expected a parameter name"));
        }
        let name = &text[name_start..i];
        skip_ws(&mut i);
        if bytes.get(i) != Some(&b'=') {
            return Err(bad(format!("expected '=' after {name:?}")));
        }
        i += 1;
        skip_ws(&mut i);
        let value = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut v = String::new();
            loop {
                match bytes.get(i) {
                    None => return Err(bad("unterminated quoted value")),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        // `\x` stands for `x`; step over one whole (possibly multi-byte) char.
                        let ch = text[i + 1..]
                            .chars()
                            .next()
                            .ok_or_else(|| bad("dangling backslash"))?;
                        v.push(ch);
                        i += 1 + ch.len_utf8();
                    }
                    Some(_) => {
                        let ch = text[i..].chars().next().ok_or_else(|| bad("bad value"))?;
                        if ch.is_control() {
                            return Err(bad("control character in value"));
                        }
                        v.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            v
        } else {
            // A token, or (for compatibility) a bare value containing ':'.
            let start = i;
            while i < bytes.len() && (is_tchar(bytes[i]) || bytes[i] == b':') {
                i += 1;
            }
            if i == start {
                return Err(bad(format!("empty value for {name:?}")));
            }
            text[start..i].to_owned()
        };
        out.push((name.to_owned(), value));
        skip_ws(&mut i);
        match bytes.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(bad("expected ',' between parameters")),
        }
    }
    Ok(out)
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The object an X-Matrix signature covers: method, raw URI (path and query, as sent),
/// origin, destination (always ours), and the parsed body when the request has one.
pub fn request_object(
    method: &str,
    uri: &str,
    origin: &ServerName,
    destination: &ServerName,
    content: Option<&Value>,
) -> Object {
    let mut o = Object::new();
    o.insert("method".into(), method.into());
    o.insert("uri".into(), uri.into());
    o.insert("origin".into(), origin.as_str().into());
    o.insert("destination".into(), destination.as_str().into());
    if let Some(c) = content {
        o.insert("content".into(), c.clone());
    }
    o
}

/// Checks one credential's signature over the request with the origin's key.
pub fn verify_request(
    credential: &XMatrix,
    request: &Object,
    key: &VerifyKey,
) -> Result<(), SignatureError> {
    let mut signed = request.clone();
    let mut mine = Object::new();
    mine.insert(credential.key.to_string(), credential.sig.clone().into());
    let mut sigs = Object::new();
    sigs.insert(credential.origin.to_string(), Value::Object(mine));
    signed.insert("signatures".into(), Value::Object(sigs));
    verify_json(&signed, credential.origin.as_str(), &credential.key, key)
}

/// The canonical bytes an X-Matrix signature covers, written directly (no copy of the body):
/// the same bytes as the signing bytes of [`request_object`]. The keys are in canonical order:
/// `content`, `destination`, `method`, `origin`, `uri`.
pub fn request_signing_bytes(
    method: &str,
    uri: &str,
    origin: &ServerName,
    destination: &ServerName,
    content: Option<&Value>,
) -> Vec<u8> {
    use crate::json::{write_canonical, write_canonical_str};
    let mut out = String::with_capacity(256);
    out.push('{');
    if let Some(c) = content {
        out.push_str("\"content\":");
        write_canonical(&mut out, c);
        out.push(',');
    }
    for (i, (k, v)) in [
        ("destination", destination.as_str()),
        ("method", method),
        ("origin", origin.as_str()),
        ("uri", uri),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        write_canonical_str(&mut out, k);
        out.push(':');
        write_canonical_str(&mut out, v);
    }
    out.push('}');
    out.into_bytes()
}

/// Checks one credential's signature over bytes from [`request_signing_bytes`].
pub fn verify_request_bytes(
    credential: &XMatrix,
    signed: &[u8],
    key: &VerifyKey,
) -> Result<(), SignatureError> {
    let bad_encoding = || SignatureError::BadEncoding {
        entity: credential.origin.to_string(),
        key_id: credential.key.to_string(),
    };
    let sig = crate::base64::decode(&credential.sig).ok_or_else(bad_encoding)?;
    if key.verify_bytes(signed, &sig) {
        Ok(())
    } else {
        Err(SignatureError::Invalid {
            entity: credential.origin.to_string(),
            key_id: credential.key.to_string(),
        })
    }
}

/// The header value a sender puts on a request (for tests and tools).
pub fn header_value(credential: &XMatrix) -> String {
    let mut h = format!(
        "X-Matrix origin=\"{}\",key=\"{}\",sig=\"{}\"",
        credential.origin, credential.key, credential.sig
    );
    if let Some(d) = &credential.destination {
        h.push_str(&format!(",destination=\"{d}\""));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(h: &str) -> Result<Option<XMatrix>, XMatrixError> {
        parse_header(h.as_bytes())
    }

    #[test]
    fn spec_example_and_variants() {
        let x = parse(r#"X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF...""#)
            .unwrap()
            .unwrap();
        assert_eq!(x.origin.as_str(), "origin.hs.example.com");
        assert_eq!(
            x.destination.unwrap().as_str(),
            "destination.hs.example.com"
        );
        assert_eq!(x.key.as_str(), "ed25519:key1");
        assert_eq!(x.sig, "ABCDEF...");

        // Case-insensitive scheme and names, bare values with ':', spaces around commas,
        // any order, unknown parameters ignored, escapes.
        let x = parse(
            "x-matrix   KEY=ed25519:a_1 , Origin=example.org:8448\t,\tsig=\"ab\\\"c\" ,extra=1",
        )
        .unwrap()
        .unwrap();
        assert_eq!(x.origin.as_str(), "example.org:8448");
        assert_eq!(x.destination, None);
        assert_eq!(x.key.as_str(), "ed25519:a_1");
        assert_eq!(x.sig, "ab\"c");
        let x = parse(r#"X-Matrix origin="ex\ample.org",key="ed25519:1",sig="s""#)
            .unwrap()
            .unwrap();
        assert_eq!(x.origin.as_str(), "example.org");
    }

    #[test]
    fn other_schemes_are_ignored() {
        assert_eq!(parse("Bearer abc").unwrap(), None);
        assert_eq!(parse("Basic").unwrap(), None);
        assert_eq!(parse("").unwrap(), None);
    }

    #[test]
    fn malformed() {
        for h in [
            "X-Matrix",
            "X-Matrix origin=a",
            "X-Matrix origin=a,key=ed25519:1",
            "X-Matrix origin=a,key=ed25519:1,sig=",
            "X-Matrix origin=a key=ed25519:1 sig=x",
            "X-Matrix origin=\"a,key=ed25519:1,sig=x",
            "X-Matrix origin=a,origin=b,key=ed25519:1,sig=x",
            "X-Matrix origin=not/valid,key=ed25519:1,sig=x",
            "X-Matrix origin=a,key=nocolon,sig=x",
            "X-Matrix origin=a,destination=b/c,key=ed25519:1,sig=x",
            "X-Matrix =a",
            "X-Matrix origin=a,key=ed25519:1,sig=\"x\\",
        ] {
            assert!(parse(h).is_err(), "{h:?}");
        }
        assert!(parse_header(b"X-Matrix origin=\xff").is_err());
    }

    /// No input panics the parser: random bytes, and mutations of a valid header.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let valid = br#"X-Matrix origin="a.org:8448",destination="b",key="ed25519:k",sig="c2ln""#;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..50_000 {
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                valid.to_vec()
            } else {
                (0..(next() % 300)).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 6) {
                if bytes.is_empty() {
                    break;
                }
                let i = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[i] = next() as u8,
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, b"\\\",= \t:"[(next() % 7) as usize]),
                }
            }
            let _ = parse_header(&bytes);
        }
    }

    /// The hand-written signing bytes equal the generic "Signing JSON" bytes.
    #[test]
    fn request_signing_bytes_match_the_object() {
        let origin = ServerName::parse("domain").unwrap();
        let dest = ServerName::parse("remote.example").unwrap();
        let content = crate::json::parse(r#"{"b":[1,{"\u0001":"\u2028"}],"a":"é\"\\"}"#).unwrap();
        for c in [None, Some(&content)] {
            let obj = request_object("PUT", "/x?y=%20", &origin, &dest, c);
            assert_eq!(
                request_signing_bytes("PUT", "/x?y=%20", &origin, &dest, c),
                crate::signing::signing_bytes(&obj)
            );
        }
    }

    #[test]
    fn header_value_round_trips() {
        let x = XMatrix {
            origin: ServerName::parse("a.org").unwrap(),
            destination: Some(ServerName::parse("b.org").unwrap()),
            key: KeyId::parse("ed25519:1").unwrap(),
            sig: "c2ln".into(),
        };
        assert_eq!(parse(&header_value(&x)).unwrap().unwrap(), x);
    }
}
