//! The `SyncMachine`: many conversations, one command queue, one timer queue, and fetch
//! slots shared fairly among them.

use crate::budget::{Buckets, Kind};
use crate::connection::{Connection, Tally};
use crate::convo::{Convo, Ctx, FetchState, Priority, Stream};
use crate::outbox::{Outbox, OutboxCtx};
use crate::rng::Rng;
use crate::shared::Shared;
use crate::timers::{Key, TimerQueue};
use crate::{
    Checkpoint, Command, Config, ConfigError, ConvoId, FetchRequest, Input, InputError, RequestId,
    StreamError, StreamEvent, StreamId, Time,
};
use hashbrown::HashMap;
use std::collections::VecDeque;

/// The deterministic, sans-IO sync machine.
///
/// Feed inputs with [`handle`](Self::handle) (and [`handle_timeout`](Self::handle_timeout)
/// when [`poll_timeout`](Self::poll_timeout) has come), each with the current time; after
/// every call drain [`poll_command`](Self::poll_command) until it returns `None`, and do what
/// the commands say. The machine reads no clock, opens no socket and spawns nothing: the same
/// inputs at the same times give the same commands.
///
/// ```
/// use gapless::{Command, Config, Input, Message, StreamEvent, Subscription, SyncMachine, Time};
///
/// let mut m = SyncMachine::new(Config::default()).unwrap();
/// let t0 = Time::ZERO;
/// m.handle(t0, Input::Subscribe(Subscription::live("convo"))).unwrap();
/// // Every command but the status changes (`Command::Status`, `Command::Connection`: for
/// // the UI).
/// let mut next = |m: &mut SyncMachine| {
///     std::iter::from_fn(|| m.poll_command())
///         .find(|c| !matches!(c, Command::Status { .. } | Command::Connection(_)))
/// };
/// let Some(Command::OpenStream { stream, .. }) = next(&mut m) else { panic!() };
/// m.handle(t0, Input::StreamOpened { convo: "convo".into(), stream }).unwrap();
/// let _catch_up = next(&mut m); // a Fetch: the server does not replay on connect
///
/// let event = StreamEvent::Message { cursor: None, message: Message::new("a", 1, 0) };
/// m.handle(t0, Input::StreamEvent { convo: "convo".into(), stream, event }).unwrap();
/// assert!(matches!(next(&mut m), Some(Command::Deliver(d)) if d.message.seq.0 == 1));
/// ```
#[derive(Debug)]
pub struct SyncMachine {
    config: Config,
    now: Time,
    rng: Rng,
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashMap<ConvoId, u32>,
    timers: TimerQueue,
    /// Conversations waiting for a fetch slot, first come, first served within each
    /// priority (indexed by `Priority`), with when they were queued.
    fetch_queue: [VecDeque<(Key, Time)>; 3],
    /// The request budget every conversation shares.
    buckets: Buckets,
    /// When the fetch budget has a token again, if fetches wait for one.
    budget_wake: Option<Time>,
    inflight: HashMap<RequestId, Key>,
    next_request: u64,
    next_stream: u64,
    buffered_total: usize,
    commands: crate::queue::Queue,
    stats: Stats,
    /// The one stream of every live conversation, with `Config::shared_stream`.
    shared: Shared,
    /// The slot the last input's conversation was found in (see `key`).
    last_slot: u32,
    /// The conversations' statuses, counted (see `connection.rs`).
    tally: Tally,
    /// The connection last told to the application.
    told_connection: Connection,
    /// `Config::healthy_poll_interval` as given: `config`'s is stretched with the number of
    /// conversations (see `budget::healthy_poll`).
    healthy_poll_base: Option<std::time::Duration>,
    /// Messages the application sends (`outbox.rs`).
    outbox: Outbox,
}

/// Counters, for metrics and for tests that count work instead of timing it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Timer entries popped by `handle_timeout` (valid or stale).
    pub timers_popped: u64,
    /// Timer entries that did work for a conversation.
    pub timers_fired: u64,
    /// Entries in the timer queue now.
    pub timer_queue_len: usize,
    /// Fetches issued.
    pub fetches: u64,
    /// Streams opened (shared ones included).
    pub streams: u64,
    /// Shared streams refused for credentials (401).
    pub shared_refusals: u64,
}

