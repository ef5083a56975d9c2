//! Virtual-clock scenarios for the [`Dialer`].

use super::*;
use crate::dial::test_util::{addr, peer};
use alloc::string::String;
use alloc::vec;
use std::format;

const MS: fn(u64) -> Duration = Duration::from_millis;

/// A dialer on a virtual clock that records every output.
struct Sim {
    d: Dialer,
    now: Instant,
    actions: Vec<(Instant, Action)>,
    events: Vec<(Instant, Event)>,
}

impl Sim {
    fn new() -> Self {
        Self::with(DialerConfig::default())
    }

    fn with(config: DialerConfig) -> Self {
        Sim {
            d: Dialer::new(peer(0), config).unwrap(),
            now: Instant::ZERO,
            actions: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.d.poll_action() {
            self.actions.push((self.now, a));
        }
        while let Some(e) = self.d.poll_event() {
            self.events.push((self.now, e));
        }
    }

    /// Moves the clock to `t`, firing every timer on the way.
    fn run_until(&mut self, t: Instant) {
        while let Some(at) = self.d.poll_timeout() {
            if at > t {
                break;
            }
            self.now = self.now.max(at);
            self.d.handle_timeout(self.now);
            self.drain();
        }
        self.now = self.now.max(t);
        // Spurious calls are harmless.
        self.d.handle_timeout(self.now);
        self.drain();
    }

    fn at(&mut self, ms: u64) {
        self.run_until(Instant::from_millis(ms));
    }

    fn dial(&mut self, p: u64, addrs: &[&str], opts: DialOpts) -> RequestId {
        let r = self
            .d
            .dial(self.now, peer(p), addrs.iter().map(|s| addr(s)), opts)
            .unwrap();
        self.drain();
        r
    }

    /// Dial actions so far, as (time in ms, address text).
    fn dials(&self) -> Vec<(u64, Addr)> {
        self.actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Dial { addr, .. } => Some((t.as_nanos() / 1_000_000, addr.clone())),
                _ => None,
            })
            .collect()
    }

    fn attempt_for(&self, a: &str) -> AttemptId {
        let a = addr(a);
        self.actions
            .iter()
            .rev()
            .find_map(|(_, x)| match x {
                Action::Dial { attempt, addr, .. } if *addr == a => Some(*attempt),
                _ => None,
            })
            .expect("dialed")
    }

    fn cancelled(&self) -> Vec<AttemptId> {
        self.actions
            .iter()
            .filter_map(|(_, a)| match a {
                Action::CancelAttempt { attempt } => Some(*attempt),
                _ => None,
            })
            .collect()
    }

    fn succeed(&mut self, a: &str, conn: u64) {
        let id = self.attempt_for(a);
        self.d
            .handle_dial_succeeded(self.now, id, ConnectionRef(conn))
            .unwrap();
        self.drain();
    }

    fn fail(&mut self, a: &str, e: FailureClass) {
        let id = self.attempt_for(a);
        self.d.handle_dial_failed(self.now, id, e).unwrap();
        self.drain();
    }

    fn connected(&mut self, a: &str) {
        let id = self.attempt_for(a);
        self.d.handle_dial_connected(self.now, id).unwrap();
        self.drain();
    }

    fn result(&self, r: RequestId) -> (Instant, Result<ConnectionRef, DialError>) {
        let mut found = self.events.iter().filter_map(|(t, e)| match e {
            Event::RequestDone {
                request, result, ..
            } if *request == r => Some((*t, result.clone())),
            _ => None,
        });
        let first = found.next().expect("request answered");
        assert!(found.next().is_none(), "request answered twice");
        first
    }
}

const Q6: &str = "/ip6/2604:1380::1/udp/4001/quic-v1";
const Q4: &str = "/ip4/1.2.3.4/udp/4001/quic-v1";
const T6: &str = "/ip6/2604:1380::1/tcp/4001";
const T4: &str = "/ip4/1.2.3.4/tcp/4001";

