//! The dev server's mlsChat API over real sockets on 127.0.0.1: the subscription ticket,
//! the WebSocket (refusals, pings, frames, global mode, cursors, faults) and the REST side
//! (`getMessages`, `sendMessage`), each frame and answer decoded with `gapless-catbird` and
//! each behaviour the real server's as `shared/catbird/ws/README.md` records it.

use futures_util::{SinkExt, StreamExt};
use gapless::StreamEvent;
use gapless_catbird::mlschat::{GetMessagesResponse, SendMessage, SendMessageAnswer};
use gapless_catbird::realtime::{decode_frame, ClientFrame, Frame, Payload, Ticket};
use gapless_catbird::{
    Limits, MLSCHAT_GET_MESSAGES, MLSCHAT_SEND_MESSAGE, MLSCHAT_SUBSCRIBE_EVENTS,
    MLSCHAT_SUBSCRIPTION_TICKET,
};
use gapless_devserver::{mint_token, DevServer, FaultCounts, Faults, Options, Profile};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

static NONCE: AtomicU64 = AtomicU64::new(1);

fn token(nsid: &str) -> String {
    mint_token("dev-secret", nsid, NONCE.fetch_add(1, Ordering::Relaxed))
}

fn options(faults: Faults) -> Options {
    let mut options = Options::new(Profile::Calm, 7);
    options.faults = faults;
    options
}

async fn server(faults: Faults) -> DevServer {
    DevServer::start(options(faults)).await.unwrap()
}

// ---- the ticket and the socket --------------------------------------------------------

async fn ticket_request(s: &DevServer, body: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!(
            "{}/xrpc/{MLSCHAT_SUBSCRIPTION_TICKET}",
            s.base_url()
        ))
        .bearer_auth(token(MLSCHAT_SUBSCRIPTION_TICKET))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// A ticket for one conversation, or (`None`) a global one.
async fn ticket(s: &DevServer, convo: Option<&str>) -> Ticket {
    let body = match convo {
        Some(c) => serde_json::json!({ "convoIds": [c] }).to_string(),
        None => "{}".to_string(),
    };
    let r = ticket_request(s, &body).await;
    assert_eq!(r.status(), 200);
    Ticket::decode(&r.bytes().await.unwrap()).unwrap()
}

fn socket_url(s: &DevServer, ticket: &Ticket, cursor: Option<&str>) -> String {
    ticket
        .socket_url(&s.base_url(), cursor.map(gapless::Cursor::from).as_ref())
        .unwrap()
}

async fn connect(url: &str) -> Ws {
    connect_async(url).await.unwrap().0
}

/// Connects with a fresh ticket and reads the Ping the server sends at once.
async fn open(s: &DevServer, convo: Option<&str>, cursor: Option<&str>) -> Ws {
    let t = ticket(s, convo).await;
    let mut ws = connect(&socket_url(s, &t, cursor)).await;
    assert_eq!(
        next(&mut ws, Duration::from_secs(2)).await,
        Some(Got::Ping),
        "a Ping right after the upgrade"
    );
    ws
}

/// A refused upgrade: its status and body.
async fn refused(url: &str) -> (u16, Vec<u8>, Option<String>) {
    match connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            response.body().clone().unwrap_or_default(),
            response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string()),
        ),
        Ok(_) => panic!("upgraded: {url}"),
        Err(e) => panic!("{e}"),
    }
}

#[derive(Debug, PartialEq)]
enum Got {
    Ping,
    Frame(Frame),
    /// The connection ended; whether the server sent a close frame first.
    Ended {
        close_frame: bool,
    },
}

/// The next thing the server sends, or `None` if nothing comes within `wait`.
async fn next(ws: &mut Ws, wait: Duration) -> Option<Got> {
    loop {
        let got = match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return None,
            Ok(got) => got,
        };
        return Some(match got {
            Some(Ok(Message::Ping(p))) => {
                assert!(p.is_empty(), "an empty Ping");
                Got::Ping
            }
            Some(Ok(Message::Binary(b))) => {
                Got::Frame(decode_frame(&b, &Limits::default()).unwrap())
            }
            Some(Ok(Message::Close(_))) => Got::Ended { close_frame: true },
            Some(Ok(Message::Pong(_))) => continue,
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(_)) | None => Got::Ended { close_frame: false },
        });
    }
}

/// Every frame until nothing has come for `quiet` (Pings skipped), and whether the
/// connection ended.
async fn frames(ws: &mut Ws, quiet: Duration) -> (Vec<Frame>, bool) {
    let mut out = Vec::new();
    loop {
        match next(ws, quiet).await {
            None => return (out, false),
            Some(Got::Ping) => {}
            Some(Got::Frame(f)) => out.push(f),
            Some(Got::Ended { close_frame }) => {
                assert!(!close_frame, "the server never sends a close frame");
                return (out, true);
            }
        }
    }
}

