//! # gapless-conformance
//!
//! One integration suite for every driver (`gapless-tokio`, `gapless-blocking`): each
//! driver implements [`Driver`] in its own `tests/conformance.rs` and calls the functions
//! here, so the two are held to the same checks, written once.
//!
//! Every check runs `gapless-devserver` on 127.0.0.1 (in its own tokio runtime), syncs into
//! a `gapless-sqlite` store, and compares with the server's ground truth:
//! - the store equals the server's log, by (seq, id), per conversation (messages that
//!   expired on the server may be present or not);
//! - the application was told of no id twice, and per conversation in seq order;
//! - a message lost on the stream is recovered by the gap mechanism (about `gap_wait` plus
//!   a round trip), not by the periodic safety net, which is set to minutes here.
//!
//! Most checks take the [`Api`] to speak: the SSE-era `blue.catbird.mls` (a stream per
//! conversation) or the newest `blue.catbird.mlsChat` (one WebSocket for all of them); the
//! dev server serves both at once. [`suite!`] runs the first at the top level and the second
//! in a module `mlschat`, plus what only the shared socket has (one socket for twenty
//! conversations, a conversation joining mid-run, a refused upgrade).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use gapless::{Config, ConvoId, Order};
pub use gapless_adapter::Api;
use gapless_adapter::{Token, TokenError, TokenProvider, Update};
use gapless_catbird::{
    GET_MESSAGES, MLSCHAT_GET_MESSAGES, MLSCHAT_SUBSCRIPTION_TICKET, STREAM_CONVO_EVENTS,
};
pub use gapless_devserver::{self as devserver, Profile};
use gapless_devserver::{mint_token, DevServer, Options};
use gapless_sqlite::SqliteStore;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A message as the server logs it: (conversation, seq, id).
pub type Row = (String, u64, String);

/// What a driver is given to start.
pub struct Setup {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The API to speak.
    pub api: Api,
    /// The machine's configuration.
    pub config: Config,
    /// Tokens (minted per request, as the hostile profile demands).
    pub tokens: Arc<dyn TokenProvider>,
    /// The store.
    pub store: SqliteStore,
    /// Conversations to subscribe.
    pub convos: Vec<ConvoId>,
    /// Fetch timeout.
    pub request_timeout: Duration,
    /// Updates queued for the application before the driver waits for it.
    pub updates_capacity: usize,
}

/// A driver under test.
pub trait Driver {
    /// Starts syncing.
    fn start(setup: Setup) -> Box<dyn Running>;
}

/// A running driver.
pub trait Running {
    /// Subscribes one more conversation (returns at once).
    fn subscribe(&mut self, convo: &str);
    /// The application is back in the foreground: catch up everything now.
    fn resume(&mut self);
    /// Sends a message through the outbox (returns at once).
    fn send(&mut self, message: gapless::Outgoing);
    /// The next update, waiting at most `timeout`.
    fn next_update(&mut self, timeout: Duration) -> Option<Update>;
    /// Stops gracefully; gives back the store, the number of fetches made, and the updates
    /// the application had not read yet.
    fn stop(self: Box<Self>) -> Stopped;
}

/// A stopped driver's leftovers.
pub struct Stopped {
    /// The store.
    pub store: SqliteStore,
    /// Fetches made.
    pub fetches: u64,
    /// Updates not yet read when it stopped.
    pub unread: Vec<Update>,
}

impl Stopped {
    /// Records the unread updates; gives back the store and the fetch count.
    pub fn into_parts(self, seen: &mut Seen) -> (SqliteStore, u64) {
        for u in self.unread {
            seen.record(u);
        }
        (self.store, self.fetches)
    }
}

/// Mints a fresh token per request, as the real server wants (`lxm` = method, `jti` once).
pub fn dev_tokens(secret: &str) -> Arc<dyn TokenProvider> {
    let secret = secret.to_string();
    let nonce = AtomicU64::new(1);
    Arc::new(move |nsid: &str| -> Result<Token, TokenError> {
        Ok(Token::new(mint_token(
            &secret,
            nsid,
            nonce.fetch_add(1, Ordering::Relaxed),
        )))
    })
}

/// The test configuration: the default machine with a shorter backoff cap, so hostile
/// schedules settle sooner.
pub fn config(seed: u64) -> Config {
    Config {
        backoff_cap: Duration::from_secs(4),
        rng_seed: seed,
        ..Config::default()
    }
}

/// [`config`] with the safety-net polls pushed out to ten minutes and no catch-up when the
/// stream goes quiet, so that only the gap mechanism can recover a loss within a test.
pub fn gap_only_config(seed: u64) -> Config {
    Config {
        poll_interval: Duration::from_secs(600),
        healthy_poll_interval: Some(Duration::from_secs(600)),
        quiet_catch_up: None,
        ..config(seed)
    }
}

/// What the application saw.
#[derive(Default, Debug)]
pub struct Seen {
    /// Per conversation: (seq, id) in the order delivered (ephemerals excluded).
    pub delivered: BTreeMap<String, Vec<(u64, String)>>,
    /// Ids told twice.
    pub twice: Vec<(String, String)>,
    /// In-order deliveries whose seq went below an earlier delivery's.
    pub out_of_order: Vec<(String, u64, u64, String)>,
    /// When each (convo, id) was told.
    pub at: HashMap<(String, String), Instant>,
    /// Ids told as recovered.
    pub recovered: BTreeSet<(String, String)>,
    /// Skipped ranges.
    pub skipped: Vec<(String, u64, u64)>,
    /// Clears.
    pub cleared: Vec<(String, gapless::Permanent)>,
    /// Refused requests.
    pub refused: Vec<(String, gapless::InputError)>,
    /// Status changes, in order.
    pub statuses: Vec<(String, gapless::Status)>,
    /// Outbox states told, per (conversation, msgId), in order.
    pub outbox: BTreeMap<(String, String), Vec<gapless::OutboxState>>,
    ids: BTreeSet<(String, String)>,
}

