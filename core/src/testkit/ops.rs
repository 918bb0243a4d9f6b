//! Arbitrary input sequences for one machine, hostile ones included, shared by the
//! proptests and the fuzz targets: every step is checked against the invariants.

use super::Checker;
use crate::{
    Checkpoint, Command, Config, ConvoId, Epoch, Failure, FetchRequest, Input, Known, Message,
    Order, Page, Permanent, RequestId, StreamError, StreamEvent, StreamId, Subscription,
    SyncMachine, Time, SLOW_CONSUMER,
};
use hashbrown::HashMap;
use std::time::Duration;

/// How many conversations the ops address (`convo % CONVOS`).
pub const CONVOS: u8 = 4;

/// One input, described by small numbers so that any bytes make a valid sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// Subscribe conversation `convo` (again: a typed error).
    Subscribe {
        /// Which conversation.
        convo: u8,
        /// With a stream or catch-up only.
        live: bool,
    },
    /// Unsubscribe it.
    Unsubscribe {
        /// Which conversation.
        convo: u8,
    },
    /// The last stream asked for opens (`stale`: an old stream id instead).
    StreamOpened {
        /// Which conversation.
        convo: u8,
        /// Use a stream id the machine no longer waits for.
        stale: bool,
    },
    /// A message over the stream.
    StreamMessage {
        /// Which conversation.
        convo: u8,
        /// Its seq (0: ephemeral).
        seq: u16,
        /// Its id is `m{id}`: equal ids at other seqs are conflicting ids.
        id: u8,
        /// Its epoch.
        epoch: u8,
    },
    /// An info event (`slow`: `slow-consumer`).
    StreamInfo {
        /// Which conversation.
        convo: u8,
        /// Whether it is `slow-consumer`.
        slow: bool,
    },
    /// A keepalive.
    Keepalive {
        /// Which conversation.
        convo: u8,
    },
    /// The stream ends (`error % 5`: none, transient, 401, bad cursor, 403).
    StreamClosed {
        /// Which conversation.
        convo: u8,
        /// Why.
        error: u8,
    },
    /// Answers an outstanding fetch (`pick % outstanding`), or an unknown request if none.
    Page {
        /// Which fetch.
        pick: u8,
        /// `(seq above the fetch's since — 0 goes backwards —, id, epoch)`.
        messages: Vec<(u8, u8, u8)>,
        /// Pad the page to the fetch's limit with copies of its last message (a full page
        /// that repeats).
        fill: bool,
    },
    /// Fails an outstanding fetch (`kind % 5`: transient, 429, 401, 403, invalid cursor).
    FetchFailed {
        /// Which fetch.
        pick: u8,
        /// How.
        kind: u8,
    },
    /// Time passes; every deadline on the way fires.
    Advance {
        /// Milliseconds.
        ms: u16,
    },
    /// `Resume`, for one conversation or all.
    Resume {
        /// Which conversation, or all.
        convo: Option<u8>,
    },
    /// The process dies and restarts from what was stored.
    Restart,
}

#[derive(Clone, Debug, Default)]
struct Stored {
    cp: Checkpoint,
    recent: Vec<Known>,
    /// Every id stored: a store drops a late message it already holds.
    ids: hashbrown::HashSet<crate::MessageId>,
}

/// Applies [`Op`]s to a machine and checks the invariants after every step.
#[derive(Debug)]
pub struct OpRunner {
    config: Config,
    machine: SyncMachine,
    now: Time,
    fetches: Vec<FetchRequest>,
    streams: HashMap<ConvoId, StreamId>,
    old_streams: HashMap<ConvoId, StreamId>,
    store: HashMap<ConvoId, Stored>,
    live: HashMap<ConvoId, bool>,
    checker: Checker,
}

fn name(convo: u8) -> ConvoId {
    ConvoId::new(format!("c{}", convo % CONVOS))
}

impl OpRunner {
    /// A runner around a machine with `config` (an invalid config falls back to the
    /// default: fuzzers pick configs too).
    pub fn new(config: Config) -> OpRunner {
        let config = if config.validate().is_ok() {
            config
        } else {
            Config::default()
        };
        OpRunner {
            machine: SyncMachine::new(config.clone()).expect("validated"),
            config,
            now: Time::ZERO,
            fetches: Vec::new(),
            streams: HashMap::new(),
            old_streams: HashMap::new(),
            store: HashMap::new(),
            live: HashMap::new(),
            checker: Checker::new(),
        }
    }

