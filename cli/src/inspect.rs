//! `gapless inspect`.

use crate::errors;
use anyhow::bail;
use gapless_sqlite::SqliteStore;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The database.
    #[arg(long)]
    db: PathBuf,
    /// Every stored message's conversation, seq and id, as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.db.exists() {
        bail!("no database at {}", args.db.display());
    }
    let path = &args.db;
    let db = |opening| move |e: gapless_sqlite::SqliteError| errors::database(path, opening, &e);
    let store = SqliteStore::open(&args.db).map_err(db(true))?;
    if args.json {
        let messages = store.messages().map_err(db(false))?;
        let summaries = store.summaries().map_err(db(false))?;
        let outbox = store.outbox_entries().map_err(db(false))?;
        let out = serde_json::json!({
            "conversations": summaries,
            "outbox": outbox,
            "messages": messages
                .iter()
                .map(|m| serde_json::json!({"convo": m.convo, "seq": m.seq, "id": m.id}))
                .collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let summaries = store.summaries().map_err(db(false))?;
    let outbox = store.outbox_entries().map_err(db(false))?;
    if summaries.is_empty() && outbox.is_empty() {
        println!("{}: no conversations", args.db.display());
    }
    for s in summaries {
        let range = s
            .seq_range
            .map_or("-".to_string(), |(a, b)| format!("{a}..={b}"));
        println!("{}", s.convo);
        println!(
            "  checkpoint  seq {} ids {:?} cursor {:?}{}",
            s.checkpoint.seq.0,
            s.checkpoint
                .ids
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>(),
            s.checkpoint.cursor.as_ref().map(|c| c.to_string()),
            s.checkpoint
                .recheck_from
                .map_or(String::new(), |r| format!(" recheck_from {}", r.0))
        );
        println!("  messages    {} (seq {range})", s.messages);
        if !s.skipped.is_empty() {
            let skipped: Vec<String> = s
                .skipped
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}..={b}")
                    }
                })
                .collect();
            println!(
                "  skipped     {} (the server answered twice that it has no message there)",
                skipped.join(", ")
            );
        }
        for (a, b, found) in &s.unreachable {
            let range = if a == b {
                a.to_string()
            } else {
                format!("{a}..={b}")
            };
            let found = match found {
                0 => String::new(),
                1 => "; 1 message turned up there later".to_string(),
                n => format!("; {n} messages turned up there later"),
            };
            println!(
                "  unreachable {range} (no page could show these seqs: the server sorts pages \
                 by epoch first; gapless asked again for a while{found})"
            );
        }
        if let Some(reason) = s.cleared {
            println!("  cleared     {reason}");
        }
        if let Some((first, _)) = s.anomalies.first() {
            let when = |ms: u64| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                )
            };
            println!(
                "  anomalies   {} of the server's, newest last (nothing was lost for them), since {}:",
                s.anomalies.len(),
                when(*first)
            );
            for (at, words) in s.anomalies.iter().rev().take(5).rev() {
                println!("              {}  {words}", when(*at));
            }
            if s.anomalies.len() > 5 {
                println!("              (--json for all {})", s.anomalies.len());
            }
        }
    }
    if !outbox.is_empty() {
        println!(
            "outbox: {} message(s) not yet confirmed (sent again, same msgId, by the next send or sync)",
            outbox.len()
        );
    }
    for e in &outbox {
        println!("  {}  {}  {}", e.convo, e.msg_id, outbox_words(e));
    }
    Ok(ExitCode::SUCCESS)
}

/// An outbox entry's state in words.
fn outbox_words(e: &gapless_sqlite::OutboxEntry) -> String {
    let what = format!(
        "{} bytes, epoch {}{}",
        e.payload_len,
        e.epoch,
        if e.ephemeral { ", ephemeral" } else { "" }
    );
    let state = match (e.state.as_str(), e.seq, &e.message_id, &e.detail) {
        ("sent", Some(seq), Some(id), _) => {
            format!("sent at seq {seq} (server id {id}), waiting to see it in the conversation")
        }
        ("queued", ..) => "queued, not sent yet".to_string(),
        ("sending", ..) => {
            "being sent when the last run stopped (its answer is unknown: it is asked again)"
                .to_string()
        }
        ("retrying", .., Some(why)) => format!("failed for now ({why}); will send again"),
        ("failed", .., Some(why)) => {
            format!("refused: {why}; it holds the conversation's later messages")
        }
        (other, ..) => other.to_string(),
    };
    format!("{state} ({what})")
}
