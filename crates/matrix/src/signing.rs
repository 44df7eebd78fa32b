//! Ed25519 keys and the spec's "Signing JSON" / "Checking for a Signature".
//!
//! Verification is strict, as ed25519-dalek's `verify_strict` and libsodium (Synapse's
//! library) are: it rejects small-order public keys, small-order `R` and non-canonical
//! encodings; the spec asks for nothing looser and real traffic does not need it. It gives
//! `verify_strict`'s answer without its cost (see [`VerifyKey::verify_bytes`]).

use std::fmt;

use ed25519_dalek::{Signer, Verifier};

use crate::base64;
use crate::ids::KeyId;
use crate::json::{Object, Value, canonical_object_except};

/// Keys left out of the signed bytes
/// (<https://spec.matrix.org/v1.16/appendices/#signing-details>).
pub const UNSIGNED_KEYS: &[&str] = &["signatures", "unsigned"];

/// Our ed25519 signing key with its key ID. `Debug` never prints the seed.
#[derive(Clone)]
pub struct SigningKey {
    key_id: KeyId,
    inner: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A key from its 32-byte seed (what Synapse's `signing.key` file holds).
    pub fn from_seed(key_id: KeyId, seed: &[u8; 32]) -> SigningKey {
        SigningKey {
            key_id,
            inner: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The 32-byte seed, for writing the key file. Handle with care; never log it.
    pub fn seed(&self) -> [u8; 32] {
        self.inner.to_bytes()
    }

    pub fn verify_key(&self) -> VerifyKey {
        VerifyKey::from_dalek(self.inner.verifying_key())
    }

    /// Signs raw bytes; returns the 64-byte signature.
    pub fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        self.inner.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("public", &self.verify_key().to_base64())
            .finish_non_exhaustive()
    }
}

/// The canonical encodings of the eight points of small order (the curve's 8-torsion: the
/// identity, one point of order 2, two of order 4, four of order 8). A signature whose `R` is
/// one of them is what `verify_strict` and libsodium reject; `tests/strict_verify.rs` signs
/// with each of curve25519-dalek's `EIGHT_TORSION` as `R`.
const SMALL_ORDER_ENCODINGS: [[u8; 32]; 8] = {
    let mut points = [[0u8; 32]; 8];
    // The identity, (0, 1).
    points[0][0] = 1;
    // (0, -1), order 2: y = p - 1.
    let mut i = 0;
    while i < 32 {
        points[1][i] = 0xff;
        i += 1;
    }
    points[1][0] = 0xec;
    points[1][31] = 0x7f;
    // (±sqrt(-1), 0), order 4: y = 0 (points[2]), both signs of x.
    points[3][31] = 0x80;
    // Order 8: two values of y, both signs of x.
    points[4] = ORDER_8_Y[0];
    points[5] = ORDER_8_Y[0];
    points[5][31] |= 0x80;
    points[6] = ORDER_8_Y[1];
    points[7] = ORDER_8_Y[1];
    points[7][31] |= 0x80;
    points
};

/// The two y-coordinates of the points of order 8, little-endian, sign bit clear.
const ORDER_8_Y: [[u8; 32]; 2] = [
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
];

/// A public ed25519 key, with whether it has small order worked out once (keys are cached and
/// checked against thousands of signatures; `verify_strict` works it out for each).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyKey {
    key: ed25519_dalek::VerifyingKey,
    weak: bool,
}

impl VerifyKey {
    /// From unpadded (or padded) standard base64, as `verify_keys` publish it.
    pub fn from_base64(text: &str) -> Option<VerifyKey> {
        let bytes: [u8; 32] = base64::decode(text)?.try_into().ok()?;
        VerifyKey::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Option<VerifyKey> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .ok()
            .map(VerifyKey::from_dalek)
    }

    fn from_dalek(key: ed25519_dalek::VerifyingKey) -> VerifyKey {
        VerifyKey {
            key,
            weak: key.is_weak(),
        }
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Unpadded standard base64, as published in `verify_keys`.
    pub fn to_base64(&self) -> String {
        base64::encode(self.key.as_bytes())
    }

    /// Checks a 64-byte signature over `message`, strictly: the same answer as
    /// `verify_strict`, for about 85 % of its cost.
    ///
    /// `verify_strict` decompresses `R` and checks that neither `R` nor the key has small
    /// order, then that `[s]B - [k]A` compresses to `R`'s bytes. The plain check below does
    /// that last step (and rejects a non-canonical `s`). When it passes, `R`'s bytes are the
    /// canonical encoding of a point, so "`R` has small order" is exactly "`R`'s bytes are one
    /// of the eight canonical encodings of such points": a comparison of bytes instead of a
    /// decompression. The key's order was worked out when the key was made.
    /// (`tests/strict_verify.rs` compares both on every kind of signature where they could
    /// part.)
    pub fn verify_bytes(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        if self.weak || SMALL_ORDER_ENCODINGS.contains(sig.r_bytes()) {
            return false;
        }
        self.key.verify(message, &sig).is_ok()
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyKey({})", self.to_base64())
    }
}

/// Why a signature could not be added or checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// `signatures` (or `signatures.<entity>`) is present but not an object.
    MalformedSignatures,
    /// No `signatures.<entity>` at all.
    Missing { entity: String },
    /// `signatures.<entity>.<key_id>` is absent.
    MissingKey { entity: String, key_id: String },
    /// The signature is not a string of valid base64.
    BadEncoding { entity: String, key_id: String },
    /// The signature does not verify.
    Invalid { entity: String, key_id: String },
    /// Signatures exist, but none with a key we could find.
    NoKnownKey { entity: String },
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::MalformedSignatures => f.write_str("'signatures' is not an object"),
            SignatureError::Missing { entity } => write!(f, "no signature from {entity}"),
            SignatureError::MissingKey { entity, key_id } => {
                write!(f, "no signature from {entity} with key {key_id}")
            }
            SignatureError::BadEncoding { entity, key_id } => {
                write!(
                    f,
                    "signature from {entity} with key {key_id} is not valid base64"
                )
            }
            SignatureError::Invalid { entity, key_id } => {
                write!(f, "invalid signature from {entity} with key {key_id}")
            }
            SignatureError::NoKnownKey { entity } => {
                write!(f, "no known key for any signature from {entity}")
            }
        }
    }
}

