//! The connection manager on a virtual clock: go-libp2p's behaviour
//! replayed, and each point where this one departs from it.

use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use super::*;
use crate::Keypair;

const SEC: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(60);
const T0: Instant = Instant::ZERO;

fn peer(n: u8) -> PeerId {
    Keypair::from_secret_bytes([n; 32]).peer_id()
}

fn config(low: usize, high: usize) -> ConnManagerConfig {
    ConnManagerConfig::with_watermarks(low, high)
}

fn cm(low: usize, high: usize) -> ConnManager<u32> {
    ConnManager::new(T0, config(low, high)).unwrap()
}

/// The connections asked to close, in order.
fn closes(cm: &mut ConnManager<u32>) -> Vec<u32> {
    let actions: Vec<_> = core::iter::from_fn(|| cm.poll_action()).collect();
    actions
        .into_iter()
        .map(|Action::Close { conn, peer }| {
            assert_eq!(cm.peer_of(&conn), Some(peer));
            conn
        })
        .collect()
}

fn events(cm: &mut ConnManager<u32>) -> Vec<Event> {
    core::iter::from_fn(|| cm.poll_event()).collect()
}

fn trimmed(cause: TrimCause, closed: usize, before: usize, after: usize) -> Event {
    Event::Trimmed {
        cause,
        closed,
        count_before: before,
        count_after: after,
    }
}

/// `conns` in the trim order of connections tied on everything but their
/// peer: by peer id.
fn by_peer(conns: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut v: Vec<u32> = conns.into_iter().collect();
    v.sort_by_key(|&c| peer(c as u8));
    v
}

/// Connects `conn` to `peer(conn)`, inbound.
fn connect(cm: &mut ConnManager<u32>, now: Instant, conns: impl IntoIterator<Item = u32>) {
    for c in conns {
        cm.handle_connected(now, c, peer(c as u8), true);
    }
}

#[test]
fn go_defaults() {
    let c = ConnManagerConfig::default();
    // go-libp2p defaults.go: connmgr.NewConnManager(160, 192); connmgr.go:
    // gracePeriod time.Minute, silencePeriod 10 s; decay.go: resolution 1 min.
    assert_eq!((c.low_water, c.high_water), (160, 192));
    assert_eq!(c.grace_period, GRACE);
    assert_eq!(c.silence_period, 10 * SEC);
    assert_eq!(c.decay_resolution, GRACE);
    assert!(ConnManager::<u32>::new(T0, c).is_ok());
}

#[test]
fn config_errors() {
    let err = |c: ConnManagerConfig| ConnManager::<u32>::new(T0, c).unwrap_err();
    assert_eq!(err(config(0, 5)), ConnManagerConfigError::Watermarks);
    assert_eq!(err(config(6, 5)), ConnManagerConfigError::Watermarks);
    assert!(ConnManager::<u32>::new(T0, config(5, 5)).is_ok());
    let mut c = config(1, 2);
    c.silence_period = Duration::ZERO;
    assert_eq!(err(c), ConnManagerConfigError::ZeroPeriod);
    let mut c = config(1, 2);
    c.decay_resolution = Duration::ZERO;
    assert_eq!(err(c), ConnManagerConfigError::ZeroPeriod);
    let mut c = config(1, 2);
    c.max_tags_per_peer = 0;
    assert_eq!(err(c), ConnManagerConfigError::ZeroBound);
    let mut c = config(1, 2);
    c.max_tag_len = 0;
    assert_eq!(err(c), ConnManagerConfigError::ZeroBound);
    // A zero grace period is allowed (go: "must be non-negative").
    let mut c = config(1, 2);
    c.grace_period = Duration::ZERO;
    assert!(ConnManager::<u32>::new(T0, c).is_ok());
}

#[test]
fn at_high_water_nothing_happens_above_it_trims_to_low_water() {
    let mut cm = cm(3, 5);
    connect(&mut cm, T0, 1..=5);
    let t1 = T0 + GRACE;
    cm.handle_timeout(t1);
    assert_eq!(
        closes(&mut cm),
        Vec::<u32>::new(),
        "5 is not above high water"
    );
    assert_eq!(cm.poll_timeout(), None);
    // The sixth passes high water: three old ones go, at once.
    connect(&mut cm, t1, [6]);
    assert_eq!(closes(&mut cm).len(), 3);
    assert_eq!(
        events(&mut cm),
        vec![trimmed(TrimCause::HighWater, 3, 6, 3)]
    );
    assert_eq!(cm.connection_count(), 6);
    assert_eq!(cm.closing_count(), 3);
    assert_eq!(cm.active_count(), 3);
    assert_eq!(cm.last_trim(), Some(t1));
}

