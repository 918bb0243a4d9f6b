//! The dev server over real HTTP on 127.0.0.1: its answers decode with `gapless-catbird`,
//! each fault knob is observable, and the same seed gives the same fault schedule.

use gapless::StreamEvent;
use gapless_catbird::messages::{stream_path_and_query, GetMessagesResponse};
use gapless_catbird::sse::{Limits, SseDecoder};
use gapless_catbird::{event, GET_MESSAGES};
use gapless_devserver::{mint_token, DevServer, Faults, Options, Profile};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static NONCE: AtomicU64 = AtomicU64::new(1);

fn token(nsid: &str) -> String {
    mint_token("dev-secret", nsid, NONCE.fetch_add(1, Ordering::Relaxed))
}

async fn server(faults: Faults) -> DevServer {
    let mut options = Options::new(Profile::Calm, 7);
    options.faults = faults;
    options.keepalive = Duration::from_millis(100);
    DevServer::start(options).await.unwrap()
}

async fn get(server: &DevServer, query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/xrpc/{GET_MESSAGES}?{query}", server.base_url()))
        .bearer_auth(token(GET_MESSAGES))
        .send()
        .await
        .unwrap()
}

async fn page(server: &DevServer, convo: &str, since: u64) -> GetMessagesResponse {
    let resp = get(
        server,
        &format!("convoId={convo}&sinceSeq={since}&limit=100"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    GetMessagesResponse::decode(&resp.bytes().await.unwrap(), &Limits::default()).unwrap()
}

fn seqs(p: &GetMessagesResponse) -> Vec<u64> {
    p.messages.iter().map(|m| m.seq).collect()
}

/// Opens a stream and collects decoded events until `until` says stop or `wait` passes.
async fn stream(
    server: &DevServer,
    convo: &str,
    cursor: Option<&str>,
    wait: Duration,
    until: impl Fn(&[StreamEvent]) -> bool,
) -> (Vec<StreamEvent>, bool) {
    let path = stream_path_and_query(&convo.into(), cursor.map(gapless::Cursor::from).as_ref());
    let mut resp = reqwest::Client::new()
        .get(format!("{}{path}", server.base_url()))
        .bearer_auth("dev-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut decoder = SseDecoder::new(Limits::default());
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut ended = false;
    while !until(&events) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                decoder.push(&bytes);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    if let Some(e) = event::decode_frame(&frame, &Limits::default()).unwrap() {
                        events.push(e);
                    }
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                ended = true;
                break;
            }
            Err(_) => break,
        }
    }
    (events, ended)
}

