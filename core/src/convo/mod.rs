//! One conversation's state, its stream's life and its timers. The rules that move it live
//! beside this file, each in a file named for it:
//!
//! - `order.rs`: ordering, dedup by id, delivery, and what arrives late;
//! - `pages.rs`: what a page of `getMessages` proves, holes, unreachable seqs, paging on.
//!
//! The machine (`machine.rs`) owns many conversations and shares the fetch slots, the timer
//! queue and the command queue among them.

mod order;
mod pages;
mod window;

use crate::budget::{Buckets, Kind};
use crate::buffer::Buffer;
use crate::rng::Rng;
use crate::{
    Anomaly, Checkpoint, Command, Config, ConvoId, MessageId, Permanent, RequestId, Seq,
    StreamError, StreamEvent, StreamId, Subscription, Time, SLOW_CONSUMER,
};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::time::Duration;

/// How much larger than `dedup_window` the window may grow while a recheck is pending; also
/// how far back (in seqs) a recheck reaches at most.
pub(crate) const RECHECK_WINDOW_FACTOR: usize = 16;

/// Unreachable (and recently skipped) ranges a conversation keeps retrying at once; older ones stay recorded in
/// the store (and the application was told) but are no longer asked for.
const MAX_UNREACHABLE: usize = 8;

/// Ephemeral ids remembered per conversation, to drop a repeated ephemeral event.
const EPHEMERAL_WINDOW: usize = 32;

/// The longest wait between two retries of an unreachable range, in multiples of
/// `unreachable_retry`.
const UNREACHABLE_BACKOFF_CAP: u32 = 32;

/// Looks at an unreachable range (each reading it whole) before it is no longer asked for:
/// 1 + 2 + 4 + 8 + 16 times `unreachable_retry` apart, about half an hour by default.
const UNREACHABLE_LOOKS: u32 = 5;

/// What a conversation needs from the machine while it handles an input.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a Config,
    pub(crate) now: Time,
    pub(crate) commands: &'a mut crate::queue::Queue,
    /// The conversation's key (for the checkpoint marks of `queue.rs`).
    pub(crate) key: crate::timers::Key,
    pub(crate) buffered_total: &'a mut usize,
    pub(crate) rng: &'a mut Rng,
    pub(crate) next_stream: &'a mut u64,
    pub(crate) buckets: &'a mut Buckets,
}

/// How soon a conversation's fetch should go when fetch slots or the budget are short.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Priority {
    /// Routine: quiet, healthy and periodic catch-ups, rechecks, unreachable retries.
    Routine = 0,
    /// The catch-up after a (re)connect or a subscribe.
    CatchUp = 1,
    /// A gap the application is waiting on, or a conversation it brought into view
    /// (`Resume` for one conversation).
    Urgent = 2,
}

