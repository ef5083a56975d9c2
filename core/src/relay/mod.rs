//! Circuit relay v2 (libp2p/specs `relay/circuit-v2.md`): a private node
//! reserves a slot on a public relay, and others reach it through a circuit
//! the relay splices between two streams.
//!
//! - [`proto`]: the messages and their framing.
//! - [`handshake`]: the five exchanges (reserve, connect, stop on the
//!   client; hop and stop on the relay), one machine each.
//! - [`server`]: the relay's policy: who may reserve, how many circuits,
//!   and each circuit's limits.
//!
//! Times from the relay are unix seconds; [`WallClock`] converts them to the
//! machines' monotonic [`Instant`] once, on receipt.

pub mod finder;
#[cfg(test)]
mod finder_tests;
pub mod handshake;
pub mod proto;
pub mod server;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;
use core::time::Duration;

use prost::Message as _;

use crate::addr;
use crate::identity::{Envelope, EnvelopeError, PeerId};
use crate::time::Instant;
use crate::varint;
pub use proto::Status;

/// The protocol of client -> relay streams (RESERVE, CONNECT).
pub const HOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/hop";
/// The protocol of relay -> target streams (a circuit announced).
pub const STOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/stop";
/// The signed-envelope domain of reservation vouchers.
pub const VOUCHER_DOMAIN: &str = "libp2p-relay-rsvp";
/// The payload type of a voucher: the two bytes `03 02`, as go-libp2p
/// (`RecordCodec`) and js-libp2p write them. Not the multicodec 0x0302 as
/// a varint (`82 06`): a voucher typed that way fails in both.
pub const VOUCHER_PAYLOAD_TYPE: [u8; 2] = [0x03, 0x02];

/// The client's deadlines (go-libp2p's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// RESERVE to its answer (go: 1 min).
    pub reserve_timeout: Duration,
    /// CONNECT to its answer (go: 1 min).
    pub connect_timeout: Duration,
    /// An inbound stop stream to the relay's CONNECT (go: 1 min).
    pub stop_timeout: Duration,
    /// The relay's CONNECT to our answer; then CONNECTION_FAILED (go: 10 s).
    pub accept_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            reserve_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(60),
            accept_timeout: Duration::from_secs(10),
        }
    }
}

/// The relay server's resources and limits (go-libp2p's defaults, plus a
/// reservation rate limit like rust-libp2p's).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// How long a reservation lasts (go: 1 h).
    pub reservation_ttl: Duration,
    /// Reservations held at once (go: 128).
    pub max_reservations: usize,
    /// Reservations per IP address (go: 8).
    pub max_reservations_per_ip: usize,
    /// Circuits at once through the relay (rust: 16).
    pub max_circuits: usize,
    /// Circuits at once per peer, as source or target (go: 16).
    pub max_circuits_per_peer: usize,
    /// How long a circuit lives (go: 2 min); zero means no limit.
    pub circuit_duration: Duration,
    /// Bytes per direction a circuit carries (go: 128 KiB); zero means none.
    pub circuit_data: u64,
    /// A hop or stop stream to its message and answer (go: 1 min).
    pub stream_timeout: Duration,
    /// Bytes of one circuit direction held in flight by the relay (go's
    /// copy buffer: 2 KiB; more is faster, the total stays bounded).
    pub circuit_buffer: usize,
    /// RESERVE requests a peer may make in a burst (rust: 1 per 2 min).
    pub reserve_burst_per_peer: u32,
    /// How often a peer regains one RESERVE (rust: 2 min).
    pub reserve_interval_per_peer: Duration,
    /// RESERVE requests an IP may make in a burst.
    pub reserve_burst_per_ip: u32,
    /// How often an IP regains one RESERVE (rust: 1 min).
    pub reserve_interval_per_ip: Duration,
    /// Peers tracked by the rate limiter (oldest forgotten first).
    pub max_rate_entries: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            reservation_ttl: Duration::from_secs(3600),
            max_reservations: 128,
            max_reservations_per_ip: 8,
            max_circuits: 16,
            max_circuits_per_peer: 16,
            circuit_duration: Duration::from_secs(120),
            circuit_data: 128 * 1024,
            stream_timeout: Duration::from_secs(60),
            circuit_buffer: 2048,
            reserve_burst_per_peer: 2,
            reserve_interval_per_peer: Duration::from_secs(120),
            reserve_burst_per_ip: 60,
            reserve_interval_per_ip: Duration::from_secs(60),
            max_rate_entries: 4096,
        }
    }
}

/// A circuit's limit as the relay announced it; `None` fields are unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CircuitLimit {
    /// How long the circuit may live.
    pub duration: Option<Duration>,
    /// Bytes it may carry in each direction.
    pub data: Option<u64>,
}

