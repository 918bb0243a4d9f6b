//! The real Catbird server's rate limiters, modelled: see [`RateLimits`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Rate limits as the real Catbird server enforces them, or adjusted ones. Modelled on its
/// `middleware/rate_limit.rs` and `auth.rs` at the recorded commit (`shared/catbird/README.md`
/// §3) and checked against recordings `06_*`.
///
/// A request with a bearer token meets, in this order:
/// 1. **the middleware's quota bucket**, keyed by account and the request's **full URI, query
///    string included**, before the token is even verified. Over it: `429`, an empty body and
///    `retry-after: N` (seconds until a token is there, rounded up, at least 1);
/// 2. after the token is verified, **the burst limiter** of the account, fixed in the real
///    server's code (burst 10, refilled at 100 a second). Over it: `429` with
///    `{"error":"Rate limit exceeded"}` and no `retry-after`;
/// 3. **the extractor's quota bucket**, keyed by account and the request's **path**: every
///    conversation's `getMessages` shares it. Over it: the same JSON `429` as the burst
///    limiter, no `retry-after`.
///
/// Steps 1 and 3 draw from one map of buckets, so a request without a query string (a
/// `sendMessage` POST) draws twice from the same bucket: 100 a minute allows 50 sends, and
/// the call that finds one token left gets the JSON 429 (the third `createConvo` of recording
/// `06_`, quota 5), the next one the empty 429 with `retry-after` (the fourth, `retry-after:
/// 12`). A stream open is a request like any other; its events are not.
///
/// What is not modelled: the real server's per-IP limiter for requests without a bearer token
/// (burst 6, 1 a second); the dev server does not limit those. The quota of a request is
/// looked up by its path's method NSID (the real middleware matches substrings of the whole
/// URI, which only differs for a query that names another method).
///
/// **The account.** The real server keys every bucket by the token's `iss` DID (the
/// middleware reads it unverified). The dev server's tokens name no caller (the secret, or
/// `secret.<nsid>.<nonce>` from [`crate::mint_token`]), so every request is one account:
/// all clients of a dev server share its buckets, as all devices of one user share them on
/// the real server. Like the real middleware, step 1 counts any bearer token, valid or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests a minute per account and endpoint, by method NSID (e.g.
    /// `blue.catbird.mls.sendMessage`). The bucket holds one minute's worth and refills
    /// continuously.
    pub per_minute: BTreeMap<String, u32>,
    /// The quota of a method not in `per_minute` (`getMessages`, `streamConvoEvents`).
    pub default_per_minute: u32,
    /// The burst limiter every authenticated request of an account passes (`None`: off; the
    /// real server's cannot be changed by any setting).
    pub burst: Option<Burst>,
}

/// A token bucket per account, refilled per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burst {
    /// Tokens the bucket holds.
    pub burst: u32,
    /// Tokens added a second.
    pub per_second: u32,
}

impl RateLimits {
    /// The real server's defaults: `sendMessage` 100 a minute, `publishKeyPackage` 20,
    /// `addMembers` and `removeMember` 10, `createConvo` and `reportMember` 5, anything else
    /// (`getMessages`, `streamConvoEvents`) 200; burst limiter 10, refilled at 100 a second.
    pub fn real() -> RateLimits {
        let per_minute = [
            ("sendMessage", 100),
            ("publishKeyPackage", 20),
            ("addMembers", 10),
            ("removeMember", 10),
            ("createConvo", 5),
            ("reportMember", 5),
        ]
        .into_iter()
        // The real middleware matches the method's name anywhere in the URI: the mlsChat
        // method of the same name shares the quota.
        .flat_map(|(m, n)| {
            [
                (format!("blue.catbird.mls.{m}"), n),
                (format!("blue.catbird.mlsChat.{m}"), n),
            ]
        })
        .collect();
        RateLimits {
            per_minute,
            default_per_minute: 200,
            burst: Some(Burst {
                burst: 10,
                per_second: 100,
            }),
        }
    }

    /// The quota a minute of the method at `path` (`/xrpc/<nsid>`).
    pub fn quota(&self, path: &str) -> u32 {
        let nsid = path.strip_prefix("/xrpc/").unwrap_or(path);
        self.per_minute
            .get(nsid)
            .copied()
            .unwrap_or(self.default_per_minute)
    }
}

