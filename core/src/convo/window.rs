//! The recent-ids window: which ids were delivered at which seqs below the checkpoint, so
//! that a message coming back (a page re-reading what the stream delivered, a server
//! repeating an id at another seq) is recognised.
//!
//! Every message asks "was this id delivered?", and the answer is almost always no. A scan
//! of the ids would cost a string comparison per remembered id (and the window grows to
//! `dedup_window × RECHECK_WINDOW_FACTOR` while a recheck is pending), so each id carries a
//! 64-bit fingerprint and the window keeps a small Bloom filter of them: a miss in the filter
//! is a definite no in a few nanoseconds; a hit is confirmed by comparing fingerprints, and
//! ids only where those match. The filter never forgets an id still in the window (it is
//! rebuilt from the window, not aged), so the answer is exact.

use crate::{Known, MessageId, Seq};
use std::collections::VecDeque;

/// Ids delivered below the window (late, at seqs the machine no longer remembers),
/// remembered too so that a server repeating one is caught here as well as by the store.
const LATE_IDS: usize = 32;

/// Filter bits per id it can hold: with two bits set per id and the filter at most twice
/// as full as the window, about one lookup in a hundred needs the fingerprint scan.
const BITS_PER_ID: usize = 32;

/// A fixed, seedless hash of an id (the machine is deterministic): eight bytes at a time,
/// each folded in with a multiply, then mixed. Not a defence against crafted collisions —
/// those only cost a comparison, never a wrong answer.
pub(crate) fn fingerprint(id: &MessageId) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes = id.as_str().as_bytes();
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(K)
            .rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(K)
            .rotate_left(29);
    }
    h ^= h >> 32;
    h = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    h ^ (h >> 32)
}

#[derive(Debug, Clone)]
struct Entry {
    known: Known,
    fp: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// Ids delivered below the checkpoint's seq, in seq order.
    entries: VecDeque<Entry>,
    /// Ids delivered late below the window, oldest first, at most `LATE_IDS`.
    late: VecDeque<(u64, MessageId, Seq)>,
    /// Bloom filter over the fingerprints of `entries` (and ids since removed).
    bloom: Vec<u64>,
    /// Ids added to the filter since it was last rebuilt.
    added: usize,
}

