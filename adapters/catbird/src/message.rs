//! `blue.catbird.mls.defs#messageView` into [`gapless::Message`].

use crate::{DecodeError, Limits};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use gapless::{Epoch, Message, MessageKind, Seq};
use serde::{Deserialize, Serialize};

const PAD_OPTIONAL: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, PAD_OPTIONAL);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, PAD_OPTIONAL);

/// The ciphertext as sent: `{"$bytes": "<standard base64>"}` (current servers) or a plain
/// base64url string (older ones).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ciphertext {
    /// `{"$bytes": …}`.
    Bytes {
        /// Standard base64.
        #[serde(rename = "$bytes")]
        bytes: String,
    },
    /// A base64url (or standard base64) string.
    Plain(String),
}

impl Ciphertext {
    /// `{"$bytes": …}` for these bytes, as the server sends it.
    pub fn from_bytes(bytes: &[u8]) -> Ciphertext {
        Ciphertext::Bytes {
            bytes: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The bytes, within the size limit.
    pub fn decode(&self, limits: &Limits) -> Result<Vec<u8>, DecodeError> {
        let (text, first, second) = match self {
            Ciphertext::Bytes { bytes } => (bytes, &STANDARD, &URL_SAFE),
            Ciphertext::Plain(s) => (s, &URL_SAFE, &STANDARD),
        };
        // Base64 is 4/3 the size: refuse before decoding anything huge.
        let len = text.len() / 4 * 3;
        if len > limits.max_ciphertext + 3 {
            return Err(DecodeError::CiphertextTooLarge {
                len,
                limit: limits.max_ciphertext,
            });
        }
        let bytes = first
            .decode(text)
            .or_else(|_| second.decode(text))
            .map_err(|e| DecodeError::Ciphertext(e.to_string()))?;
        if bytes.len() > limits.max_ciphertext {
            return Err(DecodeError::CiphertextTooLarge {
                len: bytes.len(),
                limit: limits.max_ciphertext,
            });
        }
        Ok(bytes)
    }
}

/// A reaction on a message (`getMessages` only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reaction {
    /// Who reacted.
    #[serde(default)]
    pub user_did: Option<String>,
    /// The reaction.
    #[serde(default)]
    pub reaction: Option<String>,
    /// When.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// `messageView` as the server sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// The server's message id (a UUID; the client `msgId` for ephemeral messages).
    pub id: String,
    /// The conversation.
    pub convo_id: String,
    /// The MLS ciphertext.
    pub ciphertext: Ciphertext,
    /// The MLS epoch.
    pub epoch: u64,
    /// The seq (`0`: ephemeral).
    pub seq: u64,
    /// When it was created: `…Z` from `getMessages`, `…+00:00` on the stream, for the same
    /// message. Kept as sent.
    pub created_at: String,
    /// `app` or `commit` (`getMessages` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    /// Reactions (`getMessages`, only when there are some).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactions: Option<Vec<Reaction>>,
    /// Older servers: the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed_type: Option<String>,
    /// Older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed_uri: Option<String>,
}

impl MessageView {
    /// Into the core's message, checking the ciphertext's size.
    pub fn into_message(self, limits: &Limits) -> Result<Message, DecodeError> {
        let payload = self.ciphertext.decode(limits)?;
        Ok(Message {
            id: self.id.into(),
            seq: Seq(self.seq),
            epoch: Epoch(self.epoch),
            kind: match self.message_type.as_deref() {
                Some("commit") => MessageKind::Commit,
                _ => MessageKind::App,
            },
            payload,
            created_at: Some(self.created_at.into_boxed_str()),
        })
    }
}
