//! Peer maintenance at scale: the mesh converges to its quotas, survives
//! churn and a partition, and a run replays exactly from its seed.

use std::time::Duration;

use sansp2p_sim::{HostId, Sim};

mod common;
use common::mesh::{converged, counts, mesh, over_limit, MAX_PEERS};

#[test]
fn the_mesh_converges_and_replays_from_its_seed() {
    let n = 300;
    let mut a = mesh(1, n);
    let took = a
        .run_until(Duration::from_secs(60), |s| converged(s, n))
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
    b.run_until(Duration::from_secs(60), |s| converged(s, n))
        .unwrap();
    b.run_until(took + Duration::from_secs(5), |s| s.now() >= a.now());
    assert_eq!(a.now(), b.now());
    assert_eq!(a.trace_hash(), b.trace_hash(), "same seed, same run");
    let mut c = mesh(2, n);
    c.run_until(took + Duration::from_secs(5), |s| s.now() >= a.now());
    assert_ne!(a.trace_hash(), c.trace_hash(), "another seed, another run");
}

/// Runs until the mesh has converged, counting samples over the limit.
fn converge(sim: &mut Sim, up: usize, limit: Duration, over: &mut usize) -> Duration {
    sim.run_until(limit, |sim| {
        *over += over_limit(sim);
        converged(sim, up)
    })
    .unwrap_or_else(|| {
        let short: Vec<_> = counts(sim)
            .iter()
            .enumerate()
            .filter(|(_, c)| c.0 < MAX_PEERS / 3)
            .map(|(i, c)| (i, *c))
            .take(10)
            .collect();
        let detail: Vec<_> = short
            .iter()
            .filter_map(|&(i, _)| {
                let s = sim.node(HostId(i as u32))?.scheduler()?;
                Some((i, s.dialing(), s.candidates(), s.history_len(), s.free_slots()))
            })
            .collect();
        panic!("not converged after {limit:?} at {:?}: {short:?}; (dialing, candidates, history, free): {detail:?}", sim.now())
    })
}

#[test]
fn a_thousand_hosts_converge_survive_churn_and_a_partition() {
    let n = 1000;
    let mut sim = mesh(3, n);
    let mut over = 0;
    let wall = std::time::Instant::now();
    let converged_in = converge(&mut sim, n, Duration::from_secs(60), &mut over);
    // Churn: a tenth of the hosts crash; their peers refill, then the
    // crashed hosts come back and fill their own quotas.
    let churn =
        |sim: &Sim, k: u32| -> Vec<HostId> { sim.hosts().filter(|h| h.0 % 10 == k).collect() };
    let churned = churn(&sim, 5);
    for &h in &churned {
        sim.kill(h);
    }
    // The resets reach the peers one latency later.
    sim.run_for(Duration::from_millis(50));
    let refilled_in = converge(
        &mut sim,
        n - churned.len(),
        Duration::from_secs(60),
        &mut over,
    ) + Duration::from_millis(50);
    for &h in &churned {
        sim.restart(h);
    }
    let rejoined_in = converge(&mut sim, n, Duration::from_secs(60), &mut over);
    // A third of the network is cut off (bootnodes on the larger side).
    let cut = |h: HostId| h.0 % 3 == 2;
    let across = |sim: &Sim| -> usize {
        sim.hosts()
            .filter(|&h| cut(h))
            .filter_map(|h| sim.node(h))
            .map(|node| {
                sim.hosts()
                    .filter(|&o| !cut(o) && node.is_connected(&sim.peer_id(o)))
                    .count()
            })
            .sum()
    };
    let before = across(&sim);
    let side: Vec<HostId> = sim.hosts().filter(|&h| cut(h)).collect();
    sim.partition(side);
    // Connections across die after the partition timeout; both sides refill.
    let split_in = sim
        .run_until(Duration::from_secs(120), |sim| {
            over += over_limit(sim);
            across(sim) == 0 && converged(sim, n)
        })
        .expect("both sides refilled on their own");
    sim.heal();
    // A full mesh dials no one, so the two halves join again as hosts
    // come and go: another tenth restarts.
    let churned = churn(&sim, 7);
    for &h in &churned {
        sim.kill(h);
    }
    sim.run_for(Duration::from_secs(5));
    for &h in &churned {
        sim.restart(h);
    }
    let healed_in = converge(&mut sim, n, Duration::from_secs(60), &mut over);
    sim.run_for(Duration::from_secs(30));
    let after = across(&sim);
    assert!(
        after > before / 10,
        "the halves joined again: {after} connections across (were {before})"
    );
    let stats = sim.stats();
    println!(
        "mesh {n} hosts: converged {:.1} s, refilled after 10% crashed {:.2} s, rejoined {:.1} s, \
         split in two {:.1} s (partition timeout 30 s), after the heal and churn refilled {:.1} s \
         with {after} connections across the old cut (were {before}); \
         {} events, {} deliveries, wall {:.1} s",
        converged_in.as_secs_f64(),
        refilled_in.as_secs_f64(),
        rejoined_in.as_secs_f64(),
        split_in.as_secs_f64(),
        healed_in.as_secs_f64(),
        stats.events,
        stats.deliveries,
        wall.elapsed().as_secs_f64()
    );
    // Bounds: boot spread 1 s + a few lookups and handshakes; a refill a
    // dial or two. The split needs the partition timeout (30 s), then the
    // peers still in the store from the other side cost a dial timeout
    // (15 s) each, two rounds at most in practice.
    assert!(converged_in < Duration::from_secs(5), "{converged_in:?}");
    assert!(refilled_in < Duration::from_secs(5), "{refilled_in:?}");
    assert!(rejoined_in < Duration::from_secs(5), "{rejoined_in:?}");
    assert!(split_in < Duration::from_secs(75), "{split_in:?}");
}
