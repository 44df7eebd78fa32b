//! Validating a server's published signing keys: the body of `GET /_matrix/key/v2/server`,
//! fetched directly or as one entry of a notary's `POST /_matrix/key/v2/query` answer.
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys>.
//!
//! A response vouches for itself: it must be signed with (at least one of) the keys it lists
//! in `verify_keys`. A notary's own signature over an entry is the caller's business.

use std::fmt;

use crate::ids::{KeyId, ServerName};
use crate::json::{Object, Value};
use crate::signing::{
    SignatureError, VerifyKey, signature_key_ids, signing_bytes, verify_with_bytes,
};

/// The most keys (`verify_keys` and `old_verify_keys` together) a response may list. Real
/// servers publish one to three; the cap bounds the work a hostile response can cause, since
/// every listed key is decoded and every self-signature verified.
pub const MAX_KEYS_PER_RESPONSE: usize = 16;

/// The keys of one server, as its response published them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeys {
    /// Until when the `verify_keys` may be used (callers cap it; see the spec's 7-day rule
    /// for room versions 5+).
    pub valid_until_ts: i64,
    /// The current ed25519 keys, in key ID order.
    pub verify_keys: Vec<(KeyId, VerifyKey)>,
    /// Retired ed25519 keys with their `expired_ts`, in key ID order; none whose ID is also
    /// in `verify_keys` above.
    pub old_verify_keys: Vec<(KeyId, VerifyKey, i64)>,
}

/// Why a key response is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerKeysError {
    /// The body is not a JSON object.
    NotAnObject,
    /// `server_name` is not the server whose keys were asked for.
    WrongServer { expected: String },
    /// No integer `valid_until_ts`.
    NoValidUntil,
    /// No `verify_keys` object.
    NoVerifyKeys,
    /// More than [`MAX_KEYS_PER_RESPONSE`] keys listed.
    TooManyKeys { count: usize },
    /// The server's own signatures are missing or malformed, or one of them does not verify.
    SelfSignature(SignatureError),
    /// None of the server's signatures is by a key in its own `verify_keys`.
    NotSelfSigned,
}

impl fmt::Display for ServerKeysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerKeysError::NotAnObject => f.write_str("not an object"),
            ServerKeysError::WrongServer { expected } => {
                write!(f, "server_name is not {expected}")
            }
            ServerKeysError::NoValidUntil => f.write_str("no valid_until_ts"),
            ServerKeysError::NoVerifyKeys => f.write_str("no verify_keys"),
            ServerKeysError::TooManyKeys { count } => write!(
                f,
                "lists {count} keys; at most {MAX_KEYS_PER_RESPONSE} are accepted"
            ),
            ServerKeysError::SelfSignature(e) => write!(f, "self-signature: {e}"),
            ServerKeysError::NotSelfSigned => {
                f.write_str("not signed with any of its own verify_keys")
            }
        }
    }
}

impl std::error::Error for ServerKeysError {}

