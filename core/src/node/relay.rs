//! Circuit relay v2 inside the node: the client's exchanges (reserve,
//! connect, stop), relayed connections, and the relay server's circuits.
//!
//! A relayed connection is an ordinary [`Conn`](super::Conn) whose
//! transport is a stream (its *carrier*) of a direct connection to the
//! relay. Its bytes never reach the adapter: what its driver would hand to
//! a socket is written into the carrier, and what the carrier reads is fed
//! to its driver, as much as [`Node::read_capacity`] allows. The upgrade
//! (noise, yamux) runs over it like over a socket. Its actions
//! (`CloseWrite`, `Close`) close or reset the carrier.
//!
//! The relay splices a circuit's two streams: each direction reads from
//! one stream only while the other has written everything handed to it,
//! at most `circuit_buffer` bytes at a time, so a slow side stalls the
//! other and nothing grows. Each direction counts its bytes against the
//! circuit's data limit.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::stream::{Kind, READ_CHUNK};
use super::{
    start_upgrade, CircuitDialError, Conn, ConnState, ConnectionId, DialId, Endpoint, Event, Node,
    Origin, RelayCommandError, StreamHandle, TimerKey,
};
use crate::addr;
use crate::identity::PeerId;
use crate::multistream::{self, Negotiator};
use crate::relay::handshake::{
    Admit, Connect, HopRequest, HopResponder, Reserve, StopEvent, StopRequester, StopResponder,
};
use crate::relay::server::{CircuitId, Server};
use crate::relay::{
    self, CircuitLimit, RelayError, Reservation, ServerConfig, Status, WallClock, HOP_PROTOCOL,
    STOP_PROTOCOL,
};
use crate::time::Instant;
use crate::yamux::{ReadError, WriteError};

/// The relay business of one stream.
#[derive(Debug)]
pub(super) enum RelayStream {
    /// We reserve on the stream's relay.
    Reserve(Reserve),
    /// We ask the relay for a circuit to `target`.
    Connect {
        machine: Connect,
        dial: DialId,
        target: PeerId,
        addr: Vec<u8>,
    },
    /// The relay announces a circuit to us.
    Stop(StopResponder),
    /// Our relay server answers a client.
    Hop(HopResponder),
    /// Our relay server announces a circuit to its target; `src` is the
    /// client's hop stream, waiting for the outcome.
    StopOut {
        machine: StopRequester,
        circuit: CircuitId,
        src: StreamHandle,
    },
    /// The stream carries relayed connection `inner`.
    Carrier { inner: ConnectionId, eof: bool },
    /// One half of a circuit our relay runs: what this stream reads goes to
    /// `other`, at most `left` bytes more.
    Splice {
        other: StreamHandle,
        circuit: CircuitId,
        left: Option<u64>,
        /// `other` waits for room in this stream's output.
        wake_other: bool,
        /// The circuit's duration limit.
        deadline: Option<Instant>,
    },
}

/// A limited circuit's use, as the relay will count it: bytes of the
/// relayed connection in each direction, and its age.
#[derive(Debug, Clone, Copy)]
pub(super) struct CircuitUse {
    limit: CircuitLimit,
    since: Instant,
    sent: u64,
    received: u64,
}

impl CircuitUse {
    /// Whether the relay had reason to end the circuit by `now`. The spec
    /// counts the data limit per direction (so does our relay); the
    /// rust-libp2p and js-libp2p relays count both directions together,
    /// so the sum is what decides.
    fn reached(&self, now: Instant) -> bool {
        let data = self
            .limit
            .data
            .is_some_and(|d| self.sent.saturating_add(self.received) >= d);
        let time = self
            .limit
            .duration
            .is_some_and(|d| now >= self.since.saturating_add(d));
        data || time
    }
}

/// What a handshake step produced, taken out of the stream so the node
/// can act on it.
enum Decision {
    Reserved(Result<Reservation, RelayError>),
    Dialed {
        dial: DialId,
        target: PeerId,
        addr: Vec<u8>,
        result: Result<crate::relay::handshake::Circuit, RelayError>,
    },
    StopRequest(PeerId),
    Stopped(Result<crate::relay::handshake::InboundCircuit, RelayError>),
    Hop(HopRequest),
    HopDone,
    StopOutDone {
        circuit: CircuitId,
        src: StreamHandle,
        result: Result<(), RelayError>,
    },
}

/// The node's relay state.
#[derive(Debug, Default)]
pub(super) struct RelayState {
    /// Reservations we hold, by relay, with the connection they live on.
    pub(super) reservations: crate::collections::HashMap<PeerId, (ConnectionId, Reservation)>,
    /// Relays we are reserving with.
    pending_reserve: crate::collections::HashSet<PeerId>,
    /// Relayed connections and their carriers.
    pub(super) carriers: crate::collections::HashMap<ConnectionId, StreamHandle>,
    /// Relayed connections with work for their carrier.
    pub(super) queue: alloc::collections::VecDeque<ConnectionId>,
    /// Streams to pump again (a splice whose partner has room).
    wake: alloc::collections::VecDeque<StreamHandle>,
    /// The deadline registered per relay stream.
    timers: crate::collections::HashMap<StreamHandle, Instant>,
    server: Option<Box<Server>>,
    /// The server's public addresses were set by the application; until
    /// then they follow the listen addresses.
    public_addrs_set: bool,
    /// The server's deadline registered in the timer table.
    server_timer: Option<Instant>,
}

