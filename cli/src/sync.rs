//! `gapless sync`.

use crate::console::{self, Met, Seen};
use crate::errors;
use crate::live::{self, Live};
use anyhow::{bail, Context};
use gapless::{ConvoId, Permanent};
use gapless_adapter::catbird::messages::Paging;
use gapless_adapter::{CommandToken, FixedToken, TokenProvider, Update};
use gapless_sqlite::SqliteStore;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the server is and how to authenticate to it (`sync` and `send`).
#[derive(clap::Args)]
pub struct Server {
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
}

impl Server {
    /// The base URL without a trailing slash.
    pub fn base(&self) -> String {
        self.server.trim_end_matches('/').to_string()
    }

    /// The token provider the options ask for.
    pub fn tokens(&self) -> anyhow::Result<Arc<dyn TokenProvider>> {
        tokens(self.token.clone(), self.token_command.clone())
    }
}

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct Args {
    #[command(flatten)]
    server: Server,
    /// A conversation to sync (repeat for more).
    #[arg(long = "convo", required = true)]
    convos: Vec<String>,
    /// The database (created if absent; resumed from if present).
    #[arg(long)]
    db: PathBuf,
    /// Stop gracefully after this long (`30s`, `5m`); without it, run until Ctrl-C.
    #[arg(long = "for", value_parser = crate::parse_duration)]
    duration: Option<Duration>,
    /// The server's API: `mls` (an SSE stream per conversation) or `mlschat` (one
    /// WebSocket for all of them: servers from Feb 2026 on, which answer 404 to `mls`).
    #[arg(long, value_enum, default_value = "mls")]
    api: crate::ApiArg,
    /// With `--api mlschat`: open the WebSocket where the server's ticket says (its
    /// `endpoint`) instead of at `--server`. The real server's tickets name its production
    /// host unless its deployment says otherwise, so this is off by default.
    #[arg(long)]
    follow_ticket_endpoint: bool,
    /// Use the blocking (thread) driver instead of tokio.
    #[arg(long)]
    blocking: bool,
    /// Page with `sinceMessage` (older servers) instead of `sinceSeq` (`--api mls` only).
    #[arg(long)]
    since_message: bool,
    /// Print every message as it is stored (on stdout; there is no live view then, as it
    /// would be drawn through the messages).
    #[arg(long, conflicts_with = "json")]
    print: bool,
    /// Print the summary (per conversation: new messages, skipped ranges, fetches, outcome)
    /// as JSON instead of a table (no live view then: one line of counts on a terminal).
    #[arg(long)]
    json: bool,
}

/// `gapless sync --help`'s last words; README.md's CLI section says the same.
const EXIT_CODES: &str = "\
Live view: when stderr is a terminal (and neither --print nor --json), a line per
conversation (its status, messages stored this run, fetches; past 20 conversations the
ones retrying, refused or catching up first, and a count of the rest) and an overall
line, redrawn in place and cleared before the final table. Elsewhere nothing is drawn.

Exit status:
  0  every conversation reached the server (its outcome is \"synced\", or the server was
     only busy: rate limited, or a server error that gapless retries)
  1  some conversation was refused (unauthorized 401, forbidden 403: not a member or no
     such conversation) or never reached the server (connection refused, DNS, TLS, timeout)
  2  usage error: a wrong option or value
  3  database error: it cannot be opened or written, or it is not a database (corrupt)";

/// What a sync run saw of one conversation through its updates.
#[derive(Default)]
struct Counts {
    messages: u64,
    skipped: u64,
    cleared: Option<Permanent>,
    /// The last status the driver reported.
    status: Option<gapless::Status>,
    /// The highest seq delivered.
    seq: u64,
}

impl Counts {
    /// What the live view and the status column say of it.
    fn line(&self, fetches: u64) -> live::Line {
        live::Line {
            status: self.status,
            stored: self.messages,
            fetches,
            seq: self.seq,
            refused: self.cleared.is_some(),
        }
    }
}

/// What a sync run saw, per conversation, in the order they were given.
#[derive(Default)]
struct Tally {
    order: Vec<String>,
    convos: HashMap<String, Counts>,
    messages: u64,
    skipped: u64,
    /// All conversations together, as the driver last told it.
    connection: Option<gapless::Connection>,
    /// Messages of the outbox confirmed and failed this run, and the last state of each.
    confirmed: u64,
    failed: u64,
    outbox: HashMap<(String, String), gapless::OutboxState>,
}

