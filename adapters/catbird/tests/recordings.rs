//! Every response recorded from the real Catbird server (`tests/recordings/`, copied from
//! `shared/catbird/recordings/`) decodes to the values it holds.

use gapless::{Failure, Permanent, StreamError, StreamEvent};
use gapless_catbird::messages::GetMessagesResponse;
use gapless_catbird::sse::{Limits, SseDecoder};
use gapless_catbird::status::ErrorAnswer;
use gapless_catbird::{event, DecodeError};
use std::fmt::Write;

mod common;
use common::{find, recordings, Recording};

fn sse_events(body: &[u8]) -> Vec<StreamEvent> {
    let limits = Limits::default();
    let mut d = SseDecoder::new(limits);
    d.push(body);
    let mut out = Vec::new();
    while let Some(frame) = d.next_frame().unwrap() {
        if let Some(e) = event::decode_frame(&frame, &limits).unwrap() {
            out.push(e);
        }
    }
    out
}

fn describe(e: &StreamEvent) -> String {
    match e {
        StreamEvent::Message { cursor, message } => format!(
            "message seq={} epoch={} id={} bytes={} created={} cursor={}",
            message.seq,
            message.epoch.0,
            message.id,
            message.payload.len(),
            message.created_at.as_deref().unwrap_or("-"),
            cursor.as_ref().map_or("-", |c| c.as_str())
        ),
        StreamEvent::Keepalive => "keepalive".into(),
        StreamEvent::Info { info, .. } => format!("info {info}"),
        StreamEvent::Other { kind, cursor, .. } => format!(
            "{} cursor={}",
            kind.rsplit('#').next().unwrap(),
            cursor.as_ref().map_or("-", |c| c.as_str())
        ),
        other => format!("{other:?}"),
    }
}

