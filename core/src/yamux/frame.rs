//! The 12-byte yamux frame header as pure encode/decode functions.
//!
//! Wire layout (REFERENCE.md, yamux; all fields big-endian):
//!
//! ```text
//! byte  0         1        2..4         4..8            8..12
//!       version   type     flags        stream id       length
//!       u8 (=0)   u8       u16          u32             u32
//! ```
//!
//! [`Header`] is an enum with one variant per frame type, so the combinations
//! the protocol forbids cannot be built: a Ping or GoAway has no stream id, a
//! Data or WindowUpdate frame always has a non-zero one ([`StreamId`] wraps a
//! `NonZeroU32`), a Ping is either a request (SYN) or a response (ACK), and the
//! SYN/ACK pair of a stream frame is one [`Handshake`] value, so "SYN and ACK
//! together" has no spelling. [`Header::decode`] maps every other byte pattern
//! to a typed [`FrameError`].

use core::fmt;
use core::num::NonZeroU32;

use super::error::FrameError;

/// Size of every frame header in bytes.
pub const HEADER_LEN: usize = 12;

/// The only protocol version there is.
pub const PROTOCOL_VERSION: u8 = 0;

/// The per-stream window both sides assume when a stream opens (256 KiB).
pub const DEFAULT_WINDOW: u32 = 256 * 1024;

/// Raw flag bits (REFERENCE.md, yamux: 0x1 SYN, 0x2 ACK, 0x4 FIN, 0x8 RST).
pub mod flag {
    /// Opens a stream; on a Ping, marks the request.
    pub const SYN: u16 = 0x1;
    /// Acknowledges a stream; on a Ping, marks the response.
    pub const ACK: u16 = 0x2;
    /// Half-closes the sending direction of a stream.
    pub const FIN: u16 = 0x4;
    /// Resets a stream at once.
    pub const RST: u16 = 0x8;
    /// Every bit the protocol defines.
    pub const ALL: u16 = SYN | ACK | FIN | RST;
}

/// The frame type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// 0: stream payload; the length counts the bytes that follow.
    Data = 0,
    /// 1: grants the peer more send window on a stream; the length is the delta.
    WindowUpdate = 1,
    /// 2: keep-alive / RTT probe on the session; the length is an opaque value.
    Ping = 2,
    /// 3: the sender will accept no new streams; the length is an error code.
    GoAway = 3,
}

impl FrameType {
    /// The type for a wire byte, if it is one of the four defined.
    pub const fn from_u8(byte: u8) -> Option<FrameType> {
        match byte {
            0 => Some(FrameType::Data),
            1 => Some(FrameType::WindowUpdate),
            2 => Some(FrameType::Ping),
            3 => Some(FrameType::GoAway),
            _ => None,
        }
    }
}

/// A stream identifier: never 0 (0 names the session itself).
///
/// Streams opened by the client (dialer) have odd ids starting at 1, those
/// opened by the server (listener) even ids starting at 2.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(NonZeroU32);

impl StreamId {
    /// The id for a raw value, or `None` for 0.
    pub const fn new(raw: u32) -> Option<StreamId> {
        match NonZeroU32::new(raw) {
            Some(v) => Some(StreamId(v)),
            None => None,
        }
    }

    /// The raw value on the wire.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// Whether a client (dialer) opened this stream, i.e. the id is odd.
    pub const fn is_client_initiated(self) -> bool {
        self.0.get() % 2 == 1
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The opening-handshake part of a stream frame's flags: SYN and ACK are
/// mutually exclusive, so they are one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Handshake {
    /// Neither SYN nor ACK.
    #[default]
    None,
    /// SYN: this frame opens the stream.
    Syn,
    /// ACK: this frame accepts a stream the peer opened.
    Ack,
}

/// Flags of a Data or WindowUpdate frame.
///
/// FIN and RST may be combined with each other and with either handshake
/// value (e.g. SYN|FIN opens and half-closes at once; RST dominates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StreamFlags {
    /// SYN, ACK or neither.
    pub handshake: Handshake,
    /// FIN: the sender will send no more data on this stream.
    pub fin: bool,
    /// RST: the stream is aborted in both directions.
    pub rst: bool,
}

impl StreamFlags {
    /// No flags.
    pub const NONE: StreamFlags = StreamFlags {
        handshake: Handshake::None,
        fin: false,
        rst: false,
    };
    /// SYN only.
    pub const SYN: StreamFlags = StreamFlags {
        handshake: Handshake::Syn,
        fin: false,
        rst: false,
    };
    /// ACK only.
    pub const ACK: StreamFlags = StreamFlags {
        handshake: Handshake::Ack,
        fin: false,
        rst: false,
    };
    /// FIN only.
    pub const FIN: StreamFlags = StreamFlags {
        handshake: Handshake::None,
        fin: true,
        rst: false,
    };
    /// RST only.
    pub const RST: StreamFlags = StreamFlags {
        handshake: Handshake::None,
        fin: false,
        rst: true,
    };

