//! The SQLite store: every SQL statement of the project lives in this file, and the schema in
//! `schema.sql`.
//!
//! Durability: an answered write must survive power loss, so the database runs in WAL mode
//! with `synchronous=FULL`. Write transactions start with `BEGIN IMMEDIATE`: a deferred
//! transaction that later upgrades to a write can fail with `SQLITE_BUSY` in a way
//! `busy_timeout` cannot fix.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// The schema, embedded at build time.
pub const SCHEMA_SQL: &str = include_str!("../schema.sql");

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A database problem, with what we were doing when it happened.
#[derive(Debug)]
pub struct StoreError {
    pub context: String,
    pub source: Option<rusqlite::Error>,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{}: {e}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for StoreError {}

trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|e| StoreError {
            context: what(),
            source: Some(e),
        })
    }
}

/// One of our signing keys as the database records it (public half only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurKey {
    pub key_id: String,
    pub public_key: String,
    pub created_ts: i64,
    /// `None` while current.
    pub expired_ts: Option<i64>,
}

/// Another server's key as the database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteKeyRow {
    pub server_name: String,
    pub key_id: String,
    pub public_key: String,
    pub valid_until_ts: Option<i64>,
    pub expired_ts: Option<i64>,
    pub fetched_ts: i64,
    pub fetched_from: String,
}

/// An invite as stored after we answered it (what a retry needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInvite {
    pub event_id: String,
    pub origin: String,
    pub event_fingerprint: String,
    pub api_version: i64,
    pub signed_event: String,
    pub response_body: String,
}

/// One `invite_room_state` entry to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomStateRow {
    pub event_type: String,
    pub state_key: String,
    pub sender: String,
    /// JSON text.
    pub content: String,
    /// Canonical JSON of the full PDU, when the entry was one.
    pub pdu: Option<String>,
}

/// A new invite to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvite {
    pub event_id: String,
    pub room_id: String,
    pub room_version: String,
    pub invitee: String,
    pub sender: String,
    pub origin: String,
    pub origin_server_ts: i64,
    pub received_ts: i64,
    pub api_version: i64,
    pub event_fingerprint: String,
    pub signed_event: String,
    /// `pending`, or `ignored` when policy said so.
    pub state: String,
    pub room_state: Vec<RoomStateRow>,
    pub warnings: Vec<String>,
}

/// An operator rule (table `policy_rules`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// `server` or `user`.
    pub kind: String,
    pub pattern: String,
    /// `deny`, `allow` or `ignore`.
    pub action: String,
    pub source: String,
}

/// A local user's invite settings (table `local_users`), JSON texts as clients set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSettings {
    pub invite_permission_config: Option<String>,
    pub msc4155_config: Option<String>,
    pub ignored_user_list: Option<String>,
}

/// One refused invite (table `refusals`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalRow {
    pub ts: i64,
    pub origin: String,
    pub sender: Option<String>,
    pub invitee: Option<String>,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    pub rule: String,
    pub errcode: String,
    pub status: i64,
}

/// An invite for listing (`invites list`/`show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteSummary {
    pub event_id: String,
    pub room_id: String,
    pub room_version: String,
    pub invitee: String,
    pub sender: String,
    pub origin: String,
    pub origin_server_ts: i64,
    pub received_ts: i64,
    pub state: String,
    pub room_name: Option<String>,
}

/// Everything stored about one invite (`invites show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteDetails {
    pub summary: InviteSummary,
    /// The co-signed event as answered (canonical JSON).
    pub signed_event: String,
    pub room_state: Vec<RoomStateRow>,
    pub warnings: Vec<String>,
}

