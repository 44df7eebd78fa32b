//! Server discovery: from a server name to where its federation API is
//! (<https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names>): IP literals and explicit ports as they are; otherwise
//! `/.well-known/matrix/server` (cached), then SRV `_matrix-fed._tcp` and the deprecated
//! `_matrix._tcp`, then port 8448. Certificates are checked against the server name (or the
//! delegated name), never against an SRV target.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use invited_matrix::{Host, ServerName, Value};

use crate::federation::client::{FederationClient, FetchError, Target, lookup_host, remaining};

/// The federation port when nothing says otherwise.
pub const DEFAULT_PORT: u16 = 8448;

/// How long a well-known answer is kept: default, cap, and for failures.
const WELL_KNOWN_DEFAULT: Duration = Duration::from_secs(24 * 3600);
const WELL_KNOWN_MAX: Duration = Duration::from_secs(48 * 3600);
const WELL_KNOWN_FAILURE: Duration = Duration::from_secs(10 * 60);
/// Cached entries at most (a flood of distinct names must not grow memory without bound).
const WELL_KNOWN_CACHE_MAX: usize = 10_000;

/// Resolves server names, caching well-known answers.
#[derive(Debug, Default)]
pub struct Discovery {
    well_known: Mutex<HashMap<String, (Option<String>, Instant)>>,
    /// The DNS server asked for SRV records. `None` (always, outside tests): the first
    /// `nameserver` of `/etc/resolv.conf`, read at each lookup. Tests set a responder on
    /// loopback, so that they never depend on (or send queries to) the machine's resolver.
    nameserver: Option<SocketAddr>,
}

impl Discovery {
    /// A `Discovery` whose SRV queries go to `nameserver` instead of the system's.
    #[cfg(test)]
    fn with_nameserver(nameserver: SocketAddr) -> Discovery {
        Discovery {
            nameserver: Some(nameserver),
            ..Discovery::default()
        }
    }

    /// Where `server`'s federation API is, found by `deadline` (every step, DNS included).
    pub fn resolve(
        &self,
        client: &FederationClient,
        server: &ServerName,
        deadline: Instant,
    ) -> Result<Target, FetchError> {
        match server.host() {
            Host::Ipv4(ip) => Ok(ip_target(IpAddr::V4(ip), server.port())),
            Host::Ipv6(ip) => Ok(ip_target(IpAddr::V6(ip), server.port())),
            Host::Dns(host) => match server.port() {
                Some(port) => named_target(&host, port, deadline),
                None => {
                    if let Some(delegated) = self.well_known(client, &host, deadline) {
                        return self.resolve_delegated(&delegated, deadline);
                    }
                    self.srv_or_default(&host, deadline)
                }
            },
        }
    }

    /// The `m.server` of a host's well-known file, from cache or fetched.
    fn well_known(
        &self,
        client: &FederationClient,
        host: &str,
        deadline: Instant,
    ) -> Option<String> {
        if let Ok(cache) = self.well_known.lock()
            && let Some((value, until)) = cache.get(host)
            && *until > Instant::now()
        {
            return value.clone();
        }
        let (value, ttl) = match client.get_well_known(host, deadline) {
            Ok((body, max_age)) => match parse_well_known(&body) {
                Some(server) => (
                    Some(server),
                    max_age.unwrap_or(WELL_KNOWN_DEFAULT).min(WELL_KNOWN_MAX),
                ),
                None => {
                    log::debug!("well-known of {host} has no valid m.server");
                    (None, WELL_KNOWN_FAILURE)
                }
            },
            Err(e) => {
                log::debug!("no well-known for {host}: {e}");
                (None, WELL_KNOWN_FAILURE)
            }
        };
        if let Ok(mut cache) = self.well_known.lock() {
            if cache.len() >= WELL_KNOWN_CACHE_MAX {
                let now = Instant::now();
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= WELL_KNOWN_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(host.to_owned(), (value.clone(), Instant::now() + ttl));
        }
        value
    }

    /// Step 3 of the spec's rules, for a delegated `m.server`.
    fn resolve_delegated(&self, delegated: &str, deadline: Instant) -> Result<Target, FetchError> {
        let name = ServerName::parse(delegated).map_err(|e| FetchError(e.to_string()))?;
        match name.host() {
            Host::Ipv4(ip) => Ok(ip_target(IpAddr::V4(ip), name.port())),
            Host::Ipv6(ip) => Ok(ip_target(IpAddr::V6(ip), name.port())),
            Host::Dns(host) => match name.port() {
                Some(port) => named_target(&host, port, deadline),
                None => self.srv_or_default(&host, deadline),
            },
        }
    }

    /// SRV `_matrix-fed._tcp.<host>`, then `_matrix._tcp.<host>`, then `<host>:8448`. The TLS
    /// name stays `host`; only the addresses come from the SRV target.
    fn srv_or_default(&self, host: &str, deadline: Instant) -> Result<Target, FetchError> {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let name = format!("{service}.{host}");
            if let Some((target, port)) = self.srv_lookup(&name, remaining(deadline)?) {
                let addrs = lookup_host(&target, port, deadline)
                    .map_err(|e| FetchError(format!("SRV target of {host}: {e}")))?;
                return Ok(Target {
                    authority: format!("{host}:{port}"),
                    addrs,
                });
            }
        }
        named_target(host, DEFAULT_PORT, deadline)
    }