fn messages(events: &[StreamEvent]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Message { message, .. } => Some((message.seq.0, message.id.to_string())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn answers_decode_with_gapless_catbird_and_are_framed_like_the_real_servers() {
    let s = server(Faults::default()).await;
    for _ in 0..5 {
        s.post("c", vec![1, 2, 3]);
    }
    let p = page(&s, "c", 0).await;
    assert_eq!(seqs(&p), vec![1, 2, 3, 4, 5]);
    assert_eq!(p.last_seq, Some(5));
    assert!(p.gap_info.is_none());
    assert!(p.messages[0].created_at.ends_with('Z'));
    assert_eq!(p.messages[0].message_type.as_deref(), Some("app"));
    let page = p
        .clone()
        .into_page(gapless::RequestId(0), &"c".into(), &Limits::default())
        .unwrap();
    assert_eq!(page.messages[0].payload, vec![1, 2, 3]);

    let poster = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        for _ in 0..3 {
            s.post("c", vec![9]);
        }
    };
    let ((events, _), ()) = tokio::join!(
        stream(&s, "c", None, Duration::from_secs(5), |e| messages(e).len()
            >= 3),
        poster
    );
    assert_eq!(
        messages(&events).iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    assert!(
        events.contains(&StreamEvent::Keepalive),
        "keepalive comments"
    );
    let StreamEvent::Message { message, cursor } = &events
        .iter()
        .find(|e| matches!(e, StreamEvent::Message { .. }))
        .unwrap()
    else {
        unreachable!()
    };
    assert!(message.created_at.as_deref().unwrap().ends_with("+00:00"));
    assert_eq!(cursor.as_ref().unwrap().as_str().len(), 26);
}

#[tokio::test]
async fn errors_are_shaped_like_the_real_servers() {
    let s = server(Faults::default()).await;
    s.create_convo("c");
    let r = get(&s, "convoId=nope").await;
    assert_eq!(
        (r.status().as_u16(), r.bytes().await.unwrap().len()),
        (403, 0)
    );
    let r = get(&s, "sinceSeq=1").await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("convoId"));
    let r = reqwest::Client::new()
        .get(format!("{}/xrpc/{GET_MESSAGES}?convoId=c", s.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("Missing authorization"));
    let r = reqwest::Client::new()
        .get(format!(
            "{}{}",
            s.base_url(),
            stream_path_and_query(&"c".into(), Some(&"not-a-ulid".into()))
        ))
        .bearer_auth("dev-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a bad cursor");
}

#[tokio::test]
async fn hostile_profile_accepts_each_fetch_token_once() {
    let mut options = Options::new(Profile::Hostile, 1);
    options.faults = Faults::default();
    let s = DevServer::start(options).await.unwrap();
    s.create_convo("c");
    let url = format!("{}/xrpc/{GET_MESSAGES}?convoId=c", s.base_url());
    let client = reqwest::Client::new();
    let fresh = token(GET_MESSAGES);
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(&fresh)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let again = client.get(&url).bearer_auth(&fresh).send().await.unwrap();
    assert_eq!(again.status(), 401, "a replayed token");
    assert!(
        again.bytes().await.unwrap().is_empty(),
        "with an empty body"
    );
    let fixed = client
        .get(&url)
        .bearer_auth("dev-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(fixed.status(), 401, "a fixed token fails visibly");
    let wrong_lxm = token("blue.catbird.mls.sendMessage");
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(&wrong_lxm)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn server_side_knobs_are_observable() {
    // Holes.
    let s = server(Faults {
        hole: 1000,
        ..Faults::default()
    })
    .await;
    for _ in 0..3 {
        s.post("c", vec![1]);
    }
    let p = page(&s, "c", 0).await;
    assert_eq!(seqs(&p), vec![2, 4, 6]);
    assert_eq!(p.gap_info.unwrap().missing_seqs, vec![3, 5]);
    assert_eq!(s.fault_counts().get("hole"), 3);

    // Two messages sharing a seq (MAX(seq)+1 race).
    let s = server(Faults {
        shared_seq: 1000,
        ..Faults::default()
    })
    .await;
    for _ in 0..4 {
        s.post("c", vec![1]);
    }
    assert_eq!(seqs(&page(&s, "c", 0).await), vec![1, 1, 2, 2]);

    // Late commit: invisible at first, then there.
    let s = server(Faults {
        late: 1000,
        late_max: Duration::from_millis(400),
        ..Faults::default()
    })
    .await;
    let sent = s.post("c", vec![1]);
    assert!(sent.late_by.is_some());
    assert!(seqs(&page(&s, "c", 0).await).is_empty());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(seqs(&page(&s, "c", 0).await), vec![1]);

    // Expiry: there, then gone.
    let s = server(Faults {
        expire: 1000,
        expire_max: Duration::from_millis(100),
        ..Faults::default()
    })
    .await;
    s.post("c", vec![1]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(seqs(&page(&s, "c", 0).await).is_empty());
    assert_eq!(s.fault_counts().get("expire"), 1);

    // Commits raise the epoch; epoch_back sends one behind.
    let s = server(Faults {
        commit: 1000,
        ..Faults::default()
    })
    .await;
    s.post("c", vec![1]);
    s.post("c", vec![1]);
    let p = page(&s, "c", 0).await;
    assert_eq!(
        p.messages
            .iter()
            .map(|m| (m.epoch, m.message_type.clone().unwrap()))
            .collect::<Vec<_>>(),
        vec![(1, "commit".to_string()), (2, "commit".to_string())]
    );
    let s = server(Faults {
        commit: 1000,
        epoch_back: 1000,
        ..Faults::default()
    })
    .await;
    s.post("c", vec![1]);
    assert_eq!(
        page(&s, "c", 0).await.messages[0].epoch,
        0,
        "one behind the commit's epoch"
    );

    // Ephemeral: stream only, seq 0.
    let s = server(Faults {
        ephemeral: 1000,
        ..Faults::default()
    })
    .await;
    s.create_convo("c");
    let poster = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.post("c", vec![1])
    };
    let ((events, _), sent) = tokio::join!(
        stream(&s, "c", None, Duration::from_secs(3), |e| !messages(e)
            .is_empty()),
        poster
    );
    assert_eq!(sent.seq, 0);
    assert_eq!(messages(&events), vec![(0, sent.id)]);
    assert!(seqs(&page(&s, "c", 0).await).is_empty());
}

#[tokio::test]
async fn fetch_knobs_are_observable() {
    let s = server(Faults {
        fetch_error: 1000,
        ..Faults::default()
    })
    .await;
    s.create_convo("c");
    assert_eq!(get(&s, "convoId=c").await.status(), 500);
    let s = server(Faults {
        fetch_rate_limit: 1000,
        ..Faults::default()
    })
    .await;
    s.create_convo("c");
    let r = get(&s, "convoId=c").await;
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["retry-after"].to_str().unwrap()
        ),
        (429, "1")
    );
    let s = server(Faults {
        fetch_slow: 1000,
        slow_delay: Duration::from_millis(50),
        ..Faults::default()
    })
    .await;
    s.create_convo("c");
    assert_eq!(get(&s, "convoId=c").await.status(), 200);
    assert_eq!(s.fault_counts().get("fetch_slow"), 1);
    let s = server(Faults {
        fetch_hang: 1000,
        hang: Duration::from_secs(5),
        ..Faults::default()
    })
    .await;
    s.create_convo("c");
    let r = reqwest::Client::new()
        .get(format!("{}/xrpc/{GET_MESSAGES}?convoId=c", s.base_url()))
        .bearer_auth(token(GET_MESSAGES))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout(), "the client's timeout fires");
}

async fn stream_with(
    faults: Faults,
    posts: usize,
    until: usize,
) -> (Vec<StreamEvent>, bool, DevServer) {
    let s = server(faults).await;
    s.create_convo("c");
    let poster = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        for _ in 0..posts {
            s.post("c", vec![1]);
        }
    };
    let ((events, ended), ()) = tokio::join!(
        stream(&s, "c", None, Duration::from_millis(1500), |e| messages(e)
            .len()
            >= until),
        poster
    );
    (events, ended, s)
}

