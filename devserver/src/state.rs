//! The conversations: one in-memory log each, seqs assigned as the real server does.

use crate::faults::{Faults, Plan, Topic};
use crate::limits::Limiter;
use gapless_catbird::message::{Ciphertext, MessageView};
use gapless_catbird::messages::{GapInfo, GetMessagesResponse};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast;

/// One stored message.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub(crate) id: String,
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
    pub(crate) commit: bool,
    pub(crate) ciphertext: Vec<u8>,
    pub(crate) created: SystemTime,
    pub(crate) cursor: String,
    pub(crate) visible: bool,
    pub(crate) expires: Option<Instant>,
}

impl Stored {
    fn served(&self, now: Instant) -> bool {
        self.visible && self.seq > 0 && self.expires.is_none_or(|e| e > now)
    }

    fn view(&self, convo: &str, stream_style: bool) -> MessageView {
        let created = humantime::format_rfc3339_micros(self.created).to_string();
        MessageView {
            id: self.id.clone(),
            convo_id: convo.to_string(),
            ciphertext: Ciphertext::from_bytes(&self.ciphertext),
            epoch: self.epoch,
            seq: self.seq,
            // The real server: `+00:00` on the stream, `Z` from getMessages, same instant.
            created_at: if stream_style {
                created.replace('Z', "+00:00")
            } else {
                created
            },
            message_type: (!stream_style)
                .then(|| if self.commit { "commit" } else { "app" }.into()),
            reactions: None,
            sender: None,
            embed_type: None,
            embed_uri: None,
        }
    }

    /// The message as mlsChat `getMessages` returns it: `createdAt` in milliseconds, `Z`.
    pub(crate) fn chat_view(&self, convo: &str) -> MessageView {
        MessageView {
            created_at: humantime::format_rfc3339_millis(self.created).to_string(),
            ..self.view(convo, false)
        }
    }

    /// An entry of mlsChat's `commits` array.
    pub(crate) fn commit_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "epoch": self.epoch,
            "commitData": Ciphertext::from_bytes(&self.ciphertext),
            "sender": null,
            "createdAt": humantime::format_rfc3339_millis(self.created).to_string(),
        })
    }

    /// The socket's `messageEvent` (nanoseconds in `createdAt`, `messageType` always;
    /// `ephemeral: true` and seq 0 for an ephemeral message), or `None` for a commit: the
    /// real server never pushes commits on the socket.
    pub(crate) fn ws_event(&self, convo: &str, cursor: String) -> Option<WsEvent> {
        if self.commit {
            return None;
        }
        let message = MessageView {
            created_at: humantime::format_rfc3339_nanos(self.created).to_string(),
            message_type: Some("app".into()),
            ..self.view(convo, false)
        };
        let mut fields = serde_json::json!({ "message": message });
        if self.seq == 0 {
            fields["ephemeral"] = true.into();
        }
        Some(WsEvent::new(
            "messageEvent",
            "#messageEvent",
            cursor,
            fields,
        ))
    }

    /// What subscribers of both APIs receive when it becomes visible.
    fn live(&self, convo: &str, ws_cursor: String) -> Live {
        Live {
            sse: Some(self.event_json(convo).into()),
            ws: self.ws_event(convo, ws_cursor).map(Arc::new),
        }
    }

    /// The `messageEvent` frame's JSON.
    pub(crate) fn event_json(&self, convo: &str) -> String {
        serde_json::json!({
            "$type": "blue.catbird.mls.streamConvoEvents#messageEvent",
            "cursor": self.cursor,
            "message": self.view(convo, true),
        })
        .to_string()
    }
}

/// What a stream subscriber receives: the SSE frame's JSON, the socket's event, or both.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    /// The `streamConvoEvents` JSON (`None`: not on the SSE stream).
    pub(crate) sse: Option<Arc<str>>,
    /// The `subscribeEvents` event (`None`: not on the socket; commits never are).
    pub(crate) ws: Option<Arc<WsEvent>>,
}

/// One event of the mlsChat socket, before the connection numbers it: each socket adds its
/// own top-level `seq` and encodes the frame.
#[derive(Clone, Debug)]
pub(crate) struct WsEvent {
    /// The header's `t` (`#messageEvent`).
    pub(crate) t: &'static str,
    /// The body without `seq`.
    pub(crate) body: serde_json::Map<String, serde_json::Value>,
    /// The body's `cursor` (what a connection's cursor filter compares).
    pub(crate) cursor: String,
}

