//! ipfs-cluster's peer monitor (`monitor/metrics`) as a sans-IO machine:
//! metrics per (metric name, peer) in bounded windows, a check every
//! `check_interval` that raises one alert per outage of a series whose
//! latest metric is valid but expired, a recovery as soon as a valid metric
//! comes back, and optionally phi accrual failure detection beside the TTL
//! rule.
//!
//! The monitor's inputs and outputs:
//!
//! | input | what it does |
//! |---|---|
//! | [`PeerMonitor::handle_metric`] | keeps a metric (expiry: our receipt time + its TTL); a valid one ends an outage ([`Event::Recovered`]) |
//! | [`PeerMonitor::set_peers`], [`add_peer`](PeerMonitor::add_peer), [`remove_peer`](PeerMonitor::remove_peer) | the set of peers watched; a peer leaving it is forgotten |
//! | [`PeerMonitor::handle_timeout`] | runs the check when it is due (safe to call spuriously) |
//!
//! After any input, drain [`PeerMonitor::poll_event`] until `None`, then
//! sleep until [`PeerMonitor::poll_timeout`] or the next input. Every input
//! takes `now`; an earlier `now` than one already seen counts as the latest
//! one seen (time never goes backwards inside the monitor).
//!
//! What it keeps from ipfs-cluster and where it departs, on purpose:
//! - Expiry is computed from our own receipt time plus the metric's TTL,
//!   never from a time the sender wrote, so the sender's clock never matters.
//! - One [`Event::Alert`] per outage of a (peer, metric name) series, not
//!   one every check while the peer stays down (the 2018 code's alert
//!   storm, ipfs-cluster #812), unless
//!   [`realert_cooldown`](MonitorConfig::realert_cooldown) asks for a
//!   reminder; never an alert while a valid, unexpired metric is held and
//!   phi (when on) is under its threshold (#813). A series whose latest
//!   metric is invalid does not alert (ipfs-cluster's rule: only valid but
//!   expired metrics do).
//! - The event queue is bounded ([`alert_queue`](MonitorConfig::alert_queue)).
//!   A full queue drops events and counts them, yet the check round always
//!   completes: every series found down is marked alerted
//!   ([`PeerMonitor::alerted`]) even when its alert could not be queued (the
//!   2018 code cut the round short, silently). Once the queue has drained,
//!   one [`Event::AlertsDropped`] reports how many were lost.
//! - Phi accrual ([`PhiConfig`], off by default) with Akka's safeguards:
//!   the first interval after a detected failure is not recorded, so a
//!   restart's long gap does not inflate the mean and the deviation (why
//!   ipfs-cluster dropped phi, #939); and Cassandra's pause guard: after the
//!   monitor itself was not run for a while (its check more than
//!   [`STALL_SLACK`] overdue), no phi convictions for
//!   [`pause_guard`](PhiConfig::pause_guard), and the intervals spanning
//!   the stall are not recorded.
//! - Memory is bounded: at most [`max_peers`](MonitorConfig::max_peers)
//!   peers, [`max_names`](MonitorConfig::max_names) metric names per peer,
//!   [`window`](MonitorConfig::window) metrics per series and
//!   [`max_samples`](PhiConfig::max_samples) intervals per series. Metrics
//!   beyond are refused and counted ([`PeerMonitor::refused`]).
//! - Everything is ordered (peer, then metric name), so runs repeat.
//!
//! ```
//! use core::time::Duration;
//! use sansp2p::liveness::monitor::{AlertReason, Event, MonitorConfig, PeerMonitor};
//! use sansp2p::{Instant, Keypair};
//!
//! let peer = Keypair::from_secret_bytes([7; 32]).peer_id();
//! let t0 = Instant::ZERO;
//! let mut monitor = PeerMonitor::new(t0, MonitorConfig::default()).unwrap();
//! monitor.set_peers(t0, [peer]);
//! // A metric valid for 30 s after we received it.
//! let ttl = Duration::from_secs(30);
//! monitor.handle_metric(t0, "ping", peer, "up".into(), ttl, true).unwrap();
//!
//! // Checks every 15 s: at 15 and 30 s it holds; at 45 s it has expired.
//! // Five checks, one alert.
//! let mut events = Vec::new();
//! for _ in 0..5 {
//!     let now = monitor.poll_timeout().unwrap();
//!     monitor.handle_timeout(now);
//!     events.extend(core::iter::from_fn(|| monitor.poll_event()));
//! }
//! let name = String::from("ping");
//! assert_eq!(events, [Event::Alert { peer, name: name.clone(), reason: AlertReason::Expired }]);
//! assert!(monitor.is_alerted("ping", &peer));
//!
//! // The peer is back at 80 s: recovered at once, down since the alert.
//! let now = t0 + Duration::from_secs(80);
//! monitor.handle_metric(now, "ping", peer, "up".into(), ttl, true).unwrap();
//! let down_for = Duration::from_secs(35);
//! assert_eq!(monitor.poll_event(), Some(Event::Recovered { peer, name, down_for }));
//! assert_eq!(monitor.alerted().count(), 0);
//! ```

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::identity::PeerId;
use crate::time::Instant;

