//! The recordings of the real server (`tests/recordings/*.http`, copied from
//! `shared/catbird/recordings/`): status line, headers, CRLF, body, as `curl -i` printed
//! them.
#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};

pub struct Recording {
    pub name: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recording {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The paths of every recording, sorted.
fn paths() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/recordings");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "http"))
        .collect();
    files.sort();
    assert!(
        files.len() > 80,
        "the recordings are there: {}",
        files.len()
    );
    files
}

fn parse(path: &Path) -> Recording {
    let raw = std::fs::read(path).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    Recording {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Every recording, sorted by file name.
pub fn recordings() -> Vec<Recording> {
    paths().iter().map(|p| parse(p)).collect()
}

/// The recording whose file name starts with `name` (only that file is read).
pub fn find(name: &str) -> Recording {
    let path = paths()
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(name))
        .unwrap_or_else(|| panic!("no recording named {name}*"));
    parse(&path)
}
