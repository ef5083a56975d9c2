//! Perf (`/perf/1.0.0`) throughput and latency of each pairing of our node and
//! rust-libp2p's `libp2p-perf` 0.3.0 (libp2p 0.53), client → server, over
//! loopback TCP with `/noise` and `/yamux/1.0.0`:
//!
//! ```text
//! cargo bench -p sansp2p-conformance --bench perf_interop
//! ROUNDS=n   rounds counted (default 5, at least 1); a small warm-up round runs first
//! SCALE=f    scales the bytes of each run (64 MiB), e.g. SCALE=0.25 for a quick look
//! ```
//!
//! Four nodes: two of ours (one client, one server, on smol's global
//! executor) and two of theirs (the same, each on a tokio runtime with one
//! worker). Each client holds a connection to each server. A round runs,
//! for each of the four pairings (ours → ours, ours → theirs, theirs →
//! ours, theirs → theirs), an upload run (N bytes up, none down), a
//! download run (none up, N down) and [`LATENCY_RUNS`] latency runs (one
//! byte up, one down: a new stream, its negotiation and a round trip on the
//! held connection; the figure is their median), one after the other, so
//! drift of this machine's speed is shared.
//!
//! Every run is timed the same way, by this harness: from asking the client
//! for the run to the client's report of its end. Our client reports once
//! the server has closed the stream (so after the server read the whole
//! upload); theirs once it has read the download it asked for, or for an
//! upload once its close is queued, up to a yamux window of upload still
//! on its way: an upload figure of their client is a little flattering.
//!
//! `RATIO perf-<dir>/ours-client-vs-theirs` is our client's throughput over
//! theirs, each against the same server, the geometric mean over the two
//! servers; `ours-server-vs-theirs` is our server's over theirs, each with
//! the same client, likewise. For `perf-latency` the ratio is their time
//! over ours. The figures are medians over the rounds of
//! each round's ratio; above 1 means ours is faster.

use std::future::Future;
use std::time::{Duration, Instant};

use libp2p_053 as old;
use libp2p_perf::{RunParams, RunUpdate};
use old::swarm::SwarmEvent;
use sansp2p_conformance::perf_peer::{PerfBehaviourEvent, PerfPeer, PerfSwarm, PerfSwarmEvent};
use sansp2p_smol::{Host, Multiaddr};

/// Longest any one step may take before the bench gives up.
const LIMIT: Duration = Duration::from_secs(120);
const MIB: u64 = 1024 * 1024;
/// Latency runs per pairing per round.
const LATENCY_RUNS: usize = 50;

/// Fails the bench if `fut` does not finish within [`LIMIT`] (on smol).
async fn limit<T>(what: &str, fut: impl Future<Output = T>) -> T {
    smol::future::or(async { Some(fut.await) }, async {
        smol::Timer::after(LIMIT).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("{what} took longer than {LIMIT:?}"))
}

/// Text crosses between the libp2p generations and ours.
fn convert<A: std::fmt::Display, B: std::str::FromStr>(a: &A) -> B
where
    B::Err: std::fmt::Debug,
{
    a.to_string().parse().expect("the other side parses it")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

// ------------------------------------------------------------------ theirs

type TheirSwarm = PerfSwarm;

/// A libp2p-perf node ([`PerfPeer`]) forwarding only what the bench reads.
struct Theirs {
    id: old::PeerId,
    addr: old::Multiaddr,
    inner: PerfPeer,
}

impl Theirs {
    fn start(seed: u8) -> Theirs {
        // Only a client's run updates and connections matter.
        let keep = |event: &PerfSwarmEvent| {
            matches!(
                event,
                SwarmEvent::Behaviour(PerfBehaviourEvent::Client(_))
                    | SwarmEvent::ConnectionEstablished { .. }
            )
        };
        let inner = PerfPeer::start(seed, Duration::from_secs(600), LIMIT, keep);
        Theirs {
            id: inner.id,
            addr: inner.addr.clone(),
            inner,
        }
    }

    async fn with_swarm<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut TheirSwarm) -> R + Send + 'static,
    ) -> R {
        limit("a libp2p-perf command", self.inner.command(f))
            .await
            .expect("the driver answers")
    }

    /// Dials `addr` and waits for the connection to `peer`.
    async fn connect(&mut self, addr: old::Multiaddr, peer: old::PeerId) {
        self.with_swarm(move |s| s.dial(addr))
            .await
            .expect("their dial starts");
        let events = &mut self.inner.events;
        limit("their connection", async {
            loop {
                match events.recv().await {
                    Some(SwarmEvent::ConnectionEstablished { peer_id, .. }) if peer_id == peer => {
                        return
                    }
                    Some(_) => {}
                    None => panic!("their driver ended"),
                }
            }
        })
        .await;
    }

    /// One run of their client against `server`, timed from the command to
    /// the final report.
    async fn perf(&mut self, server: old::PeerId, upload: u64, download: u64) -> Duration {
        let params = RunParams {
            to_send: upload as usize,
            to_receive: download as usize,
        };
        let start = Instant::now();
        let id = self
            .with_swarm(move |s| s.behaviour_mut().client.perf(server, params))
            .await
            .expect("their client is connected");
        let events = &mut self.inner.events;
        limit("their perf run", async {
            loop {
                match events.recv().await {
                    Some(SwarmEvent::Behaviour(PerfBehaviourEvent::Client(e))) if e.id == id => {
                        match e.result {
                            Ok(RunUpdate::Final(_)) => return start.elapsed(),
                            Ok(RunUpdate::Intermediate(_)) => {}
                            Err(e) => panic!("their perf run failed: {e}"),
                        }
                    }
                    Some(_) => {}
                    None => panic!("their driver ended"),
                }
            }
        })
        .await
    }
}

