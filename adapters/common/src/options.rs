//! What both drivers are configured with, and what they hand back.

use crate::io::Wire;
use gapless::Config;
use std::time::Duration;

/// How a driver runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The server, e.g. `https://mls.catbird.blue` (no trailing slash needed).
    pub base_url: String,
    /// The machine's configuration (`max_inflight_fetches` also sizes the blocking
    /// driver's fetch pool).
    pub config: Config,
    /// Paging style and decode limits.
    pub wire: Wire,
    /// Longest a fetch may take, answer included (then it failed, transiently); also the
    /// longest a stream may take to answer.
    pub request_timeout: Duration,
    /// Longest a connection may take to open.
    pub connect_timeout: Duration,
    /// Updates held for the application before the driver waits for it to read.
    pub updates_capacity: usize,
    /// `User-Agent`.
    pub user_agent: String,
}

impl Options {
    /// Defaults for a server.
    pub fn new(base_url: impl Into<String>) -> Options {
        Options {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            config: Config::default(),
            wire: Wire::default(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            updates_capacity: 1024,
            user_agent: concat!("gapless/", env!("CARGO_PKG_VERSION")).into(),
        }
    }

    /// The URL of a path and query.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base_url, path_and_query)
    }
}

/// What a stopped driver hands back.
#[derive(Debug)]
pub struct Finished<S> {
    /// The store, with everything delivered in it.
    pub store: S,
    /// Fetches made.
    pub fetches: u64,
    /// Messages stored.
    pub committed: u64,
}

impl<S: crate::Store> Finished<S> {
    /// What a session ends with.
    pub fn of(session: crate::Session<S>) -> Finished<S> {
        Finished {
            fetches: session.fetches(),
            committed: session.committed(),
            store: session.into_store(),
        }
    }
}
