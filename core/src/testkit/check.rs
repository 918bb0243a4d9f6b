//! The invariants of `DESIGN.md`, checked on every command of a trace.

use crate::{Command, ConvoId, MessageId, Order, RequestId, Seq};
use hashbrown::HashMap;

/// An invariant that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

#[derive(Debug, Default)]
struct PerConvo {
    /// Everything up to here was delivered or skipped.
    pos: Seq,
    /// By id, with the seq it was delivered at: an id is delivered at most once.
    delivered: HashMap<MessageId, Seq>,
    skipped: Vec<(Seq, Seq)>,
    unreachable: Vec<(Seq, Seq)>,
    fetch: Option<RequestId>,
    /// A delivery, skip or unreachable range not yet followed by a checkpoint.
    uncheckpointed: bool,
}

/// Checks a stream of commands (across restarts) for the trace invariants:
/// delivered seqs never decrease except for messages flagged as sharing a seq or late; every
/// seq between two delivered ones was delivered, skipped or declared unreachable; no id is
/// delivered twice (a `Late` delivery of a known id is what a store drops: counted, not a
/// violation); every
/// checkpoint matches what was delivered; at most one fetch per conversation is in flight.
#[derive(Debug, Default)]
pub struct Checker {
    convos: HashMap<ConvoId, PerConvo>,
    violations: Vec<String>,
    delivered: usize,
    late_replays: usize,
    conflicts: usize,
}

impl Checker {
    /// A checker with nothing seen.
    pub fn new() -> Checker {
        Checker::default()
    }

    fn fail(&mut self, msg: String) {
        if self.violations.len() < 32 {
            self.violations.push(msg);
        }
    }

    /// Checks one command.
    pub fn command(&mut self, command: &Command) {
        match command {
            Command::Fetch(f) => {
                let c = self.convos.entry(f.convo.clone()).or_default();
                if let Some(prev) = c.fetch.replace(f.id) {
                    let msg = format!("{}: fetch r{} while r{} in flight", f.convo, f.id.0, prev.0);
                    self.fail(msg);
                }
            }
            Command::Deliver(d) => {
                self.delivered += 1;
                let c = self.convos.entry(d.convo.clone()).or_default();
                let seq = d.message.seq;
                let mut errors = Vec::new();
                let known = c.delivered.get(&d.message.id).copied();
                if d.order == Order::Late && known.is_some() {
                    // The store keeps every id and drops this replay: not delivered again.
                    self.late_replays += 1;
                    return;
                }
                if d.order != Order::Ephemeral {
                    match known {
                        Some(at) if at == seq => {
                            errors.push(format!("{}: {} delivered twice", d.convo, d.message.id))
                        }
                        // One id at two seqs (a hostile server), the first long forgotten
                        // by the machine: the store, which keeps every id, drops it.
                        Some(_) => self.conflicts += 1,
                        None => {
                            c.delivered.insert(d.message.id.clone(), seq);
                        }
                    }
                }
                match d.order {
                    Order::InOrder => {
                        if seq != c.pos.next() {
                            errors.push(format!(
                                "{}: seq {seq} delivered in order after {}",
                                d.convo, c.pos
                            ));
                        }
                        c.pos = c.pos.max(seq);
                    }
                    Order::SharesSeq | Order::Late => {
                        if seq > c.pos || seq == Seq::ZERO {
                            errors.push(format!(
                                "{}: seq {seq} flagged {:?} above {}",
                                d.convo, d.order, c.pos
                            ));
                        }
                    }
                    Order::Ephemeral => {
                        if seq != Seq::ZERO {
                            errors.push(format!("{}: ephemeral with seq {seq}", d.convo));
                        }
                    }
                }
                c.uncheckpointed |= d.order != Order::Ephemeral;
                for e in errors {
                    self.fail(e);
                }
            }
            Command::Skipped { convo, from, to } => self.passed(convo, *from, *to, false),
            Command::Unreachable { convo, from, to } => self.passed(convo, *from, *to, true),
            Command::Checkpoint { convo, checkpoint } => {
                let c = self.convos.entry(convo.clone()).or_default();
                c.uncheckpointed = false;
                if checkpoint.seq != c.pos {
                    let msg = format!("{convo}: checkpoint {} at {}", checkpoint.seq, c.pos);
                    self.fail(msg);
                }
            }
            Command::Clear { convo, .. } => {
                // The application drops the conversation; syncing it again starts anew.
                self.convos.remove(convo);
            }
            _ => {}
        }
    }

