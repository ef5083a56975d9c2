//! The Dialer driven by arbitrary requests and attempt outcomes on a
//! virtual clock: it must never panic, never exceed its limits, and answer
//! every request exactly once (checked after a long final advance).
#![no_main]

use std::collections::HashSet;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sansp2p::dial::{
    Action, Addr, AttemptId, ConnectionRef, DialOpts, Dialer, DialerConfig, Event, FailureClass,
};
use sansp2p::time::Instant;
use sansp2p::{Keypair, PeerId};

#[derive(Debug, Arbitrary)]
enum Op {
    Dial {
        peer: u8,
        addrs: Vec<(u8, u16, bool)>,
        force: bool,
    },
    Connected(u8),
    Succeed(u8),
    Fail(u8, u8),
    PeerConnected(u8),
    Cancel(u8),
    /// Results and cancels for made-up ids (stale, forged, reused slots).
    Forged(u64, u8),
    Advance(u16),
}

fn peer(n: u8) -> PeerId {
    Keypair::from_secret_bytes([n % 8 + 1; 32]).peer_id()
}

fn addr(ip: u8, port: u16, quic: bool) -> Addr {
    let p = port.to_be_bytes();
    let mut a = vec![0x04, if ip % 2 == 0 { 10 } else { 147 }, 0, 0, ip];
    if quic {
        a.extend_from_slice(&[0x91, 0x02, p[0], p[1], 0xcd, 0x03]);
    } else {
        a.extend_from_slice(&[0x06, p[0], p[1]]);
    }
    Addr::from_bytes(a).unwrap()
}

fuzz_target!(|ops: Vec<Op>| {
    let local = Keypair::from_secret_bytes([200; 32]).peer_id();
    let mut d = Dialer::new(local, DialerConfig::default()).unwrap();
    let mut now = Instant::ZERO;
    let mut running: Vec<AttemptId> = Vec::new();
    let mut pending = Vec::new();
    let mut answered = HashSet::new();
    let mut drain = |d: &mut Dialer, running: &mut Vec<AttemptId>| {
        while let Some(a) = d.poll_action() {
            match a {
                Action::Dial { attempt, .. } => running.push(attempt),
                Action::CancelAttempt { attempt } => running.retain(|x| *x != attempt),
                _ => {}
            }
        }
        while let Some(e) = d.poll_event() {
            let Event::RequestDone { request, .. } = e else {
                continue;
            };
            assert!(answered.insert(request), "a request answered twice");
        }
        assert!(running.len() <= 160 * 2, "attempts bounded");
    };
    for op in ops.into_iter().take(256) {
        let pick = |n: u8, v: &Vec<AttemptId>| (!v.is_empty()).then(|| v[n as usize % v.len()]);
        match op {
            Op::Dial {
                peer: p,
                addrs,
                force,
            } => {
                let list: Vec<Addr> = addrs
                    .into_iter()
                    .take(12)
                    .map(|(i, port, q)| addr(i, port, q))
                    .collect();
                let opts = if force {
                    DialOpts::default().force_direct()
                } else {
                    DialOpts::default()
                };
                if let Ok(r) = d.dial(now, peer(p), list, opts) {
                    pending.push(r);
                }
            }
            Op::Connected(n) => {
                if let Some(a) = pick(n, &running) {
                    let _ = d.handle_dial_connected(now, a);
                }
            }
            Op::Succeed(n) => {
                if let Some(a) = pick(n, &running) {
                    running.retain(|x| *x != a);
                    let _ = d.handle_dial_succeeded(now, a, ConnectionRef(u64::from(n)));
                }
            }
            Op::Fail(n, kind) => {
                if let Some(a) = pick(n, &running) {
                    running.retain(|x| *x != a);
                    let e = [
                        FailureClass::Refused,
                        FailureClass::Cancelled,
                        FailureClass::Timeout,
                    ][kind as usize % 3];
                    let _ = d.handle_dial_failed(now, a, e);
                }
            }
            Op::PeerConnected(p) => d.handle_peer_connected(now, peer(p), ConnectionRef(999)),
            Op::Cancel(n) => {
                if !pending.is_empty() {
                    let r = pending[n as usize % pending.len()];
                    let _ = d.cancel(now, r);
                }
            }
            Op::Forged(id, kind) => {
                let forged = AttemptId(id);
                if !running.contains(&forged) {
                    let refused = match kind % 4 {
                        0 => d.handle_dial_connected(now, forged).is_err(),
                        1 => d
                            .handle_dial_succeeded(now, forged, ConnectionRef(id))
                            .is_err(),
                        2 => d
                            .handle_dial_failed(now, forged, FailureClass::Other)
                            .is_err(),
                        _ => {
                            let r = sansp2p::dial::RequestId(id);
                            pending.contains(&r) || d.cancel(now, r).is_err()
                        }
                    };
                    assert!(refused, "a made-up id was taken for a live one");
                }
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms));
                d.handle_timeout(now);
            }
        }
        drain(&mut d, &mut running);
    }
    // Past every deadline, every request has its one answer.
    now += Duration::from_secs(3600);
    d.handle_timeout(now);
    drain(&mut d, &mut running);
    for r in &pending {
        assert!(answered.contains(r), "request {r:?} never answered");
    }
});