/// `frames` until `n` frames came (or `wait` passed).
async fn frames_n(ws: &mut Ws, n: usize, wait: Duration) -> Vec<Frame> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(ws, left).await {
            Some(Got::Frame(f)) => out.push(f),
            Some(Got::Ping) => {}
            Some(Got::Ended { .. }) | None => break,
        }
    }
    out
}

/// A frame's message: `(convo, seq, id)`.
fn message(f: &Frame) -> Option<(String, u64, String)> {
    match &f.payload {
        Payload::Event(StreamEvent::Message { message, .. }) => Some((
            f.convo.as_ref().unwrap().to_string(),
            message.seq.0,
            message.id.to_string(),
        )),
        _ => None,
    }
}

fn cursor_of(f: &Frame) -> String {
    match &f.payload {
        Payload::Event(e) => e.cursor().unwrap().as_str().to_string(),
        Payload::Error(e) => panic!("an error frame {e:?}"),
    }
}

fn frame_seqs(frames: &[Frame]) -> Vec<i64> {
    frames.iter().map(|f| f.seq.unwrap()).collect()
}

fn other_kind(f: &Frame) -> Option<(&str, Value)> {
    match &f.payload {
        Payload::Event(StreamEvent::Other { kind, body, .. }) => {
            Some((kind.as_str(), serde_json::from_str(body).unwrap()))
        }
        _ => None,
    }
}

#[tokio::test]
async fn a_ticket_opens_a_socket_whose_frames_are_the_logs_messages() {
    let s = server(Faults::default()).await;
    s.create_convo("c");
    let t = ticket(&s, Some("c")).await;
    assert_eq!(
        t.endpoint.as_deref(),
        Some(format!("ws://{}/xrpc/{MLSCHAT_SUBSCRIBE_EVENTS}", s.addr()).as_str()),
        "this server's own socket"
    );
    let expires = t.expires_at.as_deref().unwrap();
    let expires = humantime::parse_rfc3339(expires).unwrap();
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(25) && left <= Duration::from_secs(30));

    let mut ws = connect(&socket_url(&s, &t, None)).await;
    assert_eq!(next(&mut ws, Duration::from_secs(2)).await, Some(Got::Ping));
    for n in 0..3u8 {
        s.post("c", vec![n; 512]);
    }
    let got = frames_n(&mut ws, 3, Duration::from_secs(3)).await;
    assert_eq!(
        frame_seqs(&got),
        vec![1, 2, 3],
        "numbered per connection from 1"
    );
    let log: Vec<(String, u64, String)> = s.log();
    assert_eq!(
        got.iter().map(|f| message(f).unwrap()).collect::<Vec<_>>(),
        log
    );
    let Payload::Event(StreamEvent::Message { message, cursor }) = &got[0].payload else {
        unreachable!()
    };
    assert_eq!(message.payload, vec![0; 512]);
    let created = message.created_at.as_deref().unwrap();
    assert!(created.ends_with('Z'), "{created}");
    assert_eq!(
        created.split('.').nth(1).unwrap().len(),
        10,
        "nanoseconds: {created}"
    );
    assert_eq!(cursor.as_ref().unwrap().as_str().len(), 26);
    assert!(
        frames(&mut ws, Duration::from_millis(200))
            .await
            .0
            .is_empty(),
        "nothing else"
    );
}

#[tokio::test]
async fn a_message_frame_is_laid_out_as_the_real_servers() {
    // Recording 007: a 512-byte message, seq 1 at epoch 0, the connection's first frame, in
    // a conversation with a 32-character id. Ours differs only in the values (id, cursor,
    // time, bytes), which have the same lengths: so the same keys, in the same order, with
    // the same CBOR types make the same length, and the header is byte for byte the same.
    let recorded = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../adapters/catbird/tests/recordings/ws/007-ws1-msg1-messageEvent.bin"),
    )
    .unwrap();
    let convo = "2e3257c195dbb51e6a2af0330eeb9087";
    let s = server(Faults::default()).await;
    s.create_convo(convo);
    let t = ticket(&s, Some(convo)).await;
    let mut ws = connect(&socket_url(&s, &t, None)).await;
    assert_eq!(next(&mut ws, Duration::from_secs(2)).await, Some(Got::Ping));
    s.post(convo, vec![0x75; 512]);
    let ours = loop {
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => break b,
            Ok(Some(Ok(Message::Ping(_)))) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(ours.len(), recorded.len());
    assert_eq!(ours[..21], recorded[..21], "the header");
    let (a, b) = (
        decode_frame(&ours, &Limits::default()).unwrap(),
        decode_frame(&recorded, &Limits::default()).unwrap(),
    );
    assert_eq!((a.seq, &a.convo), (b.seq, &b.convo));
}

