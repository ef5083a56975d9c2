//! Peer maintenance inside the node, in memory: node 0 keeps peers.

use super::*;
use crate::dial::scheduler::SchedulerConfig;
use crate::node::MaintainConfig;

fn peer_entry(net: &Net, i: usize) -> (PeerId, Vec<Vec<u8>>) {
    (net.peer(i), vec![tcp_addr(i as u8 + 1)])
}

fn connected(net: &Net, i: usize, j: usize) -> bool {
    net.nodes[i].is_connected(&net.peer(j))
}

fn enable(net: &mut Net, config: MaintainConfig) {
    let now = net.now;
    net.nodes[0].enable_peer_maintenance(now, config).unwrap();
}

#[test]
fn a_static_peer_is_dialled_at_once_and_redialled_after_the_history() {
    let mut net = Net::new(2);
    let config = MaintainConfig {
        static_peers: vec![peer_entry(&net, 1)],
        ..MaintainConfig::default()
    };
    enable(&mut net, config);
    net.run_until(Duration::from_secs(1), |net| connected(net, 0, 1));
    assert!(net.nodes[0].is_protected(&net.peer(1)));
    // The peer hangs up; the scheduler waits out the 35 s dial history.
    let dropped_at = net.now;
    let conns: Vec<ConnectionId> = net.nodes[1].connections_to(&net.peer(0)).collect();
    for c in conns {
        net.nodes[1].close_connection(c);
    }
    net.run_until(Duration::from_secs(1), |net| !connected(net, 0, 1));
    net.run_until(Duration::from_secs(60), |net| connected(net, 0, 1));
    let after = net.now.saturating_duration_since(dropped_at);
    assert!(
        after >= Duration::from_secs(34) && after <= Duration::from_secs(36),
        "{after:?}"
    );
}

#[test]
fn bootnodes_are_dialled_after_the_fallback_interval_with_no_peers() {
    let mut net = Net::new(2);
    let config = MaintainConfig {
        bootnodes: vec![peer_entry(&net, 1)],
        ..MaintainConfig::default()
    };
    enable(&mut net, config);
    let start = net.now;
    // A lookup is asked for at once; we have nothing to offer.
    net.run_until(Duration::from_secs(1), |net| {
        net.has(0, |e| matches!(e, Event::PeerLookupWanted { .. }))
    });
    let now = net.now;
    net.nodes[0].peer_lookup_done(now);
    net.run_until(Duration::from_secs(30), |net| connected(net, 0, 1));
    let waited = net.now.saturating_duration_since(start);
    assert!(
        waited >= Duration::from_secs(20) && waited <= Duration::from_secs(21),
        "{waited:?}"
    );
}

#[test]
fn lookups_fill_the_dialed_quota_and_inbound_beyond_its_share_is_refused() {
    let mut net = Net::new(9);
    let config = MaintainConfig {
        scheduler: SchedulerConfig {
            max_peers: 4,
            dial_ratio: 2,
            ..SchedulerConfig::default()
        },
        ..MaintainConfig::default()
    };
    enable(&mut net, config);
    net.run_until(Duration::from_secs(1), |net| {
        net.has(0, |e| matches!(e, Event::PeerLookupWanted { .. }))
    });
    let want = net.events[0]
        .iter()
        .find_map(|e| match e {
            Event::PeerLookupWanted { want } => Some(*want),
            _ => None,
        })
        .unwrap();
    assert!(want >= 2, "at least the two dialed slots: {want}");
    let offered = (1..=4).map(|i| peer_entry(&net, i)).collect();
    let now = net.now;
    net.nodes[0].add_peer_candidates(now, offered);
    net.nodes[0].peer_lookup_done(now);
    net.run_until(Duration::from_secs(5), |net| {
        net.nodes[0].scheduler().unwrap().dialed_peers() == 2
    });
    // Give it time: still two dialed, no more.
    for _ in 0..50 {
        net.advance();
    }
    assert_eq!(net.nodes[0].scheduler().unwrap().dialed_peers(), 2);
    let dialed: Vec<usize> = (1..=4).filter(|&i| connected(&net, 0, i)).collect();
    assert_eq!(dialed.len(), 2, "{dialed:?}");
    // The scheduler started two dials per free slot, as go-ethereum does
    // (many fail); the two beyond the quota were closed.
    let quota_closes = |net: &Net, endpoint: Endpoint| {
        let closed: Vec<ConnectionId> = net.events[0]
            .iter()
            .filter_map(|e| match e {
                Event::ConnectionClosed {
                    conn,
                    reason: CloseReason::PeerQuota,
                    ..
                } => Some(*conn),
                _ => None,
            })
            .collect();
        net.events[0]
            .iter()
            .filter(|e| {
                matches!(e, Event::ConnectionEstablished { conn, endpoint: ep, .. }
                    if *ep == endpoint && closed.contains(conn))
            })
            .count()
    };
    assert_eq!(quota_closes(&net, Endpoint::Dialer), 2);
    // Four peers dial us: two fit the inbound share, two are refused.
    for i in [5, 6] {
        net.connect(i, 0);
    }
    let now = net.now;
    for i in [7, 8] {
        let peer = net.peer(0);
        net.nodes[i]
            .dial(now, Some(peer), vec![tcp_addr(1)])
            .unwrap();
    }
    for _ in 0..200 {
        net.advance();
    }
    assert_eq!(quota_closes(&net, Endpoint::Listener), 2);
    for i in [7, 8] {
        assert!(!connected(&net, 0, i));
    }
    let s = net.nodes[0].scheduler().unwrap();
    assert_eq!(s.connected_peers(), 4);
    assert_eq!(s.dialed_peers(), 2);
    assert_eq!(net.nodes[0].connection_count(), 4);
    // The store knows every peer it met, and the dialed addresses.
    let store = net.nodes[0].peer_store().unwrap();
    for &i in &dialed {
        assert!(store
            .addrs(&net.peer(i))
            .any(|a| a == tcp_addr(i as u8 + 1)));
        assert!(store.is_connected(&net.peer(i)));
    }
}

