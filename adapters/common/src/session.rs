//! The machine, its store, and the commands between them.

use crate::io::{FetchCall, Io, StreamCall, Wire};
use crate::options::Api;
use crate::send::SendCall;
use crate::socket::SharedCall;
use crate::store::{Store, StoreError, Write};
use crate::update::Update;
use gapless::{
    Command, Config, ConfigError, ConvoId, Input, InputError, MessageId, Order, StreamEvent,
    Subscription, SyncMachine, Time,
};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why a session stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed; what the machine delivered since the last commit is not stored and
    /// will be fetched again by a restarted session.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the application asks of a running driver; a driver passes it to
/// [`Session::request`] as it comes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Sync a conversation, resuming from the store (`live`: with a stream).
    Subscribe {
        /// The conversation.
        convo: ConvoId,
        /// Stream plus catch-ups, or catch-ups only.
        live: bool,
    },
    /// Stop syncing a conversation.
    Unsubscribe(ConvoId),
    /// Catch up now: one conversation, or all.
    Resume(Option<ConvoId>),
    /// Send a message: stored in the outbox, then sent until the server accepts it, in
    /// order per conversation (see [`gapless::Outgoing`]).
    Send(gapless::Outgoing),
    /// Send a failed message again now.
    RetrySend {
        /// The conversation.
        convo: ConvoId,
        /// The message.
        msg_id: gapless::MsgId,
    },
    /// Give up on a message of the outbox.
    DropSend {
        /// The conversation.
        convo: ConvoId,
        /// The message.
        msg_id: gapless::MsgId,
    },
}

/// What one input led to: IO for the driver to do, updates for the application (already
/// stored).
#[derive(Debug, Default)]
pub struct Step {
    /// IO to do, in order.
    pub io: Vec<Io>,
    /// Updates, in order, after their batch was committed.
    pub updates: Vec<Update>,
}

impl Step {
    /// Whether nothing is left to do.
    pub fn is_empty(&self) -> bool {
        self.io.is_empty() && self.updates.is_empty()
    }
}

/// A [`SyncMachine`] with its store and clock. Every input is followed by draining all
/// commands; the messages and checkpoints among them are committed to the store in one batch
/// before any of them reaches the application.
pub struct Session<S> {
    machine: SyncMachine,
    store: S,
    wire: Wire,
    api: Api,
    origin: Instant,
    batch: Vec<Write>,
    committed: u64,
}

impl<S: Store> Session<S> {
    /// A session with nothing subscribed, speaking [`Api::Mls`] (SSE streams per
    /// conversation, unless `config.shared_stream` asks for a shared one).
    pub fn new(config: Config, store: S, wire: Wire) -> Result<Session<S>, SessionError> {
        Session::with(Api::Mls, config, store, wire)
    }

    /// A session with nothing subscribed, speaking `api`: the machine runs with
    /// [`Config::shared_stream`] as the API needs it ([`Api::config`]), and fetches use the
    /// API's `getMessages`.
    pub fn for_api(
        api: Api,
        config: Config,
        store: S,
        wire: Wire,
    ) -> Result<Session<S>, SessionError> {
        Session::with(api, api.config(config), store, wire)
    }

    fn with(api: Api, config: Config, store: S, wire: Wire) -> Result<Session<S>, SessionError> {
        Ok(Session {
            machine: SyncMachine::new(config)?,
            store,
            wire,
            api,
            origin: Instant::now(),
            batch: Vec::new(),
            committed: 0,
        })
    }

    /// The machine's time now.
    pub fn now(&self) -> Time {
        Time::from_millis(self.origin.elapsed().as_millis() as u64)
    }

    /// The instant of a machine time.
    pub fn instant(&self, time: Time) -> Instant {
        self.origin + Duration::from_millis(time.as_millis())
    }

    /// When [`timeout`](Session::timeout) must be called next.
    pub fn deadline(&self) -> Option<Instant> {
        self.machine.poll_timeout().map(|t| self.instant(t))
    }

