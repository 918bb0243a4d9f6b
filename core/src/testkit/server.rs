//! The simulated server: one log per conversation, as the real server keeps it.

use crate::rng::Rng;
use crate::{Cursor, Epoch, Message, MessageId, MessageKind, Seq, Time};
use std::collections::BTreeMap;

/// How the server itself misbehaves (per mille per message sent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerFaults {
    /// A seq is skipped for good (a rolled-back insert, a deleted message).
    pub hole: u16,
    /// The message gets the seq of the one before it (`MAX(seq)+1` race).
    pub shared: u16,
    /// The message commits late: visible after the next one.
    pub late: u16,
    /// The message expires soon after it is sent.
    pub expire: u16,
    /// The message is ephemeral (`seq = 0`, stream only).
    pub ephemeral: u16,
    /// The sender is one epoch behind.
    pub epoch_back: u16,
    /// The message is an MLS commit (replayed on stream resume, as the real server does).
    pub commit: u16,
}

/// A message in the server's log.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The message.
    pub message: Message,
    /// The stream cursor of its event.
    pub cursor: Cursor,
    /// When it became visible (`None`: not yet).
    pub visible: Option<Time>,
    /// When it expired.
    pub expired: Option<Time>,
    /// Whether it shares its seq with an earlier message.
    pub shares_seq: bool,
}

/// Per-conversation logs.
#[derive(Debug)]
pub struct SimServer {
    convos: BTreeMap<String, Log>,
    faults: ServerFaults,
    rng: Rng,
    next_cursor: u64,
    /// Late commits may share a seq (see `SimConfig::realistic`).
    pub realistic: bool,
}

#[derive(Debug, Default)]
struct Log {
    stored: Vec<Stored>,
    /// Messages sent by `send_message`, by msgId: their index in `stored`.
    by_msg_id: BTreeMap<String, usize>,
    max_seq: u64,
    epoch: u64,
    next_shares: bool,
    sent: u64,
}

impl Log {
    fn top_visible(&self) -> bool {
        let top = Seq(self.max_seq);
        self.stored
            .iter()
            .filter(|s| s.message.seq == top)
            .all(|s| s.visible.is_some())
    }
}

impl SimServer {
    /// An empty server.
    pub fn new(seed: u64, faults: ServerFaults) -> SimServer {
        SimServer {
            convos: BTreeMap::new(),
            faults,
            rng: Rng::new(seed ^ 0xA5A5_5A5A),
            next_cursor: 0,
            realistic: false,
        }
    }

    fn roll(&mut self, per_mille: u16) -> bool {
        per_mille > 0 && self.rng.up_to(999) < u64::from(per_mille)
    }

    /// Sends one message in `convo` at `now`. Returns its index in the log and whether it
    /// is to expire (then `expire` must be called later). It is visible at once unless it
    /// commits late (then `make_visible` must be called later).
    pub fn send(&mut self, convo: &str, now: Time) -> (usize, bool) {
        let f = self.faults.clone();
        let ephemeral = self.roll(f.ephemeral);
        let hole = self.roll(f.hole);
        let shared = self.roll(f.shared);
        let late = self.roll(f.late);
        let expire = self.roll(f.expire);
        let back = self.roll(f.epoch_back);
        let commit = self.roll(f.commit);
        let new_epoch = self.roll(50);
        self.next_cursor += 1;
        let cursor = Cursor::new(format!("{:012}", self.next_cursor));
        let log = self.convos.entry(convo.to_string()).or_default();
        log.sent += 1;
        let id = MessageId::new(format!("{convo}-m{}", log.sent));
        let (seq, shares_seq) = if ephemeral {
            (0, false)
        } else if std::mem::take(&mut log.next_shares) && log.top_visible() {
            (log.max_seq, true)
        } else {
            if hole {
                log.max_seq += 1;
            }
            log.max_seq += 1;
            // Decided now so that both messages of the pair are known as sharing from the
            // start; only beside a visible message, since a late commit sharing a seq whose
            // stream event is lost is the one loss paging by seq cannot see (README, "Limits").
            log.next_shares = shared && (!late || self.realistic);
            (log.max_seq, log.next_shares)
        };
        // A late commit sharing a seq is the excluded class (see above).
        let late = late && (!shares_seq || self.realistic);
        if new_epoch && !ephemeral {
            log.epoch += 1;
        }
        let partner = shares_seq
            .then(|| log.stored.iter().rev().find(|s| s.message.seq == Seq(seq)))
            .flatten()
            .map(|s| s.message.epoch.0);
        // Two concurrent sends at one seq are at one epoch (see README, "Limits").
        let epoch = match partner {
            Some(e) => e,
            None if back => log.epoch.saturating_sub(1),
            None => log.epoch,
        };
        let message = Message {
            id,
            seq: Seq(seq),
            epoch: Epoch(epoch),
            kind: if commit {
                MessageKind::Commit
            } else {
                MessageKind::App
            },
            payload: vec![seq as u8; 4],
            created_at: None,
        };
        log.stored.push(Stored {
            message,
            cursor,
            visible: (!late).then_some(now),
            expired: None,
            shares_seq,
        });
        (log.stored.len() - 1, expire)
    }

