//! One binary WebSocket message of `subscribeEvents` into a [`Frame`].
//!
//! The real server writes each event as two DAG-CBOR values back to back, with nothing
//! after them: a header map `{"op": 1, "t": "#<type>"}` and a body map holding the event's
//! fields plus `$type` (the old namespace, `blue.catbird.mls.subscribeConvoEvents#<type>`)
//! and a top-level `seq`. An error frame has the header `{"op": -1}` and the body
//! `{"error", "message"?}` (a cursor the server cannot read gives `BackfillFailed`, and
//! live delivery goes on after it).
//!
//! The header's end is found by the DAG-CBOR decoder itself ([`serde_ipld_dagcbor`]
//! reading one value and reporting where it stopped); the body must then be exactly one
//! value. The body goes through the IPLD data model into JSON, with byte strings as
//! `{"$bytes": base64}` and links as `{"$link": cid}` (the atproto JSON conventions), so
//! that `messageView` decodes with the same code as on the SSE stream and any other event
//! reaches the application as JSON text.
//!
//! Bounded: a frame above [`Limits::max_event`] is refused before any decoding; the
//! decoder nests at most 256 levels and never reserves more than the input can hold; the
//! ciphertext is checked against [`Limits::max_ciphertext`]. No input panics.

use crate::message::MessageView;
use crate::{DecodeError, Limits};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use gapless::{ConvoId, Cursor, Seq, StreamEvent};
use ipld_core::ipld::Ipld;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use std::io;

/// The `$type` namespace of the events on the socket: the server still writes the old
/// `blue.catbird.mls.subscribeConvoEvents` NSID, also on the `mlsChat` path.
pub const EVENT_NSID: &str = crate::LEGACY_SUBSCRIBE_CONVO_EVENTS;

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The conversation the event belongs to: `message.convoId` for a `messageEvent`, the
    /// event's `convoId` otherwise. One socket carries every conversation of a global
    /// ticket, so events are routed by this. Absent for an `infoEvent` (the server does not
    /// say which conversation it concerns) and for error frames.
    pub convo: Option<ConvoId>,
    /// The body's top-level `seq`: a counter per connection that starts at 1 on every
    /// connection, counts events the cursor filter dropped, and shows no gap when the
    /// server loses events for a slow consumer. **Not a stream position**: for diagnostics
    /// only; never compare it across connections or use it to detect loss.
    pub seq: Option<i64>,
    /// The event, or an error frame.
    pub payload: Payload,
}

/// What a frame carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// An event (header `op: 1`): a message, an info notice, or any other kind passed
    /// through with its body as JSON text.
    Event(StreamEvent),
    /// An error frame (header `op: -1`). The server keeps the connection open after it.
    Error(ErrorFrame),
}

/// The body of an error frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// The error's name (`BackfillFailed`, `InternalError`).
    pub error: String,
    /// A sentence, when the server gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The frame header. Other keys are ignored.
#[derive(Deserialize)]
struct Header {
    op: i64,
    #[serde(default)]
    t: Option<String>,
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    op: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    t: Option<&'a str>,
}

#[derive(Deserialize)]
struct MessageEvent {
    #[serde(default)]
    cursor: Option<String>,
    message: MessageView,
    #[serde(default)]
    ephemeral: bool,
}

const HEADER_SHAPE: &str = r##"expected a DAG-CBOR map {"op": 1, "t": "#<type>"} or {"op": -1}"##;

/// Decodes one binary WebSocket message.
///
/// A `messageEvent` becomes [`StreamEvent::Message`] (an `ephemeral: true` one always with
/// seq 0, so that it is never sequenced: the real server already sends 0 and a fresh id that
/// it does not store); an `infoEvent` becomes [`StreamEvent::Info`]; every other kind,
/// unknown ones included, becomes [`StreamEvent::Other`] with its `$type` (or, without one,
/// the NSID and the header's `t`) and its body as JSON text. WebSocket Ping, Pong and Close
/// messages are not frames: the adapter handles them (a Ping is a keepalive).
pub fn decode_frame(bytes: &[u8], limits: &Limits) -> Result<Frame, DecodeError> {
    if bytes.len() > limits.max_event {
        return Err(DecodeError::FrameTooLarge {
            len: bytes.len(),
            limit: limits.max_event,
        });
    }
    if bytes.is_empty() {
        return Err(DecodeError::Cbor {
            part: "header",
            detail: format!("{HEADER_SHAPE}, got an empty message"),
        });
    }
    let mut reader = io::Cursor::new(bytes);
    let header: Header =
        serde_ipld_dagcbor::de::from_reader_once(&mut reader).map_err(|e| DecodeError::Cbor {
            part: "header",
            detail: format!("{HEADER_SHAPE}, got: {e}"),
        })?;
    // The reader stopped right after the header: the body starts there.
    let start = usize::try_from(reader.position()).unwrap_or(bytes.len());
    let body = bytes.get(start..).unwrap_or_default();
    let body = decode_body(body)?;
    let seq = body.get("seq").and_then(Value::as_i64);
    match (header.op, header.t) {
        (1, Some(t)) => decode_event(&t, body, seq, limits),
        (1, None) => Err(DecodeError::Cbor {
            part: "header",
            detail: format!("{HEADER_SHAPE}, got op 1 without a \"t\""),
        }),
        (-1, _) => {
            let error: ErrorFrame =
                serde_json::from_value(Value::Object(body)).map_err(|e| DecodeError::Cbor {
                    part: "error body",
                    detail: format!(r#"expected {{"error": text, "message"?: text}}, got: {e}"#),
                })?;
            Ok(Frame {
                convo: None,
                seq,
                payload: Payload::Error(error),
            })
        }
        (op, _) => Err(DecodeError::Cbor {
            part: "header",
            detail: format!("{HEADER_SHAPE}, got op {op}"),
        }),
    }
}

/// The body: exactly one DAG-CBOR map, into JSON.
fn decode_body(body: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    let ipld: Ipld = serde_ipld_dagcbor::from_slice(body).map_err(|e| DecodeError::Cbor {
        part: "body",
        detail: format!("expected one DAG-CBOR map after the header, got: {e}"),
    })?;
    match to_json(ipld) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(DecodeError::Cbor {
            part: "body",
            detail: format!("expected a map, got {}", kind_of(&other)),
        }),
        Err(detail) => Err(DecodeError::Cbor {
            part: "body",
            detail,
        }),
    }
}

