//! `sendMessage` of both APIs (`blue.catbird.mls.sendMessage`, the SSE era, and
//! `blue.catbird.mlsChat.sendMessage`, the newest): the request for a
//! [`gapless::SendRequest`], its answer into a [`gapless::SendAnswer`], and every error
//! answer into a [`gapless::SendFailure`].
//!
//! Both take the same body (`convoId`, `msgId`, `ciphertext` as `{"$bytes": …}` — a plain
//! string is a 400 —, `epoch`, `paddedSize`, `delivery`) and answer a stored message with
//! `{epoch, messageId, receivedAt, seq}`; a repeated msgId gets the first answer (recording
//! `64b_`). An ephemeral send answers seq 0 with the msgId as messageId (SSE era, `16_`) or
//! `{"success": true}` (mlsChat).

use crate::mlschat::SendMessage;
use crate::status::ErrorAnswer;
use crate::{xrpc_path, DecodeError, MLSCHAT_SEND_MESSAGE, SEND_MESSAGE};
use gapless::{Refusal, SendAnswer, SendFailure, SendRequest, Seq};
use serde::Deserialize;

/// The largest answer [`decode_answer`] reads.
pub const MAX_ANSWER: usize = 64 << 10;

/// The JSON body of a send (either API).
pub fn body(request: &SendRequest) -> Vec<u8> {
    let mut body = SendMessage::new(
        &request.convo,
        request.msg_id.as_str(),
        &request.payload,
        request.epoch.0,
    );
    body.padded_size = u64::from(request.padded_size);
    if request.ephemeral {
        body.delivery = Some("ephemeral".into());
    }
    body.body()
}

/// The path of the SSE-era method (`/xrpc/blue.catbird.mls.sendMessage`).
pub fn path() -> String {
    xrpc_path(SEND_MESSAGE)
}

/// The path of the newest API's method (`/xrpc/blue.catbird.mlsChat.sendMessage`).
pub fn mlschat_path() -> String {
    xrpc_path(MLSCHAT_SEND_MESSAGE)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    received_at: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    success: Option<bool>,
}

/// Decodes a 2xx answer to `request`. A stored message must come with its `messageId` and
/// `seq`; an ephemeral one may answer `{"success": true}` alone (its id is then the msgId).
pub fn decode_answer(request: &SendRequest, body: &[u8]) -> Result<SendAnswer, DecodeError> {
    if body.len() > MAX_ANSWER {
        return Err(DecodeError::BodyTooLarge {
            len: body.len(),
            limit: MAX_ANSWER,
        });
    }
    let a: Answer = serde_json::from_slice(body)?;
    match (a.message_id, a.seq) {
        (Some(id), Some(seq)) if !id.is_empty() => Ok(SendAnswer {
            seq: Seq(seq),
            message_id: id.into(),
            received_at: a.received_at.map(String::into_boxed_str),
        }),
        _ if request.ephemeral && a.success == Some(true) => Ok(SendAnswer {
            seq: Seq::ZERO,
            message_id: request.msg_id.as_str().into(),
            received_at: None,
        }),
        _ => Err(DecodeError::SendAnswer(
            "no messageId and seq for a stored message".into(),
        )),
    }
}