#[tokio::test]
async fn stream_knobs_are_observable() {
    let (events, _, s) = stream_with(
        Faults {
            drop: 1000,
            ..Faults::default()
        },
        3,
        1,
    )
    .await;
    assert!(messages(&events).is_empty());
    assert_eq!(s.fault_counts().get("drop"), 3);

    let (events, _, _) = stream_with(
        Faults {
            duplicate: 1000,
            ..Faults::default()
        },
        2,
        4,
    )
    .await;
    let m = messages(&events);
    assert_eq!(m.len(), 4);
    assert_eq!(m[0], m[1]);

    let (events, _, _) = stream_with(
        Faults {
            reorder: 1000,
            ..Faults::default()
        },
        2,
        2,
    )
    .await;
    assert_eq!(
        messages(&events).iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![2, 1]
    );

    let (events, _, _) = stream_with(
        Faults {
            slow_consumer: 1000,
            ..Faults::default()
        },
        2,
        99,
    )
    .await;
    let infos = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Info { info, .. } if info == "slow-consumer"))
        .count();
    assert_eq!(infos, 2);

    let (_, ended, s) = stream_with(
        Faults {
            cut: 1000,
            cut_after_max: Duration::from_millis(200),
            ..Faults::default()
        },
        0,
        99,
    )
    .await;
    assert!(ended, "the server cut the stream");
    assert_eq!(s.fault_counts().get("cut"), 1);
}

