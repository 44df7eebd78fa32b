//! Which of another server's keys may be used for what: a request needs a current key valid
//! now; an event signature needs a key valid at the event's time, by its room version's rule.
//! The rules only, without the cache or the fetching (see `keyring`).
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#validating-hashes-and-signatures-on-received-events>
//! and <https://spec.matrix.org/v1.16/rooms/v5/#signing-key-validity-period>.

use invited_matrix::VerifyKey;

/// Keys are trusted for at most this long after we fetched them, whatever `valid_until_ts`
/// says (the spec's cap for room versions 5+; we apply it to request keys too).
pub const MAX_KEY_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;

/// What a key is needed for; decides which cached keys are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Authenticating a request: a key from `verify_keys`, valid now.
    Request { now_ms: i64 },
    /// Checking an event signature: room versions 5+ need the key valid at the event's
    /// `origin_server_ts` (`enforce_validity`); 1–4 accept any key not retired before it.
    Event {
        origin_server_ts: i64,
        enforce_validity: bool,
    },
}

impl KeyPurpose {
    /// What a notary is asked for (`minimum_valid_until_ts`): valid now for requests, at the
    /// event's time for events.
    pub fn minimum_valid_until_ts(self) -> i64 {
        match self {
            KeyPurpose::Request { now_ms } => now_ms,
            KeyPurpose::Event {
                origin_server_ts, ..
            } => origin_server_ts,
        }
    }
}

/// One remote key with everything the validity rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteKey {
    pub key: VerifyKey,
    /// From `verify_keys` (None for keys only seen in `old_verify_keys`).
    pub valid_until_ts: Option<i64>,
    /// From `old_verify_keys`.
    pub expired_ts: Option<i64>,
    pub fetched_ts: i64,
}

impl RemoteKey {
    /// `valid_until_ts` capped at fetch time + 7 days.
    pub fn effective_valid_until(&self) -> Option<i64> {
        self.valid_until_ts
            .map(|v| v.min(self.fetched_ts.saturating_add(MAX_KEY_VALIDITY_MS)))
    }

    /// The one rule for "may this key be used for this purpose".
    pub fn usable_for(&self, purpose: KeyPurpose) -> bool {
        match purpose {
            KeyPurpose::Request { now_ms } => {
                self.expired_ts.is_none()
                    && self.effective_valid_until().is_some_and(|v| v > now_ms)
            }
            KeyPurpose::Event {
                origin_server_ts,
                enforce_validity,
            } => match self.expired_ts {
                Some(expired) => expired >= origin_server_ts,
                None if enforce_validity => self
                    .effective_valid_until()
                    .is_some_and(|v| v >= origin_server_ts),
                None => true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(valid_until: Option<i64>, expired: Option<i64>, fetched: i64) -> RemoteKey {
        let vk = VerifyKey::from_base64("XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI").unwrap();
        RemoteKey {
            key: vk,
            valid_until_ts: valid_until,
            expired_ts: expired,
            fetched_ts: fetched,
        }
    }

    #[test]
    fn request_keys_must_be_current_and_valid_now() {
        let now = 1_000_000;
        assert!(key(Some(now + 1), None, now).usable_for(KeyPurpose::Request { now_ms: now }));
        assert!(!key(Some(now), None, now).usable_for(KeyPurpose::Request { now_ms: now }));
        // Old keys never authenticate requests.
        assert!(!key(None, Some(now * 2), now).usable_for(KeyPurpose::Request { now_ms: now }));
        // Validity is capped at fetch + 7 days.
        let fetched = now - MAX_KEY_VALIDITY_MS - 1;
        assert!(
            !key(Some(i64::MAX), None, fetched).usable_for(KeyPurpose::Request { now_ms: now })
        );
    }

    #[test]
    fn event_keys_follow_the_room_version() {
        let ev = |ts, enforce| KeyPurpose::Event {
            origin_server_ts: ts,
            enforce_validity: enforce,
        };
        // v1–v4 ignore valid_until_ts.
        assert!(key(Some(10), None, 0).usable_for(ev(1000, false)));
        // v5+ need validity at origin_server_ts, capped at fetch + 7 days.
        assert!(!key(Some(10), None, 0).usable_for(ev(1000, true)));
        assert!(key(Some(1000), None, 0).usable_for(ev(1000, true)));
        assert!(!key(Some(i64::MAX), None, 0).usable_for(ev(MAX_KEY_VALIDITY_MS + 1, true)));
        // Old keys count up to their expired_ts, in every version.
        assert!(key(None, Some(1000), 0).usable_for(ev(1000, true)));
        assert!(key(None, Some(1000), 0).usable_for(ev(1000, false)));
        assert!(!key(None, Some(999), 0).usable_for(ev(1000, false)));
    }
}
