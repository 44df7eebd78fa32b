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

    /// The schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .context(|| "cannot read the schema version".to_owned())
    }

    /// All our keys, current first, then retired ones newest first.
    pub fn our_keys(&self) -> Result<Vec<OurKey>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key_id, public_key, created_ts, expired_ts FROM our_keys
                 ORDER BY expired_ts IS NOT NULL, expired_ts DESC, created_ts DESC",
            )
            .context(|| "cannot read our keys".to_owned())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(OurKey {
                    key_id: r.get(0)?,
                    public_key: r.get(1)?,
                    created_ts: r.get(2)?,
                    expired_ts: r.get(3)?,
                })
            })
            .context(|| "cannot read our keys".to_owned())?;
        rows.collect::<Result<Vec<_>, _>>()
            .context(|| "cannot read our keys".to_owned())
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