/// A connection to the database. One per thread; SQLite serialises writers itself.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// The migrations in `schema.sql`: (number, SQL), in order. A section starts at a line
/// `-- migration N: title` and runs to the next such line.
fn migrations() -> Result<Vec<(u32, String)>, StoreError> {
    let mut out: Vec<(u32, String)> = Vec::new();
    for line in SCHEMA_SQL.lines() {
        let number = line
            .strip_prefix("-- migration ")
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(n, _)| n.trim().parse::<u32>().ok());
        match (number, out.last_mut()) {
            (Some(n), _) => out.push((n, String::new())),
            (None, Some((_, sql))) => {
                sql.push_str(line);
                sql.push('\n');
            }
            (None, None) => {} // the preamble
        }
    }
    for (i, (n, _)) in out.iter().enumerate() {
        if *n as usize != i + 1 {
            return Err(StoreError {
                context: format!("schema.sql: migration {n} is out of order"),
                source: None,
            });
        }
    }
    Ok(out)
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .context(|| format!("cannot open database {shown}"))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    fn configure(&self) -> Result<(), StoreError> {
        let shown = self.path.display().to_string();
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .context(|| format!("cannot configure database {shown}"))?;
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .context(|| format!("cannot switch {shown} to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError {
                context: format!("database {shown} refused WAL mode (got {mode})"),
                source: None,
            });
        }
        self.conn
            .execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .context(|| format!("cannot configure database {shown}"))?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let migrations = migrations()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start the schema migration".to_owned())?;
        let current: u32 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .context(|| "cannot read the schema version".to_owned())?;
        let latest = migrations.len() as u32;
        if current > latest {
            return Err(StoreError {
                context: format!(
                    "database schema version {current} is newer than this invited ({latest}); \
                     use a newer invited"
                ),
                source: None,
            });
        }
        for (n, sql) in migrations.into_iter().skip(current as usize) {
            tx.execute_batch(&sql)
                .context(|| format!("schema migration {n} failed"))?;
            log::info!("database schema migrated to version {n}");
        }
        tx.pragma_update(None, "user_version", latest)
            .context(|| "cannot record the schema version".to_owned())?;
        tx.commit()
            .context(|| "cannot commit the schema migration".to_owned())
    }

    /// Runs a query and maps every row: the one shape all list reads share.
    fn query_all<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        what: &str,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let fail = || format!("cannot read {what}");
        let mut stmt = self.conn.prepare_cached(sql).context(fail)?;
        let rows = stmt.query_map(params, map).context(fail)?;
        rows.collect::<Result<Vec<_>, _>>().context(fail)
    }

    /// The schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .context(|| "cannot read the schema version".to_owned())
    }

    /// All our keys, current first, then retired ones newest first.
    pub fn our_keys(&self) -> Result<Vec<OurKey>, StoreError> {
        self.query_all(
            "SELECT key_id, public_key, created_ts, expired_ts FROM our_keys
             ORDER BY expired_ts IS NOT NULL, expired_ts DESC, created_ts DESC",
            [],
            "our keys",
            |r| {
                Ok(OurKey {
                    key_id: r.get(0)?,
                    public_key: r.get(1)?,
                    created_ts: r.get(2)?,
                    expired_ts: r.get(3)?,
                })
            },
        )
    }

    /// Records `key_id` as our current key and retires whichever key was current before
    /// (its `expired_ts` becomes `now_ms`), in one transaction.
    pub fn make_key_current(
        &mut self,
        key_id: &str,
        public_key: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a transaction".to_owned())?;
        let existing: Option<(String, Option<i64>)> = tx
            .query_row(
                "SELECT public_key, expired_ts FROM our_keys WHERE key_id = ?1",
                params![key_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .context(|| format!("cannot look up key {key_id}"))?;
        match existing {
            Some((public, None)) if public == public_key => return Ok(()),
            Some((public, _)) if public != public_key => {
                return Err(StoreError {
                    context: format!(
                        "key ID {key_id} is already recorded with a different public key; \
                         a key ID must never be reused"
                    ),
                    source: None,
                });
            }
            Some((_, Some(_))) => {
                return Err(StoreError {
                    context: format!(
                        "key {key_id} was retired; a retired key must not become current again"
                    ),
                    source: None,
                });
            }
            _ => {}
        }
        tx.execute(
            "UPDATE our_keys SET expired_ts = max(?1, created_ts) WHERE expired_ts IS NULL",
            params![now_ms],
        )
        .context(|| "cannot retire the current key".to_owned())?;
        tx.execute(
            "INSERT INTO our_keys (key_id, public_key, created_ts, expired_ts)
             VALUES (?1, ?2, ?3, NULL)",
            params![key_id, public_key, now_ms],
        )
        .context(|| format!("cannot record key {key_id}"))?;
        tx.commit()
            .context(|| "cannot commit the key change".to_owned())
    }

    /// Closes the connection, reporting any error (dropping would swallow it).
    pub fn close(self) -> Result<(), StoreError> {
        let shown = self.path.display().to_string();
        self.conn
            .close()
            .map_err(|(_, e)| e)
            .context(|| format!("cannot close database {shown}"))
    }

    /// Every key we know for `server`.
    pub fn remote_keys(&self, server: &str) -> Result<Vec<RemoteKeyRow>, StoreError> {
        self.query_all(
            "SELECT server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts,
                    fetched_from
             FROM remote_keys WHERE server_name = ?1",
            params![server],
            "remote keys",
            |r| {
                Ok(RemoteKeyRow {
                    server_name: r.get(0)?,
                    key_id: r.get(1)?,
                    public_key: r.get(2)?,
                    valid_until_ts: r.get(3)?,
                    expired_ts: r.get(4)?,
                    fetched_ts: r.get(5)?,
                    fetched_from: r.get(6)?,
                })
            },
        )
    }

    /// Records keys from one fetched response, replacing what we had for those key IDs.
    pub fn save_remote_keys(&mut self, keys: &[RemoteKeyRow]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a transaction".to_owned())?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO remote_keys (server_name, key_id, public_key, valid_until_ts,
                         expired_ts, fetched_ts, fetched_from)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (server_name, key_id) DO UPDATE SET
                         public_key = excluded.public_key,
                         valid_until_ts = excluded.valid_until_ts,
                         expired_ts = excluded.expired_ts,
                         fetched_ts = excluded.fetched_ts,
                         fetched_from = excluded.fetched_from",
                )
                .context(|| "cannot save remote keys".to_owned())?;
            for k in keys {
                stmt.execute(params![
                    k.server_name,
                    k.key_id,
                    k.public_key,
                    k.valid_until_ts,
                    k.expired_ts,
                    k.fetched_ts,
                    k.fetched_from
                ])
                .context(|| format!("cannot save key {} of {}", k.key_id, k.server_name))?;
            }
        }
        tx.commit()
            .context(|| "cannot commit remote keys".to_owned())
    }

    /// The stored invite with this event ID, if any.
    pub fn find_invite(&self, event_id: &str) -> Result<Option<StoredInvite>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT event_id, origin, event_fingerprint, api_version, signed_event,
                        response_body
                 FROM invites WHERE event_id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![event_id], |r| {
                    Ok(StoredInvite {
                        event_id: r.get(0)?,
                        origin: r.get(1)?,
                        event_fingerprint: r.get(2)?,
                        api_version: r.get(3)?,
                        signed_event: r.get(4)?,
                        response_body: r.get(5)?,
                    })
                })
                .optional()
            })
            .context(|| format!("cannot look up invite {event_id}"))
    }

    /// Stores an invite with its room state and warnings, in one durable transaction. If an
    /// invite with the same event ID is already stored (a concurrent duplicate won the race),
    /// nothing is written and the stored one is returned instead.
    pub fn insert_invite(&mut self, invite: &NewInvite) -> Result<StoredInvite, StoreError> {
        self.insert_invites(std::slice::from_ref(invite))
            .pop()
            .unwrap_or_else(|| {
                Err(StoreError {
                    context: "no result for the stored invite".to_owned(),
                    source: None,
                })
            })
    }

    /// Group commit: stores several invites in ONE transaction (one fsync), each inside its
    /// own savepoint so one failure does not undo the others. Results are in input order.
    pub fn insert_invites(
        &mut self,
        invites: &[NewInvite],
    ) -> Vec<Result<StoredInvite, StoreError>> {
        let fail_all = |e: StoreError| {
            invites
                .iter()
                .map(|_| {
                    Err(StoreError {
                        context: e.context.clone(),
                        source: None,
                    })
                })
                .collect()
        };
        // Fast path: the whole batch in one transaction. Any error rolls it back and the batch
        // is redone invite by invite, each in its own savepoint, so one bad invite cannot
        // take the others down with it.
        let fast = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .context(|| "cannot start a transaction".to_owned())?;
            let mut inserted = Vec::with_capacity(invites.len());
            for invite in invites {
                inserted.push(insert_invite_rows(&tx, invite)?);
            }
            tx.commit().context(|| "cannot commit invites".to_owned())?;
            Ok::<_, StoreError>(inserted)
        })();
        let results: Vec<Result<bool, StoreError>> = match fast {
            Ok(inserted) => inserted.into_iter().map(Ok).collect(),
            Err(e) => {
                log::warn!(
                    "batch of {} invites failed ({e}); storing one by one",
                    invites.len()
                );
                let mut tx = match self
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .context(|| "cannot start a transaction".to_owned())
                {
                    Ok(tx) => tx,
                    Err(e) => return fail_all(e),
                };
                let mut results = Vec::with_capacity(invites.len());
                for invite in invites {
                    let outcome = tx
                        .savepoint()
                        .context(|| "cannot start a savepoint".to_owned())
                        .and_then(|sp| {
                            let inserted = insert_invite_rows(&sp, invite)?;
                            sp.commit()
                                .context(|| "cannot release a savepoint".to_owned())?;
                            Ok(inserted)
                        });
                    results.push(outcome);
                }
                if let Err(e) = tx.commit().context(|| "cannot commit invites".to_owned()) {
                    return fail_all(e);
                }
                results
            }
        };
        invites
            .iter()
            .zip(results)
            .map(|(invite, r)| {
                if r? {
                    // Just written: what we wrote is what is stored.
                    return Ok(StoredInvite {
                        event_id: invite.event_id.clone(),
                        origin: invite.origin.clone(),
                        event_fingerprint: invite.event_fingerprint.clone(),
                        api_version: invite.api_version,
                        response_body: response_body(invite.api_version, &invite.signed_event),
                        signed_event: invite.signed_event.clone(),
                    });
                }
                // Another request stored this event ID first: answer with that one.
                self.find_invite(&invite.event_id)?
                    .ok_or_else(|| StoreError {
                        context: format!("invite {} vanished after being stored", invite.event_id),
                        source: None,
                    })
            })
            .collect()
    }

    /// Records refusals in one transaction. Now and then (when a row ID is a multiple of 256)
    /// it also prunes rows older than `max_age_ms` and beyond the newest `max_rows`.
    pub fn record_refusals(
        &mut self,
        rows: &[RefusalRow],
        max_age_ms: i64,
        max_rows: i64,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a transaction".to_owned())?;
        let mut prune = false;
        for row in rows {
            let id: i64 = tx
                .prepare_cached(
                    "INSERT INTO refusals (ts, origin, sender, invitee, room_id, event_id, rule,
                         errcode, status)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            row.ts,
                            row.origin,
                            row.sender,
                            row.invitee,
                            row.room_id,
                            row.event_id,
                            row.rule,
                            row.errcode,
                            row.status
                        ],
                        |r| r.get(0),
                    )
                })
                .context(|| "cannot record a refusal".to_owned())?;
            prune |= id % 256 == 0;
        }
        tx.commit()
            .context(|| "cannot commit refusals".to_owned())?;
        if let (true, Some(last)) = (prune, rows.last()) {
            self.prune_refusals(last.ts - max_age_ms, max_rows)?;
        }
        Ok(())
    }

    /// The counter the policy triggers bump on every rule or setting change.
    pub fn policy_version(&self) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached("SELECT version FROM policy_version WHERE id = 1")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .context(|| "cannot read the policy version".to_owned())
    }

    pub fn policy_rules(&self) -> Result<Vec<PolicyRule>, StoreError> {
        self.query_all(
            "SELECT kind, pattern, action, source FROM policy_rules ORDER BY kind, action, pattern",
            [],
            "policy rules",
            |r| {
                Ok(PolicyRule {
                    kind: r.get(0)?,
                    pattern: r.get(1)?,
                    action: r.get(2)?,
                    source: r.get(3)?,
                })
            },
        )
    }

    /// Adds a rule (no-op if it exists).
    pub fn add_policy_rule(&mut self, rule: &PolicyRule, now_ms: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "INSERT INTO policy_rules (kind, pattern, action, source, created_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![rule.kind, rule.pattern, rule.action, rule.source, now_ms],
            )
            .context(|| format!("cannot add rule {}", rule.pattern))?;
        Ok(n == 1)
    }

    /// Removes every rule with this pattern (any kind and action); returns how many.
    pub fn remove_policy_rules(&mut self, pattern: &str) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM policy_rules WHERE pattern = ?1",
                params![pattern],
            )
            .context(|| format!("cannot remove rules for {pattern}"))
    }

    /// Replaces the rules that came from the config file.
    pub fn replace_config_rules(
        &mut self,
        rules: &[PolicyRule],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a transaction".to_owned())?;
        tx.execute("DELETE FROM policy_rules WHERE source = 'config'", [])
            .context(|| "cannot replace config rules".to_owned())?;
        for r in rules {
            tx.execute(
                "INSERT INTO policy_rules (kind, pattern, action, source, created_ts)
                 VALUES (?1, ?2, ?3, 'config', ?4) ON CONFLICT DO NOTHING",
                params![r.kind, r.pattern, r.action, now_ms],
            )
            .context(|| "cannot replace config rules".to_owned())?;
        }
        tx.commit()
            .context(|| "cannot replace config rules".to_owned())
    }

    /// Switches set in the database (absent ones fall back to the config file).
    pub fn policy_settings(&self) -> Result<Vec<(String, bool)>, StoreError> {
        self.query_all(
            "SELECT name, value FROM policy_settings",
            [],
            "policy settings",
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)? == "true")),
        )
    }

    /// Sets a switch, or with `None` removes it (back to the config file's value).
    pub fn set_policy_setting(
        &mut self,
        name: &str,
        value: Option<bool>,
    ) -> Result<(), StoreError> {
        match value {
            Some(v) => self.conn.execute(
                "INSERT INTO policy_settings (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, if v { "true" } else { "false" }],
            ),
            None => self
                .conn
                .execute("DELETE FROM policy_settings WHERE name = ?1", params![name]),
        }
        .map(|_| ())
        .context(|| format!("cannot set {name}"))
    }

    /// A local user's settings; `None` if the user is not in `local_users`.
    pub fn user_settings(&self, user_id: &str) -> Result<Option<UserSettings>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT invite_permission_config, msc4155_config, ignored_user_list
                 FROM local_users WHERE user_id = ?1",
            )
            .and_then(|mut s| {
                s.query_row(params![user_id], |r| {
                    Ok(UserSettings {
                        invite_permission_config: r.get(0)?,
                        msc4155_config: r.get(1)?,
                        ignored_user_list: r.get(2)?,
                    })
                })
                .optional()
            })
            .context(|| format!("cannot read settings of {user_id}"))
    }

    /// Adds a local user (keeping existing settings).
    pub fn add_local_user(&mut self, user_id: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO local_users (user_id) VALUES (?1) ON CONFLICT DO NOTHING",
                params![user_id],
            )
            .map(|_| ())
            .context(|| format!("cannot add {user_id}"))
    }

    /// Sets one of a user's invite settings (`invite_permission_config`, `msc4155_config`,
    /// `ignored_user_list`) to JSON text or NULL, adding the user if needed.
    pub fn set_user_setting(
        &mut self,
        user_id: &str,
        column: &str,
        json: Option<&str>,
    ) -> Result<(), StoreError> {
        let sql = match column {
            "invite_permission_config" => {
                "INSERT INTO local_users (user_id, invite_permission_config) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET invite_permission_config = excluded.invite_permission_config"
            }
            "msc4155_config" => {
                "INSERT INTO local_users (user_id, msc4155_config) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET msc4155_config = excluded.msc4155_config"
            }
            "ignored_user_list" => {
                "INSERT INTO local_users (user_id, ignored_user_list) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET ignored_user_list = excluded.ignored_user_list"
            }
            other => {
                return Err(StoreError {
                    context: format!("no user setting {other}"),
                    source: None,
                });
            }
        };
        self.conn
            .execute(sql, params![user_id, json])
            .map(|_| ())
            .context(|| format!("cannot set {column} of {user_id}"))
    }

    /// Deletes refusals older than `before_ts` and all but the newest `max_rows`.
    pub fn prune_refusals(&mut self, before_ts: i64, max_rows: i64) -> Result<usize, StoreError> {
        let old = self
            .conn
            .execute("DELETE FROM refusals WHERE ts < ?1", params![before_ts])
            .context(|| "cannot prune refusals".to_owned())?;
        let extra = self
            .conn
            .execute(
                "DELETE FROM refusals WHERE id <= (SELECT id FROM refusals ORDER BY id DESC
                 LIMIT 1 OFFSET ?1)",
                params![max_rows],
            )
            .context(|| "cannot prune refusals".to_owned())?;
        Ok(old + extra)
    }

    /// Refusals since `since_ts`, newest first.
    pub fn refusals_since(&self, since_ts: i64, limit: i64) -> Result<Vec<RefusalRow>, StoreError> {
        self.query_all(
            "SELECT ts, origin, sender, invitee, room_id, event_id, rule, errcode, status
             FROM refusals WHERE ts >= ?1 ORDER BY id DESC LIMIT ?2",
            params![since_ts, limit],
            "refusals",
            |r| {
                Ok(RefusalRow {
                    ts: r.get(0)?,
                    origin: r.get(1)?,
                    sender: r.get(2)?,
                    invitee: r.get(3)?,
                    room_id: r.get(4)?,
                    event_id: r.get(5)?,
                    rule: r.get(6)?,
                    errcode: r.get(7)?,
                    status: r.get(8)?,
                })
            },
        )
    }

    /// Invites, newest first, optionally for one invitee and/or in one state.
    pub fn list_invites(
        &self,
        invitee: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<InviteSummary>, StoreError> {
        self.invite_summaries(None, invitee, state)
    }

    fn invite_summaries(
        &self,
        event_id: Option<&str>,
        invitee: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<InviteSummary>, StoreError> {
        self.query_all(
            "SELECT i.event_id, i.room_id, i.room_version, i.invitee, i.sender, i.origin,
                    i.origin_server_ts, i.received_ts, i.state,
                    (SELECT json_extract(s.content, '$.name') FROM invite_room_state s
                      WHERE s.event_id = i.event_id AND s.type = 'm.room.name'
                        AND s.state_key = '' LIMIT 1)
             FROM invites i
             WHERE (?1 IS NULL OR i.event_id = ?1) AND (?2 IS NULL OR i.invitee = ?2)
               AND (?3 IS NULL OR i.state = ?3)
             ORDER BY i.received_ts DESC, i.event_id",
            params![event_id, invitee, state],
            "invites",
            |r| {
                Ok(InviteSummary {
                    event_id: r.get(0)?,
                    room_id: r.get(1)?,
                    room_version: r.get(2)?,
                    invitee: r.get(3)?,
                    sender: r.get(4)?,
                    origin: r.get(5)?,
                    origin_server_ts: r.get(6)?,
                    received_ts: r.get(7)?,
                    state: r.get(8)?,
                    room_name: r.get(9)?,
                })
            },
        )
    }

    /// One invite's signed event, room state (client form) and warnings.
    pub fn invite_details(&self, event_id: &str) -> Result<Option<InviteDetails>, StoreError> {
        let Some(summary) = self
            .invite_summaries(Some(event_id), None, None)?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let signed: String = self
            .conn
            .query_row(
                "SELECT signed_event FROM invites WHERE event_id = ?1",
                params![event_id],
                |r| r.get(0),
            )
            .context(|| format!("cannot read invite {event_id}"))?;
        let state = self.query_all(
            "SELECT s.type, s.state_key, s.sender, s.content, p.pdu
             FROM invite_room_state s LEFT JOIN pdus p ON p.sha256 = s.pdu_sha256
             WHERE s.event_id = ?1 ORDER BY s.position",
            params![event_id],
            "an invite's room state",
            |r| {
                Ok(RoomStateRow {
                    event_type: r.get(0)?,
                    state_key: r.get(1)?,
                    sender: r.get(2)?,
                    content: r.get(3)?,
                    pdu: r.get(4)?,
                })
            },
        )?;
        let warnings = self.query_all(
            "SELECT warning FROM invite_warnings WHERE event_id = ?1",
            params![event_id],
            "an invite's warnings",
            |r| r.get(0),
        )?;
        Ok(Some(InviteDetails {
            summary,
            signed_event: signed,
            room_state: state,
            warnings,
        }))
    }

    /// Marks pending (or ignored) invites as rejected; returns the event IDs changed.
    pub fn reject_invites(
        &mut self,
        event_id: Option<&str>,
        origin_glob: Option<&str>,
        sender: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let candidates: Vec<(String, String, String)> = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT event_id, origin, sender FROM invites
                     WHERE state IN ('pending', 'ignored')",
                )
                .context(|| "cannot read invites".to_owned())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .context(|| "cannot read invites".to_owned())?;
            rows.collect::<Result<Vec<_>, _>>()
                .context(|| "cannot read invites".to_owned())?
        };
        let chosen: Vec<String> = candidates
            .into_iter()
            .filter(|(id, origin, s)| {
                event_id.is_none_or(|e| e == id)
                    && origin_glob.is_none_or(|g| {
                        crate::policy::glob_match(
                            &g.to_ascii_lowercase(),
                            &crate::policy::host(origin),
                        )
                    })
                    && sender.is_none_or(|u| u == s)
            })
            .map(|(id, _, _)| id)
            .collect();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| "cannot start a transaction".to_owned())?;
        for id in &chosen {
            tx.execute(
                "UPDATE invites SET state = 'rejected', state_changed_ts = ?2 WHERE event_id = ?1",
                params![id, now_ms],
            )
            .context(|| format!("cannot reject {id}"))?;
        }
        tx.commit()
            .context(|| "cannot commit rejections".to_owned())?;
        Ok(chosen)
    }

    /// Stops this connection from checkpointing the WAL after its commits (the writer: a
    /// checkpoint there would stall every waiting invite; a separate thread does it).
    pub fn disable_auto_checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .context(|| "cannot configure checkpoints".to_owned())
    }

    /// Copies committed WAL frames into the database file without blocking writers
    /// (`PRAGMA wal_checkpoint(PASSIVE)`); returns the frames checkpointed.
    pub fn checkpoint_passive(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(2))
            .context(|| "cannot checkpoint the WAL".to_owned())
    }

    /// Runs `PRAGMA integrity_check`; `Ok(())` when the database reports "ok".
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let result: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .context(|| "cannot run the integrity check".to_owned())?;
        if result == "ok" {
            Ok(())
        } else {
            Err(StoreError {
                context: format!("integrity check failed: {result}"),
                source: None,
            })
        }
    }
}