/// A token bucket with continuous refill, in exact integer arithmetic: the same calls at the
/// same instants give the same answers. It reads no clock; the caller passes `now`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Whole tokens it holds when full.
    capacity: u64,
    /// Tokens added per `period`.
    refill: u64,
    /// Nanoseconds.
    period: u64,
    /// The level in units of 1/`period` token (one token = `period` units).
    level: u128,
    /// When `level` was last brought up to date.
    at: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens, refilled at `refill` tokens per `period`. A zero
    /// capacity, refill or period counts as one (token, nanosecond).
    pub fn new(capacity: u32, refill: u32, period: Duration, now: Instant) -> TokenBucket {
        let period = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX).max(1);
        let capacity = u64::from(capacity.max(1));
        TokenBucket {
            capacity,
            refill: u64::from(refill.max(1)),
            period,
            level: u128::from(capacity) * u128::from(period),
            at: now,
        }
    }

    /// `per_minute` tokens, refilled over a minute (the real server's quota buckets).
    pub fn per_minute(per_minute: u32, now: Instant) -> TokenBucket {
        TokenBucket::new(per_minute, per_minute, Duration::from_secs(60), now)
    }

    fn refill_to(&mut self, now: Instant) {
        // A `now` before the last one (callers racing for the lock) adds nothing.
        if let Some(elapsed) = now.checked_duration_since(self.at) {
            let full = u128::from(self.capacity) * u128::from(self.period);
            let added = elapsed.as_nanos().saturating_mul(u128::from(self.refill));
            self.level = self.level.saturating_add(added).min(full);
            self.at = now;
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill_to(now);
        let token = u128::from(self.period);
        if self.level >= token {
            self.level -= token;
            Ok(())
        } else {
            let missing = token - self.level;
            let nanos = missing.div_ceil(u128::from(self.refill));
            Err(Duration::from_nanos(
                u64::try_from(nanos).unwrap_or(u64::MAX),
            ))
        }
    }

    /// Whether it is full at `now` (then it is the same as a new bucket).
    pub fn is_full(&self, now: Instant) -> bool {
        let mut b = self.clone();
        b.refill_to(now);
        b.level == u128::from(b.capacity) * u128::from(b.period)
    }
}

/// A `retry-after` header's value for a wait: whole seconds rounded up, at least 1 (as the
/// real server computes it).
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_nanos().div_ceil(1_000_000_000).max(1) as u64
}

/// Which limiter refused a request after its token was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The path's quota bucket.
    Quota,
    /// The burst limiter.
    Burst,
}

/// The buckets of the one account (see the module doc).
#[derive(Default)]
pub(crate) struct Limiter {
    /// By full URI or by path: one map, as on the real server.
    quotas: HashMap<String, TokenBucket>,
    burst: Option<TokenBucket>,
}

/// Buckets kept before the full ones (the same as absent ones) are dropped.
const PRUNE_ABOVE: usize = 4096;

impl Limiter {
    fn quota(
        &mut self,
        limits: &RateLimits,
        key: &str,
        path: &str,
        now: Instant,
    ) -> Result<(), Duration> {
        if self.quotas.len() > PRUNE_ABOVE && !self.quotas.contains_key(key) {
            self.quotas.retain(|_, b| !b.is_full(now));
        }
        self.quotas
            .entry(key.to_string())
            .or_insert_with(|| TokenBucket::per_minute(limits.quota(path), now))
            .try_take(now)
    }

    /// Step 1: the middleware's bucket, keyed by `path_and_query`; the wait until its next
    /// token if it is empty.
    pub(crate) fn before_auth(
        &mut self,
        limits: &RateLimits,
        path: &str,
        path_and_query: &str,
        now: Instant,
    ) -> Result<(), Duration> {
        self.quota(limits, path_and_query, path, now)
    }

    /// Steps 2 and 3, once the token is verified: the burst limiter, then the path's bucket.
    pub(crate) fn after_auth(
        &mut self,
        limits: &RateLimits,
        path: &str,
        now: Instant,
    ) -> Result<(), Refusal> {
        if let Some(b) = limits.burst {
            self.burst
                .get_or_insert_with(|| {
                    TokenBucket::new(b.burst, b.per_second, Duration::from_secs(1), now)
                })
                .try_take(now)
                .map_err(|_| Refusal::Burst)?;
        }
        self.quota(limits, path, path, now)
            .map_err(|_| Refusal::Quota)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bucket_gives_its_capacity_at_once_then_refills_continuously() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(200, t0);
        for _ in 0..200 {
            assert_eq!(b.try_take(t0), Ok(()));
        }
        // One token every 300 ms.
        assert_eq!(b.try_take(t0), Err(300 * MS));
        assert_eq!(b.try_take(t0 + 100 * MS), Err(200 * MS));
        assert_eq!(b.try_take(t0 + 300 * MS), Ok(()));
        assert_eq!(b.try_take(t0 + 300 * MS), Err(300 * MS));
        // A minute later it is full again, and no fuller.
        let t1 = t0 + Duration::from_secs(3600);
        assert!(b.is_full(t1));
        for _ in 0..200 {
            assert_eq!(b.try_take(t1), Ok(()));
        }
        assert!(b.try_take(t1).is_err());
    }

