//! Matrix error responses: the one place where HTTP statuses and `errcode`s are paired.

use invited_http::{EdgeError, Response};
use invited_matrix::{Object, Value};

/// An error answered to a remote server as `{"errcode": "M_…", "error": "…"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixError {
    pub status: u16,
    pub errcode: &'static str,
    pub message: String,
    /// Extra members of the body, e.g. `room_version` with `M_INCOMPATIBLE_ROOM_VERSION`.
    pub extra: Object,
    /// Adds `Retry-After` (seconds) to the response, with 429.
    pub retry_after_secs: Option<u64>,
}

impl MatrixError {
    pub fn new(status: u16, errcode: &'static str, message: impl Into<String>) -> MatrixError {
        MatrixError {
            status,
            errcode,
            message: message.into(),
            extra: Object::new(),
            retry_after_secs: None,
        }
    }

    /// 404 `M_UNRECOGNIZED`: no such endpoint.
    pub fn unrecognized() -> MatrixError {
        MatrixError::new(404, "M_UNRECOGNIZED", "Unrecognized request")
    }

    /// 405 `M_UNRECOGNIZED`: the endpoint exists, the method does not.
    pub fn method_not_allowed(method: &str) -> MatrixError {
        MatrixError::new(
            405,
            "M_UNRECOGNIZED",
            format!("Method {method} is not allowed here"),
        )
    }

    /// 400 `M_NOT_JSON`: the body is not JSON at all.
    pub fn not_json(why: impl Into<String>) -> MatrixError {
        MatrixError::new(400, "M_NOT_JSON", why)
    }

    /// 400 `M_BAD_JSON`: JSON, but of the wrong shape (or not canonical where it must be).
    pub fn bad_json(why: impl Into<String>) -> MatrixError {
        MatrixError::new(400, "M_BAD_JSON", why)
    }

    /// 500 `M_UNKNOWN`: our fault. The message is for the log, not the remote.
    pub fn internal() -> MatrixError {
        MatrixError::new(500, "M_UNKNOWN", "Internal server error")
    }

    /// Adds a member to the error body.
    pub fn with(mut self, key: &str, value: Value) -> MatrixError {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// The error for a problem the HTTP edge found before any handler ran.
    pub fn from_edge(error: &EdgeError) -> MatrixError {
        let errcode = match error {
            EdgeError::PayloadTooLarge { .. } => "M_TOO_LARGE",
            _ => "M_UNKNOWN",
        };
        MatrixError::new(error.status(), errcode, error.to_string())
    }

    pub fn to_response(&self) -> Response {
        let mut body = self.extra.clone();
        body.insert("errcode".to_owned(), self.errcode.into());
        body.insert("error".to_owned(), self.message.clone().into());
        let mut response = Response::json(self.status, Value::Object(body).to_canonical_bytes());
        if let Some(secs) = self.retry_after_secs {
            response = response.with_header("Retry-After", &secs.to_string());
        }
        response
    }
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.errcode, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let r = MatrixError::new(400, "M_INCOMPATIBLE_ROOM_VERSION", "nope")
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
        assert_eq!((too_large.status, too_large.errcode), (413, "M_TOO_LARGE"));
    }
}
