//! The IO a driver does for the machine, and the way back: HTTP answers and SSE bytes into
//! inputs. The driver only moves bytes.
//!
//! Every call's outcome is also a `tracing` event (target `gapless_adapter::io`) with a
//! sentence for people and fields for programs that report per conversation (the CLI does):
//!
//! - `convo`; `call`: `"stream"` or `"fetch"` (or `"socket"`, with no `convo`: the mlsChat
//!   WebSocket every conversation shares, see [`SharedCall`]);
//! - `result`: `"ok"` (debug: the server answered 2xx; `status`), `"refused"` (warn: any
//!   other status; `status`, `answer` in words), `"unreachable"` (warn: no answer at all;
//!   `problem`, a [`TransportProblem`] in words), `"undecodable"` (warn: the server sent
//!   something that does not decode; `error`), `"no answer"` (debug: a fetch that was not
//!   sent, for want of a token, or whose body broke off);
//! - `next`, on warnings: what gapless does about it, in words (`"will retry"`, …).
//!
//! Each fetch logs exactly one of these; a stream logs one when it opens or is refused or
//! unreachable, and one for an undecodable frame.

use crate::options::Api;
use crate::socket::SharedCall;
use gapless::{ConvoId, Failure, FetchRequest, Input, StreamError, StreamEvent, StreamId};
use gapless_catbird::messages::{stream_path_and_query, GetMessages, GetMessagesResponse, Paging};
use gapless_catbird::sse::SseDecoder;
use gapless_catbird::status::ErrorAnswer;
use gapless_catbird::{
    event, mlschat, DecodeError, Limits, GET_MESSAGES, MLSCHAT_GET_MESSAGES, STREAM_CONVO_EVENTS,
};
use std::fmt;

/// Why a request got no answer from the server at all. The drivers tell it from their HTTP
/// client's error ([`TransportProblem::of`] reads any error's chain of causes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportProblem {
    /// Nothing listens at the server's address (connection refused).
    Refused,
    /// The server's name does not resolve.
    Dns,
    /// The TLS handshake failed (a certificate, or not TLS at all).
    Tls,
    /// No answer in time.
    Timeout,
    /// The network or the host is unreachable.
    NoRoute,
    /// The connection was reset or closed before an answer.
    Reset,
    /// Anything else.
    Other,
}

impl TransportProblem {
    /// Reads an error and its causes: an `std::io::Error`'s kind where there is one, else
    /// the words of the resolver and TLS errors of reqwest (hyper) and ureq.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> TransportProblem {
        use std::io::ErrorKind as K;
        let mut found = TransportProblem::Other;
        let mut cause = Some(error);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    K::ConnectionRefused => return TransportProblem::Refused,
                    K::TimedOut => return TransportProblem::Timeout,
                    K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
                        return TransportProblem::NoRoute
                    }
                    K::ConnectionReset
                    | K::ConnectionAborted
                    | K::BrokenPipe
                    | K::UnexpectedEof
                    | K::NotConnected => found = TransportProblem::Reset,
                    _ => {}
                }
            }
            let text = e.to_string().to_ascii_lowercase();
            let said = |words: &[&str]| words.iter().any(|w| text.contains(w));
            if said(&[
                "dns error",
                "failed to lookup address",
                "name or service not known",
                "nodename nor servname",
                "no such host",
                "host not found",
                "temporary failure in name resolution",
            ]) {
                return TransportProblem::Dns;
            }
            if said(&["certificate", "tls", "handshake", "corrupt message"]) {
                return TransportProblem::Tls;
            }
            if said(&["timed out", "timeout"]) {
                return TransportProblem::Timeout;
            }
            cause = e.source();
        }
        found
    }
}

impl fmt::Display for TransportProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportProblem::Refused => "connection refused",
            TransportProblem::Dns => "DNS lookup failed",
            TransportProblem::Tls => "TLS error",
            TransportProblem::Timeout => "timed out",
            TransportProblem::NoRoute => "network unreachable",
            TransportProblem::Reset => "connection reset",
            TransportProblem::Other => "connection failed",
        })
    }
}

