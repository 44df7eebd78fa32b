//! Matrix error codes, each paired with the one HTTP status it is answered with.
//!
//! This is the only place statuses and `errcode`s meet, so a wrong pair (a 403 `M_NOT_JSON`)
//! cannot be written anywhere else. Where the spec answers one `errcode` with two statuses
//! (`M_UNRECOGNIZED` as 404 or 405, `M_UNKNOWN` as 500 or 503) there is one variant for each.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#standard-error-response> (the
//! federation API uses the same codes).

use std::fmt;

/// One `errcode` with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrCode {
    /// 400 `M_NOT_JSON`: the body is not JSON at all.
    NotJson,
    /// 400 `M_BAD_JSON`: JSON, but of the wrong shape (or not canonical where it must be).
    BadJson,
    /// 400 `M_INVALID_PARAM`: a parameter or field has a value we cannot accept.
    InvalidParam,
    /// 400 `M_MISSING_PARAM`: a required query parameter is missing.
    MissingParam,
    /// 400 `M_INCOMPATIBLE_ROOM_VERSION`: we do not support the room version (the body carries
    /// `room_version`).
    IncompatibleRoomVersion,
    /// 401 `M_UNAUTHORIZED`: the request is not (validly) signed.
    Unauthorized,
    /// 403 `M_FORBIDDEN`: refused by policy.
    Forbidden,
    /// 403 `M_INVITE_BLOCKED`: the invitee blocks invites from this sender (MSC4380).
    InviteBlocked,
    /// 404 `M_NOT_FOUND`: the thing asked about does not exist.
    NotFound,
    /// 404 `M_UNRECOGNIZED`: no such endpoint.
    Unrecognized,
    /// 405 `M_UNRECOGNIZED`: the endpoint exists, the method does not.
    MethodNotAllowed,
    /// 413 `M_TOO_LARGE`: the request or a part of it is over a size limit.
    TooLarge,
    /// 429 `M_LIMIT_EXCEEDED`: rate limited (the body carries `retry_after_ms`).
    LimitExceeded,
    /// 500 `M_UNKNOWN`: our fault.
    Unknown,
    /// 400 `M_UNKNOWN`: the HTTP request itself is malformed (framing, headers).
    BadHttpRequest,
    /// 408 `M_UNKNOWN`: the request did not arrive in time.
    RequestTimeout,
    /// 411 `M_UNKNOWN`: the body is not framed by `Content-Length`.
    LengthRequired,
    /// 414 `M_UNKNOWN`: the request target is too long.
    UriTooLong,
    /// 431 `M_UNKNOWN`: the request head is too large.
    HeadersTooLarge,
    /// 505 `M_UNKNOWN`: not HTTP/1.0 or 1.1.
    HttpVersionNotSupported,
    /// 503 `M_UNKNOWN`: we cannot answer now (busy, low on disk); senders retry 5xx.
    Unavailable,
}

impl ErrCode {
    /// The `errcode` string.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrCode::NotJson => "M_NOT_JSON",
            ErrCode::BadJson => "M_BAD_JSON",
            ErrCode::InvalidParam => "M_INVALID_PARAM",
            ErrCode::MissingParam => "M_MISSING_PARAM",
            ErrCode::IncompatibleRoomVersion => "M_INCOMPATIBLE_ROOM_VERSION",
            ErrCode::Unauthorized => "M_UNAUTHORIZED",
            ErrCode::Forbidden => "M_FORBIDDEN",
            ErrCode::InviteBlocked => "M_INVITE_BLOCKED",
            ErrCode::NotFound => "M_NOT_FOUND",
            ErrCode::Unrecognized | ErrCode::MethodNotAllowed => "M_UNRECOGNIZED",
            ErrCode::TooLarge => "M_TOO_LARGE",
            ErrCode::LimitExceeded => "M_LIMIT_EXCEEDED",
            ErrCode::Unknown
            | ErrCode::Unavailable
            | ErrCode::BadHttpRequest
            | ErrCode::RequestTimeout
            | ErrCode::LengthRequired
            | ErrCode::UriTooLong
            | ErrCode::HeadersTooLarge
            | ErrCode::HttpVersionNotSupported => "M_UNKNOWN",
        }
    }

    /// The HTTP status answered with this code.
    pub const fn status(self) -> u16 {
        match self {
            ErrCode::NotJson
            | ErrCode::BadJson
            | ErrCode::InvalidParam
            | ErrCode::MissingParam
            | ErrCode::IncompatibleRoomVersion
            | ErrCode::BadHttpRequest => 400,
            ErrCode::Unauthorized => 401,
            ErrCode::Forbidden | ErrCode::InviteBlocked => 403,
            ErrCode::NotFound | ErrCode::Unrecognized => 404,
            ErrCode::MethodNotAllowed => 405,
            ErrCode::RequestTimeout => 408,
            ErrCode::LengthRequired => 411,
            ErrCode::TooLarge => 413,
            ErrCode::UriTooLong => 414,
            ErrCode::HeadersTooLarge => 431,
            ErrCode::LimitExceeded => 429,
            ErrCode::Unknown => 500,
            ErrCode::Unavailable => 503,
            ErrCode::HttpVersionNotSupported => 505,
        }
    }
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrCode::*;

    #[test]
    fn pairs() {
        for (code, status, text) in [
            (NotJson, 400, "M_NOT_JSON"),
            (IncompatibleRoomVersion, 400, "M_INCOMPATIBLE_ROOM_VERSION"),
            (Unauthorized, 401, "M_UNAUTHORIZED"),
            (InviteBlocked, 403, "M_INVITE_BLOCKED"),
            (MethodNotAllowed, 405, "M_UNRECOGNIZED"),
            (TooLarge, 413, "M_TOO_LARGE"),
            (LimitExceeded, 429, "M_LIMIT_EXCEEDED"),
            (Unavailable, 503, "M_UNKNOWN"),
        ] {
            assert_eq!((code.status(), code.as_str()), (status, text));
        }
    }
}