#[tokio::test]
async fn refusals_are_plain_http_before_the_upgrade() {
    let mut o = options(Faults::default());
    o.ticket_ttl = Duration::from_secs(1);
    let s = DevServer::start(o).await.unwrap();
    s.create_convo("c");
    let base = format!("ws://{}/xrpc/{MLSCHAT_SUBSCRIBE_EVENTS}", s.addr());

    assert_eq!(
        refused(&format!("{base}?ticket=not-a-ticket")).await,
        (401, vec![], None),
        "a garbage ticket (077)"
    );
    assert_eq!(
        refused(&format!("{base}?ticket=dev-secret")).await.0,
        401,
        "a user token as the ticket (079)"
    );
    let (status, body, content_type) = refused(&format!("{base}?")).await;
    assert_eq!(status, 400, "no ticket (078)");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "Failed to deserialize query string: missing field `ticket`"
    );
    assert!(content_type.unwrap().starts_with("text/plain"));

    // A ticket opens sockets again and again within its life (080, 081), then 401 (087).
    let t = ticket(&s, Some("c")).await;
    let url = socket_url(&s, &t, None);
    let first = connect(&url).await;
    let second = connect(&url).await;
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(refused(&url).await, (401, vec![], None), "expired");

    // The ticket itself: 403 with an empty body for a conversation that does not exist.
    let r = ticket_request(&s, r#"{"convoIds":["nope"]}"#).await;
    assert_eq!(r.status(), 403);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = reqwest::Client::new()
        .post(format!(
            "{}/xrpc/{MLSCHAT_SUBSCRIPTION_TICKET}",
            s.base_url()
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a token is needed");
}

#[tokio::test]
async fn the_sixth_socket_gets_429_until_one_closes() {
    let s = server(Faults::default()).await;
    s.create_convo("c");
    let t = ticket(&s, Some("c")).await;
    let url = socket_url(&s, &t, None);
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(connect(&url).await);
    }
    assert_eq!(s.open_sockets(), 5);
    assert_eq!(refused(&url).await, (429, vec![], None), "082");
    drop(open.pop());
    for _ in 0..100 {
        if s.open_sockets() < 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.open_sockets(), 4, "a closed socket gives its place back");
    open.push(connect(&url).await);
    assert_eq!(s.open_sockets(), 5);
}

#[tokio::test]
async fn pings_come_at_once_and_every_period() {
    let mut o = options(Faults::default());
    o.ws_ping = Duration::from_millis(150);
    let s = DevServer::start(o).await.unwrap();
    s.create_convo("c");
    let mut ws = open(&s, Some("c"), None).await;
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(500) {
        match next(&mut ws, Duration::from_secs(2)).await {
            Some(Got::Ping) => pings += 1,
            other => panic!("{other:?}"),
        }
    }
    // At 150, 300 and 450 ms (a busy machine may delay one past the window).
    assert!((2..=4).contains(&pings), "{pings} pings in 500 ms");
    // A client's WebSocket Ping gets a Pong (021).
    ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    let pong = loop {
        match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) => break p,
            Ok(Some(Ok(Message::Ping(_)))) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(&pong[..], b"hi");
}

#[tokio::test]
async fn a_global_socket_carries_the_conversations_of_connect_time_only() {
    let s = server(Faults::default()).await;
    s.create_convo("a");
    s.create_convo("b");
    let mut ws = open(&s, None, None).await;
    s.create_convo("later");
    for c in ["a", "later", "b", "a", "later"] {
        s.post(c, vec![1]);
    }
    let got = frames_n(&mut ws, 3, Duration::from_secs(3)).await;
    assert_eq!(
        frames(&mut ws, Duration::from_millis(300)).await,
        (vec![], false)
    );
    let convos: Vec<String> = got.iter().map(|f| message(f).unwrap().0).collect();
    assert_eq!(
        convos,
        ["a", "b", "a"],
        "never the conversation created later (070-073)"
    );
    assert_eq!(frame_seqs(&got), vec![1, 2, 3]);

    // A new global socket has it.
    let mut ws = open(&s, None, None).await;
    s.post("later", vec![2]);
    let got = frames_n(&mut ws, 1, Duration::from_secs(2)).await;
    assert_eq!(message(&got[0]).unwrap().0, "later");
}

#[tokio::test]
async fn a_global_socket_of_no_conversation_is_dropped_at_once() {
    let s = server(Faults::default()).await;
    let t = ticket(&s, None).await;
    let mut ws = connect(&socket_url(&s, &t, None)).await;
    assert_eq!(
        next(&mut ws, Duration::from_secs(2)).await,
        Some(Got::Ended { close_frame: false }),
        "084-086: TCP closed, no Ping, no close frame"
    );
}

/// Crockford base32, as the cursors are written (26 characters, 130 bits).
fn crockford(c: &str) -> u128 {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    c.bytes().fold(0u128, |v, b| {
        (v << 5) | ALPHABET.iter().position(|&a| a == b).unwrap() as u128
    })
}

fn uncrockford(mut v: u128) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut out = vec![b'0'; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v & 31) as usize];
        v >>= 5;
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn a_cursor_replays_nothing_and_only_filters_live_events() {
    let s = server(Faults::default()).await;
    s.create_convo("c");
    let mut ws = open(&s, Some("c"), None).await;
    s.post("c", vec![1]);
    let got = frames_n(&mut ws, 1, Duration::from_secs(2)).await;
    let cursor = cursor_of(&got[0]);
    drop(ws);

    // Away: two messages (and a commit) the socket will never replay (041).
    s.post("c", vec![2]);
    s.post("c", vec![3]);
    let mut ws = open(&s, Some("c"), Some(&cursor)).await;
    assert!(
        frames(&mut ws, Duration::from_millis(300))
            .await
            .0
            .is_empty(),
        "a resume replays nothing"
    );
    s.post("c", vec![4]);
    let got = frames_n(&mut ws, 1, Duration::from_secs(2)).await;
    assert_eq!(message(&got[0]).unwrap().1, 4);
    assert_eq!(got[0].seq, Some(1), "numbered from 1 again (043)");
    drop(ws);

    // A cursor above the next two events' cursors drops them, and they still use up
    // frame numbers: the first delivered frame is seq 3 (061-063).
    let last = crockford(&cursor_of(&got[0]));
    let ahead = uncrockford((((last >> 64) + 2) << 64) | u128::from(u64::MAX));
    let mut ws = open(&s, Some("c"), Some(&ahead)).await;
    for n in 5..=7 {
        s.post("c", vec![n]);
    }
    let got = frames_n(&mut ws, 1, Duration::from_secs(2)).await;
    assert_eq!(
        got.iter()
            .map(|f| (f.seq.unwrap(), message(f).unwrap().1))
            .collect::<Vec<_>>(),
        vec![(3, 7)]
    );
    assert_eq!(
        frames(&mut ws, Duration::from_millis(200)).await,
        (vec![], false)
    );
}

