//! The relay finder on a virtual clock: go-libp2p's behaviour replayed, and
//! each point where it must do better.

use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use super::finder::*;
use crate::identity::PeerId;
use crate::time::Instant;
use crate::Keypair;

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);

fn peer(n: u8) -> PeerId {
    Keypair::from_secret_bytes([n; 32]).peer_id()
}

/// `/ip4/<a.b.c.d>/tcp/4001/p2p/<peer>`
fn addr_of(ip: [u8; 4], p: &PeerId) -> Vec<u8> {
    let mut a = vec![0x04, ip[0], ip[1], ip[2], ip[3], 0x06, 0x0f, 0xa1];
    a.extend_from_slice(&super::p2p_suffix(p));
    a
}

fn hop(rtt: Option<Duration>) -> PeerInfo {
    PeerInfo {
        direct: true,
        supports_hop: true,
        addrs: vec![],
        rtt,
    }
}

/// A finder and a virtual clock; actions and events collected as they come.
struct Sim {
    now: Instant,
    f: Finder,
    actions: Vec<Action>,
    events: Vec<Event>,
}

impl Sim {
    fn new(config: FinderConfig) -> Sim {
        let mut s = Sim {
            now: Instant::ZERO,
            f: Finder::new(Instant::ZERO, config).unwrap(),
            actions: vec![],
            events: vec![],
        };
        s.drain();
        s
    }

    fn dynamic() -> Sim {
        Sim::new(FinderConfig {
            public_addrs_only: false,
            ..FinderConfig::default()
        })
    }

    fn drain(&mut self) {
        while let Some(a) = self.f.poll_action() {
            self.actions.push(a);
        }
        while let Some(e) = self.f.poll_event() {
            self.events.push(e);
        }
    }

    /// Runs every timer up to `now + d`, in order.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.f.poll_timeout().filter(|t| *t <= end) {
            assert!(
                t >= self.now,
                "a timeout in the past: {t:?} < {:?}",
                self.now
            );
            self.now = t;
            self.f.handle_timeout(t);
            self.drain();
        }
        self.now = end;
    }

    fn identify(&mut self, n: u8, rtt: Option<Duration>) {
        self.f.handle_identified(self.now, peer(n), hop(rtt));
        self.drain();
    }

    fn grant(&mut self, n: u8, ttl: Duration) {
        let granted = Granted {
            expire: self.now + ttl,
            addrs: vec![addr_of([8, 8, 8, n], &peer(n))],
        };
        self.f.handle_reservation(self.now, peer(n), Ok(granted));
        self.drain();
    }

    fn fail(&mut self, n: u8, why: ReserveFailure) {
        self.f.handle_reservation(self.now, peer(n), Err(why));
        self.drain();
    }

    /// The peers of the Reserve actions taken out since the last call.
    fn reserves(&mut self) -> Vec<PeerId> {
        self.take(|a| match a {
            Action::Reserve { peer, .. } => Some(*peer),
            _ => None,
        })
    }

    fn refreshes(&mut self) -> Vec<PeerId> {
        self.take(|a| match a {
            Action::Refresh { peer } => Some(*peer),
            _ => None,
        })
    }

    fn queries(&mut self) -> usize {
        self.take(|a| matches!(a, Action::QueryPeerSource { .. }).then_some(()))
            .len()
    }

    fn take<T>(&mut self, f: impl Fn(&Action) -> Option<T>) -> Vec<T> {
        let mut out = vec![];
        self.actions.retain(|a| match f(a) {
            Some(t) => {
                out.push(t);
                false
            }
            None => true,
        });
        out
    }

    fn removed(&self) -> Vec<(PeerId, RemovedReason)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::RelayRemoved { relay, reason } => Some((*relay, *reason)),
                _ => None,
            })
            .collect()
    }

    fn relays(&self) -> Vec<PeerId> {
        self.f.relays().map(|(p, _)| p).collect()
    }
}

/// Four candidates identified now and the two reservations granted.
fn with_two_relays() -> Sim {
    let mut s = Sim::dynamic();
    for n in 1..=4 {
        s.identify(n, None);
    }
    let chosen = s.reserves();
    assert_eq!(chosen.len(), 2);
    for p in &chosen {
        let n = (1..=4).find(|n| peer(*n) == *p).unwrap();
        s.grant(n, 60 * MIN);
    }
    s
}

