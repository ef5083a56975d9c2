//! Node scenarios over an in-memory network with a virtual clock.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use crate::collections::HashMap;

use super::*;
use crate::identity::Keypair;
use crate::multistream::NegotiationError;
use crate::security::noise::NoiseError;

const ECHO: &str = "/echo/1.0.0";

fn tcp_addr(host: u8) -> Vec<u8> {
    // /ip4/10.0.0.<host>/tcp/4001
    vec![0x04, 10, 0, 0, host, 0x06, 0x0f, 0xa1]
}

fn with_p2p(addr: &[u8], peer: PeerId) -> Vec<u8> {
    let mut a = addr.to_vec();
    crate::varint::push(421, &mut a);
    crate::varint::push(peer.as_bytes().len() as u64, &mut a);
    a.extend_from_slice(peer.as_bytes());
    a
}

/// A simulated network of nodes: connections are byte pipes with a fixed
/// one-way latency; the clock only moves when nothing else can happen.
struct Net {
    now: Instant,
    latency: Duration,
    nodes: Vec<Node>,
    /// Which node listens on which address.
    listeners: HashMap<Vec<u8>, usize>,
    /// (node, conn) -> (node, conn) of the other end.
    links: HashMap<(usize, ConnectionId), (usize, ConnectionId)>,
    /// Bytes in flight: arrival time, destination, payload (None = close).
    wire: VecDeque<(Instant, usize, ConnectionId, Option<Vec<u8>>)>,
    /// Unconsumed bytes per destination connection (backpressure).
    inbox: HashMap<(usize, ConnectionId), Vec<u8>>,
    /// Connections whose end of file arrived, delivered once the inbox is read.
    eof: crate::collections::HashSet<(usize, ConnectionId)>,
    events: Vec<Vec<Event>>,
    /// Read size: every delivery is cut into pieces of at most this many bytes.
    chunk: usize,
    /// When set, output is taken with `transmit_slices`, at most this many
    /// bytes per `handle_written` (a `writev` that takes part of a slice).
    write_stride: Option<usize>,
    /// The most slices one `transmit_slices` call has offered.
    max_slices: usize,
}

impl Net {
    /// `n` nodes with the default security (noise).
    fn new(n: usize) -> Self {
        Self::with_security(n, &[Security::Noise])
    }

    fn with_security(n: usize, security: &[Security]) -> Self {
        let mut nodes = Vec::new();
        let mut listeners = HashMap::default();
        for i in 0..n {
            let key = Keypair::from_secret_bytes([i as u8 + 1; 32]);
            let mut config = Config::new(key);
            config.security = security.to_vec();
            config.rng_seed = [i as u8 + 1; 32];
            let mut node = Node::new(Instant::ZERO, config).unwrap();
            let l = node.listen_on(tcp_addr(i as u8 + 1));
            assert!(matches!(node.poll_action(), Some(Action::Listen { .. })));
            node.handle_listening(Instant::ZERO, l, tcp_addr(i as u8 + 1));
            listeners.insert(tcp_addr(i as u8 + 1), i);
            nodes.push(node);
        }
        Net {
            now: Instant::ZERO,
            latency: Duration::from_millis(5),
            nodes,
            listeners,
            links: HashMap::default(),
            wire: VecDeque::new(),
            inbox: HashMap::default(),
            eof: crate::collections::HashSet::default(),
            events: (0..n).map(|_| Vec::new()).collect(),
            chunk: usize::MAX,
            write_stride: None,
            max_slices: 0,
        }
    }

    fn peer(&self, i: usize) -> PeerId {
        self.nodes[i].local_peer_id()
    }

    /// Handles every node's actions and output once; returns whether anything happened.
    fn step(&mut self) -> bool {
        let mut busy = false;
        for i in 0..self.nodes.len() {
            while let Some(action) = self.nodes[i].poll_action() {
                busy = true;
                match action {
                    Action::Listen { .. } => {}
                    Action::StopListening { .. } => self.listeners.retain(|_, j| *j != i),
                    Action::Connect { conn, addr } => match self.listeners.get(&addr).copied() {
                        Some(j) => {
                            let now = self.now;
                            let remote = self.nodes[j]
                                .handle_inbound(now, tcp_addr(100 + i as u8))
                                .unwrap();
                            self.links.insert((i, conn), (j, remote));
                            self.links.insert((j, remote), (i, conn));
                            self.nodes[i].handle_connected(now, conn);
                        }
                        None => self.nodes[i].handle_connect_failed(
                            self.now,
                            conn,
                            TransportError::Refused,
                        ),
                    },
                    Action::CloseWrite { conn } => {
                        self.flush(i, conn);
                        if let Some(&(j, rc)) = self.links.get(&(i, conn)) {
                            self.wire.push_back((self.now + self.latency, j, rc, None));
                        }
                    }
                    Action::Close { conn } => {
                        self.links.remove(&(i, conn));
                    }
                }
            }
            while let Some(conn) = self.nodes[i].poll_wants_write() {
                busy = true;
                self.flush(i, conn);
            }
            while let Some(e) = self.nodes[i].poll_event() {
                busy = true;
                self.events[i].push(e);
            }
        }
        // Deliver what has arrived.
        while self.wire.front().is_some_and(|(t, ..)| *t <= self.now) {
            busy = true;
            let (_, j, conn, bytes) = self.wire.pop_front().unwrap();
            match bytes {
                Some(b) => self
                    .inbox
                    .entry((j, conn))
                    .or_default()
                    .extend_from_slice(&b),
                // The end of file comes after the bytes before it.
                None => {
                    self.eof.insert((j, conn));
                    self.inbox.entry((j, conn)).or_default();
                }
            }
        }
        let keys: Vec<_> = self.inbox.keys().copied().collect();
        for (j, conn) in keys {
            let buf = self.inbox.get_mut(&(j, conn)).unwrap();
            let mut used = 0;
            while used < buf.len() {
                let end = (used + self.chunk).min(buf.len());
                let n = self.nodes[j].handle_read(self.now, conn, &buf[used..end]);
                used += n;
                if n == 0 {
                    break;
                }
            }
            if used > 0 {
                busy = true;
                buf.drain(..used);
            }
            if buf.is_empty() && self.eof.remove(&(j, conn)) {
                busy = true;
                self.inbox.remove(&(j, conn));
                let now = self.now;
                self.nodes[j].handle_read_closed(now, conn);
            }
        }
        busy
    }

    fn flush(&mut self, i: usize, conn: ConnectionId) {
        let mut out = Vec::new();
        if let Some(stride) = self.write_stride {
            loop {
                let start = out.len();
                let mut slices = 0;
                for slice in self.nodes[i].transmit_slices(self.now, conn) {
                    slices += 1;
                    let room = stride - (out.len() - start);
                    out.extend_from_slice(&slice[..slice.len().min(room)]);
                }
                self.max_slices = self.max_slices.max(slices);
                let n = out.len() - start;
                if n == 0 {
                    break;
                }
                self.nodes[i].handle_written(self.now, conn, n);
            }
        }
        while self.nodes[i].poll_transmit(self.now, conn, &mut out, 64 * 1024) > 0 {}
        if !out.is_empty() {
            if let Some(&(j, rc)) = self.links.get(&(i, conn)) {
                self.wire
                    .push_back((self.now + self.latency, j, rc, Some(out)));
            }
        }
    }