#[derive(Debug)]
struct Slot {
    gen: u32,
    convo: Option<Convo>,
}

impl SyncMachine {
    /// A machine with no conversation.
    pub fn new(config: Config) -> Result<SyncMachine, ConfigError> {
        config.validate()?;
        let buckets = Buckets::new(&config.budget);
        let healthy_poll_base = config.healthy_poll_interval;
        Ok(SyncMachine {
            rng: Rng::new(config.rng_seed),
            config,
            now: Time::ZERO,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            timers: TimerQueue::default(),
            fetch_queue: Default::default(),
            buckets,
            budget_wake: None,
            inflight: HashMap::new(),
            next_request: 0,
            next_stream: 0,
            buffered_total: 0,
            commands: crate::queue::Queue::default(),
            stats: Stats::default(),
            shared: Shared::new(),
            last_slot: 0,
            tally: Tally::default(),
            told_connection: Connection::Idle,
            healthy_poll_base,
            outbox: Outbox::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- getters ------------------------------------------------------------------

    /// Whether the conversation is subscribed.
    pub fn is_subscribed(&self, convo: &ConvoId) -> bool {
        self.index.contains_key(convo)
    }

    /// How many conversations are subscribed.
    pub fn subscribed(&self) -> usize {
        self.index.len()
    }

    /// The conversation's status now (see [`Status`](crate::Status)).
    pub fn status(&self, convo: &ConvoId) -> Option<crate::Status> {
        self.get(convo).map(Convo::status)
    }

    /// All conversations together: online, catching up (how many of how many caught up),
    /// degraded or offline (and why). O(1).
    pub fn connection(&self) -> Connection {
        self.tally.connection()
    }

    /// How many subscribed conversations are caught up (for a progress bar on a cold
    /// start). O(subscribed).
    pub fn caught_up(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|s| s.convo.as_ref())
            .filter(|c| matches!(c.status(), crate::Status::CaughtUp { .. }))
            .count()
    }

    /// The conversation's current checkpoint (what is delivered, not what is stored).
    pub fn checkpoint(&self, convo: &ConvoId) -> Option<&Checkpoint> {
        self.get(convo).map(|c| &c.cp)
    }

    /// Messages buffered for the conversation.
    pub fn buffered(&self, convo: &ConvoId) -> usize {
        self.get(convo).map_or(0, Convo::buffered)
    }

    /// Messages buffered over all conversations.
    pub fn buffered_total(&self) -> usize {
        self.buffered_total
    }

    /// Counters since the machine was made.
    pub fn stats(&self) -> Stats {
        Stats {
            timer_queue_len: self.timers.len(),
            streams: self.next_stream,
            ..self.stats
        }
    }

    /// Fetches in flight over all conversations.
    pub fn inflight_fetches(&self) -> usize {
        self.inflight.len()
    }

    /// The conversation's outbox: every message not yet confirmed (nor dropped), in the
    /// order it was enqueued, with where it stands.
    pub fn outbox(&self, convo: &ConvoId) -> Vec<(crate::MsgId, crate::OutboxState)> {
        self.outbox.entries(convo)
    }

    fn get(&self, convo: &ConvoId) -> Option<&Convo> {
        let slot = *self.index.get(convo)?;
        self.slots[slot as usize].convo.as_ref()
    }

    // ---- inputs -------------------------------------------------------------------

    /// Feeds one input at `now`. Time never goes backwards: an earlier `now` counts as the
    /// latest time seen. An error means the input was refused and nothing changed.
    pub fn handle(&mut self, now: Time, input: Input) -> Result<(), InputError> {
        self.now = self.now.max(now);
        self.commands.watch();
        let result = self.dispatch(input);
        self.pump();
        self.tell_connection();
        self.outbox_after();
        result
    }

    /// Tells the application when the connection as a whole changed.
    fn tell_connection(&mut self) {
        let now = self.tally.connection();
        if now != self.told_connection {
            self.told_connection = now;
            self.commands.push(Command::Connection(now));
        }
    }

    fn dispatch(&mut self, input: Input) -> Result<(), InputError> {
        match input {
            Input::Subscribe(sub) => {
                if self.index.contains_key(&sub.convo) {
                    return Err(InputError::AlreadySubscribed(sub.convo));
                }
                let live = sub.live;
                let key = self.insert(Convo::new(sub, &self.config, self.now));
                if live && self.config.shared_stream {
                    self.shared_join();
                } else if live {
                    self.with(key, |c, cx| c.open_stream(cx, 0, false));
                }
                self.after(key);
            }
            Input::Unsubscribe { convo } => {
                let key = self.key(&convo)?;
                self.remove(key, None);
            }
            Input::StreamOpened { convo, stream } => {
                let key = self.key(&convo)?;
                self.with(key, |c, cx| c.stream_opened(cx, stream));
                self.after(key);
            }
            Input::StreamEvent {
                convo,
                stream,
                event,
            } => {
                let key = self.key(&convo)?;
                let simple = self.with(key, |c, cx| c.stream_event(cx, stream, event));
                if simple == Some(true) {
                    self.debug_assert_settled(key);
                } else {
                    self.after(key);
                }
            }
            Input::StreamClosed {
                convo,
                stream,
                error,
            } => {
                let key = self.key(&convo)?;
                self.with(key, |c, cx| c.stream_closed(cx, stream, error));
                self.after(key);
            }
            Input::SharedOpened { stream } => {
                if let Stream::Opening { id, attempts, .. } = self.shared.state {
                    if id == stream {
                        self.shared.state = Stream::Open {
                            id,
                            since: self.now,
                            last_activity: self.now,
                            attempts,
                        };
                        self.for_members(|c, cx| c.shared_opened(cx));
                    }
                }
            }
            Input::SharedEvent {
                stream,
                convo,
                event,
            } => {
                if self.shared.current() != Some(stream) {
                    return Ok(());
                }
                if matches!(self.shared.state, Stream::Opening { .. }) {
                    self.dispatch(Input::SharedOpened { stream })?;
                }
                if let Stream::Open { last_activity, .. } = &mut self.shared.state {
                    *last_activity = self.now;
                }
                match convo {
                    // A conversation of the account that is not subscribed: not ours.
                    Some(convo) => {
                        if let Ok(key) = self.key(&convo) {
                            let simple = self.with(key, |c, cx| c.shared_event(cx, event));
                            if simple == Some(true) {
                                self.debug_assert_settled(key);
                            } else {
                                self.after(key);
                            }
                        }
                    }
                    None => {
                        if matches!(&event, StreamEvent::Info { .. }) {
                            // About the connection, so about every conversation on it.
                            self.for_members(|c, cx| {
                                c.shared_event(cx, event.clone());
                            });
                        }
                    }
                }
            }
            Input::SharedClosed { stream, error } => {
                if self.shared.current() == Some(stream) {
                    match error {
                        Some(StreamError::Unauthorized) => self.stats.shared_refusals += 1,
                        Some(StreamError::RateLimited { retry_after }) => {
                            let pause =
                                retry_after.unwrap_or(self.config.budget.pause_without_retry_after);
                            self.buckets.pause(Kind::StreamOpen, self.now + pause);
                        }
                        _ => {}
                    }
                    self.shared_wait();
                }
            }
            Input::FetchPage(page) => {
                // A result for a fetch the machine is not waiting for is ignored.
                if let Some(key) = self.inflight.remove(&page.request) {
                    let request = page.request;
                    self.with(key, |c, cx| {
                        c.on_page(cx, request, page.messages, page.gaps)
                    });
                    self.after(key);
                }
            }
            Input::FetchFailed { request, failure } => {
                if let Some(key) = self.inflight.remove(&request) {
                    self.with(key, |c, cx| c.on_fetch_failed(cx, failure));
                    self.after(key);
                }
            }
            Input::Resume { convo: Some(convo) } => {
                let key = self.key(&convo)?;
                self.with(key, |c, cx| c.resume(cx, Priority::Urgent));
                self.after(key);
            }
            Input::Resume { convo: None } => {
                if let Stream::Waiting { attempts, .. } = self.shared.state {
                    self.shared_open(attempts);
                }
                for slot in 0..self.slots.len() {
                    let key = Key {
                        slot: slot as u32,
                        gen: self.slots[slot].gen,
                    };
                    if self
                        .with(key, |c, cx| c.resume(cx, Priority::CatchUp))
                        .is_some()
                    {
                        self.after(key);
                    }
                }
            }
            Input::Send(out) => {
                return self.with_outbox(|o, cx| o.enqueue(out, cx));
            }
            Input::SendResult { request, result } => {
                self.with_outbox(|o, cx| o.on_result(request, result, cx));
            }
            Input::RetrySend { convo, msg_id } => {
                return self.outbox.retry(&convo, &msg_id, &mut self.commands);
            }
            Input::DropSend { convo, msg_id } => {
                return self.outbox.drop_entry(&convo, &msg_id, &mut self.commands);
            }
        }
        Ok(())
    }

    /// After an input or a timeout, if the outbox holds anything: the deliveries it
    /// produced (the commands from `mark` on) confirm sends, and due sends start. An empty
    /// outbox costs this one branch.
    fn outbox_after(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        self.outbox.observe(&mut self.commands);
        self.with_outbox(|o, cx| o.pump(cx));
    }

    /// Runs `f` on the outbox with what it borrows from the machine.
    fn with_outbox<R>(&mut self, f: impl FnOnce(&mut Outbox, &mut OutboxCtx) -> R) -> R {
        let SyncMachine {
            config,
            now,
            rng,
            buckets,
            next_request,
            commands,
            outbox,
            slots,
            index,
            ..
        } = self;
        // Where each conversation's delivered order stands (its checkpoint).
        let delivered = |convo: &ConvoId| {
            let slot = *index.get(convo)?;
            slots[slot as usize].convo.as_ref().map(|c| c.cp.seq)
        };
        let mut cx = OutboxCtx {
            config,
            now: *now,
            rng,
            buckets,
            next_request,
            commands,
            delivered: &delivered,
        };
        f(outbox, &mut cx)
    }

    /// Does what is due at `now`. An early or spurious call does nothing.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        self.commands.watch();
        if self
            .shared
            .deadline(&self.config)
            .is_some_and(|t| t <= self.now)
        {
            self.shared_timer();
        }
        while let Some((at, key)) = self.timers.pop_due(self.now) {
            self.stats.timers_popped += 1;
            let valid = self.convo_mut(key).is_some_and(|c| {
                c.scheduled == Some(at) && {
                    c.scheduled = None;
                    true
                }
            });
            if valid {
                self.stats.timers_fired += 1;
                self.with(key, |c, cx| c.on_timer(cx));
                self.after(key);
            }
        }
        // Stale entries are dropped as they come due; rebuild if they pile up.
        if self.timers.len() > 2 * self.index.len() + 1024 {
            let live = self.slots.iter().enumerate().filter_map(|(i, s)| {
                let c = s.convo.as_ref()?;
                let at = c.scheduled?;
                Some((
                    at,
                    Key {
                        slot: i as u32,
                        gen: s.gen,
                    },
                ))
            });
            self.timers.rebuild(live);
        }
        self.pump();
        self.tell_connection();
        self.outbox_after();
    }

    // ---- outputs ------------------------------------------------------------------

    /// The next command, if any. Drain until `None` after every input.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command> {
        let crate::queue::Popped { mut command, mark } = self.commands.pop()?;
        if let Some((at, key)) = mark {
            // A checkpoint mark still valid: written now (see `queue.rs`).
            if let Some(c) = live(&mut self.slots, key).filter(|c| c.mark == Some(at)) {
                c.mark = None;
                if let Command::Checkpoint { checkpoint, .. } = &mut command {
                    *checkpoint = c.cp.clone();
                }
            }
        }
        Some(command)
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next (`None`: nothing is
    /// scheduled). Costs O(1) however many conversations are subscribed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        [
            self.timers.peek(),
            self.shared.deadline(&self.config),
            self.budget_wake,
            self.outbox.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- internals ----------------------------------------------------------------

    fn key(&mut self, convo: &ConvoId) -> Result<Key, InputError> {
        // Inputs of one conversation often come in runs, and a driver that hands back the
        // `ConvoId` of the machine's own commands passes a clone of one value: a pointer
        // comparison finds its slot without hashing the id.
        let last = self.last_slot as usize;
        if let Some(slot) = self.slots.get(last) {
            if slot.convo.as_ref().is_some_and(|c| c.id.same(convo)) {
                return Ok(Key {
                    slot: last as u32,
                    gen: slot.gen,
                });
            }
        }
        let slot = *self
            .index
            .get(convo)
            .ok_or_else(|| InputError::UnknownConvo(convo.clone()))?;
        self.last_slot = slot;
        Ok(Key {
            slot,
            gen: self.slots[slot as usize].gen,
        })
    }

    fn convo_mut(&mut self, key: Key) -> Option<&mut Convo> {
        live(&mut self.slots, key)
    }

    /// Runs `f` on a conversation with the shared context.
    fn with<R>(&mut self, key: Key, f: impl FnOnce(&mut Convo, &mut Ctx) -> R) -> Option<R> {
        let SyncMachine {
            config,
            now,
            rng,
            slots,
            next_stream,
            buffered_total,
            commands,
            buckets,
            ..
        } = self;
        let convo = live(slots, key)?;
        let mut cx = Ctx {
            config,
            now: *now,
            commands,
            key,
            buffered_total,
            rng,
            next_stream,
            buckets,
        };
        Some(f(convo, &mut cx))
    }

    fn insert(&mut self, convo: Convo) -> Key {
        let id = convo.id.clone();
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize].convo = Some(convo);
                slot
            }
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    convo: Some(convo),
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(id, slot);
        self.stretch_healthy_poll();
        Key {
            slot,
            gen: self.slots[slot as usize].gen,
        }
    }

