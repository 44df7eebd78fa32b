//! Our own JSON value, parser and canonical encoder.
//!
//! Why not `serde_json::Value`: its number and key-order behaviour depends on crate features
//! (`arbitrary_precision`, `preserve_order`) that any other crate in the build can switch on,
//! and it turns `-0`, `1.0` and `1e10` into floats without telling us. Signatures are computed
//! over bytes other servers recompute on their own, so the rules here must not move.
//!
//! * Objects are `BTreeMap<String, Value>`: byte order of UTF-8 is code-point order, which is
//!   the canonical key order.
//! * Numbers keep whether they were written as integers ([`Number::Int`], exact, any size) or
//!   with a fraction or exponent ([`Number::Float`]). Room versions 6+ accept only integers in
//!   ±(2^53−1) ([`check_strict`]); versions 1–5 must tolerate the rest, and then we encode a
//!   float exactly as Synapse (Python's `json`) does, so both sides hash the same bytes.
//! * Duplicate object keys are refused: two parsers that pick different duplicates are a
//!   classic way to make a signature cover something other than what is acted upon.

use std::collections::BTreeMap;
use std::fmt;

/// A JSON object with keys in canonical (code-point) order.
pub type Object = BTreeMap<String, Value>;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
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

/// How deep arrays and objects may nest. Deep enough for any real event (Synapse's Python
/// parser stops near 1,000 frames); shallow enough that recursion cannot exhaust a stack.
pub const MAX_DEPTH: usize = 128;

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
            Value::String(s) => Some(s),
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
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    /// An integer value.
    pub fn int(i: i64) -> Value {
        Value::Number(Number::Int(i.to_string().into_boxed_str()))
    }

    /// The canonical JSON text of this value. Floats (tolerated only in room versions 1–5) are
    /// written as Python's `json` writes them; use [`check_strict`] where they are forbidden.
    pub fn to_canonical_string(&self) -> String {
        let mut out = String::new();
        write_value(&mut out, self);
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
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
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

// ---------------------------------------------------------------------------------------------
// Parser

/// Parses JSON text (RFC 8259) into a [`Value`]. Leading and trailing whitespace is allowed;
/// anything else after the value is an error.
pub fn parse(text: &str) -> Result<Value, JsonError> {
    let mut p = Parser {
        bytes: text.as_bytes(),
        pos: 0,
    };
    p.skip_ws();
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(p.syntax("trailing characters after the JSON value"));
    }
    Ok(v)
}

