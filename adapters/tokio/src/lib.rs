//! # gapless-tokio
//!
//! Drives one [`gapless::SyncMachine`] for many conversations on tokio: one task owns the
//! machine (in a [`gapless_adapter::Session`] with its [`Store`]); every stream and every
//! fetch is a task that reports back over a channel; the owner sleeps until the machine's
//! next deadline (`tokio::time::sleep_until`) and drains every command after each input.
//! HTTP is reqwest with rustls (no OpenSSL); SSE bytes go through `gapless-catbird`'s
//! decoder. Each delivery batch is committed to the store before the application hears of
//! it.
//!
//! [`Options::api`] picks the server's API: [`Api::Mls`] (the default) opens one SSE stream
//! per live conversation; [`Api::MlsChat`] opens **one** WebSocket for all of them
//! (tokio-tungstenite with rustls and the webpki roots, as reqwest): a task asks for a
//! global ticket (`getSubscriptionTicket`, a new one per connect: it lives 30 s), connects
//! to the configured server's `subscribeEvents` (or the ticket's `endpoint` with
//! [`Options::follow_ticket_endpoint`]), and reads frames until the server drops the
//! connection (it never sends a close frame). Pings are answered by tungstenite and count
//! as keepalives; a refusal's `Retry-After` travels in `StreamError::RateLimited` (the machine waits it out).
//!
//! The store's [`commit`](gapless_adapter::Store::commit) runs on the owner task: a batch
//! (one page, or the few messages one stream event releases) is a single SQLite transaction
//! of a few milliseconds at most, so it is not moved to a blocking thread. If the
//! application stops reading updates, the driver waits once `updates_capacity` are queued
//! (memory stays bounded); [`Sync::shutdown`] still returns promptly.
//!
//! ```no_run
//! use gapless_adapter::{FixedToken, MemoryStore, Update};
//! use gapless_tokio::{Options, Sync};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let options = Options::new("http://127.0.0.1:8080");
//! // Any `gapless_adapter::Store` (gapless_sqlite::SqliteStore for real use) and any token
//! // provider (a closure `|nsid| …` minting a service token per request, for the real server).
//! let (sync, mut updates) = Sync::spawn(options, MemoryStore::new(), FixedToken::new("dev-secret"))?;
//! sync.subscribe("convo-1")?;
//! while let Some(update) = updates.recv().await {
//!     match update {
//!         Update::Message { convo, message, .. } => println!("{convo} #{} {}", message.seq.0, message.id),
//!         Update::Skipped { convo, from, to } => println!("{convo}: the server has no {}..={}", from.0, to.0),
//!         Update::Cleared { convo, reason } => println!("{convo}: cannot sync ({reason:?})"),
//!         _ => {}
//!     }
//! #   break;
//! }
//! let finished = sync.shutdown().await?; // stops IO; everything delivered is stored
//! println!("{} messages stored, {} fetches", finished.committed, finished.fetches);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use futures_util::StreamExt;
use gapless::{ConvoId, Input, StreamError, StreamId};
use gapless_adapter::{
    FetchCall, Io, Phase, Read, Request, SendCall, Session, SessionError, SharedCall,
    SocketMessage, Step, Store, StreamCall, TokenProvider, TransportProblem, Update,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};

pub use gapless_adapter;
pub use gapless_adapter::{Api, Finished, Options};

/// Why the driver stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The session failed (store, configuration).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// The driver task is gone (it failed earlier, or panicked).
    #[error("the sync task is not running")]
    Stopped,
}

enum Control {
    Request(Request),
    Shutdown,
}

/// The application's side of a running driver.
pub struct Sync<S> {
    control: mpsc::UnboundedSender<Control>,
    stopping: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<Result<Finished<S>, SyncError>>,
}

/// The application's stream of updates.
pub type Updates = mpsc::Receiver<Update>;

