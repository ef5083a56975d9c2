//! Peer maintenance against real peers: our node (the smol host) has a
//! js-libp2p peer (`conformance/js/relay.mjs`) and a rust-libp2p peer (the
//! `rust_relay_peer` binary) as static peers, and keeps them connected
//! across their restarts, by itself: the test never dials.
//!
//! 1. Both are dialed once maintenance starts; each side sees the
//!    connection (our events and `peer_counts`, the peer's
//!    `connection:open` and `connections`).
//! 2. The rust peer is killed: we see its connection close. It starts again
//!    on its old port with its old identity, and we reconnect within
//!    [`RECONNECT_BOUND`] of its start; the js peer's connection is never
//!    touched meanwhile.
//! 3. The same with the js peer.
//! 4. Both are killed at once and started again: both are reconnected.
//!
//! What decides how soon we reconnect: the scheduler redials a static peer
//! once it is disconnected and out of the dial history (`history_expiration`
//! after our last dial of it, [`HISTORY`] here), and the dialer does not
//! dial an address again within its backoff after a failure (5 s after the
//! first, go-libp2p's `BackoffBase`, [`BACKOFF_BASE`]). A peer dialed more
//! than [`HISTORY`] before its kill is redialled at once and refused, so we
//! reconnect about one backoff after the kill (the history ticks in between
//! fail on the backoff without a dial); one dialed less than that before
//! is redialled when its history ends, and the restarted peer (rust starts
//! within milliseconds) may already be back. The times measured are
//! printed.

use std::thread::sleep;
use std::time::{Duration, Instant};

use sansp2p::dial::scheduler::SchedulerConfig;
use sansp2p::node::{CloseReason, ConnectionId, Endpoint, Event, MaintainConfig};
use sansp2p::PeerId;
use sansp2p_conformance::peer_process::TIMEOUT;
use sansp2p_conformance::relay_peer::{Impl, RelayPeer};
use sansp2p_conformance::smol_host::{within, Ours};
use sansp2p_smol::Multiaddr;

/// Our identity; the peers' are the next seeds.
const SEED: u8 = 130;
/// The scheduler's dial history: a peer it dialed is not dialed again for
/// this long. go-ethereum's default, which ours keeps, is 35 s; 2 s keeps
/// this test short (the history is what spaces the redials of a peer that
/// is down).
const HISTORY: Duration = Duration::from_secs(2);
/// The dialer's backoff of an address after its first failed dial (the
/// default `BackoffConfig::base`, which the test keeps).
const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest time from a restarted peer's `ready` to our connection to it:
/// the backoff of our failed redial plus one history tick, and 3 s slack.
const RECONNECT_BOUND: Duration =
    Duration::from_secs(BACKOFF_BASE.as_secs() + HISTORY.as_secs() + 3);
/// How often the test looks at our event log while it times events.
const POLL: Duration = Duration::from_millis(10);

/// The TCP port of `/ip4/127.0.0.1/tcp/PORT/p2p/ID`.
fn port_of(addr: &str) -> u16 {
    let rest = addr.split("/tcp/").nth(1).expect("a TCP address");
    rest.split('/').next().unwrap().parse().expect("a port")
}

/// One static peer: its process while it runs, and what stays the same
/// across its restarts (implementation, identity, port).
struct StaticPeer {
    imp: Impl,
    seed: u8,
    id: PeerId,
    port: u16,
    /// Its listen address, `/ip4/127.0.0.1/tcp/PORT/p2p/ID`.
    addr: String,
    process: Option<RelayPeer>,
}

impl StaticPeer {
    /// Starts the peer on a free port, which it keeps from then on.
    fn start(imp: Impl, seed: u8) -> StaticPeer {
        // RelayPeer::spawn checks that it runs the identity of `seed`.
        let process = RelayPeer::client(imp, seed);
        StaticPeer {
            imp,
            seed,
            id: process.id(),
            port: port_of(&process.addr),
            addr: process.addr.clone(),
            process: Some(process),
        }
    }

