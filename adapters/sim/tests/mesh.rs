//! Peer maintenance at scale: the mesh converges to its quotas, survives
//! churn and a partition, and a run replays exactly from its seed.

use std::time::Duration;

use sansp2p::dial::scheduler::SchedulerConfig;
use sansp2p::node::{Event, MaintainConfig};
use sansp2p_sim::{HostId, NetConfig, Sim, Template};

const MAX_PEERS: usize = 6;

/// A host keeping peers: bootnodes hosts 0 and 1, lookups answered from
/// the directory after 50 ms.
fn member(boots: Vec<HostId>) -> Template {
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
                    let found = ctx.dir.sample(ctx.rng, want, ctx.host, |_| true);
                    ctx.node.add_peer_candidates(ctx.now, found);
                    ctx.node.peer_lookup_done(ctx.now);
                });
            }
        })
}

/// (dialed, connected) of every host that is up.
fn counts(sim: &Sim) -> Vec<(usize, usize)> {
    sim.hosts()
        .filter_map(|h| sim.node(h)?.scheduler())
        .map(|s| (s.dialed_peers(), s.connected_peers()))
        .collect()
}

fn converged(sim: &Sim) -> bool {
    let dialed = MAX_PEERS / 3;
    let c = counts(sim);
    c.len() == sim.host_count() && c.iter().all(|&(d, _)| d >= dialed)
}

fn over_limit(sim: &Sim) -> usize {
    counts(sim).iter().filter(|&&(_, c)| c > MAX_PEERS).count()
}

fn mesh(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed, NetConfig::default());
    let t = member(vec![HostId(0), HostId(1)]);
    sim.add_hosts(n, &t);
    sim
}

#[test]
fn the_mesh_converges_and_replays_from_its_seed() {
    let n = 300;
    let mut a = mesh(1, n);
    let took = a
        .run_until(Duration::from_secs(60), converged)
        .expect("the mesh converged");
    assert_eq!(over_limit(&a), 0);
    a.run_for(Duration::from_secs(5));
    println!(
        "{n} hosts converged in {:.1} s; trace {:016x}, {:?}",
        took.as_secs_f64(),
        a.trace_hash(),
        a.stats()
    );
    let mut b = mesh(1, n);
    b.run_until(Duration::from_secs(60), converged).unwrap();
    b.run_until(took + Duration::from_secs(5), |s| s.now() >= a.now());
    assert_eq!(a.now(), b.now());
    assert_eq!(a.trace_hash(), b.trace_hash(), "same seed, same run");
    let mut c = mesh(2, n);
    c.run_until(took + Duration::from_secs(5), |s| s.now() >= a.now());
    assert_ne!(a.trace_hash(), c.trace_hash(), "another seed, another run");
}
