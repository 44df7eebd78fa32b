//! The database file, held open once per process for syncing it outside SQLite.
//!
//! Closing a descriptor of a file drops every POSIX lock the process holds on that file,
//! including the ones SQLite holds through its own descriptors. In WAL mode each connection
//! keeps a shared lock on the database file; without it, another process (the homeserver's
//! own connection, an operator's `sqlite3`) that closes its connection believes it was the
//! last user, checkpoints, and deletes the WAL that this process goes on writing to: commits
//! after that are lost at the next restart
//! (<https://www.sqlite.org/howtocorrupt.html#_posix_advisory_locks_canceled_by_a_separate_thread_doing_close_>).
//! SQLite itself never closes a descriptor while another connection of the process has the
//! file open. This does the same: every [`super::Store`] holds the one shared descriptor from
//! before its connection opens until after it closes, and the descriptor is closed (under the
//! registry's lock, so no new holder can slip in) only when the last holder lets go.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// A database file open in this process: by (device, inode), so that two spellings of one
/// path are one entry, with the number of stores holding it.
struct Entry {
    key: (u64, u64),
    file: Arc<File>,
    /// Descriptors opened for this file by a path that was renamed over meanwhile: kept, as
    /// closing them would drop the locks; closed with the entry.
    strays: Vec<File>,
    holders: usize,
}

static OPEN: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn registry() -> MutexGuard<'static, Vec<Entry>> {
    OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One store's hold on the process's descriptor of its database file.
pub(super) struct DatabaseFile {
    key: (u64, u64),
    file: Option<Arc<File>>,
}

impl DatabaseFile {
    /// Holds the file at `path`, creating it (empty, as SQLite would) when `create` is set.
    /// Opens a descriptor only if no store of this process holds the file already: opening a
    /// second one would mean closing it again.
    pub(super) fn hold(path: &Path, create: bool) -> io::Result<DatabaseFile> {
        let mut open = registry();
        let opened = match std::fs::metadata(path) {
            Ok(meta) => {
                let key = (meta.dev(), meta.ino());
                if let Some(entry) = open.iter_mut().find(|e| e.key == key) {
                    entry.holders += 1;
                    return Ok(DatabaseFile {
                        key,
                        file: Some(entry.file.clone()),
                    });
                }
                File::open(path)?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?,
            Err(e) => return Err(e),
        };
        let meta = opened.metadata()?;
        let key = (meta.dev(), meta.ino());
        if let Some(entry) = open.iter_mut().find(|e| e.key == key) {
            // The path now names a file that is held already (it was renamed over the one
            // looked at above): share that descriptor, and keep this one open too.
            entry.holders += 1;
            entry.strays.push(opened);
            return Ok(DatabaseFile {
                key,
                file: Some(entry.file.clone()),
            });
        }
        let file = Arc::new(opened);
        open.push(Entry {
            key,
            file: file.clone(),
            strays: Vec::new(),
            holders: 1,
        });
        Ok(DatabaseFile {
            key,
            file: Some(file),
        })
    }

    /// `fdatasync(2)` of the database file.
    pub(super) fn sync_data(&self) -> io::Result<()> {
        match &self.file {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }
}

impl Drop for DatabaseFile {
    fn drop(&mut self) {
        let mut open = registry();
        if let Some(i) = open.iter().position(|e| e.key == self.key) {
            open[i].holders -= 1;
            if open[i].holders == 0 {
                // The last holder: close while no one can take the file up again.
                self.file.take();
                drop(open.swap_remove(i));
            }
        }
    }
}
