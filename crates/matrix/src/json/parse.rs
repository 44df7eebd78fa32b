//! The JSON parser: RFC 8259 text into a [`Value`], refusing duplicate keys, numbers that
//! overflow, unpaired surrogates, nesting beyond [`MAX_DEPTH`] and more than [`MAX_VALUES`]
//! values.
//!
//! Kept apart from the value type and the encoder because it is the part that meets untrusted
//! bytes, and so the part the fuzzers and the malformed-input tests aim at.

use super::{JsonError, JsonErrorKind, Number, Object, Str, Value};

/// How deep arrays and objects may nest. Deep enough for any real event (Synapse's Python
/// parser stops near 1,000 frames); shallow enough that recursion cannot exhaust a stack.
pub const MAX_DEPTH: usize = 128;

/// How many values (of any kind, at any depth) one document may hold. A real invite with its
/// room state holds a few thousand.
pub const MAX_VALUES: usize = 100_000;

/// What parsing may allocate, in (estimated) bytes: [`ALLOC_PER_INPUT_BYTE`] per byte of the
/// text, plus this. A parsed value costs more than its text (a value slot, a key's `String`,
/// the allocator's least chunk for every small string and number), so without a budget cheap
/// text can be costly to hold, before a request's signature can even be checked. Real Matrix
/// JSON costs about 4.6 bytes a byte (measured on Synapse-shaped PDUs, see the tests); the
/// budget leaves three times that; text of tiny values costs 16–25. The floor covers small
/// documents.
pub const ALLOC_FLOOR: usize = 256 * 1024;

/// See [`ALLOC_FLOOR`].
pub const ALLOC_PER_INPUT_BYTE: usize = 16;

/// Estimated heap cost of what the parser builds (the allocator's size classes, rounded up).
mod cost {
    /// A value in its parent array (the `Value` enum itself, in a `Vec` that may be half
    /// empty).
    pub const VALUE: usize = 32;
    /// An object member: its key's `String` and the value in the member vector (which may be
    /// half empty), beyond the value's own charge.
    pub const MEMBER: usize = 64;
    /// A string's or number's own allocation, beyond its bytes (the allocator's least chunk).
    pub const HEAP: usize = 16;
}

/// Parses JSON text (RFC 8259) into a [`Value`]. Leading and trailing whitespace is allowed;
/// anything else after the value is an error.
pub fn parse(text: &str) -> Result<Value, JsonError> {
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        values: 0,
        cost: 0,
        budget: text
            .len()
            .saturating_mul(ALLOC_PER_INPUT_BYTE)
            .saturating_add(ALLOC_FLOOR),
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

/// Sorts an object's members by key, refusing a key that occurs twice (the error is at the
/// later occurrence, `offsets` being where each key started). O(n log n) however the keys
/// came, so a large object of shuffled keys costs no more than a sorted one.
fn sort_members(
    members: Vec<(Str, Value)>,
    offsets: &[usize],
) -> Result<Vec<(Str, Value)>, JsonError> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| members[a].0.cmp(&members[b].0));
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if members[a].0 == members[b].0 {
            let later = a.max(b);
            return Err(JsonError {
                offset: offsets.get(later).copied().unwrap_or(0),
                kind: JsonErrorKind::DuplicateKey(members[later].0.as_str().to_owned()),
            });
        }
    }
    let mut slots: Vec<Option<(Str, Value)>> = members.into_iter().map(Some).collect();
    Ok(order
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .collect())
}