    /// Runs until `until` returns true or virtual time passes `limit`.
    fn run_until(&mut self, limit: Duration, mut until: impl FnMut(&Net) -> bool) {
        let deadline = self.now + limit;
        loop {
            while self.step() {}
            if until(self) {
                return;
            }
            let next_wire = self.wire.front().map(|(t, ..)| *t);
            let next_timer = self.nodes.iter().filter_map(|n| n.poll_timeout()).min();
            let next = [next_wire, next_timer].into_iter().flatten().min();
            match next {
                Some(t) if t <= deadline => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for n in &mut self.nodes {
                        n.handle_timeout(now);
                    }
                }
                _ => panic!(
                    "condition not reached by {deadline:?}; events: {:#?}",
                    self.events
                ),
            }
        }
    }

    /// Does what can be done now, then moves the clock to the next arrival
    /// or timer.
    fn advance(&mut self) {
        while self.step() {}
        let next = [
            self.wire.front().map(|(t, ..)| *t),
            self.nodes.iter().filter_map(|n| n.poll_timeout()).min(),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(t) = next.filter(|t| *t > self.now) {
            self.now = t;
            for n in &mut self.nodes {
                n.handle_timeout(t);
            }
        }
    }

    fn take_events(&mut self, i: usize) -> Vec<Event> {
        core::mem::take(&mut self.events[i])
    }

    fn has(&self, i: usize, f: impl Fn(&Event) -> bool) -> bool {
        self.events[i].iter().any(f)
    }

    fn connect(&mut self, from: usize, to: usize) -> ConnectionId {
        let peer = self.peer(to);
        let dial = self.nodes[from]
            .dial(self.now, Some(peer), vec![tcp_addr(to as u8 + 1)])
            .unwrap();
        self.run_until(Duration::from_secs(5), |net| {
            net.has(
                from,
                |e| matches!(e, Event::Identified { peer: p, .. } if *p == peer),
            ) && net.has(to, |e| matches!(e, Event::Identified { .. }))
        });
        self.events[from]
            .iter()
            .find_map(|e| match e {
                Event::Dialed { dial: d, conn, .. } if *d == dial => Some(*conn),
                _ => None,
            })
            .expect("dialed")
    }
}

mod autorelay;
mod determinism;
mod liveness;
mod maintain;
mod perf;
mod relay;
mod shutdown;
mod trim;
mod zero_copy;

#[test]
fn connect_upgrade_and_identify_both_ways() {
    for (security, chunk) in [Security::Noise, Security::Plaintext]
        .into_iter()
        .flat_map(|s| [(s, 1), (s, 7), (s, usize::MAX)])
    {
        let mut net = Net::with_security(2, &[security]);
        net.chunk = chunk;
        net.nodes[1].register_protocol(ECHO).unwrap();
        net.connect(0, 1);
        let (a, b) = (net.peer(0), net.peer(1));
        let ev0 = net.take_events(0);
        let ev1 = net.take_events(1);
        assert!(ev0.iter().any(|e| matches!(e, Event::ConnectionEstablished { peer, endpoint: Endpoint::Dialer, security: s, muxer: "/yamux/1.0.0", .. } if *peer == b && *s == security)));
        assert!(ev1.iter().any(|e| matches!(e, Event::ConnectionEstablished { peer, endpoint: Endpoint::Listener, .. } if *peer == a)));
        let info = ev0
            .iter()
            .find_map(|e| match e {
                Event::Identified { info, .. } => Some(info.clone()),
                _ => None,
            })
            .unwrap();
        assert!(info.agent_version.starts_with("sansp2p/"));
        assert!(info.protocols.iter().any(|p| p == ECHO));
        assert!(info
            .protocols
            .iter()
            .any(|p| p == crate::protocols::ping::PROTOCOL));
        assert_eq!(info.listen_addrs, vec![tcp_addr(2)]);
        assert_eq!(
            info.observed_addr,
            Some(tcp_addr(100)),
            "B saw A at the address the network gave"
        );
        assert_eq!(
            net.nodes[0].peer_protocols(&b).unwrap(),
            &info.protocols[..]
        );
    }
}

fn echo_round(net: &mut Net, payload: &[u8]) -> Vec<u8> {
    echo_between(net, 0, 1, payload)
}

/// Node `a` opens an echo stream to node `b`, which echoes `payload` back.
fn echo_between(net: &mut Net, a: usize, b: usize, payload: &[u8]) -> Vec<u8> {
    let peer_b = net.peer(b);
    net.take_events(b);
    let stream = net.nodes[a].open_stream(net.now, peer_b, [ECHO]).unwrap();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut served: Option<StreamHandle> = None;
    let mut echo_buf: Vec<u8> = Vec::new();
    let mut closed_b = false;
    let mut closed_a = false;
    let mut guard = 0;
    loop {
        guard += 1;
        assert!(
            guard < 20_000,
            "echo stalled: sent {sent}, got {}",
            got.len()
        );
        let now = net.now;
        // A: write, then half-close.
        if sent < payload.len() {
            if let Ok(n) = net.nodes[a].stream_write(now, stream, &payload[sent..]) {
                sent += n;
            }
        } else if !closed_a {
            net.nodes[a].stream_close(now, stream).unwrap();
            closed_a = true;
        }
        // B: accept and echo.
        if served.is_none() {
            served = net.events[b].iter().find_map(|e| match e {
                Event::InboundStream {
                    stream, protocol, ..
                } if protocol == ECHO => Some(*stream),
                _ => None,
            });
        }
        if let Some(s) = served {
            let mut buf = [0u8; 4096];
            loop {
                match net.nodes[b].stream_read(now, s, &mut buf) {
                    Ok(0) => {
                        if echo_buf.is_empty() && !closed_b {
                            net.nodes[b].stream_close(now, s).unwrap();
                            closed_b = true;
                        }
                        break;
                    }
                    Ok(n) => echo_buf.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            while !echo_buf.is_empty() {
                match net.nodes[b].stream_write(now, s, &echo_buf) {
                    Ok(n) => {
                        echo_buf.drain(..n);
                    }
                    Err(_) => break,
                }
            }
        }
        // A: read the echo.
        let mut buf = [0u8; 4096];
        let mut eof = false;
        loop {
            match net.nodes[a].stream_read(now, stream, &mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        if eof {
            return got;
        }
        while net.step() {}
        if let Some(t) = [
            net.wire.front().map(|(t, ..)| *t),
            net.nodes.iter().filter_map(|n| n.poll_timeout()).min(),
        ]
        .into_iter()
        .flatten()
        .min()
        {
            if t > net.now && !net.step() {
                net.now = t;
                for n in &mut net.nodes {
                    n.handle_timeout(t);
                }
            }
        }
    }
}

#[test]
fn echo_small_and_large_messages() {
    let mut net = Net::new(2);
    net.nodes[1].register_protocol(ECHO).unwrap();
    net.connect(0, 1);
    assert_eq!(echo_round(&mut net, b"Hello, world!\n"), b"Hello, world!\n");
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    assert_eq!(echo_round(&mut net, &big), big);
    // Streams are freed once both sides closed and read to the end.
    net.run_until(Duration::from_secs(1), |net| {
        net.has(0, |e| matches!(e, Event::StreamClosed { .. }))
    });
}

#[test]
fn ping_measures_the_round_trip() {
    let mut net = Net::new(2);
    net.latency = Duration::from_millis(40);
    net.connect(0, 1);
    let b = net.peer(1);
    let ping = net.nodes[0].ping(net.now, b).unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| matches!(e, Event::PingSuccess { .. }))
    });
    let rtt = net.events[0]
        .iter()
        .find_map(|e| match e {
            Event::PingSuccess { ping: p, rtt, peer } if *p == ping && *peer == b => Some(*rtt),
            _ => None,
        })
        .unwrap();
    // The peer listed ping in identify, so the stream is lazy: one round trip.
    assert_eq!(rtt, Duration::from_millis(80));
}

#[test]
fn pings_reuse_one_stream_per_connection_and_queue_on_it() {
    let mut net = Net::new(2);
    net.latency = Duration::from_millis(40);
    let conn = net.connect(0, 1);
    let b = net.peer(1);
    let inbound_streams = |net: &Net| {
        net.nodes[1]
            .conns
            .values()
            .map(|c| c.streams.len())
            .sum::<usize>()
    };
    let mut streams = Vec::new();
    let mut rtts = Vec::new();
    // One after the other, then three at once.
    for burst in [1, 1, 3] {
        net.take_events(0);
        let ids: Vec<PingId> = (0..burst)
            .map(|_| net.nodes[0].ping(net.now, b).unwrap())
            .collect();
        for id in &ids {
            streams.push(net.nodes[0].pings[id].stream);
        }
        net.run_until(Duration::from_secs(5), |net| {
            ids.iter().all(|id| {
                net.has(
                    0,
                    |e| matches!(e, Event::PingSuccess { ping, .. } if ping == id),
                )
            })
        });
        for e in &net.events[0] {
            if let Event::PingSuccess { rtt, .. } = e {
                rtts.push(*rtt);
            }
        }
    }
    assert!(
        streams.iter().all(|s| *s == streams[0]),
        "one stream: {streams:?}"
    );
    assert_eq!(streams[0].connection(), conn);
    // Each ping is timed from its own payload: a round trip each, the
    // queued ones included.
    assert_eq!(rtts, vec![Duration::from_millis(80); 5]);
    // The stream stays open between pings, on both sides.
    assert_eq!(inbound_streams(&net), 1);
    assert!(net.nodes[0].conns[&conn].ping_stream.is_some());
}

#[test]
fn a_ping_after_the_ping_stream_was_reset_opens_a_new_one() {
    let mut net = Net::new(2);
    net.connect(0, 1);
    let b = net.peer(1);
    let first = net.nodes[0].ping(net.now, b).unwrap();
    let stream = net.nodes[0].pings[&first].stream;
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| matches!(e, Event::PingSuccess { .. }))
    });
    net.nodes[0].stream_reset(net.now, stream);
    while net.step() {}
    net.take_events(0);
    let second = net.nodes[0].ping(net.now, b).unwrap();
    assert_ne!(net.nodes[0].pings[&second].stream, stream);
    net.run_until(Duration::from_secs(5), |net| {
        net.has(
            0,
            |e| matches!(e, Event::PingSuccess { ping, .. } if *ping == second),
        )
    });
}

