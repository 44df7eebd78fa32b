//! The only `unsafe` in the crate: `poll(2)`, a self-pipe to interrupt it, and `mallopt(3)`.
#![allow(unsafe_code)] // the one place: see the module comment

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

pub(crate) use libc::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, pollfd};

/// A `pollfd` asking for `events` on `fd`.
pub(crate) fn want(fd: RawFd, events: i16) -> pollfd {
    pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no timeout). An interrupted
/// call counts as a timeout: callers loop anyway.
pub(crate) fn poll(fds: &mut [pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        // Rounded up, so a deadline 0.3 ms away does not become a busy loop of 0 ms polls.
        Some(d) => i32::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
    };
    let nfds = libc::nfds_t::try_from(fds.len()).map_err(|_| io::Error::other("too many fds"))?;
    // SAFETY: `fds` is an exclusively borrowed, initialised slice of `pollfd` of length `nfds`
    // for the whole call, which is all poll(2) reads and writes.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Blocks until `fd` is writable; `TimedOut` once `deadline` has passed.
pub(crate) fn wait_writable(fd: RawFd, deadline: Instant) -> io::Result<()> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut fds = [want(fd, POLLOUT)];
        if poll(&mut fds, Some(deadline - now))? > 0 {
            return Ok(());
        }
    }
}

/// Re-listens with a longer accept queue: std's `TcpListener::bind` uses 128, and a burst of
/// connections beyond that (reconnecting federation peers after a restart) is dropped at the
/// SYN and retried by clients only a second later. Linux accepts `listen` again on a listening
/// socket; the kernel caps `backlog` at `net.core.somaxconn`.
pub(crate) fn set_backlog(listener: &std::net::TcpListener, backlog: usize) -> io::Result<()> {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    // SAFETY: listen(2) on a descriptor we borrow for the duration of the call.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Wakes a thread blocked in [`poll`] on the other end: that end is part of its poll set.
#[derive(Debug)]
pub(crate) struct Waker {
    tx: UnixStream,
}

/// The end of a [`Waker`] that a polling thread watches.
#[derive(Debug)]
pub(crate) struct WakeReceiver {
    rx: UnixStream,
}

pub(crate) fn waker() -> io::Result<(Waker, WakeReceiver)> {
    let (tx, rx) = UnixStream::pair()?;
    tx.set_nonblocking(true)?;
    rx.set_nonblocking(true)?;
    Ok((Waker { tx }, WakeReceiver { rx }))
}

impl Waker {
    pub(crate) fn wake(&self) {
        // A full pipe already holds a pending wake-up, so a failed write loses nothing.
        let _ = (&self.tx).write(&[1]);
    }
}

impl WakeReceiver {
    pub(crate) fn fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    /// Empties the pipe so the next poll blocks again.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.rx).read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
}

/// Makes glibc's allocator give memory back instead of keeping the high-water mark of every
/// thread: at most two arenas (each worker otherwise gets its own, and each keeps the peak of
/// the largest request it ever handled), and fixed mmap and trim thresholds (glibc otherwise
/// raises both after a large buffer is freed, so later large buffers stay in the heap for
/// good). Measured on the release binary under the abuse test's floods: peak RSS 355 MiB →
/// 133 MiB. Process-wide; a no-op where the C library is not glibc.
///
/// Buffers of 128 KiB and more get pages of their own, returned when freed. Free memory at
/// the top of an arena is returned past 4 MiB, not glibc's 128 KiB: a thread that frees a
/// burst of small allocations and makes them again (the database writer, a batch at a time)
/// otherwise gives the pages back and faults them in again each time. Measured in the load
/// benchmark: the writer's page faults 15,900 → 1,200 over 16,000 invites, its CPU per invite
/// down about 15 %, peak RSS unchanged (19.7–20.9 MiB); it can keep at most 4 MiB more per
/// arena.
pub fn bound_allocator_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
        const TRIM_THRESHOLD: libc::c_int = 4 * 1024 * 1024;
        // SAFETY: mallopt(3) only sets allocator parameters; it takes plain integers, has no
        // pointer arguments, and is safe to call at any time (glibc serialises it with the
        // arenas' locks). Its return value only says whether the setting was taken.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}
