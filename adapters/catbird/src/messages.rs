//! `getMessages`: the request for a [`gapless::FetchRequest`] and the response into a
//! [`gapless::Page`].

use crate::message::MessageView;
use crate::{xrpc_path, DecodeError, Limits, GET_MESSAGES, STREAM_CONVO_EVENTS};
use gapless::{ConvoId, Cursor, FetchRequest, Gaps, Page, RequestId, Seq};
use serde::{Deserialize, Serialize};

/// How the server pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Paging {
    /// `sinceSeq=N`: messages with seq above N (current servers).
    #[default]
    SinceSeq,
    /// `sinceMessage=<id>`: messages after that id (older servers). Cannot overlap, and
    /// starts from the beginning when nothing was delivered yet.
    SinceMessage,
}

/// The query of one `getMessages` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetMessages {
    /// `convoId`.
    pub convo: ConvoId,
    /// `sinceSeq` (with [`Paging::SinceSeq`]).
    pub since_seq: Option<u64>,
    /// `sinceMessage` (with [`Paging::SinceMessage`]).
    pub since_message: Option<String>,
    /// `limit`, clamped to 1..=100 as the server would.
    pub limit: u16,
}

impl GetMessages {
    /// The call for a fetch the machine asked for.
    pub fn for_fetch(fetch: &FetchRequest, paging: Paging) -> GetMessages {
        let (since_seq, since_message) = match paging {
            Paging::SinceSeq => (Some(fetch.since_seq.0), None),
            Paging::SinceMessage => (None, fetch.since_id.as_ref().map(|i| i.to_string())),
        };
        GetMessages {
            convo: fetch.convo.clone(),
            since_seq,
            since_message,
            limit: fetch.limit.clamp(1, 100),
        }
    }

    /// `/xrpc/blue.catbird.mls.getMessages?convoId=…&sinceSeq=…&limit=…`.
    pub fn path_and_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("convoId", self.convo.as_str());
        if let Some(s) = self.since_seq {
            q.append_pair("sinceSeq", &s.to_string());
        }
        if let Some(m) = &self.since_message {
            q.append_pair("sinceMessage", m);
        }
        q.append_pair("limit", &self.limit.to_string());
        format!("{}?{}", xrpc_path(GET_MESSAGES), q.finish())
    }
}

/// `/xrpc/blue.catbird.mls.streamConvoEvents?convoId=…[&cursor=…]`.
pub fn stream_path_and_query(convo: &ConvoId, cursor: Option<&Cursor>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("convoId", convo.as_str());
    if let Some(c) = cursor {
        q.append_pair("cursor", c.as_str());
    }
    format!("{}?{}", xrpc_path(STREAM_CONVO_EVENTS), q.finish())
}

/// `gapInfo`: convo-wide on the real server, present only when there are gaps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GapInfo {
    /// Whether there are gaps.
    pub has_gaps: bool,
    /// The missing seqs between the conversation's lowest and highest.
    #[serde(default)]
    pub missing_seqs: Vec<u64>,
    /// Live messages in the conversation.
    #[serde(default)]
    pub total_messages: u64,
}

/// The response of `getMessages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetMessagesResponse {
    /// The messages, in `(epoch, seq)` order.
    pub messages: Vec<MessageView>,
    /// The seq of the page's last element (not the conversation's highest). Informational:
    /// gapless pages from its own position, never from this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// Gap metadata: the seqs it lists hold no message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_info: Option<GapInfo>,
    /// Older servers: a paging cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl GetMessagesResponse {
    /// Decodes a body, within the limits.
    pub fn decode(body: &[u8], limits: &Limits) -> Result<GetMessagesResponse, DecodeError> {
        decode_page(body, limits, |r: &GetMessagesResponse| r.messages.len())
    }

    /// Into the machine's input for the fetch `request` of `convo`. A message of another
    /// conversation is an error (a confused server), not silently dropped.
    pub fn into_page(
        self,
        request: RequestId,
        convo: &ConvoId,
        limits: &Limits,
    ) -> Result<Page, DecodeError> {
        into_page(self.messages, self.gap_info, request, convo, limits)
    }
}

/// Decodes a `getMessages` answer of either API: the body within `max_body`, its messages
/// (`count`) within `max_page_messages`.
pub(crate) fn decode_page<T: serde::de::DeserializeOwned>(
    body: &[u8],
    limits: &Limits,
    count: impl Fn(&T) -> usize,
) -> Result<T, DecodeError> {
    if body.len() > limits.max_body {
        return Err(DecodeError::BodyTooLarge {
            len: body.len(),
            limit: limits.max_body,
        });
    }
    let response: T = serde_json::from_slice(body)?;
    let len = count(&response);
    if len > limits.max_page_messages {
        return Err(DecodeError::PageTooLarge {
            len,
            limit: limits.max_page_messages,
        });
    }
    Ok(response)
}

/// A `getMessages` page of either API into the machine's input. A message of another
/// conversation is an error (a confused server), not silently dropped. `gapInfo` lists every
/// seq of the conversation that holds no message; the machine takes a listed seq as proof of
/// absence (never an omission as proof of presence).
pub(crate) fn into_page(
    views: Vec<MessageView>,
    gap_info: Option<GapInfo>,
    request: RequestId,
    convo: &ConvoId,
    limits: &Limits,
) -> Result<Page, DecodeError> {
    let mut messages = Vec::with_capacity(views.len());
    for view in views {
        if view.convo_id != convo.as_str() {
            return Err(DecodeError::WrongConvo {
                expected: convo.to_string(),
                got: view.convo_id,
            });
        }
        messages.push(view.into_message(limits)?);
    }
    let gaps = match gap_info {
        Some(info) if info.has_gaps => {
            Gaps::Missing(info.missing_seqs.into_iter().map(Seq).collect())
        }
        _ => Gaps::Unknown,
    };
    Ok(Page::new(request, messages).with_gaps(gaps))
}
