//! Everything the outside world tells the machine.

use crate::{Checkpoint, ConvoId, Cursor, Known, Message, RequestId, Seq, StreamId};
use std::time::Duration;

/// An input, fed with [`SyncMachine::handle`](crate::SyncMachine::handle).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// Start syncing a conversation from a checkpoint.
    Subscribe(Subscription),
    /// Stop syncing a conversation; its buffer is dropped (the server still has it).
    Unsubscribe {
        /// The conversation.
        convo: ConvoId,
    },
    /// The stream asked for with `OpenStream` is connected.
    StreamOpened {
        /// The conversation.
        convo: ConvoId,
        /// The connection, as `OpenStream` named it.
        stream: StreamId,
    },
    /// An event came over the stream.
    StreamEvent {
        /// The conversation.
        convo: ConvoId,
        /// The connection it came over.
        stream: StreamId,
        /// The event.
        event: StreamEvent,
    },
    /// The stream ended, cleanly (`error: None`) or not.
    StreamClosed {
        /// The conversation.
        convo: ConvoId,
        /// The connection.
        stream: StreamId,
        /// Why, if it failed.
        error: Option<StreamError>,
    },
    /// The shared stream asked for with `OpenShared` is connected.
    SharedOpened {
        /// The connection, as `OpenShared` named it.
        stream: StreamId,
    },
    /// An event came over the shared stream. `convo` is the conversation it is about (the
    /// event's `convoId`); `None` for what concerns the connection itself (a ping, an
    /// info event naming no conversation), which counts for all its conversations. An
    /// event about a conversation that is not subscribed is ignored.
    SharedEvent {
        /// The connection it came over.
        stream: StreamId,
        /// The conversation it is about.
        convo: Option<ConvoId>,
        /// The event.
        event: StreamEvent,
    },
    /// The shared stream ended, cleanly (`error: None`) or not.
    SharedClosed {
        /// The connection.
        stream: StreamId,
        /// Why, if it failed.
        error: Option<StreamError>,
    },
    /// A fetch succeeded.
    FetchPage(Page),
    /// A fetch failed.
    FetchFailed {
        /// The fetch.
        request: RequestId,
        /// How.
        failure: Failure,
    },
    /// Catch up now: the app came to the foreground or the network came back. `None`
    /// means every conversation.
    Resume {
        /// One conversation, or all.
        convo: Option<ConvoId>,
    },
    /// Put a message in the outbox (see `outbox.rs`): it is sent, in order per
    /// conversation, until the server accepts it, and confirmed once delivered. The same
    /// msgId again is ignored. A payload or msgId the server would refuse is an error.
    Send(crate::Outgoing),
    /// The answer to a `Command::Send`: the server's seq and messageId, or why it failed.
    SendResult {
        /// The send.
        request: RequestId,
        /// The answer.
        result: Result<crate::SendAnswer, crate::SendFailure>,
    },
    /// Send a failed (or retrying) message again now.
    RetrySend {
        /// The conversation.
        convo: ConvoId,
        /// The message.
        msg_id: crate::MsgId,
    },
    /// Give up on a message of the outbox (not while it is being sent).
    DropSend {
        /// The conversation.
        convo: ConvoId,
        /// The message.
        msg_id: crate::MsgId,
    },
}

/// What `Subscribe` needs: the conversation, where it was left, and whether it should have
/// a live stream (a chat app keeps streams only for the conversations on screen; the others
/// are caught up by `Resume` and `poll_interval`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The conversation.
    pub convo: ConvoId,
    /// Where it was left (`Checkpoint::default()` for a new one).
    pub checkpoint: Checkpoint,
    /// Messages delivered below `checkpoint.seq`: every one delivered at the listed seqs
    /// must be there. The machine keeps the newest `dedup_window` of them (more, back to
    /// `checkpoint.recheck_from`) to drop replays and to recognise a late message sharing an
    /// already-delivered seq.
    pub recent: Vec<Known>,
    /// Whether to keep a live stream open.
    pub live: bool,
}

impl Subscription {
    /// A new conversation with a live stream.
    pub fn live(convo: impl Into<ConvoId>) -> Subscription {
        Subscription {
            convo: convo.into(),
            checkpoint: Checkpoint::default(),
            recent: Vec::new(),
            live: true,
        }
    }

    /// A new conversation without a stream: caught up by fetches only.
    pub fn catch_up_only(convo: impl Into<ConvoId>) -> Subscription {
        Subscription {
            live: false,
            ..Subscription::live(convo)
        }
    }

    /// Starts from a stored checkpoint.
    pub fn from_checkpoint(mut self, checkpoint: Checkpoint) -> Subscription {
        self.checkpoint = checkpoint;
        self
    }

