//! `VerifyKey::verify_bytes` must give exactly `verify_strict`'s answer (ed25519-dalek's,
//! the closest to libsodium, which Synapse uses), though it does not call it: it replaces
//! `verify_strict`'s decompression of `R` by a comparison with the encodings of the eight
//! small-order points. These tests build the signatures where the two checks part ways from
//! plain ed25519: `R` of small order (each of the eight), keys of small and of mixed order,
//! and compare the answers; then random valid and tampered signatures.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that ours and `verify_strict` agree, and that both reject; returns plain
/// `verify`'s answer.
fn both_reject(key: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> bool {
    let (ours, strict, plain) = answers(key, message, sig);
    assert_eq!(
        ours,
        strict,
        "DISAGREEMENT: key {}, message {}, signature {}: ours {ours}, verify_strict {strict}",
        hex(key),
        hex(message),
        hex(sig)
    );
    assert!(
        !strict,
        "must reject: key {}, message {}, signature {}",
        hex(key),
        hex(message),
        hex(sig)
    );
    plain
}

/// A scalar that looks random, derived from `tag` so that failures reproduce.
fn arbitrary_scalar(tag: &[u8]) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&Sha512::digest(tag).into())
}

/// (secret scalar `a`, key bytes, key point) of an honest key `aB`.
fn honest_key(seed: &[u8; 32]) -> (Scalar, [u8; 32], EdwardsPoint) {
    let a = secret_scalar(seed);
    let point = ED25519_BASEPOINT_POINT * a;
    (a, point.compress().to_bytes(), point)
}

/// (secret scalar `a`, key bytes, key point) of a mixed-order key `aB + T`, `T` of order 8.
fn mixed_order_key(seed: &[u8; 32]) -> (Scalar, [u8; 32], EdwardsPoint) {
    let a = secret_scalar(seed);
    let point = ED25519_BASEPOINT_POINT * a + EIGHT_TORSION[1];
    (a, point.compress().to_bytes(), point)
}

/// Non-canonical encodings that decompress to small-order points: x = 0 with the sign bit
/// set ("-0"), and y ≥ p (only y = p ≡ 0 and y = p + 1 ≡ 1 fit in 255 bits). Our check
/// compares `R` with the canonical encodings only, so these must be caught elsewhere.
fn non_canonical_small_order() -> [[u8; 32]; 6] {
    let bytes = |low: u8, fill: u8, top: u8| {
        let mut b = [fill; 32];
        b[0] = low;
        b[31] = top;
        b
    };
    [
        bytes(0x01, 0x00, 0x80), // the identity, x = -0
        bytes(0xec, 0xff, 0xff), // (0, -1), order 2, x = -0
        bytes(0xed, 0xff, 0x7f), // y = p: order 4
        bytes(0xed, 0xff, 0xff), // y = p, the other x: order 4
        bytes(0xee, 0xff, 0x7f), // y = p + 1: the identity
        bytes(0xee, 0xff, 0xff), // y = p + 1, x = -0: the identity
    ]
}

/// `R` a non-canonical encoding of a small-order point. `verify_strict` decompresses it to a
/// small-order point and rejects; ours misses it in the byte comparison and relies on plain
/// verification comparing `R`'s bytes with a canonical encoding. Where possible `s` makes
/// `[s]B - [k]A` equal `R`'s point (so only the bytes differ); also `s = 0` and a random `s`.
#[test]
fn non_canonical_small_order_r_is_rejected_as_verify_strict_rejects_it() {
    for r in non_canonical_small_order() {
        let r_point = CompressedEdwardsY(r).decompress().expect("decodes");
        assert!(r_point.is_small_order(), "{}", hex(&r));
        assert_ne!(r_point.compress().to_bytes(), r, "non-canonical");
        for (name, (a, key, key_point)) in [
            ("honest", honest_key(&[9u8; 32])),
            ("mixed-order", mixed_order_key(&[7u8; 32])),
        ] {
            let mut equation_holds = false;
            for n in 0..128u32 {
                let message = format!("non-canonical R {n}").into_bytes();
                let k = challenge(&r, &key, &message);
                for s in [k * a, Scalar::ZERO, arbitrary_scalar(&message)] {
                    let plain = both_reject(&key, &message, &signature(&r, &s));
                    assert!(!plain, "plain verification compares bytes");
                    equation_holds |= ED25519_BASEPOINT_POINT * s - key_point * k == r_point;
                }
            }
            // An honest key reaches only the identity; a mixed-order key every small point.
            if name == "mixed-order" || r_point == EdwardsPoint::default() {
                assert!(
                    equation_holds,
                    "{name} key, R {}: s not constructed",
                    hex(&r)
                );
            }
        }
    }
}