impl Tally {
    fn new(convos: &[String]) -> Tally {
        Tally {
            order: convos.to_vec(),
            convos: convos
                .iter()
                .map(|c| (c.clone(), Counts::default()))
                .collect(),
            ..Tally::default()
        }
    }

    /// The live view's lines' facts, in the given order.
    fn lines(&self) -> Vec<(String, live::Line)> {
        self.order
            .iter()
            .map(|c| (c.clone(), self.convos[c].line(console::seen(c).fetches)))
            .collect()
    }

    fn counts(&mut self, convo: &ConvoId) -> &mut Counts {
        self.convos.entry(convo.to_string()).or_default()
    }

    fn record(&mut self, update: &Update, print: bool) {
        match update {
            Update::Message {
                convo,
                message,
                order,
                ..
            } => {
                if *order != gapless::Order::Ephemeral {
                    self.messages += 1;
                    let counts = self.counts(convo);
                    counts.messages += 1;
                    counts.seq = counts.seq.max(message.seq.0);
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
                self.counts(convo).skipped += 1;
                if print {
                    println!(
                        "{convo} skipped {}..={} (the server has none)",
                        from.0, to.0
                    );
                }
            }
            // The warning that led to it was printed; the summary says it again.
            Update::Cleared { convo, reason } => self.counts(convo).cleared = Some(*reason),
            Update::Status { convo, status } => self.counts(convo).status = Some(*status),
            Update::Connection(state) => self.connection = Some(*state),
            Update::Outbox {
                convo,
                msg_id,
                state,
            } => {
                match state {
                    gapless::OutboxState::Confirmed { .. } => self.confirmed += 1,
                    gapless::OutboxState::Failed { why } => {
                        self.failed += 1;
                        tracing::warn!("{convo}: the server refused message {msg_id}: {why}; it waits in the outbox");
                    }
                    _ => {}
                }
                if print {
                    println!("{convo} outbox {msg_id}: {state}");
                }
                self.outbox
                    .insert((convo.to_string(), msg_id.to_string()), state.clone());
            }
            _ => {}
        }
    }

    /// The outbox's line of the summary, if the outbox did anything this run.
    fn outbox_line(&self) -> Option<String> {
        if self.outbox.is_empty() {
            return None;
        }
        let pending = self.outbox.values().filter(|s| !s.is_final()).count();
        Some(format!(
            "outbox: {} message(s) sent and confirmed, {} refused, {pending} still to send or confirm",
            self.confirmed, self.failed
        ))
    }
}

/// How one conversation's run ended.
struct Outcome {
    /// In words, for the table.
    words: String,
    /// Whether the server ever answered one of its requests.
    reached: bool,
    /// Whether it makes the exit code 1: refused, cleared, or never reached.
    failed: bool,
}

impl Outcome {
    /// What a person could check, for the outcomes that have an obvious suspect.
    fn hint(&self) -> Option<&'static str> {
        if self.words.ends_with("(no token)") {
            Some("the token command failed: run it by hand, with the method's NSID as its last argument")
        } else if self.words.starts_with("refused: unauthorized") {
            Some("the server does not accept the token: check --token, or what --token-command prints")
        } else if self.words.starts_with("never reached the server") {
            Some("check --server, and that the server is up and reachable from here")
        } else {
            None
        }
    }
}

