//! The shared stream of [`Api::MlsChat`](crate::Api::MlsChat): one WebSocket for every
//! live conversation. What both drivers do with it, written once; the drivers only move
//! bytes (an HTTP POST, a WebSocket connect, the messages read).
//!
//! A connection, as [`SharedCall`] lays it out:
//!
//! 1. A ticket: `POST` [`SharedCall::ticket_path`] with [`SharedCall::ticket_body`] (`{}`:
//!    a global ticket, every conversation of the account) and a bearer token asked for
//!    [`SharedCall::TICKET_NSID`]. A ticket lives 30 s, so each connect asks for a new one.
//!    [`SharedCall::ticket_answer`] reads the answer into the socket URL, or into the
//!    [`Input::SharedClosed`] to report.
//! 2. The upgrade at that URL, with no `Authorization` header (the ticket is in the query).
//!    A refusal is a plain HTTP answer ([`SharedCall::refused`]); success is
//!    [`SharedCall::opened`].
//! 3. Every message read goes through [`SharedReader::read`]: a binary frame becomes
//!    [`Input::SharedEvent`] for its conversation, a Ping a keepalive for the connection,
//!    an error frame a warning (the connection goes on).
//! 4. The server never sends a close frame: EOF or a close is [`SharedCall::ended`], a read
//!    error [`SharedCall::broke`]; both are transient, and the machine reconnects with a new
//!    ticket and catches every conversation up (the server replays nothing).
//!
//! Events are logged like the other calls (target `gapless_adapter::io`, `call = "socket"`,
//! no `convo`: the socket is every conversation's).

use crate::io::{clean, Said, TransportProblem};
use crate::options::Options;
use gapless::{ConvoId, Input, StreamError, StreamEvent, StreamId};
use gapless_catbird::realtime::{
    decode_frame, subscribe_url, Payload, Refusal, Ticket, TicketScope,
};
use gapless_catbird::{DecodeError, Limits, MLSCHAT_SUBSCRIPTION_TICKET};
use std::fmt;
use std::time::Duration;

/// The logs' target: the same as the other calls' (`gapless_adapter::io`).
const TARGET: &str = "gapless_adapter::io";

/// One connection of the shared stream to open: the ticket request, the socket URL, and
/// every way back to the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedCall {
    /// The machine's name for this connection.
    pub stream: StreamId,
    /// The conversations it must cover (the machine's live ones). A global ticket covers
    /// every conversation of the account when the socket connects, so this is for reports;
    /// events of other conversations are ignored by the machine.
    pub convos: Vec<ConvoId>,
    /// What the ticket asks for: [`TicketScope::Global`].
    pub scope: TicketScope,
}

/// Where a connection attempt failed, for the words of its warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// The ticket request (`getSubscriptionTicket`).
    Ticket,
    /// The WebSocket's connect and upgrade.
    Upgrade,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Ticket => "the WebSocket's ticket request",
            Phase::Upgrade => "the WebSocket",
        })
    }
}

/// What happens after a refused or failed connection, in words.
fn next(error: &StreamError, wait: Option<Duration>) -> String {
    match (error, wait) {
        (StreamError::Unauthorized, _) => "will retry with a new token".into(),
        (_, Some(w)) => format!("will retry in {} s or later", w.as_secs().max(1)),
        _ => "will retry".into(),
    }
}

impl SharedCall {
    /// The ticket method's NSID, for the token provider
    /// (`blue.catbird.mlsChat.getSubscriptionTicket`). The socket itself takes no token.
    pub const TICKET_NSID: &'static str = MLSCHAT_SUBSCRIPTION_TICKET;

    /// The call for a shared stream the machine asked for: a global ticket.
    pub fn new(stream: StreamId, convos: Vec<ConvoId>) -> SharedCall {
        SharedCall {
            stream,
            convos,
            scope: TicketScope::Global,
        }
    }

    /// `/xrpc/blue.catbird.mlsChat.getSubscriptionTicket`, to append to the base URL and
    /// `POST`.
    pub fn ticket_path(&self) -> String {
        TicketScope::path()
    }

    /// The ticket request's JSON body (`{}`: every conversation of the account).
    pub fn ticket_body(&self) -> String {
        self.scope.body()
    }

