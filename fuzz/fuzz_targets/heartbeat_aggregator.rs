//! The heartbeat aggregator (`liveness::aggregator`) on arbitrary streams.
//!
//! The input is a script: each step opens a stream for one of four peers,
//! feeds bytes to one (often lines of JSON, heartbeats among them, cut
//! anywhere), or closes one. Checked:
//!
//! - never a panic; every bound holds after every step: streams at most
//!   `max_streams`, per peer at most `max_streams_per_peer`, bytes held at
//!   most `max_line` per stream;
//! - a decode error forgets its stream (later bytes: `UnknownStream`), and
//!   is reported as an event;
//! - every heartbeat decoded, written again with `encode_line` and read
//!   again, is the same heartbeat (what we accept, we can say).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use sansp2p::liveness::aggregator::{Aggregator, AggregatorConfig, DecodeError, Event};
use sansp2p::liveness::heartbeat::{encode_line, Heartbeat};
use sansp2p::time::Instant;
use sansp2p::{Keypair, PeerId};

#[derive(Debug, Arbitrary)]
enum Step {
    Open {
        key: u8,
        peer: u8,
    },
    Bytes {
        key: u8,
        data: Vec<u8>,
    },
    /// A plausible heartbeat line, so that decoding succeeds often.
    Line {
        key: u8,
        height: u64,
        head: String,
        extra: Option<(String, i64)>,
    },
    Close {
        key: u8,
    },
}

fn peers() -> Vec<PeerId> {
    (1..=4u8)
        .map(|n| Keypair::from_secret_bytes([n; 32]).public().to_peer_id())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let config = AggregatorConfig {
        max_line: 256,
        max_streams_per_peer: 2,
        max_streams: 5,
        ..AggregatorConfig::default()
    };
    let mut agg: Aggregator<u8> = Aggregator::new(config.clone());
    let peers = peers();
    let mut owner = std::collections::BTreeMap::new();
    while !u.is_empty() {
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        match step {
            Step::Open { key, peer } => {
                let p = peers[usize::from(peer) % peers.len()];
                if agg.handle_stream_opened(key, p).is_ok() {
                    owner.insert(key, p);
                }
            }
            Step::Bytes { key, data } => feed(&mut agg, &mut owner, key, &data),
            Step::Line {
                key,
                height,
                head,
                extra,
            } => {
                let mut hb = Heartbeat {
                    head,
                    height,
                    ..Heartbeat::default()
                };
                if let Some((k, v)) = extra {
                    hb.extra.insert(k, v.into());
                }
                feed(&mut agg, &mut owner, key, &encode_line(&hb));
            }
            Step::Close { key } => {
                agg.handle_stream_closed(key);
                owner.remove(&key);
            }
        }
        assert!(agg.streams() <= config.max_streams);
        assert_eq!(agg.streams(), owner.len());
        for p in &peers {
            assert!(agg.streams_of(p) <= config.max_streams_per_peer);
        }
        assert!(agg.buffered() <= agg.streams() * config.max_line);
        while let Some(event) = agg.poll_event() {
            if let Event::Beat { heartbeat, .. } = event {
                let line = encode_line(&heartbeat);
                let again: Heartbeat =
                    serde_json::from_slice(&line).expect("our own line reads back");
                assert_eq!(again, heartbeat);
            }
        }
    }
});

fn feed(
    agg: &mut Aggregator<u8>,
    owner: &mut std::collections::BTreeMap<u8, PeerId>,
    key: u8,
    data: &[u8],
) {
    let now = Instant::from_nanos(0);
    match agg.handle_bytes(now, key, data) {
        Ok(()) => assert!(owner.contains_key(&key)),
        Err(DecodeError::UnknownStream) => assert!(!owner.contains_key(&key)),
        Err(_) => {
            assert!(owner.remove(&key).is_some());
            assert_eq!(
                agg.handle_bytes(now, key, b"{}\n"),
                Err(DecodeError::UnknownStream)
            );
            // The failure was reported.
            let mut failed = false;
            let mut rest = Vec::new();
            while let Some(e) = agg.poll_event() {
                failed |= matches!(e, Event::Failed { .. });
                rest.push(e);
            }
            assert!(failed);
            for e in rest {
                if let Event::Beat { heartbeat, .. } = e {
                    let again: Heartbeat =
                        serde_json::from_slice(&encode_line(&heartbeat)).expect("reads back");
                    assert_eq!(again, heartbeat);
                }
            }
        }
    }
}
