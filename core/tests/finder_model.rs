//! Model-based test of the AutoRelay relay finder: random operation
//! sequences over eight peers (six speak the hop protocol, two do not), in
//! dynamic and in static-relay mode, on a virtual clock that only moves
//! forward. The test plays the caller: it keeps every Reserve, Refresh and
//! Probe it was asked for and answers them in any order, some late (after a
//! reachability flip, a disconnection or an expiry). A small model (the
//! relays granted, refreshed and removed, the protected connections, the
//! relay addresses) is checked against the finder after every step.
//!
//! The harness is `common/finder.rs`; `fuzz/fuzz_targets/relay_finder.rs`
//! runs it on fuzz input.

use proptest::prelude::*;

#[path = "common/finder.rs"]
mod harness;
use harness::{config, Harness, Op};

// ------------------------------------------------------------------ proptest

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), any::<u16>()).prop_map(|(scale, v)| Op::Advance { scale, v }),
        2 => any::<u8>().prop_map(Op::Reach),
        4 => (any::<u8>(), any::<u8>(), any::<u16>())
            .prop_map(|(peer, flags, rtt)| Op::Identified { peer, flags, rtt }),
        1 => any::<u8>().prop_map(Op::ProbeFailed),
        2 => proptest::collection::vec(any::<u8>(), 0..6).prop_map(Op::Source),
        1 => Just(Op::Exhausted),
        2 => any::<u8>().prop_map(Op::Disconnected),
        8 => (any::<u8>(), any::<u8>(), any::<u16>())
            .prop_map(|(idx, how, ttl)| Op::Answer { idx, how, ttl }),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(peer, ms)| Op::Rtt { peer, ms }),
    ]
}

fn run(knobs: &[u8; 16], static_mode: bool, ops: Vec<Op>) {
    let (cfg, statics) = config(knobs, static_mode);
    let mut h = Harness::new(cfg, statics);
    for op in ops {
        h.apply(op);
    }
}

proptest! {
    // PROPTEST_CASES=N runs more cases (default 256).
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn dynamic_relays(
        knobs in any::<[u8; 16]>(),
        ops in proptest::collection::vec(arb_op(), 1..200),
    ) {
        run(&knobs, false, ops);
    }

    #[test]
    fn static_relays(
        knobs in any::<[u8; 16]>(),
        ops in proptest::collection::vec(arb_op(), 1..200),
    ) {
        run(&knobs, true, ops);
    }
}
