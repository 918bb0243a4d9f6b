//! The subscription ticket, the socket's URL, and the refusals before the upgrade.
//!
//! `POST /xrpc/blue.catbird.mlsChat.getSubscriptionTicket` (bearer token with that NSID as
//! `lxm`) with `{"convoIds": [C]}` or `{}` answers `{ticket, endpoint, expiresAt}`. The
//! ticket is a JWT good for 30 s, reusable within them, for one conversation or (without
//! `convoIds`) for every conversation the user is in **when the socket connects** (a
//! conversation joined later needs a new socket). The server only reads the first
//! `convoIds` entry, so [`TicketScope`] offers one conversation or all.
//!
//! The socket is `GET <endpoint>?ticket=…[&cursor=…]`, with no `Authorization` header and
//! no subprotocol. The real server's default `endpoint` is
//! `wss://mls.catbird.blue/xrpc/blue.catbird.mls.subscribeConvoEvents` (the legacy path,
//! which the same handler serves, on the production host) unless the deployment sets
//! `WEBSOCKET_ENDPOINT`, so a self-hosted or local server may name production here: use
//! [`subscribe_url`] with the server's own base URL for those.

use crate::status::ErrorAnswer;
use crate::{xrpc_path, DecodeError, MLSCHAT_SUBSCRIBE_EVENTS, MLSCHAT_SUBSCRIPTION_TICKET};
use gapless::{ConvoId, Cursor, StreamError};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;
use url::Url;

/// What a ticket covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TicketScope {
    /// One conversation (`{"convoIds": [C]}`). The server checks membership: a 403 means
    /// not a member (or no such conversation).
    Convo(ConvoId),
    /// Every conversation the user is in at connect time (`{}`). The server never replays
    /// anything on such a socket, even with a cursor; and it closes at once a socket for a
    /// user with no conversations.
    Global,
}

impl TicketScope {
    /// `/xrpc/blue.catbird.mlsChat.getSubscriptionTicket`: POST it with [`body`](Self::body)
    /// as `application/json`.
    pub fn path() -> String {
        xrpc_path(MLSCHAT_SUBSCRIPTION_TICKET)
    }

    /// The JSON request body: `{"convoIds":["…"]}` or `{}`.
    pub fn body(&self) -> String {
        match self {
            TicketScope::Convo(convo) => serde_json::json!({ "convoIds": [convo.as_str()] }),
            TicketScope::Global => serde_json::json!({}),
        }
        .to_string()
    }

    /// Whether it covers every conversation.
    pub fn is_global(&self) -> bool {
        matches!(self, TicketScope::Global)
    }
}

/// The answer of `getSubscriptionTicket`. Its `Debug` hides the ticket: it is a credential
/// for 30 s.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    /// The ticket (a JWT), for the socket URL's `ticket` parameter.
    pub ticket: String,
    /// Where to connect, if the server said (see the module doc: may name the production
    /// host).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// When it expires (RFC 3339, 30 s after issue), kept as sent.
    #[serde(default)]
    pub expires_at: Option<String>,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("ticket", &format_args!("<{} bytes>", self.ticket.len()))
            .field("endpoint", &self.endpoint)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The largest ticket answer [`Ticket::decode`] reads (the real ones are ~500 bytes).
pub const MAX_TICKET_BODY: usize = 64 << 10;

impl Ticket {
    /// Decodes the JSON answer (status 200).
    pub fn decode(body: &[u8]) -> Result<Ticket, DecodeError> {
        if body.len() > MAX_TICKET_BODY {
            return Err(DecodeError::BodyTooLarge {
                len: body.len(),
                limit: MAX_TICKET_BODY,
            });
        }
        let ticket: Ticket = serde_json::from_slice(body)?;
        if ticket.ticket.is_empty() {
            return Err(<serde_json::Error as serde::de::Error>::custom(
                "an empty ticket: expected a JWT",
            )
            .into());
        }
        Ok(ticket)
    }

    /// The URL to open the socket on: the ticket's `endpoint` when the server gave one
    /// (`https`/`http` become `wss`/`ws`), else `base` (the server's own URL, e.g.
    /// `https://mls.example`) plus `/xrpc/blue.catbird.mlsChat.subscribeEvents`; with
    /// `ticket=` and `cursor=` (only a cursor the server produced: a made-up one silently
    /// drops every live event).
    pub fn socket_url(&self, base: &str, cursor: Option<&Cursor>) -> Result<String, DecodeError> {
        match self.endpoint.as_deref().map(str::trim) {
            Some(endpoint) if !endpoint.is_empty() => {
                with_query(parse_ws(endpoint)?, &self.ticket, cursor)
            }
            _ => subscribe_url(base, &self.ticket, cursor),
        }
    }
}

