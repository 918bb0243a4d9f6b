//! What a page of `getMessages` proves, and paging on until the conversation is complete.
//!
//! The server filters `seq > sinceSeq`, orders by `(epoch, seq)` and cuts at `limit`. So:
//!
//! - A **short** page (fewer than `limit`) holds every message above `sinceSeq`: a seq it
//!   lacks held no message when it was read. `gapInfo`, where the server sends it, proves
//!   the same for the seqs it lists.
//! - A **full** page holds every message that sorts before its last one, and nothing about
//!   the rest: a seq it lacks may hold a message of a later epoch (a member sending at an
//!   older epoch pushes newer-epoch messages of lower seqs past the cut, recording 67). The
//!   best view of the next missing seq `x` is a page holding nothing below `x`; when even
//!   that one is full and lacks `x`, no `sinceSeq` page can show `x` now.
//!
//! A missing seq is settled only by a second page, issued at least `hole_grace` after the
//! first sighting, that lacks it too (a concurrent writer may not have committed it yet):
//! **skipped** if both proved it empty, **unreachable** if the best view could not show it.
//! An unreachable range is asked for again on a slow schedule, and whatever turns up there
//! is delivered late. Paging goes on at once after every full page that moved anything,
//! never waiting for a poll.

use super::{
    Convo, Ctx, FetchState, Purpose, Sighting, UNREACHABLE_BACKOFF_CAP, UNREACHABLE_LOOKS,
};
use crate::buffer::Buffer;
use crate::{Anomaly, Gaps, Message, RequestId, Seq, Time};
use smallvec::SmallVec;
use std::time::Duration;

/// Gaps above the checkpoint, each flagged with whether the page proved it empty.
type Ranges = SmallVec<[(Seq, Seq, bool); 2]>;

