//! The newest Catbird API (`blue.catbird.mlsChat.*`, server commit 5278d0c), beside the SSE
//! one and from the same logs and fault plan: the subscription ticket, the WebSocket,
//! `getMessages` and `sendMessage`, as `shared/catbird/ws/README.md` records the real server.
//!
//! The socket, as the real one:
//! - refusals are plain HTTP before the upgrade: 401 (empty) for an unknown or expired
//!   ticket, 400 `text/plain` without one, 429 (empty) past [`Options::max_sockets`] open
//!   sockets;
//! - a WebSocket Ping right after the upgrade and every [`Options::ws_ping`]; no
//!   application heartbeat;
//! - each event one binary message (a DAG-CBOR header and body), numbered by a frame `seq`
//!   per connection from 1;
//! - nothing replayed, whatever the cursor: a cursor only drops the live events whose cursor
//!   is not above it (so lowercase garbage drops them all; one with a NUL byte gets a
//!   `BackfillFailed` error frame and no filter);
//! - commits are never pushed (only `getMessages` has them); a global ticket's socket
//!   carries the conversations that exist when it connects, and is dropped at once if there
//!   are none;
//! - no close frame ever: the connection just ends.
//!
//! The faults, per socket (the k-th socket opened, the n-th event it received): `cut` drops
//! the TCP connection; `drop` loses a numbered frame (a gap in the frame seqs, as the cursor
//! filter leaves); `duplicate` sends a frame twice; `reorder` holds one back until after the
//! next (or the next Ping); `slow_consumer` loses an event before it is numbered, silently,
//! as the real server's lagging broadcast does: no `infoEvent`, no gap in the frame seqs.

use crate::faults::{Plan, Topic};
use crate::state::{key, Grant, Live, State, WsEvent, DEV_DID};
use crate::{authorize, fetch_faults, text_400, Shared};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, SelectAll, StreamExt};
use gapless_catbird::realtime::{encode_error_frame, ClientFrame};
use gapless_catbird::{
    xrpc_path, LEGACY_SUBSCRIBE_CONVO_EVENTS, MLSCHAT_GET_MESSAGES, MLSCHAT_SEND_MESSAGE,
    MLSCHAT_SUBSCRIBE_EVENTS, MLSCHAT_SUBSCRIPTION_TICKET,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast;

#[cfg(doc)]
use crate::Options;

/// The mlsChat routes (the legacy socket path included: the real server answers it too).
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(&xrpc_path(MLSCHAT_SUBSCRIPTION_TICKET), post(ticket))
        .route(&xrpc_path(MLSCHAT_SUBSCRIBE_EVENTS), get(subscribe))
        .route(&xrpc_path(LEGACY_SUBSCRIBE_CONVO_EVENTS), get(subscribe))
        .route(&xrpc_path(MLSCHAT_GET_MESSAGES), get(get_messages))
        .route(
            &xrpc_path(MLSCHAT_SEND_MESSAGE),
            post(crate::send::mls_chat),
        )
}

fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// The real server's 400 for a query it cannot read: `{"error":"InvalidRequest",…}`.
fn invalid_request(detail: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "InvalidRequest",
            "message": format!("failed to decode request: {detail}"),
        })),
    )
        .into_response()
}

// ---- getSubscriptionTicket ------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TicketBody {
    #[serde(default)]
    convo_ids: Option<Vec<String>>,
}

/// `POST getSubscriptionTicket`: `{"convoIds":[C]}` (only the first is read) or `{}` (a
/// global ticket); 403 with an empty body for a conversation that does not exist.
async fn ticket(
    AxState(shared): AxState<Shared>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if let Err(d) = authorize(&shared, &headers, &uri, Some(MLSCHAT_SUBSCRIPTION_TICKET)) {
        return d.into_response();
    }
    let request: TicketBody = if body.iter().all(u8::is_ascii_whitespace) {
        TicketBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(_) => return empty(StatusCode::BAD_REQUEST),
        }
    };
    let convo = request.convo_ids.and_then(|ids| ids.into_iter().next());
    let ttl = shared.options.ticket_ttl;
    let now = Instant::now();
    let ticket = {
        let mut state = shared.state.lock().expect("state");
        if let Some(c) = &convo {
            if state.member_log(c).is_none() {
                return empty(StatusCode::FORBIDDEN);
            }
        }
        state.tickets.retain(|_, g| g.expires > now);
        let ticket = opaque_ticket(state.tickets.len() as u64);
        state.tickets.insert(
            ticket.clone(),
            Grant {
                convo,
                expires: now + ttl,
            },
        );
        ticket
    };
    let expires_at = humantime::format_rfc3339_micros(SystemTime::now() + ttl).to_string();
    Json(json!({
        "ticket": ticket,
        "endpoint": format!("ws://{}{}", shared.addr, xrpc_path(MLSCHAT_SUBSCRIBE_EVENTS)),
        "expiresAt": expires_at,
    }))
    .into_response()
}