impl Seen {
    /// Records one update.
    pub fn record(&mut self, update: Update) {
        match update {
            Update::Message {
                convo,
                message,
                order,
                recovered,
            } => {
                if order == Order::Ephemeral {
                    return;
                }
                let key = (convo.to_string(), message.id.to_string());
                if !self.ids.insert(key.clone()) {
                    self.twice.push(key.clone());
                }
                let list = self.delivered.entry(convo.to_string()).or_default();
                // A late message sharing an already-delivered seq is delivered where it
                // arrives, flagged `SharesSeq` (DESIGN.md behaviour 2); only in-order
                // deliveries must not go back.
                let high = list.iter().map(|(s, _)| *s).max();
                if let Some(last) = high.filter(|_| order == Order::InOrder) {
                    if message.seq.0 < last {
                        self.out_of_order.push((
                            convo.to_string(),
                            last,
                            message.seq.0,
                            format!("{} {order:?} recovered={recovered}", message.id),
                        ));
                    }
                }
                list.push((message.seq.0, message.id.to_string()));
                self.at.insert(key.clone(), Instant::now());
                if recovered {
                    self.recovered.insert(key);
                }
            }
            Update::Skipped { convo, from, to } => {
                self.skipped.push((convo.to_string(), from.0, to.0))
            }
            Update::Cleared { convo, reason } => self.cleared.push((convo.to_string(), reason)),
            Update::Refused { convo, error } => self.refused.push((convo.to_string(), error)),
            Update::Status { convo, status } => self.statuses.push((convo.to_string(), status)),
            Update::Outbox {
                convo,
                msg_id,
                state,
            } => self
                .outbox
                .entry((convo.to_string(), msg_id.to_string()))
                .or_default()
                .push(state),
            _ => {}
        }
    }

    fn has(&self, convo: &str, id: &str) -> bool {
        self.ids.contains(&(convo.to_string(), id.to_string()))
    }
}

/// A message of ours: 512 bytes that say which one it is.
pub fn own_message(convo: &str, n: usize) -> gapless::Outgoing {
    let mut payload = format!("own message {n} of {convo}").into_bytes();
    payload.resize(512, b'.');
    let msg_id = format!("01OWNMSG{n:018}");
    gapless::Outgoing::new(convo, msg_id, payload, 0)
}

/// Reads updates until every one of `messages` is confirmed (or `limit` passes).
pub fn until_confirmed(
    running: &mut dyn Running,
    seen: &mut Seen,
    messages: &[gapless::Outgoing],
    limit: Duration,
) {
    let started = Instant::now();
    let confirmed = |seen: &Seen| {
        messages.iter().all(|m| {
            seen.outbox
                .get(&(m.convo.to_string(), m.msg_id.to_string()))
                .and_then(|s| s.last())
                .is_some_and(|s| matches!(s, gapless::OutboxState::Confirmed { .. }))
        })
    };
    while started.elapsed() < limit && !confirmed(seen) {
        if let Some(u) = running.next_update(Duration::from_millis(50)) {
            seen.record(u);
        }
    }
}

/// Each of `messages` is stored exactly once (the store equals the server's log, checked
/// by the caller), in the order they were sent.
fn assert_sent_once_in_order(store: &SqliteStore, messages: &[gapless::Outgoing]) {
    let stored = store.messages().unwrap();
    let mut last = 0;
    for m in messages {
        let copies: Vec<u64> = stored
            .iter()
            .filter(|s| s.convo == m.convo.as_str())
            .filter(|s| store.payload(&s.convo, &s.id).unwrap().as_deref() == Some(&m.payload[..]))
            .map(|s| s.seq)
            .collect();
        assert_eq!(copies.len(), 1, "{}: {} copies", m.msg_id, copies.len());
        assert!(copies[0] > last, "{} out of order", m.msg_id);
        last = copies[0];
    }
    assert!(store.outbox_entries().unwrap().is_empty(), "outbox left");
}

/// Messages sent through the outbox reach the server once each, in order, and are
/// confirmed when they come back; nothing is left in the outbox.
pub fn sends_and_confirms<D: Driver>(api: Api, seed: u64) {
    let server = Server::start(Profile::Calm, seed, |_| {});
    server.server.create_convo("c0");
    let traffic = server.traffic(1, 20, 50.0);
    let mut seen = Seen::default();
    let mut running = D::start(setup(
        &server,
        api,
        1,
        seed,
        SqliteStore::open_in_memory().unwrap(),
    ));
    let messages: Vec<_> = (0..6).map(|n| own_message("c0", n)).collect();
    for m in &messages {
        running.send(m.clone());
    }
    until_confirmed(
        running.as_mut(),
        &mut seen,
        &messages,
        Duration::from_secs(60),
    );
    traffic.join().unwrap();
    let (store, _) = finish(running, &server, &mut seen, Duration::from_secs(60));
    for m in &messages {
        let states = &seen.outbox[&(m.convo.to_string(), m.msg_id.to_string())];
        assert!(
            matches!(states.last(), Some(gapless::OutboxState::Confirmed { .. })),
            "{}: {states:?}",
            m.msg_id
        );
    }
    assert_sent_once_in_order(&store, &messages);
}

/// Stopped with sends in flight and started again on the same database, twice: every
/// message ends on the server exactly once (the server answers a resent msgId with its
/// first answer) and is confirmed.
pub fn resends_the_outbox_after_a_restart<D: Driver>(api: Api, seed: u64) {
    let server = Server::start(Profile::Calm, seed, |_| {});
    server.server.create_convo("c0");
    let mut seen = Seen::default();
    let mut store = SqliteStore::open_in_memory().unwrap();
    let messages: Vec<_> = (0..8).map(|n| own_message("c0", n)).collect();
    for round in 0..2u64 {
        let mut running = D::start(setup(&server, api, 1, seed + round, store));
        for m in &messages[round as usize * 4..round as usize * 4 + 4] {
            running.send(m.clone());
        }
        read_for(running.as_mut(), &mut seen, Duration::from_millis(30));
        store = running.stop().into_parts(&mut seen).0;
    }
    let mut running = D::start(setup(&server, api, 1, seed + 9, store));
    until_confirmed(
        running.as_mut(),
        &mut seen,
        &messages,
        Duration::from_secs(60),
    );
    let (store, _) = finish(running, &server, &mut seen, Duration::from_secs(60));
    assert_sent_once_in_order(&store, &messages);
}

