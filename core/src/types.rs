//! Identifiers, time and the message itself.
//!
//! Every identifier is a newtype so that a seq can never be passed as an epoch. The
//! string-like ones (`ConvoId`, `MessageId`, `Cursor`) wrap an `Arc<str>`: the machine hands
//! them out with every command, and cloning an `Arc` is a reference count, not an
//! allocation, which keeps the in-order delivery path allocation-free.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A point in time: milliseconds since an origin the adapter picks.
///
/// The core never reads a clock; every input carries the current `Time`. Adapters usually
/// take the instant they start as the origin.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time(u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);

    /// A time `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is (zero if it is not after it).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}ms", self.0)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a string.
            pub fn new(s: impl Into<Arc<str>>) -> Self {
                Self(s.into())
            }
            /// The string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// Whether both are clones of one value (a pointer comparison: equal values
            /// made apart are not `same`).
            #[allow(dead_code)]
            pub(crate) fn same(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s.into())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A conversation (`convoId`): opaque to gapless.
    ConvoId
);
string_id!(
    /// A message's identity. Two messages may share a seq on the real server; their ids
    /// always differ, so the id, not the seq, says whether a message is a duplicate.
    MessageId
);
string_id!(
    /// An opaque, ordered stream position (a ULID on the Catbird server).
    Cursor
);

/// The server-assigned position of a message in its conversation. `0` marks an ephemeral
/// message, which is never sequenced.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The seq of ephemeral messages, and the position before the first message.
    pub const ZERO: Seq = Seq(0);

    /// The next seq.
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An MLS epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

/// Names one fetch; a result carrying an id the machine is not waiting for is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

/// Names one stream connection, so that a late report about an old connection cannot
/// close or feed its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(pub u64);

/// What a message is, as the server labels it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// An application message (the default when the server does not say).
    #[default]
    App,
    /// An MLS commit.
    Commit,
}

/// One message as the server holds it. The payload is moved through the machine, never
/// copied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The message's identity.
    pub id: MessageId,
    /// Its position; `Seq::ZERO` for an ephemeral message.
    pub seq: Seq,
    /// The MLS epoch it was sent in.
    pub epoch: Epoch,
    /// App or commit.
    pub kind: MessageKind,
    /// The ciphertext, opaque to gapless.
    pub payload: Vec<u8>,
    /// The server's `createdAt`, as sent.
    pub created_at: Option<Box<str>>,
}

impl Message {
    /// A message with an empty payload, for tests and examples.
    pub fn new(id: impl Into<MessageId>, seq: u64, epoch: u64) -> Message {
        Message {
            id: id.into(),
            seq: Seq(seq),
            epoch: Epoch(epoch),
            kind: MessageKind::App,
            payload: Vec::new(),
            created_at: None,
        }
    }

    /// Whether the message is ephemeral (`seq = 0`): delivered at once, never sequenced.
    pub fn is_ephemeral(&self) -> bool {
        self.seq == Seq::ZERO
    }
}
