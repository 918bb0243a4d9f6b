//! `gapless send`: one message through the durable outbox, until the server accepted it and
//! it came back in the conversation.

use crate::console;
use crate::errors;
use crate::sync::Server;
use anyhow::{bail, Context};
use gapless::{ConvoId, MsgId, OutboxState, Outgoing};
use gapless_adapter::{TokenProvider, Update};
use gapless_sqlite::SqliteStore;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct Args {
    #[command(flatten)]
    server: Server,
    /// The conversation to send to.
    #[arg(long)]
    convo: String,
    /// The database: the message is stored in its outbox before it is sent, so that an
    /// interrupted send is finished by the next `send` or `sync` on it.
    #[arg(long)]
    db: PathBuf,
    /// The message, as text.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    text: Option<String>,
    /// The message, from a file (its bytes as they are).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Give up waiting after this long (`30s`, `5m`): the message stays in the outbox.
    /// Without it, wait until it is confirmed (or Ctrl-C).
    #[arg(long = "for", value_parser = crate::parse_duration)]
    duration: Option<Duration>,
    /// The msgId (a ULID, or a UUID); a new ULID by default. Sending the same msgId again
    /// to the same conversation never makes a second message.
    #[arg(long)]
    msg_id: Option<String>,
    /// The MLS epoch to label it with; by default the newest epoch stored for the
    /// conversation (0 if none). The newest server refuses another epoch than its own (409).
    #[arg(long)]
    epoch: Option<u64>,
    /// Ephemeral: not stored by the server; done once accepted.
    #[arg(long)]
    ephemeral: bool,
    /// The server's API: `mls` (`blue.catbird.mls.sendMessage`) or `mlschat`
    /// (`blue.catbird.mlsChat.sendMessage`).
    #[arg(long, value_enum, default_value = "mls")]
    api: crate::ApiArg,
    /// Use the blocking (thread) driver instead of tokio.
    #[arg(long)]
    blocking: bool,
}

const EXIT_CODES: &str = "\
The bytes are sent as they are (gapless does no MLS encryption: this is for dev servers and
tests), zero-padded to the next size the server takes (512, 1024, 2048, 4096, 8192 bytes or a
multiple of 8192, at most 10 MiB), the msgId written at the end of the padding so that the
same text sent twice is two different payloads. The message is stored in the database's outbox before the
first attempt; every attempt uses the same msgId, so a lost answer is simply asked again.
`gapless inspect --db …` shows the outbox.

Exit status:
  0  sent and confirmed (it came back in the conversation), or sent (ephemeral)
  1  the server refused the message (400, 403: not a member, 409: another epoch…); it is
     dropped from the outbox
  2  usage error: a wrong option or value
  3  database error
  4  not confirmed before --for ran out (or Ctrl-C): it stays in the outbox, and the next
     `gapless send` or `gapless sync` with this --db sends it (same msgId)";

/// The exit code of a message still in the outbox.
const PENDING: u8 = 4;

/// The smallest size the server takes that holds `len` bytes.
fn padded_size(len: usize) -> Option<u32> {
    const MAX: usize = 10 * 1024 * 1024;
    let size = match len {
        0..=512 => 512,
        513..=1024 => 1024,
        1025..=2048 => 2048,
        2049..=4096 => 4096,
        _ => len.div_ceil(8192) * 8192,
    };
    (size <= MAX).then_some(size as u32)
}

/// A new ULID: 48 bits of milliseconds, 80 random bits, in Crockford's base32.
fn new_ulid() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let random = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now.as_nanos());
        h.write_u32(std::process::id());
        h.write_u64(salt);
        h.finish()
    };
    let value: u128 = (u128::from(now.as_millis() as u64 & 0xFFFF_FFFF_FFFF) << 80)
        | (u128::from(random(1)) << 16)
        | u128::from(random(2) & 0xFFFF);
    (0..26)
        .rev()
        .map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// How the wait for the message ended.
enum Done {
    Confirmed { seq: u64, message_id: String },
    Ephemeral,
    Failed(String),
    Refused(String),
}

/// Follows the updates about our message, saying each change on stderr.
struct Watch {
    convo: ConvoId,
    msg_id: MsgId,
    last: Option<String>,
}