/// Parses JSON from bytes that must be UTF-8.
pub fn parse_bytes(bytes: &[u8]) -> Result<Value, JsonError> {
    let text = std::str::from_utf8(bytes).map_err(|e| JsonError {
        offset: e.valid_up_to(),
        kind: JsonErrorKind::Syntax("invalid UTF-8"),
    })?;
    parse(text)
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn syntax(&self, what: &'static str) -> JsonError {
        JsonError {
            offset: self.pos,
            kind: JsonErrorKind::Syntax(what),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect_literal(&mut self, lit: &'static [u8], v: Value) -> Result<Value, JsonError> {
        if self.bytes[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Ok(v)
        } else {
            Err(self.syntax("unexpected characters"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        match self.peek() {
            None => Err(self.syntax("unexpected end of input")),
            Some(b'n') => self.expect_literal(b"null", Value::Null),
            Some(b't') => self.expect_literal(b"true", Value::Bool(true)),
            Some(b'f') => self.expect_literal(b"false", Value::Bool(false)),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => Ok(Value::Number(self.number()?)),
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(JsonError {
                        offset: self.pos,
                        kind: JsonErrorKind::TooDeep,
                    });
                }
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                loop {
                    self.skip_ws();
                    items.push(self.value(depth + 1)?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::Array(items));
                        }
                        _ => return Err(self.syntax("expected ',' or ']' in array")),
                    }
                }
            }
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return Err(JsonError {
                        offset: self.pos,
                        kind: JsonErrorKind::TooDeep,
                    });
                }
                self.pos += 1;
                let mut map = Object::new();
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                loop {
                    self.skip_ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.syntax("expected a string key in object"));
                    }
                    let key_at = self.pos;
                    let key = self.string()?;
                    self.skip_ws();
                    if self.peek() != Some(b':') {
                        return Err(self.syntax("expected ':' after object key"));
                    }
                    self.pos += 1;
                    self.skip_ws();
                    let v = self.value(depth + 1)?;
                    if map.contains_key(&key) {
                        return Err(JsonError {
                            offset: key_at,
                            kind: JsonErrorKind::DuplicateKey(key),
                        });
                    }
                    map.insert(key, v);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Value::Object(map));
                        }
                        _ => return Err(self.syntax("expected ',' or '}' in object")),
                    }
                }
            }
            Some(_) => Err(self.syntax("unexpected character")),
        }
    }

    fn number(&mut self) -> Result<Number, JsonError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.syntax("leading zero in number"));
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
            }
            _ => return Err(self.syntax("expected digits in number")),
        }
        let int_end = self.pos;
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            is_float = true;
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("expected digits after '.'"));
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            is_float = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("expected digits in exponent"));
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
        }
        // The slice is ASCII digits and signs only, so this cannot fail; map anyway.
        let text = std::str::from_utf8(&self.bytes[start..self.pos])
            .map_err(|_| self.syntax("invalid number"))?;
        if is_float {
            let f: f64 = text.parse().map_err(|_| self.syntax("invalid number"))?;
            if !f.is_finite() {
                return Err(JsonError {
                    offset: start,
                    kind: JsonErrorKind::NumberOutOfRange,
                });
            }
            return Ok(Number::Float(f));
        }
        let digits = &text[usize::from(negative)..int_end - start];
        if digits == "0" {
            // `-0` is the integer 0 (as Python reads it), written `0`.
            return Ok(Number::Int("0".into()));
        }
        Ok(Number::Int(text.into()))
    }

    fn string(&mut self) -> Result<String, JsonError> {
        // Caller checked the opening quote.
        self.pos += 1;
        let mut out = String::new();
        loop {
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The input is a &str and we only stop at ASCII bytes, so this is a char boundary.
            let run = std::str::from_utf8(&self.bytes[run_start..self.pos])
                .map_err(|_| self.syntax("invalid UTF-8 in string"))?;
            out.push_str(run);
            match self.peek() {
                None => return Err(self.syntax("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let esc = self
                        .peek()
                        .ok_or_else(|| self.syntax("unterminated escape"))?;
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                if !self.bytes[self.pos..].starts_with(b"\\u") {
                                    return Err(self.syntax("unpaired surrogate in string"));
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.syntax("unpaired surrogate in string"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(self.syntax("unpaired surrogate in string"));
                            } else {
                                hi
                            };
                            let ch = char::from_u32(c)
                                .ok_or_else(|| self.syntax("invalid \\u escape"))?;
                            out.push(ch);
                        }
                        _ => return Err(self.syntax("invalid escape in string")),
                    }
                }
                Some(_) => return Err(self.syntax("control character in string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.syntax("truncated \\u escape"))?;
        let mut v = 0u32;
        for &d in digits {
            let n = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(self.syntax("invalid hex digit in \\u escape")),
            };
            v = v * 16 + u32::from(n);
        }
        self.pos += 4;
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical encoder

/// The canonical JSON text of an object, leaving out the top-level keys in `skip`. Signing
/// and hashing need "the object minus `signatures`/`unsigned`/`hashes`"; this avoids a deep
/// copy to get it.
pub fn canonical_object_except(obj: &Object, skip: &[&str]) -> String {
    let mut out = String::with_capacity(256);
    out.push('{');
    let mut first = true;
    for (k, item) in obj {
        if skip.contains(&k.as_str()) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_string(&mut out, k);
        out.push(':');
        write_value(&mut out, item);
    }
    out.push('}');
    out
}

/// Appends the canonical JSON of a value (for callers assembling canonical text by hand).
pub fn write_canonical(out: &mut String, v: &Value) {
    write_value(out, v);
}

/// Appends a string as a canonical JSON string literal.
pub fn write_canonical_str(out: &mut String, s: &str) {
    write_string(out, s);
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(Number::Int(text)) => out.push_str(text),
        Value::Number(Number::Float(f)) => out.push_str(&python_float_repr(*f)),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Writes a string per the canonical grammar: escape only `"`, `\` and U+0000–U+001F (short
/// forms where they exist, else `\u00xx` in lower case); everything else raw UTF-8.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut run_start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run_start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(esc);
        }
        run_start = i + 1;
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

/// Formats a finite float exactly as Python's `repr` (and so its `json` module) does: the
/// shortest digits that round-trip, positional when the decimal exponent is in [-4, 16),
/// otherwise scientific with a signed, at least two-digit exponent; integral values keep `.0`.
pub fn python_float_repr(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-tripping digits: "d.ddde±x" (or "de±x").
    let shortest = format!("{:e}", f.abs());
    // When two candidates of that length both round-trip and the value lies exactly halfway
    // between them (e.g. 845163620964137.25), Python's repr (David Gay's dtoa, mode 0) takes
    // the even last digit (…137.2) while Rust's shortest mode rounds up (…137.3). Rust's
    // fixed-precision mode is correctly rounded half-to-even, so prefer it when it round-trips.
    let n_digits = shortest.split_once('e').map_or(shortest.len(), |(m, _)| {
        m.bytes().filter(u8::is_ascii_digit).count()
    });
    let nearest = format!("{:.*e}", n_digits.saturating_sub(1), f.abs());
    let sci = if nearest.parse::<f64>() == Ok(f.abs()) {
        nearest
    } else {
        shortest
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f < 0.0 { "-" } else { "" };
    let n = digits.len() as i32;
    if (-4..16).contains(&exp) {
        let body = if exp >= 0 {
            let int_len = exp + 1;
            if n <= int_len {
                format!("{digits}{}.0", "0".repeat((int_len - n) as usize))
            } else {
                format!(
                    "{}.{}",
                    &digits[..int_len as usize],
                    &digits[int_len as usize..]
                )
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{body}")
    } else {
        let mant = if n > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mant}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        parse(text).expect("valid JSON").to_canonical_string()
    }

    /// The spec's own canonical JSON examples (appendices, "Canonical JSON").
    #[test]
    fn spec_examples() {
        assert_eq!(canon("{}"), "{}");
        assert_eq!(
            canon(r#"{ "one": 1, "two": "Two" }"#),
            r#"{"one":1,"two":"Two"}"#
        );
        assert_eq!(canon(r#"{ "b": "2", "a": "1" }"#), r#"{"a":"1","b":"2"}"#);
        assert_eq!(canon(r#"{"b":"2","a":"1"}"#), r#"{"a":"1","b":"2"}"#);
        assert_eq!(canon(r#"{ "a": "日本語" }"#), r#"{"a":"日本語"}"#);
        assert_eq!(canon(r#"{ "本": 2, "日": 1 }"#), r#"{"日":1,"本":2}"#);
        assert_eq!(canon(r#"{ "a": "\u65E5" }"#), r#"{"a":"日"}"#);
        assert_eq!(canon(r#"{ "a": null }"#), r#"{"a":null}"#);
        let nested = r#"{"auth":{"success":true,"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"medium":"email","address":"john.doe@example.org"},{"medium":"msisdn","address":"123456789"}]}}}"#;
        assert_eq!(
            canon(nested),
            r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}"#
        );
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

    #[test]
    fn string_escaping() {
        assert_eq!(
            canon(r#""\u0000\u0001\b\t\n\u000b\f\r\u001f \" \\ \/ \u007f \u2028 😀""#),
            "\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f \\\" \\\\ / \u{7f} \u{2028} 😀\""
        );
        assert_eq!(canon(r#""\ud83d\ude00""#), "\"😀\"");
    }

    #[test]
    fn key_order_is_code_point_order() {
        // U+FFFF sorts before U+1F600 in code-point order (not in UTF-16 order).
        assert_eq!(
            canon("{\"\u{1F600}\":1,\"\u{FFFF}\":2,\"a\":3,\"B\":4}"),
            "{\"B\":4,\"a\":3,\"\u{FFFF}\":2,\"\u{1F600}\":1}"
        );
    }

    #[test]
    fn rejects_bad_json() {
        for bad in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "NaN",
            "Infinity",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\x\"",
            "\"a\nb\"",
            "[1] x",
            "{\"a\":1,\"a\":2}",
            "tru",
            "nul",
            "{1:2}",
            "1e400",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            parse(&deep).unwrap_err().kind,
            JsonErrorKind::TooDeep
        ));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        assert!(parse_bytes(b"\"\xff\"").is_err());
    }

    #[test]
    // The tie cases below are written with their exact binary values on purpose.
    #[allow(clippy::excessive_precision)]
    fn python_float_repr_matches_python() {
        // Values checked against CPython 3.11's repr().
        for (f, want) in [
            (1.0, "1.0"),
            (1e10, "10000000000.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (1e100, "1e+100"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (123.456, "123.456"),
            // Ties between two shortest candidates go to the even digit, as in Python.
            (-845163620964137.25, "-845163620964137.2"),
            (92341865244663.625, "92341865244663.62"),
        ] {
            assert_eq!(python_float_repr(f), want, "repr of {f:e}");
        }
    }
}