#[test]
fn protected_peers_are_never_closed() {
    let mut cm = cm(1, 2);
    connect(&mut cm, T0, 1..=4);
    cm.protect(peer(1), "a").unwrap();
    cm.protect(peer(2), "b").unwrap();
    cm.protect(peer(2), "c").unwrap();
    cm.handle_timeout(T0 + GRACE);
    // Down to 2, not 1: the protected two stay.
    assert_eq!(closes(&mut cm), by_peer([3, 4]));
    assert_eq!(
        events(&mut cm),
        vec![trimmed(TrimCause::HighWater, 2, 4, 2)]
    );
    assert!(cm.is_protected(&peer(2)));
    assert!(cm.is_protected_by(&peer(2), "b"));
    assert!(!cm.is_protected_by(&peer(2), "a"));
    // go's Unprotect: whether another tag still protects.
    assert!(cm.unprotect(&peer(2), "b"));
    assert!(!cm.unprotect(&peer(2), "c"));
    assert!(!cm.unprotect(&peer(2), "c"));
    assert!(!cm.is_protected(&peer(2)));
}

#[test]
fn unprotecting_starts_a_due_trim_at_the_latest_now() {
    let mut cm = cm(1, 2);
    connect(&mut cm, T0, 1..=3);
    for n in 1..=3 {
        cm.protect(peer(n), "keep").unwrap();
    }
    let t1 = T0 + 100 * SEC;
    cm.handle_timeout(t1);
    assert_eq!(closes(&mut cm), Vec::<u32>::new());
    assert_eq!(cm.poll_timeout(), None, "nothing could ever be closed");
    cm.unprotect(&peer(3), "keep");
    assert_eq!(closes(&mut cm), vec![3]);
    assert_eq!(cm.last_trim(), Some(t1));
}

#[test]
fn young_connections_are_never_closed_and_their_grace_end_is_the_timeout() {
    let mut cm = cm(2, 4);
    connect(&mut cm, T0, 1..=3);
    let t1 = T0 + 30 * SEC;
    connect(&mut cm, t1, 4..=6);
    // 6 > 4, none is a minute old: nothing yet, a wake-up at the first
    // grace end.
    assert_eq!(closes(&mut cm), Vec::<u32>::new());
    assert_eq!(cm.poll_timeout(), Some(T0 + GRACE));
    cm.handle_timeout(T0 + GRACE);
    // Target 4, but only the three old ones may go.
    assert_eq!(closes(&mut cm), by_peer(1..=3));
    assert_eq!(
        events(&mut cm),
        vec![trimmed(TrimCause::HighWater, 3, 6, 3)]
    );
    assert_eq!(cm.poll_timeout(), None, "3 is not above high water");
}

#[test]
fn a_trim_waits_for_the_silence_period() {
    let mut cm = cm(2, 3);
    connect(&mut cm, T0, 1..=4);
    let t1 = T0 + GRACE;
    cm.handle_timeout(t1);
    assert_eq!(closes(&mut cm).len(), 2);
    // Old connections arrive again: the count passes high water 1 s later.
    connect(&mut cm, t1 + SEC, 5..=6);
    cm.handle_timeout(t1 + 2 * GRACE);
    assert_eq!(closes(&mut cm).len(), 2);
    let t2 = t1 + 2 * GRACE;
    connect(&mut cm, t2, 7..=8);
    // 4 active, two old: due, but silenced until t2 + 10 s.
    assert_eq!(closes(&mut cm), Vec::<u32>::new());
    assert_eq!(cm.poll_timeout(), Some(t2 + 10 * SEC));
    cm.handle_timeout(t2 + 9 * SEC);
    assert_eq!(closes(&mut cm), Vec::<u32>::new());
    cm.handle_timeout(t2 + 10 * SEC);
    assert_eq!(closes(&mut cm).len(), 2);
    // An explicit trim respects it too.
    connect(&mut cm, t2 + 10 * SEC, 9..=10);
    assert_eq!(
        cm.trim_now(t2 + 11 * SEC),
        Err(TrimError::Silenced {
            until: t2 + 20 * SEC
        })
    );
}

