//! Loopback scenarios shared by the runtime adapters' tests. Each adapter's
//! `tests/loopback.rs` includes this file (`#[path]`) and runs the
//! scenarios on its own runtime: the binding is one, so its tests are too.
//!
//! The async helpers only use the host API (which works from any
//! executor); the raw peers are blocking `std::net` clients, to be run on
//! a thread that is not one of the runtime's.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use sansp2p::node::upgrade::{NoiseSecrets, Upgrade};
use sansp2p::node::{CloseReason, Event};
use sansp2p::node::{Config, Endpoint, Security};
use sansp2p::{Keypair, PeerId};
use sansp2p_futures_io::{Events, Host, Multiaddr};

pub const ECHO: &str = "/echo/1.0.0";

/// A host's config from a fixed identity.
pub fn config(seed: u8) -> Config {
    Config::new(Keypair::from_secret_bytes([seed; 32]))
}

/// The same, offering only `/plaintext/2.0.0` (for the raw peers).
pub fn plaintext_config(seed: u8) -> Config {
    let mut config = config(seed);
    config.security = vec![Security::Plaintext];
    config
}

/// Serves [`ECHO`] on `host`: each stream's bytes go back as they come,
/// and the stream closes after the peer's close.
pub fn serve_echo(host: &Host) {
    let incoming = host.accept(ECHO).expect("register the echo protocol");
    let spawner = host.clone();
    host.spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            spawner.spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.close().await;
            });
        }
    });
}

/// Listens on loopback; returns the address with `/p2p/<id>`.
pub async fn listening(h: &Host) -> Multiaddr {
    let addr = h
        .listen(&"/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    format!("{addr}/p2p/{}", h.local_peer_id()).parse().unwrap()
}

/// The socket address of a loopback multiaddr.
pub fn socket_addr(addr: &Multiaddr) -> SocketAddr {
    match sansp2p::addr::tcp_target(&addr.to_vec()) {
        Some(sansp2p::addr::TcpTarget::Ip(sa)) => sa,
        _ => panic!("{addr} is an IP and TCP address"),
    }
}

/// Sends `data` on a new echo stream while reading the reply; half-closes
/// after the last byte and returns what came back.
pub async fn echo(h: &Host, peer: PeerId, data: &[u8]) -> Vec<u8> {
    let mut s = h.open_stream(peer, ECHO).await.unwrap();
    let (mut r, mut w) = futures_lite::io::split(&mut s);
    let write = async {
        w.write_all(data).await.unwrap();
        w.close().await.unwrap();
    };
    let read = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    futures_lite::future::zip(write, read).await.1
}

/// A stream for a protocol `b` does not serve fails its negotiation, and
/// the connection carries on.
pub async fn unknown_protocol_is_refused(a: &Host, peer: PeerId) {
    let err = a.open_stream(peer, "/nobody/1.0.0").await.unwrap_err();
    assert!(
        matches!(
            err,
            sansp2p_futures_io::Error::StreamOpen(sansp2p::node::StreamOpenFailure::Negotiation(_))
        ),
        "{err:?}"
    );
    assert_eq!(echo(a, peer, b"still here").await, b"still here");
}

/// Circuit relay v2 through the host API: `r` serves as a relay, `b`
/// reserves a slot on it and is dialed through it by `a`, which dials the
/// relay itself first; the circuit is limited, so echo runs there only once
/// both ends allow it; a circuit `b`'s filter refuses fails typed.
pub async fn relayed_echo(r: &Host, b: &Host, a: &Host) {
    use sansp2p::node::{CircuitDialError, OpenStreamError};
    use sansp2p::relay::{RelayError, ServerConfig, Status};
    use sansp2p_futures_io::Error;

    r.serve_relay(ServerConfig::default());
    let relay_addr = listening(r).await;
    serve_echo(b);
    b.allow_on_limited(ECHO);
    let held = b.reserve(&relay_addr).await.unwrap();
    assert_eq!(held.relay, r.local_peer_id());
    let expected: Multiaddr = format!("{relay_addr}/p2p-circuit/p2p/{}", b.local_peer_id())
        .parse()
        .unwrap();
    assert_eq!(held.addrs, vec![expected.clone()]);
    assert_eq!(b.relay_addrs(), held.addrs);
    assert!(held.limit.is_some() && held.voucher.is_some());
    assert!(held.expires > Instant::now() + Duration::from_secs(3000));

    let b_id = b.local_peer_id();
    assert_eq!(a.dial(&expected).await.unwrap(), b_id);
    let conns = a.connections(&b_id);
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].remote_addr, expected);
    assert!(a.is_limited(conns[0].conn));
    let limited = a.open_stream(b_id, ECHO).await.unwrap_err();
    assert_eq!(limited, Error::OpenStream(OpenStreamError::Limited));
    a.allow_on_limited(ECHO);
    let data = payload(100_000);
    assert_eq!(fnv1a(&echo(a, b_id, &data).await), fnv1a(&data));
    a.ping(b_id).await.unwrap();

    // b takes no circuit from a any more.
    let a_id = a.local_peer_id();
    b.set_circuit_filter(move |_, initiator| *initiator != a_id);
    a.disconnect(&b_id);
    let err = a.dial(&expected).await.unwrap_err();
    assert_eq!(
        err,
        Error::CircuitDial(CircuitDialError::Relay(RelayError::Refused(
            Status::PermissionDenied
        )))
    );

    // Not a relay: the reservation fails typed.
    let a_addr = listening(a).await;
    let refused = b.reserve(&a_addr).await.unwrap_err();
    assert!(matches!(refused, Error::Reservation(_)), "{refused:?}");
}

