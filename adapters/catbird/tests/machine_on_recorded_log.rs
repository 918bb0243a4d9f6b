//! The machine, fed pages cut from the real server's recorded log exactly as the real server
//! cuts them (`seq > sinceSeq`, ordered by `(epoch, seq)`, at most `limit`), recovers every
//! message — including seqs 11..14 that following `lastSeq` skips (recordings 75a/75b) — and
//! skips only the seqs the server really lacks (4 deleted, 9 expired).

mod common;
use gapless::{
    Command, Config, FetchRequest, Input, Message, Seq, Subscription, SyncMachine, Time,
};
use gapless_catbird::messages::{GetMessages, GetMessagesResponse, Paging};
use gapless_catbird::Limits;

const GID: &str = "22653740d27a6e9a7293ebcf1e73ef12";

fn recorded_log() -> Vec<Message> {
    let recording = common::find("73a_");
    let body = &recording.body[..];
    let resp = GetMessagesResponse::decode(body, &Limits::default()).unwrap();
    resp.into_page(gapless::RequestId(0), &GID.into(), &Limits::default())
        .unwrap()
        .messages
}

/// The real server's getMessages over the recorded log.
fn serve(log: &[Message], fetch: &FetchRequest) -> Vec<Message> {
    let query = GetMessages::for_fetch(fetch, Paging::SinceSeq);
    let mut page: Vec<Message> = log
        .iter()
        .filter(|m| m.seq.0 > query.since_seq.unwrap())
        .cloned()
        .collect();
    page.sort_by_key(|m| (m.epoch, m.seq));
    page.truncate(usize::from(query.limit));
    page
}

fn sync_with_limit(limit: u16) -> (Vec<u64>, Vec<(u64, u64)>) {
    let log = recorded_log();
    let config = Config {
        page_limit: limit,
        ..Config::default()
    };
    let mut m = SyncMachine::new(config).unwrap();
    let mut now = Time::ZERO;
    m.handle(now, Input::Subscribe(Subscription::catch_up_only(GID)))
        .unwrap();
    let (mut delivered, mut skipped) = (Vec::new(), Vec::new());
    for _ in 0..10_000 {
        let mut answered = false;
        while let Some(c) = m.poll_command() {
            match c {
                Command::Fetch(f) => {
                    let page = gapless::Page::new(f.id, serve(&log, &f));
                    m.handle(now, Input::FetchPage(page)).unwrap();
                    answered = true;
                }
                Command::Deliver(d) => delivered.push(d.message.seq.0),
                Command::Skipped { from, to, .. } => skipped.push((from.0, to.0)),
                _ => {}
            }
        }
        if !answered {
            match m.poll_timeout() {
                Some(t) if t < Time::from_millis(60_000) => {
                    now = t;
                    m.handle_timeout(now);
                }
                _ => break,
            }
        }
    }
    assert_eq!(m.checkpoint(&GID.into()).unwrap().seq, Seq(16));
    (delivered, skipped)
}

#[test]
fn every_recorded_message_is_recovered_at_any_page_limit() {
    let expected: Vec<u64> = vec![1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16];
    for limit in [1, 2, 3, 5, 50, 100] {
        let (delivered, skipped) = sync_with_limit(limit);
        assert_eq!(delivered, expected, "limit {limit}");
        assert_eq!(skipped, vec![(4, 4), (9, 9)], "limit {limit}");
    }
}
