//! The node: every connection and stream of one libp2p host, composed from
//! the machines of this crate, with no I/O of its own.
//!
//! An adapter owns sockets and one timer. It drains
//! [`Node::poll_output`] after every input or command and maps each output
//! to a syscall; the per-connection I/O contract (buffers, backpressure,
//! flush, FIN, linger, write stall) is the node's own:
//!
//! | output or readiness | the adapter |
//! | --- | --- |
//! | [`Action::Listen`] | binds, then [`Node::handle_listening`] or [`Node::handle_listen_failed`] |
//! | a socket accepted | [`Node::handle_inbound`] (on `Err`, drops the socket) |
//! | [`Action::Connect`] | connects, then [`Node::handle_connected`] or [`Node::handle_connect_failed`] |
//! | socket readable, or [`Output::Receive`] | reads at most [`Node::read_capacity`] bytes into [`Node::handle_read`] (0: stop reading) |
//! | end of file / socket error | [`Node::handle_read_closed`] / [`Node::handle_connection_closed`] |
//! | [`Output::Transmit`], or socket writable | writes [`Node::transmit_buffer`], reports [`Node::handle_written`], until empty or blocked |
//! | [`Action::CloseWrite`] | shuts the socket's sending side (FIN), keeps reading |
//! | [`Action::Close`] | drops the socket |
//! | [`Output::Timeout`] | sleeps until then, then [`Node::handle_timeout`] |
//! | [`Output::Event`] | hands it to the application |
//!
//! The application's commands ([`Node::dial`], [`Node::open_stream`],
//! [`Node::stream_write`], ...) go straight to the node.
//!
//! **When to call again:** after any input or command, call
//! [`poll_output`](Node::poll_output) until it returns
//! [`Output::Timeout`]; then sleep until that moment or new input.
//!
//! **Time:** every input and command takes `now`; the node keeps the latest
//! and never goes back (an earlier `now` is treated as the latest one).
//!
//! Per connection the node runs the [`upgrade`] pipeline (multistream-select,
//! noise or plaintext, multistream-select, yamux), then a yamux session over
//! the secured [`Channel`]. On each session it answers identify and ping
//! (and perf, when told to), asks the peer's identify once, and negotiates
//! every stream with multistream-select against the protocols the
//! application registered.

mod autorelay;
mod builtin;
mod dialing;
mod io;
mod limits;
mod liveness;
mod maintain;
mod perf;
mod relay;
mod shutdown;
mod stream;
mod trim;
mod types;
pub mod upgrade;

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::collections::HashMap;
use rand_core::{Rng as _, SeedableRng as _};
use smallvec::SmallVec;

use crate::dial;
use crate::identity::PeerId;
use crate::multistream::ProtocolName;
use crate::protocols::identify;
use crate::time::Instant;
use crate::yamux;

pub use io::PIECE_MIN;
use stream::NodeStream;
pub use upgrade::{Channel, Endpoint, NoiseSecrets, Security, UpgradeError, Upgraded};

pub use liveness::{BeatId, Payload};
pub use maintain::{MaintainConfig, MaintainConfigError, STATIC_TAG, TRUSTED_TAG};
pub use perf::{PerfConfig, PerfError, PerfFailure, PerfParams, PerfReport};
pub use types::*;

/// One connection and where its upgrade stands.
#[derive(Debug)]
struct Conn {
    endpoint: Endpoint,
    remote_addr: Vec<u8>,
    state: ConnState,
    peer: Option<PeerId>,
    /// Why the connection exists (which dial, if any).
    origin: Origin,
    /// The peer a dial expects to reach.
    expected: Option<PeerId>,
    /// Connect or upgrade deadline, before the session runs.
    deadline: Option<Instant>,
    /// The deadline registered in the timer table.
    timer: Option<Instant>,
    streams: HashMap<u32, NodeStream>,
    /// What carries the session's bytes (clear, or noise frames).
    channel: upgrade::Channel,
    negotiating_inbound: usize,
    /// Buffers and the close sequence (see [`io`]).
    io: io::ConnIo,
    /// Inbound and still upgrading: counted in `max_pending`, with the IP
    /// its subnets count (see [`limits`]).
    admitted: Option<Option<core::net::IpAddr>>,
    /// The IP an established inbound connection counts against.
    counted_ip: Option<core::net::IpAddr>,
    /// For a relayed connection: the stream of the relay connection that
    /// carries its bytes (see [`relay`]).
    carrier: Option<StreamHandle>,
    /// Runs only the protocols allowed on limited connections.
    limited: bool,
    /// The relay's limit on the circuit of a relayed connection, and how
    /// much of it is used.
    circuit: Option<relay::CircuitUse>,
    /// Our outbound ping stream, reused by every ping on this connection
    /// (the spec allows one per peer; go and rust keep one open).
    ping_stream: Option<u32>,
}

