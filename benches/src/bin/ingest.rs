//! End-to-end ingest: messages per second from the dev server into SQLite over loopback,
//! through the tokio driver (real HTTP, real pages, real transactions).
//!
//! `cargo run --release -p gapless-benches --bin ingest [-- MESSAGES CONVOS ROUNDS]`
//!
//! The server holds MESSAGES messages (default 20,000) over CONVOS conversations (default
//! 10); a fresh database catches up on all of them. Three stores, measured in the same run,
//! alternating, ROUNDS times each (default 3), median reported:
//! - `sqlite, batched`: gapless-sqlite, one transaction per delivery batch (a page);
//! - `sqlite, per message`: the same database, one transaction per message (the baseline
//!   batching is measured against);
//! - `memory`: no storage cost at all (the ceiling the network and the machine allow).

use gapless_adapter::{FixedToken, MemoryStore, Restored, Store, StoreError, Write};
use gapless_devserver::{DevServer, Options, Profile};
use gapless_sqlite::SqliteStore;
use std::time::{Duration, Instant};

/// A store that commits each write in its own transaction.
struct PerMessage(SqliteStore);

impl Store for PerMessage {
    fn commit(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        for w in batch {
            self.0.commit(std::slice::from_ref(w))?;
        }
        Ok(())
    }
    fn load(
        &mut self,
        convo: &gapless::ConvoId,
        recent: usize,
    ) -> Result<Option<Restored>, StoreError> {
        self.0.load(convo, recent)
    }
    fn contains(
        &mut self,
        convo: &gapless::ConvoId,
        id: &gapless::MessageId,
    ) -> Result<bool, StoreError> {
        self.0.contains(convo, id)
    }
}

async fn ingest<S: Store>(base: &str, store: S, convos: usize, messages: u64) -> (Duration, u64) {
    let mut options = gapless_tokio::Options::new(base);
    options.config.page_limit = 100;
    let (sync, mut updates) =
        gapless_tokio::Sync::spawn(options, store, FixedToken::new("dev-secret")).unwrap();
    let started = Instant::now();
    for c in 0..convos {
        sync.subscribe(format!("c{c}")).unwrap();
    }
    let mut n = 0;
    while n < messages {
        match updates.recv().await {
            Some(gapless_adapter::Update::Message { .. }) => n += 1,
            Some(_) => {}
            None => break,
        }
    }
    let elapsed = started.elapsed();
    let finished = sync.shutdown().await.unwrap();
    (elapsed, finished.fetches)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let messages = args.first().copied().unwrap_or(20_000);
    let convos = args.get(1).copied().unwrap_or(10) as usize;
    let rounds = args.get(2).copied().unwrap_or(3).max(1) as usize;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = DevServer::start(Options::new(Profile::Calm, 1)).await.unwrap();
        for c in 0..convos {
            server.create_convo(&format!("c{c}"));
        }
        for n in 0..messages {
            server.post(&format!("c{}", n as usize % convos), vec![n as u8; 256]);
        }
        let base = server.base_url();
        let total = server.log().len() as u64;
        let dir = tempfile::tempdir().unwrap();
        let mut times: [Vec<Duration>; 3] = Default::default();
        let mut fetches = [0u64; 3];
        for round in 0..rounds {
            let db = |name: &str| dir.path().join(format!("{name}-{round}.db"));
            let (t, f) = ingest(&base, SqliteStore::open(db("batched")).unwrap(), convos, total).await;
            times[0].push(t);
            fetches[0] = f;
            let (t, f) = ingest(&base, PerMessage(SqliteStore::open(db("per")).unwrap()), convos, total).await;
            times[1].push(t);
            fetches[1] = f;
            let (t, f) = ingest(&base, MemoryStore::new(), convos, total).await;
            times[2].push(t);
            fetches[2] = f;
        }
        println!("ingest of {total} messages (256 B) in {convos} conversations from the dev server over loopback, median of {rounds}");
        let per_msg = median(times[1].clone());
        for (i, name) in ["sqlite, batched", "sqlite, per message", "memory"].iter().enumerate() {
            let t = median(times[i].clone());
            println!(
                "{name:<22} {:>9.0} msg/s  ({:>6.0} ms, {} fetches, {:.2}x the per-message store)",
                total as f64 / t.as_secs_f64(),
                t.as_secs_f64() * 1000.0,
                fetches[i],
                per_msg.as_secs_f64() / t.as_secs_f64()
            );
        }
    });
}
