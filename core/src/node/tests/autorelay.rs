//! AutoRelay inside the node, in memory: nodes 0 and 1 are relays with a
//! short reservation TTL, node 2 is private and keeps reservations with
//! them, node 3 dials it through them.

use super::*;
use crate::relay::finder::{self, FinderConfig, Reachability, RemovedReason};
use crate::relay::{ServerConfig, WallClock};

const R1: usize = 0;
const R2: usize = 1;
const B: usize = 2;
const A: usize = 3;

fn clock() -> WallClock {
    WallClock::new(Instant::ZERO, Duration::from_secs(1_700_000_000))
}

/// 30 s reservations, with the default rate limit (a 2 min interval):
/// refreshes every 22.5 s must still get through.
fn short_ttl() -> ServerConfig {
    ServerConfig {
        reservation_ttl: Duration::from_secs(30),
        ..ServerConfig::default()
    }
}

fn net_with_relays() -> Net {
    let mut net = Net::new(4);
    for r in [R1, R2] {
        net.nodes[r].serve_relay(Instant::ZERO, clock(), short_ttl());
    }
    net
}

fn finder_events(net: &Net, i: usize) -> Vec<finder::Event> {
    net.events[i]
        .iter()
        .filter_map(|e| match e {
            Event::AutoRelay(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn count(net: &Net, i: usize, f: impl Fn(&finder::Event) -> bool) -> usize {
    finder_events(net, i).iter().filter(|e| f(e)).count()
}

fn static_relays(net: &Net) -> FinderConfig {
    let relays = [R1, R2]
        .iter()
        .map(|&r| (net.peer(r), vec![tcp_addr(r as u8 + 1)]))
        .collect();
    FinderConfig {
        public_addrs_only: false,
        ..FinderConfig::with_static_relays(relays)
    }
}

#[test]
fn static_relays_stay_reserved_across_many_short_ttls() {
    let mut net = net_with_relays();
    let config = static_relays(&net);
    net.nodes[B]
        .enable_autorelay(net.now, clock(), config)
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        count(net, B, |e| matches!(e, finder::Event::RelayAdded { .. })) == 2
    });
    for r in [R1, R2] {
        assert!(
            net.nodes[B].is_protected(&net.peer(r)),
            "relay connections are protected"
        );
    }
    let addrs = net.nodes[B].autorelay().unwrap().addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    // Three minutes: six lifetimes of each reservation.
    let start = net.now;
    while net.now < start + Duration::from_secs(180) {
        net.advance();
        for r in [R1, R2] {
            let relay = net.peer(r);
            assert!(
                net.nodes[B]
                    .reservation(&relay)
                    .is_some_and(|h| h.expire > net.now),
                "the reservation on relay {r} lapsed at {:?}",
                net.now
            );
        }
    }
    let refreshed = count(&net, B, |e| matches!(e, finder::Event::Refreshed { .. }));
    // One refresh per relay every 22.5 s.
    assert!((14..=18).contains(&refreshed), "{refreshed} refreshes");
    assert_eq!(
        count(&net, B, |e| matches!(e, finder::Event::RelayRemoved { .. })),
        0
    );
    // The circuit address works: A dials B through relay 1.
    let b = net.peer(B);
    let via_r1 = crate::relay::circuit_addr(&with_p2p(&tcp_addr(R1 as u8 + 1), net.peer(R1)), None);
    assert!(addrs.contains(&via_r1));
    let target = [via_r1, crate::relay::p2p_suffix(&b)].concat();
    assert_eq!(
        net.nodes[A].dial_circuit(net.now, &target),
        Err(RelayCommandError::NotConnectedToRelay)
    );
    net.connect(A, R1);
    let dial = net.nodes[A].dial_circuit(net.now, &target).unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(B, |e| matches!(e, Event::CircuitRequest { .. }))
    });
    let request = net.events[B]
        .iter()
        .find_map(|e| match e {
            Event::CircuitRequest { request, .. } => Some(*request),
            _ => None,
        })
        .unwrap();
    net.nodes[B]
        .answer_circuit(net.now, request, Ok(()))
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(
            A,
            |e| matches!(e, Event::Dialed { dial: d, .. } if *d == dial),
        )
    });
}