/// An error answer in words: `401 Unauthorized: ExpiredToken ("Token has expired")`. What
/// the server wrote is shortened and stripped of control characters.
pub(crate) struct Said<'a>(pub(crate) &'a ErrorAnswer);

impl fmt::Display for Said<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        write!(f, "{}", a.status)?;
        if let Some(reason) = reason(a.status) {
            write!(f, " {reason}")?;
        }
        let name = a.xrpc.as_ref().and_then(|x| x.error.as_deref());
        let message = a.xrpc.as_ref().and_then(|x| x.message.as_deref());
        if let Some(name) = name {
            write!(f, ": {}", clean(name))?;
        }
        match message.or(a.text.as_deref()).map(clean) {
            Some(m) if !m.is_empty() => write!(f, " (\"{m}\")")?,
            // What the real server means by a bare 403.
            _ if a.status == 403 && name.is_none() => {
                f.write_str(" (not a member, or no such conversation)")?
            }
            _ => {}
        }
        if let Some(after) = a.retry_after {
            write!(f, ", retry after {} s", after.as_secs())?;
        }
        Ok(())
    }
}

fn reason(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
}

/// Server-written text, safe to print on a terminal: one line, no control characters, at
/// most 160 characters.
pub(crate) fn clean(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.split_whitespace().collect::<Vec<_>>().join(" ");
    if trimmed.chars().count() > 160 {
        let cut: String = trimmed.chars().take(159).collect();
        format!("{cut}…")
    } else {
        trimmed
    }
}

/// What happens after a failed fetch, in words.
fn after_fetch(failure: &Failure) -> String {
    match failure {
        Failure::Permanent(_) => "stops syncing this conversation".into(),
        Failure::RateLimited {
            retry_after: Some(d),
        } => format!("will retry in {} s or later", d.as_secs().max(1)),
        _ => "will retry".into(),
    }
}

/// What happens after a refused stream, in words.
fn after_stream(error: &StreamError) -> &'static str {
    match error {
        StreamError::Permanent(_) => "stops syncing this conversation",
        StreamError::InvalidCursor => "will reconnect without the cursor",
        _ => "will retry",
    }
}

/// How to speak to the server.
#[derive(Clone, Debug, Default)]
pub struct Wire {
    /// `sinceSeq` (current servers) or `sinceMessage` (older ones).
    pub paging: Paging,
    /// Bounds on what the server may send.
    pub limits: Limits,
}

/// IO to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Io {
    /// Open a stream and report on it with the [`StreamCall`].
    Open(StreamCall),
    /// Stop reading a stream; report nothing more about it.
    Close {
        /// The conversation.
        convo: ConvoId,
        /// The stream.
        stream: StreamId,
    },
    /// Open the shared stream ([`Api::MlsChat`](crate::Api::MlsChat): a ticket, then the
    /// WebSocket) and report on it with the [`SharedCall`].
    OpenShared(SharedCall),
    /// Stop reading the shared stream; report nothing more about it.
    CloseShared {
        /// The connection.
        stream: StreamId,
    },
    /// Make a fetch and report its answer with the [`FetchCall`].
    Fetch(FetchCall),
    /// Send a message (POST) and report its answer with the [`SendCall`](crate::SendCall).
    Send(crate::SendCall),
}

/// One `streamConvoEvents` connection to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamCall {
    /// The conversation.
    pub convo: ConvoId,
    /// The machine's name for this connection.
    pub stream: StreamId,
    /// Whether it resumes from a cursor.
    pub had_cursor: bool,
    /// Path and query, to append to the base URL.
    pub path_and_query: String,
}

impl StreamCall {
    /// The method's NSID, for the token provider.
    pub const NSID: &'static str = STREAM_CONVO_EVENTS;

    /// The call for a stream the machine asked for.
    pub fn new(convo: ConvoId, stream: StreamId, cursor: Option<&gapless::Cursor>) -> StreamCall {
        StreamCall {
            path_and_query: stream_path_and_query(&convo, cursor),
            had_cursor: cursor.is_some(),
            convo,
            stream,
        }
    }

    /// The server accepted the stream (2xx).
    pub fn opened(&self) -> Input {
        tracing::debug!(convo = %self.convo, call = "stream", result = "ok", "stream opened");
        Input::StreamOpened {
            convo: self.convo.clone(),
            stream: self.stream,
        }
    }