/// The `$type` namespace the real server writes on the socket (the old one).
const WS_NSID: &str = gapless_catbird::LEGACY_SUBSCRIBE_CONVO_EVENTS;

/// The caller of every request: the dev server's tokens name no account (see
/// `limits::RateLimits`), so typing and reaction events carry this DID.
pub(crate) const DEV_DID: &str = "did:web:127.0.0.1";

impl WsEvent {
    /// An event of kind `short` (`typingEvent`) with its fields; `$type` and `cursor` added.
    pub(crate) fn new(
        short: &'static str,
        t: &'static str,
        cursor: String,
        fields: serde_json::Value,
    ) -> WsEvent {
        let mut body = match fields {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        body.insert("$type".into(), format!("{WS_NSID}#{short}").into());
        body.insert("cursor".into(), cursor.clone().into());
        WsEvent { t, body, cursor }
    }

    /// The binary message for frame `seq`, encoded as the real server encodes it.
    pub(crate) fn frame(&self, seq: u64) -> Vec<u8> {
        let mut body = self.body.clone();
        body.insert("seq".into(), seq.into());
        gapless_catbird::realtime::encode_event_frame(self.t, &serde_json::Value::Object(body))
    }
}

pub(crate) struct Log {
    pub(crate) stored: Vec<Stored>,
    max_seq: u64,
    epoch: u64,
    /// Messages sent so far (the plan's index).
    sent: u64,
    next_shares: bool,
    pub(crate) tx: broadcast::Sender<Live>,
    pub(crate) streams_opened: u64,
    pub(crate) fetches: u64,
    /// Stored messages by the client's `msgId` (an index into `stored`): a resend gets
    /// the first answer again (the real server's per-conversation dedup).
    pub(crate) by_msg_id: HashMap<String, usize>,
    /// `sendMessage` requests so far (the send faults' index).
    pub(crate) send_requests: u64,
    /// Whether the account is a member (`false`: it left; 403 everywhere).
    pub(crate) member: bool,
}

impl Log {
    /// The conversation's current epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    fn new() -> Log {
        let (tx, _) = broadcast::channel(4096);
        Log {
            stored: Vec::new(),
            max_seq: 0,
            epoch: 0,
            sent: 0,
            next_shares: false,
            tx,
            streams_opened: 0,
            fetches: 0,
            by_msg_id: HashMap::new(),
            send_requests: 0,
            member: true,
        }
    }
}

/// What a send asked for.
#[derive(Clone, Debug, Default)]
pub struct Send {
    /// The client's `msgId` (the id of an ephemeral message).
    pub msg_id: Option<String>,
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
    /// The sender's epoch (`None`: the conversation's).
    pub epoch: Option<u64>,
    /// `delivery: ephemeral`.
    pub ephemeral: bool,
    /// Whether server-side faults (holes, late commits, …) may apply. The traffic
    /// generator's messages are subject to them; a client's `sendMessage` is too unless the
    /// profile is calm. A message with a `msg_id` (a client's) is never turned into an
    /// ephemeral message or a commit, sent an epoch behind or expired: those faults shape
    /// the generated traffic only, so that every message a client sent stays in
    /// [`crate::DevServer::log`].
    pub faulty: bool,
}

/// What a send did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The server's id.
    pub id: String,
    /// The seq (`0`: ephemeral).
    pub seq: u64,
    /// The epoch.
    pub epoch: u64,
    /// When it becomes visible, if it commits late.
    pub late_by: Option<Duration>,
    /// When it expires, if it does.
    pub expires_in: Option<Duration>,
}

/// Counts of the faults applied, so that tests can observe each knob.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Keyed by knob name.
    pub counts: BTreeMap<&'static str, u64>,
}

impl FaultCounts {
    pub(crate) fn bump(&mut self, knob: &'static str) {
        *self.counts.entry(knob).or_default() += 1;
    }

    /// How often a knob fired.
    pub fn get(&self, knob: &str) -> u64 {
        self.counts.get(knob).copied().unwrap_or(0)
    }
}