/// An unguessable ticket (tickets are credentials, not faults: not from the plan).
fn opaque_ticket(n: u64) -> String {
    let random = RandomState::new();
    format!(
        "devticket.{:016x}{:016x}",
        random.hash_one(n),
        random.hash_one(SystemTime::now())
    )
}

// ---- subscribeEvents ------------------------------------------------------------------

/// A socket's place among the account's open ones: given back when the socket ends (or
/// its upgrade fails).
struct Slot(Shared);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().expect("state");
        state.open_sockets = state.open_sockets.saturating_sub(1);
    }
}

type Events = SelectAll<BoxStream<'static, Result<Live, broadcast::error::RecvError>>>;

/// What a connection was opened with.
struct Connection {
    events: Events,
    /// The cursor filter: live events whose cursor is not above it are dropped.
    cursor: Option<String>,
    /// The cursor could not be read (a NUL byte): an error frame first, then no filter.
    backfill_failed: bool,
    /// The plan's key for this socket's events.
    plan_key: u64,
    cut_after: Option<Duration>,
    _slot: Slot,
}

/// `GET subscribeEvents?ticket=…[&cursor=…]`, upgraded to a WebSocket.
async fn subscribe(
    AxState(shared): AxState<Shared>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(ticket) = q.get("ticket") else {
        return text_400("Failed to deserialize query string: missing field `ticket`");
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let cursor = q.get("cursor").cloned();
    let connection = {
        let mut state = shared.state.lock().expect("state");
        let now = Instant::now();
        let Some(grant) = state
            .tickets
            .get(ticket)
            .filter(|g| g.expires > now)
            .cloned()
        else {
            return empty(StatusCode::UNAUTHORIZED);
        };
        if state.open_sockets >= shared.options.max_sockets {
            return empty(StatusCode::TOO_MANY_REQUESTS);
        }
        state.open_sockets += 1;
        let slot = Slot(shared.clone());
        // The conversations are fixed now: one created later never reaches this socket.
        let convos: Vec<String> = match &grant.convo {
            Some(c) => vec![c.clone()],
            None => {
                let mut all: Vec<String> = state
                    .convos
                    .iter()
                    .filter(|(_, log)| log.member)
                    .map(|(c, _)| c.clone())
                    .collect();
                all.sort();
                all
            }
        };
        // Subscribed before the 101 goes out: nothing sent after it is missed.
        let events: Events = stream::select_all(convos.iter().filter_map(|c| {
            let rx = state.convos.get(c)?.tx.subscribe();
            Some(receiver_stream(rx))
        }));
        let socket_no = state.sockets_opened;
        state.sockets_opened += 1;
        let plan = state.plan;
        let f = &shared.options.faults;
        let scope = key(&format!(
            "mlsChat socket {}",
            grant.convo.as_deref().unwrap_or("*")
        ));
        let cut_after = plan
            .roll(f.cut, Topic::Cut, scope, socket_no)
            .then(|| plan.delay(f.cut_after_max, Topic::CutAfter, scope, socket_no));
        let backfill_failed = cursor.as_deref().is_some_and(|c| c.contains('\0'));
        Connection {
            events,
            cursor: cursor.filter(|_| !backfill_failed),
            backfill_failed,
            plan_key: scope ^ (socket_no << 32),
            cut_after,
            _slot: slot,
        }
    };
    upgrade.on_upgrade(move |socket| run(shared, socket, connection))
}

fn receiver_stream(
    rx: broadcast::Receiver<Live>,
) -> BoxStream<'static, Result<Live, broadcast::error::RecvError>> {
    stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Err(broadcast::error::RecvError::Closed) => None,
            other => Some((other, rx)),
        }
    })
    .boxed()
}