    fn name(&self) -> &'static str {
        self.imp.name()
    }

    /// The address we are given for it: TCP on loopback, no `/p2p`.
    fn static_addr(&self) -> Vec<u8> {
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", self.port)
            .parse()
            .expect("valid");
        addr.to_vec()
    }

    /// The running process.
    fn process(&mut self) -> &mut RelayPeer {
        self.process.as_mut().expect("the peer runs")
    }

    /// Kills the process (and waits for it to exit).
    fn kill(&mut self) {
        drop(self.process.take().expect("the peer runs"));
    }

    /// Starts it again: the same identity, on the same port.
    fn restart(&mut self) {
        assert!(self.process.is_none(), "the {} peer runs", self.name());
        let flags = ["--port".to_owned(), self.port.to_string()];
        let process = RelayPeer::spawn(self.imp, self.seed, &flags);
        assert_eq!(process.addr, self.addr, "restarted elsewhere");
        self.process = Some(process);
    }

    /// The peer's side: our connection opened, inbound, and it is the
    /// one it has with us.
    fn check_sees_us(&mut self, us: &str) {
        let name = self.name();
        let process = self.process();
        let open = process.wait_event(&format!("the {name} peer to see our connection"), |e| {
            e["event"] == "connection:open" && e["peer"] == us
        });
        assert_eq!(open["direction"], "inbound", "{name}: {open}");
        assert_eq!(open["encryption"], "/noise", "{name}: {open}");
        assert_eq!(open["multiplexer"], "/yamux/1.0.0", "{name}: {open}");
        let conns = process.connections(us);
        assert_eq!(conns.len(), 1, "{name}: {conns:?}");
        assert_eq!(conns[0]["id"], open["id"], "{name}: {conns:?}");
        let closed = process
            .process
            .events()
            .into_iter()
            .filter(|e| e["event"] == "connection:close" && e["peer"] == us)
            .count();
        assert_eq!(closed, 0, "{name}: a connection with us closed");
    }
}

/// Peer maintenance with `peers` as its static peers.
fn maintain_config(peers: &[&StaticPeer]) -> MaintainConfig {
    let mut scheduler = SchedulerConfig::default();
    // Short, to keep the test short: see HISTORY.
    scheduler.history_expiration = HISTORY;
    // No discovery here to look a static peer up in: the peers are
    // redialled by the history alone. (With lookups on, the first failed
    // redial of a peer that is down waits for the application to answer
    // Event::ResolveWanted, or for the scheduler's resolve_timeout.)
    scheduler.resolve_static = false;
    let mut config = MaintainConfig::default();
    config.scheduler = scheduler;
    config.static_peers = peers
        .iter()
        .map(|p| (p.id, vec![p.static_addr()]))
        .collect();
    config
}

/// The connections we dialed to `peer` so far, in order.
fn dialed(ours: &Ours, peer: PeerId) -> Vec<ConnectionId> {
    ours.log.all(|e| match e {
        Event::ConnectionEstablished {
            conn,
            peer: p,
            endpoint: Endpoint::Dialer,
            ..
        } if *p == peer => Some(*conn),
        _ => None,
    })
}

/// Every connection with `peer` so far, either way.
fn established(ours: &Ours, peer: PeerId) -> usize {
    ours.log
        .all(|e| match e {
            Event::ConnectionEstablished { peer: p, .. } if *p == peer => Some(()),
            _ => None,
        })
        .len()
}

/// The connections with `peer` that closed so far, in order, and why.
fn closed(ours: &Ours, peer: PeerId) -> Vec<(ConnectionId, CloseReason)> {
    ours.log.all(|e| match e {
        Event::ConnectionClosed {
            conn,
            peer: Some(p),
            reason,
        } if *p == peer => Some((*conn, reason.clone())),
        _ => None,
    })
}

/// Our dials of `peer` that failed so far.
fn failed_dials(ours: &Ours, peer: PeerId) -> usize {
    ours.log
        .all(|e| match e {
            Event::DialFailed { peer: Some(p), .. } if *p == peer => Some(()),
            _ => None,
        })
        .len()
}

