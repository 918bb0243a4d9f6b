//! Hundreds of conversations within the real server's rate limits: a cold start of the tokio
//! driver on 500 live conversations against the dev server with the real server's limiters,
//! and a gap in the one conversation the application has in view while the others catch up.
//!
//! `cargo run --release -p gapless-benches --bin quota -- [--convos 500] [--messages 3]
//! [--trickle 1] [--profile calm|flaky-mobile|hostile] [--limit 150] [--seed 7]`
//!
//! Two runs, each on its own dev server (so that their rate-limit buckets are separate), with
//! `RateLimits::real()` on (getMessages and streamConvoEvents 200 a minute for the account, a
//! burst limiter of 10 refilled at 100 a second), the machine's default configuration (its
//! budget: 180 a minute each, bursts of 8 at 80 a second) and a fresh in-memory store:
//! - **alone**: one conversation; once it is caught up, three gaps and three resumes;
//! - **busy**: `--convos` conversations with `--messages` messages each posted before the
//!   start, all subscribed live at once (cold), a trickle of `--trickle` messages a second
//!   into the others while they catch up; the same gaps and resumes in `c0` 5 s after the
//!   start and every 20 s after that while the others still catch up (a probe waits 30 s at
//!   most); and right after the first ones (about 7 s after the start), the last
//!   conversation (whose stream the budget has likely not opened yet) brought into view: a
//!   message posted to it, then `resume(Some(it))`. The run stops once every conversation
//!   is caught up, or after `--limit` seconds.
//!
//! "Caught up" means: the messages stored for the conversation are exactly those of the
//! server's log for it (`DevServer::log`, plus any the server has since expired). The 429s
//! are the dev server's own counters (`rate_limited`: a per-minute quota; `burst_limited`:
//! the burst limiter). Not stored at the end: in the log, not in the store when the run
//! stopped — lost if every conversation had caught up (the binary then exits 1), else
//! possibly only behind. Told twice: a message the application was handed twice. Also
//! printed: how many conversations were caught up over time, and the fetches of each 15 s
//! window split into those for conversations still behind and those for conversations
//! already caught up (where the budget went).
//!
//! **How a gap is injected.** The dev server has no targeted drop, so the driver talks to it
//! through a small proxy in this binary that passes every request through and removes, from
//! the SSE streams only, every event whose message carries a marker (its ciphertext begins
//! with bytes whose base64 is `GAPLESSDROP0`). A gap probe posts a marked message and then
//! an ordinary one to `c0`: the stream shows the second, the machine sees a gap, waits
//! `gap_wait` (500 ms) and fetches. A resume probe posts a marked message and calls
//! `Sync::resume(Some(c0))`: the machine fetches at once, ahead of routine work. Both are
//! timed from just before the post to the moment the store committed the marked message.
//! The proxy closes each connection after one response (`connection: close`), so that it sees
//! every request on its own; it costs a loopback connect per request, in both runs alike.

use gapless::Order;
use gapless_adapter::{FixedToken, MemoryStore, Restored, Store, StoreError, Update, Write};
use gapless_devserver::{DevServer, Options, Profile, RateLimits};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first bytes of a message the proxy removes from the streams: standard base64
/// `GAPLESSDROP0`, a prefix of the whole ciphertext's base64 (nine bytes, a multiple of 3).
const MARKER_BYTES: [u8; 9] = [24, 3, 203, 17, 36, 131, 68, 227, 244];
const MARKER: &[u8] = b"GAPLESSDROP0";

/// How long a probe waits for its message at most.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

// ---- the store: a MemoryStore that remembers when each message was committed ---------

#[derive(Default)]
struct Record {
    /// Conversation → ids stored.
    stored: HashMap<String, HashSet<String>>,
    /// Id → when it was first committed.
    at: HashMap<String, Instant>,
}

struct Recording {
    inner: MemoryStore,
    record: Arc<Mutex<Record>>,
}

