//! Model-based test: random operation sequences on both sides of a pair,
//! checked against a reference model of the byte streams. Every byte written
//! is read exactly once and in order, or the stream reports a reset; the
//! sessions' invariants are checked after every step.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Pair;
use proptest::prelude::*;
use sansp2p::yamux::{
    AcceptError, CloseError, Config, ConnectionError, Event, GoAwayCode, OpenError, ReadError,
    StreamId, WriteError,
};

#[derive(Debug, Clone)]
enum Op {
    Open {
        client: bool,
    },
    Accept {
        client: bool,
        idx: usize,
    },
    Reject {
        client: bool,
        idx: usize,
    },
    Write {
        client: bool,
        idx: usize,
        len: usize,
    },
    Read {
        client: bool,
        idx: usize,
        max: usize,
    },
    ReadChunk {
        client: bool,
        idx: usize,
        max: usize,
    },
    Close {
        client: bool,
        idx: usize,
    },
    Reset {
        client: bool,
        idx: usize,
    },
    Ping {
        client: bool,
    },
    GoAway {
        client: bool,
    },
    Step,
    Drive,
    Advance {
        ms: u64,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    let side = any::<bool>();
    let idx = 0usize..16;
    prop_oneof![
        4 => side.prop_map(|client| Op::Open { client }),
        3 => (side, idx.clone()).prop_map(|(client, idx)| Op::Accept { client, idx }),
        1 => (side, idx.clone()).prop_map(|(client, idx)| Op::Reject { client, idx }),
        8 => (side, idx.clone(), prop_oneof![1usize..100, 100usize..20_000, 20_000usize..300_000])
            .prop_map(|(client, idx, len)| Op::Write { client, idx, len }),
        6 => (side, idx.clone(), prop_oneof![1usize..10, 10usize..100_000])
            .prop_map(|(client, idx, max)| Op::Read { client, idx, max }),
        3 => (side, idx.clone(), 0usize..100_000)
            .prop_map(|(client, idx, max)| Op::ReadChunk { client, idx, max }),
        2 => (side, idx.clone()).prop_map(|(client, idx)| Op::Close { client, idx }),
        1 => (side, idx).prop_map(|(client, idx)| Op::Reset { client, idx }),
        1 => side.prop_map(|client| Op::Ping { client }),
        1 => side.prop_map(|client| Op::GoAway { client }),
        4 => Just(Op::Step),
        4 => Just(Op::Drive),
        1 => (1u64..20_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// Content of byte `offset` in direction `dir` of stream `id`.
fn byte_at(id: StreamId, to_server: bool, offset: u64) -> u8 {
    let x = offset
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(id.get()) << 1 | u64::from(to_server));
    (x >> 29) as u8 ^ (x >> 7) as u8
}

/// One direction of a stream in the model.
#[derive(Debug, Default, Clone)]
struct Dir {
    written: u64,
    read: u64,
    writer_closed: bool,
    eof: bool,
}

#[derive(Debug, Clone)]
struct MStream {
    id: StreamId,
    opened_by_client: bool,
    /// The acceptor saw `InboundStream`.
    announced: bool,
    accepted: bool,
    /// Somebody (either application, or the acceptor's session) reset it.
    reset: bool,
    c2s: Dir,
    s2c: Dir,
    /// Per side (client, server): the stream is gone from that session.
    gone: [bool; 2],
}

impl MStream {
    /// Whether the session of `client`'s side may have freed the stream:
    /// it said so, or it read the end and closed its own direction, or the
    /// stream was reset.
    fn may_be_gone(&self, client: bool) -> bool {
        let (own, other) = if client {
            (&self.c2s, &self.s2c)
        } else {
            (&self.s2c, &self.c2s)
        };
        self.gone[usize::from(!client)] || self.reset || (own.writer_closed && other.eof)
    }

    fn dir(&mut self, to_server: bool) -> &mut Dir {
        if to_server {
            &mut self.c2s
        } else {
            &mut self.s2c
        }
    }
}

struct Model {
    /// Some session sent GoAway: it may close while the peer still opens
    /// streams, so those can end with the transport.
    went_away: bool,
    streams: Vec<MStream>,
    by_id: HashMap<u32, usize>,
}

impl Model {
    fn pick(&self, idx: usize) -> Option<usize> {
        if self.streams.is_empty() {
            None
        } else {
            Some(idx % self.streams.len())
        }
    }

    /// Absorbs the events the pair collected.
    fn absorb(&mut self, pair: &mut Pair) {
        for client in [true, false] {
            let q = if client {
                &mut pair.client_events
            } else {
                &mut pair.server_events
            };
            while let Some(e) = q.pop_front() {
                let side = usize::from(!client);
                match e {
                    Event::InboundStream { id } => {
                        let i = self.by_id[&id.get()];
                        let s = &mut self.streams[i];
                        assert_ne!(s.opened_by_client, client, "inbound on the opener");
                        s.announced = true;
                    }
                    Event::StreamReset { id, .. } => {
                        let i = self.by_id[&id.get()];
                        let s = &mut self.streams[i];
                        // An application reset or a refusal by the acceptor.
                        s.reset = true;
                        s.gone[side] = true;
                    }
                    Event::StreamClosed { id } => {
                        let i = self.by_id[&id.get()];
                        let s = &mut self.streams[i];
                        assert!(s.c2s.writer_closed && s.s2c.writer_closed, "closed early");
                        s.gone[side] = true;
                    }
                    Event::Closed { error } => assert!(
                        error.is_none()
                            || self.went_away && error == Some(ConnectionError::TransportClosed),
                        "unexpected failure {error:?}"
                    ),
                    _ => {}
                }
            }
        }
    }
}

fn session(pair: &mut Pair, client: bool) -> &mut sansp2p::yamux::Session {
    if client {
        &mut pair.client
    } else {
        &mut pair.server
    }
}

fn do_read(pair: &mut Pair, m: &mut Model, client: bool, i: usize, max: usize, chunk: bool) {
    let s = &mut m.streams[i];
    let id = s.id;
    let to_server = !client; // the direction this side reads
    let sess = session(pair, client);
    let result: Result<Option<Vec<u8>>, ReadError> = if chunk {
        sess.read_chunk(id, max).map(|c| c.map(|b| b.to_vec()))
    } else {
        let mut buf = vec![0u8; max];
        sess.read(id, &mut buf).map(|n| {
            if n == 0 {
                None
            } else {
                Some(buf[..n].to_vec())
            }
        })
    };
    let side = usize::from(!client);
    let acceptor = s.opened_by_client != client;
    match result {
        Ok(Some(data)) => {
            let d = s.dir(to_server);
            for (k, b) in data.iter().enumerate() {
                assert_eq!(
                    *b,
                    byte_at(id, to_server, d.read + k as u64),
                    "byte {} of {id}",
                    d.read
                );
            }
            d.read += data.len() as u64;
            assert!(d.read <= d.written, "read more than written");
        }
        Ok(None) => {
            let reset = s.reset;
            let d = s.dir(to_server);
            assert!(d.writer_closed, "EOF before the writer closed");
            assert!(d.read == d.written || reset, "EOF with bytes missing");
            d.eof = true;
        }
        Err(ReadError::Blocked) => {}
        Err(ReadError::Reset { .. }) => {
            assert!(s.reset, "reset reported on {id} but nobody reset it");
            s.gone[side] = true;
        }
        Err(ReadError::UnknownStream) => assert!(s.may_be_gone(client) || !s.announced && acceptor),
        Err(ReadError::NotAccepted) => assert!(acceptor && !s.accepted),
        Err(ReadError::SessionClosed) => {
            assert!(m.went_away, "session closed without GoAway");
            s.reset = true; // aborted with the connection
        }
        Err(e) => panic!("unexpected read error {e:?}"),
    }
}

fn run(ops: Vec<Op>, read_size: usize, latency_ms: u64, small: bool) {
    let cfg = if small {
        Config {
            max_streams: 6,
            ack_backlog: 3,
            accept_backlog: 2,
            split_send_size: 1000,
            max_stream_send_buffer: 5000,
            max_queued_pongs: 1,
            max_queued_resets: 1,
            max_outstanding_pings: 1,
            ..Config::default()
        }
    } else {
        Config::default()
    };
    let mut pair = Pair::with_config(cfg.clone(), cfg);
    pair.read_size = read_size;
    pair.latency = Duration::from_millis(latency_ms);
    let mut m = Model {
        went_away: false,
        streams: Vec::new(),
        by_id: HashMap::new(),
    };
    let mut scratch = Vec::new();

    for op in ops {
        match op {
            Op::Open { client } => match session(&mut pair, client).open_stream() {
                Ok(id) => {
                    m.by_id.insert(id.get(), m.streams.len());
                    m.streams.push(MStream {
                        id,
                        opened_by_client: client,
                        announced: false,
                        accepted: false,
                        reset: false,
                        c2s: Dir::default(),
                        s2c: Dir::default(),
                        gone: [false; 2],
                    });
                }
                Err(
                    OpenError::TooManyStreams
                    | OpenError::AckBacklogFull
                    | OpenError::GoingAway
                    | OpenError::RemoteGoAway(_)
                    | OpenError::SessionClosed,
                ) => {}
                Err(e) => panic!("open: {e:?}"),
            },
            Op::Accept { client, idx } | Op::Reject { client, idx } => {
                let Some(i) = m.pick(idx) else { continue };
                let s = &mut m.streams[i];
                let reject = matches!(op, Op::Reject { .. });
                let r = if reject {
                    session(&mut pair, client).reject(s.id)
                } else {
                    session(&mut pair, client).accept(s.id)
                };
                let acceptor = s.opened_by_client != client;
                match r {
                    Ok(()) => {
                        assert!(acceptor && s.announced && !s.accepted);
                        s.accepted = true;
                        if reject {
                            s.reset = true;
                            s.gone[usize::from(!client)] = true;
                        }
                    }
                    Err(AcceptError::NotPending) => assert!(!acceptor || s.accepted),
                    Err(AcceptError::UnknownStream) => {
                        assert!(!s.announced || s.may_be_gone(client))
                    }
                    Err(AcceptError::SessionClosed) => {}
                    Err(e) => panic!("accept: {e:?}"),
                }
            }
            Op::Write { client, idx, len } => {
                let Some(i) = m.pick(idx) else { continue };
                let s = &mut m.streams[i];
                let id = s.id;
                let acceptor = s.opened_by_client != client;
                let reset = s.reset;
                let side = usize::from(!client);
                let gone = s.may_be_gone(client);
                let accepted = s.accepted;
                let d = s.dir(client);
                scratch.clear();
                scratch.extend((0..len as u64).map(|k| byte_at(id, client, d.written + k)));
                match session(&mut pair, client).write(id, &scratch) {
                    Ok(n) => {
                        assert!(!d.writer_closed);
                        d.written += n as u64;
                    }
                    Err(WriteError::Blocked) => {}
                    Err(WriteError::Closed) => assert!(d.writer_closed),
                    Err(WriteError::Reset { .. }) => {
                        assert!(reset, "write saw a reset nobody made");
                        s.gone[side] = true;
                    }
                    Err(WriteError::UnknownStream) => assert!(gone || acceptor && !s.announced),
                    Err(WriteError::NotAccepted) => assert!(acceptor && !accepted),
                    Err(WriteError::SessionClosed) => {}
                    Err(e) => panic!("write: {e:?}"),
                }
            }
            Op::Read { client, idx, max } => {
                let Some(i) = m.pick(idx) else { continue };
                do_read(&mut pair, &mut m, client, i, max, false);
            }
            Op::ReadChunk { client, idx, max } => {
                let Some(i) = m.pick(idx) else { continue };
                do_read(&mut pair, &mut m, client, i, max, true);
            }
            Op::Close { client, idx } => {
                let Some(i) = m.pick(idx) else { continue };
                let s = &mut m.streams[i];
                let id = s.id;
                let side = usize::from(!client);
                let acceptor = s.opened_by_client != client;
                match session(&mut pair, client).close(id) {
                    Ok(()) => s.dir(client).writer_closed = true,
                    Err(CloseError::Reset { .. }) => {
                        assert!(s.reset);
                        s.gone[side] = true;
                    }
                    Err(CloseError::UnknownStream) => {
                        assert!(s.may_be_gone(client) || acceptor && !s.announced)
                    }
                    Err(CloseError::NotAccepted) => assert!(acceptor && !s.accepted),
                    Err(CloseError::SessionClosed) => {}
                    Err(e) => panic!("close: {e:?}"),
                }
            }
            Op::Reset { client, idx } => {
                let Some(i) = m.pick(idx) else { continue };
                let s = &mut m.streams[i];
                let side = usize::from(!client);
                if session(&mut pair, client).reset(s.id).is_ok() {
                    s.reset = true;
                    s.gone[side] = true;
                }
            }
            Op::Ping { client } => {
                let _ = session(&mut pair, client).ping();
            }
            Op::GoAway { client } => {
                m.went_away = true;
                let _ = session(&mut pair, client).go_away(GoAwayCode::NORMAL);
            }
            Op::Step => {
                pair.step();
            }
            Op::Drive => pair.drive(),
            Op::Advance { ms } => {
                let t = pair.now + Duration::from_millis(ms);
                pair.run_until(t);
            }
        }
        pair.client.check_invariants();
        pair.server.check_invariants();
        m.absorb(&mut pair);
    }

    // Finish: accept everything pending, close every writer, then pump and
    // read until nothing moves.
    pair.drive();
    m.absorb(&mut pair);
    for i in 0..m.streams.len() {
        let s = &mut m.streams[i];
        let acceptor_is_client = !s.opened_by_client;
        if s.announced && !s.accepted && !s.reset {
            let r = session(&mut pair, acceptor_is_client).accept(s.id);
            if r.is_ok() {
                s.accepted = true;
            }
        }
        for client in [true, false] {
            if session(&mut pair, client).close(s.id).is_ok() {
                s.dir(client).writer_closed = true;
            }
        }
    }
    for _ in 0..10_000 {
        pair.drive();
        m.absorb(&mut pair);
        for i in 0..m.streams.len() {
            for client in [true, false] {
                do_read(&mut pair, &mut m, client, i, 1 << 20, i % 2 == 0);
            }
        }
        pair.drive();
        m.absorb(&mut pair);
        if pair.idle()
            && m.streams
                .iter()
                .all(|s| s.reset || (s.c2s.eof && s.s2c.eof) || !s.announced)
        {
            break;
        }
    }
    for s in &m.streams {
        if s.reset {
            continue;
        }
        if !s.announced {
            // Never reached the peer (refused opens are reported as resets).
            continue;
        }
        for (name, d) in [("c2s", &s.c2s), ("s2c", &s.s2c)] {
            assert!(d.eof, "{} {name}: no EOF ({d:?})", s.id);
            assert_eq!(d.read, d.written, "{} {name}: bytes lost", s.id);
        }
    }
    if std::env::var_os("MODEL_STATS").is_some() {
        let bytes: u64 = m.streams.iter().map(|s| s.c2s.read + s.s2c.read).sum();
        let eofs = m.streams.iter().filter(|s| s.c2s.eof && s.s2c.eof).count();
        let resets = m.streams.iter().filter(|s| s.reset).count();
        eprintln!(
            "STATS streams={} eof={eofs} reset={resets} bytes={bytes}",
            m.streams.len()
        );
    }
    // Everything finished is freed on both sides.
    for s in &m.streams {
        if s.c2s.eof && s.s2c.eof {
            assert!(
                !pair.client.contains_stream(s.id),
                "{} lingers on client",
                s.id
            );
            assert!(
                !pair.server.contains_stream(s.id),
                "{} lingers on server",
                s.id
            );
        }
    }
    pair.client.check_invariants();
    pair.server.check_invariants();
}

proptest! {
    // MODEL_CASES=N runs more cases (default 96).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn model_default_config(
        ops in proptest::collection::vec(arb_op(), 1..60),
        read_size in prop_oneof![Just(1usize), Just(12), Just(13), Just(4096), Just(usize::MAX)],
        latency in prop_oneof![Just(0u64), Just(3), Just(40)],
    ) {
        run(ops, read_size, latency, false);
    }

    #[test]
    fn model_tight_limits(
        ops in proptest::collection::vec(arb_op(), 1..80),
        read_size in prop_oneof![Just(1usize), Just(7), Just(usize::MAX)],
        latency in prop_oneof![Just(0u64), Just(10)],
    ) {
        run(ops, read_size, latency, true);
    }
}
