//! A scripted driver for named scenarios: the test says what the network does, step by
//! step; the harness feeds the machine, drains it, and records a readable trace.

use super::{format_command, Checker};
use crate::{
    Command, Config, ConvoId, Delivery, Failure, FetchRequest, Input, Message, Page, Seq,
    StreamError, StreamEvent, StreamId, Subscription, SyncMachine, Time,
};
use hashbrown::HashMap;
use std::collections::VecDeque;
use std::time::Duration;

/// Drives one machine by hand. Every input and command goes into the trace, with its time
/// as an offset from the start; the invariant [`Checker`] sees every command.
#[derive(Debug)]
pub struct Harness {
    machine: SyncMachine,
    now: Time,
    lines: Vec<String>,
    fetches: VecDeque<FetchRequest>,
    sends: VecDeque<crate::SendRequest>,
    streams: HashMap<ConvoId, StreamId>,
    delivered: Vec<Delivery>,
    commands: Vec<Command>,
    checker: Checker,
}

impl Harness {
    /// A harness around a machine with `config`.
    pub fn new(config: Config) -> Harness {
        Harness {
            machine: SyncMachine::new(config).expect("valid config"),
            now: Time::ZERO,
            lines: Vec::new(),
            fetches: VecDeque::new(),
            sends: VecDeque::new(),
            streams: HashMap::new(),
            delivered: Vec::new(),
            commands: Vec::new(),
            checker: Checker::new(),
        }
    }

    /// The machine, for its getters.
    pub fn machine(&self) -> &SyncMachine {
        &self.machine
    }

