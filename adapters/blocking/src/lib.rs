//! # gapless-blocking
//!
//! Drives one [`gapless::SyncMachine`] with threads and a blocking HTTP client (ureq with
//! rustls): for programs without an async runtime — CLI tools, FFI hosts, embedded Linux.
//! The loop is str0m's `chat.rs` shape: drain the machine's commands, wait on a channel
//! with a timeout equal to the next deadline, feed back what arrives. Each SSE stream reads
//! on its own thread; fetches run on a pool of `max_inflight_fetches` threads. With
//! [`Api::MlsChat`] one WebSocket (tungstenite with rustls and the webpki roots, as ureq)
//! carries every live conversation, read on its own thread: a global ticket first (a new
//! one per connect), then the socket at the configured server (or the ticket's `endpoint`
//! with [`Options::follow_ticket_endpoint`]); its reads time out every 200 ms so that the
//! thread notices a close, and closing it also shuts its TCP connection down. The wire
//! format, the store protocol and the command handling are `gapless-adapter`'s, shared with
//! `gapless-tokio`; each delivery batch is committed to the [`Store`] before the application
//! hears of it.
//!
//! ```no_run
//! use gapless_adapter::{FixedToken, MemoryStore, Update};
//! use gapless_blocking::{Options, Sync};
//! use std::time::Duration;
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (sync, updates) = Sync::spawn(
//!     Options::new("http://127.0.0.1:8080"),
//!     MemoryStore::new(), // gapless_sqlite::SqliteStore for real use
//!     FixedToken::new("dev-secret"),
//! )?;
//! sync.subscribe("convo-1")?;
//! while let Ok(update) = updates.recv_timeout(Duration::from_secs(30)) {
//!     if let Update::Message { convo, message, .. } = update {
//!         println!("{convo} #{} {}", message.seq.0, message.id);
//!     }
//! }
//! let finished = sync.shutdown()?; // joins every thread; everything delivered is stored
//! println!("{} messages stored", finished.committed);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use gapless::{ConvoId, Input, StreamError, StreamId};
use gapless_adapter::catbird::Limits;
use gapless_adapter::{
    FetchCall, Io, Phase, Read as Next, Request, SendCall, Session, SessionError, SharedCall,
    SocketMessage, Step, Store, StreamCall, TokenProvider, TransportProblem, Update,
};
use std::collections::HashMap;
use std::io::Read;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::Instant;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::Message;

pub use gapless_adapter;
pub use gapless_adapter::{Api, Finished, Options};

/// Why the driver stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The session failed (store, configuration).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The driver thread is gone (it failed earlier, or panicked).
    #[error("the sync thread is not running")]
    Stopped,
}

enum Msg {
    Io(Input),
    Request(Request),
    Shutdown,
}

/// The application's side of a running driver.
pub struct Sync<S> {
    tx: Sender<Msg>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Finished<S>, SyncError>>>,
}

