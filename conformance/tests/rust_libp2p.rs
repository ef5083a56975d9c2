//! Whole-node interop: our node (through the smol or the tokio adapter)
//! against a real rust-libp2p 0.57 node in the same process, over loopback TCP with
//! `/noise` and `/yamux/1.0.0` (plaintext is covered by the js suite and the
//! plaintext conformance tests).
//!
//! The rust-libp2p node runs identify, ping and `libp2p-stream` (serving
//! `/echo/1.0.0`) on its own tokio runtime thread; a small driver task owns
//! its `Swarm`, forwards every `SwarmEvent` to the test and runs commands
//! (closures on the swarm) the test sends it. Our node runs on smol's
//! global executor or on a tokio runtime of its own ([`Binding`]), the test
//! body on `smol::block_on` (the host API works from any executor).
//!
//! Each scenario runs on fresh nodes, once with our node dialing and once
//! with theirs dialing, and each on both bindings ([`on_both_bindings`]). Every wait has a deadline ([`STEP`]) and every test
//! as a whole has one ([`TEST_LIMIT`]), so a hang fails instead of blocking.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::swarm::{ConnectionError, DialError, SwarmEvent};
use libp2p::{identify, ping, StreamProtocol, Swarm};
use sansp2p::node::{
    AttemptError, ConnectionId, Event, PingError, Security, StreamOpenFailure, UpgradeError,
};
use sansp2p::security::noise::NoiseError;
use sansp2p_conformance::payload;
use sansp2p_conformance::rust_peer::{
    build_swarm, spawn_driver, Behaviour, BehaviourEvent, Command, Options, TheirEvent,
};
use sansp2p_smol::{Config, Error, Host, Multiaddr};
use tokio::sync::{mpsc, oneshot};

const ECHO: &str = "/echo/1.0.0";
const PING: &str = "/ipfs/ping/1.0.0";
const IDENTIFY: &str = "/ipfs/id/1.0.0";
const IDENTIFY_PUSH: &str = "/ipfs/id/push/1.0.0";
const UNKNOWN: &str = "/unknown/1.0.0";

/// What the rust-libp2p node calls itself in identify.
const THEIR_AGENT: &str = "rust-libp2p-conformance/0.57";
const THEIR_PROTOCOL_VERSION: &str = "/sansp2p-conformance/1.0.0";

/// Identity seeds: our node, theirs, and a third peer nobody runs.
const OUR_SEED: u8 = 1;
const THEIR_SEED: u8 = 2;
const STRANGER_SEED: u8 = 3;

/// Longest wait for any one step (an event, a dial, an echo).
const STEP: Duration = Duration::from_secs(10);
/// Longest a whole test may take.
const TEST_LIMIT: Duration = Duration::from_secs(40);

/// The large echo of the `echo_*` tests.
const MIB: usize = 1024 * 1024;
/// Streams of the concurrent echo tests, and the size range of their payloads.
const CONCURRENT: usize = 100;
const CONCURRENT_MAX_LEN: usize = 16 * 1024;

// ------------------------------------------------------------------ helpers

/// Fails the test with `what` if `fut` takes longer than `limit`.
async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    let timeout = async {
        smol::Timer::after(limit).await;
        None
    };
    smol::future::or(async { Some(fut.await) }, timeout)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?}: {what}"))
}

/// Runs a test body on smol under [`TEST_LIMIT`].
fn run(body: impl Future<Output = ()>) {
    smol::block_on(within(TEST_LIMIT, "the whole test", body));
}

/// FNV-1a, 64 bits: the checksum the concurrent echo tests compare.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The echo client, on either node's streams: send everything, half-close,
/// read the reply until the peer closes.
async fn echo_client<S>(stream: &mut S, data: &[u8]) -> std::io::Result<Vec<u8>>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    stream.write_all(data).await?;
    stream.close().await?;
    let mut reply = Vec::with_capacity(data.len());
    stream.read_to_end(&mut reply).await?;
    Ok(reply)
}

/// The echo server, on either node's streams: read until the peer
/// half-closes, send it all back, close.
async fn echo_server<S>(mut stream: S) -> std::io::Result<()>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let mut data = Vec::new();
    stream.read_to_end(&mut data).await?;
    stream.write_all(&data).await?;
    stream.close().await
}

/// Payload `i` of a concurrent echo test: a different length and content
/// per stream (a tag naming the stream, then 1 to [`CONCURRENT_MAX_LEN`]
/// bytes of pattern).
fn concurrent_payload(i: usize) -> Vec<u8> {
    payload(&format!("stream {i}:"), (i * 7919) % CONCURRENT_MAX_LEN + 1)
}

