//! The node's vocabulary: ids, configuration, actions, events and errors.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use super::upgrade::{Endpoint, Security, UpgradeError};
use crate::dial;
use crate::identity::{Keypair, PeerId};
use crate::multistream::ProtocolName;
use crate::protocols::identify;
use crate::yamux;
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(super) u64);

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
    /// One listener requested with [`Node::listen_on`](super::Node::listen_on).
    ListenerId,
    "listener#"
);
id_type!(
    /// One [`Node::dial`](super::Node::dial) request.
    DialId,
    "dial#"
);
id_type!(
    /// One [`Node::ping`](super::Node::ping) request.
    PingId,
    "ping#"
);
id_type!(
    /// One [`Node::perf`](super::Node::perf) run.
    PerfId,
    "perf#"
);

/// A stream: its connection and its yamux id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamHandle {
    pub(super) conn: ConnectionId,
    pub(super) id: u32,
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
    /// Serving `/perf/1.0.0` (off by default) and our own runs.
    pub perf: super::PerfConfig,
    /// Seed of the node's RNG (noise handshake keys, ping payloads). It must
    /// be secret and random wherever noise is used: [`Node::new`](super::Node::new) refuses
    /// the all-zero default then. Adapters seed it from the OS; tests fix it
    /// so runs repeat.
    pub rng_seed: [u8; 32],
    /// Per-connection buffers and the close and write-stall deadlines.
    pub io: IoConfig,
    /// Admission of inbound connections (pending upgrades, per subnet).
    pub inbound: InboundLimits,
    /// Deadlines of the circuit relay client (reserve, connect, stop).
    pub relay: crate::relay::ClientConfig,
    /// The ChaCha20-Poly1305 implementation of noise connections: the
    /// fastest compiled in by default (`ring`'s with the `ring` feature).
    pub noise_cipher: crate::security::noise::CipherBackend,
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
            perf: super::PerfConfig::default(),
            rng_seed: [0; 32],
            io: IoConfig::default(),
            inbound: InboundLimits::default(),
            relay: crate::relay::ClientConfig::default(),
            noise_cipher: crate::security::noise::CipherBackend::default(),
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
    Yamux(#[from] yamux::SessionConfigError),
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
    /// Shut the sending side of `conn` (TCP: `shutdown(Write)`, a FIN):
    /// everything the node had for it has been written (or the flush
    /// deadline passed). Keep reading it: the node discards what arrives
    /// until the peer's end of file or the linger deadline.
    CloseWrite {
        /// The connection.
        conn: ConnectionId,
    },
    /// Close the socket of `conn` now and forget it; the node already has.
    /// No further call about `conn` is needed (a late one is ignored).
    Close {
        /// The connection.
        conn: ConnectionId,
    },
    /// Stop accepting on `listener` and close its socket
    /// ([`Node::shutdown`](super::Node::shutdown)).
    StopListening {
        /// The listener.
        listener: ListenerId,
    },
}

/// One output of [`Node::poll_output`](super::Node::poll_output), the single drain loop of an
/// adapter. It yields every pending action, write and read request and
/// event, and always ends with [`Output::Timeout`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Something the adapter must do (bind, connect, FIN, close).
    Action(Action),
    /// `conn` has bytes to send: write [`Node::transmit_buffer`](super::Node::transmit_buffer) and report
    /// with [`Node::handle_written`](super::Node::handle_written) until it is empty or the socket would
    /// block (then again when the socket is writable).
    Transmit(ConnectionId),
    /// `conn` takes input again after [`Node::read_capacity`](super::Node::read_capacity) was 0: read
    /// from its socket.
    Receive(ConnectionId),
    /// Something for the application.
    Event(Event),
    /// Nothing else is pending: call [`Node::handle_timeout`](super::Node::handle_timeout) at this
    /// moment (`None`: no timer), or earlier on new input. It ends the loop.
    Timeout(Option<crate::time::Instant>),
}

/// Why a connection ended, in [`Event::ConnectionClosed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// We closed it ([`Node::close_connection`](super::Node::close_connection)).
    #[error("closed locally")]
    Local,
    /// The peer sent GoAway and the session ended.
    #[error("peer sent GoAway {0:?}")]
    GoAway(yamux::GoAwayCode),
    /// The peer closed the connection (end of file) without a GoAway;
    /// streams still open were reset.
    #[error("closed by the peer")]
    Eof,
    /// The socket failed or was closed under us.
    #[error("transport failed")]
    Transport,
    /// The yamux session failed (the peer broke the protocol, keep-alive
    /// timeout, cut short mid-frame).
    #[error("yamux: {0}")]
    Session(yamux::ConnectionError),
    /// A noise frame from the peer did not authenticate.
    #[error("a noise frame failed to decrypt")]
    Decrypt,
    /// The noise channel sent its last possible frame (nonce exhausted).
    #[error("noise nonce exhausted")]
    ChannelSpent,
    /// The peer read nothing of what we sent for `io.write_stall_timeout`.
    #[error("the peer stopped reading (write stall)")]
    WriteStall,
    /// A relayed connection whose circuit reached the relay's data or
    /// duration limit.
    #[error("the relay's circuit limit was reached")]
    CircuitLimit,
    /// A relayed connection whose relay stream ended or whose connection
    /// to the relay closed.
    #[error("the relay circuit closed")]
    CircuitClosed,
    /// Peer maintenance closed it: the peer quota (dialed or inbound) was
    /// full.
    #[error("the peer quota was full")]
    PeerQuota,
    /// The connection manager closed it: above its high water mark, it
    /// was among the least valuable.
    #[error("trimmed by the connection manager")]
    Trimmed,
}

