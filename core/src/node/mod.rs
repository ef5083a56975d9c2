//! The node: every connection and stream of one libp2p host, composed from
//! the machines of this crate, with no I/O of its own.
//!
//! An adapter owns sockets and one timer and translates:
//!
//! | adapter sees | it calls |
//! | --- | --- |
//! | [`Action::Listen`] | binds, then [`Node::handle_listening`] or [`Node::handle_listen_failed`] |
//! | a socket accepted | [`Node::handle_inbound`] |
//! | [`Action::Connect`] | connects, then [`Node::handle_connected`] or [`Node::handle_connect_failed`] |
//! | bytes read | [`Node::handle_read`] (it returns how many were taken: keep the rest) |
//! | end of file / socket error | [`Node::handle_read_closed`] / [`Node::handle_connection_closed`] |
//! | [`Node::poll_wants_write`] names a connection | [`Node::poll_transmit`] until it returns 0, writing the bytes |
//! | [`Action::Close`] | flushes `poll_transmit` for it, closes the socket, calls [`Node::handle_connection_closed`] |
//! | the timer at [`Node::poll_timeout`] | [`Node::handle_timeout`] |
//!
//! and hands [`Event`]s to the application, whose commands
//! ([`Node::dial`], [`Node::open_stream`], [`Node::stream_write`], ...) go
//! straight to the node.
//!
//! **When to call again:** after any input or command, drain
//! [`poll_action`](Node::poll_action), [`poll_event`](Node::poll_event) and
//! [`poll_wants_write`](Node::poll_wants_write) (then `poll_transmit` for each
//! connection named) until all are empty; then sleep until
//! [`poll_timeout`](Node::poll_timeout) or new input.
//!
//! Per connection the node runs the [`upgrade`] pipeline (multistream-select,
//! noise or plaintext, multistream-select, yamux), then a yamux session over
//! the secured [`Channel`]. On each
//! session it answers identify and ping, asks the peer's identify once, and
//! negotiates every stream with multistream-select against the protocols the
//! application registered.

mod dialing;
mod stream;
pub mod upgrade;

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use hashbrown::HashMap;
use rand_core::{Rng as _, SeedableRng as _};
use smallvec::SmallVec;

use crate::dial;
use crate::identity::{Keypair, PeerId};
use crate::multistream::ProtocolName;
use crate::protocols::identify;
use crate::time::Instant;
use crate::yamux;

use stream::NodeStream;
pub use upgrade::{Channel, Endpoint, NoiseSecrets, Security, UpgradeError, Upgraded};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u64);

        impl $name {
            /// The raw number (unique within one node).
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

id_type!(
    /// One transport connection (inbound or outbound).
    ConnectionId,
    "conn#"
);
id_type!(
    /// One listener requested with [`Node::listen_on`].
    ListenerId,
    "listener#"
);
id_type!(
    /// One [`Node::dial`] request.
    DialId,
    "dial#"
);
id_type!(
    /// One [`Node::ping`] request.
    PingId,
    "ping#"
);

/// A stream: its connection and its yamux id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamHandle {
    conn: ConnectionId,
    id: u32,
}

impl StreamHandle {
    /// The connection the stream runs on.
    pub fn connection(self) -> ConnectionId {
        self.conn
    }
}

impl fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/stream#{}", self.conn, self.id)
    }
}

/// Everything a node needs to know up front.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Our identity.
    pub keypair: Keypair,
    /// Security protocols in preference order (not empty).
    pub security: Vec<Security>,
    /// Settings of every yamux session.
    pub yamux: yamux::Config,
    /// Identify `protocolVersion`.
    pub protocol_version: String,
    /// Identify `agentVersion`.
    pub agent_version: String,
    /// Connections at once, both directions. Default 1024.
    pub max_connections: usize,
    /// Connections to one peer at once. Default 8.
    pub max_connections_per_peer: usize,
    /// Inbound streams still negotiating per connection; beyond it new ones
    /// are reset. Default 128 (rust-libp2p's default).
    pub max_negotiating_inbound_streams: usize,
    /// Ranking, per-peer scheduling, limits, backoff and black-hole
    /// detection of outbound dials (go-libp2p's defaults).
    pub dialer: dial::DialerConfig,
    /// Time for the whole upgrade (security + muxer). Default 10 s.
    pub upgrade_timeout: Duration,
    /// Time for one ping's echo. Default 10 s.
    pub ping_timeout: Duration,
    /// Seed of the node's RNG (noise handshake keys, ping payloads). It must
    /// be secret and random wherever noise is used: [`Node::new`] refuses
    /// the all-zero default then. Adapters seed it from the OS; tests fix it
    /// so runs repeat.
    pub rng_seed: [u8; 32],
}

