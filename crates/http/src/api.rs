//! The types the application sees: what a request is, what a response is, the errors the edge
//! detects itself, the [`Handler`] the application plugs in, and the [`Limits`] the edge enforces.
//!
//! They live in their own module, not in `lib.rs`, so that the edge's modules import them from
//! here and none of them imports the crate root, which re-exports them (no import cycles).

use std::net::SocketAddr;
use std::time::Duration;

/// One parsed HTTP request, with its whole body already read.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method exactly as sent (`GET`, `PUT`, ...).
    pub method: String,
    /// The request target exactly as it arrived on the wire: path plus `?query`, still
    /// percent-encoded. X-Matrix signatures cover this string, so it is never normalised.
    pub target: String,
    /// Header names and raw values in the order received (names as sent; look them up with
    /// [`Request::header`], which ignores case).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (empty when there was none).
    pub body: Vec<u8>,
    /// Whether the request came with a body-framing header (`Content-Length`), even `0`.
    pub has_body: bool,
    /// The peer address of the connection.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

impl Request {
    /// The path part of the target (before `?`), still percent-encoded.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The query part of the target (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Every header with this name (ASCII case-insensitive), in order.
    pub fn headers_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// A response to write. The edge adds `Content-Length`, `Connection` and `Date`-free framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Extra headers (`Content-Type`, `Retry-After`, ...). Do not set framing headers here.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a JSON body and `Content-Type: application/json`.
    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
            body,
        }
    }

    /// Adds a header, builder style.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A problem the edge detected before (or instead of) calling the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeError {
    /// 400: malformed request line or headers, bad or duplicate `Content-Length`, bad framing.
    BadRequest(String),
    /// 408: the request head or body did not arrive within its deadline.
    Timeout,
    /// 411: a `Transfer-Encoding` header (chunked bodies are not accepted).
    LengthRequired,
    /// 413: the declared body is larger than the limit; the body is not read.
    PayloadTooLarge { limit: usize },
    /// 414: the request target is longer than the limit.
    UriTooLong,
    /// 431: the head is larger than the limit, or has too many headers.
    HeadersTooLarge,
    /// 500: the handler panicked while answering this request.
    HandlerPanicked,
    /// 503: the declared body does not fit in what is left of `max_buffered_body_bytes`
    /// (other requests' bodies hold the rest); the body is not read. The edge adds
    /// `Retry-After: 1` unless the response from [`Handler::edge_error`] sets one.
    Overloaded,
    /// 505: an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

impl EdgeError {
    /// The HTTP status code for this error.
    pub fn status(&self) -> u16 {
        match self {
            EdgeError::BadRequest(_) => 400,
            EdgeError::Timeout => 408,
            EdgeError::LengthRequired => 411,
            EdgeError::PayloadTooLarge { .. } => 413,
            EdgeError::UriTooLong => 414,
            EdgeError::HeadersTooLarge => 431,
            EdgeError::HandlerPanicked => 500,
            EdgeError::Overloaded => 503,
            EdgeError::VersionNotSupported => 505,
        }
    }
}

impl std::fmt::Display for EdgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EdgeError::BadRequest(why) => write!(f, "bad request: {why}"),
            EdgeError::Timeout => f.write_str("request not received in time"),
            EdgeError::LengthRequired => {
                f.write_str("Transfer-Encoding is not supported; send Content-Length")
            }
            EdgeError::PayloadTooLarge { limit } => {
                write!(f, "request body is larger than the limit of {limit} bytes")
            }
            EdgeError::UriTooLong => f.write_str("request target is too long"),
            EdgeError::HeadersTooLarge => f.write_str("request head is too large"),
            EdgeError::HandlerPanicked => f.write_str("internal error while handling the request"),
            EdgeError::Overloaded => f.write_str(
                "the server is receiving as many request bodies as it has memory for; \
                 try again shortly",
            ),
            EdgeError::VersionNotSupported => {
                f.write_str("only HTTP/1.0 and HTTP/1.1 are supported")
            }
        }
    }
}

