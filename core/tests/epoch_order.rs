//! The machine against a model of the real `getMessages` (`seq > sinceSeq`, `ORDER BY
//! epoch, seq`, `LIMIT`), one named test per way the promise broke before (issue
//! "Never skip what the server has, never drop what was seen"). Each fails on the machine
//! that took a stalled page for proof of absence.
#![cfg(feature = "testkit")]

use gapless::testkit::Harness;
use gapless::*;
use std::time::Duration;

const MS: fn(u64) -> Duration = Duration::from_millis;

/// The server's log, answering pages as the real server does.
#[derive(Default)]
struct Model {
    rows: Vec<Message>,
    gap_info: bool,
}

impl Model {
    fn add(&mut self, seqs: impl IntoIterator<Item = u64>, epoch: u64) {
        for s in seqs {
            self.rows.push(Message::new(format!("m{s}"), s, epoch));
        }
    }

    fn page(&self, since: Seq, limit: u16) -> Vec<Message> {
        let mut p: Vec<Message> = self
            .rows
            .iter()
            .filter(|m| m.seq > since)
            .cloned()
            .collect();
        p.sort_by_key(|m| (m.epoch, m.seq));
        p.truncate(usize::from(limit.clamp(1, 100)));
        p
    }

    fn gaps(&self) -> Gaps {
        if !self.gap_info {
            return Gaps::Unknown;
        }
        let mut seqs: Vec<u64> = self.rows.iter().map(|m| m.seq.0).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let missing: Vec<Seq> = seqs
            .windows(2)
            .flat_map(|w| (w[0] + 1..w[1]).map(Seq))
            .collect();
        if missing.is_empty() {
            Gaps::Unknown
        } else {
            Gaps::Missing(missing)
        }
    }

    fn holds(&self, seq: u64) -> bool {
        self.rows.iter().any(|m| m.seq.0 == seq)
    }
}

/// Lets `by` pass in steps of 50 ms, answering every fetch from the model at once.
fn run(h: &mut Harness, model: &Model, by: Duration) {
    let end = h.now() + by;
    while h.now() < end {
        while let Some(f) = h.take_fetch() {
            let page = model.page(f.since_seq, f.limit);
            h.answer_with_gaps(&f, page, model.gaps());
        }
        h.advance(MS(50));
    }
    while let Some(f) = h.take_fetch() {
        let page = model.page(f.since_seq, f.limit);
        h.answer_with_gaps(&f, page, model.gaps());
    }
}

/// Seq ranges, inclusive.
type Ranges = Vec<(u64, u64)>;

/// The ranges skipped and the ranges declared unreachable.
fn claims(h: &Harness) -> (Ranges, Ranges) {
    let (mut skipped, mut unreachable) = (Vec::new(), Vec::new());
    for c in h.commands() {
        match c {
            Command::Skipped { from, to, .. } => skipped.push((from.0, to.0)),
            Command::Unreachable { from, to, .. } => unreachable.push((from.0, to.0)),
            _ => {}
        }
    }
    (skipped, unreachable)
}

/// No `Skipped` range covers a seq the model holds.
fn assert_no_false_skip(h: &Harness, model: &Model) {
    for (from, to) in claims(h).0 {
        for s in from..=to {
            assert!(
                !model.holds(s),
                "skipped {s}, which the server holds\n{}",
                h.trace()
            );
        }
    }
}

fn delivered(h: &Harness) -> Vec<u64> {
    let mut d = h.delivered_seqs("c");
    d.sort_unstable();
    d.dedup();
    d
}

/// `sub` restored from a store that delivered m1..=m100 at seqs 1..=100 (epoch 1): the
/// checkpoint at 100 and the 31 ids below it the machine keeps.
fn restored_at_100(sub: Subscription) -> Subscription {
    let recent: Vec<Known> = (69..100)
        .map(|s| Known::new(Seq(s), format!("m{s}"), Epoch(1)))
        .collect();
    let cp = Checkpoint {
        seq: Seq(100),
        ids: ["m100".into()].into_iter().collect(),
        epoch: Some(Epoch(1)),
        ..Checkpoint::default()
    };
    sub.from_checkpoint(cp).with_recent(recent)
}

fn live(config: Config) -> Harness {
    let mut h = Harness::new(config);
    h.subscribe(Subscription::live("c"));
    h.open("c");
    h
}

fn when_position_reached(h: &mut Harness, model: &Model, seq: u64, limit: Duration) -> Duration {
    let start = h.now();
    while h.position("c") < Seq(seq) && h.now().since(start) < limit {
        run(h, model, MS(50));
    }
    h.now().since(start)
}

