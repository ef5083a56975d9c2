//! `MioNode`s sharing one mio `Poll` over loopback TCP: a 1 MiB echo
//! through the non-blocking stream API, a ping, a refused dial, and a
//! circuit through a relay.

use std::time::{Duration, Instant as StdInstant};

use mio::{Events, Poll, Token};
use sansp2p::node::{Config, Event, StreamError, StreamHandle};
use sansp2p::Keypair;
use sansp2p_mio::MioNode;

const ECHO: &str = "/echo/1.0.0";

struct Loop {
    poll: Poll,
    events: Events,
    nodes: Vec<MioNode>,
    log: Vec<Vec<Event>>,
}

impl Loop {
    fn new() -> Self {
        Self::with(2)
    }

    /// `n` nodes, node `i` from seed `i + 1` with tokens from `100 + 10 000 i`.
    fn with(n: usize) -> Self {
        let mk = |seed: u8, token: usize| {
            MioNode::new(
                Config::new(Keypair::from_secret_bytes([seed; 32])),
                Token(token),
            )
            .unwrap()
        };
        Loop {
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(256),
            nodes: (0..n).map(|i| mk(i as u8 + 1, 100 + 10_000 * i)).collect(),
            log: (0..n).map(|_| Vec::new()).collect(),
        }
    }

    /// One turn: step every node, hand their events to `on_event`, then poll
    /// (without sleeping if anything happened).
    fn turn(&mut self, mut on_event: impl FnMut(usize, &mut MioNode, Event)) {
        let mut timeout = None::<Duration>;
        let mut handled = false;
        for i in 0..self.nodes.len() {
            let t = self.nodes[i].step(self.poll.registry()).unwrap();
            timeout = [timeout, t].into_iter().flatten().min();
            while let Some(e) = self.nodes[i].poll_event() {
                handled = true;
                self.log[i].push(e.clone());
                on_event(i, &mut self.nodes[i], e);
            }
        }
        let wait = if handled {
            Some(Duration::ZERO)
        } else {
            timeout.or(Some(Duration::from_millis(50)))
        };
        self.poll.poll(&mut self.events, wait).unwrap();
        for event in self.events.iter() {
            let registry = self.poll.registry();
            assert!(self
                .nodes
                .iter_mut()
                .any(|n| n.handle_event(registry, event)));
        }
    }

    /// Node `i` listens on a free loopback port; returns the address.
    fn listen(&mut self, i: usize) -> Vec<u8> {
        self.nodes[i]
            .node()
            .listen_on(sansp2p::addr::tcp_multiaddr("127.0.0.1:0".parse().unwrap()));
        self.until("listening", |l| {
            l.log[i]
                .iter()
                .any(|e| matches!(e, Event::Listening { .. }))
        });
        self.log[i]
            .iter()
            .find_map(|e| match e {
                Event::Listening { addr, .. } => Some(addr.clone()),
                _ => None,
            })
            .expect("a Listening event")
    }

    fn until(&mut self, what: &str, mut f: impl FnMut(&mut Self) -> bool) {
        let deadline = StdInstant::now() + Duration::from_secs(20);
        while !f(self) {
            assert!(StdInstant::now() < deadline, "timed out waiting for {what}");
            self.turn(|_, _, _| {});
        }
    }
}

