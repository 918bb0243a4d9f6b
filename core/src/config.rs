//! The machine's tunables, each with the default `DESIGN.md` names.

use crate::Budget;
use std::time::Duration;

/// Tunables of a [`SyncMachine`](crate::SyncMachine). `Config::default()` gives the
/// defaults of `DESIGN.md`.
/// Set fields with struct update syntax: `Config { gap_wait, ..Config::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How long a gap may stay open before the machine fetches (500 ms, as Telegram
    /// clients wait). Arrival of the missing messages before then cancels the fetch.
    pub gap_wait: Duration,
    /// How long after a short page first showed a seq missing a second fetch must be made
    /// before the seq is skipped as a hole (2 s): a concurrent writer may not have
    /// committed it yet.
    pub hole_grace: Duration,
    /// First step of the exponential backoff for stream reconnects and failed fetches
    /// (500 ms). Delays are drawn with full jitter from `0..=min(cap, base·2ⁿ)`.
    pub backoff_base: Duration,
    /// Largest backoff delay (30 s).
    pub backoff_cap: Duration,
    /// How long a stream must stay open before its backoff resets (60 s).
    pub healthy_after: Duration,
    /// A stream silent for longer than this is closed and reopened (45 s; the real server
    /// sends keepalives every 15 s).
    pub idle_timeout: Duration,
    /// The period of the safety-net catch-up while a conversation has no healthy stream
    /// (30 s).
    pub poll_interval: Duration,
    /// The period of the catch-up while the stream *is* healthy (120 s). `DESIGN.md` turns
    /// the periodic catch-up off while the stream is healthy; this slower one stays, because
    /// a stream that silently loses the last message of a quiet conversation shows no gap
    /// and would otherwise never recover it. `None` turns it off. With many conversations
    /// the machine stretches it so that these polls take at most half of `budget.fetches`
    /// (`SyncMachine::config` shows the period in force).
    pub healthy_poll_interval: Option<Duration>,
    /// A catch-up this long after the last stream message, once, when the stream has gone
    /// quiet (15 s, the real server's keepalive period). A message lost at the end of a
    /// burst is revealed by no later message; this finds it in seconds rather than at the
    /// next `healthy_poll_interval`. At most one fetch per burst. `None` turns it off.
    pub quiet_catch_up: Option<Duration>,
    /// Messages buffered per conversation at most (1,024). Beyond it a message is not kept;
    /// the server still has it and it is fetched when its turn comes.
    pub max_buffered: usize,
    /// Messages buffered over all conversations at most (65,536).
    pub max_buffered_total: usize,
    /// Fetches in flight over all conversations at most (8), served first come, first
    /// served, a conversation going to the back of the line after each page.
    pub max_inflight_fetches: usize,
    /// The `limit` of a fetch (50, the server's default; 1..=100).
    pub page_limit: u16,
    /// The largest `limit` the machine escalates to when full pages make no progress (100,
    /// the server's maximum).
    pub max_page_limit: u16,
    /// Ids remembered per conversation, beyond those at the last delivered seq, to drop
    /// replays and to recognise a late message at an already-delivered seq (32). While a
    /// catch-up is pending the window keeps every id it must check, up to 16 times this.
    pub dedup_window: usize,
    /// Seqs a *catch-up* (stream opened, slow consumer, resume, poll, subscribe) fetches
    /// again at and below the last delivered one (32, the whole dedup window; `DESIGN.md`'s
    /// minimum is 1). A message that shares an already-delivered seq and whose stream event
    /// was lost is found this way, if fewer than this many seqs were delivered after it;
    /// the dedup window recognises the rest. Gap fetches overlap by one. At most
    /// `dedup_window`.
    pub catch_up_overlap: u64,
    /// How long after a range was declared unreachable it is asked for again (60 s); each
    /// further look waits twice as long, up to 32 times this.
    pub unreachable_retry: Duration,
    /// Live conversations share one stream (`Command::OpenShared`) instead of one each
    /// (`Command::OpenStream`): the Catbird `mlsChat` WebSocket allows 5 sockets per
    /// account, so a client in more conversations subscribes globally (false: the SSE
    /// server's stream per conversation).
    pub shared_stream: bool,
    /// How long the shared stream waits after a conversation joins before it reconnects
    /// to cover it, so that joins arriving together cost one reconnect (250 ms).
    pub join_delay: Duration,
    /// The request budget every conversation shares (see [`Budget`]): fetches and stream
    /// opens start only within it, and a 429 pauses its kind of request for all.
    pub budget: Budget,
    /// A fetch queued longer than this goes first whatever its priority, so that routine
    /// catch-ups are delayed by gap fills, never starved (30 s).
    pub max_queue_wait: Duration,
    /// Seed of the jitter RNG: the same seed and inputs give the same commands.
    pub rng_seed: u64,
}

/// The smallest `max_page_limit` accepted: a seq shared by as many messages as the largest
/// page can never be read whole by `sinceSeq` paging, and the real server was seen giving
/// one seq to three of eight concurrent sends.
pub const MIN_MAX_PAGE_LIMIT: u16 = 10;

impl Default for Config {
    fn default() -> Self {
        Config {
            gap_wait: Duration::from_millis(500),
            hole_grace: Duration::from_secs(2),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(45),
            poll_interval: Duration::from_secs(30),
            healthy_poll_interval: Some(Duration::from_secs(120)),
            max_buffered: 1024,
            max_buffered_total: 65_536,
            max_inflight_fetches: 8,
            page_limit: 50,
            max_page_limit: 100,
            dedup_window: 32,
            catch_up_overlap: 32,
            quiet_catch_up: Some(Duration::from_secs(15)),
            unreachable_retry: Duration::from_secs(60),
            shared_stream: false,
            join_delay: Duration::from_millis(250),
            budget: Budget::default(),
            max_queue_wait: Duration::from_secs(30),
            rng_seed: 0x5EED_6A91_E55D_0C0D,
        }
    }
}

impl Config {
    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError as E;
        if self.page_limit == 0 || self.page_limit > 100 {
            return Err(E::PageLimit(self.page_limit));
        }
        if self.max_page_limit < self.page_limit
            || self.max_page_limit > 100
            || self.max_page_limit < MIN_MAX_PAGE_LIMIT
        {
            return Err(E::MaxPageLimit {
                max: self.max_page_limit,
                limit: self.page_limit,
            });
        }
        if self.max_inflight_fetches == 0 {
            return Err(E::Zero("max_inflight_fetches"));
        }
        if self.max_buffered == 0 {
            return Err(E::Zero("max_buffered"));
        }
        if self.max_buffered_total < self.max_buffered {
            return Err(E::TotalBelowPerConvo {
                total: self.max_buffered_total,
                per_convo: self.max_buffered,
            });
        }
        if self.backoff_base.is_zero() || self.backoff_cap < self.backoff_base {
            return Err(E::Backoff);
        }
        if self.catch_up_overlap == 0 || self.catch_up_overlap > self.dedup_window.max(1) as u64 {
            return Err(E::CatchUpOverlap(self.catch_up_overlap));
        }
        if self.idle_timeout.is_zero() || self.poll_interval.is_zero() {
            return Err(E::Zero("idle_timeout/poll_interval"));
        }
        if self.unreachable_retry.is_zero() {
            return Err(E::Zero("unreachable_retry"));
        }
        Ok(())
    }
}
