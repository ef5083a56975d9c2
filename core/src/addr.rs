//! What the machines need to know about an address, without the `multiaddr`
//! crate: transport, host, scope, port, relay and `/p2p/` suffix.
//!
//! [`classify`] reads binary multiaddrs (the form on the wire in identify and
//! relay messages) with no allocation. Under the `std` feature,
//! [`classify_multiaddr`] gives the same answers from a parsed
//! [`multiaddr::Multiaddr`]; both feed the same [`Classifier`], and a test
//! checks they agree on a table of real addresses.
//!
//! ```
//! use sansp2p::addr::{classify, Scope, Transport};
//!
//! // /ip4/1.2.3.4/udp/4001/quic-v1
//! let bytes = [0x04, 1, 2, 3, 4, 0x91, 0x02, 0x0f, 0xa1, 0xcd, 0x03];
//! let info = classify(&bytes).unwrap();
//! assert_eq!(info.transport, Transport::QuicV1);
//! assert_eq!(info.scope, Scope::Public);
//! assert_eq!(info.port, Some(4001));
//! ```

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::identity::PeerId;
use crate::varint;

/// Multiaddr protocol codes (multiformats/multicodec table).
pub(crate) mod code {
    pub const IP4: u64 = 4;
    pub const TCP: u64 = 6;
    pub const DCCP: u64 = 33;
    pub const IP6: u64 = 41;
    pub const IP6ZONE: u64 = 42;
    pub const IPCIDR: u64 = 43;
    pub const DNS: u64 = 53;
    pub const DNS4: u64 = 54;
    pub const DNS6: u64 = 55;
    pub const DNSADDR: u64 = 56;
    pub const SCTP: u64 = 132;
    pub const UDP: u64 = 273;
    pub const P2P_WEBRTC_STAR: u64 = 275;
    pub const P2P_WEBRTC_DIRECT: u64 = 276;
    pub const P2P_STARDUST: u64 = 277;
    pub const WEBRTC_DIRECT: u64 = 280;
    pub const WEBRTC: u64 = 281;
    pub const P2P_CIRCUIT: u64 = 290;
    pub const UDT: u64 = 301;
    pub const UTP: u64 = 302;
    pub const UNIX: u64 = 400;
    pub const P2P: u64 = 421;
    pub const HTTPS: u64 = 443;
    pub const ONION: u64 = 444;
    pub const ONION3: u64 = 445;
    pub const GARLIC64: u64 = 446;
    pub const GARLIC32: u64 = 447;
    pub const TLS: u64 = 448;
    pub const SNI: u64 = 449;
    pub const NOISE: u64 = 454;
    pub const QUIC: u64 = 460;
    pub const QUIC_V1: u64 = 461;
    pub const WEBTRANSPORT: u64 = 465;
    pub const CERTHASH: u64 = 466;
    pub const WS: u64 = 477;
    pub const WSS: u64 = 478;
    pub const P2P_WEBSOCKET_STAR: u64 = 479;
    pub const HTTP: u64 = 480;
    pub const HTTP_PATH: u64 = 481;
    pub const MEMORY: u64 = 777;
}

/// The transport a dial to this address would use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// WebSocket over TCP.
    Ws,
    /// Secure WebSocket (`/wss` or `/tls/ws`).
    Wss,
    /// QUIC draft-29 (`/quic`).
    Quic,
    /// QUIC v1 (`/quic-v1`).
    QuicV1,
    /// WebTransport over QUIC v1.
    WebTransport,
    /// WebRTC direct (browser to server).
    WebRtcDirect,
    /// WebRTC via a relay.
    WebRtc,
    /// A circuit relay v2 address (`…/p2p-circuit`).
    Circuit,
    /// A unix domain socket.
    Unix,
    /// An in-process memory transport.
    Memory,
    /// Anything else (onion, garlic, a bare IP, …).
    Other,
}

impl Transport {
    /// Whether a dial consumes a file descriptor (go-libp2p's limiter: tcp, unix).
    pub fn uses_fd(self) -> bool {
        matches!(
            self,
            Transport::Tcp | Transport::Ws | Transport::Wss | Transport::Unix
        )
    }

