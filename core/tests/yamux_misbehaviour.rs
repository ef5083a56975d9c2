//! A peer that breaks the rules: each case ends the session with a typed
//! error and a GoAway(1) frame, never a panic (REFERENCE.md, yamux:
//! "Protocol errors -> GoAway(1) then close"; GHSA-vxx9-2994-q338).

mod common;

use common::{drain, events, frames};
use sansp2p::time::Instant;
use sansp2p::yamux::{
    Config, ConnectionError, Event, FrameError, FrameType, GoAwayCode, Handshake, Header, PingKind,
    Role, Session, StreamFlags, StreamId, DEFAULT_WINDOW,
};

const T0: Instant = Instant::from_millis(5);

fn sid(n: u32) -> StreamId {
    StreamId::new(n).unwrap()
}

fn server() -> Session {
    let mut s = Session::new(T0, Role::Server, Config::default()).unwrap();
    drain(&mut s, T0); // the initial ping
    s
}

fn data(id: u32, flags: StreamFlags, payload: &[u8]) -> Vec<u8> {
    let mut v = Header::Data {
        stream: sid(id),
        flags,
        len: payload.len() as u32,
    }
    .encode()
    .to_vec();
    v.extend_from_slice(payload);
    v
}

fn data_header(id: u32, flags: StreamFlags, len: u32) -> Vec<u8> {
    Header::Data {
        stream: sid(id),
        flags,
        len,
    }
    .encode()
    .to_vec()
}

fn wu(id: u32, flags: StreamFlags, delta: u32) -> Vec<u8> {
    Header::WindowUpdate {
        stream: sid(id),
        flags,
        delta,
    }
    .encode()
    .to_vec()
}

/// Feeds bytes (all at once, or one at a time) and returns the fatal error
/// and whether a GoAway(1) was the last frame the session sent.
fn feed_fatal(mut s: Session, input: &[u8], one_byte_at_a_time: bool) -> ConnectionError {
    if one_byte_at_a_time {
        for b in input {
            assert_eq!(s.handle_read(T0, std::slice::from_ref(b)), 1);
        }
    } else {
        assert_eq!(s.handle_read(T0, input), input.len());
    }
    assert!(s.is_closed(), "session should have failed");
    let out = frames(&drain(&mut s, T0));
    assert_eq!(
        out.last(),
        Some(&Header::GoAway {
            code: GoAwayCode::PROTOCOL_ERROR
        })
    );
    assert!(s.poll_transmit(T0).is_none());
    let err = s.close_error().cloned().expect("fatal error recorded");
    assert_eq!(err.go_away_sent(), Some(GoAwayCode::PROTOCOL_ERROR));
    let ev = events(&mut s);
    assert_eq!(
        ev.last(),
        Some(&Event::Closed {
            error: Some(err.clone())
        })
    );
    // Anything after is swallowed without effect.
    assert_eq!(s.handle_read(T0, &[0xff; 40]), 40);
    assert!(s.poll_transmit(T0).is_none());
    s.check_invariants();
    err
}

fn both_ways(input: &[u8]) -> ConnectionError {
    let a = feed_fatal(server(), input, false);
    let b = feed_fatal(server(), input, true);
    assert_eq!(a, b);
    a
}

#[test]
fn syn_with_wrong_parity() {
    // The server's own parity is even: a client may not open stream 2.
    let err = both_ways(&wu(2, StreamFlags::SYN, 0));
    assert_eq!(err, ConnectionError::WrongParity { id: sid(2) });
    let mut c = Session::new(T0, Role::Client, Config::default()).unwrap();
    drain(&mut c, T0);
    let err = feed_fatal(c, &data(7, StreamFlags::SYN, b"x"), false);
    assert_eq!(err, ConnectionError::WrongParity { id: sid(7) });
}

#[test]
fn duplicate_syn() {
    let mut input = wu(1, StreamFlags::SYN, 0);
    input.extend(data(1, StreamFlags::SYN, b"again"));
    assert_eq!(
        both_ways(&input),
        ConnectionError::DuplicateSyn { id: sid(1) }
    );
}

#[test]
fn data_beyond_the_window() {
    let mut input = wu(1, StreamFlags::SYN, 0);
    input.extend(data(1, StreamFlags::NONE, &vec![0; 200_000]));
    input.extend(data_header(1, StreamFlags::NONE, 70_000));
    assert_eq!(
        both_ways(&input),
        ConnectionError::WindowExceeded {
            id: sid(1),
            len: 70_000,
            window: DEFAULT_WINDOW - 200_000
        }
    );
}

