//! Property tests of the dial machines against simple reference models.
//!
//! - [`Dialer`]: random requests, cancellations, dial results, handshakes,
//!   inbound connections and clock jumps. Checked after every step: running
//!   attempts never exceed the fd and per-peer limits; no address is dialed
//!   while a model of go-libp2p's backoff (fed only with the failures the
//!   test reports, so a lower bound of the real one) says it is backed off,
//!   unless a `force_direct` request asked for the peer; every request is
//!   answered exactly once, never after its deadline, and all are answered in
//!   the end.
//! - [`Scheduler`]: random candidates, static nodes, connections, dial
//!   results, lookups and clock jumps. Checked: the dialed-peer count never
//!   exceeds the quota, no dial task starts for a peer dialed less than
//!   35 s ago (model history), for ourselves or for a connected peer,
//!   dials at once never exceed `max_active_dials`, one lookup runs at a
//!   time, and none starts within `lookup_hold` of a lookup that brought no
//!   dialable candidate.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::collections::{HashMap, HashSet};
use proptest::prelude::*;

use super::scheduler::{self, Candidate, ConnDirection, Scheduler, SchedulerConfig};
use super::test_util::{addr, peer};
use super::worker::*;
use super::Addr;
use crate::identity::PeerId;
use crate::time::Instant;

const ADDRS: &[&str] = &[
    "/ip6/2604:1380::1/udp/1/quic-v1",
    "/ip4/1.2.3.4/udp/1/quic-v1",
    "/ip4/1.2.3.4/tcp/1",
    "/ip6/2604:1380::1/tcp/1",
    "/ip4/1.2.3.4/tcp/2/ws",
    "/ip4/192.168.1.1/tcp/1",
    "/ip4/10.0.0.1/udp/1/quic-v1",
    "/ip4/1.2.3.4/udp/9/webrtc-direct",
];

#[derive(Debug, Clone)]
enum DOp {
    Dial {
        peer: u8,
        mask: u8,
        force: bool,
        sim: bool,
        timeout_ms: Option<u32>,
    },
    Cancel(usize),
    Connected(usize),
    Succeed(usize),
    Fail(usize, bool),
    PeerConnected(u8),
    Advance(u32),
}

fn dop() -> impl Strategy<Value = DOp> {
    prop_oneof![
        4 => (0u8..5, any::<u8>(), prop::bool::weighted(0.15), prop::bool::weighted(0.15),
              prop::option::weighted(0.3, 1u32..90_000))
            .prop_map(|(peer, mask, force, sim, timeout_ms)| DOp::Dial { peer, mask, force, sim, timeout_ms }),
        1 => any::<usize>().prop_map(DOp::Cancel),
        1 => any::<usize>().prop_map(DOp::Connected),
        2 => any::<usize>().prop_map(DOp::Succeed),
        4 => (any::<usize>(), prop::bool::weighted(0.2)).prop_map(|(k, c)| DOp::Fail(k, c)),
        1 => (0u8..5).prop_map(DOp::PeerConnected),
        4 => prop_oneof![0u32..400, 0u32..20_000].prop_map(DOp::Advance),
    ]
}

/// go-libp2p's backoff, written out plainly.
#[derive(Default)]
struct BackoffModel {
    entries: HashMap<(PeerId, Addr), (u32, Instant)>,
}

impl BackoffModel {
    fn delay(tries: u32) -> Duration {
        Duration::from_secs((5 + u64::from(tries) * u64::from(tries)).min(300))
    }

    fn add(&mut self, now: Instant, p: PeerId, a: Addr) {
        let e = self.entries.entry((p, a)).or_insert((0, Instant::ZERO));
        let remembered = e.0 > 0 && now < e.1 + Self::delay(e.0);
        if !remembered {
            *e = (1, now + Duration::from_secs(5));
        } else {
            e.1 = now + Self::delay(e.0);
            e.0 += 1;
        }
    }

    fn backed_off(&self, now: Instant, p: PeerId, a: &Addr) -> bool {
        self.entries
            .get(&(p, a.clone()))
            .is_some_and(|&(_, until)| now < until)
    }

    fn clear(&mut self, p: PeerId, a: &Addr) {
        self.entries.remove(&(p, a.clone()));
    }
}