/// How overdue a check may be before the monitor counts itself as having
/// been stalled (not run), which starts the phi pause guard: a check is
/// due every `check_interval`, so an input more than `check_interval + 2 s`
/// after the previous check means nobody ran the monitor in between.
pub const STALL_SLACK: Duration = Duration::from_secs(2);

/// Recorded intervals needed before phi judges (fewer if `max_samples` is
/// smaller).
const MIN_PHI_SAMPLES: usize = 2;

/// Inter-arrival times are capped at 2^40 us (about 12.7 days) in the
/// statistics, so the integer sums below can never overflow.
const MAX_INTERVAL_MICROS: u64 = 1 << 40;

/// The monitor's configuration: ipfs-cluster's defaults, plus the bounds
/// and options of this implementation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MonitorConfig {
    /// Metrics kept per (metric name, peer), the newest last
    /// (ipfs-cluster: 25).
    pub window: usize,
    /// How often the check runs (ipfs-cluster: 15 s).
    pub check_interval: Duration,
    /// At most this many events wait in the queue (ipfs-cluster: 256);
    /// beyond, events are dropped and counted.
    pub alert_queue: usize,
    /// `None` (default): one alert per outage. `Some(c)`: while a series
    /// stays down, the check alerts again once `c` has passed since its
    /// last alert.
    pub realert_cooldown: Option<Duration>,
    /// Peers tracked at most (10 000); metrics of further peers are refused.
    pub max_peers: usize,
    /// Distinct metric names tracked per peer at most (16); metrics with
    /// further names are refused.
    pub max_names: usize,
    /// `true` (default): a metric from a peer not in the set adds it to the
    /// set (room permitting); `false`: such a metric is refused.
    pub admit_unknown_peers: bool,
    /// Phi accrual detection beside the TTL rule; `None` (default): off.
    pub phi: Option<PhiConfig>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            window: 25,
            check_interval: Duration::from_secs(15),
            alert_queue: 256,
            realert_cooldown: None,
            max_peers: 10_000,
            max_names: 16,
            admit_unknown_peers: true,
            phi: None,
        }
    }
}

impl MonitorConfig {
    fn validate(&self) -> Result<(), MonitorConfigError> {
        if self.window == 0 {
            return Err(MonitorConfigError::ZeroWindow);
        }
        if self.check_interval.is_zero() {
            return Err(MonitorConfigError::ZeroCheckInterval);
        }
        if self.alert_queue == 0 {
            return Err(MonitorConfigError::ZeroQueue);
        }
        if self.max_peers == 0 {
            return Err(MonitorConfigError::ZeroMaxPeers);
        }
        if self.max_names == 0 {
            return Err(MonitorConfigError::ZeroMaxNames);
        }
        if let Some(phi) = &self.phi {
            if !phi.threshold.is_finite() || phi.threshold <= 0.0 {
                return Err(MonitorConfigError::PhiThreshold);
            }
            if phi.max_samples == 0 {
                return Err(MonitorConfigError::PhiSamples);
            }
            if phi.min_std_dev.is_zero() {
                return Err(MonitorConfigError::PhiMinStdDev);
            }
        }
        Ok(())
    }
}

