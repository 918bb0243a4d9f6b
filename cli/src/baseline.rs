//! The stream-only client the demo compares with: what the Catbird client did before
//! gapless (the seed analysis). It reads the SSE stream, delivers in seq order, buffers
//! what comes early, drops what comes at or below the position it has passed, reconnects
//! with its cursor (five failed attempts in a row and it stops), and — never fetching —
//! gives up on a gap after `give_up` (five minutes in the seed): the buffer is dropped and
//! delivery goes on from the next message that arrives.

use gapless::StreamEvent;
use gapless_catbird::messages::stream_path_and_query;
use gapless_catbird::sse::SseDecoder;
use gapless_catbird::{event, Limits};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// One delivery the baseline made.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub convo: String,
    pub seq: u64,
    pub id: String,
    /// Received late: waited in the buffer for a gap to fill.
    pub from_buffer: bool,
    pub latency: Option<Duration>,
}

struct State {
    convo: String,
    next: u64,
    buffer: BTreeMap<u64, (String, Option<SystemTime>)>,
    gap_since: Option<Instant>,
    seen: HashSet<String>,
    give_up: Duration,
}

impl State {
    fn deliver(
        &self,
        out: &Mutex<Vec<Delivered>>,
        seq: u64,
        id: String,
        created: Option<SystemTime>,
        from_buffer: bool,
    ) {
        let latency = created.and_then(|c| SystemTime::now().duration_since(c).ok());
        out.lock().expect("baseline").push(Delivered {
            convo: self.convo.clone(),
            seq,
            id,
            from_buffer,
            latency,
        });
    }

    fn on_message(
        &mut self,
        out: &Mutex<Vec<Delivered>>,
        seq: u64,
        id: String,
        created: Option<SystemTime>,
    ) {
        if seq == 0 || !self.seen.insert(id.clone()) {
            return; // ephemeral, or a duplicate event
        }
        if self.gap_since.is_some_and(|g| g.elapsed() >= self.give_up) {
            // The seed's timeout: the buffer is cleared, its messages are gone.
            self.buffer.clear();
            self.gap_since = None;
            self.next = seq;
        }
        if seq < self.next {
            return; // at or below the position: taken for a replay, dropped
        }
        if seq > self.next {
            self.buffer.insert(seq, (id, created));
            self.gap_since.get_or_insert_with(Instant::now);
            return;
        }
        self.deliver(out, seq, id, created, false);
        self.next += 1;
        while let Some((id, created)) = self.buffer.remove(&self.next) {
            self.deliver(out, self.next, id, created, true);
            self.next += 1;
        }
        if self.buffer.is_empty() {
            self.gap_since = None;
        }
    }
}

/// Parses the server's `createdAt` (`…Z` or `…+00:00`).
pub fn created_at(s: Option<&str>) -> Option<SystemTime> {
    let s = s?;
    let s = s
        .strip_suffix("+00:00")
        .map_or_else(|| s.to_string(), |p| format!("{p}Z"));
    humantime::parse_rfc3339_weak(&s).ok()
}

/// Runs the baseline for one conversation until aborted.
pub async fn run(
    http: reqwest::Client,
    base_url: String,
    token: String,
    convo: String,
    give_up: Duration,
    out: Arc<Mutex<Vec<Delivered>>>,
) {
    let mut state = State {
        convo: convo.clone(),
        next: 1,
        buffer: BTreeMap::new(),
        gap_since: None,
        seen: HashSet::new(),
        give_up,
    };
    let limits = Limits::default();
    let mut cursor: Option<gapless::Cursor> = None;
    let mut failures = 0;
    while failures < 5 {
        let url = format!(
            "{base_url}{}",
            stream_path_and_query(&convo.as_str().into(), cursor.as_ref())
        );
        let response = http.get(url).bearer_auth(&token).send().await;
        let mut response = match response {
            Ok(r) if r.status().is_success() => r,
            _ => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500 << failures)).await;
                continue;
            }
        };
        failures = 0;
        let mut decoder = SseDecoder::new(limits);
        'read: while let Ok(Some(chunk)) = response.chunk().await {
            decoder.push(&chunk);
            loop {
                let frame = match decoder.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => break 'read,
                };
                let Ok(Some(ev)) = event::decode_frame(&frame, &limits) else {
                    continue;
                };
                if let Some(c) = ev.cursor() {
                    cursor = Some(c.clone());
                }
                if let StreamEvent::Message { message, .. } = ev {
                    let created = created_at(message.created_at.as_deref());
                    state.on_message(&out, message.seq.0, message.id.to_string(), created);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_buffers_a_gap_drops_a_replay_and_gives_up_on_a_hole() {
        let out = Mutex::new(Vec::new());
        let mut s = State {
            convo: "c".into(),
            next: 1,
            buffer: BTreeMap::new(),
            gap_since: None,
            seen: HashSet::new(),
            give_up: Duration::ZERO,
        };
        s.give_up = Duration::from_secs(3600);
        s.on_message(&out, 1, "a".into(), None);
        s.on_message(&out, 3, "c".into(), None);
        s.on_message(&out, 2, "b".into(), None);
        s.on_message(&out, 2, "b-shared".into(), None); // shares seq 2: dropped
        let got: Vec<(u64, bool)> = out
            .lock()
            .unwrap()
            .iter()
            .map(|d| (d.seq, d.from_buffer))
            .collect();
        assert_eq!(got, vec![(1, false), (2, false), (3, true)]);
        s.on_message(&out, 5, "e".into(), None); // 4 never comes
        s.give_up = Duration::ZERO;
        s.on_message(&out, 6, "f".into(), None); // gives up: 5 is lost, 6 delivered
        let got: Vec<u64> = out.lock().unwrap().iter().map(|d| d.seq).collect();
        assert_eq!(got, vec![1, 2, 3, 6]);
    }

    #[test]
    fn both_timestamp_styles_parse_to_the_same_instant() {
        assert_eq!(
            created_at(Some("2025-11-01T10:00:00.123456Z")),
            created_at(Some("2025-11-01T10:00:00.123456+00:00"))
        );
        assert!(created_at(Some("2025-11-01T10:00:00Z")).is_some());
        assert!(created_at(Some("yesterday")).is_none());
    }
}