/// A dev server in its own runtime.
pub struct Server {
    /// The runtime it runs on (kept alive with it).
    pub runtime: tokio::runtime::Runtime,
    /// The server.
    pub server: DevServer,
}

impl Server {
    /// Starts a server with `profile` faults.
    pub fn start(profile: Profile, seed: u64, tweak: impl FnOnce(&mut Options)) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut options = Options::new(profile, seed);
        options.keepalive = Duration::from_secs(2);
        options.ws_ping = Duration::from_secs(2);
        tweak(&mut options);
        let server = runtime
            .block_on(DevServer::start(options))
            .expect("dev server");
        Server { runtime, server }
    }

    /// Runs `convos × messages` of traffic at `rate`/s to completion (late commits
    /// included).
    pub fn traffic(
        &self,
        convos: usize,
        messages: usize,
        rate: f64,
    ) -> std::thread::JoinHandle<()> {
        let _guard = self.runtime.enter();
        let task = self.server.traffic(convos, messages, rate);
        let handle = self.runtime.handle().clone();
        std::thread::spawn(move || {
            handle.block_on(task).expect("traffic");
        })
    }

    /// The ground truth: (convo, seq, id) now served, and those that expired.
    pub fn truth(&self) -> (Vec<Row>, BTreeSet<Row>) {
        (
            self.server.log(),
            self.server.expired().into_iter().collect(),
        )
    }
}

/// The setup for conversations `c0..cN` of a server, speaking `api`.
pub fn setup(server: &Server, api: Api, convos: usize, seed: u64, store: SqliteStore) -> Setup {
    Setup {
        base_url: server.server.base_url(),
        api,
        config: config(seed),
        tokens: dev_tokens(&server.server.options().secret),
        store,
        convos: (0..convos)
            .map(|c| ConvoId::from(format!("c{c}")))
            .collect(),
        request_timeout: Duration::from_secs(3),
        updates_capacity: 1024,
    }
}

/// Reads updates for `duration`.
pub fn read_for(running: &mut dyn Running, seen: &mut Seen, duration: Duration) {
    let until = Instant::now() + duration;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if let Some(u) = running.next_update(left.min(Duration::from_millis(20))) {
            seen.record(u);
        }
    }
}

/// Reads updates until every message the server serves is seen (or `limit` passes).
pub fn until_synced(running: &mut dyn Running, server: &Server, seen: &mut Seen, limit: Duration) {
    let started = Instant::now();
    let mut next_check = Instant::now();
    while started.elapsed() < limit {
        if let Some(u) = running.next_update(Duration::from_millis(50)) {
            seen.record(u);
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_millis(250);
            let (log, _) = server.truth();
            if log.iter().all(|(c, _, id)| seen.has(c, id)) {
                // Let anything in flight arrive, to catch a late duplicate.
                read_for(running, seen, Duration::from_millis(300));
                return;
            }
        }
    }
}

/// Reads until synced (or `limit`), stops, and checks the store against the server's log.
pub fn finish(
    mut running: Box<dyn Running>,
    server: &Server,
    seen: &mut Seen,
    limit: Duration,
) -> (SqliteStore, u64) {
    until_synced(running.as_mut(), server, seen, limit);
    let (store, fetches) = running.stop().into_parts(seen);
    assert_matches_server(&store, seen, server);
    (store, fetches)
}

/// Checks the store and what the application saw against the server's log.
pub fn assert_matches_server(store: &SqliteStore, seen: &Seen, server: &Server) {
    let (log, expired) = server.truth();
    assert!(seen.twice.is_empty(), "told twice: {:?}", seen.twice);
    assert!(
        seen.out_of_order.is_empty(),
        "out of order: {:?}",
        seen.out_of_order
    );
    let stored: BTreeSet<(String, u64, String)> = store
        .messages()
        .expect("stored messages")
        .into_iter()
        .map(|m| (m.convo, m.seq, m.id))
        .collect();
    let expected: BTreeSet<(String, u64, String)> = log.into_iter().collect();
    let missing: Vec<_> = expected.difference(&stored).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let extra: Vec<_> = stored
        .difference(&expected)
        .filter(|m| !expired.contains(*m))
        .collect();
    assert!(extra.is_empty(), "stored but not on the server: {extra:?}");
    // What the application was told is what is stored.
    let told: BTreeSet<(String, u64, String)> = seen
        .delivered
        .iter()
        .flat_map(|(c, l)| l.iter().map(move |(s, id)| (c.clone(), *s, id.clone())))
        .collect();
    let untold: Vec<_> = stored.difference(&told).collect();
    let unstored: Vec<_> = told.difference(&stored).collect();
    assert!(
        untold.is_empty() && unstored.is_empty(),
        "stored but never told: {untold:?}; told but not stored: {unstored:?}"
    );
}

