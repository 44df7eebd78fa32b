//! Outbound HTTPS to other homeservers (key fetches, deliveries) and to push gateways, on
//! ureq with strict limits.
//!
//! Each request goes to an address we resolved ourselves (server discovery decides it), and
//! every resolved address passes the IP filter before a connection is made: the filter sits in
//! the resolver, so redirects and well-known lookups cannot bypass it. TLS names and the Host
//! header stay the server name, as the spec's resolution rules require. Push gateways get a
//! client of their own with their own IP policy (`[push]`): same code, other lists.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use invited_matrix::{Value, json};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::DefaultConnector;

use crate::config::{FederationConfig, PushConfig};
use crate::fatal::Error;
use crate::federation::ip_filter::{IpRange, is_allowed};

/// Where to send a request: the URL authority (TLS name and port) and the addresses to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` for the URL; its host is the TLS name (certificate and SNI).
    pub authority: String,
    /// Addresses already resolved for `authority` (empty: resolve it when connecting).
    pub addrs: Vec<SocketAddr>,
}

/// Why an outbound request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError(pub String);

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Largest response body we read from another server.
pub const MAX_RESPONSE_BYTES: u64 = 512 * 1024;

/// The outbound HTTPS client.
pub struct FederationClient {
    tls: ureq::tls::TlsConfig,
    blocklist: Arc<Vec<IpRange>>,
    allowlist: Arc<Vec<IpRange>>,
    /// The config section whose lists these are, for messages (`federation`, `push`).
    policy: &'static str,
    /// Whether plain `http://` URLs may be used (push gateways, if the operator allows it).
    allow_http: bool,
    connect_timeout: Duration,
    total_timeout: Duration,
    /// Where `.well-known/matrix/server` is fetched: 443 (HTTPS) except in this crate's own
    /// tests, which cannot bind a privileged port.
    pub(crate) well_known_port: u16,
}

impl fmt::Debug for FederationClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederationClient").finish_non_exhaustive()
    }
}

/// Where Linux distributions keep the system's PEM root bundle.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

impl FederationClient {
    /// The client for other homeservers.
    pub fn new(config: &FederationConfig) -> Result<FederationClient, Error> {
        let mut client = FederationClient::with_roots(config)?;
        client.blocklist = Arc::new(config.ip_range_blocklist.clone());
        client.allowlist = Arc::new(config.ip_range_allowlist.clone());
        Ok(client)
    }

    /// The client for push gateways: this client's certificate roots (read once, at start),
    /// `[push]`'s IP lists, timeout and `allow_http`.
    pub fn for_push(&self, push: &PushConfig) -> FederationClient {
        FederationClient {
            tls: self.tls.clone(),
            blocklist: Arc::new(push.ip_range_blocklist.clone()),
            allowlist: Arc::new(push.ip_range_allowlist.clone()),
            policy: "push",
            allow_http: push.allow_http,
            connect_timeout: self.connect_timeout,
            total_timeout: push.delivery.request_timeout,
            well_known_port: self.well_known_port,
        }
    }

