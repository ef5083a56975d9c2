//! Reachability at scale (issue 14): a tenth of the hosts are public
//! relays, six tenths sit behind NATs and keep reservations with AutoRelay,
//! the rest are plain public hosts. Every private host reaches its desired
//! relays, keeps them across many short reservation lifetimes, replaces the
//! ones that die, and stays reachable through its circuit addresses; a run
//! replays exactly from its seed.
//!
//! `build` makes the network and `observe` the log every figure is read
//! from, so a bench can run the same scenario.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use sansp2p::node::{ConnectionId, DialId, Event};
use sansp2p::relay::finder;
use sansp2p::relay::server::ServerEvent;
use sansp2p::relay::CircuitAddr;
use sansp2p::{Instant, PeerId};
use sansp2p_sim::{HostId, Sim};

mod common;
use common::reachability::*;

/// The size CI runs.
const HOSTS: usize = 1_000;
/// The size of the replay test.
const SMALL: usize = 200;
/// From its boot, a private host holds its relays within this: a lookup,
/// probes (connect, noise, identify) and two reservations, a few round
/// trips; measured at 1 000 hosts: 0.46 s.
const RESERVE_BOUND: Duration = Duration::from_secs(2);
/// A private host that lost a relay holds `DESIRED` again within this:
/// at once from its standing candidates, or after one peer-source
/// interval (30 s) if every candidate died too.
const REACQUIRE_BOUND: Duration = Duration::from_secs(35);
/// The median outage: a reset, then a reservation with a standing
/// candidate (connect, noise, identify, RESERVE); measured: 0.16 s.
const REACQUIRE_MEDIAN: Duration = Duration::from_secs(1);
/// A circuit dial, from CONNECT to the upgraded relayed connection;
/// measured: 0.29 s at most.
const CIRCUIT_BOUND: Duration = Duration::from_secs(5);
/// Private hosts dialed through their relays in each round.
const PROBES: usize = 100;
/// The dials of a round go out over this long.
const PROBE_SPREAD: Duration = Duration::from_secs(2);

// ------------------------------------------------------------ the log

/// What the observer saw, by host index.
#[derive(Debug, Default)]
struct Log {
    /// Its node's last boot (its `Listening` event).
    boot: Vec<Option<Instant>>,
    /// Relays its finder holds (added minus removed).
    held: Vec<usize>,
    /// When it first held `DESIRED`.
    full: Vec<Option<Instant>>,
    /// Since when it holds fewer again, after having held `DESIRED`.
    down: Vec<Option<Instant>>,
    /// Its spells below `DESIRED` after the first: (host, start, length).
    outages: Vec<(HostId, Instant, Duration)>,
    /// Relays given up, by reason.
    removed: BTreeMap<String, u64>,
    /// A relay's refreshes granted (`Reserved { renewed: true }`).
    refreshes: Vec<u64>,
    /// A relay's new reservations granted.
    reserved: Vec<u64>,
    /// A relay's refused RESERVEs.
    refused: Vec<u64>,
    /// Reservations a relay saw run out unrefreshed.
    expired: u64,
    /// Circuits private hosts were asked to accept.
    circuit_requests: u64,
    /// Peer-source queries (`RelayCandidatesWanted`).
    lookups: u64,
    /// Dials that reached their peer: when, whom, on which connection.
    dialed: BTreeMap<(HostId, DialId), (Instant, PeerId, ConnectionId)>,
    /// Dials and circuit dials that failed, and why.
    failed: BTreeMap<(HostId, DialId), String>,
}

