//! `sendMessage`, both APIs, one set of rules: the SSE era's `blue.catbird.mls.sendMessage`
//! (real server 168f1c5, `handlers/send_message.rs`) and `blue.catbird.mlsChat.sendMessage`
//! (5278d0c, `handlers/mls_chat/send_message.rs`), as recorded in `shared/catbird/`.
//!
//! The checks, in the real handlers' order:
//! 1. the token ([`authenticate`]: 401, the rate limiters' 429s; the `sendMessage` quota is
//!    100 a minute per account, each request drawing twice);
//! 2. the body, read before the token's `lxm` and `jti` are checked ([`enforce`]: 401):
//!    one that cannot be read (not JSON, a field missing, a plain-string ciphertext as
//!    recording `65_`, bad base64) gets 400, empty on the SSE-era route and
//!    `{"error":"InvalidRequest","message":"failed to decode request: …"}` on mlsChat (its
//!    XRPC extractor's rejection);
//! 3. mlsChat only, `delivery`: `ephemeral` is a typing indicator or a reaction (below),
//!    anything but `persistent` is 400; on the SSE-era route `ephemeral` (any case) is an
//!    ephemeral message and anything else persistent;
//! 4. `msgId` is 26 ASCII alphanumerics (a ULID) or 36 of alphanumerics and `-` (a UUID),
//!    the ciphertext is not empty and at most 10 MiB, `paddedSize` is its length and 512,
//!    1024, 2048, 4096, 8192 or a multiple of 8192 up to 10 MiB: else 400, empty
//!    (`60_`–`62_`);
//! 5. membership: an unknown conversation or one the account left is 403, empty (`63_`,
//!    `66_`);
//! 6. mlsChat only: an epoch other than the conversation's is 409, empty (`023`) — before
//!    the `msgId` is looked up, so a resend after an epoch change gets 409 too;
//! 7. the same `msgId` in the same conversation (then the same `idempotencyKey` anywhere)
//!    answers 200 with the first answer: the same messageId, seq, epoch and receivedAt
//!    (`64b_`, `010`), and stores nothing. The SSE-era server runs its fan-out again, so
//!    the message is streamed again (same id and seq, a new cursor); mlsChat emits nothing;
//! 8. a new message: seq `MAX(seq)+1`, a server UUID as `messageId`, streamed, answered
//!    `{"epoch","messageId","receivedAt","seq"}` (`receivedAt` in microseconds, `+00:00` on
//!    the SSE-era route, `Z` on mlsChat). An SSE-era ephemeral message is not stored nor
//!    deduplicated: streamed with seq 0 and the `msgId` as its id, answered with the
//!    `msgId` as `messageId`, seq 0, the sender's epoch and `receivedAt` in nanoseconds
//!    (`16_`).
//!
//! The send faults ([`Faults`](crate::Faults)`::send_*`) apply to a request that passed
//! every check (the n-th of its conversation, by the seed): `send_error` (500, not applied),
//! `send_reset` (connection closed, not applied), `send_applied_error` (applied, then 500),
//! `send_applied_reset` (applied, then the connection closed), `send_slow` (applied, then
//! answered after `send_delay`). Every applied send is in [`DevServer::sends`](crate::DevServer::sends).

use crate::conn::Conn;
use crate::faults::Topic;
use crate::state::{key, AppliedSend, Live, Send, State, DEV_DID};
use crate::{authenticate, enforce, mlschat, schedule_late, Profile, Shared};
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use gapless_catbird::message::Ciphertext;
use gapless_catbird::mlschat::is_valid_padded_size;
use gapless_catbird::{DecodeError, MLSCHAT_SEND_MESSAGE, SEND_MESSAGE};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{Instant, SystemTime};

/// Which route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    /// `blue.catbird.mls.sendMessage`.
    Mls,
    /// `blue.catbird.mlsChat.sendMessage`.
    MlsChat,
}

impl Api {
    fn nsid(self) -> &'static str {
        match self {
            Api::Mls => SEND_MESSAGE,
            Api::MlsChat => MLSCHAT_SEND_MESSAGE,
        }
    }

    /// The 400 for a body that cannot be read.
    fn unreadable(self, detail: &str) -> Response {
        match self {
            Api::Mls => empty(StatusCode::BAD_REQUEST),
            Api::MlsChat => (
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "error": "InvalidRequest",
                    "message": format!("failed to decode request: {detail}"),
                })),
            )
                .into_response(),
        }
    }
}

fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// The body, with the fields of either API.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    convo_id: String,
    msg_id: String,
    ciphertext: Ciphertext,
    /// An i64 as mlsChat reads it (the SSE era's lexicon has `minimum: 0`: see [`decode`]).
    epoch: i64,
    padded_size: u64,
    #[serde(default)]
    delivery: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    reaction_emoji: Option<String>,
    #[serde(default)]
    target_message_id: Option<String>,
}

/// A readable body: the fields and the ciphertext's bytes (`Err`: more than 10 MiB).
struct Request {
    body: Body,
    ciphertext: Result<Vec<u8>, ()>,
}

fn decode(api: Api, raw: &[u8]) -> Result<Request, String> {
    let body: Body = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    if api == Api::Mls && body.epoch < 0 {
        return Err("epoch: below its minimum, 0".into());
    }
    if let Ciphertext::Plain(_) = body.ciphertext {
        return Err("ciphertext: expected bytes ({\"$bytes\": …})".into());
    }
    let ciphertext = match body.ciphertext.decode(&gapless_catbird::Limits::default()) {
        Ok(bytes) => Ok(bytes),
        Err(DecodeError::CiphertextTooLarge { .. }) => Err(()),
        Err(e) => return Err(format!("ciphertext: {e}")),
    };
    Ok(Request { body, ciphertext })
}

/// A ULID (26 alphanumerics) or a UUID (36 alphanumerics and dashes), as the real
/// handlers check it.
fn valid_msg_id(id: &str) -> bool {
    match id.len() {
        26 => id.bytes().all(|b| b.is_ascii_alphanumeric()),
        36 => id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        _ => false,
    }
}

/// Step 4: the ciphertext, or `None` for the 400.
fn validate(request: Request) -> Option<(Body, Vec<u8>)> {
    let ciphertext = request.ciphertext.ok()?;
    let fine = valid_msg_id(&request.body.msg_id)
        && !ciphertext.is_empty()
        && request.body.padded_size == ciphertext.len() as u64
        && is_valid_padded_size(ciphertext.len());
    fine.then_some((request.body, ciphertext))
}

/// `POST /xrpc/blue.catbird.mls.sendMessage`.
pub(crate) async fn mls(
    AxState(shared): AxState<Shared>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    handle(shared, Api::Mls, conn, headers, uri, body).await
}

/// `POST /xrpc/blue.catbird.mlsChat.sendMessage`.
pub(crate) async fn mls_chat(
    AxState(shared): AxState<Shared>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    handle(shared, Api::MlsChat, conn, headers, uri, body).await
}

/// A send fault, decided before the request is applied.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    Error,
    Reset,
    AppliedError,
    AppliedReset,
    Slow,
}

impl Fault {
    fn knob(self) -> &'static str {
        match self {
            Fault::Error => "send_error",
            Fault::Reset => "send_reset",
            Fault::AppliedError => "send_applied_error",
            Fault::AppliedReset => "send_applied_reset",
            Fault::Slow => "send_slow",
        }
    }
}

