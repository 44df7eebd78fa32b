//! The sections for work beside answering requests: `[rejections]` (delivering them),
//! `[retention]` (what is deleted when), `[metrics]` (where they are served). Split from
//! `file.rs` to keep each file short; the same rules: defaults here, the key named in errors.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::{in_range, secs};
use super::{ConfigError, RejectionsConfig, RetentionConfig};

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RejectionsFormat {
    pub give_up_after_hours: Option<f64>,
    pub first_retry_secs: Option<f64>,
    pub max_retry_secs: Option<f64>,
    pub request_timeout_secs: Option<i64>,
}

/// `[rejections]`: how long and how often a rejection's delivery is retried.
pub(super) fn rejections_section(r: RejectionsFormat) -> Result<RejectionsConfig, ConfigError> {
    // Fractions are allowed (tests run the schedule in seconds); the bounds keep it sane.
    let seconds = |key: &str, v: Option<f64>, default: f64, max: f64| {
        let v = v.unwrap_or(default);
        if v.is_finite() && v > 0.0 && v <= max {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(ConfigError(format!(
                "rejections.{key}: {v} is outside (0, {max}]"
            )))
        }
    };
    let config = RejectionsConfig {
        give_up_after: seconds(
            "give_up_after_hours",
            r.give_up_after_hours.map(|h| h * 3600.0),
            24.0 * 3600.0,
            30.0 * 24.0 * 3600.0,
        )?,
        first_retry: seconds("first_retry_secs", r.first_retry_secs, 30.0, 3600.0)?,
        max_retry: seconds("max_retry_secs", r.max_retry_secs, 3600.0, 24.0 * 3600.0)?,
        request_timeout: secs(in_range(
            "rejections.request_timeout_secs",
            r.request_timeout_secs,
            20,
            1,
            300,
        )?),
    };
    if config.max_retry < config.first_retry {
        return Err(ConfigError(format!(
            "rejections.max_retry_secs {:?} is less than first_retry_secs {:?}",
            config.max_retry, config.first_retry
        )));
    }
    Ok(config)
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