// The session is the steady state of every connection, so it stays inline;
// only the short-lived upgrade is boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum ConnState {
    Connecting,
    Upgrading(Box<upgrade::Upgrade>),
    Muxed(yamux::Session),
    /// Given up on: inert, only its I/O finishes (flush, FIN, linger).
    Closed,
}

/// Why a connection exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Accepted from a listener.
    Inbound,
    /// An attempt of the dialer (a dial to a known peer).
    Attempt(dial::AttemptId),
    /// A dial to an unknown peer (no peer id).
    Peerless(DialId),
    /// An attempt the dialer gave up on (cancelled); only closing remains.
    Abandoned,
    /// A dial through a relay ([`Node::dial_circuit`]).
    Circuit(DialId),
}

/// One pending [`Node::ping`].
#[derive(Debug)]
struct Ping {
    peer: PeerId,
    stream: StreamHandle,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Conn(ConnectionId),
    Ping(PingId),
    /// A perf run's deadline.
    Perf(PerfId),
    Dialer,
    /// A relay handshake's deadline.
    Relay(StreamHandle),
    /// Our relay server's next reservation expiry.
    RelayServer,
    /// The relay finder's next deadline.
    AutoRelay,
    /// The heartbeat beaters' and the peer monitor's next deadline.
    Liveness,
    /// The dial scheduler's and the peer store's next deadline.
    Maintain,
    /// The connection manager's next deadline.
    Trim,
}

