//! Arbitrary bytes, split at arbitrary points, give the same frames as decoding them whole;
//! no panic; memory bounded by the configured limits.
#![no_main]

use gapless_catbird::sse::{self, Frame, Limits};
use libfuzzer_sys::fuzz_target;

fn decode(chunks: &[&[u8]], limits: Limits) -> (Vec<Frame>, bool) {
    let d = sse::decode_chunks(chunks.iter().copied(), limits);
    assert!(d.peak_buffered <= limits.max_line + limits.max_event);
    (d.frames, d.failed)
}

fuzz_target!(|input: (Vec<u16>, &[u8])| {
    let (cuts, bytes) = input;
    let limits = Limits {
        max_line: 256,
        max_event: 1024,
        ..Limits::default()
    };
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|c| usize::from(*c) % (bytes.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut last = 0;
    for c in cuts {
        chunks.push(&bytes[last..c]);
        last = c;
    }
    chunks.push(&bytes[last..]);
    assert_eq!(decode(&chunks, limits), decode(&[bytes], limits));
});