struct DialHarness {
    d: Dialer,
    now: Instant,
    /// Running attempts: id -> (peer, addr).
    running: Vec<(AttemptId, PeerId, Addr)>,
    /// Pending requests: id -> (peer, deadline, forced).
    live: Vec<(RequestId, PeerId, Instant)>,
    answered: HashSet<RequestId>,
    /// Peers whose current worker was asked by a force_direct request.
    forced: HashSet<PeerId>,
    backoff: BackoffModel,
}

impl DialHarness {
    fn check_outputs(&mut self) -> Result<(), TestCaseError> {
        while let Some(a) = self.d.poll_action() {
            match a {
                Action::Dial {
                    attempt,
                    peer,
                    addr,
                } => {
                    prop_assert!(
                        self.forced.contains(&peer)
                            || !self.backoff.backed_off(self.now, peer, &addr),
                        "dialed {addr:?} of a peer in backoff"
                    );
                    self.running.push((attempt, peer, addr));
                }
                Action::CancelAttempt { attempt } => {
                    let before = self.running.len();
                    self.running.retain(|(a, _, _)| *a != attempt);
                    prop_assert_eq!(
                        before,
                        self.running.len() + 1,
                        "cancelled an unknown attempt"
                    );
                }
            }
        }
        while let Some(e) = self.d.poll_event() {
            let Event::RequestDone { request, peer, .. } = e;
            prop_assert!(self.answered.insert(request), "answered twice");
            let pos = self.live.iter().position(|(r, _, _)| *r == request);
            prop_assert!(pos.is_some(), "answered an unknown request");
            let (_, p, deadline) = self.live.swap_remove(pos.unwrap());
            prop_assert_eq!(p, peer);
            prop_assert!(self.now <= deadline, "answered after its deadline");
            if !self.live.iter().any(|(_, q, _)| *q == peer) {
                self.forced.remove(&peer);
            }
        }
        // Limits (fd 3, per peer 2).
        let fd = self
            .running
            .iter()
            .filter(|(_, _, a)| super::rank::Features::of(a).uses_fd())
            .count();
        prop_assert!(fd <= 3, "fd limit exceeded: {}", fd);
        let mut per_peer: HashMap<PeerId, usize> = HashMap::default();
        for (_, p, _) in &self.running {
            *per_peer.entry(*p).or_default() += 1;
        }
        prop_assert!(
            per_peer.values().all(|&n| n <= 2),
            "per-peer limit exceeded"
        );
        prop_assert_eq!(self.running.len(), self.d.attempts_running());
        Ok(())
    }

    fn advance(&mut self, to: Instant) -> Result<(), TestCaseError> {
        while let Some(t) = self.d.poll_timeout() {
            if t > to {
                break;
            }
            prop_assert!(t >= self.now, "timer in the past");
            self.now = t;
            self.d.handle_timeout(t);
            self.check_outputs()?;
        }
        self.now = to;
        self.d.handle_timeout(to);
        self.check_outputs()
    }
}

