//! Everything the machine asks the outside world to do.

use crate::{
    Anomaly, Checkpoint, ConvoId, Cursor, Message, MessageId, Permanent, RequestId, Seq,
    StreamEvent, StreamId,
};

/// A command, drained with [`SyncMachine::poll_command`](crate::SyncMachine::poll_command).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Open the conversation's stream, resuming at `cursor`. Report back with
    /// `StreamOpened`, `StreamEvent` and `StreamClosed` naming `stream`.
    OpenStream {
        /// The conversation.
        convo: ConvoId,
        /// The connection's name.
        stream: StreamId,
        /// Where to resume.
        cursor: Option<Cursor>,
    },
    /// Close this stream; no `StreamClosed` is needed for it.
    CloseStream {
        /// The conversation.
        convo: ConvoId,
        /// The connection.
        stream: StreamId,
    },
    /// Open the shared stream (one connection for many conversations: the Catbird
    /// `mlsChat` WebSocket with a global ticket) covering `convos`, without a cursor (that
    /// server replays nothing on resume, and blackholes a cursor it takes for the future).
    /// Report back with `SharedOpened`, `SharedEvent` and `SharedClosed` naming `stream`.
    /// A conversation joining means a new connection: the old one is closed first.
    OpenShared {
        /// The connection's name.
        stream: StreamId,
        /// The conversations it must cover (all the live ones).
        convos: Vec<ConvoId>,
    },
    /// Close the shared stream; no `SharedClosed` is needed for it.
    CloseShared {
        /// The connection.
        stream: StreamId,
    },
    /// Fetch messages after a position; report back with `FetchPage` or `FetchFailed`.
    Fetch(FetchRequest),
    /// Hand one message to the application, in order. Store it with its checkpoint in one
    /// transaction.
    Deliver(Delivery),
    /// A stream event that is not a message (reactions, typing, info), passed through.
    Event {
        /// The conversation.
        convo: ConvoId,
        /// The event.
        event: StreamEvent,
    },
    /// The server confirmed, by two fetches at least `hole_grace` apart, that it has no
    /// message at these seqs (deleted, expired, or never committed).
    Skipped {
        /// The conversation.
        convo: ConvoId,
        /// First missing seq.
        from: Seq,
        /// Last missing seq.
        to: Seq,
    },
    /// These seqs could not be reached: every page that could show them was filled, in the
    /// server's `(epoch, seq)` order, by messages of other seqs, and no answer proved them
    /// empty. Unlike `Skipped` this says nothing about whether the server holds messages
    /// there. The checkpoint moves past them so that what follows is delivered; the machine
    /// keeps asking for them on a slow schedule, and a message that turns up there later is
    /// delivered with [`Order::Late`].
    Unreachable {
        /// The conversation.
        convo: ConvoId,
        /// First seq.
        from: Seq,
        /// Last seq.
        to: Seq,
    },
    /// The conversation's checkpoint once the deliveries, skipped and unreachable ranges
    /// before this command are stored: store it with them, in the same transaction. One
    /// follows every run of them (not every message); a restarted machine given the last
    /// one stored goes on from there without loss (what it fetches again, the store
    /// already has).
    Checkpoint {
        /// The conversation.
        convo: ConvoId,
        /// Its checkpoint.
        checkpoint: Checkpoint,
    },
    /// The conversation can no longer be synced; it was unsubscribed and its buffer
    /// dropped.
    Clear {
        /// The conversation.
        convo: ConvoId,
        /// The server's answer.
        reason: Permanent,
    },
    /// The conversation's status changed (caught up, catching up, waiting to retry and
    /// why). Emitted on a change of kind, not for every message.
    Status {
        /// The conversation.
        convo: ConvoId,
        /// Its status now.
        status: crate::Status,
    },
    /// All conversations together changed (see [`Connection`](crate::Connection)): for an
    /// application's banner and a cold start's progress.
    Connection(crate::Connection),
    /// The server did something it should not have; the machine dealt with it.
    Anomaly {
        /// The conversation.
        convo: ConvoId,
        /// What happened.
        anomaly: Anomaly,
    },
    /// Send a message (`sendMessage`); report back with `Input::SendResult`.
    Send(crate::SendRequest),
    /// A message of the outbox changed state (store it: a restart re-enqueues what is not
    /// final, with its answer if it had one).
    Outbox {
        /// The conversation.
        convo: ConvoId,
        /// The message.
        msg_id: crate::MsgId,
        /// Where it stands now.
        state: crate::OutboxState,
    },
}

/// One `getMessages` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// Report the result with this id.
    pub id: RequestId,
    /// The conversation.
    pub convo: ConvoId,
    /// Fetch messages with seq above this (`sinceSeq`). It is the last delivered seq minus
    /// one: the catch-up overlaps by one seq to find a message that committed late at a seq
    /// already delivered.
    pub since_seq: Seq,
    /// The last delivered id, for older servers that take `sinceMessage` instead.
    pub since_id: Option<MessageId>,
    /// `limit`, 1..=100.
    pub limit: u16,
}

/// How a delivered message relates to the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// The next seq.
    InOrder,
    /// At a seq already delivered for another id (the real server can give two messages
    /// one seq). Delivered, never dropped or overwritten.
    SharesSeq,
    /// At a seq the conversation has already passed (skipped, unreachable, or below the
    /// ids the machine remembers): it arrived late. The machine cannot rule out that this id
    /// was delivered before, long ago: the store, which keeps every id, decides (a store
    /// that already holds the id drops it silently). The checkpoint does not move.
    Late,
    /// `seq = 0`: delivered at once, never sequenced, not in the checkpoint.
    Ephemeral,
}

/// A message for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The conversation.
    pub convo: ConvoId,
    /// The message.
    pub message: Message,
    /// Where it stands.
    pub order: Order,
}
