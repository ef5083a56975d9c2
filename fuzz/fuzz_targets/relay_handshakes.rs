//! The five circuit relay v2 handshake machines (`relay::handshake`).
//!
//! One machine (Reserve, Connect, StopResponder offering or refusing,
//! HopResponder, StopRequester) is driven by arbitrary steps: bytes read in
//! uneven pieces (arbitrary, or a valid message), time advanced with
//! `handle_timeout`, EOF, and the application's decisions. Checked:
//!
//! - never a panic; `handle_read` never takes more than it is given;
//! - `poll_timeout` is `Some` exactly while the outcome is undecided; a
//!   `handle_timeout` before it decides nothing, one at or after it decides;
//! - `poll_outcome` yields `Some` at most once, and there is one at the end;
//! - output bound: a machine writes at most one frame in its whole life —
//!   a client exactly its request, a responder at most one STATUS — and
//!   nothing at all once its outcome is taken;
//! - a responder's STATUS agrees with its outcome (OK for `Ok`, the
//!   refusal for `Declined`, MALFORMED/UNEXPECTED for a broken request,
//!   nothing for a timeout or EOF), and a request it has read never ends in
//!   a plain `Timeout` (it is refused with CONNECTION_FAILED instead).
//!
//! Then a genuine exchange (Reserve / Connect with a HopResponder granting,
//! accepting or refusing; StopRequester with a StopResponder) with the fuzz
//! input appended after each genuine message: both sides reach the outcomes
//! the decision implies, and each leaves unconsumed exactly the appended
//! tail (no over-read).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sansp2p::relay::handshake::*;
use sansp2p::relay::proto::{self, decode, Frame, HopMessage, Limit, StopMessage, StopType};
use sansp2p::relay::{
    make_voucher, CircuitLimit, ClientConfig, RelayError, ServerConfig, Status, WallClock,
};
use sansp2p::{Instant, Keypair, PeerId};
use sansp2p_fuzz::feed_in_pieces;

#[derive(Debug, Arbitrary)]
enum Step {
    Read(Vec<u8>),
    /// One of a few valid messages, so that decisions are reached.
    Message(u8),
    /// Advance by this many 10 ms, then `handle_timeout`.
    Wait(u16),
    Eof,
    Decide(u8),
}

#[derive(Debug, Arbitrary)]
struct Input {
    machine: u8,
    steps: Vec<Step>,
    exchange: u8,
    decision: u8,
    limit: Option<(Option<u32>, Option<u64>)>,
    tail: Vec<u8>,
}

const UNIX: u64 = 1_700_000_000;
const STATUSES: [Status; 9] = [
    Status::Unused,
    Status::Ok,
    Status::ReservationRefused,
    Status::ResourceLimitExceeded,
    Status::PermissionDenied,
    Status::ConnectionFailed,
    Status::NoReservation,
    Status::MalformedMessage,
    Status::UnexpectedMessage,
];

/// The relay's key, the client and the target.
fn keys() -> &'static (Keypair, PeerId, PeerId) {
    static KEYS: OnceLock<(Keypair, PeerId, PeerId)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let id = |n| Keypair::from_secret_bytes([n; 32]).peer_id();
        (Keypair::from_secret_bytes([1; 32]), id(2), id(3))
    })
}

fn status(n: u8) -> Status {
    STATUSES[n as usize % STATUSES.len()]
}

/// A reservation for the client with the relay's voucher (signed once).
fn grant() -> proto::Reservation {
    static GRANT: OnceLock<proto::Reservation> = OnceLock::new();
    let grant = GRANT.get_or_init(|| {
        let (relay, client, _) = keys();
        proto::Reservation {
            expire: UNIX + 3600,
            addrs: vec![vec![0x04, 1, 2, 3, 4, 0x06, 0x0f, 0xa1]],
            voucher: Some(make_voucher(relay, client, UNIX + 3600)),
        }
    });
    grant.clone()
}

