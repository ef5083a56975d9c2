//! Model-based test of the peer monitor: random operation sequences over
//! five peers and two metric names (metrics with random TTLs and validity,
//! some stamped in the past; the clock moved with and without the checks
//! running; peer set changes; events polled at random), with and without
//! phi accrual, on a virtual clock. A reference model predicts every event
//! and the monitor's state is checked against it after every step: one
//! alert per outage (without a cooldown), no alert for a series holding a
//! valid unexpired metric unless phi convicts it, recoveries only for
//! alerted series, the queue, window, phi-sample and peer bounds, and a
//! `poll_timeout` never in the past.
//!
//! The harness is `common/monitor.rs`; `fuzz/fuzz_targets/peer_monitor.rs`
//! runs it on fuzz input.

use proptest::prelude::*;

#[path = "common/monitor.rs"]
mod harness;
use harness::{config, Harness, Op};

// ------------------------------------------------------------------ proptest

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (any::<u8>(), any::<u8>(), any::<u16>(), any::<u8>())
            .prop_map(|(peer, name, ttl, flags)| Op::Metric { peer, name, ttl, flags }),
        3 => (any::<u8>(), any::<u16>()).prop_map(|(scale, v)| Op::Advance { scale, v }),
        2 => Just(Op::Timeout),
        5 => (any::<u8>(), any::<u16>()).prop_map(|(scale, v)| Op::Drive { scale, v }),
        1 => any::<u8>().prop_map(Op::SetPeers),
        1 => any::<u8>().prop_map(Op::AddPeer),
        1 => any::<u8>().prop_map(Op::RemovePeer),
        3 => any::<u8>().prop_map(Op::Poll),
        1 => Just(Op::PollAll),
    ]
}

fn run(knobs: &[u8; 12], phi: bool, ops: Vec<Op>) {
    let mut h = Harness::new(config(knobs, phi));
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
    fn ttl_rule(
        knobs in any::<[u8; 12]>(),
        ops in proptest::collection::vec(arb_op(), 1..300),
    ) {
        run(&knobs, false, ops);
    }

    #[test]
    fn with_phi(
        knobs in any::<[u8; 12]>(),
        ops in proptest::collection::vec(arb_op(), 1..300),
    ) {
        run(&knobs, true, ops);
    }
}
