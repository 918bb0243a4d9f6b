//! The send crash test: `gapless send` is killed with SIGKILL at random moments, 24 times,
//! each run sending a new message (and, first, whatever the killed runs left in the
//! outbox); then `gapless sync` flushes the outbox. The server's log must hold every
//! message that reached the outbox exactly once, in the order they were written, and none
//! twice. Over both APIs, each driver.

use gapless_devserver::{DevServer, Options, Profile};
use gapless_sqlite::SqliteStore;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KILLS: usize = 24;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn msg_id(n: usize) -> String {
    format!("01CRASHSEND{n:015}")
}

fn gapless() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gapless"))
}

fn killed_while_sending(blocking: bool, api: &str, seed: u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(DevServer::start(Options::new(Profile::Calm, seed)))
        .unwrap();
    server.create_convo("c0");
    let base = server.base_url();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("send.db");
    let mut rng = seed;
    let (mut kills, mut n) = (0, 0);
    // Whether each message reached the outbox (its run said "queued").
    let mut queued = Vec::new();
    // A send to the dev server on loopback takes some 20 ms: kill within that.
    while kills < KILLS && n < 20 * KILLS {
        let log = dir.path().join(format!("send{n}.err"));
        let mut cmd = gapless();
        cmd.args([
            "send",
            "--server",
            &base,
            "--token",
            "dev-secret",
            "--convo",
            "c0",
        ])
        .args(["--api", api, "--text", &format!("message {n}")])
        .args(["--msg-id", &msg_id(n), "--epoch", "0", "--db"])
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        if blocking {
            cmd.arg("--blocking");
        }
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_micros(splitmix(&mut rng) % 40_000));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL: no shutdown, no flush
            kills += 1;
        }
        child.wait().unwrap();
        let said = std::fs::read_to_string(&log).unwrap();
        queued.push(said.contains(&format!("{}: queued", msg_id(n))));
        n += 1;
    }
    assert_eq!(kills, KILLS, "the runs ended before they could be killed");
    // Flush what is left, gracefully.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = gapless()
            .args([
                "sync",
                "--server",
                &base,
                "--token",
                "dev-secret",
                "--api",
                api,
            ])
            .args(["--convo", "c0", "--for", "3s", "--db"])
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "sync exited with {status}");
        let left = SqliteStore::open(&db).unwrap().outbox_entries().unwrap();
        if left.is_empty() || Instant::now() > deadline {
            assert!(left.is_empty(), "still in the outbox: {left:?}");
            break;
        }
    }
    // The database equals the server's log (sync), so its payloads are the server's.
    let store = SqliteStore::open(&db).unwrap();
    let stored = store.messages().unwrap();
    let mut log: Vec<(String, u64, String)> = stored
        .iter()
        .map(|m| (m.convo.clone(), m.seq, m.id.clone()))
        .collect();
    log.sort();
    assert_eq!(log, server.log(), "the database is the server's log");
    let mut last_seq = 0;
    let mut on_server = 0;
    for (i, was_queued) in queued.iter().enumerate() {
        let text = format!("message {i}");
        let copies: Vec<u64> = stored
            .iter()
            .filter(|m| {
                let payload = store.payload(&m.convo, &m.id).unwrap().unwrap();
                payload.starts_with(text.as_bytes()) && payload[text.len()] == 0
            })
            .map(|m| m.seq)
            .collect();
        assert!(copies.len() <= 1, "{text}: {} copies", copies.len());
        if *was_queued {
            assert_eq!(
                copies.len(),
                1,
                "{text} was queued, and is not on the server"
            );
        }
        if let Some(&seq) = copies.first() {
            assert!(seq > last_seq, "{text} out of order");
            last_seq = seq;
            on_server += 1;
        }
    }
    eprintln!(
        "{kills} kills, {n} messages written, {} queued, {on_server} on the server",
        queued.iter().filter(|q| **q).count()
    );
}

#[test]
fn sends_survive_sigkill_with_the_tokio_driver() {
    killed_while_sending(false, "mlschat", 31);
}

#[test]
fn sends_survive_sigkill_with_the_blocking_driver() {
    killed_while_sending(true, "mlschat", 32);
}

#[test]
fn sends_survive_sigkill_with_the_tokio_driver_over_the_sse_api() {
    killed_while_sending(false, "mls", 33);
}

#[test]
fn sends_survive_sigkill_with_the_blocking_driver_over_the_sse_api() {
    killed_while_sending(true, "mls", 34);
}
