//! # gapless-sqlite
//!
//! The durable [`Store`] for gapless: messages, checkpoints and skipped ranges in one SQLite
//! database (bundled SQLite, WAL mode).
//!
//! - Each [`Store::commit`] — a delivery batch and the checkpoints it moves — is one
//!   transaction: a crash at any moment leaves either all of it or none, so a restarted
//!   session resumes exactly where the stored checkpoint says, refetching what was not
//!   stored.
//! - Idempotent by (conversation, message id): a redelivered id is a no-op. Two messages may
//!   share a seq (the real server's `MAX(seq)+1` race), so seq is not a key.
//! - Ephemeral messages (seq 0) reach the application but are never stored.
//! - The outbox (messages the application sends) is a table written in the same
//!   transactions: a message is stored before its first send, its answer (seq, messageId)
//!   when the server accepts it, and it leaves once confirmed or dropped;
//!   [`Store::outbox`] gives back the rest for a restart to send again (same msgId).
//!
//! ```
//! use gapless_adapter::{Session, Wire};
//! use gapless_sqlite::SqliteStore;
//!
//! let store = SqliteStore::open_in_memory().unwrap();
//! let mut session = Session::new(gapless::Config::default(), store, Wire::default()).unwrap();
//! // Resumes from the stored checkpoint, if any; the step says which stream to open.
//! let step = session.subscribe("convo-1".into(), true).unwrap();
//! assert_eq!(step.io.len(), 1);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use gapless::{
    Checkpoint, ConvoId, Epoch, Known, MessageKind, MsgId, OutboxState, Outgoing, Permanent,
    SendAnswer, Seq,
};
use gapless_adapter::{Restored, Store, StoreError, Write};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    convo       TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    created_at  TEXT,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (convo, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_seq ON messages (convo, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    convo      TEXT PRIMARY KEY NOT NULL,
    checkpoint TEXT NOT NULL,
    cleared    TEXT
);
CREATE TABLE IF NOT EXISTS skipped (
    convo    TEXT    NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq   INTEGER NOT NULL,
    PRIMARY KEY (convo, from_seq, to_seq)
) WITHOUT ROWID;
-- Seqs no page could show (passed, not proven empty). Messages found there later are in
-- `messages` like any other: count them by seq range.
-- Messages the application sends, until confirmed (seen delivered) or dropped: stored
-- before the first send, in enqueue order (rowid); `state` in words, `seq`/`message_id`
-- once the server accepted it, `detail` why it is retrying or failed.
CREATE TABLE IF NOT EXISTS outbox (
    convo       TEXT    NOT NULL,
    msg_id      TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    epoch       INTEGER NOT NULL,
    padded_size INTEGER NOT NULL,
    ephemeral   INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    seq         INTEGER,
    message_id  TEXT,
    received_at TEXT,
    detail      TEXT,
    enqueued_at INTEGER NOT NULL,
    UNIQUE (convo, msg_id)
);
CREATE TABLE IF NOT EXISTS unreachable (
    convo    TEXT    NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq   INTEGER NOT NULL,
    PRIMARY KEY (convo, from_seq, to_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS anomalies (
    convo TEXT    NOT NULL,
    at_ms INTEGER NOT NULL,
    words TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS anomalies_by_convo ON anomalies (convo);
";

/// Anomalies kept per conversation (the newest), for `gapless inspect`.
const KEPT_ANOMALIES: i64 = 20;

/// A conversation cleared before anything was stored: no position yet.
const EMPTY_CHECKPOINT: &str = r#"{"seq":0}"#;

/// A database error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored checkpoint does not decode (a database from an incompatible version, or
    /// edited by hand).
    #[error("conversation {convo}: stored checkpoint does not decode: {source}")]
    Checkpoint {
        /// The conversation.
        convo: String,
        /// Why.
        source: serde_json::Error,
    },
}

impl From<SqliteError> for StoreError {
    fn from(e: SqliteError) -> StoreError {
        StoreError::new(e)
    }
}

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

/// One conversation as stored, for `gapless inspect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConvoSummary {
    /// The conversation.
    pub convo: String,
    /// Its checkpoint.
    pub checkpoint: Checkpoint,
    /// Why it was cleared, if it was.
    pub cleared: Option<String>,
    /// Stored messages.
    pub messages: u64,
    /// Lowest and highest stored seq.
    pub seq_range: Option<(u64, u64)>,
    /// Skipped ranges, `from..=to`.
    pub skipped: Vec<(u64, u64)>,
    /// Unreachable ranges, `from..=to`, each with how many messages turned up there later.
    pub unreachable: Vec<(u64, u64, u64)>,
    /// The newest anomalies the server caused (oldest first): when (milliseconds since the
    /// Unix epoch) and what, in words.
    pub anomalies: Vec<(u64, String)>,
}

/// One message of the outbox, without its payload, for `gapless inspect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    /// The conversation.
    pub convo: String,
    /// The application's msgId.
    pub msg_id: String,
    /// `queued`, `sending`, `sent`, `retrying` or `failed`.
    pub state: String,
    /// The seq the server gave it, once accepted.
    pub seq: Option<u64>,
    /// The server's id of it, once accepted.
    pub message_id: Option<String>,
    /// Why it is retrying or failed, in words.
    pub detail: Option<String>,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Ephemeral (not stored by the server).
    pub ephemeral: bool,
    /// When it was enqueued, milliseconds since the Unix epoch.
    pub enqueued_at_ms: u64,
}

/// The word stored for a state, and why (for a retry or a failure).
fn state_words(state: &OutboxState) -> (&'static str, Option<String>) {
    match state {
        OutboxState::Queued => ("queued", None),
        OutboxState::Sending => ("sending", None),
        OutboxState::Sent { .. } => ("sent", None),
        OutboxState::Retrying { why, .. } => ("retrying", Some(why.to_string())),
        OutboxState::Failed { why } => ("failed", Some(why.to_string())),
        OutboxState::Confirmed { .. } => ("confirmed", None),
        OutboxState::Dropped => ("dropped", None),
        _ => ("unknown", None),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One stored message, without its payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredMessage {
    /// The conversation.
    pub convo: String,
    /// Its seq.
    pub seq: u64,
    /// Its id.
    pub id: String,
    /// Its epoch.
    pub epoch: u64,
    /// `app` or `commit`.
    pub kind: String,
    /// Payload length in bytes.
    pub payload_len: u64,
}

fn to_i64(v: u64) -> i64 {
    // SQLite integers are signed: a value above i64::MAX is stored bit-preserved (and read
    // back the same), though SQL ordering then puts it first; no server's seqs come near.
    v as i64
}

fn to_u64(v: i64) -> u64 {
    v as u64
}

fn reason_name(reason: Permanent) -> &'static str {
    match reason {
        Permanent::NotMember => "not-member",
        Permanent::NotFound => "not-found",
        Permanent::Forbidden => "forbidden",
        Permanent::InvalidCursor => "invalid-cursor",
        _ => "permanent",
    }
}

impl SqliteStore {
    /// Opens (creating if needed) a database file, in WAL mode.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, SqliteError> {
        SqliteStore::init(Connection::open(path)?)
    }

    /// A database in memory (tests, examples).
    pub fn open_in_memory() -> Result<SqliteStore, SqliteError> {
        SqliteStore::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, SqliteError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL: readers (`gapless inspect`) do not block the writer. `synchronous = NORMAL`
        // is crash-safe for a killed process (a power loss may drop the last transactions,
        // never half of one: the checkpoint and its messages stay consistent).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore { conn })
    }

    fn commit_batch(&mut self, batch: &[Write]) -> Result<(), SqliteError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO messages
                 (convo, id, seq, epoch, kind, payload, created_at, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut skip = tx.prepare_cached(
                "INSERT OR IGNORE INTO skipped (convo, from_seq, to_seq) VALUES (?1, ?2, ?3)",
            )?;
            let mut unreachable = tx.prepare_cached(
                "INSERT OR IGNORE INTO unreachable (convo, from_seq, to_seq) VALUES (?1, ?2, ?3)",
            )?;
            let mut anomaly_insert = tx.prepare_cached(
                "INSERT INTO anomalies (convo, at_ms, words) VALUES (?1, ?2, ?3)",
            )?;
            let mut anomaly_prune = tx.prepare_cached(
                "DELETE FROM anomalies WHERE convo = ?1 AND rowid NOT IN
                 (SELECT rowid FROM anomalies WHERE convo = ?1 ORDER BY rowid DESC LIMIT ?2)",
            )?;
            let mut clear = tx.prepare_cached(
                "INSERT INTO checkpoints (convo, checkpoint, cleared) VALUES (?1, ?3, ?2)
                 ON CONFLICT (convo) DO UPDATE SET cleared = excluded.cleared",
            )?;
            let mut enqueue = tx.prepare_cached(
                "INSERT OR IGNORE INTO outbox
                 (convo, msg_id, payload, epoch, padded_size, ephemeral, state, seq,
                  message_id, received_at, enqueued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let mut unqueue =
                tx.prepare_cached("DELETE FROM outbox WHERE convo = ?1 AND msg_id = ?2")?;
            let mut sent = tx.prepare_cached(
                "UPDATE outbox SET state = 'sent', seq = ?3, message_id = ?4, detail = NULL
                 WHERE convo = ?1 AND msg_id = ?2",
            )?;
            let mut moved = tx.prepare_cached(
                "UPDATE outbox SET state = ?3, detail = ?4 WHERE convo = ?1 AND msg_id = ?2",
            )?;
            for write in batch.iter().filter(|w| w.is_stored()) {
                match write {
                    Write::Enqueued(out) => {
                        let answer = out.sent.as_ref();
                        enqueue.execute(params![
                            out.convo.as_str(),
                            out.msg_id.as_str(),
                            &out.payload,
                            to_i64(out.epoch.0),
                            i64::from(out.padded_size),
                            out.ephemeral,
                            if answer.is_some() { "sent" } else { "queued" },
                            answer.map(|a| to_i64(a.seq.0)),
                            answer.map(|a| a.message_id.as_str()),
                            answer.and_then(|a| a.received_at.as_deref()),
                            now_ms(),
                        ])?;
                    }
                    Write::Outbox {
                        convo,
                        msg_id,
                        state,
                    } => {
                        let key = (convo.as_str(), msg_id.as_str());
                        if state.is_final() {
                            unqueue.execute(params![key.0, key.1])?;
                        } else if let OutboxState::Sent { seq, message_id } = state {
                            sent.execute(params![
                                key.0,
                                key.1,
                                to_i64(seq.0),
                                message_id.as_str()
                            ])?;
                        } else {
                            let (word, detail) = state_words(state);
                            moved.execute(params![key.0, key.1, word, detail])?;
                        }
                    }
                    Write::Message {
                        delivery,
                        received_at_ms,
                    } => {
                        let m = &delivery.message;
                        let kind = match m.kind {
                            MessageKind::Commit => "commit",
                            _ => "app",
                        };
                        insert.execute(params![
                            delivery.convo.as_str(),
                            m.id.as_str(),
                            to_i64(m.seq.0),
                            to_i64(m.epoch.0),
                            kind,
                            &m.payload,
                            m.created_at.as_deref(),
                            to_i64(*received_at_ms),
                        ])?;
                    }
                    Write::Skipped {
                        convo, from, to, ..
                    } => {
                        skip.execute(params![convo.as_str(), to_i64(from.0), to_i64(to.0)])?;
                    }
                    Write::Unreachable {
                        convo, from, to, ..
                    } => {
                        let row = params![convo.as_str(), to_i64(from.0), to_i64(to.0)];
                        unreachable.execute(row)?;
                    }
                    Write::Cleared { convo, reason } => {
                        clear.execute(params![
                            convo.as_str(),
                            reason_name(*reason),
                            EMPTY_CHECKPOINT
                        ])?;
                    }
                    // Saved below: the last of each conversation's.
                    Write::Checkpoint { .. } => {}
                    Write::Anomaly {
                        convo,
                        anomaly,
                        at_ms,
                    } => {
                        let convo = convo.as_str();
                        let words = anomaly.to_string();
                        anomaly_insert.execute(params![convo, to_i64(*at_ms), words])?;
                        anomaly_prune.execute(params![convo, KEPT_ANOMALIES])?;
                    }
                }
            }
            // Only the last checkpoint of each conversation in the batch counts.
            let mut last: Vec<(&ConvoId, &Checkpoint)> = Vec::new();
            for write in batch {
                if let Some(cp) = write.checkpoint() {
                    match last.iter_mut().find(|(c, _)| *c == write.convo()) {
                        Some(slot) => slot.1 = cp,
                        None => last.push((write.convo(), cp)),
                    }
                }
            }
            let mut save = tx.prepare_cached(
                "INSERT INTO checkpoints (convo, checkpoint) VALUES (?1, ?2)
                 ON CONFLICT (convo) DO UPDATE SET checkpoint = excluded.checkpoint",
            )?;
            for (convo, cp) in last {
                let json = serde_json::to_string(cp).map_err(|source| SqliteError::Checkpoint {
                    convo: convo.to_string(),
                    source,
                })?;
                save.execute(params![convo.as_str(), json])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn checkpoint_of(
        &self,
        convo: &str,
    ) -> Result<Option<(Checkpoint, Option<String>)>, SqliteError> {
        let row: Option<(String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT checkpoint, cleared FROM checkpoints WHERE convo = ?1",
                params![convo],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(json, cleared)| {
            serde_json::from_str(&json)
                .map(|cp| (cp, cleared))
                .map_err(|source| SqliteError::Checkpoint {
                    convo: convo.to_string(),
                    source,
                })
        })
        .transpose()
    }

    fn load_convo(&self, convo: &ConvoId, recent: usize) -> Result<Option<Restored>, SqliteError> {
        let Some((checkpoint, _)) = self.checkpoint_of(convo.as_str())? else {
            return Ok(None);
        };
        // The `recent` newest messages and everything from the recheck point up: one range
        // from the lower of the two seqs (messages sharing the window's lowest seq come
        // along, which only tells the machine more).
        let floor = checkpoint.recheck_from.map_or(i64::MAX, |s| to_i64(s.0));
        let window_low: i64 = match recent.checked_sub(1) {
            None => i64::MAX,
            Some(offset) => self
                .conn
                .prepare_cached(
                    "SELECT seq FROM messages WHERE convo = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2",
                )?
                .query_row(params![convo.as_str(), offset as i64], |r| r.get(0))
                .optional()?
                .unwrap_or(i64::MIN),
        };
        let known: Vec<Known> = self
            .conn
            .prepare_cached(
                "SELECT seq, id, epoch FROM messages WHERE convo = ?1 AND seq >= ?2 ORDER BY seq",
            )?
            .query_map(params![convo.as_str(), floor.min(window_low)], |r| {
                Ok(Known::new(
                    Seq(to_u64(r.get(0)?)),
                    r.get::<_, String>(1)?,
                    Epoch(to_u64(r.get(2)?)),
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(Restored {
            checkpoint,
            recent: known,
        }))
    }

    /// Every conversation with a checkpoint, with its counts.
    pub fn summaries(&self) -> Result<Vec<ConvoSummary>, SqliteError> {
        let convos: Vec<String> = self
            .conn
            .prepare("SELECT convo FROM checkpoints ORDER BY convo")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(convos.len());
        for convo in convos {
            let (checkpoint, cleared) = self.checkpoint_of(&convo)?.unwrap_or_default();
            let (messages, min, max): (i64, Option<i64>, Option<i64>) = self.conn.query_row(
                "SELECT COUNT(*), MIN(seq), MAX(seq) FROM messages WHERE convo = ?1",
                params![convo],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let skipped = self
                .conn
                .prepare_cached(
                    "SELECT from_seq, to_seq FROM skipped WHERE convo = ?1 ORDER BY from_seq",
                )?
                .query_map(params![convo], |r| {
                    Ok((to_u64(r.get(0)?), to_u64(r.get(1)?)))
                })?
                .collect::<Result<_, _>>()?;
            let unreachable = self
                .conn
                .prepare_cached(
                    "SELECT u.from_seq, u.to_seq,
                            (SELECT COUNT(*) FROM messages m
                             WHERE m.convo = u.convo AND m.seq BETWEEN u.from_seq AND u.to_seq)
                     FROM unreachable u WHERE u.convo = ?1 ORDER BY u.from_seq",
                )?
                .query_map(params![convo], |r| {
                    Ok((to_u64(r.get(0)?), to_u64(r.get(1)?), to_u64(r.get(2)?)))
                })?
                .collect::<Result<_, _>>()?;
            let mut anomalies: Vec<(u64, String)> = self
                .conn
                .prepare_cached(
                    "SELECT at_ms, words FROM anomalies WHERE convo = ?1 ORDER BY rowid DESC",
                )?
                .query_map(params![convo], |r| Ok((to_u64(r.get(0)?), r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            anomalies.reverse();
            out.push(ConvoSummary {
                convo,
                checkpoint,
                cleared,
                messages: to_u64(messages),
                seq_range: min.zip(max).map(|(a, b)| (to_u64(a), to_u64(b))),
                skipped,
                unreachable,
                anomalies,
            });
        }
        Ok(out)
    }

    /// Every stored message (without payload), by conversation then seq then id.
    pub fn messages(&self) -> Result<Vec<StoredMessage>, SqliteError> {
        let mut stmt = self.conn.prepare(
            "SELECT convo, seq, id, epoch, kind, length(payload) FROM messages
             ORDER BY convo, seq, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredMessage {
                convo: r.get(0)?,
                seq: to_u64(r.get(1)?),
                id: r.get(2)?,
                epoch: to_u64(r.get(3)?),
                kind: r.get(4)?,
                payload_len: to_u64(r.get(5)?),
            })
        })?;
        rows.collect::<Result<_, _>>().map_err(SqliteError::from)
    }

    /// A stored message's payload.
    pub fn payload(&self, convo: &str, id: &str) -> Result<Option<Vec<u8>>, SqliteError> {
        self.conn
            .query_row(
                "SELECT payload FROM messages WHERE convo = ?1 AND id = ?2",
                params![convo, id],
                |r| r.get(0),
            )
            .optional()
            .map_err(SqliteError::from)
    }

    /// The outbox: every message not confirmed nor dropped, in enqueue order.
    pub fn outbox_entries(&self) -> Result<Vec<OutboxEntry>, SqliteError> {
        let mut stmt = self.conn.prepare(
            "SELECT convo, msg_id, state, seq, message_id, detail, length(payload), epoch,
                    ephemeral, enqueued_at
             FROM outbox ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(OutboxEntry {
                convo: r.get(0)?,
                msg_id: r.get(1)?,
                state: r.get(2)?,
                seq: r.get::<_, Option<i64>>(3)?.map(to_u64),
                message_id: r.get(4)?,
                detail: r.get(5)?,
                payload_len: to_u64(r.get(6)?),
                epoch: to_u64(r.get(7)?),
                ephemeral: r.get(8)?,
                enqueued_at_ms: to_u64(r.get(9)?),
            })
        })?;
        rows.collect::<Result<_, _>>().map_err(SqliteError::from)
    }

    fn pending(&self) -> Result<Vec<Outgoing>, SqliteError> {
        // A message whose delivery is stored is confirmed (its row goes with the next
        // state change; it is not enqueued again).
        let mut stmt = self.conn.prepare(
            "SELECT o.convo, o.msg_id, o.payload, o.epoch, o.padded_size, o.ephemeral, o.seq,
                    o.message_id, o.received_at
             FROM outbox o
             WHERE o.message_id IS NULL OR NOT EXISTS
                   (SELECT 1 FROM messages m WHERE m.convo = o.convo AND m.id = o.message_id)
             ORDER BY o.rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            let seq: Option<i64> = r.get(6)?;
            let message_id: Option<String> = r.get(7)?;
            let received_at: Option<String> = r.get(8)?;
            Ok(Outgoing {
                convo: ConvoId::from(r.get::<_, String>(0)?),
                msg_id: MsgId::from(r.get::<_, String>(1)?),
                payload: r.get(2)?,
                epoch: Epoch(to_u64(r.get(3)?)),
                padded_size: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
                ephemeral: r.get(5)?,
                sent: seq.zip(message_id).map(|(seq, id)| SendAnswer {
                    seq: Seq(to_u64(seq)),
                    message_id: id.into(),
                    received_at: received_at.map(String::into_boxed_str),
                }),
            })
        })?;
        rows.collect::<Result<_, _>>().map_err(SqliteError::from)
    }

    /// Runs SQL on the connection (tests that need to make SQLite fail).
    #[doc(hidden)]
    pub fn debug_execute(&self, sql: &str) -> Result<(), SqliteError> {
        self.conn.execute_batch(sql).map_err(SqliteError::from)
    }
}

impl Store for SqliteStore {
    fn commit(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        Ok(self.commit_batch(batch)?)
    }

    fn load(&mut self, convo: &ConvoId, recent: usize) -> Result<Option<Restored>, StoreError> {
        Ok(self.load_convo(convo, recent)?)
    }

    fn contains(&mut self, convo: &ConvoId, id: &gapless::MessageId) -> Result<bool, StoreError> {
        let found = self
            .conn
            .prepare_cached("SELECT 1 FROM messages WHERE convo = ?1 AND id = ?2")
            .and_then(|mut q| {
                q.query_row(params![convo.as_str(), id.as_str()], |_| Ok(()))
                    .optional()
            })
            .map_err(SqliteError::from)?;
        Ok(found.is_some())
    }

    fn outbox(&mut self) -> Result<Vec<Outgoing>, StoreError> {
        Ok(self.pending()?)
    }
}
