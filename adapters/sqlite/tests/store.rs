use gapless::{Checkpoint, ConvoId, Delivery, Message, Order, Permanent, Seq};
use gapless_adapter::{Store, Write};
use gapless_sqlite::SqliteStore;

fn cp(seq: u64, ids: &[&str]) -> Checkpoint {
    Checkpoint {
        seq: Seq(seq),
        ids: ids.iter().map(|i| (*i).into()).collect(),
        ..Checkpoint::default()
    }
}

fn message(convo: &str, id: &str, seq: u64, order: Order) -> Write {
    let mut message = Message::new(id, seq, 1);
    message.payload = id.as_bytes().to_vec();
    Write::Message {
        delivery: Delivery {
            convo: ConvoId::from(convo),
            message,
            order,
        },
        received_at_ms: 1,
    }
}

/// A delivery and the checkpoint the machine hands out after it.
fn deliver(convo: &str, id: &str, seq: u64, order: Order, checkpoint: Checkpoint) -> [Write; 2] {
    [
        message(convo, id, seq, order),
        Write::Checkpoint {
            convo: ConvoId::from(convo),
            checkpoint,
        },
    ]
}

fn ids(store: &SqliteStore) -> Vec<(String, u64, String)> {
    store
        .messages()
        .unwrap()
        .into_iter()
        .map(|m| (m.convo, m.seq, m.id))
        .collect()
}

#[test]
fn a_batch_is_stored_idempotently_by_id_with_shared_seqs_and_without_ephemerals() {
    let mut store = SqliteStore::open_in_memory().unwrap();
    let batch = [
        deliver("c", "a", 1, Order::InOrder, cp(1, &["a"])),
        deliver("c", "b", 2, Order::InOrder, cp(2, &["b"])),
        deliver("c", "b2", 2, Order::SharesSeq, cp(2, &["b", "b2"])),
    ]
    .concat();
    store.commit(&batch).unwrap();
    store
        .commit(&[message("c", "eph", 0, Order::Ephemeral)])
        .unwrap();
    // Redelivered: a no-op, not an error, and not a second row.
    store.commit(&batch[..4]).unwrap();
    assert_eq!(
        ids(&store),
        vec![
            ("c".into(), 1, "a".into()),
            ("c".into(), 2, "b".into()),
            ("c".into(), 2, "b2".into())
        ]
    );
    assert_eq!(store.payload("c", "b2").unwrap().unwrap(), b"b2");
    // The checkpoint is the last one written (a redelivery of older ones moved it back,
    // which is what the machine asked: it is what it will continue from).
    let summary = &store.summaries().unwrap()[0];
    assert_eq!(summary.messages, 3);
    assert_eq!(summary.seq_range, Some((1, 2)));
}

#[test]
fn skips_clears_and_checkpoints_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    {
        let mut store = SqliteStore::open(&path).unwrap();
        store
            .commit(
                &[
                    &deliver("c", "a", 1, Order::InOrder, cp(1, &["a"]))[..],
                    &[Write::Skipped {
                        convo: "c".into(),
                        from: Seq(2),
                        to: Seq(3),
                    }],
                    &deliver("c", "d", 4, Order::InOrder, cp(4, &["d"])),
                    &[Write::Cleared {
                        convo: "gone".into(),
                        reason: Permanent::NotMember,
                    }],
                ]
                .concat(),
            )
            .unwrap();
    }
    let mut store = SqliteStore::open(&path).unwrap();
    let summaries = store.summaries().unwrap();
    let c = summaries.iter().find(|s| s.convo == "c").unwrap();
    assert_eq!(c.skipped, vec![(2, 3)]);
    assert_eq!(c.checkpoint, cp(4, &["d"]));
    let gone = summaries.iter().find(|s| s.convo == "gone").unwrap();
    assert_eq!(gone.cleared.as_deref(), Some("not-member"));
    let restored = store.load(&"c".into(), 32).unwrap().unwrap();
    assert_eq!(restored.checkpoint, cp(4, &["d"]));
    assert_eq!(restored.recent.len(), 2);
    assert!(store.load(&"never".into(), 32).unwrap().is_none());
}

