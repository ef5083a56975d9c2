//! Perf (`/perf/1.0.0`) interop: our client and server against
//! rust-libp2p's `libp2p-perf` 0.3.0, over loopback TCP with `/noise` and
//! `/yamux/1.0.0`.
//!
//! `libp2p-perf`'s newest release belongs to the libp2p 0.53 generation, so
//! its swarm is built with that libp2p (`libp2p-053`), on a tokio runtime
//! thread of its own; a driver task owns the swarm, runs closures the test
//! sends it and forwards every swarm event. Our node runs on smol and the
//! test body on `smol::block_on`. Every wait has a deadline ([`STEP`], and
//! [`TEST_LIMIT`] for a whole test), so a hang fails instead of blocking.
//!
//! What their client reports: progress events (`RunUpdate::Intermediate`,
//! once a second, each with the bytes moved since the previous one) and a
//! final one (`RunUpdate::Final`) that carries only the two durations. It
//! reads until it has the bytes it asked for and then stops, so it neither
//! checks the server's close nor notices extra bytes; the last test here
//! therefore also runs a byte-counting spec client (rust-libp2p 0.57 and
//! `libp2p-stream`) against our server.

use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p_053 as old;
use libp2p_perf::{client, server, RunParams, RunUpdate};
use old::swarm::{StreamUpgradeError, SwarmEvent};
use sansp2p::node::{Event, Security};
use sansp2p_conformance::perf_peer::{PerfBehaviourEvent, PerfPeer, PerfSwarm, PerfSwarmEvent};
use sansp2p_conformance::rust_peer::{build_swarm, spawn_driver, Options};
use sansp2p_smol::{Config, Host, Multiaddr};

const PERF: &str = "/perf/1.0.0";
const MIB: u64 = 1024 * 1024;

const OUR_SEED: u8 = 1;
const THEIR_SEED: u8 = 2;

/// Longest wait for any one step (an event, a dial, a run).
const STEP: Duration = Duration::from_secs(20);
/// Longest a whole test may take.
const TEST_LIMIT: Duration = Duration::from_secs(90);

/// The (upload, download) sizes each direction runs, in order, on one
/// connection.
const RUNS: [(u64, u64); 4] = [(MIB, 2 * MIB), (0, 3 * MIB), (3 * MIB, 0), (0, 0)];

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

/// Peer ids and addresses cross between the libp2p generations as text.
fn convert<A: std::fmt::Display, B: std::str::FromStr>(a: &A) -> B
where
    B::Err: std::fmt::Debug,
{
    a.to_string().parse().expect("the other side parses it")
}

// ------------------------------------------------------- their perf node

type TheirSwarm = PerfSwarm;
type TheirEvent = PerfSwarmEvent;

/// A libp2p-perf 0.3 node ([`PerfPeer`]), every event kept.
struct TheirPeer {
    id: old::PeerId,
    /// Where it listens, with its `/p2p/` suffix, in our multiaddr type.
    addr: Multiaddr,
    inner: PerfPeer,
    /// Events not picked yet, oldest first.
    backlog: Vec<TheirEvent>,
}

impl TheirPeer {
    fn start(seed: u8) -> TheirPeer {
        let inner = PerfPeer::start(seed, Duration::from_secs(60), STEP, |_| true);
        TheirPeer {
            id: inner.id,
            addr: convert(&inner.addr),
            inner,
            backlog: Vec::new(),
        }
    }

