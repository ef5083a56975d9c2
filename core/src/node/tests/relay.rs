//! Circuit relay v2 between our own nodes, in memory: node 0 is the relay,
//! node 1 reserves on it, node 2 dials node 1 through it.

use super::*;
use crate::relay::{ServerConfig, Status, WallClock};

const R: usize = 0;
const B: usize = 1;
const A: usize = 2;

fn clock() -> WallClock {
    WallClock::new(Instant::ZERO, Duration::from_secs(1_700_000_000))
}

/// `/ip4/10.0.0.1/tcp/4001/p2p/<relay>/p2p-circuit/p2p/<target>`
fn circuit_addr(net: &Net, relay: usize, target: usize) -> Vec<u8> {
    let mut a = with_p2p(&tcp_addr(relay as u8 + 1), net.peer(relay));
    crate::varint::push(crate::addr::code::P2P_CIRCUIT, &mut a);
    with_p2p(&a, net.peer(target))
}

/// A relay serving `config`, a target holding a reservation on it, and a
/// dialer connected to it.
fn relay_net(config: ServerConfig) -> Net {
    let mut net = Net::new(3);
    net.nodes[R].serve_relay(Instant::ZERO, clock(), config);
    net.connect(B, R);
    net.connect(A, R);
    let relay = net.peer(R);
    net.nodes[B].reserve(net.now, clock(), relay).unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(B, |e| matches!(e, Event::ReservationAccepted { .. }))
    });
    net
}

/// Dials B from A through the relay, B accepting; returns A's connection.
fn dial_through(net: &mut Net) -> ConnectionId {
    let addr = circuit_addr(net, R, B);
    let dial = net.nodes[A].dial_circuit(net.now, &addr).unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(B, |e| matches!(e, Event::CircuitRequest { .. }))
    });
    let request = net.events[B]
        .iter()
        .find_map(|e| match e {
            Event::CircuitRequest {
                request, initiator, ..
            } => Some((*request, *initiator)),
            _ => None,
        })
        .unwrap();
    assert_eq!(request.1, net.peer(A));
    net.nodes[B]
        .answer_circuit(net.now, request.0, Ok(()))
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(
            A,
            |e| matches!(e, Event::Dialed { dial: d, .. } if *d == dial),
        )
    });
    net.events[A]
        .iter()
        .find_map(|e| match e {
            Event::Dialed {
                dial: d,
                conn,
                peer,
            } if *d == dial => {
                assert_eq!(*peer, net.peer(B));
                Some(*conn)
            }
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_reservation_carries_the_relay_addresses_and_limit() {
    let net = relay_net(ServerConfig::default());
    let relay = net.peer(R);
    let r = net.nodes[B].reservation(&relay).expect("held");
    assert_eq!(r.expire, Instant::ZERO + Duration::from_secs(3600));
    assert_eq!(r.addrs, vec![with_p2p(&tcp_addr(1), relay)]);
    assert!(r.limit.is_some());
    assert!(net.nodes[R]
        .relay_server()
        .unwrap()
        .has_reservation(&net.peer(B)));
}

#[test]
fn a_dial_through_our_relay_upgrades_and_echoes() {
    let mut net = relay_net(ServerConfig {
        circuit_data: 0,
        circuit_duration: Duration::ZERO,
        ..ServerConfig::default()
    });
    net.nodes[B].register_protocol(ECHO).unwrap();
    let conn = dial_through(&mut net);
    assert!(net.nodes[A].is_relayed(conn));
    assert!(!net.nodes[A].is_limited(conn), "no limit announced");
    // B sees the relayed connection with its circuit address.
    let remote = net.events[B]
        .iter()
        .find_map(|e| match e {
            Event::ConnectionEstablished {
                peer, remote_addr, ..
            } if *peer == net.peer(A) => Some(remote_addr.clone()),
            _ => None,
        })
        .unwrap();
    let info = crate::addr::classify(&remote).unwrap();
    assert!(info.relayed);
    assert_eq!(info.peer, Some(net.peer(A)));
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(echo_between(&mut net, A, B, &payload), payload);
}

#[test]
fn a_circuit_refused_by_the_target_reaches_the_dialer() {
    let mut net = relay_net(ServerConfig::default());
    let addr = circuit_addr(&net, R, B);
    let dial = net.nodes[A].dial_circuit(net.now, &addr).unwrap();
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
        .answer_circuit(net.now, request, Err(Status::PermissionDenied))
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(
            A,
            |e| matches!(e, Event::CircuitDialFailed { dial: d, .. } if *d == dial),
        )
    });
    assert!(net.has(A, |e| matches!(
        e,
        Event::CircuitDialFailed {
            error: CircuitDialError::Relay(crate::relay::RelayError::Refused(
                Status::PermissionDenied
            )),
            ..
        }
    )));
}

#[test]
fn a_dial_to_a_peer_without_reservation_is_refused_by_the_relay() {
    let mut net = relay_net(ServerConfig::default());
    // A holds no reservation: B's dial to A is refused by the relay.
    let addr = circuit_addr(&net, R, A);
    let dial = net.nodes[B].dial_circuit(net.now, &addr).unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(
            B,
            |e| matches!(e, Event::CircuitDialFailed { dial: d, .. } if *d == dial),
        )
    });
    assert!(net.has(B, |e| matches!(
        e,
        Event::CircuitDialFailed {
            error: CircuitDialError::Relay(crate::relay::RelayError::Refused(
                Status::NoReservation
            )),
            ..
        }
    )));
}