    /// Applies every op, then checks the invariants; panics with the op index on a
    /// violation (a machine panic propagates as is).
    pub fn run(config: Config, ops: &[Op]) {
        let mut runner = OpRunner::new(config);
        for (i, op) in ops.iter().enumerate() {
            runner.apply(op);
            let v = runner.checker.violations();
            assert!(v.is_empty(), "after op {i} ({op:?}): {v:?}");
        }
    }

    fn input(&mut self, input: Input) {
        // Bad input is a typed error: nothing to check but that it did not panic.
        let _ = self.machine.handle(self.now, input);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(c) = self.machine.poll_command() {
            if std::env::var_os("GAPLESS_OPS_TRACE").is_some() {
                eprintln!("{}", super::format_command(&c));
            }
            self.checker.command(&c);
            match c {
                Command::Fetch(f) => self.fetches.push(f),
                Command::OpenStream { convo, stream, .. } => {
                    if let Some(old) = self.streams.insert(convo.clone(), stream) {
                        self.old_streams.insert(convo, old);
                    }
                }
                Command::Deliver(d) if d.order != Order::Ephemeral => {
                    let s = self.store.entry(d.convo).or_default();
                    if !s.ids.insert(d.message.id.clone()) && d.order == Order::Late {
                        continue;
                    }
                    s.recent
                        .push(Known::new(d.message.seq, d.message.id, d.message.epoch));
                    if s.recent.len() > 256 {
                        s.recent.drain(..128);
                    }
                }
                Command::Checkpoint { convo, checkpoint } => {
                    self.store.entry(convo).or_default().cp = checkpoint
                }
                Command::Clear { convo, .. } => {
                    self.fetches.retain(|f| f.convo != convo);
                    self.store.remove(&convo);
                    self.live.remove(&convo);
                }
                _ => {}
            }
        }
        self.checker.drained();
        let total = self.machine.buffered_total();
        if total > self.config.max_buffered_total {
            self.checker.violation(format!("{total} buffered in all"));
        }
        for c in 0..CONVOS {
            let n = self.machine.buffered(&name(c));
            if n > self.config.max_buffered {
                self.checker.violation(format!("{} buffered in c{c}", n));
            }
        }
        if self.machine.inflight_fetches() > self.config.max_inflight_fetches {
            self.checker.violation("too many fetches in flight".into());
        }
    }

    fn take_fetch(&mut self, pick: u8) -> Option<FetchRequest> {
        if self.fetches.is_empty() {
            return None;
        }
        let i = usize::from(pick) % self.fetches.len();
        let f = self.fetches.swap_remove(i);
        self.checker.fetch_answered(&f.convo, f.id);
        Some(f)
    }