#[test]
fn trim_now_closes_down_to_low_water_below_high_water() {
    let mut cm = cm(2, 10);
    connect(&mut cm, T0, 1..=5);
    assert_eq!(cm.trim_now(T0 + SEC), Err(TrimError::NothingToTrim));
    assert_eq!(
        cm.last_trim(),
        None,
        "a trim that closed nothing is no trim"
    );
    assert_eq!(cm.trim_now(T0 + GRACE), Ok(3));
    assert_eq!(closes(&mut cm), by_peer(1..=5)[..3]);
    assert_eq!(
        events(&mut cm),
        vec![trimmed(TrimCause::Requested, 3, 5, 2)]
    );
    assert_eq!(
        cm.trim_now(T0 + GRACE + 10 * SEC),
        Err(TrimError::NothingToTrim),
        "at low water"
    );
}

#[test]
fn tags_and_weights_make_the_order() {
    let mut cm = cm(1, 3);
    connect(&mut cm, T0, 1..=4);
    cm.tag_peer(peer(1), "a", 5).unwrap();
    cm.tag_peer(peer(1), "b", 5).unwrap();
    cm.tag_peer(peer(2), "a", 30).unwrap();
    cm.tag_peer(peer(3), "a", -4).unwrap();
    cm.tag_peer(peer(4), "a", 20).unwrap();
    // Retagging replaces; upsert sees the old weight; untag removes.
    cm.tag_peer(peer(4), "a", 25).unwrap();
    assert_eq!(cm.upsert_tag(peer(4), "a", |w| w - 20), Ok(5));
    assert_eq!(cm.upsert_tag(peer(4), "new", |w| w + 3), Ok(3));
    assert!(cm.untag_peer(&peer(4), "new"));
    assert!(!cm.untag_peer(&peer(4), "new"));
    assert_eq!(cm.peer_value(&peer(1)), Some(10));
    assert_eq!(cm.peer_value(&peer(4)), Some(5));
    assert_eq!(cm.peer_value(&peer(9)), None);
    assert_eq!(
        cm.tags(&peer(1)).collect::<Vec<_>>(),
        vec![("a", 5), ("b", 5)]
    );
    cm.handle_timeout(T0 + GRACE);
    // -4, 5, 10 go; 30 stays.
    assert_eq!(closes(&mut cm), vec![3, 4, 1]);
}

#[test]
fn inbound_before_outbound_at_equal_value() {
    let mut cm = cm(1, 2);
    cm.handle_connected(T0, 1, peer(1), false);
    cm.handle_connected(T0, 2, peer(2), true);
    cm.handle_connected(T0, 3, peer(3), false);
    cm.handle_connected(T0, 4, peer(4), true);
    cm.tag_peer(peer(4), "x", 1).unwrap();
    cm.handle_timeout(T0 + GRACE);
    // Value 0 first (inbound 2, then outbound 1, 3), then value 1.
    let mut expected = vec![2];
    expected.extend(by_peer([1, 3]));
    assert_eq!(closes(&mut cm), expected);
}

#[test]
fn ties_break_newer_first_then_by_peer_then_by_key() {
    let mut cm = cm(1, 2);
    // Peer 3 older; then peers 2 and 1 at the same instant, two
    // connections for peer 1.
    cm.handle_connected(T0, 30, peer(3), true);
    let t1 = T0 + SEC;
    cm.handle_connected(t1, 21, peer(2), true);
    cm.handle_connected(t1, 12, peer(1), true);
    cm.handle_connected(t1, 11, peer(1), true);
    cm.handle_timeout(t1 + GRACE);
    let mut order = [(peer(1), 11), (peer(1), 12), (peer(2), 21)];
    order.sort();
    let expected: Vec<u32> = order.iter().map(|(_, c)| *c).collect();
    // The newest three (same instant: by peer id, then key); the oldest stays.
    assert_eq!(closes(&mut cm), expected);
    assert_eq!(cm.active_count(), 1);
    // The same inputs, the same order: no hash or iteration order leaks in.
    let mut again = cm_with(|cm| {
        cm.handle_connected(T0, 30, peer(3), true);
        cm.handle_connected(t1, 11, peer(1), true);
        cm.handle_connected(t1, 21, peer(2), true);
        cm.handle_connected(t1, 12, peer(1), true);
    });
    again.handle_timeout(t1 + GRACE);
    assert_eq!(closes(&mut again), expected);
}