impl<S: Store> Sync<S> {
    /// Starts the driver thread (and its fetch pool).
    pub fn spawn(
        options: Options,
        store: S,
        tokens: impl TokenProvider,
    ) -> Result<(Sync<S>, Receiver<Update>), SyncError> {
        let session = options.session(store)?;
        let (tx, rx) = mpsc::channel();
        let (updates_tx, updates) = mpsc::sync_channel(options.updates_capacity.max(1));
        let stopping = Arc::new(AtomicBool::new(false));
        let owner_stopping = stopping.clone();
        let io = IoContext {
            fetch_agent: agent(&options),
            options: Arc::new(options),
            tokens: Arc::new(tokens),
            tx: tx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("gapless-sync".into())
            .spawn(move || Owner::new(session, io, rx, updates_tx, owner_stopping)?.run())?;
        Ok((
            Sync {
                tx,
                stopping,
                thread: Some(thread),
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

    /// Catch up now (one conversation, or all).
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
        self.tx
            .send(Msg::Request(request))
            .map_err(|_| SyncError::Stopped)
    }

    /// Whether the driver stopped by itself (a store failure): `shutdown` tells why.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops: interrupts every stream and fetch, joins every thread, and hands back the
    /// store. Everything delivered so far is already stored.
    pub fn shutdown(mut self) -> Result<Finished<S>, SyncError> {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Shutdown);
        let thread = self.thread.take().ok_or(SyncError::Stopped)?;
        thread.join().map_err(|_| SyncError::Stopped)?
    }
}

impl<S> Drop for Sync<S> {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn agent(options: &Options) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(options.connect_timeout))
        .user_agent(options.user_agent.as_str())
        .build()
        .into()
}

#[derive(Clone)]
struct IoContext {
    options: Arc<Options>,
    fetch_agent: ureq::Agent,
    tokens: Arc<dyn TokenProvider>,
    tx: Sender<Msg>,
}

struct StreamThread {
    cancel: Arc<AtomicBool>,
    agent: ureq::Agent,
    /// A WebSocket's TCP connection, once it has one: shut down to interrupt a read.
    socket: Arc<Mutex<Option<TcpStream>>>,
    thread: JoinHandle<()>,
}

impl StreamThread {
    /// Stops it promptly: nothing more is reported, its request or read is interrupted.
    fn interrupt(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        self.agent.clone().shutdown();
        if let Some(socket) = self.socket.lock().ok().and_then(|mut s| s.take()) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

struct Owner<S> {
    session: Session<S>,
    io: IoContext,
    rx: Receiver<Msg>,
    updates: SyncSender<Update>,
    stopping: Arc<AtomicBool>,
    fetches: Option<Sender<Job>>,
    pool: Vec<JoinHandle<()>>,
    streams: HashMap<StreamId, StreamThread>,
    closing: Vec<StreamThread>,
}

impl<S: Store> Owner<S> {
    fn new(
        session: Session<S>,
        io: IoContext,
        rx: Receiver<Msg>,
        updates: SyncSender<Update>,
        stopping: Arc<AtomicBool>,
    ) -> Result<Owner<S>, SyncError> {
        let (fetch_tx, fetch_rx) = mpsc::channel::<Job>();
        let fetch_rx = Arc::new(Mutex::new(fetch_rx));
        let workers = session.machine().config().max_inflight_fetches.max(1);
        let mut pool = Vec::with_capacity(workers);
        for n in 0..workers {
            let jobs = fetch_rx.clone();
            let io = io.clone();
            pool.push(
                std::thread::Builder::new()
                    .name(format!("gapless-fetch-{n}"))
                    .spawn(move || fetch_worker(io, jobs))?,
            );
        }
        Ok(Owner {
            session,
            io,
            rx,
            updates,
            stopping,
            fetches: Some(fetch_tx),
            pool,
            streams: HashMap::new(),
            closing: Vec::new(),
        })
    }

    fn run(mut self) -> Result<Finished<S>, SyncError> {
        let result = self.run_loop();
        self.stop_threads();
        result?;
        Ok(Finished::of(self.session))
    }

    fn run_loop(&mut self) -> Result<(), SyncError> {
        // What an earlier run left in the outbox goes first (same msgIds).
        let step = self.session.resume_outbox()?;
        self.apply(step)?;
        loop {
            let wait = self
                .session
                .deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let msg = match wait {
                Some(w) => self.rx.recv_timeout(w),
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let step = match msg {
                Err(RecvTimeoutError::Timeout) => self.session.timeout()?,
                Err(RecvTimeoutError::Disconnected) | Ok(Msg::Shutdown) => return Ok(()),
                Ok(Msg::Request(request)) => self.session.request(request)?,
                Ok(Msg::Io(input)) => {
                    if let Input::StreamClosed { stream, .. } | Input::SharedClosed { stream, .. } =
                        &input
                    {
                        if let Some(t) = self.streams.remove(stream) {
                            self.closing.push(t);
                        }
                    }
                    self.session.input(input)?
                }
            };
            self.apply(step)?;
        }
    }

    fn apply(&mut self, step: Step) -> Result<(), SyncError> {
        for io in step.io {
            match io {
                Io::Open(call) => {
                    let stream = call.stream;
                    let t = spawn_stream(self.io.clone(), call)?;
                    self.streams.insert(stream, t);
                }
                Io::OpenShared(call) => {
                    let stream = call.stream;
                    let t = spawn_shared(self.io.clone(), call)?;
                    self.streams.insert(stream, t);
                }
                Io::Close { stream, .. } | Io::CloseShared { stream } => {
                    if let Some(t) = self.streams.remove(&stream) {
                        t.interrupt();
                        self.closing.push(t);
                    }
                }
                Io::Fetch(call) => {
                    if let Some(jobs) = &self.fetches {
                        let _ = jobs.send(Job::Fetch(call));
                    }
                }
                Io::Send(call) => {
                    if let Some(jobs) = &self.fetches {
                        let _ = jobs.send(Job::Send(call));
                    }
                }
            }
        }
        // Join the stream threads that have ended (they do promptly once interrupted).
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.closing)
            .into_iter()
            .partition(|t| t.thread.is_finished());
        self.closing = running;
        for t in done {
            let _ = t.thread.join();
        }
        for mut update in step.updates {
            // Waits while the application's queue is full; a shutdown cuts the wait short
            // (what it has not been told is in the store). If the application dropped its
            // receiver, it still gets everything in the store.
            loop {
                match self.updates.try_send(update) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                    Err(TrySendError::Full(u)) if !self.stopping.load(Ordering::SeqCst) => {
                        update = u;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Err(TrySendError::Full(_)) => return Ok(()),
                }
            }
        }
        Ok(())
    }

    /// Interrupts every request in flight and joins every thread.
    fn stop_threads(&mut self) {
        self.fetches = None; // the workers end when the queue is closed …
        self.io.fetch_agent.clone().shutdown(); // … and a hung fetch is interrupted
        for t in self
            .streams
            .drain()
            .map(|(_, t)| t)
            .chain(self.closing.drain(..))
        {
            t.interrupt();
            let _ = t.thread.join();
        }
        for worker in self.pool.drain(..) {
            let _ = worker.join();
        }
    }
}

fn token(io: &IoContext, nsid: &'static str) -> Option<String> {
    gapless_adapter::bearer(&*io.tokens, nsid)
}

fn retry_after<B>(response: &ureq::http::Response<B>) -> Option<String> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Reads a body up to `limit` bytes (and one more, so the decoder sees it is too big).
fn body(response: ureq::http::Response<ureq::Body>, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// A request for the pool's threads: a fetch or a send.
enum Job {
    Fetch(FetchCall),
    Send(SendCall),
}

fn fetch_worker(io: IoContext, jobs: Arc<Mutex<Receiver<Job>>>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let input = match job {
            Job::Fetch(call) => fetch(&io, &call),
            Job::Send(call) => send(&io, &call),
        };
        if io.tx.send(Msg::Io(input)).is_err() {
            return;
        }
    }
}

fn fetch(io: &IoContext, call: &FetchCall) -> Input {
    let Some(auth) = token(io, call.nsid) else {
        return call.failed();
    };
    let url = io.options.url(&call.path_and_query);
    let sent = io
        .fetch_agent
        .get(&url)
        .header("Authorization", &auth)
        .config()
        .timeout_global(Some(io.options.request_timeout))
        .build()
        .call();
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(convo = %call.request.convo, error = %e, "fetch failed");
            return call.unreachable(problem(&e));
        }
    };
    let status = response.status().as_u16();
    let retry = retry_after(&response);
    let limits: &Limits = &io.options.wire.limits;
    match body(response, limits.max_body) {
        Ok(bytes) => call.answer(status, retry.as_deref(), &bytes, limits),
        Err(e) => {
            tracing::debug!(convo = %call.request.convo, error = %e, "fetch body failed");
            call.failed()
        }
    }
}

fn send(io: &IoContext, call: &SendCall) -> Input {
    let Some(auth) = token(io, call.nsid) else {
        return call.failed();
    };
    let url = io.options.url(&call.path);
    let sent = io
        .fetch_agent
        .post(&url)
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .config()
        .timeout_global(Some(io.options.request_timeout))
        .build()
        .send(&call.body[..]);
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(convo = %call.request.convo, error = %e, "send failed");
            return call.unreachable(problem(&e));
        }
    };
    let status = response.status().as_u16();
    let retry = retry_after(&response);
    match body(response, gapless_adapter::catbird::send::MAX_ANSWER) {
        Ok(bytes) => call.answer(status, retry.as_deref(), &bytes),
        Err(e) => {
            tracing::debug!(convo = %call.request.convo, error = %e, "send answer broke off");
            call.failed()
        }
    }
}

