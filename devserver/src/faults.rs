//! Fault injection: profiles, knobs, and the seeded plan that decides every fault.
//!
//! Each decision is a pure function of the seed and of *what* it is about (the n-th message
//! of a conversation, the m-th event of the k-th stream, the n-th fetch), never of timing or
//! of a shared RNG's state, so the same seed gives the same fault schedule however the
//! requests interleave.

use crate::limits::RateLimits;
use std::time::Duration;

/// Fault rates, per mille, and delays; and the rate limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// A stream event is not sent (on an mlsChat socket: after it was numbered, so the
    /// frame seqs show a gap).
    pub drop: u16,
    /// A stream event is sent twice.
    pub duplicate: u16,
    /// A stream event is held back and sent after the next one.
    pub reorder: u16,
    /// A stream event is not sent and an `infoEvent` `slow-consumer` is sent instead. On an
    /// mlsChat socket it is lost silently and unnumbered, as the real server loses events
    /// for a lagging subscriber: no notice, no gap in the frame seqs.
    pub slow_consumer: u16,
    /// A stream is cut after a random time up to `cut_after_max` (an mlsChat socket: its
    /// TCP connection is dropped, without a close frame).
    pub cut: u16,
    /// Longest time before a cut.
    pub cut_after_max: Duration,
    /// A `getMessages` call gets 500.
    pub fetch_error: u16,
    /// A `getMessages` call gets 429 with `Retry-After: 1`.
    pub fetch_rate_limit: u16,
    /// A `getMessages` call is answered after `slow_delay`.
    pub fetch_slow: u16,
    /// How slow.
    pub slow_delay: Duration,
    /// A `getMessages` call is not answered for `hang` (the client's timeout fires).
    pub fetch_hang: u16,
    /// How long.
    pub hang: Duration,
    /// A seq is skipped for good (a hole).
    pub hole: u16,
    /// A message commits late: visible up to `late_max` after the next one.
    pub late: u16,
    /// Longest late-commit delay.
    pub late_max: Duration,
    /// The next message gets the same seq (the real server's `MAX(seq)+1` race).
    pub shared_seq: u16,
    /// A message expires after up to `expire_max`.
    pub expire: u16,
    /// Longest life of an expiring message.
    pub expire_max: Duration,
    /// A generated message is ephemeral (`seq = 0`, stream only).
    pub ephemeral: u16,
    /// A generated message is sent one epoch behind.
    pub epoch_back: u16,
    /// A generated message is an MLS commit (replayed on resume; starts a new epoch).
    pub commit: u16,
    /// A `sendMessage` request (either API) gets 500 with an empty body and is **not**
    /// applied.
    pub send_error: u16,
    /// A `sendMessage` request's connection is closed before any answer and the request is
    /// **not** applied.
    pub send_reset: u16,
    /// A `sendMessage` request is **applied** (stored, streamed, recorded in
    /// [`crate::DevServer::sends`]) and then answered 500 with an empty body: the answer is
    /// lost. A resend with the same `msgId` gets the first answer.
    pub send_applied_error: u16,
    /// A `sendMessage` request is **applied** and then its connection is closed before any
    /// answer (the answer is lost in the network). A resend with the same `msgId` gets the
    /// first answer.
    pub send_applied_reset: u16,
    /// A `sendMessage` request is applied at once and answered after `send_delay` (its
    /// message may reach streams and pages before the sender has the answer).
    pub send_slow: u16,
    /// How slow.
    pub send_delay: Duration,
    /// The real server's rate limiters (`None`: unlimited). Their 429s are counted as
    /// `rate_limited` (a per-minute quota) and `burst_limited` (the burst limiter).
    pub rate_limits: Option<RateLimits>,
}

/// A named set of faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// No faults.
    Calm,
    /// A phone on a bad network: drops, reorders, cuts, failing and slow fetches, sends
    /// failing or losing their answer, and the real server's quirks now and then.
    FlakyMobile,
    /// Everything, often (send faults included); `getMessages` and `sendMessage` tokens are
    /// accepted once only; the real server's rate limits.
    Hostile,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Profile, String> {
        match s {
            "calm" => Ok(Profile::Calm),
            "flaky-mobile" => Ok(Profile::FlakyMobile),
            "hostile" => Ok(Profile::Hostile),
            other => Err(format!(
                "unknown profile {other:?}: expected calm, flaky-mobile or hostile"
            )),
        }
    }
}

