//! Counted shares of the edge's bounded resources: connection slots (for the whole server and
//! per peer address) and the memory budget for buffered request bodies.
//!
//! A share is given back when it is dropped, wherever that happens (the I/O thread, a worker,
//! shutdown), so no path can leak one. Its own module because the accept loop (`server`), the
//! I/O thread (`io_loop`) and the connection (`conn`) all hold shares.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A resource of `max` units shared by every connection.
#[derive(Debug)]
pub(crate) struct Quota {
    used: AtomicUsize,
    max: usize,
}

/// `n` units of a [`Quota`], given back on drop.
#[derive(Debug)]
pub(crate) struct Share {
    quota: Arc<Quota>,
    n: usize,
}

impl Quota {
    pub(crate) fn new(max: usize) -> Arc<Quota> {
        Arc::new(Quota {
            used: AtomicUsize::new(0),
            max,
        })
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Units currently held.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `n` units, or `None` when fewer than `n` are left.
    pub(crate) fn take(self: &Arc<Quota>, n: usize) -> Option<Share> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&after| after <= self.max)
            })
            .ok()
            .map(|_| Share {
                quota: Arc::clone(self),
                n,
            })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.quota.used.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// Who counts as one peer for the per-address connection cap: an IPv4 address, or an IPv6
/// /64 (one site's subnet: a single host can use any address in it). An IPv4-mapped IPv6
/// address (a dual-stack listener's view of an IPv4 client) counts as that IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PeerKey {
    V4([u8; 4]),
    V6Net([u8; 8]),
}

impl PeerKey {
    pub(crate) fn of(ip: IpAddr) -> PeerKey {
        match ip {
            IpAddr::V4(v4) => PeerKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    PeerKey::V6Net([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

/// Open connections per peer, at most `max` each. Only peers with an open connection have an
/// entry, so the table is never larger than the connection cap.
#[derive(Debug)]
pub(crate) struct PeerQuota {
    open: Mutex<HashMap<PeerKey, usize>>,
    max: usize,
}

/// One connection of one peer, given back on drop.
#[derive(Debug)]
pub(crate) struct PeerShare {
    quota: Arc<PeerQuota>,
    key: PeerKey,
}

impl PeerQuota {
    pub(crate) fn new(max: usize) -> Arc<PeerQuota> {
        Arc::new(PeerQuota {
            open: Mutex::new(HashMap::new()),
            max,
        })
    }

    /// Counts one more connection from `ip`, or `None` when it already has `max`.
    pub(crate) fn take(self: &Arc<PeerQuota>, ip: IpAddr) -> Option<PeerShare> {
        let key = PeerKey::of(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            if *count == 0 {
                open.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(PeerShare {
            quota: Arc::clone(self),
            key,
        })
    }
}

impl Drop for PeerShare {
    fn drop(&mut self) {
        let mut open = self.quota.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test-only accessor, here so that product code ends where the test module begins.
    impl PeerQuota {
        /// Connections open from `ip`'s peer.
        pub(crate) fn open(&self, ip: IpAddr) -> usize {
            let open = self.open.lock().unwrap();
            open.get(&PeerKey::of(ip)).copied().unwrap_or(0)
        }
    }

    #[test]
    fn shares_are_given_back_on_drop() {
        let q = Quota::new(10);
        let a = q.take(6).unwrap();
        assert!(q.take(5).is_none());
        let b = q.take(4).unwrap();
        assert_eq!(q.used(), 10);
        assert!(q.take(1).is_none());
        assert!(q.take(usize::MAX).is_none());
        drop(a);
        assert_eq!(q.used(), 4);
        drop(b);
        assert_eq!(q.used(), 0);
        assert!(q.take(0).is_some());
    }

    #[test]
    fn peers_are_addresses_or_ipv6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            PeerKey::of(ip("192.0.2.1")),
            PeerKey::of(ip("::ffff:192.0.2.1"))
        );
        assert_ne!(PeerKey::of(ip("192.0.2.1")), PeerKey::of(ip("192.0.2.2")));
        assert_eq!(
            PeerKey::of(ip("2001:db8:1:2::1")),
            PeerKey::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            PeerKey::of(ip("2001:db8:1:2::1")),
            PeerKey::of(ip("2001:db8:1:3::1"))
        );
        // A v4-compatible or NAT64 address is an IPv6 peer, not the IPv4 one.
        assert_ne!(PeerKey::of(ip("::192.0.2.1")), PeerKey::of(ip("192.0.2.1")));
    }

    #[test]
    fn per_peer_cap() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let q = PeerQuota::new(2);
        let a1 = q.take(ip("2001:db8::1")).unwrap();
        let a2 = q.take(ip("2001:db8::2")).unwrap();
        assert!(q.take(ip("2001:db8::3")).is_none());
        let b = q.take(ip("2001:db8:0:1::1")).unwrap();
        assert_eq!(q.open(ip("2001:db8::")), 2);
        drop(a1);
        let a3 = q.take(ip("2001:db8::3")).unwrap();
        drop((a2, a3, b));
        assert!(q.open.lock().unwrap().is_empty());
        // A cap of 0 refuses everyone and leaves no entry behind.
        let none = PeerQuota::new(0);
        assert!(none.take(ip("192.0.2.1")).is_none());
        assert!(none.open.lock().unwrap().is_empty());
    }
}