#[tokio::test]
async fn bad_cursors_are_never_errors_garbage_blackholes_the_stream() {
    let s = server(Faults::default()).await;
    s.create_convo("c");
    let mut garbage = open(&s, Some("c"), Some("garbage")).await;
    let mut zero = open(&s, Some("c"), Some("00000000000000000000000000")).await;
    // A NUL byte: a BackfillFailed error frame before the Ping, then live delivery (053-055).
    let t = ticket(&s, Some("c")).await;
    let mut nul = connect(&socket_url(&s, &t, Some("01M8\0"))).await;
    let Some(Got::Frame(error)) = next(&mut nul, Duration::from_secs(2)).await else {
        panic!("an error frame first")
    };
    let Payload::Error(e) = &error.payload else {
        panic!("{error:?}")
    };
    assert_eq!(e.error, "BackfillFailed");
    assert_eq!(error.seq, None);
    assert_eq!(
        next(&mut nul, Duration::from_secs(2)).await,
        Some(Got::Ping)
    );

    for n in 0..3 {
        s.post("c", vec![n]);
    }
    assert_eq!(
        frames(&mut garbage, Duration::from_millis(300)).await,
        (vec![], false),
        "lowercase text sorts above every cursor: nothing, and no error (049/050)"
    );
    assert_eq!(
        frames_n(&mut zero, 3, Duration::from_secs(2)).await.len(),
        3,
        "057-059"
    );
    assert_eq!(
        frame_seqs(&frames_n(&mut nul, 3, Duration::from_secs(2)).await),
        vec![1, 2, 3]
    );
}

async fn socket_with(faults: Faults, posts: u8) -> (Vec<Frame>, bool, DevServer) {
    let s = server(faults).await;
    s.create_convo("c");
    let mut ws = open(&s, Some("c"), None).await;
    for n in 0..posts {
        s.post("c", vec![n]);
    }
    let (got, ended) = frames(&mut ws, Duration::from_millis(600)).await;
    (got, ended, s)
}

