//! The canonical JSON encoder: the bytes that are signed and hashed, with keys in code-point
//! order, no whitespace, minimal string escapes, and tolerated floats written exactly as
//! Python's `repr` writes them (what Synapse hashes in room versions 1–5).
//!
//! Kept apart from the parser because signatures depend on this output alone: any change here
//! must be checked against the Python and ruma oracles.

use super::{Number, Object, Value};

/// The canonical JSON text of an object, leaving out the top-level keys in `skip`. Signing
/// and hashing need "the object minus `signatures`/`unsigned`/`hashes`"; this avoids a deep
/// copy to get it.
pub fn canonical_object_except(obj: &Object, skip: &[&str]) -> String {
    // Events are about a kilobyte: start there rather than grow through reallocs.
    let mut out = String::with_capacity(1024);
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

/// Appends the canonical JSON of an object.
pub fn write_canonical_object(out: &mut String, map: &Object) {
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
        Value::Object(map) => write_canonical_object(out, map),
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
    use crate::json::parse;

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
