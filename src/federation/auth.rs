//! Authenticating federation requests (`Authorization: X-Matrix`).
//!
//! Without this the invite endpoint would be an open signing oracle: anyone could claim to be
//! any server. Every X-Matrix credential on the request must come from the same origin and
//! name us (or nobody) as destination; every signature made with a key we can get must
//! verify, and at least one must.

use invited_http::Request;
use invited_matrix::x_matrix::{self, XMatrix};
use invited_matrix::{ErrCode, ServerName, Value};

use crate::error::MatrixError;
use crate::federation::keyring::{KeyError, Keyring};

fn unauthorized(why: impl Into<String>) -> MatrixError {
    MatrixError::new(ErrCode::Unauthorized, why)
}

/// The X-Matrix credentials on a request (other `Authorization` schemes are ignored).
pub fn credentials(request: &Request) -> Result<Vec<XMatrix>, MatrixError> {
    let mut out = Vec::new();
    for value in request.headers_all("Authorization") {
        match x_matrix::parse_header(value) {
            Ok(Some(c)) => out.push(c),
            Ok(None) => {}
            Err(e) => return Err(unauthorized(e.to_string())),
        }
    }
    if out.is_empty() {
        return Err(unauthorized("Missing X-Matrix Authorization header"));
    }
    Ok(out)
}

/// Checks the request's X-Matrix signatures; returns the authenticated origin.
/// `content` is the parsed body for requests that have one.
pub fn authenticate(
    request: &Request,
    content: Option<&Value>,
    our_name: &ServerName,
    keyring: &Keyring,
    now_ms: i64,
) -> Result<ServerName, MatrixError> {
    let creds = credentials(request)?;
    let origin = creds[0].origin.clone();
    // We never send ourselves requests: a request "from us" would only make us fetch (or ask
    // notaries for) our own keys.
    if origin.as_str().eq_ignore_ascii_case(our_name.as_str()) {
        return Err(unauthorized(format!(
            "Requests from {origin} are not accepted: that is this server's own name"
        )));
    }
    for c in &creds {
        if c.origin != origin {
            return Err(unauthorized("X-Matrix headers name different origins"));
        }
        if let Some(d) = &c.destination
            && d != our_name
        {
            return Err(unauthorized(format!(
                "Request is for {d}, not for this server ({our_name})"
            )));
        }
    }
    let signed = x_matrix::request_signing_bytes(
        &request.method,
        &request.target,
        &origin,
        our_name,
        content,
    );
    let mut verified = 0;
    let mut last_problem: Option<KeyError> = None;
    for c in &creds {
        let key = match keyring.get_for_request(&origin, &c.key, now_ms, request.peer.ip()) {
            Ok(k) => k,
            Err(e) => {
                log::debug!("no usable key {} for {origin}: {e}", c.key);
                last_problem = Some(e);
                continue;
            }
        };
        x_matrix::verify_request_bytes(c, &signed, &key).map_err(|e| {
            unauthorized(format!(
                "Invalid signature for server {origin} with key {}: {e}",
                c.key
            ))
        })?;
        verified += 1;
    }
    if verified > 0 {
        // Its keys proved themselves: only now are they worth a row in the database.
        keyring.confirm(&origin);
    }
    if verified == 0 {
        // Too many fetches at once is our limit, not the sender's fault: ask for a retry
        // (senders give up on 4xx, but retry 5xx).
        if last_problem == Some(KeyError::Busy) {
            let e = MatrixError::unavailable("Busy fetching server keys; try again shortly", 1);
            return Err(e);
        }
        let why = last_problem.map_or_else(|| "no usable key".to_owned(), |e| e.to_string());
        return Err(unauthorized(format!(
            "Failed to find any key to verify the request from {origin}: {why}"
        )));
    }
    Ok(origin)
}