fn seqs_of(frames: &[Frame]) -> Vec<u64> {
    frames.iter().filter_map(message).map(|m| m.1).collect()
}

#[tokio::test]
async fn slow_consumer_loss_is_silent_and_frame_seqs_stay_contiguous() {
    let (got, ended, s) = socket_with(
        Faults {
            slow_consumer: 400,
            ..Faults::default()
        },
        40,
    )
    .await;
    assert!(!ended, "the connection stays open (130)");
    let lost = s.fault_counts().get("slow_consumer");
    assert!(lost > 0 && lost < 40, "{lost}");
    assert_eq!(got.len() as u64, 40 - lost);
    assert!(
        got.iter().all(|f| message(f).is_some()),
        "no infoEvent, no error frame: nothing says so"
    );
    let contiguous: Vec<i64> = (1..=got.len() as i64).collect();
    assert_eq!(
        frame_seqs(&got),
        contiguous,
        "no gap in the frame seqs (128)"
    );
    let seqs = seqs_of(&got);
    assert!(
        seqs.windows(2).any(|w| w[1] > w[0] + 1),
        "gaps in the message seqs"
    );
}

#[tokio::test]
async fn socket_faults_drop_duplicate_reorder_and_cut() {
    let (got, _, s) = socket_with(
        Faults {
            drop: 1000,
            ..Faults::default()
        },
        3,
    )
    .await;
    assert!(got.is_empty());
    assert_eq!(s.fault_counts().get("drop"), 3);

    let (got, _, _) = socket_with(
        Faults {
            duplicate: 1000,
            ..Faults::default()
        },
        2,
    )
    .await;
    assert_eq!(frame_seqs(&got), vec![1, 1, 2, 2], "the same frame twice");
    assert_eq!(seqs_of(&got), vec![1, 1, 2, 2]);

    let (got, _, _) = socket_with(
        Faults {
            reorder: 1000,
            ..Faults::default()
        },
        2,
    )
    .await;
    assert_eq!(
        frame_seqs(&got),
        vec![2, 1],
        "held back, sent after the next"
    );
    assert_eq!(seqs_of(&got), vec![2, 1]);

    // A drop loses a numbered frame: a gap in the frame seqs, unlike a slow consumer.
    let mut seen_gap = false;
    for seed in 0..20 {
        let mut o = options(Faults {
            drop: 300,
            ..Faults::default()
        });
        o.seed = seed;
        let s = DevServer::start(o).await.unwrap();
        s.create_convo("c");
        let mut ws = open(&s, Some("c"), None).await;
        for n in 0..10 {
            s.post("c", vec![n]);
        }
        let (got, _) = frames(&mut ws, Duration::from_millis(600)).await;
        let f = frame_seqs(&got);
        assert_eq!(
            f,
            seqs_of(&got).iter().map(|&s| s as i64).collect::<Vec<_>>()
        );
        if f.first() != Some(&1) || f.windows(2).any(|w| w[1] > w[0] + 1) {
            seen_gap = true;
            break;
        }
    }
    assert!(seen_gap);

    let (_, ended, s) = socket_with(
        Faults {
            cut: 1000,
            cut_after_max: Duration::from_millis(200),
            ..Faults::default()
        },
        0,
    )
    .await;
    assert!(
        ended,
        "the server dropped the connection, without a close frame"
    );
    assert_eq!(s.fault_counts().get("cut"), 1);
    for _ in 0..100 {
        if s.open_sockets() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.open_sockets(), 0);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_socket_fault_schedule() {
    async fn run(seed: u64) -> (Vec<(i64, u64)>, FaultCounts) {
        let mut o = Options::new(Profile::Hostile, seed);
        o.faults.cut = 0; // a cut's moment is timing; everything else is planned
        o.faults.late = 0;
        o.faults.expire = 0;
        o.faults.rate_limits = None;
        o.faults.slow_consumer = 100;
        let s = DevServer::start(o).await.unwrap();
        s.create_convo("c");
        let mut ws = open(&s, Some("c"), None).await;
        for n in 0..80u8 {
            s.post("c", vec![n]);
        }
        let (got, _) = frames(&mut ws, Duration::from_millis(800)).await;
        let schedule = got
            .iter()
            .map(|f| (f.seq.unwrap(), message(f).map_or(0, |m| m.1)))
            .collect();
        (schedule, s.fault_counts())
    }
    let (a, fa) = run(11).await;
    let (b, fb) = run(11).await;
    assert_eq!(a, b);
    assert_eq!(fa, fb);
    for knob in ["drop", "duplicate", "reorder", "slow_consumer"] {
        assert!(fa.get(knob) > 0, "{knob}: {fa:?}");
    }
    let (c, _) = run(12).await;
    assert_ne!(a, c);
}

#[tokio::test]
async fn ephemeral_messages_come_with_seq_zero_and_commits_never_come() {
    let (got, _, s) = socket_with(
        Faults {
            ephemeral: 1000,
            ..Faults::default()
        },
        1,
    )
    .await;
    assert_eq!(seqs_of(&got), vec![0], "an ephemeral messageEvent (014)");
    assert!(s.log().is_empty(), "and not stored");

    let (got, _, s) = socket_with(
        Faults {
            commit: 1000,
            ..Faults::default()
        },
        3,
    )
    .await;
    assert!(got.is_empty(), "commits are not pushed (022, 044)");
    assert_eq!(s.log().len(), 3, "getMessages has them");
}

// ---- getMessages ----------------------------------------------------------------------

async fn chat_get(s: &DevServer, query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!(
            "{}/xrpc/{MLSCHAT_GET_MESSAGES}?{query}",
            s.base_url()
        ))
        .bearer_auth(token(MLSCHAT_GET_MESSAGES))
        .send()
        .await
        .unwrap()
}

