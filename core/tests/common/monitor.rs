//! The harness of the peer monitor's model test, shared by
//! `core/tests/monitor_model.rs` (proptest) and
//! `fuzz/fuzz_targets/peer_monitor.rs` (cargo-fuzz, where `Op` derives
//! `Arbitrary`): five peers, two metric names, a clock that only moves
//! forward (an input may be stamped a little in the past), and a reference
//! model that predicts every event the monitor returns. Phi accrual is the
//! one thing the model does not compute itself: it asks the monitor for
//! phi at the check ([`PeerMonitor::phi`] is unit-tested on its own) and
//! predicts everything else from it (which series alert, when, in what
//! order, what is coalesced or dropped).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::OnceLock;
use std::time::Duration;

use sansp2p::liveness::monitor::{
    AlertReason, Event, MetricRejected, MonitorConfig, PeerMonitor, PhiConfig, STALL_SLACK,
};
use sansp2p::{Instant, Keypair, PeerId};

/// The population.
const N: usize = 5;
/// The metric names.
const NAMES: [&str; 2] = ["ping", "freespace"];

fn peers() -> &'static [PeerId; N] {
    static P: OnceLock<[PeerId; N]> = OnceLock::new();
    P.get_or_init(|| {
        std::array::from_fn(|i| Keypair::from_secret_bytes([i as u8 + 1; 32]).peer_id())
    })
}

/// One input. The fields are raw numbers, mapped by [`Harness::apply`].
#[derive(Debug, Clone)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Op {
    /// A metric for peer `peer % 5`, name `name % 2`, a TTL of
    /// `ttl % 60_000` ms (flags bit 3: `ttl % 600` s); `flags % 4 == 0`:
    /// invalid; bit 2: stamped 1 s before the clock.
    Metric {
        peer: u8,
        name: u8,
        ttl: u16,
        flags: u8,
    },
    /// Moves the clock (`scale` picks the range of `v`: up to 2 s, 30 s or
    /// 10 min) without running anything.
    Advance {
        scale: u8,
        v: u16,
    },
    /// `handle_timeout` at the clock, due or not.
    Timeout,
    /// Moves the clock like `Advance`, running every timeout on the way as
    /// a diligent caller does.
    Drive {
        scale: u8,
        v: u16,
    },
    /// `set_peers` with the peers of the bit mask, in index order.
    SetPeers(u8),
    AddPeer(u8),
    RemovePeer(u8),
    /// Polls up to `n % 8` events.
    Poll(u8),
    /// Polls until `None`.
    PollAll,
}

/// The monitor's configuration from raw bytes: small knobs, phi on when
/// asked for.
pub fn config(k: &[u8; 12], phi: bool) -> MonitorConfig {
    let ms = |v: u64| Duration::from_millis(v);
    let mut c = MonitorConfig::default();
    c.window = 1 + usize::from(k[0] % 5);
    c.check_interval = ms(500 + u64::from(k[1]) * 100);
    c.alert_queue = 1 + usize::from(k[2] % 6);
    c.realert_cooldown = (k[3] % 2 == 1).then(|| ms(u64::from(k[3] / 2) * 500));
    c.max_peers = 1 + usize::from(k[4] % 5);
    c.max_names = 1 + usize::from(k[5] % 2);
    c.admit_unknown_peers = !k[6].is_multiple_of(4);
    if phi {
        let mut p = PhiConfig::default();
        p.threshold = 0.5 + f64::from(k[7] % 16);
        p.max_samples = 1 + usize::from(k[8] % 8);
        p.min_std_dev = ms(1 + u64::from(k[9]) * 10);
        p.acceptable_pause = ms(u64::from(k[10]) * 40);
        p.pause_guard = ms(u64::from(k[11]) * 100);
        c.phi = Some(p);
    }
    c
}

/// An event as the model predicts it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ev {
    Alert(AlertReason),
    Recovered(Duration),
}

#[derive(Debug, Clone)]
struct Series {
    /// Metrics in the window.
    len: usize,
    /// The latest metric: valid, expiry.
    latest: Option<(bool, Instant)>,
    /// The outage: since, last alert.
    outage: Option<(Instant, Instant)>,
    /// Which incarnation of the series (a purge ends one).
    gen: u64,
}