/// Phi accrual failure detection (Hayashibara et al. 2004) with Akka
/// cluster's defaults and Cassandra's pause guard.
///
/// Per series, the intervals between valid metrics are kept (at most
/// `max_samples`); phi after `t` without a metric is `-log10(1 - F(t))`,
/// `F` the normal CDF (logistic approximation) of mean
/// `mean + acceptable_pause` and deviation `max(std dev, min_std_dev)`.
/// A series alerts when phi exceeds `threshold`. Phi judges once two
/// intervals are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct PhiConfig {
    /// Phi above this convicts (Akka: 8; finite and above 0).
    pub threshold: f64,
    /// Intervals kept per series (Akka: 1000; at least 1).
    pub max_samples: usize,
    /// The least standard deviation assumed (Akka: 100 ms; above 0).
    pub min_std_dev: Duration,
    /// Added to the mean interval: the pause tolerated (Akka: 3 s).
    pub acceptable_pause: Duration,
    /// After the monitor itself was not run (its check more than
    /// [`STALL_SLACK`] overdue), no phi convictions for this long,
    /// counted from the first input after the stall (Cassandra: 5 s).
    pub pause_guard: Duration,
}

impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig {
            threshold: 8.0,
            max_samples: 1000,
            min_std_dev: Duration::from_millis(100),
            acceptable_pause: Duration::from_secs(3),
            pause_guard: Duration::from_secs(5),
        }
    }
}

/// A configuration [`PeerMonitor::new`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorConfigError {
    /// `window` is 0.
    #[error("window must be at least 1")]
    ZeroWindow,
    /// `check_interval` is 0.
    #[error("check_interval must be above 0")]
    ZeroCheckInterval,
    /// `alert_queue` is 0.
    #[error("alert_queue must be at least 1")]
    ZeroQueue,
    /// `max_peers` is 0.
    #[error("max_peers must be at least 1")]
    ZeroMaxPeers,
    /// `max_names` is 0.
    #[error("max_names must be at least 1")]
    ZeroMaxNames,
    /// The phi threshold is not finite or not above 0.
    #[error("the phi threshold must be finite and above 0")]
    PhiThreshold,
    /// `max_samples` is 0.
    #[error("phi max_samples must be at least 1")]
    PhiSamples,
    /// `min_std_dev` is 0.
    #[error("phi min_std_dev must be above 0")]
    PhiMinStdDev,
}

/// One metric as the monitor keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// The metric's name (`"ping"`, `"freespace"`, ...).
    pub name: String,
    /// The peer it is about.
    pub peer: PeerId,
    /// Its value, opaque to the monitor.
    pub value: String,
    /// When we received it (our clock).
    pub received: Instant,
    /// `received + ttl`: expired at any later instant.
    pub expire: Instant,
    /// Whether the sender marked it valid; an invalid metric never alerts
    /// nor ends an outage.
    pub valid: bool,
}

impl Metric {
    /// Expired at `now`: `now` is after [`expire`](Self::expire).
    pub fn is_expired(&self, now: Instant) -> bool {
        now > self.expire
    }
}

/// Why a series was found down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AlertReason {
    /// Its latest metric is valid but expired.
    Expired,
    /// Phi accrual convicted it.
    Phi {
        /// Phi at the check.
        phi: f64,
    },
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A series was found down: once per outage (or again after the
    /// re-alert cooldown).
    Alert {
        /// The peer.
        peer: PeerId,
        /// The metric name.
        name: String,
        /// Why.
        reason: AlertReason,
    },
    /// A valid metric came for an alerted series.
    Recovered {
        /// The peer.
        peer: PeerId,
        /// The metric name.
        name: String,
        /// From the outage's first alert to this metric.
        down_for: Duration,
    },
    /// The queue was full and `count` events (alerts and recoveries) were
    /// dropped since the last such report; returned once the queue has
    /// drained. The state they reported is still readable
    /// ([`PeerMonitor::alerted`]).
    AlertsDropped {
        /// How many.
        count: u64,
    },
}

// The only float, `AlertReason::Phi::phi`, is finite: it is computed from
// finite durations and bounded, so equality is total (the node's events
// are `Eq`).
impl Eq for Event {}

