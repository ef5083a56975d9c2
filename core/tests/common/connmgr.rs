//! The harness of the connection manager's model test, shared by
//! `core/tests/connmgr_model.rs` (proptest) and
//! `fuzz/fuzz_targets/conn_manager.rs` (cargo-fuzz, where `Op` derives
//! `Arbitrary`): six peers, connections opened and closed in any order,
//! tags, protections and decaying tags, the caller executing the closes
//! late or never, and a reference model checked after every step.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use sansp2p::peers::connmgr::{
    Action, BumpFn, ConnManager, ConnManagerConfig, DecayFn, DecayingTag, Event, ProtectError,
    RegisterError, TagError, TrimCause, TrimError, MAX_DECAY_CATCH_UP,
};
use sansp2p::{Instant, Keypair, PeerId};

/// The population.
const N: usize = 6;
/// Tag names, the last ones long (refused by small `max_tag_len`s).
const NAMES: [&str; 6] = ["a", "b", "c", "dd", "eeee", "ffffffff"];

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
    /// Advance the clock (`scale` picks the range of `v`: up to 2 s, 30 s,
    /// 10 min or 3 h); `deliver`: then `handle_timeout`, else the next
    /// input brings the new `now`.
    Advance {
        scale: u8,
        v: u16,
        deliver: bool,
    },
    Connect {
        peer: u8,
        inbound: bool,
    },
    /// Disconnects tracked connection `idx` (modulo their number); an
    /// unknown key when there is none.
    Disconnect {
        idx: u8,
    },
    /// The caller executes the oldest outstanding close.
    ExecuteClose,
    Tag {
        peer: u8,
        name: u8,
        weight: i32,
    },
    Upsert {
        peer: u8,
        name: u8,
        delta: i16,
    },
    Untag {
        peer: u8,
        name: u8,
    },
    Protect {
        peer: u8,
        name: u8,
    },
    Unprotect {
        peer: u8,
        name: u8,
    },
    /// `decay`/`bump` pick the functions, `p` their parameters.
    Register {
        name: u8,
        secs: u16,
        decay: u8,
        bump: u8,
        p: i16,
        q: i16,
    },
    /// `tag` indexes every handle ever returned (closed ones too).
    Bump {
        tag: u8,
        peer: u8,
        delta: i32,
    },
    RemoveDecaying {
        tag: u8,
        peer: u8,
    },
    CloseDecaying {
        tag: u8,
    },
    TrimNow,
}

/// The manager's configuration from 8 raw bytes: small knobs.
pub fn config(k: &[u8; 8]) -> ConnManagerConfig {
    let s = |v: u64| Duration::from_secs(v);
    let mut c = ConnManagerConfig::default();
    c.low_water = 1 + usize::from(k[0] % 4);
    c.high_water = c.low_water + usize::from(k[1] % 4);
    c.grace_period = s([0, 1, 5, 30, 60][usize::from(k[2] % 5)]);
    c.silence_period = s(1 + u64::from(k[3] % 20));
    c.decay_resolution = s([1, 5, 60][usize::from(k[4] % 3)]);
    c.max_tags_per_peer = 1 + usize::from(k[5] % 4);
    c.max_tag_len = 1 + usize::from(k[5] / 4 % 5);
    c.max_decaying_tags = usize::from(k[6] % 4);
    c.max_protected_peers = usize::from(k[7] % 5);
    c
}

#[derive(Debug, Clone)]
struct MConn {
    peer: usize,
    inbound: bool,
    opened: Instant,
    closing: bool,
}

#[derive(Debug, Clone)]
struct MReg {
    name: &'static str,
    interval: Duration,
    decay: DecayFn,
    bump: BumpFn,
    next: Instant,
    live: bool,
}

/// The reference model: what the manager should hold.
#[derive(Debug, Default)]
struct Model {
    conns: BTreeMap<u16, MConn>,
    tags: BTreeMap<usize, BTreeMap<&'static str, i32>>,
    protected: BTreeMap<usize, BTreeSet<&'static str>>,
    regs: Vec<(DecayingTag, MReg)>,
    /// (peer, handle index) -> (value, last bump)
    decaying: BTreeMap<(usize, usize), (i32, Instant)>,
    last_trim: Option<Instant>,
}

