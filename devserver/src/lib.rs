//! # gapless-devserver
//!
//! A Catbird-compatible MLS delivery server for development and tests: `getMessages`,
//! `streamConvoEvents` and `sendMessage`, framed exactly as the real server frames them
//! (`shared/catbird/`), from an in-memory log per conversation, with seeded fault injection.
//! It binds 127.0.0.1 only. Tests start it in-process on an ephemeral port:
//!
//! ```no_run
//! # async fn demo() {
//! use gapless_devserver::{DevServer, Options, Profile};
//! let server = DevServer::start(Options::new(Profile::FlakyMobile, 42)).await.unwrap();
//! let base = format!("http://{}", server.addr());
//! server.traffic(3, 100, 50.0); // 3 conversations, 100 messages each, 50 messages/s
//! # }
//! ```
//!
//! ## The mlsChat API
//!
//! Beside those (SSE-era `blue.catbird.mls.*`) routes, the same server speaks the newest API
//! (`blue.catbird.mlsChat.*`, real server commit 5278d0c, `shared/catbird/ws/`) from the same
//! logs and fault plan, so one server serves both drivers: `getSubscriptionTicket` (a ticket
//! for one conversation or all, good for [`Options::ticket_ttl`]), the `subscribeEvents`
//! WebSocket (DAG-CBOR frames, a Ping at once and every [`Options::ws_ping`], at most
//! [`Options::max_sockets`] open, nothing replayed, commits never pushed, no close frame),
//! `getMessages` (`type=app|all|commit`, newest-first without `sinceSeq`, never `gapInfo`) and
//! `sendMessage`. The socket's faults and what they mean there are in the `mlschat` module's
//! source.
//!
//! ## sendMessage
//!
//! Both APIs' `sendMessage` share one implementation of the real handlers' rules (the
//! `send` module's source lists them in order): the `msgId`, ciphertext and `paddedSize`
//! checks (400), membership (403; see [`DevServer::leave`]), mlsChat's epoch (409), the
//! same `msgId` answered with the first answer, ephemeral delivery. The send faults
//! ([`Faults::send_error`], [`Faults::send_reset`], [`Faults::send_applied_error`],
//! [`Faults::send_applied_reset`], [`Faults::send_slow`]) fail a request before it is
//! applied, lose the answer of one that was, or answer late. [`DevServer::sends`] lists
//! every send applied.
//!
//! ## Tokens
//!
//! Like the real server, every request needs `Authorization: Bearer <token>`. A token is
//! the server's secret (`Options::secret`, default `dev-secret`), optionally followed by
//! `.<method NSID>.<nonce>` as [`mint_token`] makes it. In the `calm` and `flaky-mobile`
//! profiles the bare secret is accepted everywhere. In `hostile`, `getMessages` and
//! `sendMessage` take only minted tokens for their own method, each nonce once (a reused one
//! gets 401 with an empty body, as the real server answers a replayed `jti`); the stream
//! accepts any valid token, as the real server skips those checks there.
//!
//! ## Rate limits
//!
//! With [`Faults::rate_limits`] set (the `hostile` profile sets [`RateLimits::real`]),
//! requests pass the real server's rate limiters — per-minute quota buckets per endpoint and
//! a burst limiter — and get its two kinds of 429 ([`RateLimits`]: what is modelled, how the
//! caller's account is chosen). The 429s served are counted as `rate_limited` and
//! `burst_limited` in [`DevServer::fault_counts`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod faults;
mod limits;
mod mlschat;
mod send;
mod state;