/// Why a request got no answer, from ureq's error kinds.
fn problem(e: &ureq::Error) -> TransportProblem {
    match e {
        ureq::Error::Timeout(_) => TransportProblem::Timeout,
        ureq::Error::HostNotFound => TransportProblem::Dns,
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => TransportProblem::Tls,
        ureq::Error::Io(io) => TransportProblem::of(io),
        other => TransportProblem::of(other),
    }
}

fn spawn_stream(io: IoContext, call: StreamCall) -> Result<StreamThread, SyncError> {
    let cancel = Arc::new(AtomicBool::new(false));
    // One agent per stream, so that closing it interrupts this stream's read only.
    let agent = agent(&io.options);
    let thread = {
        let cancel = cancel.clone();
        let agent = agent.clone();
        std::thread::Builder::new()
            .name(format!("gapless-stream-{}", call.stream.0))
            .spawn(move || {
                let send = |input: Input| {
                    if !cancel.load(Ordering::SeqCst) {
                        let _ = io.tx.send(Msg::Io(input));
                    }
                };
                stream(&io, &agent, &call, &send);
            })?
    };
    Ok(StreamThread {
        cancel,
        agent,
        socket: Arc::new(Mutex::new(None)),
        thread,
    })
}

/// Runs a stream to its end, sending every input (the closing one last).
fn stream(io: &IoContext, agent: &ureq::Agent, call: &StreamCall, send: &dyn Fn(Input)) {
    let transient = Some(StreamError::Transient);
    let Some(auth) = token(io, StreamCall::NSID) else {
        return send(call.closed(transient));
    };
    let url = io.options.url(&call.path_and_query);
    let sent = agent
        .get(&url)
        .header("Authorization", &auth)
        .header("Accept", "text/event-stream")
        .config()
        .timeout_recv_response(Some(io.options.request_timeout))
        .build()
        .call();
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(convo = %call.convo, error = %e, "stream failed");
            return send(call.unreachable(problem(&e)));
        }
    };
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        let retry = retry_after(&response);
        let bytes = body(response, 64 * 1024).unwrap_or_default();
        return send(call.refused(status, retry.as_deref(), &bytes));
    }
    send(call.opened());
    let limits = &io.options.wire.limits;
    let mut reader = call.reader(limits);
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 16 * 1024];
    let mut inputs = Vec::new();
    loop {
        match body.read(&mut buf) {
            Ok(0) => return send(call.closed(None)),
            Ok(n) => {
                let fed = reader.feed(&buf[..n], &mut inputs);
                for input in inputs.drain(..) {
                    send(input);
                }
                if let Some(closing) = fed {
                    return send(closing);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(convo = %call.convo, error = %e, "stream broke");
                return send(call.closed(transient));
            }
        }
    }
}

