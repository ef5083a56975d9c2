#![allow(missing_docs)]
//! Cost of the dialing machines.
//!
//! Run with `cargo bench -p sansp2p --bench dial`. Prints:
//!
//! 1. ranking 20 addresses with the default ranker (ns per call);
//! 2. `N` peers x 10 addresses (N = 1 000, 10 000, 100 000) through the
//!    `Dialer` (workers + limiter + backoff + black-hole filter) on a
//!    virtual clock, against a simulated network with fixed odds: machine
//!    events (inputs + outputs) per second and ns per event (time inside the
//!    dialer's calls only), which should stay flat as N grows; and the
//!    resident memory per pending peer;
//! 3. resident memory per backoff entry;
//! 4. `RATIO` lines: ns per event at 10 000 and 100 000 peers over 1 000
//!    peers, from the same run.
//!
//! Two workloads: `steady` (peers arrive at 1 000/s, the flow the dialer
//! is built for; the state in flight is the same at every N) and `burst`
//! (all N peers asked at time zero: at 100 000 peers that is ~110 000
//! pending requests and ~180 MB of live state, so besides saturating the fd
//! limiter every event reaches into main memory; expect it to grow with N
//! even though no operation scans peers).
//!
//! Every measurement runs in a fresh child process so one run's heap does
//! not shape the next one's. Memory is the growth of the process's resident
//! set (`/proc/self/statm`, Linux); the addresses themselves are allocated
//! (and their shared `Bytes` headers made) before the measurement.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hint::black_box;
use std::time::{Duration, Instant as WallClock};

use sansp2p::dial::{
    rank, Action, Addr, Backoff, BackoffConfig, ConnectionRef, DialOpts, Dialer, DialerConfig,
    Event, FailureClass, RankerConfig,
};
use sansp2p::time::Instant;
use sansp2p::PeerId;

fn addr(text: &str) -> Addr {
    let ma: multiaddr::Multiaddr = text.parse().expect(text);
    Addr::try_from(&ma).expect(text)
}

fn peer(n: u64) -> PeerId {
    let mut mh = [0u8; 10];
    mh[1] = 8;
    mh[2..].copy_from_slice(&n.to_be_bytes());
    PeerId::from_bytes(&mh).unwrap()
}

/// Ten addresses of peer `n`: QUIC, WebTransport, TCP, WebSocket over IPv4
/// and IPv6, public and private, one relay, one WebRTC direct.
fn peer_addrs(n: u64) -> Vec<Addr> {
    let (a, b, c) = ((n >> 16) as u8, (n >> 8) as u8, n as u8);
    let v4 = format!("{}.{a}.{b}.{c}", 20 + (n % 200));
    let v6 = format!("2604:1380:{a:x}{b:02x}::{c:x}");
    vec![
        addr(&format!("/ip6/{v6}/udp/4001/quic-v1")),
        addr(&format!("/ip4/{v4}/udp/4001/quic-v1")),
        addr(&format!("/ip4/{v4}/udp/4002/quic-v1/webtransport")),
        addr(&format!("/ip6/{v6}/tcp/4001")),
        addr(&format!("/ip4/{v4}/tcp/4001")),
        addr(&format!("/ip4/{v4}/tcp/4003/ws")),
        addr(&format!("/ip4/192.168.{b}.{c}/tcp/4001")),
        addr(&format!("/ip4/10.{a}.{b}.{c}/udp/4001/quic-v1")),
        addr(&format!("/ip4/{v4}/udp/4005/webrtc-direct")),
        addr(&format!(
            "/ip4/147.75.1.1/tcp/4001/p2p/{}/p2p-circuit",
            peer(1 << 40)
        )),
    ]
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// xorshift64*: the simulated network's dice.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Handshake,
    Success,
    Fail,
}