/// The sans-IO libp2p node. See the [module docs](self).
pub struct Node {
    config: Config,
    local_peer: PeerId,
    now: Instant,
    next_id: u64,
    conns: HashMap<ConnectionId, Conn>,
    peers: HashMap<PeerId, SmallVec<[ConnectionId; 2]>>,
    /// What each connected peer said in identify (for lazy negotiation).
    peer_protocols: HashMap<PeerId, Vec<String>>,
    protected: HashMap<PeerId, SmallVec<[String; 1]>>,
    protocols: Vec<ProtocolName>,
    /// Registered protocols that also run on limited connections.
    limited_protocols: Vec<ProtocolName>,
    /// AutoRelay, when enabled.
    autorelay: Option<Box<autorelay::AutoRelay>>,
    /// Heartbeat targets and the aggregator, when started.
    liveness: Option<Box<liveness::Liveness>>,
    /// Peer maintenance (scheduler and peer store), when enabled.
    maintain: Option<Box<maintain::Maintain>>,
    /// The connection manager, when enabled.
    trim: Option<Box<trim::Trim>>,
    listen_addrs: Vec<Vec<u8>>,
    /// Bound listeners and their addresses.
    listeners: Vec<(ListenerId, Vec<u8>)>,
    /// [`Node::shutdown`] was called.
    closing: bool,
    /// [`Event::ShutdownComplete`] was emitted.
    shutdown_reported: bool,
    dialer: dial::Dialer,
    /// The dialer's deadline registered in the timer table.
    dialer_timer: Option<Instant>,
    /// Dialer requests and the node's ids for them.
    requests: HashMap<dial::RequestId, DialId>,
    /// Running dialer attempts and their connections.
    attempts: HashMap<dial::AttemptId, ConnectionId>,
    /// Detailed reasons of failed attempts, per (peer, address), until the
    /// request that tried them is answered.
    attempt_errors: HashMap<PeerId, Vec<(Vec<u8>, AttemptError)>>,
    /// Dials without a peer id.
    peerless: HashMap<DialId, dialing::Peerless>,
    pings: HashMap<PingId, Ping>,
    /// Our perf runs under way (at most `perf.max_runs`).
    perfs: HashMap<PerfId, perf::PerfRun>,
    /// Runs peers asked of us under way (at most `perf.max_served`).
    perf_served: usize,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    wants_write: VecDeque<ConnectionId>,
    /// Inbound admission counts.
    inbound: limits::InboundCounts,
    /// Connections whose input was held and that may be read again.
    resume: VecDeque<ConnectionId>,
    timers: BTreeSet<(Instant, TimerKey)>,
    rng: rand_chacha::ChaCha20Rng,
    /// Reservations, relayed connections, our relay server.
    relay: relay::RelayState,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("peer", &self.local_peer)
            .field("connections", &self.conns.len())
            .field("dial_requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with `config`, at time `now`.
    pub fn new(now: Instant, config: Config) -> Result<Self, ConfigError> {
        if config.security.is_empty() {
            return Err(ConfigError::NoSecurity);
        }
        if config.security.contains(&Security::Noise) && config.rng_seed == [0; 32] {
            return Err(ConfigError::ZeroRngSeed);
        }
        for (name, v) in [
            ("max_connections", config.max_connections),
            ("max_connections_per_peer", config.max_connections_per_peer),
            (
                "max_negotiating_inbound_streams",
                config.max_negotiating_inbound_streams,
            ),
            ("perf.max_runs", config.perf.max_runs),
            ("perf.max_served", config.perf.max_served),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        config.yamux.validate()?;
        let local_peer = config.keypair.peer_id();
        let dialer = dial::Dialer::new(local_peer, config.dialer)?;
        Ok(Node {
            local_peer,
            dialer,
            dialer_timer: None,
            requests: HashMap::default(),
            attempts: HashMap::default(),
            attempt_errors: HashMap::default(),
            peerless: HashMap::default(),
            rng: rand_chacha::ChaCha20Rng::from_seed(config.rng_seed),
            relay: relay::RelayState::default(),
            config,
            now,
            next_id: 1,
            conns: HashMap::default(),
            peers: HashMap::default(),
            peer_protocols: HashMap::default(),
            protected: HashMap::default(),
            protocols: Vec::new(),
            limited_protocols: Vec::new(),
            autorelay: None,
            liveness: None,
            maintain: None,
            trim: None,
            listen_addrs: Vec::new(),
            listeners: Vec::new(),
            closing: false,
            shutdown_reported: false,
            pings: HashMap::default(),
            perfs: HashMap::default(),
            perf_served: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            wants_write: VecDeque::new(),
            inbound: limits::InboundCounts::default(),
            resume: VecDeque::new(),
            timers: BTreeSet::new(),
        })
    }

    // ------------------------------------------------------------ getters

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether at least one upgraded connection to `peer` exists.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.best_connection(peer).is_some()
    }

    /// The upgraded connections to `peer`.
    pub fn connections_to(&self, peer: &PeerId) -> impl Iterator<Item = ConnectionId> + '_ {
        self.peers.get(peer).into_iter().flatten().copied()
    }

    /// The muxer's counters of an established connection (frames, and
    /// payload bytes copied or handed on without a copy); `None` before
    /// the upgrade finished or once the connection is gone.
    pub fn muxer_stats(&self, conn: ConnectionId) -> Option<&crate::yamux::Stats> {
        match &self.conns.get(&conn)?.state {
            ConnState::Muxed(session) => Some(session.stats()),
            _ => None,
        }
    }

    /// Number of connections (any state).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The addresses we listen on (as reported by the adapter).
    pub fn listen_addrs(&self) -> &[Vec<u8>] {
        &self.listen_addrs
    }

    /// Whether `peer` carries at least one protection tag.
    pub fn is_protected(&self, peer: &PeerId) -> bool {
        self.protected.get(peer).is_some_and(|t| !t.is_empty())
    }

    /// The protocols the peer listed in identify, if it identified.
    pub fn peer_protocols(&self, peer: &PeerId) -> Option<&[String]> {
        self.peer_protocols.get(peer).map(|v| v.as_slice())
    }

    /// The protocol a stream agreed on, once it did.
    pub fn stream_protocol(&self, stream: StreamHandle) -> Option<&str> {
        self.conns
            .get(&stream.conn)?
            .streams
            .get(&stream.id)?
            .protocol
            .as_deref()
    }

    // ------------------------------------------------------------ commands

