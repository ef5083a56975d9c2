//! Our node against rust-libp2p 0.57, each talking to itself in this
//! process over loopback TCP with the same stack: `/noise` (or
//! `/plaintext/2.0.0` with `SECURITY=plaintext`), `/yamux/1.0.0`, identify
//! and ping running on every connection.
//!
//! ```text
//! cargo bench -p sansp2p-conformance --bench node_vs_rust_libp2p
//! ROUNDS=n   rounds counted (default 7, at least 1); one warm-up round runs first
//! SCALE=f    scales the connections per round (50), the pings (1000), the
//!            stream size (256 MiB) and the connections of the memory
//!            figure (16, kept within 4..=64); e.g. SCALE=0.1 for a quick look
//! THREADS=n  executor threads of each contender (default 1: smol's global
//!            executor for ours, a tokio runtime with one worker for theirs)
//! SECURITY=s `noise` (default) or `plaintext`, for both contenders
//! ```
//!
//! The measurements, each run once per contender per round, the two
//! contenders interleaved (ours, then theirs) because this machine's speed
//! drifts; the figures are the medians over the rounds of each round's own
//! ratio:
//!
//! * **setup**: from the dial to the first echo byte back, on a new
//!   connection each time (dial, upgrade, `/echo/1.0.0` stream negotiated,
//!   one byte echoed), then the connection is closed outside the timing.
//! * **ping1000**: 1000 sequential pings on one connection, each contender
//!   with its own ping: both reuse one outbound ping stream per connection
//!   (ours `Host::ping`, rust-libp2p's ping behaviour with its interval set
//!   to zero on a pair of nodes made for this). For reference the round line
//!   also shows rust-libp2p opening a new `libp2p-stream` stream per ping.
//! * **stream-throughput**: one stream, unidirectional, until the receiver
//!   has read every byte (stream already open when the clock starts). Ours
//!   runs twice: with the default noise cipher (`ring`'s, the feature the
//!   adapters turn on, as rust-libp2p's noise does) and with the portable
//!   pure-Rust one (`CipherBackend::Portable`, the core's no_std default),
//!   each against the same rust-libp2p figure.
//! * **stream-throughput-owned**: the same stream, ours written with
//!   `Stream::write_bytes` (a shared `Bytes` handed over, no copy into the
//!   stream) and read with `Stream::read_chunk` (received frames handed out
//!   as they are), against the same rust-libp2p figure. The `COPIES` lines
//!   give the payload copies per byte our muxers made on each side, with
//!   either API (see [`Copies`]).
//! * **bidi-throughput**: both directions of one connection busy at once,
//!   a stream each way of the same size, until both receivers are done.
//! * **memory**: live heap bytes, counted by this binary's global allocator
//!   (`cap`; the bytes asked for, not the allocator's own overhead), per
//!   settled connection and per idle stream (see [`Memory`]). Each
//!   contender gets a fresh listener and 16 (scaled) fresh dialers per
//!   round. A warm-up connection comes first, with as many idle streams on
//!   it as are measured, all kept to the end: what a host sets up once, or
//!   keeps after a burst (a queue's capacity), is not counted. Then each
//!   dialer dials the listener and the connection is waited on until
//!   identify has arrived both ways; the growth of live heap bytes over
//!   those connections, divided by their number, is the figure per
//!   connection. Then one of them opens 100 streams of a protocol whose
//!   handler on the listener takes each stream and holds it, neither reading
//!   nor closing, and the growth until the listener holds them all, divided
//!   by 100, is the figure per idle stream (100 stays below either yamux's
//!   limits on streams and unacknowledged streams). Both ends of every
//!   connection live in this process, so both are counted: the dialer's and
//!   the listener's (half of it is shown as "per end"). Every reading waits
//!   until the heap has stopped changing, and the rust-libp2p nodes' event
//!   queues (the harness's, not the node's) are emptied before it. Every
//!   connection is to a new peer, so per-peer state (identify's record of
//!   the peer, say) is part of the figure; rust-libp2p's includes its ping
//!   streams (its ping behaviour pings each new connection at once and keeps
//!   the stream), ours pings only when asked. The timing figures carry the
//!   counting allocator's cost too, the same for both.
//!
//! Each contender's application side (dialing, opening streams, writing,
//! pinging) runs as a task on that contender's own executor, as an
//! application on it would; the main thread only starts it and waits.
//!
//! Each `RATIO` line is the rust-libp2p time over ours (for throughput our
//! throughput over theirs, for memory their bytes over ours): above 1 means
//! ours is faster or holds less. The memory figures also come as
//! `MEMORY <contender> per connection: N bytes` lines.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, ping, StreamProtocol, Swarm};
use sansp2p::node::{Event, Security};
use sansp2p::security::noise::CipherBackend;
use sansp2p_conformance::rust_peer::{
    build_swarm, spawn_driver, Behaviour, BehaviourEvent, Command, Options, TheirEvent,
};
use sansp2p_smol::{Host, Multiaddr};
use tokio::sync::{mpsc, oneshot};

const ECHO: &str = "/echo/1.0.0";
const SINK: &str = "/sansp2p-bench/sink/1.0.0";
/// Our sink that reads with `Stream::read_chunk` (owned buffers).
const SINK_OWNED: &str = "/sansp2p-bench/sink-owned/1.0.0";
const PING: &str = "/ipfs/ping/1.0.0";
/// Served by the memory figure's listeners: streams are held, unread.
const IDLE: &str = "/sansp2p-bench/idle/1.0.0";

/// Counts live heap bytes, for the memory figures.
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Longest any one measurement may take before the bench gives up.
const LIMIT: Duration = Duration::from_secs(300);
/// Write size of the throughput sender and read size of the receiver.
const CHUNK: usize = 64 * 1024;

// -------------------------------------------------------------- parameters

#[derive(Debug, Clone, Copy)]
struct Params {
    rounds: usize,
    setups: usize,
    pings: usize,
    stream_bytes: u64,
    threads: usize,
    /// Connections and idle streams of the memory figure.
    mem_conns: usize,
    mem_streams: usize,
}