#[tokio::test]
async fn resume_with_a_cursor_replays_commits_only() {
    let s = server(Faults::default()).await;
    s.create_convo("c");
    let poster = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.post("c", vec![1]);
    };
    let ((events, _), ()) = tokio::join!(
        stream(&s, "c", None, Duration::from_secs(3), |e| !messages(e)
            .is_empty()),
        poster
    );
    let Some(StreamEvent::Message { cursor, .. }) = events
        .iter()
        .find(|e| matches!(e, StreamEvent::Message { .. }))
    else {
        panic!()
    };
    let cursor = cursor.clone().unwrap();
    // Then, while "away", an app message and (with commits on) a commit.
    s.post("c", vec![2]);
    let s2 = server(Faults {
        commit: 1000,
        ..Faults::default()
    })
    .await;
    let first = s2.post("c", vec![1]);
    let (events, _) = stream(
        &s2,
        "c",
        Some("00000000000000000000000000"),
        Duration::from_millis(300),
        |_| false,
    )
    .await;
    assert_eq!(
        messages(&events),
        vec![(first.seq, first.id)],
        "commits are replayed"
    );
    let (events, _) = stream(
        &s,
        "c",
        Some(cursor.as_str()),
        Duration::from_millis(300),
        |_| false,
    )
    .await;
    assert!(
        messages(&events).is_empty(),
        "app messages are not: fetch them"
    );
}

#[tokio::test]
async fn the_same_seed_gives_the_same_fault_schedule() {
    async fn run(seed: u64) -> (Vec<(String, u64, String)>, gapless_devserver::FaultCounts) {
        let mut options = Options::new(Profile::Hostile, seed);
        options.faults.late = 0; // visibility timing aside, everything else is planned
        options.faults.expire = 0;
        let s = DevServer::start(options).await.unwrap();
        for n in 0..300 {
            s.post(&format!("c{}", n % 3), vec![n as u8]);
        }
        (s.log(), s.fault_counts())
    }
    let (a, fa) = run(11).await;
    let (b, fb) = run(11).await;
    assert_eq!(a, b);
    assert_eq!(fa, fb);
    assert!(
        fa.get("hole") > 0 && fa.get("shared_seq") > 0 && fa.get("commit") > 0,
        "{fa:?}"
    );
    let (c, _) = run(12).await;
    assert_ne!(a, c);
}

#[tokio::test]
async fn traffic_generator_fills_conversations() {
    let s = server(Faults::default()).await;
    s.traffic(3, 20, 2_000.0).await.unwrap();
    let log = s.log();
    assert_eq!(log.len(), 60);
    for c in ["c0", "c1", "c2"] {
        let seqs: Vec<u64> = log
            .iter()
            .filter(|(cc, _, _)| cc == c)
            .map(|m| m.1)
            .collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn send_message_answers_like_the_real_server() {
    let s = server(Faults::default()).await;
    s.create_convo("c");
    let client = reqwest::Client::new();
    let url = format!("{}/xrpc/{}", s.base_url(), gapless_catbird::SEND_MESSAGE);
    let body = send_body("01M8DMCHZAC3VJJBF6C3H3CEJQ");
    let r = client
        .post(&url)
        .bearer_auth(token(gapless_catbird::SEND_MESSAGE))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["seq"], 1);
    assert!(v["receivedAt"].as_str().unwrap().ends_with("+00:00"));
    let plain =
        r#"{"convoId":"c","msgId":"01M8DMCHZAC3VJJBF6C3H3CEJR","ciphertext":"AAEC","epoch":0}"#;
    let r = client
        .post(&url)
        .bearer_auth("dev-secret")
        .body(plain)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "a plain-string ciphertext, as recording 65"
    );
    assert_eq!(seqs(&page(&s, "c", 0).await), vec![1]);
    assert_eq!(
        page(&s, "c", 0).await.messages[0]
            .ciphertext
            .decode(&Limits::default())
            .unwrap(),
        vec![0x5a; 512]
    );
}

