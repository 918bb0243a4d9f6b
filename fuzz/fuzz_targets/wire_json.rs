//! Arbitrary bytes into every response and event decoder: a value or a typed error, never
//! a panic.
#![no_main]

use gapless_catbird::messages::GetMessagesResponse;
use gapless_catbird::status::ErrorAnswer;
use gapless_catbird::{event, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_ciphertext: 1 << 16,
        ..Limits::default()
    };
    if let Ok(resp) = GetMessagesResponse::decode(data, &limits) {
        let _ = resp.into_page(
            gapless::RequestId(1),
            &"22653740d27a6e9a7293ebcf1e73ef12".into(),
            &limits,
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = event::decode_event(text, &limits);
    }
    let status = data.first().map_or(200, |b| 400 + u16::from(*b % 200));
    let retry = data.get(1..4).and_then(|b| std::str::from_utf8(b).ok());
    let answer = ErrorAnswer::parse(status, retry, data);
    let _ = answer.fetch_failure();
    let _ = answer.stream_error(data.len() % 2 == 0);
});
