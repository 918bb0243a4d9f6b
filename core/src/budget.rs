//! The request budget every conversation shares: arithmetic on `now`, no clock.
//!
//! The real server limits each account, not each conversation: every conversation's
//! `getMessages` draws from one bucket of 200 a minute (the stream opens from another), and
//! every authenticated request passes a burst limiter of 10 refilled at 100 a second. A
//! client that lets each conversation back off on its own meets a storm of 429s at a cold
//! start with a few hundred conversations. So the machine keeps the budget: a fetch or a
//! stream open starts only when both of its buckets have a token, and a 429 pauses that kind
//! of request for every conversation until the server's time is up, after which it resumes
//! with at most a quarter of the bucket (a gentle restart, not a burst).
//!
//! A few tokens of each bucket (`Budget::urgent_reserve`) are left to urgent requests: a gap
//! in the conversation in view, a conversation brought into view, the shared connection.
//! A cold start spends the rest; the reserve refills first, so those never wait behind it.

use crate::Time;
use std::time::Duration;

/// How many requests of one kind the machine makes, at most (see [`Budget`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests a minute, on average.
    pub per_minute: u32,
}

/// The request budget shared by all conversations of one account. `Config::budget`.
///
/// The defaults fit the real server's quotas with headroom: 180 fetches and 180 stream opens
/// a minute (its quota is 200 each), 90 sends a minute (its `sendMessage` quota is 100), and bursts of 8 refilled at 80 a second (its fixed
/// limiter allows 10 at 100 a second). `None` for a rate means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// `getMessages` calls.
    pub fetches: Option<Rate>,
    /// Stream opens (each SSE stream, each shared-stream connection).
    pub stream_opens: Option<Rate>,
    /// `sendMessage` calls (the real server allows 100 a minute; the default is 90).
    pub sends: Option<Rate>,
    /// Requests of any kind at once at most (0: no burst limit)…
    pub burst: u32,
    /// …refilled at this many a second.
    pub burst_per_second: u32,
    /// How long a 429 without `Retry-After` pauses its kind of request.
    pub pause_without_retry_after: Duration,
    /// Tokens of each kind's bucket that only urgent requests may take: a gap in the
    /// conversation in view, a conversation brought into view, the shared stream's
    /// connection. A cold start spends the rest; these go at once all the same.
    pub urgent_reserve: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            fetches: Some(Rate { per_minute: 180 }),
            stream_opens: Some(Rate { per_minute: 180 }),
            sends: Some(Rate { per_minute: 90 }),
            burst: 8,
            burst_per_second: 80,
            pause_without_retry_after: Duration::from_secs(2),
            urgent_reserve: 8,
        }
    }
}

impl Budget {
    /// No limit at all (tests, a server without quotas).
    pub fn unlimited() -> Budget {
        Budget {
            fetches: None,
            stream_opens: None,
            sends: None,
            burst: 0,
            burst_per_second: 0,
            pause_without_retry_after: Duration::from_secs(2),
            urgent_reserve: 0,
        }
    }
}

/// A token bucket: `capacity` tokens, one more every `every_ms / per` milliseconds. Tokens
/// are kept in thousandths so that the arithmetic is exact in integers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket {
    /// Thousandths of a token.
    milli: u64,
    capacity_milli: u64,
    /// Thousandths of a token gained per millisecond, times `per_ms_den`.
    gain: u64,
    /// Milliseconds the gain is spread over.
    per_ms_den: u64,
    last: Time,
    /// No token before this (a 429 paused it).
    paused_until: Option<Time>,
}

impl Bucket {
    /// `capacity` tokens, refilled at `count` per `period`, full at first.
    pub(crate) fn new(capacity: u32, count: u32, period: Duration) -> Bucket {
        let capacity_milli = u64::from(capacity.max(1)) * 1000;
        Bucket {
            milli: capacity_milli,
            capacity_milli,
            gain: u64::from(count.max(1)) * 1000,
            per_ms_den: (period.as_millis() as u64).max(1),
            last: Time::ZERO,
            paused_until: None,
        }
    }

    fn refill(&mut self, now: Time) {
        let elapsed = now.as_millis().saturating_sub(self.last.as_millis());
        if elapsed > 0 {
            let gained = elapsed.saturating_mul(self.gain) / self.per_ms_den;
            // Only whole milliseconds of gain are counted, and `last` moves by the time
            // they took, so nothing is lost to rounding.
            if gained > 0 {
                self.milli = (self.milli + gained).min(self.capacity_milli);
                self.last = now;
            }
        }
    }