    /// `sendMessage` as the real server does it: a msgId already sent in the conversation
    /// gets the first answer (the same index), nothing new is stored; otherwise the message
    /// is stored at `MAX(seq)+1` (or seq 0, not stored, if ephemeral), visible at once, with
    /// the payload byte for byte. Returns its index and whether it is new.
    pub fn send_message(
        &mut self,
        convo: &str,
        msg_id: &str,
        payload: Vec<u8>,
        epoch: u64,
        ephemeral: bool,
        now: Time,
    ) -> (usize, bool) {
        self.next_cursor += 1;
        let cursor = Cursor::new(format!("{:012}", self.next_cursor));
        let log = self.convos.entry(convo.to_string()).or_default();
        if let Some(&index) = log.by_msg_id.get(msg_id) {
            return (index, false);
        }
        log.sent += 1;
        let (id, seq) = if ephemeral {
            (MessageId::new(msg_id), 0)
        } else {
            log.max_seq += 1;
            (
                MessageId::new(format!("{convo}-u{}", log.sent)),
                log.max_seq,
            )
        };
        log.stored.push(Stored {
            message: Message {
                id,
                seq: Seq(seq),
                epoch: Epoch(epoch),
                kind: MessageKind::App,
                payload,
                created_at: None,
            },
            cursor,
            visible: Some(now),
            expired: None,
            shares_seq: false,
        });
        let index = log.stored.len() - 1;
        log.by_msg_id.insert(msg_id.to_string(), index);
        (index, true)
    }

    /// The index of the message sent with `msg_id`, if the server has it.
    pub fn sent_index(&self, convo: &str, msg_id: &str) -> Option<usize> {
        self.convos.get(convo)?.by_msg_id.get(msg_id).copied()
    }

    /// The conversation's current epoch.
    pub fn epoch(&self, convo: &str) -> u64 {
        self.convos.get(convo).map_or(0, |l| l.epoch)
    }

    /// Every message of the log with this payload, by index.
    pub fn with_payload(&self, convo: &str, payload: &[u8]) -> Vec<usize> {
        self.convos.get(convo).map_or_else(Vec::new, |l| {
            l.stored
                .iter()
                .enumerate()
                .filter(|(_, s)| s.message.payload == payload)
                .map(|(i, _)| i)
                .collect()
        })
    }

    /// The stored message at `index`.
    pub fn stored(&self, convo: &str, index: usize) -> &Stored {
        &self.convos[convo].stored[index]
    }

    /// Makes a late message visible.
    pub fn make_visible(&mut self, convo: &str, index: usize, now: Time) {
        if let Some(s) = self
            .convos
            .get_mut(convo)
            .and_then(|l| l.stored.get_mut(index))
        {
            s.visible.get_or_insert(now);
        }
    }