    /// Whether the transport runs over UDP.
    pub fn is_udp(self) -> bool {
        matches!(
            self,
            Transport::Quic | Transport::QuicV1 | Transport::WebTransport | Transport::WebRtcDirect
        )
    }
}

/// Which DNS protocol names the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsKind {
    /// `/dns`: any address family.
    Dns,
    /// `/dns4`.
    Dns4,
    /// `/dns6`.
    Dns6,
    /// `/dnsaddr`: resolves to further multiaddrs.
    DnsAddr,
}

/// The host part of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name (the name itself is not kept).
    Dns(DnsKind),
    /// No network host (unix, memory, onion, …).
    None,
}

/// Where an address is reachable from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// This machine only (127.0.0.0/8, ::1, `localhost`).
    Loopback,
    /// A private or link-local network (RFC 1918, 100.64/10, 169.254/16,
    /// fc00::/7, fe80::/10, `*.local`).
    Private,
    /// The public internet (including DNS names not covered above).
    Public,
    /// Not routable anywhere (unspecified, documentation, multicast, reserved).
    Unroutable,
    /// No IP host at all.
    NotIp,
}

/// The classification of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrInfo {
    /// The transport a dial would use (`Circuit` for relayed addresses).
    pub transport: Transport,
    /// The first host component (for a relayed address: the relay's).
    pub host: Host,
    /// Reachability of `host`.
    pub scope: Scope,
    /// TCP or UDP port of the first host.
    pub port: Option<u16>,
    /// Whether the address goes through a circuit relay.
    pub relayed: bool,
    /// The `/p2p/<id>` at the very end of the address, if any.
    pub peer: Option<PeerId>,
}

impl AddrInfo {
    /// Whether the host is an IPv6 address (or a `/dns6` name).
    pub fn is_ipv6(&self) -> bool {
        matches!(
            self.host,
            Host::Ip(IpAddr::V6(_)) | Host::Dns(DnsKind::Dns6)
        )
    }

    /// Whether the host is an IPv4 address (or a `/dns4` name).
    pub fn is_ipv4(&self) -> bool {
        matches!(
            self.host,
            Host::Ip(IpAddr::V4(_)) | Host::Dns(DnsKind::Dns4)
        )
    }

    /// Whether the address is public (what go-libp2p's `manet.IsPublicAddr` means).
    pub fn is_public(&self) -> bool {
        self.scope == Scope::Public
    }

    /// Whether the address is private or loopback.
    pub fn is_private(&self) -> bool {
        matches!(self.scope, Scope::Private | Scope::Loopback)
    }
}

/// Why a binary multiaddr could not be classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// The bytes end in the middle of a component.
    #[error("truncated multiaddr")]
    Truncated,
    /// A protocol code this crate does not know (so its size is unknown).
    #[error("unknown multiaddr protocol code {0}")]
    UnknownProtocol(u64),
    /// A component whose value is invalid (bad UTF-8 name, bad peer id, …).
    #[error("invalid value for multiaddr protocol code {0}")]
    InvalidValue(u64),
}

/// One multiaddr component, reduced to what classification needs.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Component<'a> {
    /// `/ip4/…`
    Ip4(Ipv4Addr),
    /// `/ip6/…`
    Ip6(Ipv6Addr),
    /// `/dns*/name`
    Dns(DnsKind, &'a str),
    /// `/tcp/port`
    Tcp(u16),
    /// `/udp/port`
    Udp(u16),
    /// `/quic`
    Quic,
    /// `/quic-v1`
    QuicV1,
    /// `/webtransport`
    WebTransport,
    /// `/ws`
    Ws,
    /// `/wss`
    Wss,
    /// `/tls`
    Tls,
    /// `/webrtc-direct`
    WebRtcDirect,
    /// `/webrtc`
    WebRtc,
    /// `/p2p-circuit`
    Circuit,
    /// `/p2p/<id>`
    P2p(PeerId),
    /// `/unix/path`
    Unix,
    /// `/memory/n`
    Memory,
    /// Anything else, by protocol code.
    Other(u64),
}

