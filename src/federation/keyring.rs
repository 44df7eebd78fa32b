//! Other servers' keys: a memory cache over the `remote_keys` table, filled by fetching from
//! the server itself or, failing that, from the configured notaries.
//!
//! The rules that keep this from becoming a traffic amplifier or a trap for our workers:
//! - a cached key that is valid for the purpose is never refetched;
//! - an unknown key ID triggers at most one fetch per server per [`MIN_REFETCH`];
//! - a failed fetch is remembered, with backoff, so a flood naming a dead server causes a
//!   handful of outbound attempts, not a flood;
//! - concurrent misses for one server share one fetch;
//! - at most `workers - 1` workers wait on fetches at once (a quarter of them per requesting
//!   address, three quarters for servers we know no key of), so requests whose keys
//!   are cached keep being served while a slow server times out.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use invited_matrix::{KeyId, ServerName, VerifyKey};

use crate::config::FederationConfig;
use crate::federation::fetch_slots::FetchSlots;
use crate::federation::key_fetch::{KeyFetcher, NotaryKey};
use crate::federation::outbound::Outbound;
use crate::store::{RemoteKeyRow, StorePool};

pub use crate::federation::key_validity::{KeyPurpose, MAX_KEY_VALIDITY_MS, RemoteKey};

/// A server is asked for its keys at most once per this interval because of an unknown key ID.
pub const MIN_REFETCH: Duration = Duration::from_secs(60);
/// First and largest wait after a failed fetch.
const BACKOFF_START: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
/// Servers whose state we keep in memory at most. With at most 16 keys a server (the key
/// response cap), this bounds the cache to a few MB. Past it, the servers used longest ago
/// are forgotten (not the ones failing right now, whose backoff must hold).
const MEMORY_MAX_SERVERS: usize = 4096;

/// Whose keys an event-signature check may fetch. Room state carries PDUs signed by any
/// server a sender cares to name; fetching each would let one invite make us connect to
/// thousands of addresses.
#[derive(Debug, Clone, Copy)]
pub enum FetchScope<'a> {
    /// Any server's, with notaries (the invite event itself: its sender is the origin).
    Any,
    /// Only these servers' keys are fetched, directly (no notary); others' only if cached.
    Only(&'a [&'a str]),
}

/// How event keys are looked up for one check: whose may be fetched, for which client (its
/// share of fetch capacity), and where to note that capacity was busy.
#[derive(Clone, Copy)]
pub struct EventKeyLookup<'a> {
    pub scope: FetchScope<'a>,
    /// The address of the client whose request this is.
    pub requester: Option<IpAddr>,
    /// Set when a key was not looked up because fetch capacity was busy.
    pub busy: &'a std::cell::Cell<bool>,
}

/// How a lookup that misses the cache fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// One fetch per server at a time, counted against the waiting workers, notaries after
    /// the server itself.
    Full,
    /// As `Full`, without notaries.
    Direct,
    /// A notary's own key, looked up inside another server's fetch (which already holds its
    /// lock and is counted): no lock, not counted, no notary.
    InsideFetch,
}

/// Why no usable key could be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The server's keys were fetched, but this key ID is not among them.
    Unknown { server: String, key_id: String },
    /// The key is known but not valid for this purpose (expired, retired, or not valid at the
    /// event's time), and a fresh fetch did not change that.
    NotValid { server: String, key_id: String },
    /// Fetching failed (now or recently; we back off).
    FetchFailed { server: String, why: String },
    /// Too many requests are already waiting for key fetches.
    Busy,
    /// Not in the cache, and not a server whose keys this check may fetch.
    NotFetched { server: String, key_id: String },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Unknown { server, key_id } => write!(f, "{server} has no key {key_id}"),
            KeyError::NotValid { server, key_id } => {
                write!(f, "key {key_id} of {server} is not valid for this use")
            }
            KeyError::FetchFailed { server, why } => {
                write!(f, "could not fetch the keys of {server}: {why}")
            }
            KeyError::Busy => f.write_str("too many key fetches in progress; try again later"),
            KeyError::NotFetched { server, key_id } => write!(
                f,
                "key {key_id} of {server} is not known here, and is not fetched for room state"
            ),
        }
    }
}

#[derive(Debug, Default)]
struct ServerState {
    /// Whether `keys` has been filled from the database.
    loaded: bool,
    keys: HashMap<String, RemoteKey>,
    /// When we last fetched successfully (this process).
    last_fetch: Option<Instant>,
    /// Backing off after a failure until this instant.
    failed_until: Option<Instant>,
    backoff: Duration,
    last_error: String,
    /// Serialises fetches for this server.
    fetch_lock: Arc<Mutex<()>>,
    /// Fetched keys not yet written to the database: only a server that authenticated
    /// something (see [`Keyring::confirm`]) gets rows, so throw-away names cost no disk.
    unsaved: Vec<RemoteKeyRow>,
    /// When this entry was last looked at (least recently used go first).
    last_used: Option<Instant>,
}

