//! What gapless writes on stderr: warnings in words, a repeated warning once and then as a
//! count; colour only on a terminal, and never with `NO_COLOR`. Also watches the drivers'
//! events per conversation (did it ever reach the server? how was it refused?) for
//! `sync`'s summary, since the updates alone do not say.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt, Targets};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Colour on stderr: only on a terminal, and not when `NO_COLOR` is set (to anything but
/// the empty string, as <https://no-color.org> says).
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the logging: warnings and errors in words (deduplicated), anything more verbose
/// that `RUST_LOG` asks for in tracing's usual format; `default` is the level without
/// `RUST_LOG`. With `watch`, the drivers' events are also kept per conversation
/// ([`seen`]).
pub fn init(default: &str, watch: bool) {
    let colour = colour();
    let env = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let chatter = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_filter(env().and(filter_fn(|m| *m.level() > Level::WARN)));
    let warnings =
        Warnings { colour }.with_filter(env().and(filter_fn(|m| *m.level() <= Level::WARN)));
    let watcher = watch.then(|| {
        Watcher.with_filter(
            Targets::new()
                .with_target("gapless_adapter::io", Level::DEBUG)
                .with_target("gapless_adapter::token", Level::WARN),
        )
    });
    tracing_subscriber::registry()
        .with(chatter)
        .with(warnings)
        .with(watcher)
        .init();
}

// ---- printing -----------------------------------------------------------------------

/// A repeat is counted, not printed, until this long after the line was last printed.
const QUIET: Duration = Duration::from_secs(30);

struct Repeats {
    /// Each line's place in `lines`.
    index: HashMap<String, usize>,
    /// Each line, when it was last printed, and how often it came since.
    lines: Vec<(String, Instant, u64)>,
}

