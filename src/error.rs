//! Matrix error responses. Which status goes with which `errcode` is decided by
//! [`ErrCode`] (in the pure crate); this file turns an error into its response body.

use invited_http::{EdgeError, Response};
use invited_matrix::{ErrCode, Object, Value};

/// An error answered to a remote server as `{"errcode": "M_…", "error": "…"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixError {
    pub code: ErrCode,
    pub message: String,
    /// Extra members of the body, e.g. `room_version` with `M_INCOMPATIBLE_ROOM_VERSION`.
    pub extra: Object,
    /// Adds `Retry-After` (seconds) to the response, with 429.
    pub retry_after_secs: Option<u64>,
}

impl MatrixError {
    pub fn new(code: ErrCode, message: impl Into<String>) -> MatrixError {
        MatrixError {
            code,
            message: message.into(),
            extra: Object::new(),
            retry_after_secs: None,
        }
    }

    /// The HTTP status of the response.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The `errcode` of the response.
    pub fn errcode(&self) -> &'static str {
        self.code.as_str()
    }

    /// 404 `M_UNRECOGNIZED`: no such endpoint.
    pub fn unrecognized() -> MatrixError {
        MatrixError::new(ErrCode::Unrecognized, "Unrecognized request")
    }

    /// 405 `M_UNRECOGNIZED`: the endpoint exists, the method does not.
    pub fn method_not_allowed(method: &str) -> MatrixError {
        MatrixError::new(
            ErrCode::MethodNotAllowed,
            format!("Method {method} is not allowed here"),
        )
    }

    /// 400 `M_NOT_JSON`: the body is not JSON at all.
    pub fn not_json(why: impl Into<String>) -> MatrixError {
        MatrixError::new(ErrCode::NotJson, why)
    }

    /// 400 `M_BAD_JSON`: JSON, but of the wrong shape (or not canonical where it must be).
    pub fn bad_json(why: impl Into<String>) -> MatrixError {
        MatrixError::new(ErrCode::BadJson, why)
    }

    /// 500 `M_UNKNOWN`: our fault. The message is for the log, not the remote.
    pub fn internal() -> MatrixError {
        MatrixError::new(ErrCode::Unknown, "Internal server error")
    }

    /// A store error where it meets a request: logged, answered 500.
    pub fn store_failed(e: crate::store::StoreError) -> MatrixError {
        log::error!("{e}");
        MatrixError::internal()
    }

    /// 503 with `Retry-After`: a limit of ours, which senders retry (never a 4xx, on which
    /// they give up).
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> MatrixError {
        let mut e = MatrixError::new(ErrCode::Unavailable, message);
        e.retry_after_secs = Some(retry_after_secs);
        e
    }

    /// A key we need was not fetched because fetch capacity was busy: 503, never a verdict
    /// on what the key would have checked.
    pub fn fetches_busy() -> MatrixError {
        MatrixError::unavailable("Too many key fetches in progress; try again shortly", 5)
    }

    /// A request body as JSON, before authentication (the signature covers the parsed
    /// content): empty or not JSON is 400 `M_NOT_JSON`, JSON we refuse (duplicate keys, a
    /// number out of range) 400 `M_BAD_JSON`, more than the parser's budget 413.
    pub fn parse_body(body: &[u8]) -> Result<Value, MatrixError> {
        use invited_matrix::json::{self, JsonErrorKind};
        if body.is_empty() {
            return Err(MatrixError::not_json("The request body is empty"));
        }
        json::parse_bytes(body).map_err(|e| {
            if e.kind == JsonErrorKind::TooManyValues {
                MatrixError::new(ErrCode::TooLarge, format!("Content refused: {e}"))
            } else if e.is_syntax() {
                MatrixError::not_json(format!("Content not JSON: {e}"))
            } else {
                MatrixError::bad_json(format!("Content refused: {e}"))
            }
        })
    }

    /// Adds a member to the error body.
    pub fn with(mut self, key: &str, value: Value) -> MatrixError {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// The error for a problem the HTTP edge found before any handler ran.
    pub fn from_edge(error: &EdgeError) -> MatrixError {
        let code = match error {
            EdgeError::BadRequest(_) => ErrCode::BadHttpRequest,
            EdgeError::Timeout => ErrCode::RequestTimeout,
            EdgeError::LengthRequired => ErrCode::LengthRequired,
            EdgeError::PayloadTooLarge { .. } => ErrCode::TooLarge,
            EdgeError::UriTooLong => ErrCode::UriTooLong,
            EdgeError::HeadersTooLarge => ErrCode::HeadersTooLarge,
            EdgeError::HandlerPanicked => ErrCode::Unknown,
            EdgeError::VersionNotSupported => ErrCode::HttpVersionNotSupported,
            EdgeError::Overloaded => ErrCode::Unavailable,
        };
        debug_assert_eq!(code.status(), error.status());
        MatrixError::new(code, error.to_string())
    }

    pub fn to_response(&self) -> Response {
        let mut body = self.extra.clone();
        body.insert("errcode".to_owned(), self.errcode().into());
        body.insert("error".to_owned(), self.message.clone().into());
        let mut response = Response::json(self.status(), Value::Object(body).to_canonical_bytes());
        if let Some(secs) = self.retry_after_secs {
            response = response.with_header("Retry-After", &secs.to_string());
        }
        response
    }
}