#[test]
fn unknown_protocol_gets_na_and_the_connection_survives() {
    let mut net = Net::new(2);
    let conn = net.connect(0, 1);
    let b = net.peer(1);
    let stream = net.nodes[0]
        .open_stream(net.now, b, ["/nope/1.0.0", "/nope/2.0.0"])
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| matches!(e, Event::StreamOpenFailed { .. }))
    });
    assert!(net.has(0, |e| matches!(e, Event::StreamOpenFailed { stream: s, error: StreamOpenFailure::Negotiation(NegotiationError::NotAgreed) } if *s == stream)));
    assert!(net.nodes[0].is_connected(&b));
    net.nodes[0].ping(net.now, b).unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| matches!(e, Event::PingSuccess { .. }))
    });
    assert_eq!(
        net.nodes[0].connections_to(&b).collect::<Vec<_>>(),
        vec![conn]
    );
}

#[test]
fn dial_expecting_the_wrong_peer_fails_with_a_typed_error() {
    let mut net = Net::new(3);
    let wrong = net.peer(2);
    let dial = net.nodes[0]
        .dial(net.now, Some(wrong), vec![tcp_addr(2)])
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| matches!(e, Event::DialFailed { .. }))
    });
    let errors = net.events[0]
        .iter()
        .find_map(|e| match e {
            Event::DialFailed {
                dial: d, errors, ..
            } if *d == dial => Some(errors.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].1,
        AttemptError::Upgrade(UpgradeError::Noise(NoiseError::UnexpectedPeer {
            expected: wrong,
            found: net.peer(1)
        }))
    );
    // The connection was closed on both sides.
    net.run_until(Duration::from_secs(1), |net| {
        net.nodes.iter().all(|n| n.connection_count() == 0)
    });
}

#[test]
fn dial_tries_addresses_in_order_and_reports_each_failure() {
    let mut net = Net::new(2);
    let b = net.peer(1);
    let dead = tcp_addr(77);
    let live = with_p2p(&tcp_addr(2), b);
    let dial = net.nodes[0]
        .dial(net.now, None, vec![dead.clone(), live])
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| matches!(e, Event::Dialed { .. }))
    });
    assert!(net.has(
        0,
        |e| matches!(e, Event::Dialed { dial: d, peer, .. } if *d == dial && *peer == b)
    ));
    // All addresses dead: one error per address, in order.
    let c = net.peer(1);
    let existing = net.connect_conn(0, 1);
    net.nodes[0].close_connection(existing);
    net.run_until(Duration::from_secs(1), |net| {
        net.nodes[0].connection_count() == 0
    });
    let dial = net.nodes[0]
        .dial(net.now, Some(c), vec![tcp_addr(50), tcp_addr(51)])
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| matches!(e, Event::DialFailed { .. }))
    });
    let errors = net.events[0]
        .iter()
        .find_map(|e| match e {
            Event::DialFailed {
                dial: d, errors, ..
            } if *d == dial => Some(errors.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        errors,
        vec![
            (
                tcp_addr(50),
                AttemptError::Transport(TransportError::Refused)
            ),
            (
                tcp_addr(51),
                AttemptError::Transport(TransportError::Refused)
            )
        ]
    );
}

impl Net {
    fn connect_conn(&self, i: usize, j: usize) -> ConnectionId {
        self.nodes[i].connections_to(&self.peer(j)).next().unwrap()
    }
}

#[test]
fn dialing_a_connected_peer_reuses_the_connection() {
    let mut net = Net::new(2);
    let conn = net.connect(0, 1);
    let b = net.peer(1);
    let dial = net.nodes[0].dial(net.now, Some(b), vec![]).unwrap();
    assert_eq!(
        net.nodes[0].poll_event(),
        Some(Event::Dialed {
            dial,
            peer: b,
            conn
        })
    );
    let me = net.peer(0);
    assert_eq!(
        net.nodes[0].dial(net.now, Some(me), vec![tcp_addr(1)]),
        Err(DialError::DialSelf)
    );
}

#[test]
fn ranked_dial_does_not_wait_for_a_hanging_address() {
    let mut net = Net::new(2);
    let b = net.peer(1);
    let dial = net.nodes[0]
        .dial(net.now, Some(b), vec![tcp_addr(60), tcp_addr(2)])
        .unwrap();
    // The first (private TCP) address never answers: swallow its Connect.
    let first = net.nodes[0].poll_action();
    let Some(Action::Connect {
        conn: hanging,
        ref addr,
    }) = first
    else {
        panic!("{first:?}")
    };
    assert_eq!(*addr, tcp_addr(60));
    net.run_until(Duration::from_secs(20), |net| {
        net.has(0, |e| matches!(e, Event::Dialed { .. }))
    });
    assert!(net.has(
        0,
        |e| matches!(e, Event::Dialed { dial: d, .. } if *d == dial)
    ));
    // The second private address went out after the ranker's 30 ms, not
    // after the first one's 5 s timeout...
    assert!(
        net.now < Instant::ZERO + Duration::from_secs(1),
        "{:?}",
        net.now
    );
    // ...and the hanging attempt was cancelled once the peer was reached.
    let mut closed = false;
    while let Some(a) = net.nodes[0].poll_action() {
        closed |= a == Action::Close { conn: hanging };
    }
    assert!(closed || net.nodes[0].connection_count() == 1);
}

#[test]
fn a_silent_private_address_times_out_after_five_seconds() {
    let mut net = Net::new(2);
    let b = net.peer(1);
    let dial = net.nodes[0]
        .dial(net.now, Some(b), vec![tcp_addr(60)])
        .unwrap();
    assert!(matches!(
        net.nodes[0].poll_action(),
        Some(Action::Connect { .. })
    ));
    net.run_until(Duration::from_secs(20), |net| {
        net.has(0, |e| matches!(e, Event::DialFailed { .. }))
    });
    assert_eq!(net.now, Instant::ZERO + Duration::from_secs(5));
    assert!(
        net.has(0, |e| matches!(e, Event::DialFailed { dial: d, errors, .. }
        if *d == dial && errors == &vec![(tcp_addr(60), AttemptError::Timeout)]))
    );
}

#[test]
fn failed_addresses_enter_backoff() {
    let mut net = Net::new(2);
    let b = net.peer(1);
    net.nodes[0]
        .dial(net.now, Some(b), vec![tcp_addr(50)])
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| matches!(e, Event::DialFailed { .. }))
    });
    assert!(net.nodes[0].is_backed_off(&b, &tcp_addr(50)));
    net.take_events(0);
    // A second dial right away is refused by backoff without any connect...
    net.nodes[0]
        .dial(net.now, Some(b), vec![tcp_addr(50)])
        .unwrap();
    assert!(!core::iter::from_fn(|| net.nodes[0].poll_action())
        .any(|a| matches!(a, Action::Connect { .. })));
    net.run_until(Duration::from_secs(1), |net| {
        net.has(0, |e| matches!(e, Event::DialFailed { .. }))
    });
    assert!(net.has(0, |e| matches!(e, Event::DialFailed { errors, .. } if errors == &vec![(tcp_addr(50), AttemptError::Backoff)])));
    // ...while the live address still connects; the dead one stays backed off.
    net.nodes[0]
        .dial(net.now, Some(b), vec![tcp_addr(50), tcp_addr(2)])
        .unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| matches!(e, Event::Dialed { .. }))
    });
    assert!(net.nodes[0].is_backed_off(&b, &tcp_addr(50)));
    assert!(!net.nodes[0].is_backed_off(&b, &tcp_addr(2)));
}