impl Profile {
    /// The profile's faults.
    pub fn faults(self) -> Faults {
        let ms = Duration::from_millis;
        match self {
            Profile::Calm => Faults::default(),
            Profile::FlakyMobile => Faults {
                drop: 30,
                duplicate: 20,
                reorder: 30,
                slow_consumer: 5,
                cut: 300,
                cut_after_max: ms(8_000),
                fetch_error: 50,
                fetch_rate_limit: 20,
                fetch_slow: 100,
                slow_delay: ms(400),
                fetch_hang: 5,
                hang: ms(20_000),
                hole: 5,
                late: 10,
                late_max: ms(800),
                shared_seq: 5,
                expire: 2,
                expire_max: ms(3_000),
                ephemeral: 10,
                epoch_back: 5,
                commit: 20,
                send_error: 20,
                send_reset: 10,
                send_applied_error: 10,
                send_applied_reset: 20,
                send_slow: 50,
                send_delay: ms(1_000),
                rate_limits: None,
            },
            Profile::Hostile => Faults {
                drop: 120,
                duplicate: 80,
                reorder: 100,
                slow_consumer: 20,
                cut: 600,
                cut_after_max: ms(4_000),
                fetch_error: 150,
                fetch_rate_limit: 60,
                fetch_slow: 150,
                slow_delay: ms(600),
                fetch_hang: 20,
                hang: ms(20_000),
                hole: 20,
                late: 30,
                late_max: ms(1_000),
                shared_seq: 20,
                expire: 10,
                expire_max: ms(3_000),
                ephemeral: 20,
                epoch_back: 20,
                commit: 40,
                send_error: 60,
                send_reset: 40,
                send_applied_error: 40,
                send_applied_reset: 60,
                send_slow: 100,
                send_delay: ms(2_000),
                rate_limits: Some(RateLimits::real()),
            },
        }
    }
}

/// What a decision is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub(crate) enum Topic {
    Hole = 1,
    Late,
    LateDelay,
    Shared,
    Expire,
    ExpireDelay,
    Ephemeral,
    EpochBack,
    Commit,
    Drop,
    Duplicate,
    Reorder,
    SlowConsumer,
    Cut,
    CutAfter,
    FetchError,
    FetchRateLimit,
    FetchSlow,
    FetchHang,
    Payload,
    Id,
    SendError,
    SendReset,
    SendAppliedError,
    SendAppliedReset,
    SendSlow,
}

/// The seeded plan.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    seed: u64,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Plan {
    /// The plan of a seed.
    pub fn new(seed: u64) -> Plan {
        Plan { seed }
    }

    /// A number for (`topic`, `a`, `b`), the same for the same seed.
    pub(crate) fn value(&self, topic: Topic, a: u64, b: u64) -> u64 {
        mix(self.seed ^ mix(topic as u64 ^ mix(a ^ mix(b))))
    }

    /// Whether a fault of `per_mille` happens for (`topic`, `a`, `b`).
    pub(crate) fn roll(&self, per_mille: u16, topic: Topic, a: u64, b: u64) -> bool {
        per_mille > 0 && self.value(topic, a, b) % 1000 < u64::from(per_mille)
    }

    /// A duration between `max / 2` and `max` for (`topic`, `a`, `b`).
    pub(crate) fn delay(&self, max: Duration, topic: Topic, a: u64, b: u64) -> Duration {
        let ms = (max.as_millis() as u64).max(2);
        Duration::from_millis(ms / 2 + self.value(topic, a, b) % (ms - ms / 2 + 1))
    }
}

/// Why [`Faults::set`] refused an assignment.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KnobError {
    /// Not `knob=value`.
    #[error("{0:?} is not KNOB=VALUE (e.g. send_error=50 or send_delay=2s)")]
    NotAnAssignment(String),
    /// No knob of that name.
    #[error("no fault knob {0:?}; the knobs are: {knobs}", knobs = Faults::KNOBS.join(", "))]
    UnknownKnob(String),
    /// A value the knob cannot take.
    #[error("{knob}={value:?}: {why}")]
    BadValue {
        /// The knob.
        knob: String,
        /// The value given.
        value: String,
        /// What it should be.
        why: &'static str,
    },
}