fn to_libp2p(peer: &sansp2p::PeerId) -> libp2p::PeerId {
    peer.to_string()
        .parse()
        .expect("rust-libp2p parses our peer id text")
}

fn to_ours(peer: &libp2p::PeerId) -> sansp2p::PeerId {
    peer.to_string()
        .parse()
        .expect("we parse rust-libp2p's peer id text")
}

fn with_p2p(addr: &Multiaddr, peer: &sansp2p::PeerId) -> Multiaddr {
    format!("{addr}/p2p/{peer}")
        .parse()
        .expect("a valid multiaddr")
}

fn is_loopback_tcp(addr: &Multiaddr) -> bool {
    addr.to_string().starts_with("/ip4/127.0.0.1/tcp/")
}

/// Where a [`Backlog`] gets new events from.
trait Source<E> {
    /// The next event; `None` once the sender is gone.
    async fn next(&mut self) -> Option<E>;
}

impl<E> Source<E> for mpsc::UnboundedReceiver<E> {
    async fn next(&mut self) -> Option<E> {
        self.recv().await
    }
}

impl<E> Source<E> for async_channel::Receiver<E> {
    async fn next(&mut self) -> Option<E> {
        self.recv().await.ok()
    }
}

/// A queue of events that tests pick from in any order: an event that does
/// not match what is awaited now is kept for a later wait.
struct Backlog<E> {
    seen: Vec<E>,
}

impl<E: Debug> Backlog<E> {
    fn new() -> Self {
        Backlog { seen: Vec::new() }
    }

    fn take<T>(&mut self, pick: &mut impl FnMut(&E) -> Option<T>) -> Option<T> {
        let (i, found) = self
            .seen
            .iter()
            .enumerate()
            .find_map(|(i, e)| pick(e).map(|t| (i, t)))?;
        self.seen.remove(i);
        Some(found)
    }

    /// The first event `pick` accepts, from the backlog or from `source`
    /// within [`STEP`]; panics with the events seen otherwise.
    async fn expect<T>(
        &mut self,
        what: &str,
        source: &mut impl Source<E>,
        mut pick: impl FnMut(&E) -> Option<T>,
    ) -> T {
        if let Some(found) = self.take(&mut pick) {
            return found;
        }
        let wait = async {
            while let Some(event) = source.next().await {
                if let Some(found) = pick(&event) {
                    return Some(found);
                }
                self.seen.push(event);
            }
            None
        };
        let timeout = async {
            smol::Timer::after(STEP).await;
            None
        };
        match smol::future::or(wait, timeout).await {
            Some(found) => found,
            None => panic!("no event {what} within {STEP:?}; saw {:#?}", self.seen),
        }
    }
}

// ------------------------------------------------------------ rust-libp2p

/// A rust-libp2p node on its own tokio runtime, listening on loopback and
/// echoing `/echo/1.0.0` streams.
struct RustPeer {
    id: libp2p::PeerId,
    addr: Multiaddr,
    control: libp2p_stream::Control,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<TheirEvent>,
    backlog: Backlog<TheirEvent>,
    /// Dropped last: shuts the swarm and its connections down.
    _runtime: tokio::runtime::Runtime,
}

impl RustPeer {
    fn start(seed: u8) -> RustPeer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rust-libp2p")
            .enable_all()
            .build()
            .expect("a tokio runtime");
        // The TCP transport registers its sockets with this runtime.
        let _context = runtime.enter();
        let mut swarm = build_swarm(
            seed,
            Options {
                protocol_version: THEIR_PROTOCOL_VERSION.into(),
                agent_version: Some(THEIR_AGENT.into()),
                ping: ping::Config::new(),
                // Without streams the connections would close at once.
                idle_timeout: Duration::from_secs(60),
                security: Security::Noise,
            },
        );
        let id = *swarm.local_peer_id();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("valid"))
            .expect("listen");
        let addr = runtime.block_on(async {
            let listening = async {
                loop {
                    if let SwarmEvent::NewListenAddr { address, .. } =
                        swarm.select_next_some().await
                    {
                        return address;
                    }
                }
            };
            tokio::time::timeout(STEP, listening)
                .await
                .expect("rust-libp2p listens within the step limit")
        });

        let mut control = swarm.behaviour().stream.new_control();
        let mut incoming = control
            .accept(StreamProtocol::new(ECHO))
            .expect("echo registered once");
        runtime.spawn(async move {
            while let Some((_, stream)) = incoming.next().await {
                tokio::spawn(echo_server(stream));
            }
        });

        let (commands, events) = spawn_driver(swarm);
        RustPeer {
            id,
            addr,
            control,
            commands,
            events,
            backlog: Backlog::new(),
            _runtime: runtime,
        }
    }

    /// Runs `f` on the swarm (in the driver task) and returns its result.
    async fn with_swarm<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<Behaviour>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        let command: Command = Box::new(move |swarm| {
            let _ = tx.send(f(swarm));
        });
        self.commands
            .send(command)
            .unwrap_or_else(|_| panic!("the rust-libp2p driver is gone"));
        within(STEP, "a rust-libp2p command", rx)
            .await
            .expect("the rust-libp2p driver answers")
    }

    /// The first event `pick` accepts (see [`Backlog::expect`]).
    async fn expect<T>(&mut self, what: &str, pick: impl FnMut(&TheirEvent) -> Option<T>) -> T {
        self.backlog.expect(what, &mut self.events, pick).await
    }

    /// Moves every event already delivered into the backlog and returns it.
    fn pending_events(&mut self) -> &[TheirEvent] {
        while let Ok(event) = self.events.try_recv() {
            self.backlog.seen.push(event);
        }
        &self.backlog.seen
    }

    /// Opens a stream to `peer` and runs the echo client on it.
    async fn echo(&self, peer: libp2p::PeerId, data: &[u8]) -> Result<Vec<u8>, String> {
        let mut control = self.control.clone();
        let mut stream = control
            .open_stream(peer, StreamProtocol::new(ECHO))
            .await
            .map_err(|e| format!("rust-libp2p open_stream: {e}"))?;
        echo_client(&mut stream, data)
            .await
            .map_err(|e| format!("rust-libp2p echo: {e}"))
    }
}

