//! The SSE decoder gives the same frames for every split of its input, stays within its
//! bounds, and never panics.

mod common;
use gapless_catbird::sse::{self, Frame, Limits, SseDecoder};
use gapless_catbird::DecodeError;
use proptest::prelude::*;

fn decode_chunks(chunks: &[&[u8]], limits: Limits) -> (Vec<Frame>, bool) {
    let d = sse::decode_chunks(chunks.iter().copied(), limits);
    assert!(d.peak_buffered <= limits.max_line + limits.max_event);
    (d.frames, d.failed)
}

fn split_at(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for c in cuts {
        out.push(input[last..c].to_vec());
        last = c;
    }
    out.push(input[last..].to_vec());
    out
}

fn sse_text() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "data: [a-z{}\":, ]{0,30}".prop_map(|s| s.into_bytes()),
        "data:[a-z]{0,5}".prop_map(|s| s.into_bytes()),
        ": ?[a-z]{0,10}".prop_map(|s| s.into_bytes()),
        "event: [a-z]{1,8}".prop_map(|s| s.into_bytes()),
        "id: [0-9A-Z]{1,26}".prop_map(|s| s.into_bytes()),
        "retry: [0-9]{1,5}".prop_map(|s| s.into_bytes()),
        Just(b"".to_vec()),
        Just("data: 🎉 ünïcode".as_bytes().to_vec()),
    ];
    let end = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec())
    ];
    proptest::collection::vec((line, end), 0..40).prop_map(|parts| {
        let mut out = Vec::new();
        for (l, e) in parts {
            out.extend(l);
            out.extend(e);
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        rng_seed: match std::env::var("PROPTEST_RNG_SEED").as_deref() {
            Ok("random") => proptest::test_runner::RngSeed::Random,
            _ => proptest::test_runner::RngSeed::Fixed(20_261_127),
        },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn same_frames_for_every_split(input in sse_text(), cuts in proptest::collection::vec(any::<usize>(), 0..20)) {
        let whole = decode_chunks(&[&input], Limits::default());
        let parts = split_at(&input, &cuts);
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        prop_assert_eq!(whole, decode_chunks(&refs, Limits::default()));
        // And one byte at a time.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(decode_chunks(&[&input], Limits::default()), decode_chunks(&bytes, Limits::default()));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(input in proptest::collection::vec(any::<u8>(), 0..2000), cuts in proptest::collection::vec(any::<usize>(), 0..10)) {
        let limits = Limits { max_line: 64, max_event: 128, ..Limits::default() };
        let parts = split_at(&input, &cuts);
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let (a, fa) = decode_chunks(&refs, limits);
        let (b, fb) = decode_chunks(&[&input], limits);
        prop_assert_eq!(a, b);
        prop_assert_eq!(fa, fb);
    }
}

#[test]
fn recorded_live_stream_decodes_the_same_in_any_chunking() {
    let recording = common::find("10_sse_live_bob");
    let body = &recording.body[..];
    let (whole, _) = decode_chunks(&[body], Limits::default());
    assert!(whole.len() > 10);
    for size in [1, 2, 3, 7, 13, 64, 1000] {
        let chunks: Vec<&[u8]> = body.chunks(size).collect();
        assert_eq!(
            decode_chunks(&chunks, Limits::default()).0,
            whole,
            "chunks of {size}"
        );
    }
}

#[test]
fn whatwg_rules_hold() {
    let input = b"\xEF\xBB\xBFdata: a\r\ndata:b\rdata\n\n: keepalive\n:\n\nevent: x\nid: 7\ndata: {}\n\nretry: 1500\ndata: unfinished";
    let (frames, failed) = decode_chunks(&[input], Limits::default());
    assert!(!failed);
    assert_eq!(
        frames,
        vec![
            Frame::Event {
                event: None,
                data: "a\nb\n".into(),
                id: None
            },
            Frame::Comment("keepalive".into()),
            Frame::Comment("".into()),
            Frame::Event {
                event: Some("x".into()),
                data: "{}".into(),
                id: Some("7".into())
            },
            Frame::Retry(1500),
        ]
    );
}

#[test]
fn limits_are_typed_errors_and_memory_stays_bounded() {
    let limits = Limits {
        max_line: 16,
        max_event: 24,
        ..Limits::default()
    };
    let mut d = SseDecoder::new(limits);
    d.push(&[b'x'; 10_000]);
    assert!(d.buffered() <= 16);
    assert!(matches!(
        d.next_frame(),
        Err(DecodeError::LineTooLong { limit: 16 })
    ));
    d.push(b"\n\ndata: ok\n\n");
    assert!(
        matches!(d.next_frame(), Ok(None)),
        "a broken stream stays broken"
    );
    let mut d = SseDecoder::new(limits);
    d.push(b"data: 0123456789\ndata: 0123456789\ndata: 0123456789\n\n");
    assert!(matches!(
        d.next_frame(),
        Err(DecodeError::EventTooLarge { limit: 24 })
    ));
}