    /// Serves `protocol` on inbound streams (announced in identify, pushed
    /// to connected peers).
    pub fn register_protocol(
        &mut self,
        protocol: impl Into<ProtocolName>,
    ) -> Result<(), RegisterError> {
        let protocol = protocol.into();
        if !crate::multistream::codec::is_valid_protocol(&protocol) {
            return Err(RegisterError::InvalidName);
        }
        // The name and its newline must fit one message.
        let max = crate::multistream::codec::DEFAULT_MAX_MESSAGE_LEN - 1;
        if protocol.len() > max {
            return Err(RegisterError::TooLong {
                len: protocol.len(),
                max,
            });
        }
        if !self.protocols.contains(&protocol) {
            self.protocols.push(protocol);
            self.push_identify();
        }
        Ok(())
    }

    /// Like [`register_protocol`](Self::register_protocol), and the
    /// protocol also runs on limited (relayed) connections, both ways: a
    /// relay's limit applies to it (js-libp2p's `runOnLimitedConnection`).
    pub fn register_protocol_on_limited(
        &mut self,
        protocol: impl Into<ProtocolName>,
    ) -> Result<(), RegisterError> {
        let protocol = protocol.into();
        self.register_protocol(protocol.clone())?;
        self.allow_on_limited(protocol);
        Ok(())
    }

    /// Lets `protocol` run on limited connections: streams we open for it
    /// may use one, and inbound streams for it are served there when it is
    /// also [registered](Self::register_protocol). A dialer that only opens
    /// the protocol needs this alone.
    pub fn allow_on_limited(&mut self, protocol: impl Into<ProtocolName>) {
        let protocol = protocol.into();
        if !self.limited_protocols.contains(&protocol) {
            self.limited_protocols.push(protocol);
        }
    }

    /// Asks the adapter to listen on `addr` (binary multiaddr).
    pub fn listen_on(&mut self, addr: Vec<u8>) -> ListenerId {
        let listener = ListenerId(self.fresh_id());
        if self.closing {
            self.events.push_back(Event::ListenFailed { listener });
        } else {
            self.actions.push_back(Action::Listen { listener, addr });
        }
        listener
    }

    /// Closes a connection: GoAway to the peer, its streams reset,
    /// [`Event::ConnectionClosed`]; the socket then gets what was owed, a
    /// FIN ([`Action::CloseWrite`]) and, after the linger,
    /// [`Action::Close`].
    pub fn close_connection(&mut self, conn: ConnectionId) {
        self.close_with(conn, CloseReason::Local);
    }

    /// Tags `peer` as protected (a connection manager must not trim it).
    pub fn protect(&mut self, peer: PeerId, tag: &str) {
        let tags = self.protected.entry(peer).or_default();
        if !tags.iter().any(|t| t == tag) {
            tags.push(String::from(tag));
        }
        self.trim_protect(peer, tag, true);
    }

    /// Removes one protection tag; returns whether the peer is still protected.
    pub fn unprotect(&mut self, peer: &PeerId, tag: &str) -> bool {
        self.trim_protect(*peer, tag, false);
        let Some(tags) = self.protected.get_mut(peer) else {
            return false;
        };
        tags.retain(|t| t != tag);
        if tags.is_empty() {
            self.protected.remove(peer);
            return false;
        }
        true
    }

    // ------------------------------------------------------------ inputs

    /// A listener is bound.
    pub fn handle_listening(&mut self, now: Instant, listener: ListenerId, addr: Vec<u8>) {
        self.tick(now);
        if self.listening_while_closing(listener) {
            self.events.push_back(Event::ListenFailed { listener });
            return;
        }
        self.listeners.push((listener, addr.clone()));
        if !self.listen_addrs.contains(&addr) {
            self.listen_addrs.push(addr.clone());
            self.relay_listen_addrs_changed();
            self.push_identify();
        }
        self.events.push_back(Event::Listening { listener, addr });
    }

    /// A listener could not be bound.
    pub fn handle_listen_failed(&mut self, now: Instant, listener: ListenerId) {
        self.tick(now);
        self.events.push_back(Event::ListenFailed { listener });
    }