#[test]
fn echo_one_mebibyte_and_ping_in_one_event_loop() {
    let mut l = Loop::new();
    l.nodes[1].node().register_protocol(ECHO).unwrap();
    let addr = l.listen(1);
    let server = l.nodes[1].node().local_peer_id();
    let now = l.nodes[0].now();
    l.nodes[0]
        .node()
        .dial(now, Some(server), vec![addr])
        .unwrap();
    l.until("identify", |l| {
        l.log[0]
            .iter()
            .any(|e| matches!(e, Event::Identified { .. }))
    });

    let now = l.nodes[0].now();
    l.nodes[0].node().ping(now, server).unwrap();
    l.until("pong", |l| {
        l.log[0]
            .iter()
            .any(|e| matches!(e, Event::PingSuccess { .. }))
    });

    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let now = l.nodes[0].now();
    let stream = l.nodes[0].node().open_stream(now, server, [ECHO]).unwrap();
    let (mut sent, mut closed) = (0, false);
    let mut server_stream: Option<StreamHandle> = None;
    let (mut echo_buf, mut server_eof, mut server_closed) = (Vec::new(), false, false);
    let mut got = Vec::new();
    let mut client_eof = false;
    let deadline = StdInstant::now() + Duration::from_secs(20);
    while !client_eof {
        assert!(
            StdInstant::now() < deadline,
            "echo stalled at {} of {} bytes",
            got.len(),
            data.len()
        );
        // Client: write what fits, half-close, read the echo.
        let c = &mut l.nodes[0];
        let now = c.now();
        while sent < data.len() {
            match c.node().stream_write(now, stream, &data[sent..]) {
                Ok(n) => sent += n,
                Err(StreamError::WouldBlock) => break,
                Err(e) => panic!("client write: {e}"),
            }
        }
        if sent == data.len() && !closed {
            c.node().stream_close(now, stream).unwrap();
            closed = true;
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match c.node().stream_read(now, stream, &mut buf) {
                Ok(0) => {
                    client_eof = true;
                    break;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(StreamError::WouldBlock | StreamError::NotOpen) => break,
                Err(e) => panic!("client read: {e}"),
            }
        }
        // Server: echo everything back, close after the client's FIN.
        if let Some(s) = server_stream {
            let srv = &mut l.nodes[1];
            let now = srv.now();
            while !server_eof {
                match srv.node().stream_read(now, s, &mut buf) {
                    Ok(0) => server_eof = true,
                    Ok(n) => echo_buf.extend_from_slice(&buf[..n]),
                    Err(StreamError::WouldBlock) => break,
                    Err(e) => panic!("server read: {e}"),
                }
            }
            while !echo_buf.is_empty() {
                match srv.node().stream_write(now, s, &echo_buf) {
                    Ok(n) => {
                        echo_buf.drain(..n);
                    }
                    Err(StreamError::WouldBlock) => break,
                    Err(e) => panic!("server write: {e}"),
                }
            }
            if server_eof && echo_buf.is_empty() && !server_closed {
                srv.node().stream_close(now, s).unwrap();
                server_closed = true;
            }
        }
        l.turn(|i, _, e| {
            if let (1, Event::InboundStream { stream, .. }) = (i, e) {
                server_stream = Some(stream);
            }
        });
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echo differs");
}

#[test]
fn dial_to_a_closed_port_fails() {
    let mut l = Loop::new();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let now = l.nodes[0].now();
    l.nodes[0]
        .node()
        .dial(now, None, vec![sansp2p::addr::tcp_multiaddr(free)])
        .unwrap();
    l.until("dial failure", |l| {
        l.log[0]
            .iter()
            .any(|e| matches!(e, Event::DialFailed { .. }))
    });
}

/// A peer that is still sending when the node closes gets our FIN and may
/// finish sending (the socket lingers, draining), instead of a reset.
#[test]
fn closing_on_a_peer_that_keeps_sending_ends_with_fin_not_reset() {
    use std::io::{Read, Write};
    let mut l = Loop::new();
    let addr = l.listen(1);
    let Some(sansp2p::addr::TcpTarget::Ip(target)) = sansp2p::addr::tcp_target(&addr) else {
        panic!("an IP and TCP address");
    };
    let peer = std::thread::spawn(move || -> Result<(), String> {
        let mut raw = std::net::TcpStream::connect(target).map_err(|e| e.to_string())?;
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A line that breaks multistream-select: the node closes.
        raw.write_all(b"\x13/multistream/1.0.0\n\x05junk\n")
            .unwrap();
        let mut got = Vec::new();
        raw.read_to_end(&mut got)
            .map_err(|e| format!("our FIN, not a reset, expected: {e}"))?;
        let chunk = vec![0x55u8; 64 * 1024];
        for i in 0..10 {
            std::thread::sleep(Duration::from_millis(20));
            raw.write_all(&chunk)
                .map_err(|e| format!("write {i} after our FIN failed ({e}): a reset"))?;
        }
        raw.shutdown(std::net::Shutdown::Write).unwrap();
        Ok(())
    });
    l.until("the peer to finish", |_| peer.is_finished());
    peer.join().unwrap().unwrap();
}

/// A peer that floods yamux pings and never reads our pongs is
/// disconnected at the write-stall deadline (issue 9: five such peers were
/// all still connected after 23 s), and its socket is released.
#[test]
fn a_peer_that_stops_reading_is_disconnected() {
    use sansp2p::node::upgrade::{Endpoint, NoiseSecrets, Upgrade};
    use sansp2p::node::{CloseReason, Security};
    use std::io::{Read, Write};

    let mut config = Config::new(Keypair::from_secret_bytes([1; 32]));
    config.security = vec![Security::Plaintext];
    config.io.write_stall_timeout = Duration::from_secs(1);
    let mut l = Loop::new();
    l.nodes[1] = MioNode::new(config, Token(10_000)).unwrap();
    let addr = l.listen(1);
    let Some(sansp2p::addr::TcpTarget::Ip(target)) = sansp2p::addr::tcp_target(&addr) else {
        panic!("an IP and TCP address");
    };
    let peer = std::thread::spawn(move || -> Result<u64, String> {
        let mut raw = std::net::TcpStream::connect(target).map_err(|e| e.to_string())?;
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Upgrade with our own machine as a plaintext dialer.
        let key = Keypair::from_secret_bytes([9; 32]);
        let secrets = NoiseSecrets {
            static_secret: [1; 32],
            ephemeral_secret: [2; 32],
        };
        let mut up = Upgrade::new(
            Endpoint::Dialer,
            &key,
            &[Security::Plaintext],
            None,
            secrets,
        )
        .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let mut pending = Vec::new();
        while !up.is_finished() {
            let mut out = Vec::new();
            let _ = up.poll_transmit(&mut out);
            raw.write_all(&out).map_err(|e| e.to_string())?;
            let n = raw.read(&mut buf).map_err(|e| e.to_string())?;
            pending.extend_from_slice(&buf[..n]);
            let used = up.handle_read(&pending);
            pending.drain(..used);
        }
        let mut out = Vec::new();
        let _ = up.poll_transmit(&mut out);
        raw.write_all(&out).map_err(|e| e.to_string())?;
        // Pings, never reading again, until the node gives up on us.
        raw.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut pings = Vec::new();
        for v in 0..4096u32 {
            pings.extend_from_slice(&[0, 2, 0, 1, 0, 0, 0, 0]);
            pings.extend_from_slice(&v.to_be_bytes());
        }
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            match raw.write(&pings) {
                Ok(_) => {}
                // Blocked: the node stopped reading. Keep the socket open
                // and keep trying, as a peer that simply never reads would.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // Reset or closed: the node gave up on us.
                Err(_) => break,
            }
        }
        Ok(started.elapsed().as_millis() as u64)
    });
    l.until("the write-stall close", |l| {
        l.log[1].iter().any(|e| {
            matches!(
                e,
                Event::ConnectionClosed {
                    reason: CloseReason::WriteStall,
                    ..
                }
            )
        })
    });
    let started = StdInstant::now();
    l.until("the peer to stop", |_| peer.is_finished());
    let _ = peer.join().unwrap().unwrap();
    // The socket goes after the linger at the latest.
    l.until("the socket to be released", |l| {
        l.nodes[1].node().connection_count() == 0
    });
    assert!(started.elapsed() < Duration::from_secs(9));
}

#[test]
fn a_circuit_through_a_relay_in_one_event_loop() {
    const R: usize = 0;
    const B: usize = 1;
    const A: usize = 2;
    let mut l = Loop::with(3);
    let now = l.nodes[R].now();
    let clock = l.nodes[R].wall_clock();
    l.nodes[R]
        .node()
        .serve_relay(now, clock, sansp2p::relay::ServerConfig::default());
    let relay_addr = l.listen(R);
    let relay = l.nodes[R].node().local_peer_id();
    for i in [B, A] {
        let now = l.nodes[i].now();
        let addr = relay_addr.clone();
        l.nodes[i]
            .node()
            .dial(now, Some(relay), vec![addr])
            .unwrap();
    }
    l.until("both connected to the relay", |l| {
        [B, A].iter().all(|&i| {
            l.log[i]
                .iter()
                .any(|e| matches!(e, Event::Identified { peer, .. } if *peer == relay))
        })
    });
    let (now, clock) = (l.nodes[B].now(), l.nodes[B].wall_clock());
    l.nodes[B].node().reserve(now, clock, relay).unwrap();
    l.until("the reservation", |l| {
        l.log[B]
            .iter()
            .any(|e| matches!(e, Event::ReservationAccepted { .. }))
    });
    let circuit = l.nodes[B].node().relay_addrs().remove(0);
    let target = l.nodes[B].node().local_peer_id();
    let dial_addr = [circuit, sansp2p::relay::p2p_suffix(&target)].concat();
    let now = l.nodes[A].now();
    let dial = l.nodes[A].node().dial_circuit(now, &dial_addr).unwrap();
    let deadline = StdInstant::now() + Duration::from_secs(20);
    let mut relayed = None;
    while relayed.is_none() {
        assert!(StdInstant::now() < deadline, "the circuit did not open");
        l.turn(|i, n, e| match (i, e) {
            (B, Event::CircuitRequest { request, .. }) => {
                let now = n.now();
                n.node().answer_circuit(now, request, Ok(())).unwrap();
            }
            (
                A,
                Event::Dialed {
                    dial: d,
                    conn,
                    peer,
                },
            ) if d == dial => {
                assert_eq!(peer, target);
                relayed = Some(conn);
            }
            (A, Event::CircuitDialFailed { error, .. }) => panic!("circuit dial: {error}"),
            _ => {}
        });
    }
    let conn = relayed.unwrap();
    assert!(l.nodes[A].node().is_relayed(conn) && l.nodes[A].node().is_limited(conn));
    // Ping runs on limited connections: bytes cross the circuit both ways.
    let now = l.nodes[A].now();
    l.nodes[A].node().ping(now, target).unwrap();
    l.until("a pong through the relay", |l| {
        l.log[A]
            .iter()
            .any(|e| matches!(e, Event::PingSuccess { peer, .. } if *peer == target))
    });
}

#[test]
fn heartbeats_in_one_event_loop_alert_once_and_recover() {
    use sansp2p::liveness::aggregator::{self, AggregatorConfig};
    use sansp2p::liveness::heartbeat::{BeaterConfig, Heartbeat};
    use sansp2p::liveness::monitor::{self, MonitorConfig};
    const AGG: usize = 0;
    const B: usize = 1;
    let mut l = Loop::with(2);
    let now = l.nodes[AGG].now();
    let period = Duration::from_millis(100);
    let config = AggregatorConfig {
        metric_ttl: Duration::from_millis(400),
        ..AggregatorConfig::default()
    };
    let mut monitor_config = MonitorConfig::default();
    monitor_config.check_interval = Duration::from_millis(100);
    l.nodes[AGG]
        .node()
        .serve_heartbeat(now, config, monitor_config)
        .unwrap();
    let addr = l.listen(AGG);
    let agg = l.nodes[AGG].node().local_peer_id();
    let target = [addr, sansp2p::relay::p2p_suffix(&agg)].concat();
    let start = |l: &mut Loop| {
        let now = l.nodes[B].now();
        let config = BeaterConfig {
            period,
            ..BeaterConfig::new(target.clone())
        };
        l.nodes[B]
            .node()
            .start_heartbeat(now, config, Box::new(Heartbeat::default))
            .unwrap()
            .unwrap()
    };
    let beat = start(&mut l);
    let beats = |l: &Loop| {
        l.log[AGG]
            .iter()
            .filter(|e| matches!(e, Event::Aggregator(aggregator::Event::Beat { .. })))
            .count()
    };
    l.until("three beats", |l| beats(l) >= 3);
    let now = l.nodes[B].now();
    l.nodes[B].node().stop_heartbeat(now, beat);
    let monitor_events = |l: &Loop| -> Vec<monitor::Event> {
        l.log[AGG]
            .iter()
            .filter_map(|e| match e {
                Event::Monitor(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    };
    l.until("the alert", |l| !monitor_events(l).is_empty());
    let quiet = StdInstant::now() + Duration::from_millis(800);
    while StdInstant::now() < quiet {
        l.turn(|_, _, _| {});
    }
    assert_eq!(monitor_events(&l).len(), 1, "{:?}", monitor_events(&l));
    start(&mut l);
    l.until("the recovery", |l| monitor_events(l).len() >= 2);
    let events = monitor_events(&l);
    assert!(
        matches!(events[0], monitor::Event::Alert { .. }),
        "{events:?}"
    );
    assert!(
        matches!(events[1], monitor::Event::Recovered { .. }),
        "{events:?}"
    );
}

#[test]
fn shutdown_closes_the_connection_and_frees_the_port() {
    let mut l = Loop::new();
    let addr = l.listen(1);
    let peer1 = l.nodes[1].node().local_peer_id();
    let now = l.nodes[0].now();
    l.nodes[0]
        .node()
        .dial(now, Some(peer1), vec![addr.clone()])
        .unwrap();
    l.until("connected", |l| {
        l.log[1]
            .iter()
            .any(|e| matches!(e, Event::ConnectionEstablished { .. }))
    });
    let now = l.nodes[1].now();
    l.nodes[1].node().shutdown(now);
    l.until("shut down", |l| {
        l.log[1]
            .iter()
            .any(|e| matches!(e, Event::ShutdownComplete))
    });
    assert!(!l.nodes[0].node().is_connected(&peer1));
    let sa = match sansp2p::addr::tcp_target(&addr) {
        Some(sansp2p::addr::TcpTarget::Ip(sa)) => sa,
        _ => unreachable!("a loopback address"),
    };
    // The listener is closed: the port can be bound again.
    std::net::TcpListener::bind(sa).expect("the port is free");
}
