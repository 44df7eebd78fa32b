//! The wall clock, in the unit Matrix uses: milliseconds since the Unix epoch.
//!
//! A leaf module so that everything that needs "now" (keys, invites, the CLI) can ask without
//! importing the request path.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
