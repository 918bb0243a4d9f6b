//! Messages that arrived ahead of the next expected seq, per conversation.
//!
//! Kept in seq order; several messages may share a seq. When the bound is reached the
//! highest seq gives way: lower seqs are needed sooner, and whatever gives way is still on
//! the server and is fetched when its turn comes.

use crate::{Message, MessageId, Seq};
use smallvec::SmallVec;
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub(crate) struct Buffer {
    by_seq: BTreeMap<Seq, SmallVec<[Message; 1]>>,
    len: usize,
}

/// What `insert` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Kept; nothing given up.
    Kept,
    /// Kept, and the buffer's highest message (at this seq) was given up to make room.
    KeptEvicting(Seq),
    /// Not kept: the buffer is full of lower seqs.
    Refused,
    /// Already buffered (same id).
    Duplicate,
}

impl Buffer {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn first_seq(&self) -> Option<Seq> {
        self.by_seq.keys().next().copied()
    }

    pub(crate) fn contains(&self, seq: Seq, id: &MessageId) -> bool {
        self.by_seq
            .get(&seq)
            .is_some_and(|v| v.iter().any(|m| &m.id == id))
    }

    /// Inserts `message`; `full` says whether a bound is reached (the caller knows both the
    /// per-conversation and the global count).
    pub(crate) fn insert(&mut self, message: Message, full: bool) -> Insert {
        if self.contains(message.seq, &message.id) {
            return Insert::Duplicate;
        }
        let mut evicted = None;
        if full {
            let Some(mut top) = self.by_seq.last_entry() else {
                return Insert::Refused;
            };
            if *top.key() <= message.seq {
                return Insert::Refused;
            }
            let seq = *top.key();
            top.get_mut().pop();
            if top.get().is_empty() {
                top.remove();
            }
            self.len -= 1;
            evicted = Some(seq);
        }
        self.by_seq.entry(message.seq).or_default().push(message);
        self.len += 1;
        match evicted {
            Some(seq) => Insert::KeptEvicting(seq),
            None => Insert::Kept,
        }
    }

    /// Removes and returns the lowest seq's messages, if that seq is at most `up_to`.
    pub(crate) fn pop_first_up_to(&mut self, up_to: Seq) -> Option<SmallVec<[Message; 1]>> {
        let entry = self.by_seq.first_entry()?;
        if *entry.key() > up_to {
            return None;
        }
        let msgs = entry.remove();
        self.len -= msgs.len();
        Some(msgs)
    }

    /// The buffered seqs, ascending.
    pub(crate) fn seqs(&self) -> impl Iterator<Item = Seq> + '_ {
        self.by_seq.keys().copied()
    }

    /// Drops everything; returns how many messages were dropped.
    pub(crate) fn clear(&mut self) -> usize {
        self.by_seq.clear();
        std::mem::take(&mut self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_buffer_gives_up_its_highest_seq_for_a_lower_one() {
        let mut b = Buffer::default();
        assert_eq!(b.insert(Message::new("a", 5, 0), false), Insert::Kept);
        assert_eq!(b.insert(Message::new("b", 9, 0), false), Insert::Kept);
        assert_eq!(
            b.insert(Message::new("c", 7, 0), true),
            Insert::KeptEvicting(Seq(9))
        );
        assert_eq!(b.insert(Message::new("d", 8, 0), true), Insert::Refused);
        assert_eq!(b.insert(Message::new("a", 5, 0), true), Insert::Duplicate);
        assert_eq!(b.len(), 2);
        assert_eq!(b.seqs().collect::<Vec<_>>(), [Seq(5), Seq(7)]);
        assert!(b.pop_first_up_to(Seq(4)).is_none());
        assert_eq!(b.pop_first_up_to(Seq(6)).unwrap()[0].id.as_str(), "a");
        assert_eq!(b.clear(), 1);
        assert!(b.is_empty());
    }
}