/// One line (or a few) per recording: what it decodes to.
fn summary(r: &Recording) -> String {
    let mut s = format!("{} {}:", r.name, r.status);
    let limits = Limits::default();
    if r.status != 200 {
        let answer = ErrorAnswer::parse(r.status, r.header("retry-after"), &r.body);
        let had_cursor = r.name.contains("cursor");
        let _ = write!(
            s,
            " fetch={:?} stream={:?}",
            answer.fetch_failure(),
            answer.stream_error(had_cursor)
        );
        if let Some(x) = &answer.xrpc {
            let _ = write!(s, " xrpc={:?}", x.error);
        }
        return s;
    }
    if r.name.contains("_sse_") {
        for e in sse_events(&r.body) {
            let _ = write!(s, "\n    {}", describe(&e));
        }
        return s;
    }
    if r.name.contains("getMessages") {
        let resp = GetMessagesResponse::decode(&r.body, &limits).unwrap();
        let seqs: Vec<String> = resp
            .messages
            .iter()
            .map(|m| {
                format!(
                    "{}@e{}{}",
                    m.seq,
                    m.epoch,
                    if m.message_type.as_deref() == Some("commit") {
                        "c"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let _ = write!(s, " seqs=[{}] lastSeq={:?}", seqs.join(" "), resp.last_seq);
        if let Some(g) = &resp.gap_info {
            let _ = write!(s, " gaps={:?} total={}", g.missing_seqs, g.total_messages);
        }
        let page = resp
            .into_page(
                gapless::RequestId(0),
                &"22653740d27a6e9a7293ebcf1e73ef12".into(),
                &limits,
            )
            .unwrap();
        assert!(page.messages.iter().all(|m| !m.payload.is_empty()));
        return s;
    }
    // Other methods: a JSON body.
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let keys: Vec<&str> = v
        .as_object()
        .map_or(vec![], |o| o.keys().map(|k| k.as_str()).collect());
    let _ = write!(s, " json {{{}}}", keys.join(", "));
    s
}

#[test]
fn every_recording_decodes_to_the_values_it_holds() {
    let all: Vec<String> = recordings().iter().map(summary).collect();
    insta::assert_snapshot!(all.join("\n"));
}

fn page_seqs(name: &str) -> Vec<u64> {
    let r = find(name);
    let resp = GetMessagesResponse::decode(&r.body, &Limits::default()).unwrap();
    resp.messages.iter().map(|m| m.seq).collect()
}

#[test]
fn pages_come_in_epoch_then_seq_order_and_seqs_are_reused() {
    assert_eq!(
        page_seqs("75a_"),
        vec![15],
        "seq 15 at epoch 0 sorts before 11..14"
    );
    assert_eq!(page_seqs("45_getMessages_page2"), vec![6, 7, 8, 9, 10]);
    assert_eq!(page_seqs("45_getMessages_page4"), Vec::<u64>::new());
    let after_delete = page_seqs("70_");
    assert!(!after_delete.contains(&4), "seq 4 deleted");
    let tail = page_seqs("73b_");
    assert!(tail.windows(2).all(|w| w[0] != w[1]));
}

#[test]
fn both_timestamp_spellings_decode() {
    let page = find("41_");
    let resp = GetMessagesResponse::decode(&page.body, &Limits::default()).unwrap();
    assert!(resp.messages[0].created_at.ends_with('Z'));
    let events = sse_events(&find("10_sse_live_bob").body);
    let stream_created = events
        .iter()
        .find_map(|e| match e {
            StreamEvent::Message { message, .. } if message.seq.0 == 1 => {
                message.created_at.clone()
            }
            _ => None,
        })
        .unwrap();
    assert!(stream_created.ends_with("+00:00"), "{stream_created}");
    assert_eq!(&stream_created[..26], &resp.messages[0].created_at[..26]);
}

#[test]
fn live_stream_has_keepalives_an_ephemeral_message_and_passes_other_kinds_through() {
    let events = sse_events(&find("10_sse_live_bob").body);
    assert!(events.contains(&StreamEvent::Keepalive));
    assert!(events
        .iter()
        .any(|e| matches!(e, StreamEvent::Message { message, .. } if message.seq.0 == 0)));
    let mut all = events.clone();
    all.extend(sse_events(&find("30_").body));
    for kind in [
        "reactionEvent",
        "typingEvent",
        "readEvent",
        "membershipChangeEvent",
    ] {
        assert!(
            all.iter()
                .any(|e| matches!(e, StreamEvent::Other { kind: k, .. } if k.ends_with(kind))),
            "{kind}"
        );
    }
}

#[test]
fn reconnect_with_cursor_replays_reactions_and_commits_only() {
    let events = sse_events(&find("30_").body);
    let replayed: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Message { message, .. } => Some(message.seq.0),
            _ => None,
        })
        .collect();
    assert!(
        replayed.contains(&8),
        "the commit at seq 8 is replayed: {replayed:?}"
    );
    assert!(!replayed.contains(&3), "app messages are not: {replayed:?}");
}

#[test]
fn real_error_shapes_map_to_the_right_failures() {
    let forbidden = |name: &str| {
        let r = find(name);
        ErrorAnswer::parse(r.status, None, &r.body)
    };
    // Not a member and unknown conversation: both 403, empty.
    assert_eq!(
        forbidden("49_").fetch_failure(),
        Failure::Permanent(Permanent::Forbidden)
    );
    assert_eq!(
        forbidden("47_").fetch_failure(),
        Failure::Permanent(Permanent::Forbidden)
    );
    assert_eq!(
        forbidden("35_").stream_error(false),
        StreamError::Permanent(Permanent::Forbidden)
    );
    // Replayed jti, wrong lxm, expired: 401, never permanent.
    for name in ["52b_", "50_", "56_", "38_", "48_"] {
        let a = forbidden(name);
        assert_eq!(a.fetch_failure(), Failure::Unauthorized, "{name}");
        assert_eq!(a.stream_error(false), StreamError::Unauthorized, "{name}");
    }
    // A bad stream cursor: drop it and catch up.
    assert_eq!(
        forbidden("33_").stream_error(true),
        StreamError::InvalidCursor
    );
    // 429 with Retry-After.
    let r = find("06_createConvo_rate_limit_try4");
    let a = ErrorAnswer::parse(r.status, r.header("retry-after"), &r.body);
    assert_eq!(
        a.fetch_failure(),
        Failure::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(12))
        }
    );
    // text/plain rejections are transient, and kept for the report.
    let a = forbidden("55_");
    assert_eq!(a.fetch_failure(), Failure::Transient);
    assert!(a.text.unwrap().contains("deserialize"));
}

