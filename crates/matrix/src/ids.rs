//! Matrix identifiers: server names, user IDs, room IDs, event IDs and key IDs.
//!
//! Parsing happens once, at the edge of the rules; past that point code holds typed values,
//! so a "user ID" can never be an unchecked string. The grammars are the spec's (appendices,
//! "Identifier Grammar"), with the 255-byte limits. Server names are case-sensitive.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest identifier the spec allows, in bytes (sigil and server name included).
pub const MAX_ID_BYTES: usize = 255;

/// Why a string is not the identifier it claims to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    pub kind: &'static str,
    pub reason: String,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.kind, self.reason)
    }
}

impl std::error::Error for IdError {}

fn err(kind: &'static str, reason: impl Into<String>) -> IdError {
    IdError {
        kind,
        reason: reason.into(),
    }
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// A server name: `hostname[:port]`, hostname being a DNS name, an IPv4 address or a
/// bracketed IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);
string_newtype!(ServerName);

/// The host part of a server name, as the resolution rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Dns(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

impl ServerName {
    pub fn parse(s: &str) -> Result<ServerName, IdError> {
        const KIND: &str = "server name";
        if s.is_empty() {
            return Err(err(KIND, "empty"));
        }
        if s.len() > MAX_ID_BYTES {
            return Err(err(KIND, "longer than 255 bytes"));
        }
        split_host_port(s).map_err(|r| err(KIND, format!("{r} in {s:?}")))?;
        Ok(ServerName(s.to_owned()))
    }

    /// The host part, parsed.
    pub fn host(&self) -> Host {
        // Validated at construction, so this cannot fail; fall back to DNS text regardless.
        split_host_port(&self.0)
            .map(|(h, _)| h)
            .unwrap_or_else(|_| Host::Dns(self.0.clone()))
    }

    /// The host part as text, without the port (brackets kept for IPv6).
    pub fn host_str(&self) -> &str {
        match self.0.rfind(':') {
            Some(i) if !self.0[i..].contains(']') => &self.0[..i],
            _ => &self.0,
        }
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        split_host_port(&self.0).ok().and_then(|(_, p)| p)
    }
}

fn split_host_port(s: &str) -> Result<(Host, Option<u16>), &'static str> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed '['")?;
        let addr = &rest[..end];
        if addr.len() < 2 || addr.len() > 45 {
            return Err("bad IPv6 literal length");
        }
        if !addr
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err("bad character in IPv6 literal");
        }
        let ip: Ipv6Addr = addr.parse().map_err(|_| "invalid IPv6 address")?;
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after IPv6 literal")?),
        };
        (Host::Ipv6(ip), port)
    } else {
        let (h, p) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if h.is_empty() {
            return Err("empty hostname");
        }
        if !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err("bad character in hostname");
        }
        let host = match h.parse::<Ipv4Addr>() {
            Ok(ip) if is_dotted_quad(h) => Host::Ipv4(ip),
            _ => Host::Dns(h.to_owned()),
        };
        (host, p)
    };
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err("bad port");
            }
            Some(p.parse::<u16>().map_err(|_| "port out of range")?)
        }
    };
    Ok((host, port))
}

fn is_dotted_quad(h: &str) -> bool {
    let parts: Vec<&str> = h.split('.').collect();
    parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.len() <= 3)
}

/// A user ID: `@localpart:server_name`. Localparts follow the historical grammar (any
/// printable ASCII except `:`), which federation must still accept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId {
    full: String,
    colon: usize,
}

