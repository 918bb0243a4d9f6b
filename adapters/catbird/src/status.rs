//! HTTP answers into the machine's failures.
//!
//! The real server sends four shapes of error: an XRPC body `{"error", "message"}`, an
//! `{"error"}` body alone (auth), a bare status with an empty body (most handlers: 403 for
//! not a member *and* for an unknown conversation, 401 for a bad or replayed token, 400 for
//! a bad cursor), and axum's `text/plain` rejections. The mapping, per `DESIGN.md`:
//! permanent only for a conversation that is gone or not ours; 401 is never permanent; 429
//! and 5xx are transient; a 400 on a stream that carried a cursor drops the cursor.

use gapless::{Failure, Permanent, StreamError};
use serde::Deserialize;
use std::time::Duration;

/// An XRPC error body, when there is one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct XrpcError {
    /// The error name (`NotMember`, `ConvoNotFound`, `InvalidCursor`, …) or, from the auth
    /// layer, a sentence.
    #[serde(default)]
    pub error: Option<String>,
    /// A human-readable message.
    #[serde(default)]
    pub message: Option<String>,
}

/// What an error answer said, for reports (never contains a token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The XRPC body, if it was one.
    pub xrpc: Option<XrpcError>,
    /// A `text/plain` body, shortened.
    pub text: Option<String>,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<Duration>,
}

impl ErrorAnswer {
    /// Reads an error answer. `retry_after` is the header's value, if any (seconds; an HTTP
    /// date is not honoured and counts as absent).
    pub fn parse(status: u16, retry_after: Option<&str>, body: &[u8]) -> ErrorAnswer {
        let xrpc = serde_json::from_slice::<XrpcError>(body)
            .ok()
            .filter(|x| x.error.is_some() || x.message.is_some());
        let text = if xrpc.is_none() && !body.is_empty() {
            Some(String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
        } else {
            None
        };
        let retry_after = retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(3600)));
        ErrorAnswer {
            status,
            xrpc,
            text,
            retry_after,
        }
    }

    fn name(&self) -> Option<&str> {
        self.xrpc.as_ref().and_then(|x| x.error.as_deref())
    }

    fn permanent_by_name(&self) -> Option<Permanent> {
        match self.name()? {
            "NotMember" => Some(Permanent::NotMember),
            "ConvoNotFound" => Some(Permanent::NotFound),
            _ => None,
        }
    }

    /// The failure of a `getMessages` call.
    pub fn fetch_failure(&self) -> Failure {
        if let Some(p) = self.permanent_by_name() {
            return Failure::Permanent(p);
        }
        match self.status {
            401 => Failure::Unauthorized,
            403 => Failure::Permanent(Permanent::Forbidden),
            400 if self.name() == Some("InvalidCursor") => {
                Failure::Permanent(Permanent::InvalidCursor)
            }
            429 => Failure::RateLimited {
                retry_after: self.retry_after,
            },
            // A bare 404 is more likely a wrong base URL than a gone conversation: clearing
            // every conversation for it would be worse than retrying.
            _ => Failure::Transient,
        }
    }

    /// The failure of a `streamConvoEvents` call; `had_cursor` says whether it carried one.
    pub fn stream_error(&self, had_cursor: bool) -> StreamError {
        if let Some(p) = self.permanent_by_name() {
            return StreamError::Permanent(p);
        }
        match self.status {
            401 => StreamError::Unauthorized,
            403 => StreamError::Permanent(Permanent::Forbidden),
            400 if had_cursor => StreamError::InvalidCursor,
            // The account's quota (or the socket limit): every stream open waits.
            429 => StreamError::RateLimited {
                retry_after: self.retry_after,
            },
            _ => StreamError::Transient,
        }
    }
}