/// What one socket does with its events: numbers them, filters them by the cursor and
/// applies the plan's faults.
struct Pump {
    plan: Plan,
    plan_key: u64,
    cursor: Option<String>,
    /// Events received (the plan's index).
    events: u64,
    /// The last frame `seq` given.
    seq: u64,
    held: Option<Vec<u8>>,
}

impl Pump {
    /// The binary messages to send for one event, in order.
    fn on_event(&mut self, event: &WsEvent, shared: &Shared) -> Vec<Vec<u8>> {
        let f = &shared.options.faults;
        let n = self.events;
        self.events += 1;
        let (plan, a) = (self.plan, self.plan_key);
        let roll = |p, topic| plan.roll(p, topic, a, n);
        let count = |knob| shared.state.lock().expect("state").counts.bump(knob);
        // Lost before this connection saw it: no number, no notice (the real server's
        // lagging broadcast receiver).
        if roll(f.slow_consumer, Topic::SlowConsumer) {
            count("slow_consumer");
            return vec![];
        }
        self.seq += 1;
        if self
            .cursor
            .as_deref()
            .is_some_and(|c| event.cursor.as_str() <= c)
        {
            return vec![];
        }
        let frame = event.frame(self.seq);
        if roll(f.drop, Topic::Drop) {
            count("drop");
            return vec![];
        }
        if self.held.is_none() && roll(f.reorder, Topic::Reorder) {
            count("reorder");
            self.held = Some(frame);
            return vec![];
        }
        let mut out = vec![frame.clone()];
        if roll(f.duplicate, Topic::Duplicate) {
            count("duplicate");
            out.push(frame);
        }
        out.extend(self.held.take());
        out
    }
}

async fn run(shared: Shared, mut socket: WebSocket, mut connection: Connection) {
    // A global ticket of an account in no conversation: dropped at once (recording 085).
    if connection.events.is_empty() {
        return;
    }
    if connection.backfill_failed {
        let frame = encode_error_frame(
            "BackfillFailed",
            Some("Database query failed: Failed to get events"),
        );
        if socket.send(Message::Binary(frame.into())).await.is_err() {
            return;
        }
    }
    let mut pump = Pump {
        plan: Plan::new(shared.options.seed),
        plan_key: connection.plan_key,
        cursor: connection.cursor.take(),
        events: 0,
        seq: 0,
        held: None,
    };
    let cut_at = connection
        .cut_after
        .map(|d| tokio::time::Instant::now() + d);
    // The first tick is at once: the Ping right after the upgrade.
    let mut ping = tokio::time::interval(shared.options.ws_ping);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = shared.closing.clone();
    loop {
        let cut = async {
            match cut_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let outgoing = tokio::select! {
            biased;
            _ = cut => {
                shared.state.lock().expect("state").counts.bump("cut");
                return; // drops TCP: no close frame, as the real server
            }
            _ = closing.changed() => return,
            _ = ping.tick() => {
                let mut out: Vec<Message> =
                    pump.held.take().map(|h| Message::Binary(h.into())).into_iter().collect();
                out.push(Message::Ping(Bytes::new()));
                out
            }
            event = connection.events.next() => match event {
                Some(Ok(Live { ws: Some(event), .. })) => pump
                    .on_event(&event, &shared)
                    .into_iter()
                    .map(|b| Message::Binary(b.into()))
                    .collect(),
                // Commits and SSE-only events are not on the socket.
                Some(Ok(Live { ws: None, .. })) => continue,
                // Fell behind: the events are lost, silently and without a number.
                Some(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Some(Err(broadcast::error::RecvError::Closed)) | None => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(bytes))) => {
                    if let Ok(ClientFrame::Typing { convo, is_typing }) = ClientFrame::decode(&bytes) {
                        typing(&shared, convo.as_str(), is_typing);
                    }
                    continue;
                }
                Some(Ok(Message::Text(text))) => {
                    if let Some((convo, is_typing)) = typing_json(text.as_str()) {
                        typing(&shared, &convo, is_typing);
                    }
                    continue;
                }
                // A Ping is answered by the WebSocket layer; a Pong needs nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                // The client closed: drop TCP without answering its close frame.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            },
        };
        for message in outgoing {
            if socket.send(message).await.is_err() {
                return;
            }
        }
    }
}

/// A client's `#typing` as JSON text (the real server takes either encoding).
fn typing_json(text: &str) -> Option<(String, bool)> {
    let v: Value = serde_json::from_str(text).ok()?;
    v.get("$type")?.as_str()?.strip_suffix("#typing")?;
    Some((
        v.get("convoId")?.as_str()?.to_string(),
        v.get("isTyping")?.as_bool()?,
    ))
}

/// A client's `#typing`: a `typingEvent` to every socket of the conversation, the sender's
/// included.
fn typing(shared: &Shared, convo: &str, is_typing: bool) {
    typing_event(&mut shared.state.lock().expect("state"), convo, is_typing);
}

pub(crate) fn typing_event(state: &mut State, convo: &str, is_typing: bool) {
    state.broadcast_ws(
        convo,
        "typingEvent",
        "#typingEvent",
        json!({ "did": DEV_DID, "convoId": convo, "isTyping": is_typing }),
    );
}

// ---- getMessages ----------------------------------------------------------------------

/// What `type` asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    All,
    App,
    Commit,
}

