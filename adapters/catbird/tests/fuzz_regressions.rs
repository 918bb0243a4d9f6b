//! Every input the wire fuzz targets ever crashed on (`fuzz/regressions/`) is replayed here:
//! decoded whole and in pieces, never a panic.

use gapless_catbird::messages::GetMessagesResponse;
use gapless_catbird::sse::{Limits, SseDecoder};
use gapless_catbird::{event, status::ErrorAnswer};
use std::path::Path;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    std::fs::read_dir(&dir)
        .expect("the regressions folder exists")
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

#[test]
fn sse_decoder_regressions() {
    for bytes in inputs("sse_decoder") {
        let mut whole = SseDecoder::new(Limits::default());
        whole.push(&bytes);
        let mut split = SseDecoder::new(Limits::default());
        for b in bytes.chunks(3) {
            split.push(b);
        }
        loop {
            let (a, b) = (whole.next_frame(), split.next_frame());
            assert_eq!(a.is_ok(), b.is_ok());
            match (a, b) {
                (Ok(Some(x)), Ok(Some(y))) => assert_eq!(x, y),
                _ => break,
            }
        }
    }
}

#[test]
fn wire_json_regressions() {
    for bytes in inputs("wire_json") {
        let _ = GetMessagesResponse::decode(&bytes, &Limits::default());
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = event::decode_event(text, &Limits::default());
        }
        let _ = ErrorAnswer::parse(400, None, &bytes).fetch_failure();
    }
}
