//! The demo's comparison table.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

/// One delivery, as either client made it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub convo: String,
    pub seq: u64,
    pub id: String,
    /// Sharing an already-delivered seq (gapless flags these; they may come late).
    pub shares_seq: bool,
    /// Delivered late, after a recovery (a fetch, or a gap filled).
    pub recovered: bool,
    /// From the server's `createdAt` to delivery.
    pub latency: Option<Duration>,
}

/// How a client did against the server's log.
#[derive(Debug, Default)]
pub struct Outcome {
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
    pub recovered: usize,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub fetches: Option<u64>,
}

/// Compares deliveries (in the order made) with the log `(convo, seq, id)`.
pub fn outcome(log: &[(String, u64, String)], seen: &[Seen], fetches: Option<u64>) -> Outcome {
    let on_server: HashSet<(&str, &str)> = log
        .iter()
        .map(|(c, _, id)| (c.as_str(), id.as_str()))
        .collect();
    let mut distinct = HashSet::new();
    let mut duplicated = 0;
    let mut high: HashMap<&str, u64> = HashMap::new();
    let mut out_of_order = 0;
    let mut latencies = Vec::new();
    for s in seen {
        if !distinct.insert((s.convo.as_str(), s.id.as_str())) {
            duplicated += 1;
            continue;
        }
        let h = high.entry(s.convo.as_str()).or_insert(0);
        if s.seq < *h && !s.shares_seq {
            out_of_order += 1;
        }
        *h = (*h).max(s.seq);
        if s.recovered {
            if let Some(l) = s.latency {
                latencies.push(l);
            }
        }
    }
    latencies.sort();
    let pct = |q: f64| {
        (!latencies.is_empty())
            .then(|| latencies[((latencies.len() - 1) as f64 * q).round() as usize])
    };
    let delivered = on_server.iter().filter(|k| distinct.contains(*k)).count();
    Outcome {
        delivered,
        lost: on_server.len() - delivered,
        duplicated,
        out_of_order,
        recovered: latencies.len(),
        p50: pct(0.5),
        p99: pct(0.99),
        fetches,
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{} ms", d.as_millis()))
}

/// The table.
pub fn table(on_server: usize, gapless: &Outcome, baseline: &Outcome) -> String {
    let rows: Vec<(&str, String, String)> = vec![
        (
            "delivered",
            gapless.delivered.to_string(),
            baseline.delivered.to_string(),
        ),
        ("lost", gapless.lost.to_string(), baseline.lost.to_string()),
        (
            "duplicated",
            gapless.duplicated.to_string(),
            baseline.duplicated.to_string(),
        ),
        (
            "out of order",
            gapless.out_of_order.to_string(),
            baseline.out_of_order.to_string(),
        ),
        (
            "recovered late",
            gapless.recovered.to_string(),
            baseline.recovered.to_string(),
        ),
        ("recovery latency p50", ms(gapless.p50), ms(baseline.p50)),
        ("recovery latency p99", ms(gapless.p99), ms(baseline.p99)),
        (
            "fetches made",
            gapless.fetches.map_or("-".into(), |f| f.to_string()),
            baseline.fetches.map_or("0".into(), |f| f.to_string()),
        ),
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24}{:>12}{:>22}",
        format!("{on_server} on the server"),
        "gapless",
        "stream-only (seed)"
    );
    for (name, a, b) in rows {
        let _ = writeln!(out, "{name:<24}{a:>12}{b:>22}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(convo: &str, seq: u64, id: &str, recovered: bool, ms: u64) -> Seen {
        Seen {
            convo: convo.into(),
            seq,
            id: id.into(),
            shares_seq: false,
            recovered,
            latency: Some(Duration::from_millis(ms)),
        }
    }

    #[test]
    fn counts_losses_duplicates_disorder_and_recovery_latency() {
        let log: Vec<(String, u64, String)> = (1..=4)
            .map(|s| ("c".to_string(), s, format!("m{s}")))
            .collect();
        let deliveries = vec![
            seen("c", 1, "m1", false, 5),
            seen("c", 3, "m3", false, 5),
            seen("c", 2, "m2", true, 700),
            seen("c", 3, "m3", false, 5),
        ];
        let o = outcome(&log, &deliveries, Some(2));
        assert_eq!(
            (o.delivered, o.lost, o.duplicated, o.out_of_order),
            (3, 1, 1, 1)
        );
        assert_eq!(o.p50, Some(Duration::from_millis(700)));
        let t = table(4, &o, &Outcome::default());
        assert!(t.contains("700 ms"), "{t}");
    }
}
