//! The beater on a virtual clock, and the wire format.

use super::*;
use crate::identity::Keypair;
use alloc::vec;

fn peer(n: u8) -> PeerId {
    Keypair::from_secret_bytes([n; 32]).public().to_peer_id()
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

const SECOND: u64 = 1000;

/// `/ip4/10.0.0.1/tcp/4001`.
fn tcp() -> Vec<u8> {
    vec![0x04, 10, 0, 0, 1, 0x06, 0x0f, 0xa1]
}

fn target_of(p: PeerId) -> Vec<u8> {
    [tcp(), crate::relay::p2p_suffix(&p)].concat()
}

fn config() -> BeaterConfig {
    BeaterConfig::new(target_of(peer(2)))
}

fn beater(config: BeaterConfig) -> Beater {
    Beater::new(t(0), config, peer(1)).expect("a valid config")
}

fn actions(b: &mut Beater) -> Vec<Action> {
    core::iter::from_fn(|| b.poll_action()).collect()
}

fn events(b: &mut Beater) -> Vec<Event> {
    core::iter::from_fn(|| b.poll_event()).collect()
}

/// A beater whose stream opened at `at`, its first beat written, queues
/// drained.
fn open_at(config: BeaterConfig, at: u64) -> Beater {
    let mut b = beater(config);
    let _ = actions(&mut b);
    b.handle_connected(t(at));
    assert_eq!(actions(&mut b), vec![Action::Beat]);
    b.handle_written(t(at));
    let _ = events(&mut b);
    b
}

// ---------------------------------------------------------------------------
// Wire

#[test]
fn a_heartbeat_is_one_line_of_go_filecoins_json() {
    let hb = Heartbeat {
        head: "bafy-head".into(),
        height: 42,
        nickname: "boombot".into(),
        miner_address: "t01000".into(),
        genesis_cid: Some(Cid("bafy-genesis".into())),
        extra: serde_json::Map::new(),
    };
    let line = encode_line(&hb);
    assert_eq!(
        core::str::from_utf8(&line).unwrap(),
        "{\"Head\":\"bafy-head\",\"Height\":42,\"Nickname\":\"boombot\",\
         \"MinerAddress\":\"t01000\",\"GenesisCID\":{\"/\":\"bafy-genesis\"}}\n"
    );
    let back: Heartbeat = serde_json::from_slice(&line).unwrap();
    assert_eq!(back, hb);
}

#[test]
fn reading_is_lenient_as_gos_decoder_and_keeps_unknown_fields() {
    // Missing fields are empty, a plain-string CID and null are read, and
    // fields beyond go-filecoin's come back when written again.
    let hb: Heartbeat =
        serde_json::from_str("{\"Height\":3,\"GenesisCID\":\"bafy\",\"Peers\":12}").unwrap();
    assert_eq!(hb.height, 3);
    assert_eq!(hb.head, "");
    assert_eq!(hb.genesis_cid, Some(Cid("bafy".into())));
    assert_eq!(hb.extra.get("Peers"), Some(&serde_json::Value::from(12)));
    let again = encode_line(&hb);
    assert!(
        core::str::from_utf8(&again)
            .unwrap()
            .contains("\"Peers\":12"),
        "{again:?}"
    );
    let null: Heartbeat = serde_json::from_str("{\"GenesisCID\":null}").unwrap();
    assert_eq!(null.genesis_cid, None);
    assert!(serde_json::from_str::<Heartbeat>("[1,2]").is_err());
    assert!(serde_json::from_str::<Heartbeat>("{\"Height\":-1}").is_err());
}

#[test]
fn the_configured_nickname_fills_an_empty_one() {
    let mut c = config();
    c.nickname = "alerts".into();
    let b = beater(c);
    let line = b.encode(&Heartbeat::default());
    let back: Heartbeat = serde_json::from_slice(&line).unwrap();
    assert_eq!(back.nickname, "alerts");
    let own = Heartbeat {
        nickname: "mine".into(),
        ..Heartbeat::default()
    };
    let back: Heartbeat = serde_json::from_slice(&b.encode(&own)).unwrap();
    assert_eq!(back.nickname, "mine");
}

// ---------------------------------------------------------------------------
// Configuration

#[test]
fn bad_configs_are_refused_with_typed_errors() {
    let us = peer(1);
    let check = |c: BeaterConfig, want: BeaterConfigError| {
        assert_eq!(Beater::new(t(0), c, us).err(), Some(want));
    };
    check(BeaterConfig::new(Vec::new()), BeaterConfigError::NoTarget);
    check(BeaterConfig::new(tcp()), BeaterConfigError::NoPeerId);
    check(
        BeaterConfig::new(vec![0x04, 1, 2]),
        BeaterConfigError::InvalidTarget,
    );
    check(
        BeaterConfig::new(target_of(us)),
        BeaterConfigError::TargetIsSelf,
    );
    let mut c = config();
    c.period = Duration::ZERO;
    check(c, BeaterConfigError::Zero("period"));
    let mut c = config();
    c.reconnect = Duration::ZERO;
    check(c, BeaterConfigError::Zero("reconnect"));
    let mut c = config();
    c.write_timeout = Duration::ZERO;
    check(c, BeaterConfigError::Zero("write_timeout"));
    let mut c = config();
    c.reconnect_max = Duration::from_secs(5);
    check(c, BeaterConfigError::ReconnectMaxTooSmall);
    let mut c = config();
    c.jitter_percent = 101;
    check(c, BeaterConfigError::Jitter);
}

// ---------------------------------------------------------------------------
// Schedule

#[test]
fn the_first_dial_is_at_once_and_the_first_beat_when_the_stream_opens() {
    let mut b = beater(config());
    assert_eq!(
        actions(&mut b),
        vec![Action::Connect {
            peer: peer(2),
            addr: tcp()
        }]
    );
    b.handle_connected(t(700));
    assert_eq!(actions(&mut b), vec![Action::Beat]);
    b.handle_written(t(710));
    assert_eq!(
        events(&mut b),
        vec![Event::Connected, Event::BeatSent { count: 1 }]
    );
    assert!(b.is_connected());
    // Then one per period from the stream's opening.
    assert_eq!(b.poll_timeout(), Some(t(3700)));
    b.handle_timeout(t(3699));
    assert_eq!(actions(&mut b), vec![]);
    b.handle_timeout(t(3700));
    assert_eq!(actions(&mut b), vec![Action::Beat]);
    b.handle_written(t(3700));
    assert_eq!(b.poll_timeout(), Some(t(6700)));
    assert_eq!(b.beats_sent(), 2);
}

#[test]
fn beats_due_while_a_write_is_blocked_are_skipped_not_burst() {
    let mut b = open_at(config(), 0);
    b.handle_timeout(t(3 * SECOND));
    assert_eq!(actions(&mut b), vec![Action::Beat]);
    // The write does not complete; two more periods pass (within the
    // 10 s write deadline).
    b.handle_timeout(t(6 * SECOND));
    b.handle_timeout(t(9 * SECOND));
    assert_eq!(actions(&mut b), vec![], "no second beat while blocked");
    assert_eq!(
        events(&mut b),
        vec![
            Event::BeatsSkipped { skipped: 1 },
            Event::BeatsSkipped { skipped: 1 }
        ]
    );
    b.handle_written(t(9500));
    assert_eq!(events(&mut b), vec![Event::BeatSent { count: 2 }]);
    // The schedule keeps its phase: next at 12 s, one beat.
    assert_eq!(b.poll_timeout(), Some(t(12 * SECOND)));
}

#[test]
fn a_late_timer_sends_one_beat_and_counts_the_rest_as_skipped() {
    let mut b = open_at(config(), 0);
    // The event loop stalled for 10 periods.
    b.handle_timeout(t(30 * SECOND + 5));
    assert_eq!(actions(&mut b), vec![Action::Beat]);
    assert_eq!(events(&mut b), vec![Event::BeatsSkipped { skipped: 9 }]);
    b.handle_written(t(30 * SECOND + 5));
    assert_eq!(b.poll_timeout(), Some(t(33 * SECOND)));
}

#[test]
fn a_write_past_its_deadline_resets_the_stream_only_and_reconnects() {
    let mut b = open_at(config(), 0);
    b.handle_timeout(t(3 * SECOND));
    assert_eq!(actions(&mut b), vec![Action::Beat]);
    assert_eq!(b.poll_timeout(), Some(t(6 * SECOND)));
    b.handle_timeout(t(12 * SECOND)); // the beat at 6 and 9 s skipped
    let _ = events(&mut b);
    assert_eq!(b.poll_timeout(), Some(t(13 * SECOND)), "the write deadline");
    b.handle_timeout(t(13 * SECOND));
    assert_eq!(actions(&mut b), vec![Action::Reset]);
    assert_eq!(
        events(&mut b),
        vec![Event::Failed {
            level: Level::Warn,
            failure: Failure::WriteTimeout,
            outage: Duration::ZERO,
            failures: 1
        }]
    );
    assert!(!b.is_connected());
    // A write finishing after the reset changes nothing.
    b.handle_written(t(13 * SECOND));
    assert_eq!(b.beats_sent(), 1);
    // The redial after 10-15 s.
    let at = b.poll_timeout().unwrap();
    assert!(at >= t(23 * SECOND) && at <= t(28 * SECOND), "{at:?}");
    b.handle_timeout(at);
    assert!(matches!(actions(&mut b)[..], [Action::Connect { .. }]));
}

#[test]
fn a_connect_that_hangs_times_out() {
    let mut b = beater(config());
    let _ = actions(&mut b);
    assert_eq!(b.poll_timeout(), Some(t(30 * SECOND)));
    b.handle_timeout(t(30 * SECOND));
    assert_eq!(actions(&mut b), vec![Action::Reset]);
    assert!(matches!(
        events(&mut b)[..],
        [Event::Failed {
            failure: Failure::ConnectTimeout,
            ..
        }]
    ));
    // A late answer to the abandoned attempt is ignored.
    b.handle_connected(t(30 * SECOND + 1));
    assert!(!b.is_connected());
}

// ---------------------------------------------------------------------------
// Backoff

/// Fails every connect; returns the waits between attempts.
fn waits(config: BeaterConfig, n: usize) -> Vec<Duration> {
    let mut b = beater(config);
    let mut now = t(0);
    let mut out = Vec::new();
    for _ in 0..n {
        assert!(matches!(actions(&mut b)[..], [Action::Connect { .. }]));
        b.handle_connect_failed(now);
        let next = b.poll_timeout().unwrap();
        out.push(next.saturating_duration_since(now));
        now = next;
        b.handle_timeout(now);
    }
    out
}

#[test]
fn reconnects_back_off_exponentially_within_the_jitter_bounds() {
    let got = waits(config(), 12);
    let base = [10u64, 20, 40, 80, 160, 300, 300, 300, 300, 300, 300, 300];
    for (wait, base) in got.iter().zip(base) {
        let (lo, hi) = (Duration::from_secs(base), Duration::from_secs(base * 3 / 2));
        assert!(
            *wait >= lo && *wait <= hi,
            "{wait:?} not in {lo:?}..={hi:?}"
        );
    }
    // Without jitter, exactly the doubling.
    let mut c = config();
    c.jitter_percent = 0;
    let exact: Vec<u64> = waits(c, 7).iter().map(Duration::as_secs).collect();
    assert_eq!(exact, [10, 20, 40, 80, 160, 300, 300]);
}

#[test]
fn jitter_spreads_beaters_that_fail_together() {
    // 50 beaters with different seeds lose the aggregator at once: their
    // first redials spread over the jitter window instead of one instant.
    let firsts: Vec<Duration> = (0..50)
        .map(|seed| {
            let mut c = config();
            c.rng_seed = seed;
            waits(c, 1)[0]
        })
        .collect();
    let min = firsts.iter().min().unwrap();
    let max = firsts.iter().max().unwrap();
    assert!(*min >= Duration::from_secs(10));
    assert!(*max <= Duration::from_secs(15));
    assert!(
        *max - *min >= Duration::from_secs(3),
        "spread {min:?}..{max:?}"
    );
    let mut distinct = firsts.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 45, "{distinct:?}");
}

