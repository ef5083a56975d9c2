//! Yamux throughput over loopback TCP: raw TCP, sansp2p's `yamux::Session`
//! (both ends, driven by `sansp2p_conformance::yamux_driver` on mio), and
//! rust-yamux (both ends, default config, on smol), in one process.
//!
//! Shapes: 1 stream x 1 GiB and 16 streams x 64 MiB, unidirectional: the
//! sender writes N bytes on each stream and closes it, the receiver reads
//! every stream to its end. The time is from the sender's first write to the
//! receiver's last byte. Raw TCP moves the same total over one connection
//! (64 KiB+ writes, 256 KiB reads): the ceiling for any multiplexer on one
//! connection.
//!
//! This machine's speed drifts by 2x within seconds, so the contenders run
//! interleaved (raw, ours, ours-refill, rust-yamux, raw, ...) and every comparison
//! is the median of per-round ratios, printed as `RATIO <name> <value>`
//! (above 1: ours is better).
//!
//! Our sender uses the plain pattern, writing whenever `StreamWritable`
//! says there is room (see [`Feed`]); a sender that refills a stream only
//! once its send buffer drained runs too, as `ours-refill`, for information
//! only (no `RATIO` line).
//!
//! Environment: `ROUNDS` (default 5), `SCALE` (default 1: fraction of the
//! bytes per stream, e.g. 0.05 while developing), `ONLY` (one of `raw-tcp`,
//! `ours`, `ours-refill`, `rust-yamux`: run just that contender, e.g.
//! under a profiler; no ratios then).
//!
//! It also measures the memory our session holds per connection and per
//! idle stream, with a counting global allocator (see [`session_memory`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::OnceLock;
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant as StdInstant};

use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use sansp2p::time::Instant;
use sansp2p::yamux::{Config, Event, ReadError, Role, Session, StreamId, WriteError};
use sansp2p_conformance::yamux_driver::{Driver, IoStats, MioReadiness};

/// Counts live heap bytes, for [`session_memory`].
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

const MIB: u64 = 1024 * 1024;
/// Longest any single transfer may take before the bench gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

// -------------------------------------------------------------------- shared

/// What every sender writes, over and over.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut v = Vec::with_capacity(MIB as usize);
        while v.len() < MIB as usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    })
}

/// The next slice to send when `sent` bytes of `total` are out.
fn next_slice(sent: u64, total: u64) -> &'static [u8] {
    let p = pattern();
    let at = (sent % p.len() as u64) as usize;
    let left = (total - sent).min((p.len() - at) as u64) as usize;
    &p[at..at + left]
}

fn tcp_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let dialer = TcpStream::connect(listener.local_addr()?)?;
    let (accepted, _) = listener.accept()?;
    dialer.set_nodelay(true)?;
    accepted.set_nodelay(true)?;
    Ok((dialer, accepted))
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    name: &'static str,
    streams: usize,
    bytes_per_stream: u64,
}

impl Shape {
    fn total(&self) -> u64 {
        self.streams as u64 * self.bytes_per_stream
    }
}

// ------------------------------------------------------------------- raw TCP

fn raw_tcp(shape: Shape) -> Duration {
    const WRITE: usize = 256 * 1024;
    let total = shape.total();
    let (mut tx, mut rx) = tcp_pair().expect("pair");
    let receiver = thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            match rx.read(&mut buf).expect("raw read") {
                0 => break,
                n => got += n as u64,
            }
        }
        assert_eq!(got, total);
        StdInstant::now()
    });
    let p = pattern();
    let start = StdInstant::now();
    let mut sent = 0u64;
    while sent < total {
        let at = (sent % p.len() as u64) as usize;
        let n = (total - sent).min(WRITE as u64).min((p.len() - at) as u64) as usize;
        tx.write_all(&p[at..at + n]).expect("raw write");
        sent += n as u64;
    }
    tx.shutdown(Shutdown::Write).expect("shutdown");
    let end = receiver.join().expect("receiver");
    end - start
}

// ------------------------------------------------------------------ our side

