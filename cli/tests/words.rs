//! What a person reads when `gapless sync` goes wrong, run as they would run it: a server
//! that is not there, a wrong token, a conversation the server refuses, a database that
//! cannot be opened. Each case checks the words, the exit code, and that stderr carries no
//! colour or other escape codes when it is not a terminal.

use gapless_devserver::{DevServer, Options, Profile};
use std::process::{Command, Output};

fn gapless() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gapless"));
    // The words are checked, not the logging configuration of whoever runs the tests.
    command.env_remove("RUST_LOG").env_remove("NO_COLOR");
    command
}

/// Stdout and stderr, checked for escape codes (neither is a terminal here).
/// `gapless sync --server <base> --token <token>`, the rest to add.
fn sync(base: &str, token: &str) -> Command {
    let mut cmd = gapless();
    cmd.args(["sync", "--server", base, "--token", token]);
    cmd
}

fn texts(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.stderr.contains(&0x1b),
        "an escape code on stderr: {stderr:?}"
    );
    assert!(
        !out.stdout.contains(&0x1b),
        "an escape code on stdout: {stdout:?}"
    );
    (stdout, stderr)
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A calm dev server with conversation `c0` holding 5 messages.
fn server(runtime: &tokio::runtime::Runtime) -> DevServer {
    let server = runtime
        .block_on(DevServer::start(Options::new(Profile::Calm, 1)))
        .unwrap();
    server.create_convo("c0");
    for n in 0..5u8 {
        server.post("c0", vec![n; 8]);
    }
    server
}

fn unreachable_server_with(driver: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let server = format!("http://127.0.0.1:{}", closed_port());
    let out = sync(&server, "x")
        .args(["--convo", "c1", "--for", "2s", "--db"])
        .arg(dir.path().join("u.db"))
        .args(driver)
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("warning: c1: cannot reach the server (connection refused); will retry"),
        "{stderr}"
    );
    // Said once, then counted.
    assert_eq!(stderr.matches("will retry\n").count(), 1, "{stderr}");
    assert!(stderr.contains("will retry (repeated "), "{stderr}");
    assert!(stderr.contains("hint: check --server"), "{stderr}");
    assert!(
        stdout.contains("never reached the server (connection refused)"),
        "{stdout}"
    );
    assert!(!stdout.contains("synced"), "{stdout}");
}

#[test]
fn an_unreachable_server_is_named_and_exits_1() {
    unreachable_server_with(&[]);
}

#[test]
fn an_unreachable_server_is_named_by_the_blocking_driver_too() {
    unreachable_server_with(&["--blocking"]);
}

#[test]
fn a_wrong_token_is_refused_unauthorized_and_exits_1() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = server(&runtime);
    let dir = tempfile::tempdir().unwrap();
    let out = sync(&server.base_url(), "wrong")
        .args(["--convo", "c0", "--for", "3s", "--db"])
        .arg(dir.path().join("w.db"))
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("warning: c0: the server refused the stream: 401 Unauthorized; will retry"),
        "{stderr}"
    );
    assert!(stderr.contains("(repeated "), "{stderr}");
    // No Rust structures, no token.
    assert!(
        !stderr.contains("ErrorAnswer") && !stderr.contains("Some("),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong"), "{stderr}");
    assert!(
        stderr.contains("hint: the server does not accept the token"),
        "{stderr}"
    );
    assert!(stdout.contains("refused: unauthorized (401)"), "{stdout}");
}

#[test]
fn an_unknown_conversation_is_refused_forbidden_and_exits_1() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = server(&runtime);
    let dir = tempfile::tempdir().unwrap();
    let out = sync(&server.base_url(), "dev-secret")
        .args([
            "--convo", "c0", "--convo", "nope", "--for", "2s", "--json", "--db",
        ])
        .arg(dir.path().join("f.db"))
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("warning: nope: the server refused the stream: 403 Forbidden (not a member, or no such conversation); stops syncing this conversation"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["exit_code"], 1);
    let convos = json["conversations"].as_array().unwrap();
    assert_eq!(convos[0]["convo"], "c0");
    assert_eq!(convos[0]["outcome"], "synced");
    assert_eq!(convos[0]["new_messages"], 5);
    assert_eq!(convos[0]["ok"], true);
    assert_eq!(convos[1]["convo"], "nope");
    assert_eq!(
        convos[1]["outcome"],
        "refused: forbidden (403) \u{2014} not a member or no such conversation"
    );
    assert_eq!(convos[1]["ok"], false);
    assert_eq!(convos[1]["new_messages"], 0);
}

#[test]
fn a_good_run_says_synced_and_exits_0() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = server(&runtime);
    let dir = tempfile::tempdir().unwrap();
    let out = sync(&server.base_url(), "dev-secret")
        .args(["--convo", "c0", "--for", "1s", "--db"])
        .arg(dir.path().join("g.db"))
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let row = stdout.lines().find(|l| l.starts_with("c0 ")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "5", "{row}");
    assert_eq!(cells.last(), Some(&"synced"), "{row}");
}

#[test]
fn a_database_in_a_missing_folder_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("no/such/folder/x.db");
    let out = sync("http://127.0.0.1:1", "x")
        .args(["--convo", "c0", "--for", "1s", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "gapless: cannot open the database {}: unable to open database file (does the folder exist and is it writable?)",
            db.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("nable to open").count(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_corrupt_database_file_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.db");
    std::fs::write(&db, "not a database, just notes\n".repeat(100)).unwrap();
    let out = sync("http://127.0.0.1:1", "x")
        .args(["--convo", "c0", "--for", "1s", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("gapless: {} is not a database", db.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("Error code"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let out = gapless()
        .args(["inspect", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("is not a database"), "{stderr}");
}

#[test]
fn sync_help_documents_the_exit_codes() {
    let out = gapless().args(["sync", "--help"]).output().unwrap();
    let (stdout, _) = texts(&out);
    assert!(out.status.success());
    for code in ["  0  ", "  1  ", "  2  ", "  3  "] {
        assert!(stdout.contains(code), "{stdout}");
    }
    assert!(stdout.contains("database error"), "{stdout}");

    let out = gapless().args(["sync", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    texts(&out);
}

#[test]
fn a_rate_limited_server_is_said_plainly_with_when_gapless_tries_again() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut options = Options::new(Profile::Calm, 1);
    // Every getMessages answered 429 with Retry-After, as the real server's quota does.
    options.faults.fetch_rate_limit = 1000;
    let server = runtime.block_on(DevServer::start(options)).unwrap();
    server.create_convo("c0");
    server.post("c0", vec![1; 8]);
    let dir = tempfile::tempdir().unwrap();
    let out = sync(&server.base_url(), "dev-secret")
        .args(["--convo", "c0", "--for", "3s", "--db"])
        .arg(dir.path().join("r.db"))
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(
        stderr.contains(
            "warning: c0: the server refused a fetch: 429 Too Many Requests, retry after 1 s; will retry in 1 s or later"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("(repeated ") && stderr.lines().count() <= 3,
        "repeats collapsed, not a line per retry: {stderr}"
    );
    assert!(
        stdout.contains("retrying (the server's rate limit)  rate limited"),
        "the outcome table says why: {stdout}"
    );
    // The stream reached the server (exit 1 is for a conversation that never did, or was
    // refused for good): a rate limit is a wait, said as such.
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
}