impl From<proto::Limit> for CircuitLimit {
    fn from(l: proto::Limit) -> Self {
        CircuitLimit {
            duration: l
                .duration
                .filter(|&s| s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
            data: l.data.filter(|&d| d > 0),
        }
    }
}

impl From<CircuitLimit> for proto::Limit {
    fn from(l: CircuitLimit) -> Self {
        proto::Limit {
            duration: l
                .duration
                .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
            data: l.data,
        }
    }
}

/// A slot held on a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The relay.
    pub relay: PeerId,
    /// When it lapses, in our time.
    pub expire: Instant,
    /// When it lapses, as the relay said (unix seconds).
    pub expire_unix: u64,
    /// The relay's addresses (binary multiaddrs), each ending in
    /// `/p2p/<relay>`; unparsable ones are dropped. Empty when the relay
    /// knows no public address of its own.
    pub addrs: Vec<Vec<u8>>,
    /// The limit of circuits through it.
    pub limit: Option<CircuitLimit>,
    /// The voucher envelope, verified.
    pub voucher: Option<Vec<u8>>,
}

/// Converts unix times to [`Instant`]s from one reading of both clocks.
///
/// ```
/// use core::time::Duration;
/// use sansp2p::relay::WallClock;
/// use sansp2p::Instant;
///
/// let now = Instant::from_duration(Duration::from_secs(5));
/// let clock = WallClock::new(now, Duration::from_secs(1_700_000_000));
/// assert_eq!(clock.instant_of(now, 1_700_000_060), Some(now + Duration::from_secs(60)));
/// assert_eq!(clock.instant_of(now, 1_699_999_999), None); // already past
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    at: Instant,
    unix: Duration,
}

impl WallClock {
    /// `unix` (time since the unix epoch) was read at `at`.
    pub fn new(at: Instant, unix: Duration) -> Self {
        WallClock { at, unix }
    }

    /// The unix time now.
    pub fn unix_at(&self, now: Instant) -> Duration {
        self.unix + now.saturating_duration_since(self.at)
    }

    /// The instant of unix second `unix_secs`, `None` when it is not after `now`.
    pub fn instant_of(&self, now: Instant, unix_secs: u64) -> Option<Instant> {
        let left = Duration::from_secs(unix_secs).checked_sub(self.unix_at(now))?;
        (!left.is_zero()).then(|| now.saturating_add(left))
    }
}

/// What went wrong in a relay exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The other side answered with this (non-OK) status.
    #[error("refused by the peer: {0:?}")]
    Refused(Status),
    /// We answered with this (non-OK) status: our refusal, a deadline, or
    /// the request was not allowed.
    #[error("refused by us: {0:?}")]
    Declined(Status),
    /// Not a relay message.
    #[error("bad message: {0}")]
    Message(#[from] proto::MessageError),
    /// A message of the wrong type.
    #[error("unexpected message type")]
    Unexpected,
    /// A message without a field it needs (or with an invalid one).
    #[error("missing or invalid field `{0}`")]
    MissingField(&'static str),
    /// The reservation's expiry is already past.
    #[error("reservation expired at unix time {expire_unix}")]
    Expired {
        /// What the relay said.
        expire_unix: u64,
    },
    /// The reservation's voucher does not hold.
    #[error("bad voucher: {0}")]
    Voucher(VoucherError),
    /// The deadline passed.
    #[error("timed out")]
    Timeout,
    /// The stream ended first.
    #[error("stream closed")]
    Closed,
}

/// Why a reservation voucher was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoucherError {
    /// The envelope is malformed or its signature does not verify.
    #[error("{0}")]
    Envelope(EnvelopeError),
    /// The envelope holds something other than a voucher.
    #[error("payload type is not a voucher")]
    PayloadType,
    /// The payload is not a `Voucher` protobuf.
    #[error("malformed Voucher protobuf")]
    Payload,
    /// Signed by another key than the relay's, or names another relay.
    #[error("voucher is not the relay's")]
    WrongRelay,
    /// Issued to another peer.
    #[error("voucher is for another peer")]
    WrongPeer,
}

/// Checks a voucher envelope: signed by `relay` for `peer`.
pub fn verify_voucher(
    bytes: &[u8],
    relay: &PeerId,
    peer: &PeerId,
) -> Result<proto::Voucher, VoucherError> {
    let envelope = Envelope::open(bytes, VOUCHER_DOMAIN).map_err(VoucherError::Envelope)?;
    if envelope.payload_type != VOUCHER_PAYLOAD_TYPE {
        return Err(VoucherError::PayloadType);
    }
    let voucher =
        proto::Voucher::decode(envelope.payload.as_slice()).map_err(|_| VoucherError::Payload)?;
    if !relay.matches(&envelope.signer) || voucher.relay != relay.as_bytes() {
        return Err(VoucherError::WrongRelay);
    }
    if voucher.peer != peer.as_bytes() {
        return Err(VoucherError::WrongPeer);
    }
    Ok(voucher)
}