    /// The wire bits.
    pub const fn bits(self) -> u16 {
        let mut bits = match self.handshake {
            Handshake::None => 0,
            Handshake::Syn => flag::SYN,
            Handshake::Ack => flag::ACK,
        };
        if self.fin {
            bits |= flag::FIN;
        }
        if self.rst {
            bits |= flag::RST;
        }
        bits
    }

    /// Parses wire bits: `None` for unknown bits or SYN together with ACK.
    pub const fn from_bits(bits: u16) -> Option<StreamFlags> {
        if bits & !flag::ALL != 0 {
            return None;
        }
        let handshake = match (bits & flag::SYN != 0, bits & flag::ACK != 0) {
            (false, false) => Handshake::None,
            (true, false) => Handshake::Syn,
            (false, true) => Handshake::Ack,
            (true, true) => return None,
        };
        Some(StreamFlags {
            handshake,
            fin: bits & flag::FIN != 0,
            rst: bits & flag::RST != 0,
        })
    }

    /// Whether SYN is set.
    pub const fn syn(self) -> bool {
        matches!(self.handshake, Handshake::Syn)
    }

    /// Whether ACK is set.
    pub const fn ack(self) -> bool {
        matches!(self.handshake, Handshake::Ack)
    }
}

/// Whether a Ping is a request (SYN) or the echo of one (ACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PingKind {
    /// SYN: the receiver must echo the opaque value back.
    Request,
    /// ACK: the echo of a request we sent.
    Response,
}

/// The error code a GoAway frame carries in its length field.
///
/// Codes other than the three defined ones are kept as they came.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoAwayCode(pub u32);

impl GoAwayCode {
    /// 0: normal termination.
    pub const NORMAL: GoAwayCode = GoAwayCode(0);
    /// 1: the peer violated the protocol.
    pub const PROTOCOL_ERROR: GoAwayCode = GoAwayCode(1);
    /// 2: the sender hit an internal error.
    pub const INTERNAL_ERROR: GoAwayCode = GoAwayCode(2);
}

impl fmt::Debug for GoAwayCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GoAwayCode::NORMAL => f.write_str("GoAwayCode::NORMAL"),
            GoAwayCode::PROTOCOL_ERROR => f.write_str("GoAwayCode::PROTOCOL_ERROR"),
            GoAwayCode::INTERNAL_ERROR => f.write_str("GoAwayCode::INTERNAL_ERROR"),
            GoAwayCode(other) => write!(f, "GoAwayCode({other})"),
        }
    }
}

impl fmt::Display for GoAwayCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GoAwayCode::NORMAL => f.write_str("normal termination (0)"),
            GoAwayCode::PROTOCOL_ERROR => f.write_str("protocol error (1)"),
            GoAwayCode::INTERNAL_ERROR => f.write_str("internal error (2)"),
            GoAwayCode(other) => write!(f, "code {other}"),
        }
    }
}

/// A decoded frame header. Each variant carries exactly what its frame type
/// may carry on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Header {
    /// Data: `len` payload bytes follow the header.
    Data {
        /// The stream the payload belongs to.
        stream: StreamId,
        /// SYN/ACK/FIN/RST.
        flags: StreamFlags,
        /// Number of payload bytes after the header.
        len: u32,
    },
    /// WindowUpdate: grants `delta` more bytes of send window on `stream`.
    WindowUpdate {
        /// The stream whose window grows.
        stream: StreamId,
        /// SYN/ACK/FIN/RST.
        flags: StreamFlags,
        /// Window increment (with RST, go-libp2p puts an error code here).
        delta: u32,
    },
    /// Ping on the session (stream 0).
    Ping {
        /// Request (SYN) or response (ACK).
        kind: PingKind,
        /// Opaque value; a response echoes the request's.
        opaque: u32,
    },
    /// GoAway on the session (stream 0).
    GoAway {
        /// Why the sender goes away.
        code: GoAwayCode,
    },
}

impl Header {
    /// The frame type.
    pub const fn frame_type(&self) -> FrameType {
        match self {
            Header::Data { .. } => FrameType::Data,
            Header::WindowUpdate { .. } => FrameType::WindowUpdate,
            Header::Ping { .. } => FrameType::Ping,
            Header::GoAway { .. } => FrameType::GoAway,
        }
    }

    /// The stream id field: 0 for session frames.
    pub const fn stream_id_raw(&self) -> u32 {
        match self {
            Header::Data { stream, .. } | Header::WindowUpdate { stream, .. } => stream.get(),
            Header::Ping { .. } | Header::GoAway { .. } => 0,
        }
    }

    /// The flags field.
    pub const fn flags_raw(&self) -> u16 {
        match self {
            Header::Data { flags, .. } | Header::WindowUpdate { flags, .. } => flags.bits(),
            Header::Ping {
                kind: PingKind::Request,
                ..
            } => flag::SYN,
            Header::Ping {
                kind: PingKind::Response,
                ..
            } => flag::ACK,
            Header::GoAway { .. } => 0,
        }
    }

