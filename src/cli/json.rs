//! How the commands print JSON (`--json`, `invites show`): serde types written by serde_json.
//!
//! Scripts parse this output, and it used to come from `invited_matrix`'s canonical encoder,
//! so it keeps that encoder's exact bytes: serde_json writes struct fields in declaration
//! order, so every output type declares its fields in code-point order (what the encoder
//! sorted them into); its string escapes are the canonical ones. Each command's tests compare
//! its types against the encoder with [`tests::assert_canonical`].

use std::io;

use serde::{Serialize, Serializer};

use super::parse_json_arg;
use crate::fatal::Error;

/// Prints one JSON value on a line of its own.
pub(super) fn print_json(value: &impl Serialize) -> Result<(), Error> {
    println!("{}", to_json(value)?);
    Ok(())
}

/// The compact JSON text of a value; the only way [`Canonical`] comes out right.
pub(super) fn to_json(value: &impl Serialize) -> Result<String, Error> {
    let mut out = Vec::new();
    value
        .serialize(&mut serde_json::Serializer::with_formatter(
            &mut out, Compact,
        ))
        .map_err(|e| Error::new(format!("JSON output: {e}")))?;
    String::from_utf8(out).map_err(|e| Error::new(format!("JSON output: {e}")))
}

/// Stored JSON (a signed event, a state entry's content), printed as its canonical JSON.
///
/// It cannot go through `serde_json::Value`: that has no integers beyond 64 bits and writes
/// floats differently from canonical JSON (`1e20`, not `1e+20`), and room versions 1–5 allow
/// both. Without its `raw_value` feature serde_json cannot embed text, so this serializes as
/// bytes, which [`Compact`] writes through unchanged.
pub(super) struct Canonical(String);

impl Canonical {
    /// Parses stored JSON text; `what` names it in the error.
    pub(super) fn parse(text: &str, what: &str) -> Result<Canonical, Error> {
        Ok(Canonical(parse_json_arg(text, what)?.to_canonical_string()))
    }
}

impl Serialize for Canonical {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0.as_bytes())
    }
}

/// serde_json's compact format, except that byte arrays are written as they are: only
/// [`Canonical`] serializes bytes, and its bytes are JSON text already.
struct Compact;

impl serde_json::ser::Formatter for Compact {
    fn write_byte_array<W>(&mut self, writer: &mut W, value: &[u8]) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        writer.write_all(value)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Checks that a value prints exactly as the canonical encoder would print the same JSON
    /// (key order, escapes, numbers).
    pub(in crate::cli) fn assert_canonical(value: &impl Serialize) -> String {
        let text = to_json(value).unwrap();
        let reencoded = invited_matrix::json::parse(&text)
            .unwrap()
            .to_canonical_string();
        assert_eq!(text, reencoded, "not in canonical form");
        text
    }

    #[test]
    fn stored_json_is_embedded_as_canonical_json() {
        let stored = r#"{"z":1.0E20,"a":[1.5e-7,-0,123456789012345678901234567890123456789012],"m":"\u00e9\u0001\n\"\\\/ 🎉"}"#;
        let embedded = Canonical::parse(stored, "stored").unwrap();
        let expected = invited_matrix::json::parse(stored)
            .unwrap()
            .to_canonical_string();
        assert_eq!(to_json(&embedded).unwrap(), expected);
        assert_eq!(
            expected,
            r#"{"a":[1.5e-07,0,123456789012345678901234567890123456789012],"m":"é\u0001\n\"\\/ 🎉","z":1e+20}"#
        );
        let err = Canonical::parse("{", "stored event").err().unwrap();
        assert!(err.0.starts_with("stored event: "), "{err}");
    }

    #[test]
    fn serde_strings_escape_as_canonical_json_does() {
        let every_control: String = (0u8..0x20).map(char::from).collect();
        #[derive(Serialize)]
        struct Strings {
            a: String,
            b: &'static str,
            c: Option<&'static str>,
        }
        assert_canonical(&Strings {
            a: every_control,
            b: "\"\\/ \u{7f} \u{2028} é 🎉",
            c: None,
        });
    }
}
