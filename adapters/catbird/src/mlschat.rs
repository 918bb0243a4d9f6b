//! The REST side of the newest Catbird API (`blue.catbird.mlsChat.*`): `getMessages` for a
//! [`gapless::FetchRequest`] and its answer into a [`gapless::Page`], and `sendMessage`.
//!
//! `GET /xrpc/blue.catbird.mlsChat.getMessages?convoId&limit&sinceSeq&type`, as the real
//! server answers it:
//!
//! - With `sinceSeq`: `seq > sinceSeq ORDER BY epoch, seq LIMIT limit` (`limit` silently
//!   clamped to 1..=100). **Without** it the server returns the newest `limit` messages in
//!   seq *descending* order, with `lastSeq` the smallest seq on the page: paging from that
//!   would re-read the same page. [`GetMessages`] therefore always sends `sinceSeq`.
//! - Commits are messages too (`messageType: "commit"`), at their own seqs: leaving them out
//!   would look like holes in the seq line.
//! - `type=all` (the default) adds a `commits` array holding every commit of the
//!   conversation, which ignores `sinceSeq`, `limit` and paging: it is repeated whole on
//!   every page and grows with every epoch. `type=app` does **not** filter (commit rows stay
//!   in `messages`) and leaves that array out. [`GetMessages::for_fetch`] sends `type=app`:
//!   the same messages for less. The lexicon says `app` means "user content only"; should
//!   a server ever honour that, commits would vanish from the pages and their seqs would
//!   look like holes, so use [`MessageType::All`] against such a server.
//! - `gapInfo` is declared by the lexicon and never sent; it decodes if it comes.
//! - Messages have `{id, convoId, ciphertext{$bytes}, epoch, seq, createdAt, messageType}`,
//!   no sender and no reactions. A non-member and an unknown conversation both get 403 with
//!   an empty body ([`crate::status`] maps it).

use crate::message::{Ciphertext, MessageView};
use crate::messages::{self, GapInfo};
use crate::{xrpc_path, DecodeError, Limits, MLSCHAT_GET_MESSAGES, MLSCHAT_SEND_MESSAGE};
use gapless::{ConvoId, FetchRequest, Page, RequestId};
use serde::{Deserialize, Serialize};

/// The `type` parameter of `getMessages`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `type=app`: on the real server, every message (commits included) without the
    /// repeated `commits` array. The default for the machine's fetches.
    #[default]
    App,
    /// `type=all`: the messages and the whole `commits` array on every page.
    All,
}

impl MessageType {
    /// The parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::App => "app",
            MessageType::All => "all",
        }
    }
}

/// The query of one `blue.catbird.mlsChat.getMessages` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetMessages {
    /// `convoId`.
    pub convo: ConvoId,
    /// `sinceSeq`: always sent (without it the server pages newest-first).
    pub since_seq: u64,
    /// `limit`, 1..=100.
    pub limit: u16,
    /// `type`.
    pub message_type: MessageType,
}

impl GetMessages {
    /// The call for a fetch the machine asked for: its `sinceSeq` and `limit` (clamped to
    /// 1..=100 as the server would), `type=app` (see the module doc).
    pub fn for_fetch(fetch: &FetchRequest) -> GetMessages {
        GetMessages {
            convo: fetch.convo.clone(),
            since_seq: fetch.since_seq.0,
            limit: fetch.limit.clamp(1, 100),
            message_type: MessageType::App,
        }
    }

    /// `/xrpc/blue.catbird.mlsChat.getMessages?convoId=…&sinceSeq=…&limit=…&type=…`.
    pub fn path_and_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("convoId", self.convo.as_str());
        q.append_pair("sinceSeq", &self.since_seq.to_string());
        q.append_pair("limit", &self.limit.clamp(1, 100).to_string());
        q.append_pair("type", self.message_type.as_str());
        format!("{}?{}", xrpc_path(MLSCHAT_GET_MESSAGES), q.finish())
    }
}