fn outcome(counts: &Counts, seen: &Seen, no_token: bool) -> Outcome {
    let reached = seen.answered;
    let (words, failed) = match (counts.cleared, &seen.last) {
        (Some(reason), _) => (
            match reason {
                Permanent::Forbidden => {
                    "refused: forbidden (403) \u{2014} not a member or no such conversation".into()
                }
                Permanent::NotMember => "refused: not a member".into(),
                Permanent::NotFound => "refused: no such conversation".into(),
                Permanent::InvalidCursor => {
                    "cleared: the server no longer has its history back to the checkpoint".into()
                }
                other => format!("cleared ({other:?})"),
            },
            true,
        ),
        (None, Some(Met::Answer)) => ("synced".into(), false),
        (None, Some(Met::Refused(401))) => ("refused: unauthorized (401)".into(), true),
        (None, Some(Met::Refused(403))) => (
            "refused: forbidden (403) \u{2014} not a member or no such conversation".into(),
            true,
        ),
        (None, Some(Met::Refused(429))) => ("rate limited".into(), false),
        (None, Some(Met::Refused(s))) if *s >= 500 => (format!("server error ({s})"), false),
        (None, Some(Met::Refused(s))) => (format!("refused ({s})"), true),
        (None, Some(Met::Unreachable(problem))) if reached => {
            (format!("synced, then lost the server ({problem})"), false)
        }
        (None, Some(Met::Unreachable(problem))) => {
            (format!("never reached the server ({problem})"), true)
        }
        (None, None) if reached => ("synced".into(), false),
        (None, None) => (
            if no_token {
                "never reached the server (no token)".into()
            } else {
                "never reached the server (no answer before the end)".into()
            },
            true,
        ),
    };
    Outcome {
        words,
        reached,
        failed,
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
    let base = args.server.base();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("--server must be an http:// or https:// URL (got {base:?})");
    }
    let api = gapless_adapter::Api::from(args.api);
    if args.since_message && api == gapless_adapter::Api::MlsChat {
        bail!("--since-message is for --api mls: mlsChat's getMessages pages with sinceSeq only");
    }
    if args.follow_ticket_endpoint && api != gapless_adapter::Api::MlsChat {
        bail!("--follow-ticket-endpoint is for --api mlschat (the WebSocket's ticket)");
    }
    let tokens = args.server.tokens()?;
    let store = SqliteStore::open(&args.db).map_err(|e| errors::database(&args.db, true, &e))?;
    // The same conversation twice would be refused by the driver: once is what was meant.
    let mut names: Vec<String> = Vec::new();
    for c in &args.convos {
        if !names.contains(c) {
            names.push(c.clone());
        }
    }
    let convos: Vec<ConvoId> = names.iter().map(|c| ConvoId::from(c.as_str())).collect();
    let mut wire = gapless_adapter::Wire::default();
    if args.since_message {
        wire.paging = Paging::SinceMessage;
    }
    let started = Instant::now();
    let live = (std::io::stderr().is_terminal() && !args.json && !args.print)
        .then(|| Live::new(names.len(), started));
    let bar = match &live {
        Some(live) => {
            console::hold_lines(live.multi());
            None
        }
        None => {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .expect("template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            console::hold_bar(&bar);
            Some(bar)
        }
    };
    let mut tally = Tally::new(&names);
    let deadline = args.duration.map(|d| started + d);
    let mut options = gapless_adapter::Options::new(base).with_api(api);
    options.follow_ticket_endpoint = args.follow_ticket_endpoint;
    options.wire = wire;
    let job = Job {
        options,
        tokens,
        convos: &convos,
        deadline,
        bar: bar.as_ref(),
        live: live.map(RefCell::new),
        print: args.print,
    };
    let ran = if args.blocking {
        run_blocking(&job, store, &mut tally)
    } else {
        run_tokio(&job, store, &mut tally)
    };
    console::release_bar();
    if let Some(bar) = job.bar {
        bar.finish_and_clear();
    }
    if let Some(live) = job.live {
        live.into_inner().clear();
    }
    console::flush_repeats();
    let (fetches, stored) = ran.map_err(|e| {
        if errors::is_database(&e) {
            errors::database(&args.db, false, e.as_ref()).into()
        } else {
            e
        }
    })?;
    let summary = Summary::of(&tally, fetches, stored, started.elapsed());
    if args.json {
        summary.print_json(&args.db)?;
    } else {
        summary.print_table(&args.db);
    }
    let mut hints: Vec<&str> = summary
        .rows
        .iter()
        .filter_map(|r| r.outcome.hint())
        .collect();
    hints.dedup();
    for hint in hints {
        eprintln!("hint: {hint}");
    }
    Ok(ExitCode::from(summary.code))
}

/// One conversation's line of the summary.
struct Row<'a> {
    convo: &'a str,
    counts: &'a Counts,
    seen: Seen,
    outcome: Outcome,
}

/// What `sync` says at the end.
struct Summary<'a> {
    rows: Vec<Row<'a>>,
    tally: &'a Tally,
    fetches: u64,
    stored: u64,
    elapsed: Duration,
    code: u8,
}

