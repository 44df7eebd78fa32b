//! `VerifyKey::verify_bytes` must give exactly `verify_strict`'s answer (ed25519-dalek's,
//! the closest to libsodium, which Synapse uses), though it does not call it: it replaces
//! `verify_strict`'s decompression of `R` by a comparison with the encodings of the eight
//! small-order points. These tests build the signatures where the two checks part ways from
//! plain ed25519: `R` of small order (each of the eight), keys of small and of mixed order,
//! and compare the answers; then random valid and tampered signatures.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::{Scalar, clamp_integer};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use invited_matrix::VerifyKey;
use proptest::prelude::*;
use sha2::{Digest, Sha512};

/// The secret scalar ed25519 derives from a seed.
fn secret_scalar(seed: &[u8; 32]) -> Scalar {
    let h = Sha512::digest(seed);
    let mut low = [0u8; 32];
    low.copy_from_slice(&h[..32]);
    Scalar::from_bytes_mod_order(clamp_integer(low))
}

/// k = SHA-512(R ‖ A ‖ M) mod ℓ, the challenge of an ed25519 signature.
fn challenge(r: &[u8; 32], a: &[u8; 32], message: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(message);
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

fn signature(r: &[u8; 32], s: &Scalar) -> [u8; 64] {
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(r);
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

/// (ours, ed25519-dalek's `verify_strict`, ed25519-dalek's plain `verify`).
fn answers(key: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> (bool, bool, bool) {
    let ours = VerifyKey::from_bytes(key).is_some_and(|k| k.verify_bytes(message, sig));
    let dalek = VerifyingKey::from_bytes(key).unwrap();
    let sig = Signature::from_bytes(sig);
    (
        ours,
        dalek.verify_strict(message, &sig).is_ok(),
        dalek.verify(message, &sig).is_ok(),
    )
}

/// A key `A = aB + T` with `T` of order 8, and `s = k·a`: then `[s]B - [k]A = -[k]T`, a
/// point of small order that depends on `k`. For each of the eight small-order points as
/// `R`, try messages until `-[k]T` is `R`: plain verification accepts that signature, strict
/// verification must not. Each of the eight encodings our check compares with is needed
/// here: drop or garble one and its round fails.
#[test]
fn every_small_order_r_is_rejected_as_verify_strict_rejects_it() {
    let a = secret_scalar(&[7u8; 32]);
    let order_8 = EIGHT_TORSION[1];
    let key_point: EdwardsPoint = ED25519_BASEPOINT_POINT * a + order_8;
    let key = key_point.compress().to_bytes();
    assert!(
        !key_point.is_small_order(),
        "a mixed-order key, not a weak one"
    );
    for (i, r_point) in EIGHT_TORSION.iter().enumerate() {
        let r = r_point.compress().to_bytes();
        let found = (0u32..1000).find_map(|n| {
            let message = format!("message {n}").into_bytes();
            let k = challenge(&r, &key, &message);
            let sig = signature(&r, &(k * a));
            let (ours, strict, plain) = answers(&key, &message, &sig);
            plain.then_some((ours, strict))
        });
        let (ours, strict) = found.unwrap_or_else(|| panic!("no message made R = torsion {i}"));
        assert!(
            !strict,
            "verify_strict rejects small-order R (torsion point {i})"
        );
        assert!(!ours, "ours must reject small-order R (torsion point {i})");
    }
}

/// With an honest key, the only small-order `R` plain verification can accept is the
/// identity (`s = k·a`); both strict checks reject it.
#[test]
fn identity_r_under_an_honest_key_is_rejected() {
    let seed = [9u8; 32];
    let a = secret_scalar(&seed);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    let r = EdwardsPoint::default().compress().to_bytes();
    let message = b"identity R";
    let sig = signature(&r, &(challenge(&r, &key, message) * a));
    assert_eq!(answers(&key, message, &sig), (false, false, true));
}

/// Keys of small order: `s = 0` and a small-order `R` pass plain verification whenever
/// `R = -[k]A`; every such signature, and every other, is rejected by both strict checks.
#[test]
fn weak_keys_verify_nothing() {
    let mut plain_accepted = 0;
    for a_point in EIGHT_TORSION {
        let key = a_point.compress().to_bytes();
        for r_point in EIGHT_TORSION {
            let r = r_point.compress().to_bytes();
            for n in 0..8 {
                let message = [n as u8; 3];
                let sig = signature(&r, &Scalar::ZERO);
                let (ours, strict, plain) = answers(&key, &message, &sig);
                plain_accepted += usize::from(plain);
                assert!(!strict && !ours, "weak key {key:02x?}, R {r:02x?}");
            }
        }
    }
    assert!(
        plain_accepted > 0,
        "the test must include signatures plain ed25519 accepts"
    );
}

/// A key of small order with an `R` that is not: `R = [s]B + t` where `t = -[k]A` (found by
/// trying each of the eight `t` until the challenge agrees). Plain verification accepts; the
/// strict checks must reject because of the key alone.
#[test]
fn weak_key_with_a_full_order_r_is_rejected() {
    let key_point = EIGHT_TORSION[3];
    let key = key_point.compress().to_bytes();
    let s = Scalar::from(12345u64);
    let mut plain_accepted = 0;
    for n in 0..64u32 {
        let message = format!("weak key {n}").into_bytes();
        for t in EIGHT_TORSION {
            let r_point = ED25519_BASEPOINT_POINT * s + t;
            let r = r_point.compress().to_bytes();
            if -(key_point * challenge(&r, &key, &message)) != t {
                continue;
            }
            assert!(!r_point.is_small_order());
            let (ours, strict, plain) = answers(&key, &message, &signature(&r, &s));
            assert!(plain && !strict && !ours, "message {n}");
            plain_accepted += 1;
        }
    }
    assert!(
        plain_accepted > 0,
        "the test must include signatures plain ed25519 accepts"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Real signatures, and the same with one bit flipped anywhere in the signature or the
    /// message: ours and `verify_strict` agree on all of them.
    #[test]
    fn agrees_with_verify_strict(
        seed in any::<[u8; 32]>(),
        message in proptest::collection::vec(any::<u8>(), 0..200),
        flip in 0usize..1000,
    ) {
        use ed25519_dalek::Signer;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let key = signing.verifying_key().to_bytes();
        let sig = signing.sign(&message).to_bytes();
        let (ours, strict, _) = answers(&key, &message, &sig);
        prop_assert!(ours && strict);

        let mut bad_sig = sig;
        let mut bad_message = message.clone();
        let bit = flip % ((64 + bad_message.len()) * 8);
        if bit < 512 {
            bad_sig[bit / 8] ^= 1 << (bit % 8);
        } else {
            let b = bit - 512;
            bad_message[b / 8] ^= 1 << (b % 8);
        }
        let (ours, strict, _) = answers(&key, &bad_message, &bad_sig);
        prop_assert_eq!(ours, strict);
        prop_assert!(!ours);
    }
}
