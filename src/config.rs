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
    /// Where the configuration came from, for messages; `None` for the embedded default.
    pub source: Option<PathBuf>,
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
}

pub use crate::federation::ip_filter::{DEFAULT_IP_RANGE_BLOCKLIST, IpRange};

/// `[http]`: limits of the HTTP edge.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub max_connections: usize,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub keep_alive_timeout: Duration,
}

/// `[invites]`: how invites are checked.
#[derive(Debug, Clone)]
pub struct InvitesConfig {
    pub room_state_checks: RoomStateChecks,
    /// Entries of `invite_room_state` at most (real servers send 5–10).
    pub max_room_state_entries: usize,
    /// Bytes of `invite_room_state` at most (contents and full PDUs, as stored).
    pub max_room_state_bytes: usize,
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

// The file format, exactly as written by operators. Everything optional has its default in
// `Config::from_file_format`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    server_name: Option<String>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    workers: Option<i64>,
    key_lifetime_hours: Option<i64>,
    tls: Option<TlsFormat>,
    #[serde(default)]
    federation: FederationFormat,
    #[serde(default)]
    http: HttpFormat,
    #[serde(default)]
    invites: InvitesFormat,
    #[serde(default)]
    policy: PolicyFormat,
    #[serde(default)]
    rate_limits: RateLimitsFormat,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFormat {
    refuse_all: Option<bool>,
    allow_list_mode: Option<bool>,
    known_users_only: Option<bool>,
    deny_servers: Option<Vec<String>>,
    allow_servers: Option<Vec<String>>,
    ignore_servers: Option<Vec<String>>,
    refusal_log_max_days: Option<i64>,
    refusal_log_max_rows: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitsFormat {
    per_origin_per_second: Option<f64>,
    per_origin_burst: Option<i64>,
    per_invitee_per_second: Option<f64>,
    per_invitee_burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvitesFormat {
    room_state_checks: Option<RoomStateChecks>,
    max_room_state_entries: Option<i64>,
    max_room_state_bytes: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFormat {
    certificate: PathBuf,
    private_key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FederationFormat {
    ca_file: Option<PathBuf>,
    verify_certificates: Option<bool>,
    trusted_key_servers: Option<Vec<String>>,
    ip_range_blocklist: Option<Vec<String>>,
    ip_range_allowlist: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFormat {
    max_connections: Option<i64>,
    max_body_bytes: Option<i64>,
    request_timeout_secs: Option<i64>,
    keep_alive_secs: Option<i64>,
}

impl Config {
    /// The embedded default: plain HTTP on 127.0.0.1:8448 as `localhost:8448`, data in
    /// `./invited-data`.
    pub fn embedded_default() -> Config {
        // The default has no errors by construction; `from_file_format` on an empty file is it.
        Config::from_file_format(FileFormat::default(), None)
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
        let mut config = Config::from_file_format(format, path)
            .map_err(|e| ConfigError(format!("{shown}: {e}")))?;
        config.source = path.map(Path::to_path_buf);
        Ok(config)
    }

    /// Turns the file as written into the validated configuration, one section at a time;
    /// each step fills in its defaults and names the key at fault.
    fn from_file_format(f: FileFormat, path: Option<&Path>) -> Result<Config, ConfigError> {
        let base = path.and_then(Path::parent).unwrap_or(Path::new(""));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        let server_name = f.server_name.as_deref().unwrap_or(DEFAULT_SERVER_NAME);
        let server_name =
            ServerName::parse(server_name).map_err(|e| ConfigError(format!("server_name: {e}")))?;
        let listen = f.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen.parse().map_err(|_| {
            ConfigError(format!(
                "listen: {listen:?} is not host:port with an IP address (e.g. \"0.0.0.0:8448\")"
            ))
        })?;
        let data_dir = resolve(
            f.data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        );
        let workers = in_range("workers", f.workers, default_workers() as i64, 1, 256)? as usize;
        let key_lifetime_hours =
            in_range("key_lifetime_hours", f.key_lifetime_hours, 24, 1, 24 * 7)?;
        let tls = f.tls.map(|t| TlsConfig {
            certificate: resolve(t.certificate),
            private_key: resolve(t.private_key),
        });
        Ok(Config {
            policy: policy_section(f.policy, f.rate_limits)?,
            server_name,
            listen,
            data_dir,
            workers,
            key_lifetime: secs(key_lifetime_hours * 3600),
            tls,
            federation: federation_section(f.federation, &resolve)?,
            http: http_section(f.http)?,
            invites: invites_section(f.invites)?,
            source: None,
        })
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
            max_body_bytes: self.http.max_body_bytes,
            request_timeout: self.http.request_timeout,
            keep_alive_timeout: self.http.keep_alive_timeout,
            ..invited_http::Limits::default()
        }
    }
}

/// `[federation]`: notaries, the outbound CA and the IP block/allow lists.
fn federation_section(
    f: FederationFormat,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<FederationConfig, ConfigError> {
    let trusted_key_servers = f
        .trusted_key_servers
        .unwrap_or_default()
        .iter()
        .map(|s| {
            ServerName::parse(s)
                .map_err(|e| ConfigError(format!("federation.trusted_key_servers: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ranges = |key: &str, list: Vec<String>| {
        list.iter()
            .map(|r| IpRange::parse(r).map_err(|e| ConfigError(format!("federation.{key}: {e}"))))
            .collect::<Result<Vec<_>, _>>()
    };
    let default_blocklist = || {
        DEFAULT_IP_RANGE_BLOCKLIST
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    Ok(FederationConfig {
        ca_file: f.ca_file.map(resolve),
        verify_certificates: f.verify_certificates.unwrap_or(true),
        trusted_key_servers,
        ip_range_blocklist: ranges(
            "ip_range_blocklist",
            f.ip_range_blocklist.unwrap_or_else(default_blocklist),
        )?,
        ip_range_allowlist: ranges(
            "ip_range_allowlist",
            f.ip_range_allowlist.unwrap_or_default(),
        )?,
    })
}

/// `[invites]`: how strictly room state is checked, and how much of it is accepted.
fn invites_section(f: InvitesFormat) -> Result<InvitesConfig, ConfigError> {
    Ok(InvitesConfig {
        room_state_checks: f.room_state_checks.unwrap_or(RoomStateChecks::Spec),
        max_room_state_entries: in_range(
            "invites.max_room_state_entries",
            f.max_room_state_entries,
            50,
            5,
            1000,
        )? as usize,
        max_room_state_bytes: in_range(
            "invites.max_room_state_bytes",
            f.max_room_state_bytes,
            256 * 1024,
            16 * 1024,
            8 * 1024 * 1024,
        )? as usize,
    })
}

/// `[http]`: the edge's limits.
fn http_section(h: HttpFormat) -> Result<HttpConfig, ConfigError> {
    Ok(HttpConfig {
        max_connections: in_range("http.max_connections", h.max_connections, 1024, 1, 65536)?
            as usize,
        max_body_bytes: in_range(
            "http.max_body_bytes",
            h.max_body_bytes,
            1024 * 1024,
            1024,
            64 * 1024 * 1024,
        )? as usize,
        request_timeout: secs(in_range(
            "http.request_timeout_secs",
            h.request_timeout_secs,
            10,
            1,
            600,
        )?),
        keep_alive_timeout: secs(in_range(
            "http.keep_alive_secs",
            h.keep_alive_secs,
            30,
            1,
            3600,
        )?),
    })
}

/// `[policy]` and `[rate_limits]`.
fn policy_section(p: PolicyFormat, r: RateLimitsFormat) -> Result<PolicyConfig, ConfigError> {
    let rate = |key: &str, v: Option<f64>, default: f64| {
        let v = v.unwrap_or(default);
        if v.is_finite() && (0.0..=1_000_000.0).contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError(format!(
                "rate_limits.{key}: {v} is outside 0..=1000000"
            )))
        }
    };
    let globs = |key: &str, list: Option<Vec<String>>| {
        let list = list.unwrap_or_default();
        match list
            .iter()
            .find(|g| g.is_empty() || g.contains(char::is_whitespace))
        {
            Some(bad) => Err(ConfigError(format!("policy.{key}: bad glob {bad:?}"))),
            None => Ok(list),
        }
    };
    Ok(PolicyConfig {
        refuse_all: p.refuse_all.unwrap_or(false),
        allow_list_mode: p.allow_list_mode.unwrap_or(false),
        known_users_only: p.known_users_only.unwrap_or(false),
        deny_servers: globs("deny_servers", p.deny_servers)?,
        allow_servers: globs("allow_servers", p.allow_servers)?,
        ignore_servers: globs("ignore_servers", p.ignore_servers)?,
        refusal_log_max_days: in_range(
            "policy.refusal_log_max_days",
            p.refusal_log_max_days,
            30,
            1,
            3650,
        )?,
        refusal_log_max_rows: in_range(
            "policy.refusal_log_max_rows",
            p.refusal_log_max_rows,
            100_000,
            100,
            100_000_000,
        )?,
        per_origin_per_second: rate("per_origin_per_second", r.per_origin_per_second, 20.0)?,
        per_origin_burst: in_range(
            "rate_limits.per_origin_burst",
            r.per_origin_burst,
            100,
            1,
            1_000_000,
        )? as u32,
        per_invitee_per_second: rate("per_invitee_per_second", r.per_invitee_per_second, 1.0)?,
        per_invitee_burst: in_range(
            "rate_limits.per_invitee_burst",
            r.per_invitee_burst,
            20,
            1,
            1_000_000,
        )? as u32,
    })
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n.unsigned_abs())
}

/// Eight workers per core: a worker spends much of an invite waiting for the group commit,
/// and more invites in flight means more of them share one fsync (measured: 8 per core beat
/// 4 and 16 on the load benchmark).
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(16, |n| (n.get() * 8).clamp(8, 64))
}

fn in_range(
    key: &str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ConfigError> {
    let v = value.unwrap_or(default);
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError(format!("{key}: {v} is outside {min}..={max}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default() {
        let c = Config::embedded_default();
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
        ];
        for (text, needle) in cases {
            let err = Config::parse(text, None).unwrap_err().0;
            assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
        }
    }
}