    /// The best SRV record for `name`, asked of our nameserver (see [`srv_query`]).
    fn srv_lookup(&self, name: &str, within: Duration) -> Option<(String, u16)> {
        let nameserver = match self.nameserver {
            Some(nameserver) => nameserver,
            None => system_nameserver()?,
        };
        srv_query(nameserver, name, within)
    }
}

/// `m.server` from a well-known body, when it is a valid `host[:port]`.
pub fn parse_well_known(body: &Value) -> Option<String> {
    let server = body.get("m.server")?.as_str()?;
    ServerName::parse(server).ok().map(|s| s.to_string())
}

fn ip_target(ip: IpAddr, port: Option<u16>) -> Target {
    let port = port.unwrap_or(DEFAULT_PORT);
    let addr = SocketAddr::new(ip, port);
    Target {
        authority: addr.to_string(),
        addrs: vec![addr],
    }
}

fn named_target(host: &str, port: u16, deadline: Instant) -> Result<Target, FetchError> {
    let addrs = lookup_host(host, port, deadline)?;
    Ok(Target {
        authority: format!("{host}:{port}"),
        addrs,
    })
}

/// The first `nameserver` of `/etc/resolv.conf`, on port 53.
fn system_nameserver() -> Option<SocketAddr> {
    let resolv = std::fs::read("/etc/resolv.conf").ok()?;
    let conf = resolv_conf::Config::parse(&resolv).ok()?;
    let nameserver: IpAddr = conf.nameservers.first()?.into();
    Some(SocketAddr::new(nameserver, 53))
}

