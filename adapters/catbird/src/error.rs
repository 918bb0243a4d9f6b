//! Decoding errors: what was expected and what came.

use thiserror::Error;

/// A response or event that could not be decoded. Nothing is lost by it: the adapter reports
/// it and the machine fetches again.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// An SSE line longer than the limit.
    #[error("SSE line longer than {limit} bytes")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// An SSE event whose data is larger than the limit.
    #[error("SSE event larger than {limit} bytes")]
    EventTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A response body larger than the limit.
    #[error("response body of {len} bytes, more than the limit of {limit}")]
    BodyTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A page with more messages than the limit.
    #[error("page of {len} messages, more than the limit of {limit}")]
    PageTooLarge {
        /// Messages in it.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not UTF-8.
    #[error("not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// Not the JSON expected.
    #[error("unexpected JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// An event without `$type` (bare or inside `event`).
    #[error("event without a $type: {0}")]
    NoType(String),
    /// Ciphertext that is neither `{{"$bytes": base64}}` nor a base64url string.
    #[error("ciphertext is not base64: {0}")]
    Ciphertext(String),
    /// Ciphertext larger than the limit.
    #[error("ciphertext of {len} bytes, more than the limit of {limit}")]
    CiphertextTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A WebSocket frame larger than the limit.
    #[error("WebSocket frame of {len} bytes, more than the limit of {limit}")]
    FrameTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A part of a WebSocket frame that is not the DAG-CBOR expected.
    #[error("WebSocket frame {part}: {detail}")]
    Cbor {
        /// Which part: `header`, `body`, `client frame`.
        part: &'static str,
        /// What was expected and what came.
        detail: String,
    },
    /// A WebSocket endpoint or base URL that cannot be connected to.
    #[error("WebSocket URL {url:?}: {reason}")]
    Endpoint {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `sendMessage` answer that does not say what it must.
    #[error("sendMessage answer: {0}")]
    SendAnswer(String),
    /// A message whose `convoId` is not the conversation asked for.
    #[error("message of conversation {got}, expected {expected}")]
    WrongConvo {
        /// The conversation asked for.
        expected: String,
        /// The one in the message.
        got: String,
    },
}