/// A valid `sendMessage` body: 512 bytes, `paddedSize` 512.
fn send_body(msg_id: &str) -> String {
    let ciphertext = gapless_catbird::message::Ciphertext::from_bytes(&[0x5a; 512]);
    serde_json::json!({
        "convoId": "c", "msgId": msg_id, "ciphertext": ciphertext,
        "epoch": 0, "paddedSize": 512,
    })
    .to_string()
}

// ---- rate limits ----------------------------------------------------------------------

use gapless_devserver::{Burst, RateLimits};

async fn limited(limits: RateLimits) -> DevServer {
    let mut options = Options::new(Profile::Calm, 7);
    options.faults.rate_limits = Some(limits);
    options.keepalive = Duration::from_millis(100);
    let s = DevServer::start(options).await.unwrap();
    s.create_convo("c");
    s
}

/// The real quotas without the burst limiter, so that requests in a row meet the quotas.
fn quotas_only() -> RateLimits {
    RateLimits {
        burst: None,
        ..RateLimits::real()
    }
}

/// A 429's shape: (retry-after, content-type, body).
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    retry_after: Option<String>,
    content_type: Option<String>,
    body: String,
}

async fn shape(r: reqwest::Response) -> Shape {
    assert_eq!(r.status(), 429);
    let header = |h: &str| r.headers().get(h).map(|v| v.to_str().unwrap().to_string());
    let (retry_after, content_type) = (header("retry-after"), header("content-type"));
    Shape {
        retry_after,
        content_type,
        body: r.text().await.unwrap(),
    }
}

/// Recording 06_…_try4 (the middleware's bucket): empty, `retry-after`.
fn empty_with_retry_after(secs: u64) -> Shape {
    Shape {
        retry_after: Some(secs.to_string()),
        content_type: None,
        body: String::new(),
    }
}

/// Recording 06_…_try3 (the burst limiter, the path's bucket): JSON, no `retry-after`.
fn json_without_retry_after() -> Shape {
    Shape {
        retry_after: None,
        content_type: Some("application/json".into()),
        body: r#"{"error":"Rate limit exceeded"}"#.into(),
    }
}

async fn get_with(client: &reqwest::Client, s: &DevServer, query: &str) -> reqwest::Response {
    client
        .get(format!("{}/xrpc/{GET_MESSAGES}?{query}", s.base_url()))
        .bearer_auth(token(GET_MESSAGES))
        .send()
        .await
        .unwrap()
}

async fn open_stream(client: &reqwest::Client, s: &DevServer, convo: &str) -> reqwest::Response {
    let path = stream_path_and_query(&convo.into(), None);
    client
        .get(format!("{}{path}", s.base_url()))
        .bearer_auth("dev-secret")
        .send()
        .await
        .unwrap()
}