async fn chat_page(s: &DevServer, query: &str) -> (GetMessagesResponse, Value) {
    let r = chat_get(s, query).await;
    assert_eq!(r.status(), 200, "{query}");
    let body = r.bytes().await.unwrap();
    (
        GetMessagesResponse::decode(&body, &Limits::default()).unwrap(),
        serde_json::from_slice(&body).unwrap(),
    )
}

/// A `type=commit` answer, which is not a page (no `messages`).
async fn chat_commits(s: &DevServer, query: &str) -> Value {
    let r = chat_get(s, query).await;
    assert_eq!(r.status(), 200, "{query}");
    let raw: Value = r.json().await.unwrap();
    assert!(
        GetMessagesResponse::decode(raw.to_string().as_bytes(), &Limits::default()).is_err(),
        "never read as an empty page"
    );
    raw
}

fn page_seqs(p: &GetMessagesResponse) -> Vec<u64> {
    p.messages.iter().map(|m| m.seq).collect()
}

#[tokio::test]
async fn get_messages_pages_as_the_real_server() {
    let s = server(Faults::default()).await;
    for n in 0..120u8 {
        s.post("c", vec![n]);
    }
    // Without sinceSeq: the newest, newest first, lastSeq the smallest (102).
    let (p, raw) = chat_page(&s, "convoId=c&limit=5").await;
    assert_eq!(page_seqs(&p), vec![120, 119, 118, 117, 116]);
    assert_eq!(p.last_seq, Some(116));
    assert!(raw.get("gapInfo").is_none());
    assert_eq!(
        raw["commits"],
        Value::Array(vec![]),
        "type=all: the commits array"
    );
    let m = &raw["messages"][0];
    assert_eq!(m["messageType"], "app");
    let created = m["createdAt"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && created.split('.').nth(1).unwrap().len() == 4,
        "{created}"
    );
    // With it: seq > sinceSeq in (epoch, seq) order (103-109).
    let (p, _) = chat_page(&s, "convoId=c&sinceSeq=0&limit=5").await;
    assert_eq!(page_seqs(&p), vec![1, 2, 3, 4, 5]);
    assert_eq!(p.last_seq, Some(5));
    let (p, raw) = chat_page(&s, "convoId=c&sinceSeq=120").await;
    assert!(p.messages.is_empty());
    assert!(
        raw.get("lastSeq").is_none(),
        "left out on an empty page (109)"
    );
    // limit clamped to 1..=100, silently (117, 118); a negative sinceSeq is fine (119).
    assert_eq!(
        chat_page(&s, "convoId=c&sinceSeq=0&limit=500")
            .await
            .0
            .messages
            .len(),
        100
    );
    assert_eq!(
        chat_page(&s, "convoId=c&sinceSeq=0&limit=0")
            .await
            .0
            .messages
            .len(),
        1
    );
    assert_eq!(
        chat_page(&s, "convoId=c&sinceSeq=-5")
            .await
            .0
            .messages
            .len(),
        50
    );

    // Refusals (120-124).
    let r = chat_get(&s, "convoId=c&sinceSeq=abc").await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "InvalidRequest");
    assert_eq!(
        v["message"],
        "failed to decode request: invalid digit found in string"
    );
    let r = chat_get(&s, "sinceSeq=1").await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["message"],
        "failed to decode request: missing field `convoId`"
    );
    for query in [
        "convoId=c&type=bogus",
        "convoId=c&type=commit&fromEpoch=3&toEpoch=1",
        "convoId=c&type=commit&fromEpoch=-1",
    ] {
        let r = chat_get(&s, query).await;
        assert_eq!(r.status(), 400, "{query}");
        assert!(r.bytes().await.unwrap().is_empty(), "{query}");
    }
    let r = chat_get(&s, "convoId=nope").await;
    assert_eq!(
        (r.status().as_u16(), r.bytes().await.unwrap().len()),
        (403, 0)
    );
}