impl Node {
    // ------------------------------------------------------------ getters

    /// The reservation we hold with `relay`, if any.
    pub fn reservation(&self, relay: &PeerId) -> Option<&Reservation> {
        self.relay.reservations.get(relay).map(|(_, r)| r)
    }

    /// Where peers can reach us through the relays we hold reservations
    /// with: each reservation address with `/p2p-circuit` appended
    /// (`<relay addr>/p2p/<relay>/p2p-circuit`), sorted, without doubles.
    /// Identify announces them with the listen addresses; a dialer appends
    /// `/p2p/<our id>`.
    pub fn relay_addrs(&self) -> Vec<Vec<u8>> {
        let mut addrs: Vec<Vec<u8>> = self
            .relay
            .reservations
            .values()
            .flat_map(|(_, r)| r.addrs.iter())
            .filter(|a| addr::classify(a).is_ok_and(|i| !i.relayed))
            .map(|a| relay::circuit_addr(a, None))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Whether `conn` runs over a relay circuit.
    pub fn is_relayed(&self, conn: ConnectionId) -> bool {
        self.relay.carriers.contains_key(&conn)
    }

    /// Whether `conn` is limited (the relay announced a limit on its
    /// circuit): only ping, identify and the protocols registered with
    /// [`Node::register_protocol_on_limited`] run on it.
    pub fn is_limited(&self, conn: ConnectionId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.limited)
    }

    /// Our relay server, when [`Node::serve_relay`] enabled it.
    pub fn relay_server(&self) -> Option<&Server> {
        self.relay.server.as_deref()
    }

    // ------------------------------------------------------------ commands

    /// Reserves a slot on `relay` over our direct connection to it;
    /// [`Event::ReservationAccepted`] or [`Event::ReservationFailed`]
    /// follows. Calling it again refreshes the reservation. `clock` dates
    /// the relay's unix expiry.
    pub fn reserve(
        &mut self,
        now: Instant,
        clock: WallClock,
        relay: PeerId,
    ) -> Result<(), RelayCommandError> {
        let now = self.tick(now);
        let conn = self
            .direct_connection(&relay)
            .ok_or(RelayCommandError::NotConnectedToRelay)?;
        if self.relay.pending_reserve.contains(&relay) {
            return Err(RelayCommandError::ReservePending);
        }
        let machine = Reserve::new(now, relay, self.local_peer, clock, &self.config.relay);
        self.open_relay_stream(conn, HOP_PROTOCOL, RelayStream::Reserve(machine))?;
        self.relay.pending_reserve.insert(relay);
        Ok(())
    }

    /// Dials `addr` = `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<target>`
    /// over our direct connection to the relay: CONNECT, then the upgrade
    /// over the circuit. [`Event::Dialed`] (the connection is
    /// [relayed](Self::is_relayed)) or [`Event::CircuitDialFailed`] follows.
    pub fn dial_circuit(&mut self, now: Instant, addr: &[u8]) -> Result<DialId, RelayCommandError> {
        let now = self.tick(now);
        let relay::CircuitAddr { relay, target, .. } =
            relay::CircuitAddr::parse(addr).ok_or(RelayCommandError::BadCircuitAddress)?;
        let conn = self
            .direct_connection(&relay)
            .ok_or(RelayCommandError::NotConnectedToRelay)?;
        let dial = DialId(self.fresh_id());
        let machine = Connect::new(now, target, &self.config.relay);
        self.open_relay_stream(
            conn,
            HOP_PROTOCOL,
            RelayStream::Connect {
                machine,
                dial,
                target,
                addr: addr.to_vec(),
            },
        )?;
        Ok(dial)
    }

    /// Answers an [`Event::CircuitRequest`]: `Ok` accepts (the relayed
    /// connection's upgrade starts), `Err(status)` refuses.
    pub fn answer_circuit(
        &mut self,
        now: Instant,
        request: StreamHandle,
        answer: Result<(), Status>,
    ) -> Result<(), RelayCommandError> {
        self.tick(now);
        let Ok((_, st)) = self.stream_parts(request) else {
            return Err(RelayCommandError::UnknownRequest);
        };
        let Kind::Relay(r) = &mut st.kind else {
            return Err(RelayCommandError::UnknownRequest);
        };
        let RelayStream::Stop(machine) = &mut **r else {
            return Err(RelayCommandError::UnknownRequest);
        };
        if machine.is_done() {
            return Err(RelayCommandError::UnknownRequest);
        }
        match answer {
            Ok(()) => machine.accept(),
            Err(status) => machine.refuse(status),
        }
        self.pump(request);
        self.after_session_command(request.conn);
        Ok(())
    }

    /// Makes this node a relay server: it answers hop requests (announced
    /// in identify) with `config`'s limits. `clock` dates reservations.
    pub fn serve_relay(&mut self, now: Instant, clock: WallClock, config: ServerConfig) {
        let now = self.tick(now);
        let mut server = Server::new(now, self.config.keypair.clone(), clock, config);
        server.set_public_addrs(self.listen_addrs.iter().cloned());
        self.relay.server = Some(Box::new(server));
        self.push_identify();
    }

    /// The relay server's public addresses (binary multiaddrs), put into
    /// reservations; by default the listen addresses, as they are bound.
    pub fn set_relay_public_addrs(&mut self, addrs: Vec<Vec<u8>>) -> Result<(), RelayCommandError> {
        let server = self
            .relay
            .server
            .as_mut()
            .ok_or(RelayCommandError::NotARelay)?;
        server.set_public_addrs(addrs);
        self.relay.public_addrs_set = true;
        Ok(())
    }