pub use faults::{Faults, KnobError, Plan, Profile};
pub use limits::{Burst, RateLimits, TokenBucket};
pub use state::{AppliedSend, FaultCounts, Send, Sent};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use faults::Topic;
use gapless_catbird::{GET_MESSAGES, SEND_MESSAGE};
use state::{key, Live, State};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// How to run the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// The fault profile.
    pub profile: Profile,
    /// Its faults (from the profile; adjust knobs freely).
    pub faults: Faults,
    /// Seed of the fault plan.
    pub seed: u64,
    /// The token secret.
    pub secret: String,
    /// Keepalive period on streams (15 s, as the real server).
    pub keepalive: Duration,
    /// Port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// WebSocket Ping period on mlsChat sockets (30 s, as the real server; one Ping is
    /// also sent right after the upgrade).
    pub ws_ping: Duration,
    /// How long a subscription ticket opens sockets (30 s, as the real server).
    pub ticket_ttl: Duration,
    /// mlsChat sockets the account may hold open at once (5, as the real server; the next
    /// upgrade gets 429). Every client of a dev server is the same account.
    pub max_sockets: usize,
}

impl Options {
    /// A profile's defaults.
    pub fn new(profile: Profile, seed: u64) -> Options {
        Options {
            profile,
            faults: profile.faults(),
            seed,
            secret: "dev-secret".into(),
            keepalive: Duration::from_secs(15),
            port: 0,
            ws_ping: Duration::from_secs(30),
            ticket_ttl: Duration::from_secs(30),
            max_sockets: 5,
        }
    }
}

/// A token for `nsid` as a client should mint one per request (see the crate doc).
pub fn mint_token(secret: &str, nsid: &str, nonce: u64) -> String {
    format!("{secret}.{nsid}.{nonce:016x}")
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The port could not be bound.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        /// The port.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    options: Arc<Options>,
    /// Where it listens (for the tickets' `endpoint`).
    addr: SocketAddr,
    /// Changes when the server is dropped: open sockets end then.
    closing: watch::Receiver<()>,
}

/// A running server. Dropping it stops it.
pub struct DevServer {
    addr: SocketAddr,
    shared: Shared,
    stop: Option<oneshot::Sender<()>>,
    closing: watch::Sender<()>,
}