static REPEATS: Mutex<Option<Repeats>> = Mutex::new(None);
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The driver is being stopped: what its requests meet from now on (a blocking stream
/// interrupted mid-read says "connection reset") is not the server's doing, and is neither
/// printed nor counted.
pub fn stopping() {
    STOPPING.store(true, Ordering::SeqCst);
}

fn stopped_io(event: &Event<'_>) -> bool {
    STOPPING.load(Ordering::SeqCst) && event.metadata().target() == "gapless_adapter::io"
}
/// What warnings are printed around (hidden while one prints).
enum Around {
    Bar(indicatif::ProgressBar),
    Live(indicatif::MultiProgress),
}

static BAR: Mutex<Option<Around>> = Mutex::new(None);

/// Warnings go around this progress bar (it is hidden while one prints), until
/// [`release_bar`].
pub fn hold_bar(bar: &indicatif::ProgressBar) {
    *lock(&BAR) = Some(Around::Bar(bar.clone()));
}

/// Warnings go around these progress lines (`sync`'s live view), until [`release_bar`].
pub fn hold_lines(multi: &indicatif::MultiProgress) {
    *lock(&BAR) = Some(Around::Live(multi.clone()));
}

/// Stops printing around the progress bar.
pub fn release_bar() {
    *lock(&BAR) = None;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn eprint_line(line: &str) {
    match lock(&BAR).as_ref() {
        Some(Around::Bar(bar)) => bar.suspend(|| eprintln!("{line}")),
        Some(Around::Live(multi)) => multi.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

fn repeated(line: &str, times: u64, over: Duration) -> String {
    let secs = over.as_secs_f64().round().max(1.0);
    let times = if times == 1 {
        "once".to_string()
    } else {
        format!("{times} times")
    };
    format!("{line} (repeated {times} in the last {secs} s)")
}

/// Prints a line, or counts it if it was printed less than [`QUIET`] ago.
fn say(line: String) {
    let now = Instant::now();
    let mut guard = lock(&REPEATS);
    let repeats = guard.get_or_insert_with(|| Repeats {
        index: HashMap::new(),
        lines: Vec::new(),
    });
    match repeats.index.get(&line) {
        None => {
            repeats.index.insert(line.clone(), repeats.lines.len());
            eprint_line(&line);
            repeats.lines.push((line, now, 0));
        }
        Some(&i) => {
            let (line, at, count) = &mut repeats.lines[i];
            *count += 1;
            if now.duration_since(*at) >= QUIET {
                eprint_line(&repeated(line, *count, now.duration_since(*at)));
                *at = now;
                *count = 0;
            }
        }
    }
}

/// Prints the count of every line that came again since it was last printed.
pub fn flush_repeats() {
    let now = Instant::now();
    let mut guard = lock(&REPEATS);
    for (line, at, count) in guard.iter_mut().flat_map(|r| r.lines.iter_mut()) {
        if *count > 0 {
            eprint_line(&repeated(line, *count, now.duration_since(*at)));
            *at = now;
            *count = 0;
        }
    }
}

/// One line, no control characters: nothing a server or a file name holds can move the
/// cursor or colour the terminal.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// An event's fields, as text.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, String)>,
}

impl Fields {
    fn of(event: &Event<'_>) -> Fields {
        let mut fields = Fields::default();
        event.record(&mut fields);
        fields
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.others
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.others.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Prints warnings and errors as sentences.
struct Warnings {
    colour: bool,
}

impl<S: Subscriber> Layer<S> for Warnings {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if stopped_io(event) {
            return;
        }
        let meta = event.metadata();
        let fields = Fields::of(event);
        let Some(text) = words(meta.target(), &fields) else {
            return;
        };
        let (label, paint) = if *meta.level() == Level::ERROR {
            ("error", "\x1b[1;31m")
        } else {
            ("warning", "\x1b[1;33m")
        };
        let label = if self.colour {
            format!("{paint}{label}:\x1b[0m")
        } else {
            format!("{label}:")
        };
        say(format!("{label} {}", clean(&text)));
    }
}

/// An event in words, or `None` if it only repeats what was said. The adapter's IO events
/// are sentences already; a missing token and the session's anomalies are said here;
/// anything else is its message and its fields.
fn words(target: &str, fields: &Fields) -> Option<String> {
    match (target, fields.message.as_str()) {
        ("gapless_adapter::io", m) if !m.is_empty() => return Some(m.to_string()),
        ("gapless_adapter::token", "no token") => {
            // A command that wrote nothing on stderr leaves its error ending in ": ".
            let why = fields.get("error").unwrap_or("no reason given");
            return Some(format!(
                "cannot get a token for {}: {}; will retry",
                fields.get("nsid").unwrap_or("a request"),
                why.trim_end_matches([':', ' '])
            ));
        }
        // The refusal that cleared it was said (with what gapless does next), and the
        // summary says it again.
        ("gapless_adapter::session", "conversation cleared") => return None,
        ("gapless_adapter::session", "server anomaly") => {
            let convo = fields.get("convo").unwrap_or("?");
            return anomaly(fields.get("anomaly").unwrap_or("")).map(|a| format!("{convo}: {a}"));
        }
        _ => {}
    }
    let mut out = fields.message.clone();
    if !fields.others.is_empty() {
        let _ = write!(
            out,
            " ({})",
            fields
                .others
                .iter()
                .map(|(n, v)| format!("{n}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Some(out)
}

/// A machine anomaly (its `Debug` text) in words; `None` for a 401, which the refusal's
/// warning said.
fn anomaly(debug: &str) -> Option<String> {
    let name = debug.split([' ', '{', '(']).next().unwrap_or(debug);
    Some(match name {
        "Unauthorized" => return None,
        "EpochWentBack" => "a message's epoch is lower than the one before it (a member at an older epoch sent late); delivered in order all the same".into(),
        "PageWentBackwards" => "the server's page went back before the position asked for; those messages were ignored".into(),
        "PageOversized" => "the server's page held more messages than asked for".into(),
        "IdConflict" => "the server sent a message again at another seq; it was not delivered twice".into(),
        "EphemeralInPage" => "a catch-up page held an ephemeral message; delivered as ephemeral".into(),
        _ => format!("the server did something it should not have ({name}); nothing was lost"),
    })
}

// ---- watching -----------------------------------------------------------------------

/// The last thing a conversation's requests met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Met {
    /// A 2xx answer.
    Answer,
    /// Another status.
    Refused(u16),
    /// No answer at all: the problem in words.
    Unreachable(String),
}

/// What the drivers' events said about one conversation.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Fetches that ended (answered or not).
    pub fetches: u64,
    /// Whether the server ever answered a request (any status).
    pub answered: bool,
    /// The last answer or transport problem.
    pub last: Option<Met>,
}

static SEEN: Mutex<BTreeMap<String, Seen>> = Mutex::new(BTreeMap::new());
static NO_TOKEN: AtomicBool = AtomicBool::new(false);

/// What was seen of a conversation so far.
pub fn seen(convo: &str) -> Seen {
    lock(&SEEN).get(convo).cloned().unwrap_or_default()
}

/// Whether a token could not be had.
pub fn no_token() -> bool {
    NO_TOKEN.load(Ordering::SeqCst)
}

/// Keeps the adapter's IO events per conversation (see `gapless_adapter::io`'s fields).
struct Watcher;

impl<S: Subscriber> Layer<S> for Watcher {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if stopped_io(event) {
            return;
        }
        let fields = Fields::of(event);
        if event.metadata().target() == "gapless_adapter::token" {
            NO_TOKEN.store(true, Ordering::SeqCst);
            return;
        }
        let Some(convo) = fields.get("convo") else {
            return;
        };
        // A send's answer says nothing about syncing the conversation (the outbox line of
        // the summary tells the sends).
        if fields.get("call") == Some("send") {
            return;
        }
        let mut seen = lock(&SEEN);
        let seen = seen.entry(convo.to_string()).or_default();
        if fields.get("call") == Some("fetch") {
            seen.fetches += 1;
        }
        let status = fields.get("status").and_then(|s| s.parse::<u16>().ok());
        match fields.get("result") {
            Some("ok") => {
                seen.answered = true;
                seen.last = Some(Met::Answer);
            }
            Some("refused") => {
                seen.answered = true;
                seen.last = Some(Met::Refused(status.unwrap_or(0)));
            }
            Some("undecodable") => seen.answered = true,
            Some("unreachable") => {
                let problem = fields.get("problem").unwrap_or("no answer");
                seen.last = Some(Met::Unreachable(problem.to_string()));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_read_as_counts() {
        assert_eq!(
            repeated("warning: x", 12, Duration::from_millis(29_600)),
            "warning: x (repeated 12 times in the last 30 s)"
        );
        assert_eq!(
            repeated("warning: x", 1, Duration::from_millis(100)),
            "warning: x (repeated once in the last 1 s)"
        );
        assert_eq!(clean("a\x1b[31mb\nc"), "a [31mb c");
    }
}