#[test]
fn the_boot_delay_waits_for_min_candidates() {
    let mut s = Sim::dynamic();
    assert_eq!(s.queries(), 1, "the peer source is asked at once");
    s.identify(1, None);
    s.identify(2, None);
    s.advance(2 * MIN);
    assert!(s.reserves().is_empty(), "two candidates, still booting");
    // The boot delay (3 min from construction) ends: reserve with what there is.
    s.advance(MIN);
    let mut r = s.reserves();
    r.sort();
    let mut want = vec![peer(1), peer(2)];
    want.sort();
    assert_eq!(r, want);
}

#[test]
fn min_candidates_reached_early_reserves_desired_and_no_more() {
    let mut s = Sim::dynamic();
    s.advance(10 * SEC);
    for n in 1..=3 {
        s.identify(n, None);
    }
    assert!(s.reserves().is_empty());
    s.identify(4, None);
    let r = s.reserves();
    assert_eq!(r.len(), 2, "desired relays: 2");
    s.identify(5, None);
    assert!(s.reserves().is_empty(), "two reservations under way");
    for p in r {
        let n = (1..=4).find(|n| peer(*n) == p).unwrap();
        s.grant(n, 60 * MIN);
    }
    s.identify(6, None);
    assert!(s.reserves().is_empty(), "desired reached");
    assert_eq!(s.relays().len(), 2);
}

#[test]
fn candidates_age_out_after_30_minutes_and_the_source_is_asked_again() {
    let mut s = with_two_relays();
    s.queries();
    // Two candidates left (< min 4): the source is asked every 30 s.
    s.advance(29 * SEC);
    assert_eq!(s.queries(), 0, "30 s between calls");
    s.advance(SEC);
    assert_eq!(s.queries(), 1);
    s.f.handle_peer_source_exhausted(s.now);
    s.drain();
    assert_eq!(s.queries(), 0, "not before the interval");
    assert_eq!(s.f.candidates().count(), 2);
    s.advance(30 * MIN);
    assert_eq!(s.f.candidates().count(), 0, "aged out");
    assert!(s.queries() >= 1);
}

#[test]
fn the_peer_source_is_rate_limited_and_its_peers_probed() {
    let mut s = Sim::dynamic();
    assert_eq!(s.queries(), 1);
    let batch: Vec<_> = (10..40).map(|n| (peer(n), vec![])).collect();
    s.f.handle_peer_source(s.now, batch);
    s.drain();
    let probes = s.take(|a| matches!(a, Action::Probe { .. }).then_some(()));
    assert_eq!(probes.len(), 20, "at most max_candidates");
    assert!(s.f.tracked() <= 20);
    // Probes unanswered for 20 s have failed; the next call waits for 30 s.
    s.advance(20 * SEC);
    assert_eq!(s.f.tracked(), 0);
    assert_eq!(s.queries(), 0);
    s.advance(10 * SEC);
    assert_eq!(s.queries(), 1);
}

#[test]
fn a_refused_reservation_backs_off_for_an_hour_and_a_success_never_does() {
    let mut s = Sim::dynamic();
    s.advance(3 * MIN);
    s.identify(1, None);
    assert_eq!(s.reserves(), vec![peer(1)]);
    s.fail(1, ReserveFailure::Refused);
    assert!(s.f.is_backed_off(&peer(1)));
    s.identify(1, None);
    assert!(s.reserves().is_empty(), "in backoff");
    s.advance(60 * MIN);
    assert!(!s.f.is_backed_off(&peer(1)));
    s.identify(1, None);
    assert_eq!(s.reserves(), vec![peer(1)]);
    s.grant(1, 60 * MIN);
    // A relay that worked and went away is not backed off (go PR #3482)
    // and is reserved again as soon as it is back (go #1782, js #3601).
    s.f.handle_disconnected(s.now, peer(1));
    s.drain();
    assert_eq!(s.removed(), vec![(peer(1), RemovedReason::Disconnected)]);
    assert!(!s.f.is_backed_off(&peer(1)));
    s.advance(SEC);
    s.identify(1, None);
    assert_eq!(s.reserves(), vec![peer(1)]);
}

#[test]
fn a_disconnected_relay_is_replaced() {
    let mut s = with_two_relays();
    let gone = s.relays()[0];
    s.f.handle_disconnected(s.now, gone);
    s.drain();
    assert!(s.actions.contains(&Action::Unprotect { peer: gone }));
    let next = s.reserves();
    assert_eq!(next.len(), 1);
    assert_ne!(next[0], gone);
    assert!(!s.relays().contains(&gone));
}