#[test]
fn concurrent_dials_to_one_peer_share_one_connection() {
    let mut net = Net::new(2);
    let b = net.peer(1);
    let dials: Vec<_> = (0..10)
        .map(|_| {
            net.nodes[0]
                .dial(net.now, Some(b), vec![tcp_addr(2)])
                .unwrap()
        })
        .collect();
    net.run_until(Duration::from_secs(5), |net| {
        net.events[0]
            .iter()
            .filter(|e| matches!(e, Event::Dialed { .. }))
            .count()
            == 10
    });
    let conns: Vec<ConnectionId> = net.events[0]
        .iter()
        .filter_map(|e| match e {
            Event::Dialed { dial, conn, .. } if dials.contains(dial) => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(conns.len(), 10);
    assert!(
        conns.iter().all(|c| *c == conns[0]),
        "one connection answers all: {conns:?}"
    );
    assert_eq!(net.nodes[0].connections_to(&b).count(), 1);
}

#[test]
fn per_peer_connection_limit() {
    let mut net = Net::new(2);
    net.nodes[0].config.max_connections_per_peer = 1;
    net.connect(0, 1);
    let b = net.peer(1);
    // A second dial for the peer answers with the existing connection, but a
    // dial without a peer id makes a second connection, which is refused.
    let dial = net.nodes[0].dial(net.now, None, vec![tcp_addr(2)]).unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| matches!(e, Event::DialFailed { .. }))
    });
    assert!(net.has(0, |e| matches!(e, Event::DialFailed { dial: d, errors, .. } if *d == dial && errors[0].1 == AttemptError::PeerLimit)));
    assert_eq!(net.nodes[0].connections_to(&b).count(), 1);
}

#[test]
fn protect_and_unprotect() {
    let mut net = Net::new(1);
    let p = Keypair::from_secret_bytes([9; 32]).peer_id();
    let node = &mut net.nodes[0];
    node.protect(p, "relay");
    node.protect(p, "bootstrap");
    assert!(node.is_protected(&p));
    assert!(node.unprotect(&p, "relay"));
    assert!(!node.unprotect(&p, "bootstrap"));
    assert!(!node.is_protected(&p));
}

#[test]
fn bad_configuration_is_refused() {
    let mut config = Config::new(Keypair::from_secret_bytes([1; 32]));
    config.security.clear();
    assert_eq!(
        Node::new(Instant::ZERO, config).unwrap_err(),
        ConfigError::NoSecurity
    );
    // Noise keys from an all-zero seed would be predictable.
    let config = Config::new(Keypair::from_secret_bytes([1; 32]));
    assert_eq!(
        Node::new(Instant::ZERO, config).unwrap_err(),
        ConfigError::ZeroRngSeed
    );
    let mut config = Config::new(Keypair::from_secret_bytes([1; 32]));
    config.security = vec![Security::Plaintext];
    assert!(Node::new(Instant::ZERO, config).is_ok());
    let mut config = Config::new(Keypair::from_secret_bytes([1; 32]));
    config.rng_seed = [9; 32];
    config.max_connections = 0;
    assert_eq!(
        Node::new(Instant::ZERO, config).unwrap_err(),
        ConfigError::Zero("max_connections")
    );
}

#[test]
fn garbage_from_a_peer_closes_only_that_connection() {
    let mut net = Net::new(2);
    let conn = net.nodes[1].handle_inbound(net.now, tcp_addr(9)).unwrap();
    let _ = net.nodes[1].handle_read(net.now, conn, b"\x13/multistream/1.0.0\n\x05junk\n");
    // What it owed (its multistream header) goes out before the FIN.
    let mut out = Vec::new();
    while net.nodes[1].poll_transmit(net.now, conn, &mut out, 1024) > 0 {}
    assert!(out.starts_with(b"\x13/multistream/1.0.0\n"));
    let mut closed = false;
    while let Some(a) = net.nodes[1].poll_action() {
        closed |= a == Action::CloseWrite { conn };
    }
    assert!(closed);
    assert!(core::iter::from_fn(|| net.nodes[1].poll_event())
        .any(|e| matches!(e, Event::InboundUpgradeFailed { conn: c, .. } if c == conn)));
}

#[test]
fn a_forged_noise_frame_closes_the_connection_with_a_goaway() {
    let mut net = Net::new(2);
    net.connect(0, 1);
    let a = net.peer(0);
    let conn = net
        .take_events(1)
        .iter()
        .find_map(|e| match e {
            Event::ConnectionEstablished { conn, peer, .. } if *peer == a => Some(*conn),
            _ => None,
        })
        .expect("node 1 has a connection from node 0");
    // A well-formed frame whose tag cannot verify.
    let mut forged = vec![0u8, 40];
    forged.extend_from_slice(&[0x5a; 40]);
    assert_eq!(
        net.nodes[1].handle_read(net.now, conn, &forged),
        forged.len()
    );
    assert!(
        core::iter::from_fn(|| net.nodes[1].poll_event()).any(|e| matches!(
            e,
            Event::ConnectionClosed { conn: c, reason: CloseReason::Decrypt, .. } if c == conn
        ))
    );
    // Our sending side still works: the peer is told why (GoAway, protocol
    // error), sealed like every frame; then the FIN.
    let mut out = Vec::new();
    assert!(net.nodes[1].poll_transmit(net.now, conn, &mut out, 1 << 20) > 0);
    assert!(core::iter::from_fn(|| net.nodes[1].poll_action())
        .any(|x| x == Action::CloseWrite { conn }));
    // Whatever comes next is dropped, not parsed.
    assert_eq!(net.nodes[1].handle_read(net.now, conn, &[1, 2, 3]), 3);
}

