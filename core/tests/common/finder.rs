//! The harness of the AutoRelay finder's model test, shared by
//! `core/tests/finder_model.rs` (proptest) and
//! `fuzz/fuzz_targets/relay_finder.rs` (cargo-fuzz, where `Op` derives
//! `Arbitrary`): eight peers, the finder's caller played with answers in
//! any order and late, a reference model checked after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use sansp2p::relay::finder::{
    Action, Event, Finder, FinderConfig, Granted, PeerInfo, Reachability, RelayChoice,
    RemovedReason, ReserveFailure,
};
use sansp2p::relay::{circuit_addr, p2p_suffix};
use sansp2p::{Instant, Keypair, PeerId};

/// The population.
const N: usize = 8;
/// Peers `0..HOP` speak the hop protocol.
const HOP: usize = 6;

fn peers() -> &'static [PeerId; N] {
    static P: OnceLock<[PeerId; N]> = OnceLock::new();
    P.get_or_init(|| {
        std::array::from_fn(|i| Keypair::from_secret_bytes([i as u8 + 1; 32]).peer_id())
    })
}

/// `/ip4/<ip>/tcp/4001/p2p/<peer i>`
fn addr(ip: [u8; 4], i: usize) -> Vec<u8> {
    let mut a = vec![0x04, ip[0], ip[1], ip[2], ip[3], 0x06, 0x0f, 0xa1];
    a.extend_from_slice(&p2p_suffix(&peers()[i]));
    a
}

/// One input. The fields are raw numbers, mapped by [`Harness::apply`].
#[derive(Debug, Clone)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Op {
    /// Advance the clock (`scale` picks the range of `v`: up to 2 s, 30 s,
    /// 10 min or 2 h), then `handle_timeout`.
    Advance {
        scale: u8,
        v: u16,
    },
    Reach(u8),
    /// `flags`: bit 0-1 both clear: relayed; bit 2: contradicts the peer's
    /// hop support; bit 3: with an RTT of `rtt` ms.
    Identified {
        peer: u8,
        flags: u8,
        rtt: u16,
    },
    ProbeFailed(u8),
    Source(Vec<u8>),
    Exhausted,
    Disconnected(u8),
    /// Answers the outstanding action `idx` (modulo their number): `how`
    /// 0-2 success, 3 refused (a probe: no hop), 4 unreachable (a probe:
    /// failed), 5 the same as 3 for a reservation, identified only through
    /// a relayed connection for a probe.
    Answer {
        idx: u8,
        how: u8,
        ttl: u16,
    },
    Rtt {
        peer: u8,
        ms: u16,
    },
}

/// The finder's configuration from 16 raw bytes: small knobs.
pub fn config(k: &[u8; 16], static_mode: bool) -> (FinderConfig, Vec<usize>) {
    let s = |v: u64| Duration::from_secs(v);
    let mut c = FinderConfig::default();
    c.min_candidates = usize::from(k[0] % 4);
    c.max_candidates = c.min_candidates.max(1) + usize::from(k[1] % 4);
    c.desired_relays = 1 + usize::from(k[2] % 3);
    c.boot_delay = s(u64::from(k[3] % 121));
    c.backoff = s(1 + u64::from(k[4]) * 3);
    c.max_candidate_age = s(u64::from(k[5]) * 4);
    c.min_interval = s(1 + u64::from(k[6] % 60));
    c.probe_timeout = s(1 + u64::from(k[7] % 30));
    c.refresh_lead = s(1 + u64::from(k[8]) * 2);
    c.refresh_retries = u32::from(k[9] % 4);
    c.refresh_retry_delay = s(u64::from(k[10] % 21));
    c.static_retry = s(1 + u64::from(k[11] % 5));
    c.static_retry_max = c.static_retry + s(u64::from(k[12] % 60));
    c.choice = if k[13].is_multiple_of(3) {
        RelayChoice::Random
    } else {
        RelayChoice::Rtt {
            jitter_percent: u32::from(k[13] % 101),
        }
    };
    c.public_addrs_only = false;
    c.max_addrs = 1 + usize::from(k[14] % 4);
    c.max_backoffs = usize::from(k[14] / 4 % 4);
    c.rng_seed = [k[15]; 32];
    let mut statics = Vec::new();
    if static_mode {
        // A non-empty subset of the population, mask from k[15].
        let mask = k[15] | 1 << (k[15] % 8);
        statics = (0..N).filter(|i| mask & 1 << i != 0).collect();
        c.static_relays = statics
            .iter()
            .map(|&i| {
                let addrs = if i.is_multiple_of(2) {
                    vec![addr([9, 9, 9, i as u8], i)]
                } else {
                    vec![]
                };
                (peers()[i], addrs)
            })
            .collect();
    }
    (c, statics)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reserve,
    Refresh,
    Probe,
}

