//! One line per command, times as offsets from the start: what snapshots record.

use crate::{Command, Order, StreamEvent};
use std::fmt::Write;

/// A command as one short line.
pub fn format_command(command: &Command) -> String {
    let mut s = String::new();
    match command {
        Command::OpenStream {
            convo,
            stream,
            cursor,
        } => {
            let _ = write!(s, "open-stream {convo} #{}", stream.0);
            if let Some(c) = cursor {
                let _ = write!(s, " cursor={c}");
            }
        }
        Command::CloseStream { convo, stream } => {
            let _ = write!(s, "close-stream {convo} #{}", stream.0);
        }
        Command::OpenShared { stream, convos } => {
            let names: Vec<&str> = convos.iter().map(|c| c.as_str()).collect();
            let _ = write!(s, "open-shared #{} [{}]", stream.0, names.join(" "));
        }
        Command::CloseShared { stream } => {
            let _ = write!(s, "close-shared #{}", stream.0);
        }
        Command::Fetch(f) => {
            let _ = write!(
                s,
                "fetch {} r{} since={} limit={}",
                f.convo, f.id.0, f.since_seq, f.limit
            );
        }
        Command::Deliver(d) => {
            let tag = match d.order {
                Order::InOrder => "",
                Order::SharesSeq => " (shares seq)",
                Order::Late => " (late)",
                Order::Ephemeral => " (ephemeral)",
            };
            let _ = write!(
                s,
                "deliver {} seq={} id={}{tag}",
                d.convo, d.message.seq, d.message.id
            );
        }
        Command::Event { convo, event } => {
            let kind = match event {
                StreamEvent::Info { info, .. } => format!("info {info}"),
                StreamEvent::Other { kind, .. } => kind.clone(),
                other => format!("{other:?}"),
            };
            let _ = write!(s, "event {convo} {kind}");
        }
        Command::Skipped { convo, from, to } => {
            let _ = write!(s, "skipped {convo} {from}..={to}");
        }
        Command::Unreachable { convo, from, to } => {
            let _ = write!(s, "unreachable {convo} {from}..={to}");
        }
        Command::Checkpoint { convo, checkpoint } => {
            let _ = write!(s, "checkpoint {convo} cp={}", checkpoint.seq);
        }
        Command::Clear { convo, reason } => {
            let _ = write!(s, "clear {convo} {reason:?}");
        }
        Command::Status { convo, status } => {
            let _ = write!(s, "status {convo} {status}");
        }
        Command::Anomaly { convo, anomaly } => {
            let _ = write!(s, "anomaly {convo} {anomaly:?}");
        }
        Command::Connection(c) => {
            let _ = write!(s, "connection {c}");
        }
        Command::Send(r) => {
            let eph = if r.ephemeral { " ephemeral" } else { "" };
            let _ = write!(
                s,
                "send {} r{} msg={} epoch={} {}B{eph}",
                r.convo,
                r.id.0,
                r.msg_id,
                r.epoch.0,
                r.payload.len()
            );
        }
        Command::Outbox {
            convo,
            msg_id,
            state,
        } => {
            let _ = write!(s, "outbox {convo} {msg_id} {state}");
        }
    }
    s
}