/// Folds components into an [`AddrInfo`]; shared by both parsers.
#[derive(Debug, Clone)]
pub struct Classifier {
    info: AddrInfo,
    tls: bool,
    seen_host: bool,
    last_was_p2p: bool,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier {
            info: AddrInfo {
                transport: Transport::Other,
                host: Host::None,
                scope: Scope::NotIp,
                port: None,
                relayed: false,
                peer: None,
            },
            tls: false,
            seen_host: false,
            last_was_p2p: false,
        }
    }
}

impl Classifier {
    /// Takes the next component, left to right.
    pub fn push(&mut self, c: Component<'_>) {
        let info = &mut self.info;
        self.last_was_p2p = false;
        // Only the first host (and its port) is described; for a relayed
        // address that is the relay's.
        let first_host = !self.seen_host;
        match c {
            Component::Ip4(ip) if first_host => {
                info.host = Host::Ip(IpAddr::V4(ip));
                info.scope = ip_scope(IpAddr::V4(ip));
                self.seen_host = true;
            }
            Component::Ip6(ip) if first_host => {
                info.host = Host::Ip(IpAddr::V6(ip));
                info.scope = ip_scope(IpAddr::V6(ip));
                self.seen_host = true;
            }
            Component::Dns(kind, name) if first_host => {
                info.host = Host::Dns(kind);
                info.scope = dns_scope(name);
                self.seen_host = true;
            }
            Component::Ip4(_) | Component::Ip6(_) | Component::Dns(..) => {}
            Component::Tcp(port) => {
                info.port.get_or_insert(port);
                set_transport(info, Transport::Tcp);
            }
            Component::Udp(port) => {
                info.port.get_or_insert(port);
            }
            Component::Quic => set_transport(info, Transport::Quic),
            Component::QuicV1 => set_transport(info, Transport::QuicV1),
            Component::WebTransport => set_transport(info, Transport::WebTransport),
            Component::Tls => self.tls = true,
            Component::Ws if self.tls => set_transport(info, Transport::Wss),
            Component::Ws => set_transport(info, Transport::Ws),
            Component::Wss => set_transport(info, Transport::Wss),
            Component::WebRtcDirect => set_transport(info, Transport::WebRtcDirect),
            Component::WebRtc => set_transport(info, Transport::WebRtc),
            Component::Circuit => {
                info.relayed = true;
                info.transport = Transport::Circuit;
            }
            Component::P2p(id) => {
                info.peer = Some(id);
                self.last_was_p2p = true;
            }
            Component::Unix => set_transport(info, Transport::Unix),
            Component::Memory => set_transport(info, Transport::Memory),
            Component::Other(_) => {}
        }
    }

    /// The classification of everything pushed so far.
    pub fn finish(self) -> AddrInfo {
        let mut info = self.info;
        if !self.last_was_p2p {
            info.peer = None;
        }
        info
    }
}

fn set_transport(info: &mut AddrInfo, t: Transport) {
    // A relayed address stays `Circuit` whatever follows; before the circuit,
    // later (more specific) components win: tcp -> ws, quic-v1 -> webtransport.
    if !info.relayed {
        info.transport = t;
    }
}

/// Scope of an IP address, following go-multiaddr's `manet` ranges.
pub fn ip_scope(ip: IpAddr) -> Scope {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Scope::Loopback
            } else if v4.is_private() || v4.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
            {
                Scope::Private
            } else if v4.is_unspecified()
                || o[0] == 0
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] >= 240
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
            {
                Scope::Unroutable
            } else {
                Scope::Public
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return ip_scope(IpAddr::V4(v4));
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Scope::Loopback
            } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80 {
                Scope::Private
            } else if v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)
            {
                Scope::Unroutable
            } else {
                Scope::Public
            }
        }
    }
}