// ------------------------------------------------------------- our node

/// Our node's events, picked in any order.
struct OurEvents {
    rx: async_channel::Receiver<Event>,
    backlog: Backlog<Event>,
}

impl OurEvents {
    fn new(host: &Host) -> Self {
        OurEvents {
            rx: host.events(),
            backlog: Backlog::new(),
        }
    }

    async fn expect<T>(&mut self, what: &str, pick: impl FnMut(&Event) -> Option<T>) -> T {
        self.backlog.expect(what, &mut self.rx, pick).await
    }
}

/// The async runtime our node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    Smol,
    Tokio,
}

impl Binding {
    fn new_host(self, config: Config) -> Host {
        match self {
            Binding::Smol => sansp2p_smol::new_host(config),
            Binding::Tokio => {
                // One runtime for every tokio-bound node of the test binary.
                static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> =
                    std::sync::OnceLock::new();
                let runtime = RUNTIME.get_or_init(|| {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .thread_name("sansp2p-tokio")
                        .enable_all()
                        .build()
                        .expect("a tokio runtime")
                });
                let _context = runtime.enter();
                sansp2p_tokio::new_host(config)
            }
        }
        .expect("our host starts")
    }
}

/// Our node serving `/echo/1.0.0` on `binding`'s runtime.
async fn start_our_node(seed: u8, binding: Binding) -> (Host, Multiaddr) {
    let key = sansp2p::Keypair::from_secret_bytes([seed; 32]);
    let host = binding.new_host(Config::new(key));
    let incoming = host.accept(ECHO).expect("register echo");
    let spawner = host.clone();
    host.spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            spawner.spawn(async move {
                let _ = echo_server(stream).await;
            });
        }
    });
    let addr = within(
        STEP,
        "our listen",
        host.listen(&"/ip4/127.0.0.1/tcp/0".parse().expect("valid")),
    )
    .await
    .expect("our node listens");
    (host, addr)
}

/// How an echo of ours failed.
#[derive(Debug)]
enum OurEchoError {
    Open(Error),
    Io(std::io::Error),
}

impl std::fmt::Display for OurEchoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OurEchoError::Open(e) => write!(f, "our open_stream: {e:?}"),
            OurEchoError::Io(e) => write!(f, "our echo: {e}"),
        }
    }
}

async fn our_echo(
    host: &Host,
    peer: sansp2p::PeerId,
    data: &[u8],
) -> Result<Vec<u8>, OurEchoError> {
    let mut stream = host
        .open_stream(peer, ECHO)
        .await
        .map_err(OurEchoError::Open)?;
    echo_client(&mut stream, data)
        .await
        .map_err(OurEchoError::Io)
}

// ------------------------------------------------------------- fixture

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Our node dials the rust-libp2p node.
    WeDial,
    /// The rust-libp2p node dials ours.
    TheyDial,
}

