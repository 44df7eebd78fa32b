//! Who may wait on key fetches. A worker that waits on another server is a worker not
//! answering anyone else, so at most `workers - 1` wait at once, and shares keep one client
//! (or a flood of made-up server names) from taking every slot: a client address (IPv6: its
//! /64) gets at most a quarter of them, and servers we know no key of at most three quarters,
//! so known servers whose key rotated are still fetched for.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The slots and who holds them.
#[derive(Debug)]
pub struct FetchSlots {
    waiting: Mutex<Waiting>,
    max: usize,
}

/// Who is waiting now: in all, for servers with no known key, per requester.
#[derive(Debug, Default)]
struct Waiting {
    total: usize,
    unknown: usize,
    by_requester: HashMap<IpAddr, usize>,
}

/// One counted waiter, released on drop.
pub struct Slot<'a> {
    waiting: &'a Mutex<Waiting>,
    unknown: bool,
    requester: Option<IpAddr>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut w = lock(self.waiting);
        w.total = w.total.saturating_sub(1);
        if self.unknown {
            w.unknown = w.unknown.saturating_sub(1);
        }
        if let Some(ip) = self.requester
            && let Some(n) = w.by_requester.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                w.by_requester.remove(&ip);
            }
        }
    }
}

/// The requester's address as shares count it: IPv6 by its /64 (one host has a /64).
fn requester_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl FetchSlots {
    /// `max` slots in all.
    pub fn new(max: usize) -> FetchSlots {
        FetchSlots {
            waiting: Mutex::new(Waiting::default()),
            max,
        }
    }

    /// Counts one more worker waiting on a fetch, or says we are too busy.
    /// A slot for a worker about to wait on a fetch, or `None` when its share is taken.
    /// `unknown`: a server we know no key of; `requester`: the client address, if any.
    pub fn take(&self, unknown: bool, requester: Option<IpAddr>) -> Option<Slot<'_>> {
        let requester = requester.map(requester_key);
        let mut w = lock(&self.waiting);
        let per_requester = (self.max / 4).max(1);
        let for_unknown = (self.max * 3 / 4).max(1);
        let full = w.total >= self.max
            || (unknown && w.unknown >= for_unknown)
            || requester
                .is_some_and(|ip| w.by_requester.get(&ip).copied().unwrap_or(0) >= per_requester);
        if full {
            return None;
        }
        w.total += 1;
        if unknown {
            w.unknown += 1;
        }
        if let Some(ip) = requester {
            *w.by_requester.entry(ip).or_insert(0) += 1;
        }
        Some(Slot {
            waiting: &self.waiting,
            unknown,
            requester,
        })
    }
}

/// The counters stay consistent whatever a holder did: a poisoned lock is still usable.
fn lock(mutex: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fetch slots are shared: one address gets at most a quarter, servers we know no key of
    /// at most three quarters, and everything at most `workers - 1`.
    #[test]
    fn fetch_slots_are_shared() {
        let slots = FetchSlots::new(8);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b_neighbour: IpAddr = "2001:db8::2".parse().unwrap();
        // 8 slots: 2 per address, 6 for unknown servers.
        let a1 = slots.take(true, Some(a)).unwrap();
        let _a2 = slots.take(true, Some(a)).unwrap();
        assert!(
            slots.take(true, Some(a)).is_none(),
            "a third for one address"
        );
        let _b1 = slots.take(true, Some(b)).unwrap();
        let _b2 = slots.take(true, Some(b_neighbour)).unwrap();
        assert!(
            slots.take(true, Some(b)).is_none(),
            "the same /64 is one address"
        );
        let others: Vec<_> = (0..2).map(|_| slots.take(true, None).unwrap()).collect();
        assert!(slots.take(true, None).is_none(), "six for unknown servers");
        let _known = slots.take(false, None).unwrap();
        let _known2 = slots.take(false, None).unwrap();
        assert!(slots.take(false, None).is_none(), "eight in all");
        drop(a1);
        drop(others);
        assert!(slots.take(true, Some(a)).is_some(), "released on drop");
    }
}
