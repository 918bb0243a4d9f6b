//! `gapless send` as a real process against the dev server: sent and confirmed over either
//! API and with either driver, kept in the outbox when the server cannot be reached and sent
//! by the next `sync`, and clear errors for bad input.

use gapless_devserver::{DevServer, Options, Profile};
use std::path::Path;
use std::process::{Command, Output};

fn gapless() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gapless"))
}

fn server() -> (tokio::runtime::Runtime, DevServer) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(DevServer::start(Options::new(Profile::Calm, 16)))
        .unwrap();
    server.create_convo("c0");
    (runtime, server)
}

fn send(base: &str, db: &Path, extra: &[&str]) -> Output {
    gapless()
        .args([
            "send",
            "--server",
            base,
            "--token",
            "dev-secret",
            "--convo",
            "c0",
        ])
        .arg("--db")
        .arg(db)
        .args(extra)
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn inspect(db: &Path) -> String {
    let out = gapless()
        .args(["inspect", "--db"])
        .arg(db)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_message_is_sent_and_confirmed_over_each_api_and_driver() {
    let (_runtime, server) = server();
    let dir = tempfile::tempdir().unwrap();
    let runs: [&[&str]; 3] = [&[], &["--api", "mlschat"], &["--blocking"]];
    for (n, extra) in runs.iter().enumerate() {
        let db = dir.path().join(format!("send{n}.db"));
        let mut args = vec!["--text", "hello from gapless", "--for", "20s"];
        args.extend_from_slice(extra);
        let out = send(&server.base_url(), &db, &args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(stdout.contains("sent: message "), "{stdout}");
        assert!(stdout.contains("came back in the conversation"), "{stdout}");
        assert!(stderr.contains("confirmed at seq"), "{stderr}");
        // Delivered into the database, and nothing left in the outbox.
        let shown = inspect(&db);
        assert!(!shown.contains("outbox"), "{shown}");
        assert!(shown.contains(&format!("messages    {}", n + 1)), "{shown}");
    }
    assert_eq!(server.log().len(), 3, "each once");
}

#[test]
fn an_unreachable_server_leaves_the_message_in_the_outbox_and_sync_sends_it() {
    let (_runtime, server) = server();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("later.db");
    let out = send(
        "http://127.0.0.1:1",
        &db,
        &[
            "--text",
            "later",
            "--for",
            "2s",
            "--msg-id",
            "01OUTBOXTEST00000000000001",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(stderr.contains("stays in the outbox"), "{stderr}");
    let shown = inspect(&db);
    assert!(shown.contains("01OUTBOXTEST00000000000001"), "{shown}");
    assert!(
        shown.contains("outbox: 1 message(s) not yet confirmed"),
        "{shown}"
    );

    // `sync` on the same database sends it, then sees it come back.
    let out = gapless()
        .args([
            "sync",
            "--server",
            &server.base_url(),
            "--token",
            "dev-secret",
        ])
        .args(["--convo", "c0", "--for", "4s", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("outbox: 1 message(s) sent and confirmed"),
        "{stdout}"
    );
    assert_eq!(server.log().len(), 1);
    assert!(!inspect(&db).contains("outbox"));
}

#[test]
fn the_same_msg_id_sent_twice_is_one_message() {
    for api in ["mls", "mlschat"] {
        let (_runtime, server) = server();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("twice.db");
        for _ in 0..2 {
            let out = send(
                &server.base_url(),
                &db,
                &[
                    "--text",
                    "once",
                    "--for",
                    "20s",
                    "--msg-id",
                    "01OUTBOXTEST00000000000002",
                    "--api",
                    api,
                ],
            );
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(0), "{api}: {stdout}\n{stderr}");
            assert!(stdout.contains("at seq 1 "), "{api}: {stdout}");
        }
        assert_eq!(
            server.log().len(),
            1,
            "{api}: a resent msgId is not a second message"
        );
    }
}

#[test]
fn bad_input_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bad.db");
    let base = "http://127.0.0.1:1";
    let cases: [(&[&str], &str); 4] = [
        (&["--text", "x", "--msg-id", "nope"], "neither a ULID"),
        (&["--text", ""], "the message is empty"),
        (&["--file", "/no/such/file"], "cannot read --file"),
        (
            &["--text", "x", "--file", "/etc/hostname"],
            "cannot be used with",
        ),
    ];
    for (args, words) in cases {
        let out = send(base, &db, args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = gapless()
        .args([
            "send", "--server", "ftp://x", "--token", "t", "--convo", "c0", "--text", "x", "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("http:// or https://"));
}