/// `base` + `/xrpc/blue.catbird.mlsChat.subscribeEvents?ticket=…[&cursor=…]`, ignoring the
/// ticket's `endpoint`: for a server whose `endpoint` names another host than its own.
/// `base` may be `https://`, `http://`, `wss://` or `ws://`, with or without a path prefix.
pub fn subscribe_url(
    base: &str,
    ticket: &str,
    cursor: Option<&Cursor>,
) -> Result<String, DecodeError> {
    let mut url = parse_ws(base.trim())?;
    url.set_query(None);
    let prefix = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{prefix}{}", xrpc_path(MLSCHAT_SUBSCRIBE_EVENTS)));
    with_query(url, ticket, cursor)
}

/// Parses a URL and maps its scheme to a WebSocket one.
fn parse_ws(raw: &str) -> Result<Url, DecodeError> {
    let bad = |reason: String| DecodeError::Endpoint {
        url: raw.chars().take(200).collect(),
        reason,
    };
    let mut url = Url::parse(raw).map_err(|e| bad(format!("not a URL: {e}")))?;
    let scheme = match url.scheme() {
        "wss" | "https" => "wss",
        "ws" | "http" => "ws",
        other => {
            return Err(bad(format!(
                "scheme {other:?}: expected wss, ws, https or http"
            )))
        }
    };
    url.set_scheme(scheme)
        .map_err(|()| bad(format!("cannot use scheme {scheme}")))?;
    if url.host().is_none() {
        return Err(bad("no host".into()));
    }
    url.set_fragment(None);
    Ok(url)
}

/// Adds `ticket` and `cursor`, replacing any already in the URL and keeping the rest.
fn with_query(mut url: Url, ticket: &str, cursor: Option<&Cursor>) -> Result<String, DecodeError> {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "ticket" && k != "cursor")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        q.append_pair("ticket", ticket);
        if let Some(c) = cursor {
            q.append_pair("cursor", c.as_str());
        }
    }
    Ok(url.into())
}

/// A refused ticket request or upgrade: what the machine should hear, and how long the
/// server asked to wait.
///
/// The real server refuses the upgrade with plain HTTP: 401 with an empty body for a
/// garbage, expired or wrong-kind ticket (get a new ticket with a fresh token); 400
/// `text/plain` when the ticket is missing; 429 when the user already has 5 sockets open;
/// 403 when a per-conversation ticket's user is not a member. The ticket request itself
/// answers 403 (empty body) for a conversation the user is not in, and 401 for a refused
/// token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// For the machine: [`StreamError::Unauthorized`] for 401;
    /// [`StreamError::Permanent`] only for a per-conversation ticket refused with 403 (or an
    /// XRPC `NotMember`/`ConvoNotFound`); [`StreamError::InvalidCursor`] for a 400 on a
    /// socket that carried a cursor; [`StreamError::RateLimited`] for 429 (the account's
    /// quota, or its 5 sockets); [`StreamError::Transient`] for everything else: 5xx, a bare
    /// 404, and any refusal of a global ticket (which cannot name one conversation to
    /// clear).
    pub error: StreamError,
    /// `Retry-After`, when the server sent one (429): wait at least this long before the
    /// next attempt.
    pub retry_after: Option<Duration>,
    /// What the answer said, for reports.
    pub answer: ErrorAnswer,
}

impl Refusal {
    /// Reads a refusal: the status, the `Retry-After` header if any, the body, what the
    /// ticket covered, and whether the socket URL carried a cursor.
    pub fn parse(
        status: u16,
        retry_after: Option<&str>,
        body: &[u8],
        scope: &TicketScope,
        had_cursor: bool,
    ) -> Refusal {
        let answer = ErrorAnswer::parse(status, retry_after, body);
        let error = match answer.stream_error(had_cursor) {
            StreamError::Permanent(_) if scope.is_global() => StreamError::Transient,
            other => other,
        };
        Refusal {
            error,
            retry_after: answer.retry_after,
            answer,
        }
    }
}
