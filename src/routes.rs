//! Path + method → handler, and the one info log line per request.
//!
//! Handlers return `Result<Response, MatrixError>`; this file turns errors into Matrix error
//! bodies, so no handler builds an error response by hand.

use std::time::Instant;

use invited_http::{ConnectionRefused, EdgeError, Handler, Request, Response};
use invited_matrix::{ErrCode, ServerName, SigningKey, Value};

use crate::config::InvitesConfig;
use crate::disk::DiskSpace;
use crate::error::MatrixError;
use crate::federation::auth::authenticate;
use crate::federation::keyring::Keyring;
use invited_matrix::invite::Api;

use crate::invite::{self, InviteContext};
use crate::json_memory::JsonMemory;
use crate::keys;
use crate::policy::Policy;
use crate::store::{OurKey, StorePool};
use crate::time::now_ms;
use crate::transaction::{self, TransactionContext};
use crate::writer::Writer;

/// What the request handlers share. Built once at start-up.
pub struct App {
    pub server_name: ServerName,
    pub signing_key: SigningKey,
    /// Our key history as the database had it at start-up (rotation needs a restart).
    pub key_history: Vec<OurKey>,
    /// How long the keys we publish are valid.
    pub key_lifetime_ms: i64,
    pub keyring: Keyring,
    pub store: std::sync::Arc<StorePool>,
    pub invites: InvitesConfig,
    pub disk: DiskSpace,
    pub policy: Policy,
    pub writer: Writer,
    pub verified_state: invite::VerifiedPdus,
    /// Memory for handling JSON bodies, shared by the workers.
    pub json_memory: JsonMemory,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// Decodes one percent-encoded path segment (after the path was split on `/`).
pub fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits exactly: `u8::from_str_radix` alone would take "+f".
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The endpoints we know, for telling 404 from 405.
enum Route<'a> {
    ServerKeys,
    Version,
    /// The invite endpoints, with the raw (still percent-encoded) room and event segments.
    Invite(Api, &'a str, &'a str),
    /// Profile queries: Synapse asks for the invitee's display name before every invite.
    QueryProfile,
    /// Transactions, with the raw transaction ID: where an inviter's rescind arrives.
    Send(&'a str),
}

/// The metrics label of a request's route: a fixed name, never anything from the request.
fn route_label(path: &str) -> &'static str {
    match route(path) {
        Some(Route::Invite(Api::V1, ..)) => "invite_v1",
        Some(Route::Invite(Api::V2, ..)) => "invite_v2",
        Some(Route::Send(_)) => "send",
        Some(Route::ServerKeys) => "keys",
        Some(Route::Version) => "version",
        Some(Route::QueryProfile) => "query_profile",
        None => "unknown",
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    for (prefix, api) in [
        ("/_matrix/federation/v2/invite/", Api::V2),
        ("/_matrix/federation/v1/invite/", Api::V1),
    ] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let mut parts = rest.split('/');
            return match (parts.next(), parts.next(), parts.next()) {
                (Some(room), Some(event), None) if !room.is_empty() && !event.is_empty() => {
                    Some(Route::Invite(api, room, event))
                }
                _ => None,
            };
        }
    }
    if let Some(txn) = path.strip_prefix("/_matrix/federation/v1/send/") {
        return (!txn.is_empty() && !txn.contains('/')).then_some(Route::Send(txn));
    }
    match path {
        "/_matrix/key/v2/server" => Some(Route::ServerKeys),
        // The `/{keyId}` form was removed from the spec in v1.6 (MSC3938), but older servers
        // still ask for it; the answer is the same.
        p if p
            .strip_prefix("/_matrix/key/v2/server/")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')) =>
        {
            Some(Route::ServerKeys)
        }
        "/_matrix/federation/v1/version" => Some(Route::Version),
        "/_matrix/federation/v1/query/profile" => Some(Route::QueryProfile),
        _ => None,
    }
}

impl App {
    fn dispatch(
        &self,
        request: &Request,
        origin: &mut Option<ServerName>,
    ) -> Result<Response, MatrixError> {
        let route = route(request.path()).ok_or_else(MatrixError::unrecognized)?;
        match (route, request.method.as_str()) {
            (Route::ServerKeys, "GET") => self.server_keys(),
            (Route::Version, "GET") => Ok(json_response(200, &version_body())),
            (Route::QueryProfile, "GET") => self.query_profile(request, origin),
            (Route::Invite(api, room, event), "PUT") => {
                let _reserved = self.json_memory.reserve(request.body.len())?;
                let decode = |segment, what| {
                    percent_decode(segment).ok_or_else(|| {
                        MatrixError::new(
                            ErrCode::InvalidParam,
                            format!("Bad percent-encoding of {what}"),
                        )
                    })
                };
                let (room, event) = (decode(room, "roomId")?, decode(event, "eventId")?);
                let ctx = InviteContext {
                    our_name: &self.server_name,
                    signing_key: &self.signing_key,
                    keyring: &self.keyring,
                    store: &self.store,
                    invites: &self.invites,
                    disk: &self.disk,
                    policy: &self.policy,
                    writer: &self.writer,
                    verified_state: &self.verified_state,
                    now_ms: now_ms(),
                    peer: Some(request.peer.ip()),
                    metrics: &self.metrics,
                };
                invite::handle(&ctx, request, api, &room, &event, origin)
            }
            (Route::Send(txn), "PUT") => {
                let _reserved = self.json_memory.reserve(request.body.len())?;
                let txn = percent_decode(txn).ok_or_else(|| {
                    MatrixError::new(ErrCode::InvalidParam, "Bad percent-encoding of txnId")
                })?;
                let ctx = TransactionContext {
                    our_name: &self.server_name,
                    keyring: &self.keyring,
                    store: &self.store,
                    now_ms: now_ms(),
                    peer: Some(request.peer.ip()),
                    busy: std::cell::Cell::new(false),
                };
                transaction::handle(&ctx, request, &txn, origin)
            }
            (_, method) => Err(MatrixError::method_not_allowed(method)),
        }
    }

