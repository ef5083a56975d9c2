//! The five exchanges of circuit relay v2, one machine each, all of one
//! shape: one message out, one message in, a deadline, one outcome.
//!
//! | machine | runs on | role |
//! |---|---|---|
//! | [`Reserve`] | hop, client | RESERVE -> STATUS (+ reservation) |
//! | [`Connect`] | hop, client | CONNECT -> STATUS, then the circuit |
//! | [`StopResponder`] | stop, target | CONNECT <- relay, our STATUS |
//! | [`HopResponder`] | hop, relay | a client's RESERVE or CONNECT, our STATUS |
//! | [`StopRequester`] | stop, relay | CONNECT -> target, its STATUS |
//!
//! Each takes bytes with `handle_read`, which returns how many it consumed:
//! a machine never reads past its message, so after a successful
//! [`Connect`], [`StopResponder`] or [`StopRequester`] whatever the caller
//! still holds is the first bytes of the relayed connection. Outputs are
//! drained with `poll_transmit` (bytes to write), `poll_event` where the
//! application or the relay must decide, and `poll_outcome` (once).
//!
//! ```
//! use core::time::Duration;
//! use sansp2p::relay::handshake::{Admit, Connect, StopEvent, StopResponder};
//! use sansp2p::relay::ClientConfig;
//! use sansp2p::{Instant, Keypair};
//!
//! let now = Instant::from_duration(Duration::from_secs(1));
//! let config = ClientConfig::default();
//! let (alice, bob) = (Keypair::from_secret_bytes([1; 32]).peer_id(), Keypair::from_secret_bytes([2; 32]).peer_id());
//!
//! // Bob holds a reservation; the relay tells him Alice wants a circuit.
//! let mut stop = StopResponder::new(now, Admit::Offer, &config);
//! let connect = sansp2p::relay::proto::StopMessage::connect(alice.to_bytes(), None);
//! let mut wire = sansp2p::relay::proto::Frame::to_frame(&connect);
//! wire.extend_from_slice(b"/multistream/1.0.0\n");
//! let used = stop.handle_read(now, &wire);
//! assert_eq!(&wire[used..], b"/multistream/1.0.0\n"); // the circuit's first bytes
//! assert!(matches!(stop.poll_event(), Some(StopEvent::Request { initiator, .. }) if initiator == alice));
//! stop.accept();
//! let mut answer = Vec::new();
//! stop.poll_transmit(&mut answer);
//! assert!(stop.poll_outcome().unwrap().is_ok());
//!
//! // Alice's side: CONNECT, then the relay's STATUS OK.
//! let mut dial = Connect::new(now, bob, &config);
//! let mut request = Vec::new();
//! dial.poll_transmit(&mut request);
//! let ok = sansp2p::relay::proto::Frame::to_frame(&sansp2p::relay::proto::HopMessage::with_status(sansp2p::relay::proto::Status::Ok));
//! assert_eq!(dial.handle_read(now, &ok), ok.len());
//! assert_eq!(dial.poll_outcome().unwrap().unwrap().limit, None);
//! ```

use alloc::vec::Vec;
use core::time::Duration;

use super::proto::{
    Frame, HopMessage, HopType, Limit, MessageReader, Peer, Status, StopMessage, StopType,
};
use super::{
    normalize_addrs, verify_voucher, CircuitLimit, ClientConfig, RelayError, Reservation,
    ServerConfig, WallClock,
};
use crate::identity::PeerId;
use crate::time::Instant;

/// The part all five share: pending output, a bounded reader for the one
/// message expected, a deadline and whether the outcome is decided.
#[derive(Debug)]
struct Exchange<M> {
    out: Vec<u8>,
    reader: MessageReader<M>,
    deadline: Instant,
    /// Set once the machine stops reading.
    reading: bool,
}

impl<M: Frame> Exchange<M> {
    fn new(now: Instant, timeout: Duration) -> Self {
        Exchange {
            out: Vec::new(),
            reader: MessageReader::new(),
            deadline: now.saturating_add(timeout),
            reading: true,
        }
    }

    fn send(&mut self, message: &impl Frame) {
        message.push_frame(&mut self.out);
    }

    fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.out);
    }

    /// Reads toward the expected message; stops reading once it is whole or
    /// broken.
    fn read(&mut self, bytes: &[u8]) -> (usize, Option<Result<M, RelayError>>) {
        if !self.reading {
            return (0, None);
        }
        match self.reader.feed(bytes) {
            Ok((used, None)) => (used, None),
            Ok((used, Some(m))) => {
                self.reading = false;
                (used, Some(Ok(m)))
            }
            Err(e) => {
                self.reading = false;
                (bytes.len(), Some(Err(RelayError::Message(e))))
            }
        }
    }

    fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

fn peer_of(peer: Option<Peer>) -> Result<PeerId, RelayError> {
    let peer = peer.ok_or(RelayError::MissingField("peer"))?;
    PeerId::from_bytes(&peer.id).map_err(|_| RelayError::MissingField("peer.id"))
}

/// The status a relay peer deserves for a message that broke the exchange.
fn status_for(e: &RelayError) -> Status {
    match e {
        RelayError::Unexpected => Status::UnexpectedMessage,
        _ => Status::MalformedMessage,
    }
}

/// Generates the accessors every machine has in the same form.
macro_rules! common {
    ($outcome:ty) => {
        /// Appends the bytes to write on the stream to `out`.
        pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
            self.ex.poll_transmit(out);
        }

        /// The deadline of the exchange while it is undecided.
        pub fn poll_timeout(&self) -> Option<Instant> {
            (self.outcome.is_none() && !self.taken).then_some(self.ex.deadline)
        }

        /// The result, once: `Some` when the exchange is decided.
        pub fn poll_outcome(&mut self) -> Option<Result<$outcome, RelayError>> {
            let outcome = self.outcome.take();
            self.taken |= outcome.is_some();
            outcome
        }

        /// Whether the outcome is decided (taken or not).
        pub fn is_done(&self) -> bool {
            self.outcome.is_some() || self.taken
        }

        fn decide(&mut self, outcome: Result<$outcome, RelayError>) {
            if !self.is_done() {
                self.outcome = Some(outcome);
            }
        }

        /// The peer closed its side before the exchange was decided.
        pub fn handle_eof(&mut self) {
            self.ex.reading = false;
            self.decide(Err(RelayError::Closed));
        }
    };
}

/// `handle_timeout` of the machines that only wait for an answer.
macro_rules! give_up_at_deadline {
    () => {
        /// Gives up when the deadline passed.
        pub fn handle_timeout(&mut self, now: Instant) {
            if self.ex.expired(now) {
                self.ex.reading = false;
                self.decide(Err(RelayError::Timeout));
            }
        }
    };
}

/// Client side of RESERVE on a direct connection to a relay.
#[derive(Debug)]
pub struct Reserve {
    ex: Exchange<HopMessage>,
    relay: PeerId,
    local: PeerId,
    clock: WallClock,
    outcome: Option<Result<Reservation, RelayError>>,
    taken: bool,
}

impl Reserve {
    /// Starts a reservation with `relay` for `local`; `clock` converts the
    /// relay's unix expiry to our time.
    pub fn new(
        now: Instant,
        relay: PeerId,
        local: PeerId,
        clock: WallClock,
        config: &ClientConfig,
    ) -> Self {
        let mut ex = Exchange::new(now, config.reserve_timeout);
        ex.send(&HopMessage::reserve());
        Reserve {
            ex,
            relay,
            local,
            clock,
            outcome: None,
            taken: false,
        }
    }

    common!(Reservation);

    /// Bytes from the relay; returns how many were consumed.
    #[must_use]
    pub fn handle_read(&mut self, now: Instant, bytes: &[u8]) -> usize {
        let (used, message) = self.ex.read(bytes);
        if let Some(message) = message {
            let outcome = message.and_then(|m| self.answer(now, m));
            self.decide(outcome);
        }
        used
    }

    give_up_at_deadline!();