/// Under `profile`, three conversations end identical to the server's log.
pub fn converges_under<D: Driver>(api: Api, profile: Profile, seed: u64) {
    let server = Server::start(profile, seed, |_| {});
    let traffic = server.traffic(3, 120, 120.0);
    let mut running = D::start(setup(
        &server,
        api,
        3,
        seed,
        SqliteStore::open_in_memory().unwrap(),
    ));
    let mut seen = Seen::default();
    // Read while the traffic runs, then until synced.
    while !traffic.is_finished() {
        if let Some(u) = running.next_update(Duration::from_millis(20)) {
            seen.record(u);
        }
    }
    traffic.join().unwrap();
    let (_, fetches) = finish(running, &server, &mut seen, Duration::from_secs(120));
    eprintln!(
        "{api} {profile:?}: {} delivered ({} recovered), {} skipped ranges, {fetches} fetches, faults {:?}",
        seen.delivered.values().map(Vec::len).sum::<usize>(),
        seen.recovered.len(),
        seen.skipped.len(),
        server.server.fault_counts()
    );
}

/// Stream events are lost (and nothing else goes wrong): each lost message arrives about
/// `gap_wait` plus a round trip after it was sent, well before any periodic poll (ten
/// minutes here) could have found it.
pub fn recovers_a_gap_in_about_gap_wait<D: Driver>(api: Api, seed: u64) {
    let server = Server::start(Profile::Calm, seed, |o| o.faults.drop = 150);
    for c in 0..2 {
        server.server.create_convo(&format!("c{c}"));
    }
    let mut s = setup(
        &server,
        api,
        2,
        seed,
        SqliteStore::open_in_memory().unwrap(),
    );
    s.config = gap_only_config(seed);
    let mut running = D::start(s);
    let mut seen = Seen::default();
    // Give the streams time to open.
    read_for(running.as_mut(), &mut seen, Duration::from_millis(700));
    let mut sent_at = HashMap::new();
    for n in 0..120 {
        let convo = format!("c{}", n % 2);
        let sent = server.server.post(&convo, vec![n as u8; 32]);
        sent_at.insert((convo, sent.id), Instant::now());
        read_for(running.as_mut(), &mut seen, Duration::from_millis(25));
    }
    // Every loss a later message revealed is recovered by now (or is a bug); a loss at the
    // very end is revealed by nothing but a catch-up: the application resumes.
    read_for(running.as_mut(), &mut seen, Duration::from_secs(3));
    let resumed = Instant::now();
    running.resume();
    finish(running, &server, &mut seen, Duration::from_secs(60));
    let drops = server.server.fault_counts();
    let mut latencies: Vec<Duration> = seen
        .recovered
        .iter()
        .filter_map(|k| Some((*seen.at.get(k)?, *sent_at.get(k)?)))
        .filter(|(at, _)| *at < resumed)
        .map(|(at, sent)| at.duration_since(sent))
        .collect();
    latencies.sort();
    assert!(
        !latencies.is_empty(),
        "the server dropped events ({drops:?}) but nothing was recovered"
    );
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{api}: recovered {} messages: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    // gap_wait (500 ms) + a round trip, with ample room for a loaded machine; the safety
    // net would have taken ten minutes.
    let worst = p(1.0);
    assert!(
        worst < Duration::from_secs(10),
        "a gap took {worst:?} to recover: not the gap mechanism"
    );
}

/// Stopped midway and started again on the same database: the two runs together deliver
/// every message once, and the store equals the server's log.
pub fn resumes_from_the_store<D: Driver>(api: Api, seed: u64) {
    let server = Server::start(Profile::FlakyMobile, seed, |_| {});
    let traffic = server.traffic(2, 150, 100.0);
    let mut seen = Seen::default();
    let mut store = SqliteStore::open_in_memory().unwrap();
    for round in 0..3 {
        let mut running = D::start(setup(&server, api, 2, seed + round, store));
        read_for(running.as_mut(), &mut seen, Duration::from_millis(800));
        store = running.stop().into_parts(&mut seen).0;
    }
    traffic.join().unwrap();
    let running = D::start(setup(&server, api, 2, seed + 9, store));
    finish(running, &server, &mut seen, Duration::from_secs(120));
}

/// A conversation the server does not know is cleared (403), never retried forever; the
/// others go on.
pub fn clears_an_unknown_conversation<D: Driver>(api: Api, seed: u64) {
    let server = Server::start(Profile::Calm, seed, |_| {});
    server.server.create_convo("c0");
    let mut s = setup(
        &server,
        api,
        1,
        seed,
        SqliteStore::open_in_memory().unwrap(),
    );
    s.convos.push(ConvoId::from("nobody-here"));
    let mut running = D::start(s);
    server.server.post("c0", b"hello".to_vec());
    let mut seen = Seen::default();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20)
        && (seen.cleared.is_empty() || seen.delivered.is_empty())
    {
        if let Some(u) = running.next_update(Duration::from_millis(50)) {
            seen.record(u);
        }
    }
    let (store, _) = running.stop().into_parts(&mut seen);
    assert_eq!(
        seen.cleared,
        vec![("nobody-here".to_string(), gapless::Permanent::Forbidden)]
    );
    assert_matches_server(&store, &seen, &server);
    let summary = store.summaries().unwrap();
    assert!(summary
        .iter()
        .any(|s| s.convo == "nobody-here" && s.cleared.as_deref() == Some("forbidden")));
}

/// Tokens: every request is asked a token for its own method; a provider that fails is a
/// transient failure (the machine backs off), and nothing is lost once it works again.
pub fn survives_a_failing_token_provider<D: Driver>(api: Api, seed: u64) {
    let server = Server::start(Profile::Hostile, seed, |o| {
        o.faults = gapless_devserver::Faults::default();
    });
    server.server.create_convo("c0");
    let asked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let failing_until = Instant::now() + Duration::from_secs(2);
    let secret = server.server.options().secret.clone();
    let log = asked.clone();
    let nonce = AtomicU64::new(1);
    let tokens: Arc<dyn TokenProvider> = Arc::new(move |nsid: &str| {
        log.lock().unwrap().push(nsid.to_string());
        if Instant::now() < failing_until {
            return Err(TokenError::Other("the token service is down".into()));
        }
        Ok(Token::new(mint_token(
            &secret,
            nsid,
            nonce.fetch_add(1, Ordering::Relaxed),
        )))
    });
    for n in 0..20u8 {
        server.server.post("c0", vec![n; 8]);
    }
    let mut s = setup(
        &server,
        api,
        1,
        seed,
        SqliteStore::open_in_memory().unwrap(),
    );
    s.tokens = tokens;
    let running = D::start(s);
    let mut seen = Seen::default();
    finish(running, &server, &mut seen, Duration::from_secs(60));
    let asked = asked.lock().unwrap();
    let (fetch, stream) = nsids(api);
    assert!(asked.iter().any(|n| n == fetch), "{asked:?}");
    assert!(asked.iter().any(|n| n == stream), "{asked:?}");
    // The hostile profile takes a token for its own method only: nothing else was asked.
    assert!(asked.iter().all(|n| n == fetch || n == stream), "{asked:?}");
}