    /// The machine (read only: inputs go through the session).
    pub fn machine(&self) -> &SyncMachine {
        &self.machine
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (for reads between steps).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Ends the session, handing back its store. Everything delivered is in it.
    pub fn into_store(self) -> S {
        self.store
    }

    /// The wire settings.
    pub fn wire(&self) -> &Wire {
        &self.wire
    }

    /// The API it speaks.
    pub fn api(&self) -> Api {
        self.api
    }

    /// Fetches asked for so far.
    pub fn fetches(&self) -> u64 {
        self.machine.stats().fetches
    }

    /// Messages committed to the store so far.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Subscribes a conversation, resuming from what the store holds for it.
    pub fn subscribe(&mut self, convo: ConvoId, live: bool) -> Result<Step, SessionError> {
        let recent = self.machine.config().dedup_window;
        let mut sub = if live {
            Subscription::live(convo.clone())
        } else {
            Subscription::catch_up_only(convo.clone())
        };
        if let Some(restored) = self.store.load(&convo, recent)? {
            tracing::info!(%convo, seq = restored.checkpoint.seq.0, "resuming from the store");
            sub = sub
                .from_checkpoint(restored.checkpoint)
                .with_recent(restored.recent);
        }
        self.input(Input::Subscribe(sub))
    }

    /// Carries out an application's request; a refused one becomes [`Update::Refused`].
    pub fn request(&mut self, request: Request) -> Result<Step, SessionError> {
        match request {
            Request::Subscribe { convo, live } => self.subscribe(convo, live),
            Request::Unsubscribe(convo) => self.input(Input::Unsubscribe { convo }),
            Request::Resume(convo) => self.input(Input::Resume { convo }),
            Request::Send(out) => self.send(out),
            Request::RetrySend { convo, msg_id } => {
                self.app_input(convo.clone(), Input::RetrySend { convo, msg_id })
            }
            Request::DropSend { convo, msg_id } => {
                self.app_input(convo.clone(), Input::DropSend { convo, msg_id })
            }
        }
    }

    /// Puts a message in the outbox: it is committed to the store before its first send
    /// (the step's IO), then sent until the server accepts it and confirmed once delivered;
    /// [`Update::Outbox`] tells every change. A message the server would refuse (a bad
    /// msgId or padding) becomes [`Update::Refused`].
    pub fn send(&mut self, out: gapless::Outgoing) -> Result<Step, SessionError> {
        let convo = out.convo.clone();
        let now = self.now();
        if let Err(error) = self.machine.handle(now, Input::Send(out.clone())) {
            return Ok(self.refused(Some(convo), error));
        }
        // Ahead of the machine's commands: stored before the send it asked for goes out.
        self.batch.insert(0, Write::Enqueued(out));
        self.drain(None)
    }

    /// Enqueues again what the store's outbox holds (after a restart): unconfirmed
    /// messages are sent again with the same msgId (the server answers a repeated msgId
    /// with its first answer), those the server accepted wait for their delivery.
    pub fn resume_outbox(&mut self) -> Result<Step, SessionError> {
        let pending = self.store.outbox()?;
        let mut step = Step::default();
        for out in pending {
            tracing::info!(convo = %out.convo, msg_id = %out.msg_id, "outbox: enqueued again");
            let more = self.send(out)?;
            step.io.extend(more.io);
            step.updates.extend(more.updates);
        }
        Ok(step)
    }

    fn app_input(&mut self, convo: ConvoId, input: Input) -> Result<Step, SessionError> {
        let now = self.now();
        if let Err(error) = self.machine.handle(now, input) {
            return Ok(self.refused(Some(convo), error));
        }
        self.drain(None)
    }

    /// Feeds one input (an IO result, an unsubscribe, a resume). An application's request
    /// the machine refuses becomes [`Update::Refused`]; a refused IO result (for a
    /// conversation unsubscribed meanwhile) is dropped.
    pub fn input(&mut self, input: Input) -> Result<Step, SessionError> {
        let live = match &input {
            Input::StreamEvent {
                event: StreamEvent::Message { message, .. },
                ..
            }
            | Input::SharedEvent {
                event: StreamEvent::Message { message, .. },
                ..
            } => Some(message.id.clone()),
            _ => None,
        };
        let requested = match &input {
            Input::Subscribe(sub) => Some(sub.convo.clone()),
            Input::Unsubscribe { convo } | Input::Resume { convo: Some(convo) } => {
                Some(convo.clone())
            }
            _ => None,
        };
        let now = self.now();
        tracing::trace!(target: "gapless_adapter::trace", t = now.as_millis(), ?input, "input");
        if let Err(error) = self.machine.handle(now, input) {
            return Ok(self.refused(requested, error));
        }
        self.drain(live)
    }

    fn refused(&self, requested: Option<ConvoId>, error: InputError) -> Step {
        let mut step = Step::default();
        match requested {
            Some(convo) => {
                tracing::warn!(error = %error, "request refused");
                step.updates.push(Update::Refused { convo, error });
            }
            None => tracing::debug!(error = %error, "input for a conversation no longer synced"),
        }
        step
    }

    /// The deadline came (or passed).
    pub fn timeout(&mut self) -> Result<Step, SessionError> {
        let now = self.now();
        tracing::trace!(target: "gapless_adapter::trace", t = now.as_millis(), "timeout");
        self.machine.handle_timeout(now);
        self.drain(None)
    }

    fn drain(&mut self, live: Option<MessageId>) -> Result<Step, SessionError> {
        let mut step = Step::default();
        let mut told = Vec::new();
        let received_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        while let Some(command) = self.machine.poll_command() {
            tracing::trace!(target: "gapless_adapter::trace", ?command, "command");
            match command {
                Command::OpenStream {
                    convo,
                    stream,
                    cursor,
                } => step
                    .io
                    .push(Io::Open(StreamCall::new(convo, stream, cursor.as_ref()))),
                Command::CloseStream { convo, stream } => step.io.push(Io::Close { convo, stream }),
                Command::OpenShared { stream, convos } => step
                    .io
                    .push(Io::OpenShared(SharedCall::new(stream, convos))),
                Command::CloseShared { stream } => step.io.push(Io::CloseShared { stream }),
                Command::Fetch(request) => step
                    .io
                    .push(Io::Fetch(FetchCall::for_api(request, &self.wire, self.api))),
                Command::Deliver(delivery) => {
                    // The store decides about a late message: one it has is a replay.
                    let replay = delivery.order == Order::Late
                        && (self.store.contains(&delivery.convo, &delivery.message.id)?
                            || self.batch.iter().any(|w| {
                                matches!(w, Write::Message { delivery: d, .. }
                                    if d.convo == delivery.convo
                                        && d.message.id == delivery.message.id)
                            }));
                    if replay {
                        tracing::debug!(convo = %delivery.convo, id = %delivery.message.id,
                            "late message already stored");
                    } else {
                        self.batch.push(Write::Message {
                            delivery,
                            received_at_ms,
                        })
                    }
                }
                Command::Unreachable { convo, from, to } => {
                    self.batch.push(Write::Unreachable { convo, from, to })
                }
                Command::Skipped { convo, from, to } => {
                    self.batch.push(Write::Skipped { convo, from, to })
                }
                Command::Checkpoint { convo, checkpoint } => {
                    self.batch.push(Write::Checkpoint { convo, checkpoint })
                }
                Command::Clear { convo, reason } => {
                    tracing::warn!(%convo, ?reason, "conversation cleared");
                    self.batch.push(Write::Cleared { convo, reason })
                }
                Command::Event { convo, event } => told.push(Update::Event { convo, event }),
                Command::Status { convo, status } => told.push(Update::Status { convo, status }),
                Command::Connection(state) => told.push(Update::Connection(state)),
                Command::Anomaly { convo, anomaly } => {
                    tracing::warn!(%convo, ?anomaly, "server anomaly");
                    // Kept for `inspect` with the rest of the batch; told now.
                    self.batch.push(Write::Anomaly {
                        convo: convo.clone(),
                        anomaly: anomaly.clone(),
                        at_ms: received_at_ms,
                    });
                    told.push(Update::Anomaly { convo, anomaly })
                }
                Command::Send(request) => step
                    .io
                    .push(Io::Send(SendCall::for_api(request, &self.wire, self.api))),
                Command::Outbox {
                    convo,
                    msg_id,
                    state,
                } => {
                    tracing::debug!(%convo, %msg_id, %state, "outbox");
                    self.batch.push(Write::Outbox {
                        convo,
                        msg_id,
                        state,
                    })
                }
                other => tracing::debug!(command = ?other, "unknown command ignored"),
            }
        }
        if !self.batch.is_empty() {
            self.store.commit(&self.batch)?;
        }
        for write in self.batch.drain(..) {
            step.updates.push(match write {
                // Stored with the rest: nothing to tell (an anomaly is told as it comes).
                Write::Checkpoint { .. } | Write::Anomaly { .. } => continue,
                Write::Message { delivery, .. } => {
                    if delivery.order != Order::Ephemeral {
                        self.committed += 1;
                    }
                    let recovered = delivery.order != Order::Ephemeral
                        && live.as_ref() != Some(&delivery.message.id);
                    Update::Message {
                        convo: delivery.convo,
                        message: delivery.message,
                        order: delivery.order,
                        recovered,
                    }
                }
                Write::Skipped {
                    convo, from, to, ..
                } => Update::Skipped { convo, from, to },
                Write::Unreachable {
                    convo, from, to, ..
                } => Update::Unreachable { convo, from, to },
                Write::Cleared { convo, reason } => Update::Cleared { convo, reason },
                Write::Enqueued(_) => continue,
                Write::Outbox {
                    convo,
                    msg_id,
                    state,
                } => Update::Outbox {
                    convo,
                    msg_id,
                    state,
                },
            });
        }
        step.updates.extend(told);
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use gapless::{Message, StreamId};

    fn message(seq: u64) -> Input {
        Input::StreamEvent {
            convo: "c".into(),
            stream: StreamId(0),
            event: StreamEvent::Message {
                cursor: None,
                message: Message::new(format!("m{seq}"), seq, 1),
            },
        }
    }

    #[test]
    fn a_late_message_the_store_already_has_is_dropped_and_a_new_one_is_told() {
        use gapless::{Checkpoint, Known, Seq, Subscription};
        let mut store = MemoryStore::new();
        // Stored long ago at seq 5, far below what the machine will remember.
        let old = gapless::Delivery {
            convo: "c".into(),
            message: Message::new("old", 5, 1),
            order: Order::InOrder,
        };
        store
            .commit(&[Write::Message {
                delivery: old,
                received_at_ms: 0,
            }])
            .unwrap();
        let mut s = Session::new(Config::default(), store, Wire::default()).unwrap();
        let recent = (69..100)
            .map(|q| Known::new(Seq(q), format!("m{q}"), gapless::Epoch(1)))
            .collect();
        let cp = Checkpoint {
            seq: Seq(100),
            ids: ["m100".into()].into_iter().collect(),
            ..Checkpoint::default()
        };
        let sub = Subscription::live("c")
            .from_checkpoint(cp)
            .with_recent(recent);
        let step = s.input(Input::Subscribe(sub)).unwrap();
        let Some(Io::Open(call)) = step.io.first().cloned() else {
            panic!("{step:?}")
        };
        let stream = call.stream;
        let event = |id: &str, seq: u64| Input::StreamEvent {
            convo: "c".into(),
            stream,
            event: StreamEvent::Message {
                cursor: None,
                message: Message::new(id, seq, 1),
            },
        };
        let step = s.input(event("old", 5)).unwrap();
        assert!(step.updates.is_empty(), "a replay: {:?}", step.updates);
        let step = s.input(event("new", 5)).unwrap();
        assert!(matches!(
            &step.updates[..],
            [Update::Message {
                order: Order::Late,
                ..
            }]
        ));
        assert_eq!(
            s.store().messages(&"c".into()),
            vec![(5, "new".to_string()), (5, "old".to_string())]
        );
    }

    #[test]
    fn the_mlschat_api_shares_one_stream_and_fetches_with_its_own_method() {
        // Whatever the configuration said, the API decides.
        let config = Config {
            shared_stream: false,
            ..Config::default()
        };
        let mut s =
            Session::for_api(Api::MlsChat, config, MemoryStore::new(), Wire::default()).unwrap();
        assert!(s.machine().config().shared_stream);
        let step = s.subscribe("c".into(), true).unwrap();
        let shared = step.io.iter().find_map(|io| match io {
            Io::OpenShared(call) => Some(call.clone()),
            _ => None,
        });
        let call = shared.expect("one shared stream");
        assert_eq!(call.convos, vec![ConvoId::from("c")]);
        let fetch = step.io.iter().find_map(|io| match io {
            Io::Fetch(f) => Some(f.clone()),
            _ => None,
        });
        let fetch = fetch.expect("the catch-up on joining");
        assert_eq!(fetch.nsid, "blue.catbird.mlsChat.getMessages");
        assert!(fetch
            .path_and_query
            .starts_with("/xrpc/blue.catbird.mlsChat.getMessages?convoId=c&sinceSeq=0"));
        // A second conversation joins: after join_delay the connection is replaced by one
        // covering both.
        s.subscribe("d".into(), true).unwrap();
        std::thread::sleep(s.machine().config().join_delay + Duration::from_millis(20));
        let step = s.timeout().unwrap();
        assert!(step.io.contains(&Io::CloseShared {
            stream: call.stream
        }));
        assert!(step.io.iter().any(|io| matches!(io,
            Io::OpenShared(c) if c.convos == vec![ConvoId::from("c"), ConvoId::from("d")])));
        // The SSE-era API never shares.
        let config = Config {
            shared_stream: true,
            ..Config::default()
        };
        let s = Session::for_api(Api::Mls, config, MemoryStore::new(), Wire::default()).unwrap();
        assert!(!s.machine().config().shared_stream);
    }

    #[test]
    fn deliveries_are_stored_before_the_application_hears_of_them_and_resume_from_the_store() {
        let mut s = Session::new(Config::default(), MemoryStore::new(), Wire::default()).unwrap();
        let step = s.subscribe("c".into(), true).unwrap();
        let Some(Io::Open(call)) = step.io.first().cloned() else {
            panic!("{step:?}")
        };
        s.input(Input::StreamOpened {
            convo: "c".into(),
            stream: call.stream,
        })
        .unwrap();
        let step = s
            .input(Input::StreamEvent {
                convo: "c".into(),
                stream: call.stream,
                event: StreamEvent::Message {
                    cursor: None,
                    message: Message::new("m1", 1, 1),
                },
            })
            .unwrap();
        assert!(matches!(
            &step.updates[..],
            [Update::Message {
                recovered: false,
                ..
            }]
        ));
        assert_eq!(s.store().messages(&"c".into()), vec![(1, "m1".to_string())]);
        assert_eq!(s.committed(), 1);
        let store = std::mem::take(s.store_mut());

        // A new session over the same store knows m1: a replay of it is not delivered again.
        let mut s = Session::new(Config::default(), store, Wire::default()).unwrap();
        let step = s.subscribe("c".into(), true).unwrap();
        let Some(Io::Open(call)) = step.io.first().cloned() else {
            panic!("{step:?}")
        };
        assert_eq!(s.machine().checkpoint(&"c".into()).unwrap().seq.0, 1);
        s.input(Input::StreamOpened {
            convo: "c".into(),
            stream: call.stream,
        })
        .unwrap();
        let replay = match message(1) {
            Input::StreamEvent { event, .. } => Input::StreamEvent {
                convo: "c".into(),
                stream: call.stream,
                event,
            },
            _ => unreachable!(),
        };
        assert!(s.input(replay).unwrap().updates.is_empty());
    }

    #[test]
    fn a_send_is_stored_before_it_goes_out_and_a_new_session_sends_it_again() {
        use gapless::{MsgId, OutboxState, Outgoing};
        let out = Outgoing::new("c", "01M8DMCHZAC3VJJBF6C3H3CEJQ", vec![5; 512], 0);
        let mut s = Session::new(Config::default(), MemoryStore::new(), Wire::default()).unwrap();
        let step = s.send(out.clone()).unwrap();
        let Some(Io::Send(call)) = step.io.first().cloned() else {
            panic!("{step:?}")
        };
        // Already in the store when the driver sees the IO.
        assert_eq!(
            s.store().outbox_states(),
            vec![(
                "c".into(),
                MsgId::from(out.msg_id.as_str()),
                OutboxState::Sending
            )]
        );
        assert!(step.updates.iter().any(|u| matches!(
            u,
            Update::Outbox {
                state: OutboxState::Queued,
                ..
            }
        )));
        // A bad one is refused in words, not stored.
        let bad = Outgoing::new("c", "nope", vec![5; 512], 0);
        let step = s.send(bad).unwrap();
        assert!(matches!(&step.updates[..], [Update::Refused { .. }]));
        assert_eq!(s.store().outbox_states().len(), 1);
        // The process dies with the send in flight: a new session sends it again.
        let store = std::mem::take(s.store_mut());
        let mut s = Session::new(Config::default(), store, Wire::default()).unwrap();
        let step = s.resume_outbox().unwrap();
        let Some(Io::Send(again)) = step.io.first().cloned() else {
            panic!("{step:?}")
        };
        assert_eq!(again.request.msg_id, call.request.msg_id);
        assert_eq!(again.body, call.body);
        // Accepted, then the process dies again: the next one waits for the delivery.
        let ok = br#"{"epoch":0,"messageId":"uuid-1","receivedAt":"t","seq":1}"#;
        s.input(again.answer(200, None, ok)).unwrap();
        let store = std::mem::take(s.store_mut());
        let mut s = Session::new(Config::default(), store, Wire::default()).unwrap();
        let step = s.resume_outbox().unwrap();
        assert!(step.io.is_empty(), "{step:?}");
        assert!(matches!(
            s.machine().outbox(&"c".into())[..],
            [(_, OutboxState::Sent { .. })]
        ));
    }
}
