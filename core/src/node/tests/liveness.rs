//! Heartbeats inside the node, in memory: node 0 aggregates, the others
//! beat to it.

use super::*;
use crate::liveness::aggregator::{self, AggregatorConfig, DecodeError};
use crate::liveness::heartbeat::{self, BeaterConfig, Failure, Heartbeat, Level};
use crate::liveness::monitor::{self, MonitorConfig};

const AGG: usize = 0;

fn monitor_config() -> MonitorConfig {
    MonitorConfig {
        check_interval: Duration::from_secs(1),
        ..MonitorConfig::default()
    }
}

/// Node 0 serves heartbeats with a 3.5 s TTL (1 s beats).
fn net(n: usize, aggregator: AggregatorConfig) -> Net {
    let mut net = Net::new(n);
    let now = net.now;
    net.nodes[AGG]
        .serve_heartbeat(now, aggregator, monitor_config())
        .unwrap();
    net
}

fn agg_config() -> AggregatorConfig {
    AggregatorConfig {
        metric_ttl: AggregatorConfig::ttl_for_period(Duration::from_millis(500)),
        ..AggregatorConfig::default()
    }
}

/// Node `i` beats to node 0 every 500 ms, heights counting from 1.
fn start_beating(net: &mut Net, i: usize) -> BeatId {
    let target = with_p2p(&tcp_addr(AGG as u8 + 1), net.peer(AGG));
    let config = BeaterConfig {
        period: Duration::from_millis(500),
        reconnect: Duration::from_secs(2),
        nickname: alloc::format!("node{i}"),
        rng_seed: i as u64,
        ..BeaterConfig::new(target)
    };
    let mut height = 0;
    let payload = Box::new(move || {
        height += 1;
        Heartbeat {
            head: alloc::format!("head-{height}"),
            height,
            ..Heartbeat::default()
        }
    });
    let now = net.now;
    net.nodes[i]
        .start_heartbeat(now, config, payload)
        .unwrap()
        .expect("a target")
}

/// Heights node 0 received from `peer`, in order.
fn heights(net: &Net, peer: PeerId) -> Vec<u64> {
    net.events[AGG]
        .iter()
        .filter_map(|e| match e {
            Event::Aggregator(aggregator::Event::Beat {
                peer: p, heartbeat, ..
            }) if *p == peer => Some(heartbeat.height),
            _ => None,
        })
        .collect()
}

fn beat_events(net: &Net, i: usize) -> Vec<heartbeat::Event> {
    net.events[i]
        .iter()
        .filter_map(|e| match e {
            Event::Heartbeat { event, .. } => Some(event.clone()),
            _ => None,
        })
        .collect()
}