impl Watch {
    fn record(&mut self, update: &Update) -> Option<Done> {
        match update {
            Update::Outbox {
                convo,
                msg_id,
                state,
            } if *convo == self.convo && *msg_id == self.msg_id => {
                let words = match state {
                    OutboxState::Retrying { why, .. } => format!("will send again ({why})"),
                    other => other.to_string(),
                };
                // Each attempt after a failure is said by the failure's line already.
                let again = matches!(state, OutboxState::Sending)
                    && self.last.as_deref().is_some_and(|l| l != "queued");
                if !again && self.last.as_deref() != Some(words.as_str()) {
                    eprintln!("{}: {words}", self.msg_id);
                    self.last = Some(words);
                }
                match state {
                    OutboxState::Confirmed { seq, message_id } => Some(Done::Confirmed {
                        seq: seq.0,
                        message_id: message_id.to_string(),
                    }),
                    OutboxState::Sent { seq, .. } if seq.0 == 0 => Some(Done::Ephemeral),
                    OutboxState::Failed { why } => Some(Done::Failed(why.to_string())),
                    _ => None,
                }
            }
            Update::Refused { convo, error } if *convo == self.convo => {
                Some(Done::Refused(error.to_string()))
            }
            _ => None,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let base = args.server.base();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("--server must be an http:// or https:// URL (got {base:?})");
    }
    if args.convo.is_empty() {
        bail!("--convo is empty");
    }
    let bytes = match (&args.text, &args.file) {
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some(path)) => {
            std::fs::read(path).with_context(|| format!("cannot read --file {}", path.display()))?
        }
        _ => bail!("give exactly one of --text and --file"),
    };
    if bytes.is_empty() {
        bail!("the message is empty: give some --text, or a --file that holds something");
    }
    // Room for the msgId at the end of the padding (below).
    let Some(size) = padded_size(bytes.len() + 1 + 36) else {
        bail!(
            "the message is {} bytes; the server takes at most 10 MiB",
            bytes.len()
        );
    };
    let msg_id = MsgId::from(args.msg_id.clone().unwrap_or_else(new_ulid));
    if !msg_id.is_valid() {
        bail!(
            "--msg-id {:?} is neither a ULID (26 letters and digits) nor a UUID (36 letters, digits and '-')",
            msg_id.as_str()
        );
    }
    let tokens = args.server.tokens()?;
    let store = SqliteStore::open(&args.db).map_err(|e| errors::database(&args.db, true, &e))?;
    let epoch = match args.epoch {
        Some(e) => e,
        None => store
            .messages()
            .map_err(|e| errors::database(&args.db, false, &e))?
            .iter()
            .filter(|m| m.convo == args.convo)
            .map(|m| m.epoch)
            .max()
            .unwrap_or(0),
    };
    let len = bytes.len();
    let mut payload = bytes;
    payload.resize(size as usize, 0);
    // The msgId ends the padding: two sends of the same text are two different payloads,
    // as two MLS ciphertexts always are (gapless recognises its own message coming back by
    // its bytes when the server's answer was lost).
    let tail = size as usize - msg_id.as_str().len();
    payload[tail..].copy_from_slice(msg_id.as_str().as_bytes());
    let convo = ConvoId::from(args.convo.as_str());
    let mut out = Outgoing::new(convo.clone(), msg_id.clone(), payload, epoch);
    out.ephemeral = args.ephemeral;
    let api = gapless_adapter::Api::from(args.api);
    let options = gapless_adapter::Options::new(base).with_api(api);
    let deadline = args.duration.map(|d| Instant::now() + d);
    let watch = Watch {
        convo,
        msg_id: msg_id.clone(),
        last: None,
    };
    eprintln!(
        "{msg_id}: {len} bytes (padded to {size}) to {} at epoch {epoch}{}",
        args.convo,
        if args.ephemeral { ", ephemeral" } else { "" }
    );
    let done = if args.blocking {
        run_blocking(options, store, tokens, out, watch, deadline)
    } else {
        run_tokio(options, store, tokens, out, watch, deadline)
    }
    .map_err(|e| {
        if errors::is_database(&e) {
            errors::database(&args.db, false, e.as_ref()).into()
        } else {
            e
        }
    })?;
    console::flush_repeats();
    Ok(ExitCode::from(match done {
        Some(Done::Confirmed { seq, message_id }) => {
            println!(
                "sent: message {msg_id} is in {} at seq {seq} (the server's id {message_id}), and came back in the conversation",
                args.convo
            );
            errors::OK
        }
        Some(Done::Ephemeral) => {
            println!(
                "sent: ephemeral message {msg_id} to {} (the server does not store it)",
                args.convo
            );
            errors::OK
        }
        Some(Done::Failed(why)) => {
            eprintln!("gapless: the server refused message {msg_id}: {why}; it was dropped from the outbox");
            errors::REFUSED
        }
        Some(Done::Refused(why)) => {
            eprintln!("gapless: message {msg_id} was not queued: {why}");
            errors::USAGE
        }
        None => {
            eprintln!(
                "gapless: message {msg_id} is not confirmed yet; it stays in the outbox of {}, and the next `gapless send` or `gapless sync` with this --db sends it (same msgId)",
                args.db.display()
            );
            PENDING
        }
    }))
}

