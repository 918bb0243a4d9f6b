//! `gapless`: the demo, the dev server, syncing real conversations, and looking at what was
//! stored.

mod baseline;
mod console;
mod demo;
mod errors;
mod inspect;
mod live;
mod report;
mod send;
mod serve;
mod sync;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "gapless",
    version,
    about = "Keeps chat conversations complete and in order over a lossy live stream."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the dev server with faults in-process, syncs it into SQLite with gapless, and
    /// compares with a stream-only client (the seed's behaviour).
    Demo(demo::Args),
    /// Runs the dev server alone, on 127.0.0.1.
    Serve(serve::Args),
    /// Syncs conversations from a Catbird server into a database, resuming from its
    /// checkpoints.
    Sync(sync::Args),
    /// Sends one message through the database's outbox and waits until it is confirmed
    /// (the server accepted it and it came back in the conversation).
    Send(send::Args),
    /// Shows what a database holds.
    Inspect(inspect::Args),
}

/// Which of the Catbird server's APIs to speak (`--api`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiArg {
    /// blue.catbird.mls: one server-sent-events stream per conversation (the SSE-era API)
    Mls,
    /// blue.catbird.mlsChat: one WebSocket for every conversation (the newest API; its
    /// servers answer 404 to blue.catbird.mls.getMessages)
    Mlschat,
}

impl From<ApiArg> for gapless_adapter::Api {
    fn from(api: ApiArg) -> gapless_adapter::Api {
        match api {
            ApiArg::Mls => gapless_adapter::Api::Mls,
            ApiArg::Mlschat => gapless_adapter::Api::MlsChat,
        }
    }
}

/// A duration like `30s`, `2m`, `1h 5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// Where a database goes when none is given.
pub fn default_db(name: &str) -> PathBuf {
    PathBuf::from(name)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's faults are deliberate: only errors. Elsewhere a refused request (a bad
    // token, a 403) is worth a warning. `RUST_LOG` overrides.
    let (default, watch) = match cli.command {
        Command::Demo(_) => ("error", false),
        Command::Sync(_) => ("warn", true),
        _ => ("warn", false),
    };
    console::init(default, watch);
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Sync(args) => sync::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Send(args) => send::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            console::flush_repeats();
            eprintln!("gapless: {}", console::clean(&errors::chain(&e)));
            errors::exit_code(&e)
        }
    }
}