/// A refused invite: the error answered, the rule or check that refused it for the refusal
/// log (`refusals.rule`, free text), and its kind for metrics (a bounded label: the rule text
/// can name servers and users).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub error: MatrixError,
    pub rule: String,
    pub kind: RefusalKind,
}

/// Which step or rule refused an invite. 5xx kinds exist so that every refusal has one, but
/// only 4xx refusals are logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The `refuse_all` switch.
    RefuseAll,
    /// A deny rule, by server or user.
    Deny,
    /// `allow_list_mode`, and a server not on the list.
    AllowList,
    /// `known_users_only`, and an invitee we do not know.
    KnownUsers,
    /// The invitee's own settings (MSC4380, MSC4155) block the sender.
    InviteeSettings,
    /// A rate limit.
    RateLimit,
    /// The checks of the request and its event that need no keys (format, IDs, room version).
    EventCheck,
    /// The event or its room state over a size limit.
    Size,
    /// The event's signatures or content hash.
    Signature,
    /// A different event under an event ID we already hold.
    Conflict,
    /// `invite_room_state` failed its checks (MSC4311).
    RoomState,
    /// Not now: fetch capacity or disk space (503).
    Unavailable,
    /// Our own failure: storage, signing (500).
    Internal,
}

impl RefusalKind {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::RefuseAll => "refuse_all",
            RefusalKind::Deny => "deny",
            RefusalKind::AllowList => "allow_list",
            RefusalKind::KnownUsers => "known_users",
            RefusalKind::InviteeSettings => "invitee_settings",
            RefusalKind::RateLimit => "rate_limit",
            RefusalKind::EventCheck => "event_check",
            RefusalKind::Size => "size",
            RefusalKind::Signature => "signature",
            RefusalKind::Conflict => "conflict",
            RefusalKind::RoomState => "room_state",
            RefusalKind::Unavailable => "unavailable",
            RefusalKind::Internal => "internal",
        }
    }

    /// A refusal of this kind by a check rather than a named rule: the error's message
    /// says which, and is the logged rule.
    pub fn check(self, error: MatrixError) -> Refusal {
        let rule = error.message.chars().take(300).collect::<String>();
        Refusal {
            error,
            rule,
            kind: self,
        }
    }
}

impl Refusal {
    pub fn new(kind: RefusalKind, error: MatrixError, rule: impl Into<String>) -> Refusal {
        Refusal {
            error,
            rule: rule.into(),
            kind,
        }
    }
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status(), self.errcode(), self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let r = MatrixError::new(ErrCode::IncompatibleRoomVersion, "nope")
            .with("room_version", "99".into())
            .to_response();
        assert_eq!(r.status, 400);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"errcode":"M_INCOMPATIBLE_ROOM_VERSION","error":"nope","room_version":"99"}"#
        );
        assert!(
            r.headers
                .iter()
                .any(|(n, v)| n == "Content-Type" && v == "application/json")
        );
        let too_large = MatrixError::from_edge(&EdgeError::PayloadTooLarge { limit: 10 });
        assert_eq!(
            (too_large.status(), too_large.errcode()),
            (413, "M_TOO_LARGE")
        );
        for edge in [
            EdgeError::BadRequest("x".into()),
            EdgeError::Timeout,
            EdgeError::LengthRequired,
            EdgeError::UriTooLong,
            EdgeError::HeadersTooLarge,
            EdgeError::HandlerPanicked,
            EdgeError::VersionNotSupported,
            EdgeError::Overloaded,
        ] {
            assert_eq!(MatrixError::from_edge(&edge).status(), edge.status());
        }
    }
}