/// What the application plugs into the edge.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. A panic here becomes [`EdgeError::HandlerPanicked`] for this request
    /// only; the worker keeps serving.
    fn handle(&self, request: &Request) -> Response;

    /// Builds the response for an error the edge detected itself.
    fn edge_error(&self, error: &EdgeError) -> Response;

    /// A connection the edge closed at once, before reading a request: there is nothing to
    /// answer, but the application may count it. Does nothing by default.
    fn connection_refused(&self, _why: ConnectionRefused) {}
}

/// Why the edge closed a new connection without reading from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefused {
    /// Its peer already had [`Limits::max_connections_per_ip`] open.
    PerIpCap,
    /// [`Limits::max_connections`] were open, each in the middle of a request.
    ConnectionCap,
}

/// Every limit the edge enforces. Defaults suit a federation endpoint on a small device.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most (queued, reading, or being answered). When they are all open, a
    /// new connection takes the place of the one that has waited longest without a request in
    /// progress (idle between requests, waiting for its first byte, in its TLS handshake, or
    /// closing), which is closed; if every connection is in the middle of a request, the new
    /// one is closed at once.
    pub max_connections: usize,
    /// Open connections per peer at most: per IPv4 address, per IPv6 /64 (an IPv4-mapped
    /// IPv6 address counts as the IPv4 one). A connection over it is closed at once, so one
    /// host cannot take every slot of `max_connections`. Behind a reverse proxy every
    /// connection comes from the proxy's address: set it to `max_connections` there.
    pub max_connections_per_ip: usize,
    /// Request head (request line + headers) size at most, in bytes → 431.
    pub max_head_bytes: usize,
    /// Number of headers at most → 431.
    pub max_headers: usize,
    /// Request target length at most, in bytes → 414.
    pub max_target_bytes: usize,
    /// Body size at most, in bytes → 413 without reading the body.
    pub max_body_bytes: usize,
    /// Request bodies being received or handled, in bytes, at most over all connections: a
    /// request's declared `Content-Length` is counted from its head until its response is
    /// written. A request that would go over it gets 503 ([`EdgeError::Overloaded`]) without
    /// its body being read, so memory for bodies stays bounded however many connections
    /// declare large ones. A body larger than this whole budget gets 413.
    pub max_buffered_body_bytes: usize,
    /// Time allowed from the first byte of a request to its last body byte → 408. Fixed when
    /// the first byte arrives, so trickling bytes does not extend it.
    pub request_timeout: Duration,
    /// Time allowed to write a response: a client that does not read holds a worker this long
    /// at most.
    pub write_timeout: Duration,
    /// How long an idle keep-alive connection is kept open between requests.
    pub keep_alive_timeout: Duration,
    /// Time a new connection has to send the first byte of its first request, counted from
    /// accept, or for TLS from the end of the handshake; closed without a response otherwise.
    /// Short, because a connection that has sent nothing yet costs us a slot and has shown no
    /// sign of being a real client (a real one sends its request at once).
    pub first_byte_timeout: Duration,
    /// Requests per connection at most, after which the connection is closed.
    pub max_requests_per_connection: usize,
    /// Time allowed for a TLS handshake, counted from accept.
    pub tls_handshake_timeout: Duration,
    /// Time a complete request may wait for a free worker. One that waited longer gets 503
    /// ([`EdgeError::Overloaded`], with `Retry-After`) instead of being handled: its client has
    /// likely given up, and handling it would only make the requests behind it wait longer.
    pub max_queue_wait: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_connections_per_ip: 64,
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            max_target_bytes: 8 * 1024,
            max_body_bytes: 1024 * 1024,
            max_buffered_body_bytes: 32 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(30),
            first_byte_timeout: Duration::from_secs(5),
            max_requests_per_connection: 1000,
            tls_handshake_timeout: Duration::from_secs(10),
            max_queue_wait: Duration::from_secs(10),
        }
    }
}