    fn answer(&self, now: Instant, m: HopMessage) -> Result<Reservation, RelayError> {
        let status = hop_status(&m)?;
        if status != Status::Ok {
            return Err(RelayError::Refused(status));
        }
        let r = m
            .reservation
            .ok_or(RelayError::MissingField("reservation"))?;
        let expire = self
            .clock
            .instant_of(now, r.expire)
            .ok_or(RelayError::Expired {
                expire_unix: r.expire,
            })?;
        if let Some(voucher) = &r.voucher {
            verify_voucher(voucher, &self.relay, &self.local).map_err(RelayError::Voucher)?;
        }
        Ok(Reservation {
            relay: self.relay,
            expire,
            expire_unix: r.expire,
            addrs: normalize_addrs(r.addrs, &self.relay),
            limit: m.limit.map(CircuitLimit::from),
            voucher: r.voucher,
        })
    }
}

/// The status of a hop STATUS answer, or why the message is not one.
fn hop_status(m: &HopMessage) -> Result<Status, RelayError> {
    if m.kind() != Some(HopType::Status) {
        return Err(RelayError::Unexpected);
    }
    m.status_code().ok_or(RelayError::MissingField("status"))
}

/// What a successful CONNECT or STOP gives: the circuit's limit (`Some`
/// makes the connection limited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Circuit {
    /// The relay's limit on this circuit.
    pub limit: Option<CircuitLimit>,
}

/// Client side of CONNECT through a relay to `target`.
#[derive(Debug)]
pub struct Connect {
    ex: Exchange<HopMessage>,
    outcome: Option<Result<Circuit, RelayError>>,
    taken: bool,
}

impl Connect {
    /// Asks the relay for a circuit to `target`.
    pub fn new(now: Instant, target: PeerId, config: &ClientConfig) -> Self {
        let mut ex = Exchange::new(now, config.connect_timeout);
        ex.send(&HopMessage::connect(target.to_bytes()));
        Connect {
            ex,
            outcome: None,
            taken: false,
        }
    }

    common!(Circuit);

    /// Bytes from the relay; returns how many were consumed. After an OK,
    /// the rest belongs to the relayed connection.
    #[must_use]
    pub fn handle_read(&mut self, _now: Instant, bytes: &[u8]) -> usize {
        let (used, message) = self.ex.read(bytes);
        if let Some(message) = message {
            let outcome = message.and_then(|m| match hop_status(&m)? {
                Status::Ok => Ok(Circuit {
                    limit: m.limit.map(CircuitLimit::from),
                }),
                s => Err(RelayError::Refused(s)),
            });
            self.decide(outcome);
        }
        used
    }

    give_up_at_deadline!();
}

/// Whether an inbound STOP may be offered to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// We hold a reservation with this relay: ask the application.
    Offer,
    /// Answer with this status without asking (`NoReservation` when we hold
    /// none, `PermissionDenied` over a relayed connection; `Ok` counts as
    /// `ConnectionFailed`).
    Refuse(Status),
}

/// What a [`StopResponder`] needs decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopEvent {
    /// `initiator` wants a circuit to us: [`StopResponder::accept`] or
    /// [`StopResponder::refuse`] before the accept deadline.
    Request {
        /// Who opened the circuit.
        initiator: PeerId,
        /// The relay's limit on it.
        limit: Option<CircuitLimit>,
    },
}

/// The established inbound circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundCircuit {
    /// Who opened it.
    pub initiator: PeerId,
    /// The relay's limit on it.
    pub limit: Option<CircuitLimit>,
}

/// Target side of STOP: the relay announces a circuit.
#[derive(Debug)]
pub struct StopResponder {
    ex: Exchange<StopMessage>,
    admit: Admit,
    accept_timeout: Duration,
    /// The request waiting for the application's answer.
    pending: Option<InboundCircuit>,
    event: Option<StopEvent>,
    outcome: Option<Result<InboundCircuit, RelayError>>,
    taken: bool,
}

impl StopResponder {
    /// Waits for the relay's CONNECT on an inbound stop stream.
    pub fn new(now: Instant, admit: Admit, config: &ClientConfig) -> Self {
        StopResponder {
            ex: Exchange::new(now, config.stop_timeout),
            admit,
            accept_timeout: config.accept_timeout,
            pending: None,
            event: None,
            outcome: None,
            taken: false,
        }
    }

    common!(InboundCircuit);

    /// A decision to make, once per request.
    pub fn poll_event(&mut self) -> Option<StopEvent> {
        self.event.take()
    }