impl Params {
    fn from_env() -> Params {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let scale: f64 = var("SCALE").map_or(1.0, |v| v.parse().expect("SCALE is a number"));
        assert!(scale > 0.0, "SCALE must be positive");
        let scaled = |n: f64| ((n * scale).round() as usize).max(1);
        let chunks = scaled((256 * 1024 * 1024 / CHUNK) as f64) as u64;
        Params {
            rounds: var("ROUNDS").map_or(7, |v| v.parse().expect("ROUNDS is a count")),
            setups: scaled(50.0),
            pings: scaled(1000.0),
            stream_bytes: chunks * CHUNK as u64,
            threads: var("THREADS").map_or(1, |v| v.parse().expect("THREADS is a count")),
            mem_conns: ((16.0 * scale).round() as usize).clamp(4, MEM_MAX_CONNS),
            mem_streams: 100,
        }
        .checked()
    }

    fn checked(self) -> Params {
        assert!(self.rounds >= 1, "ROUNDS must be at least 1");
        assert!(self.threads >= 1, "THREADS must be at least 1");
        self
    }

    /// The warm-up round: small versions of everything.
    fn warm_up(self) -> Params {
        Params {
            setups: self.setups.min(5),
            pings: self.pings.min(50),
            stream_bytes: self.stream_bytes.min(16 * 1024 * 1024),
            ..self
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn show(d: Duration) -> String {
    let s = secs(d);
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn rate(bytes: u64, d: Duration) -> String {
    format!("{:.2} GiB/s", bytes as f64 / secs(d) / (1u64 << 30) as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn pattern() -> Vec<u8> {
    (0..CHUNK).map(|i| (i * 7 + i / 256) as u8).collect()
}

// ------------------------------------------------------------------ ours

/// Fails the bench if `fut` does not finish within [`LIMIT`] (on smol).
async fn smol_limit<T>(what: &str, fut: impl Future<Output = T>) -> T {
    smol::future::or(async { Some(fut.await) }, async {
        smol::Timer::after(LIMIT).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("ours: {what} took longer than {LIMIT:?}"))
}

/// Our contender: `a` holds one connection to `b` (pings, streams), `c`
/// dials `b` afresh for every setup.
struct Ours {
    a: Host,
    /// It serves echo, the sink and ping (and opens the stream towards
    /// `a`'s sink in the bidirectional case).
    b: Host,
    b_id: sansp2p::PeerId,
    b_addr: Multiaddr,
    c: Host,
    c_events: async_channel::Receiver<Event>,
    /// What `b`'s sink, then `a`'s, read per stream.
    sink_done: async_channel::Receiver<u64>,
    a_sink_done: async_channel::Receiver<u64>,
    /// What `b`'s owned-buffer sink read per stream.
    owned_done: async_channel::Receiver<u64>,
    data: Vec<u8>,
}

/// Payload bytes copied by the sending and the receiving muxer, summed
/// over a host's connections to one peer (see [`Copies`]).
fn copied(host: &Host, peer: &sansp2p::PeerId) -> (u64, u64) {
    host.muxer_stats(peer).iter().fold((0, 0), |(tx, rx), s| {
        (
            tx + s.bytes_written + s.bytes_transmit_copied,
            rx + s.bytes_received + s.bytes_read_copied,
        )
    })
}

/// Copies per byte delivered on each side of our one-stream transfer, from
/// the muxers' own counts: on the sender, into the stream's send buffer
/// (`write`, not `write_bytes`) and into the frame being sealed; on the
/// receiver, into the stream's receive buffer (unless the frame's bytes
/// were kept as a slice of the decrypted frame) and out of it into the
/// reader's buffer (`read`, not `read_chunk`). The cipher's pass over the
/// bytes and the kernel's copies are not counted: every stack has them.
#[derive(Debug, Clone, Copy)]
struct Copies {
    send: f64,
    receive: f64,
}

/// The security protocol both contenders use (`SECURITY`).
fn security() -> Security {
    match std::env::var("SECURITY").as_deref() {
        Ok("plaintext") => Security::Plaintext,
        Ok("noise") | Err(_) => Security::Noise,
        Ok(other) => panic!("SECURITY must be noise or plaintext, not {other}"),
    }
}

fn our_host(seed: u8, cipher: CipherBackend) -> Host {
    let key = sansp2p::Keypair::from_secret_bytes([seed; 32]);
    let mut config = sansp2p_smol::Config::new(key);
    config.security = vec![security()];
    config.noise_cipher = cipher;
    sansp2p_smol::new_host(config).expect("our host starts")
}

/// Serves [`SINK`] on `host`: reads each stream to its end and reports
/// how many bytes it read.
fn our_sink(host: &Host, protocol: &str) -> async_channel::Receiver<u64> {
    let owned = protocol == SINK_OWNED;
    let sink = host.accept(protocol).expect("register sink");
    let (done_tx, done) = async_channel::unbounded();
    smol::spawn(async move {
        while let Some((_, mut s)) = sink.next().await {
            let done = done_tx.clone();
            smol::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                let mut total = 0u64;
                if owned {
                    while let Ok(Some(chunk)) = s.read_chunk(CHUNK).await {
                        total += chunk.len() as u64;
                    }
                } else {
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        total += n as u64;
                    }
                }
                let _ = s.close().await;
                let _ = done.send(total).await;
            })
            .detach();
        }
    })
    .detach();
    done
}

/// Writes `bytes` (a multiple of [`CHUNK`]) to a new `protocol` sink
/// stream of `from` towards `to` and waits for `done` to report them all
/// read. Towards [`SINK_OWNED`] it writes with `write_bytes`, handing over
/// a shared `Bytes` of the pattern (as an application sending buffers it
/// owns would), otherwise with `write_all`.
async fn our_send(
    from: Host,
    to: sansp2p::PeerId,
    protocol: &'static str,
    data: Vec<u8>,
    bytes: u64,
    done: async_channel::Receiver<u64>,
) {
    let mut s = from.open_stream(to, protocol).await.expect("sink");
    let owned = sansp2p_smol::Bytes::from(data.clone());
    let mut sent = 0u64;
    while sent < bytes {
        if protocol == SINK_OWNED {
            s.write_bytes(owned.clone()).await.expect("write");
        } else {
            s.write_all(&data).await.expect("write");
        }
        sent += CHUNK as u64;
    }
    s.close().await.expect("close");
    let got = done.recv().await.expect("the sink reports");
    assert_eq!(got, bytes, "the receiver read everything");
}

impl Ours {
    /// Our three hosts; `seed` keeps the identities of each contender
    /// instance apart.
    fn start(cipher: CipherBackend, seed: u8) -> Ours {
        smol::block_on(smol_limit("start", async {
            let (a, b, c) = (
                our_host(seed, cipher),
                our_host(seed + 1, cipher),
                our_host(seed + 2, cipher),
            );
            let echo = b.accept(ECHO).expect("register echo");
            smol::spawn(async move {
                while let Some((_, mut s)) = echo.next().await {
                    smol::spawn(async move {
                        let mut data = Vec::new();
                        if s.read_to_end(&mut data).await.is_ok()
                            && s.write_all(&data).await.is_ok()
                        {
                            let _ = s.close().await;
                        }
                    })
                    .detach();
                }
            })
            .detach();
            let sink_done = our_sink(&b, SINK);
            let a_sink_done = our_sink(&a, SINK);
            let owned_done = our_sink(&b, SINK_OWNED);
            let bound = b
                .listen(&"/ip4/127.0.0.1/tcp/0".parse().expect("valid"))
                .await
                .expect("listen");
            let b_id = b.local_peer_id();
            let b_addr: Multiaddr = format!("{bound}/p2p/{b_id}").parse().expect("valid");
            a.dial(&b_addr).await.expect("a dials b");
            // Identify done both ways: streams of `a` negotiate lazily, as
            // on any settled connection.
            a.wait_identified(&b_id, LIMIT).await.expect("b identifies");
            b.wait_identified(&a.local_peer_id(), LIMIT)
                .await
                .expect("a identifies");
            let c_events = c.events();
            Ours {
                a,
                b,
                b_id,
                b_addr,
                c,
                c_events,
                sink_done,
                a_sink_done,
                owned_done,
                data: pattern(),
            }
        }))
    }

    /// Runs `task` on smol's executor (where the node's own tasks run, as an
    /// application's would) and waits for it.
    fn run<T: Send + 'static>(
        what: &'static str,
        task: impl Future<Output = T> + Send + 'static,
    ) -> T {
        smol::block_on(smol_limit(what, smol::spawn(task)))
    }

    fn setup(&self, n: usize) -> Duration {
        let (c, events, b_addr) = (self.c.clone(), self.c_events.clone(), self.b_addr.clone());
        Ours::run("setup", async move {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let start = Instant::now();
                let peer = c.dial(&b_addr).await.expect("c dials b");
                let mut s = c.open_stream(peer, ECHO).await.expect("echo stream");
                s.write_all(&[42]).await.expect("write");
                s.close().await.expect("close");
                let mut byte = [0u8; 1];
                s.read_exact(&mut byte).await.expect("echo byte");
                total += start.elapsed();
                assert_eq!(byte, [42]);
                drop(s);
                // Closed outside the timing; the next dial must find no
                // connection to reuse.
                c.disconnect(&peer);
                loop {
                    match events.recv().await.expect("c's events") {
                        Event::ConnectionClosed { peer: Some(p), .. } if p == peer => break,
                        _ => {}
                    }
                }
                assert!(c.connections(&peer).is_empty());
            }
            total / n as u32
        })
    }

    fn ping(&self, n: usize) -> Duration {
        let (a, b_id) = (self.a.clone(), self.b_id);
        Ours::run("pings", async move {
            let start = Instant::now();
            for _ in 0..n {
                a.ping(b_id).await.expect("ping");
            }
            start.elapsed()
        })
    }

    /// One stream of `bytes` from `a` to `b`, written with `write_all` and
    /// read with `read` (or, `owned`, with `write_bytes` and `read_chunk`).
    fn stream(&self, bytes: u64, owned: bool) -> (Duration, Copies) {
        let (protocol, done) = if owned {
            (SINK_OWNED, self.owned_done.clone())
        } else {
            (SINK, self.sink_done.clone())
        };
        let (a, b_id) = (self.a.clone(), self.b_id);
        let a_id = a.local_peer_id();
        let data = self.data.clone();
        let before = (copied(&self.a, &b_id).0, copied(&self.b, &a_id).1);
        let took = Ours::run("stream", async move {
            let start = Instant::now();
            our_send(a, b_id, protocol, data, bytes, done).await;
            start.elapsed()
        });
        let after = (copied(&self.a, &b_id).0, copied(&self.b, &a_id).1);
        let per_byte = |from: u64, to: u64| (to - from) as f64 / bytes as f64;
        let copies = Copies {
            send: per_byte(before.0, after.0),
            receive: per_byte(before.1, after.1),
        };
        (took, copies)
    }

    /// `bytes` each way at once on the one connection of `a` and `b`.
    fn bidi(&self, bytes: u64) -> Duration {
        let (a, b) = (self.a.clone(), self.b.clone());
        let (a_id, b_id) = (a.local_peer_id(), self.b_id);
        let (to_b, to_a) = (self.sink_done.clone(), self.a_sink_done.clone());
        let data = self.data.clone();
        Ours::run("bidi", async move {
            let start = Instant::now();
            let back = smol::spawn(our_send(b, a_id, SINK, data.clone(), bytes, to_a));
            our_send(a, b_id, SINK, data, bytes, to_b).await;
            back.await;
            start.elapsed()
        })
    }
}

// ------------------------------------------------------------ rust-libp2p

/// One rust-libp2p node: a task owns its swarm, runs commands and forwards
/// events (dropping the node ends the task and closes its connections).
struct RustNode {
    id: libp2p::PeerId,
    addr: Option<Multiaddr>,
    control: libp2p_stream::Control,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<TheirEvent>,
}

impl RustNode {
    /// Builds a node (in a runtime context); `listen` makes it listen on
    /// loopback first; `ping_interval` sets its ping behaviour's interval.
    async fn start(seed: u8, listen: bool, ping_interval: Duration) -> RustNode {
        let mut swarm = build_swarm(
            seed,
            Options {
                protocol_version: "/bench/1.0.0".into(),
                agent_version: None,
                ping: ping::Config::new().with_interval(ping_interval),
                idle_timeout: Duration::from_secs(600),
                security: security(),
            },
        );
        let id = *swarm.local_peer_id();
        let addr = if listen {
            swarm
                .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("valid"))
                .expect("listen");
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    break Some(address);
                }
            }
        } else {
            None
        };
        let control = swarm.behaviour().stream.new_control();
        let (commands, events) = spawn_driver(swarm);
        RustNode {
            id,
            addr,
            control,
            commands,
            events,
        }
    }

    async fn with_swarm<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<Behaviour>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        let command: Command = Box::new(move |swarm| {
            let _ = tx.send(f(swarm));
        });
        if self.commands.send(command).is_err() {
            panic!("the rust-libp2p driver is gone");
        }
        rx.await.expect("the rust-libp2p driver answers")
    }

    /// Discards events until `pick` accepts one.
    async fn wait_for<T>(&mut self, mut pick: impl FnMut(&TheirEvent) -> Option<T>) -> T {
        loop {
            let event = self
                .events
                .recv()
                .await
                .expect("the rust-libp2p driver runs");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    }

    /// The result of this node's next ping.
    async fn next_ping(&mut self) -> Result<(), String> {
        self.wait_for(|e| match e {
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { result, .. })) => {
                Some(result.as_ref().map(|_| ()).map_err(|e| e.to_string()))
            }
            _ => None,
        })
        .await
    }

    /// Dials `peer` at `addr` on a new connection; returns once it is up.
    async fn connect(
        &mut self,
        peer: libp2p::PeerId,
        addr: Multiaddr,
    ) -> libp2p::swarm::ConnectionId {
        let opts = DialOpts::peer_id(peer)
            .addresses(vec![addr])
            .condition(PeerCondition::Always)
            .build();
        self.with_swarm(move |s| s.dial(opts))
            .await
            .expect("the dial starts");
        self.wait_for(|e| match e {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } if *peer_id == peer => Some(*connection_id),
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                panic!("rust-libp2p dial: {error}")
            }
            _ => None,
        })
        .await
    }
}