/// What an error answer to a send means: 401 and 429 pass (retried), 408 and 5xx are
/// transient (the server may have applied it: retried with the same msgId), any other 4xx
/// refuses the message (it fails and holds its conversation's queue).
pub fn failure(answer: &ErrorAnswer) -> SendFailure {
    let name = answer.xrpc.as_ref().and_then(|x| x.error.as_deref());
    match (answer.status, name) {
        (401, _) => SendFailure::Unauthorized,
        (429, _) => SendFailure::RateLimited {
            retry_after: answer.retry_after,
        },
        (_, Some("NotMember")) => SendFailure::Refused(Refusal::NotMember),
        (_, Some("ConvoNotFound")) => SendFailure::Refused(Refusal::NotFound),
        (_, Some("EpochMismatch")) | (409, _) => SendFailure::Refused(Refusal::EpochMismatch),
        (_, Some("MessageTooLarge")) | (413, _) => SendFailure::Refused(Refusal::TooLarge),
        (400, _) => SendFailure::Refused(Refusal::BadRequest),
        (403, _) => SendFailure::Refused(Refusal::Forbidden),
        (408, _) => SendFailure::Transient,
        (s @ 400..=499, _) => SendFailure::Refused(Refusal::Status(s)),
        _ => SendFailure::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapless::{ConvoId, Epoch, MsgId, RequestId};
    use std::time::Duration;

    fn request(ephemeral: bool) -> SendRequest {
        SendRequest {
            id: RequestId(1),
            convo: ConvoId::from("c"),
            msg_id: MsgId::from("01M8DMCHZAC3VJJBF6C3H3CEJQ"),
            payload: vec![9; 512],
            epoch: Epoch(2),
            padded_size: 512,
            ephemeral,
        }
    }

    #[test]
    fn the_body_is_the_recorded_shape_with_bytes_ciphertext() {
        let v: serde_json::Value = serde_json::from_slice(&body(&request(false))).unwrap();
        assert_eq!(v["convoId"], "c");
        assert_eq!(v["msgId"], "01M8DMCHZAC3VJJBF6C3H3CEJQ");
        assert_eq!(v["epoch"], 2);
        assert_eq!(v["paddedSize"], 512);
        assert!(v["ciphertext"]["$bytes"].is_string());
        assert!(v.get("delivery").is_none());
        let v: serde_json::Value = serde_json::from_slice(&body(&request(true))).unwrap();
        assert_eq!(v["delivery"], "ephemeral");
        assert_eq!(path(), "/xrpc/blue.catbird.mls.sendMessage");
    }

    #[test]
    fn the_recorded_answers_decode() {
        // Recording 11_sendMessage_seq1_alice (and 64b_, the same answer again).
        let body = br#"{"epoch":0,"messageId":"70ee8b5d-83a1-4591-943e-62cf5c6b143d","receivedAt":"2026-11-27T04:32:00.500921+00:00","seq":1}"#;
        let a = decode_answer(&request(false), body).unwrap();
        assert_eq!(a.seq, Seq(1));
        assert_eq!(
            a.message_id.as_str(),
            "70ee8b5d-83a1-4591-943e-62cf5c6b143d"
        );
        // Recording 16_: ephemeral, seq 0, the msgId as messageId.
        let body =
            br#"{"epoch":1,"messageId":"01M8DMD9EGJ1M0CS36KX37HCJZ","receivedAt":"x","seq":0}"#;
        assert_eq!(decode_answer(&request(true), body).unwrap().seq, Seq::ZERO);
        // mlsChat's ephemeral answer.
        let a = decode_answer(&request(true), br#"{"success":true}"#).unwrap();
        assert_eq!(a.message_id.as_str(), "01M8DMCHZAC3VJJBF6C3H3CEJQ");
        assert!(decode_answer(&request(false), br#"{"success":true}"#).is_err());
        assert!(decode_answer(&request(false), b"{").is_err());
    }

    #[test]
    fn error_answers_map_to_send_failures() {
        let f = |status, retry: Option<&str>, body: &[u8]| {
            failure(&ErrorAnswer::parse(status, retry, body))
        };
        assert_eq!(f(401, None, b""), SendFailure::Unauthorized);
        assert_eq!(
            f(429, Some("7"), b""),
            SendFailure::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(f(400, None, b""), SendFailure::Refused(Refusal::BadRequest));
        assert_eq!(f(403, None, b""), SendFailure::Refused(Refusal::Forbidden));
        assert_eq!(
            f(403, None, br#"{"error":"NotMember"}"#),
            SendFailure::Refused(Refusal::NotMember)
        );
        assert_eq!(
            f(409, None, b""),
            SendFailure::Refused(Refusal::EpochMismatch)
        );
        assert_eq!(f(413, None, b""), SendFailure::Refused(Refusal::TooLarge));
        assert_eq!(
            f(404, None, b""),
            SendFailure::Refused(Refusal::Status(404))
        );
        assert_eq!(f(500, None, b""), SendFailure::Transient);
        assert_eq!(f(503, None, b""), SendFailure::Transient);
        assert_eq!(f(408, None, b""), SendFailure::Transient);
    }
}
