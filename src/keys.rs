//! Our own signing key: the `signing.key` file, its history in the database, and the signed
//! `/_matrix/key/v2/server` response.
//!
//! The file uses Synapse's format (`ed25519 <version> <unpadded base64 seed>`), so an operator
//! can move a server name between Synapse and invited in either direction. The seed lives only
//! in that file (mode 0600); the database holds public keys and their history, so the SQLite
//! file can be shared for inspection without leaking the key.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use invited_matrix::{KeyId, Object, ServerName, SigningKey, Value, base64, sign_json};

use crate::fatal::Error;
use crate::store::{OurKey, Store};

/// Parses Synapse's `signing.key` format. The file may hold several lines (Synapse allows
/// that); like Synapse, the first key is the one we sign with.
pub fn parse_key_file(text: &str, shown: &str) -> Result<SigningKey, Error> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| Error::new(format!("signing key file {shown} is empty")))?;
    let mut parts = line.split_whitespace();
    let (Some(alg), Some(version), Some(seed), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::new(format!(
            "signing key file {shown}: expected 'ed25519 <version> <base64 seed>'"
        )));
    };
    if alg != "ed25519" {
        return Err(Error::new(format!(
            "signing key file {shown}: unsupported algorithm {alg:?} (only ed25519)"
        )));
    }
    let key_id = KeyId::ed25519(version)
        .map_err(|e| Error::new(format!("signing key file {shown}: {e}")))?;
    let seed: [u8; 32] = base64::decode(seed)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Error::new(format!(
                "signing key file {shown}: the seed is not base64 of 32 bytes"
            ))
        })?;
    Ok(SigningKey::from_seed(key_id, &seed))
}

/// The file text for a key, in Synapse's format.
pub fn key_file_text(key: &SigningKey) -> String {
    format!(
        "ed25519 {} {}\n",
        key.key_id().version(),
        base64::encode(&key.seed())
    )
}

/// A fresh key from the OS random number generator, with a Synapse-style version `a_XXXX`.
pub fn generate_key() -> Result<SigningKey, Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::new(format!("no OS randomness: {e}")))?;
    let mut tag = [0u8; 4];
    getrandom::fill(&mut tag).map_err(|e| Error::new(format!("no OS randomness: {e}")))?;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let version: String = tag
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    let key_id = KeyId::ed25519(&format!("a_{version}"))
        .map_err(|e| Error::new(format!("generated key ID: {e}")))?;
    Ok(SigningKey::from_seed(key_id, &seed))
}

/// Reads a key file.
pub fn read_key_file(path: &Path) -> Result<SigningKey, Error> {
    let shown = path.display().to_string();
    let text = fs::read_to_string(path)
        .map_err(|e| Error::new(format!("cannot read signing key file {shown}: {e}")))?;
    parse_key_file(&text, &shown)
}

/// Writes a key file with mode 0600, atomically (temporary file, fsync, rename), so a crash
/// never leaves a half-written key. Refuses to replace an existing file unless `replace`.
pub fn write_key_file(path: &Path, key: &SigningKey, replace: bool) -> Result<(), Error> {
    let shown = path.display().to_string();
    if !replace && path.exists() {
        return Err(Error::new(format!(
            "{shown} already exists; not overwriting it"
        )));
    }
    let tmp = path.with_extension("key.tmp");
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(key_file_text(key).as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            // Make the rename itself durable.
            if let Ok(d) = fs::File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) {
                let _ = d.sync_all();
            }
        }
        Ok::<(), std::io::Error>(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::new(format!("cannot write signing key file {shown}: {e}"))
    })
}

/// Loads our signing key at start-up, creating it on first start, and makes sure the database
/// records it as current. A key file that disagrees with the database's history is an error,
/// never silently "fixed".
pub fn load_or_create(
    key_path: &Path,
    store: &mut Store,
    now_ms: i64,
) -> Result<SigningKey, Error> {
    let key = if key_path.exists() {
        read_key_file(key_path)?
    } else {
        let keys = store.our_keys()?;
        if let Some(current) = keys.iter().find(|k| k.expired_ts.is_none()) {
            return Err(Error::new(format!(
                "signing key file {} is missing, but the database says key {} is current; \
                 restore the file, or run 'invited keys rotate' to start a new key",
                key_path.display(),
                current.key_id
            )));
        }
        let key = generate_key()?;
        write_key_file(key_path, &key, false)?;
        log::info!(
            "created signing key {} in {}",
            key.key_id(),
            key_path.display()
        );
        key
    };
    store.make_key_current(key.key_id().as_str(), &key.verify_key().to_base64(), now_ms)?;
    Ok(key)
}

