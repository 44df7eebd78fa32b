//! Reading one configuration value: an integer within bounds (the error names the key and
//! the bounds), seconds as a `Duration`.

use std::time::Duration;

use super::ConfigError;

pub(super) fn secs(n: i64) -> Duration {
    Duration::from_secs(n.unsigned_abs())
}

pub(super) fn in_range(
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