impl std::error::Error for SignatureError {}

/// The bytes "Signing JSON" signs: the canonical object without `signatures` and `unsigned`.
pub fn signing_bytes(obj: &Object) -> Vec<u8> {
    canonical_object_except(obj, UNSIGNED_KEYS).into_bytes()
}

/// Signs `obj` as `entity` and merges the signature into `obj.signatures.<entity>`, keeping
/// every other signature.
pub fn sign_json(obj: &mut Object, entity: &str, key: &SigningKey) -> Result<(), SignatureError> {
    let signature = base64::encode(&key.sign_bytes(&signing_bytes(obj)));
    add_signature(obj, entity, key.key_id(), signature)
}

/// Puts `signature` at `obj.signatures.<entity>.<key_id>`, creating the maps as needed.
pub(crate) fn add_signature(
    obj: &mut Object,
    entity: &str,
    key_id: &KeyId,
    signature: String,
) -> Result<(), SignatureError> {
    let sigs = obj.get_or_insert_with("signatures", || Value::Object(Object::new()));
    let Value::Object(sigs) = sigs else {
        return Err(SignatureError::MalformedSignatures);
    };
    let mine = sigs.get_or_insert_with(entity, || Value::Object(Object::new()));
    let Value::Object(mine) = mine else {
        return Err(SignatureError::MalformedSignatures);
    };
    mine.insert(key_id.as_str().to_owned(), Value::String(signature.into()));
    Ok(())
}

/// The ed25519 key IDs `entity` signed `obj` with (others are skipped, as the spec says).
pub fn signature_key_ids(obj: &Object, entity: &str) -> Result<Vec<KeyId>, SignatureError> {
    let sigs = entity_signatures(obj, entity)?;
    Ok(sigs
        .keys()
        .filter_map(|k| KeyId::parse(k).ok())
        .filter(KeyId::is_ed25519)
        .collect())
}

fn entity_signatures<'a>(obj: &'a Object, entity: &str) -> Result<&'a Object, SignatureError> {
    match obj.get("signatures") {
        None => Err(SignatureError::Missing {
            entity: entity.to_owned(),
        }),
        Some(Value::Object(sigs)) => match sigs.get(entity) {
            None => Err(SignatureError::Missing {
                entity: entity.to_owned(),
            }),
            Some(Value::Object(mine)) => Ok(mine),
            Some(_) => Err(SignatureError::MalformedSignatures),
        },
        Some(_) => Err(SignatureError::MalformedSignatures),
    }
}

/// Checks `obj.signatures.<entity>.<key_id>` against `key` over the bytes of "Signing JSON".
pub fn verify_json(
    obj: &Object,
    entity: &str,
    key_id: &KeyId,
    key: &VerifyKey,
) -> Result<(), SignatureError> {
    verify_with_bytes(obj, &signing_bytes(obj), entity, key_id, key)
}

/// Like [`verify_json`], with the signed bytes already computed (events verify the signed
/// bytes of the *redacted* event against the signatures of the full one).
pub(crate) fn verify_with_bytes(
    signatures_of: &Object,
    signed: &[u8],
    entity: &str,
    key_id: &KeyId,
    key: &VerifyKey,
) -> Result<(), SignatureError> {
    let sigs = entity_signatures(signatures_of, entity)?;
    let sig = sigs
        .get(key_id.as_str())
        .ok_or_else(|| SignatureError::MissingKey {
            entity: entity.to_owned(),
            key_id: key_id.to_string(),
        })?;
    let sig = sig
        .as_str()
        .and_then(base64::decode)
        .ok_or_else(|| SignatureError::BadEncoding {
            entity: entity.to_owned(),
            key_id: key_id.to_string(),
        })?;
    if key.verify_bytes(signed, &sig) {
        Ok(())
    } else {
        Err(SignatureError::Invalid {
            entity: entity.to_owned(),
            key_id: key_id.to_string(),
        })
    }
}