/// Why [`PeerMonitor::handle_metric`] refused a metric (each refusal is
/// counted in [`PeerMonitor::refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricRejected {
    /// The peer is not in the set and unknown peers are not admitted.
    #[error("the peer is not monitored")]
    UnknownPeer,
    /// The peer is not in the set and the set is full (`max_peers`).
    #[error("too many peers monitored")]
    TooManyPeers,
    /// The peer already has `max_names` other metric names.
    #[error("too many metric names for this peer")]
    TooManyNames,
}

/// An outage of a series: from its first alert to the next valid metric.
#[derive(Debug, Clone, Copy)]
struct Outage {
    since: Instant,
    last_alert: Instant,
}

/// The phi detector's memory of one series.
#[derive(Debug, Default)]
struct Arrivals {
    /// Recorded intervals in microseconds (capped), oldest first.
    intervals: VecDeque<u64>,
    /// Their sum and the sum of their squares, kept exactly.
    sum: u128,
    sum_sq: u128,
    /// The last valid metric's arrival.
    last: Option<Instant>,
    /// The next interval is not recorded (after an alert or an invalid
    /// metric).
    skip_next: bool,
}

impl Arrivals {
    fn arrive(&mut self, now: Instant, max_samples: usize, stalled_at: Option<Instant>) {
        if let Some(last) = self.last {
            let spans_stall = stalled_at.is_some_and(|s| last < s);
            if !self.skip_next && !spans_stall {
                self.record(now.saturating_duration_since(last), max_samples);
            }
        }
        self.skip_next = false;
        self.last = Some(now);
    }

    fn record(&mut self, interval: Duration, max_samples: usize) {
        let us = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .min(MAX_INTERVAL_MICROS);
        while self.intervals.len() >= max_samples {
            match self.intervals.pop_front() {
                Some(old) => {
                    self.sum -= u128::from(old);
                    self.sum_sq -= u128::from(old) * u128::from(old);
                }
                None => break,
            }
        }
        self.intervals.push_back(us);
        self.sum += u128::from(us);
        self.sum_sq += u128::from(us) * u128::from(us);
    }

    fn phi(&self, now: Instant, config: &PhiConfig) -> Option<f64> {
        let last = self.last?;
        let n = self.intervals.len();
        if n == 0 || n < MIN_PHI_SAMPLES.min(config.max_samples) {
            return None;
        }
        let nf = n as f64;
        let mean = self.sum as f64 / nf / 1e6;
        let variance = (self.sum_sq as f64 / nf / 1e12 - mean * mean).max(0.0);
        let std_dev = libm::sqrt(variance).max(config.min_std_dev.as_secs_f64());
        let mean = mean + config.acceptable_pause.as_secs_f64();
        let t = now.saturating_duration_since(last).as_secs_f64();
        Some(phi_of(t, mean, std_dev))
    }
}

/// `-log10(1 - F(t))` with Akka's logistic approximation of the normal CDF
/// `F`: `1 - F = 1 / (1 + e^z)`, `z = y (1.5976 + 0.070566 y^2)`,
/// `y = (t - mean) / std_dev`; so phi is `ln(1 + e^z) / ln 10`, computed
/// without overflow for any `z` (infinite only for an infinite `z`).
/// `std_dev` is above 0, so phi is never NaN.
fn phi_of(t: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (t - mean) / std_dev;
    let z = y * (1.5976 + 0.070566 * y * y);
    let softplus = z.max(0.0) + libm::log1p(libm::exp(-libm::fabs(z)));
    softplus / core::f64::consts::LN_10
}

/// One (peer, metric name) series.
#[derive(Debug)]
struct Series {
    window: VecDeque<Metric>,
    outage: Option<Outage>,
    /// The sequence number of this series' `Alert` in the queue while it is
    /// the last event queued for the series: a further alert coalesces.
    queued_alert: Option<u64>,
    arrivals: Option<Arrivals>,
}

impl Series {
    fn new(phi: bool) -> Self {
        Series {
            window: VecDeque::new(),
            outage: None,
            queued_alert: None,
            arrivals: phi.then(Arrivals::default),
        }
    }

