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
//! value. The body is read into JSON as atproto writes the IPLD data model, with byte
//! strings as `{"$bytes": base64}` and links as `{"$link": cid}`, so that `messageView`
//! decodes with the same code as on the SSE stream (whether the ciphertext comes as the
//! server's `{"$bytes"}` map or as a real CBOR byte string) and any other event reaches the
//! application as JSON text.
//!
//! Bounded: a frame above [`Limits::max_event`] is refused before any decoding; a body of
//! more than [`MAX_VALUES`] values is refused; the decoder nests at most 256 levels and
//! never reserves memory for a declared length; the ciphertext is checked against
//! [`Limits::max_ciphertext`]. No input panics.

use crate::message::MessageView;
use crate::{DecodeError, Limits};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use gapless::{ConvoId, Cursor, Seq, StreamEvent};
use ipld_core::cid::Cid;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
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
    /// say which conversation it concerns: give it to every conversation the socket covers)
    /// and for error frames.
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

/// The body of an error frame. `BackfillFailed` means the server could not read the
/// cursor (a NUL byte did it); live delivery goes on, and since a cursor replays nothing on
/// the real server anyway, the next connection may as well go without it.
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
    let bad = |e: String| DecodeError::Cbor {
        part: "body",
        detail: format!("expected one DAG-CBOR map after the header, got: {e}"),
    };
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(body);
    let budget = Cell::new(MAX_VALUES);
    let value = JsonSeed { budget: &budget }
        .deserialize(&mut de)
        .map_err(|e| bad(e.to_string()))?;
    de.end().map_err(|e| bad(e.to_string()))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(DecodeError::Cbor {
            part: "body",
            detail: format!("expected a map, got {}", kind_of(&other)),
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

/// The most values (maps, lists, scalars) one frame's body may hold. A real event has about
/// fifteen; the cap keeps a hostile frame of many tiny values from costing tens of times its
/// size in memory.
pub const MAX_VALUES: usize = 4096;

/// Reads one DAG-CBOR value straight into JSON, as atproto writes the IPLD data model in
/// JSON: byte strings as `{"$bytes": base64}`, links (tag 42) as `{"$link": cid}`. Every
/// value spends one unit of `budget`; lists and maps grow only as elements arrive (a
/// declared length is never trusted). Nesting is bounded by the decoder (256 levels).
struct JsonSeed<'b> {
    budget: &'b Cell<usize>,
}

impl<'de> DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        let left = self.budget.get();
        if left == 0 {
            return Err(<D::Error as de::Error>::custom(format!(
                "more than {MAX_VALUES} values in one frame"
            )));
        }
        self.budget.set(left - 1);
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a DAG-CBOR value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Err(E::custom(format!("integer {v} outside the 64-bit range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("float {v}: DAG-CBOR has no NaN or infinity")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(tagged("$bytes", STANDARD.encode(v)))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    /// The DAG-CBOR decoder hands a link (tag 42) over as a newtype holding the CID's bytes.
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        let bytes = deserializer.deserialize_bytes(CidBytes)?;
        let cid = Cid::try_from(bytes.as_slice()).map_err(|e| {
            <D::Error as de::Error>::custom(format!("a link that is not a CID: {e}"))
        })?;
        Ok(tagged("$link", cid.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(JsonSeed {
            budget: self.budget,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(JsonSeed {
                budget: self.budget,
            })?;
            entries.insert(key, value);
        }
        Ok(Value::Object(entries))
    }
}

struct CidBytes;

impl Visitor<'_> for CidBytes {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a CID's bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
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