/// Installs the observer every figure is read from (`n`: the hosts
/// `build` makes).
fn observe(sim: &mut Sim, n: usize) -> Rc<RefCell<Log>> {
    let log = Rc::new(RefCell::new(Log {
        boot: vec![None; n],
        held: vec![0; n],
        full: vec![None; n],
        down: vec![None; n],
        refreshes: vec![0; n],
        reserved: vec![0; n],
        refused: vec![0; n],
        ..Log::default()
    }));
    let l = log.clone();
    sim.observe(move |now, host, event| {
        let mut log = l.borrow_mut();
        let i = host.index();
        match event {
            Event::Listening { .. } => {
                log.boot[i] = Some(now);
                log.held[i] = 0;
            }
            Event::AutoRelay(finder::Event::RelayAdded { .. }) => {
                log.held[i] += 1;
                if log.held[i] == DESIRED {
                    log.full[i].get_or_insert(now);
                    if let Some(since) = log.down[i].take() {
                        log.outages.push((host, since, now - since));
                    }
                }
            }
            Event::AutoRelay(finder::Event::RelayRemoved { reason, .. }) => {
                if log.held[i] == DESIRED && log.full[i].is_some() {
                    log.down[i] = Some(now);
                }
                log.held[i] -= 1;
                *log.removed.entry(format!("{reason:?}")).or_default() += 1;
            }
            Event::RelayServer(e) => match e {
                ServerEvent::Reserved { renewed: true, .. } => log.refreshes[i] += 1,
                ServerEvent::Reserved { .. } => log.reserved[i] += 1,
                ServerEvent::ReserveRefused { .. } => log.refused[i] += 1,
                ServerEvent::ReservationEnded { expired: true, .. } => log.expired += 1,
                _ => {}
            },
            Event::CircuitRequest { .. } => log.circuit_requests += 1,
            Event::RelayCandidatesWanted { .. } => log.lookups += 1,
            Event::Dialed { dial, peer, conn } => {
                log.dialed.insert((host, *dial), (now, *peer, *conn));
            }
            Event::DialFailed {
                dial,
                cause,
                errors,
                ..
            } => {
                log.failed
                    .insert((host, *dial), format!("{cause:?} {errors:?} at {now:?}"));
            }
            Event::CircuitDialFailed { dial, error } => {
                log.failed.insert((host, *dial), format!("{error}"));
            }
            _ => {}
        }
    });
    log
}

// ------------------------------------------------------------ measures

/// The host holds `DESIRED` live reservations with relays that are up and
/// know them, and announces a circuit address through each.
fn holds(sim: &Sim, host: HostId) -> bool {
    let now = sim.now();
    let Some(node) = sim.node(host) else {
        return false;
    };
    let Some(finder) = node.autorelay() else {
        return false;
    };
    let peer = sim.peer_id(host);
    let mut count = 0;
    for (relay, expire) in finder.relays() {
        let known = sim
            .directory()
            .host_of(&relay)
            .and_then(|r| sim.node(r)?.relay_server())
            .is_some_and(|server| server.has_reservation(&peer));
        let live = node.reservation(&relay).is_some_and(|r| r.expire > now);
        if !known || !live || expire <= now {
            return false;
        }
        count += 1;
    }
    count == DESIRED && finder.addrs().len() == DESIRED
}

/// Every private host of `n` hosts holds its relays.
fn all_hold(sim: &Sim, n: usize) -> bool {
    sim.host_count() == n && ids(privates(n)).all(|h| holds(sim, h))
}

/// Every private host that holds fewer than `DESIRED` (for messages).
fn lacking(sim: &Sim, n: usize) -> Vec<(HostId, usize)> {
    ids(privates(n))
        .filter(|&h| !holds(sim, h))
        .map(|h| {
            let held = sim
                .node(h)
                .and_then(|n| n.autorelay())
                .map_or(0, |f| f.relays().count());
            (h, held)
        })
        .collect()
}

/// New reservations granted when each of `private` hosts reserved
/// `DESIRED` once and `lost` reservations were made again elsewhere.
fn slots_granted(private: usize, lost: usize) -> u64 {
    (private * DESIRED + lost) as u64
}

