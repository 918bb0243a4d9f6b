//! Messages per second through `handle` + draining `poll_command`, one conversation, per
//! workload and payload size — beside (a) the physical floor and (b) the seed client's
//! buffer, in the same group and the same run.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gapless::Time;
use gapless_benches::*;
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

const N: u64 = 10_000;

fn buffer(c: &mut Criterion) {
    for workload in Workload::ALL {
        for payload in [0usize, 256, 4096] {
            let (order, lost) = arrivals(workload, N);
            let mut group = c.benchmark_group(format!("buffer/{}/{payload}", workload.name()));
            group.throughput(Throughput::Elements(order.len() as u64));
            group
                .sample_size(20)
                .measurement_time(Duration::from_secs(3));

            group.bench_function("gapless", |b| {
                b.iter_batched(
                    || {
                        let (m, convo, stream) = machine_with_one_stream();
                        (m, stream_inputs(&convo, stream, &order, payload))
                    },
                    |(mut m, inputs)| {
                        let (delivered, _) = run_machine(&mut m, inputs, payload, Time::ZERO);
                        assert!(delivered as u64 >= N - 1, "{delivered}");
                        black_box(m)
                    },
                    BatchSize::LargeInput,
                )
            });

            group.bench_function("floor", |b| {
                b.iter_batched(
                    || {
                        let (_, convo, stream) = machine_with_one_stream();
                        (
                            stream_inputs(&convo, stream, &order, payload),
                            VecDeque::with_capacity(order.len()),
                        )
                    },
                    |(inputs, mut out)| black_box(run_floor(inputs, &mut out)),
                    BatchSize::LargeInput,
                )
            });

            group.bench_function("seed_buffer", |b| {
                b.iter_batched(
                    || {
                        let (_, convo, stream) = machine_with_one_stream();
                        let lost: Vec<_> = lost.iter().map(|&s| message(s, payload)).collect();
                        (stream_inputs(&convo, stream, &order, payload), lost)
                    },
                    |(inputs, lost)| {
                        black_box(run_seed("22653740d27a6e9a7293ebcf1e73ef12", inputs, lost))
                    },
                    BatchSize::LargeInput,
                )
            });
            group.finish();
        }
    }
}

criterion_group!(benches, buffer);
criterion_main!(benches);