/// What the rust-libp2p application tasks work with; moved into each
/// measurement's task and back.
struct TheirApp {
    a: RustNode,
    c: RustNode,
    b_id: libp2p::PeerId,
    b_addr: Multiaddr,
    /// `b`'s streams, for the bidirectional case.
    b_control: libp2p_stream::Control,
    /// What `b`'s sink, then `a`'s, read per stream.
    sink_done: mpsc::UnboundedReceiver<u64>,
    a_sink_done: mpsc::UnboundedReceiver<u64>,
    data: Vec<u8>,
}

/// Serves [`SINK`] on `control` (on the tokio runtime): reads each stream
/// to its end and reports how many bytes it read.
fn their_sink(control: &mut libp2p_stream::Control) -> mpsc::UnboundedReceiver<u64> {
    let mut sink = control.accept(StreamProtocol::new(SINK)).expect("sink");
    let (done_tx, done) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((_, mut s)) = sink.next().await {
            let done = done_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                let mut total = 0u64;
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    total += n as u64;
                }
                let _ = s.close().await;
                let _ = done.send(total);
            });
        }
    });
    done
}

/// Writes `bytes` (a multiple of [`CHUNK`]) to a new sink stream towards
/// `to` and waits for `done` to report them all read.
async fn their_send(
    mut control: libp2p_stream::Control,
    to: libp2p::PeerId,
    data: &[u8],
    bytes: u64,
    done: &mut mpsc::UnboundedReceiver<u64>,
) {
    let mut s = control
        .open_stream(to, StreamProtocol::new(SINK))
        .await
        .expect("sink");
    let mut sent = 0u64;
    while sent < bytes {
        s.write_all(data).await.expect("write");
        sent += CHUNK as u64;
    }
    s.close().await.expect("close");
    let got = done.recv().await.expect("the sink reports");
    assert_eq!(got, bytes, "the receiver read everything");
}