impl Window {
    /// A window holding `known` (in seq order).
    pub(crate) fn from_known(known: impl IntoIterator<Item = Known>) -> Window {
        let mut w = Window::default();
        for k in known {
            let fp = fingerprint(&k.id);
            w.entries.push_back(Entry { known: k, fp });
        }
        w.rebuild();
        w
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The seq of the oldest id remembered.
    pub(crate) fn oldest(&self) -> Option<Seq> {
        self.entries.front().map(|e| e.known.seq)
    }

    /// Where `id` (whose fingerprint is `fp`) was delivered, if it is remembered.
    pub(crate) fn find(&self, id: &MessageId, fp: u64) -> Option<Seq> {
        if self.maybe(fp) {
            let hit = self
                .entries
                .iter()
                .rev()
                .find(|e| e.fp == fp && &e.known.id == id);
            if let Some(e) = hit {
                return Some(e.known.seq);
            }
        }
        if self.late.is_empty() {
            return None;
        }
        self.late
            .iter()
            .find(|(f, l, _)| *f == fp && l == id)
            .map(|(_, _, s)| *s)
    }

    /// Whether an id was delivered at `seq` (of those remembered).
    pub(crate) fn has_seq(&self, seq: Seq) -> bool {
        let at = self.entries.partition_point(|e| e.known.seq < seq);
        self.entries.get(at).is_some_and(|e| e.known.seq == seq)
    }

    /// Remembers an id, in its seq's place.
    pub(crate) fn insert(&mut self, known: Known, fp: u64) {
        let entry = Entry { known, fp };
        // Almost always the newest: appended.
        if self
            .entries
            .back()
            .is_none_or(|b| b.known.seq <= entry.known.seq)
        {
            self.entries.push_back(entry);
        } else {
            let at = self
                .entries
                .partition_point(|e| e.known.seq <= entry.known.seq);
            self.entries.insert(at, entry);
        }
        self.added += 1;
        if self.added > self.entries.len().max(64) || self.bloom.is_empty() {
            self.rebuild();
        } else {
            self.set(fp);
        }
    }

    /// Forgets the oldest id.
    pub(crate) fn pop_oldest(&mut self) {
        // The filter keeps its bits until the next rebuild (a false hit costs a scan).
        self.entries.pop_front();
    }

    /// Remembers an id delivered late below the window.
    pub(crate) fn insert_late(&mut self, id: MessageId, fp: u64, seq: Seq) {
        if self.late.len() >= LATE_IDS {
            self.late.pop_front();
        }
        self.late.push_back((fp, id, seq));
    }

    fn bit_positions(&self, fp: u64) -> [usize; 2] {
        let bits = self.bloom.len() * 64;
        // `bits` is a power of two.
        [fp as usize & (bits - 1), (fp >> 32) as usize & (bits - 1)]
    }

    fn maybe(&self, fp: u64) -> bool {
        if self.bloom.is_empty() {
            return !self.entries.is_empty();
        }
        self.bit_positions(fp)
            .iter()
            .all(|&b| self.bloom[b / 64] & (1 << (b % 64)) != 0)
    }

    fn set(&mut self, fp: u64) {
        for b in self.bit_positions(fp) {
            self.bloom[b / 64] |= 1 << (b % 64);
        }
    }

    /// A filter sized for twice the window, holding exactly its ids.
    fn rebuild(&mut self) {
        let bits = (self.entries.len().max(64) * 2 * BITS_PER_ID).next_power_of_two();
        self.bloom.clear();
        self.bloom.resize(bits / 64, 0);
        for i in 0..self.entries.len() {
            let fp = self.entries[i].fp;
            self.set(fp);
        }
        self.added = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Epoch;

    fn known(seq: u64, id: &str) -> Known {
        Known::new(Seq(seq), id, Epoch(0))
    }

    #[test]
    fn every_remembered_id_is_found_and_no_other() {
        let mut w = Window::default();
        for seq in 1..=2_000u64 {
            let id = MessageId::from(format!("id-{seq}"));
            w.insert(known(seq, id.as_str()), fingerprint(&id));
            if w.len() > 100 {
                w.pop_oldest();
            }
        }
        for seq in 1..=2_100u64 {
            let id = MessageId::from(format!("id-{seq}"));
            let want = (1_901..=2_000).contains(&seq).then_some(Seq(seq));
            assert_eq!(w.find(&id, fingerprint(&id)), want, "{id}");
        }
    }

    #[test]
    fn a_late_id_is_kept_in_seq_order_and_found() {
        let mut w = Window::from_known([known(5, "e"), known(9, "i")]);
        let id = MessageId::from("g");
        w.insert(known(7, "g"), fingerprint(&id));
        assert!(w.has_seq(Seq(7)) && !w.has_seq(Seq(6)));
        assert_eq!(w.oldest(), Some(Seq(5)));
        assert_eq!(w.find(&id, fingerprint(&id)), Some(Seq(7)));
        let below = MessageId::from("b");
        w.insert_late(below.clone(), fingerprint(&below), Seq(2));
        assert_eq!(w.find(&below, fingerprint(&below)), Some(Seq(2)));
    }

    #[test]
    fn ids_with_the_same_fingerprint_are_told_apart() {
        let mut w = Window::default();
        // Forced collision: both stored under one fingerprint.
        w.insert(known(1, "a"), 42);
        assert_eq!(w.find(&MessageId::from("b"), 42), None);
        assert_eq!(w.find(&MessageId::from("a"), 42), Some(Seq(1)));
    }
}