#[test]
fn oversized_first_syn_frame_every_size() {
    // GHSA-vxx9-2994-q338: a first Data|SYN frame above the initial window.
    for len in [
        DEFAULT_WINDOW + 1,
        300_000,
        1 << 20,
        (1 << 20) + 1,
        16 << 20,
        u32::MAX,
    ] {
        let input = data_header(1, StreamFlags::SYN, len);
        let err = both_ways(&input);
        assert_eq!(
            err,
            ConnectionError::WindowExceeded {
                id: sid(1),
                len,
                window: DEFAULT_WINDOW
            },
            "len {len}"
        );
    }
    // With a payload actually following, and with SYN|FIN.
    let mut input = data_header(
        1,
        StreamFlags {
            fin: true,
            ..StreamFlags::SYN
        },
        DEFAULT_WINDOW + 1,
    );
    input.extend(vec![0; DEFAULT_WINDOW as usize + 1]);
    assert!(matches!(
        feed_fatal(server(), &input, false),
        ConnectionError::WindowExceeded { .. }
    ));
    // Exactly the window is fine.
    let mut s = server();
    let ok = data(1, StreamFlags::SYN, &vec![1; DEFAULT_WINDOW as usize]);
    assert_eq!(s.handle_read(T0, &ok), ok.len());
    assert!(!s.is_closed());
    assert_eq!(s.readable_bytes(sid(1)), Some(DEFAULT_WINDOW as usize));
    s.check_invariants();
}

#[test]
fn oversized_frame_after_window_grant() {
    // A SYN window update granting 1 MiB more, then one frame over 1 MiB
    // (max_frame_body) but within the window: refused as too large.
    let mut s = Session::new(
        T0,
        Role::Server,
        Config {
            initial_window: 4 << 20,
            max_streams: 64,
            ..Config::default()
        },
    )
    .unwrap();
    drain(&mut s, T0);
    let mut input = wu(1, StreamFlags::SYN, 0);
    input.extend(data_header(1, StreamFlags::NONE, (1 << 20) + 1));
    assert_eq!(
        feed_fatal(s, &input, false),
        ConnectionError::FrameTooLarge {
            len: (1 << 20) + 1,
            max: 1 << 20
        }
    );
}