fn decode_event(
    t: &str,
    body: Map<String, Value>,
    seq: Option<i64>,
    limits: &Limits,
) -> Result<Frame, DecodeError> {
    // `t` is `#<type>` for the subscription's own lexicon; a full NSID otherwise.
    let short = t.rsplit_once('#').map_or(t, |(_, s)| s);
    let cursor = body.get("cursor").and_then(Value::as_str).map(Cursor::from);
    match short {
        "messageEvent" => {
            let event: MessageEvent =
                serde_json::from_value(Value::Object(body)).map_err(|e| DecodeError::Cbor {
                    part: "messageEvent body",
                    detail: format!(
                        "expected {{cursor, message: messageView, ephemeral?}}, got: {e}"
                    ),
                })?;
            let convo = ConvoId::from(event.message.convo_id.as_str());
            let mut message = event.message.into_message(limits)?;
            if event.ephemeral {
                message.seq = Seq::ZERO;
            }
            Ok(Frame {
                convo: Some(convo),
                seq,
                payload: Payload::Event(StreamEvent::Message {
                    cursor: event.cursor.map(Cursor::from),
                    message,
                }),
            })
        }
        "infoEvent" => {
            let convo = convo_of(&body);
            let info = match body.get("info") {
                Some(Value::String(s)) => s.clone(),
                other => {
                    return Err(DecodeError::Cbor {
                        part: "infoEvent body",
                        detail: format!(
                            "expected a text \"info\", got {}",
                            other.map_or("nothing", kind_of)
                        ),
                    })
                }
            };
            Ok(Frame {
                convo,
                seq,
                payload: Payload::Event(StreamEvent::Info { cursor, info }),
            })
        }
        _ => {
            let kind = match body.get("$type") {
                Some(Value::String(k)) => k.clone(),
                _ if t.starts_with('#') => format!("{EVENT_NSID}{t}"),
                _ => t.to_string(),
            };
            Ok(Frame {
                convo: convo_of(&body),
                seq,
                payload: Payload::Event(StreamEvent::Other {
                    cursor,
                    kind,
                    body: Value::Object(body).to_string(),
                }),
            })
        }
    }
}

fn convo_of(body: &Map<String, Value>) -> Option<ConvoId> {
    body.get("convoId")
        .and_then(Value::as_str)
        .map(ConvoId::from)
}

/// The IPLD data model into JSON, as atproto writes it: bytes as `{"$bytes": base64}`,
/// links as `{"$link": cid}`. Recursion is bounded by the decoder's depth limit (256).
fn to_json(ipld: Ipld) -> Result<Value, String> {
    Ok(match ipld {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(b),
        Ipld::Integer(i) => {
            if let Ok(v) = i64::try_from(i) {
                Value::from(v)
            } else if let Ok(v) = u64::try_from(i) {
                Value::from(v)
            } else {
                return Err(format!("integer {i} outside the 64-bit range"));
            }
        }
        Ipld::Float(f) => Value::Number(
            Number::from_f64(f).ok_or_else(|| format!("float {f}: DAG-CBOR has no NaN or ∞"))?,
        ),
        Ipld::String(s) => Value::String(s),
        Ipld::Bytes(b) => tagged("$bytes", STANDARD.encode(b)),
        Ipld::List(items) => Value::Array(
            items
                .into_iter()
                .map(to_json)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Ipld::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| Ok((k, to_json(v)?)))
                .collect::<Result<Map<_, _>, String>>()?,
        ),
        Ipld::Link(cid) => tagged("$link", cid.to_string()),
    })
}

fn tagged(key: &str, value: String) -> Value {
    let mut map = Map::new();
    map.insert(key.to_string(), Value::String(value));
    Value::Object(map)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Encodes an event frame as the real server does: the header `{"op": 1, "t": t}` and
/// `body`, each DAG-CBOR with canonical key order (a `{"$bytes": …}` map stays a map, as
/// on the real server). For the dev server and tests.
pub fn encode_event_frame(t: &str, body: &Value) -> Vec<u8> {
    let mut out = encode(&HeaderOut { op: 1, t: Some(t) });
    out.extend(encode(body));
    out
}

/// Encodes an error frame: the header `{"op": -1}` and `{"error", "message"?}`.
pub fn encode_error_frame(error: &str, message: Option<&str>) -> Vec<u8> {
    let mut out = encode(&HeaderOut { op: -1, t: None });
    out.extend(encode(&ErrorFrame {
        error: error.to_string(),
        message: message.map(str::to_string),
    }));
    out
}

/// DAG-CBOR of a value that is always representable (maps with text keys, integers,
/// finite floats, text): only a failed allocation could make it fail.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_ipld_dagcbor::to_vec(value).expect("JSON-shaped values always encode as DAG-CBOR")
}