async fn send(client: &reqwest::Client, s: &DevServer) -> reqwest::Response {
    // Another msgId each time: a resent one would be the same message.
    static SENT: AtomicU64 = AtomicU64::new(0);
    let body = send_body(&format!(
        "01M8DMCHZAC3VJJBF6C3{:06}",
        SENT.fetch_add(1, Ordering::Relaxed)
    ));
    client
        .post(format!(
            "{}/xrpc/{}",
            s.base_url(),
            gapless_catbird::SEND_MESSAGE
        ))
        .bearer_auth(token(gapless_catbird::SEND_MESSAGE))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Sends `query(n)` for n = 0, 1, … until the first 429; checks that about `quota` passed
/// (a token comes back every minute / `quota` while they run) and returns the 429.
async fn until_refused(
    s: &DevServer,
    quota: u32,
    query: impl Fn(u32) -> String,
) -> reqwest::Response {
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    for n in 0.. {
        let r = get_with(&client, s, &query(n)).await;
        if r.status() == 429 {
            let refilled = started.elapsed().as_millis() / (60_000 / u128::from(quota));
            assert!(
                u128::from(n) >= u128::from(quota) && u128::from(n) <= u128::from(quota) + refilled,
                "{n} passed in {:?}",
                started.elapsed()
            );
            return r;
        }
        assert_eq!(r.status(), 200);
    }
    unreachable!()
}

#[test]
fn only_the_hostile_profile_is_rate_limited() {
    assert_eq!(
        Profile::Hostile.faults().rate_limits,
        Some(RateLimits::real())
    );
    assert_eq!(Profile::Calm.faults().rate_limits, None);
    assert_eq!(Profile::FlakyMobile.faults().rate_limits, None);
}

#[tokio::test]
async fn the_201st_get_messages_in_a_minute_gets_429_with_retry_after() {
    let s = limited(quotas_only()).await;
    // The same request again and again: its full URI's bucket (the real middleware's) runs
    // dry first, at 200.
    let r = until_refused(&s, 200, |_| "convoId=c&sinceSeq=0".into()).await;
    assert_eq!(
        shape(r).await,
        empty_with_retry_after(1),
        "0.3 s, rounded up"
    );
    assert_eq!(s.fault_counts().get("rate_limited"), 1);
    assert_eq!(s.fault_counts().get("burst_limited"), 0);
}

#[tokio::test]
async fn every_conversations_fetches_share_one_quota() {
    let s = limited(quotas_only()).await;
    for c in 0..4 {
        s.create_convo(&format!("c{c}"));
    }
    // A new query each time (as a client paging or fetching for other conversations): each
    // passes its URI's bucket, and the path's bucket (the real extractor's) runs dry at 200,
    // with the JSON answer and no retry-after.
    let r = until_refused(&s, 200, |n| format!("convoId=c{}&sinceSeq={n}", n % 4)).await;
    assert_eq!(shape(r).await, json_without_retry_after());
    assert_eq!(s.fault_counts().get("rate_limited"), 1);
}

#[tokio::test]
async fn a_send_draws_twice_from_its_bucket_as_recording_06_shows() {
    // Without a query string the URI's bucket is the path's: each call takes two tokens. With
    // a quota of 5 (createConvo's in recording 06): two calls pass, the third meets the
    // extractor's draw (JSON), the fourth the middleware's (`retry-after: 12`).
    let mut limits = quotas_only();
    limits
        .per_minute
        .insert(gapless_catbird::SEND_MESSAGE.into(), 5);
    let s = limited(limits).await;
    let client = reqwest::Client::new();
    assert_eq!(send(&client, &s).await.status(), 200);
    assert_eq!(send(&client, &s).await.status(), 200);
    assert_eq!(
        shape(send(&client, &s).await).await,
        json_without_retry_after()
    );
    assert_eq!(
        shape(send(&client, &s).await).await,
        empty_with_retry_after(12)
    );
    assert_eq!(seqs(&page(&s, "c", 0).await), vec![1, 2]);
    assert_eq!(s.fault_counts().get("rate_limited"), 2);
}

#[tokio::test]
async fn eleven_requests_at_once_meet_the_burst_limiter() {
    async fn at_once(s: &DevServer, n: usize) -> Vec<reqwest::Response> {
        let client = reqwest::Client::new();
        // Open the connections first (`/health` is not limited), so that the requests leave
        // together.
        let warm = (0..n).map(|_| async {
            let r = client
                .get(format!("{}/health", s.base_url()))
                .send()
                .await
                .unwrap();
            r.bytes().await.unwrap();
        });
        futures_util::future::join_all(warm).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let q: Vec<String> = (0..n).map(|n| format!("convoId=c&sinceSeq={n}")).collect();
        futures_util::future::join_all(q.iter().map(|q| get_with(&client, s, q))).await
    }

    // The real limiter: burst 10, then a token every 10 ms. Eleven requests leave within a
    // millisecond or two; a machine too busy to serve them within 10 ms gets another try.
    let mut refused = 0;
    for _attempt in 0..5 {
        let s = limited(RateLimits::real()).await;
        for r in at_once(&s, 11).await {
            if r.status() == 429 {
                refused += 1;
                assert_eq!(shape(r).await, json_without_retry_after());
            } else {
                assert_eq!(r.status(), 200);
            }
        }
        assert_eq!(s.fault_counts().get("burst_limited"), refused);
        assert_eq!(s.fault_counts().get("rate_limited"), 0);
        if refused > 0 {
            break;
        }
    }
    assert!(refused >= 1, "11 requests at once");

    // The same with a slow refill: exactly the eleventh.
    let s = limited(RateLimits {
        burst: Some(Burst {
            burst: 10,
            per_second: 1,
        }),
        ..RateLimits::real()
    })
    .await;
    let statuses: Vec<u16> = at_once(&s, 11)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 10);
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 1);
    assert_eq!(s.fault_counts().get("burst_limited"), 1);
}

