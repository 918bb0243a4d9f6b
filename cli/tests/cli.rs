//! The `gapless` binary end to end: `sync` with a token command against a server that
//! accepts each minted token once (over either API), `inspect --json` against the server's
//! log, `demo --api mlschat`, and clear errors for bad input.

use gapless_devserver::{DevServer, Faults, Options, Profile};
use std::process::Command;

fn gapless() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gapless"))
}

/// A dev server whose tokens are accepted once each (the hostile profile's tokens, no other
/// fault), with conversations c0 and c1.
#[cfg(unix)]
fn tokens_once_server(seed: u64) -> (tokio::runtime::Runtime, DevServer) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut options = Options::new(Profile::Hostile, seed);
    options.faults = Faults::default();
    let server = runtime.block_on(DevServer::start(options)).unwrap();
    server.create_convo("c0");
    server.create_convo("c1");
    (runtime, server)
}

/// A `--token-command` script minting a new token for its NSID (`$1`) at each call (the PID
/// and the time make each one new), logging the NSIDs to `log` if given.
#[cfg(unix)]
fn mint_script(dir: &std::path::Path, log: Option<&std::path::Path>) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("mint.sh");
    let log = log.map_or(String::new(), |l| {
        format!("echo \"$1\" >> {}\n", l.display())
    });
    let body = format!("#!/bin/sh\n{log}echo \"dev-secret.$1.$$-$(date +%s%N)\"\n");
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// `gapless inspect --json`: the whole answer, and every stored message as (conversation,
/// seq, id), sorted like `DevServer::log`.
#[cfg(unix)]
fn inspect_json(db: &std::path::Path) -> (serde_json::Value, Vec<(String, u64, String)>) {
    let out = gapless()
        .args(["inspect", "--json", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut stored: Vec<(String, u64, String)> = json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = |k: &str| m[k].as_str().unwrap().to_string();
            (text("convo"), m["seq"].as_u64().unwrap(), text("id"))
        })
        .collect();
    stored.sort();
    (json, stored)
}

#[cfg(unix)]
#[test]
fn sync_with_a_token_command_then_inspect_json_matches_the_server() {
    let (_runtime, server) = tokens_once_server(3);
    for n in 0..60u8 {
        server.post(if n % 3 == 0 { "c1" } else { "c0" }, vec![n; 16]);
    }
    let dir = tempfile::tempdir().unwrap();
    let script = mint_script(dir.path(), None);
    let db = dir.path().join("s.db");
    let out = gapless()
        .args(["sync", "--server", &server.base_url(), "--token-command"])
        .arg(&script)
        .args(["--convo", "c0", "--convo", "c1", "--for", "3s", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("60 new message(s)"), "{stdout}");
    // Nothing of a token in what it printed.
    assert!(
        !stdout.contains("dev-secret")
            && !String::from_utf8_lossy(&out.stderr).contains("dev-secret")
    );

    let (json, stored) = inspect_json(&db);
    assert_eq!(stored, server.log());
    assert_eq!(json["conversations"].as_array().unwrap().len(), 2);

    // A second run resumes: nothing new, nothing twice.
    let out = gapless()
        .args(["sync", "--server", &server.base_url(), "--token-command"])
        .arg(&script)
        .args(["--convo", "c0", "--for", "1s", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 new message(s)"));
    let out = gapless()
        .args(["inspect", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("messages    40 (seq 1..=40)"), "{text}");
}

/// `--api mlschat`, with either driver: one WebSocket, tokens minted for each method's own
/// NSID (the hostile profile checks `lxm`), the database equal to the server's log.
#[cfg(unix)]
#[test]
fn sync_over_mlschat_with_either_driver_matches_the_server() {
    let (_runtime, server) = tokens_once_server(5);
    for n in 0..40u8 {
        server.post(if n % 2 == 0 { "c1" } else { "c0" }, vec![n; 16]);
    }
    let dir = tempfile::tempdir().unwrap();
    let asked = dir.path().join("asked.txt");
    let script = mint_script(dir.path(), Some(&asked));
    let db = dir.path().join("s.db");
    let sync = |driver: &[&str]| {
        let out = gapless()
            .args(["sync", "--api", "mlschat", "--server", &server.base_url()])
            .arg("--token-command")
            .arg(&script)
            .args(["--convo", "c0", "--convo", "c1", "--for", "3s", "--db"])
            .arg(&db)
            .args(driver)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stdout = sync(&[]);
    assert!(stdout.contains("40 new message(s)"), "{stdout}");
    for n in 0..10u8 {
        server.post("c0", vec![n; 16]);
    }
    let stdout = sync(&["--blocking"]);
    assert!(stdout.contains("10 new message(s)"), "{stdout}");
    let (_, stored) = inspect_json(&db);
    assert_eq!(stored, server.log());
    let asked = std::fs::read_to_string(&asked).unwrap();
    let mut methods: Vec<&str> = asked.lines().collect();
    methods.sort();
    methods.dedup();
    assert_eq!(
        methods,
        [
            "blue.catbird.mlsChat.getMessages",
            "blue.catbird.mlsChat.getSubscriptionTicket"
        ]
    );
}

/// `gapless demo --api mlschat`: the in-process dev server, one WebSocket, and the checks
/// against the database pass.
#[test]
fn the_demo_over_mlschat_loses_nothing() {
    let out = gapless()
        .args([
            "demo",
            "--api",
            "mlschat",
            "--convos",
            "3",
            "--messages",
            "40",
            "--rate",
            "80",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("gapless speaks mlsChat (one WebSocket)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("gapless: nothing lost, nothing twice, all in order."),
        "{stdout}"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let out = gapless()
        .args(["inspect", "--db", "/nonexistent/x.db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database at"));

    let out = gapless()
        .args([
            "sync",
            "--server",
            "ftp://x",
            "--token",
            "t",
            "--convo",
            "c",
            "--db",
            "/tmp/never.db",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http:// or https://"));

    let out = gapless()
        .args([
            "sync", "--server", "http://x", "--convo", "c", "--db", "x.db",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a token is required");

    let out = gapless()
        .args(["demo", "--profile", "stormy"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown profile"));

    let out = gapless()
        .args([
            "sync",
            "--api",
            "mlschat",
            "--since-message",
            "--server",
            "http://x",
            "--token",
            "t",
            "--convo",
            "c",
            "--db",
            "/tmp/never.db",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since-message is for --api mls"));

    let out = gapless()
        .args(["demo", "--api", "websocket"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mlschat"));
}

#[test]
fn inspect_says_in_words_what_the_server_did_wrong_lately() {
    use gapless_adapter::{Store, Write};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("anomalies.db");
    let anomaly = gapless::Anomaly::EpochWentBack {
        seq: gapless::Seq(7),
        epoch: 1,
        previous: 2,
    };
    let mut store = gapless_sqlite::SqliteStore::open(&db).unwrap();
    store
        .commit(&[
            Write::Checkpoint {
                convo: "c0".into(),
                checkpoint: gapless::Checkpoint::default(),
            },
            Write::Anomaly {
                convo: "c0".into(),
                anomaly: anomaly.clone(),
                at_ms: 1_765_000_000_000,
            },
        ])
        .unwrap();
    drop(store);
    let out = gapless()
        .arg("inspect")
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("anomalies   1 of the server's"), "{stdout}");
    assert!(stdout.contains(&anomaly.to_string()), "{stdout}");
    assert!(stdout.contains("2025-12-06T"), "when, readably: {stdout}");
    assert!(
        !stdout.contains("EpochWentBack"),
        "words, not debug: {stdout}"
    );
}