    /// The check of one series at `now`.
    fn check(
        &mut self,
        now: Instant,
        peer: PeerId,
        name: &str,
        config: &MonitorConfig,
        phi_allowed: bool,
        queue: &mut Queue,
    ) {
        let Some(latest) = self.window.back() else {
            return;
        };
        if !latest.valid {
            return;
        }
        let reason = if latest.is_expired(now) {
            AlertReason::Expired
        } else {
            let phi = match (&config.phi, &self.arrivals) {
                (Some(pc), Some(a)) if phi_allowed => a.phi(now, pc).filter(|p| *p > pc.threshold),
                _ => None,
            };
            match phi {
                Some(phi) => AlertReason::Phi { phi },
                None => return,
            }
        };
        match &mut self.outage {
            None => {
                self.outage = Some(Outage {
                    since: now,
                    last_alert: now,
                });
                // Akka: the interval ending this outage is not recorded.
                if let Some(a) = &mut self.arrivals {
                    a.skip_next = true;
                }
            }
            Some(o) => match config.realert_cooldown {
                Some(c) if now.saturating_duration_since(o.last_alert) >= c => o.last_alert = now,
                _ => return,
            },
        }
        if self.queued_alert.is_some() {
            return; // coalesced with the alert still queued
        }
        self.queued_alert = queue.push(Event::Alert {
            peer,
            name: String::from(name),
            reason,
        });
    }
}

/// The bounded event queue.
#[derive(Debug)]
struct Queue {
    events: VecDeque<(u64, Event)>,
    bound: usize,
    next_seq: u64,
    /// Dropped since the last `AlertsDropped`.
    dropped: u64,
}

impl Queue {
    /// Queues `event`, or drops and counts it when full; its sequence
    /// number if queued.
    fn push(&mut self, event: Event) -> Option<u64> {
        if self.events.len() >= self.bound {
            self.dropped = self.dropped.saturating_add(1);
            return None;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.events.push_back((seq, event));
        Some(seq)
    }
}

/// The peer monitor. See the [module documentation](self).
#[derive(Debug)]
pub struct PeerMonitor {
    config: MonitorConfig,
    /// The peer set, and each peer's series by metric name.
    peers: BTreeMap<PeerId, BTreeMap<String, Series>>,
    /// The latest `now` seen.
    now: Instant,
    next_check: Instant,
    /// A stall was noticed for the check due at `next_check`.
    stall_noted: bool,
    /// When the latest stall was noticed: intervals spanning it are not
    /// recorded.
    stalled_at: Option<Instant>,
    /// No phi convictions before this.
    quiet_until: Instant,
    queue: Queue,
    refused: u64,
}

impl PeerMonitor {
    /// A monitor started at `now` with an empty peer set; the first check
    /// is due `check_interval` later.
    pub fn new(now: Instant, config: MonitorConfig) -> Result<Self, MonitorConfigError> {
        config.validate()?;
        Ok(PeerMonitor {
            next_check: now.saturating_add(config.check_interval),
            queue: Queue {
                events: VecDeque::new(),
                bound: config.alert_queue,
                next_seq: 0,
                dropped: 0,
            },
            config,
            peers: BTreeMap::new(),
            now,
            stall_noted: false,
            stalled_at: None,
            quiet_until: Instant::ZERO,
            refused: 0,
        })
    }

    // ------------------------------------------------------------ getters

    /// The configuration.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// The latest metric named `name` of each peer in the set, where it is
    /// valid and unexpired at the latest `now` seen, sorted by peer
    /// (ipfs-cluster's `LatestValid`).
    pub fn last_metrics(&self, name: &str) -> Vec<&Metric> {
        self.peers
            .values()
            .filter_map(|names| names.get(name)?.window.back())
            .filter(|m| m.valid && !m.is_expired(self.now))
            .collect()
    }

    /// The latest metric named `name` received from `peer`, valid or not.
    pub fn latest(&self, name: &str, peer: &PeerId) -> Option<&Metric> {
        self.series(name, peer)?.window.back()
    }

