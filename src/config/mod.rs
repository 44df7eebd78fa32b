//! The configuration: one TOML file, loaded and validated once, then passed down as a typed
//! value (no globals).
//!
//! The key names are an interface deployment scripts rely on: `server_name`, `listen`,
//! `data_dir`, `workers`, `[tls] certificate/private_key`, `[federation] ca_file/
//! verify_certificates/trusted_key_servers`. Unknown keys are an error that names the key, so
//! a typo never silently falls back to a default.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use invited_matrix::ServerName;
use serde::Deserialize;

mod background;
mod file;
mod values;

use file::FileFormat;

/// The server name used when no configuration is given. Only good for trying invited out on
/// one machine: no other homeserver can reach `localhost`.
pub const DEFAULT_SERVER_NAME: &str = "localhost:8448";
/// The listen address used when no configuration is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8448";
/// The data directory used when no configuration is given (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "invited-data";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our server name: the part after `:` in our users' IDs, and the name we sign as.
    pub server_name: ServerName,
    pub listen: SocketAddr,
    /// Holds `invited.db` and `signing.key`.
    pub data_dir: PathBuf,
    /// Worker threads that answer requests.
    pub workers: usize,
    /// How long our published keys are valid (`valid_until_ts` = now + this).
    pub key_lifetime: Duration,
    pub tls: Option<TlsConfig>,
    pub federation: FederationConfig,
    pub http: HttpConfig,
    pub invites: InvitesConfig,
    pub policy: PolicyConfig,
    pub rejections: DeliveryConfig,
    pub push: PushConfig,
    pub retention: RetentionConfig,
    /// `[metrics] listen`: where `GET /metrics` is served (off when absent).
    pub metrics_listen: Option<SocketAddr>,
    /// Where the configuration came from, for messages; `None` for the embedded default.
    pub source: Option<PathBuf>,
}

/// How a kind of delivery from the outbox is retried (`[rejections]`, `[push]`). Failed
/// attempts (network errors, timeouts, 5xx) are retried after `first_retry`, doubling up to
/// `max_retry` (with jitter), until `give_up_after` from when the delivery was queued; then
/// the kind gives up (a rejection becomes `rejected_locally`, a notification is dropped).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub give_up_after: Duration,
    pub first_retry: Duration,
    pub max_retry: Duration,
    /// Time allowed for each request to another server (discovery included).
    pub request_timeout: Duration,
}

/// `[push]`: push notifications to the users' push gateways.
#[derive(Debug, Clone)]
pub struct PushConfig {
    pub delivery: DeliveryConfig,
    /// Gateway addresses refused (checked on the resolved IP; default: federation's default,
    /// private ranges included)...
    pub ip_range_blocklist: Vec<IpRange>,
    /// ...unless also in one of these (a push server on the home network, such as ntfy).
    pub ip_range_allowlist: Vec<IpRange>,
    /// Whether `http://` gateway URLs are allowed (default: HTTPS only).
    pub allow_http: bool,
}

/// `[retention]`: how long finished things are kept (see `store::retention`).
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Invites no longer pending (accepted, rejected, rejected locally, rescinded, ignored),
    /// counted from their last state change (ignored: from their arrival).
    pub finished_invites: Duration,
    /// Other servers' keys, counted from when they were fetched.
    pub remote_keys: Duration,
}

/// `[tls]`: serve HTTPS with this certificate chain and private key (PEM files).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// `[federation]`: how we talk to other servers (key fetching).
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// Extra PEM root certificates trusted for outbound HTTPS (private deployments, tests).
    pub ca_file: Option<PathBuf>,
    /// Whether outbound HTTPS checks certificates. Only ever false in tests.
    pub verify_certificates: bool,
    /// Notary servers asked for keys when an origin cannot be reached.
    pub trusted_key_servers: Vec<ServerName>,
    /// Outbound requests to these addresses are refused (checked on the resolved IP)...
    pub ip_range_blocklist: Vec<IpRange>,
    /// ...unless the address is also in one of these.
    pub ip_range_allowlist: Vec<IpRange>,
    /// How long one key fetch may take in all: discovery, DNS, the server, every notary.
    pub key_fetch_deadline: Duration,
}

