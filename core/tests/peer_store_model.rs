//! Model-based test of the peer store: random operation sequences over
//! eight peers (a store of one to six), six addresses each plus one too
//! long, random TTLs (zero, permanent, seconds to minutes), connections
//! with and without a dialed address, identify with bounded metadata,
//! protections, removals and random samples, on a virtual clock that only
//! moves forward. After every step: at most `max_peers` peers and
//! `max_addrs_per_peer` addresses each, every returned address alive and
//! with the expiry the TTL rules give, connected and protected peers never
//! evicted nor lost, evictions in least-recently-seen order, refusals only
//! when full of connected or protected peers, and `poll_timeout` the
//! earliest expiry, after the latest input.
//!
//! The harness is `common/peer_store.rs`; `fuzz/fuzz_targets/peer_store.rs`
//! runs it on fuzz input.

use proptest::prelude::*;

#[path = "common/peer_store.rs"]
mod harness;
use harness::{config, Harness, Op};

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<u8>(), any::<u16>()).prop_map(|(scale, v)| Op::Advance { scale, v }),
        6 => (any::<u8>(), any::<u8>(), any::<u16>())
            .prop_map(|(peer, mask, ttl)| Op::AddAddrs { peer, mask, ttl }),
        3 => (any::<u8>(), any::<u8>(), any::<u16>())
            .prop_map(|(peer, mask, ttl)| Op::SetAddrs { peer, mask, ttl }),
        4 => (any::<u8>(), any::<u8>()).prop_map(|(peer, addr)| Op::Connected { peer, addr }),
        4 => any::<u8>().prop_map(Op::Disconnected),
        3 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()).prop_map(
            |(peer, protos, agent, mask, key)| Op::Identified { peer, protos, agent, mask, key }
        ),
        2 => (any::<u8>(), any::<u16>()).prop_map(|(peer, ms)| Op::Latency { peer, ms }),
        2 => any::<u8>().prop_map(Op::Protect),
        2 => any::<u8>().prop_map(Op::Unprotect),
        1 => any::<u8>().prop_map(Op::Remove),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(n, seed)| Op::Random { n, seed }),
    ]
}

proptest! {
    // PROPTEST_CASES=N runs more cases (default 256).
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn peer_store_against_its_model(
        knobs in any::<[u8; 8]>(),
        ops in proptest::collection::vec(arb_op(), 1..300),
    ) {
        let mut h = Harness::new(config(&knobs));
        for op in ops {
            h.apply(op);
        }
    }
}
