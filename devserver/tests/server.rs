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
    let client = reqwest::Client::new();
    let url = format!("{}/xrpc/{}", s.base_url(), gapless_catbird::SEND_MESSAGE);
    let body = r#"{"convoId":"c","msgId":"01M8DMCHZAC3VJJBF6C3H3CEJQ","ciphertext":{"$bytes":"AAEC"},"epoch":0,"paddedSize":3}"#;
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
        vec![0, 1, 2]
    );
}