impl Store for Recording {
    fn commit(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        self.inner.commit(batch)?;
        let now = Instant::now();
        let mut r = self.record.lock().unwrap();
        for w in batch.iter().filter(|w| w.is_stored()) {
            if let Write::Message { delivery, .. } = w {
                let id = delivery.message.id.as_str().to_string();
                r.stored
                    .entry(delivery.convo.as_str().to_string())
                    .or_default()
                    .insert(id.clone());
                r.at.entry(id).or_insert(now);
            }
        }
        Ok(())
    }
    fn load(
        &mut self,
        convo: &gapless::ConvoId,
        recent: usize,
    ) -> Result<Option<Restored>, StoreError> {
        self.inner.load(convo, recent)
    }
    fn contains(
        &mut self,
        convo: &gapless::ConvoId,
        id: &gapless::MessageId,
    ) -> Result<bool, StoreError> {
        self.inner.contains(convo, id)
    }
}

// ---- the proxy ------------------------------------------------------------------------

mod proxy {
    use super::MARKER;
    use std::collections::HashMap;
    use std::io;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// What went through.
    #[derive(Default)]
    pub struct Seen {
        pub streams: AtomicU64,
        pub fetches: AtomicU64,
        pub too_many: AtomicU64,
        pub dropped: AtomicU64,
        /// Conversation → when its first stream request came.
        pub first_stream: Mutex<HashMap<String, Instant>>,
        /// When the last stream request came.
        pub last_stream: Mutex<Option<Instant>>,
        /// Every `getMessages` request: when, and for which conversation.
        pub fetch_log: Mutex<Vec<(Instant, String)>>,
    }

