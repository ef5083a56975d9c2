//! Model-based test of the connection manager: random operation sequences
//! over six peers (connections opened and closed in any order, tags,
//! protections, decaying tags, explicit trims) on a virtual clock that only
//! moves forward, with small random watermarks and bounds. The test plays
//! the caller: it executes the closes it was asked for late, or never. A
//! reference model (connections, tags, protections, decaying values and
//! their ticks, the last trim) is checked against the manager after every
//! step, and with it the invariants: no close of a protected peer or of a
//! connection in its grace period, closes only in a trim (above high
//! water, or requested above low water), in the documented order, never
//! within the silence period; a trim with room ends at low water; no trim
//! owed is left undone; `poll_timeout` is exact and never in the past; the
//! bounds hold.
//!
//! The harness is `common/connmgr.rs`; `fuzz/fuzz_targets/conn_manager.rs`
//! runs it on fuzz input.

use proptest::prelude::*;

#[path = "common/connmgr.rs"]
mod harness;
use harness::{config, Harness, Op};

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u8>(), any::<u16>(), any::<bool>())
            .prop_map(|(scale, v, deliver)| Op::Advance { scale, v, deliver }),
        8 => (any::<u8>(), any::<bool>()).prop_map(|(peer, inbound)| Op::Connect { peer, inbound }),
        2 => any::<u8>().prop_map(|idx| Op::Disconnect { idx }),
        4 => Just(Op::ExecuteClose),
        4 => (any::<u8>(), any::<u8>(), -50i32..50)
            .prop_map(|(peer, name, weight)| Op::Tag { peer, name, weight }),
        1 => (any::<u8>(), any::<u8>(), any::<i32>())
            .prop_map(|(peer, name, weight)| Op::Tag { peer, name, weight }),
        2 => (any::<u8>(), any::<u8>(), any::<i16>())
            .prop_map(|(peer, name, delta)| Op::Upsert { peer, name, delta }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(peer, name)| Op::Untag { peer, name }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(peer, name)| Op::Protect { peer, name }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(peer, name)| Op::Unprotect { peer, name }),
        1 => (any::<u8>(), any::<u16>(), any::<u8>(), any::<u8>(), -20i16..200, -20i16..200)
            .prop_map(|(name, secs, decay, bump, p, q)| Op::Register { name, secs, decay, bump, p, q }),
        3 => (any::<u8>(), any::<u8>(), -30i32..100)
            .prop_map(|(tag, peer, delta)| Op::Bump { tag, peer, delta }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(tag, peer)| Op::RemoveDecaying { tag, peer }),
        1 => any::<u8>().prop_map(|tag| Op::CloseDecaying { tag }),
        2 => Just(Op::TrimNow),
    ]
}

proptest! {
    // PROPTEST_CASES=N runs more cases (default 256).
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn conn_manager_against_its_model(
        knobs in any::<[u8; 8]>(),
        ops in proptest::collection::vec(arb_op(), 1..300),
    ) {
        let mut h = Harness::new(config(&knobs));
        for op in ops {
            h.apply(op);
        }
    }
}