/// Buffers and deadlines of every connection's I/O (the per-connection
/// driver between a socket and the node).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoConfig {
    /// Bytes read from a socket that the node holds while it cannot take
    /// them yet; while any are held, [`Node::read_capacity`](super::Node::read_capacity) is 0. Also the
    /// most one read may hand in. Default 256 KiB.
    pub read_buffer: usize,
    /// Bytes the node gathers for a socket per fill of
    /// [`Node::transmit_buffer`](super::Node::transmit_buffer). Default 256 KiB.
    pub write_buffer: usize,
    /// A connection whose peer takes none of our bytes for this long is
    /// closed ([`CloseReason::WriteStall`]). Default 10 s (go-yamux's
    /// `ConnectionWriteTimeout`).
    pub write_stall_timeout: Duration,
    /// How long a closing connection may take to write what it still owes
    /// before its FIN goes out anyway. Default 5 s.
    pub close_flush_timeout: Duration,
    /// After our FIN, how long the node drains (and drops) what the peer
    /// still sends while waiting for its FIN; a socket closed with unread
    /// bytes sends a reset, which can cost the peer our last frames.
    /// Default 2 s.
    pub close_linger: Duration,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            read_buffer: 256 * 1024,
            write_buffer: 256 * 1024,
            write_stall_timeout: Duration::from_secs(10),
            close_flush_timeout: Duration::from_secs(5),
            close_linger: Duration::from_secs(2),
        }
    }
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

/// A refused [`Node::dial`](super::Node::dial).
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
    /// [`Node::shutdown`](super::Node::shutdown) was called.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// A relay command the node refused at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayCommandError {
    /// No direct (non-relayed) upgraded connection to the relay.
    #[error("no direct connection to the relay")]
    NotConnectedToRelay,
    /// A reservation request to this relay is already under way.
    #[error("a reservation with this relay is already pending")]
    ReservePending,
    /// Not `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<target>`.
    #[error("not a circuit address with relay and target ids")]
    BadCircuitAddress,
    /// The relay's yamux session refused a new stream.
    #[error("yamux: {0}")]
    Yamux(yamux::OpenError),
    /// The node does not serve as a relay.
    #[error("this node is not a relay server")]
    NotARelay,
    /// No such pending circuit request (answered, timed out or gone).
    #[error("no such circuit request")]
    UnknownRequest,
}

/// Why a dial through a relay failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CircuitDialError {
    /// The relay refused or the CONNECT exchange broke.
    #[error("relay: {0}")]
    Relay(crate::relay::RelayError),
    /// The circuit opened but the upgrade over it failed.
    #[error("upgrade over the circuit: {0}")]
    Upgrade(AttemptError),
}

/// A refused inbound connection (the adapter closes the socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// `max_connections` reached.
    #[error("connection limit reached")]
    ConnectionLimit,
    /// `inbound.max_pending` connections are upgrading already.
    #[error("too many inbound connections still upgrading")]
    PendingLimit,
    /// The remote's IP subnet holds as many connections as allowed.
    #[error("connection limit for the remote's subnet reached")]
    SubnetLimit,
    /// [`Node::shutdown`](super::Node::shutdown) was called.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// Limits on inbound connections, checked by [`Node::handle_inbound`](super::Node::handle_inbound).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboundLimits {
    /// Inbound connections still upgrading at once. Default 10
    /// (js-libp2p's `maxIncomingPendingConnections`; rust-libp2p's
    /// `max_pending_incoming` has none).
    pub max_pending: usize,
    /// Inbound connections from one IPv4 address. Default 8.
    pub per_ipv4: usize,
    /// Inbound connections from one IPv6 /56. Default 8.
    pub per_ipv6_56: usize,
    /// Inbound connections from one IPv6 /48. Default 64.
    pub per_ipv6_48: usize,
}

impl Default for InboundLimits {
    /// go-libp2p's resource-manager connection limits per subnet
    /// (loopback is exempt), js-libp2p's pending limit.
    fn default() -> Self {
        InboundLimits {
            max_pending: 10,
            per_ipv4: 8,
            per_ipv6_56: 8,
            per_ipv6_48: 64,
        }
    }
}

