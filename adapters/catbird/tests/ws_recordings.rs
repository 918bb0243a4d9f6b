//! The newest Catbird API as the real server spoke it (`tests/recordings/ws/`, copied from
//! `shared/catbird/ws/`): every WebSocket frame decodes to the values its `.json` holds, the
//! handshake refusals map to the right stream errors, and every `mlsChat` REST exchange
//! decodes. Random and truncated bytes never panic.

use gapless::{Permanent, StreamError, StreamEvent};
use gapless_catbird::mlschat::{
    GetMessages, GetMessagesResponse, MessageType, SendMessage, SendMessageAnswer,
};
use gapless_catbird::realtime::{
    decode_frame, encode_error_frame, encode_event_frame, subscribe_url, ClientFrame, ErrorFrame,
    Frame, Payload, Refusal, Ticket, TicketScope,
};
use gapless_catbird::status::ErrorAnswer;
use gapless_catbird::{DecodeError, Limits};
use proptest::prelude::*;
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CONVO: &str = "2e3257c195dbb51e6a2af0330eeb9087";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/recordings/ws")
}

fn files(ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

fn find(prefix: &str, ext: &str) -> PathBuf {
    files(ext)
        .into_iter()
        .find(|p| stem(p).starts_with(prefix))
        .unwrap_or_else(|| panic!("no recording {prefix}*.{ext}"))
}

/// A recorded WebSocket message: its payload and what the recorder said about it.
struct Recorded {
    name: String,
    bytes: Vec<u8>,
    meta: Value,
}

impl Recorded {
    fn opcode(&self) -> &str {
        self.meta["opcode_name"].as_str().unwrap_or("binary")
    }
    fn sent_by_client(&self) -> bool {
        self.meta["direction"] == "client->server"
    }
    fn body(&self) -> &Value {
        &self.meta["decoded"]["body"]
    }
}

fn recorded_frames() -> Vec<Recorded> {
    let all: Vec<_> = files("bin")
        .into_iter()
        .map(|p| Recorded {
            name: stem(&p),
            bytes: std::fs::read(&p).unwrap(),
            meta: serde_json::from_slice(&std::fs::read(p.with_extension("json")).unwrap())
                .unwrap(),
        })
        .collect();
    assert!(all.len() >= 38, "the frames are there: {}", all.len());
    all
}

fn frame(prefix: &str) -> Frame {
    let bytes = std::fs::read(find(prefix, "bin")).unwrap();
    decode_frame(&bytes, &Limits::default()).unwrap()
}

/// A recorded HTTP exchange: the request line, then the response.
struct Exchange {
    name: String,
    request_line: String,
    request_body: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// A query parameter of the request line.
    fn param(&self, key: &str) -> Option<String> {
        let target = self.request_line.split(' ').nth(1)?;
        let query = target.split_once('?')?.1;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// The recorder shortened long base64 strings to their first characters and
/// `...<N chars>` (N the full length); this puts back N characters (`A`s after the kept
/// ones) so that the shapes decode. Only the ciphertexts' contents differ from the wire.
fn expand_shortened(text: &str) -> String {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || "+/=_-".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("...<") {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let digits = after[4..].bytes().take_while(u8::is_ascii_digit).count();
        match after[4 + digits..].strip_prefix(" chars>") {
            Some(tail) if digits > 0 => {
                let kept = out.len() - out.trim_end_matches(is_b64).len();
                let total: usize = after[4..4 + digits].parse().unwrap();
                out.extend(std::iter::repeat_n('A', total - kept));
                rest = tail;
            }
            _ => {
                out.push_str(&after[..4]);
                rest = &after[4..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn exchange(path: &Path) -> Exchange {
    let text = expand_shortened(&std::fs::read_to_string(path).unwrap());
    let lines: Vec<&str> = text.lines().collect();
    let request_at = lines
        .iter()
        .position(|l| !l.starts_with('#'))
        .expect("a request line");
    let response_at = lines
        .iter()
        .rposition(|l| l.starts_with("HTTP/1.1 "))
        .expect("a status line");
    let request_head_end = lines[request_at..]
        .iter()
        .position(|l| l.is_empty())
        .map_or(response_at, |i| request_at + i);
    let request_body = lines[request_head_end..response_at]
        .join("\n")
        .trim()
        .to_string();
    let status = lines[response_at]
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let head_end = lines[response_at..]
        .iter()
        .position(|l| l.is_empty())
        .map_or(lines.len(), |i| response_at + i);
    let headers = lines[response_at + 1..head_end]
        .iter()
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let body = lines
        .get(head_end + 1..)
        .map_or(String::new(), |b| b.join("\n"))
        .trim()
        .to_string();
    Exchange {
        name: stem(path),
        request_line: lines[request_at].to_string(),
        request_body,
        status,
        headers,
        body: body.into_bytes(),
    }
}

fn exchange_of(prefix: &str) -> Exchange {
    exchange(&find(prefix, "http"))
}

fn describe_event(event: &StreamEvent) -> String {
    match event {
        StreamEvent::Message { cursor, message } => format!(
            "message seq={} epoch={} kind={:?} id={} bytes={} created={} cursor={}",
            message.seq,
            message.epoch.0,
            message.kind,
            message.id,
            message.payload.len(),
            message.created_at.as_deref().unwrap_or("-"),
            cursor.as_ref().map_or("-", |c| c.as_str())
        ),
        StreamEvent::Info { info, cursor } => format!(
            "info {info} cursor={}",
            cursor.as_ref().map_or("-", |c| c.as_str())
        ),
        StreamEvent::Other { cursor, kind, body } => format!(
            "other {kind} cursor={} body={body}",
            cursor.as_ref().map_or("-", |c| c.as_str())
        ),
        other => format!("{other:?}"),
    }
}

fn describe(frame: &Frame) -> String {
    let mut s = format!(
        "seq={} convo={}",
        frame.seq.map_or("-".into(), |s| s.to_string()),
        frame.convo.as_ref().map_or("-", |c| c.as_str())
    );
    match &frame.payload {
        Payload::Event(e) => {
            let _ = write!(s, " {}", describe_event(e));
        }
        Payload::Error(e) => {
            let _ = write!(s, " error {} {:?}", e.error, e.message);
        }
    }
    s
}

/// What one recorded message decodes to, checked against the recorder's own decoding.
fn decode_and_check(r: &Recorded) -> String {
    let limits = Limits::default();
    if r.sent_by_client() {
        let client = ClientFrame::decode(&r.bytes).unwrap();
        assert_eq!(
            client.encode(),
            r.bytes,
            "{}: re-encodes byte for byte",
            r.name
        );
        return format!("{} client->server {} B: {client:?}", r.name, r.bytes.len());
    }
    if r.opcode() != "binary" {
        // Ping and Pong are WebSocket control messages: the adapter sees them, not the
        // frame decoder.
        return format!(
            "{} {} {} B: control message, a keepalive",
            r.name,
            r.opcode(),
            r.bytes.len()
        );
    }
    let frame = decode_frame(&r.bytes, &limits).unwrap();
    let body = r.body();
    assert_eq!(frame.seq, body["seq"].as_i64(), "{}", r.name);
    match &frame.payload {
        Payload::Event(StreamEvent::Message { cursor, message }) => {
            let m = &body["message"];
            assert_eq!(message.id.as_str(), m["id"], "{}", r.name);
            assert_eq!(Some(message.seq.0), m["seq"].as_u64(), "{}", r.name);
            assert_eq!(Some(message.epoch.0), m["epoch"].as_u64(), "{}", r.name);
            assert_eq!(frame.convo.as_ref().unwrap().as_str(), m["convoId"]);
            assert_eq!(cursor.as_ref().unwrap().as_str(), body["cursor"]);
            assert_eq!(message.created_at.as_deref(), m["createdAt"].as_str());
            use base64::Engine;
            let expected = base64::engine::general_purpose::STANDARD
                .decode(m["ciphertext"]["$bytes"].as_str().unwrap())
                .unwrap();
            assert_eq!(message.payload, expected, "{}", r.name);
        }
        Payload::Event(StreamEvent::Other {
            kind,
            body: json,
            cursor,
        }) => {
            let reencoded: Value = serde_json::from_str(json).unwrap();
            assert_eq!(
                &reencoded, body,
                "{}: the JSON is the event as sent",
                r.name
            );
            assert_eq!(kind, &body["$type"]);
            assert_eq!(cursor.as_ref().unwrap().as_str(), body["cursor"]);
            assert_eq!(frame.convo.as_ref().unwrap().as_str(), body["convoId"]);
        }
        Payload::Error(e) => {
            assert_eq!(r.meta["decoded"]["header"]["op"], -1);
            assert_eq!(e.error, body["error"]);
        }
        other => panic!("{}: unexpected {other:?}", r.name),
    }
    format!(
        "{} binary {} B: {}",
        r.name,
        r.bytes.len(),
        describe(&frame)
    )
}

#[test]
fn every_recorded_frame_decodes_to_the_values_it_holds() {
    let all: Vec<String> = recorded_frames().iter().map(decode_and_check).collect();
    insta::assert_snapshot!(all.join("\n"));
}

#[test]
fn the_ciphertext_is_a_bytes_map_of_512_bytes() {
    // `ciphertext`, then a map of one entry `$bytes` holding 684 (0x2ac) characters of
    // base64: not a CBOR byte string.
    let marker = b"\x6aciphertext\xa1\x66$bytes\x79\x02\xac";
    let bytes = frame_bytes_of("007");
    assert!(bytes.windows(marker.len()).any(|w| w == marker));
    let Payload::Event(StreamEvent::Message { message, .. }) = frame("007").payload else {
        panic!("a message")
    };
    assert_eq!(message.payload.len(), 512);
    assert_eq!(message.seq.0, 1);
}

#[test]
fn an_ephemeral_message_has_seq_zero_and_is_never_sequenced() {
    let f = frame("014");
    let Payload::Event(StreamEvent::Message { message, .. }) = f.payload else {
        panic!("a message")
    };
    assert_eq!(message.seq.0, 0);
    assert_eq!(f.seq, Some(5));
    // Even if a server numbered one, `ephemeral: true` keeps it out of the seq line.
    let mut body = recorded_frames()
        .into_iter()
        .find(|r| r.name.starts_with("014"))
        .unwrap()
        .body()
        .clone();
    body["message"]["seq"] = 41.into();
    let bytes = encode_event_frame("#messageEvent", &body);
    let Payload::Event(StreamEvent::Message { message, .. }) =
        decode_frame(&bytes, &Limits::default()).unwrap().payload
    else {
        panic!("a message")
    };
    assert_eq!(message.seq.0, 0);
}

#[test]
fn a_bad_cursor_gives_an_error_frame_and_the_stream_goes_on() {
    let f = frame("053");
    assert_eq!(
        f.payload,
        Payload::Error(ErrorFrame {
            error: "BackfillFailed".into(),
            message: Some("Database query failed: Failed to get events".into()),
        })
    );
    assert_eq!(f.convo, None);
    // The same connection delivers live messages after it.
    assert!(matches!(
        frame("055").payload,
        Payload::Event(StreamEvent::Message { .. })
    ));
    let ours = encode_error_frame(
        "BackfillFailed",
        Some("Database query failed: Failed to get events"),
    );
    assert_eq!(
        ours,
        std::fs::read(find("053", "bin")).unwrap(),
        "encoded as the server does"
    );
}

#[test]
fn membership_changes_pass_through_with_their_nulls() {
    let f = frame("046");
    assert_eq!(f.convo.as_ref().unwrap().as_str(), CONVO);
    let Payload::Event(StreamEvent::Other { kind, body, .. }) = f.payload else {
        panic!("passed through")
    };
    assert_eq!(
        kind,
        "blue.catbird.mls.subscribeConvoEvents#membershipChangeEvent"
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["actor"], Value::Null);
    assert_eq!(body["reason"], Value::Null);
    assert!(body.as_object().unwrap().contains_key("actor"));
    assert_eq!(body["action"], "left");
    assert_eq!(body["epoch"], 4);
}

#[test]
fn the_frame_seq_counts_per_connection_not_per_conversation() {
    // ws1 had reached frame seq 17 (the burst) when it closed; ws2 starts again at 1 with
    // a message far down the conversation.
    let burst: Vec<(i64, u64)> = (26..=33)
        .map(|n| {
            let f = frame(&format!("0{n}"));
            let Payload::Event(StreamEvent::Message { message, .. }) = f.payload else {
                panic!()
            };
            (f.seq.unwrap(), message.seq.0)
        })
        .collect();
    let frame_seqs: Vec<i64> = burst.iter().map(|b| b.0).collect();
    let message_seqs: Vec<u64> = burst.iter().map(|b| b.1).collect();
    assert_eq!(
        frame_seqs,
        (10..=17).collect::<Vec<_>>(),
        "contiguous on one connection"
    );
    assert_eq!(
        message_seqs,
        [7, 8, 6, 7, 9, 9, 9, 10],
        "out of order, seqs shared"
    );
    let resumed = frame("043");
    assert_eq!(resumed.seq, Some(1));
    let Payload::Event(StreamEvent::Message { message, .. }) = resumed.payload else {
        panic!()
    };
    assert!(message.seq.0 > 10, "{}", message.seq);
    assert_eq!(frame("068").seq, Some(1), "a global socket starts at 1 too");
    assert_eq!(
        frame("063").seq,
        Some(3),
        "events the cursor filter dropped used 1 and 2"
    );
}

#[test]
fn other_event_kinds_keep_their_fields() {
    for (name, kind, field) in [
        ("012", "typingEvent", "isTyping"),
        ("016", "reactionEvent", "reaction"),
        ("018", "readEvent", "readAt"),
        ("020", "typingEvent", "did"),
    ] {
        let f = frame(name);
        assert_eq!(f.convo.as_ref().unwrap().as_str(), CONVO, "{name}");
        let Payload::Event(StreamEvent::Other { kind: k, body, .. }) = f.payload else {
            panic!("{name}")
        };
        assert!(k.ends_with(kind), "{name}: {k}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(!body[field].is_null(), "{name}: {field}");
    }
}

#[test]
fn client_frames_encode_as_the_server_reads_them() {
    let typing = ClientFrame::Typing {
        convo: CONVO.into(),
        is_typing: true,
    };
    assert_eq!(typing.encode(), std::fs::read(find("019", "bin")).unwrap());
    for frame in [ClientFrame::Ping, typing, ClientFrame::Ack { seq: 12 }] {
        assert_eq!(ClientFrame::decode(&frame.encode()).unwrap(), frame);
    }
    assert!(
        ClientFrame::decode(&frame_bytes_of("007")).is_err(),
        "a server frame is not one"
    );
}

fn frame_bytes_of(prefix: &str) -> Vec<u8> {
    std::fs::read(find(prefix, "bin")).unwrap()
}

#[test]
fn unknown_and_future_event_kinds_pass_through() {
    let body = serde_json::json!({
        "$type": "blue.catbird.mls.subscribeConvoEvents#newDeviceEvent",
        "seq": 9, "cursor": "01M8", "convoId": "c1", "userDid": "did:web:x",
        "deviceId": "d", "deviceName": null, "deviceCredentialDid": "did:web:x#d",
        "pendingAdditionId": "p",
    });
    let f = decode_frame(
        &encode_event_frame("#newDeviceEvent", &body),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(f.convo.as_ref().unwrap().as_str(), "c1");
    let Payload::Event(StreamEvent::Other {
        kind, body: json, ..
    }) = f.payload
    else {
        panic!()
    };
    assert_eq!(kind, "blue.catbird.mls.subscribeConvoEvents#newDeviceEvent");
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), body);

    // No `$type`: the kind comes from the header.
    let bare = serde_json::json!({ "cursor": "01M9", "convoId": "c2", "x": 1 });
    let f = decode_frame(
        &encode_event_frame("#somethingNew", &bare),
        &Limits::default(),
    )
    .unwrap();
    assert!(
        matches!(&f.payload, Payload::Event(StreamEvent::Other { kind, .. })
        if kind == "blue.catbird.mls.subscribeConvoEvents#somethingNew")
    );

    // An infoEvent has no conversation.
    let info = serde_json::json!({ "$type": "blue.catbird.mls.subscribeConvoEvents#infoEvent",
        "seq": 2, "cursor": "01MA", "info": "slow-consumer" });
    let f = decode_frame(&encode_event_frame("#infoEvent", &info), &Limits::default()).unwrap();
    assert_eq!(f.convo, None);
    assert!(
        matches!(f.payload, Payload::Event(StreamEvent::Info { ref info, .. }) if info == "slow-consumer")
    );
}

#[test]
fn a_ciphertext_sent_as_a_real_byte_string_decodes_too() {
    // Not what the server does today, but what DAG-CBOR would do: a CBOR byte string.
    let mut bytes = std::fs::read(find("007", "bin")).unwrap();
    let marker = b"ciphertext\xa1f$bytesy\x02\xac";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap();
    let b64_start = at + marker.len();
    let b64 = String::from_utf8(bytes[b64_start..b64_start + 0x2ac].to_vec()).unwrap();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    let mut replaced = bytes[..at + b"ciphertext".len()].to_vec();
    replaced.extend([0x59, 0x02, 0x00]); // bytes(512)
    replaced.extend(&raw);
    replaced.extend(&bytes[b64_start + 0x2ac..]);
    bytes = replaced;
    let Payload::Event(StreamEvent::Message { message, .. }) =
        decode_frame(&bytes, &Limits::default()).unwrap().payload
    else {
        panic!()
    };
    assert_eq!(message.payload, raw);
}

#[test]
fn bytes_and_links_come_out_as_atproto_json() {
    use ipld_core::cid::{multihash::Multihash, Cid};
    use ipld_core::ipld::Ipld;
    let cid = Cid::new_v1(0x71, Multihash::<64>::wrap(0x12, &[7u8; 32]).unwrap());
    let body = Ipld::Map(
        [
            ("convoId".to_string(), Ipld::String("c9".into())),
            ("blob".to_string(), Ipld::Bytes(vec![1, 2, 3])),
            ("ref".to_string(), Ipld::Link(cid)),
            ("n".to_string(), Ipld::Integer(-5)),
            ("f".to_string(), Ipld::Float(0.5)),
        ]
        .into_iter()
        .collect(),
    );
    let mut bytes =
        serde_ipld_dagcbor::to_vec(&serde_json::json!({"op": 1, "t": "#blobEvent"})).unwrap();
    bytes.extend(serde_ipld_dagcbor::to_vec(&body).unwrap());
    let f = decode_frame(&bytes, &Limits::default()).unwrap();
    let Payload::Event(StreamEvent::Other { body, .. }) = f.payload else {
        panic!()
    };
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["blob"], serde_json::json!({"$bytes": "AQID"}));
    assert_eq!(body["ref"], serde_json::json!({"$link": cid.to_string()}));
    assert_eq!(
        (body["n"].as_i64(), body["f"].as_f64()),
        (Some(-5), Some(0.5))
    );
}

#[test]
fn a_body_of_too_many_values_is_refused_before_it_costs_memory() {
    let nulls = vec![Value::Null; gapless_catbird::realtime::frame::MAX_VALUES];
    let bytes = encode_event_frame("#x", &serde_json::json!({ "many": nulls }));
    let err = decode_frame(&bytes, &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("more than 4096 values"), "{err}");
    let fine = vec![Value::Null; 100];
    assert!(decode_frame(
        &encode_event_frame("#x", &serde_json::json!({ "many": fine })),
        &Limits::default()
    )
    .is_ok());
    // A list that claims 2^32 elements and holds none: an error, no allocation.
    let mut claim = encode_event_frame("#x", &serde_json::json!({}));
    let at = claim.len() - 1; // the body `a0` (empty map)
    claim.truncate(at);
    claim.extend([0xa1, 0x61, b'l', 0x9b, 0, 0, 0, 1, 0, 0, 0, 0]);
    assert!(decode_frame(&claim, &Limits::default()).is_err());
}

#[test]
fn frames_past_the_limits_are_refused_with_typed_errors() {
    let bytes = frame_bytes_of("007");
    let small = Limits {
        max_event: 500,
        ..Limits::default()
    };
    assert!(matches!(
        decode_frame(&bytes, &small),
        Err(DecodeError::FrameTooLarge {
            len: 988,
            limit: 500
        })
    ));
    let tiny_ciphertext = Limits {
        max_ciphertext: 100,
        ..Limits::default()
    };
    assert!(matches!(
        decode_frame(&bytes, &tiny_ciphertext),
        Err(DecodeError::CiphertextTooLarge { .. })
    ));
    let err = decode_frame(&[], &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    // Trailing bytes after the body.
    let mut trailing = bytes.clone();
    trailing.push(0x00);
    let err = decode_frame(&trailing, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, DecodeError::Cbor { part: "body", .. }),
        "{err}"
    );
    // A header alone.
    let err = decode_frame(&bytes[..21], &Limits::default()).unwrap_err();
    assert!(
        matches!(err, DecodeError::Cbor { part: "body", .. }),
        "{err}"
    );
    // An unknown op.
    let mut op2 = bytes.clone();
    op2[20] = 0x02;
    let err = decode_frame(&op2, &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("got op 2"), "{err}");
}

// --- the socket's URL, tickets and refusals -------------------------------------------

#[test]
fn tickets_decode_and_hide_themselves_in_debug() {
    for name in ["003", "039", "065", "083"] {
        let x = exchange_of(name);
        assert_eq!(x.status, 200, "{}", x.name);
        let ticket = Ticket::decode(&x.body).unwrap();
        assert!(ticket.ticket.starts_with("eyJ"), "{}", x.name);
        assert_eq!(
            ticket.endpoint.as_deref(),
            Some("wss://mls.catbird.blue/xrpc/blue.catbird.mls.subscribeConvoEvents")
        );
        assert!(ticket.expires_at.as_deref().unwrap().ends_with('Z'));
        assert!(!format!("{ticket:?}").contains("eyJ"), "{ticket:?}");
    }
    assert!(Ticket::decode(br#"{"ticket":"","expiresAt":"x"}"#).is_err());
    assert!(Ticket::decode(b"{}").is_err());
}

#[test]
fn ticket_requests_are_the_recorded_ones() {
    let convo = exchange_of("003");
    assert_eq!(
        convo.request_line,
        format!("POST {} HTTP/1.1", TicketScope::path())
    );
    let ours: Value = serde_json::from_str(&TicketScope::Convo(CONVO.into()).body()).unwrap();
    assert_eq!(
        ours,
        serde_json::from_str::<Value>(&convo.request_body).unwrap()
    );
    let global = exchange_of("065");
    assert_eq!(TicketScope::Global.body(), global.request_body);
}

#[test]
fn the_socket_url_is_the_endpoint_or_the_servers_own() {
    let ticket = Ticket::decode(&exchange_of("003").body).unwrap();
    let cursor = gapless::Cursor::from("01M8KNDVKVCWNPM5KYSAT0F1MS");
    let url = ticket
        .socket_url("http://127.0.0.1:38081", Some(&cursor))
        .unwrap();
    assert!(
        url.starts_with(
            "wss://mls.catbird.blue/xrpc/blue.catbird.mls.subscribeConvoEvents?ticket=eyJ"
        ),
        "{url}"
    );
    assert!(url.ends_with("&cursor=01M8KNDVKVCWNPM5KYSAT0F1MS"), "{url}");

    // Without an endpoint: the base URL's own, on the recorded path (004, 040).
    let recorded = exchange_of("040");
    let own = subscribe_url("http://127.0.0.1:38081/", "<ticket>", Some(&cursor)).unwrap();
    let target = recorded.request_line.split(' ').nth(1).unwrap();
    assert_eq!(
        own,
        format!(
            "ws://127.0.0.1:38081{}",
            target.replace("<ticket>", "%3Cticket%3E")
        )
    );
    let no_endpoint = Ticket {
        endpoint: None,
        ..ticket.clone()
    };
    let url = no_endpoint
        .socket_url("https://mls.example/prefix", None)
        .unwrap();
    assert!(
        url.starts_with(
            "wss://mls.example/prefix/xrpc/blue.catbird.mlsChat.subscribeEvents?ticket=eyJ"
        ),
        "{url}"
    );

    // Endpoints in every scheme; query values encoded; an old ticket replaced.
    for (endpoint, expected) in [
        (
            "https://h.example/ws",
            "wss://h.example/ws?ticket=a+b%26c%3D",
        ),
        (
            "http://h.example:8080/ws",
            "ws://h.example:8080/ws?ticket=a+b%26c%3D",
        ),
        (
            "ws://h.example/ws?ticket=old&v=2",
            "ws://h.example/ws?v=2&ticket=a+b%26c%3D",
        ),
        (
            "WSS://H.example/ws#frag",
            "wss://h.example/ws?ticket=a+b%26c%3D",
        ),
    ] {
        let t = Ticket {
            ticket: "a b&c=".into(),
            endpoint: Some(endpoint.into()),
            expires_at: None,
        };
        assert_eq!(t.socket_url("http://unused", None).unwrap(), expected);
    }
    for bad in [
        "ftp://h.example/x",
        "not a url",
        "mls.catbird.blue",
        "https://",
    ] {
        let t = Ticket {
            ticket: "t".into(),
            endpoint: Some(bad.into()),
            expires_at: None,
        };
        assert!(
            matches!(
                t.socket_url("http://unused", None),
                Err(DecodeError::Endpoint { .. })
            ),
            "{bad}"
        );
    }
}

fn refusal(x: &Exchange, scope: &TicketScope) -> Refusal {
    Refusal::parse(
        x.status,
        x.header("retry-after"),
        &x.body,
        scope,
        x.param("cursor").is_some(),
    )
}

#[test]
fn handshake_refusals_map_to_the_right_stream_errors() {
    let convo = TicketScope::Convo(CONVO.into());
    for (name, expected) in [
        ("077", StreamError::Unauthorized), // garbage ticket
        ("079", StreamError::Unauthorized), // a user token as the ticket
        ("087", StreamError::Unauthorized), // expired ticket
        ("078", StreamError::Transient),    // no ticket: 400 text/plain
        ("082", StreamError::RateLimited { retry_after: None }), // a sixth socket: 429
    ] {
        let x = exchange_of(name);
        for scope in [&convo, &TicketScope::Global] {
            let r = refusal(&x, scope);
            assert_eq!(r.error, expected, "{} {scope:?}", x.name);
            assert_eq!(r.retry_after, None, "{}", x.name);
        }
    }
    assert!(exchange_of("078")
        .body
        .starts_with(b"Failed to deserialize query string"));
    assert!(refusal(&exchange_of("078"), &convo).answer.text.is_some());

    // 429 with Retry-After: every stream open waits that long.
    let r = Refusal::parse(429, Some("7"), b"", &convo, false);
    let seven = Some(Duration::from_secs(7));
    assert_eq!(
        (r.error, r.retry_after),
        (StreamError::RateLimited { retry_after: seven }, seven)
    );

    // 403: not a member of that conversation (the ticket request 002 too) — but a global
    // ticket cannot name one conversation to clear.
    let r = refusal(&exchange_of("002"), &convo);
    assert_eq!(r.error, StreamError::Permanent(Permanent::Forbidden));
    assert_eq!(
        Refusal::parse(403, None, b"", &convo, true).error,
        StreamError::Permanent(Permanent::Forbidden)
    );
    assert_eq!(
        Refusal::parse(403, None, b"", &TicketScope::Global, false).error,
        StreamError::Transient
    );
    assert_eq!(
        Refusal::parse(
            403,
            None,
            br#"{"error":"NotMember"}"#,
            &TicketScope::Global,
            false
        )
        .error,
        StreamError::Transient
    );
    assert_eq!(
        Refusal::parse(400, None, b"", &convo, true).error,
        StreamError::InvalidCursor
    );
    assert_eq!(
        Refusal::parse(503, Some("2"), b"", &convo, false).retry_after,
        Some(Duration::from_secs(2))
    );
}

#[test]
fn every_upgrade_that_was_accepted_is_on_a_path_we_build() {
    for path in files("http") {
        let x = exchange(&path);
        if x.status != 101 {
            continue;
        }
        let target = x.request_line.split(' ').nth(1).unwrap();
        let (path_part, _) = target.split_once('?').unwrap();
        assert!(
            path_part == "/xrpc/blue.catbird.mlsChat.subscribeEvents"
                || path_part == "/xrpc/blue.catbird.mls.subscribeConvoEvents",
            "{}",
            x.name
        );
        let cursor = x.param("cursor").map(gapless::Cursor::from);
        let ours = subscribe_url("http://127.0.0.1:38081", "<ticket>", cursor.as_ref()).unwrap();
        if path_part.ends_with("subscribeEvents") {
            assert_eq!(
                ours,
                format!(
                    "ws://127.0.0.1:38081{}",
                    target.replace("<ticket>", "%3Cticket%3E")
                ),
                "{}",
                x.name
            );
        }
    }
}

// --- REST: getMessages and sendMessage -------------------------------------------------

fn rest_summary(x: &Exchange) -> String {
    let mut s = format!("{} {}:", x.name, x.status);
    let limits = Limits::default();
    if x.status != 200 {
        let answer = ErrorAnswer::parse(x.status, x.header("retry-after"), &x.body);
        let _ = write!(s, " fetch={:?}", answer.fetch_failure());
        if let Some(e) = answer.xrpc.as_ref().and_then(|x| x.error.as_deref()) {
            let _ = write!(s, " xrpc={e}");
        }
        return s;
    }
    let Ok(resp) = GetMessagesResponse::decode(&x.body, &limits) else {
        let _ = write!(s, " not a page (no `messages`)");
        return s;
    };
    let seqs: Vec<String> = resp
        .messages
        .iter()
        .map(|m| {
            let c = if m.message_type.as_deref() == Some("commit") {
                "c"
            } else {
                ""
            };
            format!("{}@e{}{c}", m.seq, m.epoch)
        })
        .collect();
    let _ = write!(
        s,
        " seqs=[{}] lastSeq={:?} commits={}",
        seqs.join(" "),
        resp.last_seq,
        resp.commits.len()
    );
    let convo = x.param("convoId").unwrap();
    let page = resp
        .into_page(gapless::RequestId(0), &convo.as_str().into(), &limits)
        .unwrap();
    assert!(
        page.messages.iter().all(|m| !m.payload.is_empty()),
        "{}",
        x.name
    );
    s
}

#[test]
fn every_get_messages_exchange_decodes() {
    let all: Vec<String> = files("http")
        .iter()
        .filter(|p| stem(p).contains("getMessages"))
        .map(|p| rest_summary(&exchange(p)))
        .collect();
    assert!(all.len() >= 30, "{}", all.len());
    insta::assert_snapshot!(all.join("\n"));
}

fn page(name: &str) -> GetMessagesResponse {
    GetMessagesResponse::decode(&exchange_of(name).body, &Limits::default()).unwrap()
}

#[test]
fn get_messages_pages_as_recorded() {
    let seqs = |r: &GetMessagesResponse| r.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    // Without sinceSeq: newest first, lastSeq the smallest (never sent by the builder).
    let newest = page("102");
    assert_eq!(seqs(&newest), [27, 26, 25, 24, 23]);
    assert_eq!(newest.last_seq, Some(23));
    // With it: ascending, commits in line at their seqs.
    let first = page("103");
    assert_eq!(seqs(&first), [1, 2, 3, 4, 5]);
    assert_eq!(first.messages[3].message_type.as_deref(), Some("commit"));
    assert_eq!(first.commits.len(), 4, "type=all repeats every commit");
    assert_eq!(page("109").last_seq, None, "an empty page has no lastSeq");
    // type=app: the same messages (commits included), no commits array.
    let app = page("110");
    assert!(app.commits.is_empty());
    assert_eq!(seqs(&app), seqs(&page("119")), "app filters nothing");
    assert!(app
        .messages
        .iter()
        .any(|m| m.message_type.as_deref() == Some("commit")));
    // type=commit has no `messages`: not a page, so never read as an empty one.
    assert!(GetMessagesResponse::decode(&exchange_of("111").body, &Limits::default()).is_err());
    // No gapInfo, ever.
    for p in files("http")
        .iter()
        .filter(|p| stem(p).contains("getMessages"))
    {
        let x = exchange(p);
        assert!(
            !String::from_utf8_lossy(&x.body).contains("gapInfo"),
            "{}",
            x.name
        );
    }
}

#[test]
fn the_fetch_query_is_the_recorded_shape_with_type_app() {
    let fetch = gapless::FetchRequest {
        id: gapless::RequestId(3),
        convo: CONVO.into(),
        since_seq: gapless::Seq(5),
        since_id: None,
        limit: 500,
    };
    let q = GetMessages::for_fetch(&fetch);
    assert_eq!((q.limit, q.message_type), (100, MessageType::App));
    let recorded = exchange_of("104");
    let target = recorded.request_line.split(' ').nth(1).unwrap();
    let q = GetMessages { limit: 5, ..q };
    assert_eq!(q.path_and_query(), format!("{target}&type=app"));
    let all = GetMessages {
        message_type: MessageType::All,
        ..q
    };
    assert!(all.path_and_query().ends_with("&type=all"));
}

#[test]
fn send_message_shapes_are_the_recorded_ones() {
    let x = exchange_of("006");
    let sent: SendMessage = serde_json::from_str(&x.request_body).unwrap();
    assert_eq!(sent.padded_size, 512);
    let ours = SendMessage::new(&CONVO.into(), &sent.msg_id, &[7u8; 512], 0);
    let ours: Value = serde_json::from_slice(&ours.body()).unwrap();
    let theirs: Value = serde_json::from_str(&x.request_body).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&ours), keys(&theirs));
    let answer = SendMessageAnswer::decode(&x.body).unwrap();
    assert_eq!(answer.message_id, "79f27b8c-263f-4e68-b24b-54c4390d9ad8");
    assert_eq!((answer.seq, answer.epoch), (1, 0));
    // The id on the socket is the answer's messageId, not the msgId sent.
    let Payload::Event(StreamEvent::Message { message, .. }) = frame("007").payload else {
        panic!()
    };
    assert_eq!(message.id.as_str(), answer.message_id);
    assert_ne!(message.id.as_str(), sent.msg_id);
    // An ephemeral send answers something else.
    assert!(SendMessageAnswer::decode(&exchange_of("011").body).is_err());
    assert!(gapless_catbird::mlschat::is_valid_padded_size(512));
    assert!(gapless_catbird::mlschat::is_valid_padded_size(16384));
    assert!(!gapless_catbird::mlschat::is_valid_padded_size(600));
    assert!(!gapless_catbird::mlschat::is_valid_padded_size(256));
}

#[test]
fn the_copies_equal_the_shared_recordings() {
    // `shared/` sits beside the repository on a developer's machine and in CI.
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/catbird/ws");
    if !shared.is_dir() {
        eprintln!("no {}: nothing to compare", shared.display());
        return;
    }
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let original = shared.join(path.file_name().unwrap());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&original).unwrap(),
            "{}",
            path.display()
        );
    }
}

// --- never a panic -----------------------------------------------------------------------

#[test]
fn every_cbor_frame_fuzz_regression_decodes_or_fails_cleanly() {
    // Inputs the `cbor_frame` fuzz target ever crashed on (`fuzz/regressions/cbor_frame/`).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/cbor_frame");
    for entry in std::fs::read_dir(&dir).expect("the regressions folder exists") {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let _ = decode_frame(&bytes, &Limits::default());
        let _ = ClientFrame::decode(&bytes);
        let _ = Ticket::decode(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_frame(&bytes, &Limits::default());
        let _ = ClientFrame::decode(&bytes);
        let _ = Ticket::decode(&bytes);
        let _ = SendMessageAnswer::decode(&bytes);
        let _ = GetMessagesResponse::decode(&bytes, &Limits::default());
    }

    #[test]
    fn every_strict_prefix_of_a_recorded_frame_is_an_error(index in 0usize..1000, cut in 0usize..1000) {
        let frames: Vec<Vec<u8>> = recorded_frames()
            .into_iter()
            .filter(|r| r.opcode() == "binary" && !r.sent_by_client())
            .map(|r| r.bytes)
            .collect();
        let bytes = &frames[index % frames.len()];
        let cut = cut % bytes.len();
        prop_assert!(decode_frame(&bytes[..cut], &Limits::default()).is_err());
    }

    #[test]
    fn corrupted_recorded_frames_never_panic(index in 0usize..1000, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let frames: Vec<Vec<u8>> = recorded_frames()
            .into_iter()
            .filter(|r| r.opcode() == "binary")
            .map(|r| r.bytes)
            .collect();
        let mut bytes = frames[index % frames.len()].clone();
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] ^= b;
        }
        let _ = decode_frame(&bytes, &Limits::default());
        let _ = ClientFrame::decode(&bytes);
    }

    #[test]
    fn any_event_body_comes_back_as_the_same_json(
        kind in "[a-zA-Z]{1,12}",
        convo in proptest::option::of("[a-z0-9]{1,32}"),
        seq in any::<i64>(),
        extra in proptest::collection::btree_map("[a-zA-Z$]{1,8}", prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            ".{0,20}".prop_map(Value::from),
            Just(Value::Null),
        ], 0..6),
    ) {
        prop_assume!(kind != "messageEvent" && kind != "infoEvent");
        let mut body = serde_json::Map::new();
        for (k, v) in extra {
            body.insert(k, v);
        }
        body.insert("seq".into(), seq.into());
        if let Some(c) = &convo {
            body.insert("convoId".into(), c.as_str().into());
        }
        let body = Value::Object(body);
        let frame = decode_frame(&encode_event_frame(&format!("#{kind}"), &body), &Limits::default()).unwrap();
        prop_assert_eq!(frame.seq, Some(seq));
        prop_assert_eq!(frame.convo.as_ref().map(|c| c.as_str()), convo.as_deref());
        let Payload::Event(StreamEvent::Other { body: json, .. }) = frame.payload else {
            panic!("passed through");
        };
        prop_assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), body);
    }
}