struct Parser<'a> {
    /// The input; `bytes` is the same, for byte-wise scanning.
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Values parsed so far (see [`MAX_VALUES`]).
    values: usize,
    /// Estimated bytes allocated so far, and at most (see [`ALLOC_FLOOR`]).
    cost: usize,
    budget: usize,
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

    /// Counts `bytes` of allocation against the budget.
    fn charge(&mut self, bytes: usize) -> Result<(), JsonError> {
        self.cost = self.cost.saturating_add(bytes);
        if self.cost > self.budget {
            return Err(JsonError {
                offset: self.pos,
                kind: JsonErrorKind::TooManyValues,
            });
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(JsonError {
                offset: self.pos,
                kind: JsonErrorKind::TooManyValues,
            });
        }
        self.charge(cost::VALUE)?;
        match self.peek() {
            None => Err(self.syntax("unexpected end of input")),
            Some(b'n') => self.expect_literal(b"null", Value::Null),
            Some(b't') => self.expect_literal(b"true", Value::Bool(true)),
            Some(b'f') => self.expect_literal(b"false", Value::Bool(false)),
            Some(b'"') => {
                let s = self.string()?;
                self.charge(s.len() + cost::HEAP)?;
                Ok(Value::String(s))
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                let n = self.number()?;
                self.charge(self.pos - start + cost::HEAP)?;
                Ok(Value::Number(n))
            }
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
                let mut members: Vec<(Str, Value)> = Vec::new();
                // Where each key starts, for the error naming a duplicate (kept only once the
                // keys stop arriving in order: canonical JSON sends them sorted).
                let mut offsets: Vec<usize> = Vec::new();
                let mut sorted = true;
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Value::Object(Object::new()));
                }
                loop {
                    self.skip_ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.syntax("expected a string key in object"));
                    }
                    let key_at = self.pos;
                    let key = self.string()?;
                    self.charge(cost::MEMBER + key.len() + cost::HEAP)?;
                    self.skip_ws();
                    if self.peek() != Some(b':') {
                        return Err(self.syntax("expected ':' after object key"));
                    }
                    self.pos += 1;
                    self.skip_ws();
                    let v = self.value(depth + 1)?;
                    if sorted {
                        match members.last().map(|(last, _)| key.as_str().cmp(last)) {
                            None | Some(std::cmp::Ordering::Greater) => {}
                            Some(std::cmp::Ordering::Equal) => {
                                return Err(JsonError {
                                    offset: key_at,
                                    kind: JsonErrorKind::DuplicateKey(key.into_string()),
                                });
                            }
                            Some(std::cmp::Ordering::Less) => {
                                sorted = false;
                                offsets = vec![0; members.len()];
                            }
                        }
                    }
                    if !sorted {
                        offsets.push(key_at);
                    }
                    members.push((key, v));
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            if !sorted {
                                members = sort_members(members, &offsets)?;
                            }
                            return Ok(Value::Object(Object::from_sorted(members)));
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
        let text = self
            .text
            .get(start..self.pos)
            .ok_or_else(|| self.syntax("invalid number"))?;
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

    fn string(&mut self) -> Result<Str, JsonError> {
        // Caller checked the opening quote.
        self.pos += 1;
        let mut out = String::new();
        let mut first_run = true;
        loop {
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The input is a &str and we only stop at ASCII bytes, so this is a char boundary
            // (`get` checks that in constant time; the text is valid UTF-8 already).
            let run = self
                .text
                .get(run_start..self.pos)
                .ok_or_else(|| self.syntax("invalid UTF-8 in string"))?;
            if first_run && self.peek() == Some(b'"') {
                // No escapes (nearly every string): straight from the text, one copy at most.
                self.pos += 1;
                return Ok(Str::from(run));
            }
            first_run = false;
            out.push_str(run);
            match self.peek() {
                None => return Err(self.syntax("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Str::from(out));
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
        let many = format!("[{}0]", "[],".repeat(MAX_VALUES));
        assert_eq!(parse(&many).unwrap_err().kind, JsonErrorKind::TooManyValues);
        let enough = format!("[{}0]", "[],".repeat(MAX_VALUES - 2));
        assert!(parse(&enough).is_ok());
        assert!(parse(&ok).is_ok());
        assert!(parse_bytes(b"\"\xff\"").is_err());
    }

    /// A full room-state PDU as Synapse sends them in `invite_room_state` (sizes as real).
    fn synapse_pdu(i: usize) -> String {
        format!(
            r#"{{"auth_events":["$Wv8CvJn4DGpIbWsnYmX3c3x0kXvH1nB2Q7mF3mXqZ0{i:02}","$Q8oKQq6zQp0Zb4Vd2Sx7GmM5KgqD2bQ5bY1Yw7vXk{i:02}"],"content":{{"avatar_url":null,"displayname":"alice","membership":"join"}},"depth":{i},"hashes":{{"sha256":"3mOxB9Ug2wq7HH0Bn2QxwJ6hO9sOqjEwNqm2nVdJxVk"}},"origin_server_ts":1764451200000,"prev_events":["$HkJ2b2W9bQ8nZmX3c3x0kXvH1nB2Q7mF3mXqZ0pVsA{i:02}"],"room_id":"!AbCdEfGhIjKlMnOpQr:example.org","sender":"@alice:example.org","signatures":{{"example.org":{{"ed25519:a_AbCd":"e5rD3RPF4pzz2bFTKs0c4qKXZ1vYfWfM+f5cRk0f1vQ3mN9Ku8yV5Q2bKx1Xy1O7tq4lP9sJ3c6R5mB1n2Z8Cw"}}}},"state_key":"@alice:example.org","type":"m.room.member","unsigned":{{"age_ts":1764451200000}}}}"#
        )
    }

    /// The allocation budget refuses shapes no Matrix document has (small objects, long
    /// arrays of tiny values: tens of bytes of memory per byte of text), not real events of
    /// any size.
    #[test]
    fn the_allocation_budget_refuses_cheap_text_that_is_costly_to_hold() {
        for n in [1, 5, 50, 250] {
            let state: Vec<String> = (0..n).map(synapse_pdu).collect();
            let body = format!(
                r#"{{"room_version":"11","event":{},"invite_room_state":[{}]}}"#,
                synapse_pdu(99),
                state.join(",")
            );
            assert!(parse(&body).is_ok(), "{n} PDUs, {} bytes", body.len());
        }
        // 600 KB of one-key objects, nested and flat (70 MB as B-trees): refused.
        let nested = format!("[{}]", vec!["{\"a\":{\"a\":{\"a\":0}}}"; 30_000].join(","));
        let flat = format!("[{}]", vec!["{\"a\":0}"; 70_000].join(","));
        for text in [nested, flat] {
            assert_eq!(
                parse(&text).unwrap_err().kind,
                JsonErrorKind::TooManyValues,
                "{} bytes",
                text.len()
            );
        }
    }

    /// Keys in any order are sorted once, a key twice is refused at its later occurrence
    /// (sorted or not), and a large object of keys in reverse order parses in O(n log n).
    #[test]
    fn object_keys_in_any_order() {
        let v = parse(r#"{"b":1,"a":{"d":0,"c":0},"c":2}"#).unwrap();
        let keys: Vec<&Str> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(
            v.to_canonical_string(),
            r#"{"a":{"c":0,"d":0},"b":1,"c":2}"#
        );
        for (text, offset) in [
            (r#"{"b":1,"a":2,"b":3}"#, 13),
            (r#"{"a":1,"a":2}"#, 7),
            (r#"{"b":1,"a":2,"a":3}"#, 13),
        ] {
            let e = parse(text).unwrap_err();
            assert!(matches!(e.kind, JsonErrorKind::DuplicateKey(_)), "{text}");
            assert_eq!(e.offset, offset, "{text}");
        }
        let reversed: Vec<String> = (0..50_000)
            .rev()
            .map(|i| format!("\"k{i:06}\":0"))
            .collect();
        let started = std::time::Instant::now();
        let big = parse(&format!("{{{}}}", reversed.join(","))).unwrap();
        assert_eq!(big.as_object().unwrap().len(), 50_000);
        assert_eq!(
            big.as_object().unwrap().keys().next().map(Str::as_str),
            Some("k000000")
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