#[test]
fn upgrade_timeout_closes_a_silent_connection() {
    let mut net = Net::new(1);
    let conn = net.nodes[0].handle_inbound(net.now, tcp_addr(9)).unwrap();
    let t = net.nodes[0].poll_timeout().unwrap();
    assert_eq!(t, Instant::ZERO + Duration::from_secs(10));
    net.nodes[0].handle_timeout(t);
    let node = &mut net.nodes[0];
    let mut out = Vec::new();
    while node.poll_transmit(t, conn, &mut out, 1024) > 0 {}
    assert!(core::iter::from_fn(|| node.poll_action()).any(|a| a == Action::CloseWrite { conn }));
    // Given up: input is dropped and nothing more is said, however much
    // the peer sends (the upgrade stays inert, no `na` to each proposal).
    let mut flood = b"\x13/multistream/1.0.0\n".to_vec();
    for _ in 0..10_000 {
        flood.extend_from_slice(b"\x05/zzz\n\x03ls\n");
    }
    assert_eq!(node.handle_read(t, conn, &flood), flood.len());
    out.clear();
    assert_eq!(node.poll_transmit(t, conn, &mut out, 1024), 0);
    // The linger ends with the socket's release, without any adapter help.
    let linger = node.poll_timeout().expect("the linger deadline");
    assert_eq!(linger, t + node.config().io.close_linger);
    node.handle_timeout(linger);
    assert!(core::iter::from_fn(|| node.poll_action()).any(|a| a == Action::Close { conn }));
    assert_eq!(node.connection_count(), 0);
    assert_eq!(node.poll_timeout(), None);
}

#[test]
fn a_peer_that_pings_without_reading_the_echoes_is_pushed_back() {
    let mut net = Net::new(2);
    net.connect(0, 1);
    let b = net.peer(1);
    // Node 0 speaks ping as a plain application stream and never reads.
    let stream = net.nodes[0]
        .open_stream(net.now, b, [crate::protocols::ping::PROTOCOL])
        .unwrap();
    let chunk = [7u8; 32 * 1024];
    let mut written = 0usize;
    // Ten seconds of virtual time, writing whenever there is room.
    let end = net.now + Duration::from_secs(10);
    while net.now < end {
        while let Ok(n) = net.nodes[0].stream_write(net.now, stream, &chunk) {
            written += n;
        }
        while net.step() {}
        let next = net.wire.front().map(|(t, ..)| *t).unwrap_or(end);
        net.now = next.max(net.now + Duration::from_millis(1));
        let now = net.now;
        for n in &mut net.nodes {
            n.handle_timeout(now);
        }
    }
    // The responder holds at most its echo queue plus one window of input,
    // so the pinger cannot push more than a few windows through.
    assert!(written > 0, "the ping stream took data at all");
    assert!(
        written < 8 << 20,
        "{written} bytes accepted from a peer that never reads"
    );
}

/// A peer that floods yamux pings over noise and never reads our pongs: the
/// node stops taking its bytes once the pong queue is full (decrypting at
/// most a bounded amount ahead), takes them again as the pongs leave, and in
/// the end answers every ping exactly once.
#[test]
fn a_noise_peer_flooding_pings_is_pushed_back_and_every_ping_answered() {
    let mut net = Net::new(1);
    let node = &mut net.nodes[0];
    let now = net.now;
    let conn = node.handle_inbound(now, tcp_addr(9)).unwrap();
    // The peer: our own upgrade machine as a dialer.
    let key = Keypair::from_secret_bytes([50; 32]);
    let secrets = upgrade::NoiseSecrets {
        static_secret: [51; 32],
        ephemeral_secret: [52; 32],
    };
    let mut peer =
        upgrade::Upgrade::new(Endpoint::Dialer, &key, &[Security::Noise], None, secrets).unwrap();
    let mut from_node = Vec::new();
    for _ in 0..10 {
        let mut to_node = Vec::new();
        let _ = peer.poll_transmit(&mut to_node);
        assert_eq!(node.handle_read(now, conn, &to_node), to_node.len());
        while node.poll_transmit(now, conn, &mut from_node, 1 << 20) > 0 {}
        let used = peer.handle_read(&from_node);
        from_node.drain(..used);
    }
    assert!(peer.poll_event().unwrap().is_ok(), "the peer's upgrade");
    let upgrade::Channel::Noise {
        mut transport,
        pending,
        ..
    } = peer.take_channel()
    else {
        panic!("noise was negotiated");
    };
    // Whatever the node sent after the upgrade (its session start) is ours
    // to read later; keep the raw bytes.
    let mut node_output = pending;
    transport.decrypt(&from_node, &mut node_output).unwrap();

    // 40 000 pings, sealed as one stream.
    const PINGS: u32 = 40_000;
    let plain = yamux_pings(PINGS);
    let mut wire = Vec::new();
    transport.encrypt(&plain, &mut wire).unwrap();

    // Offer everything without draining: the node must push back.
    let mut taken = 0;
    for _ in 0..100 {
        let n = node.handle_read(now, conn, &wire[taken..]);
        taken += n;
        if n == 0 {
            break;
        }
    }
    assert!(
        taken < wire.len(),
        "the node took all {} bytes while its pongs queued",
        wire.len()
    );
    assert_eq!(node.read_capacity(conn), 0, "reading is paused");
    assert!(
        taken <= node.config().io.read_buffer + 4 * 65_552,
        "took {taken} bytes ahead of a full pong queue"
    );

    // Drain and offer again until everything is taken.
    let mut raw_out = Vec::new();
    let mut rounds = 0;
    while taken < wire.len() {
        rounds += 1;
        assert!(rounds < 100_000, "no progress");
        while node.poll_transmit(now, conn, &mut raw_out, 1 << 16) > 0 {}
        taken += node.handle_read(now, conn, &wire[taken..]);
    }
    while node.poll_transmit(now, conn, &mut raw_out, 1 << 20) > 0 {}
    transport.decrypt(&raw_out, &mut node_output).unwrap();
    // Every ping answered once, in order: ACK pings with the same values
    // (other frames, such as the node's identify request, skipped).
    let mut pongs = Vec::new();
    let mut at = 0;
    while at + 12 <= node_output.len() {
        let h = &node_output[at..at + 12];
        let value = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        at += 12;
        match h[1] {
            0 => at += value as usize, // data frame: skip its payload
            2 if h[3] == 2 => pongs.push(value),
            _ => {}
        }
    }
    assert_eq!(at, node_output.len(), "whole frames");
    assert_eq!(pongs.len(), PINGS as usize, "pongs (one per ping)");
    assert!(
        pongs.iter().zip(0..).all(|(&v, i)| v == i),
        "pongs out of order or altered"
    );
}

// ---------------------------------------------------------------- hostile peers
// Each test below failed on the node before its I/O driver (issue 9).