#[test]
fn load_gives_back_the_newest_window_and_everything_from_recheck_from() {
    let mut store = SqliteStore::open_in_memory().unwrap();
    let batch: Vec<Write> = (1..=100)
        .flat_map(|s| {
            let id = format!("m{s}");
            let mut checkpoint = cp(s, &[id.as_str()]);
            checkpoint.recheck_from = Some(Seq(40));
            deliver("c", &id, s, Order::InOrder, checkpoint)
        })
        .collect();
    store.commit(&batch).unwrap();
    let restored = store.load(&"c".into(), 10).unwrap().unwrap();
    let seqs: Vec<u64> = restored.recent.iter().map(|k| k.seq.0).collect();
    assert_eq!(seqs, (40..=100).collect::<Vec<_>>());
    // Without a recheck point, the window alone.
    let mut last = cp(101, &["m101"]);
    last.recheck_from = None;
    store
        .commit(&deliver("c", "m101", 101, Order::InOrder, last))
        .unwrap();
    let restored = store.load(&"c".into(), 10).unwrap().unwrap();
    let seqs: Vec<u64> = restored.recent.iter().map(|k| k.seq.0).collect();
    assert_eq!(seqs, (92..=101).collect::<Vec<_>>());
}

#[test]
fn a_corrupt_checkpoint_is_a_typed_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    SqliteStore::open(&path)
        .unwrap()
        .commit(&deliver("c", "a", 1, Order::InOrder, cp(1, &["a"])))
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE checkpoints SET checkpoint = '{\"seq\": \"x\"}'", [])
        .unwrap();
    drop(conn);
    let mut store = SqliteStore::open(&path).unwrap();
    let err = store.load(&"c".into(), 32).unwrap_err();
    assert!(err.to_string().contains("does not decode"), "{err}");
}

#[test]
fn a_failed_batch_stores_nothing_of_itself() {
    let mut store = SqliteStore::open_in_memory().unwrap();
    store
        .commit(&deliver("c", "a", 1, Order::InOrder, cp(1, &["a"])))
        .unwrap();
    // A trigger makes the third write of the next batch fail.
    store.debug_execute("CREATE TRIGGER no_c AFTER INSERT ON messages WHEN NEW.id = 'c' BEGIN SELECT RAISE(ABORT, 'refused'); END").unwrap();
    let err = store.commit(
        &[
            deliver("c", "b", 2, Order::InOrder, cp(2, &["b"])),
            deliver("c", "c", 3, Order::InOrder, cp(3, &["c"])),
        ]
        .concat(),
    );
    assert!(err.is_err());
    assert_eq!(ids(&store), vec![("c".into(), 1, "a".into())]);
    assert_eq!(store.summaries().unwrap()[0].checkpoint, cp(1, &["a"]));
}

#[test]
fn unreachable_ranges_are_stored_and_the_store_answers_whether_it_has_an_id() {
    let mut store = SqliteStore::open_in_memory().unwrap();
    let c = ConvoId::from("c");
    store
        .commit(
            &[
                &deliver("c", "a", 1, Order::InOrder, cp(1, &["a"]))[..],
                &[Write::Unreachable {
                    convo: c.clone(),
                    from: Seq(2),
                    to: Seq(4),
                }],
                &deliver("c", "e", 5, Order::InOrder, cp(5, &["e"])),
                // Found later inside the unreachable range.
                &deliver("c", "c3", 3, Order::Late, cp(5, &["e"])),
            ]
            .concat(),
        )
        .unwrap();
    assert!(store.contains(&c, &"c3".into()).unwrap());
    assert!(!store.contains(&c, &"nope".into()).unwrap());
    assert!(!store.contains(&"other".into(), &"a".into()).unwrap());
    assert_eq!(store.load(&c, 32).unwrap().unwrap().checkpoint.seq, Seq(5));
    let seqs: Vec<u64> = ids(&store).into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(seqs, vec![1, 3, 5]);
    // The summary says the range was unreachable and that one message turned up there.
    let summary = &store.summaries().unwrap()[0];
    assert_eq!(summary.unreachable, vec![(2, 4, 1)]);
}

#[test]
fn the_newest_anomalies_are_kept_in_words_for_inspect() {
    let mut store = SqliteStore::open_in_memory().unwrap();
    let c = ConvoId::from("c");
    let mut batch = deliver("c", "a", 1, Order::InOrder, cp(1, &["a"])).to_vec();
    for n in 0..25u64 {
        batch.push(Write::Anomaly {
            convo: c.clone(),
            anomaly: gapless::Anomaly::EpochWentBack {
                seq: Seq(n + 2),
                epoch: 1,
                previous: 2,
            },
            at_ms: 1_000 + n,
        });
    }
    store.commit(&batch).unwrap();
    let summary = &store.summaries().unwrap()[0];
    assert_eq!(summary.anomalies.len(), 20, "the newest 20");
    let (at, words) = summary.anomalies.last().unwrap();
    assert_eq!(*at, 1_024);
    assert_eq!(
        words,
        &gapless::Anomaly::EpochWentBack {
            seq: Seq(26),
            epoch: 1,
            previous: 2,
        }
        .to_string()
    );
    assert_eq!(summary.anomalies[0].0, 1_005, "oldest first");
}