impl Config {
    /// The defaults for `keypair`: noise as the only security protocol
    /// (add [`Security::Plaintext`] only for tests or trusted networks; a
    /// listener offering both lets an active attacker pick plaintext).
    pub fn new(keypair: Keypair) -> Self {
        Config {
            keypair,
            security: alloc::vec![Security::Noise],
            yamux: yamux::Config::default(),
            protocol_version: String::from("ipfs/0.1.0"),
            agent_version: alloc::format!("sansp2p/{}", env!("CARGO_PKG_VERSION")),
            max_connections: 1024,
            max_connections_per_peer: 8,
            max_negotiating_inbound_streams: 128,
            dialer: dial::DialerConfig::default(),
            upgrade_timeout: Duration::from_secs(10),
            ping_timeout: crate::protocols::ping::DEFAULT_TIMEOUT,
            rng_seed: [0; 32],
        }
    }
}

/// A configuration the node cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `security` is empty.
    #[error("no security protocol configured")]
    NoSecurity,
    /// Noise is configured but `rng_seed` is all zeros: every handshake key
    /// would be predictable.
    #[error("noise needs a random rng_seed (it is all zeros)")]
    ZeroRngSeed,
    /// A limit is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The yamux settings are inconsistent.
    #[error("yamux: {0}")]
    Yamux(#[from] yamux::ConfigError),
    /// The dialer settings are inconsistent.
    #[error("dialer: {0}")]
    Dialer(#[from] dial::worker::DialerConfigError),
}

/// What the adapter must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Bind a listener on `addr` (binary multiaddr).
    Listen {
        /// The listener.
        listener: ListenerId,
        /// Where.
        addr: Vec<u8>,
    },
    /// Open a transport connection to `addr`.
    Connect {
        /// The id the node gave the connection.
        conn: ConnectionId,
        /// Where (binary multiaddr, without a `/p2p/` suffix).
        addr: Vec<u8>,
    },
    /// Write what `poll_transmit` still has for `conn`, then close it and
    /// call [`Node::handle_connection_closed`].
    Close {
        /// The connection.
        conn: ConnectionId,
    },
}

/// Why a transport connect failed, as the adapter reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer refused the connection.
    #[error("connection refused")]
    Refused,
    /// No route, host unreachable, or the address could not be resolved.
    #[error("unreachable")]
    Unreachable,
    /// The adapter cannot dial this kind of address.
    #[error("unsupported address")]
    Unsupported,
    /// Any other failure.
    #[error("transport error")]
    Other,
}

/// Why one address of a dial failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptError {
    /// The transport connect failed.
    #[error("connect: {0}")]
    Transport(#[from] TransportError),
    /// The attempt did not finish within the dial timeout.
    #[error("attempt timed out")]
    Timeout,
    /// Not dialed: the address is in dial backoff after recent failures.
    #[error("dial backoff")]
    Backoff,
    /// Not dialed: black-hole detection refused it (UDP or IPv6 looks dead).
    #[error("refused by black-hole detection")]
    BlackHoled,
    /// Not dialed: too many dials are waiting.
    #[error("too many dials")]
    TooManyDials,
    /// The upgrade failed (including reaching the wrong peer).
    #[error("upgrade: {0}")]
    Upgrade(#[from] UpgradeError),
    /// The peer already has `max_connections_per_peer` connections.
    #[error("connection limit for the peer reached")]
    PeerLimit,
    /// The connection closed before the upgrade finished.
    #[error("connection closed during the upgrade")]
    Closed,
    /// The address is not a binary multiaddr this node can use.
    #[error("invalid address")]
    InvalidAddress,
}

/// A refused [`Node::dial`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// No address given.
    #[error("no address to dial")]
    NoAddresses,
    /// `max_connections` reached.
    #[error("connection limit reached")]
    ConnectionLimit,
    /// The peer is ourselves.
    #[error("refusing to dial ourselves")]
    DialSelf,
    /// Too many dial requests are pending.
    #[error("too many pending dial requests")]
    TooManyRequests,
}

