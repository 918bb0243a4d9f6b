//! The outbox: messages the application sends, sent reliably, in order, and reconciled with
//! their own echo.
//!
//! The application enqueues a message ([`Input::Send`](crate::Input::Send)) with a `msgId` it
//! picked (a ULID or UUID). The real server answers a `sendMessage` repeated with the same
//! `msgId` with the *same* seq and messageId (recording `64b_`), so a retry with the same id
//! can never create a second message: every send is retried with its id until the server
//! answers, and an answer that was lost is simply asked for again.
//!
//! Per conversation at most one send is in flight, and a later message is not sent before
//! the server accepted the earlier one (people expect their messages in the order they
//! wrote them); a message the server refuses (400, 403) holds its conversation's queue until
//! the application retries or drops it. Sends draw from the account's budget
//! (`Budget::sends`); a 429 pauses every conversation's sends.
//!
//! An accepted message is `Sent` at a seq; it is `Confirmed` once it is seen in the
//! conversation's delivered order: a delivery of the messageId the server gave, or — when
//! the answer was lost, or has not come yet — a delivery with the same ciphertext and epoch
//! (the server stores the ciphertext verbatim and never parses it, so our message comes back
//! byte for byte; MLS ciphertexts of two messages never coincide). The machine sees
//! deliveries by looking at the `Deliver` commands an input produced, only while the outbox
//! holds something; an empty outbox costs one branch per input.

use crate::budget::{Buckets, Kind};
use crate::rng::Rng;
use crate::status::Trouble;
use crate::{Command, Config, ConvoId, Epoch, InputError, MessageId, Order, RequestId, Seq, Time};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The client's id of a message it sends (`msgId`): a ULID (26 letters and digits) or a
/// UUID (36 letters, digits and `-`), picked by the application. It is *not* the server's
/// messageId (a UUID the server assigns), except for ephemeral messages.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MsgId(Arc<str>);

impl MsgId {
    /// Wraps a string (checked when the message is enqueued).
    pub fn new(s: impl Into<Arc<str>>) -> MsgId {
        MsgId(s.into())
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the server takes it: 26 ASCII letters or digits (a ULID), or 36 ASCII letters,
    /// digits or `-` (a UUID).
    pub fn is_valid(&self) -> bool {
        let s = self.as_str();
        match s.len() {
            26 => s.bytes().all(|b| b.is_ascii_alphanumeric()),
            36 => s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            _ => false,
        }
    }
}

impl From<&str> for MsgId {
    fn from(s: &str) -> MsgId {
        MsgId(s.into())
    }
}

impl From<String> for MsgId {
    fn from(s: String) -> MsgId {
        MsgId(s.into())
    }
}

impl fmt::Debug for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether the server takes `padded_size`: 512, 1024, 2048, 4096, 8192, or a multiple of
/// 8192 up to 10 MiB.
pub fn padded_size_is_valid(padded_size: u32) -> bool {
    matches!(padded_size, 512 | 1024 | 2048 | 4096)
        || (padded_size > 0 && padded_size % 8192 == 0 && padded_size <= 10 * 1024 * 1024)
}

/// A message to send, for [`Input::Send`](crate::Input::Send).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The conversation.
    pub convo: ConvoId,
    /// The client's id; sending it again is idempotent.
    pub msg_id: MsgId,
    /// The ciphertext, opaque to gapless, already padded: `padded_size` bytes.
    pub payload: Vec<u8>,
    /// The MLS epoch it was encrypted in.
    pub epoch: Epoch,
    /// The padded size (`paddedSize`): the payload's length.
    pub padded_size: u32,
    /// `delivery: "ephemeral"`: not stored by the server (seq 0), never confirmed.
    pub ephemeral: bool,
    /// The server's answer, when a store restores an entry that was sent before a restart:
    /// it waits for its delivery instead of being sent again.
    pub sent: Option<SendAnswer>,
}