impl Convo {
    pub(crate) fn on_page(
        &mut self,
        cx: &mut Ctx,
        request: RequestId,
        mut messages: Vec<Message>,
        gaps: Gaps,
    ) {
        let FetchState::InFlight {
            issued,
            since,
            limit,
            purpose,
            ..
        } = self.fetch.state
        else {
            return;
        };
        self.fetch.state = FetchState::Idle;
        self.fetch.trouble = None;
        let len = messages.len();
        let full = len >= usize::from(limit);
        // This page settles the recheck from `since` up, unless the recheck was asked for
        // while it was in flight (the server answered from an earlier state).
        let moved = std::mem::take(&mut self.fetch.recheck_moved);
        if len > usize::from(limit) {
            let anomaly = Anomaly::PageOversized {
                request,
                len,
                limit,
            };
            cx.anomaly(&self.id, anomaly);
        }
        if !full {
            // A short page holds whatever did not fit in the buffer before it was asked
            // for; what does not fit now sets the flag again.
            if let Some(a) = self.active.as_mut() {
                a.overflowed = false;
            }
        }
        // The server cut a full page after its largest (epoch, seq).
        let cut = messages
            .iter()
            .filter(|m| !m.is_ephemeral() && m.seq > since)
            .map(|m| (m.epoch, m.seq))
            .max();
        // The server orders by (epoch, seq); deliver by seq. Stable, so messages sharing a
        // seq keep the server's order.
        messages.sort_by_key(|m| m.seq);
        // What the page holds, kept or not: only seqs it lacks can be missing.
        let mut present: SmallVec<[Seq; 64]> = messages
            .iter()
            .map(|m| m.seq)
            .filter(|s| *s > since)
            .collect();
        present.dedup();
        let before = self.cp.seq;
        let recheck_before = self.cp.recheck_from;
        let answered = self
            .fetch
            .reread
            .filter(|&(r, at)| since < r && issued >= at)
            .map(|(r, _)| r);
        if answered.is_some() {
            // This page reads it again (what it cannot keep sets it anew).
            self.fetch.reread = None;
        }
        // A re-read chains into another from its own cut only within the recheck's reach
        // of the checkpoint: a re-read walk that fell that far behind a fast stream stops,
        // rather than re-reading the whole history behind it.
        let reach = Seq(before.0.saturating_sub(Self::recheck_reach(cx.config)));
        let new_ground = cut.is_some_and(|(_, c)| answered.is_none_or(|_| c >= reach));
        if let (true, Some((_, c)), true) = (full, cut, new_ground) {
            // Another message at the cut seq may sort past the cut: the next forward fetch
            // reads that seq again, even if the checkpoint gets past it meanwhile. Set
            // before the page is delivered, so that the ids from there on stay known.
            self.fetch.reread_from(c, cx.now);
        }
        let mut backwards = 0;
        for m in messages {
            if m.is_ephemeral() {
                let id = m.id.clone();
                cx.anomaly(&self.id, Anomaly::EphemeralInPage { id });
                self.offer_now(cx, m);
                continue;
            }
            if m.seq <= since {
                backwards += 1;
                continue;
            }
            // Buffered stream messages are released once the whole page is in, so that a
            // page's message sharing a seq is not pushed out of the dedup window first.
            self.offer_now(cx, m);
        }
        self.release(cx);
        if backwards > 0 {
            let anomaly = Anomaly::PageWentBackwards {
                request,
                since,
                ignored: backwards,
            };
            cx.anomaly(&self.id, anomaly);
        }
        let cut_seq = cut.map(|(_, s)| s);
        let widest = limit >= cx.config.max_page_limit;
        if self.advance_recheck(since, full, widest, cut_seq, &present, moved) {
            // Messages at one seq filled the page: read it again, wider.
            self.fetch.limit = cx.config.max_page_limit;
        }
        if let Purpose::Retry { at } = purpose {
            let next = shown_from(at, &present);
            self.retried(cx, at, full, next);
        }

        // Forward: what the page says about the gaps above the checkpoint.
        let x = self.cp.seq.next();
        let mut now_gaps = self.gaps_seen(&present, full, cut_seq, &gaps);
        let advanced = self.cp.seq > before;
        let recheck_advanced = self.cp.recheck_from != recheck_before
            && self
                .cp
                .recheck_from
                .is_none_or(|r| recheck_before.is_some_and(|b| r > b));
        // A full page is the best view of `x` only if nothing below `x` took its places.
        let displaced = present.first().is_some_and(|s| *s < x);
        // ... and only at the largest limit: a larger page reaches further past the cut. So a
        // full page that moved nothing is asked again wider, then from the checkpoint itself.
        let widest = limit >= cx.config.max_page_limit;
        let stuck = full && !advanced && !recheck_advanced;
        let mut narrowing = false;
        if stuck && !widest {
            self.fetch.limit = cx.config.max_page_limit;
            narrowing = true;
        } else if stuck && displaced && !self.fetch.narrow {
            self.fetch.narrow = true;
            narrowing = true;
        }
        let best_view = !full || (!displaced && widest);
        if !best_view {
            // Not a view that may settle `x`; it may still report later gaps.
            now_gaps.retain(|(from, _, _)| *from > x);
        }
        self.settle(cx, issued, &present, now_gaps, best_view);
        let progressed = self.cp.seq > before;
        if progressed || !full {
            self.fetch.narrow = false;
            self.fetch.limit = cx.config.page_limit;
        }
        if full && (progressed || recheck_advanced || narrowing) {
            // More may follow: page on at once.
            self.fetch.want = true;
        }
        if self.fetch.recheck {
            if self.cp.recheck_from.is_none_or(|r| r > self.cp.seq) {
                self.fetch.recheck = false;
            } else if !self.gap_open() {
                // Go on with the recheck (while a gap is open its fetches come first, and
                // the recheck follows once it is settled).
                self.fetch.want = true;
            }
        }
        if let Some(a) = self.active.as_mut() {
            if a.overflowed
                && progressed
                && a.hole.first().is_none_or(|h| h.from > self.cp.seq.next())
            {
                // The next message is on the server but did not fit: fetch it now.
                self.fetch.want = true;
            } else if a.buffer.is_empty() && a.hole.is_empty() && !a.overflowed {
                a.gap_since = None;
            }
        }
        if full && !progressed && !recheck_advanced && !narrowing && !present.iter().any(|s| *s > x)
        {
            // A full page with nothing above the checkpoint (repeats, backwards, ephemeral):
            // the server is confused. Ask again after a backoff, never in a loop.
            self.fetch.failures = self.fetch.failures.saturating_add(1);
            let delay = cx.backoff(self.fetch.failures).max(cx.config.gap_wait);
            self.fetch.retry_at = Some(cx.now + delay);
            self.fetch.want = true;
        } else {
            self.fetch.failures = 0;
        }
        let now = cx.now;
        let want = self.fetch.want;
        if let Some(a) = self.active.as_mut() {
            if !want && a.hole.is_empty() && !a.buffer.is_empty() {
                // Still a gap and nothing sighted to settle: look again after `gap_wait`,
                // not at once.
                a.gap_since = Some(now);
            }
        }
        if self.buffered() == 0 {
            self.last_catchup = cx.now;
        }
        if !self.fetch.want {
            // This round of fetching is over; the next one says how urgent it is.
            self.fetch.priority = super::Priority::Routine;
        }
    }