fn run_tokio(
    options: gapless_adapter::Options,
    store: SqliteStore,
    tokens: Arc<dyn TokenProvider>,
    out: Outgoing,
    mut watch: Watch,
    deadline: Option<Instant>,
) -> anyhow::Result<Option<Done>> {
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(async {
        let (sync, mut updates) = gapless_tokio::Sync::spawn(options, store, tokens)?;
        let convo = out.convo.clone();
        let msg_id = out.msg_id.clone();
        // Subscribed, so that its delivery is seen (and confirms it).
        sync.subscribe(convo.clone())?;
        sync.send(out)?;
        let stop = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stop);
        let mut done = None;
        loop {
            tokio::select! {
                update = updates.recv() => match update {
                    Some(u) => {
                        done = watch.record(&u);
                        if done.is_some() {
                            break;
                        }
                    }
                    None => break,
                },
                _ = tokio::signal::ctrl_c() => break,
                _ = &mut stop => break,
            }
        }
        if matches!(done, Some(Done::Failed(_))) {
            // Said, and not left to hold the conversation's later messages.
            sync.drop_send(convo, msg_id)?;
        }
        sync.shutdown().await?;
        Ok(done)
    })
}

fn run_blocking(
    options: gapless_adapter::Options,
    store: SqliteStore,
    tokens: Arc<dyn TokenProvider>,
    out: Outgoing,
    mut watch: Watch,
    deadline: Option<Instant>,
) -> anyhow::Result<Option<Done>> {
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        ctrlc::set_handler(move || interrupted.store(true, std::sync::atomic::Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let (sync, updates) = gapless_blocking::Sync::spawn(options, store, tokens)?;
    let convo = out.convo.clone();
    let msg_id = out.msg_id.clone();
    sync.subscribe(convo.clone())?;
    sync.send(out)?;
    let mut done = None;
    while !interrupted.load(std::sync::atomic::Ordering::SeqCst)
        && deadline.is_none_or(|d| Instant::now() < d)
    {
        match updates.recv_timeout(Duration::from_millis(100)) {
            Ok(u) => {
                done = watch.record(&u);
                if done.is_some() {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if matches!(done, Some(Done::Failed(_))) {
        sync.drop_send(convo, msg_id)?;
    }
    sync.shutdown()?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_padded_to_what_the_server_takes() {
        assert_eq!(padded_size(1), Some(512));
        assert_eq!(padded_size(512), Some(512));
        assert_eq!(padded_size(513), Some(1024));
        assert_eq!(padded_size(5000), Some(8192));
        assert_eq!(padded_size(8193), Some(16384));
        assert_eq!(padded_size(10 * 1024 * 1024), Some(10 * 1024 * 1024));
        assert_eq!(padded_size(10 * 1024 * 1024 + 1), None);
        for n in [1, 600, 3000, 9000, 100_000] {
            assert!(gapless::padded_size_is_valid(padded_size(n).unwrap()));
        }
    }

    #[test]
    fn new_msg_ids_are_ulids_and_differ() {
        let (a, b) = (new_ulid(), new_ulid());
        assert!(MsgId::from(a.as_str()).is_valid(), "{a}");
        assert_ne!(a, b);
    }
}