    /// The metrics named `name` kept for `peer`, oldest first (at most
    /// `window`).
    pub fn window(&self, name: &str, peer: &PeerId) -> impl Iterator<Item = &Metric> + '_ {
        self.series(name, peer)
            .into_iter()
            .flat_map(|s| s.window.iter())
    }

    /// The peer set, sorted.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> + '_ {
        self.peers.keys()
    }

    /// Whether `peer` is in the set.
    pub fn contains_peer(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The metric names kept for `peer`, sorted.
    pub fn names<'a>(&'a self, peer: &PeerId) -> impl Iterator<Item = &'a str> + 'a {
        self.peers
            .get(peer)
            .into_iter()
            .flat_map(|names| names.keys().map(String::as_str))
    }

    /// Whether the series (`peer`, `name`) is in an outage (alerted, no
    /// valid metric since).
    pub fn is_alerted(&self, name: &str, peer: &PeerId) -> bool {
        self.series(name, peer).is_some_and(|s| s.outage.is_some())
    }

    /// The series in an outage, sorted by peer, then name.
    pub fn alerted(&self) -> impl Iterator<Item = (&PeerId, &str)> + '_ {
        self.peers.iter().flat_map(|(peer, names)| {
            names
                .iter()
                .filter(|(_, s)| s.outage.is_some())
                .map(move |(name, _)| (peer, name.as_str()))
        })
    }

    /// When the outage of (`peer`, `name`) began (its first alert).
    pub fn down_since(&self, name: &str, peer: &PeerId) -> Option<Instant> {
        Some(self.series(name, peer)?.outage?.since)
    }

    /// Phi of the series at `now`: `None` when phi is off, the series is
    /// unknown or too few intervals are recorded.
    pub fn phi(&self, name: &str, peer: &PeerId, now: Instant) -> Option<f64> {
        let config = self.config.phi.as_ref()?;
        self.series(name, peer)?.arrivals.as_ref()?.phi(now, config)
    }

    /// The intervals recorded for the series' phi, oldest first.
    pub fn phi_intervals(&self, name: &str, peer: &PeerId) -> impl Iterator<Item = Duration> + '_ {
        self.series(name, peer)
            .and_then(|s| s.arrivals.as_ref())
            .into_iter()
            .flat_map(|a| a.intervals.iter().map(|us| Duration::from_micros(*us)))
    }

    /// Until when phi convicts nobody (the pause guard), if that is after
    /// the latest `now` seen.
    pub fn phi_quiet_until(&self) -> Option<Instant> {
        (self.quiet_until > self.now).then_some(self.quiet_until)
    }

    /// Metrics refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Events waiting in the queue (at most `alert_queue`).
    pub fn queued(&self) -> usize {
        self.queue.events.len()
    }

    /// Events dropped since the last [`Event::AlertsDropped`].
    pub fn dropped(&self) -> u64 {
        self.queue.dropped
    }

    // ------------------------------------------------------------ inputs

    /// A metric named `name` about `peer`, received at `now`, valid for
    /// `ttl` from now. A valid metric ends the series' outage
    /// ([`Event::Recovered`], queued at once). Refused (and counted) if the
    /// peer is not in the set and cannot join it, or has `max_names`
    /// other names.
    pub fn handle_metric(
        &mut self,
        now: Instant,
        name: &str,
        peer: PeerId,
        value: String,
        ttl: Duration,
        valid: bool,
    ) -> Result<(), MetricRejected> {
        let now = self.observe(now);
        if !self.peers.contains_key(&peer) {
            let refusal = if !self.config.admit_unknown_peers {
                Some(MetricRejected::UnknownPeer)
            } else if self.peers.len() >= self.config.max_peers {
                Some(MetricRejected::TooManyPeers)
            } else {
                None
            };
            if let Some(r) = refusal {
                self.refused = self.refused.saturating_add(1);
                return Err(r);
            }
        }
        let names = self.peers.entry(peer).or_default();
        if !names.contains_key(name) && names.len() >= self.config.max_names {
            self.refused = self.refused.saturating_add(1);
            return Err(MetricRejected::TooManyNames);
        }
        let phi_on = self.config.phi.is_some();
        let series = names
            .entry(String::from(name))
            .or_insert_with(|| Series::new(phi_on));
        while series.window.len() >= self.config.window {
            series.window.pop_front();
        }
        series.window.push_back(Metric {
            name: String::from(name),
            peer,
            value,
            received: now,
            expire: now.saturating_add(ttl),
            valid,
        });
        if let (Some(a), Some(pc)) = (&mut series.arrivals, &self.config.phi) {
            if valid {
                a.arrive(now, pc.max_samples, self.stalled_at);
            } else {
                // An interval spanning invalid metrics is no heartbeat's.
                a.skip_next = true;
            }
        }
        if valid {
            if let Some(outage) = series.outage.take() {
                let event = Event::Recovered {
                    peer,
                    name: String::from(name),
                    down_for: now.saturating_duration_since(outage.since),
                };
                if self.queue.push(event).is_some() {
                    series.queued_alert = None;
                }
            }
        }
        Ok(())
    }

    /// Replaces the peer set: peers leaving it are forgotten (metrics, phi
    /// history, outage). At most `max_peers` distinct peers are taken, in
    /// the order given; the rest are ignored.
    pub fn set_peers(&mut self, now: Instant, peers: impl IntoIterator<Item = PeerId>) {
        self.observe(now);
        let mut set = BTreeSet::new();
        for peer in peers {
            if set.len() >= self.config.max_peers {
                break;
            }
            set.insert(peer);
        }
        self.peers.retain(|peer, _| set.contains(peer));
        for peer in set {
            self.peers.entry(peer).or_default();
        }
    }

    /// Adds `peer` to the set (ignored when the set is full).
    pub fn add_peer(&mut self, now: Instant, peer: PeerId) {
        self.observe(now);
        if self.peers.len() < self.config.max_peers {
            self.peers.entry(peer).or_default();
        }
    }

    /// Removes `peer` from the set and forgets it.
    pub fn remove_peer(&mut self, now: Instant, peer: &PeerId) {
        self.observe(now);
        self.peers.remove(peer);
    }

    /// Runs the check if it is due; a late call runs one check, and the
    /// next is due `check_interval` after it. Safe to call at any time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.observe(now);
        if now < self.next_check {
            return;
        }
        self.next_check = now.saturating_add(self.config.check_interval);
        self.stall_noted = false;
        let phi_allowed = now >= self.quiet_until;
        for (peer, names) in self.peers.iter_mut() {
            for (name, series) in names.iter_mut() {
                series.check(now, *peer, name, &self.config, phi_allowed, &mut self.queue);
            }
        }
    }

    // ------------------------------------------------------------ outputs

    /// The next event; after an overflow, once the queue has drained, one
    /// [`Event::AlertsDropped`].
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        match self.queue.events.pop_front() {
            Some((seq, event)) => {
                if let Event::Alert { peer, name, .. } = &event {
                    let series = self
                        .peers
                        .get_mut(peer)
                        .and_then(|names| names.get_mut(name.as_str()));
                    if let Some(s) = series {
                        if s.queued_alert == Some(seq) {
                            s.queued_alert = None;
                        }
                    }
                }
                Some(event)
            }
            None if self.queue.dropped > 0 => {
                let count = core::mem::take(&mut self.queue.dropped);
                Some(Event::AlertsDropped { count })
            }
            None => None,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: the next
    /// check, or the latest `now` seen if the check is already overdue.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_check.max(self.now))
    }

    // ------------------------------------------------------------ internals

    fn series(&self, name: &str, peer: &PeerId) -> Option<&Series> {
        self.peers.get(peer)?.get(name)
    }

    /// Takes `now` in (never backwards) and notices a stall of the monitor:
    /// its check overdue by more than [`STALL_SLACK`].
    fn observe(&mut self, now: Instant) -> Instant {
        let now = now.max(self.now);
        self.now = now;
        if !self.stall_noted && now > self.next_check.saturating_add(STALL_SLACK) {
            self.stall_noted = true;
            self.stalled_at = Some(now);
            if let Some(phi) = &self.config.phi {
                self.quiet_until = now.saturating_add(phi.pause_guard);
            }
        }
        now
    }
}

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;
