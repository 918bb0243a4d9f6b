//! The simulated world: server, lossy network, virtual clock, store, restarts.

use super::{format_command, Checker, ServerFaults, SimServer, Violation};
use crate::rng::Rng;
use crate::{
    Checkpoint, Command, Config, ConvoId, Cursor, Failure, FetchRequest, Input, Known, MessageId,
    Order, Page, RequestId, Seq, StreamError, StreamEvent, StreamId, Subscription, SyncMachine,
    Time, SLOW_CONSUMER,
};
use crate::{MsgId, OutboxState, Outgoing, Refusal, SendAnswer, SendFailure, SendRequest};
use hashbrown::{HashMap, HashSet};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How many earlier events a stream event may overtake.
const REORDER_DEPTH: usize = 2;

/// What the network and the server do wrong, per mille, while faults are on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// A stream event is lost.
    pub drop: u16,
    /// A stream event arrives twice.
    pub duplicate: u16,
    /// A stream event is lost and the server says `slow-consumer`.
    pub slow_consumer: u16,
    /// A stream, once open, is cut after a random time.
    pub cut: u16,
    /// A stream fails to open.
    pub connect_fail: u16,
    /// A fetch fails (5xx, timeout).
    pub fetch_fail: u16,
    /// A fetch gets 429 with `Retry-After: 1`.
    pub rate_limit: u16,
    /// A fetch gets 401.
    pub unauthorized: u16,
    /// Stream events are delayed by up to this, which reorders them — each by at most two
    /// places, as jitter on a FIFO stream would.
    pub max_delay_ms: u64,
    /// Fetches take up to this, each way.
    pub fetch_delay_ms: u64,
    /// What the server itself does.
    pub server: ServerFaults,
}

/// The application's own sends (the outbox) and what goes wrong with them, per mille, while
/// faults are on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendFaults {
    /// Messages the application enqueues per conversation (0: it sends nothing).
    pub messages: usize,
    /// Mean time between two enqueues in one conversation.
    pub interval_ms: u64,
    /// The request fails before the server applies it (a 5xx, a refused connection).
    pub fail: u16,
    /// The server applies it, and the answer is lost (the connection cut after the commit).
    pub lose_answer: u16,
    /// The server refuses it (400) before applying it; the application drops it.
    pub refuse: u16,
    /// 429 with `Retry-After: 1`.
    pub rate_limit: u16,
    /// Requests take up to this, each way.
    pub delay_ms: u64,
}

/// One simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of everything random in the run.
    pub seed: u64,
    /// Conversations.
    pub convos: usize,
    /// Messages sent per conversation.
    pub messages: usize,
    /// Mean time between two sends in one conversation.
    pub send_interval_ms: u64,
    /// Every n-th conversation is subscribed without a stream (0: none).
    pub catch_up_only_every: usize,
    /// Faults, on until `faults_until`.
    pub faults: Faults,
    /// When faults stop (network and server calm down; server faults stop too).
    pub faults_until: Time,
    /// When the machine is killed and restarted from the store.
    pub restarts: Vec<Time>,
    /// How long after the last send and the end of faults everything must be delivered.
    pub settle: Duration,
    /// Period of the server's keepalives.
    pub keepalive: Duration,
    /// Record every command line (for snapshots and determinism); otherwise only a digest.
    pub keep_trace: bool,
    /// The server sends `gapInfo` (the real server did until its `mlsChat` API).
    pub gap_info: bool,
    /// Lift the protections that keep every loss closable by a client: messages sharing a
    /// seq may lose their stream event too, and late commits may come later than
    /// `hole_grace`. Losses are then counted by class (`SimReport::lost`) instead of being
    /// violations.
    pub realistic: bool,
    /// The application's own sends.
    pub sends: SendFaults,
    /// The machine's configuration.
    pub machine: Config,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            convos: 3,
            messages: 50,
            send_interval_ms: 200,
            catch_up_only_every: 3,
            faults: Faults::default(),
            faults_until: Time::ZERO,
            restarts: Vec::new(),
            settle: Duration::from_secs(300),
            keepalive: Duration::from_secs(15),
            keep_trace: false,
            gap_info: false,
            realistic: false,
            sends: SendFaults::default(),
            machine: Config::default(),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Messages delivered (ephemeral included).
    pub delivered: usize,
    /// Seq ranges skipped.
    pub skipped: usize,
    /// Seq ranges declared unreachable.
    pub unreachable: usize,
    /// Messages delivered late (`Order::Late`), replays a store drops excluded.
    pub late: usize,
    /// `Late` deliveries of ids already stored (what a store drops).
    pub late_replays: usize,
    /// Messages the server serves at the end that were never delivered because they lie in
    /// an unreachable range that no `sinceSeq` page can show (the server's order).
    pub lost_unreachable: usize,
    /// With `realistic`: messages the server serves at the end that were never delivered,
    /// by class.
    pub lost: BTreeMap<&'static str, usize>,
    /// Messages sent (ephemeral included).
    pub sent: usize,
    /// Fetches made.
    pub fetches: usize,
    /// Streams opened.
    pub streams: usize,
    /// Anomalies reported.
    pub anomalies: usize,
    /// Messages the server serves at the end.
    pub served: usize,
    /// Broken invariants.
    pub violations: Vec<Violation>,
    /// Every command, one per line, when `keep_trace`.
    pub trace: Vec<String>,
    /// FNV-1a over every trace line, kept or not.
    pub digest: u64,
    /// When the run ended.
    pub end: Time,
    /// Own messages the application enqueued.
    pub enqueued: usize,
    /// Own messages confirmed (seen delivered after the server accepted them).
    pub confirmed: usize,
    /// Own messages the server refused and the application dropped.
    pub failed: usize,
    /// `sendMessage` requests made.
    pub sends: usize,
}

