//! How the simulator scales: wall time per simulated second, memory per
//! host and events per wall second, at 1 000 and 10 000 hosts (and 50 000
//! with `--big`), for the reachability scenario (and the mesh with
//! `--scenario mesh`): the whole run from the boot is measured, so the
//! handshakes, reservations and refreshes are in it.
//!
//! ```sh
//! cargo bench -p sansp2p-sim --bench scale [-- --rounds 3 --virtual-s 60 --big]
//! ```
//!
//! Each measurement runs in a child process of its own, so its resident
//! memory is its own; the sizes are interleaved round by round, because
//! this machine's speed drifts; each round's ratio is taken between its
//! own runs, and the ratios' median is printed:
//! `RATIO per-host-cost/10000-vs-1000-hosts` and
//! `RATIO per-host-memory/10000-vs-1000-hosts` (1.00 = flat).

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

/// One measurement, as the child prints it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    hosts: usize,
    /// Wall seconds per simulated second, after the boot.
    wall_per_sim_s: f64,
    /// Resident bytes per host once the network has settled.
    bytes_per_host: f64,
    events_per_wall_s: f64,
    events: u64,
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The child: builds `hosts` hosts and runs `run` of virtual time (boot,
/// convergence and the steady state with its refreshes, all of it
/// measured); memory is measured at the end.
fn child(scenario: &str, hosts: usize, run: Duration) {
    let base = rss_bytes();
    let wall = Instant::now();
    let mut sim = match scenario {
        "mesh" => common::mesh::mesh(1, hosts),
        _ => common::reachability::build(1, hosts),
    };
    sim.run_for(run);
    let wall = wall.elapsed().as_secs_f64();
    let events = sim.stats().events;
    let mem = rss_bytes().saturating_sub(base);
    println!(
        "SAMPLE {hosts} {} {} {} {}",
        wall / run.as_secs_f64(),
        mem as f64 / hosts as f64,
        events as f64 / wall,
        events
    );
}

fn parse(line: &str) -> Option<Sample> {
    let mut it = line.strip_prefix("SAMPLE ")?.split_whitespace();
    Some(Sample {
        hosts: it.next()?.parse().ok()?,
        wall_per_sim_s: it.next()?.parse().ok()?,
        bytes_per_host: it.next()?.parse().ok()?,
        events_per_wall_s: it.next()?.parse().ok()?,
        events: it.next()?.parse().ok()?,
    })
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let scenario = value("--scenario").unwrap_or_else(|| "reachability".into());
    let virtual_s: u64 = value("--virtual-s")
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let run = Duration::from_secs(virtual_s);
    if let Some(n) = value("--child") {
        child(&scenario, n.parse().expect("--child N"), run);
        return;
    }
    let rounds: usize = value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut sizes = vec![1_000, 10_000];
    if args.iter().any(|a| a == "--big") {
        sizes.push(50_000);
    }
    println!(
        "sim scale, scenario {scenario}: {run:?} of virtual time from the boot; {rounds} interleaved rounds"
    );
    let exe = std::env::current_exe().expect("own path");
    let mut samples: Vec<Sample> = Vec::new();
    for round in 0..rounds {
        for &n in &sizes {
            let out = Command::new(&exe)
                .args(["--child", &n.to_string(), "--scenario", &scenario])
                .args(["--virtual-s", &virtual_s.to_string()])
                .output()
                .expect("child runs");
            let text = String::from_utf8_lossy(&out.stdout);
            let Some(s) = text.lines().find_map(parse) else {
                panic!(
                    "child {n} failed: {}\n{}",
                    text,
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            println!(
                "round {round} hosts {n:>6}: {:.3} wall s per simulated s ({:.1} µs per host), \
                 {:.0} B per host, {:.0} events per wall s ({} events)",
                s.wall_per_sim_s,
                s.wall_per_sim_s / n as f64 * 1e6,
                s.bytes_per_host,
                s.events_per_wall_s,
                s.events
            );
            samples.push(s);
        }
    }
    let at = |n: usize, f: fn(&Sample) -> f64| {
        median(samples.iter().filter(|s| s.hosts == n).map(f).collect())
    };
    for &n in &sizes {
        println!(
            "hosts {n:>6}: median {:.3} wall s per simulated s, {:.0} B per host, {:.0} events per wall s",
            at(n, |s| s.wall_per_sim_s),
            at(n, |s| s.bytes_per_host),
            at(n, |s| s.events_per_wall_s)
        );
    }
    // Each round's own ratio (its runs are neighbours in time, so they
    // share the machine's drift), then the median over the rounds.
    let ratio = |n: usize, f: fn(&Sample) -> f64| {
        let per_round = samples.chunks(sizes.len()).map(|round| {
            let pick = |m: usize| round.iter().find(|s| s.hosts == m).map(f).expect("sampled");
            pick(n) / pick(1_000)
        });
        median(per_round.collect())
    };
    let cost = |s: &Sample| s.wall_per_sim_s / s.hosts as f64;
    let mem = |s: &Sample| s.bytes_per_host;
    for &n in sizes.iter().filter(|&&n| n != 1_000) {
        println!(
            "RATIO per-host-cost/{n}-vs-1000-hosts {:.2}",
            ratio(n, cost)
        );
        println!(
            "RATIO per-host-memory/{n}-vs-1000-hosts {:.2}",
            ratio(n, mem)
        );
    }
}
