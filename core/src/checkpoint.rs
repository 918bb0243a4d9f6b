//! What must be stored for a restarted machine to continue without loss or duplicates.

use crate::{Cursor, Epoch, MessageId, Seq};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// A conversation's position: the last delivered (or skipped) seq, the ids delivered at
/// that seq, and the stream cursor. Every `Deliver` and `Skipped` command carries the
/// checkpoint that becomes true once it is stored; store both in one transaction.
///
/// ```
/// # use gapless::{Checkpoint, Seq};
/// let cp = Checkpoint::default();
/// let json = serde_json::to_string(&cp).unwrap();
/// assert_eq!(serde_json::from_str::<Checkpoint>(&json).unwrap(), cp);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Everything up to this seq was delivered or skipped.
    pub seq: Seq,
    /// The ids delivered at `seq` (more than one when messages share it). A catch-up
    /// overlaps `seq` by one and needs them to recognise what it already has.
    #[serde(default)]
    pub ids: SmallVec<[MessageId; 1]>,
    /// The epoch of the last delivered message, to notice an epoch going back.
    #[serde(default)]
    pub epoch: Option<Epoch>,
    /// The last stream cursor seen.
    #[serde(default)]
    pub cursor: Option<Cursor>,
    /// A catch-up is under way: seqs from here up have not yet been confirmed complete by
    /// a fetch (the stream may have delivered past them, and a message sharing one of them
    /// may be missing). A restarted machine goes on from here.
    #[serde(default)]
    pub recheck_from: Option<Seq>,
    /// Ranges declared unreachable that the machine still asks for (at most 8): a restarted
    /// machine goes on asking.
    #[serde(default, skip_serializing_if = "SmallVec::is_empty")]
    pub unreachable: SmallVec<[(Seq, Seq); 1]>,
}

/// A message already delivered, as a store gives it back when a machine is restored
/// (see [`Subscription::recent`](crate::Subscription::recent)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// Its seq.
    pub seq: Seq,
    /// Its id.
    pub id: MessageId,
    /// Its epoch.
    pub epoch: Epoch,
}

impl Known {
    /// A delivered message's identity and position.
    pub fn new(seq: Seq, id: impl Into<MessageId>, epoch: Epoch) -> Known {
        Known {
            seq,
            id: id.into(),
            epoch,
        }
    }
}

impl Checkpoint {
    /// The last delivered id, for servers that page with `sinceMessage`.
    pub fn last_id(&self) -> Option<&MessageId> {
        self.ids.last()
    }
}
