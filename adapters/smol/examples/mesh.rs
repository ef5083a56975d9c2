//! Peer maintenance on a mesh of real nodes in one process, over loopback
//! TCP: every node keeps up to `--max-peers` peers (one in three dialed by
//! itself, as go-ethereum's default), with two bootnodes and one static
//! peer each (node `i` keeps node `i + 1`, which trusts node `i` in turn, so
//! that it lets node `i` in even with its inbound share full).
//!
//! ```text
//! mesh [--nodes N] [--max-peers N] [--history-s N]
//! ```
//!
//! It prints the peer counts as they converge (`t=<s> peers min=<n>
//! median=<n> max=<n>`), shuts a third of the nodes down and shows the
//! rest refilling their dial slots, restarts them (same identity and
//! port) and waits for every static peer to be connected again. It ends
//! with `mesh: <nodes> nodes, max peers <n>: converged in <s> s, refilled
//! in <s> s, over limit: <count>` and exits 0, or 1 when a phase did not
//! finish in time or a node held more than its limit.
//!
//! Lookups (go-ethereum's discovery) are answered by the process: a few
//! random nodes that are up. The dial history is 10 s here (go-ethereum
//! and the default: 35 s), so that the restart phase stays short.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sansp2p::dial::scheduler::SchedulerConfig;
use sansp2p::node::{Event, MaintainConfig};
use sansp2p::{Keypair, PeerId};
use sansp2p_smol::{new_host, Config, Host, Multiaddr};

/// How long each phase may take.
const PHASE_LIMIT: Duration = Duration::from_secs(60);
/// How often the counts are sampled.
const SAMPLE: Duration = Duration::from_millis(20);

struct Args {
    nodes: usize,
    max_peers: usize,
    history: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nodes: 30,
        max_peers: 6,
        history: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{name}: not a number above 0: {v:?}"))
        };
        match arg.as_str() {
            "--nodes" => args.nodes = number("--nodes")?,
            "--max-peers" => args.max_peers = number("--max-peers")?,
            "--history-s" => args.history = Duration::from_secs(number("--history-s")? as u64),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    if args.nodes < 4 {
        return Err("--nodes: at least 4 (two bootnodes, a third to kill)".into());
    }
    if args.nodes > 60_000 {
        return Err("--nodes: at most 60 000 (one loopback port each)".into());
    }
    if args.max_peers < 3 {
        return Err("--max-peers: at least 3 (one dialed peer in three)".into());
    }
    Ok(args)
}

/// One node of the mesh: its identity and port outlive its host.
struct Member {
    key: Keypair,
    id: PeerId,
    port: u16,
    host: Option<Host>,
}

/// Who is up, for the lookups: `(id, address)` per node, `None` when down.
type Directory = Arc<Mutex<Vec<Option<(PeerId, Multiaddr)>>>>;