    /// A socket was accepted from `remote_addr`. On `Err`, close it.
    pub fn handle_inbound(
        &mut self,
        now: Instant,
        remote_addr: Vec<u8>,
    ) -> Result<ConnectionId, InboundError> {
        let now = self.tick(now);
        if self.closing {
            return Err(InboundError::ShuttingDown);
        }
        if self.conns.len() >= self.config.max_connections {
            return Err(InboundError::ConnectionLimit);
        }
        let counted_ip = self.inbound.admit(&self.config.inbound, &remote_addr)?;
        let conn = ConnectionId(self.fresh_id());
        let upgrade = start_upgrade(&self.config, &mut self.rng, Endpoint::Listener, None);
        self.conns.insert(
            conn,
            Conn::new(
                Endpoint::Listener,
                remote_addr,
                ConnState::Upgrading(Box::new(upgrade)),
                Origin::Inbound,
                Some(now + self.config.upgrade_timeout),
            ),
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.admitted = Some(counted_ip);
        }
        self.flag_write(conn);
        self.reschedule(conn);
        Ok(conn)
    }

    /// An outbound connect finished (for TCP: the three-way handshake is
    /// done and the upgrade starts, which the dialer's hold rule needs).
    /// For a connection the node has given up on, it asks to close it.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnectionId) {
        let now = self.tick(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            // Cancelled while connecting: the adapter still has a socket.
            self.actions.push_back(Action::Close { conn });
            return;
        };
        if !matches!(c.state, ConnState::Connecting) {
            return;
        }
        if c.origin == Origin::Abandoned {
            self.shut(conn, CloseReason::Local);
            return;
        }
        c.state = ConnState::Upgrading(Box::new(start_upgrade(
            &self.config,
            &mut self.rng,
            Endpoint::Dialer,
            c.expected,
        )));
        c.deadline = Some(now + self.config.upgrade_timeout);
        if let Origin::Attempt(attempt) = c.origin {
            let _ = self.dialer.handle_dial_connected(now, attempt);
            self.drive_dialer();
        }
        self.flag_write(conn);
        self.reschedule(conn);
    }

    /// An outbound connect failed; the adapter has nothing to close.
    pub fn handle_connect_failed(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        error: TransportError,
    ) {
        self.tick(now);
        self.attempt_failed(conn, AttemptError::Transport(error));
    }

    /// Timers due at `now` fire. Safe to call at any time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        while let Some(&(at, key)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, key));
            match key {
                TimerKey::Conn(conn) => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.timer = None;
                    }
                    self.conn_timeout(now, conn);
                    self.reschedule(conn);
                }
                TimerKey::Dialer => {
                    self.dialer_timer = None;
                    self.dialer.handle_timeout(now);
                    self.drive_dialer();
                }
                TimerKey::Relay(stream) => self.relay_timeout(now, stream),
                TimerKey::RelayServer => self.relay_server_timeout(now),
                TimerKey::AutoRelay => self.autorelay_timeout(now),
                TimerKey::Liveness => self.liveness_timeout(now),
                TimerKey::Maintain => self.maintain_timeout(now),
                TimerKey::Trim => self.trim_timeout(now),
                TimerKey::Perf(perf) => self.perf_timeout(now, perf),
                TimerKey::Ping(ping) => {
                    if self.pings.get(&ping).is_some_and(|p| p.deadline <= now) {
                        let p = self.pings.remove(&ping).expect("checked");
                        self.reset_stream(p.stream);
                        self.events.push_back(Event::PingFailed {
                            ping,
                            peer: p.peer,
                            error: PingFailure::Timeout,
                        });
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ outputs

    /// The next thing the adapter must do.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.run_relays();
        while let Some(action) = self.actions.pop_front() {
            if !self.relayed_action(&action) {
                return Some(action);
            }
        }
        None
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.run_relays();
        self.next_event()
    }

    /// The next event for the application, after AutoRelay (when on) has
    /// learned from it; the events of the heartbeat streams are taken by
    /// the heartbeat code on the way.
    fn next_event(&mut self) -> Option<Event> {
        loop {
            let event = self.events.pop_front()?;
            self.autorelay_observe(&event);
            self.maintain_observe(&event);
            self.trim_observe(&event);
            if let Some(event) = self.liveness_take(event) {
                return Some(event);
            }
        }
    }

    /// The earliest moment [`handle_timeout`](Self::handle_timeout) has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    // ------------------------------------------------------------ internals

    /// Takes `now` from an input or command; time never goes backwards.
    fn tick(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn best_connection(&self, peer: &PeerId) -> Option<ConnectionId> {
        // The oldest established connection that is not closing and whose
        // session accepts new streams; an unlimited one before a limited.
        let usable = |id: &ConnectionId| {
            self.conns.get(id).is_some_and(|c| {
                matches!(&c.state, ConnState::Muxed(s) if !s.is_closed() && s.remote_go_away().is_none() && s.local_go_away().is_none())
            })
        };
        let list = self.peers.get(peer)?;
        list.iter()
            .copied()
            .filter(usable)
            .find(|id| !self.is_limited(*id))
            .or_else(|| list.iter().copied().find(usable))
    }

    fn flag_write(&mut self, conn: ConnectionId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.io.write_flagged {
                c.io.write_flagged = true;
                if c.carrier.is_some() {
                    self.relay.queue.push_back(conn);
                } else {
                    self.wants_write.push_back(conn);
                }
            }
        }
    }

    /// Recomputes the connection's deadline and updates the timer table.
    fn reschedule(&mut self, conn: ConnectionId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let machine = match &c.state {
            ConnState::Muxed(session) => session.poll_timeout(),
            ConnState::Closed => None,
            _ => c.deadline,
        };
        let wanted = match (machine, c.io.deadline(&self.config.io)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if wanted != c.timer {
            if let Some(old) = c.timer {
                self.timers.remove(&(old, TimerKey::Conn(conn)));
            }
            if let Some(new) = wanted {
                self.timers.insert((new, TimerKey::Conn(conn)));
            }
            c.timer = wanted;
        }
    }

    fn conn_timeout(&mut self, now: Instant, conn: ConnectionId) {
        if self.io_timeout(now, conn) {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match &mut c.state {
            ConnState::Connecting if c.deadline.is_some_and(|d| d <= now) => {
                self.attempt_failed(conn, AttemptError::Timeout);
                self.shut(conn, CloseReason::Local);
            }
            ConnState::Upgrading(_) if c.deadline.is_some_and(|d| d <= now) => {
                self.upgrade_timed_out(conn);
            }
            ConnState::Muxed(session) => {
                session.handle_timeout(now);
                self.process_session(conn);
                self.flag_write(conn);
            }
            _ => {}
        }
    }

    fn upgrade_failed(&mut self, conn: ConnectionId, error: AttemptError) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if matches!(
            c.origin,
            Origin::Attempt(_) | Origin::Peerless(_) | Origin::Circuit(_)
        ) {
            self.attempt_failed(conn, error);
        } else {
            if c.endpoint == Endpoint::Listener {
                self.events
                    .push_back(Event::InboundUpgradeFailed { conn, error });
            }
            self.shut(conn, CloseReason::Local);
        }
    }

    /// The upgrade finished: start the session. Returns false if the
    /// connection was refused (per-peer limit).
    fn on_upgraded(&mut self, conn: ConnectionId, up: Upgraded) -> bool {
        let count = self.peers.get(&up.peer).map_or(0, |l| l.len());
        if count >= self.config.max_connections_per_peer {
            self.upgrade_failed(conn, AttemptError::PeerLimit);
            return false;
        }
        let c = self.conns.get_mut(&conn).expect("caller holds it");
        if let ConnState::Upgrading(up) = &mut c.state {
            // The upgrade's last bytes (the muxer echo) go before any frame.
            let now = self.now;
            c.io.produce(now, |out| {
                let _ = up.poll_transmit(out);
            });
            c.channel = up.take_channel();
        }
        let role = match c.endpoint {
            Endpoint::Dialer => yamux::Role::Client,
            Endpoint::Listener => yamux::Role::Server,
        };
        let session = yamux::Session::new(self.now, role, self.config.yamux.clone())
            .expect("validated in Node::new");
        c.state = ConnState::Muxed(session);
        c.peer = Some(up.peer);
        self.end_admission(conn);
        let c = self.conns.get_mut(&conn).expect("caller holds it");
        c.deadline = None;
        let origin = core::mem::replace(&mut c.origin, Origin::Inbound);
        let endpoint = c.endpoint;
        let remote_addr = c.remote_addr.clone();
        self.peers.entry(up.peer).or_default().push(conn);
        self.events.push_back(Event::ConnectionEstablished {
            conn,
            peer: up.peer,
            endpoint,
            remote_addr,
            security: up.security,
            muxer: up.muxer,
        });
        self.dial_succeeded(conn, origin, up.peer);
        // Both sides ask the other's identify once per connection.
        self.open_builtin(conn, stream::Builtin::IdentifyRequest);
        true
    }

    fn identify_info(&self, conn: ConnectionId) -> identify::Info {
        let mut protocols: Vec<String> =
            self.protocols.iter().map(|p| String::from(&**p)).collect();
        protocols.extend(builtin::protocols(self.config.perf.serve).map(String::from));
        protocols.extend(self.relay_protocols().map(String::from));
        identify::Info {
            public_key: self.config.keypair.public(),
            protocol_version: self.config.protocol_version.clone(),
            agent_version: self.config.agent_version.clone(),
            listen_addrs: self
                .listen_addrs
                .iter()
                .cloned()
                .chain(self.relay_addrs())
                .collect(),
            observed_addr: self.conns.get(&conn).map(|c| c.remote_addr.clone()),
            protocols,
        }
    }

    /// Tells every connected peer that our protocols or addresses changed.
    fn push_identify(&mut self) {
        let conns: Vec<ConnectionId> = self.peers.values().flatten().copied().collect();
        for conn in conns {
            self.open_builtin(conn, stream::Builtin::IdentifyPush);
        }
    }

    /// What inbound streams on `conn` may negotiate: on a limited
    /// connection only the built-ins, relay and opted-in protocols.
    fn inbound_protocols(&self, conn: ConnectionId) -> impl Iterator<Item = ProtocolName> + '_ {
        let limited = self.is_limited(conn);
        self.protocols
            .iter()
            .filter(move |p| !limited || self.limited_protocols.contains(p))
            .cloned()
            .chain(builtin::protocols(self.serves_perf(limited)).map(Cow::Borrowed))
            .chain(self.relay_protocols().map(Cow::Borrowed))
    }
}

