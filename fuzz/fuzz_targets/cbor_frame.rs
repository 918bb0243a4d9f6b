//! Arbitrary bytes into the WebSocket side of the mlsChat API: the DAG-CBOR frame decoder,
//! the client frames, the ticket and the REST answers. A value or a typed error, never a
//! panic; a decoded event's JSON body always parses back.
#![no_main]

use gapless::StreamEvent;
use gapless_catbird::mlschat::{GetMessagesResponse, SendMessageAnswer};
use gapless_catbird::realtime::{decode_frame, ClientFrame, Payload, Refusal, Ticket, TicketScope};
use gapless_catbird::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_event: 1 << 16,
        max_ciphertext: 1 << 14,
        ..Limits::default()
    };
    if let Ok(frame) = decode_frame(data, &limits) {
        if let Payload::Event(StreamEvent::Other { body, .. }) = &frame.payload {
            assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
        }
        if let Payload::Event(StreamEvent::Message { message, .. }) = &frame.payload {
            assert!(message.payload.len() <= limits.max_ciphertext);
            assert!(frame.convo.is_some());
        }
    }
    if let Ok(client) = ClientFrame::decode(data) {
        assert_eq!(ClientFrame::decode(&client.encode()).ok(), Some(client));
    }
    if let Ok(ticket) = Ticket::decode(data) {
        let _ = ticket.socket_url("https://mls.example", None);
    }
    if let Ok(resp) = GetMessagesResponse::decode(data, &limits) {
        let _ = resp.into_page(gapless::RequestId(1), &"c".into(), &limits);
    }
    let _ = SendMessageAnswer::decode(data);
    let status = data.first().map_or(200, |b| 400 + u16::from(*b % 200));
    let retry = data.get(1..4).and_then(|b| std::str::from_utf8(b).ok());
    let scope = if data.len() % 2 == 0 {
        TicketScope::Global
    } else {
        TicketScope::Convo("c".into())
    };
    let _ = Refusal::parse(status, retry, data, &scope, data.len() % 3 == 0);
});