    /// A listen address was added: our relay announces it unless the
    /// application chose the relay's addresses.
    pub(super) fn relay_listen_addrs_changed(&mut self) {
        if let Some(server) = self.relay.server.as_mut() {
            if !self.relay.public_addrs_set {
                server.set_public_addrs(self.listen_addrs.iter().cloned());
            }
        }
    }

    // ------------------------------------------------------------ internals

    /// The protocols of the relay we serve on inbound streams.
    pub(super) fn relay_protocols(&self) -> impl Iterator<Item = &'static str> {
        let hop = self.relay.server.is_some().then_some(HOP_PROTOCOL);
        core::iter::once(STOP_PROTOCOL).chain(hop)
    }

    /// The relay machine for an inbound stream that agreed on `protocol`.
    pub(super) fn relay_inbound(&self, conn: ConnectionId, protocol: &str) -> Option<RelayStream> {
        let now = self.now;
        let c = self.conns.get(&conn)?;
        let relayed = c.carrier.is_some();
        match protocol {
            STOP_PROTOCOL => {
                let peer = c.peer?;
                let admit = if relayed {
                    Admit::Refuse(Status::PermissionDenied)
                } else if self
                    .relay
                    .reservations
                    .get(&peer)
                    .is_some_and(|(on, _)| *on == conn)
                {
                    Admit::Offer
                } else {
                    Admit::Refuse(Status::NoReservation)
                };
                Some(RelayStream::Stop(StopResponder::new(
                    now,
                    admit,
                    &self.config.relay,
                )))
            }
            HOP_PROTOCOL => {
                let server = self.relay.server.as_ref()?;
                Some(RelayStream::Hop(HopResponder::new(now, server.config())))
            }
            _ => None,
        }
    }

    /// The oldest upgraded, non-relayed connection to `peer`.
    pub(super) fn direct_connection(&self, peer: &PeerId) -> Option<ConnectionId> {
        self.connections_to(peer).find(|id| {
            self.conns.get(id).is_some_and(|c| {
                c.carrier.is_none()
                    && matches!(&c.state, ConnState::Muxed(s) if !s.is_closed() && s.remote_go_away().is_none() && s.local_go_away().is_none())
            })
        })
    }

    fn open_relay_stream(
        &mut self,
        conn: ConnectionId,
        protocol: &'static str,
        machine: RelayStream,
    ) -> Result<StreamHandle, RelayCommandError> {
        let neg = Negotiator::dialer_with([protocol], multistream::Config::default())
            .expect("relay protocol names are valid");
        self.open_outbound(conn, neg, Kind::Relay(Box::new(machine)))
            .map_err(|e| match e {
                super::OpenStreamError::Yamux(e) => RelayCommandError::Yamux(e),
                _ => RelayCommandError::NotConnectedToRelay,
            })
    }

    /// Runs queued relay work: relayed connections with output for their
    /// carrier, splices whose partner has room. Called before the adapter
    /// is given anything.
    pub(super) fn run_relays(&mut self) {
        let mut guard = 0usize;
        loop {
            guard += 1;
            if guard > 65_536 {
                // Bounded per call; what is left runs on the next poll.
                return;
            }
            if let Some(inner) = self.relay.queue.pop_front() {
                if let Some(c) = self.conns.get_mut(&inner) {
                    c.io.write_flagged = false;
                }
                if let Some(&carrier) = self.relay.carriers.get(&inner) {
                    self.pump(carrier);
                    self.after_session_command(carrier.conn);
                }
                continue;
            }
            if let Some(stream) = self.relay.wake.pop_front() {
                self.pump(stream);
                self.after_session_command(stream.conn);
                continue;
            }
            return;
        }
    }

    /// An action for a relayed connection, carried out on its carrier;
    /// false when `conn` is not relayed (the adapter's).
    pub(super) fn relayed_action(&mut self, action: &super::Action) -> bool {
        use super::Action;
        let (conn, close) = match *action {
            Action::CloseWrite { conn } => (conn, false),
            Action::Close { conn } => (conn, true),
            _ => return false,
        };
        let Some(&carrier) = self.relay.carriers.get(&conn) else {
            return false;
        };
        if close {
            self.relay.carriers.remove(&conn);
            if let Ok((_, st)) = self.stream_parts(carrier) {
                st.kind = Kind::Drain;
            }
            self.reset_stream(carrier);
        } else if let Ok((session, st)) = self.stream_parts(carrier) {
            if st.out.is_empty() {
                let _ = session.close(super::stream::yamux_id(carrier));
            } else {
                st.close_after_out = true;
            }
            self.after_session_command(carrier.conn);
        }
        true
    }

    /// One step of a relay stream (after negotiation), for the stream pump.
    pub(super) fn relay_step(
        &mut self,
        stream: StreamHandle,
    ) -> Result<super::stream::Outcome, ()> {
        use super::stream::Outcome;
        let now = self.now;
        let (session, st) = self.stream_parts(stream).map_err(|_| ())?;
        let sid = super::stream::yamux_id(stream);
        let Kind::Relay(r) = &mut st.kind else {
            return Ok(Outcome::Nothing);
        };
        match &mut **r {
            RelayStream::Carrier { inner, eof } => {
                let (inner, eof) = (*inner, *eof);
                return Ok(self.carrier_step(stream, inner, eof));
            }
            RelayStream::Splice { .. } => return Ok(self.splice_step(stream)),
            _ => {}
        }
        // A handshake: its output, then its input, one chunk.
        let mut progressed = false;
        with_handshake(r, |h| h.poll_transmit(&mut st.out));
        if !st.out.is_empty() {
            if let Ok(n) = session.write(sid, &st.out) {
                progressed |= n > 0;
                st.out.drain(..n);
            }
        }
        let reading = with_handshake(r, |h| !h.is_done());
        if reading {
            let chunk = if st.pending.is_empty() {
                match session.read_chunk(sid, READ_CHUNK) {
                    Ok(chunk) => Some(chunk),
                    Err(ReadError::Blocked) => None,
                    Err(_) => return Err(()),
                }
            } else {
                Some(Some(core::mem::take(&mut st.pending)))
            };
            match chunk {
                Some(Some(chunk)) => {
                    let used = with_handshake(r, |h| h.handle_read(now, &chunk));
                    if used < chunk.len() {
                        st.pending = chunk.slice(used..);
                    }
                    progressed = true;
                }
                Some(None) => {
                    with_handshake(r, |h| h.handle_eof());
                    progressed = true;
                }
                None => {}
            }
        }
        with_handshake(r, |h| h.poll_transmit(&mut st.out));
        self.relay_decide(stream);
        self.relay_reschedule(stream);
        Ok(if progressed {
            Outcome::Progress
        } else {
            Outcome::Nothing
        })
    }

    /// Acts on what a handshake decided or asks.
    fn relay_decide(&mut self, stream: StreamHandle) {
        let now = self.now;
        let Some(peer) = self.conns.get(&stream.conn).and_then(|c| c.peer) else {
            return;
        };
        let Ok((_, st)) = self.stream_parts(stream) else {
            return;
        };
        let Kind::Relay(r) = &mut st.kind else {
            return;
        };
        let decision = match &mut **r {
            RelayStream::Reserve(m) => m.poll_outcome().map(Decision::Reserved),
            RelayStream::Connect {
                machine,
                dial,
                target,
                addr,
            } => machine.poll_outcome().map(|result| Decision::Dialed {
                dial: *dial,
                target: *target,
                addr: core::mem::take(addr),
                result,
            }),
            RelayStream::Stop(m) => match m.poll_event() {
                Some(StopEvent::Request { initiator, .. }) => {
                    Some(Decision::StopRequest(initiator))
                }
                None => m.poll_outcome().map(Decision::Stopped),
            },
            RelayStream::Hop(m) => match m.poll_event() {
                Some(request) => Some(Decision::Hop(request)),
                None => m.poll_outcome().map(|_| Decision::HopDone),
            },
            RelayStream::StopOut {
                machine,
                circuit,
                src,
            } => machine.poll_outcome().map(|result| Decision::StopOutDone {
                circuit: *circuit,
                src: *src,
                result,
            }),
            RelayStream::Carrier { .. } | RelayStream::Splice { .. } => None,
        };
        let Some(decision) = decision else {
            return;
        };
        // Every decided exchange ends its stream, but for the ones that
        // turn into a carrier or a splice (they set their kind themselves).
        let ends = matches!(
            &decision,
            Decision::Reserved(_)
                | Decision::Dialed { result: Err(_), .. }
                | Decision::Stopped(Err(_))
                | Decision::HopDone
                | Decision::StopOutDone { result: Err(_), .. }
        );
        if ends {
            st.kind = Kind::Drain;
            st.close_after_out = true;
        }
        match decision {
            Decision::Reserved(outcome) => {
                self.relay.pending_reserve.remove(&peer);
                let event = match outcome {
                    Ok(reservation) => {
                        let before = self.relay_addrs();
                        self.relay
                            .reservations
                            .insert(peer, (stream.conn, reservation.clone()));
                        if self.relay_addrs() != before {
                            self.push_identify();
                        }
                        Event::ReservationAccepted {
                            relay: peer,
                            reservation,
                        }
                    }
                    Err(error) => Event::ReservationFailed { relay: peer, error },
                };
                self.events.push_back(event);
            }
            Decision::Dialed {
                dial,
                target,
                addr,
                result,
            } => match result {
                Ok(circuit) => {
                    let inner = self.open_relayed(
                        stream,
                        Endpoint::Dialer,
                        addr,
                        Some(target),
                        circuit.limit,
                        Origin::Circuit(dial),
                    );
                    self.hand_over(stream, inner);
                }
                Err(error) => self.events.push_back(Event::CircuitDialFailed {
                    dial,
                    error: CircuitDialError::Relay(error),
                }),
            },
            Decision::StopRequest(initiator) => self.events.push_back(Event::CircuitRequest {
                request: stream,
                relay: peer,
                initiator,
            }),
            Decision::Stopped(Ok(circuit)) => {
                let mut remote = self
                    .conns
                    .get(&stream.conn)
                    .map(|c| c.remote_addr.clone())
                    .unwrap_or_default();
                if !remote.ends_with(&relay::p2p_suffix(&peer)) {
                    remote.extend_from_slice(&relay::p2p_suffix(&peer));
                }
                let remote = relay::circuit_addr(&remote, Some(&circuit.initiator));
                let inner = self.open_relayed(
                    stream,
                    Endpoint::Listener,
                    remote,
                    None,
                    circuit.limit,
                    Origin::Inbound,
                );
                self.hand_over(stream, inner);
            }
            Decision::Stopped(Err(_)) | Decision::HopDone => {}
            Decision::Hop(request) => self.serve_hop(now, stream, peer, request),
            Decision::StopOutDone {
                circuit,
                src,
                result,
            } => match result {
                Ok(()) => self.splice(circuit, src, stream),
                Err(e) => {
                    let status = match e {
                        RelayError::Refused(s) => s,
                        _ => Status::ConnectionFailed,
                    };
                    self.refuse_hop(src, status);
                    if let Some(server) = self.relay.server.as_mut() {
                        server.handle_circuit_closed(circuit);
                    }
                }
            },
        }
        self.drain_server_events();
    }

    /// A client's RESERVE or CONNECT, decided by the server's policy.
    fn serve_hop(&mut self, now: Instant, stream: StreamHandle, from: PeerId, request: HopRequest) {
        let relayed = self.is_relayed(stream.conn);
        let ip = self
            .conns
            .get(&stream.conn)
            .and_then(|c| remote_ip(&c.remote_addr));
        let Some(server) = self.relay.server.as_mut() else {
            return;
        };
        match request {
            HopRequest::Reserve => {
                let answer = server.handle_reserve(now, from, ip, relayed);
                if let Ok((_, st)) = self.stream_parts(stream) {
                    if let Kind::Relay(r) = &mut st.kind {
                        if let RelayStream::Hop(m) = &mut **r {
                            match answer {
                                Ok(grant) => m.grant_reservation(grant.reservation, grant.limit),
                                Err(status) => m.refuse(status),
                            }
                        }
                    }
                }
                self.pump_later(stream);
            }
            HopRequest::Connect { target } => {
                let limit = server.circuit_limit().map(relay::proto::Limit::from);
                let circuit = match server.handle_connect(now, from, target, relayed) {
                    Ok(c) => c,
                    Err(status) => {
                        self.refuse_hop(stream, status);
                        self.drain_server_events();
                        return;
                    }
                };
                let stop = StopRequester::new(now, from, limit, server.config());
                let opened = match self.direct_connection(&target) {
                    Some(conn) => self
                        .open_relay_stream(
                            conn,
                            STOP_PROTOCOL,
                            RelayStream::StopOut {
                                machine: stop,
                                circuit,
                                src: stream,
                            },
                        )
                        .is_ok(),
                    None => false,
                };
                if !opened {
                    self.refuse_hop(stream, Status::ConnectionFailed);
                    if let Some(server) = self.relay.server.as_mut() {
                        server.handle_circuit_closed(circuit);
                    }
                }
            }
        }
        self.drain_server_events();
    }

    fn refuse_hop(&mut self, stream: StreamHandle, status: Status) {
        if let Ok((_, st)) = self.stream_parts(stream) {
            if let Kind::Relay(r) = &mut st.kind {
                if let RelayStream::Hop(m) = &mut **r {
                    m.refuse(status);
                }
            }
        }
        self.pump_later(stream);
    }

    /// The target accepted: the client's hop stream gets its OK and both
    /// streams become the circuit's halves.
    fn splice(&mut self, circuit: CircuitId, src: StreamHandle, dst: StreamHandle) {
        let Some(server) = self.relay.server.as_ref() else {
            return;
        };
        let limit = server.circuit_limit();
        let left = limit.and_then(|l| l.data);
        let deadline = limit
            .and_then(|l| l.duration)
            .map(|d| self.now.saturating_add(d));
        let accepted = match self.stream_parts(src) {
            Ok((_, st)) => match &mut st.kind {
                Kind::Relay(r) => match &mut **r {
                    RelayStream::Hop(m) => {
                        m.accept_connect(limit.map(relay::proto::Limit::from));
                        m.poll_transmit(&mut st.out);
                        st.kind = Kind::Relay(Box::new(RelayStream::Splice {
                            other: dst,
                            circuit,
                            left,
                            wake_other: false,
                            deadline,
                        }));
                        true
                    }
                    _ => false,
                },
                _ => false,
            },
            Err(_) => false,
        };
        if let Ok((_, st)) = self.stream_parts(dst) {
            st.kind = if accepted {
                Kind::Relay(Box::new(RelayStream::Splice {
                    other: src,
                    circuit,
                    left,
                    wake_other: false,
                    deadline,
                }))
            } else {
                Kind::Drain
            };
        }
        if !accepted {
            self.reset_stream(dst);
            if let Some(server) = self.relay.server.as_mut() {
                server.handle_circuit_closed(circuit);
            }
            return;
        }
        self.relay_reschedule(src);
        self.relay_reschedule(dst);
        self.pump_later(src);
        self.pump_later(dst);
    }

    /// Moves what `stream` read (bytes past the hop/stop message first) to
    /// its partner, if the partner has written all it was given.
    fn splice_step(&mut self, stream: StreamHandle) -> super::stream::Outcome {
        use super::stream::Outcome;
        let buffer = self
            .relay
            .server
            .as_ref()
            .map_or(2048, |s| s.config().circuit_buffer.max(1));
        let Ok((_, st)) = self.stream_parts(stream) else {
            return Outcome::Nothing;
        };
        let Kind::Relay(r) = &mut st.kind else {
            return Outcome::Nothing;
        };
        let RelayStream::Splice {
            other,
            circuit,
            wake_other,
            ..
        } = &mut **r
        else {
            return Outcome::Nothing;
        };
        let (other, circuit) = (*other, *circuit);
        // This stream's output is written: whoever fills it may go on.
        if st.out.is_empty() && core::mem::take(wake_other) {
            self.relay.wake.push_back(other);
        }
        let Ok((_, st)) = self.stream_parts(stream) else {
            return Outcome::Nothing;
        };
        let Kind::Relay(r) = &mut st.kind else {
            return Outcome::Nothing;
        };
        let RelayStream::Splice { left, .. } = &mut **r else {
            return Outcome::Nothing;
        };
        let mut allow = left.map_or(buffer, |l| {
            buffer.min(usize::try_from(l).unwrap_or(usize::MAX))
        });
        let other_ready = match self
            .conns
            .get(&other.conn)
            .and_then(|c| c.streams.get(&other.id))
        {
            Some(o) => o.out.is_empty(),
            // The partner closed cleanly: this half only flushes its output
            // (what the partner still sends cannot come).
            None => return Outcome::Nothing,
        };
        if !other_ready {
            self.mark_wake(other);
            return Outcome::Nothing;
        }
        let Ok((session, st)) = self.stream_parts(stream) else {
            return Outcome::Nothing;
        };
        let sid = super::stream::yamux_id(stream);
        let Kind::Relay(r) = &mut st.kind else {
            return Outcome::Nothing;
        };
        let RelayStream::Splice { left, .. } = &mut **r else {
            return Outcome::Nothing;
        };
        if *left == Some(0) {
            // The data limit is spent in this direction: the circuit ends.
            self.end_circuit(stream, other, circuit);
            return Outcome::Nothing;
        }
        let chunk = if st.pending.is_empty() {
            match session.read_chunk(sid, allow) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    // This side finished: so does the partner's output.
                    if let Ok((session, o)) = self.stream_parts(other) {
                        if o.out.is_empty() {
                            let _ = session.close(super::stream::yamux_id(other));
                        } else {
                            o.close_after_out = true;
                        }
                    }
                    self.pump_later(other);
                    return Outcome::Nothing;
                }
                Err(ReadError::Blocked) => return Outcome::Nothing,
                Err(_) => {
                    self.end_circuit(stream, other, circuit);
                    return Outcome::Nothing;
                }
            }
        } else {
            allow = allow.min(st.pending.len());
            st.pending.split_to(allow)
        };
        if let Some(l) = left {
            *l = l.saturating_sub(chunk.len() as u64);
        }
        let Ok((session, o)) = self.stream_parts(other) else {
            return Outcome::Nothing;
        };
        match session.write(super::stream::yamux_id(other), &chunk) {
            Ok(n) => o.out.extend_from_slice(&chunk[n..]),
            Err(WriteError::Blocked) => o.out.extend_from_slice(&chunk),
            Err(_) => {
                self.end_circuit(stream, other, circuit);
                return Outcome::Nothing;
            }
        }
        self.after_session_command(other.conn);
        Outcome::Progress
    }

    /// Asks `stream` to wake its partner once its output is written.
    fn mark_wake(&mut self, stream: StreamHandle) {
        if let Ok((_, st)) = self.stream_parts(stream) {
            if let Kind::Relay(r) = &mut st.kind {
                if let RelayStream::Splice { wake_other, .. } = &mut **r {
                    *wake_other = true;
                }
            }
        }
    }

    /// Resets both halves of a circuit and frees its slots.
    fn end_circuit(&mut self, a: StreamHandle, b: StreamHandle, circuit: CircuitId) {
        for s in [a, b] {
            self.forget_relay_timer(s);
            if let Ok((_, st)) = self.stream_parts(s) {
                st.kind = Kind::Drain;
            }
            self.reset_stream(s);
        }
        if let Some(server) = self.relay.server.as_mut() {
            server.handle_circuit_closed(circuit);
        }
    }

    /// Carrier -> relayed connection, as far as its input has room, and
    /// relayed connection -> carrier, as far as the stream takes it.
    fn carrier_step(
        &mut self,
        stream: StreamHandle,
        inner: ConnectionId,
        eof: bool,
    ) -> super::stream::Outcome {
        use super::stream::Outcome;
        let now = self.now;
        let mut progressed = false;
        // Out: what the relayed connection's driver would write to a socket.
        loop {
            let data = self.transmit_buffer(now, inner).to_vec();
            if data.is_empty() {
                break;
            }
            let Ok((session, st)) = self.stream_parts(stream) else {
                return Outcome::Nothing;
            };
            if !st.out.is_empty() {
                break;
            }
            let n = match session.write(super::stream::yamux_id(stream), &data) {
                Ok(n) => n,
                Err(WriteError::Blocked) => 0,
                Err(_) => {
                    self.carrier_gone(inner, super::CloseReason::CircuitClosed);
                    return Outcome::Nothing;
                }
            };
            self.handle_written(now, inner, n);
            self.count_circuit(inner, n, 0);
            if n == 0 {
                break;
            }
            progressed = true;
        }
        // In: as much as the relayed connection takes.
        if !eof {
            let cap = self.read_capacity(inner);
            if cap > 0 {
                let Ok((session, st)) = self.stream_parts(stream) else {
                    return Outcome::Nothing;
                };
                let chunk = if st.pending.is_empty() {
                    match session.read_chunk(super::stream::yamux_id(stream), cap.min(READ_CHUNK)) {
                        Ok(c) => Some(c),
                        Err(ReadError::Blocked) => return finish(progressed),
                        Err(_) => {
                            self.carrier_gone(inner, super::CloseReason::CircuitClosed);
                            return Outcome::Nothing;
                        }
                    }
                } else {
                    Some(Some(core::mem::take(&mut st.pending)))
                };
                match chunk {
                    Some(Some(chunk)) => {
                        let used = self.handle_read(now, inner, &chunk);
                        self.count_circuit(inner, 0, used);
                        if used < chunk.len() {
                            if let Ok((_, st)) = self.stream_parts(stream) {
                                st.pending = chunk.slice(used..);
                            }
                        }
                        progressed |= used > 0;
                    }
                    Some(None) => {
                        if let Ok((_, st)) = self.stream_parts(stream) {
                            if let Kind::Relay(r) = &mut st.kind {
                                if let RelayStream::Carrier { eof, .. } = &mut **r {
                                    *eof = true;
                                }
                            }
                        }
                        self.handle_read_closed(now, inner);
                    }
                    None => {}
                }
            }
        }
        finish(progressed)
    }

    fn count_circuit(&mut self, inner: ConnectionId, sent: usize, received: usize) {
        if let Some(u) = self.conns.get_mut(&inner).and_then(|c| c.circuit.as_mut()) {
            u.sent += sent as u64;
            u.received += received as u64;
        }
    }

    /// Turns a handshake stream into the carrier of `inner`; the bytes the
    /// handshake left are the relayed connection's first.
    fn hand_over(&mut self, stream: StreamHandle, inner: ConnectionId) {
        if let Ok((_, st)) = self.stream_parts(stream) {
            st.kind = Kind::Relay(Box::new(RelayStream::Carrier { inner, eof: false }));
        }
        self.relay.carriers.insert(inner, stream);
        self.relay.queue.push_back(inner);
    }

    /// A relayed connection over `carrier`, upgrading.
    fn open_relayed(
        &mut self,
        carrier: StreamHandle,
        endpoint: Endpoint,
        remote_addr: Vec<u8>,
        expected: Option<PeerId>,
        limit: Option<CircuitLimit>,
        origin: Origin,
    ) -> ConnectionId {
        let now = self.now;
        let conn = ConnectionId(self.fresh_id());
        let up = start_upgrade(&self.config, &mut self.rng, endpoint, expected);
        let mut c = Conn::new(
            endpoint,
            remote_addr,
            ConnState::Upgrading(Box::new(up)),
            origin,
            Some(now + self.config.upgrade_timeout),
        );
        c.expected = expected;
        c.carrier = Some(carrier);
        c.limited = limit.is_some();
        c.circuit = limit.map(|limit| CircuitUse {
            limit,
            since: now,
            sent: 0,
            received: 0,
        });
        self.conns.insert(conn, c);
        self.flag_write(conn);
        self.reschedule(conn);
        conn
    }

    /// The carrier of `inner` vanished: the relayed connection ends.
    fn carrier_gone(&mut self, inner: ConnectionId, reason: super::CloseReason) {
        if self.relay.carriers.remove(&inner).is_none() {
            return;
        }
        if let Some(c) = self.conns.get(&inner) {
            if matches!(c.state, ConnState::Connecting | ConnState::Upgrading(_)) {
                self.upgrade_failed(inner, super::AttemptError::Closed);
            }
        }
        self.shut(inner, reason);
        self.forget(inner);
    }

    /// A relay stream finished cleanly in both directions. A circuit half
    /// leaves its partner to flush what it holds; the circuit is freed when
    /// both are gone.
    pub(super) fn relay_stream_closed(&mut self, stream: StreamHandle, r: Box<RelayStream>) {
        if let RelayStream::Splice { other, circuit, .. } = *r {
            self.forget_relay_timer(stream);
            if self.stream_parts(other).is_err() {
                if let Some(server) = self.relay.server.as_mut() {
                    server.handle_circuit_closed(circuit);
                }
            }
            return;
        }
        self.relay_stream_gone(stream, r);
    }

    fn forget_relay_timer(&mut self, stream: StreamHandle) {
        if let Some(t) = self.relay.timers.remove(&stream) {
            self.timers.remove(&(t, TimerKey::Relay(stream)));
        }
    }

    /// A relay stream vanished (reset, connection closed) before it was done.
    pub(super) fn relay_stream_gone(&mut self, stream: StreamHandle, r: Box<RelayStream>) {
        self.forget_relay_timer(stream);
        let peer = self.conns.get(&stream.conn).and_then(|c| c.peer);
        match *r {
            RelayStream::Reserve(_) => {
                if let Some(peer) = peer {
                    self.relay.pending_reserve.remove(&peer);
                    self.events.push_back(Event::ReservationFailed {
                        relay: peer,
                        error: RelayError::Closed,
                    });
                }
            }
            RelayStream::Connect { dial, .. } => self.events.push_back(Event::CircuitDialFailed {
                dial,
                error: CircuitDialError::Relay(RelayError::Closed),
            }),
            RelayStream::Carrier { inner, .. } => {
                let now = self.now;
                let reason = match self.conns.get(&inner).and_then(|c| c.circuit) {
                    Some(u) if u.reached(now) => super::CloseReason::CircuitLimit,
                    _ => super::CloseReason::CircuitClosed,
                };
                self.carrier_gone(inner, reason);
            }
            RelayStream::Splice { other, circuit, .. } => self.end_circuit(stream, other, circuit),
            RelayStream::StopOut { circuit, src, .. } => {
                self.refuse_hop(src, Status::ConnectionFailed);
                if let Some(server) = self.relay.server.as_mut() {
                    server.handle_circuit_closed(circuit);
                }
            }
            RelayStream::Stop(_) | RelayStream::Hop(_) => {}
        }
    }

    /// A direct connection closed: reservations made on it are gone, and
    /// our server forgets the peer's when it was the last one.
    pub(super) fn relay_connection_closed(
        &mut self,
        conn: ConnectionId,
        peer: Option<PeerId>,
        last: bool,
    ) {
        let Some(peer) = peer else { return };
        if self
            .relay
            .reservations
            .get(&peer)
            .is_some_and(|(on, _)| *on == conn)
        {
            self.relay.reservations.remove(&peer);
            self.events
                .push_back(Event::ReservationLost { relay: peer });
            self.push_identify();
        }
        if last {
            if let Some(server) = self.relay.server.as_mut() {
                server.handle_peer_disconnected(&peer);
            }
            self.drain_server_events();
        }
    }

    /// A relay stream's deadline fired.
    pub(super) fn relay_timeout(&mut self, now: Instant, stream: StreamHandle) {
        self.relay.timers.remove(&stream);
        if let Ok((_, st)) = self.stream_parts(stream) {
            if let Kind::Relay(r) = &mut st.kind {
                if let RelayStream::Splice {
                    other,
                    circuit,
                    deadline: Some(at),
                    ..
                } = **r
                {
                    if at <= now {
                        // The circuit's time is up.
                        self.end_circuit(stream, other, circuit);
                        return;
                    }
                }
                with_handshake(r, |h| h.handle_timeout(now));
            }
        }
        self.pump(stream);
        self.after_session_command(stream.conn);
    }

    /// Our server's timers (reservation expiry).
    pub(super) fn relay_server_timeout(&mut self, now: Instant) {
        self.relay.server_timer = None;
        if let Some(server) = self.relay.server.as_mut() {
            server.handle_timeout(now);
        }
        self.drain_server_events();
    }

    fn drain_server_events(&mut self) {
        let Some(server) = self.relay.server.as_mut() else {
            return;
        };
        while let Some(e) = server.poll_event() {
            self.events.push_back(Event::RelayServer(e));
        }
        let next = server.poll_timeout();
        if next != self.relay.server_timer {
            if let Some(old) = self.relay.server_timer.take() {
                self.timers.remove(&(old, TimerKey::RelayServer));
            }
            if let Some(at) = next {
                self.timers.insert((at, TimerKey::RelayServer));
            }
            self.relay.server_timer = next;
        }
    }

    fn relay_reschedule(&mut self, stream: StreamHandle) {
        let wanted = match self.stream_parts(stream) {
            Ok((_, st)) => match &mut st.kind {
                Kind::Relay(r) => match **r {
                    RelayStream::Splice { deadline, .. } => deadline,
                    _ => with_handshake(r, |h| h.poll_timeout()),
                },
                _ => None,
            },
            Err(_) => None,
        };
        let old = self.relay.timers.get(&stream).copied();
        if old == wanted {
            return;
        }
        if let Some(t) = old {
            self.timers.remove(&(t, TimerKey::Relay(stream)));
            self.relay.timers.remove(&stream);
        }
        if let Some(t) = wanted {
            self.timers.insert((t, TimerKey::Relay(stream)));
            self.relay.timers.insert(stream, t);
        }
    }

    fn pump_later(&mut self, stream: StreamHandle) {
        self.relay.wake.push_back(stream);
    }
}

