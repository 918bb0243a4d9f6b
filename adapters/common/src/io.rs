//! The IO a driver does for the machine, and the way back: HTTP answers and SSE bytes into
//! inputs. The driver only moves bytes.

use gapless::{ConvoId, FetchRequest, Input, StreamError, StreamEvent, StreamId};
use gapless_catbird::messages::{stream_path_and_query, GetMessages, GetMessagesResponse, Paging};
use gapless_catbird::sse::SseDecoder;
use gapless_catbird::status::ErrorAnswer;
use gapless_catbird::{event, DecodeError, Limits, GET_MESSAGES, STREAM_CONVO_EVENTS};

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
    /// Make a fetch and report its answer with the [`FetchCall`].
    Fetch(FetchCall),
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
        Input::StreamOpened {
            convo: self.convo.clone(),
            stream: self.stream,
        }
    }

    /// The server refused it with a non-2xx answer.
    pub fn refused(&self, status: u16, retry_after: Option<&str>, body: &[u8]) -> Input {
        let answer = ErrorAnswer::parse(status, retry_after, body);
        tracing::warn!(convo = %self.convo, status, answer = ?answer, "stream refused");
        self.closed(Some(answer.stream_error(self.had_cursor)))
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
        tracing::warn!(convo = %self.convo, error = %e, "undecodable stream; reconnecting");
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
}

impl FetchCall {
    /// The method's NSID, for the token provider.
    pub const NSID: &'static str = GET_MESSAGES;

    /// The call for a fetch.
    pub fn new(request: FetchRequest, wire: &Wire) -> FetchCall {
        let path_and_query = GetMessages::for_fetch(&request, wire.paging).path_and_query();
        FetchCall {
            request,
            path_and_query,
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
        if !(200..300).contains(&status) {
            let answer = ErrorAnswer::parse(status, retry_after, body);
            tracing::warn!(convo = %self.request.convo, status, answer = ?answer, "fetch refused");
            return Input::FetchFailed {
                request: self.request.id,
                failure: answer.fetch_failure(),
            };
        }
        let page = GetMessagesResponse::decode(body, limits)
            .and_then(|r| r.into_page(self.request.id, &self.request.convo, limits));
        match page {
            Ok(page) => Input::FetchPage(page),
            Err(e) => {
                tracing::warn!(convo = %self.request.convo, error = %e, "undecodable page");
                self.failed()
            }
        }
    }

    /// The request did not get an answer (connection, timeout, no token): transient.
    pub fn failed(&self) -> Input {
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