/// A raw peer: our own upgrade machine as a dialer, run against `conn` of
/// `node` until both are upgraded. Returns the peer's channel.
fn raw_peer(node: &mut Node, now: Instant, conn: ConnectionId, security: Security) -> Channel {
    let key = Keypair::from_secret_bytes([60; 32]);
    let secrets = upgrade::NoiseSecrets {
        static_secret: [61; 32],
        ephemeral_secret: [62; 32],
    };
    let mut peer =
        upgrade::Upgrade::new(Endpoint::Dialer, &key, &[security], None, secrets).unwrap();
    let mut from_node = Vec::new();
    for _ in 0..10 {
        let mut to_node = Vec::new();
        let _ = peer.poll_transmit(&mut to_node);
        assert_eq!(node.handle_read(now, conn, &to_node), to_node.len());
        while node.poll_transmit(now, conn, &mut from_node, 1 << 20) > 0 {}
        let used = peer.handle_read(&from_node);
        from_node.drain(..used);
    }
    assert!(peer.poll_event().unwrap().is_ok(), "the peer's upgrade");
    peer.take_channel()
}

fn plaintext_node() -> Node {
    let mut config = Config::new(Keypair::from_secret_bytes([1; 32]));
    config.security = vec![Security::Plaintext];
    Node::new(Instant::ZERO, config).unwrap()
}

/// Defect 1: 10 connections sending `ls` without reading grew the echo
/// listener to 1.36 GB. The upgrade now reads no further while an answer
/// is unsent, and the connection holds at most `read_buffer` of input.
#[test]
fn an_ls_flood_during_the_upgrade_is_bounded() {
    let mut node = plaintext_node();
    let now = Instant::ZERO;
    let conn = node.handle_inbound(now, tcp_addr(9)).unwrap();
    let mut flood = b"\x13/multistream/1.0.0\n".to_vec();
    while flood.len() < 4 << 20 {
        flood.extend_from_slice(b"\x03ls\n");
    }
    // Offer everything, never reading what the node says.
    let mut taken = 0;
    while taken < flood.len() {
        let n = node.handle_read(now, conn, &flood[taken..]);
        if n == 0 {
            break;
        }
        taken += n;
    }
    assert_eq!(node.read_capacity(conn), 0, "reading is paused");
    assert!(
        taken <= node.config().io.read_buffer + 64,
        "took {taken} bytes from a peer that reads nothing"
    );
    let queued = node.transmit_buffer(now, conn).len();
    assert!(queued < 1024, "{queued} bytes of answers queued");
    // Reading resumes as the answers leave, one `ls` at a time.
    let mut out = Vec::new();
    let mut writes = 0;
    while node.poll_transmit(now, conn, &mut out, usize::MAX) > 0 {
        writes += 1;
    }
    assert!(writes > 1000, "one answer per write, not all at once");
    assert!(
        core::iter::from_fn(|| match node.poll_output() {
            Output::Timeout(_) => None,
            o => Some(o),
        })
        .any(|o| o == Output::Receive(conn)),
        "the adapter is told to read again"
    );
}

/// Defect 3: 5 connections that flood pings and never read were all still
/// open after 23 s. With the write-stall deadline each closes 10 s after
/// its output stopped moving, and its socket is released after the linger.
#[test]
fn peers_that_stop_reading_are_closed_at_the_write_stall_deadline() {
    let mut config = Config::new(Keypair::from_secret_bytes([1; 32]));
    config.security = vec![Security::Plaintext];
    // Apart from the session's own 10 s timers, so only the stall fires.
    config.io.write_stall_timeout = Duration::from_secs(3);
    let mut node = Node::new(Instant::ZERO, config).unwrap();
    let now = Instant::ZERO;
    let mut conns = Vec::new();
    for i in 0..5 {
        let conn = node.handle_inbound(now, tcp_addr(10 + i)).unwrap();
        raw_peer(&mut node, now, conn, Security::Plaintext);
        let pings = yamux_pings(1000);
        let _ = node.handle_read(now, conn, &pings);
        // The socket takes nothing: the adapter sees the bytes, cannot
        // write them, and waits for writability that never comes.
        assert!(!node.transmit_buffer(now, conn).is_empty());
        conns.push(conn);
    }
    let stall = node.config().io.write_stall_timeout;
    let linger = node.config().io.close_linger;
    assert_eq!(node.poll_timeout(), Some(now + stall));
    node.handle_timeout(now + stall);
    let mut closed = 0;
    let mut fins = 0;
    while let Some(e) = node.poll_event() {
        if matches!(
            e,
            Event::ConnectionClosed {
                reason: CloseReason::WriteStall,
                ..
            }
        ) {
            closed += 1;
        }
    }
    while let Some(a) = node.poll_action() {
        fins += usize::from(matches!(a, Action::CloseWrite { .. }));
    }
    assert_eq!((closed, fins), (5, 5));
    node.handle_timeout(now + stall + linger);
    let released = core::iter::from_fn(|| node.poll_action())
        .filter(|a| matches!(a, Action::Close { conn } if conns.contains(conn)))
        .count();
    assert_eq!(released, 5);
    assert_eq!(node.connection_count(), 0, "every slot is free again");
}

/// A writer that makes progress, however slowly, is not stalled.
#[test]
fn a_slow_reader_is_not_a_stalled_one() {
    let mut config = Config::new(Keypair::from_secret_bytes([1; 32]));
    config.security = vec![Security::Plaintext];
    // The raw peer never answers the session's RTT ping.
    config.yamux.ping_timeout = Duration::from_secs(3600);
    let mut node = Node::new(Instant::ZERO, config).unwrap();
    let mut now = Instant::ZERO;
    let conn = node.handle_inbound(now, tcp_addr(9)).unwrap();
    raw_peer(&mut node, now, conn, Security::Plaintext);
    let pings = yamux_pings(1000);
    let _ = node.handle_read(now, conn, &pings);
    // One byte every 9 s: 12 000 pong bytes would take 30 hours; check a
    // minute of it.
    for i in 0..7 {
        let left = node.transmit_buffer(now, conn).len();
        assert!(
            left > 0,
            "round {i}: {:?}",
            core::iter::from_fn(|| node.poll_event()).collect::<Vec<_>>()
        );
        now += Duration::from_secs(9);
        node.handle_timeout(now);
        node.handle_written(now, conn, 1);
    }
    assert!(!core::iter::from_fn(|| node.poll_event())
        .any(|e| matches!(e, Event::ConnectionClosed { .. })));
    assert_eq!(node.connection_count(), 1);
}

/// Defect 3, closing side: a close whose bytes the peer never takes ends
/// with FIN at the flush deadline and the release after the linger.
#[test]
fn a_close_the_peer_does_not_read_finishes_at_the_flush_deadline() {
    let mut net = Net::new(2);
    let conn = net.connect(0, 1);
    let b = net.peer(1);
    let stream = net.nodes[0].open_stream(net.now, b, [ECHO]).unwrap();
    let _ = net.nodes[0].stream_write(net.now, stream, &[1; 1000]);
    net.nodes[0].close_connection(conn);
    let node = &mut net.nodes[0];
    let t = net.now;
    // The adapter got the bytes but the socket takes none of them.
    assert!(!node.transmit_buffer(t, conn).is_empty());
    assert!(!core::iter::from_fn(|| node.poll_action())
        .any(|a| matches!(a, Action::CloseWrite { .. } | Action::Close { .. })));
    let flush = node.config().io.close_flush_timeout;
    let linger = node.config().io.close_linger;
    assert_eq!(node.poll_timeout(), Some(t + flush));
    node.handle_timeout(t + flush);
    assert_eq!(node.poll_action(), Some(Action::CloseWrite { conn }));
    assert_eq!(node.poll_timeout(), Some(t + flush + linger));
    node.handle_timeout(t + flush + linger);
    assert_eq!(node.poll_action(), Some(Action::Close { conn }));
    assert_eq!(node.connection_count(), 0);
}

