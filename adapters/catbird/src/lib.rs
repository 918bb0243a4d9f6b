//! # gapless-catbird
//!
//! The wire format of the Catbird MLS delivery server (`blue.catbird.mls` lexicon), as the
//! real server speaks it, for the gapless adapters. Sans-IO: bytes and strings in, the core's
//! [`gapless::Input`] values out; no sockets, no runtime.
//!
//! - [`sse`]: an incremental, bounded server-sent-events decoder (any chunking, WHATWG line
//!   rules, comments surfaced as keepalives).
//! - [`event`]: `streamConvoEvents` frames (`$type`-tagged JSON, bare or in an
//!   `eventWrapper`) into [`gapless::StreamEvent`].
//! - [`message`]: `messageView`, with ciphertext as `{"$bytes": …}` or the older base64url
//!   string, into [`gapless::Message`].
//! - [`messages`]: the `getMessages` request (`sinceSeq` or the older `sinceMessage`) and
//!   response.
//! - [`status`]: HTTP answers (XRPC error bodies, bare statuses, `text/plain` rejections,
//!   `Retry-After`) into [`gapless::Failure`] and [`gapless::StreamError`].
//! - [`realtime`]: the newest API's WebSocket (`blue.catbird.mlsChat.subscribeEvents`):
//!   the subscription ticket, the socket URL, refusals before the upgrade, and bounded
//!   DAG-CBOR frames into [`gapless::StreamEvent`]s routed by conversation.
//! - [`send`]: `sendMessage` of both APIs: the request for a [`gapless::SendRequest`], its
//!   answer, and error answers into a [`gapless::SendFailure`].
//! - [`mlschat`]: the newest API's `getMessages` (always `sinceSeq`, `type=app`) into a
//!   [`gapless::Page`], and `sendMessage`.
//!
//! ```
//! use gapless_catbird::{event, sse::{Frame, Limits, SseDecoder}};
//! use gapless::StreamEvent;
//!
//! let mut decoder = SseDecoder::new(Limits::default());
//! decoder.push(b": keepalive\n\ndata: {\"$type\":\"blue.catbird.mls.streamConvoEvents#infoEvent\",");
//! decoder.push(b"\"cursor\":\"01M8\",\"info\":\"slow-consumer\"}\n\n");
//! let mut events = Vec::new();
//! while let Some(frame) = decoder.next_frame().unwrap() {
//!     events.push(event::decode_frame(&frame, &Limits::default()).unwrap());
//! }
//! assert_eq!(events[0], Some(StreamEvent::Keepalive));
//! assert!(matches!(&events[1], Some(StreamEvent::Info { info, .. }) if info == "slow-consumer"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod event;
pub mod message;
pub mod messages;
pub mod mlschat;
pub mod realtime;
pub mod send;
pub mod sse;
pub mod status;

mod error;

pub use error::DecodeError;
pub use sse::Limits;

/// `getMessages`.
pub const GET_MESSAGES: &str = "blue.catbird.mls.getMessages";
/// `streamConvoEvents`.
pub const STREAM_CONVO_EVENTS: &str = "blue.catbird.mls.streamConvoEvents";
/// `sendMessage`.
pub const SEND_MESSAGE: &str = "blue.catbird.mls.sendMessage";

/// `blue.catbird.mlsChat.getMessages` (the newest API; the `blue.catbird.mls.*` REST
/// routes answer 404 on current servers).
pub const MLSCHAT_GET_MESSAGES: &str = "blue.catbird.mlsChat.getMessages";
/// `blue.catbird.mlsChat.getSubscriptionTicket`: the ticket the WebSocket needs.
pub const MLSCHAT_SUBSCRIPTION_TICKET: &str = "blue.catbird.mlsChat.getSubscriptionTicket";
/// `blue.catbird.mlsChat.subscribeEvents`: the WebSocket (ticket in the query, no token).
pub const MLSCHAT_SUBSCRIBE_EVENTS: &str = "blue.catbird.mlsChat.subscribeEvents";
/// `blue.catbird.mls.subscribeConvoEvents`: the legacy path of the same WebSocket, which
/// the real server's tickets name as their `endpoint` by default.
pub const LEGACY_SUBSCRIBE_CONVO_EVENTS: &str = "blue.catbird.mls.subscribeConvoEvents";
/// `blue.catbird.mlsChat.sendMessage`.
pub const MLSCHAT_SEND_MESSAGE: &str = "blue.catbird.mlsChat.sendMessage";

/// The XRPC path of a method: `/xrpc/<nsid>`.
pub fn xrpc_path(nsid: &str) -> String {
    format!("/xrpc/{nsid}")
}