pub struct Harness {
    m: PeerMonitor,
    cfg: MonitorConfig,
    /// The clock.
    now: Instant,
    /// The latest `now` the monitor was given (the model's clock).
    seen: Instant,
    /// The model.
    set: BTreeMap<PeerId, BTreeMap<&'static str, Series>>,
    queue: VecDeque<(PeerId, &'static str, u64, Ev)>,
    dropped: u64,
    refused: u64,
    next_check: Instant,
    stall_noted: bool,
    quiet_until: Instant,
    next_gen: u64,
    /// Alerts delivered per series incarnation in the current outage, as
    /// far as the delivered events tell.
    delivered: BTreeMap<(PeerId, &'static str, u64), u32>,
    /// Events queued so far, and polled so far (the index of the next).
    pushed: u64,
    polled: u64,
    /// Recoveries dropped: after how many queued events, and whose. An
    /// alert delivered after one begins a new outage.
    lost: Vec<(u64, (PeerId, &'static str, u64))>,
}

impl Harness {
    pub fn new(cfg: MonitorConfig) -> Harness {
        let m = PeerMonitor::new(Instant::ZERO, cfg.clone()).expect("a valid config");
        Harness {
            m,
            next_check: Instant::ZERO + cfg.check_interval,
            cfg,
            now: Instant::ZERO,
            seen: Instant::ZERO,
            set: BTreeMap::new(),
            queue: VecDeque::new(),
            dropped: 0,
            refused: 0,
            stall_noted: false,
            quiet_until: Instant::ZERO,
            next_gen: 0,
            delivered: BTreeMap::new(),
            pushed: 0,
            polled: 0,
            lost: Vec::new(),
        }
    }

    fn span(scale: u8, v: u16) -> Duration {
        match scale % 8 {
            0..=3 => Duration::from_millis(u64::from(v % 2000)),
            4..=6 => Duration::from_millis(u64::from(v % 30_000)),
            _ => Duration::from_secs(u64::from(v % 600)),
        }
    }

    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Metric {
                peer,
                name,
                ttl,
                flags,
            } => {
                let p = peers()[usize::from(peer) % N];
                let name = NAMES[usize::from(name % 2)];
                let ttl = if flags & 8 != 0 {
                    Duration::from_secs(u64::from(ttl % 600))
                } else {
                    Duration::from_millis(u64::from(ttl % 60_000))
                };
                let valid = !flags.is_multiple_of(4);
                let stamp = if flags & 4 != 0 {
                    self.now - Duration::from_secs(1)
                } else {
                    self.now
                };
                self.metric(stamp, p, name, ttl, valid);
            }
            Op::Advance { scale, v } => self.now += Self::span(scale, v),
            Op::Timeout => self.timeout(self.now),
            Op::Drive { scale, v } => {
                let end = self.now + Self::span(scale, v);
                while let Some(t) = self.m.poll_timeout().filter(|t| *t <= end) {
                    assert!(t >= self.seen, "a timeout before the last input");
                    // Overdue after an `Advance`: run it now.
                    self.now = self.now.max(t);
                    self.timeout(self.now);
                }
                self.now = end;
            }
            Op::SetPeers(mask) => {
                let list: Vec<PeerId> = (0..N)
                    .filter(|i| mask & 1 << i != 0)
                    .map(|i| peers()[i])
                    .collect();
                self.observe(self.now);
                self.m.set_peers(self.now, list.iter().copied());
                let mut keep = BTreeSet::new();
                for p in list {
                    if keep.len() >= self.cfg.max_peers {
                        break;
                    }
                    keep.insert(p);
                }
                self.set.retain(|p, _| keep.contains(p));
                for p in keep {
                    self.set.entry(p).or_default();
                }
            }
            Op::AddPeer(i) => {
                let p = peers()[usize::from(i) % N];
                self.observe(self.now);
                self.m.add_peer(self.now, p);
                if self.set.len() < self.cfg.max_peers {
                    self.set.entry(p).or_default();
                }
            }
            Op::RemovePeer(i) => {
                let p = peers()[usize::from(i) % N];
                self.observe(self.now);
                self.m.remove_peer(self.now, &p);
                self.set.remove(&p);
            }
            Op::Poll(n) => {
                for _ in 0..n % 8 {
                    if !self.poll() {
                        break;
                    }
                }
            }
            Op::PollAll => while self.poll() {},
        }
        self.check();
    }

    /// The model's `observe`: time never goes back; a check overdue by more
    /// than the slack starts the pause guard.
    fn observe(&mut self, now: Instant) -> Instant {
        let now = now.max(self.seen);
        self.seen = now;
        if !self.stall_noted && now > self.next_check + STALL_SLACK {
            self.stall_noted = true;
            if let Some(phi) = &self.cfg.phi {
                self.quiet_until = now + phi.pause_guard;
            }
        }
        now
    }

    fn push(&mut self, p: PeerId, name: &'static str, gen: u64, ev: Ev) -> bool {
        if self.queue.len() >= self.cfg.alert_queue {
            self.dropped += 1;
            if matches!(ev, Ev::Recovered(_)) {
                // The outage's end is lost: the next alert is a new one's.
                self.lost.push((self.pushed, (p, name, gen)));
            }
            return false;
        }
        self.queue.push_back((p, name, gen, ev));
        self.pushed += 1;
        true
    }

    fn metric(
        &mut self,
        stamp: Instant,
        p: PeerId,
        name: &'static str,
        ttl: Duration,
        valid: bool,
    ) {
        let was_alerted = self.m.is_alerted(name, &p);
        let before = self.m.queued() as u64 + self.m.dropped();
        let got = self.m.handle_metric(stamp, name, p, "v".into(), ttl, valid);
        let now = self.observe(stamp);

        // The model.
        let expected = (|| {
            if !self.set.contains_key(&p) {
                if !self.cfg.admit_unknown_peers {
                    return Err(MetricRejected::UnknownPeer);
                }
                if self.set.len() >= self.cfg.max_peers {
                    return Err(MetricRejected::TooManyPeers);
                }
                self.set.insert(p, BTreeMap::new());
            }
            let names = self.set.get_mut(&p).expect("just ensured");
            if !names.contains_key(name) && names.len() >= self.cfg.max_names {
                return Err(MetricRejected::TooManyNames);
            }
            let gen = self.next_gen;
            let s = names.entry(name).or_insert_with(|| Series {
                len: 0,
                latest: None,
                outage: None,
                gen,
            });
            if s.gen == gen {
                self.next_gen += 1;
            }
            s.len = (s.len + 1).min(self.cfg.window);
            s.latest = Some((valid, now + ttl));
            Ok(if valid {
                s.outage.take().map(|o| (o, s.gen))
            } else {
                None
            })
        })();
        match expected {
            Err(e) => {
                self.refused += 1;
                assert_eq!(got, Err(e));
            }
            Ok(recovered) => {
                assert_eq!(got, Ok(()));
                if let Some(((since, _), gen)) = recovered {
                    self.push(p, name, gen, Ev::Recovered(now - since));
                }
            }
        }

        // Recovered only for an alerted series, and only on a valid metric.
        let after = self.m.queued() as u64 + self.m.dropped();
        if was_alerted && valid && got.is_ok() {
            assert_eq!(after, before + 1, "a recovery is queued or counted");
            assert!(!self.m.is_alerted(name, &p));
        } else {
            assert_eq!(after, before, "an event without a recovery");
        }
    }

    fn timeout(&mut self, now: Instant) {
        let alerted_before: BTreeSet<(PeerId, String)> =
            self.m.alerted().map(|(p, n)| (*p, n.to_string())).collect();
        self.m.handle_timeout(now);
        let now = self.observe(now);
        if now < self.next_check {
            return;
        }
        self.next_check = now + self.cfg.check_interval;
        self.stall_noted = false;
        let phi_allowed = now >= self.quiet_until;
        let mut order: Vec<(PeerId, &'static str)> = Vec::new();
        for (p, names) in &self.set {
            for name in names.keys() {
                order.push((*p, name));
            }
        }
        order.sort();
        for (p, name) in order {
            let phi = self.m.phi(name, &p, now);
            let s = self
                .set
                .get_mut(&p)
                .and_then(|n| n.get_mut(name))
                .expect("listed");
            let Some((true, expire)) = s.latest else {
                continue;
            };
            let reason = if now > expire {
                AlertReason::Expired
            } else {
                match (&self.cfg.phi, phi) {
                    (Some(pc), Some(phi)) if phi_allowed && phi > pc.threshold => {
                        AlertReason::Phi { phi }
                    }
                    _ => continue,
                }
            };
            match &mut s.outage {
                None => s.outage = Some((now, now)),
                Some((_, last)) => match self.cfg.realert_cooldown {
                    Some(c) if now - *last >= c => *last = now,
                    _ => continue,
                },
            }
            let gen = s.gen;
            // Coalesced if this series' last queued event is an alert.
            let last_queued = self
                .queue
                .iter()
                .rev()
                .find(|(q, n, g, _)| *q == p && *n == name && *g == gen);
            if matches!(last_queued, Some((_, _, _, Ev::Alert(_)))) {
                continue;
            }
            self.push(p, name, gen, Ev::Alert(reason));
        }

        // Every series newly alerted holds a valid metric that expired, or
        // one phi convicts (outside the pause guard).
        for (p, n) in self.m.alerted() {
            if alerted_before.contains(&(*p, n.to_string())) {
                continue;
            }
            let latest = self.m.latest(n, p).expect("an alerted series has a metric");
            assert!(latest.valid, "alerted on an invalid metric");
            if !latest.is_expired(now) {
                let pc = self
                    .cfg
                    .phi
                    .as_ref()
                    .expect("alerted on an unexpired metric");
                assert!(phi_allowed, "a phi conviction under the pause guard");
                assert!(self.m.phi(n, p, now).is_some_and(|x| x > pc.threshold));
            }
        }
    }

    /// Polls one event and checks it against the model; false on `None`.
    fn poll(&mut self) -> bool {
        let got = self.m.poll_event();
        if !self.queue.is_empty() {
            let index = self.polled;
            self.polled += 1;
            let delivered = &mut self.delivered;
            self.lost.retain(|(pos, key)| {
                if *pos <= index {
                    delivered.remove(key);
                }
                *pos > index
            });
        }
        let expected = match self.queue.pop_front() {
            Some((peer, name, gen, Ev::Alert(reason))) => {
                let n = self.delivered.entry((peer, name, gen)).or_default();
                *n += 1;
                if self.cfg.realert_cooldown.is_none() {
                    assert!(*n <= 1, "two alerts in one outage");
                }
                Some(Event::Alert {
                    peer,
                    name: name.to_string(),
                    reason,
                })
            }
            Some((peer, name, gen, Ev::Recovered(down_for))) => {
                self.delivered.remove(&(peer, name, gen));
                Some(Event::Recovered {
                    peer,
                    name: name.to_string(),
                    down_for,
                })
            }
            None if self.dropped > 0 => {
                // Something was lost: what was delivered no longer tells
                // where outages begin and end.
                self.delivered.clear();
                Some(Event::AlertsDropped {
                    count: std::mem::take(&mut self.dropped),
                })
            }
            None => None,
        };
        assert_eq!(got, expected);
        got.is_some()
    }

    /// The monitor's state against the model, and the bounds.
    fn check(&self) {
        let m = &self.m;
        let set: Vec<PeerId> = m.peers().copied().collect();
        let model: Vec<PeerId> = self.set.keys().copied().collect();
        assert_eq!(set, model, "the peer set");
        assert!(set.len() <= self.cfg.max_peers);
        for (p, names) in &self.set {
            assert_eq!(m.names(p).count(), names.len());
            assert!(names.len() <= self.cfg.max_names);
            for (name, s) in names {
                let window = m.window(name, p).count();
                assert_eq!(window, s.len, "window of {name}");
                assert!(window <= self.cfg.window);
                let latest = m.latest(name, p).map(|x| (x.valid, x.expire));
                assert_eq!(latest, s.latest);
                assert_eq!(m.down_since(name, p), s.outage.map(|o| o.0));
                if let Some(pc) = &self.cfg.phi {
                    assert!(m.phi_intervals(name, p).count() <= pc.max_samples);
                }
            }
        }
        let alerted: Vec<(PeerId, String)> =
            m.alerted().map(|(p, n)| (*p, n.to_string())).collect();
        let mut expected: Vec<(PeerId, String)> = Vec::new();
        for (p, names) in &self.set {
            for (name, s) in names {
                if s.outage.is_some() {
                    expected.push((*p, name.to_string()));
                }
            }
        }
        expected.sort();
        assert_eq!(alerted, expected, "the alerted series");
        assert_eq!(m.queued(), self.queue.len());
        assert!(m.queued() <= self.cfg.alert_queue);
        assert_eq!(m.dropped(), self.dropped);
        assert_eq!(m.refused(), self.refused);
        let timeout = m.poll_timeout().expect("a check is always scheduled");
        assert!(timeout >= self.seen, "poll_timeout before the last input");
        assert_eq!(timeout, self.next_check.max(self.seen));
        // Only the series in the set hold metrics.
        for (i, p) in peers().iter().enumerate() {
            if !self.set.contains_key(p) {
                assert_eq!(m.names(p).count(), 0, "peer {i} purged");
            }
        }
    }
}