    /// Bytes from the relay; returns how many were consumed. After the
    /// CONNECT, the rest belongs to the relayed connection.
    #[must_use]
    pub fn handle_read(&mut self, now: Instant, bytes: &[u8]) -> usize {
        let (used, message) = self.ex.read(bytes);
        let Some(message) = message else {
            return used;
        };
        let request = message.and_then(|m| {
            if m.kind() != Some(StopType::Connect) {
                return Err(RelayError::Unexpected);
            }
            Ok(InboundCircuit {
                initiator: peer_of(m.peer)?,
                limit: m.limit.map(CircuitLimit::from),
            })
        });
        match (request, self.admit) {
            (Err(e), _) => self.answer(Err(e)),
            // As in `refuse`, `Ok` is no refusal: it counts as CONNECTION_FAILED.
            (Ok(_), Admit::Refuse(Status::Ok)) => {
                self.answer(Err(RelayError::Declined(Status::ConnectionFailed)))
            }
            (Ok(_), Admit::Refuse(status)) => self.answer(Err(RelayError::Declined(status))),
            (Ok(circuit), Admit::Offer) => {
                self.ex.deadline = now.saturating_add(self.accept_timeout);
                self.pending = Some(circuit);
                self.event = Some(StopEvent::Request {
                    initiator: circuit.initiator,
                    limit: circuit.limit,
                });
            }
        }
        used
    }

    /// Accepts the offered circuit (no effect when none is offered).
    pub fn accept(&mut self) {
        if let Some(circuit) = self.pending.take() {
            self.answer(Ok(circuit));
        }
    }

    /// Refuses the offered circuit with `status` (`Ok` counts as
    /// `ConnectionFailed`).
    pub fn refuse(&mut self, status: Status) {
        if self.pending.take().is_some() {
            let status = if status == Status::Ok {
                Status::ConnectionFailed
            } else {
                status
            };
            self.answer(Err(RelayError::Declined(status)));
        }
    }

    /// A CONNECT not read in time ends the exchange; one not answered in
    /// time is refused with CONNECTION_FAILED.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ex.expired(now) && !self.is_done() {
            self.event = None;
            if self.pending.take().is_some() {
                self.answer(Err(RelayError::Declined(Status::ConnectionFailed)));
            } else {
                self.ex.reading = false;
                self.decide(Err(RelayError::Timeout));
            }
        }
    }

    fn answer(&mut self, outcome: Result<InboundCircuit, RelayError>) {
        // Decided already (the relay closed first): nothing more to say.
        if self.is_done() {
            return;
        }
        let status = match &outcome {
            Ok(_) => Status::Ok,
            Err(RelayError::Declined(s)) => *s,
            Err(e) => status_for(e),
        };
        self.ex.send(&StopMessage::with_status(status));
        self.decide(outcome);
    }
}

/// What a relay's client asked on a hop stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopRequest {
    /// Reserve (or refresh) a slot for the client.
    Reserve,
    /// Open a circuit to `target`.
    Connect {
        /// The peer to reach.
        target: PeerId,
    },
}

/// Relay side of a hop stream: one request, one answer.
#[derive(Debug)]
pub struct HopResponder {
    ex: Exchange<HopMessage>,
    request: Option<HopRequest>,
    event: Option<HopRequest>,
    outcome: Option<Result<HopRequest, RelayError>>,
    taken: bool,
}

impl HopResponder {
    /// Waits for a client's request; `admit` as for [`StopResponder`]
    /// (`Refuse(PermissionDenied)` over a relayed connection).
    pub fn new(now: Instant, config: &ServerConfig) -> Self {
        HopResponder {
            ex: Exchange::new(now, config.stream_timeout),
            request: None,
            event: None,
            outcome: None,
            taken: false,
        }
    }

    common!(HopRequest);

    /// The request, once, for the relay to answer with
    /// [`Self::grant_reservation`], [`Self::accept_connect`] or
    /// [`Self::refuse`].
    pub fn poll_event(&mut self) -> Option<HopRequest> {
        self.event.take()
    }