    /// The ticket request was answered: any status, its `Retry-After` header, the body (at
    /// most [`MAX_TICKET_BODY`](gapless_catbird::realtime::ticket::MAX_TICKET_BODY) bytes
    /// and one more). `Ok`: the URL to open the socket at (see
    /// [`Options::follow_ticket_endpoint`]); `Err`: what to report instead.
    // Once per connect: the size of the closing input does not matter.
    #[allow(clippy::result_large_err)]
    pub fn ticket_answer(
        &self,
        status: u16,
        retry_after: Option<&str>,
        body: &[u8],
        options: &Options,
    ) -> Result<String, Input> {
        if !(200..300).contains(&status) {
            return Err(self.refusal(Phase::Ticket, status, retry_after, body));
        }
        let url = Ticket::decode(body).and_then(|ticket| self.socket_url(&ticket, options));
        url.map_err(|e| {
            let next = "will retry";
            tracing::warn!(
                target: TARGET, call = "socket", result = "undecodable", status, error = %e, next,
                "the server's answer to the WebSocket's ticket request does not serve ({e}); {next}"
            );
            self.closing(StreamError::Transient)
        })
    }

    /// The URL to open the socket at with `ticket`: the configured server's
    /// `/xrpc/blue.catbird.mlsChat.subscribeEvents` ([`subscribe_url`]), or the ticket's
    /// `endpoint` with [`Options::follow_ticket_endpoint`]. No cursor: the server replays
    /// nothing, and silently drops every live event for a cursor it takes for the future.
    pub fn socket_url(&self, ticket: &Ticket, options: &Options) -> Result<String, DecodeError> {
        if options.follow_ticket_endpoint {
            ticket.socket_url(&options.base_url, None)
        } else {
            subscribe_url(&options.base_url, &ticket.ticket, None)
        }
    }

    /// The socket is open (the upgrade answered 101).
    pub fn opened(&self) -> Input {
        tracing::debug!(target: TARGET, call = "socket", result = "ok", status = 101u16,
            convos = self.convos.len(), "WebSocket open");
        Input::SharedOpened {
            stream: self.stream,
        }
    }

    /// The upgrade was refused with a plain HTTP answer (401 for a ticket it does not
    /// take, 429 past the account's five sockets, …).
    pub fn refused(&self, status: u16, retry_after: Option<&str>, body: &[u8]) -> Input {
        self.refusal(Phase::Upgrade, status, retry_after, body)
    }

    fn refusal(&self, phase: Phase, status: u16, retry_after: Option<&str>, body: &[u8]) -> Input {
        let refusal = Refusal::parse(status, retry_after, body, &self.scope, false);
        let wait = refusal.retry_after.filter(|w| !w.is_zero());
        let (said, next) = (Said(&refusal.answer), next(&refusal.error, wait));
        let hint = match status {
            429 if phase == Phase::Upgrade => {
                " (the account has the most sockets open that the server allows)"
            }
            _ => "",
        };
        tracing::warn!(
            target: TARGET, call = "socket", result = "refused", status, answer = %said,
            next = %next, "the server refused {phase}: {said}{hint}; {next}"
        );
        // The machine waits out the server's `Retry-After` itself: a 429 is
        // `StreamError::RateLimited`, which pauses every stream open of the account.
        self.closed(Some(refusal.error))
    }

    /// No answer at all (see [`TransportProblem::of`]): transient.
    pub fn unreachable(&self, phase: Phase, problem: TransportProblem) -> Input {
        let next = "will retry";
        tracing::warn!(
            target: TARGET, call = "socket", result = "unreachable", problem = %problem, next,
            "cannot reach the server for {phase} ({problem}); {next}"
        );
        self.closed(Some(StreamError::Transient))
    }

    /// The request was not sent (no token: the provider's failure is logged) or its
    /// answer broke off: transient.
    pub fn failed(&self) -> Input {
        tracing::debug!(target: TARGET, call = "socket", result = "no answer", "no answer");
        self.closed(Some(StreamError::Transient))
    }

    /// The connection ended: EOF or a close (the real server never sends a close frame;
    /// it just drops TCP). Normal for this server, and transient: reconnect with a new
    /// ticket, catching up every conversation.
    pub fn ended(&self) -> Input {
        tracing::debug!(target: TARGET, call = "socket", result = "ended", "WebSocket ended");
        self.closed(Some(StreamError::Transient))
    }

    /// Reading failed (a reset, a protocol error, a frame over the size limit): transient.
    pub fn broke(&self, error: &dyn fmt::Display) -> Input {
        tracing::debug!(target: TARGET, call = "socket", result = "broke", error = %error,
            "WebSocket broke");
        self.closed(Some(StreamError::Transient))
    }

