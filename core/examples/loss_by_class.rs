//! Messages lost per million, by class, over a long simulated run against the real
//! server's behaviour (pages in `(epoch, seq)` order, shared seqs, late commits up to five
//! times `hole_grace`, holes, expiry, senders on an older epoch, a lossy stream, cuts,
//! failing fetches, restarts), with the protections of the property tests lifted.
//!
//! `cargo run --release -p gapless --example loss_by_class -- [runs] [gap_info]`
use gapless::testkit::{Faults, ServerFaults, Sim, SimConfig};
use gapless::{Config, Time};
use std::collections::BTreeMap;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(400);
    let gap_info = args.next().is_some_and(|a| a == "gap_info");
    let (mut sent, mut served, mut delivered, mut late, mut unreachable) = (0, 0, 0, 0, 0);
    let (mut fetches, mut replays) = (0, 0);
    let mut lost: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut lost_unreachable = 0;
    let mut violations = 0;
    for seed in 0..runs {
        let cfg = SimConfig {
            seed: 0x10_0000 + seed,
            convos: 5,
            messages: 500,
            send_interval_ms: 100,
            catch_up_only_every: 5,
            faults: Faults {
                drop: 100,
                duplicate: 30,
                slow_consumer: 10,
                cut: 50,
                connect_fail: 50,
                fetch_fail: 50,
                rate_limit: 20,
                unauthorized: 10,
                max_delay_ms: 300,
                fetch_delay_ms: 200,
                server: ServerFaults {
                    hole: 20,
                    shared: 50,
                    late: 50,
                    expire: 5,
                    ephemeral: 20,
                    epoch_back: 20,
                    commit: 20,
                },
            },
            faults_until: Time::from_millis(5 * 500 * 100 * 2),
            restarts: vec![Time::from_millis(30_000), Time::from_millis(70_000)],
            settle: Duration::from_secs(300),
            gap_info,
            realistic: true,
            machine: Config::default(),
            ..SimConfig::default()
        };
        let r = Sim::run(cfg);
        sent += r.sent;
        served += r.served;
        delivered += r.delivered;
        late += r.late;
        fetches += r.fetches;
        replays += r.late_replays;
        unreachable += r.unreachable;
        lost_unreachable += r.lost_unreachable;
        violations += r.violations.len();
        for (k, v) in r.lost {
            *lost.entry(k).or_default() += v;
        }
    }
    let per_million = |n: usize| n as f64 * 1e6 / sent.max(1) as f64;
    println!("runs {runs}, gapInfo {gap_info}: {sent} messages sent, {served} served at the end, {delivered} deliveries ({late} late, {replays} late re-reads a store drops), {unreachable} unreachable ranges, {fetches} fetches");
    println!(
        "{:<58} {:>8} {:>12}",
        "lost, by class", "count", "per million"
    );
    println!(
        "{:<58} {:>8} {:>12.1}",
        "unreachable: no sinceSeq page can show it",
        lost_unreachable,
        per_million(lost_unreachable)
    );
    for (k, v) in &lost {
        println!("{k:<58} {v:>8} {:>12.1}", per_million(*v));
    }
    println!("other invariant violations: {violations}");
}