#[tokio::test]
async fn get_messages_type_app_keeps_commits_and_type_commit_lists_them() {
    let s2 = server(Faults {
        commit: 1000,
        ..Faults::default()
    })
    .await;
    for n in 0..3 {
        s2.post("c", vec![n]);
    }
    // type=app does not filter: commits stay, as messageType "commit" rows (110).
    let (p, raw) = chat_page(&s2, "convoId=c&sinceSeq=0&type=app").await;
    assert_eq!(page_seqs(&p), vec![1, 2, 3]);
    assert!(raw.get("commits").is_none());
    assert!(p
        .messages
        .iter()
        .all(|m| m.message_type.as_deref() == Some("commit")));
    // type=commit: the commits array, no paging (111); fromEpoch/toEpoch bound it (112, 113).
    let raw = chat_commits(&s2, "convoId=c&type=commit").await;
    assert_eq!(raw["convoId"], "c");
    let epochs: Vec<u64> = raw["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, vec![1, 2, 3]);
    let first = &raw["commits"][0];
    assert_eq!(first["sender"], Value::Null);
    assert!(first["commitData"]["$bytes"].is_string());
    assert_eq!(
        first["id"].as_str(),
        Some(p.messages[0].id.as_str()),
        "the row's id"
    );
    let raw = chat_commits(&s2, "convoId=c&type=commits&fromEpoch=2&toEpoch=2").await;
    assert_eq!(raw["commits"].as_array().unwrap().len(), 1);
    // type=all: every page repeats the whole commits array, ignoring sinceSeq and limit.
    let (p, raw) = chat_page(&s2, "convoId=c&sinceSeq=2&limit=1").await;
    assert_eq!(page_seqs(&p), vec![3]);
    assert_eq!(raw["commits"].as_array().unwrap().len(), 3);
    let (_, raw) = chat_page(&s2, "convoId=c&sinceSeq=0&fromEpoch=3").await;
    assert_eq!(raw["commits"].as_array().unwrap().len(), 1, "115");
}

#[tokio::test]
async fn get_messages_never_sends_gap_info_and_meets_the_fetch_faults() {
    let s = server(Faults {
        hole: 500,
        ..Faults::default()
    })
    .await;
    for n in 0..20 {
        s.post("c", vec![n]);
    }
    assert!(s.fault_counts().get("hole") > 0);
    let (_, raw) = chat_page(&s, "convoId=c&sinceSeq=0").await;
    assert!(raw.get("gapInfo").is_none());

    let s = server(Faults {
        fetch_error: 1000,
        ..Faults::default()
    })
    .await;
    s.create_convo("c");
    assert_eq!(chat_get(&s, "convoId=c&sinceSeq=0").await.status(), 500);
    assert_eq!(s.fault_counts().get("fetch_error"), 1);
}

// ---- sendMessage ----------------------------------------------------------------------

async fn chat_send(s: &DevServer, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/xrpc/{MLSCHAT_SEND_MESSAGE}", s.base_url()))
        .bearer_auth(token(MLSCHAT_SEND_MESSAGE))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

fn send_body(msg_id: &str, epoch: u64) -> Value {
    serde_json::from_slice(&SendMessage::new(&"c".into(), msg_id, &[7; 512], epoch).body()).unwrap()
}

#[tokio::test]
async fn send_message_answers_like_the_real_server() {
    let s = server(Faults::default()).await;
    s.create_convo("c");
    let mut ws = open(&s, Some("c"), None).await;
    let body = send_body("01M8KNDJRA3S4KYCQFQ3PH6FX0", 0);
    let r = chat_send(&s, &body).await;
    assert_eq!(r.status(), 200);
    let first = r.bytes().await.unwrap();
    let answer = SendMessageAnswer::decode(&first).unwrap();
    assert_eq!((answer.seq, answer.epoch), (1, 0));
    assert!(answer.received_at.ends_with('Z'));
    let got = frames_n(&mut ws, 1, Duration::from_secs(2)).await;
    assert_eq!(
        message(&got[0]).unwrap().2,
        answer.message_id,
        "the socket's id is the answer's messageId, not the msgId (006/007)"
    );
    // The same msgId again: the first answer, nothing emitted (010).
    let again = chat_send(&s, &body).await.bytes().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(s.log().len(), 1);
    assert!(
        frames_n(&mut ws, 1, Duration::from_millis(300))
            .await
            .is_empty(),
        "a resent msgId emits nothing on the socket"
    );
    // Another epoch: 409, empty (023). A paddedSize that is not the length: 400.
    let r = chat_send(&s, &send_body("01M8KNDJRA3S4KYCQFQ3PH6FX1", 1)).await;
    assert_eq!(
        (r.status().as_u16(), r.bytes().await.unwrap().len()),
        (409, 0)
    );
    let mut bad = send_body("01M8KNDJRA3S4KYCQFQ3PH6FX2", 0);
    bad["paddedSize"] = 1024.into();
    assert_eq!(chat_send(&s, &bad).await.status(), 400);

    // delivery: ephemeral → a typingEvent, the ciphertext dropped (011/012).
    let mut ephemeral = send_body("01M8KNDNJ7TA9PKN514G7ZY05V", 0);
    ephemeral["delivery"] = "ephemeral".into();
    let r: Value = chat_send(&s, &ephemeral).await.json().await.unwrap();
    assert_eq!(r, serde_json::json!({"success": true}));
    // addReaction → a reactionEvent (015/016).
    let mut reaction = send_body("01M8KNDPC2ZD8W7EQN7E2XV388", 0);
    reaction["delivery"] = "ephemeral".into();
    reaction["action"] = "addReaction".into();
    reaction["reactionEmoji"] = "👍".into();
    reaction["targetMessageId"] = answer.message_id.clone().into();
    let r: Value = chat_send(&s, &reaction).await.json().await.unwrap();
    assert_eq!(r["success"], true);
    assert!(r["reactedAt"].as_str().unwrap().ends_with("+00:00"));
    // A client's #typing frame comes back to the sender too (019/020).
    ws.send(Message::Binary(
        ClientFrame::Typing {
            convo: "c".into(),
            is_typing: false,
        }
        .encode()
        .into(),
    ))
    .await
    .unwrap();
    let got = frames_n(&mut ws, 3, Duration::from_secs(2)).await;
    assert_eq!(frame_seqs(&got), vec![2, 3, 4]);
    let kinds: Vec<(String, Value)> = got
        .iter()
        .map(|f| {
            let (k, b) = other_kind(f).unwrap();
            (k.rsplit_once('#').unwrap().1.to_string(), b)
        })
        .collect();
    assert_eq!(kinds[0].0, "typingEvent");
    assert_eq!(kinds[0].1["isTyping"], true);
    assert_eq!(kinds[1].0, "reactionEvent");
    assert_eq!(kinds[1].1["action"], "add");
    assert_eq!(kinds[1].1["messageId"], answer.message_id.as_str());
    assert_eq!(kinds[2].0, "typingEvent");
    assert_eq!(kinds[2].1["isTyping"], false);
    assert_eq!(kinds[2].1["convoId"], "c");
    assert_eq!(s.log().len(), 1, "none of them stored");
}

#[tokio::test]
async fn both_apis_serve_the_same_log_at_once() {
    let s = server(Faults::default()).await;
    s.create_convo("c");
    let mut ws = open(&s, Some("c"), None).await;
    let sse = reqwest::Client::new()
        .get(format!(
            "{}{}",
            s.base_url(),
            gapless_catbird::messages::stream_path_and_query(&"c".into(), None)
        ))
        .bearer_auth("dev-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    s.post("c", vec![1]);
    // Sent with the mlsChat API, read with the SSE-era one, and the other way round.
    let r = chat_send(&s, &send_body("01M8KNDJRA3S4KYCQFQ3PH6FX0", 0)).await;
    assert_eq!(r.status(), 200);
    let got = frames_n(&mut ws, 2, Duration::from_secs(2)).await;
    let on_socket: Vec<(String, u64, String)> = got.iter().filter_map(message).collect();
    assert_eq!(on_socket, s.log());
    let old = reqwest::Client::new()
        .get(format!(
            "{}/xrpc/{}?convoId=c&sinceSeq=0",
            s.base_url(),
            gapless_catbird::GET_MESSAGES
        ))
        .bearer_auth("dev-secret")
        .send()
        .await
        .unwrap();
    let old = gapless_catbird::messages::GetMessagesResponse::decode(
        &old.bytes().await.unwrap(),
        &Limits::default(),
    )
    .unwrap();
    let (new, _) = chat_page(&s, "convoId=c&sinceSeq=0").await;
    assert_eq!(
        old.messages.iter().map(|m| &m.id).collect::<Vec<_>>(),
        new.messages.iter().map(|m| &m.id).collect::<Vec<_>>()
    );
    assert_eq!(new.messages.len(), 2);
    drop(sse);
}
