//! Our own JSON value, parser and canonical encoder.
//!
//! Why not `serde_json::Value`: its number and key-order behaviour depends on crate features
//! (`arbitrary_precision`, `preserve_order`) that any other crate in the build can switch on,
//! and it turns `-0`, `1.0` and `1e10` into floats without telling us. Signatures are computed
//! over bytes other servers recompute on their own, so the rules here must not move.
//!
//! * Objects ([`Object`]) keep their members sorted by key in one vector: byte order of UTF-8
//!   is code-point order, which is the canonical key order.
//! * Numbers keep whether they were written as integers ([`Number::Int`], exact, any size) or
//!   with a fraction or exponent ([`Number::Float`]). Room versions 6+ accept only integers in
//!   ±(2^53−1) ([`check_strict`]); versions 1–5 must tolerate the rest, and then we encode a
//!   float exactly as Synapse (Python's `json`) does, so both sides hash the same bytes.
//! * Duplicate object keys are refused: two parsers that pick different duplicates are a
//!   classic way to make a signature cover something other than what is acted upon.
//!
//! The parser lives in `parse.rs` and the canonical encoder in `canonical.rs`; this file holds
//! the value types, their accessors and the strict check, and re-exports the rest.

mod canonical;
mod object;
mod parse;
mod text;

pub use canonical::{
    canonical_object_except, python_float_repr, write_canonical, write_canonical_object,
    write_canonical_str,
};
pub use parse::{ALLOC_FLOOR, ALLOC_PER_INPUT_BYTE, MAX_DEPTH, MAX_VALUES, parse, parse_bytes};

use std::fmt;

pub use object::{Iter as ObjectIter, Object};
pub use text::Str;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(Str),
    Array(Vec<Value>),
    Object(Object),
}

/// A JSON number, as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Number {
    /// An integer literal (no fraction, no exponent), as normalised decimal text: no leading
    /// `+` or zeros, and `-0` written `0`. Kept as text so integers of any size stay exact.
    Int(Box<str>),
    /// A literal with a fraction or exponent. Only ever tolerated (room versions 1–5, request
    /// bodies); never canonical.
    Float(f64),
}

/// The largest integer canonical JSON allows, 2^53 − 1 (and its negation is the smallest).
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Why some text is not JSON we accept, or a value is not canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset in the input where the problem was found (0 for value-level checks).
    pub offset: usize,
    pub kind: JsonErrorKind,
}

/// The kinds of [`JsonError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonErrorKind {
    /// The text is not JSON (RFC 8259) at all.
    Syntax(&'static str),
    /// Nesting deeper than the parser allows.
    TooDeep,
    /// More values in one document than the parser allows (`MAX_VALUES`), or values that would
    /// take more memory than a document of its size may (`ALLOC_PER_INPUT_BYTE`).
    TooManyValues,
    /// An object names the same key twice.
    DuplicateKey(String),
    /// A number that cannot be represented (overflows to infinity).
    NumberOutOfRange,
    /// Valid JSON, but not canonical JSON: a float, or an integer beyond ±(2^53−1).
    NotCanonical(String),
}

impl JsonError {
    /// Whether the input was not JSON at all (as opposed to JSON we refuse).
    pub fn is_syntax(&self) -> bool {
        matches!(self.kind, JsonErrorKind::Syntax(_) | JsonErrorKind::TooDeep)
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            JsonErrorKind::Syntax(what) => {
                write!(f, "invalid JSON at byte {}: {what}", self.offset)
            }
            JsonErrorKind::TooDeep => write!(f, "JSON nested too deeply at byte {}", self.offset),
            JsonErrorKind::TooManyValues => write!(
                f,
                "more JSON values, or more memory for them, than a document of this size may \
                 have (at byte {}; at most {} values, about {} bytes of memory per byte of text)",
                self.offset,
                parse::MAX_VALUES,
                parse::ALLOC_PER_INPUT_BYTE
            ),
            JsonErrorKind::DuplicateKey(k) => {
                write!(
                    f,
                    "duplicate key {k:?} in JSON object at byte {}",
                    self.offset
                )
            }
            JsonErrorKind::NumberOutOfRange => {
                write!(f, "number out of range at byte {}", self.offset)
            }
            JsonErrorKind::NotCanonical(what) => write!(f, "not canonical JSON: {what}"),
        }
    }
}

