//! The outbox in SQLite: stored before the first send, every state change kept, and what
//! is not confirmed given back after a reopen — checked by reopening after each state.

use gapless::{
    Checkpoint, ConvoId, Delivery, Message, Order, OutboxState, Outgoing, Refusal, Seq, Time,
    Trouble,
};
use gapless_adapter::{Store, Write};
use gapless_sqlite::SqliteStore;

const A: &str = "01M8DMCHZAC3VJJBF6C3H3CEJQ";
const B: &str = "01M8DMCJC7VHTJYHSXCAPR4Z8X";

fn out(msg_id: &str) -> Outgoing {
    Outgoing::new("c", msg_id, msg_id.as_bytes().repeat(20)[..512].to_vec(), 3)
}

fn state(msg_id: &str, state: OutboxState) -> Write {
    Write::Outbox {
        convo: "c".into(),
        msg_id: msg_id.into(),
        state,
    }
}

fn reopen(path: &std::path::Path) -> SqliteStore {
    SqliteStore::open(path).unwrap()
}

#[test]
fn the_outbox_survives_a_reopen_after_every_state_and_leaves_once_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let mut store = reopen(&path);
    assert!(store.outbox().unwrap().is_empty());

    // Enqueued (and queued): given back whole, in enqueue order.
    store
        .commit(&[
            Write::Enqueued(out(A)),
            state(A, OutboxState::Queued),
            Write::Enqueued(out(B)),
            state(B, OutboxState::Queued),
        ])
        .unwrap();
    drop(store);
    let mut store = reopen(&path);
    assert_eq!(store.outbox().unwrap(), vec![out(A), out(B)]);
    // Enqueued again (a restart's re-enqueue): idempotent, order kept.
    store.commit(&[Write::Enqueued(out(A))]).unwrap();
    assert_eq!(store.outbox().unwrap(), vec![out(A), out(B)]);

    // Sending, retrying, failed: still to send (a restart sends it again, same msgId).
    for s in [
        OutboxState::Sending,
        OutboxState::Retrying {
            until: Time::from_millis(5),
            why: Trouble::Unreachable,
        },
        OutboxState::Failed {
            why: Refusal::Forbidden,
        },
    ] {
        store.commit(&[state(A, s)]).unwrap();
        drop(store);
        store = reopen(&path);
        assert_eq!(store.outbox().unwrap()[0], out(A));
    }
    let entries = store.outbox_entries().unwrap();
    assert_eq!(entries[0].state, "failed");
    assert!(entries[0].detail.as_deref().unwrap().contains("403"));

    // Sent: given back with its answer, so a restart waits for its delivery.
    let sent = OutboxState::Sent {
        seq: Seq(7),
        message_id: "uuid-7".into(),
    };
    store.commit(&[state(A, sent)]).unwrap();
    drop(store);
    let mut store = reopen(&path);
    let pending = store.outbox().unwrap();
    let answer = pending[0].sent.clone().expect("the answer is kept");
    assert_eq!((answer.seq, answer.message_id.as_str()), (Seq(7), "uuid-7"));
    assert_eq!(store.outbox_entries().unwrap()[0].state, "sent");

    // Its delivery stored (a crash before the confirmation was written): not given back.
    let mut echo = Message::new("uuid-7", 7, 3);
    echo.payload = out(A).payload;
    let delivery = Delivery {
        convo: ConvoId::from("c"),
        message: echo,
        order: Order::InOrder,
    };
    store
        .commit(&[
            Write::Message {
                delivery,
                received_at_ms: 1,
            },
            Write::Checkpoint {
                convo: ConvoId::from("c"),
                checkpoint: Checkpoint {
                    seq: Seq(7),
                    ..Checkpoint::default()
                },
            },
        ])
        .unwrap();
    assert_eq!(store.outbox().unwrap(), vec![out(B)]);

    // Confirmed and dropped: gone for good.
    let confirmed = OutboxState::Confirmed {
        seq: Seq(7),
        message_id: "uuid-7".into(),
    };
    store
        .commit(&[state(A, confirmed), state(B, OutboxState::Dropped)])
        .unwrap();
    drop(store);
    let mut store = reopen(&path);
    assert!(store.outbox().unwrap().is_empty());
    assert!(store.outbox_entries().unwrap().is_empty());
}

#[test]
fn an_ephemeral_message_leaves_the_outbox_once_sent() {
    let mut store = SqliteStore::open_in_memory().unwrap();
    store
        .commit(&[Write::Enqueued(out(A).ephemeral())])
        .unwrap();
    assert!(store.outbox().unwrap()[0].ephemeral);
    let sent = OutboxState::Sent {
        seq: Seq::ZERO,
        message_id: A.into(),
    };
    store.commit(&[state(A, sent)]).unwrap();
    assert!(store.outbox().unwrap().is_empty());
}

#[test]
fn an_enqueue_in_a_failed_batch_is_not_stored() {
    let mut store = SqliteStore::open_in_memory().unwrap();
    store.debug_execute("CREATE TRIGGER no_b BEFORE INSERT ON outbox WHEN NEW.msg_id = '01M8DMCJC7VHTJYHSXCAPR4Z8X' BEGIN SELECT RAISE(ABORT, 'no'); END;").unwrap();
    let batch = [Write::Enqueued(out(A)), Write::Enqueued(out(B))];
    assert!(store.commit(&batch).is_err());
    assert!(store.outbox().unwrap().is_empty(), "all or nothing");
}
