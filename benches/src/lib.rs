//! Workloads and baselines for the gapless benches (`cargo bench -p gapless-benches`).
//!
//! - [`Workload`]: one conversation's stream of messages: in order, 10% reordered within a
//!   window of 32, 1% duplicates, or a gap every 1,000 messages filled by a page.
//! - [`run_machine`]: the `SyncMachine`, as an adapter drives it (handle, drain, timeouts).
//! - [`run_floor`]: baseline (a), the physical floor: move the same messages from the input
//!   vector to an output queue.
//! - [`SeedBuffer`]: baseline (b), the seed client's buffer: a map from conversation id to a
//!   `BTreeMap` of buffered messages keyed by seq, checked on every arrival.

use gapless::{
    Command, Config, ConvoId, Input, Message, Page, Seq, StreamEvent, StreamId, Subscription,
    SyncMachine, Time,
};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// The shape of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Seqs 1, 2, 3, …
    InOrder,
    /// 10% of messages moved later by up to 32 places.
    Reordered,
    /// 1% of messages arrive again a little later.
    Duplicates,
    /// One message in every 1,000 is lost on the stream and comes with a page.
    Gaps,
}

impl Workload {
    /// All of them.
    pub const ALL: [Workload; 4] = [
        Workload::InOrder,
        Workload::Reordered,
        Workload::Duplicates,
        Workload::Gaps,
    ];

    /// Its name in bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Workload::InOrder => "in_order",
            Workload::Reordered => "reordered",
            Workload::Duplicates => "duplicates",
            Workload::Gaps => "gaps",
        }
    }
}

/// A small deterministic RNG for building workloads.
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A message like the real ones: a 36-character UUID-shaped id and a payload.
pub fn message(seq: u64, payload: usize) -> Message {
    let mut m = Message::new(format!("0a1b2c3d-4e5f-4a6b-8c7d-{seq:012x}"), seq, 3);
    m.payload = vec![0x5a; payload];
    m
}

/// The stream of one workload: `(seq order as arriving, seqs lost on the stream)`.
pub fn arrivals(workload: Workload, n: u64) -> (Vec<u64>, Vec<u64>) {
    let mut rng = Rng::new(0x5eed ^ n);
    let mut order: Vec<u64> = (1..=n).collect();
    let mut lost = Vec::new();
    match workload {
        Workload::InOrder => {}
        Workload::Reordered => {
            for i in 0..order.len() {
                if rng.below(10) == 0 {
                    // Moved later by up to 32 places (a rotation: O(32), not O(n)).
                    let j = (i + 1 + rng.below(32) as usize).min(order.len() - 1);
                    order[i..=j].rotate_left(1);
                }
            }
        }
        Workload::Duplicates => {
            let mut out = Vec::with_capacity(order.len() * 101 / 100);
            for (i, &s) in order.iter().enumerate() {
                out.push(s);
                if rng.below(100) == 0 && i > 0 {
                    out.push(order[i - 1 - rng.below(i.min(16) as u64) as usize]);
                }
            }
            order = out;
        }
        Workload::Gaps => {
            order.retain(|s| {
                let gone = s % 1000 == 500;
                if gone {
                    lost.push(*s);
                }
                !gone
            });
        }
    }
    (order, lost)
}

/// A machine with one live conversation whose stream is open and caught up.
pub fn machine_with_one_stream() -> (SyncMachine, ConvoId, StreamId) {
    let convo = ConvoId::from("22653740d27a6e9a7293ebcf1e73ef12");
    let mut m = SyncMachine::new(Config::default()).expect("default config");
    m.handle(
        Time::ZERO,
        Input::Subscribe(Subscription::live(convo.clone())),
    )
    .expect("subscribe");
    let stream = std::iter::from_fn(|| m.poll_command())
        .find_map(|c| match c {
            Command::OpenStream { stream, .. } => Some(stream),
            _ => None,
        })
        .expect("a live subscription opens its stream");
    m.handle(
        Time::ZERO,
        Input::StreamOpened {
            convo: convo.clone(),
            stream,
        },
    )
    .expect("opened");
    while let Some(c) = m.poll_command() {
        if let Command::Fetch(f) = c {
            let page = Page::new(f.id, vec![]);
            m.handle(Time::ZERO, Input::FetchPage(page)).expect("page");
        }
    }
    (m, convo, stream)
}

/// The inputs of a workload, built before the measured section (as a decoder would).
pub fn stream_inputs(
    convo: &ConvoId,
    stream: StreamId,
    order: &[u64],
    payload: usize,
) -> Vec<Input> {
    order
        .iter()
        .map(|&seq| Input::StreamEvent {
            convo: convo.clone(),
            stream,
            event: StreamEvent::Message {
                cursor: None,
                message: message(seq, payload),
            },
        })
        .collect()
}