pub(crate) struct State {
    pub(crate) convos: HashMap<String, Log>,
    pub(crate) faults: Faults,
    pub(crate) plan: Plan,
    pub(crate) next_cursor: u64,
    pub(crate) counts: FaultCounts,
    pub(crate) used_nonces: HashMap<String, Instant>,
    /// The account's rate-limit buckets (used when `faults.limits` is set).
    pub(crate) limiter: Limiter,
    /// Cursors of socket events so far.
    next_ws_cursor: u64,
    /// Subscription tickets issued and not yet pruned.
    pub(crate) tickets: HashMap<String, Grant>,
    /// mlsChat sockets open now (the account's: all of them).
    pub(crate) open_sockets: usize,
    /// mlsChat sockets opened so far (the plan's index).
    pub(crate) sockets_opened: u64,
    /// Stored messages by `idempotencyKey`, server-wide as the real server looks them up:
    /// (conversation, index into its `stored`).
    pub(crate) idempotency: HashMap<String, (String, usize)>,
    /// Every `sendMessage` applied, in order (the ground truth of the send tests).
    pub(crate) sends: Vec<AppliedSend>,
}

/// A `sendMessage` request the server applied: a new message stored (or, ephemeral,
/// streamed only). A resend answered from the first is not one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedSend {
    /// The conversation.
    pub convo: String,
    /// The client's `msgId`.
    pub msg_id: String,
    /// The server's id of the message (the answer's `messageId`; the `msgId` when
    /// ephemeral).
    pub message_id: String,
    /// Its seq (`0`: ephemeral).
    pub seq: u64,
    /// Its epoch.
    pub epoch: u64,
    /// `delivery: ephemeral` on the SSE-era route: streamed, never stored.
    pub ephemeral: bool,
    /// The route: `blue.catbird.mls.sendMessage` or `blue.catbird.mlsChat.sendMessage`.
    pub nsid: &'static str,
}