#[test]
fn xrpc_error_names_are_honoured() {
    let a = ErrorAnswer::parse(400, None, br#"{"error":"NotMember","message":"no"}"#);
    assert_eq!(a.fetch_failure(), Failure::Permanent(Permanent::NotMember));
    let a = ErrorAnswer::parse(404, None, br#"{"error":"ConvoNotFound"}"#);
    assert_eq!(
        a.stream_error(false),
        StreamError::Permanent(Permanent::NotFound)
    );
    let a = ErrorAnswer::parse(400, None, br#"{"error":"InvalidCursor"}"#);
    assert_eq!(
        a.fetch_failure(),
        Failure::Permanent(Permanent::InvalidCursor)
    );
    let a = ErrorAnswer::parse(503, Some("soon"), b"");
    assert_eq!(a.fetch_failure(), Failure::Transient);
    let a = ErrorAnswer::parse(404, None, b"");
    assert_eq!(
        a.fetch_failure(),
        Failure::Transient,
        "a wrong base URL clears nothing"
    );
}

#[test]
fn malformed_input_gives_typed_errors() {
    let limits = Limits::default();
    assert!(matches!(
        GetMessagesResponse::decode(b"{\"messages\":[{]}", &limits),
        Err(DecodeError::Json(_))
    ));
    let small = Limits {
        max_body: 10,
        ..limits
    };
    assert!(matches!(
        GetMessagesResponse::decode(b"{\"messages\":[]}", &small),
        Err(DecodeError::BodyTooLarge { len: 15, limit: 10 })
    ));
    let one = Limits {
        max_page_messages: 1,
        ..limits
    };
    let body = find("45_getMessages_page1").body;
    assert!(matches!(
        GetMessagesResponse::decode(&body, &one),
        Err(DecodeError::PageTooLarge { len: 5, limit: 1 })
    ));
    let bad_bytes = r#"{"$type":"blue.catbird.mls.streamConvoEvents#messageEvent","cursor":"c","message":{"id":"a","convoId":"c","ciphertext":{"$bytes":"%%%"},"epoch":0,"seq":1,"createdAt":"x"}}"#;
    assert!(matches!(
        event::decode_event(bad_bytes, &limits),
        Err(DecodeError::Ciphertext(_))
    ));
    assert!(matches!(
        event::decode_event(r#"{"cursor":"c"}"#, &limits),
        Err(DecodeError::NoType(_))
    ));
    assert!(matches!(
        event::decode_event("not json", &limits),
        Err(DecodeError::Json(_))
    ));
    let resp = GetMessagesResponse::decode(&find("45_getMessages_page1").body, &limits).unwrap();
    assert!(matches!(
        resp.into_page(gapless::RequestId(1), &"other".into(), &limits),
        Err(DecodeError::WrongConvo { .. })
    ));
}

#[test]
fn older_servers_shapes_decode() {
    // The lexicon's eventWrapper form, a plain base64url ciphertext and the older fields.
    let wrapped = r#"{"event":{"$type":"blue.catbird.mls.streamConvoEvents#messageEvent","cursor":"c1","message":{"id":"m","convoId":"c","ciphertext":"_-8","epoch":2,"seq":7,"createdAt":"2025-01-05T00:00:00Z","sender":"did:plc:x","embedType":"link","embedUri":"https://e"}}}"#;
    let e = event::decode_event(wrapped, &Limits::default()).unwrap();
    let StreamEvent::Message { message, cursor } = e else {
        panic!()
    };
    assert_eq!(
        (message.seq.0, message.epoch.0, message.payload.as_slice()),
        (7, 2, &[0xff, 0xef][..])
    );
    assert_eq!(cursor.unwrap().as_str(), "c1");
    let unknown =
        r#"{"$type":"blue.catbird.mls.streamConvoEvents#somethingNew","cursor":"c9","x":1}"#;
    assert!(matches!(
        event::decode_event(unknown, &Limits::default()).unwrap(),
        StreamEvent::Other { kind, .. } if kind.ends_with("somethingNew")
    ));
}