/// An action the caller still has to answer.
#[derive(Debug, Clone)]
struct Out {
    kind: Kind,
    peer: usize,
    /// The finder still waits for it (false: it gave it up, the answer is
    /// stale and must be ignored).
    live: bool,
}

#[derive(Debug, Clone)]
struct Held {
    expire: Instant,
    granted: Instant,
    addrs: Vec<Vec<u8>>,
}

/// The input being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Start,
    Timeout,
    Reach {
        to_public: bool,
    },
    Answer {
        peer: usize,
        kind: Kind,
        live: bool,
        ok: bool,
    },
    Disconnect(usize),
    Other,
}

pub struct Harness {
    f: Finder,
    cfg: FinderConfig,
    statics: Vec<usize>,
    desired: usize,
    now: Instant,
    reach: Reachability,
    out: Vec<Out>,
    /// The model: relays held, from the answers granted and the removals.
    relays: BTreeMap<usize, Held>,
    protected: BTreeSet<usize>,
    /// The last `AddrsChanged`.
    addrs: Vec<Vec<u8>>,
    /// Static relays without a reservation, and since when.
    waiting: BTreeMap<usize, Instant>,
    /// The grant being answered.
    grant: Option<Granted>,
    /// This step's events.
    events: Vec<Event>,
}

impl Harness {
    pub fn new(cfg: FinderConfig, statics: Vec<usize>) -> Harness {
        let f = Finder::new(Instant::ZERO, cfg.clone()).expect("a valid config");
        let desired = if statics.is_empty() {
            cfg.desired_relays
        } else {
            statics.len()
        };
        let mut h = Harness {
            f,
            cfg,
            waiting: statics.iter().map(|&i| (i, Instant::ZERO)).collect(),
            statics,
            desired,
            now: Instant::ZERO,
            reach: Reachability::Unknown,
            out: Vec::new(),
            relays: BTreeMap::new(),
            protected: BTreeSet::new(),
            addrs: Vec::new(),
            grant: None,
            events: Vec::new(),
        };
        h.step(Ctx::Start);
        h
    }

    fn idx(p: &PeerId) -> usize {
        peers()
            .iter()
            .position(|q| q == p)
            .expect("a peer of the population")
    }

    fn active(&self) -> bool {
        self.reach != Reachability::Public
    }

    fn dynamic(&self) -> bool {
        self.statics.is_empty()
    }