/// Retires the current key and makes a new one: the new seed replaces the key file, the old
/// public key moves to `old_verify_keys`. A running server keeps its old key until restarted.
pub fn rotate(key_path: &Path, store: &mut Store, now_ms: i64) -> Result<SigningKey, Error> {
    let key = generate_key()?;
    write_key_file(key_path, &key, true)?;
    store.make_key_current(key.key_id().as_str(), &key.verify_key().to_base64(), now_ms)?;
    Ok(key)
}

/// Takes a Synapse `signing.key` file as our key (migrating a server name), retiring ours.
pub fn import(
    from: &Path,
    key_path: &Path,
    store: &mut Store,
    now_ms: i64,
) -> Result<SigningKey, Error> {
    let key = read_key_file(from)?;
    // Record first: if the database refuses (a reused key ID), the file stays as it was.
    store.make_key_current(key.key_id().as_str(), &key.verify_key().to_base64(), now_ms)?;
    write_key_file(key_path, &key, true)?;
    Ok(key)
}

/// The signed `GET /_matrix/key/v2/server` body: our current key in `verify_keys`, retired ones
/// in `old_verify_keys`, valid until `valid_until_ts`.
pub fn key_response(
    server_name: &ServerName,
    current: &SigningKey,
    history: &[OurKey],
    valid_until_ts: i64,
) -> Result<Value, Error> {
    let mut verify_keys = Object::new();
    let mut key = Object::new();
    key.insert("key".into(), current.verify_key().to_base64().into());
    verify_keys.insert(current.key_id().to_string(), Value::Object(key));

    let mut old_verify_keys = Object::new();
    for old in history
        .iter()
        .filter(|k| k.key_id != current.key_id().as_str())
    {
        let mut entry = Object::new();
        entry.insert("key".into(), old.public_key.clone().into());
        // A key still marked current in the database but not in our file was retired when the
        // file changed; publish it as expiring now rather than not at all.
        entry.insert(
            "expired_ts".into(),
            Value::int(old.expired_ts.unwrap_or(valid_until_ts)),
        );
        old_verify_keys.insert(old.key_id.clone(), Value::Object(entry));
    }

    let mut body = Object::new();
    body.insert("server_name".into(), server_name.as_str().into());
    body.insert("verify_keys".into(), Value::Object(verify_keys));
    body.insert("old_verify_keys".into(), Value::Object(old_verify_keys));
    body.insert("valid_until_ts".into(), Value::int(valid_until_ts));
    sign_json(&mut body, server_name.as_str(), current)
        .map_err(|e| Error::new(format!("cannot sign our key response: {e}")))?;
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use invited_matrix::verify_json;

    #[test]
    fn synapse_key_file_round_trip() {
        // The spec's test seed, with its non-zero trailing bits, as Synapse would read it.
        let key = parse_key_file(
            "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n",
            "test",
        )
        .unwrap();
        assert_eq!(key.key_id().as_str(), "ed25519:1");
        assert_eq!(
            key.verify_key().to_base64(),
            "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"
        );
        assert_eq!(
            key_file_text(&key),
            "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0\n"
        );
        for bad in [
            "",
            "ed25519 1",
            "rsa 1 AAAA",
            "ed25519 a-b AAAA",
            "ed25519 1 AAAA",
            "ed25519 1 x y",
        ] {
            assert!(parse_key_file(bad, "t").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_keys_differ_and_look_like_synapse_ones() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a.seed(), b.seed());
        assert!(a.key_id().version().starts_with("a_"));
        assert_eq!(a.key_id().version().len(), 6);
    }

    #[test]
    fn key_response_is_self_signed() {
        let key =
            parse_key_file("ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1", "t").unwrap();
        let history = vec![OurKey {
            key_id: "ed25519:old".into(),
            public_key: "AAAA".into(),
            created_ts: 1,
            expired_ts: Some(5),
        }];
        let server = ServerName::parse("domain").unwrap();
        let body = key_response(&server, &key, &history, 1_700_000_000_000).unwrap();
        let obj = body.as_object().unwrap();
        verify_json(obj, "domain", key.key_id(), &key.verify_key()).unwrap();
        assert_eq!(
            body["old_verify_keys"]["ed25519:old"]["expired_ts"],
            Value::int(5)
        );
        // With no old keys this is exactly test vector B6.
        let b6 = key_response(&server, &key, &[], 1_700_000_000_000).unwrap();
        assert_eq!(
            b6["signatures"]["domain"]["ed25519:1"].as_str(),
            Some(
                "ewq/uPhfAzmWSa/3PRlr5Q0W59jG75Wtb6mzxIELuVRAxYMHOeMFue6fNXijZkIwLLembQ0+gl7DIkiUGcoUBg"
            )
        );
    }
}
