//! The AutoRelay relay finder driven by fuzz input: the operation
//! sequences of `core/tests/finder_model.rs` (dynamic or static-relay mode,
//! small knobs, eight peers, actions answered in any order and late), with
//! the same reference model and invariants checked after every step.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "../../core/tests/common/finder.rs"]
mod harness;
use harness::{config, Harness, Op};

// ------------------------------------------------------------------ target

#[derive(Debug, Arbitrary)]
struct Input {
    static_mode: bool,
    knobs: [u8; 16],
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let (cfg, statics) = config(&input.knobs, input.static_mode);
    let mut h = Harness::new(cfg, statics);
    for op in input.ops.into_iter().take(400) {
        h.apply(op);
    }
});