    pub fn apply(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Advance { scale, v } => {
                let d = match scale % 16 {
                    0..=6 => Duration::from_millis(u64::from(v % 2000)),
                    7..=13 => Duration::from_secs(u64::from(v % 30)),
                    14 => Duration::from_secs(u64::from(v % 600)),
                    _ => Duration::from_secs(u64::from(v % 7200)),
                };
                self.now = now + d;
                self.f.handle_timeout(self.now);
                self.step(Ctx::Timeout);
            }
            Op::Reach(r) => {
                let r = [
                    Reachability::Private,
                    Reachability::Private,
                    Reachability::Public,
                    Reachability::Unknown,
                ][usize::from(r % 4)];
                let was = self.active();
                self.reach = r;
                let to_public = was && !self.active();
                if to_public {
                    // Reservations under way are given up (refreshes with
                    // their relays, through the RelayRemoved events).
                    for o in &mut self.out {
                        if o.kind == Kind::Reserve {
                            o.live = false;
                        }
                    }
                }
                self.f.handle_reachability(now, r);
                self.step(Ctx::Reach { to_public });
                if to_public {
                    assert_eq!(self.f.relays().count(), 0, "Public gives the relays up");
                }
            }
            Op::Identified { peer, flags, rtt } => {
                let i = usize::from(peer) % N;
                let info = PeerInfo {
                    direct: flags & 3 != 0,
                    supports_hop: (i < HOP) != (flags & 4 != 0),
                    addrs: vec![addr([10, 0, 0, i as u8], i)],
                    rtt: (flags & 8 != 0).then(|| Duration::from_millis(u64::from(rtt))),
                };
                self.f.handle_identified(now, peers()[i], info);
                self.step(Ctx::Other);
            }
            Op::ProbeFailed(p) => {
                let i = usize::from(p) % N;
                if let Some(k) = self
                    .out
                    .iter()
                    .position(|o| o.kind == Kind::Probe && o.peer == i)
                {
                    self.out.remove(k);
                }
                self.f.handle_probe_failed(now, peers()[i]);
                self.step(Ctx::Other);
            }
            Op::Source(list) => {
                let batch = list
                    .iter()
                    .take(N)
                    .map(|&p| {
                        let i = usize::from(p) % N;
                        (peers()[i], vec![addr([10, 1, 0, i as u8], i)])
                    })
                    .collect();
                self.f.handle_peer_source(now, batch);
                self.step(Ctx::Other);
            }
            Op::Exhausted => {
                self.f.handle_peer_source_exhausted(now);
                self.step(Ctx::Other);
            }
            Op::Disconnected(p) => {
                let i = usize::from(p) % N;
                self.f.handle_disconnected(now, peers()[i]);
                self.step(Ctx::Disconnect(i));
            }
            Op::Rtt { peer, ms } => {
                let i = usize::from(peer) % N;
                self.f
                    .handle_rtt(peers()[i], Duration::from_millis(u64::from(ms)));
                self.step(Ctx::Other);
            }
            Op::Answer { idx, how, ttl } => {
                if self.out.is_empty() {
                    return;
                }
                let o = self.out.remove(usize::from(idx) % self.out.len());
                self.answer(o, how % 6, ttl);
            }
        }
    }

    fn answer(&mut self, o: Out, how: u8, ttl: u16) {
        let now = self.now;
        let i = o.peer;
        let p = peers()[i];
        if o.kind == Kind::Probe {
            match how {
                4 => self.f.handle_probe_failed(now, p),
                _ => {
                    let info = PeerInfo {
                        direct: how != 5,
                        supports_hop: i < HOP && how < 3,
                        addrs: vec![addr([10, 2, 0, i as u8], i)],
                        rtt: ttl
                            .is_multiple_of(2)
                            .then(|| Duration::from_millis(u64::from(ttl % 500))),
                    };
                    self.f.handle_identified(now, p, info);
                }
            }
            return self.step(Ctx::Other);
        }
        // 10 s to 2 h, half of them under 1 min.
        let ttl = Duration::from_secs(if ttl.is_multiple_of(2) {
            10 + u64::from(ttl / 2) % 50
        } else {
            10 + u64::from(ttl / 2) % 7191
        });
        let result = match how {
            0..=2 => Ok(Granted {
                expire: now + ttl,
                addrs: vec![
                    addr([1, 2, 3, 4], i),
                    addr([1, 2, 3, 4], i),
                    addr([5, 6, 7, how], i),
                ],
            }),
            3 | 5 => Err(ReserveFailure::Refused),
            _ => Err(ReserveFailure::Unreachable),
        };
        let ok = result.is_ok();
        self.grant = result.clone().ok();
        let was_relay = self.relays.contains_key(&i);
        let is_static = self.statics.contains(&i);
        if is_static && !was_relay && (!o.live || (o.kind == Kind::Reserve && !ok)) {
            // Retried within static_retry_max from now (unless reserved at
            // once: the Reserve clears it).
            self.waiting.entry(i).or_insert(now);
        }
        self.f.handle_reservation(now, p, result);
        self.step(Ctx::Answer {
            peer: i,
            kind: o.kind,
            live: o.live,
            ok,
        });
        self.grant = None;
        let mentioned = self.events.iter().any(|e| match e {
            Event::RelayAdded { relay, .. }
            | Event::Refreshed { relay, .. }
            | Event::RelayRemoved { relay, .. } => *relay == p,
            _ => false,
        });
        if !o.live {
            assert!(
                !mentioned,
                "a stale answer for {i} was taken: {:?}",
                self.events
            );
            assert_eq!(self.relays.contains_key(&i), was_relay);
            return;
        }
        match (o.kind, ok) {
            (_, true) => {
                let h = &self.relays[&i];
                assert_eq!(h.expire, now + ttl);
                assert_eq!(h.granted, now);
                let lead = self.cfg.refresh_lead.min(ttl / 4);
                assert_eq!(self.f.refresh_due(&p), Some(now + ttl - lead));
            }
            (Kind::Reserve, false) => {
                assert!(!self.relays.contains_key(&i));
                if !is_static && how == 4 {
                    assert!(!self.f.is_backed_off(&p), "unreachable: no backoff");
                    assert!(
                        !self.f.candidates().any(|c| c == p),
                        "unreachable: forgotten"
                    );
                }
            }
            (Kind::Refresh, false) => {
                if self.relays.contains_key(&i) {
                    let retry = now + self.cfg.refresh_retry_delay;
                    assert_eq!(self.f.refresh_due(&p), Some(retry), "a refresh retry");
                }
            }
            (Kind::Probe, _) => unreachable!(),
        }
    }

    /// Drains the finder's output into the model, then checks.
    fn step(&mut self, ctx: Ctx) {
        self.events.clear();
        while let Some(a) = self.f.poll_action() {
            self.action(a);
        }
        while let Some(e) = self.f.poll_event() {
            self.event(ctx, &e);
            self.events.push(e);
        }
        self.check(ctx);
    }

    fn action(&mut self, a: Action) {
        let busy = |out: &[Out], i: usize| {
            out.iter()
                .any(|o| o.peer == i && matches!(o.kind, Kind::Reserve | Kind::Refresh))
        };
        match a {
            Action::QueryPeerSource { max } => {
                assert!(self.active(), "a query while Public");
                assert!(self.dynamic(), "a query with static relays");
                assert!((1..=self.cfg.max_candidates).contains(&max), "max {max}");
            }
            Action::Probe { peer, .. } => {
                assert!(self.active(), "a probe while Public");
                assert!(self.dynamic(), "a probe with static relays");
                let i = Self::idx(&peer);
                self.out.push(Out {
                    kind: Kind::Probe,
                    peer: i,
                    live: true,
                });
            }
            Action::Reserve { peer, .. } => {
                let i = Self::idx(&peer);
                assert!(self.active(), "a reservation while Public");
                assert!(
                    !busy(&self.out, i),
                    "a second reservation for {i} while {:?} is unanswered",
                    self.out
                );
                assert!(!self.relays.contains_key(&i), "reserving a held relay");
                assert!(!self.f.is_backed_off(&peer));
                assert!(self.dynamic() || self.statics.contains(&i));
                self.waiting.remove(&i);
                self.out.push(Out {
                    kind: Kind::Reserve,
                    peer: i,
                    live: true,
                });
            }
            Action::Refresh { peer } => {
                let i = Self::idx(&peer);
                assert!(self.active(), "a refresh while Public");
                assert!(
                    !busy(&self.out, i),
                    "a refresh for {i} while {:?} is unanswered",
                    self.out
                );
                let h = self.relays.get(&i).expect("a refresh of a held relay");
                assert!(self.now < h.expire, "a refresh after the expiry");
                assert_eq!(self.f.refresh_due(&peer), None);
                self.out.push(Out {
                    kind: Kind::Refresh,
                    peer: i,
                    live: true,
                });
            }
            Action::Protect { peer } => {
                let i = Self::idx(&peer);
                assert!(self.protected.insert(i), "{i} protected twice");
            }
            Action::Unprotect { peer } => {
                let i = Self::idx(&peer);
                assert!(self.protected.remove(&i), "{i} unprotected, not protected");
            }
        }
    }

    fn event(&mut self, ctx: Ctx, e: &Event) {
        match e {
            Event::RelayAdded { relay, expire } => {
                let i = Self::idx(relay);
                assert!(
                    ctx == Ctx::Answer {
                        peer: i,
                        kind: Kind::Reserve,
                        live: true,
                        ok: true
                    },
                    "{e:?} in {ctx:?}"
                );
                let g = self.grant.clone().expect("a grant");
                assert_eq!(*expire, g.expire);
                let held = Held {
                    expire: g.expire,
                    granted: self.now,
                    addrs: g.addrs,
                };
                assert!(self.relays.insert(i, held).is_none(), "{i} added twice");
            }
            Event::Refreshed { relay, expire } => {
                let i = Self::idx(relay);
                assert!(
                    ctx == Ctx::Answer {
                        peer: i,
                        kind: Kind::Refresh,
                        live: true,
                        ok: true
                    },
                    "{e:?} in {ctx:?}"
                );
                let g = self.grant.clone().expect("a grant");
                assert_eq!(*expire, g.expire);
                let h = self.relays.get_mut(&i).expect("refreshed a held relay");
                h.expire = g.expire;
                h.granted = self.now;
                h.addrs = g.addrs;
            }
            Event::RelayRemoved { relay, reason } => {
                let i = Self::idx(relay);
                let h = self.relays.remove(&i).expect("removed a held relay");
                let fits = match reason {
                    RemovedReason::Public => ctx == Ctx::Reach { to_public: true },
                    RemovedReason::Disconnected => ctx == Ctx::Disconnect(i),
                    RemovedReason::Expired => ctx == Ctx::Timeout && h.expire <= self.now,
                    RemovedReason::RefreshFailed => {
                        ctx == Ctx::Answer {
                            peer: i,
                            kind: Kind::Refresh,
                            live: true,
                            ok: false,
                        }
                    }
                    _ => false,
                };
                assert!(fits, "{e:?} in {ctx:?}");
                for o in &mut self.out {
                    if o.peer == i && o.kind == Kind::Refresh {
                        o.live = false;
                    }
                }
                if self.statics.contains(&i) {
                    self.waiting.insert(i, self.now);
                }
            }
            Event::AddrsChanged { addrs } => {
                assert!(
                    addrs.windows(2).all(|w| w[0] < w[1]),
                    "sorted and deduplicated"
                );
                assert_ne!(*addrs, self.addrs, "an AddrsChanged that changes nothing");
                assert!(addrs.len() <= self.cfg.max_addrs);
                self.addrs = addrs.clone();
            }
            _ => {}
        }
    }

    fn check(&self, ctx: Ctx) {
        let f = &self.f;
        let now = self.now;
        // The relays: the model's, at most desired, none backed off, and
        // each one's refresh between its grant and its expiry.
        let held: BTreeMap<usize, Instant> = f.relays().map(|(p, e)| (Self::idx(&p), e)).collect();
        let model: BTreeMap<usize, Instant> =
            self.relays.iter().map(|(i, h)| (*i, h.expire)).collect();
        assert_eq!(held, model, "the relays held");
        assert!(held.len() <= self.desired, "more relays than desired");
        for (i, h) in &self.relays {
            let p = &peers()[*i];
            assert!(!f.is_backed_off(p), "a relay in backoff");
            let refreshing = self
                .out
                .iter()
                .any(|o| o.peer == *i && o.kind == Kind::Refresh && o.live);
            match f.refresh_due(p) {
                Some(r) => {
                    assert!(!refreshing, "a refresh due while one is under way");
                    assert!(h.granted <= r && r < h.expire, "refresh at {r:?}, {h:?}");
                }
                None => assert!(refreshing, "no refresh due and none under way"),
            }
            if ctx == Ctx::Timeout {
                assert!(now < h.expire, "an expired relay kept");
            }
            let next = f.refresh_due(p).unwrap_or(h.expire);
            assert!(
                f.poll_timeout().is_some_and(|t| t <= next),
                "no timer for {i}"
            );
        }
        assert_eq!(
            self.protected,
            self.relays.keys().copied().collect(),
            "protected connections"
        );
        // Timers: never in the past; after a timeout, all later than now.
        if let Some(t) = f.poll_timeout() {
            assert!(t >= now, "a timer in the past: {t:?} < {now:?} ({ctx:?})");
            if ctx == Ctx::Timeout {
                assert!(t > now, "a timer due after handle_timeout: {t:?}");
            }
        }
        // Bounded memory.
        let bound =
            self.cfg.max_candidates + self.desired + self.cfg.max_backoffs + self.statics.len();
        assert!(f.tracked() <= bound, "{} tracked > {bound}", f.tracked());
        if !self.dynamic() {
            assert_eq!(f.tracked(), self.statics.len(), "a static relay forgotten");
        }
        // The addresses: those of the relays held.
        let mut want: Vec<Vec<u8>> = self
            .relays
            .values()
            .flat_map(|h| h.addrs.iter().map(|a| circuit_addr(a, None)))
            .collect();
        want.sort();
        want.dedup();
        want.truncate(self.cfg.max_addrs);
        assert_eq!(self.addrs, want, "the relay addresses");
        assert_eq!(f.addrs(), &self.addrs[..]);
        if !self.active() {
            return;
        }
        // Progress: no candidate idles while relays are missing (once the
        // boot delay is over), and a static relay is retried in time.
        let busy = |i: usize| {
            self.out
                .iter()
                .any(|o| o.peer == i && matches!(o.kind, Kind::Reserve | Kind::Refresh))
        };
        let reserving = self
            .out
            .iter()
            .filter(|o| o.kind == Kind::Reserve && o.live)
            .count();
        if self.relays.len() + reserving < self.desired
            && (now >= Instant::ZERO + self.cfg.boot_delay || !self.dynamic())
        {
            for c in f.candidates() {
                let i = Self::idx(&c);
                assert!(busy(i), "candidate {i} idles, relays missing");
            }
        }
        for &s in &self.statics {
            if self.relays.contains_key(&s) || busy(s) {
                continue;
            }
            let since = *self.waiting.get(&s).expect("the model tracks it");
            assert!(
                now < since + self.cfg.static_retry_max,
                "static relay {s} not retried since {since:?}"
            );
        }
    }
}