fn bench_rank() {
    let addrs: Vec<Addr> = peer_addrs(7).into_iter().chain(peer_addrs(8)).collect();
    assert_eq!(addrs.len(), 20);
    let config = RankerConfig::default();
    let iters = 200_000;
    let start = WallClock::now();
    for _ in 0..iters {
        black_box(rank(black_box(addrs.clone()), &config));
    }
    let ns = start.elapsed().as_nanos() as f64 / iters as f64;
    println!("rank 20 addresses (filter + groups + happy eyeballs): {ns:.0} ns/call");
}

struct SimResult {
    events: u64,
    requests: u64,
    connected: u64,
    failed: u64,
    virtual_secs: f64,
    wall: Duration,
    peak_backoff: usize,
    peak_pending: usize,
}

/// Resident bytes per pending peer: `n` requests (one in ten doubled)
/// outstanding at once, every output drained and dropped.
fn memory_per_pending_peer(n: u64, addrs: &[Vec<Addr>]) -> f64 {
    let mut config = DialerConfig::default();
    config.max_requests = n as usize * 2 + 16;
    let mut d = Dialer::new(peer(u64::MAX), config).unwrap();
    // A `Bytes` made from a `Vec` allocates its shared header on the first
    // clone: part of the address, not of the dialer.
    black_box(addrs.iter().flatten().cloned().collect::<Vec<Addr>>());
    let rss0 = rss_bytes();
    for p in 0..n {
        let copies = if p.is_multiple_of(10) { 2 } else { 1 };
        for _ in 0..copies {
            d.dial(
                Instant::ZERO,
                peer(p),
                addrs[p as usize].iter().cloned(),
                DialOpts::default(),
            )
            .unwrap();
        }
        while d.poll_action().is_some() {}
        while d.poll_event().is_some() {}
    }
    let per_peer = rss_bytes().saturating_sub(rss0) as f64 / n as f64;
    black_box(&d);
    per_peer
}

/// Wall time spent inside the dialer's own calls.
#[derive(Default)]
struct Stopwatch(Duration);

impl Stopwatch {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let start = WallClock::now();
        let out = f();
        self.0 += start.elapsed();
        out
    }
}

