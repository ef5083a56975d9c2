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

/// Runs until `dial` from node `i` fails (or `within` passes) and returns
/// the status the relay or target refused it with.
fn refusal(net: &mut Net, i: usize, dial: DialId, within: Duration) -> Option<Status> {
    net.run_until(within, |net| {
        net.has(
            i,
            |e| matches!(e, Event::CircuitDialFailed { dial: d, .. } if *d == dial),
        )
    });
    net.events[i].iter().find_map(|e| match e {
        Event::CircuitDialFailed {
            dial: d,
            error: CircuitDialError::Relay(crate::relay::RelayError::Refused(status)),
        } if *d == dial => Some(*status),
        _ => None,
    })
}

#[test]
fn a_reservation_carries_the_relay_addresses_and_limit() {
    let mut net = relay_net(ServerConfig::default());
    let relay = net.peer(R);
    let r = net.nodes[B].reservation(&relay).expect("held");
    assert_eq!(r.expire, Instant::ZERO + Duration::from_secs(3600));
    assert_eq!(r.addrs, vec![with_p2p(&tcp_addr(1), relay)]);
    assert!(r.limit.is_some());
    assert!(net.nodes[R]
        .relay_server()
        .unwrap()
        .has_reservation(&net.peer(B)));
    // B announces where it is reachable now: identify pushed to the relay.
    let mut circuit = with_p2p(&tcp_addr(1), relay);
    crate::varint::push(crate::addr::code::P2P_CIRCUIT, &mut circuit);
    assert_eq!(net.nodes[B].relay_addrs(), vec![circuit.clone()]);
    let b = net.peer(B);
    net.run_until(Duration::from_secs(5), |net| {
        net.has(R, |e| {
            matches!(e, Event::Identified { peer, info, .. }
                if *peer == b && info.listen_addrs.contains(&circuit))
        })
    });
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
    let refused = refusal(&mut net, A, dial, Duration::from_secs(5));
    assert_eq!(refused, Some(Status::PermissionDenied));
}

#[test]
fn a_dial_to_a_peer_without_reservation_is_refused_by_the_relay() {
    let mut net = relay_net(ServerConfig::default());
    // A holds no reservation: B's dial to A is refused by the relay.
    let addr = circuit_addr(&net, R, A);
    let dial = net.nodes[B].dial_circuit(net.now, &addr).unwrap();
    let refused = refusal(&mut net, B, dial, Duration::from_secs(5));
    assert_eq!(refused, Some(Status::NoReservation));
}

#[test]
fn every_read_size_down_to_one_byte_carries_the_circuit() {
    let mut net = relay_net(ServerConfig {
        circuit_data: 0,
        circuit_duration: Duration::ZERO,
        ..ServerConfig::default()
    });
    net.chunk = 1;
    net.nodes[B].register_protocol(ECHO).unwrap();
    dial_through(&mut net);
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(echo_between(&mut net, A, B, &payload), payload);
}

fn closed_with(net: &Net, i: usize, conn: ConnectionId) -> Option<CloseReason> {
    net.events[i].iter().find_map(|e| match e {
        Event::ConnectionClosed {
            conn: c, reason, ..
        } if *c == conn => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn the_data_limit_ends_the_circuit_with_a_typed_reason() {
    let mut net = relay_net(ServerConfig {
        circuit_data: 64 * 1024,
        circuit_duration: Duration::ZERO,
        ..ServerConfig::default()
    });
    for i in [A, B] {
        net.nodes[i].register_protocol_on_limited(ECHO).unwrap();
    }
    let conn = dial_through(&mut net);
    assert!(net.nodes[A].is_limited(conn));
    let b = net.peer(B);
    let stream = net.nodes[A].open_stream(net.now, b, [ECHO]).unwrap();
    let payload = vec![7u8; 1024 * 1024];
    let mut sent = 0;
    let start = net.now;
    for _ in 0..10_000 {
        if closed_with(&net, A, conn).is_some() || net.now > start + Duration::from_secs(10) {
            break;
        }
        if let Ok(n) = net.nodes[A].stream_write(net.now, stream, &payload[sent..]) {
            sent += n;
        }
        net.advance();
    }
    assert!(
        sent > 64 * 1024 && sent < payload.len(),
        "cut mid-transfer after {sent} bytes"
    );
    assert_eq!(closed_with(&net, A, conn), Some(CloseReason::CircuitLimit));
    assert_eq!(net.nodes[R].relay_server().unwrap().circuits(), 0);
}

#[test]
fn a_limited_connection_runs_only_what_opted_in() {
    let mut net = relay_net(ServerConfig::default());
    net.nodes[B].register_protocol(ECHO).unwrap();
    let conn = dial_through(&mut net);
    assert!(net.nodes[A].is_limited(conn));
    let b = net.peer(B);
    assert_eq!(
        net.nodes[A].open_stream(net.now, b, [ECHO]).unwrap_err(),
        OpenStreamError::Limited
    );
    // Ping and identify are allowed there.
    let ping = net.nodes[A].ping(net.now, b).unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(
            A,
            |e| matches!(e, Event::PingSuccess { ping: p, .. } if *p == ping),
        )
    });
    assert!(net.has(
        A,
        |e| matches!(e, Event::Identified { conn: c, .. } if *c == conn)
    ));
    // B did not opt ECHO in: A, opting in itself, meets `na`.
    net.nodes[A].register_protocol_on_limited(ECHO).unwrap();
    let stream = net.nodes[A].open_stream(net.now, b, [ECHO]).unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(
            A,
            |e| matches!(e, Event::StreamOpenFailed { stream: s, .. } if *s == stream),
        )
    });
}