// -------------------------------------------------------------------- ours

fn our_host(seed: u8, serve: bool) -> Host {
    let mut config = sansp2p_smol::Config::new(sansp2p::Keypair::from_secret_bytes([seed; 32]));
    config.perf.serve = serve;
    config.perf.timeout = LIMIT;
    sansp2p_smol::new_host(config).expect("our host starts")
}

async fn our_perf(host: &Host, server: sansp2p::PeerId, upload: u64, download: u64) -> Duration {
    let start = Instant::now();
    let report = limit("our perf run", host.perf(server, upload, download))
        .await
        .unwrap_or_else(|e| panic!("our perf run failed: {e:?}"));
    assert_eq!((report.uploaded, report.downloaded), (upload, download));
    start.elapsed()
}

// ------------------------------------------------------------------- bench

/// The two clients and two servers, connected each to each.
struct Nodes {
    our_client: Host,
    /// Held so that our server lives as long as the bench.
    _our_server: Host,
    our_server_id: sansp2p::PeerId,
    their_client: Theirs,
    their_server: Theirs,
}

/// Which client and which server a run pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Ours,
    Theirs,
}

const PAIRINGS: [(Side, Side); 4] = [
    (Side::Ours, Side::Ours),
    (Side::Ours, Side::Theirs),
    (Side::Theirs, Side::Ours),
    (Side::Theirs, Side::Theirs),
];

fn name(s: Side) -> &'static str {
    match s {
        Side::Ours => "ours",
        Side::Theirs => "theirs",
    }
}

impl Nodes {
    async fn start() -> Nodes {
        let our_client = our_host(1, false);
        let our_server = our_host(2, true);
        let our_server_id = our_server.local_peer_id();
        let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().expect("valid");
        let our_addr = limit("our listen", our_server.listen(&listen))
            .await
            .expect("our server listens");
        let our_addr: Multiaddr = convert(&format!("{our_addr}/p2p/{our_server_id}"));
        let mut their_client = Theirs::start(3);
        let their_server = Theirs::start(4);

        limit("our dial", our_client.dial(&our_addr))
            .await
            .expect("ours reaches ours");
        limit("our dial", our_client.dial(&convert(&their_server.addr)))
            .await
            .expect("ours reaches theirs");
        their_client
            .connect(convert(&our_addr), convert(&our_server_id))
            .await;
        their_client
            .connect(their_server.addr.clone(), their_server.id)
            .await;
        Nodes {
            our_client,
            _our_server: our_server,
            our_server_id,
            their_client,
            their_server,
        }
    }

    async fn run(
        &mut self,
        (client, server): (Side, Side),
        upload: u64,
        download: u64,
    ) -> Duration {
        match client {
            Side::Ours => {
                let to = match server {
                    Side::Ours => self.our_server_id,
                    Side::Theirs => convert(&self.their_server.id),
                };
                our_perf(&self.our_client, to, upload, download).await
            }
            Side::Theirs => {
                let to = match server {
                    Side::Ours => convert(&self.our_server_id),
                    Side::Theirs => self.their_server.id,
                };
                self.their_client.perf(to, upload, download).await
            }
        }
    }