    /// The server refused it with a non-2xx answer.
    pub fn refused(&self, status: u16, retry_after: Option<&str>, body: &[u8]) -> Input {
        let answer = ErrorAnswer::parse(status, retry_after, body);
        let error = answer.stream_error(self.had_cursor);
        let (said, next) = (Said(&answer), after_stream(&error));
        tracing::warn!(
            convo = %self.convo, call = "stream", result = "refused", status, answer = %said, next,
            "{}: the server refused the stream: {said}; {next}", self.convo
        );
        self.closed(Some(error))
    }

    /// The request got no answer (see [`TransportProblem::of`]): transient.
    pub fn unreachable(&self, problem: TransportProblem) -> Input {
        let next = "will retry";
        tracing::warn!(
            convo = %self.convo, call = "stream", result = "unreachable", problem = %problem, next,
            "{}: cannot reach the server ({problem}); {next}", self.convo
        );
        self.closed(Some(StreamError::Transient))
    }

    /// It ended: cleanly (`None`), or by a transport or decode error.
    pub fn closed(&self, error: Option<StreamError>) -> Input {
        Input::StreamClosed {
            convo: self.convo.clone(),
            stream: self.stream,
            error,
        }
    }

    /// A decoder for its body.
    pub fn reader(&self, limits: &Limits) -> StreamReader {
        StreamReader {
            convo: self.convo.clone(),
            stream: self.stream,
            decoder: SseDecoder::new(*limits),
            limits: *limits,
        }
    }
}

/// Decodes a stream's body, chunk by chunk, into inputs.
#[derive(Debug)]
pub struct StreamReader {
    convo: ConvoId,
    stream: StreamId,
    decoder: SseDecoder,
    limits: Limits,
}

impl StreamReader {
    /// Feeds a chunk; pushes the inputs of every complete event to `out`. On an
    /// undecodable frame (logged) it returns the input that closes the stream: it can no
    /// longer be trusted, and the catch-up after the reopen fetches what the frame held.
    /// The events decoded before the bad frame are in `out` either way.
    #[must_use = "a closing input must be sent, and the stream dropped"]
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Input>) -> Option<Input> {
        let e = self.decode(bytes, out).err()?;
        let next = "will reconnect";
        tracing::warn!(
            convo = %self.convo, call = "stream", result = "undecodable", error = %e, next,
            "{}: the server sent a stream event that does not decode ({e}); {next}", self.convo
        );
        Some(Input::StreamClosed {
            convo: self.convo.clone(),
            stream: self.stream,
            error: Some(StreamError::Transient),
        })
    }

    fn decode(&mut self, bytes: &[u8], out: &mut Vec<Input>) -> Result<(), DecodeError> {
        self.decoder.push(bytes);
        while let Some(frame) = self.decoder.next_frame()? {
            if let Some(event) = event::decode_frame(&frame, &self.limits)? {
                out.push(self.input(event));
            }
        }
        Ok(())
    }

    fn input(&self, event: StreamEvent) -> Input {
        Input::StreamEvent {
            convo: self.convo.clone(),
            stream: self.stream,
            event,
        }
    }
}

/// One `getMessages` call to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchCall {
    /// What the machine asked for.
    pub request: FetchRequest,
    /// Path and query, to append to the base URL.
    pub path_and_query: String,
    /// The method's NSID, for the token provider: [`FetchCall::NSID`]
    /// (`blue.catbird.mls.getMessages`) or `blue.catbird.mlsChat.getMessages`.
    pub nsid: &'static str,
}

impl FetchCall {
    /// The SSE-era method's NSID ([`Api::Mls`](crate::Api::Mls)); a call's own is
    /// [`FetchCall::nsid`].
    pub const NSID: &'static str = GET_MESSAGES;

    /// The call for a fetch, on the SSE-era API ([`Api::Mls`](crate::Api::Mls)).
    pub fn new(request: FetchRequest, wire: &Wire) -> FetchCall {
        FetchCall::for_api(request, wire, Api::Mls)
    }