/// The tests of a `scenario(binding, dir)`: a module named after it with
/// one test per binding our node runs on and per direction of the dial.
macro_rules! on_both_bindings {
    ($scenario:ident) => {
        mod $scenario {
            use super::{Binding, Dir};

            #[test]
            fn smol_we_dial() {
                super::$scenario(Binding::Smol, Dir::WeDial);
            }

            #[test]
            fn smol_they_dial() {
                super::$scenario(Binding::Smol, Dir::TheyDial);
            }

            #[test]
            fn tokio_we_dial() {
                super::$scenario(Binding::Tokio, Dir::WeDial);
            }

            #[test]
            fn tokio_they_dial() {
                super::$scenario(Binding::Tokio, Dir::TheyDial);
            }
        }
    };
}

/// Both nodes, each knowing the other's id in both types.
struct Setup {
    ours: Host,
    our_addr: Multiaddr,
    our_events: OurEvents,
    theirs: RustPeer,
    /// Their id as our node spells it.
    their_id: sansp2p::PeerId,
    /// Our id as rust-libp2p spells it.
    our_id: libp2p::PeerId,
}

impl Setup {
    async fn new(binding: Binding) -> Setup {
        let (ours, our_addr) = start_our_node(OUR_SEED, binding).await;
        let our_events = OurEvents::new(&ours);
        let theirs = RustPeer::start(THEIR_SEED);
        let their_id = to_ours(&theirs.id);
        let our_id = to_libp2p(&ours.local_peer_id());
        // The same 32 secret bytes give the same peer id in both stacks.
        assert_eq!(
            their_id,
            sansp2p::Keypair::from_secret_bytes([THEIR_SEED; 32]).peer_id()
        );
        Setup {
            ours,
            our_addr,
            our_events,
            theirs,
            their_id,
            our_id,
        }
    }

    /// Waits until both nodes have each other's identify.
    async fn wait_identified_both_ways(&mut self) {
        within(
            STEP,
            "our identify of them",
            self.ours.wait_identified(&self.their_id, STEP),
        )
        .await
        .expect("rust-libp2p answers our identify request");
        let our_id = self.our_id;
        self.theirs
            .expect("rust-libp2p: identify Received", |e| match e {
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                    peer_id,
                    ..
                })) if *peer_id == our_id => Some(()),
                _ => None,
            })
            .await;
    }

    /// Waits until the connection is quiet: identify done both ways and
    /// rust-libp2p's first ping (sent at once on a new connection) answered.
    async fn settle(&mut self) {
        self.wait_identified_both_ways().await;
        let our_id = self.our_id;
        self.theirs
            .expect("rust-libp2p: its first ping of us", |e| match e {
                SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                    peer,
                    result: Ok(_),
                    ..
                })) if *peer == our_id => Some(()),
                _ => None,
            })
            .await;
    }

    async fn connected(binding: Binding, dir: Dir) -> (Setup, ConnectionId) {
        let mut s = Setup::new(binding).await;
        let conn = s.connect(dir).await;
        (s, conn)
    }

    /// Connects in `dir`; checks both sides saw the connection with the
    /// right peer and role. Returns our connection id.
    async fn connect(&mut self, dir: Dir) -> ConnectionId {
        let our_id = self.our_id;
        let their_id = self.their_id;
        match dir {
            Dir::WeDial => {
                let target = with_p2p(&self.theirs.addr, &their_id);
                let peer = within(STEP, "our dial", self.ours.dial(&target))
                    .await
                    .expect("our dial of rust-libp2p succeeds");
                assert_eq!(peer, their_id);
            }
            Dir::TheyDial => {
                let target = with_p2p(&self.our_addr, &self.ours.local_peer_id());
                self.theirs
                    .with_swarm(move |s| s.dial(target))
                    .await
                    .expect("rust-libp2p starts the dial");
            }
        }
        let their_endpoint = self
            .theirs
            .expect("rust-libp2p: ConnectionEstablished", |e| match e {
                SwarmEvent::ConnectionEstablished {
                    peer_id, endpoint, ..
                } if *peer_id == our_id => Some(endpoint.clone()),
                _ => None,
            })
            .await;
        let expected_dialer = dir == Dir::TheyDial;
        assert_eq!(
            their_endpoint.is_dialer(),
            expected_dialer,
            "rust-libp2p's role: {their_endpoint:?}"
        );
        let conn = self
            .our_events
            .expect("ours: ConnectionEstablished", |e| match e {
                Event::ConnectionEstablished { conn, peer, .. } if *peer == their_id => Some(*conn),
                _ => None,
            })
            .await;
        if let ConnectedPoint::Dialer { address, .. } = &their_endpoint {
            assert!(address.to_string().starts_with(&self.our_addr.to_string()));
        }
        conn
    }
}

// ------------------------------------------------- 1. identify, protocols

