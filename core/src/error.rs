//! Errors for bad input from a caller, and anomalies reported about a server.

use crate::{ConvoId, MessageId, RequestId, Seq};
use thiserror::Error;

/// An input the machine refused. Nothing already delivered is affected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InputError {
    /// The input names a conversation that is not subscribed.
    #[error("conversation {0} is not subscribed")]
    UnknownConvo(ConvoId),
    /// `Subscribe` for a conversation that is already subscribed.
    #[error("conversation {0} is already subscribed")]
    AlreadySubscribed(ConvoId),
    /// `Send` with a msgId the server would refuse (a ULID of 26 letters and digits, or a
    /// UUID of 36 letters, digits and `-`, is expected).
    #[error("msgId {0:?} is neither a ULID (26 letters and digits) nor a UUID (36 letters, digits and '-')")]
    BadMsgId(crate::MsgId),
    /// `Send` with a payload the server would refuse: it must be non-empty, exactly
    /// `padded_size` bytes, and `padded_size` one of 512, 1024, 2048, 4096, 8192 or a
    /// multiple of 8192 up to 10 MiB.
    #[error(
        "a payload of {len} bytes with paddedSize {padded_size}: expected a non-empty payload \
         of exactly paddedSize bytes, paddedSize 512, 1024, 2048, 4096, 8192 or a multiple \
         of 8192 up to 10 MiB"
    )]
    BadPadding {
        /// The payload's length.
        len: usize,
        /// The padded size given.
        padded_size: u32,
    },
    /// `RetrySend` or `DropSend` for a message the outbox does not hold.
    #[error("conversation {0} has no message {1} in its outbox")]
    UnknownSend(ConvoId, crate::MsgId),
    /// `DropSend` for a message whose send is in flight (its answer decides; drop it after).
    #[error(
        "message {1} of conversation {0} is being sent; it can be dropped once the server answers"
    )]
    SendInFlight(ConvoId, crate::MsgId),
}

/// A `Config` whose values do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `page_limit` outside the server's 1..=100.
    #[error("page_limit must be 1..=100, got {0}")]
    PageLimit(u16),
    /// `max_page_limit` below `page_limit`, below 10 or above 100.
    #[error(
        "max_page_limit must be at least 10 (a seq shared by as many messages as a page holds \
         could never be read whole), at least page_limit and at most 100 (the server's \
         largest page); got {max} with page_limit {limit}"
    )]
    MaxPageLimit {
        /// The value given.
        max: u16,
        /// The page limit.
        limit: u16,
    },
    /// A bound that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// The total buffer bound is below the per-conversation one.
    #[error("max_buffered_total ({total}) is below max_buffered ({per_convo})")]
    TotalBelowPerConvo {
        /// `max_buffered_total`.
        total: usize,
        /// `max_buffered`.
        per_convo: usize,
    },
    /// `catch_up_overlap` is zero or above `dedup_window`.
    #[error("catch_up_overlap must be 1..=dedup_window, got {0}")]
    CatchUpOverlap(u64),
    /// `backoff_base` is zero or above `backoff_cap`.
    #[error("backoff_base must be positive and at most backoff_cap")]
    Backoff,
}

/// Something the server did that it should not have, reported through
/// [`Command::Anomaly`](crate::Command::Anomaly). The machine has already dealt with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Anomaly {
    /// A message's epoch is lower than the one delivered before it. It was delivered in
    /// seq order all the same (a member still at an older epoch can send late).
    EpochWentBack {
        /// The message's seq.
        seq: Seq,
        /// Its epoch.
        epoch: u64,
        /// The epoch of the message delivered before it.
        previous: u64,
    },
    /// A page held messages at or below the position it was asked to start after; they
    /// were ignored.
    PageWentBackwards {
        /// The fetch.
        request: RequestId,
        /// The position asked for.
        since: Seq,
        /// How many messages were ignored.
        ignored: usize,
    },
    /// A page held more messages than the limit asked for.
    PageOversized {
        /// The fetch.
        request: RequestId,
        /// Messages in the page.
        len: usize,
        /// The limit asked for.
        limit: u16,
    },
    /// A message arrived with an id already delivered at another seq. An id is delivered at
    /// most once: this one was not delivered again.
    IdConflict {
        /// The id.
        id: MessageId,
        /// The seq it came with now.
        seq: Seq,
        /// The seq it was delivered at.
        delivered_at: Seq,
    },
    /// The server refused the credentials (HTTP 401). The adapter should get a fresh
    /// token; the machine backs off and tries again, and never clears for this.
    Unauthorized,
    /// A catch-up page held an ephemeral (`seq = 0`) message; it was delivered as
    /// ephemeral.
    EphemeralInPage {
        /// Its id.
        id: MessageId,
    },
}

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Anomaly::EpochWentBack {
                seq,
                epoch,
                previous,
            } => write!(
                f,
                "seq {seq} is at epoch {epoch}, below the {previous} before it (a member at an \
                 older epoch sent late); delivered in order all the same"
            ),
            Anomaly::PageWentBackwards { since, ignored, .. } => write!(
                f,
                "a page asked for after seq {since} held {ignored} message(s) at or before it; \
                 they were ignored"
            ),
            Anomaly::PageOversized { len, limit, .. } => write!(
                f,
                "a page held {len} messages although {limit} were asked for"
            ),
            Anomaly::IdConflict {
                id,
                seq,
                delivered_at,
            } => write!(
                f,
                "message {id} came again at seq {seq}, already delivered at seq {delivered_at}; \
                 not delivered twice"
            ),
            Anomaly::Unauthorized => f.write_str("the server refused the credentials (401)"),
            Anomaly::EphemeralInPage { id } => write!(
                f,
                "a catch-up page held the ephemeral message {id}; delivered as ephemeral"
            ),
        }
    }
}
