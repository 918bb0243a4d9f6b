//! A deterministic simulation for tests, fuzzing and benches (feature `testkit`).
//!
//! - [`SimServer`]: per-conversation logs as the real Catbird server keeps them — seqs by
//!   `MAX(seq)+1` with holes, shared seqs, late commits, expiry, ephemeral messages,
//!   epochs that go back, pages ordered by `(epoch, seq)` and cut at `limit`.
//! - [`Sim`]: that server behind a network that drops, duplicates, reorders, delays and cuts
//!   stream events and fails or slows fetches, all from a seed; a virtual clock that jumps to
//!   the next deadline; a store that keeps what was delivered and restarts the machine from
//!   it; and a [`Checker`] that checks `DESIGN.md`'s invariants on every command.
//! - [`Harness`]: a scripted driver for named scenarios, recording a readable trace.

mod check;
#[cfg(feature = "fuzzing")]
mod fuzz;
mod harness;
mod ops;
mod server;
mod sim;
mod trace;

pub use check::{Checker, Violation};
#[cfg(feature = "fuzzing")]
pub use fuzz::{FuzzConfig, FuzzInput};
pub use harness::Harness;
pub use ops::{Op, OpRunner, CONVOS};
pub use server::{ServerFaults, SimServer};
pub use sim::{Faults, SendFaults, Sim, SimConfig, SimReport};
pub use trace::format_command;

use crate::{SyncMachine, Time};

/// Fires the machine's next deadline if it is due by `until`, moving `now` to it; returns
/// whether it did (drain the commands, then call again).
pub fn fire_next_deadline(machine: &mut SyncMachine, now: &mut Time, until: Time) -> bool {
    match machine.poll_timeout() {
        Some(t) if t <= until => {
            *now = (*now).max(t);
            machine.handle_timeout(*now);
            true
        }
        _ => false,
    }
}