fn driver(socket: TcpStream, role: Role) -> Driver<MioReadiness> {
    let readiness = MioReadiness::for_socket(&socket).expect("watch the socket");
    Driver::new(socket, role, Config::default(), readiness).expect("driver")
}

/// Diagnostics of one run of ours: both sessions' counters and socket work.
#[derive(Debug)]
struct OursDiag {
    sender: (sansp2p::yamux::Stats, IoStats),
    receiver: (sansp2p::yamux::Stats, IoStats),
}

/// How our sender feeds its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// Refill a stream's send buffer only once it has drained completely
    /// (checked with `queued_bytes` at every turn of the loop): for
    /// information (`ours-refill`).
    WhenEmpty,
    /// Write whenever `StreamWritable` says there is room (the buffer is at
    /// most half full): what an application does, and what the ratios use.
    OnWritable,
}

fn ours(shape: Shape, feed: Feed) -> (Duration, OursDiag) {
    let (a, b) = tcp_pair().expect("pair");
    let receiver = thread::spawn(move || ours_receiver(b, shape));
    let (start, sender) = ours_sender(a, shape, feed);
    let (end, receiver) = receiver.join().expect("receiver");
    (end - start, OursDiag { sender, receiver })
}

fn ours_sender(
    socket: TcpStream,
    shape: Shape,
    feed: Feed,
) -> (StdInstant, (sansp2p::yamux::Stats, IoStats)) {
    let mut d = driver(socket, Role::Client);
    let mut start = None;
    let mut streams: Vec<(StreamId, u64, bool)> = Vec::new();
    let mut finished = 0;
    let write = |s: &mut Session, st: &mut (StreamId, u64, bool)| {
        let (id, sent, closed) = st;
        while !*closed {
            if *sent == shape.bytes_per_stream {
                s.close(*id).expect("close");
                *closed = true;
                break;
            }
            match s.write(*id, next_slice(*sent, shape.bytes_per_stream)) {
                Ok(n) => *sent += n as u64,
                Err(WriteError::Blocked) => break,
                Err(e) => panic!("write: {e}"),
            }
        }
    };
    d.run(RUN_TIMEOUT, |s, event| {
        match event {
            None if streams.is_empty() => {
                start = Some(StdInstant::now());
                for _ in 0..shape.streams {
                    let id = s.open_stream().expect("open");
                    streams.push((id, 0, false));
                }
                for st in &mut streams {
                    write(s, st);
                }
            }
            None if feed == Feed::WhenEmpty => {
                for st in &mut streams {
                    if !st.2 && s.queued_bytes(st.0) == Some(0) {
                        write(s, st);
                    }
                }
            }
            Some(Event::StreamWritable { id }) => {
                if feed == Feed::OnWritable {
                    if let Some(st) = streams.iter_mut().find(|st| st.0 == id) {
                        write(s, st);
                    }
                }
            }
            // The receiver closes its (empty) side once it read everything.
            Some(Event::StreamReadable { id }) => match s.read_chunk(id, usize::MAX) {
                Ok(Some(_)) => panic!("the receiver sends nothing"),
                Ok(None) | Err(ReadError::Blocked) => {}
                Err(e) => panic!("read: {e}"),
            },
            Some(Event::StreamClosed { .. }) => finished += 1,
            None | Some(Event::Pong { .. }) => {}
            Some(other) => panic!("sender: unexpected {other:?}"),
        }
        if finished == shape.streams {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("sender run");
    let stats = (d.session().stats().clone(), d.io_stats().clone());
    d.close(RUN_TIMEOUT).expect("sender close");
    (start.expect("started"), stats)
}

fn ours_receiver(
    socket: TcpStream,
    shape: Shape,
) -> (StdInstant, (sansp2p::yamux::Stats, IoStats)) {
    let mut d = driver(socket, Role::Server);
    let mut received: Vec<(StreamId, u64)> = Vec::new();
    let mut ended = 0;
    let mut end = None;
    let mut freed = 0;
    d.run(RUN_TIMEOUT, |s, event| {
        match event {
            Some(Event::InboundStream { id }) => {
                s.accept(id).expect("accept");
                received.push((id, 0));
            }
            Some(Event::StreamReadable { id }) => {
                let st = received
                    .iter_mut()
                    .find(|st| st.0 == id)
                    .expect("known stream");
                loop {
                    match s.read_chunk(id, usize::MAX) {
                        Ok(Some(chunk)) => st.1 += chunk.len() as u64,
                        Ok(None) => {
                            assert_eq!(st.1, shape.bytes_per_stream);
                            ended += 1;
                            if ended == shape.streams {
                                end = Some(StdInstant::now());
                            }
                            s.close(id).expect("close");
                            break;
                        }
                        Err(ReadError::Blocked) => break,
                        Err(e) => panic!("read: {e}"),
                    }
                }
            }
            Some(Event::StreamClosed { .. }) => freed += 1,
            None | Some(Event::Pong { .. }) => {}
            Some(other) => panic!("receiver: unexpected {other:?}"),
        }
        if freed == shape.streams {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("receiver run");
    let stats = (d.session().stats().clone(), d.io_stats().clone());
    d.close(RUN_TIMEOUT).expect("receiver close");
    (end.expect("ended"), stats)
}

// ---------------------------------------------------------------- rust-yamux

type YamuxConn = yamux::Connection<smol::Async<TcpStream>>;

/// Opens `n` streams, hands them out, then drives the connection until it
/// ends (by polling for inbound streams, of which there are none).
async fn yamux_connection(
    mut conn: YamuxConn,
    n: usize,
    out: smol::channel::Sender<yamux::Stream>,
) {
    let mut opened = 0;
    std::future::poll_fn(|cx| {
        while opened < n {
            match conn.poll_new_outbound(cx) {
                Poll::Ready(Ok(s)) => {
                    opened += 1;
                    out.try_send(s).expect("unbounded");
                }
                Poll::Ready(Err(e)) => panic!("rust-yamux open: {e}"),
                Poll::Pending => return Poll::Pending,
            }
        }
        loop {
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(s))) => {
                    out.try_send(s).expect("unbounded");
                }
                Poll::Ready(Some(Err(e))) => panic!("rust-yamux connection: {e}"),
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

fn rust_yamux(shape: Shape) -> Duration {
    let (a, b) = tcp_pair().expect("pair");
    let receiver = thread::spawn(move || rust_yamux_receiver(b, shape));
    let start = rust_yamux_sender(a, shape);
    let end = receiver.join().expect("receiver");
    end - start
}

fn rust_yamux_sender(socket: TcpStream, shape: Shape) -> StdInstant {
    let io = smol::Async::new(socket).expect("async socket");
    let conn = yamux::Connection::new(io, yamux::Config::default(), yamux::Mode::Client);
    let ex = smol::LocalExecutor::new();
    let (tx, rx) = smol::channel::unbounded();
    let conn_task = ex.spawn(yamux_connection(conn, shape.streams, tx));
    let start = smol::block_on(ex.run(async {
        let mut tasks = Vec::new();
        let mut start = None;
        for _ in 0..shape.streams {
            let mut s = rx.recv().await.expect("stream");
            start.get_or_insert_with(StdInstant::now);
            tasks.push(ex.spawn(async move {
                let mut sent = 0;
                while sent < shape.bytes_per_stream {
                    let chunk = next_slice(sent, shape.bytes_per_stream);
                    let chunk = &chunk[..chunk.len().min(256 * 1024)];
                    s.write_all(chunk).await.expect("write");
                    sent += chunk.len() as u64;
                }
                s.close().await.expect("close");
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.expect("read the FIN");
                assert!(rest.is_empty());
            }));
        }
        for t in tasks {
            t.await;
        }
        start.expect("started")
    }));
    // Dropping the connection closes the socket, which ends the receiver's.
    drop(conn_task);
    start
}

fn rust_yamux_receiver(socket: TcpStream, shape: Shape) -> StdInstant {
    let io = smol::Async::new(socket).expect("async socket");
    let conn = yamux::Connection::new(io, yamux::Config::default(), yamux::Mode::Server);
    let ex = smol::LocalExecutor::new();
    let (tx, rx) = smol::channel::unbounded();
    let conn_task = ex.spawn(yamux_connection(conn, 0, tx));
    smol::block_on(ex.run(async {
        let ended = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let end = std::rc::Rc::new(std::cell::Cell::new(None));
        let mut tasks = Vec::new();
        for _ in 0..shape.streams {
            let mut s = rx.recv().await.expect("stream");
            let (ended, end) = (ended.clone(), end.clone());
            tasks.push(ex.spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut got = 0u64;
                loop {
                    match s.read(&mut buf).await.expect("read") {
                        0 => break,
                        n => got += n as u64,
                    }
                }
                assert_eq!(got, shape.bytes_per_stream);
                ended.set(ended.get() + 1);
                if ended.get() == shape.streams {
                    end.set(Some(StdInstant::now()));
                }
                s.close().await.expect("close");
                s
            }));
        }
        let mut keep = Vec::new();
        for t in tasks {
            keep.push(t.await);
        }
        // Our FINs go out while the connection runs; it ends when the
        // sender drops its side.
        conn_task.await;
        end.get().expect("ended")
    }))
}

// ------------------------------------------------------------------- memory

/// Heap bytes our session holds per connection and per idle stream.
///
/// Method: the bench binary's global allocator counts live heap bytes. For
/// the connection: the heap a new `Session` allocates, plus
/// `size_of::<Session>()` for the struct itself (wherever the owner keeps
/// it). For streams: a client and a server session in memory open 1000
/// streams (in batches of 100, each acknowledged, nothing written), and the
/// growth of live heap bytes during the calls of each session is charged to
/// it (the wire buffer between them is allocated beforehand and not
/// counted). The figure is per stream on each side, and includes the
/// stream table's spare capacity and the queues' retained capacity at that
/// size, i.e. what the session really holds for 1000 idle streams.
fn session_memory() -> (usize, usize, f64, f64) {
    fn counted<T>(acc: &mut isize, f: impl FnOnce() -> T) -> T {
        let before = ALLOC.allocated() as isize;
        let out = f();
        *acc += ALLOC.allocated() as isize - before;
        out
    }
    fn pump(
        from: &mut Session,
        to: &mut Session,
        wire: &mut Vec<u8>,
        acc: (&mut isize, &mut isize),
    ) {
        loop {
            wire.clear();
            let n = counted(acc.0, || {
                from.poll_transmit_into(Instant::ZERO, wire, wire.capacity())
            });
            if n == 0 {
                return;
            }
            let used = counted(acc.1, || to.handle_read(Instant::ZERO, wire));
            assert_eq!(used, n);
        }
    }
    const STREAMS: usize = 1000;
    let config = Config {
        max_streams: 1024,
        ..Config::default()
    };
    let mut wire = Vec::with_capacity(1 << 20);
    let before = ALLOC.allocated();
    let mut client = Session::new(Instant::ZERO, Role::Client, config.clone()).expect("client");
    let per_connection = ALLOC.allocated() - before + std::mem::size_of::<Session>();
    let mut server = Session::new(Instant::ZERO, Role::Server, config).expect("server");
    let (mut c, mut s) = (0isize, 0isize);
    // The initial ping exchange, so the steady idle state is measured.
    pump(&mut client, &mut server, &mut wire, (&mut c, &mut s));
    pump(&mut server, &mut client, &mut wire, (&mut s, &mut c));
    let (mut c, mut s) = (0isize, 0isize);
    let mut opened = 0;
    while opened < STREAMS {
        for _ in 0..100 {
            counted(&mut c, || client.open_stream().expect("open"));
            opened += 1;
        }
        pump(&mut client, &mut server, &mut wire, (&mut c, &mut s));
        while let Some(event) = counted(&mut s, || server.poll_event()) {
            if let Event::InboundStream { id } = event {
                counted(&mut s, || server.accept(id).expect("accept"));
            }
        }
        pump(&mut server, &mut client, &mut wire, (&mut s, &mut c));
        while counted(&mut c, || client.poll_event()).is_some() {}
    }
    assert_eq!(client.stream_count(), STREAMS);
    assert_eq!(server.stream_count(), STREAMS);
    let heap_after_new = per_connection - std::mem::size_of::<Session>();
    (
        per_connection,
        heap_after_new,
        c as f64 / STREAMS as f64,
        s as f64 / STREAMS as f64,
    )
}

// ---------------------------------------------------------------------- main

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is ignored too.
    let rounds: usize = env_or("ROUNDS", 5).max(1);
    let scale: f64 = env_or("SCALE", 1.0);
    let scaled = |bytes: u64| ((bytes as f64 * scale) as u64).max(MIB);
    let shapes = [
        Shape {
            name: "1x1GiB",
            streams: 1,
            bytes_per_stream: scaled(1024 * MIB),
        },
        Shape {
            name: "16x64MiB",
            streams: 16,
            bytes_per_stream: scaled(64 * MIB),
        },
    ];
    println!(
        "yamux over loopback TCP: {rounds} rounds, scale {scale}; throughput in GB/s (1e9 bytes/s)"
    );
    pattern();

    let only = std::env::var("ONLY").ok();
    let runs = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let (conn, conn_heap, per_stream_client, per_stream_server) = session_memory();
    println!(
        "MEMORY ours per connection: {conn} bytes (size_of::<Session>() {} + {conn_heap} heap)",
        std::mem::size_of::<Session>()
    );
    println!(
        "MEMORY ours per idle stream (1000 open): {per_stream_client:.0} bytes on the opening side, {per_stream_server:.0} bytes on the accepting side"
    );

    // Per shape and round: ours/raw, ours/rust-yamux, ours-refill/rust-yamux.
    let mut ratios = vec![(Vec::new(), Vec::new(), Vec::new()); shapes.len()];
    let mut last_diag = Vec::new();
    for round in 1..=rounds {
        for (i, shape) in shapes.iter().enumerate() {
            let gbps = |d: Duration| shape.total() as f64 / d.as_secs_f64() / 1e9;
            let mut ours_run = |feed: Feed| {
                let (d, diag) = ours(*shape, feed);
                if round == rounds {
                    last_diag.push((shape.name, feed, diag));
                }
                gbps(d)
            };
            let raw = if runs("raw-tcp") {
                gbps(raw_tcp(*shape))
            } else {
                f64::NAN
            };
            let our = if runs("ours") {
                ours_run(Feed::OnWritable)
            } else {
                f64::NAN
            };
            let our_w = if runs("ours-refill") {
                ours_run(Feed::WhenEmpty)
            } else {
                f64::NAN
            };
            let theirs = if runs("rust-yamux") {
                gbps(rust_yamux(*shape))
            } else {
                f64::NAN
            };
            println!(
                "round {round} {:<9} raw-tcp {raw:6.3}  ours {our:6.3}  rust-yamux {theirs:6.3}  (ours-refill {our_w:6.3})",
                shape.name
            );
            ratios[i].0.push(our / raw);
            ratios[i].1.push(our / theirs);
            ratios[i].2.push(our_w / theirs);
        }
    }
    for (shape, feed, diag) in &last_diag {
        println!(
            "DIAG ours {shape} {feed:?} sender:   {:?} {:?}",
            diag.sender.0, diag.sender.1
        );
        println!(
            "DIAG ours {shape} {feed:?} receiver: {:?} {:?}",
            diag.receiver.0, diag.receiver.1
        );
    }
    if only.is_some() {
        return;
    }
    for (shape, r) in shapes.iter().zip(&ratios) {
        println!(
            "INFO median ours-refill/rust-yamux/{} {:.3}",
            shape.name,
            median(r.2.clone())
        );
    }
    for (shape, r) in shapes.iter().zip(&ratios) {
        println!(
            "RATIO ours/raw-tcp/{} {:.3}",
            shape.name,
            median(r.0.clone())
        );
    }
    for (shape, r) in shapes.iter().zip(&ratios) {
        println!(
            "RATIO ours/rust-yamux/{} {:.3}",
            shape.name,
            median(r.1.clone())
        );
    }
}