impl<S: Store> Sync<S> {
    /// Starts the driver on the current tokio runtime.
    pub fn spawn(
        options: Options,
        store: S,
        tokens: impl TokenProvider,
    ) -> Result<(Sync<S>, Updates), SyncError> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .user_agent(options.user_agent.clone())
            .build()?;
        let session = options.session(store)?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let stopping = Arc::new(tokio::sync::Notify::new());
        let (updates_tx, updates) = mpsc::channel(options.updates_capacity.max(1));
        let (io_tx, io_rx) = mpsc::channel(1024);
        let io = IoContext {
            http,
            options: Arc::new(options),
            tokens: Arc::new(tokens),
            tx: io_tx,
        };
        let owner = Owner {
            session,
            io,
            io_rx,
            control: control_rx,
            stopping: stopping.clone(),
            updates: updates_tx,
            tasks: JoinSet::new(),
            streams: HashMap::new(),
        };
        let task = tokio::spawn(owner.run());
        Ok((
            Sync {
                control,
                stopping,
                task,
            },
            updates,
        ))
    }

    /// Subscribes a conversation (live: stream plus catch-ups), resuming from the store.
    /// Returns at once; if the conversation is already subscribed, an
    /// [`Update::Refused`] says so.
    pub fn subscribe(&self, convo: impl Into<ConvoId>) -> Result<(), SyncError> {
        self.subscribe_with(convo.into(), true)
    }

    /// Subscribes a conversation; `live: false` syncs by periodic catch-ups only.
    pub fn subscribe_with(&self, convo: ConvoId, live: bool) -> Result<(), SyncError> {
        self.request(Request::Subscribe { convo, live })
    }

    /// Stops syncing a conversation.
    pub fn unsubscribe(&self, convo: impl Into<ConvoId>) -> Result<(), SyncError> {
        self.request(Request::Unsubscribe(convo.into()))
    }

    /// The app came to the foreground or the network came back: catch up now (one
    /// conversation, or all).
    pub fn resume(&self, convo: Option<ConvoId>) -> Result<(), SyncError> {
        self.request(Request::Resume(convo))
    }

    /// Sends a message: stored in the outbox (in the store) before its first send, then
    /// sent until the server accepts it — in order per conversation, retried with the same
    /// msgId — and confirmed once delivered; [`Update::Outbox`] tells every change. Returns
    /// at once; a message the server would refuse (bad msgId or padding) is an
    /// [`Update::Refused`]. The outbox of an earlier run is sent on start.
    pub fn send(&self, message: gapless::Outgoing) -> Result<(), SyncError> {
        self.request(Request::Send(message))
    }

    /// Sends a failed message again now.
    pub fn retry_send(
        &self,
        convo: impl Into<ConvoId>,
        msg_id: impl Into<gapless::MsgId>,
    ) -> Result<(), SyncError> {
        self.request(Request::RetrySend {
            convo: convo.into(),
            msg_id: msg_id.into(),
        })
    }

    /// Gives up on a message of the outbox.
    pub fn drop_send(
        &self,
        convo: impl Into<ConvoId>,
        msg_id: impl Into<gapless::MsgId>,
    ) -> Result<(), SyncError> {
        self.request(Request::DropSend {
            convo: convo.into(),
            msg_id: msg_id.into(),
        })
    }

    fn request(&self, request: Request) -> Result<(), SyncError> {
        self.control
            .send(Control::Request(request))
            .map_err(|_| SyncError::Stopped)
    }

    /// Stops: aborts every stream and fetch (their results would be refetched), and hands
    /// back the store. Everything delivered so far is already stored.
    pub async fn shutdown(self) -> Result<Finished<S>, SyncError> {
        let _ = self.control.send(Control::Shutdown);
        // Also wakes the driver if it waits for the application to read an update.
        self.stopping.notify_one();
        self.task.await.map_err(|_| SyncError::Stopped)?
    }

    /// Whether the driver stopped by itself (a store failure): [`shutdown`](Sync::shutdown)
    /// tells why.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

#[derive(Clone)]
struct IoContext {
    http: reqwest::Client,
    options: Arc<Options>,
    tokens: Arc<dyn TokenProvider>,
    tx: mpsc::Sender<Input>,
}