/// The calls every machine shares, so one driver serves them all.
trait Machine {
    fn read(&mut self, now: Instant, bytes: &[u8]) -> usize;
    fn timeout(&mut self, now: Instant);
    fn eof(&mut self);
    fn transmit(&mut self, out: &mut Vec<u8>);
    fn deadline(&self) -> Option<Instant>;
    fn done(&self) -> bool;
    fn outcome(&mut self) -> Option<Result<(), RelayError>>;
    /// Whether a request to decide came out of `poll_event`.
    fn event(&mut self) -> bool {
        false
    }
    fn decide(&mut self, _choice: u8) {}
}

macro_rules! shared {
    () => {
        fn read(&mut self, now: Instant, bytes: &[u8]) -> usize {
            self.handle_read(now, bytes)
        }
        fn timeout(&mut self, now: Instant) {
            self.handle_timeout(now)
        }
        fn eof(&mut self) {
            self.handle_eof()
        }
        fn transmit(&mut self, out: &mut Vec<u8>) {
            self.poll_transmit(out)
        }
        fn deadline(&self) -> Option<Instant> {
            self.poll_timeout()
        }
        fn done(&self) -> bool {
            self.is_done()
        }
        fn outcome(&mut self) -> Option<Result<(), RelayError>> {
            self.poll_outcome().map(|r| r.map(drop))
        }
    };
}

impl Machine for Reserve {
    shared!();
}
impl Machine for Connect {
    shared!();
}
impl Machine for StopRequester {
    shared!();
}
impl Machine for StopResponder {
    shared!();
    fn event(&mut self) -> bool {
        self.poll_event().is_some()
    }
    fn decide(&mut self, choice: u8) {
        match choice % 3 {
            0 => self.accept(),
            1 => self.refuse(status(choice / 3)),
            _ => {}
        }
    }
}
impl Machine for HopResponder {
    shared!();
    fn event(&mut self) -> bool {
        self.poll_event().is_some()
    }
    fn decide(&mut self, choice: u8) {
        match choice % 4 {
            0 => self.grant_reservation(grant(), None),
            1 => self.accept_connect(None),
            2 => self.refuse(status(choice / 4)),
            _ => {}
        }
    }
}

/// What a machine may write: exactly its request, or one STATUS.
enum Writes {
    Request(Vec<u8>),
    Status { hop: bool },
}

fn valid_message(n: u8) -> Vec<u8> {
    let (_, client, target) = keys();
    let limit = Some(Limit {
        duration: Some(60),
        data: Some(1 << 20),
    });
    match n % 5 {
        0 => HopMessage::reserve().to_frame(),
        1 => HopMessage::connect(target.to_bytes()).to_frame(),
        2 => HopMessage::with_status(status(n / 5)).to_frame(),
        3 => StopMessage::connect(client.to_bytes(), limit).to_frame(),
        _ => StopMessage::with_status(status(n / 5)).to_frame(),
    }
}

/// The STATUS in a responder's whole output (`None`: it wrote nothing).
fn status_written(out: &[u8], hop: bool) -> Option<Status> {
    if out.is_empty() {
        return None;
    }
    let (is_status, code, used) = if hop {
        let (m, used) = decode::<HopMessage>(out).unwrap().expect("a whole frame");
        (
            m.kind() == Some(proto::HopType::Status),
            m.status_code(),
            used,
        )
    } else {
        let (m, used) = decode::<StopMessage>(out).unwrap().expect("a whole frame");
        (m.kind() == Some(StopType::Status), m.status_code(), used)
    };
    assert_eq!(used, out.len(), "more than one frame written");
    assert!(is_status, "a responder wrote something else than a STATUS");
    Some(code.expect("a known status"))
}

/// Output, outcome and request seen so far, checked at every poll.
#[derive(Default)]
struct Seen {
    out: Vec<u8>,
    outcome: Option<Result<(), RelayError>>,
    /// How much had been written when the outcome was taken.
    taken_at: Option<usize>,
    requested: bool,
}