fn cm_with(f: impl FnOnce(&mut ConnManager<u32>)) -> ConnManager<u32> {
    let mut c = cm(1, 2);
    f(&mut c);
    c
}

#[test]
fn a_closing_connection_is_not_counted_nor_closed_twice() {
    let mut cm = cm(2, 3);
    connect(&mut cm, T0, 1..=4);
    let t1 = T0 + GRACE;
    cm.handle_timeout(t1);
    let first = closes(&mut cm);
    assert_eq!(first, by_peer(1..=4)[..2]);
    // Not reported closed yet; new connections: the count of active ones
    // (2 + 2) passes high water again.
    connect(&mut cm, t1, 5..=6);
    cm.handle_timeout(t1 + 2 * GRACE);
    let second = closes(&mut cm);
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|c| !first.contains(c)));
    assert_eq!(cm.closing_count(), 4);
    cm.handle_disconnected(t1 + 2 * GRACE, first[0]);
    assert_eq!(cm.closing_count(), 3);
    assert_eq!(cm.connection_count(), 5);
}

#[test]
fn disconnect_drops_tags_and_decaying_values_but_not_protection() {
    let mut cm = cm(1, 2);
    cm.handle_connected(T0, 1, peer(1), true);
    cm.handle_connected(T0, 2, peer(1), false);
    cm.tag_peer(peer(1), "a", 3).unwrap();
    cm.protect(peer(1), "p").unwrap();
    let d = cm
        .register_decaying(T0, "d", GRACE, DecayFn::None, BumpFn::Sum)
        .unwrap();
    cm.bump(T0, d, peer(1), 4).unwrap();
    cm.handle_disconnected(T0 + SEC, 1);
    assert_eq!(cm.peer_value(&peer(1)), Some(7), "one connection left");
    let info: Vec<_> = cm.connections(&peer(1)).collect();
    assert_eq!(
        info,
        vec![ConnInfo {
            conn: 2,
            inbound: false,
            opened: T0,
            closing: false
        }]
    );
    cm.handle_disconnected(T0 + SEC, 2);
    assert_eq!(cm.peer_count(), 0);
    assert_eq!(cm.peer_value(&peer(1)), None);
    assert_eq!(cm.tags(&peer(1)).count(), 0);
    assert_eq!(cm.decaying_value(d, &peer(1)), None);
    assert!(cm.is_protected(&peer(1)));
    // Back: no tags, still protected.
    cm.handle_connected(T0 + 2 * SEC, 3, peer(1), true);
    assert_eq!(cm.peer_value(&peer(1)), Some(0));
    // Unknown and duplicate reports are ignored.
    cm.handle_disconnected(T0 + 2 * SEC, 99);
    cm.handle_connected(T0 + 2 * SEC, 3, peer(2), true);
    assert_eq!(cm.peer_of(&3), Some(peer(1)));
    assert_eq!(cm.connection_count(), 1);
}

#[test]
fn tag_and_protect_errors() {
    let mut c = config(1, 2);
    c.max_tags_per_peer = 2;
    c.max_tag_len = 4;
    c.max_protected_peers = 1;
    let mut cm: ConnManager<u32> = ConnManager::new(T0, c).unwrap();
    assert_eq!(cm.tag_peer(peer(1), "a", 1), Err(TagError::NotConnected));
    connect(&mut cm, T0, [1]);
    cm.tag_peer(peer(1), "a", 1).unwrap();
    cm.tag_peer(peer(1), "b", 1).unwrap();
    assert_eq!(cm.tag_peer(peer(1), "c", 1), Err(TagError::TooManyTags));
    cm.tag_peer(peer(1), "b", 2).unwrap();
    assert_eq!(cm.tag_peer(peer(1), "abcde", 1), Err(TagError::NameTooLong));
    // Protection works without a connection, within its bounds.
    cm.protect(peer(5), "x").unwrap();
    cm.protect(peer(5), "y").unwrap();
    cm.protect(peer(5), "y").unwrap();
    assert_eq!(cm.protect(peer(5), "z"), Err(ProtectError::TooManyTags));
    assert_eq!(cm.protect(peer(6), "x"), Err(ProtectError::TooManyPeers));
    assert_eq!(cm.protect(peer(5), "abcde"), Err(ProtectError::NameTooLong));
    assert_eq!(cm.protected_count(), 1);
}