/// Why the next connection to close did.
pub async fn next_close(events: &Events) -> CloseReason {
    loop {
        if let Event::ConnectionClosed { reason, .. } = events.recv().await.unwrap() {
            return reason;
        }
    }
}

/// `len` bytes of a pattern that repeats only every 2^32 bytes.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect()
}

/// FNV-1a, 64 bits.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

// ------------------------------------------------------------ raw peers

/// yamux Ping SYN on stream 0 with `opaque`.
fn ping_frame(opaque: u32) -> [u8; 12] {
    let mut f = [0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    f[8..].copy_from_slice(&opaque.to_be_bytes());
    f
}

/// Counts the Ping ACKs among the yamux frames in `bytes` whose opaque
/// value is below `n`; the frames must end on a frame boundary.
fn count_pongs(bytes: &[u8], n: u32) -> usize {
    let mut pongs = 0;
    let mut rest = bytes;
    while rest.len() >= 12 {
        let (header, body) = rest.split_at(12);
        let len = u32::from_be_bytes(header[8..].try_into().unwrap());
        if header[1] == 0 {
            // A data frame: its length is the payload that follows.
            rest = &body[len as usize..];
            continue;
        }
        if header[1..4] == [2, 0, 2] && len < n {
            pongs += 1;
        }
        rest = body;
    }
    assert!(rest.is_empty(), "{} bytes after the last frame", rest.len());
    pongs
}

/// A blocking client that ran the upgrade (multistream, plaintext,
/// multistream, yamux) as a dialer and now speaks raw yamux frames.
pub struct RawPeer {
    pub socket: TcpStream,
    /// yamux bytes that came with the end of the upgrade.
    pub received: Vec<u8>,
}

impl RawPeer {
    pub fn connect(addr: SocketAddr) -> RawPeer {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let key = Keypair::from_secret_bytes([60; 32]);
        let secrets = NoiseSecrets {
            static_secret: [61; 32],
            ephemeral_secret: [62; 32],
        };
        let mut up = Upgrade::new(
            Endpoint::Dialer,
            &key,
            &[Security::Plaintext],
            None,
            secrets,
        )
        .unwrap();
        let mut received = Vec::new();
        let mut out = Vec::new();
        loop {
            let _ = up.poll_transmit(&mut out);
            socket.write_all(&out).unwrap();
            out.clear();
            if let Some(outcome) = up.poll_event() {
                outcome.expect("the raw peer's upgrade");
                let _ = up.poll_transmit(&mut out);
                socket.write_all(&out).unwrap();
                return RawPeer { socket, received };
            }
            let used = up.handle_read(&received);
            received.drain(..used);
            if used == 0 {
                let mut buf = [0u8; 4096];
                let n = socket.read(&mut buf).unwrap();
                assert!(n > 0, "the host closed during the upgrade");
                received.extend_from_slice(&buf[..n]);
            }
        }
    }
}

/// The defect of the first binding: a peer sends `n` yamux pings in one
/// write and then its FIN; the host must answer every ping before it
/// closes. Returns how many pongs came back before the end of file.
pub fn pings_then_fin(addr: SocketAddr, n: u32) -> usize {
    let RawPeer {
        mut socket,
        mut received,
    } = RawPeer::connect(addr);
    let pings: Vec<u8> = (0..n).flat_map(ping_frame).collect();
    socket.write_all(&pings).unwrap();
    socket.shutdown(Shutdown::Write).unwrap();
    socket
        .read_to_end(&mut received)
        .expect("the host's FIN, not a reset or a timeout");
    count_pongs(&received, n)
}

/// A peer that floods pings and never reads: the host must give up on it
/// (write stall) and drop the socket. Floods for at most `limit`; returns
/// how long until a write failed (the host reset the connection it had
/// stopped reading).
pub fn flood_without_reading(addr: SocketAddr, limit: Duration) -> Duration {
    let RawPeer { mut socket, .. } = RawPeer::connect(addr);
    socket
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let burst: Vec<u8> = (0..4096).flat_map(ping_frame).collect();
    let start = Instant::now();
    while start.elapsed() < limit {
        match socket.write(&burst) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                // Dropped: what is left to read ends in EOF or a reset,
                // at once rather than at the read timeout.
                let mut rest = Vec::new();
                if let Err(e) = socket.read_to_end(&mut rest) {
                    assert_ne!(
                        e.kind(),
                        io::ErrorKind::WouldBlock,
                        "the socket is still open"
                    );
                }
                return start.elapsed();
            }
        }
    }
    panic!("the host still took our writes after {limit:?}");
}