    /// The recheck (what the stream delivered and no page confirmed) moves past what this
    /// page confirmed: everything, after a short page; below its cut seq, after a full one
    /// (a message sharing the cut seq may be past the cut). A page filled by the messages of
    /// the recheck's first seq alone is asked again at the largest limit (returns `true`);
    /// at the largest limit the recheck moves by one seq at least, so that a seq no page
    /// can confirm does not pin it.
    fn advance_recheck(
        &mut self,
        since: Seq,
        full: bool,
        widest: bool,
        cut_seq: Option<Seq>,
        present: &[Seq],
        moved: bool,
    ) -> bool {
        let Some(r) = self.cp.recheck_from else {
            return false;
        };
        if moved || since.next() > r {
            return false;
        }
        // A seq is confirmed where the page holds it below its cut seq (another message at
        // the cut seq may be past it); a seq the page does not show sorts past the cut (a
        // later epoch), and gets its own best view next.
        let shown = shown_from(r, present).min(Seq(cut_seq.map_or(0, |c| c.0.saturating_sub(1))));
        let next = match full {
            false => None,
            true if shown >= r => Some(shown.next()),
            true if !widest => return true,
            true => Some(r.next()),
        };
        self.cp.recheck_from = next.filter(|n| *n <= self.cp.seq);
        false
    }

    /// The gaps above the checkpoint (below the highest seq the page or the buffer holds)
    /// that this page lacks, flagged with whether it proved them empty. A full page says
    /// nothing at or past its cut seq.
    fn gaps_seen(&self, present: &[Seq], full: bool, cut_seq: Option<Seq>, gaps: &Gaps) -> Ranges {
        let Some(active) = self.active.as_ref() else {
            return Ranges::new();
        };
        let mut out = Ranges::new();
        for (from, to) in gaps_above(self.cp.seq, present, &active.buffer) {
            let to = match (full, cut_seq) {
                (false, _) => to,
                (true, Some(c)) if from < c => to.min(Seq(c.0 - 1)),
                (true, _) => continue,
            };
            let absent = !full || (from.0..=to.0).all(|s| gaps.lists(Seq(s)));
            out.push((from, to, absent));
        }
        out
    }