    fn remove(&mut self, key: Key, reason: Option<crate::Permanent>) {
        let Some(slot) = self.slots.get_mut(key.slot as usize) else {
            return;
        };
        if slot.gen != key.gen {
            return;
        }
        let Some(mut convo) = slot.convo.take() else {
            return;
        };
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(key.slot);
        // What was delivered keeps its checkpoint.
        self.commands.freeze(&mut convo.mark, &convo.cp);
        self.tally.change(convo.told.as_ref(), None);
        self.index.remove(&convo.id);
        self.stretch_healthy_poll();
        self.buffered_total -= convo.drop_buffer();
        if let FetchState::InFlight { request, .. } = convo.fetch.state {
            self.inflight.remove(&request);
        }
        if let Stream::Opening { id, .. } | Stream::Open { id, .. } = convo.stream {
            self.commands.push(Command::CloseStream {
                convo: convo.id.clone(),
                stream: id,
            });
        }
        if let Stream::Shared { .. } = convo.stream {
            // Its events are ignored from now on; the connection goes when nobody is left.
            self.shared.members = self.shared.members.saturating_sub(1);
            if self.shared.members == 0 {
                if let Some(stream) = self.shared.current() {
                    self.commands.push(Command::CloseShared { stream });
                }
                self.shared.state = Stream::Off;
                self.shared.rejoin_at = None;
            }
        }
        if let Some(reason) = reason {
            self.commands.push(Command::Clear {
                convo: convo.id,
                reason,
            });
        }
    }

