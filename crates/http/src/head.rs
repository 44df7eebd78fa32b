//! Request-head parsing and the framing rules, as pure functions over a byte buffer: every limit
//! and every refusal can then be tested (and fed arbitrary bytes) without a socket.

use crate::api::{EdgeError, Limits};

/// A complete request head that passed every framing rule.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 (httparse accepts no other version).
    pub minor: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Length of the head in bytes, blank line included: the body starts here.
    pub len: usize,
    /// The declared body length, already checked against the limit.
    pub content_length: Option<usize>,
    /// Whether the client lets the connection stay open after this request.
    pub keep_alive: bool,
}

/// What the bytes received so far amount to.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Not a whole head yet, and nothing wrong so far.
    Partial,
    Complete(Head),
    /// Refused: answer with this error and close, since the framing can no longer be trusted.
    Refused(EdgeError),
}

/// Parses the head at the start of `buf`, enforcing the head, header-count, target, version and
/// body-framing rules. Never panics, whatever the bytes.
pub(crate) fn parse_head(buf: &[u8], limits: &Limits) -> Parsed {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut storage);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            // The target is checked first so that an over-long one gets the more precise 414.
            if target_too_long(buf, limits.max_target_bytes) {
                return Parsed::Refused(EdgeError::UriTooLong);
            }
            if buf.len() > limits.max_head_bytes {
                return Parsed::Refused(EdgeError::HeadersTooLarge);
            }
            return Parsed::Partial;
        }
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refused(EdgeError::HeadersTooLarge),
        Err(httparse::Error::Version) if has_other_http_version(buf) => {
            return Parsed::Refused(EdgeError::VersionNotSupported);
        }
        Err(e) => return Parsed::Refused(EdgeError::BadRequest(e.to_string())),
    };
    if len > limits.max_head_bytes {
        return Parsed::Refused(EdgeError::HeadersTooLarge);
    }
    // httparse accepts a bare LF as a line end; a proxy in front of us might not, and two
    // parties disagreeing on where a header ends is how requests get smuggled.
    if let Some(why) = bare_line_break(&buf[..len.min(buf.len())]) {
        return Parsed::Refused(EdgeError::BadRequest(why.to_owned()));
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Parsed::Refused(EdgeError::BadRequest("incomplete request line".to_owned()));
    };
    if target.len() > limits.max_target_bytes {
        return Parsed::Refused(EdgeError::UriTooLong);
    }
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    match framing(&headers, minor, limits) {
        Ok((content_length, keep_alive)) => Parsed::Complete(Head {
            method: method.to_owned(),
            target: target.to_owned(),
            minor,
            headers,
            len,
            content_length,
            keep_alive,
        }),
        Err(e) => Parsed::Refused(e),
    }
}

/// Applies the body-framing and connection rules: returns the body length and keep-alive.
fn framing(
    headers: &[(String, Vec<u8>)],
    minor: u8,
    limits: &Limits,
) -> Result<(Option<usize>, bool), EdgeError> {
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    };
    // Chunked bodies are not supported, and a Transfer-Encoding beside a Content-Length is the
    // classic smuggling shape: any Transfer-Encoding at all is refused.
    if named("transfer-encoding").next().is_some() {
        return Err(EdgeError::LengthRequired);
    }
    if named("host").count() > 1 {
        return Err(EdgeError::BadRequest(
            "more than one Host header".to_owned(),
        ));
    }
    let mut lengths = named("content-length");
    let content_length = match (lengths.next(), lengths.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(EdgeError::BadRequest(
                "more than one Content-Length header".to_owned(),
            ));
        }
        (Some(raw), None) => {
            let declared = parse_content_length(raw).ok_or_else(|| {
                EdgeError::BadRequest("Content-Length is not a decimal number".to_owned())
            })?;
            match usize::try_from(declared) {
                Ok(n) if n <= limits.max_body_bytes => Some(n),
                _ => {
                    return Err(EdgeError::PayloadTooLarge {
                        limit: limits.max_body_bytes,
                    });
                }
            }
        }
    };
    let (mut close, mut keep) = (false, false);
    for value in named("connection") {
        for token in value.split(|&b| b == b',') {
            let token = trim_ows(token);
            close |= token.eq_ignore_ascii_case(b"close");
            keep |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    let keep_alive = !close && (minor >= 1 || keep);
    Ok((content_length, keep_alive))
}

/// `1*DIGIT` and nothing else (no sign, no list); `None` also on overflow.
fn parse_content_length(raw: &[u8]) -> Option<u64> {
    let digits = trim_ows(raw);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A LF without CR before it, or a CR without LF after it.
fn bare_line_break(head: &[u8]) -> Option<&'static str> {
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Some("line ends with a bare LF");
        }
        if b == b'\r' && head.get(i + 1) != Some(&b'\n') {
            return Some("bare CR in the request head");
        }
    }
    None
}

