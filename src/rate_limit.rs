//! Token buckets keyed by name: what bounds how often one origin, invitee or log source may
//! do something. Kept apart so policy (invite rate limits) and the writer (refusal logging)
//! share one implementation.

use std::collections::HashMap;
use std::time::Instant;

/// Token buckets keyed by name: `rate` tokens per second up to `burst`.
pub struct TokenBuckets {
    rate: f64,
    burst: f64,
    buckets: HashMap<String, (f64, Instant)>,
}

/// Buckets kept at most; full (idle) ones are dropped first.
const MAX_BUCKETS: usize = 100_000;

impl TokenBuckets {
    pub fn new(rate: f64, burst: u32) -> TokenBuckets {
        TokenBuckets {
            rate,
            burst: f64::from(burst),
            buckets: HashMap::new(),
        }
    }

    /// Whether a token is available now, without taking it (`Err`: milliseconds until one is).
    pub fn check(&self, key: &str, now: Instant) -> Result<(), i64> {
        let refilled = self.buckets.get(key).map_or(self.burst, |(tokens, at)| {
            (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst)
        });
        if refilled >= 1.0 {
            Ok(())
        } else {
            Err(self.wait_ms(refilled))
        }
    }

    fn wait_ms(&self, tokens: f64) -> i64 {
        if self.rate > 0.0 {
            ((1.0 - tokens) / self.rate * 1000.0).ceil() as i64
        } else {
            3_600_000
        }
    }

    /// Takes one token, or says how many milliseconds until one is available.
    pub fn take(&mut self, key: &str, now: Instant) -> Result<(), i64> {
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= MAX_BUCKETS {
                self.buckets.clear();
            }
        }
        let (tokens, at) = self
            .buckets
            .entry(key.to_owned())
            .or_insert((self.burst, now));
        let refilled =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(self.wait_ms(refilled))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_buckets() {
        let mut b = TokenBuckets::new(2.0, 3);
        let t0 = Instant::now();
        assert!(b.take("a", t0).is_ok());
        assert!(b.take("a", t0).is_ok());
        assert!(b.take("a", t0).is_ok());
        let wait = b.take("a", t0).unwrap_err();
        assert_eq!(wait, 500);
        assert!(b.take("b", t0).is_ok(), "buckets are per key");
        // Checking takes nothing.
        assert_eq!(b.check("a", t0), Err(500));
        assert_eq!(b.check("c", t0), Ok(()));
        assert!(b.take("c", t0).is_ok());
        assert!(
            b.take("a", t0 + std::time::Duration::from_millis(500))
                .is_ok()
        );
    }
}