/// `GET getMessages?convoId&limit&sinceSeq&type[&fromEpoch&toEpoch]`, as the real server
/// answers it (README items 13 and 14), with the fetch faults of the SSE-era route.
async fn get_messages(
    AxState(shared): AxState<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(d) = authorize(&shared, &headers, &uri, Some(MLSCHAT_GET_MESSAGES)) {
        return d.into_response();
    }
    let Some(convo) = q.get("convoId") else {
        return invalid_request("missing field `convoId`");
    };
    if convo.is_empty() {
        return empty(StatusCode::BAD_REQUEST);
    }
    // A number that does not parse: the parser's words, for the 400.
    let int = |name: &str| {
        q.get(name)
            .map(|v| v.parse::<i64>().map_err(|e| e.to_string()))
    };
    let since_seq = match int("sinceSeq").transpose() {
        Ok(s) => s,
        Err(e) => return invalid_request(&e),
    };
    let limit = match int("limit").transpose() {
        Ok(l) => l.unwrap_or(50).clamp(1, 100) as usize,
        Err(e) => return invalid_request(&e),
    };
    let kind = match q.get("type").map_or("all", String::as_str) {
        "all" => Kind::All,
        "app" => Kind::App,
        "commit" | "commits" => Kind::Commit,
        _ => return empty(StatusCode::BAD_REQUEST),
    };
    // Not in the lexicon: read from the raw query, an unreadable one as absent; they only
    // bound the `commits` array.
    let raw_param = |name: &str| {
        raw.as_deref().unwrap_or("").split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| v.parse::<i64>().ok()).flatten()
        })
    };
    let from_epoch = raw_param("fromEpoch").unwrap_or(0);
    let to_epoch = raw_param("toEpoch");
    if kind != Kind::App && (from_epoch < 0 || to_epoch.is_some_and(|to| to < from_epoch)) {
        return empty(StatusCode::BAD_REQUEST);
    }
    if let Err(refused) = fetch_faults(&shared, convo).await {
        return refused;
    }
    let state = shared.state.lock().expect("state");
    let now = Instant::now();
    // A negative `toEpoch` was refused above (it is below `fromEpoch`, at least 0).
    let to_epoch = to_epoch.map(|to| to as u64);
    let Some(commits) = state.chat_commits(convo, from_epoch as u64, to_epoch, now) else {
        return empty(StatusCode::FORBIDDEN);
    };
    if kind == Kind::Commit {
        return Json(json!({ "convoId": convo, "commits": commits })).into_response();
    }
    let Some(messages) = state.chat_page(convo, since_seq, limit, now) else {
        return empty(StatusCode::FORBIDDEN);
    };
    let mut answer = json!({ "messages": messages });
    // Without sinceSeq the page is newest-first: its last (smallest) seq, as the real one.
    if let Some(last) = messages.last() {
        answer["lastSeq"] = last.seq.into();
    }
    if kind == Kind::All {
        answer["commits"] = commits.into();
    }
    Json(answer).into_response()
}