pub use crate::federation::ip_filter::{DEFAULT_IP_RANGE_BLOCKLIST, IpRange};

/// `[http]`: limits of the HTTP edge.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub max_connections: usize,
    /// Open connections per client address (IPv6: per /64) at most.
    pub max_connections_per_ip: usize,
    /// Bytes of request bodies buffered at once over all connections.
    pub max_buffered_body_bytes: usize,
    /// How soon a new connection must send its first byte.
    pub first_byte_timeout: Duration,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub keep_alive_timeout: Duration,
    /// How long a complete request may wait for a worker before it gets 503.
    pub max_queue_wait: Duration,
    /// Memory for parsing and checking JSON bodies, over all workers (`json_memory`).
    pub max_json_memory_bytes: usize,
}

/// `[invites]`: how invites are checked.
#[derive(Debug, Clone)]
pub struct InvitesConfig {
    pub room_state_checks: RoomStateChecks,
    /// Entries of `invite_room_state` at most (real servers send 5–10).
    pub max_room_state_entries: usize,
    /// Bytes of `invite_room_state` at most (contents and full PDUs, as stored).
    pub max_room_state_bytes: usize,
    /// Bytes of an invite request's body at most (413 before parsing): the room state, the
    /// event (at most 64 KiB) and the wrapping. Below the edge's `http.max_body_bytes`, which
    /// other endpoints need.
    pub max_request_bytes: usize,
    /// Below this much free space on the data directory's disk, new invites get 503 (which
    /// senders retry) instead of filling the disk. 0: no check.
    pub min_free_disk_bytes: u64,
}

/// `[policy]` and `[rate_limits]`: defaults for the invite policy. Switches set with the CLI
/// (in the database) override these; the rule lists are loaded as rules of source `config`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub refuse_all: bool,
    pub allow_list_mode: bool,
    pub known_users_only: bool,
    pub deny_servers: Vec<String>,
    pub allow_servers: Vec<String>,
    pub ignore_servers: Vec<String>,
    pub refusal_log_max_days: i64,
    pub refusal_log_max_rows: i64,
    pub per_origin_per_second: f64,
    pub per_origin_burst: u32,
    pub per_invitee_per_second: f64,
    pub per_invitee_burst: u32,
    /// New invites per second over all origins: past it, 503 (senders retry).
    pub total_per_second: f64,
    pub total_burst: u32,
}

/// How strictly `invite_room_state` is checked (MSC4311).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomStateChecks {
    /// As the spec says: refuse failures for room version 12, warn (store a warning) for 1–11.
    Spec,
    /// Refuse failures for every room version.
    Strict,
    /// Check nothing (store what came).
    Off,
}

