//! One stream for many conversations (`Config::shared_stream`): the Catbird `mlsChat`
//! WebSocket with a global ticket. Each test names a behaviour.
#![cfg(feature = "testkit")]

use gapless::testkit::Harness;
use gapless::*;
use std::time::Duration;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn config() -> Config {
    Config {
        shared_stream: true,
        ..Config::default()
    }
}

fn opens(h: &Harness) -> Vec<(StreamId, Vec<String>)> {
    h.commands()
        .iter()
        .filter_map(|c| match c {
            Command::OpenShared { stream, convos } => {
                Some((*stream, convos.iter().map(|c| c.to_string()).collect()))
            }
            _ => None,
        })
        .collect()
}

fn closes(h: &Harness) -> usize {
    h.commands()
        .iter()
        .filter(|c| matches!(c, Command::CloseShared { .. }))
        .count()
}

fn answer_all(h: &mut Harness) -> Vec<FetchRequest> {
    let mut asked = Vec::new();
    while let Some(f) = h.take_fetch() {
        h.answer(&f, vec![]);
        asked.push(f);
    }
    asked
}

fn event(h: &mut Harness, stream: StreamId, convo: Option<&str>, event: StreamEvent) {
    let input = Input::SharedEvent {
        stream,
        convo: convo.map(ConvoId::from),
        event,
    };
    h.input("shared event", input);
}

fn message(id: &str, seq: u64) -> StreamEvent {
    StreamEvent::Message {
        cursor: Some(Cursor::from("01ZZ")),
        message: Message::new(id, seq, 1),
    }
}

#[test]
fn live_conversations_share_one_stream_and_joins_close_together_cost_one_reconnect() {
    let mut h = Harness::new(config());
    h.subscribe(Subscription::live("a"));
    assert_eq!(opens(&h), vec![(StreamId(0), vec!["a".to_string()])]);
    h.subscribe(Subscription::live("b"));
    h.subscribe(Subscription::live("c"));
    // No OpenStream per conversation, ever.
    assert!(!h
        .commands()
        .iter()
        .any(|c| matches!(c, Command::OpenStream { .. })));
    h.advance(MS(249));
    assert_eq!(
        opens(&h).len(),
        1,
        "joins wait join_delay to be covered together"
    );
    h.advance(MS(1));
    let all = opens(&h);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].1, ["a", "b", "c"]);
    assert_eq!(
        closes(&h),
        1,
        "the connection that did not cover them is closed"
    );
    h.assert_invariants();
}

#[test]
fn every_conversation_catches_up_when_the_shared_stream_opens_and_events_are_routed_by_conversation(
) {
    let mut h = Harness::new(config());
    h.subscribe(Subscription::live("a"));
    h.subscribe(Subscription::live("b"));
    answer_all(&mut h); // the catch-up each does at once on joining
    h.advance(MS(250));
    let (stream, _) = opens(&h).last().cloned().unwrap();
    h.input("opened", Input::SharedOpened { stream });
    let asked: Vec<String> = answer_all(&mut h)
        .into_iter()
        .map(|f| f.convo.to_string())
        .collect();
    assert_eq!(
        asked,
        ["a", "b"],
        "nothing is replayed on connect: both catch up"
    );
    event(&mut h, stream, Some("b"), message("b1", 1));
    event(&mut h, stream, Some("a"), message("a1", 1));
    // A conversation of the account that is not subscribed here: ignored, not an error.
    event(&mut h, stream, Some("other"), message("x1", 1));
    assert_eq!(h.delivered_seqs("a"), [1]);
    assert_eq!(h.delivered_seqs("b"), [1]);
    assert_eq!(h.deliveries().len(), 2);
    h.assert_invariants();
}

#[test]
fn a_dropped_shared_stream_backs_off_reconnects_and_everyone_catches_up_again() {
    let mut h = Harness::new(config());
    h.subscribe(Subscription::live("a"));
    h.subscribe(Subscription::live("b"));
    h.advance(MS(250));
    answer_all(&mut h);
    let (stream, _) = opens(&h).last().cloned().unwrap();
    h.input("opened", Input::SharedOpened { stream });
    answer_all(&mut h);
    let before = opens(&h).len();
    let error = Some(StreamError::Transient);
    h.input("closed", Input::SharedClosed { stream, error });
    h.advance(Duration::from_secs(2));
    assert_eq!(opens(&h).len(), before + 1, "reopened after a backoff");
    let (stream, convos) = opens(&h).last().cloned().unwrap();
    assert_eq!(convos, ["a", "b"]);
    h.input("opened", Input::SharedOpened { stream });
    assert_eq!(answer_all(&mut h).len(), 2);
    h.assert_invariants();
}

#[test]
fn a_silent_shared_stream_is_replaced_and_pings_keep_it() {
    let mut h = Harness::new(config());
    h.subscribe(Subscription::live("a"));
    let (stream, _) = opens(&h).last().cloned().unwrap();
    h.input("opened", Input::SharedOpened { stream });
    answer_all(&mut h);
    // The server pings every 30 s: within idle_timeout (45 s).
    for _ in 0..4 {
        h.advance(Duration::from_secs(30));
        answer_all(&mut h);
        event(&mut h, stream, None, StreamEvent::Keepalive);
    }
    assert_eq!(closes(&h), 0);
    h.advance(Duration::from_secs(45));
    assert_eq!(closes(&h), 1, "silent for idle_timeout: closed");
    h.advance(Duration::from_secs(1));
    assert_eq!(opens(&h).len(), 2, "and reopened");
}

#[test]
fn a_message_lost_on_the_shared_stream_is_fetched_after_gap_wait() {
    let mut h = Harness::new(config());
    h.subscribe(Subscription::live("a"));
    let (stream, _) = opens(&h).last().cloned().unwrap();
    h.input("opened", Input::SharedOpened { stream });
    answer_all(&mut h);
    event(&mut h, stream, Some("a"), message("a1", 1));
    event(&mut h, stream, Some("a"), message("a3", 3)); // a2 silently dropped (slow consumer)
    h.advance(MS(500));
    let f = h.take_fetch().expect("the gap is fetched");
    assert_eq!(f.since_seq, Seq(0));
    h.answer(
        &f,
        vec![
            Message::new("a1", 1, 1),
            Message::new("a2", 2, 1),
            Message::new("a3", 3, 1),
        ],
    );
    assert_eq!(h.delivered_seqs("a"), [1, 2, 3]);
    h.assert_invariants();
}

#[test]
fn the_last_member_leaving_closes_the_shared_stream() {
    let mut h = Harness::new(config());
    h.subscribe(Subscription::live("a"));
    h.subscribe(Subscription::live("b"));
    h.advance(MS(250));
    h.input("unsubscribe", Input::Unsubscribe { convo: "a".into() });
    assert_eq!(closes(&h), 1, "only the reconnect that covered b so far");
    h.input("unsubscribe", Input::Unsubscribe { convo: "b".into() });
    assert_eq!(closes(&h), 2);
    h.advance(Duration::from_secs(600));
    assert_eq!(opens(&h).len(), 2, "nothing reopens with nobody on it");
}