struct Owner<S> {
    session: Session<S>,
    io: IoContext,
    io_rx: mpsc::Receiver<Input>,
    control: mpsc::UnboundedReceiver<Control>,
    stopping: Arc<tokio::sync::Notify>,
    updates: mpsc::Sender<Update>,
    tasks: JoinSet<()>,
    streams: HashMap<StreamId, AbortHandle>,
}

impl<S: Store> Owner<S> {
    async fn run(mut self) -> Result<Finished<S>, SyncError> {
        let result = self.run_loop().await;
        self.tasks.shutdown().await;
        result?;
        Ok(Finished::of(self.session))
    }

    async fn run_loop(&mut self) -> Result<(), SyncError> {
        // What an earlier run left in the outbox goes first (same msgIds).
        let step = self.session.resume_outbox()?;
        if !self.apply(step).await {
            return Ok(());
        }
        loop {
            let deadline = self.session.deadline();
            let step = tokio::select! {
                biased;
                control = self.control.recv() => match control {
                    Some(Control::Request(request)) => self.session.request(request)?,
                    Some(Control::Shutdown) | None => return Ok(()),
                },
                Some(input) = self.io_rx.recv() => {
                    if let Input::StreamClosed { stream, .. } | Input::SharedClosed { stream, .. } = &input {
                        self.streams.remove(stream);
                    }
                    self.session.input(input)?
                }
                _ = sleep_until(deadline), if deadline.is_some() => self.session.timeout()?,
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => continue,
            };
            if !self.apply(step).await {
                return Ok(());
            }
        }
    }

    /// Does a step's IO and tells its updates; `false` if asked to stop meanwhile.
    async fn apply(&mut self, step: Step) -> bool {
        for io in step.io {
            match io {
                Io::Open(call) => {
                    let stream = call.stream;
                    let handle = self.tasks.spawn(stream_task(self.io.clone(), call));
                    self.streams.insert(stream, handle);
                }
                Io::OpenShared(call) => {
                    let stream = call.stream;
                    let handle = self.tasks.spawn(shared_task(self.io.clone(), call));
                    self.streams.insert(stream, handle);
                }
                // Aborting the task drops the socket: TCP closes, as the server itself
                // closes (no close frame).
                Io::Close { stream, .. } | Io::CloseShared { stream } => {
                    if let Some(handle) = self.streams.remove(&stream) {
                        handle.abort();
                    }
                }
                Io::Fetch(call) => {
                    self.tasks.spawn(fetch_task(self.io.clone(), call));
                }
                Io::Send(call) => {
                    self.tasks.spawn(send_task(self.io.clone(), call));
                }
            }
        }
        for update in step.updates {
            // Waits while the application's queue is full; a shutdown cuts the wait short
            // (what it has not been told is in the store). If the application dropped its
            // receiver, it still gets everything in the store.
            tokio::select! {
                _ = self.updates.send(update) => {}
                _ = self.stopping.notified() => return false,
            }
        }
        true
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

async fn token(io: &IoContext, nsid: &'static str) -> Option<String> {
    let tokens = io.tokens.clone();
    // A token command may run a process: off the runtime's threads.
    tokio::task::spawn_blocking(move || gapless_adapter::bearer(&*tokens, nsid))
        .await
        .ok()
        .flatten()
}

/// Reads a body up to `limit` bytes (and one more, so that the decoder sees it is too big).
async fn body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            break;
        }
    }
    Ok(out)
}