impl Conn {
    fn new(
        endpoint: Endpoint,
        remote_addr: Vec<u8>,
        state: ConnState,
        origin: Origin,
        deadline: Option<Instant>,
    ) -> Self {
        Conn {
            endpoint,
            remote_addr,
            state,
            peer: None,
            origin,
            expected: None,
            deadline,
            timer: None,
            streams: HashMap::default(),
            channel: upgrade::Channel::Clear,
            negotiating_inbound: 0,
            io: io::ConnIo::default(),
            admitted: None,
            counted_ip: None,
            carrier: None,
            limited: false,
            circuit: None,
            ping_stream: None,
        }
    }
}

/// Fresh X25519 secrets for one noise handshake.
/// The upgrade of a new connection: our security list, fresh noise
/// secrets from `rng`, the configured noise cipher.
fn start_upgrade(
    config: &Config,
    rng: &mut rand_chacha::ChaCha20Rng,
    endpoint: Endpoint,
    expected: Option<PeerId>,
) -> upgrade::Upgrade {
    let mut secrets = upgrade::NoiseSecrets {
        static_secret: [0; 32],
        ephemeral_secret: [0; 32],
    };
    rng.fill_bytes(&mut secrets.static_secret);
    rng.fill_bytes(&mut secrets.ephemeral_secret);
    upgrade::Upgrade::new(
        endpoint,
        &config.keypair,
        &config.security,
        expected,
        secrets,
    )
    .expect("Node::new checked the security list")
    .with_noise_cipher(config.noise_cipher)
}

/// Splits a trailing `/p2p/<id>` off a binary multiaddr. `None` if the
/// address does not parse.
fn split_p2p(addr: &[u8]) -> Option<(Vec<u8>, Option<PeerId>)> {
    let info = crate::addr::classify(addr).ok()?;
    let Some(peer) = info.peer else {
        return Some((addr.to_vec(), None));
    };
    // The suffix is `varint(421) varint(len) multihash`.
    let mh = peer.as_bytes();
    let mut suffix = Vec::with_capacity(mh.len() + 4);
    crate::varint::push(421, &mut suffix);
    crate::varint::push(mh.len() as u64, &mut suffix);
    suffix.extend_from_slice(mh);
    let base = addr.strip_suffix(suffix.as_slice())?;
    Some((base.to_vec(), Some(peer)))
}

fn addr_peer(addr: &[u8]) -> Option<PeerId> {
    crate::addr::classify(addr).ok()?.peer
}

#[cfg(test)]
mod tests;