/// The rust-libp2p contender, mirroring [`Ours`]; the native ping pair is
/// made per round (its pings never stop while it is connected).
struct Theirs {
    runtime: tokio::runtime::Runtime,
    app: Option<TheirApp>,
    /// Kept alive: it serves echo, the sink and ping.
    _b: RustNode,
    next_seed: u8,
}

async fn tokio_limit<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("rust-libp2p: {what} took longer than {LIMIT:?}"))
}

impl Theirs {
    fn start(threads: usize) -> Theirs {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("rust-libp2p")
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (app, b) = runtime.block_on(tokio_limit("start", async {
            let never = Duration::from_secs(3600);
            let mut a = RustNode::start(21, false, never).await;
            let mut b = RustNode::start(22, true, never).await;
            let c = RustNode::start(23, false, never).await;
            let mut echo = b.control.accept(StreamProtocol::new(ECHO)).expect("echo");
            tokio::spawn(async move {
                while let Some((_, mut s)) = echo.next().await {
                    tokio::spawn(async move {
                        let mut data = Vec::new();
                        if s.read_to_end(&mut data).await.is_ok()
                            && s.write_all(&data).await.is_ok()
                        {
                            let _ = s.close().await;
                        }
                    });
                }
            });
            let sink_done = their_sink(&mut b.control);
            let a_sink_done = their_sink(&mut a.control);
            let b_addr = b.addr.clone().expect("b listens");
            a.connect(b.id, b_addr.clone()).await;
            // As for ours: identify done both ways before measuring.
            let a_id = a.id;
            a.wait_for(|e| {
                matches!(
                    e,
                    SwarmEvent::Behaviour(BehaviourEvent::Identify(
                        identify::Event::Received { .. }
                    ))
                )
                .then_some(())
            })
            .await;
            b.wait_for(|e| match e {
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                    peer_id,
                    ..
                })) if *peer_id == a_id => Some(()),
                _ => None,
            })
            .await;
            let app = TheirApp {
                a,
                c,
                b_id: b.id,
                b_addr,
                b_control: b.control.clone(),
                sink_done,
                a_sink_done,
                data: pattern(),
            };
            (app, b)
        }));
        Theirs {
            runtime,
            app: Some(app),
            _b: b,
            next_seed: 100,
        }
    }

    /// Runs `task` on the tokio runtime (where the swarms and their
    /// connections run, as an application's tasks would) and waits for it.
    fn run<T: Send + 'static, F>(
        &mut self,
        what: &'static str,
        task: impl FnOnce(TheirApp) -> F,
    ) -> T
    where
        F: Future<Output = (TheirApp, T)> + Send + 'static,
    {
        let app = self.app.take().expect("no measurement runs");
        let handle = self.runtime.spawn(task(app));
        let (app, result) = self
            .runtime
            .block_on(tokio_limit(what, handle))
            .expect("the measurement task");
        self.app = Some(app);
        result
    }

    fn setup(&mut self, n: usize) -> Duration {
        self.run("setup", move |mut app| async move {
            let mut total = Duration::ZERO;
            let (b_id, b_addr) = (app.b_id, app.b_addr.clone());
            let c = &mut app.c;
            for _ in 0..n {
                let start = Instant::now();
                let conn = c.connect(b_id, b_addr.clone()).await;
                let mut s = c
                    .control
                    .open_stream(b_id, StreamProtocol::new(ECHO))
                    .await
                    .expect("echo stream");
                s.write_all(&[42]).await.expect("write");
                s.close().await.expect("close");
                let mut byte = [0u8; 1];
                s.read_exact(&mut byte).await.expect("echo byte");
                total += start.elapsed();
                assert_eq!(byte, [42]);
                drop(s);
                c.with_swarm(move |s| s.close_connection(conn)).await;
                c.wait_for(|e| match e {
                    SwarmEvent::ConnectionClosed { connection_id, .. }
                        if *connection_id == conn =>
                    {
                        Some(())
                    }
                    _ => None,
                })
                .await;
            }
            (app, total / n as u32)
        })
    }

    /// rust-libp2p's own ping: a fresh pair whose dialer pings with a zero
    /// interval on one stream; the time of `n` pings after the first.
    fn ping_native(&mut self, n: usize) -> Duration {
        let seeds = (self.next_seed, self.next_seed + 1);
        self.next_seed += 2;
        self.run("native pings", move |app| async move {
            let mut pinger = RustNode::start(seeds.0, false, Duration::ZERO).await;
            let target = RustNode::start(seeds.1, true, Duration::from_secs(3600)).await;
            let addr = target.addr.clone().expect("listens");
            pinger.connect(target.id, addr).await;
            // The first ping also opens the stream.
            pinger.next_ping().await.expect("first ping");
            let start = Instant::now();
            for _ in 0..n {
                pinger.next_ping().await.expect("ping");
            }
            let elapsed = start.elapsed();
            drop(target);
            (app, elapsed)
        })
    }

    /// rust-libp2p pinging the way we do: a new stream per ping.
    fn ping_stream_per_ping(&mut self, n: usize) -> Duration {
        self.run("stream-per-ping pings", move |mut app| async move {
            let b_id = app.b_id;
            let control = &mut app.a.control;
            let start = Instant::now();
            for i in 0..n {
                let mut s = control
                    .open_stream(b_id, StreamProtocol::new(PING))
                    .await
                    .expect("ping stream");
                let payload = [i as u8; 32];
                s.write_all(&payload).await.expect("write");
                let mut echo = [0u8; 32];
                s.read_exact(&mut echo).await.expect("echo");
                assert_eq!(echo, payload);
                s.close().await.expect("close");
            }
            let elapsed = start.elapsed();
            (app, elapsed)
        })
    }

    fn stream(&mut self, bytes: u64) -> Duration {
        self.run("stream", move |mut app| async move {
            let control = app.a.control.clone();
            let start = Instant::now();
            their_send(control, app.b_id, &app.data, bytes, &mut app.sink_done).await;
            let elapsed = start.elapsed();
            (app, elapsed)
        })
    }

    /// `bytes` each way at once on the one connection of `a` and `b`.
    fn bidi(&mut self, bytes: u64) -> Duration {
        self.run("bidi", move |mut app| async move {
            let (a_id, b_id) = (app.a.id, app.b_id);
            let (a_control, b_control) = (app.a.control.clone(), app.b_control.clone());
            let data = app.data.clone();
            let mut to_a = std::mem::replace(&mut app.a_sink_done, mpsc::unbounded_channel().1);
            let start = Instant::now();
            let back = tokio::spawn(async move {
                their_send(b_control, a_id, &data, bytes, &mut to_a).await;
                to_a
            });
            their_send(a_control, b_id, &app.data, bytes, &mut app.sink_done).await;
            app.a_sink_done = back.await.expect("the stream back");
            let elapsed = start.elapsed();
            (app, elapsed)
        })
    }
}

