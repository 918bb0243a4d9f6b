//! The bench workloads deliver everything (a bench that measures a broken run measures
//! nothing).

use gapless::Time;
use gapless_benches::*;

#[test]
fn every_workload_delivers_every_message() {
    for workload in Workload::ALL {
        let (order, lost) = arrivals(workload, 10_000);
        let (mut m, convo, stream) = machine_with_one_stream();
        let inputs = stream_inputs(&convo, stream, &order, 16);
        let (delivered, _) = run_machine(&mut m, inputs, 16, Time::ZERO);
        assert_eq!(delivered, 10_000, "{}", workload.name());
        assert_eq!(position(&m, &convo).0, 10_000);

        let inputs = stream_inputs(&convo, stream, &order, 16);
        let lost: Vec<_> = lost.iter().map(|&s| message(s, 16)).collect();
        assert_eq!(
            run_seed(convo.as_str(), inputs, lost),
            10_000,
            "seed {}",
            workload.name()
        );
    }
}

#[test]
fn the_hot_path_workloads_deliver_every_message() {
    for workload in [Workload::InOrder, Workload::Reordered] {
        let (order, _) = arrivals(workload, 10_000);
        for batch in [1, 256] {
            let (mut m, convo, stream) = machine_with_one_stream();
            let inputs = stream_inputs(&convo, stream, &order, 256);
            let mut out = Vec::new();
            assert_eq!(run_hot(&mut m, inputs, batch, &mut out), 10_000);
            assert_eq!(position(&m, &convo).0, 10_000);

            let inputs = stream_inputs(&convo, stream, &order, 256);
            let mut out = Vec::new();
            assert_eq!(
                run_hot_seed(convo.as_str(), inputs, batch, &mut out),
                10_000
            );
            let seqs: Vec<u64> = out.iter().map(|m| m.seq.0).collect();
            assert_eq!(
                seqs,
                (1..=10_000).collect::<Vec<_>>(),
                "the seed buffer orders"
            );
            let inputs = stream_inputs(&convo, stream, &order, 256);
            let mut out = Vec::new();
            assert_eq!(run_hot_floor(inputs, batch, &mut out), 10_000);
        }
    }
}

#[test]
fn the_scale_setup_opens_every_stream_and_leaves_nothing_due() {
    let (m, streams) = many_live_conversations(1_000);
    assert_eq!(streams.len(), 1_000);
    assert_eq!(m.caught_up(), 1_000);
    assert!(m.poll_timeout().is_some_and(|t| t > Time::from_millis(1)));
}