    /// The healthy poll for the number of conversations now (a deadline already scheduled
    /// earlier fires, finds nothing due, and is scheduled again at the new period).
    fn stretch_healthy_poll(&mut self) {
        self.config.healthy_poll_interval = crate::budget::healthy_poll(
            self.healthy_poll_base,
            self.index.len(),
            &self.config.budget,
        );
    }

    /// After a conversation changed: clear it, queue its fetch, reschedule its timer.
    fn after(&mut self, key: Key) {
        let config = &self.config;
        let Some(convo) = live(&mut self.slots, key) else {
            return;
        };
        if let Some(reason) = convo.doomed.take() {
            self.remove(key, Some(reason));
            return;
        }
        let fetch = &mut convo.fetch;
        if fetch.want && fetch.state == FetchState::Idle && fetch.retry_at.is_none() {
            fetch.state = FetchState::Queued;
            fetch.queued_as = fetch.priority;
            self.fetch_queue[fetch.priority as usize].push_back((key, self.now));
        } else if fetch.state == FetchState::Queued && fetch.priority > fetch.queued_as {
            // More urgent now: queued again in front (the old entry is skipped when popped).
            fetch.queued_as = fetch.priority;
            self.fetch_queue[fetch.priority as usize].push_back((key, self.now));
        }
        if let Some(at) = convo.next_deadline(config) {
            if convo.scheduled.is_none_or(|s| at < s) {
                convo.scheduled = Some(at);
                self.timers.push(at, key);
            }
        }
        let status = convo.status();
        if convo.told.is_none_or(|t| !t.same_kind(&status)) {
            self.tally.change(convo.told.as_ref(), Some(&status));
            convo.told = Some(status);
            self.commands.push(Command::Status {
                convo: convo.id.clone(),
                status,
            });
        }
    }