    /// One round: per pairing, the upload and the download throughput
    /// (MiB/s) and the latency as runs per second (so that, as for the
    /// others, more is better).
    async fn round(&mut self, bytes: u64) -> [[f64; 3]; 4] {
        let mut out = [[0.0; 3]; 4];
        for (i, pairing) in PAIRINGS.into_iter().enumerate() {
            let up = self.run(pairing, bytes, 0).await;
            let down = self.run(pairing, 0, bytes).await;
            let mut times = Vec::with_capacity(LATENCY_RUNS);
            for _ in 0..LATENCY_RUNS {
                times.push(self.run(pairing, 1, 1).await.as_secs_f64());
            }
            out[i] = [
                mib_per_s(bytes, up),
                mib_per_s(bytes, down),
                1.0 / median(times),
            ];
        }
        out
    }
}

fn main() {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let rounds: usize = var("ROUNDS").map_or(5, |v| v.parse().expect("ROUNDS is a count"));
    assert!(rounds >= 1, "ROUNDS must be at least 1");
    let scale: f64 = var("SCALE").map_or(1.0, |v| v.parse().expect("SCALE is a number"));
    assert!(scale > 0.0, "SCALE must be positive");
    let bytes = ((64.0 * scale * MIB as f64) as u64).max(1);
    println!(
        "perf throughput, {} MiB per run, {rounds} rounds (noise, yamux, loopback TCP)",
        bytes as f64 / MIB as f64
    );

    smol::block_on(async {
        let mut nodes = Nodes::start().await;
        nodes.round(bytes.min(4 * MIB)).await;
        let mut figures = Vec::new();
        for r in 0..rounds {
            let f = nodes.round(bytes).await;
            let line: Vec<String> = PAIRINGS
                .iter()
                .zip(&f)
                .map(|((c, s), [up, down, per_s])| {
                    format!(
                        "{}→{} up {up:.0} down {down:.0} latency {:.0} µs",
                        name(*c),
                        name(*s),
                        1e6 / per_s
                    )
                })
                .collect();
            println!("round {r}: MiB/s {}", line.join(", "));
            figures.push(f);
        }

        let index = |c: Side, s: Side| {
            PAIRINGS
                .iter()
                .position(|p| *p == (c, s))
                .expect("a pairing")
        };
        for (dir, d) in [("upload", 0), ("download", 1), ("latency", 2)] {
            for (c, s) in PAIRINGS {
                let m = median(figures.iter().map(|f| f[index(c, s)][d]).collect());
                if d == 2 {
                    println!("  {dir} {}→{}: {:.0} µs", name(c), name(s), 1e6 / m);
                } else {
                    println!("  {dir} {}→{}: {m:.0} MiB/s", name(c), name(s));
                }
            }
            let ratio = |a: usize, b: usize| -> Vec<f64> {
                figures.iter().map(|f| f[a][d] / f[b][d]).collect()
            };
            // Our client over theirs, against our server and against theirs.
            let client_ours = ratio(
                index(Side::Ours, Side::Ours),
                index(Side::Theirs, Side::Ours),
            );
            let client_theirs = ratio(
                index(Side::Ours, Side::Theirs),
                index(Side::Theirs, Side::Theirs),
            );
            // Our server over theirs, with our client and with theirs.
            let server_ours = ratio(
                index(Side::Ours, Side::Ours),
                index(Side::Ours, Side::Theirs),
            );
            let server_theirs = ratio(
                index(Side::Theirs, Side::Ours),
                index(Side::Theirs, Side::Theirs),
            );
            let geo = |a: &[f64], b: &[f64]| -> f64 {
                median(a.iter().zip(b).map(|(x, y)| (x * y).sqrt()).collect())
            };
            println!(
                "  {dir} our client vs theirs: {:.3} against our server, {:.3} against theirs",
                median(client_ours.clone()),
                median(client_theirs.clone())
            );
            println!(
                "  {dir} our server vs theirs: {:.3} with our client, {:.3} with theirs",
                median(server_ours.clone()),
                median(server_theirs.clone())
            );
            println!(
                "RATIO perf-{dir}/ours-client-vs-theirs {:.3}",
                geo(&client_ours, &client_theirs)
            );
            println!(
                "RATIO perf-{dir}/ours-server-vs-theirs {:.3}",
                geo(&server_ours, &server_theirs)
            );
        }
        drop(nodes);
    });
}