impl UserId {
    pub fn parse(s: &str) -> Result<UserId, IdError> {
        const KIND: &str = "user ID";
        if s.len() > MAX_ID_BYTES {
            return Err(err(KIND, "longer than 255 bytes"));
        }
        let rest = s
            .strip_prefix('@')
            .ok_or_else(|| err(KIND, "does not start with '@'"))?;
        let colon = rest
            .find(':')
            .ok_or_else(|| err(KIND, "no ':' before the server name"))?;
        let local = &rest[..colon];
        if local.is_empty() {
            return Err(err(KIND, "empty localpart"));
        }
        if !local
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
        {
            return Err(err(
                KIND,
                "localpart has a character outside printable ASCII",
            ));
        }
        ServerName::parse(&rest[colon + 1..]).map_err(|e| err(KIND, e.to_string()))?;
        Ok(UserId {
            full: s.to_owned(),
            colon: colon + 1,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn localpart(&self) -> &str {
        &self.full[1..self.colon]
    }

    /// The server name: everything after the first `:`.
    pub fn server_name(&self) -> ServerName {
        ServerName(self.full[self.colon + 1..].to_owned())
    }

    /// The server name as text, without allocating.
    pub fn server_str(&self) -> &str {
        &self.full[self.colon + 1..]
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// A room ID: `!opaque:server_name` (room versions 1–11) or `!` + 43 URL-safe base64
/// characters (room version 12, the create event's reference hash; no server name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);
string_newtype!(RoomId);

impl RoomId {
    pub fn parse(s: &str) -> Result<RoomId, IdError> {
        const KIND: &str = "room ID";
        if s.len() > MAX_ID_BYTES {
            return Err(err(KIND, "longer than 255 bytes"));
        }
        let rest = s
            .strip_prefix('!')
            .ok_or_else(|| err(KIND, "does not start with '!'"))?;
        if rest.contains('\0') {
            return Err(err(KIND, "contains NUL"));
        }
        match rest.split_once(':') {
            Some((_, server)) => {
                ServerName::parse(server).map_err(|e| err(KIND, e.to_string()))?;
            }
            None => {
                if !is_hash_id(rest) {
                    return Err(err(
                        KIND,
                        "neither '!opaque:server' nor a room version 12 hash ID",
                    ));
                }
            }
        }
        Ok(RoomId(s.to_owned()))
    }

    /// The server name after the first `:` (none for room version 12 IDs).
    pub fn server_str(&self) -> Option<&str> {
        self.0.split_once(':').map(|(_, s)| s)
    }

    /// Whether this is a room version 12 hash ID (no server name).
    pub fn is_hash_id(&self) -> bool {
        !self.0.contains(':')
    }

    pub(crate) fn from_hash_unchecked(s: String) -> RoomId {
        RoomId(s)
    }
}

/// 43 characters of URL-safe base64: a SHA-256 hash as v4+ event IDs and v12 room IDs hold it.
fn is_hash_id(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An event ID: `$…`, at most 255 bytes. Its shape depends on the room version
/// (`$opaque:server`, or `$` + base64 of the reference hash); [`crate::RoomVersion`] says which.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(String);
string_newtype!(EventId);

impl EventId {
    pub fn parse(s: &str) -> Result<EventId, IdError> {
        const KIND: &str = "event ID";
        if s.len() > MAX_ID_BYTES {
            return Err(err(KIND, "longer than 255 bytes"));
        }
        let rest = s
            .strip_prefix('$')
            .ok_or_else(|| err(KIND, "does not start with '$'"))?;
        if rest.is_empty() {
            return Err(err(KIND, "empty"));
        }
        if rest.contains('\0') {
            return Err(err(KIND, "contains NUL"));
        }
        Ok(EventId(s.to_owned()))
    }

    /// The server name after the first `:` (room versions 1 and 2 only).
    pub fn server_str(&self) -> Option<&str> {
        self.0.split_once(':').map(|(_, s)| s)
    }

    pub(crate) fn from_hash_unchecked(s: String) -> EventId {
        EventId(s)
    }
}

/// A signing key ID: `algorithm:version`, e.g. `ed25519:a_1`. The version is `[a-zA-Z0-9_]+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);
string_newtype!(KeyId);

impl KeyId {
    pub fn parse(s: &str) -> Result<KeyId, IdError> {
        const KIND: &str = "key ID";
        let (alg, version) = s.split_once(':').ok_or_else(|| err(KIND, "no ':'"))?;
        if alg.is_empty() || !alg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(err(KIND, "bad algorithm"));
        }
        if version.is_empty()
            || version.len() > 128
            || !version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(err(KIND, "version must be [a-zA-Z0-9_]+"));
        }
        Ok(KeyId(s.to_owned()))
    }

    /// An ed25519 key ID with this version.
    pub fn ed25519(version: &str) -> Result<KeyId, IdError> {
        KeyId::parse(&format!("ed25519:{version}"))
    }

    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }

    pub fn version(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, v)| v)
    }

    pub fn is_ed25519(&self) -> bool {
        self.algorithm() == "ed25519"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        for ok in [
            "matrix.org",
            "matrix.org:8888",
            "1.2.3.4",
            "1.2.3.4:1234",
            "[1234:5678::abcd]",
            "[1234:5678::abcd]:5678",
            "localhost:8448",
            "MATRIX.org",
            "1.2.3.999",
        ] {
            assert!(ServerName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "a:",
            "a:b",
            "a:123456",
            "a:65536",
            "[::1",
            "[zz::1]",
            "[::1]x",
            "a b",
            "a/b",
            "a_b.org",
            "[1.2.3.4]",
            "a:80:80",
        ] {
            assert!(ServerName::parse(bad).is_err(), "{bad}");
        }
        assert!(ServerName::parse(&"a".repeat(256)).is_err());
        assert!(ServerName::parse(&"a".repeat(255)).is_ok());
        let s = ServerName::parse("[::1]:8448").unwrap();
        assert_eq!(s.host(), Host::Ipv6("::1".parse().unwrap()));
        assert_eq!(s.port(), Some(8448));
        assert_eq!(s.host_str(), "[::1]");
        let s = ServerName::parse("1.2.3.4").unwrap();
        assert_eq!(s.host(), Host::Ipv4("1.2.3.4".parse().unwrap()));
        assert_eq!(s.host_str(), "1.2.3.4");
        assert_eq!(ServerName::parse("a.org:80").unwrap().host_str(), "a.org");
    }

    #[test]
    fn user_ids() {
        let u = UserId::parse("@alice:example.org:8448").unwrap();
        assert_eq!(u.localpart(), "alice");
        assert_eq!(u.server_str(), "example.org:8448");
        assert!(UserId::parse("@Hist/oric=+!:a.b").is_ok());
        for bad in [
            "alice:a",
            "@:a",
            "@alice",
            "@al ice:a",
            "@alice:",
            "@al\u{e9}:a",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
        let long = format!("@{}:a.b", "x".repeat(251));
        assert_eq!(long.len(), 256);
        assert!(UserId::parse(&long).is_err());
        let max = format!("@{}:a.b", "x".repeat(250));
        assert_eq!(max.len(), 255);
        assert!(UserId::parse(&max).is_ok());
    }

    #[test]
    fn room_and_event_ids() {
        assert!(RoomId::parse("!abc:example.org").is_ok());
        let v12 = RoomId::parse("!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ").unwrap();
        assert!(v12.is_hash_id());
        assert_eq!(v12.server_str(), None);
        for bad in [
            "abc:a",
            "!abc",
            "!:",
            "!a:b c",
            "!Nhcu5BS+UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ",
        ] {
            assert!(RoomId::parse(bad).is_err(), "{bad}");
        }
        assert!(EventId::parse("$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7XcJk").is_ok());
        assert!(EventId::parse("$a:b").unwrap().server_str() == Some("b"));
        assert!(EventId::parse("$").is_err());
        assert!(EventId::parse("a").is_err());
        assert!(EventId::parse(&format!("${}", "a".repeat(255))).is_err());
    }

    #[test]
    fn key_ids() {
        let k = KeyId::parse("ed25519:a_1").unwrap();
        assert!(k.is_ed25519());
        assert_eq!(k.version(), "a_1");
        for bad in ["ed25519", "ed25519:", ":x", "ed25519:a-b", "ed25519:a:b"] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
    }
}