impl Faults {
    /// Every knob [`Faults::set`] knows (rates per mille, then durations).
    pub const KNOBS: &'static [&'static str] = &[
        "drop",
        "duplicate",
        "reorder",
        "slow_consumer",
        "cut",
        "fetch_error",
        "fetch_rate_limit",
        "fetch_slow",
        "fetch_hang",
        "hole",
        "late",
        "shared_seq",
        "expire",
        "ephemeral",
        "epoch_back",
        "commit",
        "send_error",
        "send_reset",
        "send_applied_error",
        "send_applied_reset",
        "send_slow",
        "cut_after_max",
        "slow_delay",
        "hang",
        "late_max",
        "expire_max",
        "send_delay",
    ];

    /// Sets one knob from `knob=value` (`-` and `_` alike in the name): a rate per mille
    /// (`0` to `1000`) or a duration (`humantime`: `800ms`, `2s`), e.g. for a command line's
    /// `--fault send_applied_reset=100`. The rate limits are not a knob.
    pub fn set(&mut self, assignment: &str) -> Result<(), KnobError> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| KnobError::NotAnAssignment(assignment.to_string()))?;
        let knob = name.trim().replace('-', "_");
        let value = value.trim();
        let bad = |why| KnobError::BadValue {
            knob: knob.clone(),
            value: value.to_string(),
            why,
        };
        let rate = || -> Result<u16, KnobError> {
            value
                .parse::<u16>()
                .ok()
                .filter(|r| *r <= 1000)
                .ok_or_else(|| bad("a rate per mille, 0 to 1000"))
        };
        let duration = || -> Result<Duration, KnobError> {
            humantime::parse_duration(value).map_err(|_| bad("a duration such as 800ms or 2s"))
        };
        match knob.as_str() {
            "drop" => self.drop = rate()?,
            "duplicate" => self.duplicate = rate()?,
            "reorder" => self.reorder = rate()?,
            "slow_consumer" => self.slow_consumer = rate()?,
            "cut" => self.cut = rate()?,
            "fetch_error" => self.fetch_error = rate()?,
            "fetch_rate_limit" => self.fetch_rate_limit = rate()?,
            "fetch_slow" => self.fetch_slow = rate()?,
            "fetch_hang" => self.fetch_hang = rate()?,
            "hole" => self.hole = rate()?,
            "late" => self.late = rate()?,
            "shared_seq" => self.shared_seq = rate()?,
            "expire" => self.expire = rate()?,
            "ephemeral" => self.ephemeral = rate()?,
            "epoch_back" => self.epoch_back = rate()?,
            "commit" => self.commit = rate()?,
            "send_error" => self.send_error = rate()?,
            "send_reset" => self.send_reset = rate()?,
            "send_applied_error" => self.send_applied_error = rate()?,
            "send_applied_reset" => self.send_applied_reset = rate()?,
            "send_slow" => self.send_slow = rate()?,
            "cut_after_max" => self.cut_after_max = duration()?,
            "slow_delay" => self.slow_delay = duration()?,
            "hang" => self.hang = duration()?,
            "late_max" => self.late_max = duration()?,
            "expire_max" => self.expire_max = duration()?,
            "send_delay" => self.send_delay = duration()?,
            _ => return Err(KnobError::UnknownKnob(name.trim().to_string())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Faults, KnobError, Profile};
    use std::time::Duration;

    #[test]
    fn knobs_are_set_by_name() {
        let mut f = Profile::Calm.faults();
        f.set("send_applied_reset=100").unwrap();
        f.set("send-delay=2s").unwrap();
        f.set(" send_error = 1000 ").unwrap();
        assert_eq!(f.send_applied_reset, 100);
        assert_eq!(f.send_delay, Duration::from_secs(2));
        assert_eq!(f.send_error, 1000);
        // Every listed knob is settable.
        for knob in Faults::KNOBS {
            let value = if knob.ends_with("_max") || knob.ends_with("delay") || *knob == "hang" {
                "5ms"
            } else {
                "1"
            };
            f.set(&format!("{knob}={value}")).unwrap();
        }
    }

    #[test]
    fn bad_assignments_are_typed_errors() {
        let mut f = Faults::default();
        assert!(matches!(
            f.set("send_error"),
            Err(KnobError::NotAnAssignment(_))
        ));
        assert!(matches!(f.set("nope=1"), Err(KnobError::UnknownKnob(_))));
        assert!(matches!(
            f.set("send_error=1001"),
            Err(KnobError::BadValue { .. })
        ));
        assert!(matches!(
            f.set("send_error=-1"),
            Err(KnobError::BadValue { .. })
        ));
        assert!(matches!(
            f.set("send_delay=soon"),
            Err(KnobError::BadValue { .. })
        ));
        assert_eq!(f, Faults::default(), "nothing set by a refused assignment");
        let said = f.set("nope=1").unwrap_err().to_string();
        assert!(said.contains("send_applied_reset"), "{said}");
    }
}
