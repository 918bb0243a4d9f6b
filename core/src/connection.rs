//! The machine's connection as a whole, for an application's "connecting…" or "offline"
//! banner and a cold start's progress: a tally of the conversations' statuses, kept as they
//! change (never a walk over every conversation). The machine emits
//! [`Command::Connection`](crate::Command::Connection) when it changes and answers
//! [`SyncMachine::connection`](crate::SyncMachine::connection) at any time.

use crate::{Status, Trouble};

/// The state of all conversations together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Connection {
    /// No conversation is subscribed.
    Idle,
    /// Every conversation is caught up.
    Online {
        /// Conversations subscribed.
        total: usize,
    },
    /// Some conversations are catching up (a start, a reconnect, a gap), none is waiting to
    /// retry: progress, `total - behind` of `total` caught up.
    CatchingUp {
        /// Conversations not yet caught up.
        behind: usize,
        /// Conversations subscribed.
        total: usize,
    },
    /// Some conversations wait to retry a refused or failed request; others are fine.
    Degraded {
        /// Why (the one that needs attention first: credentials, then the rate limit,
        /// then the server's reachability).
        reason: Trouble,
        /// Conversations waiting to retry.
        retrying: usize,
        /// Conversations subscribed.
        total: usize,
    },
    /// Every conversation waits to retry: nothing reaches the server.
    Offline {
        /// Why (as for `Degraded`).
        reason: Trouble,
    },
}

impl std::fmt::Display for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connection::Idle => f.write_str("no conversation"),
            Connection::Online { total } => write!(f, "online, {total} caught up"),
            Connection::CatchingUp { behind, total } => {
                write!(f, "catching up, {} of {total} caught up", total - behind)
            }
            Connection::Degraded {
                reason,
                retrying,
                total,
            } => write!(f, "{retrying} of {total} waiting to retry ({reason})"),
            Connection::Offline { reason } => write!(f, "offline ({reason})"),
        }
    }
}

/// How many conversations are in each kind of status.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    caught_up: usize,
    catching_up: usize,
    /// Waiting to retry, by `Trouble` (see `slot`).
    retrying: [usize; 3],
}

/// Trouble in the order it needs attention.
const BY_URGENCY: [Trouble; 3] = [
    Trouble::Unauthorized,
    Trouble::RateLimited,
    Trouble::Unreachable,
];

fn slot(t: Trouble) -> usize {
    BY_URGENCY.iter().position(|&u| u == t).unwrap_or(2)
}

impl Tally {
    fn count(&mut self, status: &Status) -> &mut usize {
        match status {
            Status::CaughtUp { .. } => &mut self.caught_up,
            Status::CatchingUp { .. } => &mut self.catching_up,
            Status::Retrying { reason, .. } => &mut self.retrying[slot(*reason)],
        }
    }

    /// A conversation's status changed from `old` (`None`: it is new) to `new` (`None`: it
    /// is gone).
    pub(crate) fn change(&mut self, old: Option<&Status>, new: Option<&Status>) {
        if let Some(old) = old {
            let n = self.count(old);
            *n = n.saturating_sub(1);
        }
        if let Some(new) = new {
            *self.count(new) += 1;
        }
    }

    /// The connection the tally adds up to.
    pub(crate) fn connection(&self) -> Connection {
        let retrying: usize = self.retrying.iter().sum();
        let total = self.caught_up + self.catching_up + retrying;
        let reason = (0..3)
            .find(|&i| self.retrying[i] > 0)
            .map(|i| BY_URGENCY[i]);
        match reason {
            _ if total == 0 => Connection::Idle,
            Some(reason) if retrying == total => Connection::Offline { reason },
            Some(reason) => Connection::Degraded {
                reason,
                retrying,
                total,
            },
            None if self.catching_up > 0 => Connection::CatchingUp {
                behind: self.catching_up,
                total,
            },
            None => Connection::Online { total },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Seq, Time};

    #[test]
    fn the_tally_adds_up_to_the_connection() {
        let up = Status::CaughtUp { seq: Seq(1) };
        let behind = Status::CatchingUp { seq: Seq(0) };
        let refused = Status::Retrying {
            reason: Trouble::Unauthorized,
            until: Time::ZERO,
        };
        let down = Status::Retrying {
            reason: Trouble::Unreachable,
            until: Time::ZERO,
        };
        let mut t = Tally::default();
        assert_eq!(t.connection(), Connection::Idle);
        t.change(None, Some(&behind));
        t.change(None, Some(&behind));
        assert_eq!(
            t.connection(),
            Connection::CatchingUp {
                behind: 2,
                total: 2
            }
        );
        t.change(Some(&behind), Some(&up));
        t.change(Some(&behind), Some(&down));
        assert_eq!(
            t.connection(),
            Connection::Degraded {
                reason: Trouble::Unreachable,
                retrying: 1,
                total: 2
            }
        );
        t.change(Some(&up), Some(&refused));
        // Credentials first: the user can act on them.
        assert_eq!(
            t.connection(),
            Connection::Offline {
                reason: Trouble::Unauthorized
            }
        );
        t.change(Some(&refused), None);
        t.change(Some(&down), Some(&up));
        assert_eq!(t.connection(), Connection::Online { total: 1 });
        assert_eq!(t.connection().to_string(), "online, 1 caught up");
    }
}