/// Asks `nameserver` for the SRV records of `name`; the best one (lowest priority, then
/// highest weight), if any.
fn srv_query(nameserver: SocketAddr, name: &str, within: Duration) -> Option<(String, u16)> {
    use rsdns::clients::ClientConfig;
    use rsdns::clients::std::Client;
    use rsdns::records::{Class, data::Srv};

    let config = ClientConfig::with_nameserver(nameserver)
        .set_query_lifetime(Duration::from_secs(3).min(within));
    let mut client = Client::new(config).ok()?;
    let set = client.query_rrset::<Srv>(name, Class::IN).ok()?;
    let best = set
        .rdata
        .iter()
        .filter(|r| r.target.as_str() != "." && !r.target.as_str().is_empty())
        .min_by_key(|r| (r.priority, std::cmp::Reverse(r.weight)))?;
    Some((
        best.target.as_str().trim_end_matches('.').to_owned(),
        best.port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }
    use invited_matrix::json;
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// One SRV record: priority, weight, port, target (`"."`: "no service here").
    type SrvRecord = (u16, u16, u16, &'static str);

    /// A real DNS server on 127.0.0.1 (UDP): answers SRV queries for the names in its table
    /// with hand-encoded records, NXDOMAIN for anything else, and notes every name asked.
    /// The SRV step then runs exactly as in production (rsdns over a socket), without the
    /// machine's resolver.
    struct DnsResponder {
        addr: SocketAddr,
        asked: Arc<Mutex<Vec<String>>>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl DnsResponder {
        fn start(table: &[(&'static str, Vec<SrvRecord>)]) -> DnsResponder {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let addr = socket.local_addr().unwrap();
            let table: HashMap<String, Vec<SrvRecord>> = table
                .iter()
                .map(|(name, records)| (name.to_string(), records.clone()))
                .collect();
            let asked = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let (asked, stop) = (asked.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1500];
                    while !stop.load(Ordering::SeqCst) {
                        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                            continue;
                        };
                        let Some((name, reply)) = answer(&buf[..n], &table) else {
                            continue;
                        };
                        asked.lock().unwrap().push(name);
                        socket.send_to(&reply, peer).unwrap();
                    }
                })
            };
            DnsResponder {
                addr,
                asked,
                stop,
                thread: Some(thread),
            }
        }

        /// The names asked so far, in order.
        fn asked(&self) -> Vec<String> {
            self.asked.lock().unwrap().clone()
        }
    }

    impl Drop for DnsResponder {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// The response to one DNS query (RFC 1035 §4): the question's name and the reply bytes.
    fn answer(query: &[u8], table: &HashMap<String, Vec<SrvRecord>>) -> Option<(String, Vec<u8>)> {
        const SRV: u16 = 33;
        // Header (12 bytes), then the question: the name as labels, QTYPE, QCLASS.
        let mut i = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*query.get(i)?);
            i += 1;
            if len == 0 {
                break;
            }
            labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_lowercase());
            i += len;
        }
        let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
        let question = query.get(12..i + 4)?;
        let name = labels.join(".");
        let records = table.get(&name).filter(|_| qtype == SRV);

        let mut reply = Vec::new();
        reply.extend_from_slice(&query[..2]); // the query's ID
        // QR, RD, RA; RCODE 0 (no error) or 3 (NXDOMAIN).
        reply.extend_from_slice(&[0x81, if records.is_some() { 0x80 } else { 0x83 }]);
        let count = records.map_or(0, Vec::len) as u16;
        for n in [1, count, 0, 0] {
            reply.extend_from_slice(&u16::to_be_bytes(n));
        }
        reply.extend_from_slice(question);
        for &(priority, weight, port, target) in records.into_iter().flatten() {
            let mut rdata = Vec::new();
            for n in [priority, weight, port] {
                rdata.extend_from_slice(&n.to_be_bytes());
            }
            for label in target.split('.').filter(|l| !l.is_empty()) {
                rdata.push(label.len() as u8);
                rdata.extend_from_slice(label.as_bytes());
            }
            rdata.push(0);
            reply.extend_from_slice(&[0xc0, 12]); // owner: a pointer to the question's name
            reply.extend_from_slice(&SRV.to_be_bytes());
            reply.extend_from_slice(&1u16.to_be_bytes()); // class IN
            reply.extend_from_slice(&300u32.to_be_bytes()); // TTL
            reply.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            reply.extend_from_slice(&rdata);
        }
        Some((name, reply))
    }

    /// SRV `_matrix-fed._tcp` first: the best record (lowest priority, then highest weight;
    /// `.` means "no service" and is skipped) gives address and port, the authority (TLS name,
    /// `Host`) keeps the server's own name.
    #[test]
    fn srv_matrix_fed_picks_the_best_record() {
        let dns = DnsResponder::start(&[(
            "_matrix-fed._tcp.srv.test",
            vec![
                (10, 100, 1111, "localhost."),
                (0, 1, 2222, "localhost."),
                (0, 100, 0, "."),
                (0, 9, 3333, "localhost."),
            ],
        )]);
        let target = Discovery::with_nameserver(dns.addr)
            .srv_or_default("srv.test", far())
            .unwrap();
        assert_eq!(target.authority, "srv.test:3333");
        assert!(!target.addrs.is_empty());
        for a in &target.addrs {
            assert!(a.ip().is_loopback() && a.port() == 3333, "{a}");
        }
        assert_eq!(dns.asked(), ["_matrix-fed._tcp.srv.test"]);
    }

    /// Without `_matrix-fed._tcp`, the deprecated `_matrix._tcp` is used.
    #[test]
    fn srv_deprecated_matrix_tcp_is_the_fallback() {
        let dns =
            DnsResponder::start(&[("_matrix._tcp.old.test", vec![(0, 0, 4444, "localhost.")])]);
        let target = Discovery::with_nameserver(dns.addr)
            .srv_or_default("old.test", far())
            .unwrap();
        assert_eq!(target.authority, "old.test:4444");
        assert!(target.addrs.iter().all(|a| a.port() == 4444));
        assert_eq!(
            dns.asked(),
            ["_matrix-fed._tcp.old.test", "_matrix._tcp.old.test"]
        );
    }

    /// No SRV record (NXDOMAIN for both services), or only "no service" records: port 8448.
    #[test]
    fn without_srv_records_port_8448() {
        let dns = DnsResponder::start(&[("_matrix-fed._tcp.localhost", vec![(0, 0, 0, ".")])]);
        let target = Discovery::with_nameserver(dns.addr)
            .srv_or_default("localhost", far())
            .unwrap();
        assert_eq!(target.authority, "localhost:8448");
        assert!(target.addrs.iter().all(|a| a.port() == 8448));
        assert_eq!(
            dns.asked(),
            ["_matrix-fed._tcp.localhost", "_matrix._tcp.localhost"]
        );
    }

    #[test]
    fn ip_literals_are_used_as_they_are() {
        let t = ip_target("127.0.0.1".parse().unwrap(), Some(1234));
        assert_eq!(t.authority, "127.0.0.1:1234");
        let t = ip_target("::1".parse().unwrap(), None);
        assert_eq!(t.authority, "[::1]:8448");
        assert_eq!(t.addrs, vec!["[::1]:8448".parse().unwrap()]);
    }

    #[test]
    fn well_known_bodies() {
        let p = |s: &str| parse_well_known(&json::parse(s).unwrap());
        assert_eq!(
            p(r#"{"m.server":"delegated.example.com:1234"}"#).as_deref(),
            Some("delegated.example.com:1234")
        );
        assert_eq!(p(r#"{"m.server":"[::1]"}"#).as_deref(), Some("[::1]"));
        assert_eq!(p(r#"{"m.server":"bad name"}"#), None);
        assert_eq!(p(r#"{"m.server":5}"#), None);
        assert_eq!(p(r#"{}"#), None);
    }

    /// The well-known step end to end: a real HTTPS server (test CA) answers
    /// `/.well-known/matrix/server` for `localhost`; the delegated `m.server` decides the
    /// target; the answer is cached; a failure is cached too and falls through to SRV (asked of
    /// a responder on loopback that has no records) and then port 8448.
    #[test]
    fn well_known_delegation_over_https() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use invited_http::{EdgeError, Handler, Request, Response, Server, ServerOptions};

        struct WellKnown {
            hits: Arc<AtomicUsize>,
            body: &'static str,
        }
        impl Handler for WellKnown {
            fn handle(&self, r: &Request) -> Response {
                self.hits.fetch_add(1, Ordering::SeqCst);
                if r.path() == "/.well-known/matrix/server" {
                    Response::json(200, self.body.as_bytes().to_vec())
                        .with_header("Cache-Control", "max-age=3600")
                } else {
                    Response::json(404, b"{}".to_vec())
                }
            }
            fn edge_error(&self, e: &EdgeError) -> Response {
                Response::json(e.status(), b"{}".to_vec())
            }
        }

        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("c.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("k.pem"), leaf_key.serialize_pem()).unwrap();
        let tls = invited_http::load_tls_config(dir.path().join("c.pem"), dir.path().join("k.pem"))
            .unwrap();

        let start = |body: &'static str| {
            let hits = Arc::new(AtomicUsize::new(0));
            let server = Server::bind(
                "127.0.0.1:0".parse().unwrap(),
                ServerOptions {
                    workers: 1,
                    tls: Some(tls.clone()),
                    ..ServerOptions::default()
                },
            )
            .unwrap();
            let port = server.local_addr().port();
            let handler: Arc<dyn Handler> = Arc::new(WellKnown {
                hits: hits.clone(),
                body,
            });
            let stop = server.shutdown_handle();
            std::thread::spawn(move || server.run(handler));
            (port, hits, stop)
        };
        let config = crate::config::FederationConfig {
            ca_file: Some(dir.path().join("ca.pem")),
            verify_certificates: true,
            trusted_key_servers: Vec::new(),
            ip_range_blocklist: Vec::new(),
            ip_range_allowlist: Vec::new(),
            key_fetch_deadline: Duration::from_secs(15),
        };
        let name = ServerName::parse("localhost").unwrap();
        let dns = DnsResponder::start(&[]);

        // Delegation to an IP literal with a port.
        let (port, hits, stop) = start(r#"{"m.server": "127.0.0.1:9911"}"#);
        let mut client = FederationClient::new(&config).unwrap();
        client.well_known_port = port;
        let discovery = Discovery::with_nameserver(dns.addr);
        let target = discovery.resolve(&client, &name, far()).unwrap();
        assert_eq!(target.authority, "127.0.0.1:9911");
        assert_eq!(target.addrs, vec!["127.0.0.1:9911".parse().unwrap()]);
        // Cached: no second fetch.
        assert_eq!(discovery.resolve(&client, &name, far()).unwrap(), target);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        stop.shutdown();

        // Delegation to a host name with a port: TLS name and Host are the delegated name.
        let (port, _hits, stop) = start(r#"{"m.server": "localhost:9912"}"#);
        client.well_known_port = port;
        let target = Discovery::with_nameserver(dns.addr)
            .resolve(&client, &name, far())
            .unwrap();
        assert_eq!(target.authority, "localhost:9912");
        stop.shutdown();
        assert!(dns.asked().is_empty(), "no SRV query: {:?}", dns.asked());

        // An invalid answer falls through to SRV (none here) and then port 8448.
        let srv_queries = ["_matrix-fed._tcp.localhost", "_matrix._tcp.localhost"];
        let (port, _hits, stop) = start(r#"{"m.server": "not a server name"}"#);
        client.well_known_port = port;
        let target = Discovery::with_nameserver(dns.addr)
            .resolve(&client, &name, far())
            .unwrap();
        assert_eq!(target.authority, "localhost:8448");
        stop.shutdown();
        assert_eq!(dns.asked(), srv_queries);

        // A certificate the client does not trust: no delegation, port 8448.
        let untrusting = crate::config::FederationConfig {
            ca_file: None,
            ..config.clone()
        };
        let (port, hits, stop) = start(r#"{"m.server": "127.0.0.1:9913"}"#);
        let mut strict = FederationClient::new(&untrusting).unwrap();
        strict.well_known_port = port;
        let target = Discovery::with_nameserver(dns.addr)
            .resolve(&strict, &name, far())
            .unwrap();
        assert_eq!(target.authority, "localhost:8448");
        assert_eq!(dns.asked(), [srv_queries, srv_queries].concat());
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "the TLS handshake failed first"
        );
        stop.shutdown();
    }

    #[test]
    fn delegation_to_ip_and_port() {
        let dns = DnsResponder::start(&[]);
        let discovery = Discovery::with_nameserver(dns.addr);
        let t = discovery
            .resolve_delegated("127.0.0.1:9000", far())
            .unwrap();
        assert_eq!(t.authority, "127.0.0.1:9000");
        let t = discovery
            .resolve_delegated("localhost:9000", far())
            .unwrap();
        assert_eq!(t.authority, "localhost:9000");
        assert!(!t.addrs.is_empty());
        assert!(dns.asked().is_empty(), "an explicit port needs no SRV");
    }
}