    /// When a token is (or was) available, at `now` or later.
    pub(crate) fn ready_at(&mut self, now: Time) -> Time {
        self.ready_keeping(now, 0)
    }

    /// When a token is available with `keep` thousandths of a token left over.
    fn ready_keeping(&mut self, now: Time, keep: u64) -> Time {
        if let Some(until) = self.paused_until {
            if now < until {
                return until;
            }
            self.paused_until = None;
            // Resume gently: with at most a quarter of the bucket, not a minute's burst (and
            // not from empty either: one 429 from a failing server would waste the
            // allowance the account still has).
            self.milli = self.milli.min(self.capacity_milli / 4);
            self.last = until;
        }
        self.refill(now);
        // A reserve larger than the bucket leaves one token for anyone.
        let need = (1000 + keep).min(self.capacity_milli);
        if self.milli >= need {
            return now;
        }
        let missing = need - self.milli;
        let ms = (missing * self.per_ms_den).div_ceil(self.gain);
        now + Duration::from_millis(ms)
    }

    /// Takes a token if one is there at `now`.
    #[cfg(test)]
    fn take(&mut self, now: Time) -> bool {
        self.take_keeping(now, 0)
    }

    /// Takes a token if one is there at `now` with `keep` thousandths left over.
    fn take_keeping(&mut self, now: Time, keep: u64) -> bool {
        if self.ready_keeping(now, keep) > now {
            return false;
        }
        self.milli -= 1000;
        true
    }

    /// A token was spent elsewhere (the burst bucket, shared by every kind).
    pub(crate) fn spend(&mut self, now: Time) {
        self.refill(now);
        self.milli = self.milli.saturating_sub(1000);
    }

    /// The server said 429: nothing before `until`.
    pub(crate) fn pause(&mut self, until: Time) {
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
    }
}

/// The buckets of a machine: one per kind, and the burst one they all pass.
#[derive(Debug)]
pub(crate) struct Buckets {
    pub(crate) fetches: Option<Bucket>,
    pub(crate) streams: Option<Bucket>,
    pub(crate) sends: Option<Bucket>,
    pub(crate) burst: Option<Bucket>,
    /// Thousandths of a token of each kind's bucket kept for urgent requests.
    reserve: u64,
}

/// A kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Fetch,
    StreamOpen,
    Send,
}

impl Buckets {
    pub(crate) fn new(budget: &Budget) -> Buckets {
        let minute = |r: Option<Rate>| {
            r.map(|r| Bucket::new(r.per_minute, r.per_minute, Duration::from_secs(60)))
        };
        Buckets {
            fetches: minute(budget.fetches),
            streams: minute(budget.stream_opens),
            sends: minute(budget.sends),
            burst: (budget.burst > 0).then(|| {
                Bucket::new(
                    budget.burst,
                    budget.burst_per_second.max(1),
                    Duration::from_secs(1),
                )
            }),
            reserve: u64::from(budget.urgent_reserve) * 1000,
        }
    }

    fn kind(&mut self, kind: Kind) -> &mut Option<Bucket> {
        match kind {
            Kind::Fetch => &mut self.fetches,
            Kind::StreamOpen => &mut self.streams,
            Kind::Send => &mut self.sends,
        }
    }

    /// What an urgent request may take of the reserve.
    fn keep(&self, urgent: bool) -> u64 {
        if urgent {
            0
        } else {
            self.reserve
        }
    }

    /// When a request of `kind` may start (now, or later); an urgent one may use the
    /// reserve (`Budget::urgent_reserve`).
    pub(crate) fn ready_at(&mut self, kind: Kind, now: Time, urgent: bool) -> Time {
        let keep = self.keep(urgent);
        let own = self
            .kind(kind)
            .as_mut()
            .map_or(now, |b| b.ready_keeping(now, keep));
        let burst = self.burst.as_mut().map_or(now, |b| b.ready_at(now));
        own.max(burst)
    }

    /// Takes a token for a request of `kind` if both buckets have one (see `ready_at`).
    pub(crate) fn take(&mut self, kind: Kind, now: Time, urgent: bool) -> bool {
        if self.ready_at(kind, now, urgent) > now {
            return false;
        }
        let keep = self.keep(urgent);
        if let Some(b) = self.kind(kind).as_mut() {
            b.take_keeping(now, keep);
        }
        if let Some(b) = self.burst.as_mut() {
            b.spend(now);
        }
        true
    }