// ------------------------------------------------------------------ memory

/// Identity seed of a memory listener; its dialers take the seeds after it
/// (one byte each, hence at most [`MEM_MAX_CONNS`] connections).
const MEM_SEED: u8 = 160;
const MEM_MAX_CONNS: usize = 64;

/// Live heap bytes one contender holds, from one run of [`Ours::memory`] or
/// [`Theirs::memory`]. Both ends of every connection live in this process
/// and both are counted.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// Per settled connection (noise or plaintext, yamux, identify done both
    /// ways, no user stream): the dialer's side and the listener's.
    per_connection: f64,
    /// Per idle stream on a settled connection (negotiated, held by the
    /// opener and by the listener's handler, nothing written): both ends.
    per_stream: f64,
}

impl Memory {
    /// How the [`figures`](Self::figures) are shown, and their `RATIO` names.
    const NAMES: [(&'static str, &'static str); 2] = [
        ("per connection", "memory-per-connection"),
        ("per idle stream", "memory-per-idle-stream"),
    ];

    fn figures(&self) -> [f64; 2] {
        [self.per_connection, self.per_stream]
    }
}

/// Live heap bytes once they have stopped changing: read every 5 ms, each
/// time after `drain`, until three readings in a row agree (or a second has
/// passed: then the last reading).
fn quiet_heap(drain: &mut dyn FnMut()) -> isize {
    let mut last = ALLOC.allocated();
    let mut same = 0;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(5));
        drain();
        let now = ALLOC.allocated();
        if now == last {
            same += 1;
            if same == 3 {
                break;
            }
        } else {
            same = 0;
            last = now;
        }
    }
    last as isize
}