    /// Settles the gap at the checkpoint if a page issued `hole_grace` after its first
    /// sighting lacks it too, then remembers what is still missing.
    fn settle(
        &mut self,
        cx: &mut Ctx,
        issued: Time,
        present: &[Seq],
        now_gaps: Ranges,
        best_view: bool,
    ) {
        let grace = cx.config.hole_grace;
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let earlier = std::mem::take(&mut active.hole);
        loop {
            let x = self.cp.seq.next();
            let Some(e) = earlier.iter().find(|h| h.from <= x && x <= h.to) else {
                break;
            };
            if issued < e.seen + grace {
                break;
            }
            let Some(&(_, n_end, n_absent)) = now_gaps.iter().find(|(a, b, _)| *a <= x && x <= *b)
            else {
                break;
            };
            let Some(first) = self.next_present(present) else {
                break;
            };
            if first <= x {
                break;
            }
            let to = e.to.min(n_end).min(Seq(first.0 - 1));
            if e.absent && n_absent {
                self.skip(cx, x, to);
            } else if !n_absent && best_view {
                self.unreachable(cx, x, to);
            } else {
                // Proved empty only now: that sighting starts its own grace.
                break;
            }
            self.release(cx);
        }
        let now = cx.now;
        let cp = self.cp.seq;
        let mut hole: SmallVec<[Sighting; 2]> = SmallVec::new();
        for (from, to, absent) in now_gaps {
            let from = from.max(cp.next());
            if to < from {
                continue;
            }
            // The parts seen before keep their first sighting (a proof of emptiness that
            // comes only now starts afresh); the rest is first seen now.
            let mut at = from;
            for e in earlier.iter().filter(|e| e.to >= from && e.from <= to) {
                let (lo, hi) = (e.from.max(from), e.to.min(to));
                if at < lo {
                    hole.push(Sighting {
                        from: at,
                        to: Seq(lo.0 - 1),
                        seen: now,
                        absent,
                    });
                }
                let seen = if absent && !e.absent { now } else { e.seen };
                hole.push(Sighting {
                    from: lo,
                    to: hi,
                    seen,
                    absent,
                });
                at = hi.next();
            }
            if at <= to {
                hole.push(Sighting {
                    from: at,
                    to,
                    seen: now,
                    absent,
                });
            }
        }
        if !best_view {
            // A view that could not settle the checkpoint's gap leaves its sighting standing.
            let x = cp.next();
            if let Some(e) = earlier
                .iter()
                .find(|e| e.from <= x && x <= e.to && e.to > cp)
            {
                if !hole.iter().any(|h| h.from <= x && x <= h.to) {
                    hole.insert(
                        0,
                        Sighting {
                            from: e.from.max(x),
                            ..*e
                        },
                    );
                }
            }
        }
        if let Some(active) = self.active.as_mut() {
            active.hole = hole;
        }
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

    /// The unreachable range due for another look, if any: where that look reads next.
    pub(super) fn due_unreachable(&mut self, now: Time, retry: Duration) -> Option<Seq> {
        let a = self.active.as_mut()?;
        let u = a
            .unreachable
            .iter_mut()
            .filter(|u| u.next_try <= now)
            .min_by_key(|u| u.next_try)?;
        // Its answer (or failure) says when to look next; should the range have changed
        // shape by then, the usual retry period.
        u.next_try = now + retry;
        Some(u.at)
    }

    /// A page of a look at an unreachable range, read from `at`, was answered (whatever it
    /// held was delivered, late, as it came). A short page showed everything above `at`:
    /// a look that began at the range's start settles it. A full one showed what sorts
    /// before its cut: the look reads on from there at once, and once it has passed the
    /// range, the next look comes later (doubling, up to a cap).
    fn retried(&mut self, cx: &mut Ctx, at: Seq, full: bool, shown_to: Seq) {
        let base = cx.config.unreachable_retry;
        let (now, soon) = (cx.now, cx.now + cx.config.gap_wait);
        let Some(a) = self.active.as_mut() else {
            return;
        };
        // The range this look was for may have shrunk meanwhile (what turned up there was
        // taken out of it): it is the one holding `at`, or the next one the page reached.
        let reached = shown_to.next();
        let i = a
            .unreachable
            .iter()
            .position(|u| u.from <= at && at <= u.to)
            .or_else(|| {
                a.unreachable
                    .iter()
                    .position(|u| u.from > at && u.from <= reached)
            });
        let Some(i) = i else {
            return;
        };
        let u = &mut a.unreachable[i];
        let at = at.max(u.from);
        // Every seq gets its best view (a page from just below it): read on from the first
        // seq this page did not show.
        let next_at = full.then(|| shown_to.next().max(at.next()));
        match next_at {
            None if at == u.from => {
                a.unreachable.remove(i);
                self.sync_unreachable();
                return;
            }
            Some(n) if n <= u.to => {
                u.at = n;
                u.next_try = soon;
                return;
            }
            _ => {}
        }
        u.at = u.from;
        u.tries = u.tries.saturating_add(1);
        if u.tries >= UNREACHABLE_LOOKS {
            // Looked at long enough (about half an hour): it stays recorded as unreachable
            // (the store has it; a message found there later is still delivered late), but
            // is no longer asked for, so that a busy conversation's holes do not cost
            // fetches for ever.
            a.unreachable.remove(i);
            self.sync_unreachable();
            return;
        }
        let factor = 1u32
            .checked_shl(u.tries.min(16))
            .unwrap_or(u32::MAX)
            .min(UNREACHABLE_BACKOFF_CAP);
        u.next_try = now + base.saturating_mul(factor);
    }
}

/// The last seq of the run of seqs from `from` up that the page holds (`from - 1` if it
/// does not hold `from`): those a page from just below `from` showed.
fn shown_from(from: Seq, present: &[Seq]) -> Seq {
    let mut last = Seq(from.0.saturating_sub(1));
    for s in present.iter().copied().filter(|s| *s >= from) {
        if s != last.next() {
            break;
        }
        last = s;
    }
    last
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