/// A configuration problem, naming the key (or file) at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The embedded default: plain HTTP on 127.0.0.1:8448 as `localhost:8448`, data in
    /// `./invited-data`.
    pub fn embedded_default() -> Config {
        // The default has no errors by construction; `validate` on an empty file is it.
        file::validate(FileFormat::default(), None)
            .unwrap_or_else(|e| unreachable!("the embedded default configuration is valid: {e}"))
    }

    /// Loads and validates a TOML file. Relative paths inside it are relative to the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read configuration file {}: {e}",
                path.display()
            ))
        })?;
        Config::parse(&text, Some(path))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let shown = path.map_or("configuration".to_owned(), |p| p.display().to_string());
        let format: FileFormat = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim_end().replace('\n', " ");
            // Type errors do not name the key; the line they point at does.
            let place = e
                .span()
                .map(|s| {
                    let line_no = text[..s.start].matches('\n').count() + 1;
                    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
                    format!(" line {line_no} `{line}`")
                })
                .unwrap_or_default();
            ConfigError(format!("{shown}{place}: {msg}"))
        })?;
        let mut config =
            file::validate(format, path).map_err(|e| ConfigError(format!("{shown}: {e}")))?;
        config.source = path.map(Path::to_path_buf);
        Ok(config)
    }

    /// Where the SQLite database lives.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("invited.db")
    }

    /// Where our signing key lives (Synapse's `signing.key` format).
    pub fn signing_key_path(&self) -> PathBuf {
        self.data_dir.join("signing.key")
    }

    /// Whether this is the embedded default (no file), which deserves a loud warning.
    pub fn is_embedded_default(&self) -> bool {
        self.source.is_none()
    }

    /// The HTTP edge limits this configuration asks for.
    pub fn http_limits(&self) -> invited_http::Limits {
        invited_http::Limits {
            max_connections: self.http.max_connections,
            max_connections_per_ip: self.http.max_connections_per_ip,
            max_buffered_body_bytes: self.http.max_buffered_body_bytes,
            first_byte_timeout: self.http.first_byte_timeout,
            max_body_bytes: self.http.max_body_bytes,
            request_timeout: self.http.request_timeout,
            keep_alive_timeout: self.http.keep_alive_timeout,
            max_queue_wait: self.http.max_queue_wait,
            ..invited_http::Limits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default() {
        let c = Config::embedded_default();
        // Push: Synapse's pusher schedule, federation's blocklist, HTTPS only.
        assert_eq!(c.push.delivery.first_retry, Duration::from_secs(1));
        assert_eq!(c.push.delivery.max_retry, Duration::from_secs(3600));
        assert_eq!(
            c.push.delivery.give_up_after,
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(c.push.ip_range_blocklist, c.federation.ip_range_blocklist);
        assert!(c.push.ip_range_allowlist.is_empty() && !c.push.allow_http);
        assert_eq!(c.rejections.first_retry, Duration::from_secs(30));
        assert_eq!(c.server_name.as_str(), "localhost:8448");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8448");
        assert_eq!(c.data_dir, PathBuf::from("invited-data"));
        assert!(c.tls.is_none());
        assert!(c.federation.verify_certificates);
        assert!(c.is_embedded_default());
    }

    #[test]
    fn full_file() {
        let c = Config::parse(
            r#"
server_name = "example.org"
listen = "0.0.0.0:8448"
data_dir = "data"
workers = 3
key_lifetime_hours = 48
[tls]
certificate = "/etc/c.pem"
private_key = "k.pem"
[federation]
ca_file = "ca.pem"
verify_certificates = false
trusted_key_servers = ["matrix.org"]
ip_range_allowlist = ["127.0.0.0/8", "::1/128"]
[http]
max_connections = 10
max_body_bytes = 2048
request_timeout_secs = 5
keep_alive_secs = 7
[invites]
room_state_checks = "strict"
max_room_state_entries = 20
[policy]
refuse_all = true
deny_servers = ["*.spam.example"]
refusal_log_max_days = 7
[rate_limits]
per_origin_per_second = 0.5
per_invitee_burst = 3
"#,
            Some(Path::new("/etc/invited/invited.toml")),
        )
        .unwrap();
        assert_eq!(c.server_name.as_str(), "example.org");
        assert_eq!(c.data_dir, PathBuf::from("/etc/invited/data"));
        assert_eq!(c.workers, 3);
        let tls = c.tls.unwrap();
        assert_eq!(tls.certificate, PathBuf::from("/etc/c.pem"));
        assert_eq!(tls.private_key, PathBuf::from("/etc/invited/k.pem"));
        assert_eq!(
            c.federation.ca_file,
            Some(PathBuf::from("/etc/invited/ca.pem"))
        );
        assert!(!c.federation.verify_certificates);
        assert_eq!(c.federation.trusted_key_servers[0].as_str(), "matrix.org");
        assert_eq!(c.http.max_body_bytes, 2048);
        assert_eq!(c.federation.ip_range_allowlist.len(), 2);
        assert_eq!(c.invites.room_state_checks, RoomStateChecks::Strict);
        assert_eq!(c.invites.max_room_state_entries, 20);
        assert_eq!(c.invites.max_room_state_bytes, 256 * 1024);
        assert_eq!(c.invites.max_request_bytes, 384 * 1024);
        assert!(c.policy.refuse_all);
        assert_eq!(c.policy.deny_servers, vec!["*.spam.example".to_owned()]);
        assert_eq!(c.policy.per_origin_per_second, 0.5);
        assert_eq!(c.policy.per_invitee_burst, 3);
        assert_eq!(c.policy.refusal_log_max_days, 7);
        assert_eq!(
            c.federation.ip_range_blocklist.len(),
            DEFAULT_IP_RANGE_BLOCKLIST.len()
        );
        assert_eq!(c.key_lifetime, Duration::from_secs(48 * 3600));
    }

    /// Each error names the key at fault (and for type errors, the line), precisely enough
    /// that an operator can find it: the needle is the key with its context, not a fragment
    /// any message would contain.
    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("server_nme = \"a\"", "unknown field `server_nme`"),
            (
                "[tls]\ncertificate = \"a\"\nkey = \"b\"",
                "unknown field `key`, expected `certificate` or `private_key`",
            ),
            ("server_name = \"a b\"", "server_name: "),
            (
                "listen = \"localhost\"",
                "listen: \"localhost\" is not host:port",
            ),
            ("workers = 0", "workers: 0 is outside 1..=256"),
            ("workers = \"two\"", "line 1 `workers = \"two\"`"),
            (
                "[federation]\ntrusted_key_servers = [\"a/b\"]",
                "federation.trusted_key_servers: ",
            ),
            (
                "[invites]\nmax_room_state_bytes = 400000\nmax_request_bytes = 300000",
                "invites.max_request_bytes 300000 is less than invites.max_room_state_bytes",
            ),
            (
                "[http]\nmax_body_bytes = 1",
                "http.max_body_bytes: 1 is outside 1024..=67108864",
            ),
            (
                "[federation]\nverify_certificates = \"no\"",
                "line 2 `verify_certificates = \"no\"`",
            ),
            (
                "key_lifetime_hours = 0",
                "key_lifetime_hours: 0 is outside 1..=168",
            ),
            (
                "[invites]\nroom_state_checks = \"lax\"",
                "line 2 `room_state_checks = \"lax\"`",
            ),
            (
                "[rate_limits]\nper_origin_per_second = -1.0",
                "rate_limits.per_origin_per_second: -1 is outside 0..=1000000",
            ),
            (
                "[policy]\ndeny_servers = [\"\"]",
                "policy.deny_servers: bad glob \"\"",
            ),
            ("[policy]\nrefuse_al = true", "unknown field `refuse_al`"),
            (
                "[invites]\nmax_room_state_entries = 1000000",
                "invites.max_room_state_entries: 1000000 is outside 5..=1000",
            ),
            (
                "[federation]\nip_range_allowlist = [\"1.2.3.4/33\"]",
                "federation.ip_range_allowlist: \"1.2.3.4/33\" has a bad prefix length",
            ),
            (
                "[push]\nip_range_allowlist = [\"nas.local\"]",
                "push.ip_range_allowlist: \"nas.local\" is not an IP address",
            ),
            (
                "[push]\nfirst_retry_secs = 0",
                "push.first_retry_secs: 0 is outside (0, 3600]",
            ),
            (
                "[rejections]\nfirst_retry_secs = 60\nmax_retry_secs = 30",
                "rejections.max_retry_secs 30s is less than first_retry_secs 60s",
            ),
            ("[push]\nallow_htp = true", "unknown field `allow_htp`"),
        ];
        for (text, needle) in cases {
            let err = Config::parse(text, None).unwrap_err().0;
            assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
        }
    }
}
