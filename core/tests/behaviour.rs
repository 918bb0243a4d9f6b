//! One test per behaviour of `DESIGN.md` ("Behaviour (each is a test)"), plus the error
//! paths. Each drives the machine through the scripted harness and checks the trace
//! invariants as it goes.
#![cfg(feature = "testkit")]

use gapless::testkit::Harness;
use gapless::*;
use std::time::Duration;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn m(id: &str, seq: u64) -> Message {
    Message::new(id, seq, 1)
}

fn msgs(seqs: &[u64]) -> Vec<Message> {
    seqs.iter().map(|&s| m(&format!("m{s}"), s)).collect()
}

/// A harness with one live conversation `c`, stream open, initial catch-up answered empty.
fn live(config: Config) -> Harness {
    let mut h = Harness::new(config);
    h.subscribe(Subscription::live("c"));
    h.open("c");
    let f = h.take_fetch().expect("catch-up on open");
    h.answer(&f, vec![]);
    h
}

fn fetches(h: &Harness) -> Vec<FetchRequest> {
    h.commands()
        .iter()
        .filter_map(|c| match c {
            Command::Fetch(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

fn anomalies(h: &Harness) -> Vec<Anomaly> {
    h.commands()
        .iter()
        .filter_map(|c| match c {
            Command::Anomaly { anomaly, .. } => Some(anomaly.clone()),
            _ => None,
        })
        .collect()
}

/// Keeps the stream alive with a keepalive every 15 s, `n` times.
fn keep_alive(h: &mut Harness, n: usize) {
    for _ in 0..n {
        h.advance(Duration::from_secs(15));
        h.event("c", "keepalive", StreamEvent::Keepalive);
    }
}

/// Lets time pass, 10 ms at a time, until the machine opens the stream again.
fn time_to_reopen(h: &mut Harness) -> Duration {
    let (t0, before) = (h.now(), opens(h));
    while opens(h) == before {
        h.advance(MS(10));
    }
    h.now().since(t0)
}

fn opens(h: &Harness) -> usize {
    h.commands()
        .iter()
        .filter(|c| matches!(c, Command::OpenStream { .. }))
        .count()
}

// 1 ------------------------------------------------------------------------------------

#[test]
fn in_order_messages_are_delivered_at_once() {
    let mut h = live(Config::default());
    for s in 1..=3 {
        h.stream("c", m(&format!("m{s}"), s));
        assert_eq!(
            h.delivered_seqs("c").len() as u64,
            s,
            "delivered on arrival"
        );
    }
    assert_eq!(h.delivered_seqs("c"), vec![1, 2, 3]);
    h.advance(Duration::from_secs(5));
    assert_eq!(fetches(&h).len(), 1, "only the catch-up on open");
    assert_eq!(h.position("c"), Seq(3));
    h.assert_invariants();
}

// 2 ------------------------------------------------------------------------------------

#[test]
fn duplicate_ids_are_dropped_whether_delivered_or_buffered() {
    let mut h = live(Config::default());
    h.stream("c", m("a", 1));
    h.stream("c", m("a", 1));
    h.stream("c", m("c3", 3));
    h.stream("c", m("c3", 3));
    assert_eq!(h.machine().buffered(&"c".into()), 1);
    h.stream("c", m("b", 2));
    assert_eq!(h.delivered_seqs("c"), vec![1, 2, 3]);
    h.assert_invariants();
}

#[test]
fn another_message_at_a_delivered_seq_is_delivered_flagged_never_dropped() {
    let mut h = live(Config::default());
    h.stream("c", m("a", 1));
    h.stream("c", m("b", 1));
    let d = &h.deliveries()[1];
    assert_eq!((d.message.id.as_str(), d.order), ("b", Order::SharesSeq));
    let cp = h.checkpoint("c").unwrap();
    let ids: Vec<&str> = cp.ids.iter().map(|i| i.as_str()).collect();
    assert_eq!(ids, ["a", "b"], "the checkpoint knows both ids at seq 1");
    h.assert_invariants();
}

// 3 ------------------------------------------------------------------------------------

#[test]
fn gap_is_filled_by_one_fetch_after_gap_wait() {
    let mut h = live(Config::default());
    for s in [1, 2, 5, 6] {
        h.stream("c", m(&format!("m{s}"), s));
    }
    h.advance(MS(499));
    assert_eq!(fetches(&h).len(), 1, "no fetch before gap_wait");
    h.advance(MS(1));
    let f = h.take_fetch().expect("fetch at gap_wait");
    assert_eq!(
        (f.since_seq, f.since_id.as_ref().map(|i| i.as_str())),
        (Seq(1), Some("m2"))
    );
    h.answer(&f, msgs(&[2, 3, 4]));
    assert_eq!(
        h.delivered_seqs("c"),
        vec![1, 2, 5, 6]
            .into_iter()
            .take(2)
            .chain([3, 4, 5, 6])
            .collect::<Vec<_>>()
    );
    assert_eq!(h.machine().buffered(&"c".into()), 0);
    h.assert_invariants();
}

#[test]
fn gap_filled_by_the_stream_before_gap_wait_cancels_the_fetch() {
    let mut h = live(Config::default());
    h.stream("c", m("m1", 1));
    h.stream("c", m("m3", 3));
    h.advance(MS(300));
    h.stream("c", m("m2", 2));
    h.advance(Duration::from_secs(10));
    assert_eq!(fetches(&h).len(), 1, "only the catch-up on open");
    assert_eq!(h.delivered_seqs("c"), vec![1, 2, 3]);
}

// 4 ------------------------------------------------------------------------------------

#[test]
fn page_fills_the_gap_and_releases_the_buffer_in_order() {
    let mut h = live(Config::default());
    h.stream("c", m("m1", 1));
    h.stream("c", m("m4", 4));
    h.advance(MS(500));
    let f = h.take_fetch().unwrap();
    // The server sorts by (epoch, seq): give it out of seq order.
    let mut page = msgs(&[3, 2]);
    page[0].epoch = Epoch(0);
    h.answer(&f, page);
    assert_eq!(h.delivered_seqs("c"), vec![1, 2, 3, 4]);
    h.assert_invariants();
}

#[test]
fn missing_seq_is_skipped_only_after_a_second_short_page_hole_grace_later() {
    let mut h = live(Config::default());
    h.stream("c", m("m1", 1));
    h.stream("c", m("m4", 4));
    h.advance(MS(500));
    let f = h.take_fetch().unwrap();
    h.answer(&f, msgs(&[1, 2]));
    assert_eq!(h.position("c"), Seq(2), "3 is only a suspect");
    h.advance(MS(1999));
    assert_eq!(h.pending_fetches(), 0, "no second fetch before hole_grace");
    h.advance(MS(1));
    let f = h.take_fetch().expect("second fetch at hole_grace");
    assert_eq!(f.since_seq, Seq(1));
    h.answer(&f, msgs(&[2]));
    assert!(h.commands().iter().any(|c| matches!(
        c,
        Command::Skipped {
            from: Seq(3),
            to: Seq(3),
            ..
        }
    )));
    assert_eq!(h.delivered_seqs("c"), vec![1, 2, 4]);
    h.assert_invariants();
}

#[test]
fn late_commit_within_hole_grace_is_delivered_not_skipped() {
    let mut h = live(Config::default());
    h.stream("c", m("m1", 1));
    h.stream("c", m("m4", 4));
    h.advance(MS(500));
    let f = h.take_fetch().unwrap();
    h.answer(&f, msgs(&[1, 2]));
    h.advance(Duration::from_secs(2));
    let f = h.take_fetch().unwrap();
    h.answer(&f, msgs(&[2, 3]));
    assert!(!h
        .commands()
        .iter()
        .any(|c| matches!(c, Command::Skipped { .. })));
    assert_eq!(h.delivered_seqs("c"), vec![1, 2, 3, 4]);
}

#[test]
fn full_page_pages_on_from_its_own_position_never_from_the_servers_last_seq() {
    // Recordings 75a/75b: seq 15 at epoch 0 sorts before 11..14 at epoch 1.
    let config = Config {
        page_limit: 3,
        ..Config::default()
    };
    let mut h = live(config);
    for s in 1..=10 {
        h.stream("c", m(&format!("m{s}"), s));
    }
    h.stream("c", m("m16", 16));
    h.advance(MS(500));
    let f = h.take_fetch().unwrap();
    assert_eq!((f.since_seq, f.limit), (Seq(9), 3));
    let mut m15 = m("m15", 15);
    m15.epoch = Epoch(0);
    h.answer(&f, vec![m15, m("m10", 10), m("m11", 11)]);
    let f = h
        .take_fetch()
        .expect("a full page is followed by another fetch");
    assert_eq!(
        f.since_seq,
        Seq(10),
        "from the first seq the page did not prove complete"
    );
    h.answer(&f, msgs(&[12, 13, 14]));
    let f = h.take_fetch().unwrap();
    h.answer(&f, msgs(&[14, 15]));
    assert_eq!(h.delivered_seqs("c"), (1..=16).collect::<Vec<_>>());
    h.assert_invariants();
}

#[test]
fn pages_that_make_no_progress_are_bounded_and_reported() {
    let config = Config {
        page_limit: 2,
        ..Config::default()
    };
    let mut h = live(config);
    h.stream("c", m("m1", 1));
    h.stream("c", m("m9", 9));
    h.advance(MS(500));
    // A broken server: every page is the same full page of what we have.
    let mut fetches = 0;
    for _ in 0..200 {
        h.advance(Duration::from_millis(200));
        let Some(f) = h.take_fetch() else { continue };
        fetches += 1;
        let page = vec![m("m1", 1); usize::from(f.limit)];
        h.answer(&f, page);
    }
    // Bounded: 40 s of a server repeating itself costs a backoff's worth of fetches.
    assert!(fetches < 40, "{fetches} fetches\n{}", h.trace());
    assert!(anomalies(&h)
        .iter()
        .any(|a| matches!(a, Anomaly::PageWentBackwards { .. })));
    // Nothing proved 2..=8 empty, nor was any page able to show them: no claim about
    // them is made, and nothing past them is delivered.
    assert!(!h
        .commands()
        .iter()
        .any(|c| matches!(c, Command::Skipped { .. } | Command::Unreachable { .. })));
    assert_eq!(h.delivered_seqs("c"), vec![1]);
    h.assert_invariants();
}

#[test]
fn a_full_page_proves_no_hole_and_what_no_page_can_show_is_unreachable_not_skipped() {
    // Epoch-back messages at high seqs (a member still at epoch 0) sort before everything
    // else: a page from seq 1 is filled by them and by seqs 3..=5 of later epochs, and
    // seq 2 (a hole, or a message of an even later epoch: no page can tell) sorts past the
    // cut of every page. It is declared unreachable, never skipped; 3..=5, reachable at the
    // largest limit, are delivered.
    let config = Config {
        page_limit: 4,
        max_page_limit: 10,
        ..Config::default()
    };
    let server = |id: &str, seq: u64, epoch: u64| Message::new(id, seq, epoch);
    let mut all = vec![
        server("m1", 1, 1),
        server("m3", 3, 1),
        server("m4", 4, 1),
        server("m5", 5, 3),
        server("m6", 6, 3),
    ];
    all.extend((7..=13).map(|s| server(&format!("m{s}"), s, 0)));
    let page = |since: Seq, limit: u16| {
        let mut p: Vec<Message> = all.iter().filter(|m| m.seq > since).cloned().collect();
        p.sort_by_key(|m| (m.epoch, m.seq));
        p.truncate(usize::from(limit));
        p
    };
    let mut h = live(config);
    h.stream("c", all[0].clone());
    h.stream("c", all[4].clone()); // 2 (a hole), 3, 4 and 5 never come on the stream
    for _ in 0..60 {
        h.advance(MS(700));
        if let Some(f) = h.take_fetch() {
            let p = page(f.since_seq, f.limit);
            h.answer(&f, p);
        }
    }
    assert_eq!(
        h.delivered_seqs("c"),
        [1, 3, 4, 5, 6]
            .into_iter()
            .chain(7..=13)
            .collect::<Vec<_>>(),
        "{}",
        h.trace()
    );
    let claims: Vec<(bool, Seq, Seq)> = h
        .commands()
        .iter()
        .filter_map(|c| match c {
            Command::Skipped { from, to, .. } => Some((true, *from, *to)),
            Command::Unreachable { from, to, .. } => Some((false, *from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(claims, vec![(false, Seq(2), Seq(2))], "{}", h.trace());
    h.assert_invariants();
}

#[test]
fn page_going_backwards_is_reported_and_ignored() {
    let mut h = live(Config::default());
    for s in 1..=5 {
        h.stream("c", m(&format!("m{s}"), s));
    }
    h.stream("c", m("m7", 7));
    h.advance(MS(500));
    let f = h.take_fetch().unwrap();
    h.answer(&f, vec![m("old", 2), m("m6", 6)]);
    assert!(anomalies(&h)
        .iter()
        .any(|a| matches!(a, Anomaly::PageWentBackwards { ignored: 1, .. })));
    assert_eq!(h.delivered_seqs("c"), vec![1, 2, 3, 4, 5, 6, 7]);
    h.assert_invariants();
}

// 5 ------------------------------------------------------------------------------------

#[test]
fn every_stream_open_triggers_a_catch_up_fetch() {
    let mut h = live(Config::default());
    h.stream("c", m("m1", 1));
    h.close("c", None);
    h.advance(Duration::from_secs(1));
    h.open("c");
    let f = h.take_fetch().expect("catch-up after reopen");
    assert_eq!(f.since_seq, Seq(0), "overlaps what was delivered");
}

#[test]
fn slow_consumer_info_triggers_a_catch_up_fetch() {
    let mut h = live(Config::default());
    h.stream("c", m("m1", 1));
    let event = StreamEvent::Info {
        cursor: None,
        info: SLOW_CONSUMER.into(),
    };
    h.event("c", "info slow-consumer", event);
    assert!(h.take_fetch().is_some());
    assert!(
        h.commands()
            .iter()
            .any(|c| matches!(c, Command::Event { .. })),
        "passed through"
    );
}

#[test]
fn resume_catches_up_at_once_and_skips_the_backoff() {
    let mut h = live(Config::default());
    h.close("c", Some(StreamError::Transient));
    let before = opens(&h);
    h.input("resume", Input::Resume { convo: None });
    assert_eq!(opens(&h), before + 1, "the stream reopens now");
    assert!(h.take_fetch().is_some(), "and a catch-up is queued now");
}

// 6 ------------------------------------------------------------------------------------

/// Closes the stream `n` times in a row without it ever opening; returns each delay.
fn reconnect_delays(seed: u64, n: usize) -> Vec<Duration> {
    let mut h = Harness::new(Config {
        rng_seed: seed,
        ..Config::default()
    });
    h.subscribe(Subscription::live("c"));
    let mut delays = Vec::new();
    for _ in 0..n {
        h.close("c", Some(StreamError::Transient));
        let elapsed = time_to_reopen(&mut h);
        delays.push(elapsed);
    }
    delays
}

#[test]
fn reconnects_back_off_exponentially_with_full_jitter() {
    let mut grew = false;
    for seed in 0..20 {
        let delays = reconnect_delays(seed, 10);
        for (i, d) in delays.iter().enumerate() {
            let ceiling = MS((500u64 << i).min(30_000) + 10);
            assert!(*d <= ceiling, "attempt {}: {d:?} above {ceiling:?}", i + 1);
        }
        grew |= delays[6..].iter().any(|d| *d > MS(4_000));
    }
    assert!(grew, "later attempts draw from a larger range");
}

#[test]
fn backoff_resets_only_after_the_stream_stayed_healthy() {
    let mut stayed_high = false;
    for seed in 0..20 {
        for healthy in [false, true] {
            let mut h = Harness::new(Config {
                rng_seed: seed,
                ..Config::default()
            });
            h.subscribe(Subscription::live("c"));
            for _ in 0..8 {
                h.close("c", Some(StreamError::Transient));
                h.advance(Duration::from_secs(31));
            }
            h.open("c");
            let keep = if healthy { 61 } else { 5 };
            for _ in 0..keep {
                h.event("c", "keepalive", StreamEvent::Keepalive);
                h.advance(Duration::from_secs(1));
            }
            h.close("c", Some(StreamError::Transient));
            let elapsed = time_to_reopen(&mut h);
            let delay = elapsed;
            if healthy {
                assert!(delay <= MS(510), "reset after 60 s healthy: {delay:?}");
            } else {
                stayed_high |= delay > MS(510);
            }
        }
    }
    assert!(
        stayed_high,
        "a short-lived connection does not reset the backoff"
    );
}

#[test]
fn silent_stream_is_closed_and_reopened_after_idle_timeout() {
    let mut h = live(Config::default());
    keep_alive(&mut h, 8);
    assert!(!h
        .commands()
        .iter()
        .any(|c| matches!(c, Command::CloseStream { .. })));
    h.advance(MS(44_999));
    assert!(!h
        .commands()
        .iter()
        .any(|c| matches!(c, Command::CloseStream { .. })));
    h.advance(MS(1));
    assert!(h
        .commands()
        .iter()
        .any(|c| matches!(c, Command::CloseStream { .. })));
    let before = opens(&h);
    h.advance(Duration::from_secs(1));
    assert_eq!(
        opens(&h),
        before + 1,
        "reopened after the first backoff step"
    );
}

// 7 ------------------------------------------------------------------------------------

#[test]
fn periodic_catch_up_runs_while_the_stream_is_down_not_while_it_is_healthy() {
    let mut h = live(Config::default());
    keep_alive(&mut h, 6);
    assert_eq!(
        fetches(&h).len(),
        1,
        "healthy for 90 s: only the catch-up on open (opened without a cursor, nothing can \
         have been filtered)"
    );
    // The stream goes down and stays down (every connection attempt fails).
    h.close("c", Some(StreamError::Transient));
    for _ in 0..40 {
        h.advance(Duration::from_secs(3));
        if let Some(Command::OpenStream { .. }) = h.commands().last() {
            h.close("c", Some(StreamError::Transient));
        }
        while let Some(f) = h.take_fetch() {
            h.answer(&f, vec![]);
        }
    }
    let polls = fetches(&h).len() - 1;
    assert!(
        (3..=5).contains(&polls),
        "about one per poll_interval in 120 s: {polls}"
    );
}

#[test]
fn healthy_stream_still_catches_up_slowly_so_a_lost_last_message_is_found() {
    let mut h = live(Config::default());
    keep_alive(&mut h, 9);
    assert_eq!(
        fetches(&h).len(),
        2,
        "one catch-up at healthy_poll_interval (120 s)"
    );
}

#[test]
fn a_message_lost_at_the_end_of_a_burst_is_found_once_the_stream_goes_quiet() {
    let mut h = live(Config::default());
    for s in 1..=3 {
        h.stream("c", m(&format!("m{s}"), s));
    }
    // m4, the last of the burst, is lost on the stream: no later message shows the gap.
    h.advance(Duration::from_secs(14));
    assert!(h.take_fetch().is_none(), "not before quiet_catch_up (15 s)");
    h.advance(Duration::from_secs(1));
    let f = h
        .take_fetch()
        .expect("a catch-up once the stream went quiet");
    h.answer(&f, msgs(&[1, 2, 3, 4]));
    assert_eq!(h.delivered_seqs("c"), vec![1, 2, 3, 4]);
    // Once per burst: a quiet stream costs nothing more until the slow healthy poll.
    keep_alive(&mut h, 6);
    assert!(h.take_fetch().is_none(), "{}", h.trace());
    h.assert_invariants();
}

#[test]
fn catch_up_only_conversation_is_polled_without_a_stream() {
    let mut h = Harness::new(Config::default());
    h.subscribe(Subscription::catch_up_only("c"));
    assert_eq!(opens(&h), 0);
    let f = h.take_fetch().expect("catches up on subscribe");
    h.answer(&f, msgs(&[1, 2]));
    h.advance(Duration::from_secs(30));
    let f = h.take_fetch().expect("and again every poll_interval");
    assert_eq!(f.since_seq, Seq(0));
    h.answer(&f, msgs(&[1, 2, 3]));
    assert_eq!(h.delivered_seqs("c"), vec![1, 2, 3]);
}

// 8 ------------------------------------------------------------------------------------

#[test]
fn buffer_overflow_costs_a_fetch_never_a_message() {
    let config = Config {
        max_buffered: 3,
        max_buffered_total: 3,
        ..Config::default()
    };
    let mut h = live(config);
    h.stream("c", m("m1", 1));
    for s in (3..=10).rev() {
        h.stream("c", m(&format!("m{s}"), s));
        assert!(h.machine().buffered(&"c".into()) <= 3);
    }
    assert_eq!(h.machine().buffered_total(), 3, "kept the lowest seqs");
    h.advance(MS(500));
    let f = h.take_fetch().unwrap();
    h.answer(&f, msgs(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    assert_eq!(h.delivered_seqs("c"), (1..=10).collect::<Vec<_>>());
    h.assert_invariants();
}

// 9 ------------------------------------------------------------------------------------

#[test]
fn fetch_slots_are_bounded_and_served_first_come_first_served() {
    let config = Config {
        max_inflight_fetches: 2,
        page_limit: 2,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    for i in 0..5 {
        h.subscribe(Subscription::catch_up_only(format!("c{i}")));
    }
    assert_eq!(h.machine().inflight_fetches(), 2);
    let order: Vec<String> = fetches(&h).iter().map(|f| f.convo.to_string()).collect();
    assert_eq!(order, ["c0", "c1"]);
    // c0 gets a full page and needs more: it goes to the back of the line.
    let f = h.take_fetch().unwrap();
    h.answer(&f, msgs(&[1, 2]));
    let order: Vec<String> = fetches(&h).iter().map(|f| f.convo.to_string()).collect();
    assert_eq!(order, ["c0", "c1", "c2"]);
    while let Some(f) = h.take_fetch() {
        assert!(h.machine().inflight_fetches() <= 2);
        h.answer(&f, vec![]);
    }
    let order: Vec<String> = fetches(&h).iter().map(|f| f.convo.to_string()).collect();
    assert_eq!(order, ["c0", "c1", "c2", "c3", "c4", "c0"]);
    h.assert_invariants();
}

// 10 -----------------------------------------------------------------------------------

#[test]
fn idle_conversations_cost_no_timer_work() {
    let mut machine = SyncMachine::new(Config::default()).unwrap();
    let t0 = Time::ZERO;
    for i in 0..10_000 {
        let sub = Subscription::catch_up_only(format!("c{i}"));
        machine.handle(t0, Input::Subscribe(sub)).unwrap();
    }
    // Answer every catch-up: now nothing is due for 30 s.
    loop {
        let mut answered = false;
        while let Some(c) = machine.poll_command() {
            if let Command::Fetch(f) = c {
                let page = Page::new(f.id, vec![]);
                machine.handle(t0, Input::FetchPage(page)).unwrap();
                answered = true;
            }
        }
        if !answered {
            break;
        }
    }
    let before = machine.stats();
    assert!(before.timer_queue_len <= 2 * 10_000 + 1024);
    for ms in 1..1000 {
        machine.handle_timeout(Time::from_millis(ms));
        let _ = machine.poll_timeout();
    }
    assert_eq!(
        machine.stats().timers_popped,
        before.timers_popped,
        "nothing popped"
    );
    assert_eq!(machine.poll_timeout(), Some(Time::from_millis(30_000)));
}

// 11 -----------------------------------------------------------------------------------

#[test]
fn epoch_going_back_is_reported_and_delivery_goes_on_in_seq_order() {
    let mut h = live(Config::default());
    h.stream("c", Message::new("a", 1, 2));
    h.stream("c", Message::new("b", 2, 1));
    h.stream("c", Message::new("c", 3, 2));
    assert_eq!(h.delivered_seqs("c"), vec![1, 2, 3]);
    let epochs: Vec<_> = anomalies(&h);
    assert_eq!(
        epochs,
        vec![Anomaly::EpochWentBack {
            seq: Seq(2),
            epoch: 1,
            previous: 2
        }]
    );
}

// Permanent and transient failures -------------------------------------------------------

#[test]
fn not_member_clears_the_conversation() {
    let mut h = live(Config::default());
    h.stream("c", m("m1", 1));
    h.stream("c", m("m3", 3));
    h.advance(MS(500));
    let f = h.take_fetch().unwrap();
    h.fail(&f, Failure::Permanent(Permanent::Forbidden));
    assert!(h.commands().iter().any(|c| matches!(
        c,
        Command::Clear {
            reason: Permanent::Forbidden,
            ..
        }
    )));
    assert!(h
        .commands()
        .iter()
        .any(|c| matches!(c, Command::CloseStream { .. })));
    assert!(!h.machine().is_subscribed(&"c".into()));
    assert_eq!(h.machine().buffered_total(), 0);
}

#[test]
fn unauthorized_backs_off_reports_and_never_clears() {
    let mut h = live(Config::default());
    h.stream("c", m("m1", 1));
    h.stream("c", m("m3", 3));
    h.advance(MS(500));
    for _ in 0..10 {
        let f = h.take_fetch().unwrap();
        h.fail(&f, Failure::Unauthorized);
        h.advance(Duration::from_secs(31));
    }
    h.close("c", Some(StreamError::Unauthorized));
    assert!(!h
        .commands()
        .iter()
        .any(|c| matches!(c, Command::Clear { .. })));
    assert!(anomalies(&h).contains(&Anomaly::Unauthorized));
    assert!(h.machine().is_subscribed(&"c".into()));
    let f = h.take_fetch().expect("still retrying");
    h.answer(&f, msgs(&[2]));
    assert_eq!(h.delivered_seqs("c"), vec![1, 2, 3]);
}

#[test]
fn rate_limit_waits_at_least_retry_after() {
    let mut h = live(Config::default());
    h.stream("c", m("m1", 1));
    h.stream("c", m("m3", 3));
    h.advance(MS(500));
    let f = h.take_fetch().unwrap();
    h.fail(
        &f,
        Failure::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        },
    );
    h.advance(MS(6_999));
    assert_eq!(h.pending_fetches(), 0);
    h.advance(Duration::from_secs(24));
    assert_eq!(h.pending_fetches(), 1);
}

#[test]
fn invalid_stream_cursor_is_dropped_and_the_gap_is_caught_up_by_fetch() {
    let mut h = live(Config::default());
    let event = StreamEvent::Message {
        cursor: Some(Cursor::new("01ABC")),
        message: m("m1", 1),
    };
    h.event("c", "m1 with cursor", event);
    h.close("c", Some(StreamError::InvalidCursor));
    h.advance(Duration::from_secs(1));
    let reopen = h.commands().iter().rev().find_map(|c| match c {
        Command::OpenStream { cursor, .. } => Some(cursor.clone()),
        _ => None,
    });
    assert_eq!(reopen, Some(None), "reopened without the refused cursor");
    h.open("c");
    assert!(h.take_fetch().is_some());
}

// Ephemeral, stale results, restore ------------------------------------------------------

#[test]
fn ephemeral_messages_are_delivered_at_once_and_never_checkpointed() {
    let mut h = live(Config::default());
    h.stream("c", m("m1", 1));
    h.stream("c", m("e", 0));
    let d = h.deliveries().last().unwrap();
    assert_eq!(d.order, Order::Ephemeral);
    assert!(
        matches!(h.commands().last(), Some(Command::Deliver(_))),
        "no checkpoint follows it"
    );
    let cp = h.checkpoint("c").unwrap();
    assert_eq!(cp.seq, Seq(1));
    assert!(!cp.ids.iter().any(|i| i.as_str() == "e"));
}

#[test]
fn result_for_an_unknown_or_stale_request_is_ignored() {
    let mut h = live(Config::default());
    h.stream("c", m("m1", 1));
    let page = Page::new(RequestId(999), msgs(&[2, 3]));
    h.input("stale page", Input::FetchPage(page));
    assert_eq!(h.delivered_seqs("c"), vec![1]);
}

#[test]
fn restored_machine_continues_without_loss_or_duplicates() {
    let mut h = live(Config::default());
    for s in 1..=5 {
        h.stream("c", m(&format!("m{s}"), s));
    }
    let cp = h.checkpoint("c").unwrap().clone();
    let json = serde_json_roundtrip(&cp);
    let recent = (1..5)
        .map(|s| Known::new(Seq(s), format!("m{s}"), Epoch(1)))
        .collect();

    let mut h2 = Harness::new(Config::default());
    h2.subscribe(
        Subscription::live("c")
            .from_checkpoint(json)
            .with_recent(recent),
    );
    h2.open("c");
    let f = h2.take_fetch().unwrap();
    assert!(
        f.since_seq < Seq(5),
        "the catch-up overlaps what was delivered"
    );
    h2.answer(&f, msgs(&[1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(
        h2.delivered_seqs("c"),
        vec![6, 7],
        "nothing twice, nothing lost"
    );
    h2.assert_invariants();
}

fn serde_json_roundtrip(cp: &Checkpoint) -> Checkpoint {
    let json = serde_json::to_string(cp).unwrap();
    serde_json::from_str(&json).unwrap()
}

// Bad input ----------------------------------------------------------------------------

#[test]
fn bad_config_and_bad_inputs_are_typed_errors() {
    let bad = Config {
        page_limit: 0,
        ..Config::default()
    };
    assert_eq!(
        SyncMachine::new(bad).unwrap_err(),
        ConfigError::PageLimit(0)
    );
    let mut machine = SyncMachine::new(Config::default()).unwrap();
    let err = machine
        .handle(Time::ZERO, Input::Unsubscribe { convo: "x".into() })
        .unwrap_err();
    assert_eq!(err, InputError::UnknownConvo("x".into()));
    machine
        .handle(Time::ZERO, Input::Subscribe(Subscription::live("x")))
        .unwrap();
    let err = machine
        .handle(Time::ZERO, Input::Subscribe(Subscription::live("x")))
        .unwrap_err();
    assert_eq!(err, InputError::AlreadySubscribed("x".into()));
}

#[test]
fn time_going_backwards_counts_as_the_latest_time_seen() {
    let mut h = live(Config::default());
    h.stream("c", m("m1", 1));
    h.stream("c", m("m3", 3));
    h.advance(MS(400));
    let mut machine_time_probe = SyncMachine::new(Config::default()).unwrap();
    machine_time_probe
        .handle(
            Time::from_millis(1000),
            Input::Subscribe(Subscription::catch_up_only("p")),
        )
        .unwrap();
    machine_time_probe
        .handle(Time::from_millis(10), Input::Resume { convo: None })
        .unwrap();
    // The poll deadline is from t = 1000, not t = 10.
    let mut deadlines = Vec::new();
    while let Some(c) = machine_time_probe.poll_command() {
        if let Command::Fetch(f) = c {
            let page = Page::new(f.id, vec![]);
            machine_time_probe
                .handle(Time::from_millis(10), Input::FetchPage(page))
                .unwrap();
        }
        deadlines.push(machine_time_probe.poll_timeout());
    }
    assert!(deadlines
        .iter()
        .flatten()
        .all(|t| *t >= Time::from_millis(1000)));
}
