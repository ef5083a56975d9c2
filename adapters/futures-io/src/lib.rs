//! The async binding of the sansp2p [`Node`](sansp2p::node::Node), shared by
//! every async runtime: a runtime supplies spawning, a sleep, TCP connect
//! and bind through the [`Runtime`] trait (after quinn's), and this crate
//! does the rest. Streams implement `futures_io::{AsyncRead, AsyncWrite}`.
//!
//! Tasks: one accept loop per listener, a connect task per outbound
//! connection, a reader and a writer per connection, one timer. They share
//! the node behind a mutex that is never held across an `.await`; after
//! every call into the node the caller drains [`Node::poll_output`]
//! (`sansp2p::node::Node::poll_output`) and wakes the task or stream each
//! output concerns. The reader reads only as much as the node has room
//! for, the writer writes straight from the node's transmit buffer, and
//! every close, FIN and deadline is the node's decision: no protocol or
//! I/O-contract logic lives here.
//!
//! [`Node::poll_output`]: sansp2p::node::Node::poll_output

mod driver;
mod host;
mod runtime;
mod stream;

use std::fmt;
use std::io;
use std::net::SocketAddr;

pub use bytes::Bytes;
pub use multiaddr::Multiaddr;
pub use sansp2p;
use sansp2p::dial::DialErrorCause;
use sansp2p::node::{
    AttemptError, CircuitDialError, ConfigError, ConnectionId, DialError, OpenStreamError,
    PerfError, PerfFailure, PingError, PingFailure, RegisterError, RelayCommandError, Security,
    StreamOpenFailure,
};
use sansp2p::relay::RelayError;
use sansp2p::{Keypair, PeerId};

pub use host::{Events, Host, Incoming, Reservation};
pub use runtime::{bind_std_listener, BoxFuture, Listener, Runtime, Socket, LISTEN_BACKLOG};
pub use stream::Stream;