impl std::error::Error for JsonError {}

// ---------------------------------------------------------------------------------------------
// Accessors

impl Value {
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as an `i64` when it is an integer literal that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// `self[key]` for objects; `None` for other values or a missing key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object().and_then(|o| o.get(key))
    }

    /// A string value.
    pub fn string(s: impl Into<Str>) -> Value {
        Value::String(s.into())
    }

    /// An integer value.
    pub fn int(i: i64) -> Value {
        Value::Number(Number::Int(i.to_string().into_boxed_str()))
    }

    /// The canonical JSON text of this value. Floats (tolerated only in room versions 1–5) are
    /// written as Python's `json` writes them; use [`check_strict`] where they are forbidden.
    pub fn to_canonical_string(&self) -> String {
        // Events are about a kilobyte: start there rather than grow through eight reallocs.
        let mut out = String::with_capacity(1024);
        write_canonical(&mut out, self);
        out
    }

    /// The canonical JSON bytes of this value (see [`Value::to_canonical_string`]).
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        self.to_canonical_string().into_bytes()
    }
}

impl Number {
    /// The value as an `i64`, when this is an integer literal that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Number::Int(text) => text.parse().ok(),
            Number::Float(_) => None,
        }
    }
}

/// `value["key"]`: the member, or `Null` when absent or not an object (as `serde_json` does).
impl std::ops::Index<&str> for Value {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_canonical_string())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s.into())
    }
}

impl From<Str> for Value {
    fn from(s: Str) -> Value {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<Object> for Value {
    fn from(o: Object) -> Value {
        Value::Object(o)
    }
}

impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Value {
        Value::Array(a)
    }
}

// ---------------------------------------------------------------------------------------------
// Strict (canonical) check

/// Checks that a value is canonical JSON as room versions 6+ require: every number an integer
/// literal within ±(2^53−1). (Key order and whitespace are properties of the encoding, which
/// [`Value::to_canonical_string`] always gets right.)
pub fn check_strict(value: &Value) -> Result<(), JsonError> {
    let not_canonical = |what: String| JsonError {
        offset: 0,
        kind: JsonErrorKind::NotCanonical(what),
    };
    match value {
        Value::Number(Number::Float(f)) => Err(not_canonical(format!(
            "{} is not an integer",
            python_float_repr(*f)
        ))),
        Value::Number(Number::Int(text)) => match text.parse::<i64>() {
            Ok(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) => Ok(()),
            _ => Err(not_canonical(format!(
                "integer {text} is outside ±(2^53-1)"
            ))),
        },
        Value::Array(items) => items.iter().try_for_each(check_strict),
        Value::Object(map) => map.values().try_for_each(check_strict),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        parse(text).expect("valid JSON").to_canonical_string()
    }

    /// The spec's `{"a": -0, "b": 1e10}` example: `-0` is the integer 0; `1e10` is a float
    /// literal, which strict mode refuses and tolerant mode writes as Python does.
    #[test]
    fn minus_zero_and_exponent() {
        let v = parse(r#"{ "a": -0, "b": 1e10 }"#).unwrap();
        assert_eq!(v.get("a"), Some(&Value::int(0)));
        assert!(check_strict(&v).is_err());
        assert_eq!(v.to_canonical_string(), r#"{"a":0,"b":10000000000.0}"#);
        assert!(check_strict(&parse(r#"{"a":-0}"#).unwrap()).is_ok());
        assert_eq!(canon(r#"{"a":-0}"#), r#"{"a":0}"#);
    }

    #[test]
    fn strict_integer_range() {
        assert!(check_strict(&parse("9007199254740991").unwrap()).is_ok());
        assert!(check_strict(&parse("-9007199254740991").unwrap()).is_ok());
        assert!(check_strict(&parse("9007199254740992").unwrap()).is_err());
        assert!(check_strict(&parse("-9007199254740992").unwrap()).is_err());
        assert!(check_strict(&parse("1.0").unwrap()).is_err());
        assert!(check_strict(&parse("[1E2]").unwrap()).is_err());
        // Exact beyond 64 bits in tolerant mode.
        assert_eq!(
            canon("123456789012345678901234567890"),
            "123456789012345678901234567890"
        );
    }
}
