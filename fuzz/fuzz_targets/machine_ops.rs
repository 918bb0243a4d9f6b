//! Arbitrary machine inputs — events, hostile pages (repeated, backwards, oversized,
//! conflicting ids, epochs going down), failures, timeouts, subscribes, restarts from the
//! stored checkpoints — with time moving forward. After every step the invariants of
//! DESIGN.md are checked; a violation panics, and so is a crash.
#![no_main]

use gapless::testkit::FuzzInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: FuzzInput| {
    input.run();
});