#[test]
fn decaying_tags_decay_bump_and_expire() {
    let mut cm = cm(1, 10);
    connect(&mut cm, T0, 1..=2);
    let min = GRACE;
    let fixed = cm
        .register_decaying(T0, "fixed", min, DecayFn::Fixed(3), BumpFn::Sum)
        .unwrap();
    let half = cm
        .register_decaying(
            T0,
            "half",
            2 * min,
            DecayFn::Linear { num: 1, den: 2 },
            BumpFn::SumBounded { min: 0, max: 100 },
        )
        .unwrap();
    let idle = cm
        .register_decaying(
            T0,
            "idle",
            min,
            DecayFn::ExpireAfter(3 * min),
            BumpFn::Overwrite,
        )
        .unwrap();
    assert_eq!(cm.decaying_tag(half), Some(("half", 2 * min)));
    assert_eq!(cm.bump(T0, fixed, peer(1), 7), Ok(7));
    assert_eq!(cm.bump(T0, fixed, peer(1), 1), Ok(8));
    assert_eq!(cm.bump(T0, half, peer(1), 150), Ok(100), "bounded");
    assert_eq!(cm.bump(T0, idle, peer(1), 9), Ok(9));
    assert_eq!(cm.bump(T0, idle, peer(1), 4), Ok(4), "overwritten");
    assert_eq!(cm.peer_value(&peer(1)), Some(8 + 100 + 4));
    assert_eq!(cm.poll_timeout(), Some(T0 + min));

    cm.handle_timeout(T0 + min);
    assert_eq!(cm.decaying_value(fixed, &peer(1)), Some(5));
    assert_eq!(cm.decaying_value(half, &peer(1)), Some(100), "not its tick");
    cm.handle_timeout(T0 + 2 * min);
    assert_eq!(cm.decaying_value(fixed, &peer(1)), Some(2));
    assert_eq!(cm.decaying_value(half, &peer(1)), Some(50));
    // A bump keeps the idle one alive.
    assert_eq!(cm.bump(T0 + 2 * min, idle, peer(1), 6), Ok(6));
    cm.handle_timeout(T0 + 3 * min);
    assert_eq!(
        cm.decaying_value(fixed, &peer(1)),
        None,
        "2 - 3 <= 0: removed"
    );
    cm.handle_timeout(T0 + 4 * min);
    assert_eq!(cm.decaying_value(half, &peer(1)), Some(25));
    assert_eq!(cm.decaying_value(idle, &peer(1)), Some(6));
    // 3 min after its last bump (at 2 min): expired.
    cm.handle_timeout(T0 + 5 * min - SEC);
    assert_eq!(cm.decaying_value(idle, &peer(1)), Some(6));
    cm.handle_timeout(T0 + 5 * min);
    assert_eq!(cm.decaying_value(idle, &peer(1)), None, "expired");
    // Removal and close.
    cm.bump(T0 + 7 * min, fixed, peer(2), 10).unwrap();
    assert!(cm.remove_decaying(fixed, &peer(2)));
    assert!(!cm.remove_decaying(fixed, &peer(2)));
    assert!(cm.close_decaying(half));
    assert!(!cm.close_decaying(half));
    assert_eq!(cm.decaying_value(half, &peer(1)), None);
    assert_eq!(
        cm.bump(T0 + 7 * min, half, peer(1), 1),
        Err(TagError::UnknownTag)
    );
    assert_eq!(
        cm.bump(T0 + 7 * min, fixed, peer(9), 1),
        Err(TagError::NotConnected)
    );
    assert_eq!(cm.decaying_tag_count(), 2);
}