    /// A client with the TLS roots of `config`; both constructors then set its IP lists.
    fn with_roots(config: &FederationConfig) -> Result<FederationClient, Error> {
        let mut builder = ureq::tls::TlsConfig::builder();
        if config.verify_certificates {
            let mut roots: Vec<ureq::tls::Certificate<'static>> = Vec::new();
            let system = std::env::var("SSL_CERT_FILE")
                .ok()
                .into_iter()
                .chain(SYSTEM_BUNDLES.iter().map(|s| s.to_string()))
                .find(|p| std::path::Path::new(p).exists());
            if let Some(path) = &system {
                roots.extend(read_pem_certs(std::path::Path::new(path))?);
            }
            if let Some(ca) = &config.ca_file {
                let extra = read_pem_certs(ca)?;
                if extra.is_empty() {
                    return Err(Error::new(format!(
                        "federation.ca_file {}: no certificate in it",
                        ca.display()
                    )));
                }
                roots.extend(extra);
            }
            if roots.is_empty() {
                log::warn!("no system root certificates found; using the bundled Mozilla roots");
            } else {
                builder = builder.root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)));
            }
        } else {
            log::warn!("federation.verify_certificates = false: outbound TLS is NOT verified");
            builder = builder.disable_verification(true);
        }
        Ok(FederationClient {
            tls: builder.build(),
            blocklist: Arc::new(Vec::new()),
            allowlist: Arc::new(Vec::new()),
            policy: "federation",
            allow_http: false,
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(10),
            well_known_port: 443,
        })
    }

    /// An agent for one request that must be done by `deadline` (the fetch's overall one).
    fn agent(
        &self,
        target: &Target,
        redirects: u32,
        deadline: Instant,
    ) -> Result<ureq::Agent, FetchError> {
        let left = remaining(deadline)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // No proxy from the environment (HTTPS_PROXY and friends): a proxy would connect
            // for us, to addresses our IP filter never saw.
            .proxy(None)
            // Never plain HTTP, not even through a redirect (unless allowed for push).
            .https_only(!self.allow_http)
            .max_redirects(redirects)
            .max_redirects_will_error(false)
            .timeout_connect(Some(self.connect_timeout.min(left)))
            .timeout_global(Some(self.total_timeout.min(left)))
            .user_agent(concat!("invited/", env!("CARGO_PKG_VERSION")))
            .tls_config(self.tls.clone())
            .build();
        Ok(ureq::Agent::with_parts(
            config,
            DefaultConnector::default(),
            FilteringResolver {
                pinned: (target.authority.clone(), target.addrs.clone()),
                blocklist: self.blocklist.clone(),
                allowlist: self.allowlist.clone(),
                policy: self.policy,
                deadline,
            },
        ))
    }

    /// `GET https://<target><path>` expecting a JSON 200 answer.
    pub fn get_json(
        &self,
        target: &Target,
        path: &str,
        deadline: Instant,
    ) -> Result<Value, FetchError> {
        let url = format!("https://{}{path}", target.authority);
        let response = self
            .agent(target, 0, deadline)?
            .get(&url)
            .call()
            .map_err(|e| FetchError(format!("GET {url}: {e}")))?;
        read_json(response, &url)
    }

    /// `POST https://<target><path>` with a JSON body, expecting a JSON 200 answer.
    pub fn post_json(
        &self,
        target: &Target,
        path: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<Value, FetchError> {
        let url = format!("https://{}{path}", target.authority);
        let response = self
            .agent(target, 0, deadline)?
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.to_canonical_string())
            .map_err(|e| FetchError(format!("POST {url}: {e}")))?;
        read_json(response, &url)
    }

    /// A federation API request to `server` at `target`, signed with `authorization`:
    /// `method` with an optional JSON body. Any status is an answer (the caller decides what
    /// a 4xx means); its body is parsed when it is JSON.
    pub fn request(
        &self,
        target: &Target,
        method: &str,
        path: &str,
        authorization: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<(u16, Option<Value>), FetchError> {
        let url = format!("https://{}{path}", target.authority);
        let agent = self.agent(target, 0, deadline)?;
        let response = match (method, body) {
            ("GET", None) => agent
                .get(&url)
                .header("Authorization", authorization)
                .call(),
            ("PUT", Some(body)) => agent
                .put(&url)
                .header("Authorization", authorization)
                .header("Content-Type", "application/json")
                .send(body.to_canonical_string()),
            _ => return Err(FetchError(format!("{method} {url}: not a request we make"))),
        }
        .map_err(|e| FetchError(format!("{method} {url}: {e}")))?;
        read_answer(response, &format!("{method} {url}"))
    }

    /// `POST` of a JSON body to a full URL (a push gateway's): no redirects, any status is an
    /// answer, its body parsed when it is JSON. `https://` only, unless this client allows
    /// `http://`.
    pub fn post_to_url(
        &self,
        url: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<(u16, Option<Value>), FetchError> {
        let plain = url.starts_with("http://");
        if !(url.starts_with("https://") || plain && self.allow_http) {
            return Err(FetchError(format!(
                "{url}: not an https:// URL{}",
                if plain {
                    format!(" ({}.allow_http is off)", self.policy)
                } else {
                    String::new()
                }
            )));
        }
        let unpinned = Target {
            authority: String::new(),
            addrs: Vec::new(),
        };
        let response = self
            .agent(&unpinned, 0, deadline)?
            .post(url)
            .header("Content-Type", "application/json")
            .send(body.to_canonical_string())
            .map_err(|e| FetchError(format!("POST {url}: {e}")))?;
        read_answer(response, &format!("POST {url}"))
    }

    /// `GET https://<hostname>/.well-known/matrix/server`, following up to 5 redirects.
    /// Returns the JSON and the `Cache-Control: max-age` if any.
    pub fn get_well_known(
        &self,
        hostname: &str,
        deadline: Instant,
    ) -> Result<(Value, Option<Duration>), FetchError> {
        let port = self.well_known_port;
        let target = Target {
            authority: format!("{hostname}:{port}"),
            addrs: Vec::new(),
        };
        let url = if port == 443 {
            format!("https://{hostname}/.well-known/matrix/server")
        } else {
            format!("https://{hostname}:{port}/.well-known/matrix/server")
        };
        let response = self
            .agent(&target, 5, deadline)?
            .get(&url)
            .call()
            .map_err(|e| FetchError(format!("GET {url}: {e}")))?;
        let max_age = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age);
        Ok((read_json(response, &url)?, max_age))
    }
}