#[test]
fn first_quic_address_hangs_while_the_second_succeeds() {
    let mut s = Sim::new();
    let r = s.dial(1, &[T4, Q4, Q6], DialOpts::default());
    assert_eq!(s.dials(), vec![(0, addr(Q6))]);
    s.at(249);
    assert_eq!(s.dials().len(), 1);
    s.at(250);
    assert_eq!(s.dials(), vec![(0, addr(Q6)), (250, addr(Q4))]);
    s.at(400);
    s.succeed(Q4, 9);
    assert_eq!(
        s.result(r),
        (Instant::from_millis(400), Ok(ConnectionRef(9)))
    );
    // The hanging IPv6 attempt is cancelled, TCP was never dialed, and the
    // cancellation adds no backoff.
    assert_eq!(s.cancelled(), vec![s.attempt_for(Q6)]);
    assert_eq!(s.dials().len(), 2);
    assert!(s.d.backoff().is_empty());
    assert_eq!(
        (s.d.workers(), s.d.attempts(), s.d.limiter().len()),
        (0, 0, 0)
    );
    // A late result for the cancelled attempt is refused.
    let late = s.attempt_for(Q6);
    assert_eq!(
        s.d.handle_dial_failed(s.now, late, FailureClass::Timeout),
        Err(DialerError::UnknownAttempt(late))
    );
    assert!(s.d.poll_timeout().is_none());
}

#[test]
fn a_silent_attempt_times_out_and_the_next_batch_follows() {
    let mut s = Sim::new();
    let r = s.dial(1, &[Q6, Q4], DialOpts::default());
    s.at(250);
    // Q4 refused at 300 ms (backed off): nothing new to dial, Q6 keeps going.
    s.at(300);
    s.fail(Q4, FailureClass::Refused);
    assert!(s.d.backoff().is_backed_off(s.now, &peer(1), &addr(Q4)));
    s.at(14_999);
    assert!(s.cancelled().is_empty());
    s.at(15_000);
    assert_eq!(s.cancelled(), vec![s.attempt_for(Q6)]);
    let (t, res) = s.result(r);
    assert_eq!(t, Instant::from_millis(15_000));
    let err = res.unwrap_err();
    assert_eq!(err.cause, DialErrorCause::AllDialsFailed);
    assert_eq!(
        err.errors,
        vec![
            (addr(Q4), AddrFailure::Attempt(FailureClass::Refused)),
            (addr(Q6), AddrFailure::TimedOut)
        ]
    );
    // The timeout backs off too (it is not a cancellation).
    assert!(s.d.backoff().is_backed_off(s.now, &peer(1), &addr(Q6)));
}

#[test]
fn private_addresses_time_out_after_5_seconds() {
    let mut s = Sim::new();
    let r = s.dial(1, &["/ip4/192.168.1.2/tcp/1"], DialOpts::default());
    s.at(5_000);
    assert_eq!(s.result(r).0, Instant::from_millis(5_000));
    assert_eq!(s.cancelled().len(), 1);
}

#[test]
fn a_tcp_handshake_holds_the_next_batch() {
    // T6 at 0, T4 due at 250 ms; T6's handshake at 200 ms holds until 450.
    let mut s = Sim::new();
    let r = s.dial(1, &[T6, T4], DialOpts::default());
    s.at(200);
    s.connected(T6);
    s.at(449);
    assert_eq!(s.dials(), vec![(0, addr(T6))]);
    s.at(450);
    assert_eq!(s.dials(), vec![(0, addr(T6)), (450, addr(T4))]);
    s.succeed(T6, 1);
    assert!(s.result(r).1.is_ok());

    // The upgrade completes inside the hold: the second address is never dialed.
    let mut s = Sim::new();
    let r = s.dial(1, &[T6, T4], DialOpts::default());
    s.at(200);
    s.connected(T6);
    s.at(400);
    s.succeed(T6, 1);
    s.at(2_000);
    assert_eq!(s.dials(), vec![(0, addr(T6))]);
    assert_eq!(s.result(r).1, Ok(ConnectionRef(1)));

    // The upgrade fails inside the hold: nothing in flight, dial at once.
    let mut s = Sim::new();
    s.dial(1, &[T6, T4], DialOpts::default());
    s.at(200);
    s.connected(T6);
    s.at(300);
    s.fail(T6, FailureClass::Upgrade);
    assert_eq!(s.dials(), vec![(0, addr(T6)), (300, addr(T4))]);

    // A private handshake holds nothing.
    let mut s = Sim::new();
    s.dial(
        1,
        &["/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.1/tcp/2"],
        DialOpts::default(),
    );
    s.at(10);
    s.connected("/ip4/10.0.0.1/tcp/1");
    s.at(30);
    assert_eq!(s.dials().len(), 2);
}

