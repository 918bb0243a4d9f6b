//! The hot path as issue 14 measures it: one conversation, 256-byte payloads, every input
//! built before the measured section, `now` fixed so that no timer fires. In order and 10 %
//! reordered within 32; in batches of 256 (256 inputs handled, then every command drained)
//! and 1,000,000 messages cold (one input, one drain). Beside, in the same group and the
//! same run: the floor (the same inputs moved to a vector) and the plain seed-style buffer
//! (`HashMap<String, (next, BTreeMap<u64, Message>)>`). Outputs go to vectors made before
//! the measured section and are dropped after it.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gapless_benches::*;
use std::hint::black_box;
use std::time::Duration;

const PAYLOAD: usize = 256;

fn hot(c: &mut Criterion) {
    for workload in [Workload::InOrder, Workload::Reordered] {
        for (shape, n, batch) in [("batches", 10_000u64, 256usize), ("cold", 1_000_000, 1)] {
            let (order, _) = arrivals(workload, n);
            let mut group = c.benchmark_group(format!("hot/{}/{shape}", workload.name()));
            group.throughput(Throughput::Elements(n));
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(if n > 10_000 { 20 } else { 3 }));
            let inputs = || {
                let (m, convo, stream) = machine_with_one_stream();
                (
                    m,
                    convo.clone(),
                    stream_inputs(&convo, stream, &order, PAYLOAD),
                )
            };
            group.bench_function("gapless", |b| {
                b.iter_batched(
                    || (inputs(), Vec::with_capacity(2 * n as usize)),
                    |((mut m, _, inputs), mut out)| {
                        let delivered = run_hot(&mut m, inputs, batch, &mut out);
                        assert_eq!(delivered as u64, n);
                        (m, out)
                    },
                    BatchSize::PerIteration,
                )
            });
            group.bench_function("seed_buffer", |b| {
                b.iter_batched(
                    || (inputs(), Vec::with_capacity(n as usize)),
                    |((_, convo, inputs), mut out)| {
                        black_box(run_hot_seed(convo.as_str(), inputs, batch, &mut out));
                        out
                    },
                    BatchSize::PerIteration,
                )
            });
            group.bench_function("floor", |b| {
                b.iter_batched(
                    || (inputs().2, Vec::with_capacity(n as usize)),
                    |(inputs, mut out)| {
                        black_box(run_hot_floor(inputs, batch, &mut out));
                        out
                    },
                    BatchSize::PerIteration,
                )
            });
            group.finish();
        }
    }
}

criterion_group!(benches, hot);
criterion_main!(benches);