    /// The hot path skips `after` for an input that only moved a conversation along; in
    /// debug builds (every test) check that `after` would indeed have had nothing to do.
    fn debug_assert_settled(&self, key: Key) {
        if cfg!(debug_assertions) {
            let Some(c) = self.slots[key.slot as usize].convo.as_ref() else {
                return;
            };
            let f = &c.fetch;
            assert!(c.doomed.is_none(), "{}: doomed on the hot path", c.id);
            assert!(
                !(f.want && f.state == FetchState::Idle && f.retry_at.is_none()),
                "{}: a fetch wanted on the hot path",
                c.id
            );
            if let Some(at) = c.next_deadline(&self.config) {
                assert!(
                    c.scheduled.is_some_and(|s| s <= at),
                    "{}: deadline {at} not scheduled (scheduled {:?})",
                    c.id,
                    c.scheduled
                );
            }
            assert!(
                c.told.is_some_and(|t| t.same_kind(&c.status())),
                "{}: status changed on the hot path",
                c.id
            );
        }
    }

    // ---- the shared stream ----------------------------------------------------------

    /// A live conversation joined: connect if nothing is, or reconnect a little later to
    /// cover it (joins close together share one reconnect).
    fn shared_join(&mut self) {
        self.shared.members += 1;
        match self.shared.state {
            Stream::Off => self.shared_open(0),
            Stream::Opening { .. } | Stream::Open { .. } => {
                if self.shared.rejoin_at.is_none() {
                    self.shared.rejoin_at = Some(self.now + self.config.join_delay);
                }
            }
            // The next connection covers it (`Shared` is a conversation's state, never the
            // shared stream's own).
            Stream::Waiting { .. } | Stream::Shared { .. } => {}
        }
    }