    #[test]
    fn a_refused_take_costs_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, 100, Duration::from_secs(1), t0);
        assert_eq!(b.try_take(t0), Ok(()));
        for n in 0..9 {
            assert_eq!(b.try_take(t0 + n * MS), Err((10 - n) * MS));
        }
        assert_eq!(b.try_take(t0 + 10 * MS), Ok(()));
    }

    #[test]
    fn the_burst_limiter_takes_ten_then_one_per_ten_milliseconds() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 100, Duration::from_secs(1), t0);
        for _ in 0..10 {
            assert_eq!(b.try_take(t0), Ok(()));
        }
        assert_eq!(b.try_take(t0), Err(10 * MS));
        assert_eq!(b.try_take(t0 + 9 * MS), Err(MS));
        assert_eq!(b.try_take(t0 + 10 * MS), Ok(()));
        assert!(b.try_take(t0 + 15 * MS).is_err());
        assert_eq!(b.try_take(t0 + 20 * MS), Ok(()));
    }

    #[test]
    fn an_earlier_now_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut b = TokenBucket::new(1, 1, Duration::from_secs(1), t0);
        assert_eq!(b.try_take(t0), Ok(()));
        assert_eq!(
            b.try_take(t0 - Duration::from_millis(500)),
            Err(Duration::from_secs(1))
        );
        assert_eq!(b.try_take(t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(300 * MS), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        // createConvo's 5 a minute, just emptied: the `retry-after: 12` of recording 06.
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(5, t0);
        for _ in 0..5 {
            b.try_take(t0).unwrap();
        }
        assert_eq!(retry_after_secs(b.try_take(t0 + 8 * MS).unwrap_err()), 12);
    }

    #[test]
    fn quotas_by_method_as_the_real_server() {
        let l = RateLimits::real();
        assert_eq!(l.quota("/xrpc/blue.catbird.mls.getMessages"), 200);
        assert_eq!(l.quota("/xrpc/blue.catbird.mls.streamConvoEvents"), 200);
        assert_eq!(l.quota("/xrpc/blue.catbird.mls.sendMessage"), 100);
        assert_eq!(l.quota("/xrpc/blue.catbird.mls.createConvo"), 5);
        assert_eq!(l.quota("/xrpc/blue.catbird.mlsChat.sendMessage"), 100);
        assert_eq!(l.quota("/xrpc/blue.catbird.mlsChat.getMessages"), 200);
    }

    #[test]
    fn the_uri_and_the_path_bucket_are_one_when_there_is_no_query() {
        // Recording 06: createConvo (5 a minute), DAVE, rapid fire.
        let l = RateLimits {
            burst: None,
            ..RateLimits::real()
        };
        let path = "/xrpc/blue.catbird.mls.createConvo";
        let t0 = Instant::now();
        let mut lim = Limiter::default();
        let mut call = || {
            lim.before_auth(&l, path, path, t0)
                .map_err(|_| Refusal::Quota)
                .and_then(|()| lim.after_auth(&l, path, t0))
        };
        assert_eq!(call(), Ok(()));
        assert_eq!(call(), Ok(()));
        assert_eq!(call(), Err(Refusal::Quota), "the extractor's draw");
        let wait = lim.before_auth(&l, path, path, t0).unwrap_err();
        assert_eq!(retry_after_secs(wait), 12, "the middleware's draw");
    }

    #[test]
    fn every_query_has_its_own_middleware_bucket_but_shares_the_paths() {
        let l = RateLimits {
            default_per_minute: 3,
            burst: None,
            ..RateLimits::real()
        };
        let path = "/xrpc/blue.catbird.mls.getMessages";
        let t0 = Instant::now();
        let mut lim = Limiter::default();
        for since in 0..3 {
            let uri = format!("{path}?convoId=c{since}&sinceSeq={since}");
            assert_eq!(lim.before_auth(&l, path, &uri, t0), Ok(()));
            assert_eq!(lim.after_auth(&l, path, t0), Ok(()));
        }
        let uri = format!("{path}?convoId=c9");
        assert_eq!(lim.before_auth(&l, path, &uri, t0), Ok(()));
        assert_eq!(lim.after_auth(&l, path, t0), Err(Refusal::Quota));
    }

    #[test]
    fn the_burst_limiter_comes_before_the_paths_bucket() {
        let l = RateLimits::real();
        let path = "/xrpc/blue.catbird.mls.getMessages";
        let t0 = Instant::now();
        let mut lim = Limiter::default();
        for _ in 0..10 {
            assert_eq!(lim.after_auth(&l, path, t0), Ok(()));
        }
        assert_eq!(lim.after_auth(&l, path, t0), Err(Refusal::Burst));
        assert_eq!(lim.after_auth(&l, path, t0 + 10 * MS), Ok(()));
    }

    #[test]
    fn full_buckets_are_pruned() {
        let l = RateLimits::real();
        let t0 = Instant::now();
        let mut lim = Limiter::default();
        for n in 0..=PRUNE_ABOVE {
            let uri = format!("/xrpc/blue.catbird.mls.getMessages?sinceSeq={n}");
            lim.before_auth(&l, "/xrpc/blue.catbird.mls.getMessages", &uri, t0)
                .unwrap();
        }
        assert_eq!(lim.quotas.len(), PRUNE_ABOVE + 1);
        let later = t0 + Duration::from_secs(61);
        lim.before_auth(&l, "/xrpc/blue.catbird.mls.getMessages", "/new", later)
            .unwrap();
        assert_eq!(lim.quotas.len(), 1);
    }
}