/// Identify push: a protocol we register while connected reaches
/// rust-libp2p, which sees it in a pushed identify (issue 9: push sent
/// nothing on the lazy path).
fn identify_push_reaches_them(binding: Binding, dir: Dir) {
    run(async {
        let (mut s, _) = Setup::connected(binding, dir).await;
        s.wait_identified_both_ways().await;
        let _incoming = s.ours.accept("/pushed/1.0.0").expect("a valid name");
        let our_id = s.our_id;
        s.theirs
            .expect("rust-libp2p: identify with /pushed/1.0.0", |e| match e {
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                    peer_id,
                    info,
                    ..
                })) if *peer_id == our_id
                    && info.protocols.iter().any(|p| p.as_ref() == "/pushed/1.0.0") =>
                {
                    Some(())
                }
                _ => None,
            })
            .await;
    });
}

on_both_bindings!(identify_push_reaches_them);

fn identify_and_negotiated_protocols(binding: Binding, dir: Dir) {
    run(async {
        let (mut s, conn) = Setup::connected(binding, dir).await;

        // What our side negotiated.
        let conns = s.ours.connections(&s.their_id);
        assert_eq!(conns.len(), 1, "one connection: {conns:?}");
        assert_eq!(conns[0].conn, conn);
        assert_eq!(conns[0].security.protocol(), "/noise");
        assert_eq!(conns[0].muxer, "/yamux/1.0.0");
        // rust-libp2p's ConnectionEstablished does not name the security or
        // muxer protocol; its transport offers only noise and yamux, so an
        // established connection is itself the evidence on its side.

        // What we learned about them.
        let info = s
            .ours
            .wait_identified(&s.their_id, STEP)
            .await
            .expect("rust-libp2p answers our identify request");
        assert_eq!(info.agent_version, THEIR_AGENT);
        assert_eq!(info.protocol_version, THEIR_PROTOCOL_VERSION);
        assert_eq!(info.public_key.to_peer_id(), s.their_id);
        for p in [PING, ECHO, IDENTIFY, IDENTIFY_PUSH] {
            assert!(
                info.protocols.iter().any(|q| q == p),
                "rust-libp2p lists {p}: {:?}",
                info.protocols
            );
        }
        let their_listen: Vec<Multiaddr> = info
            .listen_addrs
            .iter()
            .map(|a| Multiaddr::try_from(a.clone()).expect("a valid listen addr"))
            .collect();
        assert!(
            their_listen.contains(&s.theirs.addr),
            "{their_listen:?} lacks {}",
            s.theirs.addr
        );
        let observed = Multiaddr::try_from(info.observed_addr.expect("an observed address"))
            .expect("a valid observed addr");
        assert!(is_loopback_tcp(&observed), "they observed us at {observed}");
        if dir == Dir::TheyDial {
            assert_eq!(observed, s.our_addr, "they dialed our listen address");
        }

        // What they learned about us.
        let our_id = s.our_id;
        let theirs =
            s.theirs
                .expect("rust-libp2p: identify Received", |e| match e {
                    SwarmEvent::Behaviour(BehaviourEvent::Identify(
                        identify::Event::Received { peer_id, info, .. },
                    )) if *peer_id == our_id => Some(info.clone()),
                    _ => None,
                })
                .await;
        assert!(
            theirs.agent_version.starts_with("sansp2p/"),
            "our agent as they saw it: {:?}",
            theirs.agent_version
        );
        assert_eq!(theirs.protocol_version, "ipfs/0.1.0");
        assert_eq!(theirs.public_key.to_peer_id(), our_id);
        for p in [ECHO, PING, IDENTIFY, IDENTIFY_PUSH] {
            assert!(
                theirs.protocols.iter().any(|q| q.as_ref() == p),
                "we list {p}: {:?}",
                theirs.protocols
            );
        }
        assert!(
            theirs.listen_addrs.contains(&s.our_addr),
            "{:?} lacks {}",
            theirs.listen_addrs,
            s.our_addr
        );
        assert!(
            is_loopback_tcp(&theirs.observed_addr),
            "we observed them at {}",
            theirs.observed_addr
        );
        if dir == Dir::WeDial {
            assert_eq!(
                theirs.observed_addr, s.theirs.addr,
                "we dialed their listen address"
            );
        }
    });
}

on_both_bindings!(identify_and_negotiated_protocols);

// ------------------------------------------------------------- 2. ping

fn ping_both_ways(binding: Binding, dir: Dir) {
    run(async {
        let (mut s, _) = Setup::connected(binding, dir).await;
        for i in 0..5 {
            let rtt = within(STEP, "our ping", s.ours.ping(s.their_id))
                .await
                .unwrap_or_else(|e| panic!("our ping {i} of rust-libp2p failed: {e}"));
            assert!(rtt > Duration::ZERO && rtt < STEP, "our rtt {rtt:?}");
        }
        // rust-libp2p's ping behaviour pings every new connection at once.
        let our_id = s.our_id;
        let result = s
            .theirs
            .expect("rust-libp2p: ping result", |e| match e {
                SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                    peer, result, ..
                })) if *peer == our_id => {
                    Some(result.as_ref().map(|d| *d).map_err(|e| e.to_string()))
                }
                _ => None,
            })
            .await;
        let rtt = result.expect("rust-libp2p's ping of us succeeds");
        assert!(rtt > Duration::ZERO && rtt < STEP, "their rtt {rtt:?}");
    });
}