    /// Runs `f` on the swarm (in the driver task) and returns its result.
    async fn with_swarm<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut TheirSwarm) -> R + Send + 'static,
    ) -> R {
        within(STEP, "a libp2p-perf command", self.inner.command(f))
            .await
            .expect("the libp2p-perf driver answers")
    }

    /// The first event `pick` takes (it breaks with what it found and hands
    /// back the other events),
    /// from the backlog or within [`STEP`]; panics with the events seen
    /// otherwise.
    async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(TheirEvent) -> ControlFlow<T, TheirEvent>,
    ) -> T {
        let mut kept = Vec::new();
        let mut found = None;
        for event in self.backlog.drain(..) {
            if found.is_some() {
                kept.push(event);
                continue;
            }
            match pick(event) {
                ControlFlow::Break(t) => found = Some(t),
                ControlFlow::Continue(event) => kept.push(event),
            }
        }
        self.backlog = kept;
        if let Some(t) = found {
            return t;
        }
        let events = &mut self.inner.events;
        let backlog = &mut self.backlog;
        let wait = async {
            while let Some(event) = events.recv().await {
                match pick(event) {
                    ControlFlow::Break(t) => return Some(t),
                    ControlFlow::Continue(event) => backlog.push(event),
                }
            }
            None
        };
        let timeout = async {
            smol::Timer::after(STEP).await;
            None
        };
        match smol::future::or(wait, timeout).await {
            Some(t) => t,
            None => panic!("no libp2p-perf event {what} within {STEP:?}; saw {backlog:#?}"),
        }
    }

    /// Waits until the swarm has a connection to `peer`.
    async fn connected(&mut self, peer: old::PeerId) {
        self.expect("ConnectionEstablished", |e| match e {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => {
                ControlFlow::Break(())
            }
            e => ControlFlow::Continue(e),
        })
        .await;
    }

    /// Their client's run against `server`: the progress reports, then the
    /// final one, or the run's error.
    async fn perf(
        &mut self,
        server: old::PeerId,
        upload: u64,
        download: u64,
    ) -> Result<TheirRun, client::RunError> {
        let params = RunParams {
            to_send: upload as usize,
            to_receive: download as usize,
        };
        let id = self
            .with_swarm(move |s| s.behaviour_mut().client.perf(server, params))
            .await
            .expect("their client knows the connection");
        let mut run = TheirRun::default();
        loop {
            let result = self
                .expect("a client run update", |e| match e {
                    SwarmEvent::Behaviour(PerfBehaviourEvent::Client(client::Event {
                        id: i,
                        result,
                    })) if i == id => ControlFlow::Break(result),
                    e => ControlFlow::Continue(e),
                })
                .await;
            match result? {
                RunUpdate::Intermediate(i) => {
                    run.updates += 1;
                    run.sent += i.sent as u64;
                    run.received += i.received as u64;
                }
                RunUpdate::Final(_) => return Ok(run),
            }
        }
    }

    /// Their server's report of the next run it served for `client`:
    /// (bytes received, bytes sent).
    async fn served(&mut self, client: old::PeerId) -> (u64, u64) {
        self.expect("a served run", |e| match e {
            SwarmEvent::Behaviour(PerfBehaviourEvent::Server(server::Event {
                remote_peer_id,
                stats,
            })) if remote_peer_id == client => {
                ControlFlow::Break((stats.params.to_receive as u64, stats.params.to_send as u64))
            }
            e => ControlFlow::Continue(e),
        })
        .await
    }
}

/// What their client reported of a successful run.
#[derive(Debug, Default)]
struct TheirRun {
    /// Progress reports before the final one.
    updates: usize,
    /// Their sums: the final report carries no byte counts, so these are
    /// the bytes moved up to the last progress report.
    sent: u64,
    received: u64,
}

// ------------------------------------------------------------- our node

/// Our node on smol, listening on loopback, serving perf if `serve`.
async fn start_our_node(serve: bool) -> (Host, Multiaddr) {
    let mut config = Config::new(sansp2p::Keypair::from_secret_bytes([OUR_SEED; 32]));
    config.perf.serve = serve;
    let host = sansp2p_smol::new_host(config).expect("our host starts");
    let addr = within(
        STEP,
        "our listen",
        host.listen(&"/ip4/127.0.0.1/tcp/0".parse().expect("valid")),
    )
    .await
    .expect("our node listens");
    let addr = convert(&format!("{addr}/p2p/{}", host.local_peer_id()));
    (host, addr)
}

/// Our events that would mean our side failed: a closed connection, a
/// reset stream, a failed run of ours.
fn failures(events: &sansp2p_smol::Events) -> Vec<Event> {
    std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| {
            matches!(
                e,
                Event::ConnectionClosed { .. }
                    | Event::StreamReset { .. }
                    | Event::PerfFailed { .. }
            )
        })
        .collect()
}

// ------------------------------------------------------------------ tests

/// Our client against their server: each run's report has the sizes asked
/// for, and their server counted the same bytes both ways.
#[test]
fn our_client_against_their_server() {
    run(async {
        let mut theirs = TheirPeer::start(THEIR_SEED);
        let (host, _) = start_our_node(false).await;
        let events = host.events();
        let peer = within(STEP, "our dial", host.dial(&theirs.addr))
            .await
            .expect("we reach their node");
        assert_eq!(convert::<_, old::PeerId>(&peer), theirs.id);
        let us: old::PeerId = convert(&host.local_peer_id());
        for (upload, download) in RUNS {
            let what = format!("our perf run {upload} up / {download} down");
            let report = within(STEP, &what, host.perf(peer, upload, download))
                .await
                .unwrap_or_else(|e| panic!("{what} failed: {e:?}"));
            assert_eq!(
                (report.uploaded, report.downloaded),
                (upload, download),
                "{what}: our report"
            );
            assert!(
                report.upload + report.download <= report.total,
                "{what}: {report:?}"
            );
            let served = theirs.served(us).await;
            assert_eq!(served, (upload, download), "{what}: their server's count");
        }
        assert_eq!(failures(&events), [], "our node's failures");
        assert!(
            !host.connections(&peer).is_empty(),
            "the connection stays up"
        );
    });
}

