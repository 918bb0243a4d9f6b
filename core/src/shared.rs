//! The shared stream: one connection for every live conversation (`Config::shared_stream`).
//!
//! The Catbird `mlsChat` server allows five WebSockets per account, so a client in more
//! conversations subscribes once, globally, and the server fixes the set of conversations
//! that connection covers when it connects. This file is that connection's life: open,
//! back off and reopen, replace a silent one, and reconnect (once, after `join_delay`) when a
//! conversation joins. What a (re)connect may have cost each conversation — the server
//! replays nothing — is the conversations' own affair: each one catches up when the shared
//! stream opens (`Convo::shared_opened`).

use crate::{Config, StreamId, Time};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// No live conversation: no connection wanted.
    Idle,
    /// Closed; reopen at `at`.
    Waiting { at: Time, attempts: u32 },
    /// `OpenShared` sent, not yet confirmed.
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

/// The shared stream's state, owned by the machine.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: State,
    /// A conversation joined the open (or opening) connection: reconnect at this time to
    /// cover it.
    pub(crate) rejoin_at: Option<Time>,
    /// Live conversations it covers.
    pub(crate) members: usize,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            state: State::Idle,
            rejoin_at: None,
            members: 0,
        }
    }

    /// The connection now, if any.
    pub(crate) fn current(&self) -> Option<StreamId> {
        match self.state {
            State::Opening { id, .. } | State::Open { id, .. } => Some(id),
            _ => None,
        }
    }

    /// When it needs attention: reopen, give up on a silent connection, or reconnect for a
    /// conversation that joined.
    pub(crate) fn deadline(&self, config: &Config) -> Option<Time> {
        let state = match self.state {
            State::Idle => None,
            State::Waiting { at, .. } => Some(at),
            State::Opening { since, .. } => Some(since + config.idle_timeout),
            State::Open { last_activity, .. } => Some(last_activity + config.idle_timeout),
        };
        match (state, self.rejoin_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The attempts so far, and whether the connection stayed healthy long enough to reset
    /// them.
    pub(crate) fn attempts_after_close(&self, now: Time, config: &Config) -> u32 {
        match self.state {
            State::Open { since, .. } if now.since(since) >= config.healthy_after => 0,
            State::Open { attempts, .. }
            | State::Opening { attempts, .. }
            | State::Waiting { attempts, .. } => attempts,
            State::Idle => 0,
        }
        .saturating_add(1)
    }
}