/// `n` peers through the dialer against a simulated network: 25 % of
/// attempts succeed after 20-200 ms, 10 % complete a TCP handshake after
/// 30-80 ms and then upgrade (2/3) or fail 100 ms later, 60 % are refused
/// after 10-100 ms, 5 % never answer. One peer in ten is asked twice (dial
/// sync) and another one in ten is asked again right after its answer (mostly
/// refused by backoff).
/// `arrivals_per_sec`: `None` asks every peer at time zero (a burst), else
/// peers arrive at that steady rate.
///
/// Only the dialer's calls are timed: each peer's addresses are made just
/// before its request (warm, as when they come fresh from identify or a
/// peer store) and the simulated network's bookkeeping is left out.
fn simulate(n: u64, arrivals_per_sec: Option<u64>) -> SimResult {
    let mut config = DialerConfig::default();
    config.max_requests = n as usize * 2 + 16;
    let mut d = Dialer::new(peer(u64::MAX), config).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut now = Instant::ZERO;
    let mut net: BinaryHeap<Reverse<(Instant, u64, Outcome)>> = BinaryHeap::new();
    let mut cancelled: HashSet<u64> = HashSet::new();
    let mut again: Vec<PeerId> = Vec::new();
    let mut asked_again: HashSet<u64> = HashSet::new();
    let (mut events, mut connected, mut failed, mut requests) = (0u64, 0u64, 0u64, 0u64);
    let (mut peak_backoff, mut peak_pending) = (0, 0);
    let arrival_gap = arrivals_per_sec.map(|r| Duration::from_nanos(1_000_000_000 / r));
    let mut next_peer = 0u64;
    let mut clock = Stopwatch::default();
    let mut actions = Vec::new();
    let mut done = Vec::new();

    loop {
        // Arrivals due now.
        while next_peer < n {
            let due = match arrival_gap {
                None => Instant::ZERO,
                Some(gap) => Instant::ZERO + gap * next_peer as u32,
            };
            if due > now {
                break;
            }
            let p = next_peer;
            next_peer += 1;
            let addrs = peer_addrs(p);
            let copies = if p.is_multiple_of(10) { 2 } else { 1 };
            for _ in 0..copies {
                let list = addrs.clone();
                clock
                    .time(|| d.dial(now, peer(p), list, DialOpts::default()))
                    .unwrap();
                events += 1;
                requests += 1;
            }
        }
        // Outputs.
        clock.time(|| {
            actions.extend(std::iter::from_fn(|| d.poll_action()));
            done.extend(std::iter::from_fn(|| d.poll_event()));
        });
        events += (actions.len() + done.len()) as u64;
        for a in actions.drain(..) {
            match a {
                Action::Dial { attempt, .. } => {
                    let (delay_ms, outcome) = match rng.below(100) {
                        0..=24 => (20 + rng.below(180), Outcome::Success),
                        25..=34 => (30 + rng.below(50), Outcome::Handshake),
                        35..=94 => (10 + rng.below(90), Outcome::Fail),
                        _ => continue, // silent: the dialer's timeout ends it
                    };
                    net.push(Reverse((
                        now + Duration::from_millis(delay_ms),
                        attempt.0,
                        outcome,
                    )));
                }
                Action::CancelAttempt { attempt } => {
                    cancelled.insert(attempt.0);
                }
                _ => {}
            }
        }
        for e in done.drain(..) {
            let Event::RequestDone {
                peer: p, result, ..
            } = e
            else {
                continue;
            };
            match result {
                Ok(_) => connected += 1,
                Err(_) => failed += 1,
            }
            let idx = u64::from_be_bytes(p.as_bytes()[2..10].try_into().unwrap());
            if idx % 10 == 5 && asked_again.insert(idx) {
                again.push(p);
            }
        }
        for p in again.drain(..) {
            let idx = u64::from_be_bytes(p.as_bytes()[2..10].try_into().unwrap());
            let list = peer_addrs(idx);
            clock
                .time(|| d.dial(now, p, list, DialOpts::default()))
                .unwrap();
            events += 1;
            requests += 1;
        }
        peak_backoff = peak_backoff.max(d.backoff().len());
        peak_pending = peak_pending.max(d.pending_requests());
        // Next input: an arrival, the network, or a timer.
        let next_arrival = match (arrival_gap, next_peer < n) {
            (Some(gap), true) => Some(Instant::ZERO + gap * next_peer as u32),
            _ => None,
        };
        let next_net = net.peek().map(|Reverse((t, _, _))| *t);
        let next_timer = clock.time(|| d.poll_timeout());
        let Some(next) = [next_arrival, next_net, next_timer]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        now = now.max(next);
        if next_arrival == Some(next) {
            continue;
        }
        if next_net == Some(next) {
            let Reverse((_, attempt, outcome)) = net.pop().unwrap();
            if cancelled.remove(&attempt) {
                continue;
            }
            let id = sansp2p::dial::AttemptId(attempt);
            events += 1;
            let then = if rng.below(3) < 2 {
                Outcome::Success
            } else {
                Outcome::Fail
            };
            // A result racing the dialer's own cancellation is refused (Err).
            let _ = match outcome {
                Outcome::Success => {
                    clock.time(|| d.handle_dial_succeeded(now, id, ConnectionRef(attempt)))
                }
                Outcome::Fail => {
                    clock.time(|| d.handle_dial_failed(now, id, FailureClass::Refused))
                }
                Outcome::Handshake => {
                    net.push(Reverse((now + Duration::from_millis(100), attempt, then)));
                    clock.time(|| d.handle_dial_connected(now, id))
                }
            };
        } else {
            events += 1;
            clock.time(|| d.handle_timeout(now));
        }
    }
    assert_eq!(connected + failed, requests, "every request answered once");
    assert_eq!(d.pending_requests(), 0);
    SimResult {
        events,
        requests,
        connected,
        failed,
        virtual_secs: now.since_epoch().as_secs_f64(),
        wall: clock.0,
        peak_backoff,
        peak_pending,
    }
}

