//! Shared helpers for the integration tests: a seeded PRNG, the spec's test key, and a
//! generator of JSON *text* (with random whitespace and escape styles) for the differential
//! tests. Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fmt::Write as _;

use invited_matrix::json::Number;
use invited_matrix::{KeyId, SigningKey, Value, base64};

/// The spec's test seed (its last symbol has non-zero trailing bits: decode leniently).
pub const SEED_B64: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";

pub fn spec_key() -> SigningKey {
    let seed: [u8; 32] = base64::decode(SEED_B64).unwrap().try_into().unwrap();
    SigningKey::from_seed(KeyId::parse("ed25519:1").unwrap(), &seed)
}

/// Converts a `serde_json` value (handy for building test data with `json!`). Numbers keep
/// serde_json's reading: an `f64` stays a float. Lives here, not in the crate, so the crate
/// itself does not depend on serde_json.
pub fn from_serde(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::int(i)
            } else if let Some(u) = n.as_u64() {
                Value::Number(Number::Int(u.to_string().into_boxed_str()))
            } else {
                Value::Number(Number::Float(n.as_f64().unwrap()))
            }
        }
        serde_json::Value::String(s) => Value::String(s.as_str().into()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(from_serde).collect()),
        serde_json::Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), from_serde(v))).collect())
        }
    }
}

/// SplitMix64: tiny, seeded, reproducible across platforms.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as i64
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// JSON text generator

/// Characters the generator draws strings from, grouped so every group shows up often.
const CHAR_GROUPS: &[&[char]] = &[
    &[
        'a', 'b', 'z', 'A', 'Z', '0', '9', ' ', '_', '-', '.', ':', '@', '!', '$', '#',
    ],
    &['"', '\\', '/', '\u{7f}'],
    &[
        '\u{0}', '\u{1}', '\u{8}', '\u{9}', '\u{a}', '\u{b}', '\u{c}', '\u{d}', '\u{1b}', '\u{1f}',
    ],
    &[
        'é', 'ß', 'ÿ', '\u{80}', '\u{a0}', '\u{100}', '\u{7ff}', '\u{800}',
    ],
    &[
        '日', '本', '語', '\u{2028}', '\u{2029}', '\u{feff}', '\u{d7ff}', '\u{e000}',
    ],
    &['\u{fffe}', '\u{ffff}', '\u{fffd}'],
    &[
        '\u{10000}',
        '\u{1f600}',
        '\u{1f4a9}',
        '\u{10ffff}',
        '\u{20000}',
        '\u{e0001}',
    ],
];

/// Keys chosen to stress code-point ordering (U+FFFF sorts before U+1F600, unlike in UTF-16).
const TRICKY_KEYS: &[&str] = &[
    "",
    "a",
    "A",
    "aa",
    "a\u{0}",
    "b",
    "\u{7f}",
    "\u{80}",
    "\u{ffff}",
    "\u{fffe}",
    "\u{1f600}",
    "\u{10000}",
    "\u{e000}",
    "\u{d7ff}",
    "日",
    "本",
    "\"",
    "\\",
    "\n",
    "signatures_",
    "unsigned_",
];

pub fn gen_string(rng: &mut Rng, max_len: usize) -> String {
    let len = rng.below(max_len + 1);
    let mut s = String::new();
    for _ in 0..len {
        let group = rng.pick(CHAR_GROUPS);
        s.push(*rng.pick(group));
    }
    s
}

/// Writes `s` as a JSON string literal, choosing an escape style per character at random
/// (raw where JSON allows it, short escapes, `\u` with either hex case, surrogate pairs).
pub fn write_json_string(rng: &mut Rng, s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '/' => Some("\\/"),
            _ => None,
        };
        let must_escape = c < '\u{20}' || c == '"' || c == '\\';
        let style = rng.below(4);
        if !must_escape && style < 2 {
            out.push(c);
        } else if let (Some(esc), true) = (short, style < 3) {
            out.push_str(esc);
        } else {
            let upper = rng.chance(1, 2);
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                if upper {
                    write!(out, "\\u{:04X}", u).unwrap();
                } else {
                    write!(out, "\\u{:04x}", u).unwrap();
                }
            }
        }
    }
    out.push('"');
}

