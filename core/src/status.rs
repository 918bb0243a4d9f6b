//! What a conversation is doing, for an application to show ("connecting…", "couldn't load
//! messages") and for people to read. The machine emits [`Command::Status`] when it
//! changes and answers [`SyncMachine::status`] at any time.
//!
//! [`Command::Status`]: crate::Command::Status
//! [`SyncMachine::status`]: crate::SyncMachine::status

use crate::{Seq, Time};

/// A conversation's state, as an application shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Everything the server has up to `seq` is delivered; nothing is pending.
    CaughtUp {
        /// The checkpoint's seq when it became so.
        seq: Seq,
    },
    /// Fetching (or queued to fetch) what is missing: a gap, a catch-up after a connect.
    CatchingUp {
        /// Where it stands.
        seq: Seq,
    },
    /// The last request failed; the machine tries again at `until`.
    Retrying {
        /// Why.
        reason: Trouble,
        /// When it tries again.
        until: Time,
    },
}

/// Why requests of a conversation are failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Trouble {
    /// Network errors, timeouts, server errors (5xx).
    Unreachable,
    /// The server refused the credentials (401).
    Unauthorized,
    /// The server's rate limit (429).
    RateLimited,
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trouble::Unreachable => "the server cannot be reached",
            Trouble::Unauthorized => "the server refuses the credentials",
            Trouble::RateLimited => "the server's rate limit",
        })
    }
}

impl Status {
    /// The same kind of status (what changes are emitted for: not every message).
    pub(crate) fn same_kind(&self, other: &Status) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && match (self, other) {
                (Status::Retrying { reason: a, .. }, Status::Retrying { reason: b, .. }) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::CaughtUp { seq } => write!(f, "caught up (seq {seq})"),
            Status::CatchingUp { seq } => write!(f, "catching up (at seq {seq})"),
            Status::Retrying { reason, until } => {
                write!(f, "waiting to retry ({reason}), next try at {until}")
            }
        }
    }
}