/// A refused inbound connection (the adapter closes the socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// `max_connections` reached.
    #[error("connection limit reached")]
    ConnectionLimit,
}

/// A refused [`Node::open_stream`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStreamError {
    /// No upgraded connection to the peer.
    #[error("not connected to the peer")]
    NotConnected,
    /// No protocol given, or a name that is not a valid protocol.
    #[error("invalid protocol list")]
    InvalidProtocols,
    /// The yamux session refused (limits, GoAway).
    #[error("yamux: {0}")]
    Yamux(#[from] yamux::OpenError),
}

/// Why a stream we opened was not established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamOpenFailure {
    /// The peer supports none of the protocols (or negotiation broke).
    #[error("negotiation: {0}")]
    Negotiation(crate::multistream::NegotiationError),
    /// The peer reset the stream or the connection closed.
    #[error("stream reset")]
    Reset,
}

/// A failed stream operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// No such stream (never existed, or already finished and freed).
    #[error("unknown stream")]
    UnknownStream,
    /// Nothing to read or no room to write now; an event tells when to retry.
    #[error("would block")]
    WouldBlock,
    /// The stream is still negotiating its protocol.
    #[error("stream not open yet")]
    NotOpen,
    /// The peer reset the stream.
    #[error("stream reset")]
    Reset,
    /// Writing after our own close.
    #[error("stream closed for writing")]
    Closed,
}

/// A refused [`Node::ping`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// No upgraded connection to the peer.
    #[error("not connected to the peer")]
    NotConnected,
    /// The stream could not be opened.
    #[error("yamux: {0}")]
    Yamux(#[from] yamux::OpenError),
}

/// Why a ping failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PingFailure {
    /// No echo within `ping_timeout`.
    #[error("timed out")]
    Timeout,
    /// The echo differs from what we sent.
    #[error("wrong echo")]
    WrongEcho,
    /// The peer does not speak ping, reset the stream, or the connection closed.
    #[error("stream failed")]
    Stream,
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A listener is up.
    Listening {
        /// The listener.
        listener: ListenerId,
        /// The address it is bound to.
        addr: Vec<u8>,
    },
    /// A listener could not be bound.
    ListenFailed {
        /// The listener.
        listener: ListenerId,
    },
    /// A connection finished its upgrade.
    ConnectionEstablished {
        /// The connection.
        conn: ConnectionId,
        /// The authenticated peer.
        peer: PeerId,
        /// Who opened it.
        endpoint: Endpoint,
        /// The peer's address on this connection.
        remote_addr: Vec<u8>,
        /// The negotiated security.
        security: Security,
        /// The negotiated muxer.
        muxer: &'static str,
    },
    /// An inbound connection failed before it was established.
    InboundUpgradeFailed {
        /// The connection.
        conn: ConnectionId,
        /// Why.
        error: AttemptError,
    },
    /// A connection is gone.
    ConnectionClosed {
        /// The connection.
        conn: ConnectionId,
        /// The peer, if the upgrade had finished.
        peer: Option<PeerId>,
    },
    /// A dial reached its peer.
    Dialed {
        /// The request.
        dial: DialId,
        /// The peer reached.
        peer: PeerId,
        /// The connection to use.
        conn: ConnectionId,
    },
    /// Every address of a dial failed (or none could be dialed).
    DialFailed {
        /// The request.
        dial: DialId,
        /// The peer, if it was named.
        peer: Option<PeerId>,
        /// The overall reason.
        cause: dial::DialErrorCause,
        /// Each address tried and why it failed, in order.
        errors: Vec<(Vec<u8>, AttemptError)>,
    },
    /// The peer told us about itself (identify or identify push).
    Identified {
        /// The peer.
        peer: PeerId,
        /// On which connection.
        conn: ConnectionId,
        /// What it said.
        info: Box<identify::Info>,
    },
    /// The peer opened a stream for a protocol we registered.
    InboundStream {
        /// The stream.
        stream: StreamHandle,
        /// The peer.
        peer: PeerId,
        /// The agreed protocol.
        protocol: ProtocolName,
    },
    /// A stream we opened agreed on a protocol (a lazy stream reports this
    /// at once; data may be written right away).
    StreamOpened {
        /// The stream.
        stream: StreamHandle,
        /// The agreed protocol.
        protocol: ProtocolName,
    },
    /// A stream we opened failed.
    StreamOpenFailed {
        /// The stream.
        stream: StreamHandle,
        /// Why.
        error: StreamOpenFailure,
    },
    /// Data or the end of the stream can be read. Read until
    /// [`StreamError::WouldBlock`] to be told again.
    StreamReadable {
        /// The stream.
        stream: StreamHandle,
    },
    /// A write that was short or blocked can be retried.
    StreamWritable {
        /// The stream.
        stream: StreamHandle,
    },
    /// The stream ended in both directions and is freed.
    StreamClosed {
        /// The stream.
        stream: StreamHandle,
    },
    /// The stream was reset (by the peer, or the connection closed).
    StreamReset {
        /// The stream.
        stream: StreamHandle,
    },
    /// A ping came back.
    PingSuccess {
        /// The request.
        ping: PingId,
        /// The peer.
        peer: PeerId,
        /// The round trip time.
        rtt: Duration,
    },
    /// A ping failed.
    PingFailed {
        /// The request.
        ping: PingId,
        /// The peer.
        peer: PeerId,
        /// Why.
        error: PingFailure,
    },
}

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
    /// Reported by `poll_wants_write` and not yet drained.
    write_flagged: bool,
    streams: HashMap<u32, NodeStream>,
    /// The upgrade's last bytes (e.g. the muxer echo), sent before any frame.
    upgrade_tail: Vec<u8>,
    /// What carries the session's bytes (clear, or noise frames).
    channel: upgrade::Channel,
    /// The channel broke (a frame failed to decrypt): input is dropped
    /// until the socket closes.
    discard_input: bool,
    negotiating_inbound: usize,
    /// `Action::Close` was emitted.
    closing: bool,
}