// 1 ------------------------------------------------------------------------------------

#[test]
fn one_newer_epoch_message_neither_pins_the_catch_up_nor_gets_what_follows_skipped() {
    let mut model = Model::default();
    let mut h = live(Config::default());
    run(&mut h, &model, MS(100));
    for s in 1..=40u64 {
        let epoch = if s == 36 { 2 } else { 1 };
        model.add([s], epoch);
        h.stream("c", Message::new(format!("m{s}"), s, epoch));
        h.advance(MS(10));
    }
    run(&mut h, &model, MS(500));
    h.close("c", Some(StreamError::Transient));
    model.add(41..=150, 1);
    // Reconnect whenever the machine asks.
    for _ in 0..100 {
        run(&mut h, &model, MS(100));
        if h.commands()
            .iter()
            .rev()
            .take(5)
            .any(|c| matches!(c, Command::OpenStream { .. }))
        {
            h.open("c");
            break;
        }
    }
    run(&mut h, &model, Duration::from_secs(5));
    for s in 151..=155 {
        model.add([s], 1);
        h.stream("c", Message::new(format!("m{s}"), s, 1));
    }
    run(&mut h, &model, Duration::from_secs(5));
    assert_eq!(
        delivered(&h),
        (1..=155).collect::<Vec<_>>(),
        "{}",
        h.trace()
    );
    assert_eq!(claims(&h), (vec![], vec![]));
    h.assert_invariants();
}

// 2 ------------------------------------------------------------------------------------

fn hidden_newer_epoch(gap_info: bool, hole: bool) -> (Harness, Model) {
    // 1..=10 and 21..=140 at epoch 1 (a member still at epoch 1), 11..=20 at epoch 2:
    // every `sinceSeq` page below 20 is filled by epoch-1 messages first.
    let mut model = Model {
        gap_info,
        ..Model::default()
    };
    model.add(1..=10, 1);
    if !hole {
        model.add(11..=20, 2);
    }
    model.add(21..=140, 1);
    let mut h = Harness::new(Config::default());
    h.subscribe(Subscription::catch_up_only("c"));
    run(&mut h, &model, Duration::from_secs(20));
    (h, model)
}

#[test]
fn seqs_no_page_can_show_are_unreachable_never_skipped_and_delivered_when_they_turn_up() {
    let (mut h, model) = hidden_newer_epoch(false, false);
    assert_no_false_skip(&h, &model);
    assert_eq!(claims(&h), (vec![], vec![(11, 20)]), "{}", h.trace());
    assert_eq!(delivered(&h), (1..=10).chain(21..=140).collect::<Vec<_>>());
    // One of them turns up after all (here: on a page once the others expired): it is
    // delivered, flagged late.
    let mut model = model;
    model.rows.retain(|m| m.seq.0 <= 20);
    run(&mut h, &model, Duration::from_secs(300));
    let late: Vec<u64> = h
        .deliveries()
        .iter()
        .filter(|d| d.order == Order::Late)
        .map(|d| d.message.seq.0)
        .collect();
    assert_eq!(late, (11..=20).collect::<Vec<_>>(), "{}", h.trace());
    h.assert_invariants();
}

#[test]
fn gap_info_proves_absence_where_pages_cannot() {
    let (h, model) = hidden_newer_epoch(true, true);
    assert_no_false_skip(&h, &model);
    assert_eq!(claims(&h), (vec![(11, 20)], vec![]), "{}", h.trace());
    // And an omission from gapInfo is never taken for absence.
    let (h, model) = hidden_newer_epoch(true, false);
    assert_no_false_skip(&h, &model);
    assert_eq!(claims(&h), (vec![], vec![(11, 20)]));
    h.assert_invariants();
}

// 3 and 10 ------------------------------------------------------------------------------

#[test]
fn after_a_gap_is_settled_inside_a_long_catch_up_paging_goes_on_at_once() {
    for gap_info in [false, true] {
        let mut model = Model {
            gap_info,
            ..Model::default()
        };
        model.add((1..=400).filter(|s| *s != 150), 1);
        let mut h = Harness::new(Config::default());
        h.subscribe(restored_at_100(Subscription::catch_up_only("c")));
        let took = when_position_reached(&mut h, &model, 400, Duration::from_secs(130));
        assert!(took < Duration::from_secs(10), "{took:?}\n{}", h.trace());
        let expected = if gap_info {
            (vec![(150, 150)], vec![])
        } else {
            // A busy conversation: only a page holding nothing but later seqs could show
            // 150, and every such page is full of them.
            (vec![], vec![(150, 150)])
        };
        assert_eq!(claims(&h), expected, "{}", h.trace());
        h.assert_invariants();
    }
}