#[test]
fn reachability_flapping_makes_no_duplicate_reservations() {
    let mut s = with_two_relays();
    s.actions.clear();
    s.f.handle_reachability(s.now, Reachability::Public);
    s.drain();
    assert!(s.relays().is_empty());
    assert_eq!(s.removed().len(), 2);
    assert!(matches!(s.events.last(), Some(Event::AddrsChanged { addrs }) if addrs.is_empty()));
    s.f.handle_reachability(s.now, Reachability::Public);
    s.f.handle_reachability(s.now, Reachability::Private);
    s.drain();
    let again = s.reserves();
    assert_eq!(again.len(), 2, "{again:?}");
    s.f.handle_reachability(s.now, Reachability::Private);
    s.drain();
    assert!(
        s.reserves().is_empty(),
        "the same reachability again does nothing"
    );
    let mut distinct = again.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "one reservation per relay");
}

#[test]
fn each_refresh_is_scheduled_from_its_own_expiry() {
    // (TTL, when the refresh goes out): a quarter of the lifetime early,
    // at most 2 minutes.
    for (ttl, at) in [
        (30 * SEC, Duration::from_millis(22_500)),
        (5 * MIN, 3 * MIN + 45 * SEC),
        (60 * MIN, 58 * MIN),
    ] {
        let config = FinderConfig::with_static_relays(vec![(peer(1), vec![])]);
        let mut s = Sim::new(config);
        assert_eq!(s.reserves(), vec![peer(1)]);
        s.grant(1, ttl);
        assert_eq!(s.f.refresh_due(&peer(1)), Some(Instant::ZERO + at));
        let mut refreshed = 0;
        // Several lifetimes: every refresh comes at the same point of its
        // reservation's life, before the expiry; none lapses.
        for _ in 0..5 {
            let due = s.f.refresh_due(&peer(1)).unwrap();
            s.advance(due - s.now - Duration::from_millis(1));
            assert!(s.refreshes().is_empty(), "not early, TTL {ttl:?}");
            s.advance(Duration::from_millis(1));
            assert_eq!(s.refreshes(), vec![peer(1)], "TTL {ttl:?}");
            s.grant(1, ttl);
            refreshed += 1;
            assert_eq!(s.f.refresh_due(&peer(1)), Some(s.now + at));
        }
        assert_eq!(refreshed, 5);
        assert!(s.removed().is_empty());
        let refreshed_events = s
            .events
            .iter()
            .filter(|e| matches!(e, Event::Refreshed { .. }))
            .count();
        assert_eq!(refreshed_events, 5);
    }
}

#[test]
fn a_failed_refresh_is_retried_then_the_relay_is_given_up_and_backed_off() {
    let mut s = with_two_relays();
    let relay = s.relays()[0];
    let n = (1..=4).find(|n| peer(*n) == relay).unwrap();
    s.advance(58 * MIN);
    assert_eq!(s.refreshes().len(), 2);
    s.fail(n, ReserveFailure::Unreachable);
    for _ in 0..3 {
        s.advance(10 * SEC);
        assert_eq!(s.refreshes(), vec![relay], "retried");
        s.fail(n, ReserveFailure::Refused);
    }
    assert_eq!(s.removed(), vec![(relay, RemovedReason::RefreshFailed)]);
    assert!(s.f.is_backed_off(&relay));
    // The other candidates aged out meanwhile: a new one replaces it.
    assert!(s.reserves().is_empty());
    s.identify(5, None);
    assert_eq!(s.reserves(), vec![peer(5)], "a replacement");
}

#[test]
fn an_unrefreshed_reservation_expires() {
    let mut s = with_two_relays();
    s.advance(58 * MIN);
    assert_eq!(s.refreshes().len(), 2);
    // Nobody answers the refreshes.
    s.advance(2 * MIN);
    let removed = s.removed();
    assert_eq!(removed.len(), 2);
    assert!(removed.iter().all(|(_, r)| *r == RemovedReason::Expired));
    assert!(s.relays().is_empty());
}

#[test]
fn a_static_relay_is_retried_with_backoff_for_ever() {
    // The waits: 1, 2, 4, ... 60 s at most.
    let mut s = Sim::new(FinderConfig::with_static_relays(vec![(peer(1), vec![])]));
    s.reserves();
    let mut got = vec![];
    for _ in 0..9 {
        s.fail(1, ReserveFailure::Refused);
        let due = s.f.poll_timeout().unwrap();
        got.push((due - s.now).as_secs());
        s.advance(due - s.now);
        assert_eq!(s.reserves(), vec![peer(1)]);
        assert_eq!(s.f.poll_timeout(), None, "reserving: the answer comes");
    }
    assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert!(!s.f.is_backed_off(&peer(1)));
    // Back: identified again, it is tried at once.
    s.fail(1, ReserveFailure::Unreachable);
    s.identify(1, None);
    assert_eq!(s.reserves(), vec![peer(1)]);
    s.grant(1, 60 * MIN);
    // Lost: retried after the first step, not dropped.
    s.f.handle_disconnected(s.now, peer(1));
    s.drain();
    s.advance(SEC);
    assert_eq!(s.reserves(), vec![peer(1)]);
    assert!(s
        .removed()
        .iter()
        .all(|(_, r)| *r == RemovedReason::Disconnected));
}