// The session is the steady state of every connection, so it stays inline;
// only the short-lived upgrade is boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum ConnState {
    Connecting,
    Upgrading(Box<upgrade::Upgrade>),
    Muxed(yamux::Session),
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
    Dialer,
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
    listen_addrs: Vec<Vec<u8>>,
    dialer: dial::Dialer,
    /// The dialer's deadline registered in the timer table.
    dialer_timer: Option<Instant>,
    /// Dialer requests and the node's ids for them.
    requests: HashMap<dial::RequestId, DialId>,
    /// Running dialer attempts and their connections.
    attempts: HashMap<dial::AttemptId, ConnectionId>,
    /// Detailed reasons of failed attempts, per (peer, address), until the
    /// request that tried them is answered.
    attempt_errors: HashMap<(PeerId, Vec<u8>), AttemptError>,
    /// Dials without a peer id.
    peerless: HashMap<DialId, dialing::Peerless>,
    pings: HashMap<PingId, Ping>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    wants_write: VecDeque<ConnectionId>,
    timers: BTreeSet<(Instant, TimerKey)>,
    rng: rand_chacha::ChaCha20Rng,
    /// Reused for session frames on their way into a noise channel.
    scratch: Vec<u8>,
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

/// The protocols the node serves itself on every connection.
const BUILTIN_PROTOCOLS: [&str; 3] = [
    identify::PROTOCOL,
    identify::PUSH_PROTOCOL,
    crate::protocols::ping::PROTOCOL,
];

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
            requests: HashMap::new(),
            attempts: HashMap::new(),
            attempt_errors: HashMap::new(),
            peerless: HashMap::new(),
            rng: rand_chacha::ChaCha20Rng::from_seed(config.rng_seed),
            scratch: Vec::new(),
            config,
            now,
            next_id: 1,
            conns: HashMap::new(),
            peers: HashMap::new(),
            peer_protocols: HashMap::new(),
            protected: HashMap::new(),
            protocols: Vec::new(),
            listen_addrs: Vec::new(),
            pings: HashMap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            wants_write: VecDeque::new(),
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
    ) -> Result<(), OpenStreamError> {
        let protocol = protocol.into();
        if !crate::multistream::codec::is_valid_protocol(&protocol) {
            return Err(OpenStreamError::InvalidProtocols);
        }
        if !self.protocols.contains(&protocol) {
            self.protocols.push(protocol);
            self.push_identify();
        }
        Ok(())
    }

    /// Asks the adapter to listen on `addr` (binary multiaddr).
    pub fn listen_on(&mut self, addr: Vec<u8>) -> ListenerId {
        let listener = ListenerId(self.fresh_id());
        self.actions.push_back(Action::Listen { listener, addr });
        listener
    }

    /// Closes a connection: GoAway to the peer, then [`Action::Close`].
    pub fn close_connection(&mut self, conn: ConnectionId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let ConnState::Muxed(session) = &mut c.state {
            let _ = session.go_away(yamux::GoAwayCode::NORMAL);
        }
        self.request_close(conn);
    }

    /// Tags `peer` as protected (a connection manager must not trim it).
    pub fn protect(&mut self, peer: PeerId, tag: &str) {
        let tags = self.protected.entry(peer).or_default();
        if !tags.iter().any(|t| t == tag) {
            tags.push(String::from(tag));
        }
    }

    /// Removes one protection tag; returns whether the peer is still protected.
    pub fn unprotect(&mut self, peer: &PeerId, tag: &str) -> bool {
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
        self.now = now;
        if !self.listen_addrs.contains(&addr) {
            self.listen_addrs.push(addr.clone());
            self.push_identify();
        }
        self.events.push_back(Event::Listening { listener, addr });
    }

    /// A listener could not be bound.
    pub fn handle_listen_failed(&mut self, now: Instant, listener: ListenerId) {
        self.now = now;
        self.events.push_back(Event::ListenFailed { listener });
    }

    /// A socket was accepted from `remote_addr`. On `Err`, close it.
    pub fn handle_inbound(
        &mut self,
        now: Instant,
        remote_addr: Vec<u8>,
    ) -> Result<ConnectionId, InboundError> {
        self.now = now;
        if self.conns.len() >= self.config.max_connections {
            return Err(InboundError::ConnectionLimit);
        }
        let conn = ConnectionId(self.fresh_id());
        let secrets = self.noise_secrets();
        let upgrade = upgrade::Upgrade::new(
            Endpoint::Listener,
            &self.config.keypair,
            &self.config.security,
            None,
            secrets,
        );
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
        self.flag_write(conn);
        self.reschedule(conn);
        Ok(conn)
    }

    /// An outbound connect finished (for TCP: the three-way handshake is
    /// done and the upgrade starts, which the dialer's hold rule needs).
    /// For a connection the node has given up on, it asks to close it.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnectionId) {
        self.now = now;
        let Some(c) = self.conns.get_mut(&conn) else {
            // Cancelled while connecting: the adapter still has a socket.
            self.actions.push_back(Action::Close { conn });
            return;
        };
        if !matches!(c.state, ConnState::Connecting) {
            return;
        }
        if c.origin == Origin::Abandoned {
            self.request_close(conn);
            return;
        }
        let secrets = noise_secrets(&mut self.rng);
        c.state = ConnState::Upgrading(Box::new(upgrade::Upgrade::new(
            Endpoint::Dialer,
            &self.config.keypair,
            &self.config.security,
            c.expected,
            secrets,
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
        self.now = now;
        self.attempt_failed(conn, AttemptError::Transport(error));
    }

    /// Bytes read from `conn`. Returns how many were consumed; give the rest
    /// again later (the node stops consuming when a peer outruns it).
    pub fn handle_read(&mut self, now: Instant, conn: ConnectionId, data: &[u8]) -> usize {
        self.now = now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return data.len();
        };
        if c.discard_input {
            return data.len();
        }
        let used = match &mut c.state {
            ConnState::Connecting => data.len(),
            ConnState::Upgrading(up) => {
                let n = up.handle_read(data);
                if let Some(outcome) = up.poll_outcome() {
                    match outcome {
                        Ok(upgraded) => {
                            let n2 = if self.on_upgraded(conn, upgraded) {
                                self.channel_read(now, conn, &data[n..])
                            } else {
                                data.len() - n
                            };
                            n + n2
                        }
                        Err(e) => {
                            self.upgrade_failed(conn, AttemptError::Upgrade(e));
                            data.len()
                        }
                    }
                } else {
                    n
                }
            }
            ConnState::Muxed(_) => self.channel_read(now, conn, data),
        };
        self.flag_write(conn);
        self.reschedule(conn);
        used
    }

    /// The peer closed its sending side of `conn` (end of file).
    pub fn handle_read_closed(&mut self, now: Instant, conn: ConnectionId) {
        self.now = now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match &mut c.state {
            ConnState::Connecting => {}
            ConnState::Upgrading(_) => self.upgrade_failed(conn, AttemptError::Closed),
            ConnState::Muxed(_) => {
                // Decrypted bytes the session refused earlier come first.
                self.channel_read(now, conn, &[]);
                if let Some(ConnState::Muxed(session)) =
                    self.conns.get_mut(&conn).map(|c| &mut c.state)
                {
                    session.handle_eof(now);
                }
                self.process_session(conn);
            }
        }
        self.flag_write(conn);
        self.reschedule(conn);
    }

    /// The socket of `conn` is closed (after [`Action::Close`], or because it
    /// broke). The node forgets the connection and resets its streams.
    pub fn handle_connection_closed(&mut self, now: Instant, conn: ConnectionId) {
        self.now = now;
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(t) = c.timer {
            self.timers.remove(&(t, TimerKey::Conn(conn)));
        }
        if matches!(c.state, ConnState::Connecting | ConnState::Upgrading(_)) {
            if matches!(c.origin, Origin::Attempt(_) | Origin::Peerless(_)) {
                // Re-insert briefly so the dial logic sees the attempt end.
                self.conns.insert(conn, c);
                self.attempt_failed(conn, AttemptError::Closed);
                self.conns.remove(&conn);
            } else if c.endpoint == Endpoint::Listener {
                self.events.push_back(Event::InboundUpgradeFailed {
                    conn,
                    error: AttemptError::Closed,
                });
            }
            return;
        }
        for (id, s) in c.streams {
            self.stream_gone(StreamHandle { conn, id }, s);
        }
        if let Some(peer) = c.peer {
            if let Some(list) = self.peers.get_mut(&peer) {
                list.retain(|x| *x != conn);
                if list.is_empty() {
                    self.peers.remove(&peer);
                    self.peer_protocols.remove(&peer);
                }
            }
        }
        self.events
            .push_back(Event::ConnectionClosed { conn, peer: c.peer });
    }

    /// Timers due at `now` fire. Safe to call at any time.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
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
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A connection that may have bytes to send. Once named, it is the
    /// adapter's job to call [`poll_transmit`](Self::poll_transmit) for it
    /// (now or when its socket is writable) until that returns 0; only then
    /// will it be named again.
    pub fn poll_wants_write(&mut self) -> Option<ConnectionId> {
        self.wants_write.pop_front()
    }

    /// Appends up to about `max` bytes to send on `conn` to `out`; returns
    /// how many. Zero means nothing is left for now.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        out: &mut Vec<u8>,
        max: usize,
    ) -> usize {
        self.now = now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return 0;
        };
        let start = out.len();
        let mut spent = false;
        match &mut c.state {
            ConnState::Connecting => {}
            ConnState::Upgrading(up) => {
                up.poll_transmit(out);
            }
            ConnState::Muxed(session) => {
                out.append(&mut c.upgrade_tail);
                match &mut c.channel {
                    upgrade::Channel::Clear => {
                        while out.len() - start < max {
                            let Some(frame) = session.poll_transmit(now) else {
                                break;
                            };
                            frame.write_to(out);
                        }
                    }
                    channel => {
                        // Frames gathered in the clear, then sealed at once
                        // (noise frames of up to 64 KiB each).
                        let mut plain = core::mem::take(&mut self.scratch);
                        while plain.len() < max {
                            let Some(frame) = session.poll_transmit(now) else {
                                break;
                            };
                            frame.write_to(&mut plain);
                        }
                        // Sealing fails only once 2^64 - 1 frames were sent:
                        // the channel is spent and the connection must end.
                        if channel.seal(&plain, out).is_err() {
                            c.discard_input = true;
                            spent = true;
                        }
                        plain.clear();
                        self.scratch = plain;
                    }
                }
            }
        }
        if spent {
            self.request_close(conn);
        }
        let n = out.len() - start;
        if n == 0 {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.write_flagged = false;
            }
        }
        if matches!(
            self.conns.get(&conn).map(|c| &c.state),
            Some(ConnState::Muxed(_))
        ) {
            // Sending can free send-buffer room (StreamWritable) or start
            // ping clocks, and lets the session take decrypted input it
            // refused while its queues were full.
            self.process_session(conn);
            let refused_input = self.conns.get(&conn).is_some_and(|c| {
                matches!(&c.channel, upgrade::Channel::Noise { pending, .. } if !pending.is_empty())
            });
            if refused_input {
                // The session refused decrypted bytes while its queues were
                // full; now that frames left, offer them again, and send
                // what they produce on the next call (the session only
                // refuses while it has frames queued, so this ends).
                self.channel_read(now, conn, &[]);
                self.flag_write(conn);
            }
            self.reschedule(conn);
        }
        n
    }

    /// The earliest moment [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    // ------------------------------------------------------------ internals

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn best_connection(&self, peer: &PeerId) -> Option<ConnectionId> {
        // The oldest established connection that is not closing and whose
        // session accepts new streams.
        self.peers.get(peer)?.iter().copied().find(|id| {
            self.conns.get(id).is_some_and(|c| {
                !c.closing
                    && matches!(&c.state, ConnState::Muxed(s) if !s.is_closed() && s.remote_go_away().is_none() && s.local_go_away().is_none())
            })
        })
    }

    fn flag_write(&mut self, conn: ConnectionId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.write_flagged {
                c.write_flagged = true;
                self.wants_write.push_back(conn);
            }
        }
    }

    fn request_close(&mut self, conn: ConnectionId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.closing {
                c.closing = true;
                self.actions.push_back(Action::Close { conn });
            }
        }
    }

    /// Recomputes the connection's deadline and updates the timer table.
    fn reschedule(&mut self, conn: ConnectionId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let wanted = match &c.state {
            ConnState::Muxed(session) => session.poll_timeout(),
            _ => c.deadline,
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
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match &mut c.state {
            ConnState::Connecting if c.deadline.is_some_and(|d| d <= now) => {
                self.request_close(conn);
                self.attempt_failed(conn, AttemptError::Timeout);
            }
            ConnState::Upgrading(_) if c.deadline.is_some_and(|d| d <= now) => {
                self.upgrade_failed(conn, AttemptError::Upgrade(UpgradeError::Timeout));
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
        if matches!(c.origin, Origin::Attempt(_) | Origin::Peerless(_)) {
            self.attempt_failed(conn, error);
        } else {
            if c.endpoint == Endpoint::Listener {
                self.events
                    .push_back(Event::InboundUpgradeFailed { conn, error });
            }
            if let Some(c) = self.conns.get_mut(&conn) {
                c.deadline = None;
            }
            self.request_close(conn);
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
            up.poll_transmit(&mut c.upgrade_tail);
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
        protocols.extend(BUILTIN_PROTOCOLS.iter().map(|p| String::from(*p)));
        identify::Info {
            public_key: self.config.keypair.public(),
            protocol_version: self.config.protocol_version.clone(),
            agent_version: self.config.agent_version.clone(),
            listen_addrs: self.listen_addrs.clone(),
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

    fn inbound_protocols(&self) -> impl Iterator<Item = ProtocolName> + '_ {
        self.protocols
            .iter()
            .cloned()
            .chain(BUILTIN_PROTOCOLS.iter().map(|p| Cow::Borrowed(*p)))
    }

    fn noise_secrets(&mut self) -> upgrade::NoiseSecrets {
        noise_secrets(&mut self.rng)
    }

    fn random_payload(&mut self) -> [u8; crate::protocols::ping::PAYLOAD_LEN] {
        let mut p = [0u8; crate::protocols::ping::PAYLOAD_LEN];
        self.rng.fill_bytes(&mut p);
        p
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
            write_flagged: false,
            streams: HashMap::new(),
            upgrade_tail: Vec::new(),
            channel: upgrade::Channel::Clear,
            discard_input: false,
            negotiating_inbound: 0,
            closing: false,
        }
    }
}

/// Fresh X25519 secrets for one noise handshake.
fn noise_secrets(rng: &mut rand_chacha::ChaCha20Rng) -> upgrade::NoiseSecrets {
    let mut secrets = upgrade::NoiseSecrets {
        static_secret: [0; 32],
        ephemeral_secret: [0; 32],
    };
    rng.fill_bytes(&mut secrets.static_secret);
    rng.fill_bytes(&mut secrets.ephemeral_secret);
    secrets
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
