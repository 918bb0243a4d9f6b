//! Ordering: what is delivered when, dedup by id, and what arrives late.
//!
//! A message at the next seq is delivered at once; one ahead of it is buffered; one at a
//! seq already passed is delivered flagged — `SharesSeq` when the machine knows every id
//! delivered there (a second message at one seq), `Late` when it cannot (the seq was
//! skipped or declared unreachable, or lies below the ids it remembers: the store, which
//! keeps every id, decides). An id is delivered at most once: one that comes back at another
//! seq is reported, not delivered again.

use super::window::fingerprint;
use super::{Convo, Ctx, Unreached, EPHEMERAL_WINDOW, MAX_UNREACHABLE, RECHECK_WINDOW_FACTOR};
use crate::buffer::Insert;
use crate::{Anomaly, Command, Config, Delivery, Known, Message, MessageId, Order, Seq};

impl Convo {
    /// Where `id` was delivered, if the machine still remembers it.
    fn delivered_at(&self, id: &MessageId, fp: u64) -> Option<Seq> {
        if self.cp.ids.contains(id) {
            return Some(self.cp.seq);
        }
        let a = self.active.as_ref()?;
        a.recent.find(id, fp)
    }

    /// Drops a message whose id was delivered already; reports it if at another seq.
    /// Returns whether it was dropped.
    fn drop_known(&mut self, cx: &mut Ctx, message: &Message, fp: u64) -> bool {
        let Some(at) = self.delivered_at(&message.id, fp) else {
            return false;
        };
        if at != message.seq {
            let anomaly = Anomaly::IdConflict {
                id: message.id.clone(),
                seq: message.seq,
                delivered_at: at,
            };
            cx.anomaly(&self.id, anomaly);
        }
        true
    }

    /// Takes one message from the stream. Returns whether it was delivered.
    pub(crate) fn offer_streamed(&mut self, cx: &mut Ctx, message: Message) -> bool {
        let seq = message.seq;
        let delivered = self.offer(cx, message);
        if delivered && seq > crate::Seq::ZERO && self.cp.recheck_from.is_none_or(|r| r > seq) {
            // No page has confirmed this seq yet (a message sharing it may have lost its
            // stream event): the next catch-up starts here.
            self.cp.recheck_from = Some(seq);
        }
        delivered
    }

    /// Takes one message from the stream or a page. Returns whether it was delivered.
    pub(crate) fn offer(&mut self, cx: &mut Ctx, message: Message) -> bool {
        if message.is_ephemeral() {
            return self.offer_ephemeral(cx, message);
        }
        if message.seq == self.cp.seq.next() {
            let fp = fingerprint(&message.id);
            if self.drop_known(cx, &message, fp) {
                return false;
            }
            self.deliver_in_order(cx, message, fp);
            self.release(cx);
            return true;
        }
        self.offer_now(cx, message)
    }

    fn offer_ephemeral(&mut self, cx: &mut Ctx, message: Message) -> bool {
        let seen = &mut self.active_mut().ephemeral;
        if seen.contains(&message.id) {
            return false;
        }
        if seen.len() >= EPHEMERAL_WINDOW {
            seen.pop_front();
        }
        seen.push_back(message.id.clone());
        self.deliver(cx, message, Order::Ephemeral);
        true
    }