/// The remote key store and fetcher.
pub struct Keyring {
    our_name: ServerName,
    fetcher: KeyFetcher,
    store: Arc<StorePool>,
    servers: Mutex<HashMap<String, ServerState>>,
    /// Who may wait on fetches (shares per requester and for unknown servers).
    slots: FetchSlots,
    /// Where fetches are counted (`invited_key_fetches_total`).
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("our_name", &self.our_name)
            .finish_non_exhaustive()
    }
}

/// Decrements a counter when dropped.
impl Keyring {
    /// `workers` is the size of the worker pool: at most `workers - 1` may wait on fetches.
    pub fn new(
        our_name: ServerName,
        config: &FederationConfig,
        store: Arc<StorePool>,
        workers: usize,
        net: Arc<Outbound>,
    ) -> Keyring {
        Keyring {
            fetcher: KeyFetcher::new(our_name.clone(), config, net),
            our_name,
            store,
            servers: Mutex::new(HashMap::new()),
            slots: FetchSlots::new(workers.saturating_sub(1).max(1)),
            metrics: None,
        }
    }

    /// Counts fetches in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Keyring {
        self.metrics = Some(metrics);
        self
    }

    /// Outbound fetch attempts so far.
    pub fn fetch_attempts(&self) -> usize {
        self.fetcher.attempts()
    }

    /// A key of `server` usable for `purpose`, from cache or fetched.
    pub fn get(
        &self,
        server: &ServerName,
        key_id: &KeyId,
        purpose: KeyPurpose,
    ) -> Result<VerifyKey, KeyError> {
        self.get_inner(server, key_id, purpose, Lookup::Full, None)
    }

    /// [`Keyring::get`] for authenticating a request from `requester`: a fetch it causes
    /// counts against that address's share of the fetch slots.
    pub fn get_for_request(
        &self,
        server: &ServerName,
        key_id: &KeyId,
        now_ms: i64,
        requester: IpAddr,
    ) -> Result<VerifyKey, KeyError> {
        let purpose = KeyPurpose::Request { now_ms };
        self.get_inner(server, key_id, purpose, Lookup::Full, Some(requester))
    }

    /// Key lookup for event signatures (what `verify_event_signatures` asks for), under a
    /// room version's validity rule; a key we cannot get is `None` (logged at debug).
    /// `lookup` says whose keys may be fetched, for which client, and notes when a key was
    /// missing only because fetch capacity was busy (then the answer is "try again", 503, not
    /// a verdict on the event).
    pub fn event_keys<'a>(
        &'a self,
        origin_server_ts: i64,
        enforce_validity: bool,
        lookup: EventKeyLookup<'a>,
    ) -> impl Fn(&str, &KeyId) -> Option<VerifyKey> + 'a {
        let EventKeyLookup {
            scope,
            requester,
            busy,
        } = lookup;
        move |server: &str, key_id: &KeyId| {
            let server = ServerName::parse(server).ok()?;
            let purpose = KeyPurpose::Event {
                origin_server_ts,
                enforce_validity,
            };
            let found = match scope {
                FetchScope::Any => {
                    self.get_inner(&server, key_id, purpose, Lookup::Full, requester)
                }
                FetchScope::Only(allowed) if allowed.iter().any(|a| *a == server.as_str()) => {
                    self.get_inner(&server, key_id, purpose, Lookup::Direct, requester)
                }
                FetchScope::Only(_) => {
                    self.cached(server.as_str(), key_id, purpose)
                        .ok_or_else(|| KeyError::NotFetched {
                            server: server.to_string(),
                            key_id: key_id.to_string(),
                        })
                }
            };
            match found {
                Ok(k) => Some(k),
                Err(e) => {
                    if matches!(e, KeyError::Busy) {
                        busy.set(true);
                    }
                    log::debug!("event key {key_id} of {server}: {e}");
                    None
                }
            }
        }
    }

    /// The steps of a lookup: the cache; then, one fetch per server at a time, a look at
    /// what the fetch we waited for found; then our own fetch.
    fn get_inner(
        &self,
        server: &ServerName,
        key_id: &KeyId,
        purpose: KeyPurpose,
        how: Lookup,
        requester: Option<IpAddr>,
    ) -> Result<VerifyKey, KeyError> {
        let name = server.as_str();
        if let Some(key) = self.cached(name, key_id, purpose) {
            return Ok(key);
        }
        let fetch_lock = self.fetch_lock_unless_backing_off(name)?;
        // A notary's key is looked up inside another server's fetch, which holds that
        // server's lock and is already counted: taking the notary's lock too could deadlock
        // (two fetches, each asking the other's server as notary). Such a lookup fetches
        // without the lock: at most one per fetch in progress.
        let (_waiting, _fetching) = match how {
            Lookup::Full | Lookup::Direct => {
                let known = lock(&self.servers)
                    .get(name)
                    .is_some_and(|s| !s.keys.is_empty());
                let waiting = self.slots.take(!known, requester).ok_or(KeyError::Busy)?;
                (Some(waiting), Some(lock(&fetch_lock)))
            }
            Lookup::InsideFetch => (None, None),
        };
        if let Some(found) = self.found_by_the_fetch_we_waited_for(name, key_id, purpose) {
            return found;
        }
        self.fetch_and_remember(server, key_id, purpose, how == Lookup::Full)?;
        match self.cached(name, key_id, purpose) {
            Some(key) => Ok(key),
            None => Err(miss_reason(lock(&self.servers).get(name), name, key_id)),
        }
    }

    /// The server's fetch lock, or the remembered failure while we back off after one.
    fn fetch_lock_unless_backing_off(&self, name: &str) -> Result<Arc<Mutex<()>>, KeyError> {
        let mut servers = lock(&self.servers);
        let state = self.state_mut(&mut servers, name);
        if let Some(until) = state.failed_until
            && until > Instant::now()
        {
            return Err(KeyError::FetchFailed {
                server: name.to_owned(),
                why: format!("{} (not retrying yet)", state.last_error),
            });
        }
        Ok(state.fetch_lock.clone())
    }

    /// After waiting for the server's fetch lock: another request may have fetched
    /// meanwhile. `None` when we should fetch ourselves; otherwise the answer, which may be
    /// "unknown" (a server that answered moments ago is not asked again).
    fn found_by_the_fetch_we_waited_for(
        &self,
        name: &str,
        key_id: &KeyId,
        purpose: KeyPurpose,
    ) -> Option<Result<VerifyKey, KeyError>> {
        if let Some(key) = self.cached(name, key_id, purpose) {
            return Some(Ok(key));
        }
        let servers = lock(&self.servers);
        let state = servers.get(name)?;
        if let Some(until) = state.failed_until
            && until > Instant::now()
        {
            return Some(Err(KeyError::FetchFailed {
                server: name.to_owned(),
                why: state.last_error.clone(),
            }));
        }
        if state.last_fetch.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
            return Some(Err(miss_reason(Some(state), name, key_id)));
        }
        None
    }

    /// Fetches and records the outcome: keys saved and cached, or the failure remembered
    /// with a growing backoff.
    fn fetch_and_remember(
        &self,
        server: &ServerName,
        key_id: &KeyId,
        purpose: KeyPurpose,
        allow_notary: bool,
    ) -> Result<(), KeyError> {
        let name = server.as_str();
        let notary_key = |notary: &ServerName, key_id: &KeyId, now_ms: i64| {
            let purpose = KeyPurpose::Request { now_ms };
            self.get_inner(notary, key_id, purpose, Lookup::InsideFetch, None)
                .map_err(|e| e.to_string())
        };
        let started = Instant::now();
        let fetched = self.fetcher.fetch(
            server,
            key_id,
            purpose.minimum_valid_until_ts(),
            allow_notary.then_some(&notary_key as NotaryKey<'_>),
        );
        if let Some(m) = &self.metrics {
            m.key_fetch(fetched.is_ok());
            m.key_fetch_time(started.elapsed().as_secs_f64());
        }
        match fetched {
            Ok(rows) => {
                let mut servers = lock(&self.servers);
                let state = self.state_mut(&mut servers, name);
                for row in &rows {
                    if let Some(k) = remote_key_from_row(row) {
                        state.keys.insert(row.key_id.clone(), k);
                    }
                }
                state.unsaved = rows;
                state.last_fetch = Some(Instant::now());
                state.failed_until = None;
                state.backoff = Duration::ZERO;
                Ok(())
            }
            Err(e) => {
                log::info!("key fetch for {name} failed: {e}");
                let mut servers = lock(&self.servers);
                let state = self.state_mut(&mut servers, name);
                state.backoff = if state.backoff.is_zero() {
                    BACKOFF_START
                } else {
                    (state.backoff * 2).min(BACKOFF_MAX)
                };
                state.failed_until = Some(Instant::now() + state.backoff);
                state.last_error = e.0.clone();
                Err(KeyError::FetchFailed {
                    server: name.to_owned(),
                    why: e.0,
                })
            }
        }
    }

    /// A cached key usable for `purpose`. The first look at a server loads its keys from the
    /// database, outside the map's lock: one slow read must not stall every other lookup.
    fn cached(&self, name: &str, key_id: &KeyId, purpose: KeyPurpose) -> Option<VerifyKey> {
        let loaded = lock(&self.servers).get(name).is_some_and(|s| s.loaded);
        if !loaded {
            let rows = self.store.with(|s| s.remote_keys(name));
            let mut servers = lock(&self.servers);
            let state = self.state_mut(&mut servers, name);
            match rows {
                // A fetch may have filled the cache meanwhile: keep what it found.
                Ok(rows) if !state.loaded => {
                    for row in &rows {
                        if let Some(k) = remote_key_from_row(row) {
                            state.keys.entry(row.key_id.clone()).or_insert(k);
                        }
                    }
                    state.loaded = true;
                }
                Ok(_) => {}
                Err(e) => log::error!("cannot read keys of {name}: {e}"),
            }
        }
        let servers = lock(&self.servers);
        let key = servers.get(name)?.keys.get(key_id.as_str())?;
        key.usable_for(purpose).then_some(key.key)
    }

    fn state_mut<'a>(
        &self,
        servers: &'a mut HashMap<String, ServerState>,
        name: &str,
    ) -> &'a mut ServerState {
        if servers.len() >= MEMORY_MAX_SERVERS && !servers.contains_key(name) {
            forget_least_recently_used(servers);
        }
        let state = servers.entry(name.to_owned()).or_default();
        state.last_used = Some(Instant::now());
        state
    }

    /// Records that `server`'s keys verified something (a request, an event): its fetched
    /// keys are written to the database now. Before, they live in memory only.
    pub fn confirm(&self, server: &ServerName) {
        let rows = {
            let mut servers = lock(&self.servers);
            match servers.get_mut(server.as_str()) {
                Some(state) => std::mem::take(&mut state.unsaved),
                None => return,
            }
        };
        if rows.is_empty() {
            return;
        }
        if let Err(e) = self.store.with(|s| s.save_remote_keys(&rows)) {
            log::error!("cannot save keys of {server}: {e}");
        }
    }
}