/// What a subscription ticket grants.
#[derive(Clone, Debug)]
pub(crate) struct Grant {
    /// The conversation (`None`: a global ticket).
    pub(crate) convo: Option<String>,
    /// When it stops opening sockets.
    pub(crate) expires: Instant,
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A 26-character Crockford base32 cursor, ordered like the counter (as ULIDs are).
fn cursor(counter: u64, salt: u64) -> String {
    let v: u128 = (u128::from(counter) << 64) | u128::from(salt);
    (0..26)
        .rev()
        .map(|i| CROCKFORD[((v >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// Whether a client's cursor is well-formed (26 Crockford characters, any case).
pub(crate) fn valid_cursor(c: &str) -> bool {
    c.len() == 26
        && c.bytes().all(|b| {
            CROCKFORD.contains(&b.to_ascii_uppercase()) || b"ILOU".contains(&b.to_ascii_uppercase())
        })
}

/// A socket event's cursor: its own sequence (the real server's are per conversation and
/// event type, generated after the fact), uppercase like a ULID, so that any lowercase text
/// sorts above every one.
fn ws_cursor(counter: u64, plan: &Plan) -> String {
    cursor(counter, plan.value(Topic::Payload, counter, 2))
}

fn uuid(v: u64, w: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        v >> 32,
        (v >> 16) & 0xffff,
        v & 0xfff,
        w >> 52,
        w & 0xffff_ffff_ffff
    )
}

impl State {
    pub(crate) fn new(faults: Faults, seed: u64) -> State {
        State {
            convos: HashMap::new(),
            faults,
            plan: Plan::new(seed),
            next_cursor: 0,
            counts: FaultCounts::default(),
            used_nonces: HashMap::new(),
            limiter: Limiter::default(),
            next_ws_cursor: 0,
            tickets: HashMap::new(),
            open_sockets: 0,
            sockets_opened: 0,
            idempotency: HashMap::new(),
            sends: Vec::new(),
        }
    }

    /// The conversation if the account is a member of it (the real server answers 403 for
    /// an unknown conversation and for one the account left alike).
    pub(crate) fn member_log(&mut self, convo: &str) -> Option<&mut Log> {
        self.convos.get_mut(convo).filter(|l| l.member)
    }

    pub(crate) fn create(&mut self, convo: &str) {
        self.convos
            .entry(convo.to_string())
            .or_insert_with(Log::new);
    }

    /// Sends a message; returns what happened and, for a late commit, the index to make
    /// visible later.
    pub(crate) fn send(&mut self, convo: &str, req: Send, now: Instant) -> (Sent, Option<usize>) {
        self.create(convo);
        let plan = self.plan;
        let f = self.faults.clone();
        let convo_key = key(convo);
        let log = self.convos.get_mut(convo).expect("created");
        let n = log.sent;
        log.sent += 1;
        let roll = |p: u16, t: Topic| req.faulty && plan.roll(p, t, convo_key, n);
        // What a message is, the generated traffic's only: a client's stays what it sent.
        let generated = req.msg_id.is_none();
        let ephemeral = req.ephemeral || (generated && roll(f.ephemeral, Topic::Ephemeral));
        let mut counts = Vec::new();
        let late = !ephemeral && roll(f.late, Topic::Late);
        let (seq, shares) = if ephemeral {
            (0, false)
        } else if std::mem::take(&mut log.next_shares)
            && log
                .stored
                .last()
                .is_some_and(|s| s.visible && s.seq == log.max_seq)
        {
            counts.push("shared_seq");
            (log.max_seq, true)
        } else {
            if roll(f.hole, Topic::Hole) {
                counts.push("hole");
                log.max_seq += 1;
            }
            log.max_seq += 1;
            log.next_shares = !late && roll(f.shared_seq, Topic::Shared);
            (log.max_seq, false)
        };
        let late = late && !shares;
        let commit = !ephemeral && generated && roll(f.commit, Topic::Commit);
        if commit {
            counts.push("commit");
            log.epoch += 1;
        }
        let epoch = match req.epoch {
            Some(e) => e,
            None if generated && roll(f.epoch_back, Topic::EpochBack) && log.epoch > 0 => {
                counts.push("epoch_back");
                log.epoch - 1
            }
            None => log.epoch,
        };
        let id = match (&req.msg_id, ephemeral) {
            (Some(m), true) => m.clone(),
            _ => uuid(
                plan.value(Topic::Id, convo_key, n),
                plan.value(Topic::Id, n, convo_key),
            ),
        };
        let cursor = self.next_sse_cursor();
        let late_by = late.then(|| plan.delay(f.late_max, Topic::LateDelay, convo_key, n));
        let expires_in = (!ephemeral && generated && roll(f.expire, Topic::Expire))
            .then(|| plan.delay(f.expire_max, Topic::ExpireDelay, convo_key, n));
        if late_by.is_some() {
            counts.push("late");
        }
        if expires_in.is_some() {
            counts.push("expire");
        }
        if ephemeral && !req.ephemeral {
            counts.push("ephemeral");
        }
        let stored = Stored {
            id: id.clone(),
            seq,
            epoch,
            commit,
            ciphertext: req.ciphertext,
            created: SystemTime::now(),
            cursor,
            visible: late_by.is_none(),
            expires: expires_in.map(|d| now + d),
        };
        let live = late_by.is_none().then(|| {
            self.next_ws_cursor += 1;
            stored.live(convo, ws_cursor(self.next_ws_cursor, &plan))
        });
        let log = self.convos.get_mut(convo).expect("created");
        let index = if ephemeral {
            None
        } else {
            log.stored.push(stored);
            let index = log.stored.len() - 1;
            if let Some(m) = &req.msg_id {
                log.by_msg_id.insert(m.clone(), index);
            }
            Some(index)
        };
        if let Some(live) = live {
            let _ = log.tx.send(live);
        }
        for c in counts {
            self.counts.bump(c);
        }
        let sent = Sent {
            id,
            seq,
            epoch,
            late_by,
            expires_in,
        };
        (sent, index.filter(|_| late_by.is_some()))
    }

    /// The next SSE event cursor.
    pub(crate) fn next_sse_cursor(&mut self) -> String {
        self.next_cursor += 1;
        cursor(
            self.next_cursor,
            self.plan.value(Topic::Payload, self.next_cursor, 0),
        )
    }

    /// A late message commits.
    pub(crate) fn make_visible(&mut self, convo: &str, index: usize) {
        self.next_ws_cursor += 1;
        let cursor = ws_cursor(self.next_ws_cursor, &self.plan);
        if let Some(log) = self.convos.get_mut(convo) {
            if let Some(s) = log.stored.get_mut(index) {
                s.visible = true;
                let _ = log.tx.send(s.live(convo, cursor));
            }
        }
    }

    /// Sends an event to the conversation's sockets only (typing, reactions): returns its
    /// cursor, or `None` if there is no such conversation.
    pub(crate) fn broadcast_ws(
        &mut self,
        convo: &str,
        short: &'static str,
        t: &'static str,
        fields: serde_json::Value,
    ) -> Option<String> {
        let log = self.convos.get(convo)?;
        self.next_ws_cursor += 1;
        let cursor = ws_cursor(self.next_ws_cursor, &self.plan);
        let event = WsEvent::new(short, t, cursor.clone(), fields);
        let _ = log.tx.send(Live {
            sse: None,
            ws: Some(Arc::new(event)),
        });
        Some(cursor)
    }

    /// The rows `getMessages` may serve with `seq > since`, unordered.
    fn rows(log: &Log, since_seq: Option<i64>, now: Instant) -> Vec<&Stored> {
        log.stored
            .iter()
            .filter(|s| s.served(now) && since_seq.is_none_or(|since| s.seq as i64 > since))
            .collect()
    }

    /// mlsChat `getMessages`' messages, as the real server answers: with `since_seq`,
    /// `seq > since ORDER BY epoch, seq LIMIT limit`; without, the newest `limit` in
    /// `(epoch, seq)` descending order. `None`: no such conversation.
    pub(crate) fn chat_page(
        &self,
        convo: &str,
        since_seq: Option<i64>,
        limit: usize,
        now: Instant,
    ) -> Option<Vec<MessageView>> {
        let log = self.convos.get(convo)?;
        let mut rows = State::rows(log, since_seq, now);
        rows.sort_by_key(|s| (s.epoch, s.seq));
        if since_seq.is_none() {
            rows.reverse();
        }
        rows.truncate(limit);
        Some(rows.iter().map(|s| s.chat_view(convo)).collect())
    }

    /// mlsChat's `commits` array: every commit served with an epoch in `from..=to` (`to`
    /// defaults to the current epoch), by epoch. `None`: no such conversation.
    pub(crate) fn chat_commits(
        &self,
        convo: &str,
        from: u64,
        to: Option<u64>,
        now: Instant,
    ) -> Option<Vec<serde_json::Value>> {
        let log = self.convos.get(convo)?;
        let to = to.unwrap_or(log.epoch);
        let mut rows: Vec<&Stored> = State::rows(log, None, now)
            .into_iter()
            .filter(|s| s.commit && (from..=to).contains(&s.epoch))
            .collect();
        rows.sort_by_key(|s| (s.epoch, s.seq));
        Some(rows.iter().map(|s| s.commit_json()).collect())
    }

    /// `getMessages`, as the real server answers it.
    pub(crate) fn page(
        &self,
        convo: &str,
        since_seq: Option<i64>,
        limit: usize,
        now: Instant,
    ) -> Option<GetMessagesResponse> {
        let log = self.convos.get(convo)?;
        let mut rows = State::rows(log, since_seq, now);
        rows.sort_by_key(|s| (s.epoch, s.seq));
        rows.truncate(limit);
        let messages: Vec<MessageView> = rows.iter().map(|s| s.view(convo, false)).collect();
        let last_seq = messages.last().map(|m| m.seq);
        // gapInfo: convo-wide, only when there are gaps.
        let live: std::collections::BTreeSet<u64> = log
            .stored
            .iter()
            .filter(|s| s.served(now))
            .map(|s| s.seq)
            .collect();
        let gap_info = match (live.first(), live.last()) {
            (Some(&lo), Some(&hi)) => {
                let missing: Vec<u64> = (lo..=hi).filter(|s| !live.contains(s)).collect();
                (!missing.is_empty()).then(|| GapInfo {
                    has_gaps: true,
                    missing_seqs: missing,
                    total_messages: log.stored.iter().filter(|s| s.served(now)).count() as u64,
                })
            }
            _ => None,
        };
        Some(GetMessagesResponse {
            messages,
            last_seq,
            gap_info,
            cursor: None,
        })
    }

    /// The seq of a message id, for `sinceMessage`.
    pub(crate) fn seq_of(&self, convo: &str, id: &str) -> Option<u64> {
        self.convos
            .get(convo)?
            .stored
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.seq)
    }

    /// Commit messages after `cursor` (what the real server replays on resume).
    pub(crate) fn replay(&self, convo: &str, after: &str, now: Instant) -> Vec<String> {
        let after = after.to_ascii_uppercase();
        self.convos.get(convo).map_or_else(Vec::new, |log| {
            log.stored
                .iter()
                .filter(|s| s.commit && s.served(now) && s.cursor > after)
                .map(|s| s.event_json(convo))
                .collect()
        })
    }
}

/// A stable number for a conversation id (for the plan).
pub(crate) fn key(convo: &str) -> u64 {
    convo.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