/// Checks a key response for `server` and returns its keys.
///
/// Accepted: `server_name` is `server`; `valid_until_ts` is present; at most
/// [`MAX_KEYS_PER_RESPONSE`] keys in all; at least one signature by `server` with a key from
/// its `verify_keys`, and every such signature verifies. Keys that are not ed25519, or whose
/// ID or public key does not decode, are skipped (the spec lets servers publish other
/// algorithms); old keys without an integer `expired_ts` are skipped.
pub fn parse_server_keys(
    response: &Value,
    server: &ServerName,
) -> Result<ServerKeys, ServerKeysError> {
    let obj = response.as_object().ok_or(ServerKeysError::NotAnObject)?;
    if obj.get("server_name").and_then(Value::as_str) != Some(server.as_str()) {
        return Err(ServerKeysError::WrongServer {
            expected: server.to_string(),
        });
    }
    let valid_until_ts = obj
        .get("valid_until_ts")
        .and_then(Value::as_i64)
        .ok_or(ServerKeysError::NoValidUntil)?;
    let current = obj
        .get("verify_keys")
        .and_then(Value::as_object)
        .ok_or(ServerKeysError::NoVerifyKeys)?;
    let old = obj.get("old_verify_keys").and_then(Value::as_object);
    let count = current.len() + old.map_or(0, Object::len);
    if count > MAX_KEYS_PER_RESPONSE {
        return Err(ServerKeysError::TooManyKeys { count });
    }

    let verify_keys: Vec<(KeyId, VerifyKey)> = current
        .iter()
        .filter_map(|(id, entry)| Some((ed25519_id(id)?, public_key(entry)?)))
        .collect();

    // Every signature the server made with one of these keys must verify, and there must be
    // one. The signed bytes are the same for all: canonicalise once.
    let signed_with =
        signature_key_ids(obj, server.as_str()).map_err(ServerKeysError::SelfSignature)?;
    let own: Vec<(&KeyId, &VerifyKey)> = signed_with
        .iter()
        .filter_map(|id| {
            let (_, key) = verify_keys.iter().find(|(k, _)| k == id)?;
            Some((id, key))
        })
        .collect();
    if own.is_empty() {
        return Err(ServerKeysError::NotSelfSigned);
    }
    let bytes = signing_bytes(obj);
    for (id, key) in own {
        verify_with_bytes(obj, &bytes, server.as_str(), id, key)
            .map_err(ServerKeysError::SelfSignature)?;
    }

    let old_verify_keys = old
        .into_iter()
        .flatten()
        .filter(|(id, _)| !verify_keys.iter().any(|(k, _)| k.as_str() == id.as_str()))
        .filter_map(|(id, entry)| {
            let expired_ts = entry.get("expired_ts").and_then(Value::as_i64)?;
            Some((ed25519_id(id)?, public_key(entry)?, expired_ts))
        })
        .collect();
    Ok(ServerKeys {
        valid_until_ts,
        verify_keys,
        old_verify_keys,
    })
}

/// The key ID, if it is a valid ed25519 one.
fn ed25519_id(id: &str) -> Option<KeyId> {
    KeyId::parse(id).ok().filter(KeyId::is_ed25519)
}