    /// `offer` for a message not at the next seq (or, from `release`, at most at it).
    pub(super) fn offer_now(&mut self, cx: &mut Ctx, message: Message) -> bool {
        if message.is_ephemeral() {
            return self.offer_ephemeral(cx, message);
        }
        let fp = fingerprint(&message.id);
        if self.drop_known(cx, &message, fp) {
            return false;
        }
        let next = self.cp.seq.next();
        if message.seq == next {
            self.deliver_in_order(cx, message, fp);
            return true;
        }
        if message.seq < next {
            let order = if message.seq >= self.floor && self.delivered_here(message.seq) {
                Order::SharesSeq
            } else {
                Order::Late
            };
            self.deliver(cx, message, order);
            return true;
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
        if let Some(dropped) = dropped {
            // Not kept, still on the server: fetched once the buffer drains (not at once,
            // which would loop while a hole below waits for confirmation), from its seq
            // even if the checkpoint has got past it by then (another message there).
            active.overflowed = true;
            self.fetch.reread_from(dropped, now);
        }
        false
    }

    /// Whether a message was delivered at `seq` (at or above the floor, below the
    /// checkpoint's seq or at it), as opposed to the seq having been skipped or declared
    /// unreachable.
    fn delivered_here(&self, seq: Seq) -> bool {
        if seq == self.cp.seq {
            return !self.cp.ids.is_empty();
        }
        self.active.as_ref().is_some_and(|a| a.recent.has_seq(seq))
    }

    /// Delivers the message at the next seq, whose id's fingerprint is `fp`.
    fn deliver_in_order(&mut self, cx: &mut Ctx, message: Message, fp: u64) {
        self.deliver(cx, message, Order::InOrder);
        // The checkpoint holds this one id now: remember its fingerprint for the window.
        self.cp_fp = Some(fp);
    }

    fn deliver(&mut self, cx: &mut Ctx, message: Message, order: Order) {
        let sequenced = order != Order::Ephemeral;
        // The checkpoint changes (see `queue.rs`): a checkpoint follows the delivery.
        let mark = if sequenced {
            cx.commands.unmark(&mut self.mark, &self.cp)
        } else {
            None
        };
        if message.seq == self.cp.seq && sequenced {
            // Another id at the checkpoint's seq.
            self.cp_fp = None;
        }
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
            Order::SharesSeq | Order::Late => {
                if message.seq == self.cp.seq {
                    self.cp.ids.push(message.id.clone());
                    // The checkpoint's epoch is the highest at its seq (see `advance_to`).
                    self.cp.epoch = self.cp.epoch.max(Some(message.epoch));
                } else if message.seq >= self.floor {
                    let known = Known::new(message.seq, message.id.clone(), message.epoch);
                    let fp = fingerprint(&known.id);
                    self.remember(cx.config, std::iter::once((known, fp)));
                } else {
                    let fp = fingerprint(&message.id);
                    let id = message.id.clone();
                    self.active_mut().recent.insert_late(id, fp, message.seq);
                }
                if order == Order::Late {
                    self.found_unreachable(message.seq);
                }
            }
            Order::Ephemeral => {}
        }
        cx.commands.push(Command::Deliver(Delivery {
            convo: self.id.clone(),
            message,
            order,
        }));
        if sequenced {
            cx.commands.mark(cx.key, &mut self.mark, &self.id, mark);
        }
    }

    /// Moves the checkpoint to `seq`, remembering the ids delivered at the old one.
    pub(super) fn advance_to(&mut self, config: &Config, seq: Seq) {
        let old = self.cp.seq;
        let ids = std::mem::take(&mut self.cp.ids);
        let cached = std::mem::take(&mut self.cp_fp).filter(|_| ids.len() == 1);
        if old > Seq::ZERO {
            let epoch = self.cp.epoch.unwrap_or_default();
            self.remember(
                config,
                ids.into_iter().map(|id| {
                    let fp = cached.unwrap_or_else(|| fingerprint(&id));
                    (Known::new(old, id, epoch), fp)
                }),
            );
        }
        self.cp.seq = seq;
        if config.dedup_window == 0 {
            self.floor = seq;
        }
    }

    fn remember(&mut self, config: &Config, ids: impl Iterator<Item = (Known, u64)>) {
        if config.dedup_window == 0 {
            return;
        }
        let window = config.dedup_window;
        // While a recheck is pending the window keeps what it must check, up to a bound.
        let cap = window.saturating_mul(RECHECK_WINDOW_FACTOR);
        // ... and from where the next forward fetch re-reads.
        let reread = self.fetch.reread.map(|(r, _)| r);
        let keep_from = match (self.cp.recheck_from, reread) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut floor = self.floor;
        let recent = &mut self.active_mut().recent;
        for (k, fp) in ids {
            // Kept in seq order: a late message below the newest goes in its place.
            recent.insert(k, fp);
        }
        while recent.len() > window {
            let Some(oldest) = recent.oldest() else {
                break;
            };
            if recent.len() <= cap && keep_from.is_some_and(|r| oldest >= r) {
                break;
            }
            recent.pop_oldest();
            floor = floor.max(oldest.next());
        }
        self.floor = floor;
    }

