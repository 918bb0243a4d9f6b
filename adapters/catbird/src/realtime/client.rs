//! The frames a client may send on the socket.
//!
//! Unlike the server's frames they have no header: one DAG-CBOR map tagged with `$type`
//! (the server also takes the same object as JSON text). The server accepts three:
//! `#typing {convoId, isTyping}`, which it broadcasts to every subscriber of the
//! conversation, **the sender included**; `#ping` and `#ack {seq}`, which it accepts
//! silently (a `#ping` gets no answer: a WebSocket Ping does get a Pong). Anything else is
//! logged and dropped by the server.

use crate::realtime::frame::{encode, EVENT_NSID};
use crate::DecodeError;
use gapless::ConvoId;
use serde::{Deserialize, Serialize};

/// A client→server frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// `#ping`: accepted, unanswered. A WebSocket Ping is the better liveness probe.
    Ping,
    /// `#typing`: the user is (or stopped) typing in a conversation. The server sends a
    /// `typingEvent` to every subscriber, this connection included. Plaintext to the server.
    Typing {
        /// The conversation.
        convo: ConvoId,
        /// Typing or not.
        is_typing: bool,
    },
    /// `#ack {seq}`: accepted and ignored by the server (it does not track acks).
    Ack {
        /// The frame seq acknowledged.
        seq: i64,
    },
}

#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(rename = "$type")]
    kind: String,
    #[serde(rename = "convoId", default, skip_serializing_if = "Option::is_none")]
    convo_id: Option<String>,
    #[serde(rename = "isTyping", default, skip_serializing_if = "Option::is_none")]
    is_typing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
}

/// The largest client frame [`ClientFrame::decode`] reads (the real ones are ~100 bytes).
pub const MAX_CLIENT_FRAME: usize = 64 << 10;

impl ClientFrame {
    /// The DAG-CBOR bytes to send as one binary WebSocket message.
    pub fn encode(&self) -> Vec<u8> {
        let wire = match self {
            ClientFrame::Ping => Wire {
                kind: format!("{EVENT_NSID}#ping"),
                convo_id: None,
                is_typing: None,
                seq: None,
            },
            ClientFrame::Typing { convo, is_typing } => Wire {
                kind: format!("{EVENT_NSID}#typing"),
                convo_id: Some(convo.to_string()),
                is_typing: Some(*is_typing),
                seq: None,
            },
            ClientFrame::Ack { seq } => Wire {
                kind: format!("{EVENT_NSID}#ack"),
                convo_id: None,
                is_typing: None,
                seq: Some(*seq),
            },
        };
        encode(&wire)
    }

    /// Reads a client frame, as a server would (the dev server, tests).
    pub fn decode(bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
        if bytes.len() > MAX_CLIENT_FRAME {
            return Err(DecodeError::FrameTooLarge {
                len: bytes.len(),
                limit: MAX_CLIENT_FRAME,
            });
        }
        let wire: Wire = serde_ipld_dagcbor::from_slice(bytes).map_err(|e| DecodeError::Cbor {
            part: "client frame",
            detail: format!(r#"expected one DAG-CBOR map {{"$type": …}}, got: {e}"#),
        })?;
        let short = wire.kind.rsplit_once('#').map_or("", |(_, s)| s);
        let missing = |field: &str| DecodeError::Cbor {
            part: "client frame",
            detail: format!("{} without {field}", wire.kind),
        };
        match short {
            "ping" => Ok(ClientFrame::Ping),
            "typing" => Ok(ClientFrame::Typing {
                convo: wire
                    .convo_id
                    .as_deref()
                    .map(ConvoId::from)
                    .ok_or_else(|| missing("convoId"))?,
                is_typing: wire.is_typing.ok_or_else(|| missing("isTyping"))?,
            }),
            "ack" => Ok(ClientFrame::Ack {
                seq: wire.seq.ok_or_else(|| missing("seq"))?,
            }),
            _ => Err(DecodeError::Cbor {
                part: "client frame",
                detail: format!("expected $type #ping, #typing or #ack, got {:?}", wire.kind),
            }),
        }
    }
}
