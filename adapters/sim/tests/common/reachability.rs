//! The reachability scenario's network, shared by `tests/reachability.rs`
//! and `benches/scale.rs`: a tenth of the hosts are public relays, six
//! tenths sit behind NATs and keep reservations with AutoRelay, the rest
//! are plain public hosts.

use std::ops::Range;
use std::time::Duration;

use sansp2p::node::Event;
use sansp2p::peers::connmgr::ConnManagerConfig;
use sansp2p::relay::finder::{FinderConfig, Reachability};
use sansp2p::relay::ServerConfig;
use sansp2p::{Instant, PeerId};
use sansp2p_sim::{Directory, HostId, NetConfig, Sim, SimRng, Template};

/// Relays and public hosts boot within this of the start; private hosts
/// join the running network within this after it.
pub const BOOT_SPREAD: Duration = Duration::from_secs(5);
/// The relays' reservation lifetime (go: 1 h): refreshed every 45 s.
pub const TTL: Duration = Duration::from_secs(60);
/// Relays each private host holds (go's default).
pub const DESIRED: usize = 2;
/// A peer-source lookup takes up to this long (a DHT walk).
pub const LOOKUP: Duration = Duration::from_millis(300);
/// Connection manager watermarks of the private hosts: the probes'
/// connections are trimmed, the relays' (protected) never.
pub const LOW_WATER: usize = 6;
pub const HIGH_WATER: usize = 12;

// ------------------------------------------------------------ roles

/// Of `n` hosts, 0.. are relays (10 %), then plain public ones (30 %),
/// then private ones (60 %).
pub fn relays(n: usize) -> Range<usize> {
    0..n / 10
}

pub fn publics(n: usize) -> Range<usize> {
    n / 10..n - n * 6 / 10
}

pub fn privates(n: usize) -> Range<usize> {
    n - n * 6 / 10..n
}

pub fn ids(r: Range<usize>) -> impl Iterator<Item = HostId> {
    r.map(|i| HostId(i as u32))
}

// ------------------------------------------------------------ the network

pub fn relay() -> Template {
    Template::new().boot_within(BOOT_SPREAD).on_boot(|ctx| {
        let mut config = ServerConfig::default();
        config.reservation_ttl = TTL;
        ctx.node.serve_relay(ctx.now, ctx.wall_clock(), config);
    })
}

/// A peer-source lookup (a DHT query for relay providers, with stale
/// answers): up to `max` public hosts that are up, half of them relays
/// and half not, in random order. The finder must probe them, drop the
/// ones that do not speak hop and keep the others as candidates. Hosts
/// are drawn by index and the ones down skipped, so a lookup costs about
/// `max` draws whatever the network's size.
pub fn lookup(dir: &Directory, rng: &mut SimRng, max: usize) -> Vec<(PeerId, Vec<Vec<u8>>)> {
    let n = dir.len();
    let mut found = pick_up(dir, rng, relays(n), max.div_ceil(2));
    let rest = max - found.len();
    found.extend(pick_up(dir, rng, publics(n), rest));
    let k = found.len();
    let mut found = draw(rng, &mut found, k);
    found.truncate(max);
    found
        .into_iter()
        .map(|h| (dir.get(h).peer, vec![dir.get(h).addr.clone()]))
        .collect()
}

/// Up to `k` distinct hosts of `range` that are up, drawn at random;
/// exact (a scan) when random draws find too few.
fn pick_up(dir: &Directory, rng: &mut SimRng, range: Range<usize>, k: usize) -> Vec<HostId> {
    let mut out = Vec::with_capacity(k);
    if range.is_empty() {
        return out;
    }
    for _ in 0..k * 8 {
        if out.len() == k {
            return out;
        }
        let h = HostId((range.start + rng.below(range.len() as u64) as usize) as u32);
        if dir.get(h).up && !out.contains(&h) {
            out.push(h);
        }
    }
    let mut pool: Vec<HostId> = ids(range)
        .filter(|&h| dir.get(h).up && !out.contains(&h))
        .collect();
    let more = k - out.len();
    out.extend(draw(rng, &mut pool, more));
    out
}

/// `k` of `pool` at random (partial Fisher-Yates), in random order.
pub fn draw(rng: &mut SimRng, pool: &mut [HostId], k: usize) -> Vec<HostId> {
    let k = k.min(pool.len());
    rng.shuffle_prefix(pool, k);
    pool[..k].to_vec()
}

/// Behind a NAT, with AutoRelay: its peer source is `lookup`, `LOOKUP`
/// long.
pub fn private() -> Template {
    Template::new()
        .private()
        .boot_within(BOOT_SPREAD)
        .on_boot(|ctx| {
            let mut config = FinderConfig::default();
            config.desired_relays = DESIRED;
            let mut seed = [0u8; 32];
            for chunk in seed.chunks_mut(8) {
                chunk.copy_from_slice(&ctx.rng.next_u64().to_le_bytes());
            }
            config.rng_seed = seed;
            ctx.node
                .enable_autorelay(ctx.now, ctx.wall_clock(), config)
                .unwrap();
            ctx.node.set_reachability(ctx.now, Reachability::Private);
            let trim = ConnManagerConfig::with_watermarks(LOW_WATER, HIGH_WATER);
            ctx.node.enable_conn_manager(ctx.now, trim).unwrap();
        })
        .on_event(|ctx, event| match event {
            Event::RelayCandidatesWanted { max } => {
                let max = *max;
                let delay = ctx.rng.duration_up_to(LOOKUP);
                ctx.after(delay, move |ctx| {
                    let found = lookup(ctx.dir, ctx.rng, max);
                    ctx.node.add_relay_candidates(ctx.now, found);
                    ctx.node.relay_candidates_exhausted(ctx.now);
                });
            }
            Event::CircuitRequest { request, .. } => {
                ctx.node.answer_circuit(ctx.now, *request, Ok(())).unwrap();
            }
            _ => {}
        })
}

/// The scenario's network of `n` hosts: relays and public hosts boot
/// within `BOOT_SPREAD`; the private hosts are added once it passed and
/// boot within `BOOT_SPREAD` more. (All booting at once, the first relays
/// up take most reservations and the last ones none: the finder never
/// rebalances. Servers are up before their clients here.)
pub fn build(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed, NetConfig::default());
    sim.add_hosts(relays(n).len(), &relay());
    sim.add_hosts(publics(n).len(), &Template::new().boot_within(BOOT_SPREAD));
    let clients = privates(n).len();
    sim.at(Instant::ZERO + BOOT_SPREAD, move |sim| {
        sim.add_hosts(clients, &private());
    });
    sim
}
