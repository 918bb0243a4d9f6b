//! The README's Rust example is `examples/sync.rs`, which `cargo test` compiles; this keeps
//! the two the same text.

#[test]
fn the_readme_shows_the_compiled_example() {
    let readme = include_str!("../../../README.md");
    let example = include_str!("../examples/sync.rs");
    let body = &example[example.find("use gapless_adapter").expect("example body")..];
    assert!(
        readme.contains(body),
        "README.md's Rust example differs from adapters/tokio/examples/sync.rs"
    );
}
