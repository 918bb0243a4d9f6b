//! One priority queue of deadlines for all conversations.
//!
//! Each conversation has at most one *valid* entry: the earliest deadline it needs. When a
//! conversation's next deadline moves earlier a new entry is pushed and the old one goes
//! stale; when it moves later nothing is pushed — the early entry fires, finds nothing due,
//! and the conversation schedules its real deadline then. Stale entries are skipped when
//! popped, and the heap is rebuilt when they outnumber the live ones. So a change costs
//! O(log n), `poll_timeout` is O(1), and idle conversations cost nothing.

use crate::Time;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A conversation's slot in the machine and the generation of that slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Time, Key)>>,
}

impl TimerQueue {
    /// The earliest entry (possibly stale: an early wake-up is harmless).
    pub(crate) fn peek(&self) -> Option<Time> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    pub(crate) fn push(&mut self, at: Time, key: Key) {
        self.heap.push(Reverse((at, key)));
    }

    /// Pops the earliest entry if it is due.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<(Time, Key)> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Replaces every entry with `live` (one per conversation that has a deadline).
    pub(crate) fn rebuild(&mut self, live: impl Iterator<Item = (Time, Key)>) {
        let entries: Vec<_> = live.map(Reverse).collect();
        self.heap = BinaryHeap::from(entries);
    }
}
