//! Turning a [`Response`] into bytes. The edge owns the framing headers, so whatever the
//! application sets, the client always gets exactly one correct `Content-Length`.

use crate::api::Response;

/// How the connection goes on after this response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    /// The connection closes: say so with `Connection: close`.
    Close,
    /// HTTP/1.1 keep-alive is the default and needs no header.
    KeepAlive11,
    /// HTTP/1.0 keep-alive must be confirmed with `Connection: keep-alive`.
    KeepAlive10,
}

/// Serialises the status line, headers and body into one buffer, written with one syscall.
/// A response to `HEAD` (`head`) carries the body's `Content-Length` but never the body:
/// bytes after it would be read as the start of the next response (RFC 9110 §9.3.2).
pub(crate) fn serialize(response: &Response, persist: Persist, head: bool) -> Vec<u8> {
    let status = if (200..=599).contains(&response.status) {
        response.status
    } else {
        // 1xx would make the client wait for a second response; anything else is not HTTP.
        log::error!("handler returned status {}; sending 500", response.status);
        500
    };
    let mut out = Vec::with_capacity(128 + response.body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    for (name, value) in &response.headers {
        if is_framing(name) {
            log::debug!("dropping framing header {name:?} set by the handler");
            continue;
        }
        if !is_token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            log::error!("dropping malformed response header {name:?}");
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n", response.body.len()).as_bytes());
    match persist {
        Persist::Close => out.extend_from_slice(b"Connection: close\r\n"),
        Persist::KeepAlive10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Persist::KeepAlive11 => {}
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(&response.body);
    }
    out
}

fn is_framing(name: &str) -> bool {
    ["content-length", "transfer-encoding", "connection"]
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_is_owned_by_the_edge() {
        let r = Response::json(200, b"{}".to_vec())
            .with_header("Content-Length", "99")
            .with_header("Transfer-Encoding", "chunked")
            .with_header("X-Evil", "a\r\nSet-Cookie: x")
            .with_header("Bad Name", "v")
            .with_header("Retry-After", "3");
        let text = String::from_utf8(serialize(&r, Persist::Close, false)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nRetry-After: 3\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }

    #[test]
    fn head_responses_have_no_body() {
        let r = Response::json(405, b"{\"errcode\":\"M_UNRECOGNIZED\"}".to_vec());
        let text = String::from_utf8(serialize(&r, Persist::KeepAlive11, true)).unwrap();
        assert!(text.contains("Content-Length: 28\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }

    #[test]
    fn keep_alive_headers_and_bad_status() {
        let r = Response {
            status: 101,
            headers: vec![],
            body: vec![],
        };
        let text = String::from_utf8(serialize(&r, Persist::KeepAlive10, false)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
        let r = Response {
            status: 404,
            headers: vec![],
            body: b"no".to_vec(),
        };
        let text = String::from_utf8(serialize(&r, Persist::KeepAlive11, false)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"
        );
    }
}