fn monitor_events(net: &Net) -> Vec<monitor::Event> {
    net.events[AGG]
        .iter()
        .filter_map(|e| match e {
            Event::Monitor(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn run_for(net: &mut Net, d: Duration) {
    let end = net.now + d;
    while net.now < end {
        net.advance();
    }
}

/// No stream event of the heartbeat code reached the application.
fn no_stream_events_leak(net: &Net) {
    for (i, events) in net.events.iter().enumerate() {
        for e in events {
            assert!(
                !matches!(
                    e,
                    Event::InboundStream { .. }
                        | Event::StreamOpened { .. }
                        | Event::StreamReadable { .. }
                        | Event::StreamWritable { .. }
                        | Event::StreamClosed { .. }
                        | Event::StreamReset { .. }
                        | Event::Dialed { .. }
                ),
                "node {i} saw {e:?}"
            );
        }
    }
}

#[test]
fn beats_reach_the_aggregator_at_once_and_every_period() {
    let mut net = net(3, agg_config());
    start_beating(&mut net, 1);
    start_beating(&mut net, 2);
    let (p1, p2) = (net.peer(1), net.peer(2));
    // The first beat as soon as the stream is open: well within a period.
    net.run_until(Duration::from_millis(400), |net| {
        !heights(net, p1).is_empty() && !heights(net, p2).is_empty()
    });
    run_for(&mut net, Duration::from_secs(10));
    for p in [p1, p2] {
        let got = heights(&net, p);
        assert!((20..=22).contains(&got.len()), "{got:?}");
        assert!(got.iter().copied().eq(1..=got.len() as u64), "{got:?}");
    }
    // The nickname came from the config; the monitor holds both.
    let beat = net.events[AGG].iter().find_map(|e| match e {
        Event::Aggregator(aggregator::Event::Beat {
            peer, heartbeat, ..
        }) if *peer == p2 => Some(heartbeat.clone()),
        _ => None,
    });
    assert_eq!(beat.unwrap().nickname, "node2");
    let monitor = net.nodes[AGG].monitor().unwrap();
    let last: Vec<PeerId> = monitor
        .last_metrics("heartbeat")
        .iter()
        .map(|m| m.peer)
        .collect();
    let mut want = vec![p1, p2];
    want.sort();
    assert_eq!(last, want);
    assert!(
        monitor_events(&net).is_empty(),
        "{:?}",
        monitor_events(&net)
    );
    let events = beat_events(&net, 1);
    assert_eq!(events[0], heartbeat::Event::Connected);
    assert!(events.contains(&heartbeat::Event::BeatSent { count: 20 }));
    no_stream_events_leak(&net);
}

#[test]
fn a_beater_that_stops_raises_one_alert_and_one_recovery() {
    let mut net = net(3, agg_config());
    let beat = start_beating(&mut net, 1);
    start_beating(&mut net, 2);
    run_for(&mut net, Duration::from_secs(5));
    let stopped_at = net.now;
    net.nodes[1].stop_heartbeat(stopped_at, beat);
    // TTL 2.5 s, checks every second: one alert, then silence while it
    // stays down.
    run_for(&mut net, Duration::from_secs(30));
    let p1 = net.peer(1);
    let alerts: Vec<monitor::Event> = monitor_events(&net);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        matches!(&alerts[0], monitor::Event::Alert { peer, name, .. } if *peer == p1 && name == "heartbeat"),
        "{alerts:?}"
    );
    assert!(net.nodes[AGG]
        .monitor()
        .unwrap()
        .is_alerted("heartbeat", &p1));
    // It beats again: one recovery.
    start_beating(&mut net, 1);
    run_for(&mut net, Duration::from_secs(5));
    let events = monitor_events(&net);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        matches!(&events[1], monitor::Event::Recovered { peer, down_for, .. }
            if *peer == p1 && *down_for >= Duration::from_secs(25)),
        "{events:?}"
    );
    // Node 2 beat all along: never alerted.
    assert!(!net.nodes[AGG]
        .monitor()
        .unwrap()
        .is_alerted("heartbeat", &net.peer(2)));
    no_stream_events_leak(&net);
}

#[test]
fn a_malformed_line_resets_that_stream_and_the_connection_lives_on() {
    let mut net = net(3, agg_config());
    start_beating(&mut net, 2);
    net.connect(1, AGG);
    let now = net.now;
    let agg = net.peer(AGG);
    let stream = net.nodes[1]
        .open_stream(now, agg, [heartbeat::PROTOCOL])
        .unwrap();
    net.run_until(Duration::from_secs(1), |net| {
        net.has(1, |e| matches!(e, Event::StreamOpened { .. }))
    });
    let now = net.now;
    net.nodes[1]
        .stream_write(now, stream, b"{\"Height\":1}\n{\"Height\":true}\n")
        .unwrap();
    net.run_until(Duration::from_secs(1), |net| {
        net.has(
            1,
            |e| matches!(e, Event::StreamReset { stream: s } if *s == stream),
        )
    });
    let p1 = net.peer(1);
    assert_eq!(heights(&net, p1), vec![1]);
    assert!(net.has(AGG, |e| matches!(
        e,
        Event::Aggregator(aggregator::Event::Failed { peer, error: DecodeError::Malformed { .. } })
            if *peer == p1
    )));
    assert!(net.nodes[1].is_connected(&agg), "only the stream was reset");
    let before = heights(&net, net.peer(2)).len();
    run_for(&mut net, Duration::from_secs(2));
    assert!(heights(&net, net.peer(2)).len() >= before + 3);
}

#[test]
fn a_refused_stream_is_retried_with_backoff_on_the_same_connection() {
    let config = AggregatorConfig {
        max_streams_per_peer: 0,
        ..agg_config()
    };
    let mut net = net(2, config);
    let beat = start_beating(&mut net, 1);
    run_for(&mut net, Duration::from_secs(20));
    let events = beat_events(&net, 1);
    // Refused again and again, each time later than the last: 2 s, 4 s,
    // 8 s (+ up to half); one outage, one warning, no recovery.
    let failed: Vec<&heartbeat::Event> = events
        .iter()
        .filter(|e| matches!(e, heartbeat::Event::Failed { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert!(matches!(
        failed[0],
        heartbeat::Event::Failed {
            level: Level::Warn,
            ..
        }
    ));
    assert!(!events
        .iter()
        .any(|e| matches!(e, heartbeat::Event::Recovered { .. })));
    let outage = net.nodes[1].beater(beat).and_then(|b| b.outage_since());
    assert!(outage.is_some());
    let refused = net.events[AGG]
        .iter()
        .filter(|e| matches!(e, Event::Aggregator(aggregator::Event::Refused { .. })))
        .count();
    // Refusals at about 0, 2-3, 6-9, 14-21 s.
    assert!((3..=4).contains(&refused), "{refused}");
    // One connection all along.
    let closed = net.events[1]
        .iter()
        .filter(|e| matches!(e, Event::ConnectionClosed { .. }))
        .count();
    assert_eq!(closed, 0);
    assert!(net.nodes[1].is_connected(&net.peer(AGG)));
}

#[test]
fn a_lost_aggregator_is_redialled_and_the_outage_reported() {
    let mut net = net(2, agg_config());
    let beat = start_beating(&mut net, 1);
    run_for(&mut net, Duration::from_secs(3));
    // The aggregator drops the connection.
    let conns: Vec<ConnectionId> = net.nodes[AGG].connections_to(&net.peer(1)).collect();
    let now = net.now;
    for c in conns {
        net.nodes[AGG].close_connection(c);
    }
    net.nodes[AGG].handle_timeout(now);
    run_for(&mut net, Duration::from_secs(10));
    let events = beat_events(&net, 1);
    let failed = events
        .iter()
        .position(|e| {
            matches!(
                e,
                heartbeat::Event::Failed {
                    level: Level::Warn,
                    failure: Failure::StreamLost,
                    ..
                }
            )
        })
        .unwrap_or_else(|| panic!("{events:?}"));
    let recovered = events
        .iter()
        .position(|e| matches!(e, heartbeat::Event::Recovered { .. }))
        .unwrap_or_else(|| panic!("{events:?}"));
    assert!(recovered > failed);
    match &events[recovered] {
        heartbeat::Event::Recovered { outage } => {
            // The 2 s reconnect period plus up to half of it, until the
            // stream that then proved itself opened.
            assert!(
                *outage >= Duration::from_secs(2) && *outage <= Duration::from_millis(3100),
                "{outage:?}"
            );
        }
        e => panic!("{e:?}"),
    }
    assert!(net.nodes[1].beater(beat).unwrap().is_connected());
}

#[test]
fn an_empty_target_is_off_and_a_bad_one_is_refused() {
    let mut net = Net::new(1);
    let now = net.now;
    let off = net.nodes[0].start_heartbeat(
        now,
        BeaterConfig::new(Vec::new()),
        Box::new(Heartbeat::default),
    );
    assert_eq!(off, Ok(None));
    let us = with_p2p(&tcp_addr(1), net.peer(0));
    let err =
        net.nodes[0].start_heartbeat(now, BeaterConfig::new(us), Box::new(Heartbeat::default));
    assert_eq!(err, Err(heartbeat::BeaterConfigError::TargetIsSelf));
    assert_eq!(net.nodes[0].poll_timeout(), None, "nothing scheduled");
}
