//! The README's 20-line scenario: 500 hosts keep 6 peers each; a tenth
//! crash; the rest refill. `cargo run --release -p sansp2p-sim --example scenario`

use std::time::Duration;

use sansp2p::node::{Event, MaintainConfig};
use sansp2p_sim::{HostId, NetConfig, Sim, Template};

fn main() {
    let mut sim = Sim::new(42, NetConfig::default()); // 10 ms ± 5 ms links
    let member = Template::new()
        .boot_within(Duration::from_secs(1))
        .on_boot(|ctx| {
            let mut config = MaintainConfig::default();
            config.scheduler.max_peers = 6;
            ctx.node.enable_peer_maintenance(ctx.now, config).unwrap();
        })
        .on_event(|ctx, event| {
            if let Event::PeerLookupWanted { want } = event {
                let found = ctx.dir.sample(ctx.rng, *want, ctx.host, |h| h.up); // "discovery"
                ctx.node.add_peer_candidates(ctx.now, found);
                ctx.node.peer_lookup_done(ctx.now);
            }
        });
    sim.add_hosts(500, &member);
    sim.run_for(Duration::from_secs(1)); // every host has booted
    let full = |s: &Sim| {
        s.hosts()
            .filter_map(|h| s.node(h)?.scheduler())
            .all(|m| m.dialed_peers() >= 2)
    };
    println!(
        "converged after {:?} more",
        sim.run_until(Duration::from_secs(30), full)
    );
    (0..50).for_each(|i| sim.kill(HostId(i * 10))); // a tenth crash
    sim.run_for(Duration::from_millis(100));
    println!(
        "refilled in {:?}",
        sim.run_until(Duration::from_secs(30), full)
    );
    println!("trace {:016x} {:?}", sim.trace_hash(), sim.stats());
}
