//! The connection manager inside the node, in memory.

use super::*;
use crate::peers::connmgr::ConnManagerConfig;

#[test]
fn above_high_water_the_least_valuable_are_trimmed_never_the_protected() {
    let mut net = Net::new(7);
    let mut config = ConnManagerConfig::with_watermarks(2, 4);
    config.grace_period = Duration::from_secs(1);
    let now = net.now;
    net.nodes[0].enable_conn_manager(now, config).unwrap();
    let p1 = net.peer(1);
    net.nodes[0].protect(p1, "static");
    for i in 1..=6 {
        net.connect(i, 0);
    }
    let p6 = net.peer(6);
    net.nodes[0].tag_peer(p6, "useful", 10).unwrap();
    // Young connections are kept; after the grace period, trimmed to two.
    assert_eq!(net.nodes[0].connection_count(), 6);
    let cm = net.nodes[0].conn_manager().unwrap();
    assert_eq!(cm.connection_count(), 6, "the manager counts them");
    assert!(net.nodes[0].poll_timeout().is_some());
    for _ in 0..400 {
        net.advance();
    }
    assert!(
        net.now >= Instant::ZERO + Duration::from_secs(1),
        "past the grace"
    );
    for _ in 0..50 {
        net.advance();
    }
    assert_eq!(net.nodes[0].connection_count(), 2);
    assert!(net.nodes[0].is_connected(&net.peer(1)), "protected");
    assert!(net.nodes[0].is_connected(&p6), "the most valuable");
    let trimmed = net.events[0]
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::ConnectionClosed {
                    reason: CloseReason::Trimmed,
                    ..
                }
            )
        })
        .count();
    assert_eq!(trimmed, 4);
}

#[test]
fn static_peers_of_peer_maintenance_are_protected_from_trimming() {
    let mut net = Net::new(5);
    let now = net.now;
    let mut config = ConnManagerConfig::with_watermarks(1, 2);
    config.grace_period = Duration::from_millis(500);
    net.nodes[0].enable_conn_manager(now, config).unwrap();
    let maintain = crate::node::MaintainConfig {
        static_peers: vec![(net.peer(4), vec![tcp_addr(5)])],
        ..crate::node::MaintainConfig::default()
    };
    net.nodes[0].enable_peer_maintenance(now, maintain).unwrap();
    for i in 1..=3 {
        net.connect(i, 0);
    }
    net.run_until(Duration::from_secs(1), |net| {
        connected_all(net, &[1, 2, 3, 4])
    });
    // A trim that meets young connections closes what it may; the next
    // one comes after the 10 s silence period.
    let end = net.now + Duration::from_secs(12);
    while net.now < end {
        net.advance();
    }
    assert_eq!(net.nodes[0].connection_count(), 1);
    assert!(
        net.nodes[0].is_connected(&net.peer(4)),
        "the static peer stays"
    );
}

fn connected_all(net: &Net, peers: &[usize]) -> bool {
    peers
        .iter()
        .all(|&i| net.nodes[0].is_connected(&net.peer(i)))
}