fn retry_after(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn fetch_task(io: IoContext, call: FetchCall) {
    let input = fetch(&io, &call).await;
    let _ = io.tx.send(input).await;
}

async fn fetch(io: &IoContext, call: &FetchCall) -> Input {
    let Some(auth) = token(io, call.nsid).await else {
        return call.failed();
    };
    let request = io.http.get(io.options.url(&call.path_and_query));
    match exchange(
        io,
        request,
        auth,
        io.options.wire.limits.max_body,
        &call.request.convo,
    )
    .await
    {
        Ok((status, retry, bytes)) => {
            call.answer(status, retry.as_deref(), &bytes, &io.options.wire.limits)
        }
        Err(Broke::Unreachable(problem)) => call.unreachable(problem),
        Err(Broke::Body) => call.failed(),
    }
}

/// How a request ended without a whole answer.
enum Broke {
    /// Never answered: connection refused, DNS, TLS, timeout.
    Unreachable(gapless_adapter::TransportProblem),
    /// Answered, but the body broke off (or was too long).
    Body,
}

/// One request with a fresh token: its status, `Retry-After` and body (at most `max_body`).
/// The fetch and the send share it.
async fn exchange(
    io: &IoContext,
    request: reqwest::RequestBuilder,
    auth: String,
    max_body: usize,
    convo: &gapless::ConvoId,
) -> Result<(u16, Option<String>, Vec<u8>), Broke> {
    let sent = request
        .header(reqwest::header::AUTHORIZATION, auth)
        .timeout(io.options.request_timeout)
        .send()
        .await;
    let response = sent.map_err(|e| {
        let problem = problem(&e);
        tracing::debug!(%convo, error = %without_url(e), "request failed");
        Broke::Unreachable(problem)
    })?;
    let status = response.status().as_u16();
    let retry = retry_after(&response);
    let bytes = body(response, max_body).await.map_err(|e| {
        tracing::debug!(%convo, error = %without_url(e), "answer broke off");
        Broke::Body
    })?;
    Ok((status, retry, bytes))
}

async fn send_task(io: IoContext, call: SendCall) {
    let input = send(&io, &call).await;
    let _ = io.tx.send(input).await;
}

async fn send(io: &IoContext, call: &SendCall) -> Input {
    let Some(auth) = token(io, call.nsid).await else {
        return call.failed();
    };
    let request = io
        .http
        .post(io.options.url(&call.path))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(call.body.clone());
    match exchange(
        io,
        request,
        auth,
        gapless_adapter::catbird::send::MAX_ANSWER,
        &call.request.convo,
    )
    .await
    {
        Ok((status, retry, bytes)) => call.answer(status, retry.as_deref(), &bytes),
        Err(Broke::Unreachable(problem)) => call.unreachable(problem),
        Err(Broke::Body) => call.failed(),
    }
}

async fn stream_task(io: IoContext, call: StreamCall) {
    let input = stream(&io, &call).await;
    let _ = io.tx.send(input).await;
}

/// Runs a stream to its end; returns the closing input.
async fn stream(io: &IoContext, call: &StreamCall) -> Input {
    let transient = Some(StreamError::Transient);
    let Some(auth) = token(io, StreamCall::NSID).await else {
        return call.closed(transient);
    };
    let url = io.options.url(&call.path_and_query);
    let sent = io
        .http
        .get(url)
        .header(reqwest::header::AUTHORIZATION, auth)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send();
    let mut response = match tokio::time::timeout(io.options.request_timeout, sent).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let problem = problem(&e);
            tracing::debug!(convo = %call.convo, error = %without_url(e), "stream failed");
            return call.unreachable(problem);
        }
        Err(_) => return call.unreachable(TransportProblem::Timeout),
    };
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        let retry = retry_after(&response);
        let bytes = body(response, 64 * 1024).await.unwrap_or_default();
        return call.refused(status, retry.as_deref(), &bytes);
    }
    if io.tx.send(call.opened()).await.is_err() {
        return call.closed(None);
    }
    let mut reader = call.reader(&io.options.wire.limits);
    let mut inputs = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                let fed = reader.feed(&bytes, &mut inputs);
                for input in inputs.drain(..) {
                    if io.tx.send(input).await.is_err() {
                        return call.closed(None);
                    }
                }
                if let Some(closing) = fed {
                    return closing;
                }
            }
            Ok(None) => return call.closed(None),
            Err(e) => {
                tracing::debug!(convo = %call.convo, error = %without_url(e), "stream broke");
                return call.closed(transient);
            }
        }
    }
}