#[test]
fn expired_history_at_the_first_connect_does_not_wait_for_a_poll() {
    let mut model = Model::default();
    model.add(51..=400, 1);
    for live in [false, true] {
        let mut h = Harness::new(Config::default());
        let sub = if live {
            Subscription::live("c")
        } else {
            Subscription::catch_up_only("c")
        };
        h.subscribe(sub);
        if live {
            h.open("c");
        }
        let took = when_position_reached(&mut h, &model, 400, Duration::from_secs(130));
        assert!(took < Duration::from_secs(10), "{took:?}\n{}", h.trace());
        assert_no_false_skip(&h, &model);
        h.assert_invariants();
    }
}

#[test]
fn a_hole_in_a_busy_conversation_costs_one_grace_and_the_tail_is_fetched_at_once() {
    let config = Config {
        page_limit: 4,
        max_page_limit: 10,
        ..Config::default()
    };
    let mut model = Model::default();
    model.add([1], 1);
    model.add(3..=40, 1);
    let mut h = live(config);
    run(&mut h, &model, MS(100));
    // The stream shows 1 and 12..=20, then dies quietly: 21..=40 only the server has.
    h.stream("c", Message::new("m1", 1, 1));
    for s in 12..=20 {
        h.stream("c", Message::new(format!("m{s}"), s, 1));
    }
    let took = when_position_reached(&mut h, &model, 40, Duration::from_secs(130));
    assert!(took < Duration::from_secs(6), "{took:?}\n{}", h.trace());
    assert_eq!(
        delivered(&h),
        [1].into_iter().chain(3..=40).collect::<Vec<_>>()
    );
    assert_no_false_skip(&h, &model);
    h.assert_invariants();
}

// 4 ------------------------------------------------------------------------------------

#[test]
fn page_limits_too_small_to_read_a_shared_seq_whole_are_rejected() {
    for max in [1, 2, 9] {
        let config = Config {
            page_limit: 1,
            max_page_limit: max,
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::MaxPageLimit { .. })
        ));
    }
    let config = Config {
        page_limit: 1,
        max_page_limit: MIN_MAX_PAGE_LIMIT,
        ..Config::default()
    };
    assert!(config.validate().is_ok());
}

#[test]
fn the_smallest_accepted_limits_lose_nothing() {
    let config = Config {
        page_limit: 1,
        max_page_limit: MIN_MAX_PAGE_LIMIT,
        ..Config::default()
    };
    // A gap, a seq shared by three messages, then a message lost on the stream.
    let mut model = Model::default();
    model.add(1..=3, 1);
    model.rows.push(Message::new("m3b", 3, 1));
    model.rows.push(Message::new("m3c", 3, 1));
    model.add(4..=6, 1);
    let mut h = live(config.clone());
    run(&mut h, &model, MS(100));
    h.stream("c", Message::new("m1", 1, 1));
    h.stream("c", Message::new("m6", 6, 1));
    run(&mut h, &model, Duration::from_secs(20));
    let mut ids: Vec<&str> = h
        .deliveries()
        .iter()
        .map(|d| d.message.id.as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["m1", "m2", "m3", "m3b", "m3c", "m4", "m5", "m6"],
        "{}",
        h.trace()
    );
    assert_eq!(claims(&h), (vec![], vec![]));
    // A catch-up-only conversation passes seq 1.
    let mut h = Harness::new(config);
    h.subscribe(Subscription::catch_up_only("c"));
    run(&mut h, &model, Duration::from_secs(20));
    assert_eq!(h.position("c"), Seq(6), "{}", h.trace());
    h.assert_invariants();
}

// 5 ------------------------------------------------------------------------------------

#[test]
fn a_message_a_resumed_stream_filters_is_found_within_quiet_catch_up() {
    let mut model = Model::default();
    model.add(1..=3, 1);
    let mut h = live(Config::default());
    run(&mut h, &model, MS(200));
    // The stream gave a cursor...
    let event = StreamEvent::Message {
        cursor: Some(Cursor::from("01M8DMFB68DYMWCZ1FM6FAZXBA")),
        message: Message::new("m1", 1, 1),
    };
    h.event("c", "stream m1 with a cursor", event);
    // ... and is reopened with it, which the server takes as from the future: it drops
    // live events until its first keepalive (recording 77). Seq 4 is sent 2 s later.
    h.close("c", Some(StreamError::Transient));
    while !h
        .commands()
        .iter()
        .rev()
        .take(3)
        .any(|c| matches!(c, Command::OpenStream { .. }))
    {
        run(&mut h, &model, MS(50));
    }
    h.open("c");
    run(&mut h, &model, Duration::from_secs(2));
    model.add([4], 1);
    let took = when_position_reached(&mut h, &model, 4, Duration::from_secs(130));
    let quiet = Config::default().quiet_catch_up.unwrap();
    assert!(took <= quiet, "{took:?}\n{}", h.trace());
    h.assert_invariants();
}

