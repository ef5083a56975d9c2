//! The connection manager driven by fuzz input: the operation sequences of
//! `core/tests/connmgr_model.rs` (small knobs, six peers, closes executed
//! late or never, tags, protections, decaying tags, explicit trims), with
//! the same reference model and invariants checked after every step.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

#[path = "../../core/tests/common/connmgr.rs"]
mod harness;
use harness::{config, Harness, Op};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(knobs) = <[u8; 8]>::arbitrary(&mut u) else {
        return;
    };
    let mut h = Harness::new(config(&knobs));
    // `arbitrary` keeps answering on exhausted input: stop on emptiness.
    let mut steps = 0;
    while !u.is_empty() && steps < 500 {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        h.apply(op);
        steps += 1;
    }
});
