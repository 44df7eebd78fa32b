//! Helpers shared by the robustness tests (`crash_safety`, `malformed_corpus`,
//! `slow_clients_invite`) and `invite_pipeline`: signing requests over our own canonical JSON
//! (so bodies ruma cannot represent can be signed too), and a small raw HTTP/1.1 client whose
//! bytes on the wire are exactly what the test says.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ruma_signatures::KeyPair as _;
use serde_json::Value as J;

use super::invites::US;
use super::origin::TestOrigin;

/// Canonical JSON of a serde_json value (sorted keys, no whitespace), independent of invited.
pub fn canonical(v: &J) -> String {
    fn write(v: &J, out: &mut String) {
        match v {
            J::Null | J::Bool(_) | J::Number(_) | J::String(_) => {
                out.push_str(&serde_json::to_string(v).unwrap())
            }
            J::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            J::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// The `Authorization: X-Matrix` value for a request whose content, as canonical JSON text,
/// is `content` (`None`: no body). The signed object is written by hand, so the content may be
/// anything invited's canonical form can be (huge integers, Python-style floats, deep nesting).
/// `destination` goes both into the signed object and the header.
pub fn x_matrix_for_text(
    origin: &TestOrigin,
    method: &str,
    uri: &str,
    destination: &str,
    content: Option<&str>,
) -> String {
    let s = |v: &str| serde_json::to_string(v).unwrap();
    let mut signed = String::from("{");
    if let Some(c) = content {
        signed.push_str("\"content\":");
        signed.push_str(c);
        signed.push(',');
    }
    signed.push_str(&format!(
        "\"destination\":{},\"method\":{},\"origin\":{},\"uri\":{}}}",
        s(destination),
        s(method),
        s(origin.name()),
        s(uri)
    ));
    let sig = origin.key().sign(signed.as_bytes()).base64();
    format!(
        "X-Matrix origin=\"{}\",destination=\"{destination}\",key=\"{}\",sig=\"{sig}\"",
        origin.name(),
        origin.key_id()
    )
}

/// [`x_matrix_for_text`] for a JSON value, to us.
pub fn x_matrix(origin: &TestOrigin, method: &str, uri: &str, content: Option<&J>) -> String {
    let text = content.map(canonical);
    x_matrix_for_text(origin, method, uri, US, text.as_deref())
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1

/// One HTTP response as received.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Bytes received after this response (none expected).
    pub trailing: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses the first complete response at the start of `raw` (framed by `Content-Length`;
/// without one, the body runs to the end of `raw`, which must then be complete). `None` if
/// it is not complete yet; `Err` if it is not HTTP.
pub fn parse_reply(raw: &[u8], eof: bool) -> Result<Option<(Reply, usize)>, String> {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return if eof {
            Err(format!(
                "connection closed without a complete response head: {:?}",
                String::from_utf8_lossy(raw)
            ))
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut headers = Vec::new();
    for l in lines {
        let (n, v) = l
            .split_once(':')
            .ok_or_else(|| format!("malformed response header line {l:?}"))?;
        headers.push((n.to_owned(), v.trim().to_owned()));
    }
    let start = end + 4;
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>())
        .transpose()
        .map_err(|e| format!("bad Content-Length in response: {e}"))?;
    let len = match length {
        Some(l) => l,
        None if eof => raw.len() - start,
        None => return Ok(None),
    };
    if raw.len() < start + len {
        return if eof {
            Err(format!(
                "connection closed after {} of {len} body bytes",
                raw.len() - start
            ))
        } else {
            Ok(None)
        };
    }
    let reply = Reply {
        status,
        headers,
        body: raw[start..start + len].to_vec(),
        trailing: Vec::new(),
    };
    Ok(Some((reply, start + len)))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Sends `bytes` on a new connection (from a writer thread, so a server that answers before
/// reading everything is seen answering) and reads the first response; waits `linger` more for
/// any bytes after it. Write errors are ignored: the server may refuse before reading it all.
pub fn exchange(
    addr: SocketAddr,
    bytes: Vec<u8>,
    timeout: Duration,
    linger: Duration,
) -> Result<Reply, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    exchange_on(s, bytes, timeout, linger)
}

/// [`exchange`] on a connection already made (say, from another local address).
pub fn exchange_on(
    s: TcpStream,
    bytes: Vec<u8>,
    timeout: Duration,
    linger: Duration,
) -> Result<Reply, String> {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(timeout)).unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&bytes).and_then(|()| w.flush());
    });
    let deadline = Instant::now() + timeout;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut r = &s;
    let mut result: Option<Result<(Reply, usize), String>> = None;
    let mut eof = false;
    while result.is_none() {
        if Instant::now() >= deadline {
            result = Some(Err(format!(
                "no complete response within {timeout:?}; got {:?}",
                String::from_utf8_lossy(&raw)
            )));
            break;
        }
        match r.read(&mut buf) {
            Ok(0) => eof = true,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                eof = true;
                if raw.is_empty() {
                    result = Some(Err(format!("read failed before any response: {e}")));
                    break;
                }
            }
        }
        match parse_reply(&raw, eof) {
            Ok(Some(done)) => result = Some(Ok(done)),
            Ok(None) if eof => result = Some(Err("connection closed early".to_owned())),
            Ok(None) => {}
            Err(e) => result = Some(Err(e)),
        }
    }
    let result = result.unwrap().map(|(mut reply, used)| {
        // Anything after the response (there should be nothing: every case closes).
        let until = Instant::now() + linger;
        let mut rest = raw[used..].to_vec();
        while !eof && Instant::now() < until {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
        }
        reply.trailing = rest;
        reply
    });
    let _ = s.shutdown(Shutdown::Both);
    let _ = writer.join();
    result
}

/// A request with `Host`, the given headers, `Content-Length` (when `body` is `Some`) and
/// `Connection: close`, byte for byte.
pub fn request_bytes(
    method: &str,
    target: &str,
    headers: &[(&str, &[u8])],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: {US}\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(b) = body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    out
}

/// One keep-alive connection that sends requests and reads their responses in turn.
pub struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> io::Result<KeepAlive> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(KeepAlive {
            stream,
            buf: Vec::new(),
        })
    }

    /// A clone of the socket (to shut it down from elsewhere).
    pub fn socket(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// A PUT with a JSON body and an `Authorization` header; returns the response.
    pub fn put(&mut self, path: &str, auth: &str, body: &[u8]) -> io::Result<Reply> {
        let mut req = format!(
            "PUT {path} HTTP/1.1\r\nHost: {US}\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.stream.write_all(&req)?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match parse_reply(&self.buf, false) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::other(e)),
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A small seeded PRNG (splitmix64): reproducible choices from a printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// A seed from the environment variable `var`, or from the clock.
pub fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}