/// (max, median) of some durations.
fn spread(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    if d.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    (d[d.len() - 1], d[d.len() / 2])
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// `k` distinct hosts of `from`, chosen with the simulation's RNG.
fn pick(sim: &mut Sim, from: &[HostId], k: usize) -> Vec<HostId> {
    draw(sim.rng(), &mut from.to_vec(), k)
}

/// A circuit dial of a probe round.
#[derive(Debug)]
struct Circuit {
    key: (HostId, DialId),
    target: HostId,
    relay: PeerId,
    start: Instant,
}

/// Counts the circuit dials of `open` that ended and hangs up the ones
/// that reached their target.
fn settle(sim: &mut Sim, log: &Log, open: &mut Vec<Circuit>, result: &mut Probe) {
    let mut left = Vec::new();
    for c in open.drain(..) {
        let (dialer, target) = (c.key.0, c.target);
        if let Some(&(at, peer, conn)) = log.dialed.get(&c.key) {
            if peer == sim.peer_id(target) && sim.node(dialer).unwrap().is_relayed(conn) {
                result.reached += 1;
                result.slowest = result.slowest.max(at - c.start);
            } else {
                result.failures.push(format!(
                    "{dialer} reached {peer}, not {target} through a relay"
                ));
            }
            sim.node_mut(dialer).unwrap().close_connection(conn);
        } else if let Some(why) = log.failed.get(&c.key) {
            let relay = sim.directory().host_of(&c.relay).unwrap();
            let circuits = sim
                .node(relay)
                .and_then(|r| Some(r.relay_server()?.circuits()));
            result.failures.push(format!(
                "{dialer} -> {target} through {relay} ({circuits:?} circuits): {why}"
            ));
        } else {
            left.push(c);
        }
    }
    *open = left;
}

/// Runs the network until job `i` of `of`'s turn: the jobs go out evenly
/// over `PROBE_SPREAD`.
fn wait_turn(sim: &mut Sim, i: usize, of: usize) {
    if i > 0 {
        sim.run_for(PROBE_SPREAD / of as u32);
    }
}

/// A round of circuit dials.
#[derive(Debug)]
struct Probe {
    tried: usize,
    reached: usize,
    slowest: Duration,
    failures: Vec<String>,
}

/// `PROBES` private hosts, each dialed by a random public host through
/// one of its circuit addresses (a random one): the public host connects
/// to the relay, dials the circuit, and the private host must accept.
/// Each circuit is hung up once it is up; the relays must then run none.
fn probe(sim: &mut Sim, log: &Rc<RefCell<Log>>) -> Probe {
    let n = sim.host_count();
    let targets = pick(sim, &ids(privates(n)).collect::<Vec<_>>(), PROBES);
    let dialers: Vec<HostId> = ids(publics(n)).collect();
    let mut jobs = Vec::new();
    for target in targets {
        let addrs = sim
            .node(target)
            .unwrap()
            .autorelay()
            .unwrap()
            .addrs()
            .to_vec();
        assert!(!addrs.is_empty(), "{target} has no circuit address");
        let mut addr = addrs[sim.rng().below(addrs.len() as u64) as usize].clone();
        addr.extend_from_slice(&sansp2p::relay::p2p_suffix(&sim.peer_id(target)));
        let parsed = CircuitAddr::parse(&addr).expect("a circuit address");
        assert_eq!(parsed.target, sim.peer_id(target));
        let (relay, relay_addr) = (parsed.relay, parsed.relay_addr.to_vec());
        let dialer = dialers[sim.rng().below(dialers.len() as u64) as usize];
        jobs.push((dialer, target, relay, relay_addr, addr));
    }
    // The dialers connect to the relays first, spread over `PROBE_SPREAD`
    // (a burst of a hundred at once overruns a relay's pending-upgrade
    // limit, which real dialers would not do in step).
    let mut to_relays = Vec::new();
    for (i, (dialer, _, relay, relay_addr, _)) in jobs.iter().enumerate() {
        wait_turn(sim, i, jobs.len());
        let now = sim.now();
        let node = sim.node_mut(*dialer).unwrap();
        let dial = node
            .dial(now, Some(*relay), vec![relay_addr.clone()])
            .unwrap();
        to_relays.push((*dialer, dial));
    }
    let resolved = |log: &Log, keys: &[(HostId, DialId)]| {
        keys.iter()
            .all(|k| log.dialed.contains_key(k) || log.failed.contains_key(k))
    };
    sim.run_until(Duration::from_secs(10), |_| {
        resolved(&log.borrow(), &to_relays)
    })
    .expect("the dials to the relays ended");
    for k in &to_relays {
        if let Some(why) = log.borrow().failed.get(k) {
            panic!("{} could not reach a relay: {why}", k.0);
        }
    }
    // Then the circuits, spread likewise; each is hung up as soon as it
    // is up (a relay runs at most 16 circuits at once).
    let mut result = Probe {
        tried: jobs.len(),
        reached: 0,
        slowest: Duration::ZERO,
        failures: Vec::new(),
    };
    let mut open = Vec::new();
    for (i, (dialer, target, relay, _, addr)) in jobs.iter().enumerate() {
        wait_turn(sim, i, jobs.len());
        settle(sim, &log.borrow(), &mut open, &mut result);
        let now = sim.now();
        let node = sim.node_mut(*dialer).unwrap();
        let dial = node.dial_circuit(now, addr).unwrap();
        open.push(Circuit {
            key: (*dialer, dial),
            target: *target,
            relay: *relay,
            start: now,
        });
    }
    let keys: Vec<(HostId, DialId)> = open.iter().map(|c| c.key).collect();
    sim.run_until(CIRCUIT_BOUND, |_| resolved(&log.borrow(), &keys));
    settle(sim, &log.borrow(), &mut open, &mut result);
    for c in open {
        result
            .failures
            .push(format!("{} -> {}: no answer", c.key.0, c.target));
    }
    assert_eq!(result.reached, result.tried, "{:?}", result.failures);
    assert!(result.slowest <= CIRCUIT_BOUND);
    // The relays free every circuit of the round.
    sim.run_for(Duration::from_secs(1));
    let busy: Vec<(HostId, usize)> = ids(relays(n))
        .filter_map(|r| Some((r, sim.node(r)?.relay_server()?.circuits())))
        .filter(|&(_, c)| c > 0)
        .collect();
    assert_eq!(busy, vec![], "circuits left running on relays");
    result
}

// ------------------------------------------------------------ the scenario

/// The figures of one run of the scenario.
#[derive(Debug)]
struct Figures {
    hosts: usize,
    /// From a private host's boot to holding `DESIRED`: max, median.
    reserve: (Duration, Duration),
    /// Virtual time at which every private host held its relays.
    all_held: Duration,
    /// Relays killed, reservations they held, private hosts that held one.
    killed: usize,
    lost_slots: usize,
    affected: usize,
    /// Outages the kill caused: max, median; and from the kill until
    /// every host held its relays again.
    reacquire: (Duration, Duration),
    reacquire_all: Duration,
    /// The three rounds of circuit dials.
    probes: Vec<Probe>,
    /// Refreshes all relays granted, the bounds they were checked
    /// against, and the fewest one surviving relay granted.
    refreshes: u64,
    refresh_bounds: (u64, u64),
    fewest_refreshes: u64,
    /// RESERVEs the relays refused.
    refused: u64,
    /// Peer-source queries of all private hosts.
    lookups: u64,
    /// Most connections a private host had at the end.
    max_conns: usize,
    end: Duration,
    events: u64,
    trace: u64,
    wall: std::time::Duration,
}

fn report(f: &Figures) {
    println!(
        "{} hosts: reserved within {:.2} s of boot (median {:.2} s), all by {:.2} s",
        f.hosts,
        secs(f.reserve.0),
        secs(f.reserve.1),
        secs(f.all_held)
    );
    println!(
        "  killed {} relays holding {} reservations of {} hosts: reacquired within {:.3} s (median {:.3} s), all {:.2} s after the kill",
        f.killed,
        f.lost_slots,
        f.affected,
        secs(f.reacquire.0),
        secs(f.reacquire.1),
        secs(f.reacquire_all)
    );
    for (i, p) in f.probes.iter().enumerate() {
        println!(
            "  circuit round {}: {}/{} reached, slowest {:.3} s",
            i + 1,
            p.reached,
            p.tried,
            secs(p.slowest)
        );
    }
    println!(
        "  {} refreshes (bounds {}..={}), fewest per surviving relay {}, {} refused RESERVEs, at most {} connections per private host",
        f.refreshes, f.refresh_bounds.0, f.refresh_bounds.1, f.fewest_refreshes, f.refused, f.max_conns
    );
    println!("  {} peer-source lookups", f.lookups);
    println!(
        "  {:.0} s virtual, {} events, trace {:016x}, {:.1} s wall",
        secs(f.end),
        f.events,
        f.trace,
        f.wall.as_secs_f64()
    );
}

/// The whole scenario, every figure asserted: reserve, hold across many
/// lifetimes, lose 30 % of the relays, reacquire, stay reachable, take
/// the relays back.
fn run(seed: u64, n: usize) -> Figures {
    let wall = std::time::Instant::now();
    let mut sim = build(seed, n);
    let log = observe(&mut sim, n);
    let private_ids: Vec<HostId> = ids(privates(n)).collect();
    let relay_ids: Vec<HostId> = ids(relays(n)).collect();

    // Every private host reserves its relays.
    let limit = 2 * BOOT_SPREAD + RESERVE_BOUND;
    let held = sim.run_until(limit, |s| all_hold(s, n));
    assert!(
        held.is_some(),
        "without their relays after {limit:?}: {:?}",
        lacking(&sim, n)
    );
    let all_held = sim.now() - Instant::ZERO;
    let reserve = spread(
        private_ids
            .iter()
            .map(|h| {
                let l = log.borrow();
                l.full[h.index()].unwrap() - l.boot[h.index()].unwrap()
            })
            .collect(),
    );
    assert!(reserve.0 <= RESERVE_BOUND, "reserved after {:?}", reserve.0);

    // They keep them across two lifetimes, without a gap.
    sim.run_for(2 * TTL);
    assert!(all_hold(&sim, n), "lapsed: {:?}", lacking(&sim, n));
    assert_eq!(log.borrow().outages, vec![], "no relay was lost");
    assert_eq!(log.borrow().removed, BTreeMap::new(), "no relay was lost");
    let mut probes = vec![probe(&mut sim, &log)];

    // 30 % of the relays die.
    let killed = pick(&mut sim, &relay_ids, relay_ids.len() * 3 / 10);
    let dead: BTreeSet<PeerId> = killed.iter().map(|&r| sim.peer_id(r)).collect();
    let mut lost_slots = 0;
    let mut affected = 0;
    for &h in &private_ids {
        let finder = sim.node(h).unwrap().autorelay().unwrap();
        let lost = finder.relays().filter(|(r, _)| dead.contains(r)).count();
        lost_slots += lost;
        affected += usize::from(lost > 0);
    }
    assert!(affected > 0, "the kill must hit someone");
    let outages_before = log.borrow().outages.len();
    let kill = sim.now();
    for &r in &killed {
        sim.kill(r);
    }
    let back = sim.run_until(REACQUIRE_BOUND, |s| all_hold(s, n));
    assert!(
        back.is_some(),
        "not reacquired within {REACQUIRE_BOUND:?}: {:?}",
        lacking(&sim, n)
    );
    let reacquire_all = sim.now() - kill;
    let (reacquire, spells) = {
        let l = log.borrow();
        let after: Vec<_> = l.outages[outages_before..].to_vec();
        assert!(after.iter().all(|&(_, at, _)| at >= kill));
        (spread(after.iter().map(|o| o.2).collect()), after.len())
    };
    assert_eq!(spells, affected, "one outage per host that lost a relay");
    assert!(reacquire.0 <= REACQUIRE_BOUND, "{reacquire:?}");
    assert!(reacquire.1 <= REACQUIRE_MEDIAN, "{reacquire:?}");
    assert_eq!(
        log.borrow().removed.get("Disconnected").copied(),
        Some(lost_slots as u64),
        "every lost reservation, and only those, removed: {:?}",
        log.borrow().removed
    );
    probes.push(probe(&mut sim, &log));

    // The dead relays come back; the network holds for two lifetimes more.
    for &r in &killed {
        sim.restart(r);
    }
    sim.run_for(2 * TTL);
    assert!(all_hold(&sim, n), "lapsed: {:?}", lacking(&sim, n));
    assert_eq!(log.borrow().outages.len(), outages_before + affected);
    for &r in &killed {
        assert!(sim.node(r).unwrap().relay_server().is_some());
    }
    probes.push(probe(&mut sim, &log));
    let tried: u64 = probes.iter().map(|p| p.tried as u64).sum();
    assert_eq!(
        log.borrow().circuit_requests,
        tried,
        "one request per circuit"
    );

    // Refreshes: every relay that never died granted some; the total fits
    // one refresh per reservation every three quarters of its lifetime
    // (the client's lifetime is up to a second short: unix seconds).
    let end = sim.now();
    let l = log.borrow();
    let refreshes: u64 = l.refreshes.iter().sum();
    let fewest_refreshes = relay_ids
        .iter()
        .filter(|r| !killed.contains(r))
        .map(|r| l.refreshes[r.index()])
        .min()
        .unwrap();
    assert!(fewest_refreshes > 0, "a surviving relay saw no refresh");
    let fastest = (TTL - Duration::from_millis(1_100)) * 3 / 4;
    let slowest = TTL * 3 / 4 + Duration::from_millis(500);
    // A slot held from the host's boot refreshes at most once per
    // `fastest`; one moved at the kill at most once more. A slot held
    // from when the host was full refreshes at least once per `slowest`;
    // one moved loses at most two.
    let per_slot = |since: Instant, period: Duration| {
        DESIRED as u64 * ((end - since).as_secs_f64() / secs(period)) as u64
    };
    let upper: u64 = private_ids
        .iter()
        .map(|h| per_slot(l.boot[h.index()].unwrap(), fastest) + DESIRED as u64)
        .sum::<u64>()
        + lost_slots as u64;
    let lower = private_ids
        .iter()
        .map(|h| per_slot(l.full[h.index()].unwrap(), slowest))
        .sum::<u64>()
        .saturating_sub(2 * lost_slots as u64);
    assert!(
        (lower..=upper).contains(&refreshes),
        "{refreshes} refreshes, expected {lower}..={upper}"
    );
    assert_eq!(l.expired, 0, "a reservation ran out on a relay");
    let refused: u64 = l.refused.iter().sum();
    assert_eq!(refused, 0, "a RESERVE was refused (refreshes are free)");
    // Each slot was granted once, and once more where its relay died.
    let granted: u64 = l.reserved.iter().sum();
    assert_eq!(granted, slots_granted(private_ids.len(), lost_slots));
    let only_lost = BTreeMap::from([(String::from("Disconnected"), lost_slots as u64)]);
    assert_eq!(l.removed, only_lost, "relays given up, by reason");
    let lookups = l.lookups;
    assert!(
        lookups <= (private_ids.len() + affected) as u64,
        "{lookups} peer-source queries: a query storm"
    );
    let max_conns = private_ids
        .iter()
        .map(|&h| sim.node(h).unwrap().connection_count())
        .max()
        .unwrap();
    assert!(max_conns <= HIGH_WATER, "{max_conns} connections");
    drop(l);
    Figures {
        hosts: n,
        reserve,
        all_held,
        killed: killed.len(),
        lost_slots,
        affected,
        reacquire,
        reacquire_all,
        probes,
        refreshes,
        refresh_bounds: (lower, upper),
        fewest_refreshes,
        refused,
        lookups,
        max_conns,
        end: end - Instant::ZERO,
        events: sim.stats().events,
        trace: sim.trace_hash(),
        wall: wall.elapsed(),
    }
}

#[test]
fn private_hosts_stay_reachable_through_relays_that_come_and_go() {
    let f = run(1, HOSTS);
    report(&f);
}

#[test]
fn a_reachability_run_replays_from_its_seed() {
    let a = run(7, SMALL);
    report(&a);
    let b = run(7, SMALL);
    report(&b);
    assert_eq!(a.end, b.end);
    assert_eq!(a.events, b.events);
    assert_eq!(a.trace, b.trace, "same seed, same run");
    let c = run(8, SMALL);
    report(&c);
    assert_ne!(a.trace, c.trace, "another seed, another run");
}