    /// The call for a fetch on `api`: `blue.catbird.mls.getMessages` (paged as
    /// [`Wire::paging`] says) or `blue.catbird.mlsChat.getMessages` (always `sinceSeq`,
    /// `type=app`).
    pub fn for_api(request: FetchRequest, wire: &Wire, api: Api) -> FetchCall {
        let path_and_query = match api {
            Api::Mls => GetMessages::for_fetch(&request, wire.paging).path_and_query(),
            Api::MlsChat => mlschat::GetMessages::for_fetch(&request).path_and_query(),
        };
        FetchCall {
            request,
            path_and_query,
            nsid: api.get_messages_nsid(),
        }
    }

    /// The server answered: any status, its `Retry-After` header, the whole body.
    pub fn answer(
        &self,
        status: u16,
        retry_after: Option<&str>,
        body: &[u8],
        limits: &Limits,
    ) -> Input {
        let convo = &self.request.convo;
        if !(200..300).contains(&status) {
            let answer = ErrorAnswer::parse(status, retry_after, body);
            let failure = answer.fetch_failure();
            let (said, next) = (Said(&answer), after_fetch(&failure));
            tracing::warn!(
                convo = %convo, call = "fetch", result = "refused", status, answer = %said,
                next = %next, "{convo}: the server refused a fetch: {said}; {next}"
            );
            return Input::FetchFailed {
                request: self.request.id,
                failure,
            };
        }
        let page = if self.nsid == MLSCHAT_GET_MESSAGES {
            mlschat::GetMessagesResponse::decode(body, limits)
                .and_then(|r| r.into_page(self.request.id, convo, limits))
        } else {
            GetMessagesResponse::decode(body, limits)
                .and_then(|r| r.into_page(self.request.id, convo, limits))
        };
        match page {
            Ok(page) => {
                tracing::debug!(convo = %convo, call = "fetch", result = "ok", status, "page");
                Input::FetchPage(page)
            }
            Err(e) => {
                let next = "will retry";
                tracing::warn!(
                    convo = %convo, call = "fetch", result = "undecodable", status, error = %e,
                    next, "{convo}: the server sent a page that does not decode ({e}); {next}"
                );
                self.transient()
            }
        }
    }

    /// The request got no answer (see [`TransportProblem::of`]): transient.
    pub fn unreachable(&self, problem: TransportProblem) -> Input {
        let (convo, next) = (&self.request.convo, "will retry");
        tracing::warn!(
            convo = %convo, call = "fetch", result = "unreachable", problem = %problem, next,
            "{convo}: cannot reach the server ({problem}); {next}"
        );
        self.transient()
    }

    /// The request was not sent (no token) or its answer broke off: transient.
    pub fn failed(&self) -> Input {
        tracing::debug!(convo = %self.request.convo, call = "fetch", result = "no answer", "no answer");
        self.transient()
    }