impl DevServer {
    /// Starts a server on 127.0.0.1.
    pub async fn start(options: Options) -> Result<DevServer, StartError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
            .await
            .map_err(|source| StartError::Bind {
                port: options.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            port: options.port,
            source,
        })?;
        let (closing, closing_rx) = watch::channel(());
        let shared = Shared {
            state: Arc::new(Mutex::new(State::new(options.faults.clone(), options.seed))),
            options: Arc::new(options),
            addr,
            closing: closing_rx,
        };
        let app = Router::new()
            .route(&format!("/xrpc/{GET_MESSAGES}"), get(get_messages))
            .route(
                "/xrpc/blue.catbird.mls.streamConvoEvents",
                get(stream_events),
            )
            .route(&format!("/xrpc/{SEND_MESSAGE}"), post(send::mls))
            .merge(mlschat::routes())
            .route("/health", get(|| async { "ok" }))
            // A 10 MiB ciphertext is about 14 MiB of JSON.
            .layer(DefaultBodyLimit::max(16 << 20))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let app = app.into_make_service_with_connect_info::<conn::Conn>();
        let listener = conn::Listener(listener);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(DevServer {
            addr,
            shared,
            stop: Some(stop),
            closing,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates an empty conversation.
    pub fn create_convo(&self, convo: &str) {
        self.shared.state.lock().expect("state").create(convo);
    }

    /// Sends a message as a member would, subject to the server-side faults.
    pub fn post(&self, convo: &str, ciphertext: Vec<u8>) -> Sent {
        post_message(
            &self.shared,
            convo,
            Send {
                ciphertext,
                faulty: true,
                ..Send::default()
            },
        )
    }

    /// Generates traffic in the background: `convos` conversations `c0..`, `messages`
    /// each, `rate` messages per second in all. Returns at once.
    pub fn traffic(
        &self,
        convos: usize,
        messages: usize,
        rate: f64,
    ) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        for c in 0..convos {
            self.create_convo(&format!("c{c}"));
        }
        let gap = Duration::from_secs_f64(1.0 / rate.max(0.001));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(gap);
            for n in 0..convos * messages {
                tick.tick().await;
                let convo = format!("c{}", n % convos.max(1));
                let plan = shared.state.lock().expect("state").plan;
                let len = 64 + (plan.value(Topic::Payload, n as u64, 1) % 448) as usize;
                let payload = (0..len)
                    .map(|i| (i as u8).wrapping_mul(31) ^ n as u8)
                    .collect();
                let req = Send {
                    ciphertext: payload,
                    faulty: true,
                    ..Send::default()
                };
                post_message(&shared, &convo, req);
            }
        })
    }

    /// Every message the server serves now: `(convo, seq, id)`, in `(convo, seq)` order.
    pub fn log(&self) -> Vec<(String, u64, String)> {
        let state = self.shared.state.lock().expect("state");
        let now = Instant::now();
        let mut all: Vec<(String, u64, String)> = state
            .convos
            .keys()
            .flat_map(|c| {
                state
                    .page(c, None, usize::MAX, now)
                    .map(|p| p.messages)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |m| (c.clone(), m.seq, m.id))
            })
            .collect();
        all.sort();
        all
    }

    /// Every `sendMessage` request the server applied (either API), in order: each new
    /// message a client sent, and each SSE-era ephemeral one. A resend answered from the
    /// first answer is not listed, nor is a request refused or failed by a fault before it
    /// was applied; one applied whose answer a fault lost is. With [`DevServer::log`] this
    /// is the ground truth of "each message exactly once".
    pub fn sends(&self) -> Vec<AppliedSend> {
        self.shared.state.lock().expect("state").sends.clone()
    }

    /// The account leaves the conversation: from now on `getMessages`, streams, tickets
    /// and `sendMessage` answer 403 for it, as the real server answers a member who left.
    pub fn leave(&self, convo: &str) {
        let mut state = self.shared.state.lock().expect("state");
        if let Some(log) = state.convos.get_mut(convo) {
            log.member = false;
        }
    }

    /// Messages that were in the log and expired: `(convo, seq, id)`. A client may hold
    /// them (it fetched them in time) or not (they expired first; it skipped their seqs).
    pub fn expired(&self) -> Vec<(String, u64, String)> {
        let state = self.shared.state.lock().expect("state");
        let now = Instant::now();
        let mut all: Vec<(String, u64, String)> = state
            .convos
            .iter()
            .flat_map(|(c, log)| {
                log.stored
                    .iter()
                    .filter(move |m| m.seq > 0 && m.expires.is_some_and(|e| e <= now))
                    .map(move |m| (c.clone(), m.seq, m.id.clone()))
            })
            .collect();
        all.sort();
        all
    }

    /// The faults applied so far, by knob.
    pub fn fault_counts(&self) -> FaultCounts {
        self.shared.state.lock().expect("state").counts.clone()
    }

    /// mlsChat sockets open now (at most [`Options::max_sockets`]).
    pub fn open_sockets(&self) -> usize {
        self.shared.state.lock().expect("state").open_sockets
    }

    /// The options it runs with.
    pub fn options(&self) -> &Options {
        &self.shared.options
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.closing.send(());
    }
}

fn post_message(shared: &Shared, convo: &str, req: Send) -> Sent {
    let now = Instant::now();
    let (sent, late) = shared.state.lock().expect("state").send(convo, req, now);
    schedule_late(shared, convo, &sent, late);
    sent
}

/// Makes a late-committing message visible when its delay has passed.
fn schedule_late(shared: &Shared, convo: &str, sent: &Sent, late: Option<usize>) {
    if let (Some(index), Some(delay)) = (late, sent.late_by) {
        let shared = shared.clone();
        let convo = convo.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            shared
                .state
                .lock()
                .expect("state")
                .make_visible(&convo, index);
        });
    }
}

// ---- auth ---------------------------------------------------------------------------