#[test]
fn ten_concurrent_requests_join_one_worker() {
    let mut s = Sim::new();
    let reqs: Vec<RequestId> = (0..10)
        .map(|i| {
            s.at(i * 10);
            s.dial(1, &[Q6, Q4, T4], DialOpts::default())
        })
        .collect();
    assert_eq!(s.d.workers(), 1);
    assert_eq!(s.d.pending_requests(), 10);
    s.at(260);
    // One dial per address, whoever asked.
    assert_eq!(s.dials(), vec![(0, addr(Q6)), (250, addr(Q4))]);
    s.succeed(Q4, 42);
    for r in reqs {
        assert_eq!(
            s.result(r),
            (Instant::from_millis(260), Ok(ConnectionRef(42)))
        );
    }
    assert_eq!(s.d.pending_requests(), 0);
}

#[test]
fn a_joining_request_sees_earlier_failures_and_new_addresses() {
    let mut s = Sim::new();
    let r1 = s.dial(1, &[Q4], DialOpts::default());
    s.fail(Q4, FailureClass::Refused);
    assert!(s.result(r1).1.is_err());
    // The worker ended with r1; a new request starts afresh (Q4 now backed off).
    let r2 = s.dial(1, &[Q4], DialOpts::default());
    let err = s.result(r2).1.unwrap_err();
    assert_eq!(err.errors, vec![(addr(Q4), AddrFailure::Backoff)]);

    // Within one worker: r3 waits on T4 while Q6 fails; r4 lists Q6 (failed)
    // and T6 (new).
    let r3 = s.dial(2, &[Q6, T4], DialOpts::default());
    s.fail(Q6, FailureClass::Unreachable);
    assert_eq!(s.dials().last().unwrap().1, addr(T4));
    let r4 = s.dial(2, &[Q6, T6], DialOpts::default());
    // T6 ranks 250 ms after the worker's start, and T4 is in flight.
    assert_eq!(s.dials().last().unwrap().1, addr(T4));
    s.at(250);
    assert_eq!(s.dials().last().unwrap(), &(250, addr(T6)));
    s.fail(T6, FailureClass::Refused);
    let err = s.result(r4).1.unwrap_err();
    assert_eq!(
        err.errors,
        vec![
            (addr(Q6), AddrFailure::Attempt(FailureClass::Unreachable)),
            (addr(T6), AddrFailure::Attempt(FailureClass::Refused))
        ]
    );
    s.succeed(T4, 5);
    assert_eq!(s.result(r3).1, Ok(ConnectionRef(5)));
}

#[test]
fn backoff_skips_addresses_unless_forced() {
    let mut s = Sim::new();
    let r = s.dial(1, &[T4], DialOpts::default());
    s.fail(T4, FailureClass::Refused);
    assert!(s.result(r).1.is_err());
    let r = s.dial(1, &[T4], DialOpts::default());
    assert_eq!(s.dials().len(), 1, "backed-off address not dialed");
    assert_eq!(
        s.result(r).1.unwrap_err().errors,
        vec![(addr(T4), AddrFailure::Backoff)]
    );
    // Force direct dials it anyway; the joining plain request then waits on
    // the same attempt.
    let forced = s.dial(1, &[T4], DialOpts::default().force_direct());
    assert_eq!(s.dials().len(), 2);
    let plain = s.dial(1, &[T4], DialOpts::default());
    s.succeed(T4, 3);
    assert_eq!(s.result(forced).1, Ok(ConnectionRef(3)));
    assert_eq!(s.result(plain).1, Ok(ConnectionRef(3)));
    assert!(
        s.d.backoff().is_empty(),
        "success clears the backoff of the address that worked"
    );
    // After 5 s the backoff is over anyway.
    let r = s.dial(2, &[T4], DialOpts::default());
    s.fail(T4, FailureClass::Refused);
    assert!(s.result(r).1.is_err());
    s.at(5_000);
    s.dial(2, &[T4], DialOpts::default());
    assert_eq!(s.dials().last().unwrap(), &(5_000, addr(T4)));
}

#[test]
fn force_direct_drops_relays_and_empty_lists_are_answered_at_once() {
    let relay = format!("/ip4/1.2.3.4/tcp/1/p2p/{}/p2p-circuit", peer(9));
    let mut s = Sim::new();
    let r = s.dial(1, &[&relay], DialOpts::default().force_direct());
    assert_eq!(
        s.result(r).1.unwrap_err().cause,
        DialErrorCause::NoGoodAddresses
    );
    let r = s.dial(1, &[], DialOpts::default());
    assert_eq!(
        s.result(r).1.unwrap_err().cause,
        DialErrorCause::NoAddresses
    );
    assert_eq!(s.d.workers(), 0);
    assert_eq!(
        s.d.dial(s.now, peer(0), [addr(T4)], DialOpts::default()),
        Err(DialerError::DialToSelf)
    );
}

