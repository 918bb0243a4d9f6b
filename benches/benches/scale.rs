//! 1, 1,000 and 1,000,000 subscribed conversations: the cost of `poll_timeout`, of a
//! `handle_timeout` with nothing due, and of one event into a random conversation. (Bytes
//! per idle conversation are counted, not timed: `cargo run -p gapless-benches --release
//! --bin report`.)

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gapless::{ConvoId, Input, StreamEvent, Time};
use gapless_benches::*;
use std::hint::black_box;
use std::time::Duration;

fn scale(c: &mut Criterion) {
    for n in [1usize, 1_000, 1_000_000] {
        let (mut m, streams) = many_live_conversations(n);
        let names: Vec<ConvoId> = (0..n).map(convo_name).collect();
        let mut group = c.benchmark_group(format!("scale/{n}"));
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(2));
        let now = Time::from_millis(1);
        assert!(m.poll_timeout().unwrap() > now, "nothing is due");

        group.bench_function("poll_timeout", |b| b.iter(|| black_box(m.poll_timeout())));
        group.bench_function("handle_timeout_nothing_due", |b| {
            b.iter(|| {
                m.handle_timeout(now);
                black_box(m.poll_command())
            })
        });
        let mut rng = Rng::new(n as u64);
        let mut next = vec![1u64; n];
        group.bench_function("event_into_random_conversation", |b| {
            b.iter_batched(
                || {
                    let i = rng.below(n as u64) as usize;
                    let seq = next[i];
                    next[i] += 1;
                    Input::StreamEvent {
                        convo: names[i].clone(),
                        stream: streams[i],
                        event: StreamEvent::Message {
                            cursor: None,
                            message: message(seq, 256),
                        },
                    }
                },
                |input| {
                    m.handle(now, input).unwrap();
                    while let Some(c) = m.poll_command() {
                        black_box(c);
                    }
                },
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, scale);
criterion_main!(benches);