enum Denied {
    Missing,
    Invalid,
    /// A quota bucket, keyed by the full URI (the real middleware's): empty + `retry-after`.
    RateLimited(Duration),
    /// The burst limiter or the path's quota bucket (the real extractor's): JSON, no
    /// `retry-after`.
    LimitedJson,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Missing => (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({"error": "Missing authorization header"})),
            )
                .into_response(),
            // Like the real server's lxm/jti failures: 401 with an empty body.
            Denied::Invalid => StatusCode::UNAUTHORIZED.into_response(),
            // Recording 06_createConvo_rate_limit_try4.
            Denied::RateLimited(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                [(
                    header::RETRY_AFTER,
                    limits::retry_after_secs(wait).to_string(),
                )],
            )
                .into_response(),
            // Recording 06_createConvo_rate_limit_try3.
            Denied::LimitedJson => (
                StatusCode::TOO_MANY_REQUESTS,
                Json(serde_json::json!({"error": "Rate limit exceeded"})),
            )
                .into_response(),
        }
    }
}

/// Checks a request's token and, with limits on, draws from the rate limiters in the real
/// server's order: the full URI's bucket before the token is verified; the burst limiter and
/// the path's bucket after; the method's own checks (`lxm`, nonce) last.
fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    uri: &Uri,
    nsid: Option<&str>,
) -> Result<(), Denied> {
    let minted = authenticate(shared, headers, uri)?;
    enforce(shared, &minted, nsid)
}

/// What a valid token says: `None` for the bare secret, else the minted token's (`lxm`,
/// nonce).
pub(crate) type Minted = Option<(String, String)>;

/// The first part of [`authorize`]: the token is there and valid, and the rate limiters
/// let the request through. A handler that reads its body before the method's own checks
/// (as the real `sendMessage` handlers do) calls [`enforce`] after.
fn authenticate(shared: &Shared, headers: &HeaderMap, uri: &Uri) -> Result<Minted, Denied> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(Denied::Missing)?;
    let limits = shared.options.faults.rate_limits.as_ref();
    let path = uri.path();
    if let Some(limits) = limits {
        let whole = uri.path_and_query().map_or(path, |pq| pq.as_str());
        let mut state = shared.state.lock().expect("state");
        if let Err(wait) = state
            .limiter
            .before_auth(limits, path, whole, Instant::now())
        {
            state.counts.bump("rate_limited");
            return Err(Denied::RateLimited(wait));
        }
    }
    let secret = &shared.options.secret;
    let minted = if token == secret {
        None
    } else {
        let rest = token
            .strip_prefix(secret.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .ok_or(Denied::Invalid)?;
        let (lxm, nonce) = rest.rsplit_once('.').ok_or(Denied::Invalid)?;
        Some((lxm.to_string(), nonce.to_string()))
    };
    if let Some(limits) = limits {
        let mut state = shared.state.lock().expect("state");
        if let Err(refusal) = state.limiter.after_auth(limits, path, Instant::now()) {
            state.counts.bump(match refusal {
                limits::Refusal::Burst => "burst_limited",
                limits::Refusal::Quota => "rate_limited",
            });
            return Err(Denied::LimitedJson);
        }
    }
    Ok(minted)
}

/// The method's own checks (the real `enforce_standard`): `lxm` is the method's NSID and,
/// in `hostile`, the nonce is new (a token used again within 120 s: 401, empty).
fn enforce(shared: &Shared, minted: &Minted, nsid: Option<&str>) -> Result<(), Denied> {
    let strict = shared.options.profile == Profile::Hostile && nsid.is_some();
    let Some((lxm, nonce)) = minted else {
        return if strict { Err(Denied::Invalid) } else { Ok(()) };
    };
    if let Some(nsid) = nsid {
        if lxm != nsid {
            return Err(Denied::Invalid);
        }
        if strict {
            let mut state = shared.state.lock().expect("state");
            let now = Instant::now();
            // Like the real server's jti cache: 120 s.
            state
                .used_nonces
                .retain(|_, t| now.duration_since(*t) < Duration::from_secs(120));
            if state.used_nonces.insert(nonce.clone(), now).is_some() {
                return Err(Denied::Invalid);
            }
        }
    }
    Ok(())
}

