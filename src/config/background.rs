//! The sections for work beside answering requests: `[rejections]` and `[push]` (delivering
//! them), `[retention]` (what is deleted when), `[metrics]` (where they are served). Split from
//! `file.rs` to keep each file short; the same rules: defaults here, the key named in errors.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::{in_range, secs};
use super::{
    ConfigError, DEFAULT_IP_RANGE_BLOCKLIST, DeliveryConfig, IpRange, PushConfig, RetentionConfig,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetricsFormat {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetentionFormat {
    pub finished_invites_days: Option<i64>,
    pub remote_keys_days: Option<i64>,
}

/// A delivery schedule as written: `[rejections]` is exactly this; `[push]` has these keys too.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliveryFormat {
    pub give_up_after_hours: Option<f64>,
    pub first_retry_secs: Option<f64>,
    pub max_retry_secs: Option<f64>,
    pub request_timeout_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PushFormat {
    pub give_up_after_hours: Option<f64>,
    pub first_retry_secs: Option<f64>,
    pub max_retry_secs: Option<f64>,
    pub request_timeout_secs: Option<i64>,
    pub ip_range_blocklist: Option<Vec<String>>,
    pub ip_range_allowlist: Option<Vec<String>>,
    pub allow_http: Option<bool>,
}

/// A delivery schedule's defaults (seconds).
struct Defaults {
    first_retry: f64,
    max_retry: f64,
    give_up_after: f64,
    request_timeout: i64,
}

/// A delivery schedule: `section` names the keys in errors.
fn delivery(section: &str, r: DeliveryFormat, d: &Defaults) -> Result<DeliveryConfig, ConfigError> {
    // Fractions are allowed (tests run the schedule in seconds); the bounds keep it sane.
    let seconds = |key: &str, v: Option<f64>, default: f64, max: f64| {
        let v = v.unwrap_or(default);
        if v.is_finite() && v > 0.0 && v <= max {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(ConfigError(format!(
                "{section}.{key}: {v} is outside (0, {max}]"
            )))
        }
    };
    let config = DeliveryConfig {
        give_up_after: seconds(
            "give_up_after_hours",
            r.give_up_after_hours.map(|h| h * 3600.0),
            d.give_up_after,
            30.0 * 24.0 * 3600.0,
        )?,
        first_retry: seconds(
            "first_retry_secs",
            r.first_retry_secs,
            d.first_retry,
            3600.0,
        )?,
        max_retry: seconds(
            "max_retry_secs",
            r.max_retry_secs,
            d.max_retry,
            24.0 * 3600.0,
        )?,
        request_timeout: secs(in_range(
            &format!("{section}.request_timeout_secs"),
            r.request_timeout_secs,
            d.request_timeout,
            1,
            300,
        )?),
    };
    if config.max_retry < config.first_retry {
        return Err(ConfigError(format!(
            "{section}.max_retry_secs {:?} is less than first_retry_secs {:?}",
            config.max_retry, config.first_retry
        )));
    }
    Ok(config)
}

/// `[rejections]`: how long and how often a rejection's delivery is retried.
pub(super) fn rejections_section(r: DeliveryFormat) -> Result<DeliveryConfig, ConfigError> {
    let defaults = Defaults {
        first_retry: 30.0,
        max_retry: 3600.0,
        give_up_after: 24.0 * 3600.0,
        request_timeout: 20,
    };
    delivery("rejections", r, &defaults)
}

/// `[push]`: Synapse's pusher schedule by default (first retry after 1 s, doubling, at most
/// an hour apart, a notification given up after 24 h), and the gateways' IP policy.
pub(super) fn push_section(p: PushFormat) -> Result<PushConfig, ConfigError> {
    let defaults = Defaults {
        first_retry: 1.0,
        max_retry: 3600.0,
        give_up_after: 24.0 * 3600.0,
        request_timeout: 10,
    };
    let schedule = DeliveryFormat {
        give_up_after_hours: p.give_up_after_hours,
        first_retry_secs: p.first_retry_secs,
        max_retry_secs: p.max_retry_secs,
        request_timeout_secs: p.request_timeout_secs,
    };
    let ranges = |key: &str, list: Vec<String>| {
        list.iter()
            .map(|r| IpRange::parse(r).map_err(|e| ConfigError(format!("push.{key}: {e}"))))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(PushConfig {
        delivery: delivery("push", schedule, &defaults)?,
        ip_range_blocklist: match p.ip_range_blocklist {
            Some(list) => ranges("ip_range_blocklist", list)?,
            None => ranges(
                "ip_range_blocklist",
                DEFAULT_IP_RANGE_BLOCKLIST
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            )?,
        },
        ip_range_allowlist: ranges(
            "ip_range_allowlist",
            p.ip_range_allowlist.unwrap_or_default(),
        )?,
        allow_http: p.allow_http.unwrap_or(false),
    })
}

/// `[retention]`.
pub(super) fn retention_section(r: RetentionFormat) -> Result<RetentionConfig, ConfigError> {
    let days = |key: &str, v: Option<i64>, default: i64, max: i64| {
        in_range(key, v, default, 1, max).map(|d| secs(d * 24 * 3600))
    };
    Ok(RetentionConfig {
        finished_invites: days(
            "retention.finished_invites_days",
            r.finished_invites_days,
            90,
            36_500,
        )?,
        remote_keys: days("retention.remote_keys_days", r.remote_keys_days, 30, 3650)?,
    })
}

/// `[metrics] listen`: a listener of its own, never the federation one.
pub(super) fn metrics_listen(
    m: MetricsFormat,
    listen: SocketAddr,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(l) = m.listen else {
        return Ok(None);
    };
    let addr: SocketAddr = l.parse().map_err(|_| {
        ConfigError(format!(
            "metrics.listen: {l:?} is not host:port with an IP address (e.g. \"127.0.0.1:9448\")"
        ))
    })?;
    // (Port 0, "any free port", is two different ports.)
    if addr == listen && addr.port() != 0 {
        return Err(ConfigError(
            "metrics.listen is the federation listen address; metrics need a listener of \
             their own (e.g. 127.0.0.1:9448)"
                .into(),
        ));
    }
    Ok(Some(addr))
}