    /// The length field.
    pub const fn length_raw(&self) -> u32 {
        match *self {
            Header::Data { len, .. } => len,
            Header::WindowUpdate { delta, .. } => delta,
            Header::Ping { opaque, .. } => opaque,
            Header::GoAway { code } => code.0,
        }
    }

    /// The 12 wire bytes.
    pub const fn encode(&self) -> [u8; HEADER_LEN] {
        let flags = self.flags_raw().to_be_bytes();
        let id = self.stream_id_raw().to_be_bytes();
        let len = self.length_raw().to_be_bytes();
        [
            PROTOCOL_VERSION,
            self.frame_type() as u8,
            flags[0],
            flags[1],
            id[0],
            id[1],
            id[2],
            id[3],
            len[0],
            len[1],
            len[2],
            len[3],
        ]
    }

    /// Parses 12 wire bytes.
    ///
    /// Rejects, in this order: a version other than 0, an unknown type, flag
    /// bits the type does not allow, a Data/WindowUpdate frame on stream 0,
    /// and a Ping/GoAway frame on a non-zero stream.
    pub const fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
        if bytes[0] != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion(bytes[0]));
        }
        let frame_type = match FrameType::from_u8(bytes[1]) {
            Some(t) => t,
            None => return Err(FrameError::UnknownType(bytes[1])),
        };
        let flags = u16::from_be_bytes([bytes[2], bytes[3]]);
        let id = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let length = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        match frame_type {
            FrameType::Data | FrameType::WindowUpdate => {
                let flags = match StreamFlags::from_bits(flags) {
                    Some(f) => f,
                    None => return Err(FrameError::InvalidFlags { frame_type, flags }),
                };
                let stream = match StreamId::new(id) {
                    Some(s) => s,
                    None => return Err(FrameError::StreamFrameOnSession { frame_type }),
                };
                Ok(match frame_type {
                    FrameType::Data => Header::Data {
                        stream,
                        flags,
                        len: length,
                    },
                    _ => Header::WindowUpdate {
                        stream,
                        flags,
                        delta: length,
                    },
                })
            }
            FrameType::Ping => {
                let kind = match flags {
                    flag::SYN => PingKind::Request,
                    flag::ACK => PingKind::Response,
                    _ => return Err(FrameError::InvalidFlags { frame_type, flags }),
                };
                if id != 0 {
                    return Err(FrameError::SessionFrameOnStream {
                        frame_type,
                        stream: id,
                    });
                }
                Ok(Header::Ping {
                    kind,
                    opaque: length,
                })
            }
            FrameType::GoAway => {
                if flags != 0 {
                    return Err(FrameError::InvalidFlags { frame_type, flags });
                }
                if id != 0 {
                    return Err(FrameError::SessionFrameOnStream {
                        frame_type,
                        stream: id,
                    });
                }
                Ok(Header::GoAway {
                    code: GoAwayCode(length),
                })
            }
        }
    }

    /// Parses the first 12 bytes of `bytes`; `Ok(None)` if fewer are given.
    pub fn decode_prefix(bytes: &[u8]) -> Result<Option<Header>, FrameError> {
        match bytes.first_chunk::<HEADER_LEN>() {
            Some(h) => Header::decode(h).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u32) -> StreamId {
        StreamId::new(n).unwrap()
    }

    #[test]
    fn stream_id_parity_and_zero() {
        assert!(StreamId::new(0).is_none());
        assert!(sid(1).is_client_initiated());
        assert!(!sid(2).is_client_initiated());
        assert_eq!(sid(u32::MAX).get(), u32::MAX);
    }

    #[test]
    fn flags_reject_syn_ack_and_unknown_bits() {
        assert_eq!(StreamFlags::from_bits(0x3), None);
        assert_eq!(StreamFlags::from_bits(0x10), None);
        assert_eq!(StreamFlags::from_bits(0x8000), None);
        for bits in 0..16u16 {
            match StreamFlags::from_bits(bits) {
                Some(f) => assert_eq!(f.bits(), bits),
                None => assert_eq!(bits & 0x3, 0x3),
            }
        }
    }

    #[test]
    fn frame_type_bytes() {
        for (b, t) in [
            (0, FrameType::Data),
            (1, FrameType::WindowUpdate),
            (2, FrameType::Ping),
            (3, FrameType::GoAway),
        ] {
            assert_eq!(FrameType::from_u8(b), Some(t));
            assert_eq!(t as u8, b);
        }
        assert_eq!(FrameType::from_u8(4), None);
    }

    #[test]
    fn decode_prefix_needs_twelve_bytes() {
        assert_eq!(Header::decode_prefix(&[0; 11]), Ok(None));
        assert_eq!(
            Header::decode_prefix(&[0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]),
            Ok(Some(Header::GoAway {
                code: GoAwayCode::NORMAL
            }))
        );
    }
}
