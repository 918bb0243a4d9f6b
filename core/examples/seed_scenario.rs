//! The seed analysis's scenario, driven by hand: the stream brings `[1, 2, 5, 6]`; after
//! `gap_wait` the machine fetches from the last delivered position (overlapping it by one),
//! the page `[2, 3, 4]` fills the gap, and 3, 4, 5, 6 are delivered in order — in about one
//! round trip, where the Catbird client waited five minutes and then dropped 5 and 6.
//!
//! Then the same over a lossy simulated network, against a stream-only client.
//!
//! `cargo run -p gapless --features testkit --example seed_scenario`

use gapless::testkit::{Faults, Harness, ServerFaults, Sim, SimConfig};
use gapless::{Config, Message, Subscription, Time};
use std::time::Duration;

fn main() {
    let mut h = Harness::new(Config::default());
    h.subscribe(Subscription::live("convo"));
    h.open("convo");
    let catch_up = h.take_fetch().expect("a catch-up when the stream opens");
    h.answer(&catch_up, vec![]);
    for seq in [1, 2, 5, 6] {
        h.stream("convo", Message::new(format!("m{seq}"), seq, 0));
    }
    h.advance(Duration::from_millis(500));
    let fetch = h.take_fetch().expect("a fetch after gap_wait");
    let page = (2..=4)
        .map(|s| Message::new(format!("m{s}"), s, 0))
        .collect();
    h.answer(&fetch, page);
    h.assert_invariants();
    println!("The seed scenario (< what the network did, > what the machine commanded):\n");
    print!("{}", h.trace());

    let cfg = SimConfig {
        seed: 2026,
        convos: 5,
        messages: 200,
        send_interval_ms: 100,
        faults: Faults {
            drop: 50,
            duplicate: 50,
            cut: 200,
            connect_fail: 100,
            fetch_fail: 100,
            max_delay_ms: 300,
            fetch_delay_ms: 150,
            server: ServerFaults {
                hole: 10,
                shared: 10,
                late: 20,
                ..ServerFaults::default()
            },
            ..Faults::default()
        },
        faults_until: Time::from_millis(40_000),
        restarts: vec![Time::from_millis(15_000)],
        ..SimConfig::default()
    };
    let report = Sim::run(cfg);
    println!(
        "\nOver a lossy simulated network: {} conversations, {} messages served, \
         {} delivered, {} holes skipped, {} fetches, {} streams, {} anomalies, {} violations.",
        5,
        report.served,
        report.delivered,
        report.skipped,
        report.fetches,
        report.streams,
        report.anomalies,
        report.violations.len()
    );
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}