/// Feeds a workload to the machine as an adapter would — one input, drain, a millisecond
/// passes, timeouts — answering fetches as the server would: with every message sent so far
/// (up to the highest seq the stream has carried) above the position asked for.
/// Returns how many messages were delivered.
pub fn run_machine(
    m: &mut SyncMachine,
    inputs: Vec<Input>,
    payload: usize,
    start: Time,
) -> (usize, Time) {
    let mut delivered = 0;
    let mut now = start;
    let mut sent = 0;
    let n = inputs.len();
    for (i, input) in inputs.into_iter().enumerate() {
        if let Input::StreamEvent {
            event: StreamEvent::Message { message, .. },
            ..
        } = &input
        {
            sent = sent.max(message.seq.0);
        }
        now = Time::from_millis(now.as_millis() + 1);
        m.handle(now, input).expect("input");
        if i + 1 == n {
            // The stream is over: let gap_wait pass for the last gap.
            now = Time::from_millis(now.as_millis() + 1_000);
        }
        if m.poll_timeout().is_some_and(|t| t <= now) {
            m.handle_timeout(now);
        }
        delivered += serve(m, now, sent, payload);
    }
    (delivered, now)
}

/// Drains the machine, answering every fetch (including those a page leads to) as the
/// server would; returns how many messages were delivered.
fn serve(m: &mut SyncMachine, now: Time, sent: u64, payload: usize) -> usize {
    let mut delivered = 0;
    let mut pages = Vec::new();
    loop {
        while let Some(c) = m.poll_command() {
            match c {
                // A late delivery here re-reads a message already delivered (the store would
                // drop it): not counted.
                Command::Deliver(d) if d.order != gapless::Order::Late => delivered += 1,
                Command::Fetch(f) => pages.push(f),
                _ => {}
            }
        }
        let Some(f) = pages.pop() else {
            return delivered;
        };
        let messages: Vec<Message> = (f.since_seq.0 + 1..=sent)
            .take(usize::from(f.limit))
            .map(|seq| message(seq, payload))
            .collect();
        m.handle(now, Input::FetchPage(Page::new(f.id, messages)))
            .expect("page");
    }
}

/// Baseline (a): move each message from the input vector to an output queue, then drain it.
pub fn run_floor(inputs: Vec<Input>, out: &mut VecDeque<Input>) -> usize {
    for input in inputs {
        out.push_back(input);
    }
    let n = out.len();
    out.drain(..).for_each(drop);
    n
}

/// Baseline (b): the seed client's buffer, plain: a map from conversation id to the next
/// seq and a `BTreeMap` of buffered messages keyed by seq — nothing else per message (no
/// allocation, no dedup, no checkpoint).
#[derive(Default)]
pub struct SeedBuffer {
    convos: HashMap<String, (u64, BTreeMap<u64, Message>)>,
    /// Delivered, in order.
    pub out: VecDeque<Message>,
}

impl SeedBuffer {
    /// A buffer that follows `convo` (arrivals for other conversations are dropped).
    pub fn following(convo: &str) -> SeedBuffer {
        let mut b = SeedBuffer::default();
        b.convos.insert(convo.to_string(), (1, BTreeMap::new()));
        b
    }

    /// One arrival: deliver it if it is next and then whatever the buffer now releases,
    /// drop it if it is old, buffer it otherwise.
    pub fn arrive(&mut self, convo: &str, m: Message) {
        let Some((next, buffer)) = self.convos.get_mut(convo) else {
            return;
        };
        if m.seq.0 < *next {
            return;
        }
        if m.seq.0 > *next {
            buffer.insert(m.seq.0, m);
            return;
        }
        *next += 1;
        self.out.push_back(m);
        while let Some(entry) = buffer.first_entry() {
            if *entry.key() != *next {
                break;
            }
            self.out.push_back(entry.remove());
            *next += 1;
        }
    }
}

/// Feeds a workload to the seed-style buffer (following `convo`); lost messages arrive 500
/// messages late, as a page would bring them. Returns how many were delivered.
pub fn run_seed(convo: &str, inputs: Vec<Input>, lost: Vec<Message>) -> usize {
    let buffer = &mut SeedBuffer::following(convo);
    let mut lost = lost.into_iter();
    let mut delivered = 0;
    for (i, input) in inputs.into_iter().enumerate() {
        if let Input::StreamEvent {
            event: StreamEvent::Message { message, .. },
            ..
        } = input
        {
            buffer.arrive(convo, message);
        }
        if i % 1000 == 999 {
            if let Some(m) = lost.next() {
                buffer.arrive(convo, m);
            }
        }
        delivered += buffer.out.len();
        buffer.out.drain(..).for_each(drop);
    }
    // What is still missing comes with the last page.
    for m in lost {
        buffer.arrive(convo, m);
    }
    delivered += buffer.out.len();
    buffer.out.drain(..).for_each(drop);
    delivered
}