#[test]
fn a_beat_written_resets_the_backoff() {
    let mut c = config();
    c.jitter_percent = 0;
    let mut b = beater(c);
    let _ = actions(&mut b);
    b.handle_connect_failed(t(0));
    b.handle_timeout(t(10 * SECOND));
    let _ = actions(&mut b);
    b.handle_connect_failed(t(10 * SECOND));
    assert_eq!(b.poll_timeout(), Some(t(30 * SECOND)), "doubled");
    b.handle_timeout(t(30 * SECOND));
    let _ = actions(&mut b);
    b.handle_connected(t(30 * SECOND));
    let _ = actions(&mut b);
    b.handle_written(t(30 * SECOND));
    // One beat is not proof: a stream reset right after it keeps the
    // streak (a refusing aggregator).
    b.handle_stream_lost(t(31 * SECOND));
    assert_eq!(b.poll_timeout(), Some(t(71 * SECOND)), "doubled again");
    b.handle_timeout(t(71 * SECOND));
    let _ = actions(&mut b);
    b.handle_connected(t(71 * SECOND));
    let _ = actions(&mut b);
    b.handle_written(t(71 * SECOND));
    b.handle_timeout(t(74 * SECOND));
    let _ = actions(&mut b);
    b.handle_written(t(74 * SECOND));
    // A period of beats is: back to the base.
    b.handle_stream_lost(t(75 * SECOND));
    assert_eq!(b.poll_timeout(), Some(t(85 * SECOND)), "back to the base");
}