#[derive(Debug)]
enum Ev {
    Send {
        convo: usize,
    },
    Visible {
        convo: usize,
        index: usize,
    },
    Expire {
        convo: usize,
        index: usize,
    },
    ToMachine {
        gen: u32,
        input: Input,
        fetch: Option<(usize, RequestId)>,
    },
    ServerFetch {
        gen: u32,
        convo: usize,
        req: FetchRequest,
    },
    Connect {
        gen: u32,
        convo: usize,
        stream: StreamId,
        cursor: Option<Cursor>,
    },
    Cut {
        gen: u32,
        convo: usize,
        stream: StreamId,
    },
    Keepalive {
        gen: u32,
        convo: usize,
        stream: StreamId,
    },
    /// The shared stream (every live conversation on one connection) connects.
    ConnectShared {
        gen: u32,
        stream: StreamId,
    },
    CutShared {
        gen: u32,
        stream: StreamId,
    },
    PingShared {
        gen: u32,
        stream: StreamId,
    },
    Restart,
    /// The application enqueues a message of its own.
    Enqueue {
        convo: usize,
    },
    /// A `sendMessage` reaches the server.
    SendArrives {
        gen: u32,
        convo: usize,
        req: SendRequest,
    },
}

/// One of the application's own messages, as its store keeps it.
#[derive(Debug, Clone)]
struct Own {
    out: Outgoing,
    /// The last state stored.
    state: Option<OutboxState>,
}

#[derive(Debug, Default, Clone)]
struct Stored {
    cp: Checkpoint,
    recent: Vec<Known>,
    /// Every id stored: the store is the dedup authority for late messages.
    ids: HashSet<MessageId>,
}

/// The simulated world around one machine. Use [`Sim::run`].
#[derive(Debug)]
pub struct Sim {
    cfg: SimConfig,
    rng: Rng,
    now: Time,
    events: BTreeMap<(Time, u64), Ev>,
    next_event: u64,
    machine: SyncMachine,
    gen: u32,
    server: SimServer,
    names: Vec<ConvoId>,
    index: HashMap<ConvoId, usize>,
    streams: Vec<Option<(StreamId, bool)>>,
    /// Arrival times of the last events on each stream: an event may overtake at most
    /// `REORDER_DEPTH` earlier ones (a real SSE stream is FIFO; this is its jitter).
    arrivals: Vec<VecDeque<Time>>,
    /// The arrival of the last message sharing a seq on each stream.
    barriers: Vec<Time>,
    store: Vec<Stored>,
    sent: Vec<usize>,
    /// Messages sharing a seq: the network never loses or reorders them (a loss would be
    /// undetectable by any client that pages by seq; see the README's limits).
    companions: HashSet<MessageId>,
    /// The application's own messages per conversation, in enqueue order (its store).
    own: Vec<Vec<Own>>,
    /// Own messages the server refuses (decided when the first request arrives).
    refused: HashMap<MsgId, bool>,
    checker: Checker,
    report: SimReport,
}

fn fnv(mut h: u64, s: &str) -> u64 {
    for b in s.bytes().chain(std::iter::once(b'\n')) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01B3);
    }
    h
}

impl Sim {
    /// Runs a whole simulation and checks every invariant, liveness included.
    pub fn run(cfg: SimConfig) -> SimReport {
        let mut sim = Sim::new(cfg);
        sim.drive();
        sim.finish()
    }