    fn shared_open(&mut self, attempts: u32) {
        // Whatever happens now, the next connection covers every member.
        self.shared.rejoin_at = None;
        // Every conversation's connection: it may use the urgent reserve.
        if !self.buckets.take(Kind::StreamOpen, self.now, true) {
            let at = self.buckets.ready_at(Kind::StreamOpen, self.now, true);
            self.shared.state = Stream::Waiting { at, attempts };
            return;
        }
        let stream = StreamId(self.next_stream);
        self.next_stream += 1;
        self.shared.state = Stream::Opening {
            id: stream,
            since: self.now,
            attempts,
        };
        let convos = self
            .slots
            .iter()
            .filter_map(|s| s.convo.as_ref())
            .filter(|c| matches!(c.stream, Stream::Shared { .. }))
            .map(|c| c.id.clone())
            .collect();
        self.commands.push(Command::OpenShared { stream, convos });
    }

    /// The connection ended (or is given up): every conversation on it rechecks what was
    /// in flight, and it reopens after a backoff.
    fn shared_wait(&mut self) {
        let attempts = self
            .shared
            .state
            .next_attempt(self.now, &self.config)
            .unwrap_or(1);
        let delay = crate::rng::backoff(&self.config, &mut self.rng, attempts);
        self.shared.state = Stream::Waiting {
            at: self.now + delay,
            attempts,
        };
        self.shared.rejoin_at = None;
        self.for_members(|c, cx| c.shared_closed(cx));
    }

    fn shared_timer(&mut self) {
        let now = self.now;
        match self.shared.state {
            Stream::Waiting { at, attempts } if at <= now => self.shared_open(attempts),
            Stream::Opening { id, since, .. } if since + self.config.idle_timeout <= now => {
                self.commands.push(Command::CloseShared { stream: id });
                self.shared_wait();
            }
            Stream::Open {
                id, last_activity, ..
            } if last_activity + self.config.idle_timeout <= now => {
                self.commands.push(Command::CloseShared { stream: id });
                self.shared_wait();
            }
            Stream::Opening { id, attempts, .. } | Stream::Open { id, attempts, .. }
                if self.shared.rejoin_at.is_some_and(|t| t <= now) =>
            {
                // Cover the conversations that joined: a new connection, caught up anew.
                self.commands.push(Command::CloseShared { stream: id });
                self.for_members(|c, cx| c.shared_closed(cx));
                self.shared_open(attempts);
            }
            _ => {}
        }
    }