impl Outgoing {
    /// A message whose padded size is its payload's length.
    pub fn new(
        convo: impl Into<ConvoId>,
        msg_id: impl Into<MsgId>,
        payload: Vec<u8>,
        epoch: u64,
    ) -> Outgoing {
        Outgoing {
            convo: convo.into(),
            msg_id: msg_id.into(),
            padded_size: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            payload,
            epoch: Epoch(epoch),
            ephemeral: false,
            sent: None,
        }
    }

    /// The same message, ephemeral.
    pub fn ephemeral(mut self) -> Outgoing {
        self.ephemeral = true;
        self
    }

    /// The same message, restored with the answer it already had.
    pub fn with_sent(mut self, answer: SendAnswer) -> Outgoing {
        self.sent = Some(answer);
        self
    }
}

/// The server's answer to `sendMessage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAnswer {
    /// The message's seq (0 for an ephemeral message).
    pub seq: Seq,
    /// The server's id of the message (a UUID it assigns; the msgId for an ephemeral one).
    pub message_id: MessageId,
    /// The server's `receivedAt`, as sent.
    pub received_at: Option<Box<str>>,
}

impl SendAnswer {
    /// An answer without `receivedAt`.
    pub fn new(seq: u64, message_id: impl Into<MessageId>) -> SendAnswer {
        SendAnswer {
            seq: Seq(seq),
            message_id: message_id.into(),
            received_at: None,
        }
    }
}

/// Why a send failed, for [`Input::SendResult`](crate::Input::SendResult).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendFailure {
    /// A network error, a 5xx, a timeout — the server may or may not have applied it:
    /// retried with the same msgId after a backoff.
    Transient,
    /// 429: every send of the account waits for the server's delay (or a default pause).
    RateLimited {
        /// The `Retry-After` delay.
        retry_after: Option<Duration>,
    },
    /// The server refused the credentials (401): retried after a backoff with a fresh token.
    Unauthorized,
    /// The server refused the message itself: it fails, and its conversation's queue waits
    /// until the application retries or drops it.
    Refused(Refusal),
}

/// Why the server refused a message (a 4xx other than 401 and 429).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    /// 400: a bad msgId, padding, ciphertext encoding, or another malformed request.
    BadRequest,
    /// 403: not a member, or no such conversation (the real server says both with an
    /// empty 403).
    Forbidden,
    /// `NotMember`.
    NotMember,
    /// `ConvoNotFound`, or 404.
    NotFound,
    /// 413 or `MessageTooLarge`: the message is too large.
    TooLarge,
    /// 409 or `EpochMismatch`: the newest server takes only the conversation's current
    /// epoch (encrypt again at the current epoch, then send with a new msgId).
    EpochMismatch,
    /// Any other 4xx, by its status.
    Status(u16),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadRequest => f.write_str("the server says the request is malformed (400)"),
            Refusal::Forbidden => f.write_str(
                "the server refuses (403): not a member of the conversation, or no such conversation",
            ),
            Refusal::NotMember => f.write_str("not a member of the conversation"),
            Refusal::NotFound => f.write_str("no such conversation"),
            Refusal::TooLarge => f.write_str("the message is too large for the server (413)"),
            Refusal::EpochMismatch => {
                f.write_str("the server is at another epoch of the conversation (409)")
            }
            Refusal::Status(s) => write!(f, "the server refuses the message ({s})"),
        }
    }
}

/// Where a message of the outbox stands, told with [`Command::Outbox`](crate::Command::Outbox)
/// on every change.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboxState {
    /// Waiting its turn (an earlier message of the conversation first, or the budget).
    Queued,
    /// A `sendMessage` is in flight.
    Sending,
    /// The server accepted it at `seq` (0 and final for an ephemeral message); waiting to
    /// see it in the conversation's delivered order.
    Sent {
        /// Its seq.
        seq: Seq,
        /// The server's id of it.
        message_id: MessageId,
    },
    /// Seen in the conversation's delivered order. Final.
    Confirmed {
        /// Its seq.
        seq: Seq,
        /// The server's id of it.
        message_id: MessageId,
    },
    /// The last attempt failed for a reason that passes; sent again (same msgId) at `until`.
    Retrying {
        /// When it is sent again.
        until: Time,
        /// Why it failed.
        why: Trouble,
    },
    /// The server refused it; the conversation's later messages wait until the application
    /// retries ([`Input::RetrySend`](crate::Input::RetrySend)) or drops
    /// ([`Input::DropSend`](crate::Input::DropSend)) it.
    Failed {
        /// Why.
        why: Refusal,
    },
    /// Dropped by the application. Final.
    Dropped,
}

