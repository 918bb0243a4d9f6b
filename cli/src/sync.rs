//! `gapless sync`.

use crate::errors;
use anyhow::{bail, Context};
use gapless::ConvoId;
use gapless_adapter::catbird::messages::Paging;
use gapless_adapter::{CommandToken, FixedToken, TokenProvider, Update};
use gapless_sqlite::SqliteStore;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The server's base URL, e.g. `https://mls.catbird.blue`.
    #[arg(long)]
    server: String,
    /// A fixed bearer token (for servers that accept one; the dev server does).
    #[arg(
        long,
        required_unless_present = "token_command",
        conflicts_with = "token_command"
    )]
    token: Option<String>,
    /// A command run for every request with the method's NSID as its last argument; what it
    /// prints is the token (mint a fresh service token per request for the real server).
    #[arg(long)]
    token_command: Option<String>,
    /// A conversation to sync (repeat for more).
    #[arg(long = "convo", required = true)]
    convos: Vec<String>,
    /// The database (created if absent; resumed from if present).
    #[arg(long)]
    db: PathBuf,
    /// Stop gracefully after this long (`30s`, `5m`); without it, run until Ctrl-C.
    #[arg(long = "for", value_parser = crate::parse_duration)]
    duration: Option<Duration>,
    /// Use the blocking (thread) driver instead of tokio.
    #[arg(long)]
    blocking: bool,
    /// Page with `sinceMessage` (older servers) instead of `sinceSeq`.
    #[arg(long)]
    since_message: bool,
    /// Print every message as it is stored.
    #[arg(long)]
    print: bool,
}

/// What a sync run saw.
#[derive(Default)]
pub struct Tally {
    pub messages: u64,
    pub skipped: u64,
    pub cleared: Vec<String>,
    pub anomalies: u64,
}

impl Tally {
    pub fn record(&mut self, update: &Update, print: bool) {
        match update {
            Update::Message {
                convo,
                message,
                order,
                ..
            } => {
                if *order != gapless::Order::Ephemeral {
                    self.messages += 1;
                }
                if print {
                    println!(
                        "{convo} seq {} epoch {} {} ({} bytes{})",
                        message.seq.0,
                        message.epoch.0,
                        message.id,
                        message.payload.len(),
                        match order {
                            gapless::Order::SharesSeq => ", shares its seq",
                            gapless::Order::Ephemeral => ", ephemeral",
                            _ => "",
                        }
                    );
                }
            }
            Update::Skipped { convo, from, to } => {
                self.skipped += 1;
                if print {
                    println!(
                        "{convo} skipped {}..={} (the server has none)",
                        from.0, to.0
                    );
                }
            }
            Update::Cleared { convo, reason } => {
                eprintln!("{convo}: cannot be synced ({reason:?})");
                self.cleared.push(convo.to_string());
            }
            Update::Anomaly { .. } => self.anomalies += 1,
            _ => {}
        }
    }
}

pub fn tokens(
    token: Option<String>,
    command: Option<String>,
) -> anyhow::Result<Arc<dyn TokenProvider>> {
    match (token, command) {
        (Some(t), None) => Ok(Arc::new(FixedToken::new(t))),
        (None, Some(c)) => match CommandToken::parse(&c) {
            Some(p) => Ok(Arc::new(p)),
            None => bail!("--token-command is empty"),
        },
        _ => bail!("give exactly one of --token and --token-command"),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let base = args.server.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("--server must be an http:// or https:// URL (got {base:?})");
    }
    let tokens = tokens(args.token.clone(), args.token_command.clone())?;
    let store = SqliteStore::open(&args.db).map_err(|e| errors::database(&args.db, true, &e))?;
    let convos: Vec<ConvoId> = args
        .convos
        .iter()
        .map(|c| ConvoId::from(c.as_str()))
        .collect();
    let mut wire = gapless_adapter::Wire::default();
    if args.since_message {
        wire.paging = Paging::SinceMessage;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let mut tally = Tally::default();
    let deadline = args.duration.map(|d| started + d);
    let mut options = gapless_adapter::Options::new(base);
    options.wire = wire;
    let job = Job {
        options,
        tokens,
        convos: &convos,
        deadline,
        bar: &bar,
        print: args.print,
    };
    let ran = if args.blocking {
        run_blocking(job, store, &mut tally)
    } else {
        run_tokio(job, store, &mut tally)
    };
    let (fetches, stored) = ran.map_err(|e| {
        if errors::is_database(&e) {
            errors::database(&args.db, false, e.as_ref()).into()
        } else {
            e
        }
    })?;
    bar.finish_and_clear();
    println!(
        "synced {} conversation(s) into {}: {} new message(s), {} skipped range(s), {} fetches in {:.1?}; {} messages stored in all",
        convos.len(),
        args.db.display(),
        tally.messages,
        tally.skipped,
        fetches,
        started.elapsed(),
        stored
    );
    Ok(ExitCode::from(if tally.cleared.is_empty() {
        errors::OK
    } else {
        errors::REFUSED
    }))
}

/// One sync run, whichever the driver.
struct Job<'a> {
    options: gapless_adapter::Options,
    tokens: Arc<dyn TokenProvider>,
    convos: &'a [ConvoId],
    deadline: Option<Instant>,
    bar: &'a indicatif::ProgressBar,
    print: bool,
}

impl Job<'_> {
    fn record(&self, tally: &mut Tally, update: &Update) {
        tally.record(update, self.print);
        self.bar.set_message(format!(
            "{} messages, {} skipped",
            tally.messages, tally.skipped
        ));
    }
}

fn run_tokio(job: Job<'_>, store: SqliteStore, tally: &mut Tally) -> anyhow::Result<(u64, u64)> {
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(async {
        let (sync, mut updates) =
            gapless_tokio::Sync::spawn(job.options.clone(), store, job.tokens.clone())?;
        for convo in job.convos {
            sync.subscribe(convo.clone())?;
        }
        let stop = async {
            match job.deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                update = updates.recv() => match update {
                    Some(u) => job.record(tally, &u),
                    None => break,
                },
                _ = tokio::signal::ctrl_c() => break,
                _ = &mut stop => break,
            }
        }
        let finished = sync.shutdown().await?;
        let stored = finished.store.messages()?.len() as u64;
        Ok((finished.fetches, stored))
    })
}

fn run_blocking(job: Job<'_>, store: SqliteStore, tally: &mut Tally) -> anyhow::Result<(u64, u64)> {
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        ctrlc::set_handler(move || interrupted.store(true, std::sync::atomic::Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let (sync, updates) =
        gapless_blocking::Sync::spawn(job.options.clone(), store, job.tokens.clone())?;
    for convo in job.convos {
        sync.subscribe(convo.clone())?;
    }
    while !interrupted.load(std::sync::atomic::Ordering::SeqCst)
        && job.deadline.is_none_or(|d| Instant::now() < d)
    {
        match updates.recv_timeout(Duration::from_millis(100)) {
            Ok(u) => job.record(tally, &u),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let finished = sync.shutdown()?;
    let stored = finished.store.messages()?.len() as u64;
    Ok((finished.fetches, stored))
}
