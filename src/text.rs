//! Remote strings on a terminal or in a log line: room names, IDs and event types come from
//! other servers, and a control character in one (an ANSI escape, a newline) must not move an
//! operator's cursor or forge a log line. Valid IDs have none, but what we show includes what
//! we refused.

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1) written as `\u{…}`; unchanged, and not
/// copied, when it has none.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(printable("!room:example.org"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\u{1b}[2Jb\nc\u{85}"),
            "a\\u{1b}[2Jb\\u{a}c\\u{85}"
        );
        assert_eq!(printable("Café ☕"), "Café ☕");
    }
}