fn text_400(msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.to_string(),
    )
        .into_response()
}

// ---- getMessages ----------------------------------------------------------------------

async fn get_messages(
    AxState(shared): AxState<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(d) = authorize(&shared, &headers, &uri, Some(GET_MESSAGES)) {
        return d.into_response();
    }
    let Some(convo) = q.get("convoId") else {
        return text_400("Failed to deserialize query string: missing field `convoId`");
    };
    if convo.is_empty() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let since_seq = match q.get("sinceSeq").map(|s| s.parse::<i64>()) {
        Some(Err(_)) => {
            return text_400(
                "Failed to deserialize query string: sinceSeq: invalid digit found in string",
            )
        }
        Some(Ok(s)) => Some(s),
        None => None,
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .unwrap_or(50)
        .clamp(1, 100) as usize;
    if let Err(refused) = fetch_faults(&shared, convo).await {
        return refused;
    }
    let state = shared.state.lock().expect("state");
    let since = match (since_seq, q.get("sinceMessage")) {
        (Some(s), _) => Some(s),
        (None, Some(id)) => match state.seq_of(convo, id) {
            Some(seq) => Some(seq as i64),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({"error": "InvalidCursor", "message": "unknown sinceMessage"})),
                )
                    .into_response()
            }
        },
        (None, None) => None,
    };
    match state.page(convo, since, limit, Instant::now()) {
        Some(page) => Json(page).into_response(),
        None => StatusCode::FORBIDDEN.into_response(),
    }
}