/// The machine, on one shared stream, fed the recorded burst (frames 026–033: seqs
/// 7,8,6,7,9,9,9,10 in that order, three messages sharing seq 9 and two seq 7) and answering
/// its fetches as the real server pages the recorded log (117: every message, `seq >
/// sinceSeq` in `(epoch, seq)` order, at most `limit`), ends with every message the server
/// had, each once — where `seq > sinceSeq` paging after `lastSeq` lost two of the seq-9 ones
/// (104 → 105).
#[test]
fn the_machine_fed_the_recorded_burst_ends_complete() {
    use gapless::{Command, Config, Input, Page, Subscription, SyncMachine, Time};
    let log = page("117")
        .into_page(gapless::RequestId(0), &CONVO.into(), &Limits::default())
        .unwrap()
        .messages;
    assert!(log.len() >= 20, "{}", log.len());
    let serve = |since: u64, limit: u16| {
        let mut p: Vec<_> = log.iter().filter(|m| m.seq.0 > since).cloned().collect();
        p.sort_by_key(|m| (m.epoch, m.seq));
        p.truncate(usize::from(limit.clamp(1, 100)));
        p
    };
    let config = Config {
        shared_stream: true,
        page_limit: 5, // as the recorded pages were cut
        ..Config::default()
    };
    let mut m = SyncMachine::new(config).unwrap();
    let mut now = Time::ZERO;
    let mut delivered = Vec::new();
    let mut stream = None;
    let mut drain = |m: &mut SyncMachine, now: Time, stream: &mut Option<gapless::StreamId>| {
        let mut fetches = Vec::new();
        while let Some(c) = m.poll_command() {
            match c {
                Command::OpenShared { stream: s, .. } => *stream = Some(s),
                Command::Fetch(f) => fetches.push(f),
                Command::Deliver(d) => delivered.push((d.message.seq.0, d.message.id.clone())),
                _ => {}
            }
        }
        for f in fetches {
            let page = Page::new(f.id, serve(f.since_seq.0, f.limit));
            m.handle(now, Input::FetchPage(page)).unwrap();
        }
    };
    m.handle(now, Input::Subscribe(Subscription::live(CONVO)))
        .unwrap();
    drain(&mut m, now, &mut stream);
    let stream = stream.expect("one shared stream");
    m.handle(now, Input::SharedOpened { stream }).unwrap();
    for prefix in ["026", "027", "028", "029", "030", "031", "032", "033"] {
        let f = frame(prefix);
        let Payload::Event(event) = f.payload else {
            panic!("{prefix}")
        };
        now = now + Duration::from_millis(10);
        m.handle(
            now,
            Input::SharedEvent {
                stream,
                convo: f.convo,
                event,
            },
        )
        .unwrap();
        for _ in 0..20 {
            drain(&mut m, now, &mut Some(stream));
        }
    }
    for _ in 0..200 {
        now = now + Duration::from_millis(500);
        m.handle_timeout(now);
        drain(&mut m, now, &mut Some(stream));
    }
    let mut ids: Vec<_> = delivered.iter().map(|(_, id)| id.clone()).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "nothing twice");
    let mut want: Vec<_> = log.iter().map(|m| m.id.clone()).collect();
    want.sort();
    assert_eq!(ids, want, "every message the server had");
    let nines = log.iter().filter(|m| m.seq.0 == 9).count();
    assert_eq!(nines, 3, "the recorded log shares seq 9 three ways");
}