    /// The checkpoint moved past `from..=to` without a delivery: skipped (proven empty) or
    /// declared unreachable. Either must start right after the position.
    fn passed(&mut self, convo: &ConvoId, from: Seq, to: Seq, unreachable: bool) {
        let what = if unreachable {
            "unreachable"
        } else {
            "skipped"
        };
        let c = self.convos.entry(convo.clone()).or_default();
        let mut errors = Vec::new();
        if from != c.pos.next() || to < from {
            errors.push(format!("{convo}: {what} {from}..={to} after {}", c.pos));
        }
        c.pos = c.pos.max(to);
        if unreachable {
            c.unreachable.push((from, to));
        } else {
            c.skipped.push((from, to));
        }
        c.uncheckpointed = true;
        for e in errors {
            self.fail(e);
        }
    }

    /// Every command was drained: whatever moved a conversation is followed by its
    /// checkpoint (a store must be able to keep it with them).
    pub fn drained(&mut self) {
        let late: Vec<String> = self
            .convos
            .iter()
            .filter(|(_, c)| c.uncheckpointed)
            .map(|(convo, _)| format!("{convo}: deliveries with no checkpoint after them"))
            .collect();
        for msg in late {
            self.fail(msg);
        }
    }

    /// A conversation starts at a restored position (kept if the checker already knows it).
    pub fn start(&mut self, convo: &ConvoId, seq: Seq) {
        self.convos
            .entry(convo.clone())
            .or_insert_with(|| PerConvo {
                pos: seq,
                ..PerConvo::default()
            });
    }

    /// A fetch was answered (page or failure), or abandoned.
    pub fn fetch_answered(&mut self, convo: &ConvoId, request: RequestId) {
        if let Some(c) = self.convos.get_mut(convo) {
            if c.fetch == Some(request) {
                c.fetch = None;
            }
        }
    }

    /// The conversation was unsubscribed: its fetch, if any, is abandoned.
    pub fn unsubscribed(&mut self, convo: &ConvoId) {
        if let Some(c) = self.convos.get_mut(convo) {
            c.fetch = None;
        }
    }

    /// The machine restarted: nothing is in flight any more.
    pub fn restarted(&mut self) {
        for c in self.convos.values_mut() {
            c.fetch = None;
        }
    }

    /// Messages delivered so far (ephemeral included).
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    /// Whether `id` was delivered at `seq` in `convo`.
    pub fn was_delivered(&self, convo: &ConvoId, id: &MessageId, seq: Seq) -> bool {
        self.convos
            .get(convo)
            .is_some_and(|c| c.delivered.get(id) == Some(&seq))
    }

    /// `Late` deliveries of ids already delivered (a store drops them).
    pub fn late_replays(&self) -> usize {
        self.late_replays
    }

    /// Deliveries of an id already delivered at another seq (what a store drops; only a
    /// server that gives one id two seqs causes them).
    pub fn conflicts(&self) -> usize {
        self.conflicts
    }

    /// The ranges declared unreachable in `convo`.
    pub fn unreachable(&self, convo: &ConvoId) -> &[(Seq, Seq)] {
        self.convos.get(convo).map_or(&[], |c| &c.unreachable)
    }

    /// Everything up to this seq was delivered or skipped in `convo`.
    pub fn position(&self, convo: &ConvoId) -> Seq {
        self.convos.get(convo).map_or(Seq::ZERO, |c| c.pos)
    }

    /// The ranges skipped in `convo`.
    pub fn skipped(&self, convo: &ConvoId) -> &[(Seq, Seq)] {
        self.convos.get(convo).map_or(&[], |c| &c.skipped)
    }

    /// Records a violation found outside (liveness, bounds, skips the server contradicts).
    pub fn violation(&mut self, msg: String) {
        self.fail(msg);
    }

    /// The violations so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.violations.iter().cloned().map(Violation).collect()
    }
}
