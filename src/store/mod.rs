//! The SQLite store: every SQL statement of the project lives in this module (one file per
//! table group, one `Store` type), and the schema in `schema.sql`.
//!
//! Durability: an answered write must survive power loss, so the database runs in WAL mode
//! with `synchronous=FULL`. Write transactions start with `BEGIN IMMEDIATE`: a deferred
//! transaction that later upgrades to a write can fail with `SQLITE_BUSY` in a way
//! `busy_timeout` cannot fix.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

mod backup;
mod db_file;
mod invites;
mod keys;
mod lifecycle;
mod notifications;
mod policy;
mod refusals;
mod retention;

pub use backup::*;
pub use invites::*;
pub use keys::*;
pub use lifecycle::*;
pub use notifications::*;
pub use policy::*;
pub use refusals::*;
pub use retention::*;

/// A closed set of names stored as TEXT (a `CHECK (x IN (…))` column in schema.sql): one
/// Rust enum per set, so code branches on variants and a misspelt name cannot be written.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            /// The name as stored and shown.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// The value with this name, if any.
            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // `pad`, not `write_str`: tables format these with widths.
                f.pad(self.as_str())
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(
                        format!("unknown {} {text:?}", stringify!($name)).into(),
                    )
                })
            }
        }
    };
}
pub(crate) use text_enum;

/// The schema, embedded at build time.
pub const SCHEMA_SQL: &str = include_str!("../../schema.sql");

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

pub(crate) trait Context<T> {
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

/// The WAL after a passive checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalState {
    /// Bytes of WAL in use (its frames, headers included), since it last started over.
    pub in_use: u64,
    /// Frames of it copied into the database file so far (by any checkpoint).
    pub copied_frames: u64,
}