#[test]
fn session_frames_on_a_stream() {
    let ping_on_stream = [0, 2, 0, 1, 0, 0, 0, 3, 0, 0, 0, 9];
    assert_eq!(
        both_ways(&ping_on_stream),
        ConnectionError::Frame(FrameError::SessionFrameOnStream {
            frame_type: FrameType::Ping,
            stream: 3
        })
    );
    let go_away_on_stream = [0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    assert_eq!(
        both_ways(&go_away_on_stream),
        ConnectionError::Frame(FrameError::SessionFrameOnStream {
            frame_type: FrameType::GoAway,
            stream: 1
        })
    );
    let data_on_session = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(
        both_ways(&data_on_session),
        ConnectionError::Frame(FrameError::StreamFrameOnSession {
            frame_type: FrameType::Data
        })
    );
}

#[test]
fn unexpected_pong() {
    let pong = Header::Ping {
        kind: PingKind::Response,
        opaque: 12345,
    }
    .encode();
    assert_eq!(
        both_ways(&pong),
        ConnectionError::UnexpectedPong { opaque: 12345 }
    );
    // The answer to a ping we queued but never sent is unexpected too.
    let mut s = server();
    s.ping().unwrap();
    let pong = Header::Ping {
        kind: PingKind::Response,
        opaque: 2,
    }
    .encode();
    assert_eq!(
        feed_fatal(s, &pong, false),
        ConnectionError::UnexpectedPong { opaque: 2 }
    );
}

#[test]
fn window_update_overflowing_u32() {
    let mut input = wu(1, StreamFlags::SYN, u32::MAX - DEFAULT_WINDOW);
    input.extend(wu(1, StreamFlags::NONE, 1));
    assert_eq!(
        both_ways(&input),
        ConnectionError::WindowOverflow { id: sid(1) }
    );
    // On the SYN itself.
    let input = wu(1, StreamFlags::SYN, u32::MAX - DEFAULT_WINDOW + 1);
    assert_eq!(
        both_ways(&input),
        ConnectionError::WindowOverflow { id: sid(1) }
    );
}

#[test]
fn bad_version_type_and_flags() {
    assert_eq!(
        both_ways(&[1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
        ConnectionError::Frame(FrameError::UnsupportedVersion(1))
    );
    assert_eq!(
        both_ways(&[0, 9, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
        ConnectionError::Frame(FrameError::UnknownType(9))
    );
    assert_eq!(
        both_ways(&[0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0]),
        ConnectionError::Frame(FrameError::InvalidFlags {
            frame_type: FrameType::Data,
            flags: 3
        })
    );
    // Garbage after valid traffic.
    let mut input = data(1, StreamFlags::SYN, b"fine");
    input.extend(b"GET / HTTP/1.1\r\n");
    assert!(matches!(both_ways(&input), ConnectionError::Frame(_)));
}

#[test]
fn huge_frame_for_unknown_stream() {
    let input = data_header(99, StreamFlags::NONE, (1 << 20) + 1);
    assert_eq!(
        both_ways(&input),
        ConnectionError::FrameTooLarge {
            len: (1 << 20) + 1,
            max: 1 << 20
        }
    );
}

#[test]
fn data_for_unknown_or_closed_stream_is_discarded() {
    let mut s = server();
    let mut input = data(41, StreamFlags::NONE, &[9; 1000]); // never opened
    input.extend(wu(43, StreamFlags::NONE, 5000));
    input.extend(wu(45, StreamFlags::RST, 0));
    input.extend(data(
        1,
        StreamFlags {
            fin: true,
            ..StreamFlags::SYN
        },
        b"last",
    ));
    input.extend(data(1, StreamFlags::NONE, b"after fin"));
    input.extend(data(1, StreamFlags::FIN, b"")); // second FIN
    assert_eq!(s.handle_read(T0, &input), input.len());
    assert!(!s.is_closed());
    s.accept(sid(1)).unwrap();
    let mut buf = [0; 32];
    assert_eq!(s.read(sid(1), &mut buf), Ok(4));
    assert_eq!(&buf[..4], b"last");
    assert_eq!(s.read(sid(1), &mut buf), Ok(0));
    s.check_invariants();
    // Data on a stream we reset (peer has not seen the RST yet): discarded.
    let mut input = wu(3, StreamFlags::SYN, 0);
    input.extend(data(3, StreamFlags::NONE, b"x"));
    assert_eq!(s.handle_read(T0, &input), input.len());
    s.reject(sid(3)).unwrap();
    let late = data(3, StreamFlags::NONE, &[0; 300_000][..200_000]);
    assert_eq!(s.handle_read(T0, &late), late.len());
    assert!(!s.is_closed());
    s.check_invariants();
}

#[test]
fn ping_flood_applies_backpressure() {
    let mut s = server();
    let ping = Header::Ping {
        kind: PingKind::Request,
        opaque: 1,
    }
    .encode();
    let flood: Vec<u8> = ping.iter().copied().cycle().take(12 * 10_000).collect();
    let n = s.handle_read(T0, &flood);
    // It stops at max_queued_pongs (64) until we transmit.
    assert_eq!(n, 64 * 12);
    assert_eq!(s.handle_read(T0, &flood[n..]), 0);
    s.check_invariants();
    let out = frames(&drain(&mut s, T0));
    assert_eq!(out.len(), 64);
    assert!(out.iter().all(|h| *h
        == Header::Ping {
            kind: PingKind::Response,
            opaque: 1
        }));
    let mut pos = n;
    while pos < flood.len() {
        let m = s.handle_read(T0, &flood[pos..]);
        assert!(m > 0);
        pos += m;
        drain(&mut s, T0);
    }
    assert!(!s.is_closed());
}

#[test]
fn syn_flood_is_bounded() {
    let mut s = server();
    let mut input = Vec::new();
    for i in 0..5_000u32 {
        input.extend(data(2 * i + 1, StreamFlags::SYN, &[0; 100]));
    }
    let mut pos = 0;
    let mut max_streams_seen = 0;
    let mut inbound = 0;
    let mut resets = 0;
    while pos < input.len() {
        let n = s.handle_read(T0, &input[pos..]);
        pos += n;
        s.check_invariants();
        max_streams_seen = max_streams_seen.max(s.stream_count());
        resets += frames(&drain(&mut s, T0))
            .iter()
            .filter(|h| matches!(h, Header::WindowUpdate { flags, .. } if flags.rst))
            .count();
        inbound += events(&mut s)
            .iter()
            .filter(|e| matches!(e, Event::InboundStream { .. }))
            .count();
        assert!(n > 0 || pos == input.len());
    }
    // The application never accepted: only the accept backlog was taken.
    assert_eq!(max_streams_seen, 256);
    assert_eq!(inbound, 256);
    assert_eq!(resets, 5_000 - 256);
    assert!(!s.is_closed());
}

#[test]
fn syn_flood_stops_reading_when_resets_pile_up() {
    let mut s = server();
    let mut input = Vec::new();
    for i in 0..2_000u32 {
        input.extend(wu(2 * i + 1, StreamFlags::SYN, 0));
    }
    let n = s.handle_read(T0, &input);
    // 256 accepted into the backlog, then 256 RSTs queued (max_queued_resets).
    assert_eq!(n, (256 + 256) * 12);
    assert_eq!(s.handle_read(T0, &input[n..]), 0);
    s.check_invariants();
}

#[test]
fn rst_with_flags_combinations_are_not_fatal() {
    let mut s = server();
    let mut input = data(1, StreamFlags::SYN, b"abc");
    input.extend(wu(
        1,
        StreamFlags {
            handshake: Handshake::Ack,
            fin: true,
            rst: true,
        },
        0,
    ));
    input.extend(wu(
        3,
        StreamFlags {
            handshake: Handshake::Syn,
            fin: false,
            rst: true,
        },
        0,
    ));
    input.extend(data(
        5,
        StreamFlags {
            handshake: Handshake::Syn,
            fin: false,
            rst: true,
        },
        b"zz",
    ));
    assert_eq!(s.handle_read(T0, &input), input.len());
    assert!(!s.is_closed());
    let ev = events(&mut s);
    assert!(ev.contains(&Event::StreamReset {
        id: sid(1),
        code: 0
    }));
    assert_eq!(s.stream_count(), 0);
    s.check_invariants();
}

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    /// A frame a hostile or buggy peer might send: mostly well-formed, with
    /// small ids and lengths so streams collide, sometimes raw garbage.
    fn arb_chunk() -> impl Strategy<Value = Vec<u8>> {
        // Mostly legal flag sets on ids of the client's parity (the session
        // under test is a server), sometimes anything.
        let flags = prop_oneof![
            30 => proptest::sample::select(vec![0u16, 1, 2, 4, 8, 5, 6, 10]),
            1 => 0u16..16,
        ];
        let id = prop_oneof![30 => (0u32..6).prop_map(|k| 2 * k + 1), 1 => 1u32..12];
        prop_oneof![
            40 => (0u8..2, flags, id, 0u32..3000).prop_map(|(t, f, id, len)| {
                let mut v = vec![0, t];
                v.extend(f.to_be_bytes());
                v.extend(id.to_be_bytes());
                v.extend(len.to_be_bytes());
                if t == 0 {
                    v.extend((0..len).map(|i| i as u8));
                }
                v
            }),
            4 => (proptest::bool::weighted(0.95), 0u32..4).prop_map(|(req, opaque)| {
                let kind = if req { PingKind::Request } else { PingKind::Response };
                Header::Ping { kind, opaque }.encode().to_vec()
            }),
            2 => (1u32..12, any::<u32>()).prop_map(|(id, delta)| {
                Header::WindowUpdate { stream: sid(id), flags: StreamFlags::NONE, delta }
                    .encode()
                    .to_vec()
            }),
            1 => proptest::collection::vec(any::<u8>(), 0..20),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever arrives, in whatever pieces: no panic, invariants hold,
        /// a failure is typed and followed by GoAway or nothing.
        #[test]
        fn no_input_panics(
            chunks in proptest::collection::vec(arb_chunk(), 0..40),
            cut in 1usize..50,
            client in proptest::bool::weighted(0.1),
            app_reads in any::<bool>(),
        ) {
            let role = if client { Role::Client } else { Role::Server };
            let mut s = Session::new(T0, role, Config::default()).unwrap();
            let input: Vec<u8> = chunks.concat();
            let mut pos = 0;
            let mut rounds = 0;
            while pos < input.len() {
                let end = (pos + cut).min(input.len());
                pos += s.handle_read(T0, &input[pos..end]);
                let _ = drain(&mut s, T0);
                for e in events(&mut s) {
                    if let Event::InboundStream { id } = e {
                        if app_reads {
                            let _ = s.accept(id);
                        } else {
                            let _ = s.reject(id);
                        }
                    }
                    if let Event::StreamReadable { id } = e {
                        let mut buf = [0u8; 512];
                        while let Ok(n) = s.read(id, &mut buf) {
                            if n == 0 {
                                let _ = s.close(id);
                                break;
                            }
                        }
                    }
                }
                s.check_invariants();
                rounds += 1;
                prop_assert!(rounds < 100_000, "no progress");
            }
            if let Some(err) = s.close_error() {
                prop_assert!(err.go_away_sent().is_some());
            }
            if std::env::var_os("FUZZ_STATS").is_some() {
                eprintln!("FUZZ closed={} frames={}", s.is_closed(), s.stats().frames_received);
            }
        }
    }
}
