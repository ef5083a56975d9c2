//! Heartbeat interop of our host (smol) with js-libp2p
//! (`conformance/js/heartbeat.mjs`, driven by
//! [`sansp2p_conformance::heartbeat_peer::HeartbeatPeer`]; the peers work
//! among themselves in `tests/heartbeat_peers.rs`):
//! 1. our beater writes to a js aggregator, which parses every line as
//!    go-filecoin's JSON; the js aggregator is killed and restarted on the
//!    same port: we report the loss, reconnect by ourselves, and say so;
//! 2. a js beater writes to our aggregator: every heartbeat arrives with
//!    its fields, becomes a metric of our monitor, and when the js beater
//!    stops, the monitor raises exactly one alert, and one recovery when it
//!    beats again.

use std::time::{Duration, Instant};

use sansp2p::liveness::aggregator::{self, AggregatorConfig};
use sansp2p::liveness::heartbeat::{self, Cid, Heartbeat, Level};
use sansp2p::liveness::monitor::{self, MonitorConfig};
use sansp2p::node::Event;
use sansp2p_conformance::heartbeat_peer::HeartbeatPeer;
use sansp2p_conformance::smol_host::Ours;
use sansp2p_smol::Multiaddr;
use serde_json::json;

const PERIOD: Duration = Duration::from_millis(200);

fn our_beat(height: u64) -> Heartbeat {
    Heartbeat {
        head: format!("bafy-ours-{height}"),
        height,
        nickname: String::new(),
        miner_address: "t01001".into(),
        genesis_cid: Some(Cid("bafy-genesis".into())),
        extra: serde_json::Map::new(),
    }
}

fn beater_events(ours: &Ours) -> Vec<heartbeat::Event> {
    ours.log.all(|e| match e {
        Event::Heartbeat { event, .. } => Some(event.clone()),
        _ => None,
    })
}

#[test]
fn our_beater_writes_go_filecoin_lines_to_js_and_survives_its_restart() {
    let seed = 110;
    let aggregator = HeartbeatPeer::spawn(seed + 1, 0);
    let ours = Ours::start(seed);
    let us = ours.peer.to_string();
    let target: Multiaddr = aggregator.addr.parse().expect("valid");
    let mut height = 0;
    ours.host
        .start_heartbeat(
            &target,
            |c| {
                c.period = PERIOD;
                c.reconnect = Duration::from_millis(500);
                c.nickname = "sansp2p".into();
            },
            move || {
                height += 1;
                our_beat(height)
            },
        )
        .expect("a valid target");

    // js parses what we write as go-filecoin's heartbeat, every field.
    let beats = aggregator.wait_beats_from(&us, 5);
    for (i, beat) in beats.iter().enumerate() {
        let h = i as u64 + 1;
        assert_eq!(
            *beat,
            json!({
                "Head": format!("bafy-ours-{h}"),
                "Height": h,
                "Nickname": "sansp2p",
                "MinerAddress": "t01001",
                "GenesisCID": { "/": "bafy-genesis" },
            }),
            "{beats:?}"
        );
    }
    assert!(beater_events(&ours).contains(&heartbeat::Event::Connected));

    // Kill it; start it again on the same port.
    let port = aggregator.port();
    let addr = aggregator.addr.clone();
    drop(aggregator);
    ours.log.wait("our warning", |e| match e {
        Event::Heartbeat {
            event: heartbeat::Event::Failed {
                level: Level::Warn, ..
            },
            ..
        } => Some(()),
        _ => None,
    });
    let restarted = HeartbeatPeer::spawn(seed + 1, port);
    assert_eq!(restarted.addr, addr);
    let started = Instant::now();
    let again = restarted.wait_beats_from(&us, 3);
    let heights: Vec<u64> = again
        .iter()
        .map(|b| b["Height"].as_u64().unwrap())
        .collect();
    assert!(
        heights.windows(2).all(|w| w[1] == w[0] + 1) && heights[0] > 5,
        "{heights:?}"
    );
    eprintln!(
        "beating to the restarted js aggregator {:?} after it started",
        started.elapsed()
    );
    // And we say the outage ended, with how long it was.
    let outage = ours.log.wait("our recovery", |e| match e {
        Event::Heartbeat {
            event: heartbeat::Event::Recovered { outage },
            ..
        } => Some(*outage),
        _ => None,
    });
    assert!(
        outage > Duration::ZERO && outage < Duration::from_secs(15),
        "{outage:?}"
    );
    let events = beater_events(&ours);
    let warnings = events.iter().filter(|e| e.level() == Level::Warn).count();
    assert_eq!(warnings, 1, "one warning per outage: {events:?}");
}

#[test]
fn a_js_beater_feeds_our_monitor_which_alerts_once_and_recovers_once() {
    let seed = 120;
    let ours = Ours::start_with(seed, |host| {
        let config = AggregatorConfig {
            metric_ttl: AggregatorConfig::ttl_for_period(PERIOD),
            ..AggregatorConfig::default()
        };
        let mut monitor = MonitorConfig::default();
        monitor.check_interval = Duration::from_millis(200);
        host.serve_heartbeat(config, monitor).expect("valid");
    });
    let mut beater = HeartbeatPeer::spawn(seed + 1, 0);
    let js = beater.id();
    let our_addr = ours.addr.to_string();
    beater.beat(&our_addr, PERIOD.as_millis() as u64, "js-beater");

    let beat_of = |e: &Event| match e {
        Event::Aggregator(aggregator::Event::Beat {
            peer, heartbeat, ..
        }) if *peer == js => Some(heartbeat.clone()),
        _ => None,
    };
    let fifth = ours.log.wait_nth("five heartbeats", 4, beat_of);
    assert_eq!(fifth.height, 5);
    assert_eq!(fifth.head, "bafy-js-head-5");
    assert_eq!(fifth.nickname, "js-beater");
    assert_eq!(fifth.miner_address, "t01000");
    assert_eq!(fifth.genesis_cid, Some(Cid("bafy-genesis".into())));
    let last = ours.host.last_metrics("heartbeat");
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0].peer, js);
    assert!(
        last[0].value.contains("\"Nickname\":\"js-beater\""),
        "{last:?}"
    );

    // It stops: one alert, however long it stays quiet.
    beater.ok("stop");
    let alert_of = |e: &Event| match e {
        Event::Monitor(monitor::Event::Alert { peer, name, .. }) if *peer == js => {
            Some(name.clone())
        }
        _ => None,
    };
    assert_eq!(ours.log.wait("the alert", alert_of), "heartbeat");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ours.log.all(alert_of).len(), 1, "one alert per outage");
    assert_eq!(ours.host.alerted(), vec![(js, "heartbeat".to_owned())]);

    // It beats again: one recovery.
    beater.beat(&our_addr, PERIOD.as_millis() as u64, "js-beater");
    let down_for = ours.log.wait("the recovery", |e| match e {
        Event::Monitor(monitor::Event::Recovered { peer, down_for, .. }) if *peer == js => {
            Some(*down_for)
        }
        _ => None,
    });
    assert!(down_for >= Duration::from_secs(2), "{down_for:?}");
    assert!(ours.host.alerted().is_empty());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(ours.log.all(alert_of).len(), 1);
    let failed = ours.log.all(|e| match e {
        Event::Aggregator(aggregator::Event::Failed { .. } | aggregator::Event::Refused { .. }) => {
            Some(format!("{e:?}"))
        }
        _ => None,
    });
    assert!(failed.is_empty(), "{failed:?}");
}
