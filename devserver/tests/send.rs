//! `sendMessage` over real HTTP on 127.0.0.1, both APIs (`blue.catbird.mls.sendMessage`, the
//! SSE era, and `blue.catbird.mlsChat.sendMessage`): the real server's checks and answers
//! (`shared/catbird/README.md` §3/§6, `shared/catbird/ws/README.md` item 16) and the send
//! faults: refused without being applied, applied with the answer lost, slow answers.

use gapless_catbird::message::Ciphertext;
use gapless_catbird::{MLSCHAT_SEND_MESSAGE, SEND_MESSAGE};
use gapless_devserver::{mint_token, DevServer, Faults, Options, Profile, RateLimits};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static NONCE: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    /// `blue.catbird.mls.sendMessage` (real server 168f1c5).
    Mls,
    /// `blue.catbird.mlsChat.sendMessage` (real server 5278d0c).
    Chat,
}

const BOTH: [Api; 2] = [Api::Mls, Api::Chat];

impl Api {
    fn nsid(self) -> &'static str {
        match self {
            Api::Mls => SEND_MESSAGE,
            Api::Chat => MLSCHAT_SEND_MESSAGE,
        }
    }
}

fn token(nsid: &str) -> String {
    mint_token("dev-secret", nsid, NONCE.fetch_add(1, Ordering::Relaxed))
}

fn options(faults: Faults) -> Options {
    let mut options = Options::new(Profile::Calm, 7);
    options.faults = faults;
    options.keepalive = Duration::from_millis(100);
    options
}

async fn server(faults: Faults) -> DevServer {
    let s = DevServer::start(options(faults)).await.unwrap();
    s.create_convo("c");
    s
}

/// A message of `len` bytes whose `paddedSize` is its length.
fn body(msg_id: &str, len: usize) -> Value {
    let ciphertext = Ciphertext::from_bytes(&vec![0x5a; len]);
    json!({
        "convoId": "c",
        "msgId": msg_id,
        "ciphertext": serde_json::to_value(ciphertext).unwrap(),
        "epoch": 0,
        "paddedSize": len,
    })
}

/// A valid ULID msgId, the n-th.
fn ulid(n: u64) -> String {
    format!("01M8DME24PTCGXZ67D{n:08}")
}

