//! `gapless demo`.

use crate::baseline;
use crate::report::{self, Seen};
use anyhow::{bail, Context};
use gapless::Order;
use gapless_adapter::{Token, TokenError, Update};
use gapless_devserver::{mint_token, DevServer, Options, Profile};
use gapless_sqlite::SqliteStore;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

#[derive(clap::Args)]
pub struct Args {
    /// Fault profile of the embedded server: calm, flaky-mobile or hostile.
    #[arg(long, default_value = "flaky-mobile")]
    profile: Profile,
    /// Conversations.
    #[arg(long, default_value_t = 5)]
    convos: usize,
    /// Messages posted to each conversation.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Messages per second, in all.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// The API gapless speaks to the server: `mls` (an SSE stream per conversation) or
    /// `mlschat` (one WebSocket for all of them). The stream-only client compared with it
    /// always uses SSE, as the seed did.
    #[arg(long, value_enum, default_value = "mls")]
    api: crate::ApiArg,
    /// Seed of the fault plan (same seed, same faults).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The real server's rate limits (`real`) or none (`off`); default: the profile's (real
    /// in hostile, off otherwise).
    #[arg(long)]
    limits: Option<crate::serve::LimitsArg>,
    /// The database to sync into (must not exist; default: a temporary file).
    #[arg(long)]
    db: Option<PathBuf>,
    /// How long the stream-only client waits on a gap before giving up (the seed: 5 min).
    #[arg(long, default_value = "5m", value_parser = crate::parse_duration)]
    give_up: Duration,
    /// Longest to wait for gapless to catch up after the traffic ends.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    settle: Duration,
    /// Messages each of two sending clients sends through its outbox while the traffic
    /// runs (a client that also receives everything, and a second one), into the
    /// conversations in turn.
    #[arg(long, default_value_t = 10)]
    sends: usize,
}

/// One of the demo's sending clients: what it sent and where each message stands.
#[derive(Default)]
struct Sender {
    /// Messages enqueued so far.
    enqueued: usize,
    /// msgId → its last state.
    states: std::collections::HashMap<String, gapless::OutboxState>,
    /// Refused for another epoch, sent again with a new msgId in the current one.
    reencrypted: usize,
}

impl Sender {
    fn confirmed(&self) -> usize {
        self.states
            .values()
            .filter(|s| matches!(s, gapless::OutboxState::Confirmed { .. }))
            .count()
    }

    /// Every message enqueued is confirmed, failed or dropped.
    fn settled(&self, total: usize) -> bool {
        self.enqueued == total
            && self
                .states
                .values()
                .all(|s| s.is_final() || matches!(s, gapless::OutboxState::Failed { .. }))
    }
}

/// A demo message: its text, zero-padded to 512 bytes, the msgId at the end of the padding
/// (as `gapless send` does), in the conversation's newest epoch.
fn outgoing(client: char, n: usize, convo: &str, epoch: u64) -> gapless::Outgoing {
    // 26 characters: a ULID-shaped msgId, unique per client, message and epoch.
    let msg_id = format!("01DEMO{client}{:03}{n:016}", epoch % 1000);
    let mut payload = format!("demo client {client}: message {n}").into_bytes();
    payload.resize(512 - msg_id.len(), 0);
    payload.extend_from_slice(msg_id.as_bytes());
    gapless::Outgoing::new(convo, msg_id.as_str(), payload, epoch)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.convos == 0 || args.messages == 0 || args.rate <= 0.0 {
        bail!("--convos, --messages and --rate must be positive");
    }
    let _tmp;
    let db = match &args.db {
        Some(p) if p.exists() => bail!(
            "{} exists: the demo's server is new each run, so it needs a new database (remove it or pick another path)",
            p.display()
        ),
        Some(p) => p.clone(),
        None => {
            let dir = tempfile::tempdir().context("temporary directory")?;
            let path = dir.path().join("gapless-demo.db");
            _tmp = dir;
            path
        }
    };
    let store = SqliteStore::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(demo(args, db, store))
}