#[test]
fn a_static_relay_that_restarts_is_reserved_again_when_it_is_back() {
    let mut net = net_with_relays();
    let config = static_relays(&net);
    net.nodes[B]
        .enable_autorelay(net.now, clock(), config)
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        count(net, B, |e| matches!(e, finder::Event::RelayAdded { .. })) == 2
    });
    // Relay 1 goes down: its connection closes and its port refuses.
    let r1 = net.peer(R1);
    net.listeners.remove(&tcp_addr(R1 as u8 + 1));
    let conns: Vec<_> = net.nodes[R1].connections_to(&net.peer(B)).collect();
    for c in conns {
        net.nodes[R1].close_connection(c);
    }
    net.run_until(Duration::from_secs(5), |net| {
        finder_events(net, B).contains(&finder::Event::RelayRemoved {
            relay: r1,
            reason: RemovedReason::Disconnected,
        })
    });
    assert_eq!(
        net.nodes[B].autorelay().unwrap().addrs().len(),
        1,
        "its address is withdrawn"
    );
    // Down for two minutes: retried, not given up.
    let down = net.now;
    while net.now < down + Duration::from_secs(120) {
        net.advance();
    }
    assert!(net.nodes[B].reservation(&r1).is_none());
    net.listeners.insert(tcp_addr(R1 as u8 + 1), R1);
    let back = net.now;
    net.run_until(Duration::from_secs(120), |net| {
        net.nodes[B].reservation(&r1).is_some()
    });
    // Static retries back off to at most a minute (plus the dial's own backoff).
    assert!(
        net.now - back <= Duration::from_secs(75),
        "{:?}",
        net.now - back
    );
    assert_eq!(net.nodes[B].autorelay().unwrap().addrs().len(), 2);
    assert_eq!(
        count(&net, B, |e| matches!(e, finder::Event::RelayAdded { .. })),
        3
    );
}

#[test]
fn identified_relays_become_candidates_after_the_boot_delay() {
    let mut net = net_with_relays();
    let config = FinderConfig {
        public_addrs_only: false,
        ..FinderConfig::default()
    };
    net.nodes[B]
        .enable_autorelay(net.now, clock(), config)
        .unwrap();
    net.run_until(Duration::from_secs(1), |net| {
        net.has(B, |e| matches!(e, Event::RelayCandidatesWanted { max: 20 }))
    });
    // The application's peer source offers relay 2 and A (not a relay).
    let offered = vec![
        (net.peer(R2), vec![tcp_addr(R2 as u8 + 1)]),
        (net.peer(A), vec![tcp_addr(A as u8 + 1)]),
    ];
    net.nodes[B].add_relay_candidates(net.now, offered);
    net.nodes[B].relay_candidates_exhausted(net.now);
    // B meets relay 1 on its own.
    net.connect(B, R1);
    net.run_until(Duration::from_secs(5), |net| {
        net.nodes[B].autorelay().unwrap().candidates().count() == 2
    });
    assert!(net.nodes[B].reservation(&net.peer(R1)).is_none(), "booting");
    net.run_until(Duration::from_secs(200), |net| {
        count(net, B, |e| matches!(e, finder::Event::RelayAdded { .. })) == 2
    });
    assert!(net.now >= Instant::ZERO + Duration::from_secs(180));
    // Public: the relays are given up.
    net.nodes[B].set_reachability(net.now, Reachability::Public);
    net.run_until(Duration::from_secs(1), |net| {
        count(net, B, |e| {
            matches!(
                e,
                finder::Event::RelayRemoved {
                    reason: RemovedReason::Public,
                    ..
                }
            )
        }) == 2
    });
    assert!(!net.nodes[B].is_protected(&net.peer(R1)));
}
