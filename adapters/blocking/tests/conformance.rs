//! The shared driver suite (`gapless-conformance`), run against the blocking driver.

use gapless_adapter::Update;
use gapless_blocking::{Options, Sync};
use gapless_conformance::{self as suite, Driver, Profile, Running, Setup, Stopped};
use gapless_sqlite::SqliteStore;
use std::sync::mpsc::Receiver;
use std::time::Duration;

struct Blocking;

struct BlockingRunning {
    sync: Sync<SqliteStore>,
    updates: Receiver<Update>,
}

impl Driver for Blocking {
    fn start(setup: Setup) -> Box<dyn Running> {
        let mut options = Options::new(setup.base_url);
        options.config = setup.config;
        options.request_timeout = setup.request_timeout;
        let (sync, updates) = Sync::spawn(options, setup.store, setup.tokens).unwrap();
        for convo in setup.convos {
            sync.subscribe(convo).unwrap();
        }
        Box::new(BlockingRunning { sync, updates })
    }
}

impl Running for BlockingRunning {
    fn next_update(&mut self, timeout: Duration) -> Option<Update> {
        self.updates.recv_timeout(timeout).ok()
    }

    fn stop(self: Box<Self>) -> Stopped {
        let finished = self.sync.shutdown().unwrap();
        Stopped {
            store: finished.store,
            fetches: finished.fetches,
            unread: self.updates.try_iter().collect(),
        }
    }
}

#[test]
fn converges_calm() {
    suite::converges_under::<Blocking>(Profile::Calm, 11);
}

#[test]
fn converges_flaky_mobile() {
    suite::converges_under::<Blocking>(Profile::FlakyMobile, 12);
}

#[test]
fn converges_hostile() {
    suite::converges_under::<Blocking>(Profile::Hostile, 13);
}

#[test]
fn recovers_a_gap_in_about_gap_wait() {
    suite::recovers_a_gap_in_about_gap_wait::<Blocking>(14);
}

#[test]
fn resumes_from_the_store() {
    suite::resumes_from_the_store::<Blocking>(15);
}

#[test]
fn clears_an_unknown_conversation() {
    suite::clears_an_unknown_conversation::<Blocking>(16);
}

#[test]
fn survives_a_failing_token_provider() {
    suite::survives_a_failing_token_provider::<Blocking>(17);
}