    fn closing(&self, error: StreamError) -> Input {
        self.closed(Some(error))
    }

    /// [`Input::SharedClosed`] for this connection.
    pub fn closed(&self, error: Option<StreamError>) -> Input {
        Input::SharedClosed {
            stream: self.stream,
            error,
        }
    }

    /// A reader for its messages.
    pub fn reader(&self, limits: &Limits) -> SharedReader {
        SharedReader {
            stream: self.stream,
            limits: *limits,
        }
    }
}

/// One message read from the socket, as any WebSocket library hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketMessage<'a> {
    /// A binary message: one DAG-CBOR frame.
    Binary(&'a [u8]),
    /// A text message (the real server sends none).
    Text(&'a str),
    /// A Ping (the library answers it with a Pong).
    Ping,
    /// A Pong.
    Pong,
    /// A close frame (the real server sends none).
    Close,
}

/// What to do with a message read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// Send this input to the machine and read on.
    Input(Input),
    /// Nothing to send; read on.
    Nothing,
    /// Send this input (it closes the connection) and stop reading.
    Close(Input),
}

/// Turns the socket's messages into inputs.
#[derive(Clone, Debug)]
pub struct SharedReader {
    stream: StreamId,
    limits: Limits,
}

impl SharedReader {
    /// One message: a frame's event for its conversation (`convo: None` for one that
    /// names none, such as an `infoEvent`); a Ping is a keepalive for the connection; an
    /// error frame is logged and the connection goes on (the server goes on after it); a
    /// frame that does not decode closes the connection (logged), and the catch-up after
    /// the reconnect fetches what it held; a close ends it (transient, as EOF).
    pub fn read(&self, message: SocketMessage<'_>) -> Read {
        match message {
            SocketMessage::Binary(bytes) => match decode_frame(bytes, &self.limits) {
                Ok(frame) => match frame.payload {
                    Payload::Event(event) => Read::Input(Input::SharedEvent {
                        stream: self.stream,
                        convo: frame.convo,
                        event,
                    }),
                    Payload::Error(error) => {
                        let name = clean(&error.error);
                        let said = match error.message.as_deref().map(clean) {
                            Some(m) if !m.is_empty() => format!("{name} (\"{m}\")"),
                            _ => name,
                        };
                        let next = "carries on";
                        tracing::warn!(
                            target: TARGET, call = "socket", result = "error frame", error = %said,
                            next, "the server sent an error frame on the WebSocket: {said}; gapless {next}"
                        );
                        Read::Nothing
                    }
                },
                Err(e) => {
                    let next = "will reconnect";
                    tracing::warn!(
                        target: TARGET, call = "socket", result = "undecodable", error = %e, next,
                        "the server sent a WebSocket frame that does not decode ({e}); {next}"
                    );
                    Read::Close(self.closed())
                }
            },
            SocketMessage::Ping => Read::Input(Input::SharedEvent {
                stream: self.stream,
                convo: None,
                event: StreamEvent::Keepalive,
            }),
            SocketMessage::Text(text) => {
                tracing::debug!(target: TARGET, call = "socket", len = text.len(),
                    "a text message on the WebSocket (ignored)");
                Read::Nothing
            }
            SocketMessage::Pong => Read::Nothing,
            SocketMessage::Close => {
                tracing::debug!(target: TARGET, call = "socket", result = "ended",
                    "the server closed the WebSocket");
                Read::Close(self.closed())
            }
        }
    }

