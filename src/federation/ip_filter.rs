//! IP ranges (CIDR) for the outbound address filter: a key fetch must never be turned into a
//! request to our own network. The filter runs on resolved addresses, not names, so DNS
//! cannot smuggle a private address past it.

use std::fmt;
use std::net::IpAddr;

/// Synapse's default `ip_range_blacklist`: loopback, private, link-local, CGNAT, multicast,
/// documentation and other special-purpose ranges, IPv4 and IPv6.
pub const DEFAULT_IP_RANGE_BLOCKLIST: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::1/128",
    "::/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// One CIDR range, e.g. `10.0.0.0/8` or `fe80::/10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(text: &str) -> Result<IpRange, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a bad prefix length"))?,
        };
        Ok(IpRange { network, prefix })
    }

    /// Whether `ip` is inside this range. An IPv4-mapped IPv6 address also matches the IPv4
    /// ranges it maps to.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_match(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_match(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if net[..full] != ip[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (net[full] & mask) == (ip[full] & mask)
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether an outbound connection to `ip` is allowed: not in the blocklist, or also in the
/// allowlist.
pub fn is_allowed(ip: IpAddr, blocklist: &[IpRange], allowlist: &[IpRange]) -> bool {
    !blocklist.iter().any(|r| r.contains(ip)) || allowlist.iter().any(|r| r.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|r| IpRange::parse(r).unwrap()).collect()
    }

    #[test]
    fn cidr_matching() {
        let r = IpRange::parse("172.16.0.0/12").unwrap();
        assert!(r.contains("172.31.255.255".parse().unwrap()));
        assert!(!r.contains("172.32.0.0".parse().unwrap()));
        assert!(r.contains("::ffff:172.16.0.1".parse().unwrap()));
        let r = IpRange::parse("fe80::/10").unwrap();
        assert!(r.contains("febf::1".parse().unwrap()));
        assert!(!r.contains("fec0::1".parse().unwrap()));
        assert!(
            IpRange::parse("1.2.3.4")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(
            IpRange::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in ["1.2.3.4/33", "::/129", "x/1", "1.2.3.4/-1", ""] {
            assert!(IpRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_blocklist() {
        let block = ranges(DEFAULT_IP_RANGE_BLOCKLIST);
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.20.0.1",
            "100.64.0.1",
            "169.254.1.1",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(
                !is_allowed(blocked.parse().unwrap(), &block, &[]),
                "{blocked}"
            );
        }
        for ok in ["8.8.8.8", "1.1.1.1", "2a00:1450::1", "93.184.216.34"] {
            assert!(is_allowed(ok.parse().unwrap(), &block, &[]), "{ok}");
        }
        let allow = ranges(&["127.0.0.0/8", "::1/128"]);
        assert!(is_allowed("127.0.0.1".parse().unwrap(), &block, &allow));
        assert!(!is_allowed("10.0.0.1".parse().unwrap(), &block, &allow));
    }
}