    /// The current virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    fn line(&mut self, arrow: &str, text: String) {
        self.lines
            .push(format!("{:>8} {arrow} {text}", self.now.to_string()));
    }

    fn drain(&mut self) {
        while let Some(c) = self.machine.poll_command() {
            self.line(">", format_command(&c));
            self.checker.command(&c);
            match &c {
                Command::Fetch(f) => self.fetches.push_back(f.clone()),
                Command::Send(r) => self.sends.push_back(r.clone()),
                Command::OpenStream { convo, stream, .. } => {
                    self.streams.insert(convo.clone(), *stream);
                }
                Command::Deliver(d) => self.delivered.push(d.clone()),
                _ => {}
            }
            self.commands.push(c);
        }
        self.checker.drained();
    }

    /// Feeds any input, recorded as `note`.
    pub fn input(&mut self, note: &str, input: Input) {
        self.line("<", note.to_string());
        if let Err(e) = self.machine.handle(self.now, input) {
            self.line("!", e.to_string());
        }
        self.drain();
    }

    /// Subscribes a conversation.
    pub fn subscribe(&mut self, sub: Subscription) {
        let note = format!(
            "subscribe {} from {} live={}",
            sub.convo, sub.checkpoint.seq, sub.live
        );
        self.checker.start(&sub.convo, sub.checkpoint.seq);
        self.input(&note, Input::Subscribe(sub));
    }

    fn stream_of(&self, convo: &str) -> StreamId {
        *self
            .streams
            .get(&ConvoId::from(convo))
            .expect("no stream was asked for")
    }

    /// The stream last asked for connects.
    pub fn open(&mut self, convo: &str) {
        let stream = self.stream_of(convo);
        let input = Input::StreamOpened {
            convo: convo.into(),
            stream,
        };
        self.input(&format!("stream {convo} #{} opened", stream.0), input);
    }

    /// The stream ends.
    pub fn close(&mut self, convo: &str, error: Option<StreamError>) {
        let stream = self.stream_of(convo);
        let note = format!("stream {convo} #{} closed {error:?}", stream.0);
        let input = Input::StreamClosed {
            convo: convo.into(),
            stream,
            error,
        };
        self.input(&note, input);
    }

    /// A message arrives over the stream.
    pub fn stream(&mut self, convo: &str, message: Message) {
        let note = format!("stream {convo} seq={} id={}", message.seq, message.id);
        self.event(
            convo,
            &note,
            StreamEvent::Message {
                cursor: None,
                message,
            },
        );
    }

    /// Any event arrives over the stream.
    pub fn event(&mut self, convo: &str, note: &str, event: StreamEvent) {
        let stream = self.stream_of(convo);
        let input = Input::StreamEvent {
            convo: convo.into(),
            stream,
            event,
        };
        self.input(note, input);
    }

    /// Lets virtual time pass, firing every deadline on the way.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while super::fire_next_deadline(&mut self.machine, &mut self.now, until) {
            self.drain();
        }
        self.now = until;
    }

    /// Takes the oldest unanswered fetch.
    pub fn take_fetch(&mut self) -> Option<FetchRequest> {
        self.fetches.pop_front()
    }

    /// How many fetches are unanswered.
    pub fn pending_fetches(&self) -> usize {
        self.fetches.len()
    }

    /// Answers a fetch with a page.
    pub fn answer(&mut self, fetch: &FetchRequest, messages: Vec<Message>) {
        self.answer_with_gaps(fetch, messages, crate::Gaps::Unknown);
    }

    /// Answers a fetch with a page and the server's `gapInfo`.
    pub fn answer_with_gaps(
        &mut self,
        fetch: &FetchRequest,
        messages: Vec<Message>,
        gaps: crate::Gaps,
    ) {
        let seqs: Vec<String> = messages.iter().map(|m| m.seq.to_string()).collect();
        self.checker.fetch_answered(&fetch.convo, fetch.id);
        let mut note = format!("page r{} [{}]", fetch.id.0, seqs.join(", "));
        if gaps != crate::Gaps::Unknown {
            note.push_str(&format!(" {gaps:?}"));
        }
        let input = Input::FetchPage(Page::new(fetch.id, messages).with_gaps(gaps));
        self.input(&note, input);
    }

    /// Answers a fetch with a failure.
    pub fn fail(&mut self, fetch: &FetchRequest, failure: Failure) {
        self.checker.fetch_answered(&fetch.convo, fetch.id);
        let note = format!("fetch r{} failed {failure:?}", fetch.id.0);
        let input = Input::FetchFailed {
            request: fetch.id,
            failure,
        };
        self.input(&note, input);
    }

    /// Enqueues a message in the outbox.
    pub fn send(&mut self, out: crate::Outgoing) {
        let note = format!("send {} {}", out.convo, out.msg_id);
        self.input(&note, Input::Send(out));
    }

    /// Takes the oldest unanswered send.
    pub fn take_send(&mut self) -> Option<crate::SendRequest> {
        self.sends.pop_front()
    }

    /// Answers a send.
    pub fn send_result(
        &mut self,
        send: &crate::SendRequest,
        result: Result<crate::SendAnswer, crate::SendFailure>,
    ) {
        let note = format!("send r{} answered {result:?}", send.id.0);
        let input = Input::SendResult {
            request: send.id,
            result,
        };
        self.input(&note, input);
    }

    /// The outbox states told for `msg_id`, in order.
    pub fn outbox_states(&self, msg_id: &str) -> Vec<crate::OutboxState> {
        self.commands
            .iter()
            .filter_map(|c| match c {
                Command::Outbox {
                    msg_id: m, state, ..
                } if m.as_str() == msg_id => Some(state.clone()),
                _ => None,
            })
            .collect()
    }

    /// The seqs delivered in `convo`, in delivery order.
    pub fn delivered_seqs(&self, convo: &str) -> Vec<u64> {
        self.delivered
            .iter()
            .filter(|d| d.convo.as_str() == convo)
            .map(|d| d.message.seq.0)
            .collect()
    }

    /// Every delivery so far.
    pub fn deliveries(&self) -> &[Delivery] {
        &self.delivered
    }

    /// The conversation's last checkpoint handed out (what a store holds now).
    pub fn checkpoint(&self, convo: &str) -> Option<&crate::Checkpoint> {
        self.commands.iter().rev().find_map(|c| match c {
            Command::Checkpoint {
                convo: c,
                checkpoint,
            } if c.as_str() == convo => Some(checkpoint),
            _ => None,
        })
    }

    /// Every command so far.
    pub fn commands(&self) -> &[Command] {
        &self.commands
    }

    /// The trace so far, one line per input (`<`) and command (`>`).
    pub fn trace(&self) -> String {
        self.lines.join("\n") + "\n"
    }

    /// Panics with the trace if an invariant was broken.
    pub fn assert_invariants(&self) {
        let v = self.checker.violations();
        assert!(v.is_empty(), "violations: {v:?}\n{}", self.trace());
    }

    /// The checkpoint's seq for `convo`.
    pub fn position(&self, convo: &str) -> Seq {
        self.machine
            .checkpoint(&convo.into())
            .map_or(Seq::ZERO, |c| c.seq)
    }
}