async fn shared_task(io: IoContext, call: SharedCall) {
    let input = shared(&io, &call).await;
    let _ = io.tx.send(input).await;
}

/// Runs one connection of the shared stream (a ticket, the WebSocket) to its end; returns
/// the closing input.
async fn shared(io: &IoContext, call: &SharedCall) -> Input {
    let Some(auth) = token(io, SharedCall::TICKET_NSID).await else {
        return call.failed();
    };
    let sent = io
        .http
        .post(io.options.url(&call.ticket_path()))
        .header(reqwest::header::AUTHORIZATION, auth)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(call.ticket_body())
        .timeout(io.options.request_timeout)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            let problem = problem(&e);
            tracing::debug!(error = %without_url(e), "ticket request failed");
            return call.unreachable(Phase::Ticket, problem);
        }
    };
    let status = response.status().as_u16();
    let retry = retry_after(&response);
    let limit = gapless_adapter::catbird::realtime::ticket::MAX_TICKET_BODY;
    let Ok(bytes) = body(response, limit).await else {
        return call.failed();
    };
    let url = match call.ticket_answer(status, retry.as_deref(), &bytes, &io.options) {
        Ok(url) => url,
        Err(closing) => return closing,
    };
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "socket URL");
            return call.unreachable(Phase::Upgrade, TransportProblem::Other);
        }
    };
    if let Ok(agent) = io.options.user_agent.parse() {
        request.headers_mut().insert("user-agent", agent);
    }
    let limits = &io.options.wire.limits;
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(limits.max_event.saturating_add(1)))
        .max_frame_size(Some(limits.max_event.saturating_add(1)));
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, None);
    let mut socket = match tokio::time::timeout(io.options.request_timeout, connect).await {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(tungstenite::Error::Http(response))) => {
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok());
            let body = response.body().as_deref().unwrap_or_default();
            return call.refused(response.status().as_u16(), retry, body);
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "WebSocket connect failed");
            let problem = ws_problem(&e);
            return call.unreachable(Phase::Upgrade, problem);
        }
        Err(_) => return call.unreachable(Phase::Upgrade, TransportProblem::Timeout),
    };
    if io.tx.send(call.opened()).await.is_err() {
        return call.closed(None);
    }
    let reader = call.reader(limits);
    loop {
        let message = match socket.next().await {
            Some(Ok(m)) => m,
            Some(Err(
                tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed
                | tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ),
            ))
            | None => return call.ended(),
            Some(Err(e)) => return call.broke(&e),
        };
        let read = match &message {
            Message::Binary(b) => reader.read(SocketMessage::Binary(b)),
            Message::Text(t) => reader.read(SocketMessage::Text(t.as_str())),
            Message::Ping(_) => reader.read(SocketMessage::Ping),
            Message::Pong(_) => reader.read(SocketMessage::Pong),
            Message::Close(_) => reader.read(SocketMessage::Close),
            Message::Frame(_) => Read::Nothing,
        };
        match read {
            Read::Input(input) => {
                if io.tx.send(input).await.is_err() {
                    return call.closed(None);
                }
            }
            Read::Nothing => {}
            Read::Close(input) => return input,
        }
    }
}

/// Why a WebSocket connect got no answer.
fn ws_problem(e: &tungstenite::Error) -> TransportProblem {
    match e {
        tungstenite::Error::Io(io) => TransportProblem::of(io),
        tungstenite::Error::Tls(_) => TransportProblem::Tls,
        other => TransportProblem::of(other),
    }
}

/// Why a request got no answer, from reqwest's error kinds and the causes under them.
fn problem(e: &reqwest::Error) -> TransportProblem {
    if e.is_timeout() {
        TransportProblem::Timeout
    } else {
        TransportProblem::of(e)
    }
}

/// reqwest errors carry the URL, and with it the conversation id only: no token is ever in
/// a URL. Dropped anyway, to keep logs short.
fn without_url(e: reqwest::Error) -> reqwest::Error {
    e.without_url()
}
