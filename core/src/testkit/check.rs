//! The invariants of `DESIGN.md`, checked on every command of a trace.

use crate::{Command, ConvoId, MessageId, Order, RequestId, Seq};
use hashbrown::{HashMap, HashSet};

/// An invariant that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

#[derive(Debug, Default)]
struct PerConvo {
    /// Everything up to here was delivered or skipped.
    pos: Seq,
    /// By (id, seq): a hostile server may give one id two seqs, which is its anomaly; a
    /// message delivered twice is always the same (id, seq).
    delivered: HashSet<(MessageId, Seq)>,
    skipped: Vec<(Seq, Seq)>,
    fetch: Option<RequestId>,
}

/// Checks a stream of commands (across restarts) for the trace invariants:
/// delivered seqs never decrease except for messages flagged as sharing a seq; every seq
/// between two delivered ones was delivered or skipped; nothing is delivered twice; every
/// checkpoint matches what was delivered; at most one fetch per conversation is in flight.
#[derive(Debug, Default)]
pub struct Checker {
    convos: HashMap<ConvoId, PerConvo>,
    violations: Vec<String>,
    delivered: usize,
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
                let key = (d.message.id.clone(), seq);
                if d.order != Order::Ephemeral && !c.delivered.insert(key) {
                    errors.push(format!("{}: {} delivered twice", d.convo, d.message.id));
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
                    Order::SharesSeq => {
                        if seq > c.pos || seq == Seq::ZERO {
                            errors.push(format!(
                                "{}: seq {seq} flagged shared above {}",
                                d.convo, c.pos
                            ));
                        }
                    }
                    Order::Ephemeral => {
                        if seq != Seq::ZERO {
                            errors.push(format!("{}: ephemeral with seq {seq}", d.convo));
                        }
                    }
                }
                if d.checkpoint.seq != c.pos {
                    errors.push(format!(
                        "{}: checkpoint {} after delivering up to {}",
                        d.convo, d.checkpoint.seq, c.pos
                    ));
                }
                for e in errors {
                    self.fail(e);
                }
            }
            Command::Skipped {
                convo,
                from,
                to,
                checkpoint,
            } => {
                let c = self.convos.entry(convo.clone()).or_default();
                let mut errors = Vec::new();
                if *from != c.pos.next() || to < from {
                    errors.push(format!("{convo}: skipped {from}..={to} after {}", c.pos));
                }
                c.pos = c.pos.max(*to);
                c.skipped.push((*from, *to));
                if checkpoint.seq != c.pos {
                    errors.push(format!(
                        "{convo}: checkpoint {} after skip to {to}",
                        checkpoint.seq
                    ));
                }
                for e in errors {
                    self.fail(e);
                }
            }
            Command::Clear { convo, .. } => {
                // The application drops the conversation; syncing it again starts anew.
                self.convos.remove(convo);
            }
            _ => {}
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
            .is_some_and(|c| c.delivered.contains(&(id.clone(), seq)))
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