/// A connection to the database. One per thread; SQLite serialises writers itself.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// PDUs this connection stored or found lately (`invites::RecentPdus`).
    recent_pdus: invites::RecentPdus,
    /// The process's own descriptor of the database file, for syncing it (`db_file` says
    /// why it is shared). Declared after `conn`: dropped after the connection closes.
    file: db_file::DatabaseFile,
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
        let mut store = Store::connect_unchecked(path, OpenFlags::SQLITE_OPEN_CREATE)?;
        store.migrate()?;
        Ok(store)
    }

    /// Connects to a database that [`Store::open`] already migrated (another connection
    /// of this process, e.g. the pool's): no migration, so no `BEGIN IMMEDIATE` that would
    /// contend with the writer; only a check that the schema is the one we know.
    pub fn connect(path: &Path) -> Result<Store, StoreError> {
        let store = Store::connect_unchecked(path, OpenFlags::empty())?;
        let (current, latest) = (store.schema_version()?, migrations()?.len() as u32);
        if current != latest {
            return Err(StoreError {
                context: format!(
                    "database {} has schema version {current}, this invited expects {latest}",
                    path.display()
                ),
                source: None,
            });
        }
        Ok(store)
    }

    fn connect_unchecked(path: &Path, extra: OpenFlags) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        // Held before the connection opens, so that no close of ours can come after it.
        let file = db_file::DatabaseFile::hold(path, extra.contains(OpenFlags::SQLITE_OPEN_CREATE))
            .map_err(|e| StoreError {
                context: format!("cannot open database {shown}: {e}"),
                source: None,
            })?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | extra,
        )
        .context(|| format!("cannot open database {shown}"))?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
            recent_pdus: invites::RecentPdus::default(),
            file,
        };
        store.configure()?;
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
        // A migration may rebuild a table (SQLite cannot change a CHECK in place); dropping
        // the old one must not cascade to the rows that refer to it. SQLite's procedure: no
        // foreign-key enforcement during the change, a check of every reference after it.
        self.conn
            .execute_batch("PRAGMA foreign_keys=OFF")
            .context(|| "cannot prepare the schema migration".to_owned())?;
        self.migrate_in_transaction()?;
        let dangling: i64 = self
            .conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .context(|| "cannot check references after the migration".to_owned())?;
        if dangling > 0 {
            return Err(StoreError {
                context: format!("{dangling} row(s) refer to rows that do not exist"),
                source: None,
            });
        }
        self.conn
            .execute_batch("PRAGMA foreign_keys=ON")
            .context(|| "cannot re-enable foreign keys after the migration".to_owned())
    }

    fn migrate_in_transaction(&mut self) -> Result<(), StoreError> {
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

    /// Closes the connection, reporting any error (dropping would swallow it).
    pub fn close(self) -> Result<(), StoreError> {
        let shown = self.path.display().to_string();
        self.conn
            .close()
            .map_err(|(_, e)| e)
            .context(|| format!("cannot close database {shown}"))
    }

    /// Stops this connection from checkpointing the WAL after its commits (the writer: a
    /// checkpoint there would stall every waiting invite; a separate thread does it).
    pub fn disable_auto_checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .context(|| "cannot configure checkpoints".to_owned())
    }

    /// Copies committed WAL frames into the database file without blocking writers
    /// (`PRAGMA wal_checkpoint(PASSIVE)`).
    pub fn checkpoint_passive(&self) -> Result<WalState, StoreError> {
        let (frames, copied): (i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .context(|| "cannot checkpoint the WAL".to_owned())?;
        let page: i64 = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .context(|| "cannot read the page size".to_owned())?;
        // A frame is a page and a 24-byte header.
        Ok(WalState {
            in_use: u64::try_from(frames.max(0) * (page + 24)).unwrap_or(0),
            copied_frames: u64::try_from(copied).unwrap_or(0),
        })
    }

    /// Writes the pages checkpoints copied into the database file to disk (`fdatasync`):
    /// the checkpointer does after each pass, so that the writer's restart does not have to
    /// (`writer::checkpoint_pass` says why). Through the process's one descriptor of the
    /// file, never one opened for the purpose (`db_file` says why).
    pub fn flush_database_file(&self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(|e| StoreError {
            context: format!("cannot sync database file {}: {e}", self.path.display()),
            source: None,
        })
    }

    /// Checkpoints the whole WAL and waits up to `wait` for readers to leave it, so that the
    /// next write starts the WAL file over from its beginning (`wal_checkpoint(RESTART)`)
    /// instead of growing it. Writers wait meanwhile, so the caller does this only when the
    /// WAL has grown large. Returns whether the restart happened (false: a reader or writer
    /// stayed busy; try later).
    pub fn checkpoint_restart(&self, wait: Duration) -> Result<bool, StoreError> {
        let fail = || "cannot checkpoint the WAL".to_owned();
        self.conn.busy_timeout(wait).context(fail)?;
        let busy = self
            .conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
        self.conn.busy_timeout(BUSY_TIMEOUT).context(fail)?;
        Ok(busy.context(fail)? == 0)
    }

    /// Runs `PRAGMA integrity_check`; `Ok(())` when the database reports "ok".
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        self.check("integrity_check")
    }

    /// `PRAGMA quick_check`: the integrity check without the index cross-checks (linear in
    /// the file's size), for `check-config` on a live server.
    pub fn quick_check(&self) -> Result<(), StoreError> {
        self.check("quick_check")
    }

    fn check(&self, pragma: &str) -> Result<(), StoreError> {
        let result: String = self
            .conn
            .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
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
            None => Store::connect(&self.path)?,
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
pub(crate) mod tests {
    pub(crate) use super::invites::tests::sample as sample_invite;
    use super::*;

    pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
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

    /// The POSIX locks this process holds on `path`'s file, from `/proc/locks`.
    fn our_locks_on(path: &Path) -> usize {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(path).unwrap().ino();
        let pid = std::process::id().to_string();
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .filter(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // "1: POSIX  ADVISORY  READ 1234 fd:01:5678 128 128"
                f.get(1) == Some(&"POSIX")
                    && f.get(4) == Some(&pid.as_str())
                    && f.get(5).and_then(|d| d.rsplit(':').next()) == Some(&inode.to_string())
            })
            .count()
    }

    /// The checkpointer syncs the database file after each pass. Closing any descriptor of a
    /// file drops every POSIX lock the process holds on it, SQLite's included; without its
    /// shared lock another process closing its own connection takes the database for unused,
    /// checkpoints it and deletes the WAL this process still writes to
    /// (<https://www.sqlite.org/howtocorrupt.html#_posix_advisory_locks_canceled_by_a_separate_thread_doing_close_>).
    #[test]
    fn syncing_the_database_file_keeps_sqlites_locks() {
        let (dir, mut store) = temp_store();
        let db = dir.path().join("t.db");
        store.disable_auto_checkpoint().unwrap();
        assert!(
            store
                .insert_invites(&[sample_invite("$a")])
                .iter()
                .all(Result::is_ok)
        );
        let held = our_locks_on(&db);
        assert!(
            held > 0,
            "SQLite holds a lock on the database file in WAL mode"
        );
        store.checkpoint_passive().unwrap();
        store.flush_database_file().unwrap();
        // The same file by another spelling of its path.
        let other = Store::connect(&dir.path().join(".").join("t.db")).unwrap();
        other.flush_database_file().unwrap();
        other.close().unwrap();
        assert_eq!(
            our_locks_on(&db),
            held,
            "a sync or a close dropped SQLite's locks"
        );
        drop(store);
        // Gone with the last connection: nothing holds the file open any more.
        assert_eq!(our_locks_on(&db), 0);
    }

    #[test]
    fn connect_needs_a_migrated_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        assert!(Store::connect(&path).is_err(), "connect never creates");
        drop(Store::open(&path).unwrap());
        Store::connect(&path).unwrap().integrity_check().unwrap();
        let raw = Connection::open(&path).unwrap();
        raw.pragma_update(None, "user_version", 1).unwrap();
        let err = Store::connect(&path).unwrap_err();
        assert!(err.to_string().contains("schema version 1"), "{err}");
    }

    /// A database file at schema version `version` (its migrations applied by hand, foreign
    /// keys on), for testing the migrations after it; open it with `Store::open` to run them.
    fn database_at(version: usize) -> (tempfile::TempDir, PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch("PRAGMA foreign_keys=ON").unwrap();
        for (_, sql) in migrations().unwrap().into_iter().take(version) {
            raw.execute_batch(&sql).unwrap();
        }
        raw.pragma_update(None, "user_version", version as u32)
            .unwrap();
        (dir, path, raw)
    }

    /// Migration 6 rebuilds `invites` (new states in its CHECK). Rows that refer to invites
    /// (room state, warnings) must survive it: dropping the old table must not cascade.
    #[test]
    fn rebuilding_invites_keeps_what_refers_to_them() {
        let (_dir, path, raw) = database_at(5);
        raw.execute_batch(
            "INSERT INTO invites (event_id, room_id, room_version, invitee, sender, origin,
                                  origin_server_ts, received_ts, state, api_version,
                                  event_fingerprint, signed_event)
             VALUES ('$e', '!r:x', '11', '@b:us', '@a:x', 'x', 1, 2, 'ignored', 2, 'f', '{}');
             INSERT INTO invite_room_state VALUES ('$e', 0, 'm.room.name', '', '@a:x', '{}', NULL);
             INSERT INTO invite_warnings VALUES ('$e', 'w');",
        )
        .unwrap();
        drop(raw);
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            migrations().unwrap().len() as u32
        );
        let count = |table: &str| -> i64 {
            store
                .conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(
            (
                count("invites"),
                count("invite_room_state"),
                count("invite_warnings")
            ),
            (1, 1, 1)
        );
        let state: String = store
            .conn
            .query_row("SELECT state FROM invites", [], |r| r.get(0))
            .unwrap();
        assert_eq!(state, "ignored");
        // Foreign keys are enforced again afterwards.
        let orphan = store
            .conn
            .execute("INSERT INTO invite_warnings VALUES ('$nothing', 'w')", []);
        assert!(orphan.is_err(), "foreign keys are back on");
        store.integrity_check().unwrap();
    }

    /// Migration 8 keeps an entry that came as a PDU only as the PDU, where its stripped copy
    /// is exactly the PDU's; the `invite_room_state` view reads the same rows as before.
    #[test]
    fn room_state_is_stored_once_after_migrating() {
        let (_dir, path, raw) = database_at(7);
        let pdu = r#"{"content":{"name":"G\u0001é"},"sender":"@a:x","state_key":"","type":"m.room.name"}"#;
        raw.execute(
            "INSERT INTO invites (event_id, room_id, room_version, invitee, sender, origin,
                                  origin_server_ts, received_ts, state, api_version,
                                  event_fingerprint, signed_event)
             VALUES ('$e', '!r:x', '11', '@b:us', '@a:x', 'x', 1, 2, 'pending', 2, 'f', '{}')",
            [],
        )
        .unwrap();
        raw.execute("INSERT INTO pdus VALUES ('h1', ?1), ('h2', ?1)", [pdu])
            .unwrap();
        raw.execute_batch(
            r#"INSERT INTO invite_room_state VALUES
                 ('$e', 0, 'm.room.name', '', '@a:x', '{"name":"G\u0001é"}', 'h1'),
                 ('$e', 1, 'm.room.name', '', '@a:x', '{"name":"other"}', 'h2'),
                 ('$e', 2, 'm.room.topic', '', '@a:x', '{"topic":"t"}', NULL);"#,
        )
        .unwrap();
        let read = |conn: &Connection| -> Vec<(String, String, String, String, Option<String>)> {
            conn.prepare(
                "SELECT type, state_key, sender, content, pdu_sha256 FROM invite_room_state
                 WHERE event_id = '$e' ORDER BY position",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let invite_state = |conn: &Connection| -> String {
            conn.query_row("SELECT invite_state FROM pending_invites", [], |r| r.get(0))
                .unwrap()
        };
        let (before, before_view) = (read(&raw), invite_state(&raw));
        drop(raw);
        let store = Store::open(&path).unwrap();
        assert_eq!(read(&store.conn), before);
        assert_eq!(invite_state(&store.conn), before_view);
        // Only the entry whose stripped copy is the PDU's lost it.
        let column: String = store
            .conn
            .query_row("SELECT room_state FROM invites", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            column,
            r#"[1,{"type":"m.room.name","state_key":"","sender":"@a:x","content":{"name":"other"},"pdu":2},{"type":"m.room.topic","state_key":"","sender":"@a:x","content":{"topic":"t"}}]"#
        );
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
}