impl OutboxState {
    /// Whether the entry has left the outbox (confirmed, dropped, or an ephemeral message
    /// accepted): a store deletes it.
    pub fn is_final(&self) -> bool {
        match self {
            OutboxState::Confirmed { .. } | OutboxState::Dropped => true,
            OutboxState::Sent { seq, .. } => *seq == Seq::ZERO,
            _ => false,
        }
    }
}

impl fmt::Display for OutboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboxState::Queued => f.write_str("queued"),
            OutboxState::Sending => f.write_str("sending"),
            OutboxState::Sent { seq, .. } if *seq == Seq::ZERO => {
                f.write_str("sent (ephemeral: not stored by the server)")
            }
            OutboxState::Sent { seq, .. } => {
                write!(f, "sent at seq {seq}, waiting to see it delivered")
            }
            OutboxState::Confirmed { seq, .. } => write!(f, "sent and confirmed at seq {seq}"),
            OutboxState::Retrying { until, why } => {
                write!(f, "will retry at {until} ({why})")
            }
            OutboxState::Failed { why } => write!(f, "failed: {why}"),
            OutboxState::Dropped => f.write_str("dropped"),
        }
    }
}

/// One `sendMessage` call: report back with [`Input::SendResult`](crate::Input::SendResult)
/// naming `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendRequest {
    /// Report the result with this id.
    pub id: RequestId,
    /// The conversation.
    pub convo: ConvoId,
    /// The client's id (the same on every attempt).
    pub msg_id: MsgId,
    /// The ciphertext.
    pub payload: Vec<u8>,
    /// Its epoch.
    pub epoch: Epoch,
    /// `paddedSize`.
    pub padded_size: u32,
    /// `delivery: "ephemeral"`.
    pub ephemeral: bool,
}

#[derive(Clone, Debug)]
enum Phase {
    Queued,
    Sending(RequestId),
    Retrying { until: Time, why: Trouble },
    Failed(Refusal),
    Sent { seq: Seq, message_id: MessageId },
}

#[derive(Clone, Debug)]
struct Entry {
    msg_id: MsgId,
    payload: Vec<u8>,
    epoch: Epoch,
    padded_size: u32,
    ephemeral: bool,
    phase: Phase,
    attempts: u32,
    /// Where the conversation's delivered order stood when it was first sent: a message of
    /// ours applied after that has a higher seq, so only a delivery above it can be our
    /// echo (an older message with the same bytes — a dev tool sending plain text twice —
    /// is not). `None`: never sent by this machine, so not on the server by its doing.
    floor: Option<Seq>,
}

impl Entry {
    fn state(&self) -> OutboxState {
        match &self.phase {
            Phase::Queued => OutboxState::Queued,
            Phase::Sending(_) => OutboxState::Sending,
            Phase::Retrying { until, why } => OutboxState::Retrying {
                until: *until,
                why: *why,
            },
            Phase::Failed(why) => OutboxState::Failed { why: *why },
            Phase::Sent { seq, message_id } => OutboxState::Sent {
                seq: *seq,
                message_id: message_id.clone(),
            },
        }
    }
}

/// Everything the machine lends the outbox for one call.
pub(crate) struct OutboxCtx<'a> {
    pub(crate) config: &'a Config,
    pub(crate) now: Time,
    pub(crate) rng: &'a mut Rng,
    pub(crate) buckets: &'a mut Buckets,
    pub(crate) next_request: &'a mut u64,
    pub(crate) commands: &'a mut crate::queue::Queue,
    /// A subscribed conversation's checkpoint seq.
    pub(crate) delivered: &'a dyn Fn(&ConvoId) -> Option<Seq>,
}

