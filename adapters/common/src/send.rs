//! One `sendMessage` to make for the outbox, and its answer back into an input.
//!
//! Every call's outcome is a `tracing` event (target `gapless_adapter::io`) as the other
//! calls' are (`io.rs`): `convo`, `call = "send"`, `msg_id`, `result` (`"ok"`, `"refused"`,
//! `"unreachable"`, `"undecodable"`, `"no answer"`), and on warnings `next` in words.

use crate::io::{Said, TransportProblem};
use crate::options::Api;
use gapless::{Input, SendFailure, SendRequest};
use gapless_catbird::send;
use gapless_catbird::status::ErrorAnswer;

/// One `sendMessage` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendCall {
    /// What the machine asked for.
    pub request: SendRequest,
    /// The path, to append to the base URL (a POST).
    pub path: String,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The method's NSID, for the token provider: `blue.catbird.mls.sendMessage` or
    /// `blue.catbird.mlsChat.sendMessage`.
    pub nsid: &'static str,
}

fn after(failure: &SendFailure) -> String {
    match failure {
        SendFailure::Refused(_) => "the message failed; it waits for a retry or a drop".into(),
        SendFailure::RateLimited {
            retry_after: Some(d),
        } => format!(
            "will send again (same msgId) in {} s or later",
            d.as_secs().max(1)
        ),
        _ => "will send again with the same msgId".into(),
    }
}

impl SendCall {
    /// The call for a send on `api`.
    pub fn for_api(request: SendRequest, _wire: &crate::Wire, api: Api) -> SendCall {
        let (path, nsid) = match api {
            Api::Mls => (send::path(), gapless_catbird::SEND_MESSAGE),
            Api::MlsChat => (send::mlschat_path(), gapless_catbird::MLSCHAT_SEND_MESSAGE),
        };
        SendCall {
            body: send::body(&request),
            request,
            path,
            nsid,
        }
    }

    /// The server answered: any status, its `Retry-After` header, the whole body.
    pub fn answer(&self, status: u16, retry_after: Option<&str>, body: &[u8]) -> Input {
        let (convo, msg_id) = (&self.request.convo, &self.request.msg_id);
        if !(200..300).contains(&status) {
            let answer = ErrorAnswer::parse(status, retry_after, body);
            let failure = send::failure(&answer);
            let (said, next) = (Said(&answer), after(&failure));
            tracing::warn!(
                target: "gapless_adapter::io",
                convo = %convo, call = "send", msg_id = %msg_id, result = "refused", status,
                answer = %said, next = %next,
                "{convo}: the server refused message {msg_id}: {said}; {next}"
            );
            return self.result(Err(failure));
        }
        match send::decode_answer(&self.request, body) {
            Ok(answer) => {
                tracing::debug!(target: "gapless_adapter::io", convo = %convo, call = "send", msg_id = %msg_id, result = "ok",
                    status, seq = answer.seq.0, "sent");
                self.result(Ok(answer))
            }
            Err(e) => {
                let next = "will send again with the same msgId";
                tracing::warn!(
                target: "gapless_adapter::io",
                    convo = %convo, call = "send", msg_id = %msg_id, result = "undecodable",
                    status, error = %e, next,
                    "{convo}: the server's answer to message {msg_id} does not decode ({e}); {next}"
                );
                self.result(Err(SendFailure::Transient))
            }
        }
    }

    /// The request got no answer (see [`TransportProblem::of`]): transient — the server
    /// may have applied it; the same msgId is sent again.
    pub fn unreachable(&self, problem: TransportProblem) -> Input {
        let (convo, next) = (&self.request.convo, "will send again with the same msgId");
        tracing::warn!(
                target: "gapless_adapter::io",
            convo = %convo, call = "send", msg_id = %self.request.msg_id, result = "unreachable",
            problem = %problem, next, "{convo}: cannot reach the server ({problem}); {next}"
        );
        self.result(Err(SendFailure::Transient))
    }

    /// The request was not sent (no token) or its answer broke off: transient.
    pub fn failed(&self) -> Input {
        tracing::debug!(target: "gapless_adapter::io", convo = %self.request.convo, call = "send", result = "no answer", "no answer");
        self.result(Err(SendFailure::Transient))
    }

    fn result(&self, result: Result<gapless::SendAnswer, SendFailure>) -> Input {
        Input::SendResult {
            request: self.request.id,
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapless::{ConvoId, Epoch, MsgId, Refusal, RequestId, Seq};

    fn call(api: Api) -> SendCall {
        let request = SendRequest {
            id: RequestId(3),
            convo: ConvoId::from("c"),
            msg_id: MsgId::from("01M8DMCHZAC3VJJBF6C3H3CEJQ"),
            payload: vec![1; 512],
            epoch: Epoch(0),
            padded_size: 512,
            ephemeral: false,
        };
        SendCall::for_api(request, &crate::Wire::default(), api)
    }

    #[test]
    fn each_api_has_its_method_and_answers_become_send_results() {
        let mls = call(Api::Mls);
        assert_eq!(mls.path, "/xrpc/blue.catbird.mls.sendMessage");
        assert_eq!(mls.nsid, "blue.catbird.mls.sendMessage");
        let chat = call(Api::MlsChat);
        assert_eq!(chat.path, "/xrpc/blue.catbird.mlsChat.sendMessage");
        assert_eq!(chat.nsid, "blue.catbird.mlsChat.sendMessage");
        let ok = br#"{"epoch":0,"messageId":"uuid","receivedAt":"t","seq":4}"#;
        match mls.answer(200, None, ok) {
            Input::SendResult {
                request,
                result: Ok(a),
            } => {
                assert_eq!(request, RequestId(3));
                assert_eq!(a.seq, Seq(4));
            }
            other => panic!("{other:?}"),
        }
        let failure = |input| match input {
            Input::SendResult { result: Err(f), .. } => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            failure(mls.answer(403, None, b"")),
            SendFailure::Refused(Refusal::Forbidden)
        );
        assert_eq!(failure(mls.answer(502, None, b"")), SendFailure::Transient);
        assert_eq!(
            failure(mls.answer(200, None, b"{}")),
            SendFailure::Transient
        );
        assert_eq!(
            failure(mls.unreachable(TransportProblem::Reset)),
            SendFailure::Transient
        );
    }
}
