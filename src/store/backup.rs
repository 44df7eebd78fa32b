//! `invited backup FILE`: a consistent copy of the database while the server runs, through
//! SQLite's online backup API (<https://www.sqlite.org/backup.html>): pages are copied in
//! steps, and a step that sees a write restarts the copy, so the result is one committed
//! state. The copy is written beside its destination, checked (`PRAGMA integrity_check`),
//! made a self-contained file (rollback journal, not WAL), synced, and only then renamed into
//! place: a crash never leaves a half-written backup under the destination's name.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::backup::Backup;

use super::{Context, Store, StoreError};

/// Pages copied per step, and the pause between steps (the writer gets the lock in between).
const PAGES_PER_STEP: i32 = 256;
const PAUSE: Duration = Duration::from_millis(5);

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub bytes: u64,
    pub invites: i64,
}

fn failed(what: String) -> impl FnOnce() -> String {
    move || what
}

impl Store {
    /// Writes a consistent, checked copy of the database to `dest` (replaced atomically).
    pub fn backup_to(&self, dest: &Path) -> Result<BackupReport, StoreError> {
        let shown = dest.display().to_string();
        let tmp = temp_beside(dest);
        let result = self.backup_via(&tmp, dest);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|mut e| {
            e.context = format!("backup to {shown}: {}", e.context);
            e
        })
    }

    fn backup_via(&self, tmp: &Path, dest: &Path) -> Result<BackupReport, StoreError> {
        // Readable by us alone, like the database itself.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| StoreError {
                context: format!("cannot create {}: {e}", tmp.display()),
                source: None,
            })?;
        let mut copy = Connection::open(tmp).context(failed("cannot open the copy".into()))?;
        {
            let backup =
                Backup::new(&self.conn, &mut copy).context(failed("cannot start".into()))?;
            backup
                .run_to_completion(PAGES_PER_STEP, PAUSE, None)
                .context(failed("copying pages failed".into()))?;
        }
        // One self-contained file: no -wal beside it to forget when it is moved.
        let mode: String = copy
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .context(failed("cannot leave WAL mode in the copy".into()))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(StoreError {
                context: format!("the copy stayed in journal mode {mode}"),
                source: None,
            });
        }
        let check: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .context(failed("cannot check the copy".into()))?;
        if check != "ok" {
            return Err(StoreError {
                context: format!("the copy failed its integrity check: {check}"),
                source: None,
            });
        }
        let invites: i64 = copy
            .query_row("SELECT count(*) FROM invites", [], |r| r.get(0))
            .context(failed("cannot count the copy's invites".into()))?;
        copy.close()
            .map_err(|(_, e)| e)
            .context(failed("cannot close the copy".into()))?;
        let io = |what: &str, e: std::io::Error| StoreError {
            context: format!("{what}: {e}"),
            source: None,
        };
        fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("cannot sync the copy", e))?;
        fs::rename(tmp, dest).map_err(|e| io("cannot move the copy into place", e))?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("cannot sync the backup's directory", e))?;
        }
        let bytes = fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        Ok(BackupReport { bytes, invites })
    }
}

/// `dest`'s temporary sibling: same directory (so the rename is atomic), a name no backup has.
fn temp_beside(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".to_owned());
    dest.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_is_a_checked_self_contained_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let dest = dir.path().join("copy.db");
        std::fs::write(&dest, b"an older backup").unwrap();
        let report = store.backup_to(&dest).unwrap();
        assert_eq!(report.invites, 0);
        assert!(report.bytes > 0);
        let copy = Store::open(&dest).unwrap();
        assert_eq!(
            copy.schema_version().unwrap(),
            store.schema_version().unwrap()
        );
        copy.integrity_check().unwrap();
        let mode = std::fs::metadata(&dest).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // Nothing left beside it.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        // A destination in a directory that does not exist: an error naming it.
        let err = store
            .backup_to(&dir.path().join("no/such/dir/x.db"))
            .unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }
}