/// For each `(peer, seen)`, when `count(peer)` first went past `seen`,
/// looked at every [`POLL`]; panics if one has not within [`TIMEOUT`].
fn arrivals(
    ours: &Ours,
    what: &str,
    wanted: &[(&StaticPeer, usize)],
    count: impl Fn(PeerId) -> usize,
) -> Vec<Instant> {
    let deadline = Instant::now() + TIMEOUT;
    let mut at: Vec<Option<Instant>> = vec![None; wanted.len()];
    loop {
        for (slot, (peer, seen)) in at.iter_mut().zip(wanted) {
            if slot.is_none() && count(peer.id) > *seen {
                *slot = Some(Instant::now());
            }
        }
        if at.iter().all(Option::is_some) {
            return at.into_iter().flatten().collect();
        }
        if Instant::now() >= deadline {
            let missing: Vec<&str> = at
                .iter()
                .zip(wanted)
                .filter(|(slot, _)| slot.is_none())
                .map(|(_, (p, _))| p.name())
                .collect();
            let last: Vec<String> = ours
                .log
                .all(|e| Some(format!("{e:?}")))
                .into_iter()
                .rev()
                .take(20)
                .collect();
            panic!(
                "timed out ({TIMEOUT:?}) waiting for {what} of {missing:?}; our last events, \
                 newest first:\n{}",
                last.join("\n")
            );
        }
        sleep(POLL);
    }
}

/// What one restart of a peer took.
#[derive(Debug)]
struct Restart {
    phase: &'static str,
    peer: &'static str,
    /// From the kill to our ConnectionClosed.
    closed: Duration,
    /// Why we saw it close.
    reason: CloseReason,
    /// From the peer's `ready` (on its old port) to our new connection.
    from_ready: Duration,
    /// From the kill to our new connection.
    from_kill: Duration,
    /// Our dials of it that failed meanwhile.
    failed_dials: usize,
}

/// Kills `peers` at once, checks that we see them go, starts them again
/// and checks that we reconnect, within [`RECONNECT_BOUND`] of each start,
/// and that each of them sees us again. Peers not in `peers` keep their
/// connection.
fn restart(
    ours: &Ours,
    phase: &'static str,
    peers: &mut [&mut StaticPeer],
    untouched: &[&StaticPeer],
) -> Vec<Restart> {
    let us = ours.peer.to_string();
    let kept: Vec<(Vec<ConnectionId>, usize)> = untouched
        .iter()
        .map(|p| {
            let conns = ours
                .host
                .connections(&p.id)
                .iter()
                .map(|c| c.conn)
                .collect();
            (conns, closed(ours, p.id).len())
        })
        .collect();
    let before: Vec<(usize, usize, usize)> = peers
        .iter()
        .map(|p| {
            assert_eq!(
                ours.host.connections(&p.id).len(),
                1,
                "{phase}: {}",
                p.name()
            );
            (
                closed(ours, p.id).len(),
                dialed(ours, p.id).len(),
                failed_dials(ours, p.id),
            )
        })
        .collect();
    let open: Vec<ConnectionId> = peers
        .iter()
        .map(|p| ours.host.connections(&p.id)[0].conn)
        .collect();

    // Down: each connection closes on our side.
    let mut killed = Vec::new();
    for p in peers.iter_mut() {
        p.kill();
        killed.push(Instant::now());
    }
    let wanted: Vec<(&StaticPeer, usize)> = peers
        .iter()
        .zip(&before)
        .map(|(p, b)| (&**p, b.0))
        .collect();
    let closed_at = arrivals(ours, "the connection to close", &wanted, |id| {
        closed(ours, id).len()
    });
    let mut reasons = Vec::new();
    for ((p, b), conn) in peers.iter().zip(&before).zip(&open) {
        let (c, reason) = closed(ours, p.id)[b.0].clone();
        assert_eq!(c, *conn, "{phase}: {}", p.name());
        assert!(
            matches!(reason, CloseReason::Eof | CloseReason::Transport),
            "{phase}: the {} peer's connection closed with {reason:?}",
            p.name()
        );
        reasons.push(reason);
    }
    let up = 2 - peers.len();
    assert_eq!(ours.host.peer_counts(), Some((up, up)), "{phase}");

    // Up again on the same port, with the same identity: reconnected by
    // ourselves.
    let mut ready = Vec::new();
    for p in peers.iter_mut() {
        p.restart();
        ready.push(Instant::now());
    }
    let wanted: Vec<(&StaticPeer, usize)> = peers
        .iter()
        .zip(&before)
        .map(|(p, b)| (&**p, b.1))
        .collect();
    let connected_at = arrivals(ours, "our new connection", &wanted, |id| {
        dialed(ours, id).len()
    });
    let mut report = Vec::new();
    for (i, p) in peers.iter_mut().enumerate() {
        p.check_sees_us(&us);
        let from_ready = connected_at[i].saturating_duration_since(ready[i]);
        let restart = Restart {
            phase,
            peer: p.name(),
            closed: closed_at[i] - killed[i],
            reason: reasons[i].clone(),
            from_ready,
            from_kill: connected_at[i] - killed[i],
            failed_dials: failed_dials(ours, p.id) - before[i].2,
        };
        eprintln!("{restart:?}");
        assert!(
            from_ready <= RECONNECT_BOUND,
            "{phase}: the {} peer was reconnected {from_ready:?} after its start, more than \
             {RECONNECT_BOUND:?}",
            p.name()
        );
        let conns = ours.host.connections(&p.id);
        assert_eq!(conns.len(), 1, "{phase}: {conns:?}");
        assert_eq!(Some(conns[0].conn), dialed(ours, p.id).last().copied());
        report.push(restart);
    }
    assert_eq!(ours.host.peer_counts(), Some((2, 2)), "{phase}");

    // The others were left alone.
    for (p, (conns, closes)) in untouched.iter().zip(kept) {
        let now: Vec<ConnectionId> = ours
            .host
            .connections(&p.id)
            .iter()
            .map(|c| c.conn)
            .collect();
        assert_eq!(
            now,
            conns,
            "{phase}: the {} peer's connection changed",
            p.name()
        );
        assert_eq!(closed(ours, p.id).len(), closes, "{phase}: {}", p.name());
    }
    report
}

