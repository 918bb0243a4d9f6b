//! # gapless
//!
//! Keeps a chat client's conversations **complete and in order** over a lossy live stream.
//!
//! Messages arrive over a stream (server-sent events) that can drop, duplicate, reorder and
//! cut; the server can also be asked for them (`getMessages` since a seq). The
//! [`SyncMachine`] turns both into one ordered delivery per conversation: it buffers what
//! comes early, waits `gap_wait` for what is missing, then fetches it; it never gives up on a
//! message the server still has, and says so explicitly ([`Command::Skipped`]) when the
//! server confirms it has not.
//!
//! The crate contains no networking code and reads no clock: every input carries the
//! current [`Time`], every output is a [`Command`] for an adapter to carry out (see the
//! `gapless-tokio` and `gapless-blocking` crates). The same inputs give the same commands.
//!
//! Contents:
//! - [`SyncMachine`] (`machine.rs`, per conversation `convo.rs`): the machine.
//! - [`Input`] (`input.rs`) and [`Command`] (`command.rs`): what goes in and comes out.
//! - [`Config`] (`config.rs`): the tunables and their defaults.
//! - [`Checkpoint`] (`checkpoint.rs`): what to store to restart without loss.
//! - [`Status`] (`status.rs`) of a conversation and the [`Connection`] of them all
//!   (`connection.rs`); the request [`Budget`] they share (`budget.rs`).
//! - the outbox (`outbox.rs`): messages sent reliably, in order, confirmed by their echo
//!   ([`Outgoing`], [`OutboxState`]).
//! - identifiers, [`Time`] and [`Message`] (`types.rs`); errors and [`Anomaly`] (`error.rs`).
//! - `testkit` (feature `testkit`): a deterministic simulated server and lossy network.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod budget;
mod buffer;
mod checkpoint;
mod command;
mod config;
mod connection;
mod convo;
mod error;
mod input;
mod machine;
mod outbox;
mod queue;
mod rng;
mod shared;
mod status;
mod timers;
mod types;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use budget::{Budget, Rate};
pub use checkpoint::{Checkpoint, Known};
pub use command::{Command, Delivery, FetchRequest, Order};
pub use config::{Config, MIN_MAX_PAGE_LIMIT};
pub use connection::Connection;
pub use error::{Anomaly, ConfigError, InputError};
pub use input::{
    Failure, Gaps, Input, Page, Permanent, StreamError, StreamEvent, Subscription, SLOW_CONSUMER,
};
pub use machine::{Stats, SyncMachine};
pub use outbox::{
    padded_size_is_valid, MsgId, OutboxState, Outgoing, Refusal, SendAnswer, SendFailure,
    SendRequest,
};
pub use status::{Status, Trouble};
/// The README's examples, compiled and run as doctests so that they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use types::{
    ConvoId, Cursor, Epoch, Message, MessageId, MessageKind, RequestId, Seq, StreamId, Time,
};