    /// Applies one op.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Subscribe { convo, live } => {
                let convo = name(*convo);
                let stored = self.store.get(&convo).cloned().unwrap_or_default();
                self.checker.start(&convo, stored.cp.seq);
                self.live.insert(convo.clone(), *live);
                let sub = Subscription {
                    convo,
                    checkpoint: stored.cp,
                    recent: stored.recent,
                    live: *live,
                };
                self.input(Input::Subscribe(sub));
            }
            Op::Unsubscribe { convo } => {
                let convo = name(*convo);
                self.fetches.retain(|f| f.convo != convo);
                self.live.remove(&convo);
                self.checker.unsubscribed(&convo);
                self.input(Input::Unsubscribe { convo });
            }
            Op::StreamOpened { convo, stale } => {
                let convo = name(*convo);
                let streams = if *stale {
                    &self.old_streams
                } else {
                    &self.streams
                };
                let stream = streams.get(&convo).copied().unwrap_or(StreamId(u64::MAX));
                self.input(Input::StreamOpened { convo, stream });
            }
            Op::StreamMessage {
                convo,
                seq,
                id,
                epoch,
            } => {
                let message = Message::new(format!("m{id}"), u64::from(*seq), u64::from(*epoch));
                self.stream_event(
                    *convo,
                    StreamEvent::Message {
                        cursor: None,
                        message,
                    },
                );
            }
            Op::StreamInfo { convo, slow } => {
                let info = if *slow {
                    SLOW_CONSUMER
                } else {
                    "something-else"
                }
                .to_string();
                self.stream_event(*convo, StreamEvent::Info { cursor: None, info });
            }
            Op::Keepalive { convo } => self.stream_event(*convo, StreamEvent::Keepalive),
            Op::StreamClosed { convo, error } => {
                let convo = name(*convo);
                let stream = self
                    .streams
                    .get(&convo)
                    .copied()
                    .unwrap_or(StreamId(u64::MAX));
                let error = match error % 5 {
                    0 => None,
                    1 => Some(StreamError::Transient),
                    2 => Some(StreamError::Unauthorized),
                    3 => Some(StreamError::InvalidCursor),
                    _ => Some(StreamError::Permanent(Permanent::Forbidden)),
                };
                if matches!(error, Some(StreamError::Permanent(_))) {
                    self.fetches.retain(|f| f.convo != convo);
                }
                self.input(Input::StreamClosed {
                    convo,
                    stream,
                    error,
                });
            }
            Op::Page {
                pick,
                messages,
                fill,
            } => {
                let (request, since, limit) = match self.take_fetch(*pick) {
                    Some(f) => (f.id, f.since_seq.0, f.limit),
                    None => (RequestId(u64::MAX), 0, 50),
                };
                let mut page: Vec<Message> = messages
                    .iter()
                    .map(|&(off, id, epoch)| {
                        let seq = (since + u64::from(off)).saturating_sub(u64::from(off == 0));
                        let mut m = Message::new(format!("m{id}"), seq, u64::from(epoch));
                        m.epoch = Epoch(u64::from(epoch));
                        m
                    })
                    .collect();
                if *fill {
                    if let Some(last) = page.last().cloned() {
                        page.resize(usize::from(limit), last);
                    }
                }
                self.input(Input::FetchPage(Page::new(request, page)));
            }
            Op::FetchFailed { pick, kind } => {
                let Some(f) = self.take_fetch(*pick) else {
                    return;
                };
                let failure = match kind % 5 {
                    0 => Failure::Transient,
                    1 => Failure::RateLimited {
                        retry_after: Some(Duration::from_millis(u64::from(*kind) * 100)),
                    },
                    2 => Failure::Unauthorized,
                    3 => Failure::Permanent(Permanent::NotMember),
                    _ => Failure::Permanent(Permanent::InvalidCursor),
                };
                if matches!(failure, Failure::Permanent(_)) {
                    self.fetches.retain(|g| g.convo != f.convo);
                }
                self.input(Input::FetchFailed {
                    request: f.id,
                    failure,
                });
            }
            Op::Advance { ms } => {
                let until = self.now + Duration::from_millis(u64::from(*ms));
                while super::fire_next_deadline(&mut self.machine, &mut self.now, until) {
                    self.drain();
                }
                self.now = until;
            }
            Op::Resume { convo } => {
                let convo = convo.map(name);
                self.input(Input::Resume { convo });
            }
            Op::Restart => {
                self.machine = SyncMachine::new(self.config.clone()).expect("validated");
                self.fetches.clear();
                self.streams.clear();
                self.old_streams.clear();
                self.checker.restarted();
                let mut live: Vec<_> = self.live.iter().map(|(c, l)| (c.clone(), *l)).collect();
                live.sort();
                for (convo, live) in live {
                    let stored = self.store.get(&convo).cloned().unwrap_or_default();
                    let sub = Subscription {
                        convo,
                        checkpoint: stored.cp,
                        recent: stored.recent,
                        live,
                    };
                    self.input(Input::Subscribe(sub));
                }
            }
        }
    }

    fn stream_event(&mut self, convo: u8, event: StreamEvent) {
        let convo = name(convo);
        let stream = self
            .streams
            .get(&convo)
            .copied()
            .unwrap_or(StreamId(u64::MAX));
        self.input(Input::StreamEvent {
            convo,
            stream,
            event,
        });
    }
}