// 6 ------------------------------------------------------------------------------------

#[test]
fn a_new_id_below_the_dedup_window_is_delivered_late_for_the_store_to_decide() {
    let mut h = Harness::new(Config::default());
    h.subscribe(restored_at_100(Subscription::live("c")));
    h.open("c");
    h.stream("c", Message::new("new-at-10", 10, 1));
    let d = h.deliveries().last().expect("delivered, not dropped");
    assert_eq!((d.message.seq, d.order), (Seq(10), Order::Late));
    assert_eq!(
        h.checkpoint("c").map(|cp| cp.seq),
        Some(Seq(100)),
        "the checkpoint does not move"
    );
    // The same event again is not delivered twice by the machine.
    h.stream("c", Message::new("new-at-10", 10, 1));
    assert_eq!(h.deliveries().len(), 1);
    h.assert_invariants();
}

#[test]
fn a_message_committing_after_its_seq_was_skipped_is_delivered_late() {
    let mut model = Model::default();
    model.add([1, 2, 4], 1);
    let mut h = live(Config::default());
    run(&mut h, &model, MS(100));
    h.stream("c", Message::new("m1", 1, 1));
    h.stream("c", Message::new("m2", 2, 1));
    h.stream("c", Message::new("m4", 4, 1));
    run(&mut h, &model, Duration::from_secs(5));
    assert_eq!(claims(&h).0, vec![(3, 3)], "{}", h.trace());
    // Seq 3 commits 5 s late and comes on the stream.
    model.add([3], 1);
    h.stream("c", Message::new("m3", 3, 1));
    let d = h.deliveries().last().unwrap();
    assert_eq!((d.message.seq, d.order), (Seq(3), Order::Late));
    h.assert_invariants();
}

// 7 and 8 -------------------------------------------------------------------------------

#[test]
fn an_id_is_delivered_at_most_once_even_at_another_seq() {
    let mut h = live(Config::default());
    let model = Model::default();
    run(&mut h, &model, MS(10));
    for s in 1..=3 {
        h.stream("c", Message::new(format!("m{s}"), s, 1));
    }
    h.stream("c", Message::new("m3", 4, 1));
    assert_eq!(h.delivered_seqs("c"), vec![1, 2, 3]);
    assert!(h.commands().iter().any(|c| matches!(
        c,
        Command::Anomaly {
            anomaly: Anomaly::IdConflict {
                seq: Seq(4),
                delivered_at: Seq(3),
                ..
            },
            ..
        }
    )));
    h.assert_invariants();
}

#[test]
fn a_repeated_ephemeral_event_is_delivered_once() {
    let mut h = live(Config::default());
    run(&mut h, &Model::default(), MS(10));
    h.stream("c", Message::new("typing-1", 0, 1));
    h.stream("c", Message::new("typing-1", 0, 1));
    h.stream("c", Message::new("typing-2", 0, 1));
    let ids: Vec<&str> = h
        .deliveries()
        .iter()
        .map(|d| d.message.id.as_str())
        .collect();
    assert_eq!(ids, ["typing-1", "typing-2"]);
}

// 9 ------------------------------------------------------------------------------------

#[test]
fn a_companion_whose_event_was_lost_far_behind_the_checkpoint_is_found_by_the_recheck() {
    let mut model = Model::default();
    let mut h = live(Config::default());
    run(&mut h, &model, MS(100));
    // A burst of 120 on the stream; seq 10 has a second message whose event is lost.
    model.rows.push(Message::new("m10b", 10, 1));
    for s in 1..=120 {
        model.add([s], 1);
        h.stream("c", Message::new(format!("m{s}"), s, 1));
        h.advance(MS(20));
    }
    // Once the stream has gone quiet, the catch-up reads again from the first seq no
    // page confirmed: 110 seqs back, far beyond catch_up_overlap.
    run(&mut h, &model, Duration::from_secs(20));
    assert!(
        h.deliveries()
            .iter()
            .any(|d| d.message.id.as_str() == "m10b"),
        "{}",
        h.trace()
    );
    h.assert_invariants();
}