#[test]
fn black_holed_udp_addresses_are_refused_and_listed() {
    let mut s = Sim::new();
    for p in 1..=100 {
        let r = s.dial(p, &[Q4], DialOpts::default());
        s.fail(Q4, FailureClass::Timeout);
        assert!(s.result(r).1.is_err());
    }
    assert_eq!(
        s.d.black_hole().udp().unwrap().state(),
        crate::dial::BlackHoleState::Blocked
    );
    let r = s.dial(200, &[Q4, T4], DialOpts::default());
    // TCP is dialed at once (nothing else left), QUIC is refused.
    assert_eq!(s.dials().last().unwrap().1, addr(T4));
    s.fail(T4, FailureClass::Refused);
    let err = s.result(r).1.unwrap_err();
    assert_eq!(
        err.errors,
        vec![
            (addr(Q4), AddrFailure::BlackHoled),
            (addr(T4), AddrFailure::Attempt(FailureClass::Refused))
        ]
    );
    // A UDP-only request while blocked has no good address.
    let r = s.dial(201, &[Q4], DialOpts::default());
    assert_eq!(
        s.result(r).1.unwrap_err().cause,
        DialErrorCause::NoGoodAddresses
    );
}

#[test]
fn the_per_peer_limit_queues_dials() {
    let mut s = Sim::new();
    let addrs: Vec<String> = (1..=12).map(|i| format!("/ip4/1.2.3.4/tcp/{i}")).collect();
    let refs: Vec<&str> = addrs.iter().map(|a| a.as_str()).collect();
    let r = s.dial(1, &refs, DialOpts::default().simultaneous_connect());
    assert_eq!(s.dials().len(), 8);
    assert_eq!(s.d.attempts(), 12);
    assert_eq!(s.d.attempts_running(), 8);
    s.fail(refs[0], FailureClass::Refused);
    assert_eq!(s.dials().len(), 9);
    assert_eq!(s.dials().last().unwrap().1, addr(refs[8]));
    s.succeed(refs[8], 1);
    assert_eq!(s.result(r).1, Ok(ConnectionRef(1)));
    // 7 running attempts cancelled; 3 waiting ones vanish silently.
    assert_eq!(s.cancelled().len(), 7);
    assert!(s.d.limiter().is_empty());
}

#[test]
fn the_fd_limit_is_shared_between_peers() {
    let mut config = DialerConfig::default();
    config.limiter.fd_limit = 4;
    let mut s = Sim::with(config);
    for p in 1..=3 {
        s.dial(
            p,
            &[T6, T4, "/ip4/1.2.3.4/udp/1/quic-v1"],
            DialOpts::default().simultaneous_connect(),
        );
    }
    // 4 TCP dials hold the 4 fd tokens; QUIC dials need none.
    let dials = s.dials();
    let tcp = dials
        .iter()
        .filter(|(_, a)| Features::of(a).uses_fd())
        .count();
    assert_eq!((tcp, dials.len() - tcp), (4, 3));
    assert_eq!(s.d.limiter().fd_in_use(), 4);
    // Peer 2 connects (its T6 was the last one dialed): its two fd tokens
    // pass to peer 3's waiting TCP dials.
    s.succeed(T6, 1);
    assert_eq!(s.d.limiter().fd_in_use(), 4);
    assert_eq!(s.dials().len(), 9);
    assert_eq!(s.cancelled().len(), 2, "peer 2's T4 and QUIC dials");
}