fn ws(rng: &mut Rng, out: &mut String) {
    if rng.chance(1, 4) {
        for _ in 0..rng.below(3) + 1 {
            out.push(*rng.pick(&[' ', '\t', '\n', '\r']));
        }
    }
}

/// Integer literals: small, at the ±(2^53−1) boundary, at the 64-bit limits, beyond 64 bits.
pub fn gen_int_literal(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => rng.range(-1000, 1000).to_string(),
        1 => rng
            .pick(&[
                "9007199254740991",
                "-9007199254740991",
                "9007199254740992",
                "-9007199254740992",
                "9007199254740993",
                "9223372036854775807",
                "-9223372036854775808",
                "9223372036854775808",
                "18446744073709551615",
                "18446744073709551616",
                "-18446744073709551617",
                "-0",
                "0",
            ])
            .to_string(),
        2 => {
            // Beyond 64 bits: 20–60 digits.
            let n = rng.below(41) + 20;
            let mut s = String::new();
            if rng.chance(1, 2) {
                s.push('-');
            }
            s.push(char::from(b'1' + rng.below(9) as u8));
            for _ in 1..n {
                s.push(char::from(b'0' + rng.below(10) as u8));
            }
            s
        }
        3 => (rng.next_u64() as i64).to_string(),
        4 => (rng.next_u64() >> 11).to_string(),
        _ => rng.range(-(1 << 53) + 1, (1 << 53) - 1).to_string(),
    }
}

/// Float literals that stay finite: shortest forms of random doubles, Rust's `{:e}`, fixed
/// tricky values, and random decimal literals with long mantissas (rounding) and exponents.
pub fn gen_float_literal(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => {
            let f = loop {
                let f = f64::from_bits(rng.next_u64());
                if f.is_finite() {
                    break f;
                }
            };
            format!("{f:e}")
        }
        1 => {
            // Doubles of "ordinary" magnitude, Debug format (keeps a ".0" or uses "e").
            let mant = rng.range(-1_000_000_000, 1_000_000_000) as f64;
            let scale = 10f64.powi(rng.range(-25, 25) as i32);
            format!("{:?}", mant * scale)
        }
        2 => rng
            .pick(&[
                "1.0",
                "-1.0",
                "0.0",
                "-0.0",
                "-0e0",
                "0e5",
                "1E2",
                "1e+2",
                "1e-2",
                "1e10",
                "1e15",
                "1e16",
                "1e17",
                "1.5e16",
                "9007199254740993.0",
                "0.1",
                "0.2",
                "0.30000000000000004",
                "1e-4",
                "1e-5",
                "0.0001",
                "0.00001",
                "123.456",
                "1e308",
                "1.7976931348623157e308",
                "5e-324",
                "2.2250738585072014e-308",
                "2.225073858507201e-308",
                "4.9406564584124654e-324",
                "1e-400",
                "-1e-400",
                "123456789012345678901234567890.5",
                "0.1e1",
                "2.5E-3",
                "100.0",
                "1234567890123456789.0",
                "9.999999999999999e22",
                "1e22",
                "1e23",
                "8.41e21",
                "5e-5",
                "3.0e-05",
            ])
            .to_string(),
        3 => {
            // Random decimal text: long digit strings exercise correct rounding.
            let mut s = String::new();
            if rng.chance(1, 2) {
                s.push('-');
            }
            let int_digits = rng.below(25) + 1;
            if int_digits == 1 || rng.chance(1, 4) {
                s.push(char::from(b'0' + rng.below(10) as u8));
            } else {
                s.push(char::from(b'1' + rng.below(9) as u8));
                for _ in 1..int_digits {
                    s.push(char::from(b'0' + rng.below(10) as u8));
                }
            }
            let frac = rng.below(26);
            let exp = rng.chance(1, 2);
            if frac > 0 || !exp {
                s.push('.');
                for _ in 0..frac.max(1) {
                    s.push(char::from(b'0' + rng.below(10) as u8));
                }
            }
            if exp {
                s.push(*rng.pick(&['e', 'E']));
                let e = rng.range(-340, 280);
                if e >= 0 && rng.chance(1, 2) {
                    s.push('+');
                }
                write!(s, "{e}").unwrap();
            }
            s
        }
        4 => {
            // Integral doubles around 2^53 and powers of ten (repr switches to 'e' at 1e16).
            let f = rng.range(-(1 << 60), 1 << 60) as f64 / 10f64.powi(rng.range(0, 3) as i32);
            format!("{f:?}")
        }
        _ => {
            let f = rng.range(-100_000, 100_000) as f64 / 1000.0;
            format!("{f:?}")
        }
    }
}

