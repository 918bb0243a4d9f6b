//! The crash test: `gapless sync` is killed with SIGKILL at random moments while it syncs
//! from the dev server, and restarted each time; at the end the database equals the
//! server's log exactly — nothing lost, nothing twice. Once per driver.

use gapless_devserver::{DevServer, Options, Profile};
use gapless_sqlite::SqliteStore;
use std::collections::BTreeSet;
use std::path::Path;
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

fn sync(base: &str, db: &Path, blocking: bool, api: &str, run_for: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gapless"));
    cmd.args([
        "sync",
        "--server",
        base,
        "--token",
        "dev-secret",
        "--api",
        api,
    ])
    .args(["--convo", "c0", "--convo", "c1", "--convo", "c2"])
    .arg("--db")
    .arg(db)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if blocking {
        cmd.arg("--blocking");
    }
    if let Some(d) = run_for {
        cmd.args(["--for", d]);
    }
    cmd
}

fn stored(db: &Path) -> BTreeSet<(String, u64, String)> {
    SqliteStore::open(db)
        .unwrap()
        .messages()
        .unwrap()
        .into_iter()
        .map(|m| (m.convo, m.seq, m.id))
        .collect()
}

fn killed_at_random_moments(blocking: bool, api: &str, seed: u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut options = Options::new(Profile::FlakyMobile, seed);
    options.keepalive = Duration::from_secs(2);
    let server = runtime.block_on(DevServer::start(options)).unwrap();
    let base = server.base_url();
    let traffic = {
        let _guard = runtime.enter();
        server.traffic(3, 300, 100.0)
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let mut rng = seed;
    let mut kills = 0;
    while kills < KILLS {
        let mut child = sync(&base, &db, blocking, api, None).spawn().unwrap();
        let wait = Duration::from_millis(30 + splitmix(&mut rng) % 500);
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL: no shutdown, no flush
            kills += 1;
        }
        child.wait().unwrap();
    }
    runtime.block_on(traffic).unwrap();
    // Let the last late commits land, then sync gracefully until the database is complete.
    // Each run lasts longer than `hole_grace` twice over: a hole is skipped only after two
    // fetches that far apart, and that observation does not survive a restart.
    std::thread::sleep(Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(90);
    let (log, expired) = loop {
        let status = sync(&base, &db, blocking, api, Some("6s"))
            .status()
            .unwrap();
        assert!(status.success(), "sync exited with {status}");
        let log: BTreeSet<(String, u64, String)> = server.log().into_iter().collect();
        let expired: BTreeSet<(String, u64, String)> = server.expired().into_iter().collect();
        if log.is_subset(&stored(&db)) || Instant::now() > deadline {
            break (log, expired);
        }
    };
    let stored = stored(&db);
    let lost: Vec<_> = log.difference(&stored).collect();
    if !lost.is_empty() {
        let kept = dir.keep();
        eprintln!("database kept at {}", kept.display());
    }
    assert!(lost.is_empty(), "lost after {KILLS} kills: {lost:?}");
    let extra: Vec<_> = stored
        .difference(&log)
        .filter(|m| !expired.contains(*m))
        .collect();
    assert!(extra.is_empty(), "stored but not on the server: {extra:?}");
    // Each id once (the key says so), and at the seq the server gave it.
    let ids: BTreeSet<(&str, &str)> = stored
        .iter()
        .map(|(c, _, id)| (c.as_str(), id.as_str()))
        .collect();
    assert_eq!(ids.len(), stored.len(), "an id stored twice");
    eprintln!(
        "{} kills, {} messages on the server, {} stored",
        kills,
        log.len(),
        stored.len()
    );
}

#[test]
fn tokio_driver_survives_sigkill() {
    killed_at_random_moments(false, "mls", 21);
}

#[test]
fn blocking_driver_survives_sigkill() {
    killed_at_random_moments(true, "mls", 22);
}

#[test]
fn tokio_driver_over_the_websocket_api_survives_sigkill() {
    killed_at_random_moments(false, "mlschat", 23);
}