#[test]
fn static_js_and_rust_peers_are_kept_connected_across_their_restarts() {
    let started = Instant::now();
    let mut js = StaticPeer::start(Impl::Js, SEED + 1);
    let mut rust = StaticPeer::start(Impl::Rust, SEED + 2);
    let ours = Ours::start(SEED);
    let us = ours.peer.to_string();
    eprintln!(
        "js peer {} at {}, rust peer {} at {}",
        js.id, js.addr, rust.id, rust.addr
    );

    // 1. Both dialed as soon as maintenance starts.
    let enabled = Instant::now();
    ours.host
        .enable_peer_maintenance(maintain_config(&[&js, &rust]))
        .expect("a valid config");
    let first = arrivals(
        &ours,
        "the first connection",
        &[(&js, 0), (&rust, 0)],
        |id| dialed(&ours, id).len(),
    );
    for (p, at) in [&js, &rust].iter().zip(&first) {
        eprintln!(
            "{} peer connected {:?} after maintenance started",
            p.name(),
            *at - enabled
        );
    }
    js.check_sees_us(&us);
    rust.check_sees_us(&us);
    assert_eq!(ours.host.peer_counts(), Some((2, 2)));
    for p in [&js, &rust] {
        assert_eq!(ours.host.connections(&p.id).len(), 1, "{}", p.name());
    }

    // 2.-4. Restarts: the rust peer, the js peer, both at once.
    let mut report = restart(&ours, "rust restarts", &mut [&mut rust], &[&js]);
    report.extend(restart(&ours, "js restarts", &mut [&mut js], &[&rust]));
    report.extend(restart(
        &ours,
        "both restart",
        &mut [&mut js, &mut rust],
        &[],
    ));

    // Every connection was ours, dialed by maintenance (the test never
    // dials), and the peers were never looked up.
    // Each peer restarted twice: three connections, two closed.
    for p in [&js, &rust] {
        assert_eq!(dialed(&ours, p.id).len(), 3, "{}", p.name());
        assert_eq!(established(&ours, p.id), 3, "{}: inbound ones", p.name());
        assert_eq!(closed(&ours, p.id).len(), 2, "{}", p.name());
    }
    let lookups = ours
        .log
        .all(|e| matches!(e, Event::ResolveWanted { .. }).then_some(()));
    assert!(lookups.is_empty(), "{} resolve requests", lookups.len());

    eprintln!("reconnected (bound {RECONNECT_BOUND:?} from the peer's start):");
    for r in &report {
        eprintln!(
            "  {:<13} {:<4}: closed after {:>4} ms ({}), reconnected {:>5} ms after its start, \
             {:>5} ms after the kill, {} failed dials meanwhile",
            r.phase,
            r.peer,
            r.closed.as_millis(),
            r.reason,
            r.from_ready.as_millis(),
            r.from_kill.as_millis(),
            r.failed_dials
        );
    }
    within("our shutdown", ours.host.shutdown());
    eprintln!("the test took {:?}", started.elapsed());
}