pub struct Harness {
    cm: ConnManager<u16>,
    cfg: ConnManagerConfig,
    /// The harness clock; `mnow` the latest `now` the manager was given.
    now: Instant,
    mnow: Instant,
    next_key: u16,
    m: Model,
    /// Closes asked for and not executed yet, oldest first.
    to_close: Vec<u16>,
}

fn floor_div(a: i64, b: i64) -> i64 {
    let q = a / b;
    if a % b != 0 && (a < 0) != (b < 0) {
        q - 1
    } else {
        q
    }
}

impl Model {
    fn connected(&self, p: usize) -> bool {
        self.conns.values().any(|c| c.peer == p)
    }

    fn value(&self, p: usize) -> i64 {
        let t: i64 = self
            .tags
            .get(&p)
            .map_or(0, |m| m.values().map(|&v| i64::from(v)).sum());
        let d: i64 = self
            .decaying
            .iter()
            .filter(|((q, _), _)| *q == p)
            .map(|(_, (v, _))| i64::from(*v))
            .sum();
        t + d
    }

    fn active(&self) -> usize {
        self.conns.values().filter(|c| !c.closing).count()
    }

    fn closable(&self, c: &MConn, grace: Duration, now: Instant) -> bool {
        !c.closing
            && !self.protected.contains_key(&c.peer)
            && now.saturating_duration_since(c.opened) >= grace
    }

    /// Every tick of a live registration due by `now`, one tag at a time
    /// (tags are independent; bumps come after).
    fn tick(&mut self, now: Instant) {
        for i in 0..self.regs.len() {
            let r = self.regs[i].1.clone();
            if !r.live || r.next > now {
                continue;
            }
            let iv = r.interval.as_nanos() as u64;
            let due = (now.as_nanos() - r.next.as_nanos()) / iv + 1;
            let skip = due.saturating_sub(MAX_DECAY_CATCH_UP);
            let first = r.next.as_nanos() + skip * iv;
            let count = due - skip;
            for k in 0..count {
                let at = Instant::from_nanos(first + k * iv);
                let keys: Vec<_> = self
                    .decaying
                    .keys()
                    .filter(|(_, t)| *t == i)
                    .copied()
                    .collect();
                for key in keys {
                    let (v, last) = self.decaying[&key];
                    let after = match r.decay {
                        DecayFn::None => Some(v),
                        DecayFn::Fixed(n) => {
                            let a = (i64::from(v) - i64::from(n))
                                .clamp(i32::MIN.into(), i32::MAX.into());
                            (a > 0).then_some(a as i32)
                        }
                        DecayFn::Linear { num, den } => {
                            let a = floor_div(i64::from(v) * i64::from(num), i64::from(den))
                                .clamp(i32::MIN.into(), i32::MAX.into());
                            (a > 0).then_some(a as i32)
                        }
                        DecayFn::ExpireAfter(d) => {
                            (at.saturating_duration_since(last) < d).then_some(v)
                        }
                        _ => unreachable!(),
                    };
                    match after {
                        Some(a) => {
                            self.decaying.insert(key, (a, last));
                        }
                        None => {
                            self.decaying.remove(&key);
                        }
                    }
                }
            }
            self.regs[i].1.next = Instant::from_nanos(first + count * iv);
        }
    }

    /// The connections a trim at `now` closes, in order.
    fn trim_order(&self, cfg: &ConnManagerConfig, now: Instant) -> Vec<u16> {
        let target = self.active().saturating_sub(cfg.low_water);
        let mut v: Vec<_> = self
            .conns
            .iter()
            .filter(|(_, c)| self.closable(c, cfg.grace_period, now))
            .map(|(k, c)| {
                let key = (
                    self.value(c.peer),
                    u8::from(!c.inbound),
                    u64::MAX - c.opened.as_nanos(),
                    peers()[c.peer],
                    *k,
                );
                (key, *k)
            })
            .collect();
        v.sort();
        v.into_iter().take(target).map(|(_, k)| k).collect()
    }

