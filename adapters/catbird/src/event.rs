//! `streamConvoEvents` frames into [`gapless::StreamEvent`].
//!
//! The real server sends each event bare: `{"$type": "…#messageEvent", "cursor": …, …}`;
//! the lexicon describes an `eventWrapper {"event": {…}}`. Both decode. Kinds other than
//! messages and info are passed through with their JSON, unknown kinds included.

use crate::message::MessageView;
use crate::sse::Frame;
use crate::{DecodeError, Limits};
use gapless::{Cursor, StreamEvent};
use serde::Deserialize;
use serde_json::Value;

/// The `$type` prefix of every stream event.
pub const PREFIX: &str = "blue.catbird.mls.streamConvoEvents#";

#[derive(Deserialize)]
struct MessageEvent {
    cursor: Option<String>,
    message: MessageView,
}

#[derive(Deserialize)]
struct InfoEvent {
    cursor: Option<String>,
    info: String,
}

/// Decodes one SSE frame: a comment is a keepalive, an event is decoded by its `$type`, a
/// `retry:` field is not an event (`None`).
pub fn decode_frame(frame: &Frame, limits: &Limits) -> Result<Option<StreamEvent>, DecodeError> {
    match frame {
        Frame::Comment(_) => Ok(Some(StreamEvent::Keepalive)),
        Frame::Retry(_) => Ok(None),
        Frame::Event { data, .. } => decode_event(data, limits).map(Some),
    }
}

/// Decodes the JSON of one event.
pub fn decode_event(data: &str, limits: &Limits) -> Result<StreamEvent, DecodeError> {
    if data.len() > limits.max_event {
        return Err(DecodeError::EventTooLarge {
            limit: limits.max_event,
        });
    }
    let mut value: Value = serde_json::from_str(data)?;
    // The lexicon's eventWrapper form.
    if value.get("$type").is_none() {
        if let Some(inner) = value.get_mut("event").map(Value::take) {
            value = inner;
        }
    }
    let kind = value
        .get("$type")
        .and_then(Value::as_str)
        .ok_or_else(|| DecodeError::NoType(truncate(data)))?
        .to_string();
    let short = kind.strip_prefix(PREFIX).unwrap_or(&kind);
    match short {
        "messageEvent" => {
            let e: MessageEvent = serde_json::from_value(value)?;
            Ok(StreamEvent::Message {
                cursor: e.cursor.map(Cursor::from),
                message: e.message.into_message(limits)?,
            })
        }
        "infoEvent" => {
            let e: InfoEvent = serde_json::from_value(value)?;
            Ok(StreamEvent::Info {
                cursor: e.cursor.map(Cursor::from),
                info: e.info,
            })
        }
        _ => {
            let cursor = value
                .get("cursor")
                .and_then(Value::as_str)
                .map(Cursor::from);
            Ok(StreamEvent::Other {
                cursor,
                kind,
                body: value.to_string(),
            })
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}