fn dns_scope(name: &str) -> Scope {
    let name = name.strip_suffix('.').unwrap_or(name);
    // Compared as bytes: a peer's name may hold multi-byte characters, and
    // slicing the str at a byte offset inside one would panic.
    let ends_with = |suffix: &str| {
        let (name, suffix) = (name.as_bytes(), suffix.as_bytes());
        name.len() >= suffix.len() && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    if name.eq_ignore_ascii_case("localhost") || ends_with(".localhost") {
        Scope::Loopback
    } else if ends_with(".local") {
        Scope::Private
    } else {
        Scope::Public
    }
}

/// Classifies a binary multiaddr without allocating.
pub fn classify(bytes: &[u8]) -> Result<AddrInfo, AddrError> {
    let mut classifier = Classifier::default();
    for component in components(bytes) {
        classifier.push(component?);
    }
    Ok(classifier.finish())
}

/// Iterates over the components of a binary multiaddr.
pub fn components(bytes: &[u8]) -> impl Iterator<Item = Result<Component<'_>, AddrError>> + '_ {
    let mut rest = bytes;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match next_component(rest) {
            Ok((c, tail)) => {
                rest = tail;
                Some(Ok(c))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

pub(crate) fn next_component(bytes: &[u8]) -> Result<(Component<'_>, &[u8]), AddrError> {
    let (code, rest) = varint::decode_u64(bytes).ok_or(AddrError::Truncated)?;
    let take = |n: usize| -> Result<(&[u8], &[u8]), AddrError> {
        if rest.len() < n {
            Err(AddrError::Truncated)
        } else {
            Ok(rest.split_at(n))
        }
    };
    let take_prefixed = || -> Result<(&[u8], &[u8]), AddrError> {
        let (len, rest) = varint::decode_u64(rest).ok_or(AddrError::Truncated)?;
        if (rest.len() as u64) < len {
            return Err(AddrError::Truncated);
        }
        Ok(rest.split_at(len as usize))
    };
    let port = |v: &[u8]| u16::from_be_bytes([v[0], v[1]]);
    let (component, tail) = match code {
        code::IP4 => {
            let (v, t) = take(4)?;
            (Component::Ip4(Ipv4Addr::new(v[0], v[1], v[2], v[3])), t)
        }
        code::IP6 => {
            let (v, t) = take(16)?;
            let mut o = [0u8; 16];
            o.copy_from_slice(v);
            (Component::Ip6(Ipv6Addr::from(o)), t)
        }
        code::TCP => {
            let (v, t) = take(2)?;
            (Component::Tcp(port(v)), t)
        }
        code::UDP => {
            let (v, t) = take(2)?;
            (Component::Udp(port(v)), t)
        }
        code::DCCP | code::SCTP => (Component::Other(code), take(2)?.1),
        code::IPCIDR => (Component::Other(code), take(1)?.1),
        code::ONION => (Component::Other(code), take(12)?.1),
        code::ONION3 => (Component::Other(code), take(37)?.1),
        code::MEMORY => (Component::Memory, take(8)?.1),
        code::DNS | code::DNS4 | code::DNS6 | code::DNSADDR => {
            let (v, t) = take_prefixed()?;
            let name = core::str::from_utf8(v).map_err(|_| AddrError::InvalidValue(code))?;
            let kind = match code {
                code::DNS => DnsKind::Dns,
                code::DNS4 => DnsKind::Dns4,
                code::DNS6 => DnsKind::Dns6,
                _ => DnsKind::DnsAddr,
            };
            (Component::Dns(kind, name), t)
        }
        code::P2P => {
            let (v, t) = take_prefixed()?;
            (
                Component::P2p(PeerId::from_bytes(v).map_err(|_| AddrError::InvalidValue(code))?),
                t,
            )
        }
        code::UNIX => (Component::Unix, take_prefixed()?.1),
        code::IP6ZONE
        | code::GARLIC64
        | code::GARLIC32
        | code::SNI
        | code::CERTHASH
        | code::HTTP_PATH => (Component::Other(code), take_prefixed()?.1),
        code::QUIC => (Component::Quic, rest),
        code::QUIC_V1 => (Component::QuicV1, rest),
        code::WEBTRANSPORT => (Component::WebTransport, rest),
        code::WS => (Component::Ws, rest),
        code::WSS => (Component::Wss, rest),
        code::TLS => (Component::Tls, rest),
        code::WEBRTC_DIRECT => (Component::WebRtcDirect, rest),
        code::WEBRTC => (Component::WebRtc, rest),
        code::P2P_CIRCUIT => (Component::Circuit, rest),
        code::HTTPS
        | code::HTTP
        | code::NOISE
        | code::UTP
        | code::UDT
        | code::P2P_WEBRTC_STAR
        | code::P2P_WEBRTC_DIRECT
        | code::P2P_STARDUST
        | code::P2P_WEBSOCKET_STAR => (Component::Other(code), rest),
        other => return Err(AddrError::UnknownProtocol(other)),
    };
    Ok((component, tail))
}

/// Classifies a parsed [`multiaddr::Multiaddr`]; the same answers as
/// [`classify`] on its bytes.
#[cfg(feature = "std")]
pub fn classify_multiaddr(addr: &multiaddr::Multiaddr) -> Result<AddrInfo, AddrError> {
    use multiaddr::Protocol as P;
    let mut classifier = Classifier::default();
    for p in addr.iter() {
        let c = match p {
            P::Ip4(ip) => Component::Ip4(ip),
            P::Ip6(ip) => Component::Ip6(ip),
            P::Dns(ref n) => Component::Dns(DnsKind::Dns, n),
            P::Dns4(ref n) => Component::Dns(DnsKind::Dns4, n),
            P::Dns6(ref n) => Component::Dns(DnsKind::Dns6, n),
            P::Dnsaddr(ref n) => Component::Dns(DnsKind::DnsAddr, n),
            P::Tcp(port) => Component::Tcp(port),
            P::Udp(port) => Component::Udp(port),
            P::Quic => Component::Quic,
            P::QuicV1 => Component::QuicV1,
            P::WebTransport => Component::WebTransport,
            P::Ws(_) => Component::Ws,
            P::Wss(_) => Component::Wss,
            P::Tls => Component::Tls,
            P::WebRTCDirect => Component::WebRtcDirect,
            P::WebRTC => Component::WebRtc,
            P::P2pCircuit => Component::Circuit,
            P::P2p(id) => Component::P2p(
                PeerId::from_bytes(&id.to_bytes())
                    .map_err(|_| AddrError::InvalidValue(code::P2P))?,
            ),
            P::Unix(_) => Component::Unix,
            P::Memory(_) => Component::Memory,
            _ => Component::Other(0),
        };
        // `Dns` borrows from `p`, so push inside the loop body.
        classifier.push(c);
    }
    Ok(classifier.finish())
}

/// Where a TCP address points: `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>`,
/// optionally followed by `/p2p/<id>`.
#[cfg(feature = "std")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpTarget {
    /// An IP socket address.
    Ip(std::net::SocketAddr),
    /// A DNS name to resolve, and the port.
    Dns(std::string::String, u16),
}

/// Reads a binary multiaddr as a TCP target; `None` for anything else
/// (other transports, relays, trailing components).
#[cfg(feature = "std")]
pub fn tcp_target(bytes: &[u8]) -> Option<TcpTarget> {
    use std::net::SocketAddr;
    let mut it = components(bytes);
    let host = it.next()?.ok()?;
    let Component::Tcp(port) = it.next()?.ok()? else {
        return None;
    };
    match it.next() {
        None | Some(Ok(Component::P2p(_))) => {}
        _ => return None,
    }
    if it.next().is_some() {
        return None;
    }
    Some(match host {
        Component::Ip4(ip) => TcpTarget::Ip(SocketAddr::new(IpAddr::V4(ip), port)),
        Component::Ip6(ip) => TcpTarget::Ip(SocketAddr::new(IpAddr::V6(ip), port)),
        Component::Dns(DnsKind::Dns | DnsKind::Dns4 | DnsKind::Dns6, name) => {
            TcpTarget::Dns(name.into(), port)
        }
        _ => return None,
    })
}

/// The binary multiaddr `/ip4|ip6/<ip>/tcp/<port>` of a socket address.
#[cfg(feature = "std")]
pub fn tcp_multiaddr(addr: std::net::SocketAddr) -> alloc::vec::Vec<u8> {
    let mut out = alloc::vec::Vec::with_capacity(20);
    match addr.ip() {
        IpAddr::V4(v4) => {
            varint::push(code::IP4, &mut out);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            varint::push(code::IP6, &mut out);
            out.extend_from_slice(&v6.octets());
        }
    }
    varint::push(code::TCP, &mut out);
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use multiaddr::Multiaddr;
    use std::format;

    fn both(text: &str) -> AddrInfo {
        let ma: Multiaddr = text.parse().unwrap();
        let from_bytes = classify(&ma.to_vec()).unwrap();
        let from_crate = classify_multiaddr(&ma).unwrap();
        assert_eq!(from_bytes, from_crate, "{text}");
        from_bytes
    }

    const RELAY: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    const TARGET: &str = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";

    #[test]
    fn table_of_real_addresses() {
        use Scope::*;
        use Transport::*;
        let table: &[(&str, Transport, Scope, Option<u16>, bool)] = &[
            ("/ip4/147.75.83.83/tcp/4001", Tcp, Public, Some(4001), false),
            ("/ip4/147.75.83.83/udp/4001/quic-v1", QuicV1, Public, Some(4001), false),
            ("/ip4/147.75.83.83/udp/4001/quic", Quic, Public, Some(4001), false),
            ("/ip4/1.2.3.4/udp/443/quic-v1/webtransport/certhash/uEiAkH5a4DPGKUuOBjYw0CgwjvcJCJMD2K_1aluKR_tpevQ/certhash/uEiAfbTNaCmWMxt3G0eXOMYWkFRp3bHBGmYGiLoIHFbYTPQ", WebTransport, Public, Some(443), false),
            ("/ip6/2604:1380:4602:5c00::3/tcp/4001", Tcp, Public, Some(4001), false),
            ("/ip6/2604:1380:4602:5c00::3/udp/4001/quic-v1", QuicV1, Public, Some(4001), false),
            ("/ip6/::1/tcp/4001", Tcp, Loopback, Some(4001), false),
            ("/ip6/fe80::1/tcp/4001", Tcp, Private, Some(4001), false),
            ("/ip6/fd00::1/udp/1/quic-v1", QuicV1, Private, Some(1), false),
            ("/ip6/2001:db8::1/tcp/1", Tcp, Unroutable, Some(1), false),
            ("/ip4/127.0.0.1/tcp/8080/ws", Ws, Loopback, Some(8080), false),
            ("/ip4/192.168.1.10/tcp/443/tls/ws", Wss, Private, Some(443), false),
            ("/ip4/10.0.0.1/tcp/443/wss", Wss, Private, Some(443), false),
            ("/ip4/100.64.1.1/tcp/1", Tcp, Private, Some(1), false),
            ("/ip4/169.254.3.3/tcp/1", Tcp, Private, Some(1), false),
            ("/ip4/0.0.0.0/tcp/1", Tcp, Unroutable, Some(1), false),
            ("/ip4/224.0.0.1/udp/5353", Other, Unroutable, Some(5353), false),
            ("/ip4/1.2.3.4/udp/9090/webrtc-direct/certhash/uEiAkH5a4DPGKUuOBjYw0CgwjvcJCJMD2K_1aluKR_tpevQ", WebRtcDirect, Public, Some(9090), false),
            ("/dns4/bootstrap.libp2p.io/tcp/443/wss", Wss, Public, Some(443), false),
            ("/dns6/example.com/udp/1/quic-v1", QuicV1, Public, Some(1), false),
            ("/dnsaddr/bootstrap.libp2p.io", Other, Public, None, false),
            ("/dns/localhost/tcp/1", Tcp, Loopback, Some(1), false),
            ("/dns/printer.local/tcp/1", Tcp, Private, Some(1), false),
            ("/unix/tmp%2Fp2p.sock", Unix, NotIp, None, false),
            ("/memory/1234", Memory, NotIp, None, false),
        ];
        for &(text, transport, scope, port, relayed) in table {
            let info = both(text);
            assert_eq!(
                (info.transport, info.scope, info.port, info.relayed),
                (transport, scope, port, relayed),
                "{text}"
            );
            assert_eq!(info.peer, None, "{text}");
        }
    }

    #[test]
    fn relay_addresses_and_peer_suffixes() {
        let relay: PeerId = RELAY.parse().unwrap();
        let target: PeerId = TARGET.parse().unwrap();
        let info = both(&format!(
            "/ip4/147.75.83.83/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{TARGET}"
        ));
        assert_eq!(info.transport, Transport::Circuit);
        assert!(info.relayed && info.is_public());
        assert_eq!(info.peer, Some(target));
        let info = both(&format!(
            "/ip4/147.75.83.83/tcp/4001/p2p/{RELAY}/p2p-circuit"
        ));
        assert_eq!(info.peer, None, "the relay's id is not the address's peer");
        let info = both(&format!("/ip6/::1/udp/1/quic-v1/p2p/{RELAY}"));
        assert_eq!(
            (info.transport, info.peer),
            (Transport::QuicV1, Some(relay))
        );
        assert!(info.is_ipv6() && !info.is_ipv4() && info.is_private());
    }

    #[test]
    fn tcp_targets() {
        let v4: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        assert_eq!(
            tcp_target(&v4.to_vec()),
            Some(TcpTarget::Ip("127.0.0.1:4001".parse().unwrap()))
        );
        assert_eq!(
            tcp_multiaddr("127.0.0.1:4001".parse().unwrap()),
            v4.to_vec()
        );
        let v6: Multiaddr = "/ip6/::1/tcp/5".parse().unwrap();
        assert_eq!(tcp_multiaddr("[::1]:5".parse().unwrap()), v6.to_vec());
        let with_id: Multiaddr = format!("/ip6/::1/tcp/5/p2p/{RELAY}").parse().unwrap();
        assert_eq!(
            tcp_target(&with_id.to_vec()),
            Some(TcpTarget::Ip("[::1]:5".parse().unwrap()))
        );
        let dns: Multiaddr = "/dns4/example.com/tcp/443".parse().unwrap();
        assert_eq!(
            tcp_target(&dns.to_vec()),
            Some(TcpTarget::Dns("example.com".into(), 443))
        );
        for other in [
            "/ip4/1.2.3.4/udp/1/quic-v1",
            "/ip4/1.2.3.4/tcp/1/ws",
            "/dnsaddr/x.io",
            "/ip4/1.2.3.4",
        ] {
            let ma: Multiaddr = other.parse().unwrap();
            assert_eq!(tcp_target(&ma.to_vec()), None, "{other}");
        }
    }

    #[test]
    fn malformed_binary_is_a_typed_error() {
        assert_eq!(classify(&[0x04, 1, 2]), Err(AddrError::Truncated));
        assert_eq!(classify(&[0x80]), Err(AddrError::Truncated));
        assert_eq!(classify(&[0x35, 5, b'a']), Err(AddrError::Truncated));
        assert_eq!(classify(&[0x35, 1, 0xff]), Err(AddrError::InvalidValue(53)));
        assert_eq!(
            classify(&[0xa5, 0x03, 2, 0x13, 0x00]),
            Err(AddrError::InvalidValue(421))
        );
        assert_eq!(classify(&[0x7f]), Err(AddrError::UnknownProtocol(0x7f)));
        // Found by the fuzzer: a DNS name whose multi-byte character straddles
        // the suffix check's offset once panicked.
        let mut dns = std::vec![0x35, 8];
        dns.extend_from_slice("7\u{1ff}q    ".as_bytes());
        assert_eq!(classify(&dns).map(|i| i.scope), Ok(Scope::Public));
        assert!(classify(&[]).is_ok());
    }
}