#[test]
fn every_request_is_answered_once_by_its_deadline_when_nothing_answers() {
    let mut s = Sim::new();
    let many: Vec<String> = (1..=40).map(|i| format!("/ip4/1.2.3.4/tcp/{i}")).collect();
    let refs: Vec<&str> = many.iter().map(|a| a.as_str()).collect();
    let r1 = s.dial(1, &refs, DialOpts::default());
    let r2 = s.dial(1, &[Q4], DialOpts::default().timeout(MS(1_000)));
    let r3 = s.dial(2, &[Q4, T4], DialOpts::default());
    s.at(100);
    s.d.cancel(s.now, r3).unwrap();
    s.drain();
    assert_eq!(s.d.cancel(s.now, r3), Err(DialerError::UnknownRequest(r3)));
    s.at(120_000);
    let (t1, e1) = s.result(r1);
    assert_eq!(t1, Instant::from_millis(60_000));
    assert_eq!(e1.unwrap_err().cause, DialErrorCause::Timeout);
    let (t2, e2) = s.result(r2);
    assert_eq!(t2, Instant::from_millis(1_000));
    assert_eq!(e2.unwrap_err().cause, DialErrorCause::Timeout);
    let (t3, e3) = s.result(r3);
    assert_eq!(t3, Instant::from_millis(100));
    assert_eq!(e3.unwrap_err().cause, DialErrorCause::Cancelled);
    assert_eq!(s.events.len(), 3);
    assert_eq!(
        (s.d.workers(), s.d.attempts(), s.d.limiter().len()),
        (0, 0, 0)
    );
    // Backoff entries expire by the dialer's own timer.
    s.at(2_000_000);
    assert!(s.d.backoff().is_empty());
    assert!(s.d.poll_timeout().is_none());
}

#[test]
fn an_inbound_connection_answers_pending_requests() {
    let mut s = Sim::new();
    let r = s.dial(1, &[Q4, T4], DialOpts::default());
    s.at(10);
    s.d.handle_peer_connected(s.now, peer(1), ConnectionRef(77));
    s.drain();
    assert_eq!(s.result(r).1, Ok(ConnectionRef(77)));
    assert_eq!(s.cancelled(), vec![s.attempt_for(Q4)]);
    s.d.handle_peer_connected(s.now, peer(5), ConnectionRef(1));
}

#[test]
fn simultaneous_connect_pulls_queued_addresses_forward() {
    let mut s = Sim::new();
    s.dial(1, &[Q6, Q4, T4], DialOpts::default());
    assert_eq!(s.dials().len(), 1);
    s.at(100);
    s.dial(1, &[Q6, Q4, T4], DialOpts::default().simultaneous_connect());
    assert_eq!(
        s.dials(),
        vec![(0, addr(Q6)), (100, addr(Q4)), (100, addr(T4))]
    );
}

#[test]
fn config_validation() {
    let mut c = DialerConfig::default();
    c.request_timeout = Duration::ZERO;
    assert_eq!(
        Dialer::new(peer(0), c).unwrap_err(),
        DialerConfigError::ZeroTimeout("request_timeout")
    );
    let mut c = DialerConfig::default();
    c.limiter.fd_limit = 0;
    assert!(matches!(c.validate(), Err(DialerConfigError::Limiter(_))));
    let mut c = DialerConfig::default();
    c.max_requests = 1;
    let mut s = Sim::with(c);
    s.dial(1, &[T4], DialOpts::default());
    assert_eq!(
        s.d.dial(s.now, peer(2), [addr(T4)], DialOpts::default()),
        Err(DialerError::TooManyRequests)
    );
}

#[test]
fn ids_are_exact_and_a_reused_slot_refuses_the_old_id() {
    let mut s = Sim::new();
    let r1 = s.dial(1, &[Q4], DialOpts::default());
    let a1 = s.attempt_for(Q4);
    // Numbers that are not the id handed out never name the attempt, even
    // those that decode to the same slab slot.
    for bit in 0..64 {
        let forged = AttemptId(a1.0 ^ (1 << bit));
        assert_eq!(
            s.d.handle_dial_connected(s.now, forged),
            Err(DialerError::UnknownAttempt(forged))
        );
        let forged = RequestId(r1.0 ^ (1 << bit));
        assert_eq!(
            s.d.cancel(s.now, forged),
            Err(DialerError::UnknownRequest(forged))
        );
    }
    s.succeed(Q4, 1);
    // The freed slots are reused by the next request and attempt; the old
    // ids stay dead.
    let r2 = s.dial(2, &[Q4], DialOpts::default());
    let a2 = s
        .actions
        .iter()
        .rev()
        .find_map(|(_, a)| match a {
            Action::Dial { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .unwrap();
    assert_ne!((r1, a1), (r2, a2));
    assert_eq!(
        s.d.handle_dial_succeeded(s.now, a1, ConnectionRef(1)),
        Err(DialerError::UnknownAttempt(a1))
    );
    assert_eq!(s.d.cancel(s.now, r1), Err(DialerError::UnknownRequest(r1)));
    assert!(s.d.request_deadline(r2).is_some() && s.d.request_deadline(r1).is_none());
}
