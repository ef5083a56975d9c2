//! The js-libp2p heartbeat peer (`conformance/js/heartbeat.mjs`, driven by
//! `sansp2p_conformance::heartbeat_peer::HeartbeatPeer`) among its own
//! kind: a js beater beats to a js aggregator over go-filecoin's
//! `fil/heartbeat/1.0.0`, and keeps beating, on a new connection, to the
//! aggregator restarted on the same port with the same identity. This shows
//! both roles of the peer work before our own beater and aggregator are
//! tested against them.
//!
//! The peer's protocol is described at the top of `heartbeat.mjs`; it is
//! installed by the first test that needs it (`npm ci`, see
//! `sansp2p_conformance::peer_process::node_binary`).

use std::time::{Duration, Instant};

use sansp2p_conformance::heartbeat_peer::HeartbeatPeer;
use serde_json::{json, Value};

const AGGREGATOR_SEED: u8 = 70;
const BEATER_SEED: u8 = 71;
const PERIOD_MS: u64 = 200;
const NICKNAME: &str = "beater-71";

/// The heartbeat the js beater sends with `height`.
fn expected_beat(height: u64) -> Value {
    json!({
        "Head": format!("bafy-js-head-{height}"),
        "Height": height,
        "Nickname": NICKNAME,
        "MinerAddress": "t01000",
        "GenesisCID": { "/": "bafy-genesis" },
    })
}

/// `beats` are the js beater's heartbeats with consecutive heights from
/// `first`, every field as sent.
fn check_beats(beats: &[Value], first: u64, at: &HeartbeatPeer) {
    for (i, beat) in beats.iter().enumerate() {
        assert_eq!(
            *beat,
            expected_beat(first + i as u64),
            "heartbeat {i} of {beats:?}\n{}",
            at.diagnostics()
        );
    }
}

/// The index of the first event from `from` on that is `name` to `target`.
fn position(events: &[Value], from: usize, name: &str, target: &str) -> Option<usize> {
    events
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, e)| e["event"] == name && e["target"] == target)
        .map(|(i, _)| i)
}

#[test]
fn js_beater_beats_to_js_aggregator_across_a_restart() {
    let aggregator = HeartbeatPeer::spawn(AGGREGATOR_SEED, 0);
    let mut beater = HeartbeatPeer::spawn(BEATER_SEED, 0);
    let (agg_peer, agg_addr, agg_port) = (
        aggregator.peer.clone(),
        aggregator.addr.clone(),
        aggregator.port(),
    );

    // Five heartbeats, Height 1 to 5, no sooner than the period allows.
    let started = Instant::now();
    let target = beater.beat(&agg_addr, PERIOD_MS, NICKNAME);
    assert_eq!(target, agg_peer);
    beater.wait_event("the first heartbeat stream", |e| {
        e["event"] == "beat:connected" && e["target"] == agg_peer.as_str()
    });
    let beats = aggregator.wait_beats_from(&beater.peer, 5);
    // setTimeout may fire a millisecond early.
    let four_periods = Duration::from_millis(4 * PERIOD_MS - 20);
    assert!(
        started.elapsed() >= four_periods,
        "5 heartbeats within {:?}",
        started.elapsed()
    );
    check_beats(&beats, 1, &aggregator);
    // The beater reported each one sent, counted by its height.
    for beat in &beats {
        let sent = beater.wait_event("beat:sent", |e| {
            e["event"] == "beat:sent" && e["beat"] == *beat
        });
        assert_eq!(sent["count"], beat["Height"], "{sent}");
        assert_eq!(sent["target"], agg_peer.as_str(), "{sent}");
    }
    // All on one stream, nothing failed.
    let agg_events = aggregator.events();
    let streams: Vec<&Value> = agg_events
        .iter()
        .filter(|e| e["event"] == "beat")
        .map(|e| &e["stream"])
        .collect();
    assert!(streams.iter().all(|s| **s == json!(1)), "{streams:?}");
    assert_eq!(
        position(&beater.events(), 0, "beat:failed", &agg_peer),
        None
    );

    // Kill the aggregator: the beater notices, and retries.
    let last_before = aggregator.beats_from(&beater.peer).len() as u64;
    let mark = beater.events().len();
    drop(aggregator);
    let failed = beater.wait_event_since(mark, "beat:failed after the kill", |e| {
        e["event"] == "beat:failed" && e["target"] == agg_peer.as_str()
    });
    assert!(failed["error"].is_string(), "{failed}");

    // Restarted on its port with its identity, it is the same address.
    let aggregator = HeartbeatPeer::spawn(AGGREGATOR_SEED, agg_port);
    assert_eq!(aggregator.addr, agg_addr);
    beater.wait_event_since(mark, "beat:connected after the restart", |e| {
        e["event"] == "beat:connected" && e["target"] == agg_peer.as_str()
    });
    let beats = aggregator.wait_beats_from(&beater.peer, 3);
    // Heights go on from the last one sent before (a heartbeat written as
    // the old aggregator died may be lost, but none is sent twice).
    let first = beats[0]["Height"].as_u64().expect("a height");
    assert!(
        first > last_before,
        "height {first} after {last_before}\n{}",
        aggregator.diagnostics()
    );
    check_beats(&beats, first, &aggregator);
    let events = beater.events();
    let failed_at = position(&events, mark, "beat:failed", &agg_peer).expect("beat:failed");
    let connected_at =
        position(&events, mark, "beat:connected", &agg_peer).expect("beat:connected");
    assert!(
        failed_at < connected_at,
        "connected again before failing\n{}",
        beater.diagnostics()
    );

    // `stop` closes the stream; the aggregator sees it end.
    let r = beater.ok("stop");
    let stopped = &r["stopped"][0];
    assert_eq!(stopped["target"], agg_peer.as_str(), "{r}");
    assert!(
        stopped["count"]
            .as_u64()
            .is_some_and(|n| n >= first + beats.len() as u64 - 1),
        "{r}"
    );
    let closed = aggregator.wait_event("the heartbeat stream to end", |e| {
        e["event"] == "beat:closed" && e["peer"] == beater.peer.as_str()
    });
    assert_eq!(closed["stream"], 1, "{closed}");
    assert!(
        !aggregator
            .events()
            .iter()
            .any(|e| e["event"] == "beat:error"),
        "{}",
        aggregator.diagnostics()
    );
}