/// Defect 5: identify push sent nothing on the lazy path. After
/// `register_protocol` the peer must learn the new protocol.
#[test]
fn a_registered_protocol_is_pushed_to_connected_peers() {
    let mut net = Net::new(2);
    net.connect(0, 1);
    let b = net.peer(1);
    assert!(!net.nodes[0]
        .peer_protocols(&b)
        .unwrap()
        .iter()
        .any(|p| p == "/new/1.0.0"));
    net.take_events(0);
    net.nodes[1].register_protocol("/new/1.0.0").unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| matches!(e, Event::Identified { info, .. } if info.protocols.iter().any(|p| p == "/new/1.0.0")))
    });
    assert!(net.nodes[0]
        .peer_protocols(&b)
        .unwrap()
        .iter()
        .any(|p| p == "/new/1.0.0"));
}

/// Defect 6: a name the negotiator refuses was accepted by
/// `register_protocol`, and the peer's next inbound stream hit an `expect`.
#[test]
fn an_overlong_protocol_name_is_refused_at_registration() {
    let mut net = Net::new(2);
    net.nodes[1].register_protocol(ECHO).unwrap();
    let long = alloc::format!("/{}", "x".repeat(1500));
    assert_eq!(
        net.nodes[1].register_protocol(long.clone()),
        Err(RegisterError::TooLong {
            len: long.len(),
            max: 1023
        })
    );
    assert_eq!(
        net.nodes[1].register_protocol("no-slash"),
        Err(RegisterError::InvalidName)
    );
    let longest = alloc::format!("/{}", "x".repeat(1022));
    net.nodes[1].register_protocol(longest).unwrap();
    net.connect(0, 1);
    // Inbound streams still negotiate.
    assert_eq!(echo_round(&mut net, b"still fine"), b"still fine");
}

/// Defect 7: identify from a peer describing someone else's key is ignored.
#[test]
fn identify_with_a_foreign_key_is_ignored() {
    let mut net = Net::new(2);
    let conn = net.connect(0, 1);
    let b = net.peer(1);
    let before = net.nodes[0].peer_protocols(&b).unwrap().to_vec();
    net.take_events(0);
    let mut info = net.nodes[1].identify_info(conn);
    info.public_key = Keypair::from_secret_bytes([77; 32]).public();
    info.protocols.push(String::from("/forged/1.0.0"));
    net.nodes[0].on_identified(conn, Box::new(info.clone()));
    assert!(net.take_events(0).is_empty(), "no Identified event");
    assert_eq!(net.nodes[0].peer_protocols(&b).unwrap(), &before[..]);
    // The same message with the right key is taken.
    info.public_key = Keypair::from_secret_bytes([2; 32]).public();
    net.nodes[0].on_identified(conn, Box::new(info));
    assert!(net.nodes[0]
        .peer_protocols(&b)
        .unwrap()
        .iter()
        .any(|p| p == "/forged/1.0.0"));
}

/// Defect 7: what a peer listed in identify is forgotten with its last
/// connection (a reconnect must not negotiate lazily on stale facts).
#[test]
fn peer_protocols_are_forgotten_on_disconnect() {
    let mut net = Net::new(2);
    let conn = net.connect(0, 1);
    let b = net.peer(1);
    assert!(net.nodes[0].peer_protocols(&b).is_some());
    net.nodes[0].close_connection(conn);
    net.run_until(Duration::from_secs(5), |net| {
        net.has(0, |e| {
            matches!(
                e,
                Event::ConnectionClosed {
                    reason: CloseReason::Local,
                    ..
                }
            )
        })
    });
    assert_eq!(net.nodes[0].peer_protocols(&b), None);
    // The other side was told why: our GoAway.
    net.run_until(Duration::from_secs(5), |net| {
        net.has(1, |e| {
            matches!(
                e,
                Event::ConnectionClosed {
                    reason: CloseReason::GoAway(yamux::GoAwayCode::NORMAL),
                    ..
                }
            )
        })
    });
}

/// A peer that hangs up without GoAway, with a stream still open, closed
/// the connection: `Eof`, not a session error.
#[test]
fn a_peer_hanging_up_with_an_open_stream_is_an_eof() {
    let mut net = Net::new(2);
    net.nodes[1].register_protocol(ECHO).unwrap();
    let conn = net.connect(0, 1);
    let b = net.peer(1);
    let _open = net.nodes[0].open_stream(net.now, b, [ECHO]).unwrap();
    net.run_until(Duration::from_secs(5), |net| {
        net.has(1, |e| matches!(e, Event::InboundStream { .. }))
    });
    let theirs = net.events[1]
        .iter()
        .find_map(|e| match e {
            Event::ConnectionEstablished { conn, .. } => Some(*conn),
            _ => None,
        })
        .unwrap();
    let _ = conn;
    net.nodes[1].handle_read_closed(net.now, theirs);
    assert!(
        core::iter::from_fn(|| net.nodes[1].poll_event()).any(|e| matches!(
            e,
            Event::ConnectionClosed {
                reason: CloseReason::Eof,
                ..
            }
        ))
    );
}

/// Defect 7: a dialer that proposes protocol after protocol on a stream
/// without reading our `na`s meets its own flow-control window: the
/// listener reads no further while an answer is unsent.
#[test]
fn a_stream_proposal_flood_is_pushed_back() {
    let mut net = Net::new(2);
    let conn = net.connect(0, 1);
    let sid = match &mut net.nodes[0].conns.get_mut(&conn).unwrap().state {
        ConnState::Muxed(session) => session.open_stream().unwrap(),
        _ => panic!("muxed"),
    };
    let mut proposals = b"\x13/multistream/1.0.0\n".to_vec();
    while proposals.len() < 16 << 20 {
        proposals.extend_from_slice(b"\x05/zzz\n");
    }
    let mut written = 0;
    let end = net.now + Duration::from_secs(10);
    while net.now < end {
        if let ConnState::Muxed(session) = &mut net.nodes[0].conns.get_mut(&conn).unwrap().state {
            while let Ok(n) = session.write(sid, &proposals[written..]) {
                written += n;
                if n == 0 || written == proposals.len() {
                    break;
                }
            }
        }
        net.nodes[0].flag_write(conn);
        while net.step() {}
        let next = net.wire.front().map(|(t, ..)| *t).unwrap_or(end);
        net.now = next.max(net.now + Duration::from_millis(1));
        let now = net.now;
        for n in &mut net.nodes {
            n.handle_timeout(now);
        }
    }
    assert!(written > 0);
    assert!(
        written < 4 << 20,
        "{written} bytes of proposals taken from a dialer that never reads"
    );
}

/// A refused `open_stream` (ACK backlog full) can be retried on a signal.
#[test]
fn a_refused_open_is_followed_by_streams_available() {
    let mut net = Net::new(2);
    net.nodes[0].config.yamux.ack_backlog = 2;
    net.nodes[1].register_protocol(ECHO).unwrap();
    let conn = net.connect(0, 1);
    let b = net.peer(1);
    // Identify is done: its streams are gone; two opens fill the backlog.
    let mut refused = false;
    for _ in 0..3 {
        match net.nodes[0].open_stream(net.now, b, [ECHO]) {
            Ok(_) => {}
            Err(OpenStreamError::Yamux(yamux::OpenError::AckBacklogFull)) => refused = true,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refused, "the third open is refused");
    net.run_until(Duration::from_secs(5), |net| {
        net.has(
            0,
            |e| matches!(e, Event::StreamsAvailable { conn: c, peer } if *c == conn && *peer == b),
        )
    });
    assert!(net.nodes[0].open_stream(net.now, b, [ECHO]).is_ok());
}

fn tcp4(ip: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0x04];
    a.extend_from_slice(&ip);
    a.extend_from_slice(&[0x06, 0x0f, 0xa1]);
    a
}

