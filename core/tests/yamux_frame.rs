//! Header codec: exact-byte vectors (REFERENCE.md, yamux: "12-byte big-endian
//! header: version u8 (=0) | type u8 | flags u16 | stream id u32 | length
//! u32"; types 0 Data, 1 WindowUpdate, 2 Ping, 3 GoAway; flags 0x1 SYN,
//! 0x2 ACK, 0x4 FIN, 0x8 RST) and round-trip properties.

use proptest::prelude::*;
use sansp2p::yamux::{
    FrameError, FrameType, GoAwayCode, Handshake, Header, PingKind, StreamFlags, StreamId,
};

fn sid(n: u32) -> StreamId {
    StreamId::new(n).unwrap()
}

fn flags(h: Handshake, fin: bool, rst: bool) -> StreamFlags {
    StreamFlags {
        handshake: h,
        fin,
        rst,
    }
}

/// Every header shape the session emits or accepts, with its wire bytes.
fn vectors() -> Vec<(Header, [u8; 12])> {
    use Handshake::{Ack, None as No, Syn};
    vec![
        // Data, no flags, stream 1, 5 payload bytes.
        (
            Header::Data {
                stream: sid(1),
                flags: StreamFlags::NONE,
                len: 5,
            },
            [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5],
        ),
        // Data|SYN opening stream 3 with 0x0100 bytes ("data may follow before the ACK").
        (
            Header::Data {
                stream: sid(3),
                flags: StreamFlags::SYN,
                len: 256,
            },
            [0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 1, 0],
        ),
        // Data|ACK on stream 2.
        (
            Header::Data {
                stream: sid(2),
                flags: StreamFlags::ACK,
                len: 1,
            },
            [0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1],
        ),
        // Data|FIN, last 16 KiB of stream 0x01020304.
        (
            Header::Data {
                stream: sid(0x0102_0304),
                flags: StreamFlags::FIN,
                len: 16384,
            },
            [0, 0, 0, 4, 1, 2, 3, 4, 0, 0, 0x40, 0],
        ),
        // Data|SYN|FIN: open, send, half-close in one frame.
        (
            Header::Data {
                stream: sid(5),
                flags: flags(Syn, true, false),
                len: 3,
            },
            [0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0, 3],
        ),
        // Data|RST.
        (
            Header::Data {
                stream: sid(7),
                flags: StreamFlags::RST,
                len: 0,
            },
            [0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 0],
        ),
        // WindowUpdate|SYN with no extra window: how we open a stream.
        (
            Header::WindowUpdate {
                stream: sid(1),
                flags: StreamFlags::SYN,
                delta: 0,
            },
            [0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
        ),
        // WindowUpdate|ACK granting 768 KiB more (a SYN/ACK update may grant more).
        (
            Header::WindowUpdate {
                stream: sid(2),
                flags: StreamFlags::ACK,
                delta: 786_432,
            },
            [0, 1, 0, 2, 0, 0, 0, 2, 0, 0x0c, 0, 0],
        ),
        // Plain WindowUpdate of 128 KiB (half the initial window).
        (
            Header::WindowUpdate {
                stream: sid(9),
                flags: StreamFlags::NONE,
                delta: 131_072,
            },
            [0, 1, 0, 0, 0, 0, 0, 9, 0, 2, 0, 0],
        ),
        // WindowUpdate|FIN: half-close with nothing left to send.
        (
            Header::WindowUpdate {
                stream: sid(4),
                flags: StreamFlags::FIN,
                delta: 0,
            },
            [0, 1, 0, 4, 0, 0, 0, 4, 0, 0, 0, 0],
        ),
        // WindowUpdate|SYN|FIN.
        (
            Header::WindowUpdate {
                stream: sid(11),
                flags: flags(Syn, true, false),
                delta: 0,
            },
            [0, 1, 0, 5, 0, 0, 0, 11, 0, 0, 0, 0],
        ),
        // WindowUpdate|ACK|FIN.
        (
            Header::WindowUpdate {
                stream: sid(6),
                flags: flags(Ack, true, false),
                delta: 0,
            },
            [0, 1, 0, 6, 0, 0, 0, 6, 0, 0, 0, 0],
        ),
        // WindowUpdate|RST: reset / reject.
        (
            Header::WindowUpdate {
                stream: sid(2),
                flags: StreamFlags::RST,
                delta: 0,
            },
            [0, 1, 0, 8, 0, 0, 0, 2, 0, 0, 0, 0],
        ),
        // WindowUpdate|RST with a go-libp2p error code in the length.
        (
            Header::WindowUpdate {
                stream: sid(13),
                flags: StreamFlags::RST,
                delta: 0x1234,
            },
            [0, 1, 0, 8, 0, 0, 0, 13, 0, 0, 0x12, 0x34],
        ),
        // WindowUpdate|ACK|RST.
        (
            Header::WindowUpdate {
                stream: sid(8),
                flags: flags(Ack, false, true),
                delta: 0,
            },
            [0, 1, 0, 0x0a, 0, 0, 0, 8, 0, 0, 0, 0],
        ),
        // WindowUpdate|FIN|RST.
        (
            Header::WindowUpdate {
                stream: sid(8),
                flags: flags(No, true, true),
                delta: 0,
            },
            [0, 1, 0, 0x0c, 0, 0, 0, 8, 0, 0, 0, 0],
        ),
        // Ping request (SYN) with opaque value 7.
        (
            Header::Ping {
                kind: PingKind::Request,
                opaque: 7,
            },
            [0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7],
        ),
        // Ping response (ACK) echoing 0xdeadbeef.
        (
            Header::Ping {
                kind: PingKind::Response,
                opaque: 0xdead_beef,
            },
            [0, 2, 0, 2, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef],
        ),
        // GoAway normal (0), protocol error (1), internal error (2).
        (
            Header::GoAway {
                code: GoAwayCode::NORMAL,
            },
            [0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        (
            Header::GoAway {
                code: GoAwayCode::PROTOCOL_ERROR,
            },
            [0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
        (
            Header::GoAway {
                code: GoAwayCode::INTERNAL_ERROR,
            },
            [0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        ),
        // Largest stream id and length.
        (
            Header::Data {
                stream: sid(u32::MAX),
                flags: StreamFlags::NONE,
                len: u32::MAX,
            },
            [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
    ]
}

#[test]
fn exact_bytes_encode_and_decode() {
    for (header, bytes) in vectors() {
        assert_eq!(header.encode(), bytes, "encode {header:?}");
        assert_eq!(Header::decode(&bytes), Ok(header), "decode {bytes:?}");
    }
}

#[test]
fn rejects_bad_version_and_type() {
    assert_eq!(
        Header::decode(&[1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
        Err(FrameError::UnsupportedVersion(1))
    );
    assert_eq!(
        Header::decode(&[0xff, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
        Err(FrameError::UnsupportedVersion(0xff))
    );
    for t in [4u8, 5, 0x80, 0xff] {
        assert_eq!(
            Header::decode(&[0, t, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(FrameError::UnknownType(t))
        );
    }
}

#[test]
fn rejects_illegal_flag_combinations() {
    let invalid = |t: FrameType, f: u16| FrameError::InvalidFlags {
        frame_type: t,
        flags: f,
    };
    // SYN|ACK on stream frames.
    assert_eq!(
        Header::decode(&[0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0]),
        Err(invalid(FrameType::Data, 3))
    );
    assert_eq!(
        Header::decode(&[0, 1, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0]),
        Err(invalid(FrameType::WindowUpdate, 3))
    );
    // Unknown bit (0x10, hashicorp's unused LZW bit; 0x8000).
    assert_eq!(
        Header::decode(&[0, 0, 0, 0x10, 0, 0, 0, 1, 0, 0, 0, 0]),
        Err(invalid(FrameType::Data, 0x10))
    );
    assert_eq!(
        Header::decode(&[0, 1, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
        Err(invalid(FrameType::WindowUpdate, 0x8000))
    );
    // Ping must be exactly SYN or exactly ACK.
    for f in [0u16, 3, 4, 5, 8, 0x10] {
        let b = f.to_be_bytes();
        assert_eq!(
            Header::decode(&[0, 2, b[0], b[1], 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(invalid(FrameType::Ping, f))
        );
    }
    // GoAway carries no flags.
    assert_eq!(
        Header::decode(&[0, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(invalid(FrameType::GoAway, 1))
    );
}

#[test]
fn rejects_wrong_stream_for_type() {
    assert_eq!(
        Header::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]),
        Err(FrameError::StreamFrameOnSession {
            frame_type: FrameType::Data
        })
    );
    assert_eq!(
        Header::decode(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4]),
        Err(FrameError::StreamFrameOnSession {
            frame_type: FrameType::WindowUpdate
        })
    );
    assert_eq!(
        Header::decode(&[0, 2, 0, 1, 0, 0, 0, 5, 0, 0, 0, 4]),
        Err(FrameError::SessionFrameOnStream {
            frame_type: FrameType::Ping,
            stream: 5
        })
    );
    assert_eq!(
        Header::decode(&[0, 3, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]),
        Err(FrameError::SessionFrameOnStream {
            frame_type: FrameType::GoAway,
            stream: 256
        })
    );
}

fn arb_flags() -> impl Strategy<Value = StreamFlags> {
    (0u8..3, any::<bool>(), any::<bool>()).prop_map(|(h, fin, rst)| StreamFlags {
        handshake: [Handshake::None, Handshake::Syn, Handshake::Ack][h as usize],
        fin,
        rst,
    })
}

fn arb_header() -> impl Strategy<Value = Header> {
    prop_oneof![
        (1u32.., arb_flags(), any::<u32>()).prop_map(|(id, flags, len)| Header::Data {
            stream: sid(id),
            flags,
            len
        }),
        (1u32.., arb_flags(), any::<u32>()).prop_map(|(id, flags, delta)| Header::WindowUpdate {
            stream: sid(id),
            flags,
            delta
        }),
        (any::<bool>(), any::<u32>()).prop_map(|(req, opaque)| Header::Ping {
            kind: if req {
                PingKind::Request
            } else {
                PingKind::Response
            },
            opaque
        }),
        any::<u32>().prop_map(|c| Header::GoAway {
            code: GoAwayCode(c)
        }),
    ]
}

proptest! {
    #[test]
    fn header_round_trips(h in arb_header()) {
        let bytes = h.encode();
        prop_assert_eq!(bytes[0], 0);
        prop_assert_eq!(bytes[1], h.frame_type() as u8);
        prop_assert_eq!(Header::decode(&bytes), Ok(h));
    }

    /// Any 12 bytes either fail with a typed error or decode to a header that
    /// re-encodes to exactly those bytes.
    #[test]
    fn decode_is_canonical(bytes in any::<[u8; 12]>()) {
        if let Ok(h) = Header::decode(&bytes) {
            prop_assert_eq!(h.encode(), bytes);
        }
    }

    #[test]
    fn stream_flags_round_trip(bits in any::<u16>()) {
        match StreamFlags::from_bits(bits) {
            Some(f) => prop_assert_eq!(f.bits(), bits),
            None => prop_assert!(bits & !0xf != 0 || bits & 3 == 3),
        }
    }
}

/// The FIN goes in a frame of its own, never on a Data frame with payload:
/// js-libp2p's yamux applies a frame's flags before its data and drops the
/// data of a frame whose FIN ends the stream (found by the js interop suite).
#[test]
fn fin_never_rides_on_data() {
    use sansp2p::time::Instant;
    use sansp2p::yamux::{Config, Header, Role, Session, StreamFlags};
    let now = Instant::ZERO;
    let mut s = Session::new(now, Role::Client, Config::default()).unwrap();
    let id = s.open_stream().unwrap();
    s.write(id, b"last words").unwrap();
    s.close(id).unwrap();
    let mut headers = Vec::new();
    while let Some(t) = s.poll_transmit(now) {
        headers.push(Header::decode(&t.header).unwrap());
    }
    let data: Vec<_> = headers
        .iter()
        .filter(|h| matches!(h, Header::Data { .. }))
        .collect();
    assert_eq!(data.len(), 1);
    assert!(matches!(data[0], Header::Data { flags, len: 10, .. } if *flags == StreamFlags::NONE));
    let last = headers.last().unwrap();
    assert!(
        matches!(last, Header::WindowUpdate { flags, .. } if flags.fin),
        "a bare FIN follows the data: {headers:?}"
    );
}