fn run_dialer(ops: Vec<DOp>) -> Result<(), TestCaseError> {
    let mut config = DialerConfig::default();
    config.limiter.fd_limit = 3;
    config.limiter.per_peer = 2;
    let addrs: Vec<Addr> = ADDRS.iter().map(|s| addr(s)).collect();
    let mut h = DialHarness {
        d: Dialer::new(peer(0), config).unwrap(),
        now: Instant::ZERO,
        running: Vec::new(),
        live: Vec::new(),
        answered: HashSet::default(),
        forced: HashSet::default(),
        backoff: BackoffModel::default(),
    };
    let pick = |k: usize, n: usize| if n == 0 { None } else { Some(k % n) };
    for op in ops {
        match op {
            DOp::Dial {
                peer: p,
                mask,
                force,
                sim,
                timeout_ms,
            } => {
                let p = peer(u64::from(p) + 1);
                let list: Vec<Addr> = (0..8)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| addrs[i].clone())
                    .collect();
                let mut opts = DialOpts::default();
                if force {
                    opts = opts.force_direct();
                    h.forced.insert(p);
                }
                if sim {
                    opts = opts.simultaneous_connect();
                }
                let timeout = timeout_ms.map_or(Duration::from_secs(60), |ms| {
                    Duration::from_millis(u64::from(ms))
                });
                opts = opts.timeout(timeout);
                let r = h.d.dial(h.now, p, list, opts).unwrap();
                h.live.push((r, p, h.now + timeout));
            }
            DOp::Cancel(k) => {
                if let Some(i) = pick(k, h.live.len()) {
                    let r = h.live[i].0;
                    h.d.cancel(h.now, r).unwrap();
                }
            }
            DOp::Connected(k) => {
                if let Some(i) = pick(k, h.running.len()) {
                    h.d.handle_dial_connected(h.now, h.running[i].0).unwrap();
                }
            }
            DOp::Succeed(k) => {
                if let Some(i) = pick(k, h.running.len()) {
                    let (a, p, ad) = h.running.swap_remove(i);
                    h.d.handle_dial_succeeded(h.now, a, ConnectionRef(1))
                        .unwrap();
                    h.backoff.clear(p, &ad);
                }
            }
            DOp::Fail(k, cancelled) => {
                if let Some(i) = pick(k, h.running.len()) {
                    let (a, p, ad) = h.running.swap_remove(i);
                    let e = if cancelled {
                        FailureClass::Cancelled
                    } else {
                        FailureClass::Refused
                    };
                    h.d.handle_dial_failed(h.now, a, e).unwrap();
                    if !cancelled {
                        h.backoff.add(h.now, p, ad);
                    }
                }
            }
            DOp::PeerConnected(p) => {
                let p = peer(u64::from(p) + 1);
                h.d.handle_peer_connected(h.now, p, ConnectionRef(2));
            }
            DOp::Advance(ms) => {
                let to = h.now + Duration::from_millis(u64::from(ms));
                h.advance(to)?;
            }
        }
        h.check_outputs()?;
    }
    // Everything is answered in the end, and the machine empties itself.
    let end = h.now + Duration::from_secs(3600);
    h.advance(end)?;
    prop_assert!(h.live.is_empty(), "unanswered requests");
    prop_assert_eq!(h.d.pending_requests(), 0);
    prop_assert_eq!(h.d.workers(), 0);
    prop_assert!(h.d.limiter().is_empty());
    prop_assert!(h.d.backoff().is_empty());
    prop_assert!(h.d.poll_timeout().is_none());
    Ok(())
}

#[derive(Debug, Clone)]
enum SOp {
    Candidates(Vec<u8>),
    AddStatic(u8),
    DialDone(usize, bool),
    Resolved(usize, bool),
    Inbound(u8),
    Disconnect(usize),
    LookupDone,
    Advance(u32),
}

fn sop() -> impl Strategy<Value = SOp> {
    prop_oneof![
        3 => prop::collection::vec(0u8..30, 0..8).prop_map(SOp::Candidates),
        1 => (0u8..30).prop_map(SOp::AddStatic),
        4 => (any::<usize>(), prop::bool::weighted(0.4)).prop_map(|(k, c)| SOp::DialDone(k, c)),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(k, f)| SOp::Resolved(k, f)),
        1 => (0u8..30).prop_map(SOp::Inbound),
        2 => any::<usize>().prop_map(SOp::Disconnect),
        1 => Just(SOp::LookupDone),
        3 => (0u32..40_000).prop_map(SOp::Advance),
    ]
}

/// What the scheduler model knows: dials running, static lookups, who is
/// connected and how, the dialed count, the static nodes, when each peer's
/// last dial task started, and the discovery lookups.
#[derive(Default)]
struct Model {
    dialing: Vec<PeerId>,
    last_dial: HashMap<PeerId, Instant>,
    /// A discovery lookup runs; `true` once it brought a dialable candidate.
    lookup: Option<bool>,
    /// No lookup may start before this instant.
    lookup_hold: Option<Instant>,
    /// Static lookups and when they count as not found.
    resolving: Vec<(PeerId, Instant)>,
    connected: Vec<(PeerId, ConnDirection)>,
    dialed: usize,
    statics: Vec<PeerId>,
}

impl Model {
    fn is_resolving(&self, p: &PeerId) -> bool {
        self.resolving.iter().any(|(q, _)| q == p)
    }

