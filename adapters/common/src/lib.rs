//! # gapless-adapter
//!
//! Everything the two drivers (`gapless-tokio`, `gapless-blocking`) share, so that neither
//! writes the wire format, the store protocol or the command handling a second time:
//!
//! - [`Store`]: where delivered messages and checkpoints go, one atomic [`Store::commit`]
//!   per batch; [`MemoryStore`] for tests. `gapless-sqlite` is the durable one.
//! - [`TokenProvider`]: a token for every request, asked with the method's NSID (the real
//!   server wants a fresh service token per request). [`FixedToken`], [`CommandToken`] and
//!   any `Fn(&str) -> Result<Token, TokenError>`. A [`Token`] never prints.
//! - [`Update`]: what the application is told: messages (after they are stored), skipped
//!   ranges, clears, pass-through events, anomalies.
//! - [`Session`]: owns the [`gapless::SyncMachine`] and the store; feeds inputs, drains
//!   commands, commits each batch before the application hears of it, and hands the driver
//!   the IO to do ([`Io`]): streams to open and close, fetches to make. [`FetchCall`],
//!   [`StreamCall`] and [`StreamReader`] turn HTTP answers and SSE bytes back into inputs.
//! - [`Api`]: which of the server's APIs to speak, in [`Options::api`]: the SSE-era
//!   `blue.catbird.mls` (a stream per conversation) or the newest `blue.catbird.mlsChat`
//!   (one WebSocket for every conversation: [`SharedCall`] asks for its ticket and reads its
//!   answers, [`SharedReader`] turns its frames into inputs).
//!
//! A driver is a loop: do the [`Io`] of a [`Step`], wait for an IO result or
//! [`Session::deadline`], feed it back. No IO happens in this crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod io;
mod options;
mod send;
mod session;
mod socket;
mod store;
mod token;
mod update;

pub use io::{FetchCall, Io, StreamCall, StreamReader, TransportProblem, Wire};
pub use options::{Api, Finished, Options};
pub use send::SendCall;
pub use session::{Request, Session, SessionError, Step};
pub use socket::{Phase, Read, SharedCall, SharedReader, SocketMessage};
pub use store::{MemoryStore, Restored, Store, StoreError, Write};
pub use token::{bearer, CommandToken, FixedToken, Token, TokenError, TokenProvider};
pub use update::Update;

pub use gapless;
pub use gapless_catbird as catbird;