/// The entry's `key`, if it decodes to an ed25519 public key.
fn public_key(entry: &Value) -> Option<VerifyKey> {
    entry
        .get("key")
        .and_then(Value::as_str)
        .and_then(VerifyKey::from_base64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;
    use crate::signing::{SigningKey, sign_json};

    const SERVER: &str = "origin.example";

    fn key(seed: u8, version: &str) -> SigningKey {
        SigningKey::from_seed(KeyId::ed25519(version).unwrap(), &[seed; 32])
    }

    fn server() -> ServerName {
        ServerName::parse(SERVER).unwrap()
    }

    fn key_entry(k: &SigningKey) -> String {
        format!(r#"{{"key":"{}"}}"#, k.verify_key().to_base64())
    }

    /// A response listing `verify` and `old` (JSON object texts), signed by `signers`.
    fn response(verify: &str, old: &str, signers: &[&SigningKey]) -> Value {
        let mut obj = json::parse(&format!(
            r#"{{"server_name":"{SERVER}","valid_until_ts":1000,
                "verify_keys":{verify},"old_verify_keys":{old}}}"#
        ))
        .unwrap()
        .as_object()
        .unwrap()
        .clone();
        for k in signers {
            sign_json(&mut obj, SERVER, k).unwrap();
        }
        Value::Object(obj)
    }

    fn id(text: &str) -> KeyId {
        KeyId::parse(text).unwrap()
    }

    #[test]
    fn a_self_signed_response() {
        let (a, old) = (key(1, "a"), key(2, "old"));
        let r = response(
            &format!(r#"{{"ed25519:a":{}}}"#, key_entry(&a)),
            &format!(
                r#"{{"ed25519:old":{{"key":"{}","expired_ts":500}}}}"#,
                old.verify_key().to_base64()
            ),
            &[&a],
        );
        assert_eq!(
            parse_server_keys(&r, &server()),
            Ok(ServerKeys {
                valid_until_ts: 1000,
                verify_keys: vec![(id("ed25519:a"), a.verify_key())],
                old_verify_keys: vec![(id("ed25519:old"), old.verify_key(), 500)],
            })
        );
    }

    /// The spec's test signing key (appendices, "Cryptographic test vectors") publishing itself.
    #[test]
    fn the_spec_test_key() {
        let seed: [u8; 32] = crate::base64::decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
            .unwrap()
            .try_into()
            .unwrap();
        let k = SigningKey::from_seed(id("ed25519:1"), &seed);
        let r = response(
            r#"{"ed25519:1":{"key":"XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"}}"#,
            "{}",
            &[&k],
        );
        let keys = parse_server_keys(&r, &server()).unwrap();
        assert_eq!(keys.verify_keys, [(id("ed25519:1"), k.verify_key())]);
    }

    #[test]
    fn refusals() {
        let a = key(1, "a");
        let one = format!(r#"{{"ed25519:a":{}}}"#, key_entry(&a));
        let good = response(&one, "{}", &[&a]);
        let edit = |f: &dyn Fn(&mut Object)| {
            let mut r = good.clone();
            f(r.as_object_mut().unwrap());
            parse_server_keys(&r, &server())
        };
        assert_eq!(
            parse_server_keys(&Value::Null, &server()),
            Err(ServerKeysError::NotAnObject)
        );
        assert_eq!(
            edit(&|o| {
                o.insert("server_name".into(), "evil.example".into());
            }),
            Err(ServerKeysError::WrongServer {
                expected: SERVER.into()
            })
        );
        assert_eq!(
            edit(&|o| {
                o.remove("valid_until_ts");
            }),
            Err(ServerKeysError::NoValidUntil)
        );
        assert_eq!(
            edit(&|o| {
                o.insert("verify_keys".into(), Value::Array(vec![]));
            }),
            Err(ServerKeysError::NoVerifyKeys)
        );
        // Unsigned; signed by someone else only; signed by a key it does not list.
        assert_eq!(
            edit(&|o| {
                o.remove("signatures");
            }),
            Err(ServerKeysError::SelfSignature(SignatureError::Missing {
                entity: SERVER.into()
            }))
        );
        let mut other = good.as_object().unwrap().clone();
        other.remove("signatures");
        sign_json(&mut other, "notary.example", &a).unwrap();
        assert!(matches!(
            parse_server_keys(&Value::Object(other), &server()),
            Err(ServerKeysError::SelfSignature(
                SignatureError::Missing { .. }
            ))
        ));
        let stranger = key(9, "b");
        assert_eq!(
            parse_server_keys(&response(&one, "{}", &[&stranger]), &server()),
            Err(ServerKeysError::NotSelfSigned)
        );
        // A listed key's signature that does not verify refuses the whole response, even
        // when another one does.
        assert_eq!(
            edit(&|o| {
                o.insert("valid_until_ts".into(), Value::int(2000));
            }),
            Err(ServerKeysError::SelfSignature(SignatureError::Invalid {
                entity: SERVER.into(),
                key_id: "ed25519:a".into()
            }))
        );
        let b = key(3, "b");
        let two = format!(
            r#"{{"ed25519:a":{},"ed25519:b":{}}}"#,
            key_entry(&a),
            key_entry(&b)
        );
        let mut r = response(&two, "{}", &[&a]);
        let sigs = r.as_object_mut().unwrap().get_mut("signatures").unwrap();
        let mine = sigs.as_object_mut().unwrap().get_mut(SERVER).unwrap();
        mine.as_object_mut()
            .unwrap()
            .insert("ed25519:b".into(), "AAAA".into());
        assert!(matches!(
            parse_server_keys(&r, &server()),
            Err(ServerKeysError::SelfSignature(
                SignatureError::Invalid { .. }
            ))
        ));
        assert!(parse_server_keys(&response(&two, "{}", &[&a, &b]), &server()).is_ok());
    }

    #[test]
    fn skipped_keys() {
        let a = key(1, "a");
        let r = response(
            &format!(
                r#"{{"ed25519:a":{},"curve25519:x":{},"ed25519:bad":{{"key":"!!"}},
                    "ed25519:none":{{}}}}"#,
                key_entry(&a),
                key_entry(&a)
            ),
            &format!(
                r#"{{"ed25519:a":{{"key":"{k}","expired_ts":1}},
                    "ed25519:no_expiry":{{"key":"{k}"}},
                    "ed25519:float":{{"key":"{k}","expired_ts":1.5}},
                    "curve25519:y":{{"key":"{k}","expired_ts":1}},
                    "ed25519:kept":{{"key":"{k}","expired_ts":7}}}}"#,
                k = key(2, "x").verify_key().to_base64()
            ),
            &[&a],
        );
        let keys = parse_server_keys(&r, &server()).unwrap();
        assert_eq!(keys.verify_keys, [(id("ed25519:a"), a.verify_key())]);
        assert_eq!(
            keys.old_verify_keys,
            [(id("ed25519:kept"), key(2, "x").verify_key(), 7)]
        );
        // An old key is only hidden by a usable current key of the same ID (as before).
        let r = response(
            &format!(
                r#"{{"ed25519:a":{},"ed25519:b":{{"key":"!!"}}}}"#,
                key_entry(&a)
            ),
            &format!(
                r#"{{"ed25519:b":{{"key":"{}","expired_ts":3}}}}"#,
                a.verify_key().to_base64()
            ),
            &[&a],
        );
        let keys = parse_server_keys(&r, &server()).unwrap();
        assert_eq!(keys.old_verify_keys, [(id("ed25519:b"), a.verify_key(), 3)]);
        // old_verify_keys that is not an object is ignored.
        let a_only = format!(r#"{{"ed25519:a":{}}}"#, key_entry(&a));
        let keys = parse_server_keys(&response(&a_only, "[1]", &[&a]), &server()).unwrap();
        assert!(keys.old_verify_keys.is_empty());
    }

    /// The cap counts every listed entry, before anything is decoded or verified.
    #[test]
    fn at_most_sixteen_keys() {
        let a = key(1, "a");
        let entries = |n: usize, from: usize| {
            let items: Vec<String> = (from..from + n)
                .map(|i| format!(r#""ed25519:k{i}":{{"key":"!","expired_ts":1}}"#))
                .collect();
            items.join(",")
        };
        let with = |current: usize, old: usize| {
            response(
                &format!(
                    r#"{{"ed25519:a":{}{}{}}}"#,
                    key_entry(&a),
                    if current > 1 { "," } else { "" },
                    entries(current - 1, 0)
                ),
                &format!("{{{}}}", entries(old, 100)),
                &[&a],
            )
        };
        assert!(parse_server_keys(&with(16, 0), &server()).is_ok());
        assert!(parse_server_keys(&with(10, 6), &server()).is_ok());
        assert_eq!(
            parse_server_keys(&with(10, 7), &server()),
            Err(ServerKeysError::TooManyKeys { count: 17 })
        );
        assert_eq!(
            parse_server_keys(&with(17, 0), &server()),
            Err(ServerKeysError::TooManyKeys { count: 17 })
        );
        // Before the signatures are even looked at.
        let mut unsigned = with(17, 0);
        unsigned.as_object_mut().unwrap().remove("signatures");
        assert_eq!(
            parse_server_keys(&unsigned, &server()),
            Err(ServerKeysError::TooManyKeys { count: 17 })
        );
        assert_eq!(
            ServerKeysError::TooManyKeys { count: 17 }.to_string(),
            "lists 17 keys; at most 16 are accepted"
        );
    }
}