fn tcp6(ip: [u16; 8]) -> Vec<u8> {
    let mut a = vec![0x29];
    for part in ip {
        a.extend_from_slice(&part.to_be_bytes());
    }
    a.extend_from_slice(&[0x06, 0x0f, 0xa1]);
    a
}

/// js-libp2p's pending limit: at most 10 inbound upgrades at once; a slot
/// frees when an upgrade ends.
#[test]
fn inbound_upgrades_in_progress_are_limited() {
    let mut node = plaintext_node();
    let now = Instant::ZERO;
    let first = node.handle_inbound(now, tcp4([1, 0, 0, 1])).unwrap();
    for i in 2..=10 {
        node.handle_inbound(now, tcp4([1, 0, 0, i])).unwrap();
    }
    assert_eq!(
        node.handle_inbound(now, tcp4([1, 0, 0, 11])),
        Err(InboundError::PendingLimit)
    );
    // One upgrade finishes: its slot is free, the connection stays.
    raw_peer(&mut node, now, first, Security::Plaintext);
    assert!(node.handle_inbound(now, tcp4([1, 0, 0, 11])).is_ok());
    assert_eq!(
        node.handle_inbound(now, tcp4([1, 0, 0, 12])),
        Err(InboundError::PendingLimit)
    );
    // The rest time out, become inert and free their slots at once.
    node.handle_timeout(now + node.config().upgrade_timeout);
    assert!(node.handle_inbound(now, tcp4([1, 0, 0, 12])).is_ok());
}

/// go-libp2p's per-subnet limits: 8 per IPv4 address, 8 per IPv6 /56, 64
/// per IPv6 /48; loopback is exempt; a forgotten connection frees its place.
#[test]
fn inbound_connections_per_subnet_are_limited() {
    let mut config = Config::new(Keypair::from_secret_bytes([1; 32]));
    config.security = vec![Security::Plaintext];
    config.inbound.max_pending = 1000;
    let mut node = Node::new(Instant::ZERO, config).unwrap();
    let now = Instant::ZERO;
    let mut from_one = Vec::new();
    for _ in 0..8 {
        from_one.push(node.handle_inbound(now, tcp4([5, 6, 7, 8])).unwrap());
    }
    assert_eq!(
        node.handle_inbound(now, tcp4([5, 6, 7, 8])),
        Err(InboundError::SubnetLimit)
    );
    assert!(node.handle_inbound(now, tcp4([5, 6, 7, 9])).is_ok());
    node.handle_connection_closed(now, from_one[0]);
    assert!(node.handle_inbound(now, tcp4([5, 6, 7, 8])).is_ok());
    for _ in 0..20 {
        node.handle_inbound(now, tcp4([127, 0, 0, 1])).unwrap();
    }
    // IPv6: 8 per /56 ...
    let in56 = |i: u16| tcp6([0x2001, 0xdb8, 0x0100, 0, 0, 0, 0, i]);
    for i in 0..8 {
        node.handle_inbound(now, in56(i)).unwrap();
    }
    assert_eq!(
        node.handle_inbound(now, in56(99)),
        Err(InboundError::SubnetLimit)
    );
    // ... and 64 per /48 across its /56s.
    let mut in48 = 8;
    for net56 in 2..=20u16 {
        for i in 0..8 {
            if in48 == 64 {
                break;
            }
            node.handle_inbound(now, tcp6([0x2001, 0xdb8, 0x0100, net56 << 8, 0, 0, 0, i]))
                .unwrap();
            in48 += 1;
        }
    }
    assert_eq!(
        node.handle_inbound(now, tcp6([0x2001, 0xdb8, 0x0100, 0x3000, 0, 0, 0, 1])),
        Err(InboundError::SubnetLimit)
    );
    assert!(node
        .handle_inbound(now, tcp6([0x2001, 0xdb8, 0x0101, 0, 0, 0, 0, 1]))
        .is_ok());
}

/// Defect 4 (found in the futures-io binding, now the driver's rule): input
/// the node pushed back is offered again after every write, and the peer's
/// end of file is handed on only after it, so no ping of a burst that ends
/// with FIN goes unanswered.
#[test]
fn held_input_is_answered_before_the_end_of_file() {
    let mut node = plaintext_node();
    let now = Instant::ZERO;
    let conn = node.handle_inbound(now, tcp_addr(9)).unwrap();
    raw_peer(&mut node, now, conn, Security::Plaintext);
    const PINGS: u32 = 30_000;
    let wire = yamux_pings(PINGS);
    let mut sent = Vec::new();
    let mut taken = 0;
    let mut held_at_eof = 0;
    while taken < wire.len() {
        taken += node.handle_read(now, conn, &wire[taken..]);
        if taken == wire.len() {
            // The FIN right behind the last byte, while input is still held.
            held_at_eof = usize::from(node.read_capacity(conn) == 0);
            node.handle_read_closed(now, conn);
        }
        while node.poll_transmit(now, conn, &mut sent, 4096) > 0 {}
    }
    while node.poll_transmit(now, conn, &mut sent, 4096) > 0 {}
    let mut pongs = Vec::new();
    pongs_into(&sent, &mut pongs);
    assert_eq!(held_at_eof, 1, "the test must end with input held");
    assert_eq!(pongs.len(), PINGS as usize, "one pong per ping");
    assert!(pongs.iter().copied().eq(0..PINGS), "in order");
}

/// `n` yamux ping requests (Ping|SYN on the session), opaque values 0..n.
fn yamux_pings(n: u32) -> Vec<u8> {
    let mut frames = Vec::with_capacity(n as usize * 12);
    for v in 0..n {
        frames.extend_from_slice(&[0, 2, 0, 1, 0, 0, 0, 0]);
        frames.extend_from_slice(&v.to_be_bytes());
    }
    frames
}

/// The opaque values of the pong frames (Ping|ACK) in a stream of frames.
fn pongs_into(frames: &[u8], pongs: &mut Vec<u32>) {
    let mut at = 0;
    while at + 12 <= frames.len() {
        let h = &frames[at..at + 12];
        let value = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        at += 12;
        match h[1] {
            0 => at += value as usize,
            2 if h[3] == 2 => pongs.push(value),
            _ => {}
        }
    }
}

/// A dialer that pipelines proposals (header, an unknown protocol, then one
/// we serve, and data, in one write): the listener pauses for its `na` and
/// resumes with the bytes it had left, in order.
#[test]
fn pipelined_proposals_on_a_stream_are_answered_in_order() {
    let mut net = Net::new(2);
    net.nodes[1].register_protocol(ECHO).unwrap();
    let conn = net.connect(0, 1);
    let sid = match &mut net.nodes[0].conns.get_mut(&conn).unwrap().state {
        ConnState::Muxed(session) => session.open_stream().unwrap(),
        _ => panic!("muxed"),
    };
    let mut proposals = b"\x13/multistream/1.0.0\n\x05/zzz\n".to_vec();
    proposals.extend_from_slice(b"\x0c/echo/1.0.0\nhello");
    if let ConnState::Muxed(session) = &mut net.nodes[0].conns.get_mut(&conn).unwrap().state {
        assert_eq!(session.write(sid, &proposals), Ok(proposals.len()));
    }
    net.nodes[0].flag_write(conn);
    net.run_until(Duration::from_secs(5), |net| {
        net.has(
            1,
            |e| matches!(e, Event::InboundStream { protocol, .. } if protocol == ECHO),
        )
    });
    let stream = net.events[1]
        .iter()
        .find_map(|e| match e {
            Event::InboundStream { stream, .. } => Some(*stream),
            _ => None,
        })
        .unwrap();
    let mut buf = [0u8; 16];
    let n = net.nodes[1].stream_read(net.now, stream, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
}
