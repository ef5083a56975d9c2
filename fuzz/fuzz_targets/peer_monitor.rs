//! The peer monitor driven by fuzz input: the operation sequences of
//! `core/tests/monitor_model.rs` (five peers, two metric names, random
//! TTLs and validity, the clock moved with and without the checks running,
//! peer set changes, events polled at random), with and without phi
//! accrual, against the same reference model, invariants checked after
//! every step.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "../../core/tests/common/monitor.rs"]
mod harness;
use harness::{config, Harness, Op};

// ------------------------------------------------------------------ target

#[derive(Debug, Arbitrary)]
struct Input {
    phi: bool,
    knobs: [u8; 12],
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(config(&input.knobs, input.phi));
    for op in input.ops.into_iter().take(600) {
        h.apply(op);
    }
});
