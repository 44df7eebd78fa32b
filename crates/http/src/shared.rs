//! The state every thread of one server sees: the stop flag and the wake-ups of the two polling
//! threads.
//!
//! Its own module because the accept loop (`server`), the I/O thread (`io_loop`) and the workers
//! (`worker`) all use it, and `server` starts the other two: kept in `server`, it would make
//! `io_loop` and `worker` import the module that imports them.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::Waker;

/// State every thread of one server sees.
pub(crate) struct Shared {
    stop: AtomicBool,
    accept_waker: Waker,
    io_waker: Waker,
}

impl Shared {
    pub(crate) fn new(accept_waker: Waker, io_waker: Waker) -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            accept_waker,
            io_waker,
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.accept_waker.wake();
        self.io_waker.wake();
    }

    pub(crate) fn wake_io(&self) {
        self.io_waker.wake();
    }
}