fn key_of(i: usize) -> Keypair {
    let mut secret = [0x5a; 32];
    secret[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    Keypair::from_secret_bytes(secret)
}

fn tcp(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("valid")
}

/// A small deterministic generator for the lookups' picks (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Answers the host's lookups from the directory and counts its dials.
/// `dials` counts the dials that ended (connected or failed), by any node.
fn serve_lookups(host: &Host, me: usize, dir: Directory, dials: Arc<AtomicU64>) {
    let events = host.events();
    let h = host.clone();
    host.spawn(async move {
        let mut rng = Rng(me as u64);
        while let Ok(event) = events.recv().await {
            match event {
                Event::PeerLookupWanted { want } => {
                    let up: Vec<(PeerId, Multiaddr)> = {
                        let dir = dir.lock().expect("not poisoned");
                        dir.iter()
                            .enumerate()
                            .filter(|(j, _)| *j != me)
                            .filter_map(|(_, e)| e.clone())
                            .collect()
                    };
                    let mut picked = Vec::new();
                    for _ in 0..want.min(up.len()) {
                        let (id, addr) = &up[(rng.next() % up.len() as u64) as usize];
                        picked.push((*id, vec![addr.clone()]));
                    }
                    h.add_peer_candidates(picked);
                    h.peer_lookup_done();
                }
                Event::ResolveWanted { peer } => {
                    let found = {
                        let dir = dir.lock().expect("not poisoned");
                        dir.iter()
                            .flatten()
                            .find(|(id, _)| *id == peer)
                            .map(|(_, a)| a.clone())
                    };
                    h.resolved(peer, found.into_iter().collect());
                }
                Event::Dialed { .. } | Event::DialFailed { .. } => {
                    dials.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    });
}

/// Starts node `i`, on its old port when it has one, and lists it in the
/// directory.
async fn boot(
    members: &mut [Member],
    i: usize,
    dir: &Directory,
    dials: &Arc<AtomicU64>,
) -> Result<(), String> {
    let mut config = Config::new(members[i].key.clone());
    config.rng_seed = [0; 32];
    config.rng_seed[..8].copy_from_slice(&(i as u64 + 7).to_le_bytes());
    let host = new_host(config).map_err(|e| format!("node {i}: {e}"))?;
    let bound = host
        .listen(&tcp(members[i].port))
        .await
        .map_err(|e| format!("node {i} listen: {e}"))?;
    let port = match sansp2p::addr::tcp_target(&bound.to_vec()) {
        Some(sansp2p::addr::TcpTarget::Ip(sa)) => sa.port(),
        _ => return Err(format!("node {i}: bound to {bound}, not an IP address")),
    };
    members[i].port = port;
    serve_lookups(&host, i, dir.clone(), dials.clone());
    dir.lock().expect("not poisoned")[i] = Some((members[i].id, tcp(port)));
    members[i].host = Some(host);
    Ok(())
}

/// Turns peer maintenance on for node `i`: its static peer is node
/// `i + 1`, its trusted peer node `i - 1`, its bootnodes nodes 0 and 1.
fn maintain(members: &[Member], i: usize, args: &Args) -> Result<(), String> {
    let n = members.len();
    let entry = |j: usize| (members[j].id, vec![tcp(members[j].port).to_vec()]);
    let mut scheduler = SchedulerConfig::default();
    scheduler.max_peers = args.max_peers;
    scheduler.history_expiration = args.history;
    let mut config = MaintainConfig::default();
    config.scheduler = scheduler;
    config.static_peers = vec![entry((i + 1) % n)];
    // Node i - 1 keeps this one as a static peer: trusted, its redials are
    // let in even while other nodes' dials fill the inbound share.
    config.trusted_peers = vec![members[(i + n - 1) % n].id];
    config.bootnodes = [0, 1].into_iter().filter(|&b| b != i).map(entry).collect();
    config.rng_seed = i as u64;
    let host = members[i].host.as_ref().expect("booted");
    host.enable_peer_maintenance(config)
        .map_err(|e| format!("node {i}: {e}"))
}

/// The live nodes' peer counts, sorted: (dialed, all) each.
fn counts(members: &[Member]) -> Vec<(usize, usize)> {
    let mut c: Vec<(usize, usize)> = members
        .iter()
        .filter_map(|m| m.host.as_ref()?.peer_counts())
        .collect();
    c.sort_by_key(|(_, all)| *all);
    c
}

/// Samples until `done` holds for the live nodes or the phase limit
/// passes; prints the counts when they change (at least once a second)
/// and adds the samples above the limit to `over`. Returns how long it
/// took since `start`.
async fn phase(
    name: &str,
    members: &[Member],
    args: &Args,
    (t0, start): (Instant, Instant),
    over: &mut usize,
    mut done: impl FnMut(&[Member], &[(usize, usize)]) -> bool,
) -> Result<Duration, String> {
    let mut printed = (Duration::ZERO, [usize::MAX; 3]);
    loop {
        let c = counts(members);
        *over += c.iter().filter(|(_, all)| *all > args.max_peers).count();
        let t = t0.elapsed();
        let finished = !c.is_empty() && done(members, &c);
        let all: Vec<usize> = c.iter().map(|(_, a)| *a).collect();
        let stats = [
            *all.first().unwrap_or(&0),
            *all.get(all.len() / 2).unwrap_or(&0),
            *all.last().unwrap_or(&0),
        ];
        if finished || stats != printed.1 || t >= printed.0 + Duration::from_secs(1) {
            printed = (t, stats);
            println!(
                "t={:.2} peers min={} median={} max={}",
                t.as_secs_f64(),
                stats[0],
                stats[1],
                stats[2],
            );
        }
        if finished {
            return Ok(start.elapsed());
        }
        if start.elapsed() > PHASE_LIMIT {
            return Err(format!("{name}: not done after {PHASE_LIMIT:?}"));
        }
        smol::Timer::after(SAMPLE).await;
    }
}

/// Every live node has its dialed quota full.
fn quota_full(args: &Args) -> impl Fn(&[Member], &[(usize, usize)]) -> bool {
    let dialed = args.max_peers / 3;
    move |_, c| c.iter().all(|(d, _)| *d == dialed)
}

/// Every live node has its dialed quota full and no connection to a node
/// in `gone`.
fn refilled(args: &Args, gone: Vec<PeerId>) -> impl Fn(&[Member], &[(usize, usize)]) -> bool {
    let full = quota_full(args);
    move |members, c| {
        full(members, c)
            && members
                .iter()
                .filter_map(|m| m.host.as_ref())
                .all(|h| gone.iter().all(|id| h.connections(id).is_empty()))
    }
}

/// Every node is up and connected to its static peer.
fn statics_back(members: &[Member], _: &[(usize, usize)]) -> bool {
    let n = members.len();
    (0..n).all(|i| {
        members[i]
            .host
            .as_ref()
            .is_some_and(|h| !h.connections(&members[(i + 1) % n].id).is_empty())
    })
}

async fn run(args: Args) -> Result<(), String> {
    let n = args.nodes;
    println!(
        "mesh: {n} nodes, max peers {}, dialed quota {}, dial history {} s",
        args.max_peers,
        args.max_peers / 3,
        args.history.as_secs()
    );
    let dir: Directory = Arc::new(Mutex::new(vec![None; n]));
    let dials = Arc::new(AtomicU64::new(0));
    let mut members: Vec<Member> = (0..n)
        .map(|i| {
            let key = key_of(i);
            Member {
                id: key.peer_id(),
                key,
                port: 0,
                host: None,
            }
        })
        .collect();
    let t0 = Instant::now();
    // Every node listens first, so that each knows its static peer's port.
    for i in 0..n {
        boot(&mut members, i, &dir, &dials).await?;
    }
    for i in 0..n {
        maintain(&members, i, &args)?;
    }
    let mut over = 0;
    let converged = phase(
        "converge",
        &members,
        &args,
        (t0, t0),
        &mut over,
        quota_full(&args),
    )
    .await?;
    println!("converged in {:.2} s", converged.as_secs_f64());

    let killed: Vec<usize> = (n - n / 3..n).collect();
    println!("shutting down {} nodes", killed.len());
    let gone: Vec<PeerId> = killed.iter().map(|&k| members[k].id).collect();
    // The survivors' dialed peers among them: the slots to refill.
    let lost: usize = (0..n - n / 3)
        .map(|i| {
            let h = members[i].host.as_ref().expect("up");
            let dialed = |id: &PeerId| {
                h.connections(id)
                    .iter()
                    .any(|c| c.endpoint == sansp2p::node::Endpoint::Dialer)
            };
            gone.iter().filter(|id| dialed(id)).count()
        })
        .sum();
    let dials_before = dials.load(Ordering::Relaxed);
    let kill_at = Instant::now();
    let mut shutdowns = Vec::new();
    for &k in &killed {
        dir.lock().expect("not poisoned")[k] = None;
        if let Some(h) = members[k].host.take() {
            shutdowns.push(smol::spawn(async move { h.shutdown().await }));
        }
    }
    let refill = refilled(&args, gone);
    let refilled = phase("refill", &members, &args, (t0, kill_at), &mut over, refill).await?;
    for s in shutdowns {
        s.await;
    }
    let refill_dials = dials.load(Ordering::Relaxed) - dials_before;
    println!(
        "refilled in {:.2} s: {refill_dials} dials for {lost} lost dial slots",
        refilled.as_secs_f64()
    );

    println!("restarting them");
    let restart_at = Instant::now();
    for &k in &killed {
        boot(&mut members, k, &dir, &dials).await?;
        maintain(&members, k, &args)?;
    }
    let times = (t0, restart_at);
    let back = phase("statics", &members, &args, times, &mut over, statics_back).await?;
    println!("static peers back in {:.1} s", back.as_secs_f64());
    // Once more at rest: every dialed quota is full again.
    let times = (t0, Instant::now());
    phase(
        "settle",
        &members,
        &args,
        times,
        &mut over,
        quota_full(&args),
    )
    .await?;
    println!(
        "mesh: {n} nodes, max peers {}: converged in {:.2} s, refilled in {:.2} s, over limit: {over}",
        args.max_peers,
        converged.as_secs_f64(),
        refilled.as_secs_f64(),
    );
    for m in &members {
        if let Some(h) = &m.host {
            h.shutdown().await;
        }
    }
    if over > 0 {
        return Err(format!("{over} samples above max peers"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\nusage: mesh [--nodes N] [--max-peers N] [--history-s N]");
            return ExitCode::from(2);
        }
    };
    match smol::block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh: {e}");
            ExitCode::FAILURE
        }
    }
}