/// Whether the (possibly incomplete) request line already has a target longer than `max`.
fn target_too_long(buf: &[u8], max: usize) -> bool {
    let line_end = buf
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len());
    let line = &buf[..line_end];
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let rest = &line[space + 1..];
    let target_len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    target_len > max
}

/// Whether the request line ends in a well-formed version other than 1.0/1.1 (`HTTP/2.0`,
/// `HTTP/3`): that deserves 505, while a garbled version is a plain 400.
fn has_other_http_version(buf: &[u8]) -> bool {
    let line_end = buf
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len());
    let Some(version) = buf[..line_end].split(|&b| b == b' ').nth(2) else {
        return false;
    };
    let Some(number) = version.strip_prefix(b"HTTP/") else {
        return false;
    };
    let mut parts = number.split(|&b| b == b'.');
    let is_num = |p: &[u8]| !p.is_empty() && p.len() <= 3 && p.iter().all(u8::is_ascii_digit);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(major), None, _) => is_num(major),
        (Some(major), Some(minor), None) => is_num(major) && is_num(minor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_head_bytes: 1024,
            max_headers: 8,
            max_target_bytes: 100,
            max_body_bytes: 1000,
            ..Limits::default()
        }
    }

    fn parse(s: &[u8]) -> Parsed {
        parse_head(s, &limits())
    }

    fn refused(s: &[u8]) -> u16 {
        match parse(s) {
            Parsed::Refused(e) => e.status(),
            other => panic!(
                "expected a refusal for {:?}, got {other:?}",
                String::from_utf8_lossy(s)
            ),
        }
    }

    fn complete(s: &[u8]) -> Head {
        match parse(s) {
            Parsed::Complete(h) => h,
            other => panic!(
                "expected a head for {:?}, got {other:?}",
                String::from_utf8_lossy(s)
            ),
        }
    }

    #[test]
    fn simple_get() {
        let h = complete(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Y:  z \r\n\r\nrest");
        assert_eq!(
            (h.method.as_str(), h.target.as_str(), h.minor),
            ("GET", "/a?b=c", 1)
        );
        assert_eq!(h.len, 42);
        assert_eq!(h.content_length, None);
        assert!(h.keep_alive);
        assert_eq!(h.headers[1], ("X-Y".to_owned(), b"z".to_vec()));
    }

    #[test]
    fn partial_until_blank_line() {
        assert!(matches!(parse(b""), Parsed::Partial));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        ));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(complete(b"GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(
            complete(b"PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").content_length,
            Some(0)
        );
        assert_eq!(
            complete(b"PUT / HTTP/1.1\r\nContent-Length: 007\r\n\r\n").content_length,
            Some(7)
        );
        assert_eq!(
            complete(b"PUT / HTTP/1.1\r\ncontent-length: 1000\r\n\r\n").content_length,
            Some(1000)
        );
        for bad in [
            &b"PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"[..],
            b"PUT / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 200000000000000000000\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert_eq!(refused(bad), 400);
        }
        assert_eq!(
            refused(b"PUT / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n"),
            413
        );
        assert_eq!(
            refused(b"PUT / HTTP/1.1\r\nContent-Length: 200000000000\r\n\r\n"),
            413
        );
    }

    #[test]
    fn any_transfer_encoding_is_refused() {
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"),
            411
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        // obs-fold, space before the colon, bare LF, bare CR.
        assert_eq!(refused(b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), 400);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n"),
            400
        );
        assert_eq!(refused(b"GET / HTTP/1.1\nHost: x\n\n"), 400);
        assert_eq!(refused(b"GET / HTTP/1.1\r\nHost: x\n\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), 400);
        assert_eq!(refused(b"GET  / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"\x00GET / HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn versions() {
        assert_eq!(complete(b"GET / HTTP/1.0\r\n\r\n").minor, 0);
        assert_eq!(refused(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(refused(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
        assert_eq!(refused(b"GET / HTTP/3\r\n\r\n"), 505);
        assert_eq!(refused(b"GET / HTTP/0.9\r\n\r\n"), 505);
        assert_eq!(refused(b"GET / HTTPS/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/1.1.1\r\n\r\n"), 400);
    }

    #[test]
    fn size_limits() {
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
        assert_eq!(refused(long_target.as_bytes()), 414);
        let ok_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(99));
        assert_eq!(complete(ok_target.as_bytes()).target.len(), 100);
        // An over-long target is noticed before its line ends.
        let partial = format!("GET /{}", "a".repeat(200));
        assert_eq!(refused(partial.as_bytes()), 414);
        let nine = "GET / HTTP/1.1\r\n".to_owned() + &"X: y\r\n".repeat(9) + "\r\n";
        assert_eq!(refused(nine.as_bytes()), 431);
        let eight = "GET / HTTP/1.1\r\n".to_owned() + &"X: y\r\n".repeat(8) + "\r\n";
        assert_eq!(complete(eight.as_bytes()).headers.len(), 8);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(1100));
        assert_eq!(refused(big.as_bytes()), 431);
        // Still incomplete, but already over the limit.
        let growing = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(1100));
        assert_eq!(refused(growing.as_bytes()), 431);
    }

    /// A small xorshift generator: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn check_invariants(buf: &[u8], limits: &Limits) {
        if let Parsed::Complete(h) = parse_head(buf, limits) {
            assert!(h.len <= buf.len() && h.len <= limits.max_head_bytes);
            assert!(h.headers.len() <= limits.max_headers);
            assert!(h.target.len() <= limits.max_target_bytes);
            assert!(h.content_length.is_none_or(|n| n <= limits.max_body_bytes));
        }
    }

    /// Arbitrary bytes, and valid requests with random mutations, never make the parser panic
    /// and never yield a head that breaks a limit.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let limits = limits();
        let seeds: [&[u8]; 4] = [
            b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789",
            b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"PUT /a%20b?c HTTP/1.1\r\nX: \xff\xfe\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ];
        let alphabet = b" \r\n:/.,0123456789HTTPGETContent-Length\t\x00\xff-";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..40_000 {
            let mut buf: Vec<u8> = if round % 2 == 0 {
                seeds[rng.below(seeds.len())].to_vec()
            } else {
                (0..rng.below(300)).map(|_| rng.next() as u8).collect()
            };
            for _ in 0..rng.below(8) {
                let at = rng.below(buf.len() + 1);
                match rng.below(4) {
                    0 => buf.insert(at, alphabet[rng.below(alphabet.len())]),
                    1 if at < buf.len() => {
                        buf.remove(at);
                    }
                    2 if at < buf.len() => buf[at] = rng.next() as u8,
                    _ => buf.truncate(at),
                }
            }
            check_invariants(&buf, &limits);
            // Every prefix too, as the I/O thread sees them while bytes trickle in.
            let cut = rng.below(buf.len() + 1);
            check_invariants(&buf[..cut], &limits);
        }
    }
}