// ---------------------------------------------------------------------------
// Failure reporting

#[test]
fn an_outage_warns_at_once_errors_every_ten_minutes_and_ends_with_info() {
    let mut c = config();
    c.jitter_percent = 0;
    c.reconnect_max = Duration::from_secs(60);
    let mut b = open_at(c, 0);
    b.handle_stream_lost(t(5 * SECOND));
    let mut reports = Vec::new();
    let mut now = t(5 * SECOND);
    // Keep failing for 25 minutes.
    while now < t(25 * 60 * SECOND) {
        reports.extend(events(&mut b).into_iter().map(|e| (now, e)));
        now = b.poll_timeout().unwrap();
        b.handle_timeout(now);
        assert!(matches!(actions(&mut b)[..], [Action::Connect { .. }]));
        b.handle_connect_failed(now);
    }
    reports.extend(events(&mut b).into_iter().map(|e| (now, e)));
    let levels: Vec<(u64, Level)> = reports
        .iter()
        .map(|(at, e)| (at.as_nanos() / 1_000_000_000, e.level()))
        .collect();
    // Warn at the first failure; Error once 10 min have passed since the
    // last report, on the next failure (retries are a minute apart).
    assert_eq!(levels.len(), 3, "{reports:?}");
    assert_eq!(levels[0], (5, Level::Warn));
    assert_eq!(levels[1].1, Level::Error);
    assert!((605..=665).contains(&levels[1].0), "{levels:?}");
    assert_eq!(levels[2].1, Level::Error);
    assert!(levels[2].0 - levels[1].0 >= 600 && levels[2].0 - levels[1].0 <= 660);
    match &reports[1].1 {
        Event::Failed {
            outage, failures, ..
        } => {
            assert_eq!(*outage, Duration::from_secs(levels[1].0 - 5));
            assert!(*failures > 5, "{failures}");
        }
        e => panic!("{e:?}"),
    }
    // Recovery: Connected, and Info with the whole outage once a period
    // of beats went through.
    now = b.poll_timeout().unwrap();
    b.handle_timeout(now);
    let _ = actions(&mut b);
    b.handle_connected(now);
    let _ = actions(&mut b);
    b.handle_written(now);
    assert_eq!(
        events(&mut b),
        vec![Event::Connected, Event::BeatSent { count: 2 }]
    );
    assert!(b.outage_since().is_some());
    let opened = now;
    now += Duration::from_secs(3);
    b.handle_timeout(now);
    let _ = actions(&mut b);
    b.handle_written(now);
    let got = events(&mut b);
    assert_eq!(
        got,
        vec![
            Event::BeatSent { count: 3 },
            Event::Recovered {
                outage: opened.saturating_duration_since(t(5 * SECOND))
            }
        ]
    );
    assert_eq!(got[1].level(), Level::Info);
    assert_eq!(b.outage_since(), None);
    // The next failure warns again.
    b.handle_stream_lost(now + Duration::from_secs(1));
    assert!(matches!(
        events(&mut b)[..],
        [Event::Failed {
            level: Level::Warn,
            failures: 1,
            ..
        }]
    ));
}

#[test]
fn poll_timeout_is_never_in_the_past_after_handle_timeout() {
    let mut b = open_at(config(), 0);
    for ms in [100, 2999, 3000, 3001, 9000, 12_500, 13_000, 40_000] {
        b.handle_timeout(t(ms));
        let _ = actions(&mut b);
        let _ = events(&mut b);
        assert!(b.poll_timeout().unwrap() > t(ms), "at {ms}");
    }
}
