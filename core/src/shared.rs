//! The shared stream: one connection for every live conversation (`Config::shared_stream`).
//!
//! The Catbird `mlsChat` server allows five WebSockets per account, so a client in more
//! conversations subscribes once, globally, and the server fixes the set of conversations
//! that connection covers when it connects. This file is that connection's life: open,
//! back off and reopen, replace a silent one, and reconnect (once, after `join_delay`) when a
//! conversation joins. What a (re)connect may have cost each conversation — the server
//! replays nothing — is the conversations' own affair: each one catches up when the shared
//! stream opens (`Convo::shared_opened`).

use crate::convo::Stream;
use crate::{Config, StreamId, Time};

/// The shared stream's state, owned by the machine.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Its connection, in the same states as a conversation's own stream (`Off`: no live
    /// conversation, no connection wanted; never `Shared`).
    pub(crate) state: Stream,
    /// A conversation joined the open (or opening) connection: reconnect at this time to
    /// cover it.
    pub(crate) rejoin_at: Option<Time>,
    /// Live conversations it covers.
    pub(crate) members: usize,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            state: Stream::Off,
            rejoin_at: None,
            members: 0,
        }
    }

    /// The connection now, if any.
    pub(crate) fn current(&self) -> Option<StreamId> {
        self.state.id()
    }

    /// When it needs attention: the connection's own deadline, or the reconnect for a
    /// conversation that joined.
    pub(crate) fn deadline(&self, config: &Config) -> Option<Time> {
        match (self.state.deadline(config), self.rejoin_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