/// How often a WebSocket read gives up waiting, so that its thread notices a close even if
/// shutting the connection down did not wake it.
const SOCKET_POLL: Duration = Duration::from_millis(200);

fn spawn_shared(io: IoContext, call: SharedCall) -> Result<StreamThread, SyncError> {
    let cancel = Arc::new(AtomicBool::new(false));
    // Its own agent, so that closing it interrupts this ticket request only.
    let agent = agent(&io.options);
    let socket = Arc::new(Mutex::new(None));
    let thread = {
        let (cancel, agent, socket) = (cancel.clone(), agent.clone(), socket.clone());
        std::thread::Builder::new()
            .name(format!("gapless-socket-{}", call.stream.0))
            .spawn(move || {
                let send = |input: Input| {
                    if !cancel.load(Ordering::SeqCst) {
                        let _ = io.tx.send(Msg::Io(input));
                    }
                };
                let end = shared(&io, &agent, &socket, &cancel, &call, &send);
                send(end);
            })?
    };
    Ok(StreamThread {
        cancel,
        agent,
        socket,
        thread,
    })
}

/// Runs one connection of the shared stream (a ticket, the WebSocket) to its end, sending
/// every input but the closing one, which it returns.
fn shared(
    io: &IoContext,
    agent: &ureq::Agent,
    slot: &Mutex<Option<TcpStream>>,
    cancel: &AtomicBool,
    call: &SharedCall,
    send: &dyn Fn(Input),
) -> Input {
    let Some(auth) = token(io, SharedCall::TICKET_NSID) else {
        return call.failed();
    };
    let sent = agent
        .post(&io.options.url(&call.ticket_path()))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .config()
        .timeout_global(Some(io.options.request_timeout))
        .build()
        .send(call.ticket_body());
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "ticket request failed");
            return call.unreachable(Phase::Ticket, problem(&e));
        }
    };
    let status = response.status().as_u16();
    let retry = retry_after(&response);
    let limit = gapless_adapter::catbird::realtime::ticket::MAX_TICKET_BODY;
    let Ok(bytes) = body(response, limit) else {
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
    let tcp = match connect(&request, &io.options) {
        Ok(tcp) => tcp,
        Err(problem) => return call.unreachable(Phase::Upgrade, problem),
    };
    match (tcp.try_clone(), slot.lock()) {
        (Ok(clone), Ok(mut slot)) => *slot = Some(clone),
        _ => return call.unreachable(Phase::Upgrade, TransportProblem::Other),
    }
    if cancel.load(Ordering::SeqCst) {
        return call.closed(None);
    }
    let limits = &io.options.wire.limits;
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(limits.max_event.saturating_add(1)))
        .max_frame_size(Some(limits.max_event.saturating_add(1)));
    let mut socket = match tungstenite::client_tls_with_config(request, tcp, Some(config), None) {
        Ok((socket, _)) => socket,
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok());
            let body = response.body().as_deref().unwrap_or_default();
            return call.refused(response.status().as_u16(), retry, body);
        }
        Err(HandshakeError::Failure(e)) => {
            tracing::debug!(error = %e, "WebSocket connect failed");
            return call.unreachable(Phase::Upgrade, ws_problem(&e));
        }
        // The read timeout struck mid-handshake.
        Err(HandshakeError::Interrupted(_)) => {
            return call.unreachable(Phase::Upgrade, TransportProblem::Timeout)
        }
    };
    // From now on a read gives up every SOCKET_POLL, to look at `cancel`.
    if let Some(tcp) = slot.lock().ok().as_ref().and_then(|s| s.as_ref()) {
        let _ = tcp.set_read_timeout(Some(SOCKET_POLL));
    }
    send(call.opened());
    let reader = call.reader(limits);
    loop {
        if cancel.load(Ordering::SeqCst) {
            return call.closed(None);
        }
        let message = match socket.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(
                tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed
                | tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ),
            ) => return call.ended(),
            Err(e) => return call.broke(&e),
        };
        let next = match &message {
            Message::Binary(b) => reader.read(SocketMessage::Binary(b)),
            Message::Text(t) => reader.read(SocketMessage::Text(t.as_str())),
            Message::Ping(_) => reader.read(SocketMessage::Ping),
            Message::Pong(_) => reader.read(SocketMessage::Pong),
            Message::Close(_) => reader.read(SocketMessage::Close),
            Message::Frame(_) => Next::Nothing,
        };
        match next {
            Next::Input(input) => send(input),
            Next::Nothing => {}
            Next::Close(input) => return input,
        }
    }
}

