//! The configuration file as operators write it (serde structs, every key optional), and how
//! each section becomes validated values with their defaults. Kept apart from the `Config`
//! types the rest of the program reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use invited_matrix::ServerName;
use serde::Deserialize;

use super::background;
use super::values::{in_range, secs};

use super::{
    Config, ConfigError, DEFAULT_DATA_DIR, DEFAULT_IP_RANGE_BLOCKLIST, DEFAULT_LISTEN,
    DEFAULT_SERVER_NAME, FederationConfig, HttpConfig, InvitesConfig, IpRange, PolicyConfig,
    RoomStateChecks, TlsConfig,
};

// The file format, exactly as written by operators. Everything optional has its default in
// [`validate`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileFormat {
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
    #[serde(default)]
    rejections: background::DeliveryFormat,
    #[serde(default)]
    push: background::PushFormat,
    #[serde(default)]
    retention: background::RetentionFormat,
    #[serde(default)]
    metrics: background::MetricsFormat,
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
    total_per_second: Option<f64>,
    total_burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvitesFormat {
    room_state_checks: Option<RoomStateChecks>,
    max_room_state_entries: Option<i64>,
    max_room_state_bytes: Option<i64>,
    max_request_bytes: Option<i64>,
    min_free_disk_mb: Option<i64>,
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
    key_fetch_deadline_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFormat {
    max_connections: Option<i64>,
    max_connections_per_ip: Option<i64>,
    max_buffered_body_mb: Option<i64>,
    first_byte_timeout_secs: Option<i64>,
    max_body_bytes: Option<i64>,
    request_timeout_secs: Option<i64>,
    keep_alive_secs: Option<i64>,
    max_queue_wait_secs: Option<i64>,
    max_json_memory_mb: Option<i64>,
}

/// Turns the file as written into the validated configuration, one section at a time; each
/// step fills in its defaults and names the key at fault.
pub(super) fn validate(f: FileFormat, path: Option<&Path>) -> Result<Config, ConfigError> {
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
    let key_lifetime_hours = in_range("key_lifetime_hours", f.key_lifetime_hours, 24, 1, 24 * 7)?;
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
        rejections: background::rejections_section(f.rejections)?,
        push: background::push_section(f.push)?,
        metrics_listen: background::metrics_listen(f.metrics, listen)?,
        retention: background::retention_section(f.retention)?,
        source: None,
    })
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
        key_fetch_deadline: secs(in_range(
            "federation.key_fetch_deadline_secs",
            f.key_fetch_deadline_secs,
            15,
            1,
            120,
        )?),
    })
}

/// `[invites]`: how strictly room state is checked, and how much of it is accepted.
fn invites_section(f: InvitesFormat) -> Result<InvitesConfig, ConfigError> {
    let config = InvitesConfig {
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
        max_request_bytes: in_range(
            "invites.max_request_bytes",
            f.max_request_bytes,
            384 * 1024,
            64 * 1024,
            64 * 1024 * 1024,
        )? as usize,
        min_free_disk_bytes: in_range(
            "invites.min_free_disk_mb",
            f.min_free_disk_mb,
            256,
            0,
            1 << 30,
        )?
        .unsigned_abs()
            * 1024
            * 1024,
    };
    if config.max_request_bytes < config.max_room_state_bytes {
        return Err(ConfigError(format!(
            "invites.max_request_bytes {} is less than invites.max_room_state_bytes {}: \
             no invite with that much room state could be read; raise max_request_bytes",
            config.max_request_bytes, config.max_room_state_bytes
        )));
    }
    Ok(config)
}

/// `[http]`: the edge's limits.
fn http_section(h: HttpFormat) -> Result<HttpConfig, ConfigError> {
    let max_connections =
        in_range("http.max_connections", h.max_connections, 1024, 1, 65536)? as usize;
    let config = HttpConfig {
        max_connections,
        // Behind a reverse proxy every connection has the proxy's address: set this to
        // max_connections there (README, "Deployment").
        max_connections_per_ip: in_range(
            "http.max_connections_per_ip",
            h.max_connections_per_ip,
            64.min(max_connections as i64),
            1,
            65536,
        )? as usize,
        max_buffered_body_bytes: (in_range(
            "http.max_buffered_body_mb",
            h.max_buffered_body_mb,
            32,
            1,
            4096,
        )? as usize)
            << 20,
        first_byte_timeout: secs(in_range(
            "http.first_byte_timeout_secs",
            h.first_byte_timeout_secs,
            5,
            1,
            600,
        )?),
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
        max_json_memory_bytes: (in_range(
            "http.max_json_memory_mb",
            h.max_json_memory_mb,
            64,
            8,
            4096,
        )? as usize)
            << 20,
        max_queue_wait: secs(in_range(
            "http.max_queue_wait_secs",
            h.max_queue_wait_secs,
            10,
            1,
            600,
        )?),
    };
    if crate::json_memory::reservation(config.max_body_bytes) > config.max_json_memory_bytes {
        return Err(ConfigError(format!(
            "http.max_json_memory_mb {} cannot hold one request of http.max_body_bytes {} \
             (it needs {} MiB); raise max_json_memory_mb or lower max_body_bytes",
            config.max_json_memory_bytes >> 20,
            config.max_body_bytes,
            crate::json_memory::reservation(config.max_body_bytes).div_ceil(1 << 20)
        )));
    }
    if config.max_body_bytes > config.max_buffered_body_bytes {
        return Err(ConfigError(format!(
            "http.max_body_bytes {} is more than http.max_buffered_body_mb allows ({} bytes): \
             no request that large could ever be read",
            config.max_body_bytes, config.max_buffered_body_bytes
        )));
    }
    Ok(config)
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
        total_per_second: rate("total_per_second", r.total_per_second, 200.0)?,
        total_burst: in_range("rate_limits.total_burst", r.total_burst, 1000, 1, 1_000_000)? as u32,
    })
}

/// Eight workers per core: a worker spends much of an invite waiting for the group commit,
/// and more invites in flight means more of them share one fsync (measured: 8 per core beat
/// 4 and 16 on the load benchmark).
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(16, |n| (n.get() * 8).clamp(8, 64))
}