async fn handle(
    shared: Shared,
    api: Api,
    conn: Conn,
    headers: HeaderMap,
    uri: Uri,
    raw: Bytes,
) -> Response {
    let minted = match authenticate(&shared, &headers, &uri) {
        Ok(m) => m,
        Err(d) => return d.into_response(),
    };
    // The real handlers read the body before `enforce_standard` (lxm, jti).
    let request = match decode(api, &raw) {
        Ok(r) => r,
        Err(detail) => return api.unreadable(&detail),
    };
    if let Err(d) = enforce(&shared, &minted, Some(api.nsid())) {
        return d.into_response();
    }
    let delivery = request.body.delivery.as_deref();
    let ephemeral = match api {
        Api::Mls => delivery.is_some_and(|d| d.eq_ignore_ascii_case("ephemeral")),
        Api::MlsChat => match delivery.unwrap_or("persistent") {
            "persistent" => false,
            "ephemeral" => return chat_ephemeral(&shared, &request.body),
            _ => return empty(StatusCode::BAD_REQUEST),
        },
    };
    let Some((body, ciphertext)) = validate(request) else {
        return empty(StatusCode::BAD_REQUEST);
    };
    let (fault, delay) = {
        let mut state = shared.state.lock().expect("state");
        let plan = state.plan;
        let f = state.faults.clone();
        let Some(log) = state.member_log(&body.convo_id) else {
            return empty(StatusCode::FORBIDDEN);
        };
        if api == Api::MlsChat && u64::try_from(body.epoch) != Ok(log.epoch()) {
            return empty(StatusCode::CONFLICT);
        }
        let n = log.send_requests;
        log.send_requests += 1;
        let k = key(&body.convo_id);
        let fault = [
            (f.send_error, Topic::SendError, Fault::Error),
            (f.send_reset, Topic::SendReset, Fault::Reset),
            (
                f.send_applied_error,
                Topic::SendAppliedError,
                Fault::AppliedError,
            ),
            (
                f.send_applied_reset,
                Topic::SendAppliedReset,
                Fault::AppliedReset,
            ),
            (f.send_slow, Topic::SendSlow, Fault::Slow),
        ]
        .into_iter()
        .find(|&(p, topic, _)| plan.roll(p, topic, k, n))
        .map(|(_, _, fault)| fault);
        if let Some(fault) = fault {
            state.counts.bump(fault.knob());
        }
        (fault, f.send_delay)
    };
    match fault {
        Some(Fault::Error) => return empty(StatusCode::INTERNAL_SERVER_ERROR),
        Some(Fault::Reset) => return lose_answer(&conn),
        _ => {}
    }
    let faulty = shared.options.profile != Profile::Calm;
    let answer = {
        let mut state = shared.state.lock().expect("state");
        apply(&mut state, api, body, ciphertext, ephemeral, faulty)
    };
    let answer = match answer {
        Applied::New(answer, late) => {
            if let Some((convo, sent, index)) = late {
                schedule_late(&shared, &convo, &sent, Some(index));
            }
            answer
        }
        Applied::Replayed(answer) => answer,
    };
    match fault {
        Some(Fault::AppliedError) => empty(StatusCode::INTERNAL_SERVER_ERROR),
        Some(Fault::AppliedReset) => lose_answer(&conn),
        Some(Fault::Slow) => {
            tokio::time::sleep(delay).await;
            Json(answer).into_response()
        }
        _ => Json(answer).into_response(),
    }
}

/// Closes the request's connection: no answer is written.
fn lose_answer(conn: &Conn) -> Response {
    conn.drop_connection();
    // Never written: the connection fails before the first byte.
    empty(StatusCode::INTERNAL_SERVER_ERROR)
}

/// What applying a send did.
enum Applied {
    /// A new message (or an ephemeral one): the answer, and a late commit to schedule.
    New(Value, Option<(String, crate::Sent, usize)>),
    /// The first answer of the same `msgId` (or `idempotencyKey`).
    Replayed(Value),
}

/// The answer for a stored message, as the route writes `receivedAt`.
fn stored_answer(api: Api, message_id: &str, seq: u64, epoch: u64, created: SystemTime) -> Value {
    let received = humantime::format_rfc3339_micros(created).to_string();
    let received = match api {
        Api::Mls => received.replace('Z', "+00:00"),
        Api::MlsChat => received,
    };
    json!({ "epoch": epoch, "messageId": message_id, "receivedAt": received, "seq": seq })
}

/// Steps 7 and 8, under the state's lock.
fn apply(
    state: &mut State,
    api: Api,
    body: Body,
    ciphertext: Vec<u8>,
    ephemeral: bool,
    faulty: bool,
) -> Applied {
    let convo = body.convo_id.clone();
    if !ephemeral {
        let by_msg_id = state
            .convos
            .get(&convo)
            .and_then(|log| log.by_msg_id.get(&body.msg_id))
            .map(|&i| (convo.clone(), i));
        let by_key = || {
            body.idempotency_key
                .as_ref()
                .and_then(|k| state.idempotency.get(k).cloned())
        };
        if let Some((c, i)) = by_msg_id.or_else(by_key) {
            if let Some(answer) = replay(state, api, &c, i) {
                return Applied::Replayed(answer);
            }
        }
    }
    let (sent, late) = state.send(
        &convo,
        Send {
            msg_id: Some(body.msg_id.clone()),
            ciphertext,
            // Not negative: the SSE era refused it, mlsChat answered 409.
            epoch: Some(body.epoch.unsigned_abs()),
            ephemeral,
            faulty,
        },
        Instant::now(),
    );
    // Where it was stored (an ephemeral message is not; an earlier one with its msgId may be).
    let index = (!ephemeral)
        .then(|| {
            state
                .convos
                .get(&convo)?
                .by_msg_id
                .get(&body.msg_id)
                .copied()
        })
        .flatten();
    if let (Some(k), Some(i)) = (body.idempotency_key, index) {
        state
            .idempotency
            .entry(k)
            .or_insert_with(|| (convo.clone(), i));
    }
    state.sends.push(AppliedSend {
        convo: convo.clone(),
        msg_id: body.msg_id,
        message_id: sent.id.clone(),
        seq: sent.seq,
        epoch: sent.epoch,
        ephemeral,
        nsid: api.nsid(),
    });
    let answer = if ephemeral {
        // Recording 16_: nanoseconds, `+00:00`.
        let received = humantime::format_rfc3339_nanos(SystemTime::now())
            .to_string()
            .replace('Z', "+00:00");
        json!({ "epoch": sent.epoch, "messageId": sent.id, "receivedAt": received, "seq": 0 })
    } else {
        let created = index
            .and_then(|i| state.convos.get(&convo)?.stored.get(i))
            .map_or_else(SystemTime::now, |s| s.created);
        stored_answer(api, &sent.id, sent.seq, sent.epoch, created)
    };
    let late = late.map(|i| (convo, sent, i));
    Applied::New(answer, late)
}

