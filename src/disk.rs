//! Free space on the data directory's disk: below the configured watermark, new invites get
//! 503 (which senders retry) instead of filling the disk, so an invite flood ends as a
//! backlog at the senders, not as a full disk on a small device.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a measurement is trusted: statvfs is cheap, but not free per request.
const REFRESH: Duration = Duration::from_secs(1);

/// Free-space checks against a watermark, measured at most once per [`REFRESH`].
pub struct DiskSpace {
    dir: PathBuf,
    min_free_bytes: u64,
    last: Mutex<Option<(Instant, bool)>>,
}

impl DiskSpace {
    /// `min_free_bytes` 0: never refuse.
    pub fn new(dir: PathBuf, min_free_bytes: u64) -> DiskSpace {
        DiskSpace {
            dir,
            min_free_bytes,
            last: Mutex::new(None),
        }
    }

    /// Bytes available to us on the directory's file system.
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.dir)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Whether there is room for new invites. A failed measurement counts as room (logged):
    /// refusing every invite because statvfs failed would be worse.
    pub fn has_room(&self) -> bool {
        if self.min_free_bytes == 0 {
            return true;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, room)) = *last
            && at.elapsed() < REFRESH
        {
            return room;
        }
        let room = match self.free_bytes() {
            Ok(free) => {
                if free < self.min_free_bytes {
                    log::warn!(
                        "{} bytes free on the disk of {}, under invites.min_free_disk_mb: \
                         new invites get 503 until there is room",
                        free,
                        self.dir.display()
                    );
                }
                free >= self.min_free_bytes
            }
            Err(e) => {
                log::warn!("cannot measure free space of {}: {e}", self.dir.display());
                true
            }
        };
        *last = Some((Instant::now(), room));
        room
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark() {
        let dir = tempfile::tempdir().unwrap();
        let free = DiskSpace::new(dir.path().into(), 0).free_bytes().unwrap();
        assert!(free > 0);
        assert!(DiskSpace::new(dir.path().into(), 0).has_room());
        assert!(DiskSpace::new(dir.path().into(), 1).has_room());
        assert!(!DiskSpace::new(dir.path().into(), u64::MAX).has_room());
        // A directory that does not exist: measured as room, never a refusal of everything.
        assert!(DiskSpace::new(dir.path().join("gone"), u64::MAX).has_room());
    }
}