impl<'a> Summary<'a> {
    fn of(tally: &'a Tally, fetches: u64, stored: u64, elapsed: Duration) -> Summary<'a> {
        let no_token = console::no_token();
        let rows: Vec<Row<'a>> = tally
            .order
            .iter()
            .map(|c| {
                let counts = &tally.convos[c];
                let seen = console::seen(c);
                let outcome = outcome(counts, &seen, no_token);
                Row {
                    convo: c,
                    counts,
                    seen,
                    outcome,
                }
            })
            .collect();
        let code = if rows.iter().any(|r| r.outcome.failed) {
            errors::REFUSED
        } else {
            errors::OK
        };
        Summary {
            rows,
            tally,
            fetches,
            stored,
            elapsed,
            code,
        }
    }

    fn print_json(&self, db: &std::path::Path) -> anyhow::Result<()> {
        let conversations: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "convo": r.convo,
                    "new_messages": r.counts.messages,
                    "skipped_ranges": r.counts.skipped,
                    "fetches": r.seen.fetches,
                    "status": live::final_words(&r.counts.line(r.seen.fetches)),
                    "reached_server": r.outcome.reached,
                    "outcome": r.outcome.words,
                    "ok": !r.outcome.failed,
                })
            })
            .collect();
        let out = serde_json::json!({
            "db": db.display().to_string(),
            "seconds": (self.elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "conversations": conversations,
            "new_messages": self.tally.messages,
            "skipped_ranges": self.tally.skipped,
            "fetches": self.fetches,
            "stored_messages": self.stored,
            "exit_code": self.code,
        });
        let mut out = out;
        out["outbox"] = serde_json::json!({
            "confirmed": self.tally.confirmed,
            "failed": self.tally.failed,
            "pending": self.tally.outbox.values().filter(|s| !s.is_final()).count(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(())
    }

    fn print_table(&self, db: &std::path::Path) {
        let wide = self
            .rows
            .iter()
            .map(|r| r.convo.chars().count())
            .max()
            .unwrap_or(0)
            .max("conversation".len());
        let states: Vec<String> = self
            .rows
            .iter()
            .map(|r| live::final_words(&r.counts.line(r.seen.fetches)))
            .collect();
        let broad = states
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0)
            .max("status".len());
        println!(
            "{:<wide$}  {:>5}  {:>7}  {:>7}  {:<broad$}  outcome",
            "conversation", "new", "skipped", "fetches", "status"
        );
        for (r, state) in self.rows.iter().zip(&states) {
            println!(
                "{:<wide$}  {:>5}  {:>7}  {:>7}  {:<broad$}  {}",
                console::clean(r.convo),
                r.counts.messages,
                r.counts.skipped,
                r.seen.fetches,
                state,
                r.outcome.words
            );
        }
        println!(
            "{} conversation(s) into {} in {:.1?}: {} new message(s), {} skipped range(s), {} fetches; {} messages stored in all",
            self.rows.len(),
            db.display(),
            self.elapsed,
            self.tally.messages,
            self.tally.skipped,
            self.fetches,
            self.stored
        );
        if let Some(line) = self.tally.outbox_line() {
            println!("{line}");
        }
    }
}

/// One sync run, whichever the driver.
struct Job<'a> {
    options: gapless_adapter::Options,
    tokens: Arc<dyn TokenProvider>,
    convos: &'a [ConvoId],
    deadline: Option<Instant>,
    /// The one-line spinner (not a terminal, `--json`, `--print`)…
    bar: Option<&'a indicatif::ProgressBar>,
    /// …or the live view.
    live: Option<RefCell<Live>>,
    print: bool,
}

impl Job<'_> {
    fn record(&self, tally: &mut Tally, update: &Update) {
        tally.record(update, self.print);
        if let Some(bar) = self.bar {
            let connection = tally
                .connection
                .map(|c| format!("{c}; "))
                .unwrap_or_default();
            bar.set_message(format!(
                "{connection}{} messages, {} skipped",
                tally.messages, tally.skipped
            ));
        }
        self.tick(tally, matches!(update, Update::Status { .. }));
    }

    /// Redraws the live view (throttled unless `now`): fetches and retry countdowns change
    /// without an update.
    fn tick(&self, tally: &Tally, now: bool) {
        if let Some(live) = &self.live {
            live.borrow_mut().draw(&tally.lines(), now);
        }
    }
}

fn run_tokio(job: &Job<'_>, store: SqliteStore, tally: &mut Tally) -> anyhow::Result<(u64, u64)> {
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
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                update = updates.recv() => match update {
                    Some(u) => job.record(tally, &u),
                    None => break,
                },
                _ = tick.tick() => job.tick(tally, false),
                _ = tokio::signal::ctrl_c() => break,
                _ = &mut stop => break,
            }
        }
        console::stopping();
        let finished = sync.shutdown().await?;
        let stored = finished.store.messages()?.len() as u64;
        Ok((finished.fetches, stored))
    })
}

fn run_blocking(
    job: &Job<'_>,
    store: SqliteStore,
    tally: &mut Tally,
) -> anyhow::Result<(u64, u64)> {
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
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => job.tick(tally, false),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    console::stopping();
    let finished = sync.shutdown()?;
    let stored = finished.store.messages()?.len() as u64;
    Ok((finished.fetches, stored))
}