fn bench_backoff_memory() -> f64 {
    let n = 100_000u64;
    let a = addr("/ip4/1.2.3.4/tcp/4001");
    let peers: Vec<PeerId> = (0..n).map(peer).collect();
    let mut b = Backoff::new(BackoffConfig::default()).unwrap();
    let rss0 = rss_bytes();
    for p in &peers {
        b.add(Instant::ZERO, *p, &a);
    }
    assert_eq!(b.len(), n as usize);
    rss_bytes().saturating_sub(rss0) as f64 / n as f64
}

/// Runs `simulate` enough times to see about 100 000 peers (one run at
/// 100 000 peers, a hundred at 1 000), so every scale is timed over a
/// similar amount of work; prints the figures and returns ns per event.
fn simulate_and_print(n: u64, name: &str, rate: Option<u64>) -> f64 {
    let reps = (100_000 / n).max(1);
    let runs: Vec<SimResult> = (0..reps).map(|_| simulate(n, rate)).collect();
    let events: u64 = runs.iter().map(|r| r.events).sum();
    let wall: Duration = runs.iter().map(|r| r.wall).sum();
    let r = &runs[0];
    let eps = events as f64 / wall.as_secs_f64();
    println!(
        "        {name}: {reps:>3} x {:>7} events, {:>7.1} ms in the dialer ({:>5.1} s virtual each): \
         {:>5.2} M events/s, {:>5.0} ns/event; {} requests ({} ok, {} failed); \
         peak pending {}, peak backoff {}",
        r.events,
        wall.as_secs_f64() * 1e3,
        r.virtual_secs,
        eps / 1e6,
        1e9 / eps,
        r.requests,
        r.connected,
        r.failed,
        r.peak_pending,
        r.peak_backoff
    );
    1e9 / eps
}

/// Runs one measurement in this (fresh) process: `memory:N`, `burst:N`,
/// `steady:N` or `backoff`.
fn child(what: &str) {
    let (kind, n) = what.split_once(':').unwrap_or((what, "0"));
    let n: u64 = n.parse().unwrap();
    match kind {
        "memory" => {
            let addrs: Vec<Vec<Addr>> = (0..n).map(peer_addrs).collect();
            let bytes = memory_per_pending_peer(n, &addrs);
            println!("{n:>7} peers x 10 addrs: {bytes:>5.0} B of dialer state per pending peer");
        }
        "burst" => println!("@ns {}", simulate_and_print(n, "burst ", None)),
        "steady" => println!("@ns {}", simulate_and_print(n, "steady", Some(1_000))),
        "backoff" => println!(
            "backoff: {:.0} B per (peer, address) entry (100 000 peers, one entry each)",
            bench_backoff_memory()
        ),
        _ => panic!("unknown measurement {what}"),
    }
}

/// Runs `what` in a fresh child process (so one measurement's heap does not
/// shape the next one's), echoes its output, and returns its `@ns` figure.
fn run_child(what: &str) -> Option<f64> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("SANSP2P_DIAL_BENCH_CHILD", what)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "bench child {what} failed");
    let mut ns = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.strip_prefix("@ns ") {
            Some(v) => ns = Some(v.parse().unwrap()),
            None => println!("{line}"),
        }
    }
    ns
}

fn main() {
    if let Ok(what) = std::env::var("SANSP2P_DIAL_BENCH_CHILD") {
        child(&what);
        return;
    }
    bench_rank();
    let mut per_scale = Vec::new();
    for n in [1_000u64, 10_000, 100_000] {
        run_child(&format!("memory:{n}"));
        let burst = run_child(&format!("burst:{n}")).unwrap();
        let steady = run_child(&format!("steady:{n}")).unwrap();
        per_scale.push((n, burst, steady));
    }
    run_child("backoff");
    // Cost per event at each scale against the smallest, measured in this
    // run: 1.00 is perfectly flat.
    let (_, burst0, steady0) = per_scale[0];
    for &(n, burst, steady) in &per_scale[1..] {
        println!(
            "RATIO ns-per-event/{n}-vs-1000-peers burst {:.2} steady {:.2}",
            burst / burst0,
            steady / steady0
        );
    }
}