    /// Adds stored ids below the checkpoint (see the field's doc).
    pub fn with_recent(mut self, recent: Vec<Known>) -> Subscription {
        self.recent = recent;
        self
    }
}

/// An event from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// A message (`messageEvent`).
    Message {
        /// The event's cursor.
        cursor: Option<Cursor>,
        /// The message.
        message: Message,
    },
    /// A server notice (`infoEvent`); `slow-consumer` means the server dropped events for
    /// this subscriber, and triggers a catch-up.
    Info {
        /// The event's cursor.
        cursor: Option<Cursor>,
        /// The `info` field.
        info: String,
    },
    /// A keepalive comment: the connection is alive.
    Keepalive,
    /// Any other event (reactions, typing, newer kinds), passed through to the app.
    Other {
        /// The event's cursor.
        cursor: Option<Cursor>,
        /// Its `$type`.
        kind: String,
        /// The event as received (JSON).
        body: String,
    },
}

impl StreamEvent {
    /// The event's cursor, if it has one.
    pub fn cursor(&self) -> Option<&Cursor> {
        match self {
            StreamEvent::Message { cursor, .. }
            | StreamEvent::Info { cursor, .. }
            | StreamEvent::Other { cursor, .. } => cursor.as_ref(),
            StreamEvent::Keepalive => None,
        }
    }
}

/// The `info` of a `slow-consumer` notice.
pub const SLOW_CONSUMER: &str = "slow-consumer";

/// A page of `getMessages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The fetch it answers.
    pub request: RequestId,
    /// The messages, in any order (the server sends `(epoch, seq)` order).
    pub messages: Vec<Message>,
    /// What the server said about seqs that hold no message (`gapInfo`).
    pub gaps: Gaps,
}

impl Page {
    /// A page with no word on gaps ([`Gaps::Unknown`]).
    pub fn new(request: RequestId, messages: Vec<Message>) -> Page {
        Page {
            request,
            messages,
            gaps: Gaps::Unknown,
        }
    }

    /// The same page with the server's gap report.
    pub fn with_gaps(mut self, gaps: Gaps) -> Page {
        self.gaps = gaps;
        self
    }
}

/// The server's word on which seqs hold no message: the real server (at its SSE-era API)
/// sends `gapInfo` with every page *when the conversation has gaps*, listing every seq
/// between its lowest and highest live message that holds none. Newer servers never send
/// it.
///
/// A listed seq is as good as a short page's proof of absence (and is confirmed the same
/// way, by a second answer `hole_grace` later); a seq that is not listed is not proven
/// present (it may lie below the conversation's lowest live message), so the machine never
/// skips on the strength of an omission.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Gaps {
    /// The answer said nothing about gaps.
    #[default]
    Unknown,
    /// These seqs hold no message (sorted or not; the machine reads only the ones it needs).
    Missing(Vec<Seq>),
}

impl Gaps {
    /// Whether the server listed `seq` as holding no message.
    pub fn lists(&self, seq: Seq) -> bool {
        match self {
            Gaps::Unknown => false,
            Gaps::Missing(seqs) => seqs.contains(&seq),
        }
    }
}

/// Why a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// A network error, a 5xx, a timeout: reconnect with backoff.
    Transient,
    /// The server refused the credentials (401): get a fresh token, back off.
    Unauthorized,
    /// 429: every stream open waits for the server's delay (or a default pause).
    RateLimited {
        /// The `Retry-After` delay.
        retry_after: Option<Duration>,
    },
    /// The server refused the cursor (400): reconnect without it and catch up by fetch.
    InvalidCursor,
    /// The conversation cannot be streamed any more.
    Permanent(Permanent),
}

/// Why a fetch failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// A network error, a 5xx, a timeout: retry with backoff.
    Transient,
    /// 429: retry after the server's delay if it gave one, and never sooner than backoff.
    RateLimited {
        /// The `Retry-After` delay.
        retry_after: Option<Duration>,
    },
    /// The server refused the credentials (401): back off and retry with a fresh token.
    Unauthorized,
    /// The server will not give this conversation's messages any more.
    Permanent(Permanent),
}

/// A permanent answer from the server: the conversation is cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Permanent {
    /// Not a member (`NotMember`).
    NotMember,
    /// The conversation does not exist (`ConvoNotFound`).
    NotFound,
    /// 403 with no body: the real server's answer for both of the above.
    Forbidden,
    /// The position fetched from is no longer known to the server (`sinceMessage` of a
    /// message that is gone): its history no longer reaches the checkpoint.
    InvalidCursor,
}