on_both_bindings!(ping_both_ways);

// ------------------------------------------------------------- 3. echo

fn echo_small_and_large(binding: Binding, dir: Dir) {
    run(async {
        let (s, _) = Setup::connected(binding, dir).await;
        for data in [b"Hello, rust-libp2p!\n".to_vec(), payload("1 MiB:", MIB)] {
            let len = data.len();
            let reply = within(STEP, "our echo", our_echo(&s.ours, s.their_id, &data))
                .await
                .unwrap_or_else(|e| panic!("we open, they serve, {len} bytes: {e}"));
            assert!(reply == data, "we open, they serve: {len} bytes differ");
            let reply = within(STEP, "their echo", s.theirs.echo(s.our_id, &data))
                .await
                .unwrap_or_else(|e| panic!("they open, we serve, {len} bytes: {e}"));
            assert!(reply == data, "they open, we serve: {len} bytes differ");
        }
    });
}

on_both_bindings!(echo_small_and_large);

/// Checks every reply against its payload's length and checksum.
fn check_concurrent(who: &str, replies: Vec<Result<Vec<u8>, String>>) {
    let mut failures = Vec::new();
    for (i, reply) in replies.into_iter().enumerate() {
        let sent = concurrent_payload(i);
        match reply {
            Ok(got) if (got.len(), fnv1a(&got)) == (sent.len(), fnv1a(&sent)) => {}
            Ok(got) => failures.push(format!(
                "stream {i}: sent {} bytes (fnv {:016x}), got {} (fnv {:016x})",
                sent.len(),
                fnv1a(&sent),
                got.len(),
                fnv1a(&got)
            )),
            Err(e) => failures.push(format!("stream {i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{who}: {} of {CONCURRENT} streams failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Attempts per stream when rust-libp2p refuses it (see [`echo_concurrent`]).
const MAX_ATTEMPTS: usize = 100;

/// Whether an attempt of ours ended the way a stream that libp2p-stream
/// dropped on arrival ends: reset (before or after the negotiation), or
/// closed without a single byte of echo.
fn refused_by_them(result: &Result<Vec<u8>, OurEchoError>) -> bool {
    match result {
        Ok(reply) => reply.is_empty(),
        Err(OurEchoError::Open(e)) => *e == Error::StreamOpen(StreamOpenFailure::Reset),
        // Reset, or already gone (the binding's NotConnected).
        Err(OurEchoError::Io(e)) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::NotConnected
        ),
    }
}

/// Our echo of `data`, opened again as long as rust-libp2p refuses the
/// stream; returns the final result and how many attempts were refused.
async fn our_echo_until_accepted(
    host: &Host,
    peer: sansp2p::PeerId,
    data: &[u8],
) -> (Result<Vec<u8>, String>, usize) {
    let mut refused = 0;
    loop {
        let result = our_echo(host, peer, data).await;
        if !refused_by_them(&result) || refused + 1 == MAX_ATTEMPTS {
            return (result.map_err(|e| e.to_string()), refused);
        }
        refused += 1;
        // Give their acceptor (a queue of one) time to drain instead of
        // hammering it: 2 ms, 4 ms, ... up to 50 ms between attempts, plus a
        // per-payload offset so the refused streams do not retry in one burst.
        let jitter = (data.len() % 17) as u64;
        smol::Timer::after(Duration::from_millis((2 * refused as u64).min(50) + jitter)).await;
    }
}

/// 100 echo streams at once in each direction, every payload different,
/// checked by length and checksum.
///
/// libp2p-stream hands inbound streams to the application through a channel
/// with room for one and drops (resets or closes) those that find it full:
/// when 100 streams arrive in a burst, most are refused that way (debug log
/// "Channel is full, dropping inbound stream"). Our side therefore opens a
/// refused stream again after a short, growing pause, still concurrently
/// with the others, and the test reports how often that happened; a stream
/// that is refused [`MAX_ATTEMPTS`] times, or echoed wrongly, fails it. Our
/// node queues up to 256 unaccepted streams per protocol (the yamux accept
/// backlog), so their side opens each stream once.
fn echo_concurrent(binding: Binding, dir: Dir) {
    run(async {
        let (mut s, _) = Setup::connected(binding, dir).await;
        // Both know the other's protocols: our streams negotiate lazily, the
        // steady state of a connection.
        s.wait_identified_both_ways().await;

        let (host, their_id) = (&s.ours, s.their_id);
        let ours = futures::future::join_all((0..CONCURRENT).map(|i| async move {
            our_echo_until_accepted(host, their_id, &concurrent_payload(i)).await
        }));
        let (replies, refusals): (Vec<_>, Vec<_>) = within(STEP, "our concurrent echoes", ours)
            .await
            .into_iter()
            .unzip();
        eprintln!(
            "we open, they serve: libp2p-stream refused {} stream attempts (at most {} for one stream)",
            refusals.iter().sum::<usize>(),
            refusals.iter().max().unwrap_or(&0)
        );
        check_concurrent("we open, they serve", replies);

        let (theirs, our_id) = (&s.theirs, s.our_id);
        let theirs = futures::future::join_all(
            (0..CONCURRENT)
                .map(|i| async move { theirs.echo(our_id, &concurrent_payload(i)).await }),
        );
        let replies = within(STEP, "their concurrent echoes", theirs).await;
        check_concurrent("they open, we serve", replies);
    });
}

on_both_bindings!(echo_concurrent);

// -------------------------------------------------------- 4. clean close

/// Whether rust-libp2p reports a close the peer made on purpose: no cause,
/// or yamux's "connection is closed" (what it also reports when another
/// rust-libp2p node closes), rather than a reset, a decode error or a
/// timeout.
fn is_clean_remote_close(cause: &Option<String>) -> bool {
    match cause {
        None => true,
        Some(text) => text.contains("connection is closed"),
    }
}

/// Closes once each way. Before each close the connection is left to
/// settle (identify both ways, rust-libp2p's first ping answered): our
/// adapters linger on close (FIN, then drain until the peer's FIN), but
/// rust-libp2p does not, so when it closes while we still write we can see
/// `EPIPE` (rust-libp2p against itself does too), and that race is not what
/// this test is about.
fn close_both_ways(binding: Binding, dir: Dir) {
    run(async {
        let (mut s, conn) = Setup::connected(binding, dir).await;
        let (our_id, their_id) = (s.our_id, s.their_id);

        // We close.
        s.settle().await;
        s.ours.disconnect(&their_id);
        let closed = s
            .our_events
            .expect("ours: ConnectionClosed after our disconnect", |e| match e {
                Event::ConnectionClosed { conn: c, peer, .. } if *c == conn => Some(*peer),
                _ => None,
            })
            .await;
        assert_eq!(closed, Some(their_id));
        assert!(s.ours.connections(&their_id).is_empty());
        let cause = s
            .theirs
            .expect(
                "rust-libp2p: ConnectionClosed after our disconnect",
                |e| match e {
                    SwarmEvent::ConnectionClosed { peer_id, cause, .. } if *peer_id == our_id => {
                        Some(cause.as_ref().map(describe_close))
                    }
                    _ => None,
                },
            )
            .await;
        assert!(
            is_clean_remote_close(&cause),
            "rust-libp2p saw our close as an error: {cause:?}"
        );

        // They close (on a new connection in the same direction).
        let conn = s.connect(dir).await;
        s.settle().await;
        let closing = s
            .theirs
            .with_swarm(move |swarm| swarm.disconnect_peer_id(our_id))
            .await;
        assert!(closing.is_ok(), "rust-libp2p knew the connection");
        let cause = s
            .theirs
            .expect(
                "rust-libp2p: ConnectionClosed after its disconnect",
                |e| match e {
                    SwarmEvent::ConnectionClosed { peer_id, cause, .. } if *peer_id == our_id => {
                        Some(cause.as_ref().map(describe_close))
                    }
                    _ => None,
                },
            )
            .await;
        assert_eq!(cause, None, "rust-libp2p's own close is clean");
        let closed = s
            .our_events
            .expect(
                "ours: ConnectionClosed after their disconnect",
                |e| match e {
                    Event::ConnectionClosed { conn: c, peer, .. } if *c == conn => Some(*peer),
                    _ => None,
                },
            )
            .await;
        assert_eq!(closed, Some(their_id));
        assert!(s.ours.connections(&their_id).is_empty());
        let err = s
            .ours
            .ping(their_id)
            .await
            .expect_err("no connection left to ping on");
        assert_eq!(err, Error::Ping(PingError::NotConnected));
    });
}

fn describe_close(e: &ConnectionError) -> String {
    match e {
        ConnectionError::IO(io) => format!("io ({:?}): {io}", io.kind()),
        other => other.to_string(),
    }
}

on_both_bindings!(close_both_ways);

// ------------------------------------------------------ 5. wrong peer id

#[test]
fn our_dial_expecting_another_peer_fails_with_the_typed_error() {
    run(async {
        let mut s = Setup::new(Binding::Smol).await;
        let stranger = sansp2p::Keypair::from_secret_bytes([STRANGER_SEED; 32]).peer_id();
        let target = with_p2p(&s.theirs.addr, &stranger);
        let err = within(STEP, "our dial", s.ours.dial(&target))
            .await
            .expect_err("reaching rust-libp2p instead of the stranger must fail");
        let text = err.to_string();
        assert!(
            text.contains(&format!("expected peer {stranger}"))
                && text.contains(&format!("reached {}", s.their_id)),
            "the error names both peers: {text}"
        );
        let errors = s
            .our_events
            .expect("ours: DialFailed", |e| match e {
                Event::DialFailed { errors, .. } => Some(errors.clone()),
                _ => None,
            })
            .await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].1,
            AttemptError::Upgrade(UpgradeError::Noise(NoiseError::UnexpectedPeer {
                expected: stranger,
                found: s.their_id,
            }))
        );
        assert!(s.ours.connections(&s.their_id).is_empty());
        // The node is fine afterwards: the right id connects.
        s.connect(Dir::WeDial).await;
    });
}

#[test]
fn their_dial_expecting_another_peer_fails() {
    run(async {
        let mut s = Setup::new(Binding::Smol).await;
        let stranger =
            to_libp2p(&sansp2p::Keypair::from_secret_bytes([STRANGER_SEED; 32]).peer_id());
        let target: Multiaddr = format!("{}/p2p/{stranger}", s.our_addr)
            .parse()
            .expect("valid");
        s.theirs
            .with_swarm(move |swarm| swarm.dial(target))
            .await
            .expect("rust-libp2p starts the dial");
        let our_id = s.our_id;
        let obtained = s
            .theirs
            .expect("rust-libp2p: OutgoingConnectionError", |e| match e {
                SwarmEvent::OutgoingConnectionError {
                    peer_id,
                    error: DialError::WrongPeerId { obtained, .. },
                    ..
                } if *peer_id == Some(stranger) => Some(*obtained),
                _ => None,
            })
            .await;
        assert_eq!(obtained, our_id, "we presented our own identity");
        s.connect(Dir::TheyDial).await;
    });
}

// ------------------------------------------ 6. unknown protocol gets `na`

fn unknown_protocol_keeps_the_connection(binding: Binding, dir: Dir) {
    run(async {
        let (mut s, conn) = Setup::connected(binding, dir).await;
        let (our_id, their_id) = (s.our_id, s.their_id);

        // They propose only a protocol we do not serve: we answer `na`,
        // which libp2p-stream reports as UnsupportedProtocol (an I/O
        // failure would be `Io`).
        let mut control = s.theirs.control.clone();
        let result = within(
            STEP,
            "their unknown-protocol stream",
            control.open_stream(our_id, StreamProtocol::new(UNKNOWN)),
        )
        .await;
        match result {
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(p)) => {
                assert_eq!(p.as_ref(), UNKNOWN)
            }
            Err(e) => panic!("expected UnsupportedProtocol, got {e}"),
            Ok(_) => panic!("we accepted a protocol we do not serve"),
        }
        // The reverse: we propose one they do not serve.
        let err = within(
            STEP,
            "our unknown-protocol stream",
            s.ours.open_stream(their_id, UNKNOWN),
        )
        .await
        .expect_err("rust-libp2p does not serve it");
        assert!(
            matches!(err, Error::StreamOpen(StreamOpenFailure::Negotiation(_))),
            "{err:?}"
        );

        // Same connection, still working both ways.
        let data = payload("after na:", 4096);
        let reply = within(STEP, "their echo", s.theirs.echo(our_id, &data))
            .await
            .expect("their echo after the refused stream");
        assert!(reply == data);
        let reply = within(STEP, "our echo", our_echo(&s.ours, their_id, &data))
            .await
            .expect("our echo after the refused stream");
        assert!(reply == data);
        within(STEP, "our ping", s.ours.ping(their_id))
            .await
            .expect("our ping after the refused stream");
        let conns = s.ours.connections(&their_id);
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].conn, conn, "still the first connection");
        let churn: Vec<_> = s
            .theirs
            .pending_events()
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    SwarmEvent::ConnectionClosed { .. } | SwarmEvent::ConnectionEstablished { .. }
                )
            })
            .map(|e| format!("{e:?}"))
            .collect();
        assert!(
            churn.is_empty(),
            "rust-libp2p's connection changed: {churn:?}"
        );
    });
}

on_both_bindings!(unknown_protocol_keeps_the_connection);