    /// Runs `f` on every conversation the shared stream covers. O(subscribed): only on a
    /// connect or a disconnect of the shared stream, never per message.
    fn for_members(&mut self, mut f: impl FnMut(&mut Convo, &mut Ctx)) {
        for slot in 0..self.slots.len() {
            let key = Key {
                slot: slot as u32,
                gen: self.slots[slot].gen,
            };
            let member = self.slots[slot]
                .convo
                .as_ref()
                .is_some_and(|c| matches!(c.stream, Stream::Shared { .. }));
            if member {
                self.with(key, &mut f);
                self.after(key);
            }
        }
    }

    /// The queue to serve next: the most urgent first, but every other fetch goes to a less
    /// urgent queue that waited longer than `max_queue_wait` (nothing starves).
    fn next_queue(&self) -> Option<usize> {
        let now = self.now;
        let wait = self.config.max_queue_wait;
        let urgent = (0..3).rev().find(|&p| !self.fetch_queue[p].is_empty())?;
        // A less urgent queue whose oldest entry waited past `max_queue_wait` gets every
        // other fetch: urgent work keeps at least half of them under any load, and routine
        // work is delayed, never starved.
        let starved = (0..urgent).rev().find(|&p| {
            self.fetch_queue[p]
                .front()
                .is_some_and(|(_, at)| *at + wait <= now)
        });
        match starved {
            Some(p) if self.stats.fetches % 2 == 1 => Some(p),
            _ => Some(urgent),
        }
    }

    /// Starts queued fetches while slots and the budget allow.
    fn pump(&mut self) {
        self.budget_wake = None;
        // Set when only the urgent reserve is left: then only urgent fetches go.
        let mut only_urgent = false;
        while self.inflight.len() < self.config.max_inflight_fetches {
            let next = if only_urgent {
                let p = Priority::Urgent as usize;
                (!self.fetch_queue[p].is_empty()).then_some(p)
            } else {
                self.next_queue()
            };
            let Some(p) = next else {
                break;
            };
            let Some(&(key, _)) = self.fetch_queue[p].front() else {
                break;
            };
            let now = self.now;
            let waiting = self
                .convo_mut(key)
                .is_some_and(|c| c.fetch.state == FetchState::Queued);
            if !waiting {
                // Unsubscribed meanwhile, or queued again more urgently and already started.
                self.fetch_queue[p].pop_front();
                continue;
            }
            let urgent = p == Priority::Urgent as usize;
            if !self.buckets.take(Kind::Fetch, now, urgent) {
                if !urgent && !self.fetch_queue[Priority::Urgent as usize].is_empty() {
                    // Only the reserve is left, and something urgent waits: it goes now.
                    only_urgent = true;
                    self.budget_wake = Some(self.buckets.ready_at(Kind::Fetch, now, false));
                    continue;
                }
                // The account's budget is spent: try again when it has a token.
                self.budget_wake = Some(self.buckets.ready_at(Kind::Fetch, now, urgent));
                break;
            }
            self.fetch_queue[p].pop_front();
            let id = RequestId(self.next_request);
            let Some(convo) = live(&mut self.slots, key) else {
                continue;
            };
            let (since, limit) = convo.start_fetch(id, &self.config, now);
            let request = FetchRequest {
                id,
                convo: convo.id.clone(),
                since_seq: since,
                since_id: convo.cp.last_id().cloned(),
                limit,
            };
            self.next_request += 1;
            self.stats.fetches += 1;
            self.inflight.insert(id, key);
            self.commands.push(Command::Fetch(request));
        }
    }
}

/// The conversation in `key`'s slot, if the slot still holds that generation. A free
/// function, so that callers can borrow the machine's other fields beside it.
fn live(slots: &mut [Slot], key: Key) -> Option<&mut Convo> {
    slots
        .get_mut(key.slot as usize)
        .filter(|s| s.gen == key.gen)
        .and_then(|s| s.convo.as_mut())
}