async fn demo(args: Args, db: PathBuf, store: SqliteStore) -> anyhow::Result<ExitCode> {
    let mut server_options = Options::new(args.profile, args.seed);
    if let Some(limits) = args.limits {
        server_options.faults.rate_limits = limits.rate_limits();
    }
    let server = DevServer::start(server_options).await?;
    let base = server.base_url();
    let secret = server.options().secret.clone();
    let limits = if server.options().faults.rate_limits.is_some() {
        "real"
    } else {
        "off"
    };
    let api = gapless_adapter::Api::from(args.api);
    println!(
        "gapless demo: dev server on {base}, profile {:?}, seed {}, rate limits {limits}; {} conversations x {} messages at {}/s; gapless speaks {}",
        args.profile,
        args.seed,
        args.convos,
        args.messages,
        args.rate,
        match api {
            gapless_adapter::Api::MlsChat => "mlsChat (one WebSocket)",
            _ => "mls (an SSE stream per conversation)",
        }
    );
    for c in 0..args.convos {
        server.create_convo(&format!("c{c}"));
    }

    // gapless: a fresh service token per request, as the real server wants.
    let nonce = AtomicU64::new(1);
    let mint_secret = secret.clone();
    let tokens = move |nsid: &str| -> Result<Token, TokenError> {
        Ok(Token::new(mint_token(
            &mint_secret,
            nsid,
            nonce.fetch_add(1, Ordering::Relaxed),
        )))
    };
    let mut options = gapless_tokio::Options::new(&base).with_api(api);
    options.config.rng_seed = args.seed;
    let (sync, mut updates) = gapless_tokio::Sync::spawn(options, store, tokens)?;
    for c in 0..args.convos {
        sync.subscribe(format!("c{c}"))?;
    }
    // A second sending client: its own driver, token nonces and (memory) store, subscribed
    // too, since a message of ours is confirmed by seeing it come back.
    let nonce_b = AtomicU64::new(1 << 40);
    let secret_b = secret.clone();
    let tokens_b = move |nsid: &str| -> Result<Token, TokenError> {
        Ok(Token::new(mint_token(
            &secret_b,
            nsid,
            nonce_b.fetch_add(1, Ordering::Relaxed),
        )))
    };
    let mut options_b = gapless_tokio::Options::new(&base).with_api(api);
    options_b.config.rng_seed = args.seed ^ 0xB;
    let (sync_b, mut updates_b) =
        gapless_tokio::Sync::spawn(options_b, gapless_adapter::MemoryStore::new(), tokens_b)?;
    for c in 0..args.convos {
        sync_b.subscribe(format!("c{c}"))?;
    }
    // The two clients' drivers store differently (SQLite, memory): one call for either.
    let send = |who: usize, m: gapless::Outgoing| {
        if who == 0 {
            sync.send(m)
        } else {
            sync_b.send(m)
        }
    };
    let drop_send = |who: usize, convo: gapless::ConvoId, id: gapless::MsgId| {
        if who == 0 {
            sync.drop_send(convo, id)
        } else {
            sync_b.drop_send(convo, id)
        }
    };
    let mut senders = [Sender::default(), Sender::default()];
    // The newest epoch seen in each conversation: a message is sent in it.
    let mut epochs: std::collections::HashMap<String, u64> = Default::default();
    // Messages refused for another epoch: (client, message number, conversation, the epoch
    // it was refused in). A real client encrypts such a message again once it has the
    // commit; here, the same text under a new msgId once a newer epoch has been seen.
    let mut refused: Vec<(usize, usize, String, u64)> = Vec::new();
    let on_outbox = |who: usize,
                     senders: &mut [Sender; 2],
                     refused: &mut Vec<(usize, usize, String, u64)>,
                     convo: &gapless::ConvoId,
                     msg_id: &gapless::MsgId,
                     state: gapless::OutboxState|
     -> anyhow::Result<()> {
        let sender = &mut senders[who];
        let Some(known) = sender.states.get_mut(msg_id.as_str()) else {
            // One given up for a newer epoch: no longer ours to follow.
            return Ok(());
        };
        if let gapless::OutboxState::Failed {
            why: gapless::Refusal::EpochMismatch,
        } = state
        {
            sender.states.remove(msg_id.as_str());
            drop_send(who, convo.clone(), msg_id.clone())?;
            let n: usize = msg_id.as_str()[10..].parse().unwrap_or(0);
            let epoch: u64 = msg_id.as_str()[7..10].parse().unwrap_or(0);
            refused.push((who, n, convo.to_string(), epoch));
            return Ok(());
        }
        *known = state;
        Ok(())
    };

    // The stream-only client, on its own streams.
    let http = reqwest::Client::new();
    let baseline_seen = Arc::new(Mutex::new(Vec::new()));
    let baseline_tasks: Vec<_> = (0..args.convos)
        .map(|c| {
            tokio::spawn(baseline::run(
                http.clone(),
                base.clone(),
                secret.clone(),
                format!("c{c}"),
                args.give_up,
                baseline_seen.clone(),
            ))
        })
        .collect();

    // Let the streams open, then post.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let traffic = server.traffic(args.convos, args.messages, args.rate);
    let started = Instant::now();

    let bar = indicatif::ProgressBar::new((args.convos * args.messages) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed:>3} [{bar:40}] {pos}/{len} stored by gapless {msg}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    let mut seen: Vec<Seen> = Vec::new();
    let mut stored_ids: HashSet<(String, String)> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut settled_at = None;
    let mut traffic_done = false;
    let mut traffic = Some(traffic);
    loop {
        tokio::select! {
            update = updates_b.recv() => {
                if let Some(Update::Outbox { convo, msg_id, state }) = update {
                    on_outbox(1, &mut senders, &mut refused, &convo, &msg_id, state)?;
                }
            }
            update = updates.recv() => {
                let Some(update) = update else { break };
                if let Update::Outbox { convo, msg_id, state } = &update {
                    on_outbox(0, &mut senders, &mut refused, convo, msg_id, state.clone())?;
                }
                if let Update::Message { convo, message, order, recovered } = update {
                    let epoch = epochs.entry(convo.to_string()).or_default();
                    *epoch = (*epoch).max(message.epoch.0);
                    if order == Order::Ephemeral {
                        continue;
                    }
                    let latency = baseline::created_at(message.created_at.as_deref())
                        .and_then(|c| SystemTime::now().duration_since(c).ok());
                    stored_ids.insert((convo.to_string(), message.id.to_string()));
                    seen.push(Seen {
                        convo: convo.to_string(),
                        seq: message.seq.0,
                        id: message.id.to_string(),
                        shares_seq: order == Order::SharesSeq,
                        recovered,
                        latency,
                    });
                }
            }
            _ = tick.tick() => {
                // Each client sends its next message, one a tick, while the traffic runs.
                for (who, client) in ['A', 'B'].into_iter().enumerate() {
                    let n = senders[who].enqueued;
                    if n < args.sends {
                        let convo = format!("c{}", (n + who) % args.convos.max(1));
                        let epoch = epochs.get(&convo).copied().unwrap_or(0);
                        let message = outgoing(client, n, &convo, epoch);
                        senders[who]
                            .states
                            .insert(message.msg_id.to_string(), gapless::OutboxState::Queued);
                        senders[who].enqueued += 1;
                        send(who, message)?;
                    }
                }
                // Messages refused for another epoch go again once a newer one is known.
                let mut i = 0;
                while i < refused.len() {
                    let (who, n, convo, failed) = refused[i].clone();
                    let epoch = epochs.get(&convo).copied().unwrap_or(0);
                    if epoch > failed {
                        refused.swap_remove(i);
                        let again = outgoing(['A', 'B'][who], n, &convo, epoch);
                        senders[who].reencrypted += 1;
                        senders[who]
                            .states
                            .insert(again.msg_id.to_string(), gapless::OutboxState::Queued);
                        send(who, again)?;
                    } else {
                        i += 1;
                    }
                }
                if !traffic_done && traffic.as_ref().is_some_and(|t| t.is_finished()) {
                    traffic_done = true;
                    if let Some(t) = traffic.take() { let _ = t.await; }
                    settled_at = Some(Instant::now());
                }
                let log = server.log();
                bar.set_length(log.len() as u64);
                let have = log.iter().filter(|(c, _, id)| stored_ids.contains(&(c.clone(), id.clone()))).count();
                bar.set_position(have as u64);
                if traffic_done {
                    bar.set_message("(traffic done, catching up)");
                    let waited = settled_at.map_or(Duration::ZERO, |s| s.elapsed());
                    // Done when gapless has everything, a second after the last post (late
                    // commits included), or when the settle time is up.
                    let sent =
                        refused.is_empty() && senders.iter().all(|s| s.settled(args.sends));
                    if (have == log.len() && sent && waited > Duration::from_secs(1))
                        || waited > args.settle
                    {
                        break;
                    }
                }
            }
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    // The stream-only client has had all the time gapless had.
    for t in &baseline_tasks {
        t.abort();
    }
    let finished = sync.shutdown().await?;
    sync_b.shutdown().await?;
    let log = server.log();
    // Each message the clients sent is on the server once, whatever the retries and lost
    // answers: the server's own record of applied sends, by msgId.
    let mut applied: std::collections::HashMap<(String, String), usize> = Default::default();
    for send in server.sends().iter().filter(|s| !s.ephemeral) {
        *applied
            .entry((send.convo.clone(), send.msg_id.clone()))
            .or_default() += 1;
    }
    let duplicates: usize = applied.values().map(|n| n.saturating_sub(1)).sum();
    let unconfirmed: usize = senders
        .iter()
        .map(|s| s.states.len() - s.confirmed())
        .sum::<usize>()
        + refused.len();

    // The database is the proof: what it holds, against the server's log.
    let stored = finished.store.messages()?;
    let stored_keys: HashSet<(String, String)> = stored
        .iter()
        .map(|m| (m.convo.clone(), m.id.clone()))
        .collect();
    let lost_in_db = log
        .iter()
        .filter(|(c, _, id)| !stored_keys.contains(&(c.clone(), id.clone())))
        .count();

    let gapless = report::outcome(&log, &seen, Some(finished.fetches));
    let base_seen: Vec<Seen> = baseline_seen
        .lock()
        .expect("baseline")
        .iter()
        .map(|d| Seen {
            convo: d.convo.clone(),
            seq: d.seq,
            id: d.id.clone(),
            shares_seq: false,
            recovered: d.from_buffer,
            latency: d.latency,
        })
        .collect();
    let baseline = report::outcome(&log, &base_seen, None);
    let faults = server.fault_counts();
    println!();
    println!("{}", report::table(log.len(), &gapless, &baseline));
    println!("faults injected: {}", faults_line(&faults));
    println!(
        "{:.1?} from the first post; database {} holds {} messages ({} of the server's missing){}",
        elapsed,
        db.display(),
        stored.len(),
        lost_in_db,
        if gapless.recovered > 0 {
            "\n(recovered late: fetched, or waited for a gap to fill; latency from the server's createdAt)"
        } else {
            ""
        }
    );
    let missing: Vec<_> = log
        .iter()
        .filter(|(c, _, id)| !stored_keys.contains(&(c.clone(), id.clone())))
        .take(20)
        .collect();
    if !missing.is_empty() {
        eprintln!("not in the database (convo, seq, id): {missing:?}");
    }
    println!(
        "sends: client A {} of {} confirmed, client B {} of {} confirmed ({} sent again in a newer epoch); on the server {} message(s) sent, duplicates {}",
        senders[0].confirmed(),
        senders[0].states.len(),
        senders[1].confirmed(),
        senders[1].states.len(),
        senders[0].reencrypted + senders[1].reencrypted,
        applied.len(),
        duplicates
    );
    if duplicates > 0 || unconfirmed > 0 {
        eprintln!(
            "gapless sent a message twice or did not confirm one: {duplicates} duplicate(s), {unconfirmed} not confirmed"
        );
        return Ok(ExitCode::from(1));
    }
    if gapless.lost > 0 || lost_in_db > 0 || gapless.duplicated > 0 || gapless.out_of_order > 0 {
        eprintln!("gapless LOST, DUPLICATED or REORDERED messages: this is a bug");
        return Ok(ExitCode::from(1));
    }
    println!("gapless: nothing lost, nothing twice, all in order.");
    Ok(ExitCode::SUCCESS)
}

fn faults_line(f: &gapless_devserver::FaultCounts) -> String {
    let parts: Vec<String> = f.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}