impl Seen {
    fn poll(&mut self, m: &mut dyn Machine) {
        m.transmit(&mut self.out);
        let written = self.out.len();
        assert!(
            self.taken_at.is_none_or(|n| written == n),
            "written after the outcome"
        );
        if m.event() {
            assert!(!self.requested, "one request offered twice");
            self.requested = true;
        }
        if let Some(o) = m.outcome() {
            assert!(self.outcome.is_none(), "a second outcome");
            m.transmit(&mut self.out);
            (self.outcome, self.taken_at) = (Some(o), Some(self.out.len()));
        }
        assert_eq!(
            m.deadline().is_some(),
            !m.done(),
            "a deadline iff undecided"
        );
    }
}

fn drive(m: &mut dyn Machine, writes: Writes, steps: &[Step]) {
    let mut now = start();
    let mut seen = Seen::default();
    for step in steps.iter().take(64) {
        match step {
            Step::Read(bytes) => feed_in_pieces(bytes, |piece| Some(m.read(now, piece))),
            Step::Message(n) => feed_in_pieces(&valid_message(*n), |p| Some(m.read(now, p))),
            Step::Wait(ticks) => {
                now += Duration::from_millis(10 * u64::from(*ticks));
                let (due, was_done) = (m.deadline(), m.done());
                m.timeout(now);
                match due {
                    Some(d) if now < d => assert_eq!(m.done(), was_done, "decided early"),
                    Some(_) => assert!(m.done(), "a deadline passed, nothing decided"),
                    None => {}
                }
            }
            Step::Eof => {
                m.eof();
                assert!(m.done(), "EOF decides");
            }
            Step::Decide(choice) => m.decide(*choice),
        }
        seen.poll(m);
    }
    // Past every deadline: decided, and still nothing more written.
    m.timeout(now + Duration::from_secs(3600));
    seen.poll(m);
    let outcome = seen.outcome.expect("no outcome past every deadline");
    let hop = match writes {
        Writes::Request(request) => return assert_eq!(seen.out, request, "a client's output"),
        Writes::Status { hop } => hop,
    };
    let want = match &outcome {
        Ok(()) => Some(Status::Ok),
        Err(RelayError::Declined(s)) => Some(*s),
        Err(RelayError::Unexpected) => Some(Status::UnexpectedMessage),
        Err(RelayError::Message(_) | RelayError::MissingField(_)) => Some(Status::MalformedMessage),
        Err(RelayError::Timeout | RelayError::Closed) => None,
        Err(e) => panic!("a responder cannot end in {e:?}"),
    };
    let written = status_written(&seen.out, hop);
    assert_eq!(
        written, want,
        "the STATUS written vs the outcome {outcome:?}"
    );
    assert!(
        !(seen.requested && outcome == Err(RelayError::Timeout)),
        "a request read and left unanswered"
    );
}

/// Hands what `from` wrote, then `tail`, to `to` in pieces: it must take
/// the message exactly, nothing of the tail (no over-read).
fn pass(from: &mut dyn Machine, to: &mut dyn Machine, tail: &[u8]) {
    let mut wire = Vec::new();
    from.transmit(&mut wire);
    let end = wire.len();
    wire.extend_from_slice(tail);
    let mut pos = 0;
    feed_in_pieces(&wire, |piece| {
        let used = to.read(start(), piece);
        pos += used;
        Some(used)
    });
    assert_eq!(pos, end, "not exactly the genuine message read");
}

fn start() -> Instant {
    Instant::from_duration(Duration::from_secs(1))
}