    fn transient(&self) -> Input {
        Input::FetchFailed {
            request: self.request.id,
            failure: gapless::Failure::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapless::{Failure, Permanent, RequestId, Seq};

    fn call() -> FetchCall {
        let request = FetchRequest {
            id: RequestId(7),
            convo: ConvoId::from("c0"),
            since_seq: Seq(3),
            since_id: None,
            limit: 50,
        };
        FetchCall::new(request, &Wire::default())
    }

    #[test]
    fn a_fetch_asks_since_the_seq_and_decodes_its_page() {
        let call = call();
        assert!(call.path_and_query.contains("convoId=c0"));
        assert!(call.path_and_query.contains("sinceSeq=3"));
        let body = br#"{"messages":[{"id":"m4","convoId":"c0","seq":4,"epoch":1,"ciphertext":{"$bytes":"AAE="},"createdAt":"2025-01-01T00:00:00Z"}]}"#;
        match call.answer(200, None, body, &Limits::default()) {
            Input::FetchPage(page) => {
                assert_eq!(page.request, RequestId(7));
                assert_eq!(page.messages[0].seq, Seq(4));
                assert_eq!(page.messages[0].payload, vec![0, 1]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_answers_are_failures_not_pages() {
        let call = call();
        let limits = Limits::default();
        let failure = |input| match input {
            Input::FetchFailed { failure, .. } => failure,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            failure(call.answer(200, None, b"{", &limits)),
            Failure::Transient
        );
        assert_eq!(
            failure(call.answer(403, None, b"", &limits)),
            Failure::Permanent(Permanent::Forbidden)
        );
        assert_eq!(
            failure(call.answer(401, None, b"", &limits)),
            Failure::Unauthorized
        );
        let wrong = br#"{"messages":[{"id":"m4","convoId":"other","seq":4,"epoch":1,"ciphertext":{"$bytes":""}}]}"#;
        assert_eq!(
            failure(call.answer(200, None, wrong, &limits)),
            Failure::Transient
        );
    }

    #[test]
    fn transport_problems_are_read_from_the_causes() {
        use std::io::{Error, ErrorKind};
        #[derive(Debug)]
        struct Wrapped(&'static str, Error);
        impl fmt::Display for Wrapped {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.1)
            }
        }
        let of = |e: &Wrapped| TransportProblem::of(e);
        let refused = Wrapped(
            "client error (Connect)",
            ErrorKind::ConnectionRefused.into(),
        );
        assert_eq!(of(&refused), TransportProblem::Refused);
        let dns = Wrapped(
            "dns error",
            Error::other("failed to lookup address information"),
        );
        assert_eq!(of(&dns), TransportProblem::Dns);
        let tls = Wrapped(
            "error sending request",
            Error::new(
                ErrorKind::InvalidData,
                "invalid peer certificate: UnknownIssuer",
            ),
        );
        assert_eq!(of(&tls), TransportProblem::Tls);
        let reset = Wrapped("io", ErrorKind::ConnectionReset.into());
        assert_eq!(of(&reset), TransportProblem::Reset);
        assert_eq!(
            of(&Wrapped("?", Error::other("?"))),
            TransportProblem::Other
        );
        assert_eq!(TransportProblem::Refused.to_string(), "connection refused");
    }

    #[test]
    fn error_answers_read_as_words() {
        let said = |status, retry: Option<&str>, body: &[u8]| {
            Said(&ErrorAnswer::parse(status, retry, body)).to_string()
        };
        assert_eq!(
            said(
                401,
                None,
                br#"{"error":"ExpiredToken","message":"Token has expired"}"#
            ),
            r#"401 Unauthorized: ExpiredToken ("Token has expired")"#
        );
        assert_eq!(
            said(401, None, br#"{"message":"Token has expired"}"#),
            r#"401 Unauthorized ("Token has expired")"#
        );
        assert_eq!(
            said(403, None, b""),
            "403 Forbidden (not a member, or no such conversation)"
        );
        assert_eq!(
            said(429, Some("30"), b""),
            "429 Too Many Requests, retry after 30 s"
        );
        // What the server wrote cannot move the cursor or colour a terminal.
        assert_eq!(
            said(502, None, b"bad\x1b[31m\ngateway"),
            r#"502 Bad Gateway ("bad [31m gateway")"#
        );
    }

    #[test]
    fn stream_bytes_in_any_chunking_become_events() {
        let cursor = gapless::Cursor::from("01");
        let call = StreamCall::new(ConvoId::from("c0"), StreamId(1), Some(&cursor));
        assert!(call.path_and_query.contains("cursor=01"));
        let mut reader = call.reader(&Limits::default());
        let mut out = Vec::new();
        let body = b": ka\n\ndata: {\"$type\":\"blue.catbird.mls.streamConvoEvents#infoEvent\",\"cursor\":\"01\",\"info\":\"slow-consumer\"}\n\n";
        for chunk in body.chunks(5) {
            assert!(reader.feed(chunk, &mut out).is_none());
        }
        assert_eq!(out.len(), 2);
        assert!(matches!(
            &out[1],
            Input::StreamEvent {
                event: StreamEvent::Info { .. },
                ..
            }
        ));
        assert!(matches!(
            reader.feed(b"data: {not json}\n\n", &mut out),
            Some(Input::StreamClosed {
                error: Some(StreamError::Transient),
                ..
            })
        ));
        assert!(matches!(
            call.refused(400, None, b""),
            Input::StreamClosed {
                error: Some(StreamError::InvalidCursor),
                ..
            }
        ));
    }
}
