//! Matrix globs, as server ACLs, moderation policy lists and MSC4155 invite filters use them:
//! `*` matches any run of characters (including none), `?` exactly one, everything else
//! itself. Spec: <https://spec.matrix.org/v1.16/appendices/#glob-style-matching>.

/// Whether `text` matches the glob `pattern`, character by character and case-sensitively
/// (callers that compare hostnames lower-case both sides, see [`host`]).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        // A `*` in the pattern is a wildcard even where the text has a `*`: test it before
        // literal equality, or a star matched as a literal is never backtracked into.
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Backtrack: the last star swallows one more character.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The host of a server name, without port, in lower case: what server globs are matched
/// against. DNS names are case-insensitive, so a spammer cannot dodge `*.example.org` with
/// `EXAMPLE.org`, and a rule cannot be dodged by naming a port.
pub fn host(server_name: &str) -> String {
    let h = match server_name.rfind(':') {
        Some(i) if !server_name[i..].contains(']') => &server_name[..i],
        _ => server_name,
    };
    h.to_ascii_lowercase()
}

/// The port part of a server name (or server glob), if it has one: after the last `:` that
/// is not inside an IPv6 literal's brackets.
fn port_start(server: &str) -> Option<usize> {
    server.rfind(':').filter(|i| !server[*i..].contains(']'))
}

/// Whether a server glob matches a server name, as Synapse matches server ACLs and MSC4155
/// server lists: case-insensitively; a glob that names a port (`evil.example:8448`,
/// `*.example:*`) is matched against the whole server name, port included; one without a port
/// against the host alone, so it covers every port.
pub fn server_glob_match(pattern: &str, server_name: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    if port_start(&pattern).is_some() {
        glob_match(&pattern, &server_name.to_ascii_lowercase())
    } else {
        glob_match(&pattern, &host(server_name))
    }
}

/// Whether a user glob (`@*:spam.example`) matches a user ID. The server part (after the
/// first `:`) is a DNS name, so it is compared case-insensitively on both sides: `@x:SPAM.example`
/// does not escape a rule on `spam.example`. Localparts compare exactly.
pub fn user_glob_match(pattern: &str, user_id: &str) -> bool {
    let fold = |s: &str| match s.split_once(':') {
        Some((local, server)) => format!("{local}:{}", server.to_ascii_lowercase()),
        None => s.to_owned(),
    };
    glob_match(&fold(pattern), &fold(user_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_globs_and_ports() {
        // Without a port: the host, on any port, in any case.
        assert!(server_glob_match("evil.example", "evil.example:8448"));
        assert!(server_glob_match("evil.example", "EVIL.example"));
        assert!(server_glob_match("*.Example", "a.example:443"));
        // With a port: that port only.
        assert!(server_glob_match("evil.example:8448", "evil.example:8448"));
        assert!(server_glob_match("EVIL.example:8448", "evil.EXAMPLE:8448"));
        assert!(!server_glob_match("evil.example:8448", "evil.example"));
        assert!(!server_glob_match("evil.example:8448", "evil.example:8449"));
        assert!(server_glob_match("evil.example:*", "evil.example:1"));
        // IPv6 literals: the brackets' colons are not a port.
        assert!(server_glob_match("[::1]", "[::1]:8448"));
        assert!(server_glob_match("[::1]:8448", "[::1]:8448"));
        assert!(!server_glob_match("[::1]:8448", "[::1]"));
    }

    #[test]
    fn user_globs_fold_the_server_part() {
        assert!(user_glob_match("@*:spam.example", "@x:SPAM.example"));
        assert!(user_glob_match("@*:SPAM.example", "@x:spam.example"));
        assert!(user_glob_match("@*:spam.example", "@*a:spam.example"));
        assert!(!user_glob_match("@Bob:spam.example", "@bob:spam.example"));
        assert!(user_glob_match("@bob:*", "@bob:any.where:8448"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.example.org", "spam.example.org"));
        assert!(!glob_match("*.example.org", "example.org"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("@*:bad.org", "@x:bad.org"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*a*b", "xxaxxbxxc"));
    }

    /// A `*` in the text is just a character: the pattern's `*` must still be free to match
    /// more than it. (The version moved from policy.rs matched the two stars as literals and
    /// never backtracked into the pattern's star, so the first three were false.)
    #[test]
    fn star_in_text() {
        assert!(glob_match("@*:spam.example", "@*a:spam.example"));
        assert!(glob_match("*", "*"));
        assert!(glob_match("*b", "*ab"));
        assert!(glob_match("a*", "a*b"));
        assert!(!glob_match("a*c", "a*b"));
        assert!(glob_match("?", "*"));
        // What the property test below shrinks the old bug to.
        assert!(glob_match("?*", "?*a"));
    }

    /// The reference: the glob as an anchored regex, everything escaped but `*` and `?`.
    fn reference(pattern: &str, text: &str) -> bool {
        let mut re = String::from("(?s)^");
        for c in pattern.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        regex::Regex::new(&re).unwrap().is_match(text)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Small alphabets, with the metacharacters in both pattern and text, so stars and
        /// question marks meet each other and the separators of IDs often.
        #[test]
        fn matches_the_regex_reference(
            pattern in "[ab*?:@.é]{0,8}",
            text in "[ab*?:@.é\n]{0,10}",
        ) {
            proptest::prop_assert_eq!(glob_match(&pattern, &text), reference(&pattern, &text));
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(host("Example.org:8448"), "example.org");
        assert_eq!(host("[::1]:8448"), "[::1]");
        assert_eq!(host("[::1]"), "[::1]");
    }
}