    fn silenced(&self, cfg: &ConnManagerConfig, now: Instant) -> Option<Instant> {
        self.last_trim
            .map(|t| t.saturating_add(cfg.silence_period))
            .filter(|&t| t > now)
    }
}

impl Harness {
    pub fn new(cfg: ConnManagerConfig) -> Harness {
        let cm = ConnManager::new(Instant::ZERO, cfg.clone()).expect("a valid config");
        Harness {
            cm,
            cfg,
            now: Instant::ZERO,
            mnow: Instant::ZERO,
            next_key: 0,
            m: Model::default(),
            to_close: Vec::new(),
        }
    }

    fn peer(p: u8) -> usize {
        usize::from(p) % N
    }

    fn name(n: u8) -> &'static str {
        NAMES[usize::from(n) % NAMES.len()]
    }

    /// The model's side of an input that brings `now`.
    fn enter(&mut self) {
        self.mnow = self.mnow.max(self.now);
        self.m.tick(self.mnow);
    }

    pub fn apply(&mut self, op: Op) {
        let mut requested = None;
        match op {
            Op::Advance { scale, v, deliver } => {
                let d = match scale % 16 {
                    0..=7 => Duration::from_millis(u64::from(v % 2000)),
                    8..=12 => Duration::from_secs(u64::from(v % 30)),
                    13..=14 => Duration::from_secs(u64::from(v % 600)),
                    _ => Duration::from_secs(u64::from(v) % 10_800),
                };
                self.now += d;
                if deliver {
                    self.enter();
                    self.cm.handle_timeout(self.now);
                }
            }
            Op::Connect { peer, inbound } => {
                let i = Self::peer(peer);
                let key = self.next_key;
                self.next_key = self.next_key.wrapping_add(1);
                self.enter();
                if let std::collections::btree_map::Entry::Vacant(e) = self.m.conns.entry(key) {
                    e.insert(MConn {
                        peer: i,
                        inbound,
                        opened: self.mnow,
                        closing: false,
                    });
                }
                self.cm.handle_connected(self.now, key, peers()[i], inbound);
            }
            Op::Disconnect { idx } => {
                let key = if self.m.conns.is_empty() {
                    self.next_key.wrapping_add(1000)
                } else {
                    *self
                        .m
                        .conns
                        .keys()
                        .nth(usize::from(idx) % self.m.conns.len())
                        .unwrap()
                };
                self.enter();
                self.disconnect(key);
                self.cm.handle_disconnected(self.now, key);
            }
            Op::ExecuteClose => {
                if self.to_close.is_empty() {
                    return;
                }
                let key = self.to_close.remove(0);
                self.enter();
                self.disconnect(key);
                self.cm.handle_disconnected(self.now, key);
            }
            Op::Tag { peer, name, weight } => {
                let (i, n) = (Self::peer(peer), Self::name(name));
                let want = self.tag_check(i, n).map(|()| {
                    self.m.tags.entry(i).or_default().insert(n, weight);
                });
                assert_eq!(self.cm.tag_peer(peers()[i], n, weight), want);
            }
            Op::Upsert { peer, name, delta } => {
                let (i, n) = (Self::peer(peer), Self::name(name));
                let want = self.tag_check(i, n).map(|()| {
                    let w = self.m.tags.entry(i).or_default().entry(n).or_insert(0);
                    *w = w.saturating_add(i32::from(delta));
                    *w
                });
                let got = self
                    .cm
                    .upsert_tag(peers()[i], n, |w| w.saturating_add(i32::from(delta)));
                assert_eq!(got, want);
            }
            Op::Untag { peer, name } => {
                let (i, n) = (Self::peer(peer), Self::name(name));
                let want = self
                    .m
                    .tags
                    .get_mut(&i)
                    .is_some_and(|t| t.remove(n).is_some());
                assert_eq!(self.cm.untag_peer(&peers()[i], n), want);
            }
            Op::Protect { peer, name } => {
                let (i, n) = (Self::peer(peer), Self::name(name));
                let want = if n.len() > self.cfg.max_tag_len {
                    Err(ProtectError::NameTooLong)
                } else {
                    match self.m.protected.get(&i) {
                        Some(t) if !t.contains(n) && t.len() >= self.cfg.max_tags_per_peer => {
                            Err(ProtectError::TooManyTags)
                        }
                        None if self.m.protected.len() >= self.cfg.max_protected_peers => {
                            Err(ProtectError::TooManyPeers)
                        }
                        _ => Ok(()),
                    }
                };
                if want.is_ok() {
                    self.m.protected.entry(i).or_default().insert(n);
                }
                assert_eq!(self.cm.protect(peers()[i], n), want);
            }
            Op::Unprotect { peer, name } => {
                let (i, n) = (Self::peer(peer), Self::name(name));
                let want = match self.m.protected.get_mut(&i) {
                    None => false,
                    Some(t) => {
                        t.remove(n);
                        if t.is_empty() {
                            self.m.protected.remove(&i);
                            false
                        } else {
                            true
                        }
                    }
                };
                assert_eq!(self.cm.unprotect(&peers()[i], n), want);
            }
            Op::Register {
                name,
                secs,
                decay,
                bump,
                p,
                q,
            } => {
                let n = Self::name(name);
                let decay = match decay % 4 {
                    0 => DecayFn::None,
                    1 => DecayFn::Fixed(i32::from(p)),
                    2 => DecayFn::Linear {
                        num: u32::from(p.unsigned_abs()),
                        den: u32::from(q.unsigned_abs() % 8),
                    },
                    _ => DecayFn::ExpireAfter(Duration::from_secs(u64::from(p.unsigned_abs()))),
                };
                let bump = match bump % 3 {
                    0 => BumpFn::Sum,
                    // Invalid when p > q.
                    1 => BumpFn::SumBounded {
                        min: i32::from(p),
                        max: i32::from(q),
                    },
                    _ => BumpFn::Overwrite,
                };
                let interval = Duration::from_secs(u64::from(secs % 400));
                self.enter();
                let live = self.m.regs.iter().filter(|(_, r)| r.live).count();
                let want = if n.len() > self.cfg.max_tag_len {
                    Err(RegisterError::NameTooLong)
                } else if matches!(decay, DecayFn::Linear { den: 0, .. }) {
                    Err(RegisterError::InvalidDecay)
                } else if matches!(bump, BumpFn::SumBounded { min, max } if min > max) {
                    Err(RegisterError::InvalidBump)
                } else if self.m.regs.iter().any(|(_, r)| r.live && r.name == n) {
                    Err(RegisterError::Exists)
                } else if live >= self.cfg.max_decaying_tags {
                    Err(RegisterError::TooMany)
                } else {
                    Ok(())
                };
                let got = self
                    .cm
                    .register_decaying(self.now, n, interval, decay, bump);
                assert_eq!(got.map(|_| ()), want);
                if let Ok(tag) = got {
                    assert!(
                        self.m.regs.iter().all(|(t, _)| *t != tag),
                        "handles are new"
                    );
                    let interval = interval.max(self.cfg.decay_resolution);
                    let reg = MReg {
                        name: n,
                        interval,
                        decay,
                        bump,
                        next: self.mnow.saturating_add(interval),
                        live: true,
                    };
                    self.m.regs.push((tag, reg));
                    assert_eq!(self.cm.decaying_tag(tag), Some((n, interval)));
                }
            }
            Op::Bump { tag, peer, delta } => {
                let i = Self::peer(peer);
                let Some(t) = self.handle(tag) else { return };
                self.enter();
                let (handle, r) = self.m.regs[t].clone();
                let want = if !r.live {
                    Err(TagError::UnknownTag)
                } else if !self.m.connected(i) {
                    Err(TagError::NotConnected)
                } else {
                    let old = self.m.decaying.get(&(i, t)).map_or(0, |v| v.0);
                    let new = match r.bump {
                        BumpFn::Sum => old.saturating_add(delta),
                        BumpFn::SumBounded { min, max } => {
                            old.saturating_add(delta).max(min).min(max)
                        }
                        BumpFn::Overwrite => delta,
                        _ => unreachable!(),
                    };
                    self.m.decaying.insert((i, t), (new, self.mnow));
                    Ok(new)
                };
                assert_eq!(self.cm.bump(self.now, handle, peers()[i], delta), want);
            }
            Op::RemoveDecaying { tag, peer } => {
                let i = Self::peer(peer);
                let Some(t) = self.handle(tag) else { return };
                let want = self.m.decaying.remove(&(i, t)).is_some();
                let handle = self.m.regs[t].0;
                assert_eq!(self.cm.remove_decaying(handle, &peers()[i]), want);
            }
            Op::CloseDecaying { tag } => {
                let Some(t) = self.handle(tag) else { return };
                let want = std::mem::replace(&mut self.m.regs[t].1.live, false);
                self.m.decaying.retain(|(_, u), _| *u != t);
                let handle = self.m.regs[t].0;
                assert_eq!(self.cm.close_decaying(handle), want);
            }
            Op::TrimNow => {
                self.enter();
                let want = match self.m.silenced(&self.cfg, self.mnow) {
                    Some(until) => Err(TrimError::Silenced { until }),
                    None => match self.m.trim_order(&self.cfg, self.mnow).len() {
                        0 => Err(TrimError::NothingToTrim),
                        n => Ok(n),
                    },
                };
                let got = self.cm.trim_now(self.now);
                assert_eq!(got, want);
                if got.is_ok() {
                    requested = Some(self.m.trim_order(&self.cfg, self.mnow));
                }
            }
        }
        self.check(requested);
    }

    fn handle(&self, tag: u8) -> Option<usize> {
        (!self.m.regs.is_empty()).then(|| usize::from(tag) % self.m.regs.len())
    }

    fn tag_check(&self, i: usize, n: &str) -> Result<(), TagError> {
        if n.len() > self.cfg.max_tag_len {
            return Err(TagError::NameTooLong);
        }
        if !self.m.connected(i) {
            return Err(TagError::NotConnected);
        }
        let tags = self.m.tags.get(&i);
        if !tags.is_some_and(|t| t.contains_key(n))
            && tags.map_or(0, |t| t.len()) >= self.cfg.max_tags_per_peer
        {
            return Err(TagError::TooManyTags);
        }
        Ok(())
    }

    fn disconnect(&mut self, key: u16) {
        self.to_close.retain(|&k| k != key);
        if let Some(c) = self.m.conns.remove(&key) {
            if !self.m.connected(c.peer) {
                self.m.tags.remove(&c.peer);
                self.m.decaying.retain(|(p, _), _| *p != c.peer);
            }
        }
    }

    /// After every step: the closes asked for against the model's trim,
    /// the state against the model, the timeout, the bounds.
    fn check(&mut self, requested: Option<Vec<u16>>) {
        let cfg = self.cfg.clone();
        let now = self.mnow;
        let actions: Vec<_> = std::iter::from_fn(|| self.cm.poll_action()).collect();
        let events: Vec<_> = std::iter::from_fn(|| self.cm.poll_event()).collect();
        // The trim the model expects: the one requested, or one that is due.
        let before = self.m.active();
        let expected = match requested {
            Some(order) => Some((TrimCause::Requested, order)),
            None => {
                let due = before > cfg.high_water && self.m.silenced(&cfg, now).is_none();
                let order = self.m.trim_order(&cfg, now);
                (due && !order.is_empty()).then_some((TrimCause::HighWater, order))
            }
        };
        let closed: Vec<u16> = actions
            .iter()
            .map(|Action::Close { conn, peer }| {
                let c = self
                    .m
                    .conns
                    .get(conn)
                    .expect("a Close for a tracked connection");
                assert_eq!(peers()[c.peer], *peer);
                assert!(!c.closing, "a connection asked to close twice");
                assert!(
                    !self.m.protected.contains_key(&c.peer),
                    "a protected peer closed"
                );
                assert!(
                    now.saturating_duration_since(c.opened) >= cfg.grace_period,
                    "a connection in its grace period closed"
                );
                *conn
            })
            .collect();
        match expected {
            None => {
                assert!(closed.is_empty(), "closes without a trim: {closed:?}");
                assert!(events.is_empty(), "{events:?}");
            }
            Some((cause, order)) => {
                if cause == TrimCause::HighWater {
                    assert!(before > cfg.high_water);
                } else {
                    assert!(before > cfg.low_water);
                }
                if let Some(last) = self.m.last_trim {
                    assert!(
                        now >= last.saturating_add(cfg.silence_period),
                        "silence broken"
                    );
                }
                assert_eq!(closed, order, "the trim order");
                let after = before - closed.len();
                let room = self
                    .m
                    .conns
                    .values()
                    .filter(|c| self.m.closable(c, cfg.grace_period, now))
                    .count();
                if room >= before - cfg.low_water {
                    assert_eq!(after, cfg.low_water, "a trim with room ends at low water");
                } else {
                    assert_eq!(closed.len(), room, "a trim without room closes all it may");
                }
                assert_eq!(
                    events,
                    vec![Event::Trimmed {
                        cause,
                        closed: closed.len(),
                        count_before: before,
                        count_after: after,
                    }]
                );
                for k in &closed {
                    self.m.conns.get_mut(k).unwrap().closing = true;
                }
                self.to_close.extend(closed.iter().copied());
                self.m.last_trim = Some(now);
            }
        }
        // The state.
        assert_eq!(self.cm.connection_count(), self.m.conns.len());
        assert_eq!(self.cm.active_count(), self.m.active());
        assert_eq!(self.cm.last_trim(), self.m.last_trim);
        for (i, p) in peers().iter().enumerate() {
            let connected = self.m.connected(i);
            let value = connected.then(|| self.m.value(i));
            assert_eq!(self.cm.peer_value(p), value, "peer {i}'s value");
            let tags: Vec<(&str, i32)> = self.cm.tags(p).collect();
            let want: Vec<(&str, i32)> = self
                .m
                .tags
                .get(&i)
                .map_or(vec![], |t| t.iter().map(|(k, v)| (*k, *v)).collect());
            assert_eq!(tags, want);
            assert_eq!(self.cm.is_protected(p), self.m.protected.contains_key(&i));
            assert!(self.cm.tags(p).count() <= cfg.max_tags_per_peer);
        }
        // Bounds.
        assert!(self.cm.peer_count() <= self.cm.connection_count());
        assert!(self.cm.protected_count() <= cfg.max_protected_peers);
        assert!(self.cm.decaying_tag_count() <= cfg.max_decaying_tags);
        // The timeout: never in the past; the next tick, or when a trim
        // becomes possible.
        let tick = self
            .m
            .regs
            .iter()
            .filter(|(_, r)| r.live)
            .map(|(_, r)| r.next)
            .min();
        let trim = (self.m.active() > cfg.high_water)
            .then(|| {
                let ready = self
                    .m
                    .conns
                    .values()
                    .filter(|c| !c.closing && !self.m.protected.contains_key(&c.peer))
                    .map(|c| c.opened.saturating_add(cfg.grace_period))
                    .min()?;
                let silence = self
                    .m
                    .last_trim
                    .map_or(now, |t| t.saturating_add(cfg.silence_period));
                Some(ready.max(silence))
            })
            .flatten();
        let want = match (tick, trim) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let got = self.cm.poll_timeout();
        if let Some(t) = got {
            assert!(t >= now, "poll_timeout in the past");
        }
        if let Some(t) = trim {
            assert!(t > now, "a trim owed now was not done");
        }
        assert_eq!(got, want, "poll_timeout");
    }
}