/// The status updates follow a conversation through its connect, a storm of 401s (a token
/// service handing out tokens the server refuses), the recovery, and a 403 for a
/// conversation that does not exist (cleared, not retried).
pub fn status_follows_a_conversation<D: Driver>(api: Api, seed: u64) {
    let server = Server::start(Profile::Hostile, seed, |o| {
        o.faults = gapless_devserver::Faults::default();
    });
    server.server.create_convo("c0");
    let refusing_until = Instant::now() + Duration::from_secs(3);
    let secret = server.server.options().secret.clone();
    let nonce = AtomicU64::new(1);
    let tokens: Arc<dyn TokenProvider> = Arc::new(move |nsid: &str| {
        let token = if Instant::now() < refusing_until {
            "not-a-token".to_string()
        } else {
            mint_token(&secret, nsid, nonce.fetch_add(1, Ordering::Relaxed))
        };
        Ok(Token::new(token))
    });
    for n in 0..5u8 {
        server.server.post("c0", vec![n; 8]);
    }
    let mut s = setup(
        &server,
        api,
        1,
        seed,
        SqliteStore::open_in_memory().unwrap(),
    );
    s.tokens = tokens;
    let mut running = D::start(s);
    let mut seen = Seen::default();
    running.subscribe("nope");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        read_for(running.as_mut(), &mut seen, Duration::from_millis(100));
        let caught_up = seen.statuses.iter().any(|(c, st)| {
            c == "c0" && matches!(st, gapless::Status::CaughtUp { seq } if seq.0 >= 5)
        });
        if caught_up && !seen.cleared.is_empty() {
            break;
        }
    }
    let c0: Vec<&gapless::Status> = seen
        .statuses
        .iter()
        .filter(|(c, _)| c == "c0")
        .map(|(_, s)| s)
        .collect();
    assert!(
        matches!(c0.first(), Some(gapless::Status::CatchingUp { .. })),
        "connecting first: {c0:?}"
    );
    let refused = c0.iter().position(|s| {
        matches!(
            s,
            gapless::Status::Retrying {
                reason: gapless::Trouble::Unauthorized,
                ..
            }
        )
    });
    assert!(refused.is_some(), "the 401s are told: {c0:?}");
    let recovered = c0
        .iter()
        .rposition(|s| matches!(s, gapless::Status::CaughtUp { seq } if seq.0 >= 5));
    assert!(recovered > refused, "then caught up: {c0:?}");
    assert!(
        seen.cleared.iter().any(|(c, _)| c == "nope"),
        "the unknown conversation is cleared: {:?}",
        seen.cleared
    );
    drop(running.stop());
}

/// The NSIDs an API asks tokens for: its `getMessages`, and its stream's (the SSE stream,
/// or the WebSocket's ticket).
pub fn nsids(api: Api) -> (&'static str, &'static str) {
    match api {
        Api::MlsChat => (MLSCHAT_GET_MESSAGES, MLSCHAT_SUBSCRIPTION_TICKET),
        _ => (GET_MESSAGES, STREAM_CONVO_EVENTS),
    }
}

