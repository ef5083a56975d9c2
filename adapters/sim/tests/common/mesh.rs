//! The mesh scenario, shared by `tests/mesh.rs` and `benches/scale.rs`:
//! hosts keeping peers with go-ethereum's quotas, bootnodes hosts 0 and 1,
//! lookups answered from the directory (this side of any partition) after
//! 50 ms.

use std::time::Duration;

use sansp2p::dial::scheduler::SchedulerConfig;
use sansp2p::node::{Event, MaintainConfig};
use sansp2p_sim::{HostId, NetConfig, Sim, Template};

pub const MAX_PEERS: usize = 6;

/// A host keeping peers: bootnodes hosts 0 and 1, lookups answered from
/// the directory after 50 ms.
pub fn member(boots: Vec<HostId>) -> Template {
    Template::new()
        .boot_within(Duration::from_secs(1))
        .on_boot(move |ctx| {
            let mut scheduler = SchedulerConfig::default();
            scheduler.max_peers = MAX_PEERS;
            scheduler.history_expiration = Duration::from_secs(10);
            let mut config = MaintainConfig::default();
            config.scheduler = scheduler;
            config.bootnodes = boots
                .iter()
                .filter(|&&b| b != ctx.host)
                .map(|&b| {
                    let info = ctx.dir.get(b);
                    (info.peer, vec![info.addr.clone()])
                })
                .collect();
            config.rng_seed = u64::from(ctx.host.0);
            ctx.node.enable_peer_maintenance(ctx.now, config).unwrap();
        })
        .on_event(|ctx, event| {
            if let Event::PeerLookupWanted { want } = event {
                let want = *want;
                ctx.after(Duration::from_millis(50), move |ctx| {
                    // Discovery finds peers this side of any partition.
                    let group = ctx.dir.get(ctx.host).group;
                    let found = ctx
                        .dir
                        .sample(ctx.rng, want, ctx.host, |h| h.group == group);
                    ctx.node.add_peer_candidates(ctx.now, found);
                    ctx.node.peer_lookup_done(ctx.now);
                });
            }
        })
}

/// (dialed, connected) of every host that is up.
pub fn counts(sim: &Sim) -> Vec<(usize, usize)> {
    sim.hosts()
        .filter_map(|h| sim.node(h)?.scheduler())
        .map(|s| (s.dialed_peers(), s.connected_peers()))
        .collect()
}

/// Every host that is up holds its dialed quota, and `up` hosts are up.
pub fn converged(sim: &Sim, up: usize) -> bool {
    let dialed = MAX_PEERS / 3;
    let c = counts(sim);
    c.len() == up && c.iter().all(|&(d, _)| d >= dialed)
}

pub fn over_limit(sim: &Sim) -> usize {
    counts(sim).iter().filter(|&&(_, c)| c > MAX_PEERS).count()
}

pub fn mesh(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed, NetConfig::default());
    let t = member(vec![HostId(0), HostId(1)]);
    sim.add_hosts(n, &t);
    sim
}
