//! The realtime side of the newest Catbird API (`blue.catbird.mlsChat.*`): one WebSocket,
//! DAG-CBOR frames, many conversations. Sans-IO: the adapter opens the socket and passes
//! each binary message in; what comes out is the machine's [`gapless::StreamEvent`] with the
//! conversation it belongs to.
//!
//! The steps of a connection, as the real server does them:
//!
//! 1. [`ticket`]: `POST /xrpc/blue.catbird.mlsChat.getSubscriptionTicket` with a bearer
//!    token, for one conversation or for all of the user's ([`TicketScope`]). The answer
//!    ([`Ticket`]) lives 30 s and may be used more than once within them.
//! 2. The upgrade: `GET <endpoint>?ticket=…[&cursor=…]` ([`Ticket::socket_url`]). A refusal
//!    is a plain HTTP answer before the upgrade; [`Refusal::parse`] maps it to a
//!    [`gapless::StreamError`].
//! 3. [`frame`]: each binary message is a DAG-CBOR header `{"op":1,"t":"#<type>"}` followed
//!    by a DAG-CBOR body; [`decode_frame`] turns it into a [`Frame`]: the conversation, the
//!    per-connection frame `seq` (diagnostics only) and the event, or an error frame.
//! 4. Keepalive: the server sends a WebSocket Ping right after the upgrade and then every
//!    30 s, and no application-level heartbeat; the adapter reports each Ping as
//!    [`gapless::StreamEvent::Keepalive`].
//! 5. [`client`]: the frames a client may send ([`ClientFrame`]: `#ping`, `#typing`).
//!
//! What the server does **not** do, which the machine covers: a cursor replays nothing on
//! reconnect (catch up with `getMessages sinceSeq` after every connect), commits never come
//! over the socket, a slow consumer loses events silently, the frame `seq` restarts at 1 on
//! every connection and has no gaps when events are lost, and the connection ends with a
//! bare TCP close (no close frame): treat it as [`gapless::StreamError::Transient`] and
//! reconnect with a new ticket.
//!
//! ```
//! use gapless_catbird::realtime::{decode_frame, encode_event_frame, Payload};
//! use gapless_catbird::Limits;
//! use gapless::StreamEvent;
//!
//! let body = serde_json::json!({
//!     "$type": "blue.catbird.mls.subscribeConvoEvents#typingEvent",
//!     "seq": 4, "cursor": "01M8KNDNZGK5VEXEGGTSH2QQAR",
//!     "convoId": "2e32", "did": "did:web:203.0.113.1", "isTyping": true,
//! });
//! let bytes = encode_event_frame("#typingEvent", &body);
//! let frame = decode_frame(&bytes, &Limits::default()).unwrap();
//! assert_eq!(frame.convo.as_ref().map(|c| c.as_str()), Some("2e32"));
//! assert_eq!(frame.seq, Some(4));
//! assert!(matches!(frame.payload, Payload::Event(StreamEvent::Other { .. })));
//! ```

pub mod client;
pub mod frame;
pub mod ticket;

pub use client::ClientFrame;
pub use frame::{decode_frame, encode_error_frame, encode_event_frame, ErrorFrame, Frame, Payload};
pub use ticket::{subscribe_url, Refusal, Ticket, TicketScope};