/// The heap's growth from `before` to `after`, per one of `n`.
fn per(before: isize, after: isize, n: usize) -> f64 {
    (after - before) as f64 / n as f64
}

fn show_bytes(b: f64) -> String {
    if b.abs() >= 10.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// Serves [`IDLE`] on `host`: every stream goes, unread and open, to the
/// returned receiver (whoever holds it there keeps it alive).
fn our_idle(host: &Host) -> async_channel::Receiver<sansp2p_smol::Stream> {
    let incoming = host.accept(IDLE).expect("register idle");
    let (tx, rx) = async_channel::unbounded();
    smol::spawn(async move {
        while let Some((_, s)) = incoming.next().await {
            if tx.send(s).await.is_err() {
                break;
            }
        }
    })
    .detach();
    rx
}

/// Dials `listener` from `dialer` and waits until identify has arrived
/// both ways (polled, so that no event subscription of the waiting itself
/// stays behind in the hosts).
async fn our_settled_connection(dialer: &Host, listener: &Host, addr: &Multiaddr) {
    let (d_id, l_id) = (dialer.local_peer_id(), listener.local_peer_id());
    dialer.dial(addr).await.expect("dial the memory listener");
    while dialer.identify_info(&l_id).is_none() || listener.identify_info(&d_id).is_none() {
        smol::Timer::after(Duration::from_millis(1)).await;
    }
}

/// Both ends of idle streams: the opener's and the listener's.
type OurIdleStreams = (Vec<sansp2p_smol::Stream>, Vec<sansp2p_smol::Stream>);

/// Opens `n` [`IDLE`] streams from `dialer` to `listener`, then takes each
/// from the listener's handler (`accepted`); adds both ends to `held`.
async fn our_idle_streams(
    dialer: &Host,
    listener: sansp2p::PeerId,
    accepted: &async_channel::Receiver<sansp2p_smol::Stream>,
    n: usize,
    held: &mut OurIdleStreams,
) {
    for _ in 0..n {
        let s = dialer.open_stream(listener, IDLE).await;
        held.0.push(s.expect("an idle stream"));
    }
    for _ in 0..n {
        held.1
            .push(accepted.recv().await.expect("the listener takes it"));
    }
}

impl Ours {
    /// Our [`Memory`] figures, on a listener and `conns` dialers (plus one
    /// for the warm-up connection) made for them and shut down after.
    fn memory(conns: usize, streams: usize) -> Memory {
        let host = |i: usize| our_host(MEM_SEED + i as u8, CipherBackend::default());
        let listener = host(0);
        let accepted = our_idle(&listener);
        let dialers: Vec<Host> = (1..=conns + 1).map(host).collect();
        let l = listener.clone();
        let addr: Multiaddr = Ours::run("memory: listen", async move {
            let any = "/ip4/127.0.0.1/tcp/0".parse().expect("valid");
            let bound = l.listen(&any).await.expect("listen");
            let id = l.local_peer_id();
            format!("{bound}/p2p/{id}").parse().expect("valid")
        });
        let l_id = listener.local_peer_id();

        // Warm-up, kept to the end: a connection and as many idle streams
        // on it as are measured, so that what the hosts set up once (or
        // keep after a burst: queues' capacity) is not counted.
        let (d, l, a, rx) = (
            dialers[0].clone(),
            listener.clone(),
            addr.clone(),
            accepted.clone(),
        );
        let warm = Ours::run("memory: warm-up", async move {
            our_settled_connection(&d, &l, &a).await;
            let mut warm = (Vec::new(), Vec::new());
            our_idle_streams(&d, l_id, &rx, streams, &mut warm).await;
            warm
        });

        let (measured, l, a) = (dialers[1..].to_vec(), listener.clone(), addr.clone());
        let before = quiet_heap(&mut || {});
        let measured = Ours::run("memory: connections", async move {
            for d in &measured {
                our_settled_connection(d, &l, &a).await;
            }
            measured
        });
        let per_connection = per(before, quiet_heap(&mut || {}), conns);

        let (d, rx) = (dialers[1].clone(), accepted.clone());
        let mut held = (Vec::with_capacity(streams), Vec::with_capacity(streams));
        let before = quiet_heap(&mut || {});
        let held = Ours::run("memory: streams", async move {
            our_idle_streams(&d, l_id, &rx, streams, &mut held).await;
            held
        });
        let per_stream = per(before, quiet_heap(&mut || {}), streams);

        drop((held, warm, accepted, measured));
        let mut hosts = dialers;
        hosts.push(listener);
        Ours::run("memory: shutdown", async move {
            futures::future::join_all(hosts.iter().map(Host::shutdown)).await;
        });
        Memory {
            per_connection,
            per_stream,
        }
    }
}

/// Both ends of idle streams: the opener's and the listener's.
type TheirIdleStreams = (Vec<libp2p::Stream>, Vec<libp2p::Stream>);

/// The rust-libp2p nodes of one memory run: `nodes[0]` listens and serves
/// [`IDLE`], handing its streams to `idle`; the others dial it.
struct TheirMemNet {
    nodes: Vec<RustNode>,
    idle: mpsc::UnboundedReceiver<libp2p::Stream>,
}

impl TheirMemNet {
    /// Dials the listener from dialer `i` (from 1) and waits until identify
    /// has arrived both ways.
    async fn settled_connection(&mut self, i: usize) {
        let (listener, dialers) = self.nodes.split_first_mut().expect("a listener");
        let dialer = &mut dialers[i - 1];
        let addr = listener.addr.clone().expect("the listener listens");
        dialer.connect(listener.id, addr).await;
        dialer
            .wait_for(|e| {
                matches!(
                    e,
                    SwarmEvent::Behaviour(BehaviourEvent::Identify(
                        identify::Event::Received { .. }
                    ))
                )
                .then_some(())
            })
            .await;
        let d_id = dialer.id;
        listener
            .wait_for(|e| match e {
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                    peer_id,
                    ..
                })) if *peer_id == d_id => Some(()),
                _ => None,
            })
            .await;
    }

    /// Opens `n` [`IDLE`] streams from dialer `i`, each once the last is
    /// negotiated and taken by the listener's handler; adds both ends to
    /// `held`.
    async fn idle_streams(&mut self, i: usize, n: usize, held: &mut TheirIdleStreams) {
        let listener = self.nodes[0].id;
        for _ in 0..n {
            let mine = self.nodes[i]
                .control
                .open_stream(listener, StreamProtocol::new(IDLE))
                .await
                .expect("an idle stream");
            held.0.push(mine);
            held.1
                .push(self.idle.recv().await.expect("the listener takes it"));
        }
    }

    /// Drops the events the nodes reported meanwhile (the harness queues
    /// them; they are no part of the node).
    fn drain(&mut self) {
        for node in &mut self.nodes {
            while node.events.try_recv().is_ok() {}
        }
    }
}