#[test]
fn a_static_peer_that_cannot_be_reached_is_resolved_through_the_application() {
    let mut net = Net::new(3);
    // Node 2's identity at a dead address.
    let config = MaintainConfig {
        static_peers: vec![(net.peer(2), vec![tcp_addr(99)])],
        ..MaintainConfig::default()
    };
    enable(&mut net, config);
    net.run_until(Duration::from_secs(10), |net| {
        net.has(0, |e| matches!(e, Event::ResolveWanted { .. }))
    });
    let peer = net.peer(2);
    let now = net.now;
    net.nodes[0].resolved(now, peer, vec![tcp_addr(3)]);
    net.run_until(Duration::from_secs(5), |net| connected(net, 0, 2));
}

#[test]
fn bad_maintenance_configs_are_refused() {
    let mut net = Net::new(1);
    let now = net.now;
    let us = peer_entry(&net, 0);
    let config = MaintainConfig {
        static_peers: vec![us],
        ..MaintainConfig::default()
    };
    assert!(matches!(
        net.nodes[0].enable_peer_maintenance(now, config),
        Err(crate::node::MaintainConfigError::Static(_))
    ));
    let config = MaintainConfig {
        scheduler: SchedulerConfig {
            dial_ratio: 0,
            ..SchedulerConfig::default()
        },
        ..MaintainConfig::default()
    };
    assert!(matches!(
        net.nodes[0].enable_peer_maintenance(now, config),
        Err(crate::node::MaintainConfigError::Scheduler(_))
    ));
}

#[test]
fn a_static_peer_that_comes_back_displaces_a_dynamic_one() {
    let mut net = Net::new(4);
    // Node 3 is down at first: its address refuses connections.
    let addr3 = tcp_addr(4);
    net.listeners.remove(&addr3);
    let config = MaintainConfig {
        scheduler: SchedulerConfig {
            max_peers: 6,
            // Redialled by the history alone, without lookups.
            resolve_static: false,
            ..SchedulerConfig::default()
        },
        static_peers: vec![peer_entry(&net, 3)],
        ..MaintainConfig::default()
    };
    enable(&mut net, config);
    net.run_until(Duration::from_secs(1), |net| {
        net.has(0, |e| matches!(e, Event::PeerLookupWanted { .. }))
    });
    let now = net.now;
    let offered = (1..=2).map(|i| peer_entry(&net, i)).collect();
    net.nodes[0].add_peer_candidates(now, offered);
    net.nodes[0].peer_lookup_done(now);
    net.run_until(Duration::from_secs(5), |net| {
        net.nodes[0].scheduler().unwrap().dialed_peers() == 2
    });
    assert!(!connected(&net, 0, 3));
    // Node 3 comes back; after the dial history it is dialed although the
    // two dynamic peers fill the quota, and one of them makes room.
    net.listeners.insert(addr3, 3);
    net.run_until(Duration::from_secs(60), |net| connected(net, 0, 3));
    net.run_until(Duration::from_secs(5), |net| {
        !(connected(net, 0, 1) && connected(net, 0, 2))
    });
    assert_eq!(net.nodes[0].scheduler().unwrap().dialed_peers(), 2);
    assert!(net.has(0, |e| matches!(
        e,
        Event::ConnectionClosed {
            reason: CloseReason::PeerQuota,
            ..
        }
    )));
}

#[test]
fn a_trusted_peer_dialling_a_full_inbound_share_takes_an_inbound_place() {
    let mut net = Net::new(7);
    let config = MaintainConfig {
        scheduler: SchedulerConfig {
            max_peers: 6, // 2 dialed, 4 inbound
            ..SchedulerConfig::default()
        },
        trusted_peers: vec![net.peer(5)],
        ..MaintainConfig::default()
    };
    enable(&mut net, config);
    assert!(net.nodes[0].is_protected(&net.peer(5)));
    for i in 1..=4 {
        net.connect(i, 0);
    }
    let inbound = |net: &Net| {
        let s = net.nodes[0].scheduler().unwrap();
        s.connected_peers() - s.dialed_peers()
    };
    assert_eq!(inbound(&net), 4);
    // The share is full: a trusted peer gets in, the inbound peer with the
    // lowest id leaves, and the share holds.
    net.connect(5, 0);
    assert!(connected(&net, 0, 5));
    let lowest = (1..=4)
        .min_by(|a, b| net.peer(*a).as_bytes().cmp(net.peer(*b).as_bytes()))
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| !connected(net, 0, lowest));
    assert_eq!(inbound(&net), 4);
    assert_eq!(
        (1..=5).filter(|&i| connected(&net, 0, i)).count(),
        4,
        "the trusted peer and three of the others"
    );
    assert!(net.has(0, |e| matches!(
        e,
        Event::ConnectionClosed {
            peer: Some(p),
            reason: CloseReason::PeerQuota,
            ..
        } if *p == net.peer(lowest)
    )));
    // Anyone else is still refused.
    let now = net.now;
    let us = net.peer(0);
    net.nodes[6].dial(now, Some(us), vec![tcp_addr(1)]).unwrap();
    for _ in 0..200 {
        net.advance();
    }
    assert!(!connected(&net, 0, 6));
    assert_eq!(inbound(&net), 4);
    assert!(connected(&net, 0, 5));
}