/// Heartbeats through the host API: `agg` aggregates with a monitor, `b`
/// beats to it; `b` stops and the monitor alerts once, `b` beats again
/// and it recovers once; a bad target is a typed error.
pub async fn heartbeat_alert_and_recovery(agg: &Host, b: &Host) {
    use sansp2p::liveness::aggregator::{self, AggregatorConfig};
    use sansp2p::liveness::heartbeat::{BeaterConfigError, Heartbeat};
    use sansp2p::liveness::monitor::{self, MonitorConfig};
    use sansp2p_futures_io::Error;

    let period = Duration::from_millis(100);
    let events = agg.events();
    let config = AggregatorConfig {
        metric_ttl: AggregatorConfig::ttl_for_period(period) - Duration::from_millis(800),
        ..AggregatorConfig::default()
    };
    let mut monitor_config = MonitorConfig::default();
    monitor_config.check_interval = Duration::from_millis(100);
    agg.serve_heartbeat(config, monitor_config).unwrap();
    let target = listening(agg).await;
    let tune = |c: &mut sansp2p::liveness::heartbeat::BeaterConfig| c.period = period;
    let mut height = 0;
    let beat = b
        .start_heartbeat(&target, tune, move || {
            height += 1;
            Heartbeat {
                height,
                ..Heartbeat::default()
            }
        })
        .unwrap();
    let b_id = b.local_peer_id();
    // Beats 1, 2, 3 arrive in order.
    let mut heights = Vec::new();
    while heights.len() < 3 {
        if let Event::Aggregator(aggregator::Event::Beat {
            peer, heartbeat, ..
        }) = events.recv().await.unwrap()
        {
            assert_eq!(peer, b_id);
            heights.push(heartbeat.height);
        }
    }
    assert_eq!(heights, [1, 2, 3]);
    assert_eq!(agg.last_metrics("heartbeat").len(), 1);
    b.stop_heartbeat(beat);
    let next_monitor_event = || async {
        loop {
            if let Event::Monitor(e) = events.recv().await.unwrap() {
                return e;
            }
        }
    };
    let alert = next_monitor_event().await;
    assert!(
        matches!(&alert, monitor::Event::Alert { peer, .. } if *peer == b_id),
        "{alert:?}"
    );
    assert_eq!(agg.alerted(), vec![(b_id, "heartbeat".to_owned())]);
    b.start_heartbeat(&target, tune, Heartbeat::default)
        .unwrap();
    let recovered = next_monitor_event().await;
    assert!(
        matches!(&recovered, monitor::Event::Recovered { peer, .. } if *peer == b_id),
        "{recovered:?}"
    );
    assert!(agg.alerted().is_empty());
    // Typed refusals of bad targets.
    let no_id: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    let err = b
        .start_heartbeat(&no_id, |_| {}, Heartbeat::default)
        .unwrap_err();
    assert!(
        matches!(err, Error::Heartbeat(BeaterConfigError::NoPeerId)),
        "{err:?}"
    );
    let ours: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{b_id}").parse().unwrap();
    let err = b
        .start_heartbeat(&ours, |_| {}, Heartbeat::default)
        .unwrap_err();
    assert!(
        matches!(err, Error::Heartbeat(BeaterConfigError::TargetIsSelf)),
        "{err:?}"
    );
}

