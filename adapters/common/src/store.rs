//! Where delivered messages and checkpoints go.

use gapless::{
    Anomaly, Checkpoint, ConvoId, Delivery, Known, MessageId, MsgId, Order, OutboxState, Outgoing,
    Permanent, SendAnswer, Seq,
};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One thing to store, in the order the machine produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// A delivered message. An ephemeral message (`Order::Ephemeral`, seq 0) is never
    /// stored.
    Message {
        /// The delivery.
        delivery: Delivery,
        /// When this process received it, milliseconds since the Unix epoch.
        received_at_ms: u64,
    },
    /// Seqs `from..=to` the server confirmed (twice) it does not have.
    Skipped {
        /// The conversation.
        convo: ConvoId,
        /// First skipped seq.
        from: Seq,
        /// Last skipped seq.
        to: Seq,
    },
    /// Seqs `from..=to` no page could show (see `Command::Unreachable`): passed, not
    /// proven empty; a message found there later is stored as usual (`Order::Late`).
    Unreachable {
        /// The conversation.
        convo: ConvoId,
        /// First seq.
        from: Seq,
        /// Last seq.
        to: Seq,
    },
    /// The conversation's checkpoint, true once the writes before it are stored (one
    /// follows every run of them: `Command::Checkpoint`).
    Checkpoint {
        /// The conversation.
        convo: ConvoId,
        /// The checkpoint.
        checkpoint: Checkpoint,
    },
    /// The conversation can no longer be synced.
    Cleared {
        /// The conversation.
        convo: ConvoId,
        /// Why.
        reason: Permanent,
    },
    /// The server did something it should not have (nothing was lost for it): kept so that
    /// `gapless inspect` can say what happened recently. A store may keep only the last few.
    Anomaly {
        /// The conversation.
        convo: ConvoId,
        /// What.
        anomaly: Anomaly,
        /// When this process saw it, milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// A message the application sends, put in the outbox: stored before its first send
    /// (idempotent by conversation and msgId).
    Enqueued(Outgoing),
    /// A message of the outbox changed state: a final state (`OutboxState::is_final`)
    /// removes it, `Sent` records the server's answer so that a restart waits for its
    /// delivery instead of sending it again.
    Outbox {
        /// The conversation.
        convo: ConvoId,
        /// The message.
        msg_id: MsgId,
        /// Where it stands.
        state: OutboxState,
    },
}

impl Write {
    /// The conversation written to.
    pub fn convo(&self) -> &ConvoId {
        match self {
            Write::Message { delivery, .. } => &delivery.convo,
            Write::Skipped { convo, .. }
            | Write::Unreachable { convo, .. }
            | Write::Checkpoint { convo, .. }
            | Write::Anomaly { convo, .. }
            | Write::Cleared { convo, .. }
            | Write::Outbox { convo, .. } => convo,
            Write::Enqueued(out) => &out.convo,
        }
    }

    /// Whether a store keeps it (ephemeral messages it does not).
    pub fn is_stored(&self) -> bool {
        !matches!(self, Write::Message { delivery, .. } if delivery.order == Order::Ephemeral)
    }

    /// The checkpoint it moves its conversation to, if it is one.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match self {
            Write::Checkpoint { checkpoint, .. } => Some(checkpoint),
            _ => None,
        }
    }
}

/// What a store gives back to restore a conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// The stored checkpoint.
    pub checkpoint: Checkpoint,
    /// Messages already stored: at least the `recent` newest by seq, and every one at or
    /// above `checkpoint.recheck_from`, so the machine recognises what it already has.
    pub recent: Vec<Known>,
}

/// A store failed. The session stops: the machine believes the batch delivered, so going on
/// would lose it; a restarted session resumes from what was stored.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl StoreError {
    /// Wraps any error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError(Box::new(e))
    }
}

/// Durable storage for delivered messages and checkpoints.
///
/// [`commit`](Store::commit) must be atomic (all of a batch or nothing) and idempotent by
/// (conversation, message id): a message already stored is a no-op, not an error, and two
/// messages may share a seq. The checkpoint a conversation ends with is the last one of its
/// writes in the batch.
pub trait Store: Send + 'static {
    /// Stores a batch, all or nothing.
    fn commit(&mut self, batch: &[Write]) -> Result<(), StoreError>;

    /// A conversation's stored state, or `None` if nothing was stored for it. `recent` is
    /// how many of the newest messages to give back at least (the machine's dedup window).
    fn load(&mut self, convo: &ConvoId, recent: usize) -> Result<Option<Restored>, StoreError>;

    /// Whether a message with this id is stored in the conversation. The store is the dedup
    /// authority: a message the machine delivers `Late` (it can no longer tell whether it
    /// was delivered, long ago) is dropped when the store already has it.
    fn contains(&mut self, convo: &ConvoId, id: &MessageId) -> Result<bool, StoreError>;

    /// The outbox to enqueue again after a restart: every message not confirmed nor
    /// dropped, in the order it was enqueued (per conversation), with the server's answer
    /// if one was stored (`Outgoing::sent`). A message whose delivery is already stored is
    /// confirmed, not returned. The default keeps no outbox: a store that persists
    /// [`Write::Enqueued`] must give it back here.
    fn outbox(&mut self) -> Result<Vec<Outgoing>, StoreError> {
        Ok(Vec::new())
    }
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn commit(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        (**self).commit(batch)
    }
    fn load(&mut self, convo: &ConvoId, recent: usize) -> Result<Option<Restored>, StoreError> {
        (**self).load(convo, recent)
    }
    fn contains(&mut self, convo: &ConvoId, id: &MessageId) -> Result<bool, StoreError> {
        (**self).contains(convo, id)
    }
    fn outbox(&mut self) -> Result<Vec<Outgoing>, StoreError> {
        (**self).outbox()
    }
}