async fn try_post(
    client: &reqwest::Client,
    s: &DevServer,
    api: Api,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{}/xrpc/{}", s.base_url(), api.nsid()))
        .bearer_auth(token(api.nsid()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
}

async fn post(s: &DevServer, api: Api, body: &Value) -> reqwest::Response {
    try_post(&reqwest::Client::new(), s, api, &body.to_string())
        .await
        .unwrap()
}

/// (status, content-type, body) of an answer.
async fn answer(r: reqwest::Response) -> (u16, Option<String>, String) {
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    (status, content_type, r.text().await.unwrap())
}

fn empty(status: u16) -> (u16, Option<String>, String) {
    (status, None, String::new())
}

/// The messages the server serves in conversation `c`: (seq, id).
fn stored(s: &DevServer) -> Vec<(u64, String)> {
    s.log()
        .into_iter()
        .filter(|(c, _, _)| c == "c")
        .map(|(_, seq, id)| (seq, id))
        .collect()
}

// ---- the real server's rules ------------------------------------------------------------

#[tokio::test]
async fn a_resent_msg_id_gets_the_same_answer_and_stores_one_message() {
    for api in BOTH {
        let s = server(Faults::default()).await;
        let first = answer(post(&s, api, &body(&ulid(1), 512)).await).await;
        assert_eq!(first.0, 200, "{api:?}");
        let v: Value = serde_json::from_str(&first.2).unwrap();
        assert_eq!((v["seq"].clone(), v["epoch"].clone()), (json!(1), json!(0)));
        let received = v["receivedAt"].as_str().unwrap();
        match api {
            // `64a_`: microseconds, `+00:00`; keys in alphabetical order.
            Api::Mls => {
                assert!(received.ends_with("+00:00"), "{received}");
                assert!(
                    first.2.starts_with(r#"{"epoch":0,"messageId":"#),
                    "{}",
                    first.2
                );
            }
            // `006`: microseconds, `Z`.
            Api::Chat => assert!(received.ends_with('Z'), "{received}"),
        }
        let message_id = v["messageId"].as_str().unwrap().to_string();
        assert_eq!(message_id.len(), 36, "a server UUID, not the msgId");
        // Another message in between, then the first msgId again with another ciphertext.
        assert_eq!(post(&s, api, &body(&ulid(2), 512)).await.status(), 200);
        let mut again = body(&ulid(1), 1024);
        again["paddedSize"] = 1024.into();
        let second = answer(post(&s, api, &again).await).await;
        assert_eq!(
            second, first,
            "{api:?}: `64b_`/`010`: the first answer again"
        );
        assert_eq!(
            stored(&s),
            vec![(1, message_id.clone()), (2, stored(&s)[1].1.clone())]
        );
        let sends = s.sends();
        assert_eq!(sends.len(), 2, "{api:?}: {sends:?}");
        assert_eq!(
            (
                sends[0].msg_id.as_str(),
                sends[0].message_id.as_str(),
                sends[0].seq
            ),
            (ulid(1).as_str(), message_id.as_str(), 1)
        );
        // The same msgId in another conversation is another message.
        s.create_convo("d");
        let mut other = body(&ulid(1), 512);
        other["convoId"] = "d".into();
        let v: Value = post(&s, api, &other).await.json().await.unwrap();
        assert_ne!(v["messageId"].as_str().unwrap(), message_id);
    }
}

#[tokio::test]
async fn a_uuid_msg_id_is_accepted_and_deduplicated_too() {
    for api in BOTH {
        let s = server(Faults::default()).await;
        let id = "6f1c2a52-3b7d-4e0a-9c1e-2d4f5a6b7c8d";
        let a = answer(post(&s, api, &body(id, 512)).await).await;
        let b = answer(post(&s, api, &body(id, 512)).await).await;
        assert_eq!(a.0, 200, "{api:?}");
        assert_eq!(a, b);
        assert_eq!(stored(&s).len(), 1);
    }
}

#[tokio::test]
async fn bad_input_gets_the_real_servers_400_and_stores_nothing() {
    for api in BOTH {
        let s = server(Faults::default()).await;
        let with = |f: &dyn Fn(&mut Value)| {
            let mut b = body(&ulid(9), 512);
            f(&mut b);
            b
        };
        let cases: Vec<(&str, Value)> = vec![
            (
                "msgId not a ULID or UUID (62_)",
                body("not-a-valid-id", 512),
            ),
            (
                "26 characters, not all alphanumeric",
                body("01M8DME24PTCGXZ67DD75ZV5E-", 512),
            ),
            (
                "36 characters with a dot",
                body("6f1c2a52.3b7d-4e0a-9c1e-2d4f5a6b7c8d", 512),
            ),
            (
                "empty ciphertext",
                with(&|b| {
                    b["ciphertext"] = json!({"$bytes": ""});
                    b["paddedSize"] = 512.into();
                }),
            ),
            (
                "paddedSize is not the length (60_)",
                with(&|b| b["paddedSize"] = 1024.into()),
            ),
            ("paddedSize not a bucket (61_)", body(&ulid(9), 600)),
        ];
        for (why, b) in cases {
            assert_eq!(
                answer(post(&s, api, &b).await).await,
                empty(400),
                "{api:?}: {why}"
            );
        }
        // The body cannot be read: a plain-string ciphertext (65_), a missing field, not JSON.
        let plain = with(&|b| b["ciphertext"] = "WlpaWg==".into());
        let missing = with(&|b| {
            b.as_object_mut().unwrap().remove("paddedSize");
        });
        for (why, raw) in [
            ("plain-string ciphertext", plain.to_string()),
            ("no paddedSize", missing.to_string()),
            ("not JSON", "{".to_string()),
        ] {
            let r = try_post(&reqwest::Client::new(), &s, api, &raw)
                .await
                .unwrap();
            let (status, content_type, text) = answer(r).await;
            assert_eq!(status, 400, "{api:?}: {why}");
            match api {
                Api::Mls => assert_eq!((content_type, text), (None, String::new()), "{why}"),
                // The XRPC extractor's rejection, as `124` shows it for a query.
                Api::Chat => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(v["error"], "InvalidRequest", "{why}: {text}");
                    assert!(v["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("failed to decode request: "));
                }
            }
        }
        assert!(stored(&s).is_empty(), "{api:?}");
        assert!(s.sends().is_empty());
    }
}

#[tokio::test]
async fn bad_input_is_refused_before_membership_as_the_real_server_orders_its_checks() {
    for api in BOTH {
        let s = server(Faults::default()).await;
        let mut b = body("not-a-valid-id", 512);
        b["convoId"] = "nowhere".into();
        assert_eq!(answer(post(&s, api, &b).await).await, empty(400), "{api:?}");
    }
}

#[tokio::test]
async fn a_non_member_gets_403_with_an_empty_body() {
    for api in BOTH {
        let s = server(Faults::default()).await;
        // An unknown conversation (66_) and one the account left (63_, 39b_).
        let mut unknown = body(&ulid(1), 512);
        unknown["convoId"] = "d44652a0675e926739f96299fe48bdb5".into();
        assert_eq!(
            answer(post(&s, api, &unknown).await).await,
            empty(403),
            "{api:?}"
        );
        s.create_convo("left");
        s.leave("left");
        let mut left = body(&ulid(2), 512);
        left["convoId"] = "left".into();
        assert_eq!(
            answer(post(&s, api, &left).await).await,
            empty(403),
            "{api:?}"
        );
        assert!(s.log().is_empty());
        assert!(s.sends().is_empty());
    }
}

#[tokio::test]
async fn the_send_quota_gets_429_with_retry_after() {
    for api in BOTH {
        let mut limits = RateLimits {
            burst: None,
            ..RateLimits::real()
        };
        limits.per_minute.insert(api.nsid().into(), 4);
        let mut o = options(Faults::default());
        o.faults.rate_limits = Some(limits);
        let s = DevServer::start(o).await.unwrap();
        s.create_convo("c");
        let client = reqwest::Client::new();
        let mut passed = 0;
        let refused = loop {
            let r = try_post(&client, &s, api, &body(&ulid(passed), 512).to_string())
                .await
                .unwrap();
            if r.status() == 429 && r.headers().contains_key("retry-after") {
                break r;
            }
            passed += 1;
            assert!(passed < 10, "{api:?}: never refused");
        };
        // Each send draws twice from its bucket: 4 a minute is 2 sends (recording 06_).
        assert_eq!(stored(&s).len(), 2, "{api:?}");
        let secs: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&secs), "{secs}");
        assert_eq!(refused.text().await.unwrap(), "");
    }
}

#[tokio::test]
async fn the_hostile_profile_takes_a_send_token_once_only() {
    for api in BOTH {
        let mut o = Options::new(Profile::Hostile, 7);
        o.faults = Faults {
            rate_limits: None,
            ..Faults::default()
        };
        let s = DevServer::start(o).await.unwrap();
        s.create_convo("c");
        let client = reqwest::Client::new();
        let t = token(api.nsid());
        let send = |msg: String| {
            client
                .post(format!("{}/xrpc/{}", s.base_url(), api.nsid()))
                .bearer_auth(&t)
                .body(body(&msg, 512).to_string())
                .send()
        };
        assert_eq!(send(ulid(1)).await.unwrap().status(), 200, "{api:?}");
        let replayed = answer(send(ulid(2)).await.unwrap()).await;
        assert_eq!(replayed, empty(401), "{api:?}: a replayed jti");
        let other = match api {
            Api::Mls => MLSCHAT_SEND_MESSAGE,
            Api::Chat => SEND_MESSAGE,
        };
        let r = client
            .post(format!("{}/xrpc/{}", s.base_url(), api.nsid()))
            .bearer_auth(token(other))
            .body(body(&ulid(3), 512).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{api:?}: another method's lxm");
        assert_eq!(stored(&s).len(), 1);
    }
}

#[tokio::test]
async fn an_ephemeral_sse_era_send_has_seq_0_the_msg_id_and_is_not_stored() {
    let s = server(Faults::default()).await;
    let mut stream = reqwest::Client::new()
        .get(format!(
            "{}/xrpc/blue.catbird.mls.streamConvoEvents?convoId=c",
            s.base_url()
        ))
        .bearer_auth("dev-secret")
        .send()
        .await
        .unwrap();
    let mut b = body(&ulid(5), 512);
    b["delivery"] = "ephemeral".into();
    let v: Value = post(&s, Api::Mls, &b).await.json().await.unwrap();
    // Recording 16_: the msgId as messageId, seq 0, nanoseconds in receivedAt.
    assert_eq!(v["messageId"], ulid(5).as_str());
    assert_eq!((v["seq"].clone(), v["epoch"].clone()), (json!(0), json!(0)));
    let received = v["receivedAt"].as_str().unwrap();
    assert!(received.ends_with("+00:00"), "{received}");
    assert_eq!(
        received.split('.').nth(1).unwrap().len(),
        9 + 6,
        "{received}"
    );
    // Streamed, with seq 0 and the msgId as its id.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = String::new();
    while !seen.contains(&ulid(5)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("the ephemeral message is streamed")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(r#""seq":0"#), "{seen}");
    assert!(s.log().is_empty(), "not stored");
    // Not deduplicated: the real server stores nothing to find it by.
    assert_eq!(post(&s, Api::Mls, &b).await.status(), 200);
    assert!(s.log().is_empty());
    let sends = s.sends();
    assert_eq!(sends.len(), 2);
    assert!(sends.iter().all(|a| a.ephemeral && a.seq == 0));
}

#[tokio::test]
async fn an_mlschat_send_of_another_epoch_gets_409_even_for_a_resent_msg_id() {
    let s = server(Faults::default()).await;
    let first = answer(post(&s, Api::Chat, &body(&ulid(1), 512)).await).await;
    assert_eq!(first.0, 200);
    let mut stale = body(&ulid(1), 512);
    stale["epoch"] = 3.into();
    // The real handler checks the epoch before it looks the msgId up.
    assert_eq!(answer(post(&s, Api::Chat, &stale).await).await, empty(409));
    assert_eq!(stored(&s).len(), 1);
    // The SSE era does not enforce the epoch (67_).
    let mut behind = body(&ulid(2), 512);
    behind["epoch"] = 3.into();
    assert_eq!(post(&s, Api::Mls, &behind).await.status(), 200);
}

#[tokio::test]
async fn a_msg_id_sent_on_one_api_is_replayed_on_the_other() {
    let s = server(Faults::default()).await;
    let a: Value = post(&s, Api::Mls, &body(&ulid(1), 512))
        .await
        .json()
        .await
        .unwrap();
    let b: Value = post(&s, Api::Chat, &body(&ulid(1), 512))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["messageId"], b["messageId"]);
    assert_eq!(a["seq"], b["seq"]);
    assert_eq!(stored(&s).len(), 1);
}

// ---- send faults ----------------------------------------------------------------------

/// Faults with one send knob at `per_mille`.
fn send_fault(knob: &str, per_mille: u16) -> Faults {
    let mut f = Faults::default();
    match knob {
        "send_error" => f.send_error = per_mille,
        "send_reset" => f.send_reset = per_mille,
        "send_applied_error" => f.send_applied_error = per_mille,
        "send_applied_reset" => f.send_applied_reset = per_mille,
        "send_slow" => f.send_slow = per_mille,
        other => panic!("no knob {other}"),
    }
    f.send_delay = Duration::from_millis(400);
    f
}

#[tokio::test]
async fn a_send_refused_by_a_fault_is_not_applied() {
    for api in BOTH {
        // A 500 with an empty body.
        let s = server(send_fault("send_error", 1000)).await;
        for n in 0..3 {
            let r = post(&s, api, &body(&ulid(n), 512)).await;
            assert_eq!(answer(r).await, empty(500), "{api:?}");
        }
        assert!(stored(&s).is_empty(), "{api:?}");
        assert!(s.sends().is_empty());
        assert_eq!(s.fault_counts().get("send_error"), 3);

        // The connection is closed before any answer.
        let s = server(send_fault("send_reset", 1000)).await;
        for n in 0..3 {
            let r = try_post(
                &reqwest::Client::new(),
                &s,
                api,
                &body(&ulid(n), 512).to_string(),
            )
            .await;
            let e = r.expect_err("no answer at all");
            assert!(!e.is_timeout() && e.status().is_none(), "{api:?}: {e:?}");
        }
        assert!(stored(&s).is_empty(), "{api:?}");
        assert!(s.sends().is_empty());
        assert_eq!(s.fault_counts().get("send_reset"), 3);
    }
}

/// Sends `msg` until it is answered 200 (as a client's retry would); returns the answer's
/// body and how many attempts failed.
async fn until_answered(s: &DevServer, api: Api, msg: &Value) -> (String, u32) {
    let client = reqwest::Client::new();
    for failed in 0..50 {
        if let Ok(r) = try_post(&client, s, api, &msg.to_string()).await {
            if r.status() == 200 {
                return (r.text().await.unwrap(), failed);
            }
            assert_eq!(r.status(), 500, "{api:?}");
        }
    }
    panic!("{api:?}: never answered");
}

#[tokio::test]
async fn a_send_whose_answer_is_lost_is_stored_once_and_a_retry_gets_the_first_answer() {
    for api in BOTH {
        for knob in ["send_applied_error", "send_applied_reset"] {
            let s = server(send_fault(knob, 500)).await;
            let mut lost = 0;
            for n in 0..12 {
                let msg = body(&ulid(n), 512);
                let (text, failed) = until_answered(&s, api, &msg).await;
                lost += failed;
                let v: Value = serde_json::from_str(&text).unwrap();
                let id = v["messageId"].as_str().unwrap();
                // Exactly once in the log, at the seq the answer gives.
                let copies: Vec<_> = stored(&s).into_iter().filter(|(_, i)| i == id).collect();
                assert_eq!(copies, vec![(v["seq"].as_u64().unwrap(), id.to_string())]);
                // The first answer is the one every later resend gets.
                let (again, failed) = until_answered(&s, api, &msg).await;
                lost += failed;
                assert_eq!(again, text, "{api:?} {knob}");
            }
            assert!(lost > 0, "{api:?} {knob}: the fault never fired");
            assert_eq!(
                s.fault_counts().get(knob),
                u64::from(lost),
                "{api:?} {knob}"
            );
            assert_eq!(stored(&s).len(), 12, "{api:?} {knob}: each message once");
            assert_eq!(s.sends().len(), 12);
        }
    }
}

#[tokio::test]
async fn a_slow_send_is_applied_at_once_and_answered_after_the_delay() {
    for api in BOTH {
        let s = server(send_fault("send_slow", 1000)).await;
        let started = Instant::now();
        let msg = body(&ulid(1), 512);
        let send = tokio::spawn({
            let url = format!("{}/xrpc/{}", s.base_url(), api.nsid());
            let t = token(api.nsid());
            async move {
                let r = reqwest::Client::new()
                    .post(url)
                    .bearer_auth(t)
                    .body(msg.to_string())
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), started.elapsed())
            }
        });
        // Committed before it is answered: a page has it while the answer waits.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(stored(&s).len(), 1, "{api:?}");
        let (status, took) = send.await.unwrap();
        assert_eq!(status, 200);
        assert!(took >= Duration::from_millis(400), "{api:?}: {took:?}");
        assert_eq!(s.fault_counts().get("send_slow"), 1);
    }
}

#[tokio::test]
async fn send_faults_are_a_function_of_the_seed() {
    async fn run(seed: u64, api: Api) -> Vec<u16> {
        let mut o = options(Faults {
            send_error: 300,
            send_applied_error: 300,
            ..Faults::default()
        });
        o.seed = seed;
        let s = DevServer::start(o).await.unwrap();
        s.create_convo("c");
        let mut statuses = Vec::new();
        for n in 0..20 {
            statuses.push(post(&s, api, &body(&ulid(n), 512)).await.status().as_u16());
        }
        statuses
    }
    for api in BOTH {
        let a = run(11, api).await;
        assert_eq!(a, run(11, api).await);
        assert!(a.contains(&500) && a.contains(&200), "{a:?}");
        assert_ne!(a, run(12, api).await);
    }
}

#[test]
fn the_hostile_profile_has_send_faults() {
    let f = Profile::Hostile.faults();
    assert!(f.send_error > 0 && f.send_reset > 0);
    assert!(f.send_applied_error > 0 && f.send_applied_reset > 0);
    assert!(f.send_slow > 0 && !f.send_delay.is_zero());
    assert_eq!(Profile::Calm.faults().send_applied_reset, 0);
}

/// Reads an SSE stream until `until` holds for what came so far (3 s at most).
async fn read_until(stream: &mut reqwest::Response, until: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = String::new();
    while !until(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    seen
}

#[tokio::test]
async fn an_sse_era_resend_is_streamed_again_as_the_real_fan_out_runs_again() {
    let s = server(Faults::default()).await;
    let mut stream = reqwest::Client::new()
        .get(format!(
            "{}/xrpc/blue.catbird.mls.streamConvoEvents?convoId=c",
            s.base_url()
        ))
        .bearer_auth("dev-secret")
        .send()
        .await
        .unwrap();
    let v: Value = post(&s, Api::Mls, &body(&ulid(1), 512))
        .await
        .json()
        .await
        .unwrap();
    let id = v["messageId"].as_str().unwrap().to_string();
    assert_eq!(post(&s, Api::Mls, &body(&ulid(1), 512)).await.status(), 200);
    let seen = read_until(&mut stream, |t| t.matches(id.as_str()).count() >= 2).await;
    assert_eq!(seen.matches(id.as_str()).count(), 2, "{seen}");
    let cursors: Vec<&str> = seen
        .split(r#""cursor":""#)
        .skip(1)
        .map(|c| &c[..26])
        .collect();
    assert_eq!(cursors.len(), 2);
    assert_ne!(
        cursors[0], cursors[1],
        "a new cursor for the second fan-out"
    );
    assert_eq!(stored(&s).len(), 1, "stored once");
}

#[tokio::test]
async fn the_same_idempotency_key_gets_the_first_answer_in_any_conversation() {
    for api in BOTH {
        let s = server(Faults::default()).await;
        s.create_convo("d");
        let mut a = body(&ulid(1), 512);
        a["idempotencyKey"] = "7a171574-1c2b-43c7-81af-0330ce51f160".into();
        let mut b = a.clone();
        b["msgId"] = ulid(2).into();
        b["convoId"] = "d".into();
        let first = answer(post(&s, api, &a).await).await;
        assert_eq!(first.0, 200);
        assert_eq!(answer(post(&s, api, &b).await).await, first, "{api:?}");
        assert_eq!(s.log().len(), 1);
    }
}

#[tokio::test]
async fn an_mlschat_typing_send_needs_membership_and_stores_nothing() {
    let s = server(Faults::default()).await;
    let mut typing = body(&ulid(1), 512);
    typing["delivery"] = "ephemeral".into();
    assert_eq!(
        post(&s, Api::Chat, &typing)
            .await
            .json::<Value>()
            .await
            .unwrap(),
        json!({"success": true})
    );
    s.leave("c");
    assert_eq!(answer(post(&s, Api::Chat, &typing).await).await, empty(403));
    typing["delivery"] = "carrier-pigeon".into();
    assert_eq!(answer(post(&s, Api::Chat, &typing).await).await, empty(400));
    assert!(s.log().is_empty() && s.sends().is_empty());
}

#[tokio::test]
async fn the_body_is_read_before_the_tokens_method_and_jti_are_checked() {
    // The real handlers extract the JSON body before `enforce_standard` (lxm, jti): an
    // unreadable body is 400 whatever the method in the token, and does not use its jti up.
    for api in BOTH {
        let mut o = Options::new(Profile::Hostile, 7);
        o.faults = Faults::default();
        let s = DevServer::start(o).await.unwrap();
        s.create_convo("c");
        let client = reqwest::Client::new();
        let send = |t: String, raw: String| {
            client
                .post(format!("{}/xrpc/{}", s.base_url(), api.nsid()))
                .bearer_auth(t)
                .body(raw)
                .send()
        };
        let wrong = token("blue.catbird.mls.getMessages");
        assert_eq!(
            send(wrong, "{".into()).await.unwrap().status(),
            400,
            "{api:?}"
        );
        let t = token(api.nsid());
        assert_eq!(send(t.clone(), "{".into()).await.unwrap().status(), 400);
        let r = send(t, body(&ulid(1), 512).to_string()).await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "{api:?}: the jti was not used by the unreadable body"
        );
    }
}

#[tokio::test]
async fn a_clients_message_is_never_made_ephemeral_a_commit_or_expired_by_the_faults() {
    for api in BOTH {
        let mut o = Options::new(Profile::FlakyMobile, 7);
        o.faults = Faults {
            ephemeral: 1000,
            commit: 1000,
            epoch_back: 1000,
            expire: 1000,
            expire_max: Duration::from_millis(20),
            ..Faults::default()
        };
        let s = DevServer::start(o).await.unwrap();
        s.create_convo("c");
        for n in 0..5 {
            let v: Value = post(&s, api, &body(&ulid(n), 512))
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(
                (v["seq"].as_u64(), v["epoch"].as_u64()),
                (Some(n + 1), Some(0))
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(stored(&s).len(), 5, "{api:?}");
        assert!(s.expired().is_empty());
        assert!(s.sends().iter().all(|a| !a.ephemeral && a.seq > 0));
        // The generated traffic still gets them.
        let generated = s.post("c", vec![1; 64]);
        assert_eq!(generated.seq, 0, "made ephemeral");
    }
}

#[tokio::test]
async fn a_negative_epoch_is_unreadable_in_the_sse_era_and_another_epoch_on_mlschat() {
    let s = server(Faults::default()).await;
    let mut b = body(&ulid(1), 512);
    b["epoch"] = (-1).into();
    // 168f1c5's lexicon: `minimum: 0`; 5278d0c reads an i64 and compares it.
    assert_eq!(answer(post(&s, Api::Mls, &b).await).await, empty(400));
    assert_eq!(answer(post(&s, Api::Chat, &b).await).await, empty(409));
}

#[tokio::test]
async fn under_the_hostile_profile_a_retrying_client_stores_each_message_exactly_once() {
    for api in BOTH {
        let mut o = Options::new(Profile::Hostile, 21);
        o.faults.rate_limits = None;
        o.faults.send_delay = Duration::from_millis(100);
        let s = DevServer::start(o).await.unwrap();
        s.create_convo("c");
        let client = reqwest::Client::new();
        let mut answers = Vec::new();
        let mut failed = 0;
        for n in 0..40 {
            let msg = body(&ulid(n), 512).to_string();
            let text = loop {
                // A fresh token each time: hostile takes each once.
                match try_post(&client, &s, api, &msg).await {
                    Ok(r) if r.status() == 200 => break r.text().await.unwrap(),
                    Ok(r) => assert_eq!(r.status(), 500, "{api:?}"),
                    Err(e) => assert!(e.status().is_none(), "{e:?}"),
                }
                failed += 1;
            };
            answers.push(serde_json::from_str::<Value>(&text).unwrap());
        }
        assert!(failed > 0, "{api:?}: no send fault in 40 sends");
        // Late commits become visible within `late_max`.
        tokio::time::sleep(s.options().faults.late_max + Duration::from_millis(200)).await;
        let log = stored(&s);
        assert_eq!(log.len(), 40, "{api:?}: each message once");
        for a in &answers {
            let id = a["messageId"].as_str().unwrap();
            let seq = a["seq"].as_u64().unwrap();
            assert_eq!(log.iter().filter(|(_, i)| i == id).count(), 1, "{api:?}");
            assert!(log.contains(&(seq, id.to_string())), "{api:?}: {a}");
        }
        assert_eq!(s.sends().len(), 40);
    }
}