/// The outbox of every conversation: a FIFO each, in a map ordered by conversation (so
/// that the same inputs give the same commands).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queues: BTreeMap<ConvoId, VecDeque<Entry>>,
    inflight: BTreeMap<RequestId, (ConvoId, MsgId)>,
    /// The conversation served last: the next pump starts after it (round robin, so that
    /// a tight budget serves every conversation in turn).
    last: Option<ConvoId>,
    /// The next deadline: a retry, or the budget's next token.
    deadline: Option<Time>,
}

fn tell(commands: &mut crate::queue::Queue, convo: &ConvoId, msg_id: &MsgId, state: OutboxState) {
    commands.push(Command::Outbox {
        convo: convo.clone(),
        msg_id: msg_id.clone(),
        state,
    });
}

impl Outbox {
    pub(crate) fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// The next deadline; none once the outbox is empty (nothing pumps it then).
    pub(crate) fn deadline(&self) -> Option<Time> {
        if self.queues.is_empty() {
            None
        } else {
            self.deadline
        }
    }

    /// The conversation's entries, in order, with their states.
    pub(crate) fn entries(&self, convo: &ConvoId) -> Vec<(MsgId, OutboxState)> {
        self.queues.get(convo).map_or_else(Vec::new, |q| {
            q.iter().map(|e| (e.msg_id.clone(), e.state())).collect()
        })
    }

    /// Enqueues a message (idempotent for a msgId already there).
    pub(crate) fn enqueue(
        &mut self,
        out: Outgoing,
        cx: &mut OutboxCtx<'_>,
    ) -> Result<(), InputError> {
        let delivered_up_to = (cx.delivered)(&out.convo);
        if !out.msg_id.is_valid() {
            return Err(InputError::BadMsgId(out.msg_id));
        }
        if out.payload.is_empty()
            || out.payload.len() != out.padded_size as usize
            || !padded_size_is_valid(out.padded_size)
        {
            return Err(InputError::BadPadding {
                len: out.payload.len(),
                padded_size: out.padded_size,
            });
        }
        let queue = self.queues.entry(out.convo.clone()).or_default();
        if queue.iter().any(|e| e.msg_id == out.msg_id) {
            return Ok(());
        }
        let phase = match out.sent {
            Some(answer) => Phase::Sent {
                seq: answer.seq,
                message_id: answer.message_id,
            },
            None => Phase::Queued,
        };
        let entry = Entry {
            msg_id: out.msg_id,
            payload: out.payload,
            epoch: out.epoch,
            padded_size: out.padded_size,
            ephemeral: out.ephemeral,
            phase,
            attempts: 0,
            floor: None,
        };
        tell(cx.commands, &out.convo, &entry.msg_id, entry.state());
        let restored = match &entry.phase {
            Phase::Sent { seq, message_id } => Some((*seq, message_id.clone())),
            _ => None,
        };
        let msg_id = entry.msg_id.clone();
        queue.push_back(entry);
        if let Some((seq, message_id)) = restored {
            // Sent before a restart and already delivered (the checkpoint is past it), or
            // ephemeral: nothing left to wait for.
            if seq == Seq::ZERO || delivered_up_to.is_some_and(|d| d >= seq) {
                self.confirm(&out.convo, &msg_id, seq, message_id, cx.commands);
            }
        }
        Ok(())
    }

    /// The application retries a failed (or retrying) message now.
    pub(crate) fn retry(
        &mut self,
        convo: &ConvoId,
        msg_id: &MsgId,
        commands: &mut crate::queue::Queue,
    ) -> Result<(), InputError> {
        let entry = self
            .queues
            .get_mut(convo)
            .and_then(|q| q.iter_mut().find(|e| e.msg_id == *msg_id))
            .ok_or_else(|| InputError::UnknownSend(convo.clone(), msg_id.clone()))?;
        if matches!(entry.phase, Phase::Failed(_) | Phase::Retrying { .. }) {
            entry.phase = Phase::Queued;
            entry.attempts = 0;
            tell(commands, convo, msg_id, OutboxState::Queued);
        }
        Ok(())
    }