    /// `GET /_matrix/federation/v1/query/profile?user_id=…`: we keep no profiles, so an
    /// authenticated query about one of our users is answered 404 `M_NOT_FOUND` (the spec's
    /// answer for a profile that does not exist), and the sender invites without a name.
    fn query_profile(
        &self,
        request: &Request,
        origin: &mut Option<ServerName>,
    ) -> Result<Response, MatrixError> {
        let who = authenticate(request, None, &self.server_name, &self.keyring, now_ms())?;
        *origin = Some(who);
        let user_id = request
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("user_id="))
            .and_then(percent_decode)
            .ok_or_else(|| MatrixError::new(ErrCode::MissingParam, "Missing user_id"))?;
        let user = invited_matrix::UserId::parse(&user_id)
            .map_err(|e| MatrixError::new(ErrCode::InvalidParam, e.to_string()))?;
        if user.server_str() != self.server_name.as_str() {
            return Err(MatrixError::new(
                ErrCode::InvalidParam,
                format!("{user} is not a user of this server"),
            ));
        }
        Err(MatrixError::new(ErrCode::NotFound, "Profile not found"))
    }

    fn server_keys(&self) -> Result<Response, MatrixError> {
        let body = keys::key_response(
            &self.server_name,
            &self.signing_key,
            &self.key_history,
            now_ms().saturating_add(self.key_lifetime_ms),
        )
        .map_err(|e| {
            log::error!("{e}");
            MatrixError::internal()
        })?;
        Ok(json_response(200, &body))
    }
}

fn version_body() -> Value {
    let mut server = invited_matrix::Object::new();
    server.insert("name".into(), "invited".into());
    server.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    let mut body = invited_matrix::Object::new();
    body.insert("server".into(), Value::Object(server));
    Value::Object(body)
}

/// A JSON response with a canonical body.
pub fn json_response(status: u16, body: &Value) -> Response {
    Response::json(status, body.to_canonical_bytes())
}

impl Handler for App {
    fn handle(&self, request: &Request) -> Response {
        let started = Instant::now();
        let mut origin = None;
        let response = self.dispatch(request, &mut origin).unwrap_or_else(|e| {
            log::debug!("{} {}: {e}", request.method, request.path());
            e.to_response()
        });
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics
            .request(route_label(request.path()), response.status, elapsed);
        log::info!(
            "{} {} origin={} {} {:.1}ms",
            request.method,
            request.path(),
            origin.as_ref().map_or("-", |o| o.as_str()),
            response.status,
            elapsed * 1000.0
        );
        response
    }

    fn edge_error(&self, error: &EdgeError) -> Response {
        log::info!("edge: {} ({})", error.status(), error);
        self.metrics.edge_refusal(error);
        MatrixError::from_edge(error).to_response()
    }

    fn connection_refused(&self, why: ConnectionRefused) {
        self.metrics.connection_refused(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("%21r%3Adomain").as_deref(),
            Some("!r:domain")
        );
        assert_eq!(percent_decode("%24a%2Fb%2Bc").as_deref(), Some("$a/b+c"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
        // `+` is not a hex digit, though `u8::from_str_radix("+f", 16)` says 15.
        assert_eq!(percent_decode("%+f"), None);
        assert_eq!(percent_decode("a%2"), None);
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route("/_matrix/key/v2/server"),
            Some(Route::ServerKeys)
        ));
        assert!(matches!(
            route("/_matrix/key/v2/server/ed25519:a"),
            Some(Route::ServerKeys)
        ));
        assert!(route("/_matrix/key/v2/server/").is_none());
        assert!(route("/_matrix/key/v2/server/a/b").is_none());
        assert!(matches!(
            route("/_matrix/federation/v1/version"),
            Some(Route::Version)
        ));
        assert!(route("/").is_none());
        assert!(matches!(
            route("/_matrix/federation/v2/invite/%21r%3Aa/%24e"),
            Some(Route::Invite(Api::V2, "%21r%3Aa", "%24e"))
        ));
        assert!(matches!(
            route("/_matrix/federation/v1/invite/r/e"),
            Some(Route::Invite(Api::V1, "r", "e"))
        ));
        assert!(route("/_matrix/federation/v2/invite/r").is_none());
        assert!(route("/_matrix/federation/v2/invite/r/e/x").is_none());
        assert!(route("/_matrix/federation/v2/invite//e").is_none());
        assert!(matches!(
            route("/_matrix/federation/v1/send/t%2F1"),
            Some(Route::Send("t%2F1"))
        ));
        assert!(route("/_matrix/federation/v1/send/").is_none());
        assert!(route("/_matrix/federation/v1/send/a/b").is_none());
    }
}