    fn new(cfg: SimConfig) -> Sim {
        let mut machine_cfg = cfg.machine.clone();
        machine_cfg.rng_seed = cfg.seed;
        let machine = SyncMachine::new(machine_cfg).expect("valid machine config");
        let names: Vec<ConvoId> = (0..cfg.convos)
            .map(|i| ConvoId::new(format!("c{i}")))
            .collect();
        let index = names
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        let mut sim = Sim {
            rng: Rng::new(cfg.seed),
            now: Time::ZERO,
            events: BTreeMap::new(),
            next_event: 0,
            machine,
            gen: 0,
            server: {
                let mut server = SimServer::new(cfg.seed, cfg.faults.server.clone());
                server.realistic = cfg.realistic;
                server
            },
            streams: vec![None; cfg.convos],
            arrivals: vec![VecDeque::new(); cfg.convos],
            barriers: vec![Time::ZERO; cfg.convos],
            store: vec![Stored::default(); cfg.convos],
            sent: vec![0; cfg.convos],
            companions: HashSet::new(),
            own: vec![Vec::new(); cfg.convos],
            refused: HashMap::new(),
            checker: Checker::new(),
            report: SimReport {
                digest: 0xCBF2_9CE4_8422_2325,
                ..SimReport::default()
            },
            names,
            index,
            cfg,
        };
        for c in 0..sim.cfg.convos {
            let at = sim.rng.up_to(sim.cfg.send_interval_ms);
            sim.schedule(Time::from_millis(at), Ev::Send { convo: c });
        }
        if sim.cfg.sends.messages > 0 {
            for c in 0..sim.cfg.convos {
                let at = sim.rng.up_to(sim.cfg.sends.interval_ms);
                sim.schedule(Time::from_millis(at), Ev::Enqueue { convo: c });
            }
        }
        for &t in &sim.cfg.restarts.clone() {
            sim.schedule(t, Ev::Restart);
        }
        sim.subscribe_all();
        sim
    }

    fn faulty(&self) -> bool {
        self.now < self.cfg.faults_until
    }

    fn roll(&mut self, per_mille: u16) -> bool {
        self.faulty() && per_mille > 0 && self.rng.up_to(999) < u64::from(per_mille)
    }

    fn schedule(&mut self, at: Time, ev: Ev) {
        self.next_event += 1;
        self.events.insert((at.max(self.now), self.next_event), ev);
    }

    fn stream_delay(&mut self) -> Duration {
        let ms = if self.faulty() {
            1 + self.rng.up_to(self.cfg.faults.max_delay_ms)
        } else {
            5
        };
        Duration::from_millis(ms)
    }

    /// The delay of the next event on `convo`'s stream: random, but no earlier than the
    /// event `REORDER_DEPTH + 1` places before it, nor than a message sharing a seq (nothing
    /// overtakes those: see `companions`).
    fn stream_arrival(&mut self, convo: usize, barrier: bool) -> Duration {
        let mut at = (self.now + self.stream_delay()).max(self.barriers[convo]);
        let arrivals = &mut self.arrivals[convo];
        if arrivals.len() > REORDER_DEPTH {
            at = at.max(arrivals[arrivals.len() - 1 - REORDER_DEPTH]);
        }
        if barrier {
            self.barriers[convo] = at;
        }
        arrivals.push_back(at);
        if arrivals.len() > REORDER_DEPTH + 1 {
            arrivals.pop_front();
        }
        at.since(self.now)
    }

    fn fetch_delay(&mut self) -> Duration {
        let ms = if self.faulty() {
            1 + self.rng.up_to(self.cfg.faults.fetch_delay_ms)
        } else {
            5
        };
        Duration::from_millis(ms)
    }

    fn deliver_later(&mut self, after: Duration, input: Input, fetch: Option<(usize, RequestId)>) {
        let gen = self.gen;
        self.schedule(self.now + after, Ev::ToMachine { gen, input, fetch });
    }

    fn subscribe_all(&mut self) {
        for c in 0..self.cfg.convos {
            let live =
                self.cfg.catch_up_only_every == 0 || (c + 1) % self.cfg.catch_up_only_every != 0;
            let stored = self.store[c].clone();
            let sub = Subscription {
                convo: self.names[c].clone(),
                checkpoint: stored.cp,
                recent: stored.recent,
                live,
            };
            self.machine_input(Input::Subscribe(sub));
        }
    }

    fn machine_input(&mut self, input: Input) {
        if let Err(e) = self.machine.handle(self.now, input) {
            self.checker.violation(format!("input refused: {e}"));
        }
        self.drain();
    }

