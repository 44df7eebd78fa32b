//! Asking other servers for keys: a server's own `/_matrix/key/v2/server`, then the
//! configured notaries' `/_matrix/key/v2/query`
//! (<https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys>). What is asked,
//! and what an answer must be to count; the keyring decides when to ask and remembers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use invited_matrix::server_keys::parse_server_keys;
use invited_matrix::{KeyId, Object, ServerName, Value, VerifyKey, signature_key_ids, verify_json};

use crate::config::FederationConfig;
use crate::federation::client::{FetchError, remaining};
use crate::federation::outbound::Outbound;
use crate::store::RemoteKeyRow;

/// Finds a notary's own key, valid at the given time, to check its signature on an answer
/// (the error says why there is none).
pub type NotaryKey<'a> = &'a dyn Fn(&ServerName, &KeyId, i64) -> Result<VerifyKey, String>;

/// The outbound side of the keyring.
pub struct KeyFetcher {
    our_name: ServerName,
    /// The one outbound client (shared with deliveries).
    net: Arc<Outbound>,
    notaries: Vec<ServerName>,
    /// Outbound fetch attempts made (for tests and metrics).
    attempts: AtomicUsize,
    /// How long one fetch may take in all (`[federation] key_fetch_deadline_secs`).
    deadline: Duration,
}

impl KeyFetcher {
    pub fn new(our_name: ServerName, config: &FederationConfig, net: Arc<Outbound>) -> KeyFetcher {
        KeyFetcher {
            our_name,
            net,
            notaries: config.trusted_key_servers.clone(),
            attempts: AtomicUsize::new(0),
            deadline: config.key_fetch_deadline,
        }
    }

    /// Outbound fetch attempts so far.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Fetches `server`'s keys directly, then from each notary in turn.
    ///
    /// `notary_key` finds a notary's own key (through the keyring, which fetches it directly);
    /// `None` asks no notary (used while fetching a notary's key).
    pub fn fetch(
        &self,
        server: &ServerName,
        key_id: &KeyId,
        minimum_valid_until_ts: i64,
        notary_key: Option<NotaryKey<'_>>,
    ) -> Result<Vec<RemoteKeyRow>, FetchError> {
        // Neither we nor a notary are asked about our own name: our keys are ours to know.
        if server.as_str().eq_ignore_ascii_case(self.our_name.as_str()) {
            return Err(FetchError("that is our own server name".to_owned()));
        }
        // One deadline for the whole fetch: discovery, DNS, the server itself, every notary.
        let deadline = Instant::now() + self.deadline;
        let direct = self.fetch_direct(server, deadline);
        let direct_err = match direct {
            Ok(rows) => return Ok(rows),
            Err(e) => e,
        };
        let Some(notary_key) = notary_key.filter(|_| !self.notaries.is_empty()) else {
            return Err(direct_err);
        };
        let mut errors = vec![format!("direct: {direct_err}")];
        for notary in &self.notaries {
            if notary == server {
                continue;
            }
            if remaining(deadline).is_err() {
                errors.push(format!("{notary}: not asked, the deadline passed"));
                break;
            }
            let asked = self.fetch_via_notary(
                server,
                key_id,
                minimum_valid_until_ts,
                notary,
                notary_key,
                deadline,
            );
            match asked {
                Ok(rows) if !rows.is_empty() => return Ok(rows),
                Ok(_) => errors.push(format!("{notary}: no keys")),
                Err(e) => errors.push(format!("{notary}: {e}")),
            }
        }
        Err(FetchError(errors.join("; ")))
    }

    fn fetch_direct(
        &self,
        server: &ServerName,
        deadline: Instant,
    ) -> Result<Vec<RemoteKeyRow>, FetchError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let target = self
            .net
            .discovery
            .resolve(&self.net.client, server, deadline)?;
        let body = self
            .net
            .client
            .get_json(&target, "/_matrix/key/v2/server", deadline)?;
        let now = crate::time::now_ms();
        parse_key_response(&body, server, now, server.as_str())
    }

    /// `POST /_matrix/key/v2/query` to a notary, asking for the key valid until at least when
    /// we need it (the spec's `minimum_valid_until_ts`: now for requests, the event's
    /// `origin_server_ts` for events).
    fn fetch_via_notary(
        &self,
        server: &ServerName,
        key_id: &KeyId,
        minimum: i64,
        notary: &ServerName,
        notary_key: NotaryKey<'_>,
        deadline: Instant,
    ) -> Result<Vec<RemoteKeyRow>, FetchError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let target = self
            .net
            .discovery
            .resolve(&self.net.client, notary, deadline)?;
        let mut wanted = Object::new();
        wanted.insert("minimum_valid_until_ts".into(), Value::int(minimum));
        let mut keys = Object::new();
        keys.insert(key_id.to_string(), Value::Object(wanted));
        let mut criteria = Object::new();
        criteria.insert(server.to_string(), Value::Object(keys));
        let mut query = Object::new();
        query.insert("server_keys".into(), Value::Object(criteria));
        let body = self.net.client.post_json(
            &target,
            "/_matrix/key/v2/query",
            &Value::Object(query),
            deadline,
        )?;
        let entries = body
            .get("server_keys")
            .and_then(Value::as_array)
            .ok_or_else(|| FetchError("notary answer has no server_keys array".to_owned()))?;
        let now = crate::time::now_ms();
        let mut rows = Vec::new();
        for entry in entries {
            if entry.get("server_name").and_then(Value::as_str) != Some(server.as_str()) {
                continue;
            }
            let obj = entry
                .as_object()
                .ok_or_else(|| FetchError("notary entry is not an object".to_owned()))?;
            // The notary must vouch for the entry with one of its own (directly fetched) keys.
            let notary_ids = signature_key_ids(obj, notary.as_str())
                .map_err(|e| FetchError(format!("notary signature: {e}")))?;
            let mut vouched = false;
            for key_id in &notary_ids {
                let key = notary_key(notary, key_id, now)
                    .map_err(|e| FetchError(format!("notary key: {e}")))?;
                verify_json(obj, notary.as_str(), key_id, &key)
                    .map_err(|e| FetchError(format!("notary signature: {e}")))?;
                vouched = true;
            }
            if !vouched {
                return Err(FetchError(format!("no signature from notary {notary}")));
            }
            rows.extend(parse_key_response(entry, server, now, notary.as_str())?);
        }
        Ok(rows)
    }
}

/// Checks a `/_matrix/key/v2/server` object (direct, or one entry of a notary's answer) with
/// the pure crate's rules and turns it into rows to store.
pub fn parse_key_response(
    body: &Value,
    server: &ServerName,
    now_ms: i64,
    fetched_from: &str,
) -> Result<Vec<RemoteKeyRow>, FetchError> {
    let keys = parse_server_keys(body, server)
        .map_err(|e| FetchError(format!("bad key response from {fetched_from}: {e}")))?;
    let row = |key_id: &KeyId, key: &VerifyKey, valid_until_ts, expired_ts| RemoteKeyRow {
        server_name: server.to_string(),
        key_id: key_id.to_string(),
        public_key: key.to_base64(),
        valid_until_ts,
        expired_ts,
        fetched_ts: now_ms,
        fetched_from: fetched_from.to_owned(),
    };
    let current = keys
        .verify_keys
        .iter()
        .map(|(id, key)| row(id, key, Some(keys.valid_until_ts), None));
    let old = keys
        .old_verify_keys
        .iter()
        .map(|(id, key, expired)| row(id, key, None, Some(*expired)));
    Ok(current.chain(old).collect())
}