/// Signs a voucher as relay `key` for `peer`, valid until `expiration`
/// (unix seconds).
pub fn make_voucher(key: &crate::Keypair, peer: &PeerId, expiration: u64) -> Vec<u8> {
    let payload = proto::Voucher {
        relay: key.peer_id().to_bytes(),
        peer: peer.to_bytes(),
        expiration,
    }
    .encode_to_vec();
    Envelope::seal(key, VOUCHER_DOMAIN, &VOUCHER_PAYLOAD_TYPE, &payload)
}

/// A circuit address, `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<target>`,
/// taken apart.
///
/// ```
/// use sansp2p::relay::CircuitAddr;
/// let addr: multiaddr::Multiaddr = "/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWQAqQX2YQexMmQapfgrFV88PTtqkyiRo1LjpZoVbkjQYR/p2p-circuit/p2p/12D3KooWDB39ABqkZQvyq72DjK7W41GQKqQKyFbaCyFPDDewU62P".parse().unwrap();
/// let bytes = addr.to_vec();
/// let circuit = CircuitAddr::parse(&bytes).unwrap();
/// let relay: multiaddr::Multiaddr = circuit.relay_addr.to_vec().try_into().unwrap();
/// assert_eq!(relay.to_string(), "/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWQAqQX2YQexMmQapfgrFV88PTtqkyiRo1LjpZoVbkjQYR");
/// assert_eq!(circuit.target.to_string(), "12D3KooWDB39ABqkZQvyq72DjK7W41GQKqQKyFbaCyFPDDewU62P");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitAddr<'a> {
    /// The relay's part, up to and with `/p2p/<relay>` (only that when the
    /// address names no transport: the relay must be connected already).
    pub relay_addr: &'a [u8],
    /// The relay.
    pub relay: PeerId,
    /// The peer behind it.
    pub target: PeerId,
}

impl<'a> CircuitAddr<'a> {
    /// Parses `addr`; `None` unless it is exactly one relay hop with both
    /// peer ids.
    pub fn parse(addr: &'a [u8]) -> Option<Self> {
        let mut rest = addr;
        let mut relay = None;
        while !rest.is_empty() {
            let at = addr.len() - rest.len();
            let (component, tail) = addr::next_component(rest).ok()?;
            rest = tail;
            match component {
                addr::Component::P2p(p) => relay = Some(p),
                addr::Component::Circuit => {
                    let (addr::Component::P2p(target), &[]) = addr::next_component(rest).ok()?
                    else {
                        return None;
                    };
                    return Some(CircuitAddr {
                        relay_addr: &addr[..at],
                        relay: relay?,
                        target,
                    });
                }
                _ => relay = None,
            }
        }
        None
    }
}

/// `<relay part>/p2p-circuit`, and `/p2p/<target>` after it when given:
/// the address peers dial `target` at through the relay `relay_part` names
/// (it ends in `/p2p/<relay>`), or without a target the listen address a
/// reservation gives us.
pub fn circuit_addr(relay_part: &[u8], target: Option<&PeerId>) -> Vec<u8> {
    let mut a = Vec::with_capacity(relay_part.len() + 42);
    a.extend_from_slice(relay_part);
    varint::push(addr::code::P2P_CIRCUIT, &mut a);
    if let Some(target) = target {
        a.extend_from_slice(&p2p_suffix(target));
    }
    a
}

/// `/p2p/<peer>` as binary multiaddr bytes.
pub fn p2p_suffix(peer: &PeerId) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    varint::push(addr::code::P2P, &mut out);
    varint::push_frame(peer.as_bytes(), &mut out);
    out
}

/// The relay's addresses as a reservation must list them: unparsable ones
/// and ones naming another peer dropped, `/p2p/<relay>` appended when
/// missing, a repeated suffix collapsed to one, duplicates removed.
pub fn normalize_addrs(addrs: Vec<Vec<u8>>, relay: &PeerId) -> Vec<Vec<u8>> {
    let suffix = p2p_suffix(relay);
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(addrs.len());
    for mut a in addrs {
        let Ok(info) = addr::classify(&a) else {
            continue;
        };
        if info.relayed || info.peer.is_some_and(|p| p != *relay) {
            continue;
        }
        while a.ends_with(&suffix) {
            a.truncate(a.len() - suffix.len());
        }
        if a.is_empty() || addr::classify(&a).is_err() {
            continue;
        }
        a.extend_from_slice(&suffix);
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}