    /// Delivers buffered messages that are now in order, and those that were waiting at a
    /// seq that has just been delivered for another id.
    pub(super) fn release(&mut self, cx: &mut Ctx) {
        let quiet = |a: &super::Active| {
            a.buffer.is_empty() && a.hole.is_empty() && !a.overflowed && a.gap_since.is_none()
        };
        if self.active.as_deref().is_none_or(quiet) {
            // No gap: nothing to release or to settle (the common case, in order).
            return;
        }
        let mut drained = false;
        while let Some(active) = self.active.as_mut() {
            let Some(msgs) = active.buffer.pop_first_up_to(self.cp.seq.next()) else {
                break;
            };
            drained = true;
            *cx.buffered_total -= msgs.len();
            for m in msgs {
                // `offer_now` delivers the next seq in order and a new id at a delivered seq
                // flagged; it cannot buffer again, since the seq is at most the next one.
                self.offer_now(cx, m);
            }
        }
        let seq = self.cp.seq;
        let Some(active) = self.active.as_mut() else {
            return;
        };
        active.hole.retain(|h| h.to > seq);
        for h in active.hole.iter_mut() {
            h.from = h.from.max(seq.next());
        }
        if active.buffer.is_empty() {
            if !active.overflowed {
                active.gap_since = None;
                active.hole.clear();
            } else if drained {
                // The buffer drained: what did not fit is still on the server, fetch it now.
                // (A buffer that held nothing to begin with — every slot taken elsewhere —
                // waits for its sightings instead of asking again at once, in a loop.)
                active.overflowed = false;
                self.fetch.want = true;
            }
        }
    }

    /// The server proved `from..=to` empty: move past it.
    pub(super) fn skip(&mut self, cx: &mut Ctx, from: Seq, to: Seq) {
        let mark = cx.commands.unmark(&mut self.mark, &self.cp);
        self.advance_to(cx.config, to);
        cx.commands.push(Command::Skipped {
            convo: self.id.clone(),
            from,
            to,
        });
        cx.commands.mark(cx.key, &mut self.mark, &self.id, mark);
    }

    /// No page could show `from..=to`: move past it, say so, and keep asking on a slow
    /// schedule.
    pub(super) fn unreachable(&mut self, cx: &mut Ctx, from: Seq, to: Seq) {
        let mark = cx.commands.unmark(&mut self.mark, &self.cp);
        self.advance_to(cx.config, to);
        let next_try = cx.now + cx.config.unreachable_retry;
        self.track(Unreached {
            from,
            to,
            next_try,
            tries: 0,
            at: from,
        });
        cx.commands.push(Command::Unreachable {
            convo: self.id.clone(),
            from,
            to,
        });
        cx.commands.mark(cx.key, &mut self.mark, &self.id, mark);
    }

    /// Keeps asking for a range on a slow schedule.
    fn track(&mut self, range: Unreached) {
        let list = &mut self.active_mut().unreachable;
        list.push(range);
        list.sort_unstable_by_key(|u| u.from);
        while list.len() > MAX_UNREACHABLE {
            // Bounded memory without forgetting a seq: the two ranges closest together
            // become one (a look at it reads the delivered seqs between them again too;
            // the ids it recognises are dropped).
            let i = (0..list.len() - 1)
                .min_by_key(|&i| list[i + 1].from.0 - list[i].to.0)
                .unwrap_or(0);
            let next = list.remove(i + 1);
            let u = &mut list[i];
            u.to = u.to.max(next.to);
            u.next_try = u.next_try.min(next.next_try);
            u.tries = u.tries.min(next.tries);
            u.at = u.from;
        }
        self.sync_unreachable();
    }

    /// The checkpoint carries the ranges still asked for, so that a restart goes on.
    pub(super) fn sync_unreachable(&mut self) {
        let ranges = self
            .active
            .as_ref()
            .map(|a| a.unreachable.iter().map(|u| (u.from, u.to)).collect())
            .unwrap_or_default();
        self.cp.unreachable = ranges;
    }

    /// A message turned up at `seq`: an unreachable range holding it was reachable after
    /// all; what is left of it is still asked for.
    fn found_unreachable(&mut self, seq: Seq) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let mut split = None;
        a.unreachable.retain(|u| {
            if u.from <= seq && seq <= u.to {
                if u.from < seq {
                    split = Some(Unreached {
                        to: Seq(seq.0 - 1),
                        at: u.from,
                        ..*u
                    });
                }
                if seq < u.to {
                    u.from = seq.next();
                    u.at = u.at.max(u.from);
                    return true;
                }
                return false;
            }
            true
        });
        match split {
            // `track` merges past the bound: no seq is forgotten.
            Some(u) => self.track(u),
            None => self.sync_unreachable(),
        }
    }
}