/// A genuine exchange with the fuzz input after each message; `decision`
/// picks the answer: OK, or a refusal with a status (at once or, for stop,
/// after the offer).
fn genuine(input: &Input) {
    let (relay_key, client, target) = keys();
    let (cc, sc) = (ClientConfig::default(), ServerConfig::default());
    let limit = input.limit.map(|(duration, data)| Limit { duration, data });
    let tail = &input.tail;
    let refusal = (input.decision % 2 == 1).then(|| status(input.decision / 2));
    // What the requester must see: a refusal with `Ok` is CONNECTION_FAILED.
    let refused = refusal.map(|s| {
        if s == Status::Ok {
            Status::ConnectionFailed
        } else {
            s
        }
    });
    let want = |declined: fn(Status) -> RelayError| refused.map_or(Ok(()), |s| Err(declined(s)));
    if input.exchange % 3 < 2 {
        // RESERVE or CONNECT to a HopResponder.
        let mut hop = HopResponder::new(start(), &sc);
        let (mut c, request): (Box<dyn Machine>, _) = if input.exchange.is_multiple_of(3) {
            let clock = WallClock::new(start(), Duration::from_secs(UNIX));
            let c = Reserve::new(start(), relay_key.peer_id(), *client, clock, &cc);
            (Box::new(c), HopRequest::Reserve)
        } else {
            let c = Connect::new(start(), *target, &cc);
            (Box::new(c), HopRequest::Connect { target: *target })
        };
        pass(&mut *c, &mut hop, tail);
        assert_eq!(hop.poll_event(), Some(request));
        match (refusal, request) {
            (Some(s), _) => hop.refuse(s),
            (None, HopRequest::Reserve) => hop.grant_reservation(grant(), limit),
            (None, _) => hop.accept_connect(limit),
        }
        pass(&mut hop, &mut *c, tail);
        assert_eq!(
            c.outcome().unwrap(),
            want(RelayError::Refused),
            "the client's view"
        );
        let relay = hop.poll_outcome().unwrap().map(drop);
        assert_eq!(relay, want(RelayError::Declined), "the relay's view");
    } else {
        // A StopRequester announcing a circuit to a StopResponder.
        let admit = match refusal {
            Some(s) if input.decision & 4 == 0 => Admit::Refuse(s),
            _ => Admit::Offer,
        };
        let mut relay = StopRequester::new(start(), *client, limit, &sc);
        let mut stop = StopResponder::new(start(), admit, &cc);
        pass(&mut relay, &mut stop, tail);
        if admit == Admit::Offer {
            let limit = limit.map(CircuitLimit::from);
            let request = StopEvent::Request {
                initiator: *client,
                limit,
            };
            assert_eq!(stop.poll_event(), Some(request));
            match refusal {
                Some(status) => stop.refuse(status),
                None => stop.accept(),
            }
        }
        pass(&mut stop, &mut relay, tail);
        assert_eq!(
            relay.outcome().unwrap(),
            want(RelayError::Refused),
            "the relay's view"
        );
        assert_eq!(
            stop.outcome().unwrap(),
            want(RelayError::Declined),
            "the target's view"
        );
    }
}

fuzz_target!(|input: Input| {
    let (relay, client, target) = keys();
    let (now, cc, sc) = (start(), ClientConfig::default(), ServerConfig::default());
    let clock = WallClock::new(now, Duration::from_secs(UNIX));
    let (hop, stop) = (Writes::Status { hop: true }, Writes::Status { hop: false });
    let request = |frame: Vec<u8>| Writes::Request(frame);
    let (mut m, writes): (Box<dyn Machine>, Writes) = match input.machine % 6 {
        0 => (
            Box::new(Reserve::new(now, relay.peer_id(), *client, clock, &cc)),
            request(HopMessage::reserve().to_frame()),
        ),
        1 => (
            Box::new(Connect::new(now, *target, &cc)),
            request(HopMessage::connect(target.to_bytes()).to_frame()),
        ),
        2 => (Box::new(StopResponder::new(now, Admit::Offer, &cc)), stop),
        3 => {
            let admit = Admit::Refuse(status(input.machine / 6));
            (Box::new(StopResponder::new(now, admit, &cc)), stop)
        }
        4 => (Box::new(HopResponder::new(now, &sc)), hop),
        _ => (
            Box::new(StopRequester::new(now, *client, None, &sc)),
            request(StopMessage::connect(client.to_bytes(), None).to_frame()),
        ),
    };
    drive(&mut *m, writes, &input.steps);
    genuine(&input);
});
