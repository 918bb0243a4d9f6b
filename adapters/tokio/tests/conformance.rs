//! The shared driver suite (`gapless-conformance`), run against the tokio driver.

use gapless_adapter::Update;
use gapless_conformance::{Driver, Running, Setup, Stopped};
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
        options.api = setup.api;
        options.config = setup.config;
        options.request_timeout = setup.request_timeout;
        options.updates_capacity = setup.updates_capacity;
        let (sync, updates) = runtime.block_on(async {
            let (sync, updates) = Sync::spawn(options, setup.store, setup.tokens).unwrap();
            for convo in setup.convos {
                sync.subscribe(convo).unwrap();
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

gapless_conformance::suite!(Tokio, 0);
