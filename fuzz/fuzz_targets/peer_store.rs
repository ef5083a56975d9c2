//! The peer store driven by fuzz input: the operation sequences of
//! `core/tests/peer_store_model.rs` (eight peers, a store of one to six,
//! random TTLs, connections, identify, protections, removals, samples),
//! against the same reference model, invariants checked after every step.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

#[path = "../../core/tests/common/peer_store.rs"]
mod harness;
use harness::{config, Harness, Op};

// ------------------------------------------------------------------ target

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(knobs) = <[u8; 8]>::arbitrary(&mut u) else {
        return;
    };
    let mut h = Harness::new(config(&knobs));
    // `arbitrary` keeps answering on exhausted input: stop on emptiness.
    let mut steps = 0;
    while !u.is_empty() && steps < 600 {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        h.apply(op);
        steps += 1;
    }
});