impl Theirs {
    /// Runs `task` on the tokio runtime and waits for it.
    fn on_runtime<T: Send + 'static>(
        &self,
        what: &'static str,
        task: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let handle = self.runtime.spawn(task);
        self.runtime
            .block_on(tokio_limit(what, handle))
            .expect("the memory task")
    }

    /// The rust-libp2p [`Memory`] figures, the same way as [`Ours::memory`].
    fn memory(&mut self, conns: usize, streams: usize) -> Memory {
        let (mut net, idle_task) = self.on_runtime("memory: start", async move {
            let never = Duration::from_secs(3600);
            let mut listener = RustNode::start(MEM_SEED, true, never).await;
            let mut incoming = listener
                .control
                .accept(StreamProtocol::new(IDLE))
                .expect("idle");
            let (tx, idle) = mpsc::unbounded_channel();
            let task = tokio::spawn(async move {
                while let Some((_, s)) = incoming.next().await {
                    if tx.send(s).is_err() {
                        break;
                    }
                }
            });
            let mut nodes = vec![listener];
            for i in 1..=conns + 1 {
                nodes.push(RustNode::start(MEM_SEED + i as u8, false, never).await);
            }
            (TheirMemNet { nodes, idle }, task)
        });

        // Warm-up, as for ours: dialer 1's connection and idle streams.
        let (mut net, warm) = self.on_runtime("memory: warm-up", async move {
            net.settled_connection(1).await;
            let mut warm = (Vec::new(), Vec::new());
            net.idle_streams(1, streams, &mut warm).await;
            (net, warm)
        });

        net.drain();
        let before = quiet_heap(&mut || net.drain());
        let mut net = self.on_runtime("memory: connections", async move {
            for i in 2..=conns + 1 {
                net.settled_connection(i).await;
            }
            net
        });
        let per_connection = per(before, quiet_heap(&mut || net.drain()), conns);

        let mut held = (Vec::with_capacity(streams), Vec::with_capacity(streams));
        let before = quiet_heap(&mut || net.drain());
        let (mut net, held) = self.on_runtime("memory: streams", async move {
            net.idle_streams(2, streams, &mut held).await;
            (net, held)
        });
        let per_stream = per(before, quiet_heap(&mut || net.drain()), streams);

        drop((held, warm));
        idle_task.abort();
        // Dropping the nodes ends their tasks and closes the connections.
        drop(net);
        Memory {
            per_connection,
            per_stream,
        }
    }
}

// -------------------------------------------------------------------- main

/// What a measurement's figures mean.
#[derive(Clone, Copy)]
enum Unit {
    /// A time per operation.
    Time,
    /// This many bytes moved in the time.
    Bytes(u64),
}

/// One measurement of a round: ours, theirs, and the `RATIO` name.
struct Row {
    ratio: &'static str,
    what: String,
    unit: Unit,
    ours: Duration,
    theirs: Duration,
}

impl Row {
    /// Theirs over ours: above 1, ours is faster.
    fn ratio(&self) -> f64 {
        secs(self.theirs) / secs(self.ours)
    }

    fn figure(&self, d: Duration) -> String {
        match self.unit {
            Unit::Time => show(d),
            Unit::Bytes(n) => rate(n, d),
        }
    }
}

