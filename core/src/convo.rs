//! One conversation's state and the rules that move it: ordering, dedup, gaps, holes,
//! pages, the stream's life and the fetch's life. The machine (`machine.rs`) owns many of
//! these and shares the fetch slots, the timer queue and the command queue among them.

use crate::buffer::{Buffer, Insert};
use crate::rng::Rng;
use crate::{
    Anomaly, Checkpoint, Command, Config, ConvoId, Delivery, Known, Message, MessageId, Order,
    Permanent, RequestId, Seq, StreamError, StreamEvent, StreamId, Subscription, Time,
    SLOW_CONSUMER,
};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::time::Duration;

/// How much larger than `dedup_window` the window may grow while a catch-up is pending.
pub(crate) const RECHECK_WINDOW_FACTOR: usize = 16;

/// What a conversation needs from the machine while it handles an input.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a Config,
    pub(crate) now: Time,
    pub(crate) commands: &'a mut VecDeque<Command>,
    pub(crate) buffered_total: &'a mut usize,
    pub(crate) rng: &'a mut Rng,
    pub(crate) next_stream: &'a mut u64,
}

impl Ctx<'_> {
    /// Exponential backoff with full jitter: uniform in `0..=min(cap, base·2^(attempt-1))`.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = self.config.backoff_base.as_millis() as u64;
        let cap = self.config.backoff_cap.as_millis() as u64;
        let shift = attempt.saturating_sub(1).min(40);
        let ceiling = base.saturating_mul(1u64 << shift).min(cap);
        Duration::from_millis(self.rng.up_to(ceiling))
    }

    fn anomaly(&mut self, convo: &ConvoId, anomaly: Anomaly) {
        self.commands.push_back(Command::Anomaly {
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
    },
}

#[derive(Debug)]
pub(crate) struct Fetch {
    pub(crate) state: FetchState,
    /// A catch-up is needed once the current fetch (if any) is answered.
    pub(crate) want: bool,
    /// After a failure: not before this.
    pub(crate) retry_at: Option<Time>,
    failures: u32,
    limit: u16,
    /// The lowest seq not kept for lack of room while a page was processed.
    page_dropped: Option<Seq>,
    /// The recheck position was lowered while the fetch was in flight: its answer, computed
    /// by the server earlier, does not settle it.
    recheck_moved: bool,
    /// Full pages in a row that made no progress at the largest limit.
    stalled: u32,
}

/// Seqs a short page lacked, first seen at `seen`: skipped only if a fetch issued at least
/// `hole_grace` later lacks them too.
#[derive(Debug)]
struct Hole {
    ranges: SmallVec<[(Seq, Seq); 2]>,
    seen: Time,
}

/// The parts of a conversation that only exist once messages have flowed: kept out of line
/// so that an idle conversation stays small.
#[derive(Debug, Default)]
struct Active {
    /// Ids delivered below the checkpoint's seq, oldest first, at most `dedup_window`.
    recent: VecDeque<Known>,
    buffer: Buffer,
    /// When the current gap opened (the buffer went from empty to not empty).
    gap_since: Option<Time>,
    hole: Option<Hole>,
    /// A message was not kept for lack of room: catch up once the buffer drains.
    overflowed: bool,
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
    /// When the last stream message arrived, until the quiet catch-up after it is done.
    quiet_since: Option<Time>,
    /// The earliest entry of this conversation in the timer queue that is still valid.
    pub(crate) scheduled: Option<Time>,
    /// Set when the server answered permanently; the machine then removes the conversation.
    pub(crate) doomed: Option<Permanent>,
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
            let kept: VecDeque<_> = recent.drain(cut..).filter(|k| k.seq >= floor).collect();
            active = Some(Box::new(Active {
                recent: kept,
                ..Active::default()
            }));
        }
        let mut convo = Convo {
            id: convo,
            cp: checkpoint,
            floor,
            stream: if live {
                Stream::Waiting {
                    at: now,
                    attempts: 0,
                }
            } else {
                Stream::Off
            },
            fetch: Fetch {
                state: FetchState::Idle,
                // A live conversation catches up when its stream opens.
                want: !live,
                retry_at: None,
                failures: 0,
                recheck_moved: false,
                page_dropped: None,
                limit: config.page_limit,
                stalled: 0,
            },
            last_catchup: now,
            quiet_since: None,
            scheduled: None,
            doomed: None,
            active,
        };
        if !live {
            convo.catch_up(config);
        }
        convo
    }

    /// Asks for a catch-up from the current position, overlapping what was delivered by
    /// `catch_up_overlap` seqs.
    fn catch_up(&mut self, config: &Config) {
        let here = Seq(self.cp.seq.0.saturating_sub(config.catch_up_overlap - 1));
        self.recheck_from(here);
    }

    /// Seqs from `from` up must be fetched again before the conversation counts as
    /// caught up.
    fn recheck_from(&mut self, from: Seq) {
        self.fetch.want = true;
        self.lower_recheck(from);
    }

    fn lower_recheck(&mut self, from: Seq) {
        let from = from.max(Seq(1));
        self.cp.recheck_from = Some(self.cp.recheck_from.map_or(from, |s| s.min(from)));
        self.fetch.recheck_moved |= matches!(self.fetch.state, FetchState::InFlight { .. });
    }

    /// Starts the fetch the machine gave a slot: returns `(since, limit)`. The fetch
    /// overlaps the last delivered seq by one, so a message that committed late at that seq
    /// is found (the checkpoint's ids recognise the one already delivered); after a catch-up
    /// request it starts where the conversation stood then, as far back as the ids it
    /// remembers can tell duplicates.
    pub(crate) fn start_fetch(&mut self, request: RequestId, now: Time) -> (Seq, u16) {
        // Below the dedup window a duplicate cannot be told from a new message: a recheck
        // reaches back no further.
        if let Some(r) = self.cp.recheck_from.as_mut() {
            *r = (*r).max(self.floor);
        }
        let from = self
            .cp
            .recheck_from
            .map_or(self.cp.seq, |s| s.min(self.cp.seq))
            .max(self.floor);
        let since = Seq(from.0.saturating_sub(1));
        let limit = self.fetch.limit;
        self.fetch.state = FetchState::InFlight {
            request,
            issued: now,
            since,
            limit,
        };
        self.fetch.want = false;
        self.fetch.recheck_moved = false;
        (since, limit)
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

    // ---- ordering -----------------------------------------------------------------

    fn knows(&self, seq: Seq, id: &MessageId) -> bool {
        (seq == self.cp.seq && self.cp.ids.contains(id))
            || self
                .active
                .as_ref()
                .is_some_and(|a| a.recent.iter().any(|k| &k.id == id) || a.buffer.contains(seq, id))
    }

    /// Takes one message from the stream or a page. Returns whether it was delivered.
    pub(crate) fn offer(&mut self, cx: &mut Ctx, message: Message) -> bool {
        if message.is_ephemeral() {
            self.deliver(cx, message, Order::Ephemeral);
            return true;
        }
        if message.seq == self.cp.seq.next() {
            self.deliver(cx, message, Order::InOrder);
            self.release(cx);
            return true;
        }
        self.offer_now(cx, message)
    }

    /// `offer` for a message not at the next seq (or, from `release`, at most at it).
    fn offer_now(&mut self, cx: &mut Ctx, message: Message) -> bool {
        let next = self.cp.seq.next();
        if message.seq == next {
            self.deliver(cx, message, Order::InOrder);
            return true;
        }
        if message.seq < next {
            // Only here can it be one already delivered; ahead of the checkpoint, the
            // buffer's own dedup is enough.
            if self.knows(message.seq, &message.id) {
                return false;
            }
            if message.seq >= self.floor {
                self.deliver(cx, message, Order::SharesSeq);
                return true;
            }
            let (seq, id) = (message.seq, message.id);
            cx.anomaly(&self.id, Anomaly::StaleMessage { seq, id });
            return false;
        }
        let config = cx.config;
        let full = self.buffered() >= config.max_buffered
            || *cx.buffered_total >= config.max_buffered_total;
        let now = cx.now;
        let seq = message.seq;
        let active = self.active_mut();
        let dropped = match active.buffer.insert(message, full) {
            Insert::Kept => {
                *cx.buffered_total += 1;
                None
            }
            Insert::KeptEvicting(evicted) => Some(evicted),
            Insert::Refused => Some(seq),
            Insert::Duplicate => None,
        };
        // A gap is open even if nothing could be kept: what was refused is owed a fetch.
        if active.gap_since.is_none() {
            active.gap_since = Some(now);
        }
        if let Some(seq) = dropped {
            // Not kept, still on the server: fetched once the buffer drains (not at once,
            // which would loop while a hole below waits for confirmation). Recorded in the
            // checkpoint so that neither a failed fetch nor a restart forgets it.
            active.overflowed = true;
            self.lower_recheck(seq);
            self.fetch.page_dropped = min_seq(self.fetch.page_dropped, Some(seq));
        }
        false
    }

    fn deliver(&mut self, cx: &mut Ctx, message: Message, order: Order) {
        match order {
            Order::InOrder => {
                if let Some(prev) = self.cp.epoch {
                    if message.epoch < prev {
                        let anomaly = Anomaly::EpochWentBack {
                            seq: message.seq,
                            epoch: message.epoch.0,
                            previous: prev.0,
                        };
                        cx.anomaly(&self.id, anomaly);
                    }
                }
                self.advance_to(cx.config, message.seq);
                self.cp.ids.push(message.id.clone());
                self.cp.epoch = Some(message.epoch);
            }
            Order::SharesSeq => {
                if message.seq == self.cp.seq {
                    self.cp.ids.push(message.id.clone());
                    // The checkpoint's epoch is the highest at its seq (see `advance_to`).
                    self.cp.epoch = self.cp.epoch.max(Some(message.epoch));
                } else {
                    let known = Known::new(message.seq, message.id.clone(), message.epoch);
                    self.remember(cx.config, std::iter::once(known));
                }
            }
            Order::Ephemeral => {}
        }
        cx.commands.push_back(Command::Deliver(Delivery {
            convo: self.id.clone(),
            message,
            order,
            checkpoint: self.cp.clone(),
        }));
    }

    /// Moves the checkpoint to `seq`, remembering the ids delivered at the old one.
    fn advance_to(&mut self, config: &Config, seq: Seq) {
        let old = self.cp.seq;
        let ids = std::mem::take(&mut self.cp.ids);
        if old > Seq::ZERO {
            let epoch = self.cp.epoch.unwrap_or_default();
            self.remember(config, ids.into_iter().map(|id| Known::new(old, id, epoch)));
        }
        self.cp.seq = seq;
        if config.dedup_window == 0 {
            self.floor = seq;
        }
    }

    fn remember(&mut self, config: &Config, ids: impl Iterator<Item = Known>) {
        if config.dedup_window == 0 {
            return;
        }
        let window = config.dedup_window;
        // While a catch-up is pending the window keeps what it must check, up to a bound.
        let cap = window.saturating_mul(RECHECK_WINDOW_FACTOR);
        let keep_from = self.cp.recheck_from;
        let mut floor = self.floor;
        let recent = &mut self.active_mut().recent;
        recent.extend(ids);
        while recent.len() > window {
            let Some(oldest) = recent.front().map(|k| k.seq) else {
                break;
            };
            if recent.len() <= cap && keep_from.is_some_and(|r| oldest >= r) {
                break;
            }
            recent.pop_front();
            floor = floor.max(oldest.next());
        }
        self.floor = floor;
    }

    /// Delivers buffered messages that are now in order, and those that were waiting at a
    /// seq that has just been delivered for another id.
    fn release(&mut self, cx: &mut Ctx) {
        while let Some(active) = self.active.as_mut() {
            let Some(msgs) = active.buffer.pop_first_up_to(self.cp.seq.next()) else {
                break;
            };
            *cx.buffered_total -= msgs.len();
            for m in msgs {
                // `offer` delivers the next seq in order and a new id at a delivered seq
                // flagged; it cannot buffer again, since the seq is at most the next one.
                self.offer_now(cx, m);
            }
        }
        let seq = self.cp.seq;
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if let Some(hole) = active.hole.as_mut() {
            hole.ranges.retain(|(_, to)| *to > seq);
            for r in hole.ranges.iter_mut() {
                r.0 = r.0.max(seq.next());
            }
            if hole.ranges.is_empty() {
                active.hole = None;
            }
        }
        if active.buffer.is_empty() {
            active.gap_since = None;
            active.hole = None;
            if std::mem::take(&mut active.overflowed) {
                // What did not fit is still on the server: fetch it now.
                self.fetch.want = true;
            }
        }
    }

    fn skip(&mut self, cx: &mut Ctx, from: Seq, to: Seq) {
        self.advance_to(cx.config, to);
        cx.commands.push_back(Command::Skipped {
            convo: self.id.clone(),
            from,
            to,
            checkpoint: self.cp.clone(),
        });
    }

    // ---- pages --------------------------------------------------------------------

    pub(crate) fn on_page(&mut self, cx: &mut Ctx, request: RequestId, mut messages: Vec<Message>) {
        let FetchState::InFlight {
            issued,
            since,
            limit,
            ..
        } = self.fetch.state
        else {
            return;
        };
        self.fetch.state = FetchState::Idle;
        self.fetch.failures = 0;
        let len = messages.len();
        // This page answers the recheck from `since` up, unless the recheck was asked for
        // while it was in flight (the server answered from an earlier state).
        let moved = std::mem::take(&mut self.fetch.recheck_moved);
        let base = if moved {
            self.cp.recheck_from
        } else {
            self.cp.recheck_from.filter(|r| *r <= since)
        };
        if !moved && len < usize::from(limit) {
            // A short page holds whatever did not fit in the buffer before it was asked
            // for; if it all fits now, nothing is owed.
            if let Some(a) = self.active.as_mut() {
                a.overflowed = false;
            }
        }
        // Until the page is settled its range is unverified, and the checkpoints delivered
        // meanwhile say so: a crash now must not forget it.
        self.cp.recheck_from = min_seq(base, Some(since.next()));
        self.fetch.page_dropped = None;
        if len > usize::from(limit) {
            cx.anomaly(
                &self.id,
                Anomaly::PageOversized {
                    request,
                    len,
                    limit,
                },
            );
        }
        // The server cut a full page after its largest (epoch, seq). A seq is known
        // complete only where the page holds a message strictly below that: another message
        // sharing the cut seq, or sharing any seq at a later epoch, may be past the cut.
        let cut = messages
            .iter()
            .filter(|m| !m.is_ephemeral() && m.seq > since)
            .map(|m| (m.epoch, m.seq))
            .max();
        let mut covered: SmallVec<[Seq; 64]> = messages
            .iter()
            .filter(|m| m.seq > since && cut.is_some_and(|c| (m.epoch, m.seq) < c))
            .map(|m| m.seq)
            .collect();
        // The server orders by (epoch, seq); deliver by seq. Stable, so messages sharing a
        // seq keep the server's order.
        messages.sort_by_key(|m| m.seq);
        // What the page holds, kept or not: only seqs it lacks can be holes.
        let mut present: SmallVec<[Seq; 64]> = messages
            .iter()
            .map(|m| m.seq)
            .filter(|s| *s > since)
            .collect();
        present.dedup();
        let mut delivered = false;
        let mut backwards = 0;
        for m in messages {
            if m.is_ephemeral() {
                // Not progress: a hostile server could send the same one for ever.
                let id = m.id.clone();
                cx.anomaly(&self.id, Anomaly::EphemeralInPage { id });
                self.offer(cx, m);
                continue;
            }
            if m.seq <= since {
                backwards += 1;
                continue;
            }
            // Buffered stream messages are released once the whole page is in, so that a
            // page's message sharing a seq is not pushed out of the dedup window first.
            delivered |= self.offer_now(cx, m);
        }
        self.release(cx);
        let dropped = self.fetch.page_dropped.take();
        if backwards > 0 {
            let anomaly = Anomaly::PageWentBackwards {
                request,
                since,
                ignored: backwards,
            };
            cx.anomaly(&self.id, anomaly);
        }
        // Holes may be taken only below this seq (a stalled full page proves nothing about
        // the seqs at or past its cut).
        let mut below = None;
        if len >= usize::from(limit) {
            // A full page proves nothing about what it lacks: the server cut it at `limit`
            // in (epoch, seq) order. Page on from our own position (never the server's
            // `lastSeq`), from the first seq the page does not prove complete.
            // A seq already delivered or skipped that the page spans below its cut but does
            // not hold (a confirmed hole, a deleted message) is no more suspect than one it
            // holds.
            covered.sort_unstable();
            let (cut_epoch, cut_seq) = cut.unwrap_or_default();
            let mut next = since.next();
            loop {
                let held = covered.binary_search(&next).is_ok();
                let passed = next <= self.cp.seq
                    && next < cut_seq
                    && present.binary_search(&next).is_err()
                    && self.delivered_epochs_at_most(next, cut_epoch);
                if !(held || passed) {
                    break;
                }
                next = next.next();
            }
            let next = next.min(self.cp.seq);
            if delivered || next > since.next() {
                self.fetch.stalled = 0;
                self.fetch.limit = (self.fetch.limit / 2).max(cx.config.page_limit);
                self.cp.recheck_from = min_seq(min_seq(base, Some(next)), dropped);
                self.fetch.want = true;
                return;
            }
            // No progress: ask again from the same place with a larger limit.
            self.cp.recheck_from = min_seq(min_seq(base, Some(since.next())), dropped);
            if self.fetch.limit < cx.config.max_page_limit {
                self.fetch.limit =
                    (self.fetch.limit.saturating_mul(2)).min(cx.config.max_page_limit);
                self.fetch.want = true;
                return;
            }
            self.fetch.stalled += 1;
            if self.fetch.stalled < cx.config.max_stalled_pages {
                self.fetch.want = true;
                return;
            }
            if self.fetch.stalled == cx.config.max_stalled_pages {
                let anomaly = Anomaly::PageStalled {
                    since,
                    pages: self.fetch.stalled,
                };
                cx.anomaly(&self.id, anomaly);
            }
            // Stalled at the largest limit: treat the page's gaps below its cut like a short
            // page's, still confirmed by a second fetch `hole_grace` later. Past the cut
            // seq the page proves nothing: a gap there (between the page's low-epoch
            // messages and the stream's) is the next pages' to settle, once the position
            // has moved up. Only a page with no gap below its cut (a server repeating
            // itself) has its other gaps taken, lest it be asked for ever.
            let cut_seq = cut.map(|(_, seq)| seq);
            let active = self.active.as_ref();
            let gap_below_cut = cut_seq.zip(active).is_some_and(|(c, a)| {
                gaps_above(self.cp.seq, &present, &a.buffer)
                    .first()
                    .is_some_and(|(from, _)| *from < c)
            });
            if gap_below_cut {
                below = cut_seq;
            }
        } else {
            self.fetch.stalled = 0;
            self.fetch.limit = cx.config.page_limit;
            self.cp.recheck_from = min_seq(base, dropped);
        }
        self.settle_holes(cx, issued, &present, below);
        if let Some(a) = self.active.as_mut() {
            if a.overflowed
                && a.hole
                    .as_ref()
                    .is_none_or(|h| h.ranges[0].0 > self.cp.seq.next())
            {
                // The next message is on the server but did not fit: fetch it now.
                self.fetch.want = true;
            } else if a.buffer.is_empty() && a.hole.is_none() && !a.overflowed {
                a.gap_since = None;
            }
        }
        if self.buffered() == 0 {
            self.last_catchup = cx.now;
        }
    }

    /// After a page that proves absence: skip the gaps a page issued at least `hole_grace`
    /// after they were first seen still lacks, and remember the others as suspects.
    fn settle_holes(&mut self, cx: &mut Ctx, issued: Time, present: &[Seq], below: Option<Seq>) {
        let grace = cx.config.hole_grace;
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut earlier = active.hole.take();
        if earlier.as_ref().is_some_and(|h| issued >= h.seen + grace) {
            let ranges = earlier.take().map(|h| h.ranges).unwrap_or_default();
            while let Some(first) = self.next_present(present) {
                let from = self.cp.seq.next();
                let Some(&(_, end)) = ranges.iter().find(|(a, b)| *a <= from && from <= *b) else {
                    break;
                };
                if first <= from {
                    break;
                }
                let to = end.min(Seq(first.0 - 1));
                self.skip(cx, from, to);
                self.release(cx);
            }
        }
        let now = cx.now;
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut gaps = gaps_above(self.cp.seq, present, &active.buffer);
        if let Some(bound) = below {
            gaps.retain(|(from, _)| *from < bound);
            for gap in gaps.iter_mut() {
                gap.1 = gap.1.min(Seq(bound.0 - 1));
            }
        }
        active.hole = if gaps.is_empty() {
            None
        } else {
            match earlier {
                // Too early to confirm: keep the first sighting for what is still missing.
                Some(h) => {
                    let common = intersect(&h.ranges, &gaps);
                    if common.is_empty() {
                        Some(Hole {
                            ranges: gaps,
                            seen: now,
                        })
                    } else {
                        Some(Hole {
                            ranges: common,
                            seen: h.seen,
                        })
                    }
                }
                None => Some(Hole {
                    ranges: gaps,
                    seen: now,
                }),
            }
        };
    }

    /// Whether every message delivered at `seq` (none, if it was skipped) has an epoch of at
    /// most `epoch`: a page cut after `(epoch, s > seq)` would then have held it, had it
    /// still been there.
    fn delivered_epochs_at_most(&self, seq: Seq, epoch: crate::Epoch) -> bool {
        if seq == self.cp.seq && !self.cp.ids.is_empty() {
            return self.cp.epoch.is_none_or(|e| e <= epoch);
        }
        self.active.as_ref().is_none_or(|a| {
            a.recent
                .iter()
                .filter(|k| k.seq == seq)
                .all(|k| k.epoch <= epoch)
        })
    }

    /// The lowest seq above the checkpoint that the page or the buffer holds.
    fn next_present(&self, present: &[Seq]) -> Option<Seq> {
        let cp = self.cp.seq;
        let page = present.iter().copied().find(|s| *s > cp);
        let buffered = self.active.as_ref().and_then(|a| a.buffer.first_seq());
        match (page, buffered) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn on_fetch_failed(&mut self, cx: &mut Ctx, failure: crate::Failure) {
        use crate::Failure as F;
        self.fetch.state = FetchState::Idle;
        let floor = match failure {
            F::Permanent(reason) => {
                self.doomed = Some(reason);
                return;
            }
            F::RateLimited { retry_after } => retry_after.unwrap_or_default(),
            F::Unauthorized => {
                cx.anomaly(&self.id, Anomaly::Unauthorized);
                Duration::ZERO
            }
            F::Transient => Duration::ZERO,
        };
        self.fetch.failures = self.fetch.failures.saturating_add(1);
        let delay = cx.backoff(self.fetch.failures).max(floor);
        self.fetch.retry_at = Some(cx.now + delay);
        self.fetch.want = true;
    }

    /// Catch up now (`Resume`): skip any backoff, reopen a closed stream now.
    pub(crate) fn resume(&mut self, cx: &mut Ctx) {
        self.catch_up(cx.config);
        self.fetch.retry_at = None;
        if let Stream::Waiting { attempts, .. } = self.stream {
            self.open_stream(cx, attempts);
        }
    }

    // ---- the stream ---------------------------------------------------------------

    pub(crate) fn open_stream(&mut self, cx: &mut Ctx, attempts: u32) {
        let id = StreamId(*cx.next_stream);
        *cx.next_stream += 1;
        self.stream = Stream::Opening {
            id,
            since: cx.now,
            attempts,
        };
        cx.commands.push_back(Command::OpenStream {
            convo: self.id.clone(),
            stream: id,
            cursor: self.cp.cursor.clone(),
        });
    }

    fn current_stream(&self) -> Option<StreamId> {
        match self.stream {
            Stream::Opening { id, .. } | Stream::Open { id, .. } => Some(id),
            _ => None,
        }
    }

    pub(crate) fn stream_opened(&mut self, cx: &mut Ctx, stream: StreamId) {
        if let Stream::Opening { id, attempts, .. } = self.stream {
            if id == stream {
                self.stream = Stream::Open {
                    id,
                    since: cx.now,
                    last_activity: cx.now,
                    attempts,
                };
                // The server does not replay app messages on (re)connect.
                self.catch_up(cx.config);
            }
        }
    }

    pub(crate) fn stream_event(&mut self, cx: &mut Ctx, stream: StreamId, event: StreamEvent) {
        if self.current_stream() != Some(stream) {
            return;
        }
        if matches!(self.stream, Stream::Opening { .. }) {
            self.stream_opened(cx, stream);
        }
        if let Stream::Open { last_activity, .. } = &mut self.stream {
            *last_activity = cx.now;
        }
        if let Some(cursor) = event.cursor() {
            self.cp.cursor = Some(cursor.clone());
        }
        match event {
            StreamEvent::Message { message, .. } => {
                if !message.is_ephemeral() {
                    self.quiet_since = Some(cx.now);
                }
                self.offer(cx, message);
            }
            StreamEvent::Keepalive => {}
            event => {
                if matches!(&event, StreamEvent::Info { info, .. } if info == SLOW_CONSUMER) {
                    // The server dropped events for us.
                    self.catch_up(cx.config);
                }
                cx.commands.push_back(Command::Event {
                    convo: self.id.clone(),
                    event,
                });
            }
        }
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
            Some(StreamError::Unauthorized) => cx.anomaly(&self.id, Anomaly::Unauthorized),
            Some(StreamError::Transient) | None => {}
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
        let attempts = match self.stream {
            Stream::Open { since, .. } if cx.now.since(since) >= cx.config.healthy_after => 0,
            Stream::Open { attempts, .. }
            | Stream::Opening { attempts, .. }
            | Stream::Waiting { attempts, .. } => attempts,
            Stream::Off => return,
        }
        .saturating_add(1);
        let at = cx.now + cx.backoff(attempts);
        self.stream = Stream::Waiting { at, attempts };
    }

    // ---- timers -------------------------------------------------------------------

    /// The period of the safety-net catch-up in the current state.
    fn poll_period(&self, config: &Config) -> Option<Duration> {
        match self.stream {
            Stream::Open { .. } => config.healthy_poll_interval,
            _ => Some(config.poll_interval),
        }
    }

    fn fetch_settled(&self) -> bool {
        self.fetch.state == FetchState::Idle && !self.fetch.want && self.fetch.retry_at.is_none()
    }

    /// When the stream needs attention: reopen after backoff, or give up on a connection
    /// that is silent (or never confirmed) for `idle_timeout`.
    fn stream_deadline(&self, config: &Config) -> Option<Time> {
        match self.stream {
            Stream::Off => None,
            Stream::Waiting { at, .. } => Some(at),
            Stream::Opening { since, .. } => Some(since + config.idle_timeout),
            Stream::Open { last_activity, .. } => Some(last_activity + config.idle_timeout),
        }
    }

    /// When an open gap (after `gap_wait`) or a suspected hole (after `hole_grace`) needs a
    /// fetch; only while no fetch is pending.
    fn settle_deadline(&self, config: &Config) -> Option<Time> {
        if !self.fetch_settled() {
            return None;
        }
        let a = self.active.as_ref()?;
        match (&a.hole, a.gap_since) {
            (Some(h), _) => Some(h.seen + config.hole_grace),
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

    /// The earliest time something is due for this conversation.
    pub(crate) fn next_deadline(&self, config: &Config) -> Option<Time> {
        [
            self.stream_deadline(config),
            self.fetch.retry_at,
            self.settle_deadline(config),
            self.poll_deadline(config),
            self.quiet_deadline(config),
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
                Stream::Waiting { attempts, .. } => self.open_stream(cx, attempts),
                Stream::Opening { id, .. } | Stream::Open { id, .. } => {
                    self.close_silent_stream(cx, id)
                }
                Stream::Off => {}
            }
        }
        if due(self.fetch.retry_at) {
            self.fetch.retry_at = None;
            self.fetch.want = true;
        }
        if due(self.settle_deadline(config)) {
            self.fetch.want = true;
        }
        let quiet = due(self.quiet_deadline(config));
        if quiet {
            self.quiet_since = None;
        }
        if quiet || due(self.poll_deadline(config)) {
            self.last_catchup = now;
            self.catch_up(config);
        }
    }

    fn close_silent_stream(&mut self, cx: &mut Ctx, stream: StreamId) {
        cx.commands.push_back(Command::CloseStream {
            convo: self.id.clone(),
            stream,
        });
        self.wait_to_reopen(cx);
    }
}

/// The gaps above `last` below the highest seq held by a page (`present`, sorted) or the
/// buffer.
fn gaps_above(last: Seq, present: &[Seq], buffer: &Buffer) -> SmallVec<[(Seq, Seq); 2]> {
    let mut held: SmallVec<[Seq; 64]> = present.iter().copied().filter(|s| *s > last).collect();
    held.extend(buffer.seqs().filter(|s| *s > last));
    held.sort_unstable();
    held.dedup();
    let mut gaps = SmallVec::new();
    let mut expect = last.next();
    for seq in held {
        if seq > expect {
            gaps.push((expect, Seq(seq.0 - 1)));
        }
        expect = seq.next();
    }
    gaps
}

fn min_seq(a: Option<Seq>, b: Option<Seq>) -> Option<Seq> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn intersect(a: &[(Seq, Seq)], b: &[(Seq, Seq)]) -> SmallVec<[(Seq, Seq); 2]> {
    let mut out = SmallVec::new();
    for &(a0, a1) in a {
        for &(b0, b1) in b {
            let (lo, hi) = (a0.max(b0), a1.min(b1));
            if lo <= hi {
                out.push((lo, hi));
            }
        }
    }
    out
}