/// Any status and, when it is JSON, the body (at most [`MAX_RESPONSE_BYTES`]); `what` names
/// the request in errors.
fn read_answer(
    mut response: ureq::http::Response<ureq::Body>,
    what: &str,
) -> Result<(u16, Option<Value>), FetchError> {
    let status = response.status().as_u16();
    let bytes = read_body(&mut response, what)?;
    Ok((status, json::parse_bytes(&bytes).ok()))
}

fn read_json(
    mut response: ureq::http::Response<ureq::Body>,
    url: &str,
) -> Result<Value, FetchError> {
    let status = response.status().as_u16();
    if status != 200 {
        return Err(FetchError(format!("{url} answered {status}")));
    }
    let bytes = read_body(&mut response, url)?;
    json::parse_bytes(&bytes).map_err(|e| FetchError(format!("{url}: {e}")))
}

/// The body, at most [`MAX_RESPONSE_BYTES`] of it.
fn read_body(
    response: &mut ureq::http::Response<ureq::Body>,
    what: &str,
) -> Result<Vec<u8>, FetchError> {
    response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|e| FetchError(format!("{what}: reading the body: {e}")))
}

fn parse_max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|d| {
        let d = d.trim();
        let v = d.strip_prefix("max-age=")?;
        v.trim_matches('"')
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    })
}

fn read_pem_certs(path: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>, Error> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::new(format!(
            "cannot read certificates from {}: {e}",
            path.display()
        ))
    })?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => out.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(Error::new(format!("bad PEM in {}: {e}", path.display())));
            }
        }
    }
    Ok(out)
}

/// Resolves the pinned authority to its pre-resolved addresses, anything else (redirect
/// targets, well-known hosts) through the system resolver, and drops every address the IP
/// filter refuses.
#[derive(Debug)]
struct FilteringResolver {
    pinned: (String, Vec<SocketAddr>),
    blocklist: Arc<Vec<IpRange>>,
    allowlist: Arc<Vec<IpRange>>,
    policy: &'static str,
    /// Name lookups end by then too.
    deadline: Instant,
}

/// What is left of `deadline`, or the error that says it has passed.
pub fn remaining(deadline: Instant) -> Result<Duration, FetchError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| FetchError("the request's deadline passed".to_owned()))
}

/// Resolves a name to addresses by `deadline`. The system resolver has no timeout of its
/// own, so it runs on a thread of its own; past the deadline we stop waiting for it (the
/// thread ends when the resolver gives up).
pub fn lookup_host(
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, FetchError> {
    let left = remaining(deadline)?;
    let (answer, answered) = std::sync::mpsc::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>());
            let _ = answer.send(found);
        })
        .map_err(|e| FetchError(format!("cannot start a name lookup: {e}")))?;
    match answered.recv_timeout(left) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(FetchError(format!("cannot resolve {host}: {e}"))),
        Err(_) => Err(FetchError(format!(
            "cannot resolve {host}: no answer in time"
        ))),
    }
}

impl Resolver for FilteringResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let authority = uri
            .authority()
            .ok_or_else(|| ureq::Error::BadUri(format!("{uri} has no host")))?;
        let default_port = if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = authority.host();
        let key = format!("{host}:{port}");
        let candidates: Vec<SocketAddr> = if key == self.pinned.0 && !self.pinned.1.is_empty() {
            self.pinned.1.clone()
        } else {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            lookup_host(bare, port, self.deadline)
                .map_err(|e| ureq::Error::Io(std::io::Error::other(e.0)))?
        };
        let mut out = self.empty();
        let mut refused = None;
        for addr in candidates {
            if !is_allowed(addr.ip(), &self.blocklist, &self.allowlist) {
                refused = Some(addr);
                continue;
            }
            if out.len() < 16 {
                out.push(addr);
            }
        }
        if out.is_empty() {
            let why = match refused {
                Some(a) => format!(
                    "IP address {} is blocked by {}.ip_range_blocklist",
                    a.ip(),
                    self.policy
                ),
                None => format!("no address for {key}"),
            };
            return Err(ureq::Error::Io(std::io::Error::other(why)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age() {
        assert_eq!(
            parse_max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(parse_max_age("no-cache"), None);
    }
}
