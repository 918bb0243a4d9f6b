//! What the application is told.

use gapless::{Anomaly, ConvoId, InputError, Message, Order, Permanent, Seq, Status, StreamEvent};

/// One thing that happened, told to the application after it was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Update {
    /// A message, in order (stored unless ephemeral).
    Message {
        /// The conversation.
        convo: ConvoId,
        /// The message.
        message: Message,
        /// In order, sharing an already-delivered seq, late (at a seq already passed: a
        /// skipped or unreachable range turned out to hold it, or it is older than the
        /// machine remembers and the store did not have it), or ephemeral.
        order: Order,
        /// Whether it came late: not delivered on its own stream event (it was fetched, or
        /// waited in the buffer for a gap to fill).
        recovered: bool,
    },
    /// Seqs the server confirmed it does not have.
    Skipped {
        /// The conversation.
        convo: ConvoId,
        /// First.
        from: Seq,
        /// Last.
        to: Seq,
    },
    /// Seqs no page could show: passed so that what follows is delivered, not proven
    /// empty. gapless keeps asking for them slowly; a message found there later comes as an
    /// `Update::Message` with `Order::Late`.
    Unreachable {
        /// The conversation.
        convo: ConvoId,
        /// First.
        from: Seq,
        /// Last.
        to: Seq,
    },
    /// The conversation can no longer be synced.
    Cleared {
        /// The conversation.
        convo: ConvoId,
        /// Why.
        reason: Permanent,
    },
    /// A pass-through stream event (reactions, typing, info).
    Event {
        /// The conversation.
        convo: ConvoId,
        /// The event.
        event: StreamEvent,
    },
    /// A request of the application was refused (a conversation subscribed twice, or
    /// unsubscribed when it was not subscribed); nothing changed.
    Refused {
        /// The conversation.
        convo: ConvoId,
        /// Why.
        error: InputError,
    },
    /// The conversation's status changed: caught up, catching up, or waiting to retry and
    /// why (show "connecting…" or "couldn't load messages" from it). Told on a change of
    /// kind, not for every message.
    Status {
        /// The conversation.
        convo: ConvoId,
        /// Its status now.
        status: Status,
    },
    /// All conversations together changed: online, catching up (how many of how many are
    /// caught up: a cold start's progress), degraded or offline and why. For an
    /// application's "connecting…" / "offline" banner.
    Connection(gapless::Connection),
    /// A message of the outbox changed state (already stored): queued, sending, sent at a
    /// seq, confirmed (seen delivered), retrying and why, failed and why, dropped.
    Outbox {
        /// The conversation.
        convo: ConvoId,
        /// The message (the application's msgId).
        msg_id: gapless::MsgId,
        /// Where it stands.
        state: gapless::OutboxState,
    },
    /// The server did something it should not have; nothing was lost for it.
    Anomaly {
        /// The conversation.
        convo: ConvoId,
        /// What.
        anomaly: Anomaly,
    },
}

impl Update {
    /// The conversation it is about (`None` for the connection as a whole).
    pub fn convo(&self) -> Option<&ConvoId> {
        Some(match self {
            Update::Message { convo, .. }
            | Update::Skipped { convo, .. }
            | Update::Unreachable { convo, .. }
            | Update::Cleared { convo, .. }
            | Update::Event { convo, .. }
            | Update::Refused { convo, .. }
            | Update::Status { convo, .. }
            | Update::Outbox { convo, .. }
            | Update::Anomaly { convo, .. } => convo,
            Update::Connection(_) => return None,
        })
    }
}