    /// Bytes from the client; returns how many were consumed.
    #[must_use]
    pub fn handle_read(&mut self, _now: Instant, bytes: &[u8]) -> usize {
        let (used, message) = self.ex.read(bytes);
        let Some(message) = message else {
            return used;
        };
        let request = message.and_then(|m| match m.kind() {
            Some(HopType::Reserve) => Ok(HopRequest::Reserve),
            Some(HopType::Connect) => Ok(HopRequest::Connect {
                target: peer_of(m.peer)?,
            }),
            _ => Err(RelayError::Unexpected),
        });
        match request {
            Ok(r) => {
                self.request = Some(r);
                self.event = Some(r);
            }
            Err(e) => {
                self.ex.send(&HopMessage::with_status(status_for(&e)));
                self.decide(Err(e));
            }
        }
        used
    }

    /// Answers a RESERVE with OK (no effect on a CONNECT).
    pub fn grant_reservation(
        &mut self,
        reservation: super::proto::Reservation,
        limit: Option<Limit>,
    ) {
        // Not `take()`: an answer of the other kind leaves the request be.
        if let Some(r @ HopRequest::Reserve) = self.open_request() {
            self.request = None;
            self.ex.send(&HopMessage {
                reservation: Some(reservation),
                limit,
                ..HopMessage::with_status(Status::Ok)
            });
            self.decide(Ok(r));
        }
    }

    /// Answers a CONNECT with OK: the stream is now the client's half of
    /// the circuit (no effect on a RESERVE).
    pub fn accept_connect(&mut self, limit: Option<Limit>) {
        // Not `take()`: an answer of the other kind leaves the request be.
        if let Some(r @ HopRequest::Connect { .. }) = self.open_request() {
            self.request = None;
            self.ex.send(&HopMessage {
                limit,
                ..HopMessage::with_status(Status::Ok)
            });
            self.decide(Ok(r));
        }
    }

    /// Answers the request with a refusal (`Ok` counts as
    /// `ConnectionFailed`).
    pub fn refuse(&mut self, status: Status) {
        if self.open_request().is_some() {
            self.request = None;
            let status = if status == Status::Ok {
                Status::ConnectionFailed
            } else {
                status
            };
            self.ex.send(&HopMessage::with_status(status));
            self.decide(Err(RelayError::Declined(status)));
        }
    }

    /// The request still to answer: none once decided (the client closed
    /// first), so a late answer writes nothing.
    fn open_request(&self) -> Option<HopRequest> {
        self.request.filter(|_| !self.is_done())
    }

    /// A request not read, or not answered, in time: the latter is refused
    /// with CONNECTION_FAILED.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ex.expired(now) && !self.is_done() {
            self.event = None;
            if self.request.is_some() {
                self.refuse(Status::ConnectionFailed);
            } else {
                self.ex.reading = false;
                self.decide(Err(RelayError::Timeout));
            }
        }
    }
}

/// Relay side of a stop stream: announce a circuit to the target.
#[derive(Debug)]
pub struct StopRequester {
    ex: Exchange<StopMessage>,
    outcome: Option<Result<(), RelayError>>,
    taken: bool,
}

impl StopRequester {
    /// Tells the target that `initiator` opened a circuit with `limit`.
    pub fn new(
        now: Instant,
        initiator: PeerId,
        limit: Option<Limit>,
        config: &ServerConfig,
    ) -> Self {
        let mut ex = Exchange::new(now, config.stream_timeout);
        ex.send(&StopMessage::connect(initiator.to_bytes(), limit));
        StopRequester {
            ex,
            outcome: None,
            taken: false,
        }
    }

    common!(());

    /// Bytes from the target; returns how many were consumed. After an OK,
    /// the rest belongs to the circuit.
    #[must_use]
    pub fn handle_read(&mut self, _now: Instant, bytes: &[u8]) -> usize {
        let (used, message) = self.ex.read(bytes);
        if let Some(message) = message {
            let outcome = message.and_then(|m| {
                if m.kind() != Some(StopType::Status) {
                    return Err(RelayError::Unexpected);
                }
                match m.status_code().ok_or(RelayError::MissingField("status"))? {
                    Status::Ok => Ok(()),
                    s => Err(RelayError::Refused(s)),
                }
            });
            self.decide(outcome);
        }
        used
    }

    give_up_at_deadline!();
}
