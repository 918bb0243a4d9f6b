//! Errors in words, and the exit codes.

use std::error::Error;
use std::fmt;
use std::path::Path;
use std::process::ExitCode;

/// Every conversation reached the server (`sync`); the command did what it was asked.
pub const OK: u8 = 0;
/// Some conversation was refused (401, 403, not a member, no such conversation) or never
/// reached the server.
pub const REFUSED: u8 = 1;
/// The command line is wrong (clap's own code for usage errors), or gapless could not start.
pub const USAGE: u8 = 2;
/// The database cannot be opened, is not a database or is damaged, or cannot be written.
pub const DATABASE: u8 = 3;

/// The exit code of a failed command.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    ExitCode::from(if is_database(e) { DATABASE } else { USAGE })
}

pub fn is_database(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<DatabaseError>()
            || c.is::<rusqlite::Error>()
            || c.is::<gapless_sqlite::SqliteError>()
            || c.is::<gapless_adapter::StoreError>()
    })
}

/// An error and its causes, each said once: a cause whose words the text before it
/// already holds is left out (libraries often repeat their source in their own message).
pub fn chain(e: &anyhow::Error) -> String {
    once(e.chain())
}

fn once<'a>(causes: impl Iterator<Item = &'a (dyn Error + 'static)>) -> String {
    let mut out = String::new();
    for cause in causes {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || out.to_lowercase().contains(&text.to_lowercase()) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

/// A database problem, said for a person: which file, what is wrong, what to check.
#[derive(Debug)]
pub struct DatabaseError {
    words: String,
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.words)
    }
}

// No source: the words already say what the causes did, once.
impl Error for DatabaseError {}

/// Says a database error of `path`; `opening` when it came from opening it.
pub fn database(path: &Path, opening: bool, e: &(dyn Error + 'static)) -> DatabaseError {
    tracing::debug!(error = ?e, "database error");
    let p = path.display();
    let code = causes(e).find_map(|c| match c.downcast_ref::<rusqlite::Error>() {
        Some(rusqlite::Error::SqliteFailure(f, _)) => Some(f.code),
        _ => None,
    });
    use rusqlite::ErrorCode as C;
    let words = match code {
        Some(C::CannotOpen) => format!(
            "cannot open the database {p}: unable to open database file (does the folder exist and is it writable?)"
        ),
        Some(C::NotADatabase) => format!(
            "{p} is not a database: the file is not SQLite, or it is damaged (move it away, or give another --db)"
        ),
        Some(C::DatabaseCorrupt) => format!(
            "the database {p} is damaged: SQLite finds it corrupt (move it away, or give another --db)"
        ),
        Some(C::DiskFull) => format!("cannot write the database {p}: the disk is full"),
        Some(C::ReadOnly) | Some(C::PermissionDenied) => format!(
            "cannot write the database {p}: it is read-only (check the permissions of the file and its folder)"
        ),
        Some(C::DatabaseBusy) | Some(C::DatabaseLocked) => format!(
            "the database {p} is locked: another program is using it (is another gapless running?)"
        ),
        Some(C::SystemIoFailure) => {
            format!("cannot read or write the database {p}: disk I/O error")
        }
        _ => {
            let said = once(causes(e));
            if opening {
                format!("cannot open the database {p}: {said}")
            } else {
                format!("the database {p} failed: {said}")
            }
        }
    };
    DatabaseError { words }
}

fn causes<'a>(e: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(e), |&c| c.source())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn each_cause_is_said_once() {
        let inner = std::io::Error::other("unable to open database file: /x.db");
        let e = Err::<(), _>(inner)
            .context("sqlite: unable to open database file: /x.db")
            .context("opening /x.db")
            .unwrap_err();
        assert_eq!(
            chain(&e),
            "opening /x.db: sqlite: unable to open database file: /x.db"
        );
    }

    #[test]
    fn a_missing_folder_and_a_text_file_are_said_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/x.db");
        let e = gapless_sqlite::SqliteStore::open(&missing).err().unwrap();
        let said = database(&missing, true, &e).to_string();
        assert!(said.starts_with("cannot open the database "), "{said}");
        assert!(said.contains("does the folder exist"), "{said}");
        assert_eq!(said.matches("unable to open").count(), 1, "{said}");

        let text = dir.path().join("notes.db");
        std::fs::write(&text, "these are my notes, not a database\n".repeat(200)).unwrap();
        let e = gapless_sqlite::SqliteStore::open(&text).err().unwrap();
        let said = database(&text, true, &e).to_string();
        assert!(said.contains("is not a database"), "{said}");
    }
}