/// Their client against our server: each run ends with their final report,
/// no progress report counts more than was asked, and our node sees no
/// failure. (Their final report has no byte counts; the exact counts of our
/// server are checked by `spec_client_counts_our_server_bytes`.)
#[test]
fn their_client_against_our_server() {
    run(async {
        let mut theirs = TheirPeer::start(THEIR_SEED);
        let (host, addr) = start_our_node(true).await;
        let events = host.events();
        let us: old::PeerId = convert(&host.local_peer_id());
        let dial: old::Multiaddr = convert(&addr);
        theirs
            .with_swarm(move |s| s.dial(dial))
            .await
            .expect("their dial starts");
        theirs.connected(us).await;
        for (upload, download) in RUNS {
            let what = format!("their perf run {upload} up / {download} down");
            let run = theirs
                .perf(us, upload, download)
                .await
                .unwrap_or_else(|e| panic!("{what} failed: {e:?}"));
            assert!(
                run.sent <= upload && run.received <= download,
                "{what}: their progress reports count more than asked: {run:?}"
            );
        }
        assert_eq!(failures(&events), [], "our node's failures");
        let peer = convert(&theirs.id);
        assert!(
            !host.connections(&peer).is_empty(),
            "the connection stays up"
        );
    });
}

/// With serving off, our node refuses `/perf/1.0.0` in multistream-select
/// and their client's run fails as unsupported; turned on, on the same
/// connection, the next run succeeds.
#[test]
fn their_client_refused_while_our_serving_is_off() {
    run(async {
        let mut theirs = TheirPeer::start(THEIR_SEED);
        let (host, _) = start_our_node(false).await;
        let peer = within(STEP, "our dial", host.dial(&theirs.addr))
            .await
            .expect("we reach their node");
        let us: old::PeerId = convert(&host.local_peer_id());
        theirs.connected(us).await;
        match theirs.perf(us, MIB, MIB).await {
            Err(client::RunError::Upgrade(StreamUpgradeError::NegotiationFailed)) => {}
            other => panic!("expected their run refused in negotiation, got {other:?}"),
        }
        host.serve_perf(true);
        theirs
            .perf(us, MIB, MIB)
            .await
            .expect("their run once we serve perf");
        assert!(
            !host.connections(&peer).is_empty(),
            "the connection stays up"
        );
    });
}

/// A spec client that counts every byte (rust-libp2p 0.57's yamux through
/// `libp2p-stream`): our server sends exactly the download asked for and
/// then closes, after reading the whole upload.
#[test]
fn spec_client_counts_our_server_bytes() {
    run(async {
        let (host, addr) = start_our_node(true).await;
        let us: libp2p::PeerId = convert(&host.local_peer_id());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (mut control, commands, mut events) = {
            // The TCP transport and the driver task go to this runtime.
            let _context = runtime.enter();
            let swarm = build_swarm(
                THEIR_SEED,
                Options {
                    protocol_version: "/sansp2p-conformance/1.0.0".into(),
                    agent_version: None,
                    ping: libp2p::ping::Config::new(),
                    idle_timeout: Duration::from_secs(60),
                    security: Security::Noise,
                },
            );
            let control = swarm.behaviour().stream.new_control();
            let (commands, events) = spawn_driver(swarm);
            (control, commands, events)
        };
        let dial: libp2p::Multiaddr = convert(&addr);
        commands
            .send(Box::new(move |s| s.dial(dial).expect("their dial starts")))
            .expect("the driver runs");
        within(STEP, "the spec client's connection", async {
            while let Some(event) = events.recv().await {
                if let libp2p::swarm::SwarmEvent::ConnectionEstablished { peer_id, .. } = event {
                    if peer_id == us {
                        return;
                    }
                }
            }
            panic!("the spec client's swarm ended");
        })
        .await;
        for (upload, download) in RUNS {
            let what = format!("spec client run {upload} up / {download} down");
            let exchange = async {
                let mut stream = control
                    .open_stream(us, libp2p::StreamProtocol::new(PERF))
                    .await
                    .map_err(|e| format!("open: {e}"))?;
                stream
                    .write_all(&download.to_be_bytes())
                    .await
                    .map_err(|e| format!("request: {e}"))?;
                let chunk = vec![0x5a; 64 * 1024];
                let mut left = upload;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    stream
                        .write_all(&chunk[..n])
                        .await
                        .map_err(|e| format!("upload: {e}"))?;
                    left -= n as u64;
                }
                stream.close().await.map_err(|e| format!("close: {e}"))?;
                let mut buf = vec![0; 64 * 1024];
                let mut received = 0u64;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => return Ok::<_, String>(received),
                        Ok(n) => received += n as u64,
                        Err(e) => return Err(format!("download after {received} bytes: {e}")),
                    }
                }
            };
            let received = within(STEP, &what, exchange)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(received, download, "{what}: bytes before our close");
        }
        drop((commands, events));
        runtime.shutdown_timeout(Duration::from_secs(1));
    });
}