/// One entry of the `commits` array (`type=all`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitView {
    /// The commit's message id (the same id as its row in `messages`).
    pub id: String,
    /// The epoch it created.
    pub epoch: u64,
    /// The MLS commit.
    pub commit_data: Ciphertext,
    /// Who sent it (always `null` on the real server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// When (milliseconds, `…Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// The answer of `blue.catbird.mlsChat.getMessages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetMessagesResponse {
    /// The messages, in `(epoch, seq)` order (with `sinceSeq`). Required: an answer
    /// without it (`type=commit`) is not a page and must not be read as an empty one.
    pub messages: Vec<MessageView>,
    /// The seq of the page's last message; absent on an empty page. Informational: gapless
    /// pages from its own position, never from this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// `type=all` only: every commit of the conversation (not paged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<CommitView>,
    /// Declared by the lexicon, never sent by the real server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_info: Option<GapInfo>,
}

impl GetMessagesResponse {
    /// Decodes a body, within the limits.
    pub fn decode(body: &[u8], limits: &Limits) -> Result<GetMessagesResponse, DecodeError> {
        messages::decode_page(body, limits, |r: &GetMessagesResponse| r.messages.len())
    }

    /// Into the machine's input for the fetch `request` of `convo`, as the older API's
    /// (this server never sends `gapInfo`: such a page proves only what it holds).
    pub fn into_page(
        self,
        request: RequestId,
        convo: &ConvoId,
        limits: &Limits,
    ) -> Result<Page, DecodeError> {
        messages::into_page(self.messages, self.gap_info, request, convo, limits)
    }
}

/// The body of `POST /xrpc/blue.catbird.mlsChat.sendMessage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessage {
    /// The conversation.
    pub convo_id: String,
    /// The client's id for the send (a 26-character ULID or a 36-character UUID). Sending
    /// the same one again returns the first answer and emits nothing. **Not** the id the
    /// message will have: that is the answer's `messageId`.
    pub msg_id: String,
    /// The MLS ciphertext, already padded.
    pub ciphertext: Ciphertext,
    /// The current epoch (another one gets 409 with an empty body).
    pub epoch: u64,
    /// The ciphertext's length, which must be 512, 1024, 2048, 4096, 8192 or a multiple of
    /// 8192 up to 10 MiB ([`is_valid_padded_size`]).
    pub padded_size: u64,
    /// `"ephemeral"`: not stored. Without an `action` the server turns it into a
    /// `typingEvent` and **drops the ciphertext**.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// An idempotency key, if the client keeps one besides `msgId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Whether the server accepts this `paddedSize`.
pub fn is_valid_padded_size(size: usize) -> bool {
    matches!(size, 512 | 1024 | 2048 | 4096 | 8192)
        || (size > 8192 && size <= 10 << 20 && size % 8192 == 0)
}

impl SendMessage {
    /// A message to store: `paddedSize` is the ciphertext's length (pad it to a valid size
    /// first: [`is_valid_padded_size`]).
    pub fn new(convo: &ConvoId, msg_id: &str, ciphertext: &[u8], epoch: u64) -> SendMessage {
        SendMessage {
            convo_id: convo.to_string(),
            msg_id: msg_id.to_string(),
            ciphertext: Ciphertext::from_bytes(ciphertext),
            epoch,
            padded_size: ciphertext.len() as u64,
            delivery: None,
            idempotency_key: None,
        }
    }

    /// `/xrpc/blue.catbird.mlsChat.sendMessage`.
    pub fn path() -> String {
        xrpc_path(MLSCHAT_SEND_MESSAGE)
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The answer of `sendMessage` for a stored message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessageAnswer {
    /// The server's id of the message (a UUID): the `id` it has on the socket and in
    /// `getMessages`. Match your own message on the stream by this, not by `msgId`.
    pub message_id: String,
    /// When the server received it (microseconds, `…Z`), kept as sent.
    pub received_at: String,
    /// Its seq (not unique: concurrent sends may share one).
    pub seq: u64,
    /// Its epoch.
    pub epoch: u64,
}

/// The largest `sendMessage` answer [`SendMessageAnswer::decode`] reads.
pub const MAX_SEND_ANSWER: usize = 64 << 10;

impl SendMessageAnswer {
    /// Decodes the JSON answer (status 200). An ephemeral send answers `{"success": true}`
    /// instead, which is an error here.
    pub fn decode(body: &[u8]) -> Result<SendMessageAnswer, DecodeError> {
        if body.len() > MAX_SEND_ANSWER {
            return Err(DecodeError::BodyTooLarge {
                len: body.len(),
                limit: MAX_SEND_ANSWER,
            });
        }
        Ok(serde_json::from_slice(body)?)
    }
}