fn main() {
    let params = Params::from_env();
    // smol's global executor reads this when it starts (on the first spawn).
    std::env::set_var("SMOL_THREADS", params.threads.to_string());
    println!(
        "node_vs_rust_libp2p: {} rounds (+1 warm-up), {} connections, {} pings, {} MiB stream, memory over {} connections and {} idle streams, {} executor thread(s) each; {:?} + yamux, loopback; our noise cipher {:?} (and {:?} for stream-portable)",
        params.rounds,
        params.setups,
        params.pings,
        params.stream_bytes >> 20,
        params.mem_conns,
        params.mem_streams,
        params.threads,
        security(),
        CipherBackend::default(),
        CipherBackend::Portable,
    );
    let ours = Ours::start(CipherBackend::default(), 11);
    let portable = Ours::start(CipherBackend::Portable, 31);
    let mut theirs = Theirs::start(params.threads);

    let mut rounds: Vec<Vec<Row>> = Vec::new();
    // Per counted round: ours, theirs.
    let mut memories: Vec<(Memory, Memory)> = Vec::new();
    // Per counted round: with write/read, with write_bytes/read_chunk.
    let mut copy_counts: Vec<(Copies, Copies)> = Vec::new();
    for round in 0..=params.rounds {
        let p = if round == 0 { params.warm_up() } else { params };
        let bytes = p.stream_bytes;
        // Interleaved: ours, then theirs, measurement by measurement.
        let setup = (ours.setup(p.setups), theirs.setup(p.setups));
        let pings = (ours.ping(p.pings), theirs.ping_native(p.pings));
        let their_stream_pings = theirs.ping_stream_per_ping(p.pings);
        let (our_stream, copies) = ours.stream(bytes, false);
        let stream = (our_stream, theirs.stream(bytes));
        let (stream_owned, copies_owned) = ours.stream(bytes, true);
        let stream_portable = portable.stream(bytes, false).0;
        let bidi = (ours.bidi(bytes), theirs.bidi(bytes));
        let memory = (
            Ours::memory(p.mem_conns, p.mem_streams),
            theirs.memory(p.mem_conns, p.mem_streams),
        );
        let row = |ratio, what: String, unit, (ours, theirs): (Duration, Duration)| Row {
            ratio,
            what,
            unit,
            ours,
            theirs,
        };
        let rows = vec![
            row("setup", "setup".into(), Unit::Time, setup),
            row("ping1000", format!("ping{}", p.pings), Unit::Time, pings),
            row(
                "stream-throughput",
                format!("stream {} MiB", bytes >> 20),
                Unit::Bytes(bytes),
                stream,
            ),
            row(
                "stream-throughput-owned",
                "write_bytes/read_chunk".into(),
                Unit::Bytes(bytes),
                (stream_owned, stream.1),
            ),
            row(
                "stream-throughput-portable",
                "portable cipher".into(),
                Unit::Bytes(bytes),
                (stream_portable, stream.1),
            ),
            row(
                "bidi-throughput",
                format!("bidi 2x{} MiB", bytes >> 20),
                Unit::Bytes(2 * bytes),
                bidi,
            ),
        ];
        let label = if round == 0 {
            "warm-up".to_string()
        } else {
            format!("round {round}")
        };
        let line: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} ours {} rust-libp2p {} (x{:.2})",
                    r.what,
                    r.figure(r.ours),
                    r.figure(r.theirs),
                    r.ratio()
                )
            })
            .collect();
        let (m_ours, m_theirs) = memory;
        println!(
            "{label}: {} | memory/connection ours {} rust-libp2p {} (x{:.2}) | memory/idle stream ours {} rust-libp2p {} (x{:.2}) | rust-libp2p with a stream per ping {}",
            line.join(" | "),
            show_bytes(m_ours.per_connection),
            show_bytes(m_theirs.per_connection),
            m_theirs.per_connection / m_ours.per_connection,
            show_bytes(m_ours.per_stream),
            show_bytes(m_theirs.per_stream),
            m_theirs.per_stream / m_ours.per_stream,
            show(their_stream_pings)
        );
        if round > 0 {
            rounds.push(rows);
            memories.push(memory);
            copy_counts.push((copies, copies_owned));
        }
    }

    println!("medians over {} rounds:", params.rounds);
    for k in 0..rounds[0].len() {
        let med = |f: &dyn Fn(&Row) -> Duration| {
            Duration::from_secs_f64(median(rounds.iter().map(|r| secs(f(&r[k]))).collect()))
        };
        let first = &rounds[0][k];
        println!(
            "  {}: ours {}, rust-libp2p {}",
            first.what,
            first.figure(med(&|r| r.ours)),
            first.figure(med(&|r| r.theirs)),
        );
    }
    println!(
        "  (setup: dial to first echo byte, per connection; ping: {} sequential pings in all)",
        params.pings
    );
    println!(
        "  (memory: live heap bytes over {} settled connections, then {} idle streams on one of them)",
        params.mem_conns, params.mem_streams
    );
    for (k, (what, _)) in Memory::NAMES.into_iter().enumerate() {
        let ours = median(memories.iter().map(|m| m.0.figures()[k]).collect());
        let theirs = median(memories.iter().map(|m| m.1.figures()[k]).collect());
        for (name, bytes) in [("ours", ours), ("rust-libp2p", theirs)] {
            println!(
                "MEMORY {name} {what}: {bytes:.0} bytes (both ends; {:.0} per end)",
                bytes / 2.0
            );
        }
    }
    for (api, pick) in [
        (
            "write_all/read",
            (|c: &(Copies, Copies)| c.0) as fn(&(Copies, Copies)) -> Copies,
        ),
        ("write_bytes/read_chunk", |c| c.1),
    ] {
        let send = median(copy_counts.iter().map(|c| pick(c).send).collect());
        let receive = median(copy_counts.iter().map(|c| pick(c).receive).collect());
        println!(
            "COPIES ours {api}: {send:.3} per byte sent, {receive:.3} per byte received (muxer copies; cipher and kernel not counted)"
        );
    }
    for k in 0..rounds[0].len() {
        let ratio = median(rounds.iter().map(|r| r[k].ratio()).collect());
        println!("RATIO {}/rust-libp2p {ratio:.3}", rounds[0][k].ratio);
    }
    for (k, (_, name)) in Memory::NAMES.into_iter().enumerate() {
        let ratios = memories
            .iter()
            .map(|(o, t)| t.figures()[k] / o.figures()[k]);
        let ratio = median(ratios.collect());
        println!("RATIO {name}/rust-libp2p {ratio:.3}");
    }
}
