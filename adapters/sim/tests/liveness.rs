//! Heartbeats and the peer monitor at scale (issue 14): three aggregators
//! watch the hosts that beat to them; killed hosts raise exactly one alert
//! each and one recovery when they come back; a restarted aggregator's
//! beaters come back spread out by their jittered backoff, not as a herd;
//! and a run replays exactly from its seed.
//!
//! Periods are go-filecoin's (beats every 3 s, reconnect after 10 s plus up
//! to 50 %) and ipfs-cluster's (a check every 15 s); the metric TTL is the
//! aggregator's default, three periods and a second (10 s).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use sansp2p::identity::PeerId;
use sansp2p::liveness::aggregator::{self, AggregatorConfig};
use sansp2p::liveness::heartbeat::{self, BeaterConfig, Failure, Heartbeat, Level};
use sansp2p::liveness::monitor::{self, MonitorConfig};
use sansp2p::node::Event;
use sansp2p::relay::p2p_suffix;
use sansp2p::Instant;
use sansp2p_sim::{HostId, NetConfig, Sim, Template};

/// Hosts of the full scenario (CI runs it at this size).
const HOSTS: usize = 1000;
/// Inbound connections an aggregator upgrades at once. The default, 10
/// (js-libp2p's), is too few for a third of `HOSTS` coming back within the
/// 5 s jitter window: about 66 connects a second, each upgrading for some
/// six one-way trips (up to 90 ms), hold 6 slots on average and now and
/// then more than 10; a refused beater waits a doubled backoff (20-30 s).
/// At 64 none is refused (asserted).
const AGG_MAX_PENDING: usize = 64;
/// Hosts of the replay test.
const SMALL: usize = 150;
/// Hosts 0, 1 and 2 aggregate; host `i` beats to host `i % 3`.
const AGGREGATORS: u32 = 3;
/// Share of the beaters killed and restarted.
const KILL_PERCENT: usize = 5;

/// A beat every this long (go-filecoin's `BeaterConfig` default).
const PERIOD: Duration = Duration::from_secs(3);
/// The first wait after a failure (go-filecoin's fixed retry, the default).
const RECONNECT: Duration = Duration::from_secs(10);
/// Each wait lengthened by up to this share (the default).
const JITTER_PERCENT: u8 = 50;
/// The metric TTL: `AggregatorConfig::ttl_for_period(PERIOD)`, the
/// aggregator's default (checked in `build`).
const TTL: Duration = Duration::from_secs(10);
/// The monitor's check (ipfs-cluster's 15 s, the default).
const CHECK: Duration = Duration::from_secs(15);
const METRIC: &str = "heartbeat";

/// Beaters boot at random within this (aggregators at once).
const BOOT_SPREAD: Duration = Duration::from_secs(10);
/// The longest one-way latency: `NetConfig::default()`'s 10 ms + 5 ms.
const ONE_WAY_MAX: Duration = Duration::from_millis(15);
/// Dial, TCP, noise, yamux, the heartbeat stream and the first beat: a
/// dozen one-way trips of at most 15 ms (180 ms), with a margin. A beater's
/// first dial goes out at once and its first beat as soon as the stream
/// opens, so nothing here waits for a period or a reconnect.
const SETUP_MAX: Duration = Duration::from_millis(500);

/// Kill → alert, at least: the last beat left at most a period before the
/// kill and is fresh for `TTL` after it arrived.
const ALERT_MIN: Duration = TTL.saturating_sub(PERIOD);
/// Kill → alert, at most: the last beat arrived at most one latency after
/// the kill, expires `TTL` later and the next check (`CHECK` at most after)
/// sees it; one more latency of slack for the reset.
const ALERT_MAX: Duration = TTL
    .saturating_add(CHECK)
    .saturating_add(ONE_WAY_MAX)
    .saturating_add(ONE_WAY_MAX);