    fn closed(&self) -> Input {
        Input::SharedClosed {
            stream: self.stream,
            error: Some(StreamError::Transient),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapless::Permanent;
    use gapless_catbird::realtime::{encode_error_frame, encode_event_frame};

    fn call() -> SharedCall {
        SharedCall::new(StreamId(3), vec!["c0".into(), "c1".into()])
    }

    fn error(closing: &Input) -> Option<StreamError> {
        match closing {
            Input::SharedClosed { stream, error } => {
                assert_eq!(*stream, StreamId(3));
                error.clone()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_global_ticket_is_asked_for_and_the_socket_goes_to_the_configured_server() {
        let call = call();
        assert_eq!(
            call.ticket_path(),
            "/xrpc/blue.catbird.mlsChat.getSubscriptionTicket"
        );
        assert_eq!(call.ticket_body(), "{}");
        assert_eq!(
            SharedCall::TICKET_NSID,
            "blue.catbird.mlsChat.getSubscriptionTicket"
        );
        // The real server names production even when asked elsewhere.
        let body = br#"{"ticket":"t.k","endpoint":"wss://mls.catbird.blue/xrpc/blue.catbird.mls.subscribeConvoEvents","expiresAt":"2026-02-15T00:00:30Z"}"#;
        let mut options = Options::new("http://127.0.0.1:38081/");
        assert_eq!(
            call.ticket_answer(200, None, body, &options).unwrap(),
            "ws://127.0.0.1:38081/xrpc/blue.catbird.mlsChat.subscribeEvents?ticket=t.k"
        );
        options.follow_ticket_endpoint = true;
        assert_eq!(
            call.ticket_answer(200, None, body, &options).unwrap(),
            "wss://mls.catbird.blue/xrpc/blue.catbird.mls.subscribeConvoEvents?ticket=t.k"
        );
        let https = Options::new("https://chat.example/base");
        assert_eq!(
            call.ticket_answer(200, None, body, &https).unwrap(),
            "wss://chat.example/base/xrpc/blue.catbird.mlsChat.subscribeEvents?ticket=t.k"
        );
        // An answer that is not a ticket: transient, at once.
        let bad = call.ticket_answer(200, None, b"{}", &options).unwrap_err();
        assert_eq!(error(&bad), Some(StreamError::Transient));
    }

    #[test]
    fn refusals_are_never_permanent_for_a_global_ticket_and_retry_after_is_kept() {
        let call = call();
        let options = Options::new("http://127.0.0.1:1");
        let r = call.ticket_answer(401, None, br#"{"error":"Replay detected"}"#, &options);
        assert_eq!(error(&r.unwrap_err()), Some(StreamError::Unauthorized));
        // 403 on a global ticket names no conversation to clear.
        let r = call.ticket_answer(403, None, b"", &options).unwrap_err();
        assert_eq!(error(&r), Some(StreamError::Transient));
        assert_ne!(
            error(&r),
            Some(StreamError::Permanent(Permanent::Forbidden))
        );
        let r = call.refused(429, Some("7"), b"");
        // The machine pauses every stream open of the account that long.
        assert_eq!(
            error(&r),
            Some(StreamError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            })
        );
        assert_eq!(
            error(&call.refused(401, None, b"")),
            Some(StreamError::Unauthorized)
        );
        assert_eq!(
            error(&call.unreachable(Phase::Upgrade, TransportProblem::Refused)),
            Some(StreamError::Transient)
        );
        assert_eq!(
            call.ended(),
            Input::SharedClosed {
                stream: StreamId(3),
                error: Some(StreamError::Transient)
            }
        );
    }

    #[test]
    fn frames_are_routed_by_conversation_pings_keep_alive_and_error_frames_pass() {
        let reader = call().reader(&Limits::default());
        let body = serde_json::json!({
            "$type": "blue.catbird.mls.subscribeConvoEvents#messageEvent",
            "seq": 1, "cursor": "01KHF3ZK7X5Q6GQ1B2C3D4E5F6",
            "message": {
                "id": "m1", "convoId": "c1", "seq": 4, "epoch": 1,
                "createdAt": "2026-02-15T00:00:00.000Z", "messageType": "app",
                "ciphertext": {"$bytes": "AAE"},
            },
        });
        let frame = encode_event_frame("#messageEvent", &body);
        match reader.read(SocketMessage::Binary(&frame)) {
            Read::Input(Input::SharedEvent {
                stream,
                convo,
                event: StreamEvent::Message { message, .. },
            }) => {
                assert_eq!(stream, StreamId(3));
                assert_eq!(convo, Some(ConvoId::from("c1")));
                assert_eq!(message.seq.0, 4);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            reader.read(SocketMessage::Ping),
            Read::Input(Input::SharedEvent {
                stream: StreamId(3),
                convo: None,
                event: StreamEvent::Keepalive
            })
        );
        let error = encode_error_frame("BackfillFailed", Some("Database query failed"));
        assert_eq!(reader.read(SocketMessage::Binary(&error)), Read::Nothing);
        assert_eq!(reader.read(SocketMessage::Pong), Read::Nothing);
        assert_eq!(reader.read(SocketMessage::Text("{}")), Read::Nothing);
        let closed = Input::SharedClosed {
            stream: StreamId(3),
            error: Some(StreamError::Transient),
        };
        assert_eq!(
            reader.read(SocketMessage::Binary(b"\xff\x00")),
            Read::Close(closed.clone())
        );
        assert_eq!(reader.read(SocketMessage::Close), Read::Close(closed));
    }
}