impl Ctx<'_> {
    /// Exponential backoff with full jitter (see `rng::backoff`).
    fn backoff(&mut self, attempt: u32) -> Duration {
        crate::rng::backoff(self.config, self.rng, attempt)
    }

    fn anomaly(&mut self, convo: &ConvoId, anomaly: Anomaly) {
        self.commands.push(Command::Anomaly {
            convo: convo.clone(),
            anomaly,
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Catch-up only: no stream wanted.
    Off,
    /// Closed; reopen at `at`.
    Waiting { at: Time, attempts: u32 },
    /// `OpenStream` sent, not yet confirmed.
    Opening {
        id: StreamId,
        since: Time,
        attempts: u32,
    },
    Open {
        id: StreamId,
        since: Time,
        last_activity: Time,
        attempts: u32,
    },
    /// Covered by the machine's shared stream (`Config::shared_stream`), open or not.
    Shared { open: bool },
}

impl Stream {
    /// The connection asked for or open, if any.
    pub(crate) fn id(&self) -> Option<StreamId> {
        match *self {
            Stream::Opening { id, .. } | Stream::Open { id, .. } => Some(id),
            _ => None,
        }
    }

    /// When a connection needs attention: reopen after its backoff, or give up on one
    /// that is silent (or never confirmed) for `idle_timeout`. The same rules for a
    /// conversation's own stream and for the machine's shared one.
    pub(crate) fn deadline(&self, config: &Config) -> Option<Time> {
        match *self {
            Stream::Off | Stream::Shared { .. } => None,
            Stream::Waiting { at, .. } => Some(at),
            Stream::Opening { since, .. } => Some(since + config.idle_timeout),
            Stream::Open { last_activity, .. } => Some(last_activity + config.idle_timeout),
        }
    }

    /// The attempt a reopen after this connection ended will be: counting on from the
    /// attempts so far, from 1 again if it stayed open `healthy_after`. `None` when there
    /// is no connection of its own to reopen.
    pub(crate) fn next_attempt(&self, now: Time, config: &Config) -> Option<u32> {
        let attempts = match *self {
            Stream::Open { since, .. } if now.since(since) >= config.healthy_after => 0,
            Stream::Open { attempts, .. }
            | Stream::Opening { attempts, .. }
            | Stream::Waiting { attempts, .. } => attempts,
            Stream::Off | Stream::Shared { .. } => return None,
        };
        Some(attempts.saturating_add(1))
    }
}

/// What a fetch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Forward from the checkpoint (a gap, a catch-up, paging on), or a recheck of what the
    /// stream delivered.
    Sync,
    /// Another look at an unreachable range, reading from `at`.
    Retry { at: Seq },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchState {
    Idle,
    /// Waiting for a fetch slot.
    Queued,
    InFlight {
        request: RequestId,
        issued: Time,
        since: Seq,
        limit: u16,
        purpose: Purpose,
    },
}

#[derive(Debug)]
pub(crate) struct Fetch {
    pub(crate) state: FetchState,
    /// A fetch is needed once the current one (if any) is answered.
    pub(crate) want: bool,
    /// After a failure: not before this.
    pub(crate) retry_at: Option<Time>,
    failures: u32,
    limit: u16,
    /// A full page from one below the checkpoint made no progress (messages at the
    /// checkpoint's own seq filled it): the next forward fetch starts at the checkpoint,
    /// with the largest limit.
    narrow: bool,
    /// A recheck (catch-up) is asked for: fetch from `cp.recheck_from` until it has passed
    /// the checkpoint.
    recheck: bool,
    /// The recheck position was lowered while the fetch was in flight: its answer, computed
    /// by the server earlier, does not settle it.
    recheck_moved: bool,
    /// An unreachable range is due for another look.
    retry_due: bool,
    /// How soon the wanted fetch should go.
    pub(crate) priority: Priority,
    /// The priority it was queued with.
    pub(crate) queued_as: Priority,
    /// Why the last fetch failed, while it is being retried.
    pub(crate) trouble: Option<crate::Trouble>,
    /// The next forward fetch reads from here if the checkpoint got past it: the cut seq of
    /// a full page (another message there may have sorted past the cut), or the lowest seq
    /// a message was not kept at for lack of buffer room.
    /// (When it was asked for: only a page issued since then reads it.)
    reread: Option<(Seq, Time)>,
}

impl Fetch {
    /// The next forward fetch reads from `seq` at the latest (kept until a page issued from
    /// now on answers it).
    fn reread_from(&mut self, seq: Seq, now: Time) {
        self.reread = Some(match self.reread {
            Some((r, _)) if r <= seq => (r, now),
            _ => (seq, now),
        });
    }
}

/// Seqs a page lacked, first seen at `seen`: settled only by a page issued at least
/// `hole_grace` later that lacks them too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sighting {
    from: Seq,
    to: Seq,
    seen: Time,
    /// The sighting proved them empty (a short page, or `gapInfo` listing them); otherwise
    /// a full page only failed to show them.
    absent: bool,
}

/// A range declared unreachable (or skipped), asked for again on a slow schedule.
#[derive(Debug, Clone, Copy)]
struct Unreached {
    from: Seq,
    to: Seq,
    next_try: Time,
    tries: u32,
    /// Where the current look reads next: a look reads the range page by page, from
    /// `from` to past `to`.
    at: Seq,
}

/// The parts of a conversation that only exist once messages have flowed: kept out of line
/// so that an idle conversation stays small.
#[derive(Debug, Default)]
struct Active {
    /// Ids delivered below the checkpoint's seq, oldest first, at most `dedup_window`
    /// (more while a recheck is pending), and the last ones delivered late below them.
    recent: window::Window,
    buffer: Buffer,
    /// When the current gap opened (the buffer went from empty to not empty).
    gap_since: Option<Time>,
    /// Seqs above the checkpoint that pages lacked, lowest first.
    hole: SmallVec<[Sighting; 2]>,
    /// A message was not kept for lack of room: catch up once the buffer drains.
    overflowed: bool,
    /// The last ephemeral ids delivered.
    ephemeral: VecDeque<MessageId>,
    /// Ranges declared unreachable that are still asked for.
    unreachable: SmallVec<[Unreached; 1]>,
}

#[derive(Debug)]
pub(crate) struct Convo {
    pub(crate) id: ConvoId,
    pub(crate) cp: Checkpoint,
    /// Every id delivered at a seq at or above this is known (in `cp.ids` or `recent`).
    floor: Seq,
    pub(crate) stream: Stream,
    pub(crate) fetch: Fetch,
    last_catchup: Time,
    /// When the last stream message arrived (or the stream opened), until the quiet
    /// catch-up after it is done.
    quiet_since: Option<Time>,
    /// The earliest entry of this conversation in the timer queue that is still valid.
    pub(crate) scheduled: Option<Time>,
    /// Set when the server answered permanently; the machine then removes the conversation.
    pub(crate) doomed: Option<Permanent>,
    /// The status last told to the application.
    pub(crate) told: Option<crate::Status>,
    /// Why the stream last failed, while it waits to reopen.
    stream_trouble: Option<crate::Trouble>,
    /// Where the checkpoint mark that follows its last delivery waits in the command queue
    /// (see `queue.rs`).
    pub(crate) mark: Option<u64>,
    /// The fingerprint of the checkpoint's id when it holds one delivered in order (so the
    /// window need not compute it again when the checkpoint moves on).
    cp_fp: Option<u64>,
    active: Option<Box<Active>>,
}

impl Convo {
    pub(crate) fn new(sub: Subscription, config: &Config, now: Time) -> Convo {
        let Subscription {
            convo,
            checkpoint,
            mut recent,
            live,
        } = sub;
        let mut floor = checkpoint.seq;
        let mut active = None;
        recent.retain(|k| k.seq < checkpoint.seq && k.seq > Seq::ZERO);
        if !recent.is_empty() && config.dedup_window > 0 {
            recent.sort_by_key(|k| k.seq);
            let mut cut = recent.len().saturating_sub(config.dedup_window);
            if let Some(r) = checkpoint.recheck_from {
                let cap = config.dedup_window.saturating_mul(RECHECK_WINDOW_FACTOR);
                let needed = recent.partition_point(|k| k.seq < r);
                cut = cut.min(needed).max(recent.len().saturating_sub(cap));
            }
            floor = match cut.checked_sub(1).map(|i| recent[i].seq) {
                // Ids at the cut seq may be split across the cut: start above it.
                Some(dropped) => dropped.next(),
                None => recent[0].seq,
            };
            let kept = recent.drain(cut..).filter(|k| k.seq >= floor);
            active = Some(Box::new(Active {
                recent: window::Window::from_known(kept),
                ..Active::default()
            }));
        }
        if !checkpoint.unreachable.is_empty() {
            // Ranges a previous run declared unreachable: ask for them again soon.
            let a = active.get_or_insert_with(Default::default);
            for &(from, to) in checkpoint.unreachable.iter().take(MAX_UNREACHABLE) {
                a.unreachable.push(Unreached {
                    from,
                    to,
                    next_try: now + config.gap_wait,
                    tries: 0,
                    at: from,
                });
            }
        }
        let mut convo = Convo {
            id: convo,
            cp: checkpoint,
            floor,
            stream: match (live, config.shared_stream) {
                (true, false) => Stream::Waiting {
                    at: now,
                    attempts: 0,
                },
                (true, true) => Stream::Shared { open: false },
                (false, _) => Stream::Off,
            },
            fetch: Fetch {
                state: FetchState::Idle,
                // A live conversation catches up when its stream opens.
                want: false,
                retry_at: None,
                failures: 0,
                limit: config.page_limit,
                narrow: false,
                recheck: false,
                recheck_moved: false,
                retry_due: false,
                reread: None,
                priority: Priority::CatchUp,
                queued_as: Priority::Routine,
                trouble: None,
            },
            last_catchup: now,
            quiet_since: None,
            scheduled: None,
            doomed: None,
            told: None,
            stream_trouble: None,
            cp_fp: None,
            mark: None,
            active,
        };
        if !live || config.shared_stream {
            // Without a stream of its own it catches up at once (a shared one may take a
            // reconnect to cover it, and catches it up again when it opens).
            convo.catch_up(config, Priority::CatchUp);
        }
        convo
    }

    /// Asks for a catch-up: fetch again what no page has confirmed since the stream
    /// delivered it (`cp.recheck_from`), and at least the last `catch_up_overlap` seqs, then
    /// page forward until a short page.
    fn catch_up(&mut self, config: &Config, priority: Priority) {
        let overlap = Seq(self.cp.seq.0.saturating_sub(config.catch_up_overlap - 1));
        self.lower_recheck(overlap);
        self.fetch.recheck = true;
        self.want(priority);
    }

    /// A fetch is needed, at least this soon.
    pub(crate) fn want(&mut self, priority: Priority) {
        self.fetch.want = true;
        self.fetch.priority = self.fetch.priority.max(priority);
    }

    /// Seqs from `from` up are not confirmed by a page.
    fn lower_recheck(&mut self, from: Seq) {
        let from = from.max(Seq(1));
        self.cp.recheck_from = Some(self.cp.recheck_from.map_or(from, |s| s.min(from)));
        self.fetch.recheck_moved |= matches!(self.fetch.state, FetchState::InFlight { .. });
    }

    /// How far back a recheck reaches at most: the ids it must recognise are kept in the
    /// window up to this many seqs.
    fn recheck_reach(config: &Config) -> u64 {
        config
            .dedup_window
            .saturating_mul(RECHECK_WINDOW_FACTOR)
            .max(1) as u64
    }

    /// Whether a gap is open (something is buffered or suspected missing above the
    /// checkpoint): then a fetch fills it first, from the checkpoint.
    fn gap_open(&self) -> bool {
        self.active
            .as_ref()
            .is_some_and(|a| !a.buffer.is_empty() || !a.hole.is_empty() || a.overflowed)
    }

    /// Starts the fetch the machine gave a slot: returns `(since, limit)`.
    ///
    /// A forward fetch overlaps the checkpoint by one seq, so that a message that committed
    /// late at that seq is found (the checkpoint's ids recognise the one already delivered),
    /// unless a page from there was filled by that seq's own messages (`narrow`). A recheck
    /// starts where no page has confirmed what the stream delivered, as far back as the ids
    /// the machine remembers can tell duplicates. A retry asks from just below an
    /// unreachable range with the largest limit.
    pub(crate) fn start_fetch(
        &mut self,
        request: RequestId,
        config: &Config,
        now: Time,
    ) -> (Seq, u16) {
        let reach = Self::recheck_reach(config);
        if let Some(r) = self.cp.recheck_from.as_mut() {
            // Below the dedup window a duplicate cannot be told from a new message.
            *r = (*r)
                .max(self.floor)
                .max(Seq(self.cp.seq.0.saturating_sub(reach - 1)));
        }
        if self.cp.recheck_from.is_some_and(|r| r > self.cp.seq) {
            self.cp.recheck_from = None;
        }
        // Kept until a page answers it (a failed fetch must not forget it).
        // Below the dedup window too: what comes back there is delivered `Late` and the
        // store drops what it has.
        let reread = self.fetch.reread.map(|(r, _)| r);
        let retry = std::mem::take(&mut self.fetch.retry_due)
            .then(|| self.due_unreachable(now, config.unreachable_retry))
            .flatten();
        let (since, limit, purpose) = match retry {
            Some(at) => (
                Seq(at.0.saturating_sub(1)),
                config.max_page_limit,
                Purpose::Retry { at },
            ),
            None => {
                let recheck = self
                    .cp
                    .recheck_from
                    .filter(|_| self.fetch.recheck && !self.gap_open());
                match recheck {
                    Some(r) => (Seq(r.0.saturating_sub(1)), self.fetch.limit, Purpose::Sync),
                    None if self.fetch.narrow && reread.is_none_or(|r| r >= self.cp.seq) => {
                        (self.cp.seq, config.max_page_limit, Purpose::Sync)
                    }
                    None => {
                        let from = reread.map_or(self.cp.seq, |r| r.min(self.cp.seq));
                        (
                            Seq(from.0.saturating_sub(1)),
                            self.fetch.limit,
                            Purpose::Sync,
                        )
                    }
                }
            }
        };
        self.fetch.state = FetchState::InFlight {
            request,
            issued: now,
            since,
            limit,
            purpose,
        };
        self.fetch.want = false;
        self.fetch.recheck_moved = false;
        (since, limit)
    }

    /// The conversation's status now.
    pub(crate) fn status(&self) -> crate::Status {
        use crate::Status;
        if let (Some(until), Some(reason)) = (self.fetch.retry_at, self.fetch.trouble) {
            return Status::Retrying { reason, until };
        }
        if let (Stream::Waiting { at, attempts }, Some(reason)) = (self.stream, self.stream_trouble)
        {
            if attempts > 0 {
                return Status::Retrying { reason, until: at };
            }
        }
        let connecting = matches!(
            self.stream,
            Stream::Waiting { .. } | Stream::Opening { .. } | Stream::Shared { open: false }
        );
        let pending = connecting
            || self.fetch.want
            || self.fetch.state != FetchState::Idle
            || self.gap_open();
        if pending {
            Status::CatchingUp { seq: self.cp.seq }
        } else {
            Status::CaughtUp { seq: self.cp.seq }
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        self.active.as_ref().map_or(0, |a| a.buffer.len())
    }

    fn active_mut(&mut self) -> &mut Active {
        self.active.get_or_insert_with(Default::default)
    }

    /// Drops the buffer; returns how many messages it held.
    pub(crate) fn drop_buffer(&mut self) -> usize {
        self.active.as_mut().map_or(0, |a| a.buffer.clear())
    }

    pub(crate) fn on_fetch_failed(&mut self, cx: &mut Ctx, failure: crate::Failure) {
        use crate::Failure as F;
        if let FetchState::InFlight {
            purpose: Purpose::Retry { at },
            ..
        } = self.fetch.state
        {
            // The look goes on a while later, where it was.
            self.fetch.retry_due = false;
            let later = cx.now + cx.config.unreachable_retry / 4;
            if let Some(a) = self.active.as_mut() {
                for u in a
                    .unreachable
                    .iter_mut()
                    .filter(|u| u.from <= at && at <= u.to)
                {
                    u.next_try = later;
                }
            }
        }
        self.fetch.state = FetchState::Idle;
        let floor = match failure {
            F::Permanent(reason) => {
                self.doomed = Some(reason);
                return;
            }
            F::RateLimited { retry_after } => {
                // The account's quota, not this conversation's: every fetch waits.
                let pause = retry_after.unwrap_or(cx.config.budget.pause_without_retry_after);
                cx.buckets.pause(Kind::Fetch, cx.now + pause);
                pause
            }
            F::Unauthorized => {
                cx.anomaly(&self.id, Anomaly::Unauthorized);
                Duration::ZERO
            }
            F::Transient => Duration::ZERO,
        };
        self.fetch.trouble = Some(match failure {
            F::RateLimited { .. } => crate::Trouble::RateLimited,
            F::Unauthorized => crate::Trouble::Unauthorized,
            _ => crate::Trouble::Unreachable,
        });
        self.fetch.failures = self.fetch.failures.saturating_add(1);
        let delay = cx.backoff(self.fetch.failures).max(floor);
        self.fetch.retry_at = Some(cx.now + delay);
        self.fetch.want = true;
    }

    /// Catch up now (`Resume`): skip any backoff, reopen a closed stream now. One
    /// conversation resumed on its own is the one the application shows: it goes first.
    pub(crate) fn resume(&mut self, cx: &mut Ctx, priority: Priority) {
        self.catch_up(cx.config, priority);
        self.fetch.retry_at = None;
        if let Stream::Waiting { attempts, .. } = self.stream {
            self.open_stream(cx, attempts, priority == Priority::Urgent);
        }
    }

    // ---- the stream ---------------------------------------------------------------

    /// Opens the conversation's stream if the budget allows (`urgent`: it may use the
    /// reserve, for a conversation brought into view), or waits for a token.
    pub(crate) fn open_stream(&mut self, cx: &mut Ctx, attempts: u32, urgent: bool) {
        if !cx.buckets.take(Kind::StreamOpen, cx.now, urgent) {
            // The account's budget for stream opens is spent: open when it has a token.
            let at = cx.buckets.ready_at(Kind::StreamOpen, cx.now, urgent);
            self.stream = Stream::Waiting { at, attempts };
            return;
        }
        let id = StreamId(*cx.next_stream);
        *cx.next_stream += 1;
        self.stream = Stream::Opening {
            id,
            since: cx.now,
            attempts,
        };
        cx.commands.push(Command::OpenStream {
            convo: self.id.clone(),
            stream: id,
            cursor: self.cp.cursor.clone(),
        });
    }

    fn current_stream(&self) -> Option<StreamId> {
        self.stream.id()
    }

    pub(crate) fn stream_opened(&mut self, cx: &mut Ctx, stream: StreamId) {
        if let Stream::Opening { id, attempts, .. } = self.stream {
            if id == stream {
                self.stream_trouble = None;
                self.stream = Stream::Open {
                    id,
                    since: cx.now,
                    last_activity: cx.now,
                    attempts,
                };
                // The server does not replay app messages on (re)connect.
                self.catch_up(cx.config, Priority::CatchUp);
                // And a stream resumed with a cursor may filter live events for a while (a
                // cursor the server takes as from the future, recording 77): look again
                // once it has been quiet, as after a burst. (Not on a cold start: without a
                // cursor nothing is filtered, and hundreds of conversations would double
                // their fetches.)
                if self.cp.cursor.is_some() {
                    self.quiet_since = Some(cx.now);
                }
            }
        }
    }

    /// Takes an event of the conversation's own stream. Returns whether it only moved the
    /// conversation along (see [`Convo::take_event`]).
    pub(crate) fn stream_event(
        &mut self,
        cx: &mut Ctx,
        stream: StreamId,
        event: StreamEvent,
    ) -> bool {
        if self.current_stream() != Some(stream) {
            return true;
        }
        let open = match &mut self.stream {
            Stream::Open { last_activity, .. } => {
                *last_activity = cx.now;
                true
            }
            _ => {
                self.stream_opened(cx, stream);
                false
            }
        };
        if let Some(cursor) = event.cursor() {
            self.cp.cursor = Some(cursor.clone());
        }
        self.take_event(cx, event) && open
    }

    /// The shared stream covering this conversation connected: catch up on what the
    /// (re)connect may have cost (nothing is replayed).
    pub(crate) fn shared_opened(&mut self, cx: &mut Ctx) {
        if let Stream::Shared { open } = &mut self.stream {
            // No cursor is ever sent on it, so nothing is filtered: one catch-up is enough.
            *open = true;
            self.catch_up(cx.config, Priority::CatchUp);
        }
    }

    /// The shared stream ended: what was in flight died with it.
    pub(crate) fn shared_closed(&mut self, cx: &mut Ctx) {
        if let Stream::Shared { open } = &mut self.stream {
            *open = false;
            let here = Seq(self.cp.seq.0.saturating_sub(cx.config.catch_up_overlap - 1));
            self.lower_recheck(here);
        }
    }

    /// An event about this conversation came over the shared stream. Its cursor is not
    /// kept: the shared stream never resumes from one.
    /// Returns whether it only moved the conversation along (see [`Convo::take_event`]).
    pub(crate) fn shared_event(&mut self, cx: &mut Ctx, event: StreamEvent) -> bool {
        if matches!(self.stream, Stream::Shared { open: true }) {
            return self.take_event(cx, event);
        }
        true
    }

    /// Takes a stream event. Returns `true` when it only moved the conversation along: a
    /// message at the next seq with no gap open, while a quiet catch-up was pending anyway.
    /// Then no deadline moved earlier, no fetch is wanted that was not, and the status kept
    /// its kind, so the machine need not look at the conversation again (the hot path).
    fn take_event(&mut self, cx: &mut Ctx, event: StreamEvent) -> bool {
        match event {
            StreamEvent::Message { message, .. } => {
                let quiet_pending =
                    self.quiet_since.is_some() || cx.config.quiet_catch_up.is_none();
                let simple = quiet_pending
                    && message.seq == self.cp.seq.next()
                    && !message.is_ephemeral()
                    && !self.gap_open();
                if !message.is_ephemeral() {
                    self.quiet_since = Some(cx.now);
                }
                self.offer_streamed(cx, message);
                return simple;
            }
            StreamEvent::Keepalive => return true,
            event => {
                if matches!(&event, StreamEvent::Info { info, .. } if info == SLOW_CONSUMER) {
                    // The server dropped events for us.
                    self.catch_up(cx.config, Priority::CatchUp);
                }
                cx.commands.push(Command::Event {
                    convo: self.id.clone(),
                    event,
                });
            }
        }
        false
    }

    pub(crate) fn stream_closed(
        &mut self,
        cx: &mut Ctx,
        stream: StreamId,
        error: Option<StreamError>,
    ) {
        if self.current_stream() != Some(stream) {
            return;
        }
        match error {
            Some(StreamError::Permanent(reason)) => {
                self.stream = Stream::Off;
                self.doomed = Some(reason);
                return;
            }
            Some(StreamError::InvalidCursor) => self.cp.cursor = None,
            Some(StreamError::Unauthorized) => {
                self.stream_trouble = Some(crate::Trouble::Unauthorized);
                cx.anomaly(&self.id, Anomaly::Unauthorized)
            }
            Some(StreamError::RateLimited { retry_after }) => {
                self.stream_trouble = Some(crate::Trouble::RateLimited);
                let pause = retry_after.unwrap_or(cx.config.budget.pause_without_retry_after);
                cx.buckets.pause(Kind::StreamOpen, cx.now + pause);
            }
            Some(StreamError::Transient) => self.stream_trouble = Some(crate::Trouble::Unreachable),
            None => {}
        }
        self.wait_to_reopen(cx);
    }

    /// Closed: reopen after a backoff, reset only if the connection stayed healthy.
    fn wait_to_reopen(&mut self, cx: &mut Ctx) {
        // Events in flight died with the connection: whatever fetch comes next (the
        // catch-up on reopen, a gap fetch, a poll) rechecks from here, even if the
        // checkpoint moves on meanwhile.
        let here = Seq(self.cp.seq.0.saturating_sub(cx.config.catch_up_overlap - 1));
        self.lower_recheck(here);
        let Some(attempts) = self.stream.next_attempt(cx.now, cx.config) else {
            return;
        };
        let at = cx.now + cx.backoff(attempts);
        self.stream = Stream::Waiting { at, attempts };
    }

    // ---- timers -------------------------------------------------------------------

    /// The period of the safety-net catch-up in the current state.
    fn poll_period(&self, config: &Config) -> Option<Duration> {
        match self.stream {
            Stream::Open { .. } | Stream::Shared { open: true } => config.healthy_poll_interval,
            _ => Some(config.poll_interval),
        }
    }

    fn fetch_settled(&self) -> bool {
        self.fetch.state == FetchState::Idle && !self.fetch.want && self.fetch.retry_at.is_none()
    }

    /// When the stream needs attention: reopen after backoff, or give up on a connection
    /// that is silent (or never confirmed) for `idle_timeout`.
    fn stream_deadline(&self, config: &Config) -> Option<Time> {
        self.stream.deadline(config)
    }

    /// When an open gap (after `gap_wait`) or a suspected hole (after `hole_grace`) needs an
    /// urgent fetch: while no fetch is pending, or while one waits in a less urgent queue
    /// (a routine catch-up queued behind a cold start must not hold a gap back).
    fn settle_deadline(&self, config: &Config) -> Option<Time> {
        let queued_late =
            self.fetch.state == FetchState::Queued && self.fetch.queued_as < Priority::Urgent;
        if !self.fetch_settled() && !queued_late {
            return None;
        }
        let a = self.active.as_ref()?;
        match (a.hole.iter().map(|h| h.seen).min(), a.gap_since) {
            (Some(seen), _) => Some(seen + config.hole_grace),
            (None, Some(since)) => Some(since + config.gap_wait),
            (None, None) => None,
        }
    }

    /// When the safety-net catch-up is due.
    fn poll_deadline(&self, config: &Config) -> Option<Time> {
        self.poll_period(config).map(|p| self.last_catchup + p)
    }

    /// When the catch-up after the stream went quiet is due.
    fn quiet_deadline(&self, config: &Config) -> Option<Time> {
        config
            .quiet_catch_up
            .zip(self.quiet_since)
            .map(|(d, t)| t + d)
    }

    /// When an unreachable range is due for another look; only while no fetch is pending.
    fn unreachable_deadline(&self) -> Option<Time> {
        if !self.fetch_settled() {
            return None;
        }
        let a = self.active.as_ref()?;
        a.unreachable.iter().map(|u| u.next_try).min()
    }

    /// The earliest time something is due for this conversation.
    pub(crate) fn next_deadline(&self, config: &Config) -> Option<Time> {
        [
            self.stream_deadline(config),
            self.fetch.retry_at,
            self.settle_deadline(config),
            self.poll_deadline(config),
            self.quiet_deadline(config),
            self.unreachable_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Does what is due at `cx.now` (what `next_deadline` announced).
    pub(crate) fn on_timer(&mut self, cx: &mut Ctx) {
        let now = cx.now;
        let config = cx.config;
        let due = |t: Option<Time>| t.is_some_and(|t| t <= now);
        if due(self.stream_deadline(config)) {
            match self.stream {
                Stream::Waiting { attempts, .. } => self.open_stream(cx, attempts, false),
                Stream::Opening { id, .. } | Stream::Open { id, .. } => {
                    self.close_silent_stream(cx, id)
                }
                Stream::Off | Stream::Shared { .. } => {}
            }
        }
        if due(self.fetch.retry_at) {
            self.fetch.retry_at = None;
            self.fetch.want = true;
        }
        if due(self.settle_deadline(config)) {
            // A gap the application waits on.
            self.want(Priority::Urgent);
        }
        if due(self.unreachable_deadline()) {
            self.want(Priority::Routine);
            self.fetch.retry_due = true;
        }
        let quiet = due(self.quiet_deadline(config));
        if quiet {
            self.quiet_since = None;
        }
        if quiet || due(self.poll_deadline(config)) {
            self.last_catchup = now;
            self.catch_up(config, Priority::Routine);
        }
    }

    fn close_silent_stream(&mut self, cx: &mut Ctx, stream: StreamId) {
        cx.commands.push(Command::CloseStream {
            convo: self.id.clone(),
            stream,
        });
        self.wait_to_reopen(cx);
    }
}