/// Restart → recovery, at most: the monitor recovers on the first valid
/// metric, the first beat of the new life.
const RECOVERY_MAX: Duration = SETUP_MAX;
/// Victims die at random within one check round (every phase of it).
const KILL_SPREAD: Duration = CHECK;
/// How long a victim stays down (longer than `ALERT_MAX`: it is alerted
/// before it comes back).
const DOWN: Duration = Duration::from_secs(40);

/// How long the restarted aggregator is down (shorter than `RECONNECT`:
/// its beaters' first retry finds it up).
const AGG_DOWN: Duration = Duration::from_secs(2);
/// The random part of the first reconnect wait: `RECONNECT` ×
/// `JITTER_PERCENT` %, uniform.
const JITTER_WINDOW: Duration =
    Duration::from_millis(RECONNECT.as_millis() as u64 * JITTER_PERCENT as u64 / 100);
/// Aggregator kill → a beater's first beat to it again, at least: the loss
/// is seen a latency after the kill, the wait is `RECONNECT` at least.
const RECONNECT_MIN: Duration = RECONNECT;
/// ... and at most: the loss, the longest wait, the setup of a connection.
const RECONNECT_MAX: Duration = RECONNECT
    .saturating_add(JITTER_WINDOW)
    .saturating_add(ONE_WAY_MAX)
    .saturating_add(SETUP_MAX);
/// The reconnects span at least this: 80 % of the jitter window (for n
/// uniform draws the expected gap at the ends is 2/(n+1) of it).
const SPREAD_MIN: Duration = Duration::from_millis(JITTER_WINDOW.as_millis() as u64 * 4 / 5);
/// The herd window.
const HERD_WINDOW: Duration = Duration::from_millis(100);
/// At most this share (percent) of the reconnects in one herd window:
/// three times a uniform spread's `HERD_WINDOW / JITTER_WINDOW` (2 %).
const HERD_MAX_PERCENT: f64 =
    3.0 * 100.0 * HERD_WINDOW.as_millis() as f64 / JITTER_WINDOW.as_millis() as f64;

/// What the observer keeps, with its time and host.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// At an aggregator: its monitor alerted `peer`.
    Alert { peer: PeerId },
    /// At an aggregator: its monitor saw `peer` recover.
    Recovered { peer: PeerId },
    /// At an aggregator: a beat of `peer` arrived.
    Beat { peer: PeerId },
    /// At a beater: a failure was reported.
    BeaterFailed { level: Level, failure: Failure },
    /// At a beater: the outage ended.
    BeaterRecovered { outage: Duration },
}

type Log = Rc<RefCell<Vec<(Instant, HostId, Seen)>>>;

fn aggregator_of(host: HostId) -> HostId {
    HostId(host.0 % AGGREGATORS)
}

fn is_aggregator(host: HostId) -> bool {
    host.0 < AGGREGATORS
}

/// An aggregator: serves heartbeats, monitors the hosts assigned to it
/// (again after a restart: the monitor's state is lost with the node).
fn aggregator() -> Template {
    Template::new()
        .config(|_, config| config.inbound.max_pending = AGG_MAX_PENDING)
        .on_boot(|ctx| {
            let agg = AggregatorConfig::default();
            assert_eq!(agg.metric_ttl, TTL);
            assert_eq!(AggregatorConfig::ttl_for_period(PERIOD), TTL);
            let mut mon = MonitorConfig::default();
            mon.check_interval = CHECK;
            ctx.node.serve_heartbeat(ctx.now, agg, mon).unwrap();
            let me = ctx.host;
            let peers = ctx
                .dir
                .iter()
                .filter(|&(h, _)| !is_aggregator(h) && aggregator_of(h) == me)
                .map(|(_, info)| info.peer)
                .collect();
            ctx.node.set_monitored_peers(ctx.now, peers);
        })
}