/// Forgets the tenth of the servers used longest ago, except those with a fetch in progress.
fn forget_least_recently_used(servers: &mut HashMap<String, ServerState>) {
    let mut by_age: Vec<(Option<Instant>, String)> = servers
        .iter()
        .filter(|(_, s)| Arc::strong_count(&s.fetch_lock) == 1)
        .map(|(name, s)| (s.last_used, name.clone()))
        .collect();
    by_age.sort();
    for (_, name) in by_age.into_iter().take(MEMORY_MAX_SERVERS / 10 + 1) {
        servers.remove(&name);
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (a cache and fetch
/// slots): a poisoned lock must not mark a server busy forever.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a key is missing after fetching: unknown, or known but not valid for the purpose.
fn miss_reason(state: Option<&ServerState>, name: &str, key_id: &KeyId) -> KeyError {
    if state.is_some_and(|s| s.keys.contains_key(key_id.as_str())) {
        KeyError::NotValid {
            server: name.to_owned(),
            key_id: key_id.to_string(),
        }
    } else {
        KeyError::Unknown {
            server: name.to_owned(),
            key_id: key_id.to_string(),
        }
    }
}

fn remote_key_from_row(row: &RemoteKeyRow) -> Option<RemoteKey> {
    Some(RemoteKey {
        key: VerifyKey::from_base64(&row.public_key)?,
        valid_until_ts: row.valid_until_ts,
        expired_ts: row.expired_ts,
        fetched_ts: row.fetched_ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyring named us.example, default federation settings, 4 workers.
    fn test_keyring(store: Arc<crate::store::StorePool>) -> Keyring {
        Keyring::new(
            ServerName::parse("us.example").unwrap(),
            &crate::config::Config::embedded_default().federation,
            store,
            4,
            Arc::new(
                Outbound::new(
                    &crate::config::Config::embedded_default().federation,
                    &crate::config::Config::embedded_default().push,
                    ServerName::parse("us.example").unwrap(),
                    invited_matrix::SigningKey::from_seed(
                        invited_matrix::KeyId::parse("ed25519:t").unwrap(),
                        &[1; 32],
                    ),
                )
                .unwrap(),
            ),
        )
    }

    /// Another process holds the database (here: an exclusive lock, so every read waits for
    /// its busy timeout). A lookup that must read the database waits; a lookup of a server
    /// already in memory must not wait behind it.
    #[test]
    fn a_slow_database_read_does_not_stall_other_lookups() {
        use crate::store::{Store, StorePool};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let now = crate::time::now_ms();
        let mut store = Store::open(&path).unwrap();
        store
            .save_remote_keys(&[RemoteKeyRow {
                server_name: "b.example".into(),
                key_id: "ed25519:k".into(),
                public_key: "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI".into(),
                valid_until_ts: Some(now + 3_600_000),
                expired_ts: None,
                fetched_ts: now,
                fetched_from: "b.example".into(),
            }])
            .unwrap();
        store.close().unwrap();
        let pool = Arc::new(StorePool::new(&path));
        let keyring = test_keyring(pool.clone());
        let key_id = KeyId::parse("ed25519:k").unwrap();
        let purpose = KeyPurpose::Request { now_ms: now };
        assert!(keyring.cached("b.example", &key_id, purpose).is_some());
        // An exclusive lock needs every other connection closed.
        pool.close().unwrap();

        let hog = rusqlite::Connection::open(&path).unwrap();
        hog.execute_batch(
            "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;
             UPDATE policy_version SET version = version + 1;",
        )
        .unwrap();
        std::thread::scope(|scope| {
            let slow = scope.spawn(|| keyring.cached("a.example", &key_id, purpose));
            std::thread::sleep(Duration::from_millis(300));
            let started = Instant::now();
            let other = keyring.cached("b.example", &key_id, purpose);
            let waited = started.elapsed();
            drop(hog);
            assert!(other.is_some());
            assert!(
                waited < Duration::from_secs(1),
                "a cached lookup waited {waited:?} behind another server's database read"
            );
            assert!(slow.join().unwrap().is_none());
        });
    }

    /// Another fetch holds a notary's fetch lock (say, the notary's own keys are being fetched
    /// while it is asked about us). Looking up that notary's key from inside a fetch must not
    /// wait for it: two fetches asking each other's server would wait forever.
    #[test]
    fn a_notary_key_lookup_never_waits_for_another_fetch_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        crate::store::Store::open(&path).unwrap().close().unwrap();
        let keyring = test_keyring(Arc::new(crate::store::StorePool::new(&path)));
        // A loopback notary: the default IP block list refuses it at once, without traffic.
        let notary = ServerName::parse("127.0.0.1:9").unwrap();
        let key_id = KeyId::parse("ed25519:n").unwrap();
        let held = keyring
            .fetch_lock_unless_backing_off(notary.as_str())
            .unwrap();
        let other_fetch = lock(&held);
        let (done, finished) = std::sync::mpsc::channel();
        let answered = std::thread::scope(|scope| {
            scope.spawn(|| {
                let now_ms = crate::time::now_ms();
                let purpose = KeyPurpose::Request { now_ms };
                let found = keyring.get_inner(&notary, &key_id, purpose, Lookup::InsideFetch, None);
                let _ = done.send(found.is_err());
            });
            let answered = finished.recv_timeout(Duration::from_secs(5));
            // Let a lookup that did wait finish, so the test fails instead of hanging.
            drop(other_fetch);
            answered
        });
        assert_eq!(
            answered,
            Ok(true),
            "the notary key lookup waited for another fetch's lock"
        );
    }

    /// Past the memory bound, the servers used longest ago are forgotten: not everything (as
    /// before), so a server that failed a moment ago keeps its backoff.
    #[test]
    fn the_memory_bound_forgets_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        crate::store::Store::open(&path).unwrap().close().unwrap();
        let keyring = test_keyring(Arc::new(crate::store::StorePool::new(&path)));
        let mut servers = lock(&keyring.servers);
        keyring.state_mut(&mut servers, "old.example");
        for i in 0..MEMORY_MAX_SERVERS - 2 {
            keyring.state_mut(&mut servers, &format!("s{i}.example"));
        }
        let failing = keyring.state_mut(&mut servers, "failing.example");
        failing.failed_until = Some(Instant::now() + Duration::from_secs(60));
        assert_eq!(servers.len(), MEMORY_MAX_SERVERS);
        keyring.state_mut(&mut servers, "new.example");
        assert!(servers.len() < MEMORY_MAX_SERVERS);
        assert!(
            !servers.contains_key("old.example"),
            "the oldest is forgotten"
        );
        assert!(
            servers["failing.example"].failed_until.is_some(),
            "backoff kept"
        );
        assert!(servers.contains_key("new.example"));
    }
}