#[test]
fn decaying_intervals_are_at_least_the_resolution_and_names_unique() {
    let mut c = config(1, 2);
    c.max_decaying_tags = 2;
    c.max_tag_len = 8;
    let mut cm: ConnManager<u32> = ConnManager::new(T0, c).unwrap();
    let t = cm
        .register_decaying(T0, "a", SEC, DecayFn::None, BumpFn::Sum)
        .unwrap();
    assert_eq!(cm.decaying_tag(t), Some(("a", GRACE)));
    let reg = |cm: &mut ConnManager<u32>, name: &str, d: DecayFn, b: BumpFn| {
        cm.register_decaying(T0, name, GRACE, d, b)
    };
    let ok = (DecayFn::None, BumpFn::Sum);
    assert_eq!(reg(&mut cm, "a", ok.0, ok.1), Err(RegisterError::Exists));
    assert_eq!(
        reg(&mut cm, "b", DecayFn::Linear { num: 1, den: 0 }, ok.1),
        Err(RegisterError::InvalidDecay)
    );
    assert_eq!(
        reg(&mut cm, "b", ok.0, BumpFn::SumBounded { min: 2, max: 1 }),
        Err(RegisterError::InvalidBump)
    );
    assert_eq!(
        reg(&mut cm, "too long!", ok.0, ok.1),
        Err(RegisterError::NameTooLong)
    );
    let b = reg(&mut cm, "b", ok.0, ok.1).unwrap();
    assert_eq!(reg(&mut cm, "c", ok.0, ok.1), Err(RegisterError::TooMany));
    // A closed name is free again; the old handle stays dead.
    assert!(cm.close_decaying(b));
    let b2 = reg(&mut cm, "b", ok.0, ok.1).unwrap();
    assert_ne!(b, b2);
    assert_eq!(cm.decaying_tag(b), None);
}

#[test]
fn a_long_pause_applies_at_most_the_catch_up_bound() {
    let mut cm = cm(1, 10);
    connect(&mut cm, T0, [1]);
    let t = cm
        .register_decaying(T0, "f", GRACE, DecayFn::Fixed(1), BumpFn::Sum)
        .unwrap();
    cm.bump(T0, t, peer(1), 1000).unwrap();
    // 10 ticks due: all applied.
    cm.handle_timeout(T0 + 10 * GRACE);
    assert_eq!(cm.decaying_value(t, &peer(1)), Some(990));
    // 1000 more due: the last 64 only, and the schedule stays on its grid.
    let t1 = T0 + 1010 * GRACE;
    cm.handle_timeout(t1);
    assert_eq!(
        cm.decaying_value(t, &peer(1)),
        Some(990 - MAX_DECAY_CATCH_UP as i32)
    );
    assert_eq!(cm.poll_timeout(), Some(t1 + GRACE));
}

#[test]
fn decay_changes_the_order() {
    let mut cm = cm(1, 2);
    connect(&mut cm, T0, 1..=3);
    let d = cm
        .register_decaying(T0, "d", GRACE, DecayFn::Fixed(10), BumpFn::Sum)
        .unwrap();
    cm.tag_peer(peer(1), "t", 5).unwrap();
    cm.bump(T0, d, peer(2), 15).unwrap();
    cm.bump(T0, d, peer(3), 12).unwrap();
    // At the first tick (also the grace end) 2 has 5, 3 has 2, 1 has 5.
    cm.handle_timeout(T0 + GRACE);
    assert_eq!(cm.peer_value(&peer(3)), Some(2));
    let mut rest = [(peer(1), 1u32), (peer(2), 2)];
    rest.sort();
    assert_eq!(closes(&mut cm), vec![3, rest[0].1]);
}

#[test]
fn time_never_goes_backwards_and_poll_timeout_is_never_in_the_past() {
    let mut cm = cm(1, 2);
    connect(&mut cm, T0 + GRACE, 1..=3);
    // An older `now` counts as the latest.
    cm.handle_timeout(T0);
    assert_eq!(cm.poll_timeout(), Some(T0 + 2 * GRACE));
    cm.handle_connected(T0, 4, peer(4), true);
    let c: Vec<_> = cm.connections(&peer(4)).collect();
    assert_eq!(c[0].opened, T0 + GRACE);
    // A spurious timeout is harmless.
    cm.handle_timeout(T0 + GRACE);
    assert_eq!(closes(&mut cm), Vec::<u32>::new());
}