#[tokio::test]
async fn the_buckets_refill() {
    // A quota: one token every 300 ms.
    let s = limited(quotas_only()).await;
    let client = reqwest::Client::new();
    until_refused(&s, 200, |_| "convoId=c".into()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let passed = {
        let mut n = 0;
        while get_with(&client, &s, "convoId=c").await.status() == 200 {
            n += 1;
        }
        n
    };
    assert!((2..=3).contains(&passed), "{passed} tokens after 0.7 s");

    // The burst limiter: one token every 10 ms.
    let s = limited(RateLimits::real()).await;
    let mut refused = false;
    for n in 0..100 {
        if get_with(&client, &s, &format!("convoId=c&sinceSeq={n}"))
            .await
            .status()
            == 429
        {
            refused = true;
            break;
        }
    }
    assert!(refused, "100 requests in a row meet the burst limiter");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(get_with(&client, &s, "convoId=c").await.status(), 200);
}

#[tokio::test]
async fn each_path_has_its_own_quota() {
    let s = limited(RateLimits {
        default_per_minute: 5,
        ..quotas_only()
    })
    .await;
    let client = reqwest::Client::new();
    for n in 0..5 {
        let r = get_with(&client, &s, &format!("convoId=c&sinceSeq={n}")).await;
        assert_eq!(r.status(), 200);
    }
    let r = get_with(&client, &s, "convoId=c&sinceSeq=5").await;
    assert_eq!(shape(r).await, json_without_retry_after());
    // getMessages is spent; the stream and sendMessage are not.
    assert_eq!(open_stream(&client, &s, "c").await.status(), 200);
    assert_eq!(send(&client, &s).await.status(), 200);
}

#[tokio::test]
async fn stream_opens_count_and_their_events_do_not() {
    let s = limited(RateLimits {
        default_per_minute: 3,
        ..quotas_only()
    })
    .await;
    s.create_convo("d");
    let client = reqwest::Client::new();
    // One open stream carries any number of events.
    let poster = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..10 {
            s.post("c", vec![1]);
        }
    };
    let ((events, _), ()) = tokio::join!(
        stream(&s, "c", None, Duration::from_secs(5), |e| messages(e).len()
            >= 10),
        poster
    );
    assert_eq!(messages(&events).len(), 10);
    // Two more opens pass: three in all.
    let mut open = Vec::new();
    for _ in 0..2 {
        let r = open_stream(&client, &s, "c").await;
        assert_eq!(r.status(), 200);
        open.push(r);
    }
    // The fourth open of the same URI meets its URI's bucket (3 a minute: 20 s a token) …
    assert_eq!(
        shape(open_stream(&client, &s, "c").await).await,
        empty_with_retry_after(20)
    );
    // … and another conversation's the path's bucket.
    assert_eq!(
        shape(open_stream(&client, &s, "d").await).await,
        json_without_retry_after()
    );
    assert_eq!(s.fault_counts().get("rate_limited"), 2);
    // getMessages has its own.
    assert_eq!(get_with(&client, &s, "convoId=c").await.status(), 200);
}