#[test]
fn a_peer_seen_only_through_a_relay_is_no_candidate() {
    let mut s = Sim::dynamic();
    s.advance(3 * MIN);
    let relayed = PeerInfo {
        direct: false,
        ..hop(None)
    };
    s.f.handle_identified(s.now, peer(1), relayed);
    s.drain();
    assert!(s.reserves().is_empty());
    assert_eq!(s.f.candidates().count(), 0);
    let no_hop = PeerInfo {
        supports_hop: false,
        ..hop(None)
    };
    s.f.handle_identified(s.now, peer(2), no_hop);
    s.drain();
    assert_eq!(s.f.candidates().count(), 0);
}

#[test]
fn the_closest_relay_is_chosen_despite_the_jitter() {
    for seed in 0..20u8 {
        let mut s = Sim::new(FinderConfig {
            desired_relays: 1,
            min_candidates: 3,
            rng_seed: [seed; 32],
            ..FinderConfig::default()
        });
        s.identify(1, Some(Duration::from_millis(300)));
        s.identify(2, Some(Duration::from_millis(10)));
        s.identify(3, None);
        assert_eq!(s.reserves(), vec![peer(2)], "seed {seed}");
    }
    // Random choice spreads over the candidates.
    let mut picked = vec![];
    for seed in 0..20u8 {
        let mut s = Sim::new(FinderConfig {
            desired_relays: 1,
            min_candidates: 3,
            choice: RelayChoice::Random,
            rng_seed: [seed; 32],
            ..FinderConfig::default()
        });
        for n in 1..=3 {
            s.identify(n, Some(Duration::from_millis(u64::from(n))));
        }
        picked.extend(s.reserves());
    }
    picked.sort();
    picked.dedup();
    assert_eq!(picked.len(), 3);
}

#[test]
fn relay_addresses_are_public_sorted_and_announced_only_on_change() {
    let mut s = Sim::new(FinderConfig::with_static_relays(vec![
        (peer(1), vec![]),
        (peer(2), vec![]),
    ]));
    s.reserves();
    let private = addr_of([192, 168, 1, 1], &peer(1));
    let public = addr_of([8, 8, 8, 1], &peer(1));
    let granted = Granted {
        expire: s.now + 60 * MIN,
        addrs: vec![private, public.clone(), public.clone()],
    };
    s.f.handle_reservation(s.now, peer(1), Ok(granted.clone()));
    s.grant(2, 60 * MIN);
    let announced: Vec<_> = s
        .events
        .iter()
        .filter_map(|e| match e {
            Event::AddrsChanged { addrs } => Some(addrs.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(announced.len(), 2);
    let last = announced.last().unwrap();
    assert_eq!(
        last.len(),
        2,
        "the private address is left out, the double collapsed"
    );
    assert!(last.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(s.f.addrs(), last.as_slice());
    // A refresh with the same addresses announces nothing.
    s.advance(58 * MIN);
    s.refreshes();
    let before = s.events.len();
    s.f.handle_reservation(
        s.now,
        peer(1),
        Ok(Granted {
            expire: s.now + 60 * MIN,
            ..granted
        }),
    );
    s.drain();
    assert!(s.events[before..]
        .iter()
        .all(|e| !matches!(e, Event::AddrsChanged { .. })));
}

#[test]
fn bad_configurations_are_refused() {
    let cases = [
        (
            FinderConfig {
                desired_relays: 0,
                ..FinderConfig::default()
            },
            FinderConfigError::NoRelaysDesired,
        ),
        (
            FinderConfig {
                min_candidates: 30,
                ..FinderConfig::default()
            },
            FinderConfigError::CandidateBounds,
        ),
        (
            FinderConfig::with_static_relays(vec![(peer(1), vec![]), (peer(1), vec![])]),
            FinderConfigError::DuplicateStaticRelay,
        ),
        (
            FinderConfig {
                static_retry: Duration::ZERO,
                ..FinderConfig::default()
            },
            FinderConfigError::StaticRetry,
        ),
    ];
    for (config, want) in cases {
        assert_eq!(Finder::new(Instant::ZERO, config).unwrap_err(), want);
    }
}