/// A host beating to its aggregator with go-filecoin's periods and the
/// default jitter seed: the node mixes its own RNG in, so hosts still
/// jitter apart (with the seed used as is, the herd check fails).
fn beater() -> Template {
    Template::new().boot_within(BOOT_SPREAD).on_boot(|ctx| {
        let agg = ctx.dir.get(aggregator_of(ctx.host));
        let mut target = agg.addr.clone();
        target.extend(p2p_suffix(&agg.peer));
        let config = BeaterConfig {
            period: PERIOD,
            reconnect: RECONNECT,
            jitter_percent: JITTER_PERCENT,
            nickname: ctx.host.to_string(),
            ..BeaterConfig::new(target)
        };
        let mut height = 0;
        let payload = Box::new(move || {
            height += 1;
            Heartbeat {
                height,
                ..Heartbeat::default()
            }
        });
        ctx.node
            .start_heartbeat(ctx.now, config, payload)
            .unwrap()
            .expect("a target");
    })
}

/// Three aggregators (hosts 0-2) and `n - 3` beaters.
fn build(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed, NetConfig::default());
    sim.add_hosts(AGGREGATORS as usize, &aggregator());
    sim.add_hosts(n - AGGREGATORS as usize, &beater());
    sim
}

/// Keeps the heartbeat and monitor events of every host.
fn record(sim: &mut Sim) -> Log {
    let log = Log::default();
    let sink = log.clone();
    sim.observe(move |now, host, event| {
        let seen = match event {
            Event::Monitor(monitor::Event::Alert { peer, .. }) => Seen::Alert { peer: *peer },
            Event::Monitor(monitor::Event::Recovered { peer, .. }) => {
                Seen::Recovered { peer: *peer }
            }
            Event::Monitor(e) => panic!("{host}: unexpected {e:?}"),
            Event::Aggregator(aggregator::Event::Beat { peer, .. }) => Seen::Beat { peer: *peer },
            Event::Aggregator(e) => panic!("{host}: unexpected {e:?}"),
            Event::Heartbeat {
                event: heartbeat::Event::Failed { level, failure, .. },
                ..
            } => Seen::BeaterFailed {
                level: *level,
                failure: *failure,
            },
            Event::Heartbeat {
                event: heartbeat::Event::Recovered { outage },
                ..
            } => Seen::BeaterRecovered { outage: *outage },
            _ => return,
        };
        sink.borrow_mut().push((now, host, seen));
    });
    log
}

// ------------------------------------------------------------ measurements

/// The log's records in `[from, to)`.
fn between(log: &Log, from: Instant, to: Instant) -> Vec<(Instant, HostId, Seen)> {
    log.borrow()
        .iter()
        .filter(|(t, _, _)| *t >= from && *t < to)
        .cloned()
        .collect()
}

/// Monitor alerts in `[from, to)`: (time, aggregator, alerted host).
fn alerts(sim: &Sim, log: &Log, from: Instant, to: Instant) -> Vec<(Instant, HostId, HostId)> {
    between(log, from, to)
        .into_iter()
        .filter_map(|(t, agg, seen)| match seen {
            Seen::Alert { peer } => Some((t, agg, host_of(sim, &peer))),
            _ => None,
        })
        .collect()
}

/// Monitor recoveries in `[from, to)`: (time, aggregator, recovered host).
fn recoveries(sim: &Sim, log: &Log, from: Instant, to: Instant) -> Vec<(Instant, HostId, HostId)> {
    between(log, from, to)
        .into_iter()
        .filter_map(|(t, agg, seen)| match seen {
            Seen::Recovered { peer } => Some((t, agg, host_of(sim, &peer))),
            _ => None,
        })
        .collect()
}

/// The first beat each host sent to `agg` at or after `from`.
fn first_beats(sim: &Sim, log: &Log, agg: HostId, from: Instant) -> BTreeMap<HostId, Instant> {
    let mut first = BTreeMap::new();
    for (t, at, seen) in log.borrow().iter() {
        if let Seen::Beat { peer } = seen {
            if *at == agg && *t >= from {
                first.entry(host_of(sim, peer)).or_insert(*t);
            }
        }
    }
    first
}

