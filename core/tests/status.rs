//! Conversation status for applications: emitted on change, queried at any time.
#![cfg(feature = "testkit")]

use gapless::testkit::Harness;
use gapless::*;
use std::time::Duration;

fn statuses(h: &Harness) -> Vec<String> {
    h.commands()
        .iter()
        .filter_map(|c| match c {
            Command::Status { status, .. } => Some(match status {
                Status::CaughtUp { .. } => "caught up".to_string(),
                Status::CatchingUp { .. } => "catching up".to_string(),
                Status::Retrying { reason, .. } => format!("retrying: {reason:?}"),
                _ => "other".to_string(),
            }),
            _ => None,
        })
        .collect()
}

#[test]
fn status_follows_a_conversation_through_connect_gap_refusal_and_recovery() {
    let mut h = Harness::new(Config::default());
    h.subscribe(Subscription::live("c"));
    assert_eq!(statuses(&h), ["catching up"], "connecting");
    h.open("c");
    let f = h.take_fetch().unwrap();
    h.answer(&f, vec![]);
    assert_eq!(statuses(&h).last().unwrap(), "caught up");
    // A gap.
    h.stream("c", Message::new("m1", 1, 1));
    h.stream("c", Message::new("m3", 3, 1));
    assert_eq!(statuses(&h).last().unwrap(), "catching up");
    h.advance(Duration::from_millis(500));
    // The fetch for it is refused: 401, then the server is unreachable.
    let f = h.take_fetch().unwrap();
    h.fail(&f, Failure::Unauthorized);
    assert_eq!(statuses(&h).last().unwrap(), "retrying: Unauthorized");
    let Some(Status::Retrying { until, .. }) = h.machine().status(&"c".into()) else {
        panic!("{:?}", h.machine().status(&"c".into()))
    };
    assert!(until > h.now());
    h.advance(Duration::from_secs(2));
    let f = h.take_fetch().unwrap();
    h.fail(&f, Failure::Transient);
    assert_eq!(statuses(&h).last().unwrap(), "retrying: Unreachable");
    // Recovery.
    h.advance(Duration::from_secs(4));
    let f = h.take_fetch().unwrap();
    h.answer(
        &f,
        vec![
            Message::new("m1", 1, 1),
            Message::new("m2", 2, 1),
            Message::new("m3", 3, 1),
        ],
    );
    assert_eq!(statuses(&h).last().unwrap(), "caught up");
    assert_eq!(
        h.machine().status(&"c".into()),
        Some(Status::CaughtUp { seq: Seq(3) })
    );
    // Not one status per message: in-order messages change nothing.
    let n = statuses(&h).len();
    for s in 4..=50 {
        h.stream("c", Message::new(format!("m{s}"), s, 1));
    }
    assert_eq!(statuses(&h).len(), n);
    // A dropped stream that cannot reconnect says so.
    h.close("c", Some(StreamError::Transient));
    assert_eq!(statuses(&h).last().unwrap(), "retrying: Unreachable");
    assert_eq!(h.machine().caught_up(), 0);
    h.assert_invariants();
}

#[test]
fn anomalies_read_as_words() {
    let conflict = Anomaly::IdConflict {
        id: "m3".into(),
        seq: Seq(4),
        delivered_at: Seq(3),
    };
    assert_eq!(
        conflict.to_string(),
        "message m3 came again at seq 4, already delivered at seq 3; not delivered twice"
    );
    let back = Anomaly::EpochWentBack {
        seq: Seq(15),
        epoch: 0,
        previous: 1,
    };
    assert!(back
        .to_string()
        .starts_with("seq 15 is at epoch 0, below the 1 before it"));
}

fn connections(h: &Harness) -> Vec<String> {
    h.commands()
        .iter()
        .filter_map(|c| match c {
            Command::Connection(c) => Some(c.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_connection_counts_conversations_caught_up_and_goes_offline_when_none_reaches_the_server() {
    let mut h = Harness::new(Config::default());
    h.subscribe(Subscription::catch_up_only("a"));
    h.subscribe(Subscription::catch_up_only("b"));
    assert_eq!(
        h.machine().connection(),
        Connection::CatchingUp {
            behind: 2,
            total: 2
        }
    );
    let f = h.take_fetch().unwrap();
    h.answer(&f, vec![]);
    assert_eq!(
        connections(&h).last().unwrap(),
        "catching up, 1 of 2 caught up",
        "progress of a cold start"
    );
    let f = h.take_fetch().unwrap();
    h.answer(&f, vec![]);
    assert_eq!(h.machine().connection(), Connection::Online { total: 2 });
    // The server goes away: every poll fails.
    h.input("resume all", Input::Resume { convo: None });
    while let Some(f) = h.take_fetch() {
        h.fail(&f, Failure::Transient);
    }
    assert_eq!(
        h.machine().connection(),
        Connection::Offline {
            reason: Trouble::Unreachable
        }
    );
    assert_eq!(
        connections(&h).last().unwrap(),
        "offline (the server cannot be reached)"
    );
    // One comes back; the other fails again.
    h.advance(Duration::from_secs(3));
    let f = h.take_fetch().unwrap();
    h.answer(&f, vec![]);
    if let Some(other) = h.take_fetch() {
        h.fail(&other, Failure::Transient);
    }
    assert!(
        matches!(
            h.machine().connection(),
            Connection::Degraded {
                retrying: 1,
                total: 2,
                ..
            }
        ),
        "{}",
        h.machine().connection()
    );
    h.input(
        "unsubscribe the other",
        Input::Unsubscribe {
            convo: if f.convo.as_str() == "a" {
                "b".into()
            } else {
                "a".into()
            },
        },
    );
    assert_eq!(h.machine().connection(), Connection::Online { total: 1 });
    h.input("unsubscribe", Input::Unsubscribe { convo: f.convo });
    assert_eq!(connections(&h).last().unwrap(), "no conversation");
}
