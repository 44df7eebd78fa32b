//! Prometheus metrics: what invited does, counted, for `GET /metrics` on a listener of its
//! own (`[metrics] listen`, never the federation port). Registry and encoding are the
//! Prometheus project's own client (`prometheus-client`); our edge serves them. Labels take
//! bounded values only — routes, outcomes, errcodes, statuses — never a server name or a
//! user ID, which anyone can invent.

use std::sync::Arc;

use invited_http::{ConnectionCount, ConnectionRefused, EdgeError, Handler, Request, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric invited keeps.
pub struct Metrics {
    registry: Registry,
    invites: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    key_fetches: Family<Labels, Counter>,
    key_fetch_seconds: Histogram,
    edge_refusals: Family<Labels, Counter>,
    commit_batch: Histogram,
    commit_seconds: Histogram,
    wal_restart_seconds: Histogram,
    deliveries: Family<Labels, Counter>,
    outbox_pending: Gauge,
    writer_queue: Gauge,
    database_bytes: Gauge,
    wal_bytes: Gauge,
    open_connections: Gauge,
    /// The federation listener's connections, read at scrape time; set once it is bound.
    connections: std::sync::OnceLock<ConnectionCount>,
    /// The database file (its size is read at scrape time) and connections to it.
    database: Option<(std::path::PathBuf, Arc<crate::store::StorePool>)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// The metrics of a server whose database is at `database`, reached through the pool
    /// (sizes and the outbox are read at scrape time), or of none.
    pub fn new(database: Option<(std::path::PathBuf, Arc<crate::store::StorePool>)>) -> Metrics {
        let mut registry = Registry::default();
        let invites = Family::<Labels, Counter>::default();
        registry.register(
            "invited_invites",
            "Invites answered 200, by outcome: stored (pending), ignored (stored, hidden by policy), replayed (a retry answered from the database)",
            invites.clone(),
        );
        let refusals = Family::<Labels, Counter>::default();
        registry.register(
            "invited_refusals",
            "Invites refused after authentication, by errcode and by kind of rule or check",
            refusals.clone(),
        );
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "invited_http_requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let durations = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "invited_request_duration_seconds",
            "Time from a complete request to its response, by route",
            durations.clone(),
        );
        let key_fetches = Family::<Labels, Counter>::default();
        registry.register(
            "invited_key_fetches",
            "Fetches of other servers' keys, by result (ok, failed)",
            key_fetches.clone(),
        );
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        registry.register("invited_build_info", "The running version", build);
        let key_fetch_seconds = latency_histogram();
        registry.register(
            "invited_key_fetch_duration_seconds",
            "Time one fetch of a server's keys took (discovery, the server, notaries)",
            key_fetch_seconds.clone(),
        );
        let edge_refusals = Family::<Labels, Counter>::default();
        registry.register(
            "invited_edge_refusals",
            "Requests and connections the HTTP edge refused itself (too large, too slow, malformed, busy, over a connection cap), by kind and status (none: closed unanswered)",
            edge_refusals.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "invited_open_connections",
            "Connections open on the federation listener (waiting, reading, being answered), at scrape time",
            open_connections.clone(),
        );
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "invited_commit_batch_invites",
            "Invites written per transaction by the writer (group commit)",
            commit_batch.clone(),
        );
        let commit_seconds = latency_histogram();
        registry.register(
            "invited_commit_duration_seconds",
            "Time one group commit took, fsync included",
            commit_seconds.clone(),
        );
        let wal_restart_seconds = latency_histogram();
        registry.register(
            "invited_wal_restart_duration_seconds",
            "Time the writer paused between batches to make the WAL start over (past 16 MiB in use)",
            wal_restart_seconds.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "invited_outbox_pending",
            "Deliveries (rejections, push notifications) not finished yet, at scrape time",
            outbox_pending.clone(),
        );
        let deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "invited_deliveries",
            "Delivery attempts from the outbox, by kind (rejection, push) and result \
             (delivered, refused, dropped, given_up, retried)",
            deliveries.clone(),
        );
        let writer_queue = Gauge::default();
        registry.register(
            "invited_writer_queue",
            "Invites and refusals waiting for the writer thread",
            writer_queue.clone(),
        );
        let database_bytes = Gauge::default();
        registry.register(
            "invited_database_bytes",
            "Size of the SQLite database file",
            database_bytes.clone(),
        );
        let wal_bytes = Gauge::default();
        registry.register(
            "invited_database_wal_bytes",
            "Size of the database's write-ahead log",
            wal_bytes.clone(),
        );
        Metrics {
            registry,
            invites,
            refusals,
            requests,
            durations,
            key_fetches,
            key_fetch_seconds,
            edge_refusals,
            commit_batch,
            commit_seconds,
            wal_restart_seconds,
            deliveries,
            outbox_pending,
            writer_queue,
            database_bytes,
            wal_bytes,
            open_connections,
            connections: std::sync::OnceLock::new(),
            database,
        }
    }

    /// An invite answered 200: `stored`, `ignored` or `replayed`.
    pub fn invite(&self, outcome: &'static str) {
        self.invites
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// An invite refused after authentication, with this errcode, by this kind of rule.
    pub fn refusal(&self, errcode: &'static str, kind: &'static str) {
        self.refusals
            .get_or_create(&vec![
                ("errcode", errcode.to_owned()),
                ("kind", kind.to_owned()),
            ])
            .inc();
    }

    /// A request answered: its route (a fixed name), status and time.
    pub fn request(&self, route: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
        self.durations
            .get_or_create(&vec![("route", route.to_owned())])
            .observe(seconds);
    }

    /// A request the edge refused itself.
    pub fn edge_refusal(&self, error: &EdgeError) {
        self.edge_refusals
            .get_or_create(&vec![
                ("kind", edge_kind(error).to_owned()),
                ("status", error.status().to_string()),
            ])
            .inc();
    }

    /// A connection the edge closed unanswered (`status="none"`: there was no response).
    pub fn connection_refused(&self, why: ConnectionRefused) {
        let kind = match why {
            ConnectionRefused::PerIpCap => "per_ip_cap",
            ConnectionRefused::ConnectionCap => "connection_cap",
        };
        self.edge_refusals
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("status", "none".to_owned()),
            ])
            .inc();
    }

    /// Reads open connections from this federation listener at each scrape.
    pub fn watch_connections(&self, count: ConnectionCount) {
        let _ = self.connections.set(count);
    }

    /// One delivery attempt from the outbox: its kind and what came of it.
    pub fn delivery(&self, kind: &'static str, result: &'static str) {
        self.deliveries
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }

    /// Jobs queued for the writer changed by `delta`.
    pub fn writer_queue(&self, delta: i64) {
        self.writer_queue.inc_by(delta);
    }

    /// One group commit of `invites`, taking `seconds`.
    pub fn commit(&self, invites: usize, seconds: f64) {
        self.commit_batch.observe(invites as f64);
        self.commit_seconds.observe(seconds);
    }

    /// The writer made the WAL start over, holding the next batch back `seconds`.
    pub fn wal_restart(&self, seconds: f64) {
        self.wal_restart_seconds.observe(seconds);
    }

    /// A fetch of another server's keys, taking `seconds`.
    pub fn key_fetch_time(&self, seconds: f64) {
        self.key_fetch_seconds.observe(seconds);
    }

    /// A fetch of another server's keys.
    pub fn key_fetch(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.key_fetches
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// The exposition (OpenMetrics text).
    pub fn encode(&self) -> String {
        if let Some(count) = self.connections.get() {
            self.open_connections
                .set(i64::try_from(count.open()).unwrap_or(i64::MAX));
        }
        if let Some((db, pool)) = &self.database {
            let size = |p: &std::path::Path| {
                std::fs::metadata(p).map_or(0, |m| i64::try_from(m.len()).unwrap_or(i64::MAX))
            };
            self.database_bytes.set(size(db));
            self.wal_bytes
                .set(size(&db.with_file_name("invited.db-wal")));
            match pool.with(|s| s.outbox_pending()) {
                Ok(n) => {
                    self.outbox_pending.set(n);
                }
                Err(e) => log::debug!("metrics: {e}"),
            }
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            log::warn!("metrics: encoding failed");
        }
        out
    }
}

