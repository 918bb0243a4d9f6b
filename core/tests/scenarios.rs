//! Snapshots of the command traces of named scenarios, times as offsets from the start.
//! `<` lines are what the network did, `>` lines what the machine commanded.
#![cfg(feature = "testkit")]

use gapless::testkit::Harness;
use gapless::*;
use std::time::Duration;

fn m(id: &str, seq: u64) -> Message {
    Message::new(id, seq, 1)
}

fn live_convo() -> Harness {
    let mut h = Harness::new(Config::default());
    h.subscribe(Subscription::live("c"));
    h.open("c");
    let f = h.take_fetch().unwrap();
    h.answer(&f, vec![]);
    h
}

#[test]
fn seed_scenario_stream_1_2_5_6_is_completed_by_one_fetch() {
    let mut h = live_convo();
    for s in [1, 2, 5, 6] {
        h.stream("c", m(&format!("m{s}"), s));
    }
    h.advance(Duration::from_millis(500));
    let f = h.take_fetch().unwrap();
    h.answer(&f, vec![m("m2", 2), m("m3", 3), m("m4", 4)]);
    h.assert_invariants();
    insta::assert_snapshot!(h.trace());
}

#[test]
fn gap_filled_by_the_stream_before_gap_wait_needs_no_fetch() {
    let mut h = live_convo();
    h.stream("c", m("m1", 1));
    h.stream("c", m("m3", 3));
    h.advance(Duration::from_millis(200));
    h.stream("c", m("m2", 2));
    h.advance(Duration::from_secs(2));
    h.assert_invariants();
    insta::assert_snapshot!(h.trace());
}

#[test]
fn reconnect_with_cursor_is_followed_by_a_catch_up() {
    let mut h = live_convo();
    let event = StreamEvent::Message {
        cursor: Some(Cursor::new("01M8DMCJCHRRCTEERQSMEXKXW3")),
        message: m("m1", 1),
    };
    h.event(
        "c",
        "stream c seq=1 cursor=01M8DMCJCHRRCTEERQSMEXKXW3",
        event,
    );
    h.close("c", Some(StreamError::Transient));
    h.advance(Duration::from_secs(1));
    h.open("c");
    let f = h.take_fetch().unwrap();
    // Sent while we were away: the server does not replay app messages on resume.
    h.answer(&f, vec![m("m1", 1), m("m2", 2), m("m3", 3)]);
    h.assert_invariants();
    insta::assert_snapshot!(h.trace());
}

#[test]
fn confirmed_hole_is_skipped() {
    let mut h = live_convo();
    h.stream("c", m("m1", 1));
    h.stream("c", m("m4", 4));
    h.advance(Duration::from_millis(500));
    let f = h.take_fetch().unwrap();
    h.answer(&f, vec![m("m1", 1), m("m2", 2)]);
    h.advance(Duration::from_secs(2));
    let f = h.take_fetch().unwrap();
    h.answer(&f, vec![m("m2", 2)]);
    h.assert_invariants();
    insta::assert_snapshot!(h.trace());
}

#[test]
fn buffer_overflow_is_recovered_by_a_fetch() {
    let mut h = Harness::new(Config {
        max_buffered: 2,
        max_buffered_total: 2,
        ..Config::default()
    });
    h.subscribe(Subscription::live("c"));
    h.open("c");
    let f = h.take_fetch().unwrap();
    h.answer(&f, vec![]);
    h.stream("c", m("m1", 1));
    for s in 3..=6 {
        h.stream("c", m(&format!("m{s}"), s));
    }
    h.advance(Duration::from_millis(500));
    let f = h.take_fetch().unwrap();
    h.answer(&f, (1..=6).map(|s| m(&format!("m{s}"), s)).collect());
    h.assert_invariants();
    insta::assert_snapshot!(h.trace());
}

#[test]
fn permanent_not_member_clears_the_conversation() {
    let mut h = live_convo();
    h.stream("c", m("m1", 1));
    h.stream("c", m("m3", 3));
    h.advance(Duration::from_millis(500));
    let f = h.take_fetch().unwrap();
    h.fail(&f, Failure::Permanent(Permanent::NotMember));
    h.assert_invariants();
    insta::assert_snapshot!(h.trace());
}

#[test]
fn second_message_sharing_a_delivered_seq_is_found_by_the_overlapping_fetch() {
    let mut h = live_convo();
    for s in 1..=3 {
        h.stream("c", m(&format!("m{s}"), s));
    }
    // The real server gave seq 3 twice (MAX(seq)+1 race); the stream lost the second.
    h.close("c", Some(StreamError::Transient));
    h.advance(Duration::from_secs(1));
    h.open("c");
    let f = h.take_fetch().unwrap();
    h.answer(&f, vec![m("m2", 2), m("m3", 3), m("m3b", 3), m("m4", 4)]);
    h.assert_invariants();
    insta::assert_snapshot!(h.trace());
}