    fn drive(&mut self) {
        let last_send = (self.cfg.messages as u64 * self.cfg.send_interval_ms * 2)
            .max(self.cfg.sends.messages as u64 * self.cfg.sends.interval_ms * 2);
        let mut end =
            Time::from_millis(last_send.max(self.cfg.faults_until.as_millis())) + self.cfg.settle;
        // Unreachable ranges are asked for again on their own slow schedule (doubling from
        // `unreachable_retry`): a run that declared any goes on long enough for four more
        // looks, the liveness bound those ranges have.
        let mut extended = false;
        // A machine that asks to be woken at the same instant for ever is a livelock.
        let (mut same_instant, mut last_instant) = (0u32, Time::ZERO);
        loop {
            if !extended && self.report.unreachable > 0 {
                extended = true;
                end = end + self.cfg.machine.unreachable_retry * 16;
            }
            let next_ev = self.events.keys().next().map(|k| k.0);
            let next_timer = self.machine.poll_timeout();
            let t = match (next_ev, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            if self.now == last_instant {
                same_instant += 1;
                if same_instant > 100_000 {
                    self.checker
                        .violation(format!("livelock: woken for ever at {}", self.now));
                    break;
                }
            } else {
                (same_instant, last_instant) = (0, self.now);
            }
            if next_timer.is_some_and(|b| b <= t) {
                self.machine.handle_timeout(self.now);
                self.drain();
                continue;
            }
            let Some((_, ev)) = self.events.pop_first() else {
                break;
            };
            self.event(ev);
        }
        self.now = end;
        self.report.end = end;
    }

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Send { convo } => self.send(convo),
            Ev::Visible { convo, index } => {
                let name = self.names[convo].clone();
                self.server.make_visible(name.as_str(), index, self.now);
                self.broadcast(convo, index);
            }
            Ev::Expire { convo, index } => {
                let name = self.names[convo].clone();
                self.server.expire(name.as_str(), index, self.now);
            }
            Ev::ToMachine { gen, input, fetch } => {
                if gen != self.gen {
                    return;
                }
                if let Some((c, request)) = fetch {
                    let name = self.names[c].clone();
                    self.checker.fetch_answered(&name, request);
                }
                self.machine_input(input);
            }
            Ev::ServerFetch { gen, convo, req } => {
                if gen != self.gen {
                    return;
                }
                let page = self
                    .server
                    .page(self.names[convo].as_str(), req.since_seq, req.limit);
                if self.cfg.keep_trace {
                    let ids: Vec<&str> = page.iter().map(|m| m.id.as_str()).collect();
                    let line = format!(
                        "{:>9} < page {} r{} [{}]",
                        self.now.to_string(),
                        req.convo,
                        req.id.0,
                        ids.join(" ")
                    );
                    self.report.trace.push(line);
                }
                let d = self.fetch_delay();
                let mut answer = Page::new(req.id, page);
                if self.cfg.gap_info {
                    answer = answer.with_gaps(self.server.gap_info(self.names[convo].as_str()));
                }
                let input = Input::FetchPage(answer);
                self.deliver_later(d, input, Some((convo, req.id)));
            }
            Ev::Connect {
                gen,
                convo,
                stream,
                cursor,
            } => self.connect(gen, convo, stream, cursor),
            Ev::Cut { gen, convo, stream } => {
                if gen == self.gen && self.streams[convo] == Some((stream, true)) {
                    self.streams[convo] = None;
                    let input = Input::StreamClosed {
                        convo: self.names[convo].clone(),
                        stream,
                        error: Some(StreamError::Transient),
                    };
                    self.machine_input(input);
                }
            }
            Ev::Keepalive { gen, convo, stream } => {
                if gen == self.gen && self.streams[convo] == Some((stream, true)) {
                    let input = Input::StreamEvent {
                        convo: self.names[convo].clone(),
                        stream,
                        event: StreamEvent::Keepalive,
                    };
                    self.machine_input(input);
                    let at = self.now + self.cfg.keepalive;
                    self.schedule(at, Ev::Keepalive { gen, convo, stream });
                }
            }
            Ev::ConnectShared { gen, stream } => self.connect_shared(gen, stream),
            Ev::CutShared { gen, stream } => {
                if gen == self.gen && self.shared_connected(stream) {
                    self.drop_shared(stream);
                    let input = Input::SharedClosed {
                        stream,
                        error: Some(StreamError::Transient),
                    };
                    self.machine_input(input);
                }
            }
            Ev::PingShared { gen, stream } => {
                if gen == self.gen && self.shared_connected(stream) {
                    let input = Input::SharedEvent {
                        stream,
                        convo: None,
                        event: StreamEvent::Keepalive,
                    };
                    self.machine_input(input);
                    let at = self.now + self.cfg.keepalive;
                    self.schedule(at, Ev::PingShared { gen, stream });
                }
            }
            Ev::Restart => {
                // Everything in flight dies with the process; what was stored survives.
                self.gen += 1;
                self.streams.iter_mut().for_each(|s| *s = None);
                let mut cfg = self.cfg.machine.clone();
                cfg.rng_seed = self.cfg.seed.wrapping_add(u64::from(self.gen));
                self.machine = SyncMachine::new(cfg).expect("valid machine config");
                self.checker.restarted();
                self.trace_line("-- restart --".to_string());
                self.subscribe_all();
                self.reenqueue();
            }
            Ev::Enqueue { convo } => self.enqueue(convo),
            Ev::SendArrives { gen, convo, req } => self.send_arrives(gen, convo, req),
        }
    }

    /// The application writes a message: stored, then enqueued.
    fn enqueue(&mut self, convo: usize) {
        let n = self.own[convo].len();
        if n >= self.cfg.sends.messages {
            return;
        }
        let name = self.names[convo].clone();
        let msg_id = MsgId::new(format!("OWN{convo:03}N{n:019}"));
        let mut payload = format!("own message {n} of {name}").into_bytes();
        payload.resize(512, 0);
        let epoch = self.server.epoch(name.as_str());
        let out = Outgoing::new(name, msg_id, payload, epoch);
        self.report.enqueued += 1;
        self.own[convo].push(Own {
            out: out.clone(),
            state: None,
        });
        self.machine_input(Input::Send(out));
        let gap = 1 + self.rng.up_to(self.cfg.sends.interval_ms * 2);
        self.schedule(self.now + Duration::from_millis(gap), Ev::Enqueue { convo });
    }

    /// After a restart: every message not confirmed nor dropped is enqueued again, in
    /// order, with its answer if the store has one.
    fn reenqueue(&mut self) {
        for c in 0..self.cfg.convos {
            for own in self.own[c].clone() {
                let mut out = own.out;
                match own.state {
                    Some(s) if s.is_final() => continue,
                    Some(OutboxState::Sent { seq, message_id }) => {
                        out = out.with_sent(SendAnswer {
                            seq,
                            message_id,
                            received_at: None,
                        });
                    }
                    _ => {}
                }
                self.machine_input(Input::Send(out));
            }
        }
    }

    fn send_delay(&mut self) -> Duration {
        let ms = if self.faulty() {
            1 + self.rng.up_to(self.cfg.sends.delay_ms)
        } else {
            5
        };
        Duration::from_millis(ms)
    }

    fn send_request(&mut self, req: SendRequest) {
        self.report.sends += 1;
        let c = self.index[&req.convo];
        let d = self.send_delay();
        let f = self.cfg.sends.clone();
        let failure = if self.roll(f.fail) {
            Some(SendFailure::Transient)
        } else if self.roll(f.rate_limit) {
            Some(SendFailure::RateLimited {
                retry_after: Some(Duration::from_secs(1)),
            })
        } else {
            None
        };
        match failure {
            Some(failure) => {
                let input = Input::SendResult {
                    request: req.id,
                    result: Err(failure),
                };
                self.deliver_later(d, input, None);
            }
            None => {
                let gen = self.gen;
                self.schedule(self.now + d, Ev::SendArrives { gen, convo: c, req });
            }
        }
    }

    fn send_arrives(&mut self, gen: u32, convo: usize, req: SendRequest) {
        let name = self.names[convo].clone();
        let known = self
            .server
            .sent_index(name.as_str(), req.msg_id.as_str())
            .is_some();
        // A malformed message is refused before anything is applied, every time it is
        // sent (decided once per message: a request of a process that died may still
        // arrive after its successor's was refused); a msgId the server has gets its first
        // answer whatever else the request says.
        let roll = self.roll(self.cfg.sends.refuse);
        let bad = *self.refused.entry(req.msg_id.clone()).or_insert(roll);
        let refused = !known && bad;
        let result = if refused {
            Err(SendFailure::Refused(Refusal::BadRequest))
        } else {
            let (index, new) = self.server.send_message(
                name.as_str(),
                req.msg_id.as_str(),
                req.payload,
                req.epoch.0,
                req.ephemeral,
                self.now,
            );
            if new {
                self.broadcast(convo, index);
            }
            let m = &self.server.stored(name.as_str(), index).message;
            let answer = SendAnswer::new(m.seq.0, m.id.clone());
            if self.roll(self.cfg.sends.lose_answer) {
                Err(SendFailure::Transient)
            } else {
                Ok(answer)
            }
        };
        if gen != self.gen {
            return; // applied (or not), but the process that asked is gone
        }
        let d = self.send_delay();
        let input = Input::SendResult {
            request: req.id,
            result,
        };
        self.deliver_later(d, input, None);
    }

    /// The machine told a state change: the store keeps it, and what it claims is checked
    /// against the server.
    fn outbox_state(&mut self, convo: ConvoId, msg_id: MsgId, state: OutboxState) {
        let c = self.index[&convo];
        let index = self.server.sent_index(convo.as_str(), msg_id.as_str());
        match &state {
            OutboxState::Sent { seq, message_id } | OutboxState::Confirmed { seq, message_id } => {
                let on_server = index.map(|i| &self.server.stored(convo.as_str(), i).message);
                if on_server.is_none_or(|m| m.seq != *seq || m.id != *message_id) {
                    self.checker.violation(format!(
                        "{convo}: {msg_id} reported {state} but the server has {:?}",
                        on_server.map(|m| (m.seq, m.id.clone()))
                    ));
                }
            }
            OutboxState::Failed { .. } => {
                // The application gives up on it (soon, not in the middle of a drain).
                let input = Input::DropSend {
                    convo: convo.clone(),
                    msg_id: msg_id.clone(),
                };
                self.deliver_later(Duration::from_millis(1), input, None);
            }
            _ => {}
        }
        if let Some(own) = self.own[c].iter_mut().find(|o| o.out.msg_id == msg_id) {
            if state == OutboxState::Dropped {
                self.report.failed += 1;
            }
            own.state = Some(state);
        } else {
            self.checker
                .violation(format!("{convo}: outbox state for unknown {msg_id}"));
        }
    }

    /// Every own message ended on the server exactly once, in enqueue order, and was
    /// confirmed — or was refused, dropped, and is not on the server.
    fn check_own(&mut self) {
        for c in 0..self.cfg.convos {
            let name = self.names[c].clone();
            let mut last_index = None;
            for own in self.own[c].clone() {
                let copies = self.server.with_payload(name.as_str(), &own.out.payload);
                let id = &own.out.msg_id;
                match &own.state {
                    Some(OutboxState::Confirmed { .. }) => {
                        self.report.confirmed += 1;
                        if copies.len() != 1 {
                            self.checker.violation(format!(
                                "{name}: {id} confirmed, {} copies on the server",
                                copies.len()
                            ));
                        }
                        if let (Some(prev), Some(&now)) = (last_index, copies.first()) {
                            if now < prev {
                                self.checker
                                    .violation(format!("{name}: {id} applied out of order"));
                            }
                        }
                        last_index = copies.first().copied();
                    }
                    Some(OutboxState::Dropped) if copies.is_empty() => {}
                    other => self.checker.violation(format!(
                        "{name}: {id} ended {other:?} with {} copies on the server",
                        copies.len()
                    )),
                }
            }
        }
    }

    fn send(&mut self, convo: usize) {
        if self.sent[convo] >= self.cfg.messages {
            return;
        }
        self.sent[convo] += 1;
        let faulty = self.faulty();
        if !faulty {
            self.server_calm();
        }
        let name = self.names[convo].clone();
        let (index, expire) = self.server.send(name.as_str(), self.now);

        let stored = self.server.stored(name.as_str(), index);
        self.report.sent += 1;
        if stored.shares_seq && !self.cfg.realistic {
            self.companions.insert(stored.message.id.clone());
        }
        if stored.visible.is_none() {
            // Late commit: visible well within `hole_grace` (realistic: up to 5 times it).
            let grace = self.cfg.machine.hole_grace.as_millis() as u64;
            let most = if self.cfg.realistic {
                grace * 5
            } else {
                grace / 2
            };
            let late = 1 + self.rng.up_to(most.saturating_sub(1));
            self.schedule(
                self.now + Duration::from_millis(late),
                Ev::Visible { convo, index },
            );
        } else {
            self.broadcast(convo, index);
        }
        if expire {
            let after = 1 + self.rng.up_to(10_000);
            self.schedule(
                self.now + Duration::from_millis(after),
                Ev::Expire { convo, index },
            );
        }
        let gap = 1 + self.rng.up_to(self.cfg.send_interval_ms * 2);
        self.schedule(self.now + Duration::from_millis(gap), Ev::Send { convo });
    }

    /// Once faults stop, the server stops misbehaving too (no new holes or expiries), so
    /// that "everything the server holds is delivered" has a fixed target.
    fn server_calm(&mut self) {
        self.server.calm();
    }

    fn broadcast(&mut self, convo: usize, index: usize) {
        let Some((stream, true)) = self.streams[convo] else {
            return;
        };
        let name = self.names[convo].clone();
        let stored = self.server.stored(name.as_str(), index);
        let message = stored.message.clone();
        let cursor = Some(stored.cursor.clone());
        let protected = self.companions.contains(&message.id);

        let faults = self.cfg.faults.clone();
        if !protected && self.roll(faults.drop) {
            return;
        }
        let shared = self.cfg.machine.shared_stream;
        if shared && !protected && self.roll(faults.slow_consumer) {
            // The WebSocket server drops a slow consumer's events silently.
            return;
        }
        if !protected && self.roll(faults.slow_consumer) {
            let d = self.stream_delay();
            let event = StreamEvent::Info {
                cursor,
                info: SLOW_CONSUMER.to_string(),
            };
            self.deliver_later(
                d,
                Input::StreamEvent {
                    convo: name,
                    stream,
                    event,
                },
                None,
            );
            return;
        }
        let copies = if self.roll(faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let d = self.stream_arrival(convo, protected);
            let event = StreamEvent::Message {
                cursor: cursor.clone(),
                message: message.clone(),
            };
            let input = if shared {
                Input::SharedEvent {
                    stream,
                    convo: Some(name.clone()),
                    event,
                }
            } else {
                Input::StreamEvent {
                    convo: name.clone(),
                    stream,
                    event,
                }
            };
            self.deliver_later(d, input, None);
        }
    }

    fn shared_connected(&self, stream: StreamId) -> bool {
        self.streams.contains(&Some((stream, true)))
    }

    fn drop_shared(&mut self, stream: StreamId) {
        for s in self.streams.iter_mut() {
            if s.is_some_and(|(id, _)| id == stream) {
                *s = None;
            }
        }
    }

    /// The shared stream connects: every conversation it was opened for is on it (none
    /// joins later: the server fixes the set at connect time). Nothing is replayed.
    fn connect_shared(&mut self, gen: u32, stream: StreamId) {
        let members: Vec<usize> = (0..self.streams.len())
            .filter(|&c| self.streams[c] == Some((stream, false)))
            .collect();
        if gen != self.gen || members.is_empty() {
            return;
        }
        if self.roll(self.cfg.faults.connect_fail) {
            self.drop_shared(stream);
            let error = Some(StreamError::Transient);
            self.machine_input(Input::SharedClosed { stream, error });
            return;
        }
        for c in members {
            self.streams[c] = Some((stream, true));
        }
        self.machine_input(Input::SharedOpened { stream });
        let at = self.now + self.cfg.keepalive;
        self.schedule(at, Ev::PingShared { gen, stream });
        if self.roll(self.cfg.faults.cut) {
            let after = Duration::from_millis(1 + self.rng.up_to(20_000));
            self.schedule(self.now + after, Ev::CutShared { gen, stream });
        }
    }

    fn connect(&mut self, gen: u32, convo: usize, stream: StreamId, cursor: Option<Cursor>) {
        if gen != self.gen || self.streams[convo] != Some((stream, false)) {
            return;
        }
        let name = self.names[convo].clone();
        if self.roll(self.cfg.faults.connect_fail) {
            self.streams[convo] = None;
            let error = Some(StreamError::Transient);
            self.machine_input(Input::StreamClosed {
                convo: name,
                stream,
                error,
            });
            return;
        }
        self.streams[convo] = Some((stream, true));
        self.machine_input(Input::StreamOpened {
            convo: name.clone(),
            stream,
        });
        // Like the real server: a resume replays commits after the cursor, no app messages.
        if let Some(cursor) = cursor {
            for (i, (cursor, message)) in self
                .server
                .replay_after(name.as_str(), &cursor)
                .into_iter()
                .enumerate()
            {
                let event = StreamEvent::Message {
                    cursor: Some(cursor),
                    message,
                };
                let input = Input::StreamEvent {
                    convo: name.clone(),
                    stream,
                    event,
                };
                self.deliver_later(Duration::from_millis(i as u64), input, None);
            }
        }
        let at = self.now + self.cfg.keepalive;
        self.schedule(at, Ev::Keepalive { gen, convo, stream });
        if self.roll(self.cfg.faults.cut) {
            let after = Duration::from_millis(1 + self.rng.up_to(20_000));
            self.schedule(self.now + after, Ev::Cut { gen, convo, stream });
        }
    }

    fn trace_line(&mut self, line: String) {
        self.report.digest = fnv(self.report.digest, &line);
        if self.cfg.keep_trace {
            self.report.trace.push(line);
        }
    }

    fn drain(&mut self) {
        while let Some(command) = self.machine.poll_command() {
            let line = format!("{:>9} {}", self.now.to_string(), format_command(&command));
            self.trace_line(line);
            self.checker.command(&command);
            self.command(command);
        }
        self.checker.drained();
        let total = self.machine.buffered_total();
        let cfg = &self.cfg.machine;
        if total > cfg.max_buffered_total {
            self.checker
                .violation(format!("{total} messages buffered in all"));
        }
        for name in &self.names {
            let n = self.machine.buffered(name);
            if n > cfg.max_buffered {
                self.checker
                    .violation(format!("{name}: {n} messages buffered"));
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::OpenStream {
                convo,
                stream,
                cursor,
            } => {
                let c = self.index[&convo];
                self.report.streams += 1;
                self.streams[c] = Some((stream, false));
                self.arrivals[c].clear();
                self.barriers[c] = Time::ZERO;
                let d = self.stream_delay();
                let gen = self.gen;
                self.schedule(
                    self.now + d,
                    Ev::Connect {
                        gen,
                        convo: c,
                        stream,
                        cursor,
                    },
                );
            }
            Command::OpenShared { stream, convos } => {
                self.report.streams += 1;
                for convo in convos {
                    let c = self.index[&convo];
                    self.streams[c] = Some((stream, false));
                    self.arrivals[c].clear();
                    self.barriers[c] = Time::ZERO;
                }
                let d = self.stream_delay();
                let gen = self.gen;
                self.schedule(self.now + d, Ev::ConnectShared { gen, stream });
            }
            Command::CloseShared { stream } => self.drop_shared(stream),
            Command::CloseStream { convo, stream } => {
                let c = self.index[&convo];
                if self.streams[c].is_some_and(|(s, _)| s == stream) {
                    self.streams[c] = None;
                }
            }
            Command::Fetch(req) => {
                self.report.fetches += 1;
                let c = self.index[&req.convo];
                let faults = self.cfg.faults.clone();
                let d = self.fetch_delay();
                let failure = if self.roll(faults.fetch_fail) {
                    Some(Failure::Transient)
                } else if self.roll(faults.rate_limit) {
                    Some(Failure::RateLimited {
                        retry_after: Some(Duration::from_secs(1)),
                    })
                } else if self.roll(faults.unauthorized) {
                    Some(Failure::Unauthorized)
                } else {
                    None
                };
                match failure {
                    Some(failure) => {
                        let input = Input::FetchFailed {
                            request: req.id,
                            failure,
                        };
                        self.deliver_later(d, input, Some((c, req.id)));
                    }
                    None => {
                        let gen = self.gen;
                        self.schedule(self.now + d, Ev::ServerFetch { gen, convo: c, req });
                    }
                }
            }
            Command::Deliver(d) => {
                let c = self.index[&d.convo];
                if d.order == Order::Late {
                    if self.store[c].ids.contains(&d.message.id) {
                        self.report.late_replays += 1;
                        return;
                    }
                    self.report.late += 1;
                }
                if d.order != Order::Ephemeral {
                    let store = &mut self.store[c];
                    store.ids.insert(d.message.id.clone());
                    store
                        .recent
                        .push(Known::new(d.message.seq, d.message.id, d.message.epoch));
                    if store.recent.len() > 512 {
                        store.recent.drain(..256);
                    }
                }
            }
            Command::Checkpoint { convo, checkpoint } => {
                let c = self.index[&convo];
                self.store[c].cp = checkpoint;
            }
            Command::Skipped { convo, from, to } => {
                self.report.skipped += 1;
                // The fetch that confirmed it was answered at most a round trip ago.
                let slack = Duration::from_millis(2 * self.cfg.faults.fetch_delay_ms + 20);
                let since = Time::from_millis(
                    self.now
                        .as_millis()
                        .saturating_sub(slack.as_millis() as u64),
                );
                for s in from.0..=to.0.min(from.0 + 10_000) {
                    if self
                        .server
                        .served_throughout(convo.as_str(), Seq(s), since, self.now)
                    {
                        self.checker.violation(format!(
                            "{convo}: skipped seq {s}, which the server serves"
                        ));
                    }
                }
            }
            Command::Unreachable { .. } => self.report.unreachable += 1,
            Command::Clear { convo, reason } => {
                self.checker.violation(format!(
                    "{convo}: cleared ({reason:?}) though the server never refused"
                ));
            }
            Command::Anomaly { .. } => self.report.anomalies += 1,
            Command::Status { .. } | Command::Connection(_) => {}
            Command::Event { .. } => {}
            Command::Send(req) => self.send_request(req),
            Command::Outbox {
                convo,
                msg_id,
                state,
            } => self.outbox_state(convo, msg_id, state),
        }
    }

    fn finish(mut self) -> SimReport {
        // Liveness: every message the server serves now was delivered.
        let mut lost = Vec::new();
        let mut served = 0;
        let limit = self.cfg.machine.max_page_limit;
        let mut lost_unreachable = 0;
        for (convo, stored) in self.server.served_now() {
            served += 1;
            let name = ConvoId::from(convo);
            if !self
                .checker
                .was_delivered(&name, &stored.message.id, stored.message.seq)
            {
                let seq = stored.message.seq;
                let declared = self
                    .checker
                    .unreachable(&name)
                    .iter()
                    .any(|(a, b)| *a <= seq && seq <= *b);
                if declared && !self.server.reachable(convo, &stored.message, limit) {
                    // No `sinceSeq` page can show it: the server's order hides it.
                    lost_unreachable += 1;
                    continue;
                }
                if self.cfg.realistic {
                    let skipped = self
                        .checker
                        .skipped(&name)
                        .iter()
                        .any(|(a, b)| *a <= seq && seq <= *b);
                    let class = if declared {
                        "in an unreachable range, reachable"
                    } else if skipped {
                        "committed after its seq was skipped, stream event lost"
                    } else if stored.shares_seq {
                        "shares a seq, stream event lost"
                    } else {
                        "other"
                    };
                    *self.report.lost.entry(class).or_default() += 1;
                    continue;
                }
                lost.push(format!(
                    "{convo}: seq {} ({}) never delivered",
                    stored.message.seq, stored.message.id
                ));
            }
        }
        for l in lost {
            self.checker.violation(l);
        }
        if self.checker.conflicts() > 0 {
            // The simulated server never gives one id two seqs.
            let n = self.checker.conflicts();
            self.checker
                .violation(format!("{n} ids delivered again at another seq"));
        }
        self.check_own();
        self.report.served = served;
        self.report.lost_unreachable = lost_unreachable;
        self.report.delivered = self.checker.delivered();
        self.report.violations = self.checker.violations();
        self.report
    }
}
