//! Prints the figures of BENCHMARKS.md: bytes per idle conversation (counted with a counting
//! global allocator), and, from the last `cargo bench -p gapless-benches` run, every timing
//! beside its same-run baseline as a ratio, with the targets of issue 7.
//!
//! `cargo bench -p gapless-benches && cargo run -p gapless-benches --release --bin report`

use gapless_benches::{drain_answering, many_live_conversations};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn bytes_per_idle_conversation(n: usize) -> f64 {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let (mut m, streams) = many_live_conversations(n);
    drain_answering(&mut m, gapless::Time::ZERO);
    let streams_bytes = (streams.capacity() * std::mem::size_of::<gapless::StreamId>()) as isize;
    let used = LIVE_BYTES.load(Ordering::Relaxed) - before - streams_bytes;
    let per = used as f64 / n as f64;
    drop(m);
    per
}

/// Mean time in ns of a criterion bench, from its last run.
fn mean_ns(root: &Path, group: &str, function: &str) -> Option<f64> {
    let path = root
        .join(group.replace('/', "_"))
        .join(function)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    println!("## Bytes per idle conversation (counted)\n");
    println!("| conversations | bytes each | target ≤ 200 |");
    println!("|---|---|---|");
    for n in [1_000, 1_000_000] {
        let b = bytes_per_idle_conversation(n);
        println!(
            "| {n} | {b:.0} | {} |",
            if b <= 200.0 { "met" } else { "missed" }
        );
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    if !root.exists() {
        println!("\n(no criterion results: run `cargo bench -p gapless-benches` first)");
        return;
    }
    println!("\n## Buffer throughput, one conversation, 10,000 messages\n");
    println!("| workload | payload | gapless | floor (a) | seed buffer (b) | gapless / floor | gapless / seed |");
    println!("|---|---|---|---|---|---|---|");
    for workload in ["in_order", "reordered", "duplicates", "gaps"] {
        for payload in [0, 256, 4096] {
            let group = format!("buffer/{workload}/{payload}");
            let (Some(g), Some(f), Some(s)) = (
                mean_ns(&root, &group, "gapless"),
                mean_ns(&root, &group, "floor"),
                mean_ns(&root, &group, "seed_buffer"),
            ) else {
                continue;
            };
            let per_s = |ns: f64| 10_000.0 / ns * 1e9;
            println!(
                "| {workload} | {payload} | {:.1} M/s | {:.1} M/s | {:.1} M/s | {:.0}% | {:.2}× |",
                per_s(g) / 1e6,
                per_s(f) / 1e6,
                per_s(s) / 1e6,
                f / g * 100.0,
                s / g
            );
        }
    }
    println!("\n## Scale: cost with 1, 1,000 and 1,000,000 subscribed conversations\n");
    println!("| operation | 1 | 1,000 | 1,000,000 | 1,000,000 / 1 |");
    println!("|---|---|---|---|---|");
    for op in [
        "poll_timeout",
        "handle_timeout_nothing_due",
        "event_into_random_conversation",
    ] {
        let t: Vec<Option<f64>> = ["1", "1000", "1000000"]
            .iter()
            .map(|n| mean_ns(&root, &format!("scale/{n}"), op))
            .collect();
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |ns| format!("{ns:.1} ns"));
        let ratio = match (t[0], t[2]) {
            (Some(a), Some(b)) => format!("{:.2}×", b / a),
            _ => "-".into(),
        };
        println!(
            "| {op} | {} | {} | {} | {ratio} |",
            cell(t[0]),
            cell(t[1]),
            cell(t[2])
        );
    }
}
