//! The fuzz targets' inputs in the ordinary test suite: the seed scenarios decode back from
//! their bytes exactly (so the corpus means what it says) and hold every invariant, and
//! every input the fuzzer ever crashed on (`fuzz/regressions/machine_ops/`) is a test.

use arbitrary::{Arbitrary, Unstructured};
use gapless::testkit::FuzzInput;
use std::path::Path;

#[test]
fn scenario_seeds_decode_back_into_the_same_ops() {
    for (name, input) in FuzzInput::scenarios() {
        let bytes = input.to_bytes();
        let decoded = FuzzInput::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
        assert_eq!(decoded, input, "{name}");
    }
}

#[test]
fn scenario_seeds_hold_every_invariant() {
    for (_, input) in FuzzInput::scenarios() {
        input.run();
    }
}

#[test]
fn every_input_the_fuzzer_crashed_on_is_a_regression_test() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/machine_ops");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/regressions/machine_ops exists") {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        let bytes = std::fs::read(path).unwrap();
        if let Ok(input) = FuzzInput::arbitrary_take_rest(Unstructured::new(&bytes)) {
            input.run();
        }
        n += 1;
    }
    println!("{n} machine_ops regressions");
}
