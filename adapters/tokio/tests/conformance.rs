//! The shared driver suite (`gapless-conformance`), run against the tokio driver.

use gapless_adapter::Update;
use gapless_conformance::Profile;
use gapless_conformance::{self as suite, Driver, Running, Setup, Stopped};
use gapless_sqlite::SqliteStore;
use gapless_tokio::{Options, Sync, Updates};
use std::time::Duration;

struct Tokio;

struct TokioRunning {
    runtime: tokio::runtime::Runtime,
    sync: Sync<SqliteStore>,
    updates: Updates,
}

impl Driver for Tokio {
    fn start(setup: Setup) -> Box<dyn Running> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut options = Options::new(setup.base_url);
        options.config = setup.config;
        options.request_timeout = setup.request_timeout;
        let (sync, updates) = runtime.block_on(async {
            let (sync, updates) = Sync::spawn(options, setup.store, setup.tokens).unwrap();
            for convo in setup.convos {
                sync.subscribe(convo).await.unwrap();
            }
            (sync, updates)
        });
        Box::new(TokioRunning {
            runtime,
            sync,
            updates,
        })
    }
}

impl Running for TokioRunning {
    fn next_update(&mut self, timeout: Duration) -> Option<Update> {
        let updates = &mut self.updates;
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, updates.recv()).await.ok()? })
    }

    fn stop(self: Box<Self>) -> Stopped {
        let TokioRunning {
            runtime,
            sync,
            mut updates,
        } = *self;
        let finished = runtime.block_on(sync.shutdown()).unwrap();
        let mut unread = Vec::new();
        while let Ok(u) = updates.try_recv() {
            unread.push(u);
        }
        Stopped {
            store: finished.store,
            fetches: finished.fetches,
            unread,
        }
    }
}

#[test]
fn converges_calm() {
    suite::converges_under::<Tokio>(Profile::Calm, 1);
}

#[test]
fn converges_flaky_mobile() {
    suite::converges_under::<Tokio>(Profile::FlakyMobile, 2);
}

#[test]
fn converges_hostile() {
    suite::converges_under::<Tokio>(Profile::Hostile, 3);
}

#[test]
fn recovers_a_gap_in_about_gap_wait() {
    suite::recovers_a_gap_in_about_gap_wait::<Tokio>(4);
}

#[test]
fn resumes_from_the_store() {
    suite::resumes_from_the_store::<Tokio>(5);
}

#[test]
fn clears_an_unknown_conversation() {
    suite::clears_an_unknown_conversation::<Tokio>(6);
}

#[test]
fn survives_a_failing_token_provider() {
    suite::survives_a_failing_token_provider::<Tokio>(7);
}