/// Weak keys in non-canonical encodings. ed25519-dalek decodes them (keeping the given
/// bytes, which go into the challenge); both checks must still see that they are weak.
#[test]
fn non_canonical_weak_keys_verify_nothing() {
    let mut plain_accepted = 0;
    for key in non_canonical_small_order() {
        let Ok(dalek) = VerifyingKey::from_bytes(&key) else {
            assert!(VerifyKey::from_bytes(&key).is_none(), "key {}", hex(&key));
            continue;
        };
        assert_eq!(dalek.to_bytes(), key);
        let key_point = CompressedEdwardsY(key).decompress().unwrap();
        for n in 0..16u32 {
            let message = format!("non-canonical weak key {n}").into_bytes();
            // s = 0 with each small-order R (the identity among them), and a random s.
            for r_point in EIGHT_TORSION {
                let r = r_point.compress().to_bytes();
                for s in [Scalar::ZERO, arbitrary_scalar(&message)] {
                    plain_accepted += usize::from(both_reject(&key, &message, &signature(&r, &s)));
                }
            }
            // A full-order R = [s]B + t with t = -[k]A: plain accepts when the challenge agrees.
            let s = arbitrary_scalar(&message);
            for t in EIGHT_TORSION {
                let r = (ED25519_BASEPOINT_POINT * s + t).compress().to_bytes();
                if -(key_point * challenge(&r, &key, &message)) == t {
                    let plain = both_reject(&key, &message, &signature(&r, &s));
                    assert!(plain, "key {}, message {n}", hex(&key));
                    plain_accepted += 1;
                }
            }
        }
    }
    assert!(
        plain_accepted > 0,
        "the test must include signatures plain ed25519 accepts"
    );
}

/// ℓ, the order of the base point, little-endian.
const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// A valid signature with `s` replaced by `s + ℓ`: the same point equation holds, so only the
/// canonical-`s` check stands between it and acceptance (malleability). Some of these have
/// the top three bits clear, so the legacy "high bits" check alone would let them through.
#[test]
fn s_plus_ell_is_rejected() {
    use ed25519_dalek::Signer;
    assert!(bool::from(Scalar::from_canonical_bytes(ELL).is_none()));
    assert_eq!(Scalar::from_bytes_mod_order(ELL), Scalar::ZERO);
    let mut high_bits_clear = 0;
    for i in 0..32u8 {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[i; 32]);
        let key = signing.verifying_key().to_bytes();
        let message = format!("s + l {i}").into_bytes();
        let sig = signing.sign(&message).to_bytes();
        assert_eq!(answers(&key, &message, &sig), (true, true, true));

        let mut bad = sig;
        let mut carry = 0u16;
        for (b, l) in bad[32..].iter_mut().zip(ELL) {
            let sum = u16::from(*b) + u16::from(l) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(&bad[32..]);
        assert_eq!(Scalar::from_bytes_mod_order(s_bytes).as_bytes(), &sig[32..]);
        high_bits_clear += usize::from(bad[63] & 0xe0 == 0);
        assert!(!both_reject(&key, &message, &bad), "plain rejects too");
    }
    assert!(high_bits_clear > 0);
}

/// `R` that is no curve point at all (y² - 1 over dy² + 1 not a square). `verify_strict`
/// fails to decompress it; ours never decompresses `R` and relies on plain verification,
/// whose recomputed `R` is always a valid encoding and so never equals these bytes.
#[test]
fn r_off_the_curve_is_rejected() {
    let not_a_point = |b: &[u8; 32]| CompressedEdwardsY(*b).decompress().is_none();
    let small_y = (2u8..=255)
        .map(|n| {
            let mut b = [0u8; 32];
            b[0] = n;
            b
        })
        .find(not_a_point)
        .expect("some small y is off the curve");
    // y in [p + 2, p + 18]: non-canonical and off the curve.
    let large_y = (0xefu8..=0xff)
        .map(|n| {
            let mut b = [0xffu8; 32];
            b[0] = n;
            b[31] = 0x7f;
            b
        })
        .find(not_a_point)
        .expect("some y >= p is off the curve");
    let mut rs = vec![];
    for r in [small_y, large_y] {
        let mut signed = r;
        signed[31] |= 0x80;
        assert!(not_a_point(&signed));
        rs.extend([r, signed]);
    }
    for r in rs {
        for (a, key, _) in [honest_key(&[9u8; 32]), mixed_order_key(&[7u8; 32])] {
            for n in 0..16u32 {
                let message = format!("R off the curve {n}").into_bytes();
                let k = challenge(&r, &key, &message);
                for s in [k * a, Scalar::ZERO, arbitrary_scalar(&message)] {
                    assert!(!both_reject(&key, &message, &signature(&r, &s)));
                }
            }
        }
    }
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