    /// The application gives up on a message (not while it is in flight).
    pub(crate) fn drop_entry(
        &mut self,
        convo: &ConvoId,
        msg_id: &MsgId,
        commands: &mut crate::queue::Queue,
    ) -> Result<(), InputError> {
        let unknown = || InputError::UnknownSend(convo.clone(), msg_id.clone());
        let queue = self.queues.get_mut(convo).ok_or_else(unknown)?;
        let at = queue
            .iter()
            .position(|e| e.msg_id == *msg_id)
            .ok_or_else(unknown)?;
        if matches!(queue[at].phase, Phase::Sending(_)) {
            return Err(InputError::SendInFlight(convo.clone(), msg_id.clone()));
        }
        queue.remove(at);
        if queue.is_empty() {
            self.queues.remove(convo);
        }
        tell(commands, convo, msg_id, OutboxState::Dropped);
        Ok(())
    }

    /// The server answered a send (or it failed). A result the outbox is not waiting for
    /// (already confirmed by its delivery, dropped, unknown) is ignored.
    pub(crate) fn on_result(
        &mut self,
        request: RequestId,
        result: Result<SendAnswer, SendFailure>,
        cx: &mut OutboxCtx<'_>,
    ) {
        let delivered_up_to = cx.delivered;
        let Some((convo, msg_id)) = self.inflight.remove(&request) else {
            return;
        };
        let Some(entry) = self
            .queues
            .get_mut(&convo)
            .and_then(|q| q.iter_mut().find(|e| e.msg_id == msg_id))
        else {
            return;
        };
        if !matches!(entry.phase, Phase::Sending(r) if r == request) {
            return;
        }
        match result {
            Ok(answer) => {
                entry.attempts = 0;
                let (seq, message_id) = (answer.seq, answer.message_id);
                let final_ = entry.ephemeral || seq == Seq::ZERO;
                entry.phase = Phase::Sent {
                    seq,
                    message_id: message_id.clone(),
                };
                tell(cx.commands, &convo, &msg_id, entry.state());
                if final_ {
                    self.remove(&convo, &msg_id);
                } else if delivered_up_to(&convo).is_some_and(|d| d >= seq) {
                    // Delivered already (before a restart: the store holds it).
                    self.confirm(&convo, &msg_id, seq, message_id, cx.commands);
                }
            }
            Err(SendFailure::Refused(why)) => {
                entry.phase = Phase::Failed(why);
                tell(cx.commands, &convo, &msg_id, entry.state());
            }
            Err(failure) => {
                entry.attempts = entry.attempts.saturating_add(1);
                let backoff = crate::rng::backoff(cx.config, cx.rng, entry.attempts);
                let (why, wait) = match failure {
                    SendFailure::RateLimited { retry_after } => {
                        let pause =
                            retry_after.unwrap_or(cx.config.budget.pause_without_retry_after);
                        cx.buckets.pause(Kind::Send, cx.now + pause);
                        (Trouble::RateLimited, pause.max(backoff))
                    }
                    SendFailure::Unauthorized => (Trouble::Unauthorized, backoff),
                    _ => (Trouble::Unreachable, backoff),
                };
                entry.phase = Phase::Retrying {
                    until: cx.now + wait,
                    why,
                };
                tell(cx.commands, &convo, &msg_id, entry.state());
            }
        }
    }

    fn remove(&mut self, convo: &ConvoId, msg_id: &MsgId) {
        if let Some(queue) = self.queues.get_mut(convo) {
            queue.retain(|e| e.msg_id != *msg_id);
            if queue.is_empty() {
                self.queues.remove(convo);
            }
        }
    }

