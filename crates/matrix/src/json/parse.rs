//! The JSON parser: RFC 8259 text into a [`Value`], refusing duplicate keys, numbers that
//! overflow, unpaired surrogates, nesting beyond [`MAX_DEPTH`] and more than [`MAX_VALUES`]
//! values.
//!
//! Kept apart from the value type and the encoder because it is the part that meets untrusted
//! bytes, and so the part the fuzzers and the malformed-input tests aim at.

use super::{JsonError, JsonErrorKind, Number, Object, Value};

/// How deep arrays and objects may nest. Deep enough for any real event (Synapse's Python
/// parser stops near 1,000 frames); shallow enough that recursion cannot exhaust a stack.
pub const MAX_DEPTH: usize = 128;

/// How many values (of any kind, at any depth) one document may hold. Each parsed value costs
/// tens of bytes however few it took in the text (`[0,0,0,…]` is two bytes a value), so this
/// bounds what one request body can make us allocate: about 8 MB at most. A real invite with
/// its room state holds a few thousand.
pub const MAX_VALUES: usize = 100_000;

/// Parses JSON text (RFC 8259) into a [`Value`]. Leading and trailing whitespace is allowed;
/// anything else after the value is an error.
pub fn parse(text: &str) -> Result<Value, JsonError> {
    let mut p = Parser {
        bytes: text.as_bytes(),
        pos: 0,
        values: 0,
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
    /// Values parsed so far (see [`MAX_VALUES`]).
    values: usize,
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
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(JsonError {
                offset: self.pos,
                kind: JsonErrorKind::TooManyValues,
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // The value budget counts every value at every depth.
        let many = format!("[{}0]", "0,".repeat(MAX_VALUES));
        assert_eq!(parse(&many).unwrap_err().kind, JsonErrorKind::TooManyValues);
        let enough = format!("[{}0]", "0,".repeat(MAX_VALUES - 2));
        assert!(parse(&enough).is_ok());
        assert!(parse(&ok).is_ok());
        assert!(parse_bytes(b"\"\xff\"").is_err());
    }
}