/// An in-memory store, for tests and for applications that persist nothing.
#[derive(Debug, Default)]
pub struct MemoryStore {
    convos: HashMap<ConvoId, MemoryConvo>,
    /// The outbox, in enqueue order, with the last state stored.
    outbox: Vec<(Outgoing, OutboxState)>,
}

#[derive(Debug, Default)]
struct MemoryConvo {
    checkpoint: Checkpoint,
    /// (seq, id) → epoch.
    messages: BTreeMap<(Seq, String), u64>,
    ids: HashSet<String>,
    skipped: Vec<(Seq, Seq)>,
    unreachable: Vec<(Seq, Seq)>,
    cleared: Option<Permanent>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Stored messages of a conversation as `(seq, id)`, in seq order.
    pub fn messages(&self, convo: &ConvoId) -> Vec<(u64, String)> {
        self.convos
            .get(convo)
            .map(|c| c.messages.keys().map(|(s, id)| (s.0, id.clone())).collect())
            .unwrap_or_default()
    }

    /// Skipped ranges of a conversation.
    pub fn skipped(&self, convo: &ConvoId) -> Vec<(Seq, Seq)> {
        self.convos
            .get(convo)
            .map(|c| c.skipped.clone())
            .unwrap_or_default()
    }

    /// Unreachable ranges of a conversation.
    pub fn unreachable(&self, convo: &ConvoId) -> Vec<(Seq, Seq)> {
        self.convos
            .get(convo)
            .map(|c| c.unreachable.clone())
            .unwrap_or_default()
    }

    /// The outbox as stored: every message not confirmed nor dropped, with its last state.
    pub fn outbox_states(&self) -> Vec<(ConvoId, MsgId, OutboxState)> {
        self.outbox
            .iter()
            .map(|(o, s)| (o.convo.clone(), o.msg_id.clone(), s.clone()))
            .collect()
    }

    /// Why a conversation was cleared, if it was.
    pub fn cleared(&self, convo: &ConvoId) -> Option<Permanent> {
        self.convos.get(convo).and_then(|c| c.cleared)
    }
}

impl Store for MemoryStore {
    fn commit(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        for write in batch.iter().filter(|w| w.is_stored()) {
            match write {
                Write::Enqueued(out) => {
                    let known = self
                        .outbox
                        .iter()
                        .any(|(o, _)| o.convo == out.convo && o.msg_id == out.msg_id);
                    if !known {
                        self.outbox.push((out.clone(), OutboxState::Queued));
                    }
                    continue;
                }
                Write::Outbox {
                    convo,
                    msg_id,
                    state,
                } => {
                    let at = self
                        .outbox
                        .iter()
                        .position(|(o, _)| o.convo == *convo && o.msg_id == *msg_id);
                    if let Some(at) = at {
                        if state.is_final() {
                            self.outbox.remove(at);
                        } else {
                            self.outbox[at].1 = state.clone();
                        }
                    }
                    continue;
                }
                _ => {}
            }
            let convo = self.convos.entry(write.convo().clone()).or_default();
            if let Some(cp) = write.checkpoint() {
                convo.checkpoint = cp.clone();
            }
            match write {
                Write::Message { delivery, .. } => {
                    let m = &delivery.message;
                    if convo.ids.insert(m.id.to_string()) {
                        convo.messages.insert((m.seq, m.id.to_string()), m.epoch.0);
                    }
                }
                Write::Skipped { from, to, .. } => convo.skipped.push((*from, *to)),
                Write::Unreachable { from, to, .. } => convo.unreachable.push((*from, *to)),
                Write::Cleared { reason, .. } => convo.cleared = Some(*reason),
                Write::Checkpoint { .. }
                | Write::Anomaly { .. }
                | Write::Enqueued(_)
                | Write::Outbox { .. } => {}
            }
        }
        Ok(())
    }

    fn load(&mut self, convo: &ConvoId, recent: usize) -> Result<Option<Restored>, StoreError> {
        let Some(c) = self.convos.get(convo) else {
            return Ok(None);
        };
        let floor = c.checkpoint.recheck_from.unwrap_or(Seq(u64::MAX));
        let n = c.messages.len();
        let recent = c
            .messages
            .iter()
            .enumerate()
            .filter(|(i, ((seq, _), _))| i + recent >= n || *seq >= floor)
            .map(|(_, ((seq, id), epoch))| Known::new(*seq, id.as_str(), gapless::Epoch(*epoch)))
            .collect();
        Ok(Some(Restored {
            checkpoint: c.checkpoint.clone(),
            recent,
        }))
    }

    fn contains(&mut self, convo: &ConvoId, id: &MessageId) -> Result<bool, StoreError> {
        Ok(self
            .convos
            .get(convo)
            .is_some_and(|c| c.ids.contains(id.as_str())))
    }

    fn outbox(&mut self) -> Result<Vec<Outgoing>, StoreError> {
        let convos = &self.convos;
        Ok(self
            .outbox
            .iter()
            .filter_map(|(out, state)| {
                let mut out = out.clone();
                if let OutboxState::Sent { seq, message_id } = state {
                    let delivered = convos
                        .get(&out.convo)
                        .is_some_and(|c| c.ids.contains(message_id.as_str()));
                    if delivered {
                        return None;
                    }
                    out.sent = Some(SendAnswer {
                        seq: *seq,
                        message_id: message_id.clone(),
                        received_at: None,
                    });
                }
                Some(out)
            })
            .collect())
    }
}
