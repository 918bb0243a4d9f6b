//! The shared driver suite (`gapless-conformance`), run against the blocking driver.

use gapless_adapter::Update;
use gapless_blocking::{Options, Sync};
use gapless_conformance::{Driver, Running, Setup, Stopped};
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
        options.api = setup.api;
        options.config = setup.config;
        options.request_timeout = setup.request_timeout;
        options.updates_capacity = setup.updates_capacity;
        let (sync, updates) = Sync::spawn(options, setup.store, setup.tokens).unwrap();
        for convo in setup.convos {
            sync.subscribe(convo).unwrap();
        }
        Box::new(BlockingRunning { sync, updates })
    }
}

impl Running for BlockingRunning {
    fn subscribe(&mut self, convo: &str) {
        self.sync.subscribe(convo).unwrap();
    }

    fn resume(&mut self) {
        self.sync.resume(None).unwrap();
    }

    fn send(&mut self, message: gapless::Outgoing) {
        self.sync.send(message).unwrap();
    }

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

gapless_conformance::suite!(Blocking, 10);