/// The next seq of a machine's conversation.
pub fn position(m: &SyncMachine, convo: &ConvoId) -> Seq {
    m.checkpoint(convo).map_or(Seq::ZERO, |c| c.seq)
}

/// The name of the i-th conversation of a scale run (as long as a real `convoId`).
pub fn convo_name(i: usize) -> ConvoId {
    ConvoId::new(format!("{i:032x}"))
}

/// A machine with `n` live conversations, streams open and caught up (nothing due for 45 s).
/// Its request budget is unlimited: these benches measure what a conversation costs the
/// machine, not how fast the server's quota lets a cold start go (see the `quota` binary).
pub fn many_live_conversations(n: usize) -> (SyncMachine, Vec<StreamId>) {
    let config = Config {
        budget: gapless::Budget::unlimited(),
        ..Config::default()
    };
    let mut m = SyncMachine::new(config).expect("config");
    let t = Time::ZERO;
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let convo = convo_name(i);
        m.handle(t, Input::Subscribe(Subscription::live(convo.clone())))
            .expect("subscribe");
        let stream = std::iter::from_fn(|| m.poll_command())
            .find_map(|c| match c {
                Command::OpenStream { stream, .. } => Some(stream),
                _ => None,
            })
            .expect("a live subscription opens its stream");
        streams.push(stream);
        m.handle(t, Input::StreamOpened { convo, stream })
            .expect("opened");
        drain_answering(&mut m, t);
    }
    drain_answering(&mut m, t);
    (m, streams)
}

/// Drains commands, answering every fetch with an empty page.
pub fn drain_answering(m: &mut SyncMachine, t: Time) {
    let mut pages = Vec::new();
    loop {
        while let Some(c) = m.poll_command() {
            if let Command::Fetch(f) = c {
                pages.push(f.id);
            }
        }
        if pages.is_empty() {
            return;
        }
        for request in pages.drain(..) {
            m.handle(t, Input::FetchPage(Page::new(request, vec![])))
                .expect("page");
        }
    }
}

// ---- the hot path as issue 14 measures it ------------------------------------------------
//
// Every output is moved into a vector made before the measured section and dropped after it,
// as the independent measurement does: the floor is then a plain move, and no
// implementation is charged for freeing what it hands on.

/// Feeds prebuilt inputs to the machine in batches — `batch` inputs handled, then every
/// command drained into `out` — with `now` fixed, so that no timer fires. Returns how many
/// messages were delivered.
pub fn run_hot(
    m: &mut SyncMachine,
    inputs: Vec<Input>,
    batch: usize,
    out: &mut Vec<Command>,
) -> usize {
    let now = Time::ZERO;
    let mut delivered = 0;
    let mut inputs = inputs.into_iter();
    loop {
        let mut handled = 0;
        for input in inputs.by_ref().take(batch) {
            m.handle(now, input).expect("input");
            handled += 1;
        }
        while let Some(c) = m.poll_command() {
            delivered += usize::from(matches!(c, Command::Deliver(_)));
            out.push(c);
        }
        if handled < batch {
            return delivered;
        }
    }
}

/// [`run_hot`] for the plain seed-style buffer: the same batches, delivered messages moved
/// into `out`.
pub fn run_hot_seed(
    convo: &str,
    inputs: Vec<Input>,
    batch: usize,
    out: &mut Vec<Message>,
) -> usize {
    let mut buffer = SeedBuffer::following(convo);
    let mut inputs = inputs.into_iter();
    loop {
        let mut handled = 0;
        for input in inputs.by_ref().take(batch) {
            if let Input::StreamEvent {
                convo,
                event: StreamEvent::Message { message, .. },
                ..
            } = input
            {
                buffer.arrive(convo.as_str(), message);
            }
            handled += 1;
        }
        out.extend(buffer.out.drain(..));
        if handled < batch {
            return out.len();
        }
    }
}

/// [`run_hot`] for the floor: the same batches moved to `out`.
pub fn run_hot_floor(inputs: Vec<Input>, batch: usize, out: &mut Vec<Input>) -> usize {
    let mut inputs = inputs.into_iter();
    loop {
        let mut handled = 0;
        for input in inputs.by_ref().take(batch) {
            out.push(input);
            handled += 1;
        }
        if handled < batch {
            return out.len();
        }
    }
}
