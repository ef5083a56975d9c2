//! The same inputs give the same outputs, bit for bit: what a seeded
//! simulation of many nodes rests on. Nothing in the node may depend on
//! per-process randomness (hash map seeds, addresses).

use super::*;
use crate::dial::scheduler::SchedulerConfig;
use crate::node::MaintainConfig;

/// Six nodes keeping peers, one shut down and its peers refilling; every
/// event of every node, in order, with the virtual time it came at.
fn trace() -> String {
    let mut net = Net::new(6);
    let entries: Vec<(PeerId, Vec<Vec<u8>>)> = (0..6)
        .map(|i| (net.peer(i), vec![tcp_addr(i as u8 + 1)]))
        .collect();
    for i in 0..6 {
        let config = MaintainConfig {
            scheduler: SchedulerConfig {
                max_peers: 3,
                ..SchedulerConfig::default()
            },
            static_peers: vec![entries[(i + 1) % 6].clone()],
            bootnodes: vec![entries[0].clone()],
            ..MaintainConfig::default()
        };
        let now = net.now;
        net.nodes[i].enable_peer_maintenance(now, config).unwrap();
    }
    let mut log = String::new();
    let record = |net: &mut Net, log: &mut String| {
        for i in 0..6 {
            for e in net.take_events(i) {
                if let Event::PeerLookupWanted { .. } = e {
                    let me = net.peer(i);
                    let offered = entries.iter().filter(|(p, _)| *p != me).cloned();
                    let now = net.now;
                    net.nodes[i].add_peer_candidates(now, offered.collect());
                    net.nodes[i].peer_lookup_done(now);
                }
                log.push_str(&alloc::format!("{:?} {i} {e:?}\n", net.now));
            }
        }
    };
    for _ in 0..300 {
        net.advance();
        record(&mut net, &mut log);
    }
    let now = net.now;
    net.nodes[5].shutdown(now);
    for _ in 0..300 {
        net.advance();
        record(&mut net, &mut log);
    }
    log
}

#[test]
fn two_runs_with_the_same_seeds_are_identical() {
    let (a, b) = (trace(), trace());
    assert!(
        a.len() > 10_000,
        "a trace worth comparing: {} bytes",
        a.len()
    );
    if a != b {
        let at = a
            .lines()
            .zip(b.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(0);
        panic!(
            "the runs differ from line {at}:\n{}\n---\n{}",
            a.lines().nth(at).unwrap_or(""),
            b.lines().nth(at).unwrap_or("")
        );
    }
}