/// Peer maintenance through the host API: `a` keeps `b` as a static peer
/// and connects to it by itself, with no dial from the application.
pub async fn static_peer_is_kept(a: &Host, b: &Host) {
    let b_addr = listening(b).await;
    let b_id = b.local_peer_id();
    let bare: Multiaddr = b_addr
        .iter()
        .filter(|p| !matches!(p, multiaddr::Protocol::P2p(_)))
        .collect();
    let mut config = sansp2p::node::MaintainConfig::default();
    config.static_peers = vec![(b_id, vec![bare.to_vec()])];
    let events = a.events();
    a.enable_conn_manager(sansp2p::peers::connmgr::ConnManagerConfig::default())
        .unwrap();
    a.enable_peer_maintenance(config).unwrap();
    loop {
        if let Event::ConnectionEstablished { peer, .. } = events.recv().await.unwrap() {
            if peer == b_id {
                break;
            }
        }
    }
    assert_eq!(a.peer_counts(), Some((1, 1)));
    a.tag_peer(b_id, "useful", 5).unwrap();
    let stranger = Keypair::from_secret_bytes([200; 32]).peer_id();
    assert!(matches!(
        a.tag_peer(stranger, "useful", 5),
        Err(sansp2p_futures_io::Error::Tag(
            sansp2p::peers::connmgr::TagError::NotConnected
        ))
    ));
}

/// [`Host::shutdown`]: `a` shuts down while connected to `b` and while
/// peer maintenance keeps `b`; `b` sees the close, `a` does not come
/// back; then `b` shuts down and its listener, inbound streams and events
/// end.
pub async fn shutdown_is_graceful_and_final(a: &Host, b: &Host) {
    serve_echo(b);
    let b_addr = listening(b).await;
    let b_events = b.events();
    static_peer_is_kept(a, b).await;
    let b_id = b.local_peer_id();
    assert_eq!(echo(a, b_id, b"before").await, b"before");
    let started = Instant::now();
    a.shutdown().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert_eq!(
        next_close(&b_events).await,
        CloseReason::GoAway(sansp2p::yamux::GoAwayCode::NORMAL)
    );
    assert!(a.connections(&b_id).is_empty());
    assert!(matches!(
        a.dial(&b_addr).await,
        Err(sansp2p_futures_io::Error::Refused(
            sansp2p::node::DialError::ShuttingDown
        ))
    ));
    a.shutdown().await;
    // `b` goes too: its listener closes, its receivers end.
    let incoming = b.accept("/other/1.0.0").unwrap();
    b.shutdown().await;
    assert!(incoming.next().await.is_none());
    while b_events.recv().await.is_ok() {}
    let refused = TcpStream::connect_timeout(&socket_addr(&b_addr), Duration::from_secs(1));
    assert!(refused.is_err(), "the listener still accepts");
}

/// Perf through the host API, over noise: `a` runs against `b`, which
/// serves nothing until told to; then uploads, downloads and both, the
/// bytes counted exactly, and the connection still fine afterwards.
pub async fn perf_runs_over_loopback(a: &Host, b: &Host) {
    use sansp2p::node::PerfFailure;
    use sansp2p_futures_io::Error;
    let addr = listening(b).await;
    let peer = a.dial(&addr).await.unwrap();
    let refused = a.perf(peer, 1000, 1000).await;
    assert_eq!(
        refused,
        Err(Error::PerfFailed(PerfFailure::Unsupported)),
        "perf is off by default"
    );
    b.serve_perf(true);
    for (upload, download) in [(0, 0), (8 << 20, 0), (0, 8 << 20), (3 << 20, 5 << 20)] {
        let report = a.perf(peer, upload, download).await.unwrap();
        assert_eq!((report.uploaded, report.downloaded), (upload, download));
        assert!(
            report.total >= report.upload + report.download,
            "{report:?}"
        );
    }
    // Both ways at once on one connection.
    let (x, y) = futures_lite::future::zip(
        a.perf(peer, 1 << 20, 2 << 20),
        b.perf(a.local_peer_id(), 1, 1),
    )
    .await;
    assert!(x.is_ok());
    assert_eq!(
        y,
        Err(Error::PerfFailed(PerfFailure::Unsupported)),
        "a serves nothing"
    );
    assert!(a.ping(peer).await.is_ok());
}