/// The `kind` label of an edge refusal: its [`EdgeError`] variant, in snake case.
fn edge_kind(error: &EdgeError) -> &'static str {
    match error {
        EdgeError::BadRequest(_) => "bad_request",
        EdgeError::Timeout => "timeout",
        EdgeError::LengthRequired => "length_required",
        EdgeError::PayloadTooLarge { .. } => "payload_too_large",
        EdgeError::UriTooLong => "uri_too_long",
        EdgeError::HeadersTooLarge => "headers_too_large",
        EdgeError::HandlerPanicked => "handler_panicked",
        EdgeError::Overloaded => "overloaded",
        EdgeError::VersionNotSupported => "version_not_supported",
    }
}

/// The metrics listener's handler: `GET /metrics`, nothing else.
pub struct MetricsEndpoint(pub Arc<Metrics>);

impl Handler for MetricsEndpoint {
    fn handle(&self, request: &Request) -> Response {
        match (request.method.as_str(), request.path()) {
            ("GET", "/metrics") => Response {
                status: 200,
                headers: vec![(
                    "Content-Type".to_owned(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8".to_owned(),
                )],
                body: self.0.encode().into_bytes(),
            },
            _ => Response {
                status: 404,
                headers: vec![("Content-Type".to_owned(), "text/plain".to_owned())],
                body: b"not found: try GET /metrics\n".to_vec(),
            },
        }
    }

    fn edge_error(&self, error: &EdgeError) -> Response {
        Response {
            status: error.status(),
            headers: vec![("Content-Type".to_owned(), "text/plain".to_owned())],
            body: error.to_string().into_bytes(),
        }
    }
}