    pub struct Proxy {
        pub base: String,
        pub seen: Arc<Seen>,
        accept: tokio::task::JoinHandle<()>,
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.accept.abort();
        }
    }

    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = connection(client, upstream, s).await;
                });
            }
        });
        Proxy { base, seen, accept }
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    /// Reads until the end of an HTTP head; returns the index just past it.
    async fn read_head(from: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut tmp = [0u8; 4096];
        loop {
            if let Some(i) = find(buf, b"\r\n\r\n") {
                return Ok(i + 4);
            }
            let n = from.read(&mut tmp).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
    }

    fn convo_of(target: &str) -> Option<String> {
        let query = target.split_once('?')?.1;
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix("convoId="))
            .map(str::to_string)
    }

    async fn connection(
        mut client: TcpStream,
        upstream: SocketAddr,
        seen: Arc<Seen>,
    ) -> io::Result<()> {
        let mut buf = Vec::with_capacity(4096);
        let end = read_head(&mut client, &mut buf).await?;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let target = request_line.split(' ').nth(1).unwrap_or_default();
        if target.contains("streamConvoEvents") {
            seen.streams.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            if let Some(c) = convo_of(target) {
                seen.first_stream.lock().unwrap().entry(c).or_insert(now);
            }
            *seen.last_stream.lock().unwrap() = Some(now);
        } else if target.contains("getMessages") {
            seen.fetches.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = convo_of(target) {
                seen.fetch_log.lock().unwrap().push((Instant::now(), c));
            }
        }
        let mut out = format!("{request_line}\r\n");
        for line in lines.filter(|l| !l.is_empty()) {
            if !line.to_ascii_lowercase().starts_with("connection:") {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out.push_str("connection: close\r\n\r\n");
        let mut server = TcpStream::connect(upstream).await?;
        server.set_nodelay(true)?;
        server.write_all(out.as_bytes()).await?;
        server.write_all(&buf[end..]).await?;

        let mut rbuf = Vec::with_capacity(4096);
        let rend = read_head(&mut server, &mut rbuf).await?;
        let rhead = String::from_utf8_lossy(&rbuf[..rend]).to_ascii_lowercase();
        let status: u16 = rhead
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if status == 429 {
            seen.too_many.fetch_add(1, Ordering::Relaxed);
        }
        let sse = status == 200 && rhead.contains("content-type: text/event-stream");
        let chunked = rhead.contains("transfer-encoding: chunked");
        client.write_all(&rbuf[..rend]).await?;
        let rest = rbuf[rend..].to_vec();
        if !sse {
            client.write_all(&rest).await?;
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
            return Ok(());
        }
        filter_sse(client, server, rest, chunked, &seen).await
    }

    /// Moves whole chunks from `pending` to `body`; true once the last chunk came.
    fn dechunk(pending: &mut Vec<u8>, body: &mut Vec<u8>) -> io::Result<bool> {
        loop {
            let Some(line) = find(pending, b"\r\n") else {
                return Ok(false);
            };
            let size = std::str::from_utf8(&pending[..line])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
                .ok_or(io::ErrorKind::InvalidData)?;
            if size == 0 {
                return Ok(true);
            }
            let start = line + 2;
            if pending.len() < start + size + 2 {
                return Ok(false);
            }
            body.extend_from_slice(&pending[start..start + size]);
            pending.drain(..start + size + 2);
        }
    }

    async fn write_framed(client: &mut TcpStream, bytes: &[u8], chunked: bool) -> io::Result<()> {
        if chunked {
            let mut frame = format!("{:x}\r\n", bytes.len()).into_bytes();
            frame.extend_from_slice(bytes);
            frame.extend_from_slice(b"\r\n");
            client.write_all(&frame).await
        } else {
            client.write_all(bytes).await
        }
    }

    /// Passes an SSE body through, event by event, without the marked ones. Ends when either
    /// side closes.
    async fn filter_sse(
        mut client: TcpStream,
        mut server: TcpStream,
        mut pending: Vec<u8>,
        chunked: bool,
        seen: &Seen,
    ) -> io::Result<()> {
        let mut body = Vec::new();
        let mut tmp = vec![0u8; 16 * 1024];
        let mut probe = [0u8; 256];
        loop {
            let ended = if chunked {
                dechunk(&mut pending, &mut body)?
            } else {
                body.append(&mut pending);
                false
            };
            while let Some(i) = find(&body, b"\n\n") {
                let event: Vec<u8> = body.drain(..i + 2).collect();
                if find(&event, MARKER).is_some() {
                    seen.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    write_framed(&mut client, &event, chunked).await?;
                }
            }
            if ended {
                if chunked {
                    client.write_all(b"0\r\n\r\n").await?;
                }
                return Ok(());
            }
            tokio::select! {
                n = server.read(&mut tmp) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(());
                    }
                    pending.extend_from_slice(&tmp[..n]);
                }
                // The client went away (the driver closed the stream): so does the upstream.
                n = client.read(&mut probe) => {
                    if matches!(n, Ok(0) | Err(_)) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

// ---- a run --------------------------------------------------------------------------

#[derive(Clone)]
struct Args {
    convos: usize,
    messages: usize,
    trickle: f64,
    profile: Profile,
    limit: Duration,
    seed: u64,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut a = Args {
            convos: 500,
            messages: 3,
            trickle: 1.0,
            profile: Profile::Calm,
            limit: Duration::from_secs(150),
            seed: 7,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            fn num<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
                value
                    .parse()
                    .map_err(|_| format!("{flag}: bad value {value:?}"))
            }
            match flag.as_str() {
                "--convos" => a.convos = num(&flag, &value)?,
                "--messages" => a.messages = num(&flag, &value)?,
                "--trickle" => a.trickle = num(&flag, &value)?,
                "--profile" => a.profile = value.parse()?,
                "--limit" => a.limit = Duration::from_secs(num(&flag, &value)?),
                "--seed" => a.seed = num(&flag, &value)?,
                other => return Err(format!("unknown option {other}")),
            }
        }
        if a.convos == 0 || a.messages == 0 {
            return Err("--convos and --messages must be at least 1".into());
        }
        Ok(a)
    }
}

/// One probe: when it started (since the run's start) and how long until stored.
struct Probe {
    at: Duration,
    took: Option<Duration>,
}

#[derive(Default)]
struct Report {
    convos: usize,
    caught_up: Option<Duration>,
    /// (seconds, conversations caught up by then).
    curve: Vec<(u64, usize)>,
    /// (seconds, fetches in the window ending then for conversations still behind, for
    /// conversations already caught up).
    fetch_windows: Vec<(u64, usize, usize)>,
    caught_by_limit: usize,
    messages: usize,
    stream_requests: u64,
    fetch_requests: u64,
    fetches: u64,
    last_stream_open: Option<Duration>,
    quota_429: u64,
    burst_429: u64,
    client_429: u64,
    dropped: u64,
    /// Messages of the server's log not in the store when the run stopped: lost if every
    /// conversation had caught up, else (also) behind.
    missing: usize,
    extra: usize,
    told_twice: u64,
    gaps: Vec<Probe>,
    resumes: Vec<Probe>,
    /// The conversation not yet connected, brought into view: (probe, whether its stream
    /// had been requested before).
    open: Option<(Probe, bool)>,
    faults: String,
}

fn payload(tag: u64, marked: bool) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    if marked {
        p.extend_from_slice(&MARKER_BYTES);
    } else {
        p.extend_from_slice(b"quota-bench");
    }
    p.extend_from_slice(&tag.to_le_bytes());
    p.resize(64, 0x2a);
    p
}

/// Whether a conversation's stored messages are the server's log for it (plus any the
/// server expired since).
fn matches(
    log: Option<&HashSet<String>>,
    stored: Option<&HashSet<String>>,
    expired: &HashSet<String>,
) -> bool {
    let empty = HashSet::new();
    let log = log.unwrap_or(&empty);
    let stored = stored.unwrap_or(&empty);
    log.iter().all(|id| stored.contains(id))
        && stored
            .iter()
            .all(|id| log.contains(id) || expired.contains(id))
}

fn by_convo(log: &[(String, u64, String)]) -> HashMap<String, HashSet<String>> {
    let mut m: HashMap<String, HashSet<String>> = HashMap::new();
    for (c, _, id) in log {
        m.entry(c.clone()).or_default().insert(id.clone());
    }
    m
}

async fn wait_stored(record: &Mutex<Record>, id: &str, t0: Instant) -> Option<Duration> {
    let deadline = t0 + PROBE_TIMEOUT;
    loop {
        if let Some(at) = record.lock().unwrap().at.get(id) {
            return Some(at.saturating_duration_since(t0));
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Probes<'a> {
    server: &'a DevServer,
    record: &'a Mutex<Record>,
    sync: &'a gapless_tokio::Sync<Recording>,
    started: Instant,
    tag: u64,
}

impl Probes<'_> {
    fn next_tag(&mut self) -> u64 {
        self.tag += 1;
        self.tag
    }

    /// A marked message (lost on the stream), then an ordinary one that reveals the gap.
    async fn gap(&mut self, convo: &str) -> Probe {
        let (a, b) = (self.next_tag(), self.next_tag());
        let t0 = Instant::now();
        let lost = self.server.post(convo, payload(a, true));
        self.server.post(convo, payload(b, false));
        Probe {
            at: t0 - self.started,
            took: wait_stored(self.record, &lost.id, t0).await,
        }
    }

    /// A marked message, then `resume(Some(convo))`: the conversation brought into view.
    async fn resume(&mut self, convo: &str) -> Probe {
        let a = self.next_tag();
        let t0 = Instant::now();
        let lost = self.server.post(convo, payload(a, true));
        self.sync.resume(Some(convo.into())).unwrap();
        Probe {
            at: t0 - self.started,
            took: wait_stored(self.record, &lost.id, t0).await,
        }
    }
}

async fn run(args: &Args, convos: usize, busy: bool) -> Report {
    let mut options = Options::new(args.profile, args.seed);
    options.faults.rate_limits = Some(RateLimits::real());
    let server = Arc::new(DevServer::start(options).await.unwrap());
    let names: Vec<String> = (0..convos).map(|c| format!("c{c}")).collect();
    for c in &names {
        server.create_convo(c);
    }
    let mut tag = 0u64;
    for n in 0..args.messages {
        for c in &names {
            tag += 1;
            server.post(c, payload(tag + ((n as u64) << 40), false));
        }
    }
    let proxy = proxy::start(server.addr()).await;
    let record = Arc::new(Mutex::new(Record::default()));
    let store = Recording {
        inner: MemoryStore::new(),
        record: record.clone(),
    };
    let (sync, mut updates) = gapless_tokio::Sync::spawn(
        gapless_tokio::Options::new(&proxy.base),
        store,
        FixedToken::new("dev-secret"),
    )
    .unwrap();
    let told = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut twice = 0u64;
        while let Some(u) = updates.recv().await {
            if let Update::Message {
                convo,
                message,
                order,
                ..
            } = u
            {
                if order != Order::Ephemeral
                    && !seen.insert((convo.to_string(), message.id.to_string()))
                {
                    twice += 1;
                }
            }
        }
        twice
    });

    let started = Instant::now();
    for c in &names {
        sync.subscribe(c.as_str()).unwrap();
    }

    // A trickle into every conversation but c0 (the probes') while they catch up.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = (busy && convos > 1 && args.trickle > 0.0).then(|| {
        let (server, stop) = (server.clone(), stop.clone());
        let period = Duration::from_secs_f64(1.0 / args.trickle);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                i += 1;
                let c = 1 + (i * 7919) as usize % (convos - 1);
                server.post(&format!("c{c}"), payload(1 << 50 | i, false));
            }
        })
    });

    // Who is caught up, every 100 ms, against the server's log.
    let first_caught: Arc<Mutex<HashMap<String, Duration>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (server, record, first_caught, done) = (
            server.clone(),
            record.clone(),
            first_caught.clone(),
            done.clone(),
        );
        let limit = args.limit;
        tokio::spawn(async move {
            loop {
                let log = by_convo(&server.log());
                let expired: HashSet<String> =
                    server.expired().into_iter().map(|(_, _, id)| id).collect();
                let now = started.elapsed();
                {
                    let r = record.lock().unwrap();
                    let mut caught = first_caught.lock().unwrap();
                    for (c, ids) in &log {
                        if !caught.contains_key(c) && matches(Some(ids), r.stored.get(c), &expired)
                        {
                            caught.insert(c.clone(), now);
                        }
                    }
                    if caught.len() == convos {
                        done.store(true, Ordering::Relaxed);
                        return Some(now);
                    }
                }
                if now > limit {
                    done.store(true, Ordering::Relaxed);
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut probes = Probes {
        server: &server,
        record: &record,
        sync: &sync,
        started,
        tag: 1 << 60,
    };
    let mut report = Report {
        convos,
        ..Report::default()
    };
    let pause = Duration::from_millis(500);
    if busy {
        let mut next = Duration::from_secs(5);
        let last = names.last().unwrap().clone();
        let mut opened_last = false;
        loop {
            // Probe while the others catch up (and once in any case).
            let finished = || done.load(Ordering::Relaxed) && !report.gaps.is_empty();
            while Instant::now() < started + next && !finished() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if finished() || started.elapsed() + PROBE_TIMEOUT > args.limit {
                break;
            }
            report.gaps.push(probes.gap("c0").await);
            tokio::time::sleep(pause).await;
            report.resumes.push(probes.resume("c0").await);
            if !opened_last && convos > 1 {
                opened_last = true;
                tokio::time::sleep(pause).await;
                let requested = proxy.seen.first_stream.lock().unwrap().contains_key(&last);
                let p = probes.resume(&last).await;
                report.open = Some((p, requested));
            }
            next = (next + Duration::from_secs(20)).max(started.elapsed() + Duration::from_secs(5));
        }
    }
    let caught_up = monitor.await.unwrap();
    report.caught_up = caught_up;
    {
        let caught = first_caught.lock().unwrap();
        let fetch_log = proxy.seen.fetch_log.lock().unwrap();
        let window = 15;
        let end = started.elapsed().as_secs().div_ceil(window);
        report.fetch_windows = (1..=end)
            .map(|k| {
                let (from, to) = ((k - 1) * window, k * window);
                let mut n = (0, 0);
                for (at, c) in fetch_log.iter() {
                    let t = at.saturating_duration_since(started);
                    if t.as_secs() >= from && t.as_secs() < to {
                        if caught.get(c).is_some_and(|c| *c <= t) {
                            n.1 += 1;
                        } else {
                            n.0 += 1;
                        }
                    }
                }
                (to, n.0, n.1)
            })
            .collect();
        report.caught_by_limit = caught.len();
        // Up to when all were caught up, or to the end of the run.
        let end = caught_up.unwrap_or(started.elapsed()).as_secs() + 1;
        let step = if end > 60 { 15 } else { 5 };
        report.curve = (1..=end.div_ceil(step))
            .map(|k| {
                let s = k * step;
                let n = caught
                    .values()
                    .filter(|t| **t <= Duration::from_secs(s))
                    .count();
                (s, n)
            })
            .collect();
    }
    if !busy {
        for _ in 0..3 {
            report.gaps.push(probes.gap("c0").await);
            tokio::time::sleep(pause).await;
            report.resumes.push(probes.resume("c0").await);
            tokio::time::sleep(pause).await;
        }
    }

    // Stop the traffic, let the last messages in, then check the store against the log.
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = trickle {
        let _ = t.await;
    }
    let settle = Instant::now();
    while caught_up.is_some() && settle.elapsed() < Duration::from_secs(10) {
        let log = by_convo(&server.log());
        let expired: HashSet<String> = server.expired().into_iter().map(|(_, _, id)| id).collect();
        let all_in = {
            let r = record.lock().unwrap();
            log.iter()
                .all(|(c, ids)| matches(Some(ids), r.stored.get(c), &expired))
        };
        if all_in {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished = sync.shutdown().await.unwrap();
    report.told_twice = told.await.unwrap();
    let log = server.log();
    let expired: HashSet<String> = server.expired().into_iter().map(|(_, _, id)| id).collect();
    let log_by = by_convo(&log);
    report.messages = log.len();
    for c in &names {
        let stored: HashSet<String> = finished
            .store
            .inner
            .messages(&c.as_str().into())
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let empty = HashSet::new();
        let ids = log_by.get(c).unwrap_or(&empty);
        report.missing += ids.iter().filter(|id| !stored.contains(*id)).count();
        report.extra += stored
            .iter()
            .filter(|id| !ids.contains(*id) && !expired.contains(*id))
            .count();
    }
    report.fetches = finished.fetches;
    let seen = &proxy.seen;
    report.stream_requests = seen.streams.load(Ordering::Relaxed);
    report.fetch_requests = seen.fetches.load(Ordering::Relaxed);
    report.client_429 = seen.too_many.load(Ordering::Relaxed);
    report.dropped = seen.dropped.load(Ordering::Relaxed);
    report.last_stream_open = seen
        .last_stream
        .lock()
        .unwrap()
        .map(|t| t.saturating_duration_since(started));
    let counts = server.fault_counts();
    report.quota_429 = counts.get("rate_limited");
    report.burst_429 = counts.get("burst_limited");
    report.faults = counts
        .counts
        .iter()
        .filter(|(k, _)| !matches!(**k, "rate_limited" | "burst_limited"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    report
}

// ---- the table ------------------------------------------------------------------------

fn ms(d: Option<Duration>) -> String {
    d.map_or(format!("> {} s", PROBE_TIMEOUT.as_secs()), |d| {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    })
}

fn median(v: &[Probe]) -> Option<Duration> {
    let mut t: Vec<Duration> = v.iter().filter_map(|p| p.took).collect();
    if t.len() < v.len() || t.is_empty() {
        return None;
    }
    t.sort();
    Some(t[t.len() / 2])
}

fn all(v: &[Probe]) -> String {
    v.iter()
        .map(|p| {
            p.took
                .map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    // `RUST_LOG=gapless_adapter::trace=trace` prints every input and command (to find where
    // a probe waited); nothing is printed without it.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("quota: {e}");
            eprintln!("usage: quota [--convos 500] [--messages 3] [--trickle 1] [--profile calm|flaky-mobile|hostile] [--limit 150] [--seed 7]");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let wall = Instant::now();
    let (alone, busy) = runtime.block_on(async {
        let alone = run(&args, 1, false).await;
        let busy = run(&args, args.convos, true).await;
        (alone, busy)
    });
    let gap_wait = gapless::Config::default().gap_wait;
    // A round trip: a resume's fetch, alone, is one (plus the machine and the store).
    let rtt = median(&alone.resumes).unwrap_or_default();
    let target = gap_wait + 2 * rtt;
    let profile = format!("{:?}", args.profile).to_lowercase();

    println!(
        "{} conversations x {} messages, then a trickle of {}/s; dev server {profile} + RateLimits::real(); default machine config; tokio driver, memory store",
        args.convos, args.messages, args.trickle
    );
    let row = |name: &str, a: String, b: String| println!("{name:<44} {a:>18} {b:>22}");
    row(
        "",
        "alone (1 convo)".into(),
        format!("{} convos", busy.convos),
    );
    let caught = |r: &Report| match r.caught_up {
        Some(t) => format!("{:.1} s", t.as_secs_f64()),
        None => format!(
            "{} of {} in {} s",
            r.caught_by_limit,
            r.convos,
            args.limit.as_secs()
        ),
    };
    row(
        "every conversation caught up",
        caught(&alone),
        caught(&busy),
    );
    row(
        "429s received (quota / burst)",
        format!("{} / {}", alone.quota_429, alone.burst_429),
        format!("{} / {}", busy.quota_429, busy.burst_429),
    );
    row(
        "requests: stream opens / fetches",
        format!("{} / {}", alone.stream_requests, alone.fetch_requests),
        format!("{} / {}", busy.stream_requests, busy.fetch_requests),
    );
    row(
        "last stream opened after",
        alone
            .last_stream_open
            .map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        busy.last_stream_open
            .map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
    );
    row(
        "messages on the server / not stored at the end",
        format!("{} / {}", alone.messages, alone.missing),
        format!("{} / {}", busy.messages, busy.missing),
    );
    row(
        "told twice / stored but not on the server",
        format!("{} / {}", alone.told_twice, alone.extra),
        format!("{} / {}", busy.told_twice, busy.extra),
    );
    row(
        "in-view gap, stored after (median)",
        ms(median(&alone.gaps)),
        ms(median(&busy.gaps)),
    );
    row(
        "in-view resume, stored after (median)",
        ms(median(&alone.resumes)),
        ms(median(&busy.resumes)),
    );
    if let Some((p, requested)) = &busy.open {
        row(
            "not-yet-connected convo resumed, stored after",
            "-".into(),
            format!(
                "{} (t={:.0} s{})",
                ms(p.took),
                p.at.as_secs_f64(),
                if *requested { "" } else { ", no stream yet" }
            ),
        );
    }
    println!();
    println!(
        "target for a gap: gap_wait + 2 round trips = {} + 2 x {:.1} = {:.1} ms (a round trip: the alone resume's median)",
        gap_wait.as_millis(),
        rtt.as_secs_f64() * 1e3,
        target.as_secs_f64() * 1e3
    );
    println!(
        "alone, gaps (ms): {}; resumes (ms): {}",
        all(&alone.gaps),
        all(&alone.resumes)
    );
    let at = |v: &[Probe]| {
        v.iter()
            .map(|p| {
                format!(
                    "t={:.0}s {}",
                    p.at.as_secs_f64(),
                    p.took
                        .map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("with {}, gaps (ms): {}", busy.convos, at(&busy.gaps));
    println!("with {}, resumes (ms): {}", busy.convos, at(&busy.resumes));
    println!(
        "caught up over time: {}",
        busy.curve
            .iter()
            .map(|(s, n)| format!("{s}s {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "fetches per 15 s, for conversations still behind + already caught up: {}",
        busy.fetch_windows
            .iter()
            .map(|(s, behind, caught)| format!("{s}s {behind}+{caught}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (name, r) in [("alone", &alone), ("busy", &busy)] {
        println!(
            "{name}: {} fetches made, {} 429s seen by the client, {} stream events removed by the proxy",
            r.fetches, r.client_429, r.dropped
        );
    }
    if busy.caught_up.is_none() && busy.missing > 0 {
        println!(
            "the {} messages not stored at the end are in conversations still behind when the run stopped (the server still has them): behind, not proven lost; a longer --limit shows whether they arrive",
            busy.missing
        );
    }
    if !busy.faults.is_empty() {
        println!("other faults injected: {}", busy.faults);
    }
    println!("{:.0} s in all", wall.elapsed().as_secs_f64());
    let lost = |r: &Report| r.caught_up.is_some() && r.missing > 0;
    if lost(&alone)
        || lost(&busy)
        || alone.told_twice + busy.told_twice > 0
        || alone.extra + busy.extra > 0
    {
        eprintln!("quota: messages LOST, told twice or not the server's: a bug");
        std::process::exit(1);
    }
}
