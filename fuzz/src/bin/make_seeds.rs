//! Writes the seed corpus (`fuzz/seeds/<target>/`): the recorded real traffic for the wire
//! targets, the named scenarios for `machine_ops`. Run from `fuzz/`:
//! `cargo run --bin make_seeds`.

use gapless::testkit::FuzzInput;
use std::fs;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let recordings = root.join("../adapters/catbird/tests/recordings");
    for target in ["machine_ops", "sse_decoder", "wire_json", "cbor_frame"] {
        fs::create_dir_all(root.join("seeds").join(target)).unwrap();
    }
    let mut n = 0;
    for entry in fs::read_dir(&recordings).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "http") {
            continue;
        }
        let raw = fs::read(&path).unwrap();
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let body = &raw[split + 4..];
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name.contains("_sse_") {
            // (cuts: none) then the bytes: the tuple's first element is a Vec<u16>.
            let mut seed = vec![0u8];
            seed.extend_from_slice(body);
            fs::write(root.join("seeds/sse_decoder").join(&name), seed).unwrap();
            // Each event line is also a wire_json seed.
            for (i, line) in body
                .split(|b| *b == b'\n')
                .filter(|l| l.starts_with(b"data: "))
                .enumerate()
                .take(8)
            {
                fs::write(
                    root.join("seeds/wire_json").join(format!("{name}_{i}")),
                    &line[6..],
                )
                .unwrap();
            }
        } else if !body.is_empty() {
            fs::write(root.join("seeds/wire_json").join(&name), body).unwrap();
        }
        n += 1;
    }
    // Every recorded WebSocket message of the mlsChat API (control frames are empty).
    for entry in fs::read_dir(recordings.join("ws")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        if !bytes.is_empty() {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            fs::write(root.join("seeds/cbor_frame").join(name), bytes).unwrap();
            n += 1;
        }
    }
    for (name, input) in FuzzInput::scenarios() {
        fs::write(root.join("seeds/machine_ops").join(name), input.to_bytes()).unwrap();
    }
    println!(
        "seeds written from {n} recordings and {} scenarios",
        FuzzInput::scenarios().len()
    );
}