    /// Whether the scheduler's `check_dial` accepts `p` at `now`.
    fn dialable(&self, p: &PeerId, now: Instant, history: Duration) -> bool {
        *p != peer(0)
            && !self.dialing.contains(p)
            && !self.connected.iter().any(|(q, _)| q == p)
            && self.last_dial.get(p).is_none_or(|&t| now >= t + history)
    }

    fn end_lookup(&mut self, p: &PeerId) {
        self.resolving.retain(|(q, _)| q != p);
    }

    /// The lookups nobody answered by `now` end as not found, and their tasks.
    fn expire_lookups(&mut self, now: Instant) {
        let expired: Vec<PeerId> = self
            .resolving
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.end_lookup(&p);
            self.dialing.retain(|q| *q != p);
        }
    }
}

fn run_scheduler(ops: Vec<SOp>) -> Result<(), TestCaseError> {
    let mut config = SchedulerConfig::default();
    config.max_peers = 10; // 3 m.dialed peers, 6 slots
    config.max_active_dials = 5;
    config.bootnodes = (30..33).map(|i| Candidate::new(peer(i))).collect();
    let max_dialed = config.max_dialed_peers();
    let history = config.history_expiration;
    let resolve_timeout = config.resolve_timeout;
    let lookup_hold = config.lookup_hold;
    let mut now = Instant::ZERO;
    let mut s = Scheduler::new(peer(0), config, now).unwrap();
    let mut m = Model::default();
    let mut log = String::new();

    let drain = |s: &mut Scheduler,
                 now: Instant,
                 redial: Option<PeerId>,
                 m: &mut Model|
     -> Result<(), TestCaseError> {
        while let Some(a) = s.poll_action() {
            match a {
                scheduler::Action::Dial { peer: p, .. } => {
                    if redial == Some(p) {
                        // The same task m.dialing again after a lookup.
                        m.end_lookup(&p);
                        continue;
                    }
                    prop_assert!(p != peer(0), "dialed self");
                    prop_assert!(
                        !m.connected.iter().any(|(q, _)| *q == p),
                        "dialed a connected peer"
                    );
                    prop_assert!(!m.dialing.contains(&p), "dialed twice at once");
                    if let Some(&t) = m.last_dial.get(&p) {
                        prop_assert!(now >= t + history, "dialed a peer in the history");
                    }
                    m.last_dial.insert(p, now);
                    m.dialing.push(p);
                }
                scheduler::Action::Resolve { peer: p } => {
                    // The task goes on: it looks the static node up.
                    m.resolving.push((p, now + resolve_timeout));
                    m.dialing.push(p);
                }
                scheduler::Action::FindCandidates { .. } => {
                    prop_assert!(m.lookup.is_none(), "two lookups at once");
                    prop_assert!(
                        m.lookup_hold.is_none_or(|t| now >= t),
                        "a lookup during the hold"
                    );
                    m.lookup = Some(false);
                }
                scheduler::Action::Disconnect { peer: p } => {
                    // Only a dynamically m.dialed peer gives way to a static one.
                    let at = m.connected.iter().position(|(q, _)| *q == p);
                    prop_assert!(at.is_some(), "disconnect of a peer not connected");
                    let (_, dir) = m.connected.swap_remove(at.unwrap());
                    prop_assert_eq!(dir, ConnDirection::Outbound);
                    prop_assert!(!m.statics.contains(&p), "a static peer gave way");
                    m.dialed -= 1;
                }
            }
        }
        while s.poll_event().is_some() {}
        prop_assert!(m.dialing.len() <= 5, "more than max_active_dials");
        prop_assert_eq!(s.dialing(), m.dialing.len());
        Ok(())
    };

    drain(&mut s, now, None, &mut m)?;
    for op in ops {
        log.push_str(&alloc::format!("{op:?}\n"));
        let mut redial = None;
        match op {
            SOp::Candidates(ps) => {
                let ps: Vec<PeerId> = ps.into_iter().map(|i| peer(u64::from(i))).collect();
                // Judged before the scheduler dials any of them.
                let dialable: Vec<bool> = ps.iter().map(|p| m.dialable(p, now, history)).collect();
                let taken = s.add_candidates(now, ps.into_iter().map(Candidate::new));
                if let Some(fed) = m.lookup.as_mut() {
                    *fed |= dialable[..taken].iter().any(|d| *d);
                }
            }
            SOp::AddStatic(i) => {
                let p = peer(u64::from(i) + 1);
                if s.add_static(now, Candidate::new(p)).is_ok() {
                    m.statics.push(p);
                }
            }
            SOp::DialDone(k, ok) => {
                let candidates: Vec<PeerId> = m
                    .dialing
                    .iter()
                    .filter(|p| !m.is_resolving(p))
                    .copied()
                    .collect();
                if !candidates.is_empty() {
                    let p = candidates[k % candidates.len()];
                    if ok && !m.connected.iter().any(|(q, _)| *q == p) {
                        match s.handle_connected(now, p, ConnDirection::Outbound) {
                            Ok(()) => {
                                m.dialed += 1;
                                m.connected.push((p, ConnDirection::Outbound));
                            }
                            Err(scheduler::ConnectError::DialQuotaFull) => {
                                prop_assert_eq!(m.dialed, max_dialed);
                                // A static peer is refused only when every
                                // m.dialed peer is static.
                                let dynamic = m.connected.iter().any(|(q, d)| {
                                    *d == ConnDirection::Outbound && !m.statics.contains(q)
                                });
                                prop_assert!(!(m.statics.contains(&p) && dynamic));
                            }
                            Err(e) => prop_assert!(false, "{e}"),
                        }
                    }
                    s.handle_dial_done(now, p, ok).unwrap();
                    m.dialing.retain(|q| *q != p);
                }
            }
            SOp::Resolved(k, found) => {
                if !m.resolving.is_empty() {
                    let p = m.resolving[k % m.resolving.len()].0;
                    let ip = found.then(|| core::net::IpAddr::from([1, 2, 3, 4]));
                    s.handle_resolved(now, p, ip).unwrap();
                    if found {
                        redial = Some(p);
                    } else {
                        m.end_lookup(&p);
                        m.dialing.retain(|q| *q != p);
                    }
                }
            }
            SOp::Inbound(i) => {
                let p = peer(u64::from(i) + 1);
                if !m.connected.iter().any(|(q, _)| *q == p) {
                    s.handle_inbound_pending(now, p);
                    s.handle_connected(now, p, ConnDirection::Inbound).unwrap();
                    s.handle_inbound_done(now, p);
                    m.connected.push((p, ConnDirection::Inbound));
                }
            }
            SOp::Disconnect(k) => {
                if !m.connected.is_empty() {
                    let (p, dir) = m.connected.swap_remove(k % m.connected.len());
                    if dir == ConnDirection::Outbound {
                        m.dialed -= 1;
                    }
                    s.handle_disconnected(now, p);
                }
            }
            SOp::LookupDone => {
                s.handle_lookup_done(now);
                if m.lookup.take() == Some(false) {
                    m.lookup_hold = Some(now + lookup_hold);
                }
            }
            SOp::Advance(ms) => {
                let to = now + Duration::from_millis(u64::from(ms));
                while let Some(t) = s.poll_timeout() {
                    if t > to {
                        break;
                    }
                    now = now.max(t);
                    s.handle_timeout(now);
                    m.expire_lookups(now);
                    drain(&mut s, now, None, &mut m)?;
                }
                now = to;
                s.handle_timeout(now);
                m.expire_lookups(now);
            }
        }
        drain(&mut s, now, redial, &mut m)?;
        // Not held, nothing running: free slots the buffer cannot fill
        // start a lookup.
        let free = s.free_slots();
        if m.lookup.is_none() && m.lookup_hold.is_none_or(|t| now >= t) {
            prop_assert!(
                free <= 0 || s.candidates() as isize >= free,
                "no lookup for {} free slots",
                free
            );
        }
        prop_assert_eq!(s.lookup_running(), m.lookup.is_some());
        prop_assert!(s.dialed_peers() <= max_dialed, "dialed-peer quota exceeded");
        prop_assert_eq!(s.dialed_peers(), m.dialed);
    }
    Ok(())
}

proptest! {
    // No regression files: this module may only write inside `dial/`.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(256)
    })]

    #[test]
    fn dialer_respects_limits_backoff_and_deadlines(ops in prop::collection::vec(dop(), 1..120)) {
        run_dialer(ops)?;
    }

    #[test]
    fn scheduler_respects_quota_and_history(ops in prop::collection::vec(sop(), 1..150)) {
        run_scheduler(ops)?;
    }
}
