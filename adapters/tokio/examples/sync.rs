//! The README's example: sync conversations into SQLite and print what arrives.
//!
//! `cargo run -p gapless-tokio --example sync -- http://127.0.0.1:8787 dev-secret c0 c1`
//! (start a server first: `gapless serve --messages 200`).

use gapless_adapter::{Token, TokenError, Update};
use gapless_sqlite::SqliteStore;
use gapless_tokio::{Options, Sync};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8787".into());
    let secret = args.next().unwrap_or_else(|| "dev-secret".into());
    let convos: Vec<String> = args.collect();

    let store = SqliteStore::open("example.db")?; // messages + checkpoints, one transaction per batch
                                                  // Called for every request with the method's NSID: mint a service token here.
    let tokens = move |_nsid: &str| -> Result<Token, TokenError> { Ok(Token::new(secret.clone())) };
    let (sync, mut updates) = Sync::spawn(Options::new(server), store, tokens)?;
    for convo in &convos {
        sync.subscribe(convo.as_str())?; // resumes from the stored checkpoint
    }
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            update = updates.recv() => match update {
                // Already stored when you see it; in order; `order` flags a shared seq.
                Some(Update::Message { convo, message, order, .. }) => {
                    println!("{convo} #{} {} {order:?}", message.seq.0, message.id)
                }
                // The server confirmed (twice) that it does not have these seqs.
                Some(Update::Skipped { convo, from, to }) => {
                    println!("{convo}: no messages {}..={}", from.0, to.0)
                }
                // Not a member any more, or gone: the conversation is no longer synced.
                Some(Update::Cleared { convo, reason }) => println!("{convo}: {reason:?}"),
                // "catching up", "caught up (seq N)", "waiting to retry (why), next try at…".
                Some(Update::Status { convo, status }) => println!("{convo}: {status}"),
                // All of them: "catching up, 120 of 300 caught up", "offline (why)".
                Some(Update::Connection(state)) => println!("{state}"),
                // Reactions, typing, info events; anomalies the server caused.
                Some(_) => {}
                None => break,
            },
        }
    }
    let finished = sync.shutdown().await?; // stops IO; everything delivered is already stored
    println!(
        "{} messages stored, {} fetches",
        finished.committed, finished.fetches
    );
    Ok(())
}