/// The response body the `response_body` generated column computes (see schema.sql).
fn response_body(api_version: i64, signed_event: &str) -> String {
    if api_version == 1 {
        format!("[200,{{\"event\":{signed_event}}}]")
    } else {
        format!("{{\"event\":{signed_event}}}")
    }
}

/// Inserts one invite's rows (invite, room state, warnings) inside the caller's transaction;
/// nothing if the event ID is already stored. Returns whether it inserted.
fn insert_invite_rows(conn: &Connection, invite: &NewInvite) -> Result<bool, StoreError> {
    let id = invite.event_id.as_str();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO invites (event_id, room_id, room_version, invitee, sender, origin,
                 origin_server_ts, received_ts, api_version, event_fingerprint,
                 signed_event, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                invite.event_id,
                invite.room_id,
                invite.room_version,
                invite.invitee,
                invite.sender,
                invite.origin,
                invite.origin_server_ts,
                invite.received_ts,
                invite.api_version,
                invite.event_fingerprint,
                invite.signed_event,
                invite.state
            ])
        })
        .context(|| format!("cannot store invite {id}"))?;
    if inserted == 0 {
        return Ok(false);
    }
    let mut state = conn
        .prepare_cached(
            "INSERT INTO invite_room_state
                 (event_id, position, type, state_key, sender, content, pdu_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .context(|| format!("cannot store the room state of {id}"))?;
    let mut pdu = conn
        .prepare_cached("INSERT INTO pdus (sha256, pdu) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
        .context(|| format!("cannot store the room state of {id}"))?;
    for (i, row) in invite.room_state.iter().enumerate() {
        let sha = row.pdu.as_deref().map(|text| {
            invited_matrix::base64::encode(&<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()))
        });
        if let (Some(sha), Some(text)) = (&sha, &row.pdu) {
            pdu.execute(params![sha, text])
                .context(|| format!("cannot store the room state of {id}"))?;
        }
        state
            .execute(params![
                id,
                i as i64,
                row.event_type,
                row.state_key,
                row.sender,
                row.content,
                sha
            ])
            .context(|| format!("cannot store the room state of {id}"))?;
    }
    let mut warn = conn
        .prepare_cached("INSERT INTO invite_warnings (event_id, warning) VALUES (?1, ?2)")
        .context(|| format!("cannot store the warnings of {id}"))?;
    for w in &invite.warnings {
        warn.execute(params![id, w])
            .context(|| format!("cannot store the warnings of {id}"))?;
    }
    Ok(true)
}

/// A small pool of connections, so each worker thread can have its own without opening one
/// per request.
pub struct StorePool {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<Store>>,
}

impl fmt::Debug for StorePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorePool")
            .field("path", &self.path)
            .finish()
    }
}