    /// Expires a message: it is no longer served.
    pub fn expire(&mut self, convo: &str, index: usize, now: Time) {
        if let Some(s) = self
            .convos
            .get_mut(convo)
            .and_then(|l| l.stored.get_mut(index))
        {
            s.expired.get_or_insert(now);
        }
    }

    fn served(s: &Stored) -> bool {
        s.visible.is_some() && s.expired.is_none() && s.message.seq > Seq::ZERO
    }

    /// `getMessages`: seq above `since`, ordered by `(epoch, seq)`, at most `limit`.
    pub fn page(&self, convo: &str, since: Seq, limit: u16) -> Vec<Message> {
        let Some(log) = self.convos.get(convo) else {
            return Vec::new();
        };
        let mut page: Vec<&Stored> = log
            .stored
            .iter()
            .filter(|s| Self::served(s) && s.message.seq > since)
            .collect();
        page.sort_by_key(|s| (s.message.epoch, s.message.seq));
        page.truncate(usize::from(limit));
        page.into_iter().map(|s| s.message.clone()).collect()
    }

    /// `gapInfo` as the real server computes it: every seq between the lowest and highest
    /// served seq that holds no served message.
    pub fn gap_info(&self, convo: &str) -> crate::Gaps {
        let Some(log) = self.convos.get(convo) else {
            return crate::Gaps::Unknown;
        };
        let mut seqs: Vec<u64> = log
            .stored
            .iter()
            .filter(|s| Self::served(s))
            .map(|s| s.message.seq.0)
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        let mut missing = Vec::new();
        for w in seqs.windows(2) {
            missing.extend((w[0] + 1..w[1]).map(Seq));
        }
        if missing.is_empty() {
            crate::Gaps::Unknown
        } else {
            crate::Gaps::Missing(missing)
        }
    }

    /// Whether a `sinceSeq` page of at most `limit` could show `message` now: fewer than
    /// `limit` served messages above its seq's predecessor sort before it.
    pub fn reachable(&self, convo: &str, message: &Message, limit: u16) -> bool {
        let Some(log) = self.convos.get(convo) else {
            return false;
        };
        let key = (message.epoch, message.seq);
        let before = log
            .stored
            .iter()
            .filter(|s| Self::served(s) && s.message.seq >= message.seq)
            .filter(|s| (s.message.epoch, s.message.seq) < key)
            .count();
        before < usize::from(limit)
    }

    /// Commit messages after `cursor` (what the real server replays on resume).
    pub fn replay_after(&self, convo: &str, cursor: &Cursor) -> Vec<(Cursor, Message)> {
        self.convos.get(convo).map_or_else(Vec::new, |log| {
            log.stored
                .iter()
                .filter(|s| {
                    Self::served(s) && s.message.kind == MessageKind::Commit && s.cursor > *cursor
                })
                .map(|s| (s.cursor.clone(), s.message.clone()))
                .collect()
        })
    }

    /// Every message the server serves now, per conversation.
    pub fn served_now(&self) -> impl Iterator<Item = (&str, &Stored)> {
        self.convos.iter().flat_map(|(c, log)| {
            log.stored
                .iter()
                .filter(|s| Self::served(s))
                .map(move |s| (c.as_str(), s))
        })
    }

    /// Whether a message at `seq` was visible by `visible_by` and not expired before
    /// `still_at`: then no correct client can have seen it missing in between.
    pub fn served_throughout(
        &self,
        convo: &str,
        seq: Seq,
        visible_by: Time,
        still_at: Time,
    ) -> bool {
        self.convos.get(convo).is_some_and(|log| {
            log.stored.iter().any(|s| {
                s.message.seq == seq
                    && s.visible.is_some_and(|v| v <= visible_by)
                    && s.expired.is_none_or(|e| e >= still_at)
            })
        })
    }

    /// Turns the server's own faults off from now on.
    pub fn calm(&mut self) {
        self.faults = ServerFaults::default();
    }
}