/// A refused [`Node::register_protocol`](super::Node::register_protocol).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// Not a protocol name: it must start with `/` and hold no newline.
    #[error("invalid protocol name")]
    InvalidName,
    /// Longer than a multistream-select message can carry.
    #[error("protocol name of {len} bytes exceeds the {max}-byte limit")]
    TooLong {
        /// The name's length.
        len: usize,
        /// The longest name multistream-select accepts.
        max: usize,
    },
}

/// A refused [`Node::open_stream`](super::Node::open_stream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStreamError {
    /// No upgraded connection to the peer.
    #[error("not connected to the peer")]
    NotConnected,
    /// The only connection to the peer is limited (relayed) and a
    /// proposed protocol is not registered with
    /// [`Node::register_protocol_on_limited`](super::Node::register_protocol_on_limited).
    #[error("the connection is limited and the protocol does not run there")]
    Limited,
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

/// A refused [`Node::ping`](super::Node::ping).
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
    /// After [`Node::shutdown`](super::Node::shutdown): the last connection
    /// is gone, every socket may be closed.
    ShutdownComplete,
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
        /// Why.
        reason: CloseReason,
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
    /// An [`Node::open_stream`](super::Node::open_stream) to this connection's peer was refused for
    /// lack of room (yamux's ACK backlog or stream limit); it may succeed now.
    StreamsAvailable {
        /// The connection that has room again.
        conn: ConnectionId,
        /// Its peer.
        peer: PeerId,
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
    /// A [`Node::perf`](super::Node::perf) run finished: the server sent
    /// exactly what was asked and closed.
    PerfDone {
        /// The run.
        perf: PerfId,
        /// The server.
        peer: PeerId,
        /// What was moved and how long it took.
        report: super::PerfReport,
    },
    /// A [`Node::perf`](super::Node::perf) run failed.
    PerfFailed {
        /// The run.
        perf: PerfId,
        /// The server.
        peer: PeerId,
        /// Why.
        error: super::PerfFailure,
    },
    /// A relay granted (or renewed) our reservation.
    ReservationAccepted {
        /// The relay.
        relay: PeerId,
        /// What we hold: expiry, addresses, limit.
        reservation: crate::relay::Reservation,
    },
    /// A reservation request failed.
    ReservationFailed {
        /// The relay.
        relay: PeerId,
        /// Why.
        error: crate::relay::RelayError,
    },
    /// The connection a reservation was made on closed: it is gone.
    ReservationLost {
        /// The relay.
        relay: PeerId,
    },
    /// A peer wants a circuit to us through a relay we hold a reservation
    /// with: answer with [`Node::answer_circuit`](super::Node::answer_circuit)
    /// within `relay.accept_timeout`, or it is refused.
    CircuitRequest {
        /// The request, to answer.
        request: StreamHandle,
        /// The relay.
        relay: PeerId,
        /// Who opens the circuit.
        initiator: PeerId,
    },
    /// A [`Node::dial_circuit`](super::Node::dial_circuit) failed.
    CircuitDialFailed {
        /// The request.
        dial: DialId,
        /// Why.
        error: CircuitDialError,
    },
    /// What our relay server did (reservations granted, refused, ended).
    RelayServer(crate::relay::server::ServerEvent),
    /// AutoRelay wants up to `max` peers that might be relays: answer with
    /// [`Node::add_relay_candidates`](super::Node::add_relay_candidates)
    /// and [`Node::relay_candidates_exhausted`](super::Node::relay_candidates_exhausted).
    RelayCandidatesWanted {
        /// How many.
        max: usize,
    },
    /// What AutoRelay did: relays added, refreshed, removed, and our
    /// relay addresses.
    AutoRelay(crate::relay::finder::Event),
    /// What a heartbeat target's beater did: connected, beats sent,
    /// failures (with a level) and recoveries.
    Heartbeat {
        /// The target.
        beat: super::BeatId,
        /// What happened.
        event: crate::liveness::heartbeat::Event,
    },
    /// A heartbeat arrived at our aggregator, or a heartbeat stream was
    /// refused or failed.
    Aggregator(crate::liveness::aggregator::Event),
    /// The peer monitor's alerts and recoveries.
    Monitor(crate::liveness::monitor::Event),
    /// Peer maintenance wants about `want` more peers to dial: answer with
    /// [`Node::add_peer_candidates`](super::Node::add_peer_candidates) and
    /// [`Node::peer_lookup_done`](super::Node::peer_lookup_done) (a
    /// discovery lookup; no more come until it is done).
    PeerLookupWanted {
        /// How many would fill the free slots.
        want: usize,
    },
    /// A static peer could not be reached: answer with its current
    /// addresses, or none, by [`Node::resolved`](super::Node::resolved).
    /// Unanswered, it counts as none after the scheduler's
    /// `resolve_timeout` (30 s).
    ResolveWanted {
        /// The peer.
        peer: PeerId,
    },
}