    fn confirm(
        &mut self,
        convo: &ConvoId,
        msg_id: &MsgId,
        seq: Seq,
        message_id: MessageId,
        commands: &mut crate::queue::Queue,
    ) {
        if let Some(Phase::Sending(request)) = self
            .queues
            .get(convo)
            .and_then(|q| q.iter().find(|e| e.msg_id == *msg_id))
            .map(|e| &e.phase)
        {
            // Its answer, when it comes, is not needed any more.
            self.inflight.remove(request);
        }
        self.remove(convo, msg_id);
        tell(
            commands,
            convo,
            msg_id,
            OutboxState::Confirmed { seq, message_id },
        );
    }

    /// Looks at the commands the last input produced: a delivery of one of ours confirms
    /// it. Only called while the outbox holds something.
    pub(crate) fn observe(&mut self, commands: &mut crate::queue::Queue) {
        let mut found: Vec<(ConvoId, MsgId, Seq, MessageId)> = Vec::new();
        for command in commands.added() {
            let Command::Deliver(d) = command else {
                continue;
            };
            if d.order == Order::Ephemeral {
                continue;
            }
            let Some(queue) = self.queues.get(&d.convo) else {
                continue;
            };
            let m = &d.message;
            let ours = queue.iter().find(|e| match &e.phase {
                Phase::Sent { message_id, .. } if *message_id == m.id => true,
                Phase::Failed(_) => false,
                _ => {
                    e.floor.is_some_and(|f| m.seq > f)
                        && !e.ephemeral
                        && e.epoch == m.epoch
                        && e.payload == m.payload
                }
            });
            if let Some(e) = ours {
                if !found.iter().any(|f| f.0 == d.convo && f.1 == e.msg_id) {
                    found.push((d.convo.clone(), e.msg_id.clone(), m.seq, m.id.clone()));
                }
            }
        }
        for (convo, msg_id, seq, message_id) in found {
            self.confirm(&convo, &msg_id, seq, message_id, commands);
        }
    }

    /// Starts every send that may start now: per conversation the first message not yet
    /// accepted, if it is not in flight, failed or waiting to retry, within the budget.
    pub(crate) fn pump(&mut self, cx: &mut OutboxCtx<'_>) {
        let now = cx.now;
        let mut ready: Vec<ConvoId> = Vec::new();
        let mut next: Option<Time> = None;
        for (convo, queue) in &self.queues {
            let Some(head) = queue
                .iter()
                .find(|e| !matches!(e.phase, Phase::Sent { .. }))
            else {
                continue;
            };
            match head.phase {
                Phase::Queued => ready.push(convo.clone()),
                Phase::Retrying { until, .. } if until <= now => ready.push(convo.clone()),
                Phase::Retrying { until, .. } => {
                    next = Some(next.map_or(until, |n| n.min(until)));
                }
                _ => {}
            }
        }
        // Round robin: start after the conversation served last.
        if let Some(last) = &self.last {
            let split = ready.partition_point(|c| c <= last);
            ready.rotate_left(split);
        }
        for convo in ready {
            if !cx.buckets.take(Kind::Send, now, true) {
                let at = cx.buckets.ready_at(Kind::Send, now, true);
                next = Some(next.map_or(at, |n| n.min(at)));
                break;
            }
            let Some(entry) = self.queues.get_mut(&convo).and_then(|q| {
                q.iter_mut()
                    .find(|e| !matches!(e.phase, Phase::Sent { .. }))
            }) else {
                continue;
            };
            let id = RequestId(*cx.next_request);
            *cx.next_request += 1;
            entry.phase = Phase::Sending(id);
            if entry.floor.is_none() {
                entry.floor = Some((cx.delivered)(&convo).unwrap_or(Seq::ZERO));
            }
            self.inflight
                .insert(id, (convo.clone(), entry.msg_id.clone()));
            cx.commands.push(Command::Send(SendRequest {
                id,
                convo: convo.clone(),
                msg_id: entry.msg_id.clone(),
                payload: entry.payload.clone(),
                epoch: entry.epoch,
                padded_size: entry.padded_size,
                ephemeral: entry.ephemeral,
            }));
            tell(cx.commands, &convo, &entry.msg_id, OutboxState::Sending);
            self.last = Some(convo);
        }
        self.deadline = next;
    }
}