/// The WebSocket's TCP connection: `connect_timeout` per address, then `request_timeout` for
/// every read and write of the handshake.
fn connect(
    request: &tungstenite::handshake::client::Request,
    options: &Options,
) -> Result<TcpStream, TransportProblem> {
    let uri = request.uri();
    let host = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .ok_or(TransportProblem::Other)?;
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("wss") => 443,
        _ => 80,
    });
    let addrs = (host, port).to_socket_addrs().map_err(|e| {
        tracing::debug!(error = %e, "socket address");
        TransportProblem::Dns
    })?;
    let mut problem = TransportProblem::Dns;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, options.connect_timeout) {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                let timeout = Some(options.request_timeout);
                if tcp.set_read_timeout(timeout).is_err() || tcp.set_write_timeout(timeout).is_err()
                {
                    return Err(TransportProblem::Other);
                }
                return Ok(tcp);
            }
            Err(e) => {
                tracing::debug!(error = %e, %addr, "WebSocket connect failed");
                problem = TransportProblem::of(&e);
            }
        }
    }
    Err(problem)
}

/// Why a WebSocket handshake got no answer.
fn ws_problem(e: &tungstenite::Error) -> TransportProblem {
    match e {
        tungstenite::Error::Io(io) => TransportProblem::of(io),
        tungstenite::Error::Tls(_) => TransportProblem::Tls,
        other => TransportProblem::of(other),
    }
}