impl StorePool {
    /// A pool over an already migrated database.
    pub fn new(path: &Path) -> StorePool {
        StorePool {
            path: path.to_path_buf(),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` with a connection, opening one if none is idle.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut store = match pooled {
            Some(s) => s,
            None => Store::open(&self.path)?,
        };
        let result = f(&mut store);
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(store);
        }
        result
    }

    /// Closes every idle connection.
    pub fn close(&self) -> Result<(), StoreError> {
        let stores: Vec<Store> = match self.idle.lock() {
            Ok(mut idle) => idle.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for s in stores {
            s.close()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn migrations_parse_and_apply() {
        let m = migrations().unwrap();
        assert!(!m.is_empty());
        assert!(m[0].1.contains("CREATE TABLE our_keys"));
        let (dir, store) = temp_store();
        assert_eq!(store.schema_version().unwrap(), m.len() as u32);
        drop(store);
        // Reopening applies nothing and keeps the version.
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        assert_eq!(store.schema_version().unwrap(), m.len() as u32);
        store.integrity_check().unwrap();
    }

    #[test]
    fn newer_schema_is_refused() {
        let (dir, store) = temp_store();
        store.conn.pragma_update(None, "user_version", 999).unwrap();
        drop(store);
        let err = Store::open(&dir.path().join("t.db")).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    /// What the writer returns for a fresh insert (built in Rust) must equal what a retry
    /// reads back (the generated `response_body` column), byte for byte.
    #[test]
    fn fresh_insert_answer_matches_the_stored_row() {
        let (_dir, mut store) = temp_store();
        for api in [1i64, 2] {
            let invite = NewInvite {
                event_id: format!("$e{api}"),
                room_id: "!r:a".into(),
                room_version: "1".into(),
                invitee: "@b:us".into(),
                sender: "@a:a".into(),
                origin: "a".into(),
                origin_server_ts: 1,
                received_ts: 2,
                api_version: api,
                event_fingerprint: "fp".into(),
                signed_event: r#"{"a":"\u00e9\"x"}"#.into(),
                state: "pending".into(),
                room_state: vec![RoomStateRow {
                    event_type: "m.room.create".into(),
                    state_key: String::new(),
                    sender: "@a:a".into(),
                    content: "{}".into(),
                    pdu: Some("{\"type\":\"m.room.create\"}".into()),
                }],
                warnings: vec!["w".into()],
            };
            let fresh = store.insert_invite(&invite).unwrap();
            let stored = store.find_invite(&invite.event_id).unwrap().unwrap();
            assert_eq!(fresh, stored);
            // A second insert of the same event ID changes nothing and returns the stored one.
            let again = store.insert_invite(&invite).unwrap();
            assert_eq!(again, stored);
        }
    }

    #[test]
    fn key_rotation_history() {
        let (_dir, mut store) = temp_store();
        store.make_key_current("ed25519:a", "AAA", 1000).unwrap();
        store.make_key_current("ed25519:a", "AAA", 1500).unwrap(); // idempotent
        store.make_key_current("ed25519:b", "BBB", 2000).unwrap();
        let keys = store.our_keys().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].key_id, "ed25519:b");
        assert_eq!(keys[0].expired_ts, None);
        assert_eq!(keys[1].key_id, "ed25519:a");
        assert_eq!(keys[1].expired_ts, Some(2000));
        assert!(store.make_key_current("ed25519:a", "AAA", 3000).is_err());
        assert!(store.make_key_current("ed25519:b", "CCC", 3000).is_err());
    }
}