/// An application that stops reading: the driver waits for it (bounded memory), goes on
/// storing nothing more meanwhile, and still shuts down promptly when asked; everything the
/// application was not told is in the store.
pub fn shuts_down_while_the_application_does_not_read<D: Driver>(seed: u64) {
    let server = Server::start(Profile::Calm, seed, |_| {});
    server.server.create_convo("c0");
    for n in 0..50u8 {
        server.server.post("c0", vec![n; 8]);
    }
    let mut s = setup(
        &server,
        Api::Mls,
        1,
        seed,
        SqliteStore::open_in_memory().unwrap(),
    );
    s.updates_capacity = 1;
    let mut running = D::start(s);
    let mut seen = Seen::default();
    // One update read, then none for a while: the driver is blocked on the full queue.
    if let Some(u) = running.next_update(Duration::from_secs(10)) {
        seen.record(u);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (store, _) = running.stop().into_parts(&mut seen);
    let stored = store.messages().unwrap().len();
    assert!(stored >= seen.delivered.values().map(Vec::len).sum::<usize>());
    assert!(stored > 0);
    // A restart on the same store finishes the job (if the first run had not) and tells
    // nothing the first one told.
    let mut s = setup(&server, Api::Mls, 1, seed + 1, store);
    s.updates_capacity = 1;
    let mut running = D::start(s);
    read_for(running.as_mut(), &mut seen, Duration::from_secs(1));
    let (store, _) = running.stop().into_parts(&mut seen);
    assert!(seen.twice.is_empty(), "told twice: {:?}", seen.twice);
    let stored: Vec<Row> = store
        .messages()
        .unwrap()
        .into_iter()
        .map(|m| (m.convo, m.seq, m.id))
        .collect();
    assert_eq!(stored, server.truth().0);
}

/// The application subscribes more conversations while it is behind reading updates (the
/// driver waiting on its full queue): the calls return at once, a second subscription of
/// the same conversation is refused with an update, and everything arrives once read.
pub fn subscribes_while_the_application_is_behind<D: Driver>(seed: u64) {
    let server = Server::start(Profile::Calm, seed, |_| {});
    for c in 0..3 {
        server.server.create_convo(&format!("c{c}"));
        for n in 0..40u8 {
            server.server.post(&format!("c{c}"), vec![n; 8]);
        }
    }
    let mut s = setup(
        &server,
        Api::Mls,
        1,
        seed,
        SqliteStore::open_in_memory().unwrap(),
    );
    s.updates_capacity = 2;
    let mut running = D::start(s);
    std::thread::sleep(Duration::from_millis(500)); // c0's catch-up fills the queue
    running.subscribe("c1");
    running.subscribe("c0");
    running.subscribe("c2");
    let mut seen = Seen::default();
    let (store, _) = finish(running, &server, &mut seen, Duration::from_secs(30));
    assert_eq!(store.messages().unwrap().len(), 120);
    assert_eq!(seen.refused.len(), 1, "{:?}", seen.refused);
    assert_eq!(seen.refused[0].0, "c0");
    assert!(matches!(
        seen.refused[0].1,
        gapless::InputError::AlreadySubscribed(_)
    ));
}

/// How many tokens were asked for, per NSID.
type Asked = Arc<std::sync::Mutex<BTreeMap<String, u64>>>;

/// Tokens minted per request, as [`dev_tokens`], counting the requests per NSID; a
/// token for `refuse.0` is garbage (the server answers 401) until `refuse.1`.
fn counting_tokens(
    server: &Server,
    refuse: Option<(&'static str, Instant)>,
) -> (Arc<dyn TokenProvider>, Asked) {
    let asked = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let secret = server.server.options().secret.clone();
    let log = asked.clone();
    let nonce = AtomicU64::new(1);
    let tokens: Arc<dyn TokenProvider> = Arc::new(move |nsid: &str| {
        *log.lock().unwrap().entry(nsid.to_string()).or_default() += 1;
        if refuse.is_some_and(|(n, until)| n == nsid && Instant::now() < until) {
            return Ok(Token::new("not-a-token"));
        }
        Ok(Token::new(mint_token(
            &secret,
            nsid,
            nonce.fetch_add(1, Ordering::Relaxed),
        )))
    });
    (tokens, asked)
}

/// The server refuses the stream (401: the SSE stream, or the WebSocket's ticket) for two
/// seconds: the driver backs off and retries (on the shared stream the conversations are
/// caught up by fetches meanwhile), and once the stream opens the messages come over it,
/// live. Only the gap
/// mechanism and the stream can deliver here (no periodic poll within the test).
pub fn recovers_from_a_refused_stream<D: Driver>(api: Api, seed: u64) {
    let server = Server::start(Profile::Calm, seed, |_| {});
    for c in 0..2 {
        server.server.create_convo(&format!("c{c}"));
        for n in 0..10u8 {
            server.server.post(&format!("c{c}"), vec![n; 8]);
        }
    }
    let (_, stream_nsid) = nsids(api);
    let refused_until = Instant::now() + Duration::from_secs(2);
    let (tokens, asked) = counting_tokens(&server, Some((stream_nsid, refused_until)));
    let mut s = setup(
        &server,
        api,
        2,
        seed,
        SqliteStore::open_in_memory().unwrap(),
    );
    s.config = gap_only_config(seed);
    s.tokens = tokens;
    let mut running = D::start(s);
    let mut seen = Seen::default();
    read_for(running.as_mut(), &mut seen, Duration::from_millis(2500));
    let refusals = asked.lock().unwrap().get(stream_nsid).copied().unwrap_or(0);
    assert!(
        refusals >= 2,
        "the refused stream was not retried: {:?}",
        asked.lock().unwrap()
    );
    if api.shares_stream() {
        // A conversation on the shared stream catches up as it joins (the socket may take a
        // reconnect to cover it); one with its own stream catches up when that opens (or
        // at `poll_interval`, ten minutes here).
        assert_eq!(
            seen.delivered.values().map(Vec::len).sum::<usize>(),
            20,
            "the messages sent before are fetched while the stream is refused"
        );
    }
    // Wait for the stream to open (the backoff is capped at 4 s here), then send.
    read_for(running.as_mut(), &mut seen, Duration::from_secs(5));
    let mut live = Vec::new();
    for n in 0..20u8 {
        let convo = format!("c{}", n % 2);
        live.push((convo.clone(), server.server.post(&convo, vec![n; 8]).id));
        read_for(running.as_mut(), &mut seen, Duration::from_millis(30));
    }
    finish(running, &server, &mut seen, Duration::from_secs(30));
    let over_the_stream = live.iter().filter(|k| !seen.recovered.contains(*k)).count();
    assert!(
        over_the_stream > 0,
        "nothing came over the stream once it was allowed ({:?})",
        asked.lock().unwrap()
    );
}

/// mlsChat: twenty conversations sync over one WebSocket. The server never holds more than
/// one of the driver's sockets open, and the driver asks for two tickets: one for the first
/// conversation subscribed, one for the connection that covers all twenty once the others
/// joined (joins close together cost one reconnect).
pub fn syncs_twenty_conversations_over_one_socket<D: Driver>(seed: u64) {
    let server = Server::start(Profile::Calm, seed, |_| {});
    for c in 0..20 {
        server.server.create_convo(&format!("c{c}"));
        for n in 0..5u8 {
            server.server.post(&format!("c{c}"), vec![n; 8]);
        }
    }
    let (tokens, asked) = counting_tokens(&server, None);
    let mut s = setup(
        &server,
        Api::MlsChat,
        20,
        seed,
        SqliteStore::open_in_memory().unwrap(),
    );
    s.config = gap_only_config(seed);
    s.tokens = tokens;
    let mut running = D::start(s);
    let mut seen = Seen::default();
    let mut most_open = 0;
    let mut watch = |running: &mut dyn Running, seen: &mut Seen, time: Duration| {
        let until = Instant::now() + time;
        while Instant::now() < until {
            most_open = most_open.max(server.server.open_sockets());
            if let Some(u) = running.next_update(Duration::from_millis(5)) {
                seen.record(u);
            }
        }
    };
    watch(running.as_mut(), &mut seen, Duration::from_secs(1));
    // Live traffic in every conversation, over the one socket.
    let mut live = Vec::new();
    for n in 0..100u8 {
        let convo = format!("c{}", n % 20);
        live.push((convo.clone(), server.server.post(&convo, vec![n; 8]).id));
        watch(running.as_mut(), &mut seen, Duration::from_millis(10));
    }
    watch(running.as_mut(), &mut seen, Duration::from_millis(500));
    let open_now = server.server.open_sockets();
    finish(running, &server, &mut seen, Duration::from_secs(30));
    let tickets = asked
        .lock()
        .unwrap()
        .get(MLSCHAT_SUBSCRIPTION_TICKET)
        .copied()
        .unwrap_or(0);
    let fetched_live = live.iter().filter(|k| seen.recovered.contains(*k)).count();
    eprintln!(
        "20 conversations: {tickets} tickets, at most {most_open} socket(s) open, {} of {} live messages fetched",
        fetched_live,
        live.len()
    );
    assert_eq!(open_now, 1, "one socket while it runs");
    assert_eq!(most_open, 1, "never more than one socket");
    assert!(
        (1..=2).contains(&tickets),
        "{tickets} tickets for a calm run: {:?}",
        asked.lock().unwrap()
    );
    assert_eq!(
        fetched_live, 0,
        "every live message of every conversation came over the socket"
    );
}

/// A conversation joins mid-run, one the server created after the socket connected (a
/// global socket covers the conversations that exist when it connects): the driver
/// reconnects to cover it, loses nothing in the conversations it already had, and the new
/// one's messages come live over the new socket. No periodic poll helps here.
pub fn a_conversation_joining_mid_run_loses_nothing<D: Driver>(api: Api, seed: u64) {
    let server = Server::start(Profile::Calm, seed, |_| {});
    for c in 0..2 {
        server.server.create_convo(&format!("c{c}"));
    }
    let mut s = setup(
        &server,
        api,
        2,
        seed,
        SqliteStore::open_in_memory().unwrap(),
    );
    s.config = gap_only_config(seed);
    let mut running = D::start(s);
    let mut seen = Seen::default();
    read_for(running.as_mut(), &mut seen, Duration::from_millis(700));
    let mut live = Vec::new();
    for n in 0..90u8 {
        if n == 30 {
            // A conversation the socket cannot know of, with history, joins.
            server.server.create_convo("c2");
            for k in 0..5u8 {
                server.server.post("c2", vec![k; 8]);
            }
            running.subscribe("c2");
        }
        let convos = if n < 30 { 2 } else { 3 };
        let convo = format!("c{}", n % convos);
        let sent = server.server.post(&convo, vec![n; 8]);
        // What c2 is sent once its socket had time to connect must come live.
        if n >= 50 {
            live.push((convo, sent.id));
        }
        read_for(running.as_mut(), &mut seen, Duration::from_millis(25));
    }
    finish(running, &server, &mut seen, Duration::from_secs(30));
    let c2_live: Vec<_> = live.iter().filter(|(c, _)| c == "c2").collect();
    let fetched: Vec<_> = c2_live
        .iter()
        .filter(|k| seen.recovered.contains(**k))
        .collect();
    assert!(
        fetched.is_empty(),
        "{api}: the joined conversation's messages were fetched, not streamed: {fetched:?}"
    );
    assert_eq!(seen.delivered["c2"].len(), 5 + 20);
}

/// mlsChat: the server refuses the upgrade (429: the account already has its most
/// sockets open, here one, held by another client). The driver keeps the conversations
/// caught up by fetches, retries with backoff, and takes the socket once it is free: then
/// the messages come over it.
pub fn waits_for_a_free_socket<D: Driver>(seed: u64) {
    let server = Server::start(Profile::Calm, seed, |o| o.max_sockets = 1);
    server.server.create_convo("c0");
    for n in 0..10u8 {
        server.server.post("c0", vec![n; 8]);
    }
    // Another client of the same account holds the one socket.
    let mut other = D::start(setup(
        &server,
        Api::MlsChat,
        1,
        seed + 50,
        SqliteStore::open_in_memory().unwrap(),
    ));
    let mut other_seen = Seen::default();
    let started = Instant::now();
    while server.server.open_sockets() < 1 && started.elapsed() < Duration::from_secs(10) {
        read_for(other.as_mut(), &mut other_seen, Duration::from_millis(20));
    }
    assert_eq!(server.server.open_sockets(), 1, "the other client's socket");
    let (tokens, asked) = counting_tokens(&server, None);
    let mut s = setup(
        &server,
        Api::MlsChat,
        1,
        seed,
        SqliteStore::open_in_memory().unwrap(),
    );
    s.config = gap_only_config(seed);
    s.tokens = tokens;
    let mut running = D::start(s);
    let mut seen = Seen::default();
    // A 429 without Retry-After pauses every stream open of the account for
    // `pause_without_retry_after` (2 s), then the machine backs off: allow for both.
    read_for(running.as_mut(), &mut seen, Duration::from_secs(5));
    let tickets = |asked: &std::sync::Mutex<BTreeMap<String, u64>>| {
        asked
            .lock()
            .unwrap()
            .get(MLSCHAT_SUBSCRIPTION_TICKET)
            .copied()
            .unwrap_or(0)
    };
    let refused = tickets(&asked);
    assert!(
        refused >= 2,
        "the refused upgrade was not retried ({refused} tickets)"
    );
    assert_eq!(
        seen.delivered.get("c0").map_or(0, Vec::len),
        10,
        "caught up by fetch while refused"
    );
    drop(other.stop());
    // The backoff is capped at 4 s here, after the 2 s pause a 429 imposes.
    read_for(running.as_mut(), &mut seen, Duration::from_secs(8));
    assert_eq!(
        server.server.open_sockets(),
        1,
        "the socket, taken once free"
    );
    let mut live = Vec::new();
    for n in 0..10u8 {
        live.push(("c0".to_string(), server.server.post("c0", vec![n; 8]).id));
        read_for(running.as_mut(), &mut seen, Duration::from_millis(30));
    }
    finish(running, &server, &mut seen, Duration::from_secs(30));
    let fetched = live.iter().filter(|k| seen.recovered.contains(*k)).count();
    assert_eq!(
        fetched, 0,
        "the messages after the socket was free came over it"
    );
}

/// Declares the suite's tests for a driver: `gapless_conformance::suite!(MyDriver, 10);`
/// (the number offsets every seed, so that two drivers meet different fault schedules).
#[macro_export]
macro_rules! suite {
    ($driver:ty, $seed:expr) => {
        // The SSE-era API (`blue.catbird.mls`): a stream per conversation.
        #[test]
        fn sends_and_confirms() {
            $crate::sends_and_confirms::<$driver>($crate::Api::Mls, $seed + 40);
        }
        #[test]
        fn sends_and_confirms_over_mlschat() {
            $crate::sends_and_confirms::<$driver>($crate::Api::MlsChat, $seed + 41);
        }
        #[test]
        fn resends_the_outbox_after_a_restart() {
            $crate::resends_the_outbox_after_a_restart::<$driver>($crate::Api::Mls, $seed + 43);
        }
        #[test]
        fn resends_the_outbox_after_a_restart_over_mlschat() {
            $crate::resends_the_outbox_after_a_restart::<$driver>($crate::Api::MlsChat, $seed + 42);
        }
        #[test]
        fn converges_calm() {
            $crate::converges_under::<$driver>($crate::Api::Mls, $crate::Profile::Calm, $seed + 1);
        }
        #[test]
        fn converges_flaky_mobile() {
            $crate::converges_under::<$driver>(
                $crate::Api::Mls,
                $crate::Profile::FlakyMobile,
                $seed + 2,
            );
        }
        #[test]
        fn converges_hostile() {
            $crate::converges_under::<$driver>(
                $crate::Api::Mls,
                $crate::Profile::Hostile,
                $seed + 3,
            );
        }
        #[test]
        fn recovers_a_gap_in_about_gap_wait() {
            $crate::recovers_a_gap_in_about_gap_wait::<$driver>($crate::Api::Mls, $seed + 4);
        }
        #[test]
        fn resumes_from_the_store() {
            $crate::resumes_from_the_store::<$driver>($crate::Api::Mls, $seed + 5);
        }
        #[test]
        fn clears_an_unknown_conversation() {
            $crate::clears_an_unknown_conversation::<$driver>($crate::Api::Mls, $seed + 6);
        }
        #[test]
        fn status_follows_a_conversation() {
            $crate::status_follows_a_conversation::<$driver>($crate::Api::Mls, $seed + 30);
        }
        #[test]
        fn shuts_down_while_the_application_does_not_read() {
            $crate::shuts_down_while_the_application_does_not_read::<$driver>($seed + 8);
        }
        #[test]
        fn subscribes_while_the_application_is_behind() {
            $crate::subscribes_while_the_application_is_behind::<$driver>($seed + 9);
        }
        #[test]
        fn survives_a_failing_token_provider() {
            $crate::survives_a_failing_token_provider::<$driver>($crate::Api::Mls, $seed + 7);
        }
        #[test]
        fn recovers_from_a_refused_stream() {
            $crate::recovers_from_a_refused_stream::<$driver>($crate::Api::Mls, $seed + 10);
        }
        #[test]
        fn a_conversation_joining_mid_run_loses_nothing() {
            $crate::a_conversation_joining_mid_run_loses_nothing::<$driver>(
                $crate::Api::Mls,
                $seed + 11,
            );
        }

        /// The newest API (`blue.catbird.mlsChat`): one WebSocket for every conversation.
        mod mlschat {
            use super::*;

            const API: $crate::Api = $crate::Api::MlsChat;

            #[test]
            fn converges_calm() {
                $crate::converges_under::<$driver>(API, $crate::Profile::Calm, $seed + 101);
            }
            #[test]
            fn converges_flaky_mobile() {
                $crate::converges_under::<$driver>(API, $crate::Profile::FlakyMobile, $seed + 102);
            }
            #[test]
            fn converges_hostile() {
                $crate::converges_under::<$driver>(API, $crate::Profile::Hostile, $seed + 103);
            }
            #[test]
            fn recovers_a_gap_in_about_gap_wait() {
                $crate::recovers_a_gap_in_about_gap_wait::<$driver>(API, $seed + 104);
            }
            #[test]
            fn resumes_from_the_store() {
                $crate::resumes_from_the_store::<$driver>(API, $seed + 105);
            }
            #[test]
            fn clears_an_unknown_conversation() {
                $crate::clears_an_unknown_conversation::<$driver>(API, $seed + 106);
            }
            #[test]
            fn survives_a_failing_token_provider() {
                $crate::survives_a_failing_token_provider::<$driver>(API, $seed + 107);
            }
            #[test]
            fn recovers_from_a_refused_stream() {
                $crate::recovers_from_a_refused_stream::<$driver>(API, $seed + 110);
            }
            #[test]
            fn a_conversation_joining_mid_run_loses_nothing() {
                $crate::a_conversation_joining_mid_run_loses_nothing::<$driver>(API, $seed + 111);
            }
            #[test]
            fn syncs_twenty_conversations_over_one_socket() {
                $crate::syncs_twenty_conversations_over_one_socket::<$driver>($seed + 112);
            }
            #[test]
            fn waits_for_a_free_socket() {
                $crate::waits_for_a_free_socket::<$driver>($seed + 113);
            }
        }
    };
}