/// The first answer of the message at `index` of `convo`; on the SSE-era route its
/// messageEvent is streamed again (the real fan-out runs for a resend too).
fn replay(state: &mut State, api: Api, convo: &str, index: usize) -> Option<Value> {
    let stored = state.convos.get(convo)?.stored.get(index)?.clone();
    let answer = stored_answer(api, &stored.id, stored.seq, stored.epoch, stored.created);
    if api == Api::Mls && stored.visible {
        let cursor = state.next_sse_cursor();
        let event = crate::state::Stored { cursor, ..stored };
        let live = Live {
            sse: Some(event.event_json(convo).into()),
            ws: None,
        };
        if let Some(log) = state.convos.get(convo) {
            let _ = log.tx.send(live);
        }
    }
    Some(answer)
}

/// mlsChat `delivery: ephemeral`: with `action: addReaction` / `removeReaction` a
/// `reactionEvent` answered `{success, reactedAt}` (`015`), else a `typingEvent` answered
/// `{success: true}` with the ciphertext dropped (`011`). 403 for a non-member; an
/// `addReaction` without an emoji (or one over 16 bytes) is 400, on a message the
/// conversation does not have 404.
fn chat_ephemeral(shared: &Shared, body: &Body) -> Response {
    let convo = body.convo_id.as_str();
    let action = match body.action.as_deref() {
        Some("addReaction") => Some("add"),
        Some("removeReaction") => Some("remove"),
        _ => None,
    };
    let emoji = body.reaction_emoji.clone().unwrap_or_default();
    if action == Some("add") && (emoji.is_empty() || emoji.len() > 16) {
        return empty(StatusCode::BAD_REQUEST);
    }
    let mut state = shared.state.lock().expect("state");
    let Some(log) = state.member_log(convo) else {
        return empty(StatusCode::FORBIDDEN);
    };
    let Some(action) = action else {
        mlschat::typing_event(&mut state, convo, true);
        return Json(json!({ "success": true })).into_response();
    };
    let target = body.target_message_id.clone().unwrap_or_default();
    if action == "add" && !log.stored.iter().any(|s| s.id == target) {
        return empty(StatusCode::NOT_FOUND);
    }
    state.broadcast_ws(
        convo,
        "reactionEvent",
        "#reactionEvent",
        json!({
            "did": DEV_DID, "action": action, "convoId": convo,
            "reaction": emoji, "messageId": target,
        }),
    );
    let reacted_at = humantime::format_rfc3339_nanos(SystemTime::now())
        .to_string()
        .replace('Z', "+00:00");
    Json(json!({ "success": true, "reactedAt": reacted_at })).into_response()
}

#[cfg(test)]
mod tests {
    use super::valid_msg_id;

    #[test]
    fn msg_ids_as_the_real_server_checks_them() {
        assert!(valid_msg_id("01M8DME24PTCGXZ67DD75ZV5E0"));
        assert!(valid_msg_id("6f1c2a52-3b7d-4e0a-9c1e-2d4f5a6b7c8d"));
        // 36 alphanumerics and dashes anywhere: the real check is that loose.
        assert!(valid_msg_id("------------------------------------"));
        assert!(!valid_msg_id("not-a-valid-id"));
        assert!(!valid_msg_id("01M8DME24PTCGXZ67DD75ZV5E-"));
        assert!(!valid_msg_id("01M8DME24PTCGXZ67DD75ZV5É"));
        assert!(!valid_msg_id(""));
    }
}
