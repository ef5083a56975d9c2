//! Shutting a node down, in memory.

use super::*;
use crate::dial::DialErrorCause;
use crate::node::MaintainConfig;

fn closed(net: &Net, i: usize) -> usize {
    net.events[i]
        .iter()
        .filter(|e| matches!(e, Event::ConnectionClosed { .. }))
        .count()
}

#[test]
fn shutdown_closes_every_connection_then_reports_once() {
    let mut net = Net::new(3);
    net.connect(0, 1);
    net.connect(2, 0);
    let now = net.now;
    net.nodes[0].shutdown(now);
    assert!(net.nodes[0].is_shutting_down());
    assert!(!net.nodes[0].is_shut_down(), "two sockets still flush");
    // Its peers see the GoAway and the FIN and close their ends.
    net.run_until(Duration::from_secs(10), |net| {
        net.has(0, |e| matches!(e, Event::ShutdownComplete))
    });
    assert!(net.nodes[0].is_shut_down());
    assert_eq!(closed(&net, 0), 2);
    assert!(!net.nodes[1].is_connected(&net.peer(0)));
    assert!(!net.nodes[2].is_connected(&net.peer(0)));
    assert!(net.nodes[0].listen_addrs().is_empty());
    // Once only, even when asked again.
    let now = net.now;
    net.nodes[0].shutdown(now);
    for _ in 0..20 {
        net.advance();
    }
    let reports = net.events[0]
        .iter()
        .filter(|e| matches!(e, Event::ShutdownComplete))
        .count();
    assert_eq!(reports, 1);
}

#[test]
fn after_shutdown_nothing_new_comes_in_or_goes_out() {
    let mut net = Net::new(2);
    while net.step() {}
    let now = net.now;
    net.nodes[0].shutdown(now);
    assert!(matches!(
        net.nodes[0].poll_action(),
        Some(Action::StopListening { .. })
    ));
    net.listeners.retain(|_, j| *j != 0);
    assert_eq!(net.nodes[0].poll_event(), Some(Event::ShutdownComplete));
    let peer = net.peer(1);
    assert_eq!(
        net.nodes[0].dial(now, Some(peer), vec![tcp_addr(2)]),
        Err(DialError::ShuttingDown)
    );
    assert_eq!(
        net.nodes[0].handle_inbound(now, tcp_addr(9)),
        Err(InboundError::ShuttingDown)
    );
    let l = net.nodes[0].listen_on(tcp_addr(1));
    assert_eq!(net.nodes[0].poll_action(), None, "nothing to bind");
    assert_eq!(
        net.nodes[0].poll_event(),
        Some(Event::ListenFailed { listener: l })
    );
    // The listener was released: dialing the node is refused.
    let peer0 = net.peer(0);
    net.nodes[1]
        .dial(now, Some(peer0), vec![tcp_addr(1)])
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(1, |e| matches!(e, Event::DialFailed { .. }))
    });
    assert_eq!(net.nodes[0].connection_count(), 0);
}

#[test]
fn a_dial_under_way_is_cancelled() {
    let mut net = Net::new(2);
    let now = net.now;
    let peer = net.peer(1);
    let dial = net.nodes[0]
        .dial(now, Some(peer), vec![tcp_addr(2)])
        .unwrap();
    let peerless = net.nodes[0].dial(now, None, vec![tcp_addr(2)]).unwrap();
    net.nodes[0].shutdown(now);
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| matches!(e, Event::ShutdownComplete))
    });
    for d in [dial, peerless] {
        assert!(
            net.has(0, |e| matches!(e, Event::DialFailed { dial, cause: DialErrorCause::Cancelled, .. } if *dial == d)),
            "{:#?}",
            net.events[0]
        );
    }
    assert!(!net.has(0, |e| matches!(e, Event::Dialed { .. })));
}

#[test]
fn peer_maintenance_stops_redialling_its_static_peers() {
    let mut net = Net::new(2);
    let now = net.now;
    let config = MaintainConfig {
        static_peers: vec![(net.peer(1), vec![tcp_addr(2)])],
        ..MaintainConfig::default()
    };
    net.nodes[0].enable_peer_maintenance(now, config).unwrap();
    net.run_until(Duration::from_secs(1), |net| {
        net.nodes[0].is_connected(&net.peer(1))
    });
    let now = net.now;
    net.nodes[0].shutdown(now);
    assert!(net.nodes[0].scheduler().is_none());
    // Well past the dial history: no new connection is made.
    let until = net.now + Duration::from_secs(120);
    while net.now < until {
        net.advance();
        if net.nodes[0].poll_timeout().is_none() && net.wire.is_empty() {
            break;
        }
    }
    let established = net.events[0]
        .iter()
        .filter(|e| matches!(e, Event::ConnectionEstablished { .. }))
        .count();
    assert_eq!(established, 1, "only the first");
    assert!(net.nodes[0].is_shut_down());
}