/// The fetch faults of a `getMessages` call (either API), the n-th of its conversation:
/// 500, 429 with `Retry-After: 1`, a hang, a slow answer; or 403 for no such conversation.
/// `Ok` once any delay has passed.
async fn fetch_faults(shared: &Shared, convo: &str) -> Result<(), Response> {
    let (fault, delay) = {
        let mut state = shared.state.lock().expect("state");
        let plan = state.plan;
        let f = state.faults.clone();
        let Some(log) = state.member_log(convo) else {
            return Err(StatusCode::FORBIDDEN.into_response());
        };
        let n = log.fetches;
        log.fetches += 1;
        let k = key(convo);
        let fault = if plan.roll(f.fetch_error, Topic::FetchError, k, n) {
            Some("fetch_error")
        } else if plan.roll(f.fetch_rate_limit, Topic::FetchRateLimit, k, n) {
            Some("fetch_rate_limit")
        } else if plan.roll(f.fetch_hang, Topic::FetchHang, k, n) {
            Some("fetch_hang")
        } else if plan.roll(f.fetch_slow, Topic::FetchSlow, k, n) {
            Some("fetch_slow")
        } else {
            None
        };
        if let Some(name) = fault {
            state.counts.bump(name);
        }
        let delay = match fault {
            Some("fetch_hang") => f.hang,
            Some("fetch_slow") => f.slow_delay,
            _ => Duration::ZERO,
        };
        (fault, delay)
    };
    match fault {
        Some("fetch_error") => return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Some("fetch_rate_limit") => {
            return Err(
                (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response(),
            )
        }
        _ => {}
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(())
}

// ---- streamConvoEvents ----------------------------------------------------------------

async fn stream_events(
    AxState(shared): AxState<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(d) = authorize(&shared, &headers, &uri, None) {
        return d.into_response();
    }
    let Some(convo) = q.get("convoId").cloned() else {
        return text_400("Failed to deserialize query string: missing field `convoId`");
    };
    let cursor = q.get("cursor").cloned();
    if cursor.as_deref().is_some_and(|c| !state::valid_cursor(c)) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let (rx, replay, stream_no, cut_after) = {
        let mut state = shared.state.lock().expect("state");
        let plan = state.plan;
        let f = state.faults.clone();
        let now = Instant::now();
        let replay = cursor
            .as_deref()
            .map(|c| state.replay(&convo, c, now))
            .unwrap_or_default();
        let Some(log) = state.member_log(&convo) else {
            return StatusCode::FORBIDDEN.into_response();
        };
        // Subscribe before reading the replay's end: nothing falls between.
        let rx = log.tx.subscribe();
        let stream_no = log.streams_opened;
        log.streams_opened += 1;
        let k = key(&convo);
        let cut_after = plan
            .roll(f.cut, Topic::Cut, k, stream_no)
            .then(|| plan.delay(f.cut_after_max, Topic::CutAfter, k, stream_no));
        (rx, replay, stream_no, cut_after)
    };
    let (tx, body_rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(pump_stream(
        shared.clone(),
        convo,
        rx,
        replay,
        stream_no,
        cut_after,
        tx,
    ));
    let body = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

fn data_frame(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

fn slow_consumer_frame(cursor_hint: u64) -> Bytes {
    let json = serde_json::json!({
        "$type": "blue.catbird.mls.streamConvoEvents#infoEvent",
        "cursor": format!("{cursor_hint:026}"),
        "info": "slow-consumer",
    });
    data_frame(&json.to_string())
}

async fn pump_stream(
    shared: Shared,
    convo: String,
    mut rx: broadcast::Receiver<Live>,
    replay: Vec<String>,
    stream_no: u64,
    cut_after: Option<Duration>,
    tx: mpsc::Sender<Bytes>,
) {
    for json in replay {
        if tx.send(data_frame(&json)).await.is_err() {
            return;
        }
    }
    let keepalive = shared.options.keepalive;
    let mut next_keepalive = tokio::time::Instant::now() + keepalive;
    let cut_at = cut_after.map(|d| tokio::time::Instant::now() + d);
    let k = key(&convo);
    // Faults and plan are fixed for the server's life: read once, not per event.
    let f = &shared.options.faults;
    let plan = Plan::new(shared.options.seed);
    let mut event_no = 0u64;
    let mut held: Option<Bytes> = None;
    loop {
        let cut = async {
            match cut_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Queued messages go out before a keepalive that is due at the same moment.
            biased;
            _ = cut => {
                shared.state.lock().expect("state").counts.bump("cut");
                return; // ends the body: the client sees the stream close
            }
            msg = rx.recv() => {
                let frames = match msg {
                    // Socket-only events (typing, reactions) are not on this stream.
                    Ok(Live { sse: None, .. }) => continue,
                    Ok(Live { sse: Some(json), .. }) => {
                        let n = event_no;
                        event_no += 1;
                        let a = k ^ (stream_no << 32);
                        let roll = |p, topic| plan.roll(p, topic, a, n);
                        let count = |knob| shared.state.lock().expect("state").counts.bump(knob);
                        if roll(f.drop, Topic::Drop) {
                            count("drop");
                            vec![]
                        } else if roll(f.slow_consumer, Topic::SlowConsumer) {
                            count("slow_consumer");
                            vec![slow_consumer_frame(n)]
                        } else if held.is_none() && roll(f.reorder, Topic::Reorder) {
                            count("reorder");
                            held = Some(data_frame(&json));
                            vec![]
                        } else {
                            let frame = data_frame(&json);
                            let mut out = vec![frame.clone()];
                            if roll(f.duplicate, Topic::Duplicate) {
                                count("duplicate");
                                out.push(frame);
                            }
                            out.extend(held.take());
                            out
                        }
                    }
                    // The real server's answer to a subscriber that fell behind.
                    Err(broadcast::error::RecvError::Lagged(_)) => vec![slow_consumer_frame(event_no)],
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for frame in frames {
                    if tx.send(frame).await.is_err() { return; }
                }
            }
            _ = tokio::time::sleep_until(next_keepalive) => {
                next_keepalive = tokio::time::Instant::now() + keepalive;
                if let Some(h) = held.take() {
                    if tx.send(h).await.is_err() { return; }
                }
                if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() { return; }
            }
        }
    }
}
