//! Server discovery: from a server name to where its federation API is
//! (`shared/spec/keys.md` §5): IP literals and explicit ports as they are; otherwise
//! `/.well-known/matrix/server` (cached), then SRV `_matrix-fed._tcp` and the deprecated
//! `_matrix._tcp`, then port 8448. Certificates are checked against the server name (or the
//! delegated name), never against an SRV target.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use invited_matrix::{Host, ServerName, Value};

use crate::federation::client::{FederationClient, FetchError, Target};

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
}

impl Discovery {
    pub fn resolve(
        &self,
        client: &FederationClient,
        server: &ServerName,
    ) -> Result<Target, FetchError> {
        match server.host() {
            Host::Ipv4(ip) => Ok(ip_target(IpAddr::V4(ip), server.port())),
            Host::Ipv6(ip) => Ok(ip_target(IpAddr::V6(ip), server.port())),
            Host::Dns(host) => match server.port() {
                Some(port) => named_target(&host, port),
                None => {
                    if let Some(delegated) = self.well_known(client, &host) {
                        return resolve_delegated(&delegated);
                    }
                    srv_or_default(&host)
                }
            },
        }
    }

    /// The `m.server` of a host's well-known file, from cache or fetched.
    fn well_known(&self, client: &FederationClient, host: &str) -> Option<String> {
        if let Ok(cache) = self.well_known.lock()
            && let Some((value, until)) = cache.get(host)
            && *until > Instant::now()
        {
            return value.clone();
        }
        let (value, ttl) = match client.get_well_known(host) {
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

fn named_target(host: &str, port: u16) -> Result<Target, FetchError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| FetchError(format!("cannot resolve {host}: {e}")))?
        .collect();
    Ok(Target {
        authority: format!("{host}:{port}"),
        addrs,
    })
}

/// Step 3 of the spec's rules, for a delegated `m.server`.
fn resolve_delegated(delegated: &str) -> Result<Target, FetchError> {
    let name = ServerName::parse(delegated).map_err(|e| FetchError(e.to_string()))?;
    match name.host() {
        Host::Ipv4(ip) => Ok(ip_target(IpAddr::V4(ip), name.port())),
        Host::Ipv6(ip) => Ok(ip_target(IpAddr::V6(ip), name.port())),
        Host::Dns(host) => match name.port() {
            Some(port) => named_target(&host, port),
            None => srv_or_default(&host),
        },
    }
}

/// SRV `_matrix-fed._tcp.<host>`, then `_matrix._tcp.<host>`, then `<host>:8448`. The TLS name
/// stays `host`; only the addresses come from the SRV target.
fn srv_or_default(host: &str) -> Result<Target, FetchError> {
    for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
        if let Some((target, port)) = srv_lookup(&format!("{service}.{host}")) {
            let addrs: Vec<SocketAddr> = (target.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| FetchError(format!("cannot resolve SRV target {target}: {e}")))?
                .collect();
            return Ok(Target {
                authority: format!("{host}:{port}"),
                addrs,
            });
        }
    }
    named_target(host, DEFAULT_PORT)
}

/// The best SRV record for `name` (lowest priority, then highest weight), if any.
fn srv_lookup(name: &str) -> Option<(String, u16)> {
    use rsdns::clients::ClientConfig;
    use rsdns::clients::std::Client;
    use rsdns::records::{Class, data::Srv};

    let resolv = std::fs::read("/etc/resolv.conf").ok()?;
    let conf = resolv_conf::Config::parse(&resolv).ok()?;
    let nameserver: IpAddr = conf.nameservers.first()?.into();
    let config = ClientConfig::with_nameserver(SocketAddr::new(nameserver, 53))
        .set_query_lifetime(Duration::from_secs(3));
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
    use invited_matrix::json;

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
    /// target; the answer is cached; a failure is cached too and falls through to port 8448.
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
        };
        let name = ServerName::parse("localhost").unwrap();

        // Delegation to an IP literal with a port.
        let (port, hits, stop) = start(r#"{"m.server": "127.0.0.1:9911"}"#);
        let mut client = FederationClient::new(&config).unwrap();
        client.well_known_port = port;
        let discovery = Discovery::default();
        let target = discovery.resolve(&client, &name).unwrap();
        assert_eq!(target.authority, "127.0.0.1:9911");
        assert_eq!(target.addrs, vec!["127.0.0.1:9911".parse().unwrap()]);
        // Cached: no second fetch.
        assert_eq!(discovery.resolve(&client, &name).unwrap(), target);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        stop.shutdown();

        // Delegation to a host name with a port: TLS name and Host are the delegated name.
        let (port, _hits, stop) = start(r#"{"m.server": "localhost:9912"}"#);
        client.well_known_port = port;
        let target = Discovery::default().resolve(&client, &name).unwrap();
        assert_eq!(target.authority, "localhost:9912");
        stop.shutdown();

        // An invalid answer falls through to SRV (none here) and then port 8448.
        let (port, _hits, stop) = start(r#"{"m.server": "not a server name"}"#);
        client.well_known_port = port;
        let target = Discovery::default().resolve(&client, &name).unwrap();
        assert_eq!(target.authority, "localhost:8448");
        stop.shutdown();

        // A certificate the client does not trust: no delegation, port 8448.
        let untrusting = crate::config::FederationConfig {
            ca_file: None,
            ..config.clone()
        };
        let (port, hits, stop) = start(r#"{"m.server": "127.0.0.1:9913"}"#);
        let mut strict = FederationClient::new(&untrusting).unwrap();
        strict.well_known_port = port;
        let target = Discovery::default().resolve(&strict, &name).unwrap();
        assert_eq!(target.authority, "localhost:8448");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "the TLS handshake failed first"
        );
        stop.shutdown();
    }

    #[test]
    fn delegation_to_ip_and_port() {
        let t = resolve_delegated("127.0.0.1:9000").unwrap();
        assert_eq!(t.authority, "127.0.0.1:9000");
        let t = resolve_delegated("localhost:9000").unwrap();
        assert_eq!(t.authority, "localhost:9000");
        assert!(!t.addrs.is_empty());
    }
}