/// Beater failures and recoveries in `[from, to)`, by beater.
fn beater_outages(log: &Log, from: Instant, to: Instant) -> BTreeMap<HostId, Vec<Seen>> {
    let mut by_host: BTreeMap<HostId, Vec<Seen>> = BTreeMap::new();
    for (_, host, seen) in between(log, from, to) {
        if matches!(
            seen,
            Seen::BeaterFailed { .. } | Seen::BeaterRecovered { .. }
        ) {
            by_host.entry(host).or_default().push(seen);
        }
    }
    by_host
}

fn host_of(sim: &Sim, peer: &PeerId) -> HostId {
    sim.directory()
        .host_of(peer)
        .expect("a host of the simulation")
}

/// Fresh metrics the aggregators' monitors hold, in all.
fn fresh_metrics(sim: &Sim) -> usize {
    (0..AGGREGATORS)
        .filter_map(|a| sim.node(HostId(a))?.monitor())
        .map(|m| m.last_metrics(METRIC).len())
        .sum()
}

/// The most of `times` (sorted) within any `window`.
fn densest(times: &[Duration], window: Duration) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= window {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Min, median, max.
fn summary(mut d: Vec<Duration>) -> (Duration, Duration, Duration) {
    d.sort();
    (d[0], d[d.len() / 2], d[d.len() - 1])
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ------------------------------------------------------------ the scenario

/// One victim of the first phase.
#[derive(Debug, Clone, PartialEq)]
struct Victim {
    host: HostId,
    killed: Instant,
    restarted: Instant,
    /// (time, aggregator) of every alert about it.
    alerts: Vec<(Instant, HostId)>,
    /// (time, aggregator) of every recovery of it.
    recoveries: Vec<(Instant, HostId)>,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
struct Figures {
    hosts: usize,
    booted_in: Option<Duration>,
    /// Alerts before the first kill, (aggregator, host).
    boot_alerts: Vec<(HostId, HostId)>,
    victims: Vec<Victim>,
    /// Alerts and recoveries of phase 1 about hosts not killed.
    living_alerts: Vec<(HostId, HostId)>,
    living_recoveries: Vec<(HostId, HostId)>,
    /// Beaters reporting failures in phase 1.
    phase1_failing: Vec<HostId>,
    /// The restarted aggregator, its beaters' first beat to it after its
    /// kill (from the kill).
    restarted: HostId,
    reconnects: BTreeMap<HostId, Duration>,
    /// Inbound connections it refused in phase 2.
    refused: u64,
    /// Its beaters that never came back.
    missing: Vec<HostId>,
    /// Per beater of it: the failures and recoveries it reported.
    outages: BTreeMap<HostId, Vec<Seen>>,
    /// Beaters of other aggregators reporting failures in phase 2.
    others_failing: Vec<HostId>,
    /// Alerts and recoveries of phase 2, (aggregator, host).
    phase2_alerts: Vec<(HostId, HostId)>,
    phase2_recoveries: Vec<(HostId, HostId)>,
    /// The restarted monitor at the end: peers watched, fresh metrics,
    /// alerted series.
    monitored: BTreeSet<PeerId>,
    assigned: BTreeSet<PeerId>,
    fresh: usize,
    alerted: usize,
    trace: u64,
    end: Instant,
}

fn run(seed: u64, n: usize) -> Figures {
    let mut sim = build(seed, n);
    let log = record(&mut sim);
    let beaters: Vec<HostId> = sim.hosts().filter(|&h| !is_aggregator(h)).collect();

    // Boot: every beater's beats reach its aggregator's monitor.
    let count = beaters.len();
    let booted_in = sim.run_until(Duration::from_secs(60), |sim| fresh_metrics(sim) == count);
    sim.run_for(PERIOD * 2);
    let t1 = sim.now();
    let boot_alerts = alerts(&sim, &log, Instant::ZERO, t1)
        .into_iter()
        .map(|(_, a, h)| (a, h))
        .collect();

    // Phase 1: 5 % of the beaters die at random within a check round and
    // come back `DOWN` later.
    let mut pool = beaters.clone();
    let mut victims = Vec::new();
    for _ in 0..beaters.len() * KILL_PERCENT / 100 {
        let host = pool.swap_remove(sim.rng().below(pool.len() as u64) as usize);
        let killed = t1 + sim.rng().duration_up_to(KILL_SPREAD);
        let restarted = killed + DOWN;
        sim.at(killed, move |sim| sim.kill(host));
        sim.at(restarted, move |sim| sim.restart(host));
        victims.push(Victim {
            host,
            killed,
            restarted,
            alerts: Vec::new(),
            recoveries: Vec::new(),
        });
    }
    victims.sort_by_key(|v| v.host);
    let hosts: BTreeSet<HostId> = victims.iter().map(|v| v.host).collect();
    let watch = log.clone();
    let back = hosts.clone();
    sim.run_until(KILL_SPREAD + DOWN + RECOVERY_MAX * 2, move |sim| {
        let recovered: BTreeSet<HostId> = recoveries(sim, &watch, t1, Instant::MAX)
            .into_iter()
            .map(|(_, _, h)| h)
            .collect();
        back.is_subset(&recovered)
    });
    // Long enough for any late or repeated alert to show.
    sim.run_for(TTL + CHECK * 2);
    let t2 = sim.now();
    for (t, agg, host) in alerts(&sim, &log, t1, t2) {
        if let Some(v) = victims.iter_mut().find(|v| v.host == host) {
            v.alerts.push((t, agg));
        }
    }
    for (t, agg, host) in recoveries(&sim, &log, t1, t2) {
        if let Some(v) = victims.iter_mut().find(|v| v.host == host) {
            v.recoveries.push((t, agg));
        }
    }
    let others = |list: Vec<(Instant, HostId, HostId)>| -> Vec<(HostId, HostId)> {
        list.into_iter()
            .filter(|(_, _, h)| !hosts.contains(h))
            .map(|(_, a, h)| (a, h))
            .collect()
    };
    let living_alerts = others(alerts(&sim, &log, t1, t2));
    let living_recoveries = others(recoveries(&sim, &log, t1, t2));
    let phase1_failing = beater_outages(&log, t1, t2).into_keys().collect();

    // Phase 2: aggregator 0 crashes and is back `AGG_DOWN` later.
    let restarted = HostId(0);
    let its: Vec<HostId> = beaters
        .iter()
        .copied()
        .filter(|&h| aggregator_of(h) == restarted)
        .collect();
    let refused_before = sim.host_stats(restarted).inbound_refused;
    sim.kill(restarted);
    sim.at(t2 + AGG_DOWN, move |sim| sim.restart(restarted));
    let watch = log.clone();
    let waiting = its.clone();
    sim.run_until(RECONNECT_MAX * 2, move |sim| {
        let first = first_beats(sim, &watch, restarted, t2);
        waiting.iter().all(|h| first.contains_key(h))
    });
    // Long enough for any spurious alert of the new monitor to show.
    sim.run_for(TTL + CHECK * 2);
    let t3 = sim.now();
    let first = first_beats(&sim, &log, restarted, t2);
    let reconnects = first
        .iter()
        .map(|(&h, &t)| (h, t - t2))
        .filter(|(h, _)| its.contains(h))
        .collect();
    let missing = its
        .iter()
        .copied()
        .filter(|h| !first.contains_key(h))
        .collect();
    let mut outages = beater_outages(&log, t2, t3);
    let others_failing = outages
        .keys()
        .copied()
        .filter(|&h| aggregator_of(h) != restarted)
        .collect();
    outages.retain(|&h, _| aggregator_of(h) == restarted);
    let phase2_alerts = alerts(&sim, &log, t2, t3)
        .into_iter()
        .map(|(_, a, h)| (a, h))
        .collect();
    let phase2_recoveries = recoveries(&sim, &log, t2, t3)
        .into_iter()
        .map(|(_, a, h)| (a, h))
        .collect();
    let monitor = sim
        .node(restarted)
        .and_then(|n| n.monitor())
        .expect("the restarted aggregator serves heartbeats");
    Figures {
        hosts: n,
        booted_in,
        boot_alerts,
        victims,
        living_alerts,
        living_recoveries,
        phase1_failing,
        restarted,
        reconnects,
        refused: sim.host_stats(restarted).inbound_refused - refused_before,
        missing,
        outages,
        others_failing,
        phase2_alerts,
        phase2_recoveries,
        monitored: monitor.peers().copied().collect(),
        assigned: its.iter().map(|&h| sim.peer_id(h)).collect(),
        fresh: monitor.last_metrics(METRIC).len(),
        alerted: monitor.alerted().count(),
        trace: sim.trace_hash(),
        end: sim.now(),
    }
}

// ------------------------------------------------------------ assertions

/// Checks every bound of the scenario and prints the figures.
fn check(f: &Figures) {
    assert!(f.booted_in.is_some(), "every beater reached its aggregator");
    assert_eq!(f.boot_alerts, [], "no alert while every host is up");

    // Phase 1: one alert per victim, by its aggregator, within the bounds;
    // one recovery after its restart; nothing about the living.
    assert_eq!(f.living_alerts, [], "no alert for a living host");
    assert_eq!(f.living_recoveries, [], "no recovery for a living host");
    assert_eq!(f.phase1_failing, [], "no beater lost its aggregator");
    let mut alert_latency = Vec::new();
    let mut recovery_latency = Vec::new();
    for v in &f.victims {
        let agg = aggregator_of(v.host);
        assert_eq!(v.alerts.len(), 1, "one alert for {v:?}");
        assert_eq!(v.recoveries.len(), 1, "one recovery for {v:?}");
        let (alerted, by) = v.alerts[0];
        let (recovered, by_too) = v.recoveries[0];
        assert_eq!((by, by_too), (agg, agg), "{v:?}");
        let latency = alerted - v.killed;
        assert!(
            (ALERT_MIN..=ALERT_MAX).contains(&latency),
            "alert after {latency:?}, not within {ALERT_MIN:?}..={ALERT_MAX:?}: {v:?}"
        );
        assert!(recovered >= v.restarted, "{v:?}");
        let latency_r = recovered - v.restarted;
        assert!(
            latency_r <= RECOVERY_MAX,
            "recovery after {latency_r:?}, not within {RECOVERY_MAX:?}: {v:?}"
        );
        alert_latency.push(latency);
        recovery_latency.push(latency_r);
    }

    // Phase 2: every beater of the restarted aggregator back within the
    // bounds, spread out; one outage each on its side.
    assert_eq!(f.missing, [], "every beater reconnected");
    assert_eq!(f.refused, 0, "no connection refused by the pending limit");
    let mut times: Vec<Duration> = f.reconnects.values().copied().collect();
    times.sort();
    let (first, last) = (times[0], times[times.len() - 1]);
    assert!(
        first >= RECONNECT_MIN && last <= RECONNECT_MAX,
        "reconnects from {first:?} to {last:?}, not within {RECONNECT_MIN:?}..={RECONNECT_MAX:?}"
    );
    let span = last - first;
    assert!(
        span >= SPREAD_MIN,
        "reconnects span {span:?} only, not {SPREAD_MIN:?}"
    );
    let densest = densest(&times, HERD_WINDOW);
    let share = 100.0 * densest as f64 / times.len() as f64;
    assert!(
        share <= HERD_MAX_PERCENT,
        "{densest} of {} reconnects ({share:.1} %) within {HERD_WINDOW:?}: a herd (at most {HERD_MAX_PERCENT:.1} %)",
        times.len()
    );
    let jitter_max = RECONNECT + JITTER_WINDOW + SETUP_MAX;
    for (h, events) in &f.outages {
        match events.as_slice() {
            [Seen::BeaterFailed {
                level: Level::Warn,
                failure: Failure::StreamLost,
            }, Seen::BeaterRecovered { outage }] => assert!(
                (RECONNECT..=jitter_max).contains(outage),
                "{h}: an outage of {outage:?}"
            ),
            other => panic!("{h}: one warning and one recovery, not {other:?}"),
        }
    }
    assert_eq!(
        f.outages.len(),
        f.reconnects.len(),
        "every beater of it saw the loss"
    );
    assert_eq!(
        f.others_failing,
        [],
        "the other aggregators' beaters beat on"
    );
    // The new monitor knows nothing of the old one's metrics: it watches the
    // assigned set again (set in its boot), alerts none of them while they
    // come back within the reconnect window (a series alerts only once it
    // has had a metric), and holds a fresh metric of each at the end. The
    // flip side, not asserted: a beater that dies while its aggregator is
    // down is never alerted by the new monitor (it never had a metric
    // there; tried: none within 56 s).
    assert_eq!(
        f.phase2_alerts,
        [],
        "no spurious alert while beaters reconnect"
    );
    assert_eq!(f.phase2_recoveries, [], "nothing to recover from");
    assert_eq!(f.monitored, f.assigned, "the restarted monitor's peer set");
    assert_eq!(f.fresh, f.assigned.len(), "a fresh metric of every beater");
    assert_eq!(f.alerted, 0);

    let (a0, a1, a2) = summary(alert_latency);
    let (r0, r1, r2) = summary(recovery_latency);
    println!(
        "{} hosts, booted in {:.1} s; {} killed: alert latency min {:.2} s, median {:.2} s, max {:.2} s \
         (bounds {:.2}..{:.2}); recovery latency min {:.0} ms, median {:.0} ms, max {:.0} ms (bound {:.0} ms)",
        f.hosts,
        secs(f.booted_in.unwrap()),
        f.victims.len(),
        secs(a0),
        secs(a1),
        secs(a2),
        secs(ALERT_MIN),
        secs(ALERT_MAX),
        secs(r0) * 1e3,
        secs(r1) * 1e3,
        secs(r2) * 1e3,
        secs(RECOVERY_MAX) * 1e3,
    );
    println!(
        "aggregator {} restarted: {} beaters back from {:.2} s to {:.2} s after its kill (span {:.2} s, at least {:.2}); \
         at most {} ({share:.1} %, bound {HERD_MAX_PERCENT:.1} %) within {HERD_WINDOW:?}; trace {:016x}, {:.0} s simulated",
        f.restarted,
        times.len(),
        secs(first),
        secs(last),
        secs(span),
        secs(SPREAD_MIN),
        densest,
        f.trace,
        secs(f.end.since_epoch()),
    );
}

#[test]
fn killed_hosts_alert_once_and_a_restarted_aggregator_sees_no_herd() {
    let wall = std::time::Instant::now();
    let figures = run(14, HOSTS);
    check(&figures);
    println!("wall time {:.1} s", wall.elapsed().as_secs_f64());
}

#[test]
fn the_scenario_replays_from_its_seed() {
    let a = run(1, SMALL);
    let b = run(1, SMALL);
    assert_eq!(a.trace, b.trace, "same seed, same trace");
    assert_eq!(a, b, "same seed, same figures");
    let c = run(2, SMALL);
    assert_ne!(a.trace, c.trace, "another seed, another trace");
    println!(
        "{SMALL} hosts: trace {:016x} twice, {:016x} with another seed",
        a.trace, c.trace
    );
}