fn finish(progressed: bool) -> super::stream::Outcome {
    if progressed {
        super::stream::Outcome::Progress
    } else {
        super::stream::Outcome::Nothing
    }
}

/// The calls every handshake machine answers alike.
trait Handshake {
    fn poll_transmit(&mut self, out: &mut Vec<u8>);
    fn handle_read(&mut self, now: Instant, bytes: &[u8]) -> usize;
    fn handle_eof(&mut self);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn is_done(&self) -> bool;
}

macro_rules! handshake {
    ($($t:ty),*) => {$(
        impl Handshake for $t {
            fn poll_transmit(&mut self, out: &mut Vec<u8>) { <$t>::poll_transmit(self, out) }
            fn handle_read(&mut self, now: Instant, bytes: &[u8]) -> usize { <$t>::handle_read(self, now, bytes) }
            fn handle_eof(&mut self) { <$t>::handle_eof(self) }
            fn handle_timeout(&mut self, now: Instant) { <$t>::handle_timeout(self, now) }
            fn poll_timeout(&self) -> Option<Instant> { <$t>::poll_timeout(self) }
            fn is_done(&self) -> bool { <$t>::is_done(self) }
        }
    )*};
}
handshake!(Reserve, Connect, StopResponder, HopResponder, StopRequester);

/// Runs `f` on the stream's handshake machine; a default for pipes.
fn with_handshake<T: Default>(r: &mut RelayStream, f: impl FnOnce(&mut dyn Handshake) -> T) -> T {
    match r {
        RelayStream::Reserve(m) => f(m),
        RelayStream::Connect { machine, .. } => f(machine),
        RelayStream::Stop(m) => f(m),
        RelayStream::Hop(m) => f(m),
        RelayStream::StopOut { machine, .. } => f(machine),
        RelayStream::Carrier { .. } | RelayStream::Splice { .. } => T::default(),
    }
}

fn remote_ip(addr: &[u8]) -> Option<core::net::IpAddr> {
    match addr::classify(addr).ok()?.host {
        addr::Host::Ip(ip) => Some(ip),
        _ => None,
    }
}
