//! Memory for handling JSON request bodies, shared by every worker.
//!
//! A body must be parsed, and for its signature re-encoded, before we know who sent it, and
//! the parsed form costs several times the text (up to the parser's own budget,
//! `ALLOC_PER_INPUT_BYTE` bytes a byte). Each worker bounding its own request is not enough:
//! sixteen workers each holding a 1 MiB body's tree is hundreds of MiB on a device with one
//! GiB. So a request reserves what its body may cost before it is parsed, and gives it back
//! when answered; when the pool is spent, the request gets 503 with `Retry-After` (a limit of
//! ours, which senders retry) and costs nothing more. Real invites are a few KB and reserve
//! well under a MiB; only large bodies ever wait.

use std::sync::Mutex;

use invited_matrix::ErrCode;
use invited_matrix::json::{ALLOC_FLOOR, ALLOC_PER_INPUT_BYTE};

use crate::error::MatrixError;

/// What handling a body of `len` bytes may take: its parsed form at the parser's worst, plus
/// as much again for the canonical copies made to check signatures.
pub fn reservation(len: usize) -> usize {
    len.saturating_mul(ALLOC_PER_INPUT_BYTE + 8)
        .saturating_add(ALLOC_FLOOR)
}

/// The pool.
#[derive(Debug)]
pub struct JsonMemory {
    limit: usize,
    /// Bytes reserved: by all requests, and by large ones.
    used: Mutex<Used>,
}

#[derive(Debug, Default)]
struct Used {
    all: usize,
    large: usize,
}

/// Memory reserved for one request, given back when dropped.
#[derive(Debug)]
pub struct Reserved<'a> {
    pool: &'a JsonMemory,
    bytes: usize,
    large: bool,
}

impl JsonMemory {
    pub fn new(limit: usize) -> JsonMemory {
        JsonMemory {
            limit,
            used: Mutex::new(Used::default()),
        }
    }

    /// A request is large when it would take over a sixteenth of the pool; large ones share
    /// three quarters of it, so a flood of large bodies never keeps out the small ones real
    /// senders send.
    fn is_large(&self, bytes: usize) -> bool {
        bytes > self.limit / 16
    }

    /// Reserves what a body of `len` bytes may cost, or answers 503 when the pool cannot
    /// hold it now. A body that could never fit is refused as too large.
    pub fn reserve(&self, len: usize) -> Result<Reserved<'_>, MatrixError> {
        let bytes = reservation(len);
        if bytes > self.limit {
            return Err(MatrixError::new(
                ErrCode::TooLarge,
                format!(
                    "A body of {len} bytes needs more memory to handle than \
                     [http] max_json_memory_mb allows"
                ),
            ));
        }
        let large = self.is_large(bytes);
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if used.all + bytes > self.limit || (large && used.large + bytes > self.limit / 4 * 3) {
            return Err(MatrixError::unavailable(
                "Too many large requests at once; try again shortly",
                1,
            ));
        }
        used.all += bytes;
        if large {
            used.large += bytes;
        }
        Ok(Reserved {
            pool: self,
            bytes,
            large,
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .all
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut used = self
            .pool
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        used.all = used.all.saturating_sub(self.bytes);
        if self.large {
            used.large = used.large.saturating_sub(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_shared_and_given_back() {
        let pool = JsonMemory::new(64 << 20);
        // A 1 MiB body reserves ~24 MiB: large; large ones share 48 MiB.
        let a = pool.reserve(1 << 20).unwrap();
        let b = pool.reserve(900_000).unwrap();
        let refused = pool.reserve(1 << 20).unwrap_err();
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.retry_after_secs, Some(1));
        // Small ones (real invites: a few KB) still get in.
        let small: Vec<Reserved> = (0..15).map(|_| pool.reserve(20_000).unwrap()).collect();
        drop(a);
        let c = pool.reserve(1 << 20).unwrap();
        drop((b, c, small));
        assert_eq!(pool.used(), 0);
        assert_eq!(
            pool.reserve(10 << 20).unwrap_err().status(),
            413,
            "never fits"
        );
        assert!(reservation(20_000) < 1024 * 1024);
    }
}