#[test]
fn the_relay_losing_the_target_closes_the_relayed_connection() {
    let mut net = relay_net(ServerConfig::default());
    let conn = dial_through(&mut net);
    let b = net.peer(B);
    let to_b: Vec<ConnectionId> = net.nodes[R].connections_to(&b).collect();
    for c in to_b {
        net.nodes[R].close_connection(c);
    }
    net.run_until(Duration::from_secs(10), |net| {
        closed_with(net, A, conn).is_some()
    });
    assert_eq!(closed_with(&net, A, conn), Some(CloseReason::CircuitClosed));
    // The target's reservation went with its connection, on both sides.
    let relay = net.peer(R);
    net.run_until(Duration::from_secs(10), |net| {
        net.has(
            B,
            |e| matches!(e, Event::ReservationLost { relay: r } if *r == relay),
        )
    });
    assert!(net.nodes[B].reservation(&relay).is_none());
    assert!(!net.nodes[R].relay_server().unwrap().has_reservation(&b));
    assert_eq!(net.nodes[R].relay_server().unwrap().circuits(), 0);
}

#[test]
fn a_stop_from_a_relay_we_hold_no_reservation_with_is_refused() {
    let mut net = relay_net(ServerConfig::default());
    // B forgets its reservation while the relay still holds it.
    net.nodes[B].relay.reservations.clear();
    let addr = circuit_addr(&net, R, B);
    let dial = net.nodes[A].dial_circuit(net.now, &addr).unwrap();
    let refused = refusal(&mut net, A, dial, Duration::from_secs(5));
    assert_eq!(refused, Some(Status::NoReservation));
    assert!(!net.has(B, |e| matches!(e, Event::CircuitRequest { .. })));
}

#[test]
fn an_unanswered_circuit_request_is_refused_after_the_accept_timeout() {
    let mut net = relay_net(ServerConfig::default());
    let addr = circuit_addr(&net, R, B);
    let dial = net.nodes[A].dial_circuit(net.now, &addr).unwrap();
    let start = net.now;
    let refused = refusal(&mut net, A, dial, Duration::from_secs(30));
    let waited = net.now.saturating_duration_since(start);
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
        "{waited:?}"
    );
    assert_eq!(refused, Some(Status::ConnectionFailed));
}

#[test]
fn reservations_and_connects_over_a_relayed_connection_are_refused() {
    let mut net = relay_net(ServerConfig::default());
    // Make B a relay too, reached by A only through R.
    net.nodes[B].serve_relay(net.now, clock(), ServerConfig::default());
    dial_through(&mut net);
    let b = net.peer(B);
    assert_eq!(
        net.nodes[A].reserve(net.now, clock(), b),
        Err(RelayCommandError::NotConnectedToRelay),
        "we never ask over a relayed connection"
    );
    let mut addr = with_p2p(&tcp_addr(2), b);
    crate::varint::push(crate::addr::code::P2P_CIRCUIT, &mut addr);
    let addr = with_p2p(&addr, net.peer(R));
    assert_eq!(
        net.nodes[A].dial_circuit(net.now, &addr),
        Err(RelayCommandError::NotConnectedToRelay)
    );
}