/// Appends a random JSON value's text. `depth` counts nesting already used; objects and
/// arrays stop well below the parser's limit except in the dedicated deep-nesting case.
pub fn gen_value_text(rng: &mut Rng, depth: usize, floats: bool, out: &mut String) {
    ws(rng, out);
    let leafy = depth >= 4;
    let kind = if leafy { rng.below(6) } else { rng.below(10) };
    match kind {
        0 => out.push_str("null"),
        1 => out.push_str(if rng.chance(1, 2) { "true" } else { "false" }),
        2 => out.push_str(&gen_int_literal(rng)),
        3 => {
            if floats {
                out.push_str(&gen_float_literal(rng));
            } else {
                out.push_str(&gen_int_literal(rng));
            }
        }
        4 | 5 => {
            let s = gen_string(rng, 12);
            write_json_string(rng, &s, out);
        }
        6 | 7 => {
            let n = rng.below(6);
            gen_object_text(rng, depth + 1, floats, n, out)
        }
        8 => {
            out.push('[');
            let n = rng.below(5);
            for i in 0..n {
                if i > 0 {
                    ws(rng, out);
                    out.push(',');
                }
                gen_value_text(rng, depth + 1, floats, out);
            }
            ws(rng, out);
            out.push(']');
        }
        _ => gen_deep_text(rng, depth, floats, out),
    }
    ws(rng, out);
}

/// An object with `n` distinct keys (distinct as decoded strings).
pub fn gen_object_text(rng: &mut Rng, depth: usize, floats: bool, n: usize, out: &mut String) {
    let mut keys = BTreeSet::new();
    while keys.len() < n {
        let k = if rng.chance(1, 2) {
            rng.pick(TRICKY_KEYS).to_string()
        } else {
            gen_string(rng, 6)
        };
        keys.insert(k);
    }
    let mut keys: Vec<String> = keys.into_iter().collect();
    // Shuffle so input order is never already canonical.
    for i in (1..keys.len()).rev() {
        keys.swap(i, rng.below(i + 1));
    }
    out.push('{');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        ws(rng, out);
        write_json_string(rng, k, out);
        ws(rng, out);
        out.push(':');
        gen_value_text(rng, depth + 1, floats, out);
    }
    ws(rng, out);
    out.push('}');
}

/// A chain of arrays/objects nested up to the parser's limit (128 levels in all).
pub fn gen_deep_text(rng: &mut Rng, depth: usize, floats: bool, out: &mut String) {
    let budget = invited_matrix::json::MAX_DEPTH.saturating_sub(depth + 1);
    let levels = rng.below(budget.max(1)) + 1;
    let mut closers = Vec::new();
    for _ in 0..levels {
        if rng.chance(1, 2) {
            out.push('[');
            closers.push("]");
        } else {
            out.push_str("{\"k\":");
            closers.push("}");
        }
    }
    if rng.chance(1, 2) {
        out.push_str(&gen_int_literal(rng));
    } else if floats {
        out.push_str(&gen_float_literal(rng));
    } else {
        out.push_str("\"\u{1f600}\"");
    }
    for c in closers.iter().rev() {
        out.push_str(c);
    }
}