/// What can go wrong in the host API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The node's configuration was refused.
    Config(ConfigError),
    /// The address is not one this binding can use (`/ip4|ip6|dns*/…/tcp/…`).
    UnsupportedAddress(Multiaddr),
    /// Binding a listener (or resolving its address) failed.
    Listen(io::ErrorKind),
    /// The node refused to start the dial.
    Refused(DialError),
    /// The dial failed: the overall cause and each address tried, in order.
    Dial {
        /// Why the dial as a whole failed.
        cause: DialErrorCause,
        /// Each address and why it failed.
        errors: Vec<(Multiaddr, AttemptError)>,
    },
    /// The protocol name was refused.
    Register(RegisterError),
    /// The node refused to open the stream.
    OpenStream(OpenStreamError),
    /// The stream was opened but not established (the peer supports none of
    /// the protocols, or the stream was reset).
    StreamOpen(StreamOpenFailure),
    /// The node refused to start the ping.
    Ping(PingError),
    /// The ping was sent but failed.
    PingFailed(PingFailure),
    /// The node refused to start the perf run.
    Perf(PerfError),
    /// The perf run started but failed.
    PerfFailed(PerfFailure),
    /// The node refused a relay command (not connected to the relay, not a
    /// relay, a malformed circuit address).
    Relay(RelayCommandError),
    /// The relay refused the reservation or answered badly.
    Reservation(RelayError),
    /// A dial through a relay failed: refused by the relay or the peer, or
    /// the upgrade over the circuit failed.
    CircuitDial(CircuitDialError),
    /// The AutoRelay configuration was refused.
    AutoRelay(sansp2p::relay::finder::FinderConfigError),
    /// The heartbeat target or its timings were refused.
    Heartbeat(sansp2p::liveness::heartbeat::BeaterConfigError),
    /// The peer monitor configuration was refused.
    Monitor(sansp2p::liveness::monitor::MonitorConfigError),
    /// The peer maintenance configuration was refused.
    Maintain(sansp2p::node::MaintainConfigError),
    /// The connection manager configuration was refused.
    ConnManager(sansp2p::peers::connmgr::ConnManagerConfigError),
    /// A connection manager tag was refused.
    Tag(sansp2p::peers::connmgr::TagError),
    /// The host was shut down.
    Shutdown,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(_) => f.write_str("invalid node configuration"),
            Error::UnsupportedAddress(a) => write!(f, "unsupported address {a}"),
            Error::Listen(kind) => write!(f, "listen failed: {kind}"),
            Error::Refused(_) => f.write_str("dial refused"),
            Error::Dial { cause, errors } => {
                write!(f, "dial failed ({cause})")?;
                for (i, (addr, e)) in errors.iter().enumerate() {
                    let sep = if i == 0 { ": " } else { "; " };
                    write!(f, "{sep}{addr}: {e}")?;
                }
                Ok(())
            }
            Error::Register(_) => f.write_str("protocol not registered"),
            Error::OpenStream(_) => f.write_str("stream not opened"),
            Error::StreamOpen(_) => f.write_str("stream open failed"),
            Error::Ping(_) => f.write_str("ping not sent"),
            Error::PingFailed(_) => f.write_str("ping failed"),
            Error::Perf(_) => f.write_str("perf run not started"),
            Error::PerfFailed(_) => f.write_str("perf run failed"),
            Error::Relay(_) => f.write_str("relay command refused"),
            Error::Reservation(_) => f.write_str("reservation failed"),
            Error::CircuitDial(_) => f.write_str("dial through the relay failed"),
            Error::AutoRelay(_) => f.write_str("invalid AutoRelay configuration"),
            Error::Heartbeat(_) => f.write_str("invalid heartbeat target"),
            Error::Monitor(_) => f.write_str("invalid peer monitor configuration"),
            Error::Maintain(_) => f.write_str("invalid peer maintenance configuration"),
            Error::ConnManager(_) => f.write_str("invalid connection manager configuration"),
            Error::Tag(_) => f.write_str("tag refused"),
            Error::Shutdown => f.write_str("host shut down"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Refused(e) => Some(e),
            Error::Register(e) => Some(e),
            Error::OpenStream(e) => Some(e),
            Error::StreamOpen(e) => Some(e),
            Error::Ping(e) => Some(e),
            Error::PingFailed(e) => Some(e),
            Error::Perf(e) => Some(e),
            Error::PerfFailed(e) => Some(e),
            Error::Relay(e) => Some(e),
            Error::Reservation(e) => Some(e),
            Error::CircuitDial(e) => Some(e),
            Error::AutoRelay(e) => Some(e),
            Error::Heartbeat(e) => Some(e),
            Error::Monitor(e) => Some(e),
            Error::Maintain(e) => Some(e),
            Error::ConnManager(e) => Some(e),
            Error::Tag(e) => Some(e),
            // A dial's errors are listed in its message, one per address.
            Error::UnsupportedAddress(_) | Error::Listen(_) | Error::Dial { .. } => None,
            Error::Shutdown => None,
        }
    }
}

/// What the host knows about one established connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection.
    pub conn: ConnectionId,
    /// The peer.
    pub peer: PeerId,
    /// The negotiated security protocol.
    pub security: Security,
    /// The negotiated muxer protocol.
    pub muxer: &'static str,
    /// The peer's address.
    pub remote_addr: Multiaddr,
    /// Who dialed: [`Endpoint::Dialer`](sansp2p::node::Endpoint::Dialer) when we did.
    pub endpoint: sansp2p::node::Endpoint,
}

/// A fresh random identity from the OS RNG.
pub fn random_keypair() -> Keypair {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the OS RNG is available");
    Keypair::from_secret_bytes(secret)
}

/// `/ip4|ip6/<ip>/tcp/<port>` of a socket address.
pub fn multiaddr_of(sa: SocketAddr) -> Multiaddr {
    Multiaddr::try_from(sansp2p::addr::tcp_multiaddr(sa)).expect("a valid tcp multiaddr")
}

/// A binary multiaddr from the node (always valid; empty if not).
pub(crate) fn multiaddr_from(bytes: Vec<u8>) -> Multiaddr {
    Multiaddr::try_from(bytes).unwrap_or_else(|_| Multiaddr::empty())
}