    /// A 429 for a request of `kind`: pause every request of that kind until `until`.
    pub(crate) fn pause(&mut self, kind: Kind, until: Time) {
        match self.kind(kind) {
            Some(b) => b.pause(until),
            None => {
                // Unlimited, but the server disagrees: honour its pause all the same.
                let mut b = Bucket::new(1, 1, Duration::from_secs(1));
                b.pause(until);
                *self.kind(kind) = Some(b);
            }
        }
    }
}

/// The healthy poll for `conversations` conversations: `base`, stretched so that their
/// routine polls take at most half of the fetch budget (the other half is for gaps, the
/// conversation in view and catch-ups). 500 conversations polling every 120 s would want 250
/// fetches a minute from a budget of 180.
pub(crate) fn healthy_poll(
    base: Option<Duration>,
    conversations: usize,
    budget: &Budget,
) -> Option<Duration> {
    let base = base?;
    let Some(rate) = budget.fetches else {
        return Some(base);
    };
    let half_a_minute_each =
        120_000u64.saturating_mul(conversations as u64) / u64::from(rate.per_minute.max(1));
    Some(base.max(Duration::from_millis(half_a_minute_each)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: fn(u64) -> Time = Time::from_millis;

    #[test]
    fn a_bucket_gives_its_burst_then_refills_at_its_rate() {
        let mut b = Bucket::new(3, 60, Duration::from_secs(60)); // 1 a second
        assert!(b.take(T(0)) && b.take(T(0)) && b.take(T(0)));
        assert!(!b.take(T(0)));
        assert_eq!(b.ready_at(T(0)), T(1000));
        assert!(!b.take(T(999)));
        assert!(b.take(T(1000)));
        assert!(!b.take(T(1500)));
    }

    #[test]
    fn a_pause_holds_every_token_then_resumes_gently() {
        let mut b = Bucket::new(5, 300, Duration::from_secs(60)); // 5 a second
        b.pause(T(2000));
        assert_eq!(b.ready_at(T(0)), T(2000));
        assert!(!b.take(T(1999)));
        // At most a quarter of the bucket at 2000 (one token of five), not a burst of 5.
        assert!(b.take(T(2000)));
        assert!(!b.take(T(2000)));
        assert!(b.take(T(2200)));
        assert!(!b.take(T(2200)));
    }

    #[test]
    fn the_reserve_is_left_to_urgent_requests() {
        let budget = Budget {
            fetches: Some(Rate { per_minute: 60 }), // 1 a second
            urgent_reserve: 2,
            ..Budget::unlimited()
        };
        let mut b = Buckets::new(&budget);
        // 60 tokens: 58 for anyone, the last 2 for urgent requests only.
        for _ in 0..58 {
            assert!(b.take(Kind::Fetch, T(0), false));
        }
        assert!(!b.take(Kind::Fetch, T(0), false));
        assert_eq!(b.ready_at(Kind::Fetch, T(0), false), T(1000));
        assert!(b.take(Kind::Fetch, T(0), true) && b.take(Kind::Fetch, T(0), true));
        assert!(!b.take(Kind::Fetch, T(0), true));
        // The reserve refills first: routine requests wait until it is whole again.
        assert_eq!(b.ready_at(Kind::Fetch, T(0), false), T(3000));
        assert_eq!(b.ready_at(Kind::Fetch, T(0), true), T(1000));
    }

    #[test]
    fn every_kind_passes_the_burst_bucket() {
        let budget = Budget {
            fetches: Some(Rate { per_minute: 600 }),
            stream_opens: Some(Rate { per_minute: 600 }),
            sends: None,
            burst: 2,
            burst_per_second: 10,
            pause_without_retry_after: Duration::from_secs(2),
            urgent_reserve: 0,
        };
        let mut b = Buckets::new(&budget);
        assert!(b.take(Kind::Fetch, T(0), false));
        assert!(b.take(Kind::StreamOpen, T(0), false));
        assert!(!b.take(Kind::Fetch, T(0), false), "the burst of 2 is spent");
        assert_eq!(b.ready_at(Kind::Fetch, T(0), false), T(100));
    }
}
