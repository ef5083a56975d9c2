//! Yamux interop: sansp2p's `yamux::Session` against rust-yamux (the crate
//! rust-libp2p uses) over loopback TCP, with each implementation in both
//! roles.
//!
//! Our side runs on the calling thread through
//! [`sansp2p_conformance::yamux_driver::Driver`] (non-blocking socket, mio);
//! rust-yamux runs on smol in a thread of its own, where one future owns the
//! `Connection`, polls it for inbound streams all the time and serves "open a
//! stream" and "close the connection" requests from the scenario.
//!
//! Every test is bounded: our runs by [`BUDGET`], the rust-yamux side by the
//! same budget on a smol timer, so a stall fails the test instead of hanging.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::TcpStream;
use std::ops::ControlFlow;
use std::sync::OnceLock;
use std::task::Poll;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant as StdInstant};

use futures::channel::{mpsc, oneshot};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use sansp2p::yamux::{
    Config, Event, GoAwayCode, OpenError, ReadError, Role, Session, StreamId, WriteError,
};
use sansp2p_conformance::tcp_pair;
use sansp2p_conformance::yamux_driver::{Driver, MioReadiness};

/// Longest a whole test may take, on either side.
const BUDGET: Duration = Duration::from_secs(25);

// ------------------------------------------------------------------ our side

fn mio_for(socket: &TcpStream) -> MioReadiness {
    MioReadiness::for_socket(socket).expect("watch the socket")
}

type Ours = Driver<MioReadiness>;

/// A deadline for the whole test and the time left until it.
struct Deadline(StdInstant);

impl Deadline {
    fn start() -> Self {
        Deadline(StdInstant::now() + BUDGET)
    }
    fn left(&self) -> Duration {
        self.0.saturating_duration_since(StdInstant::now())
    }
}

/// A connected pair: our session on one socket (in `role`), rust-yamux on the
/// other running `scenario` in its own thread.
fn connect<T, F, Fut>(role: Role, scenario: F) -> (Ours, JoinHandle<T>)
where
    F: FnOnce(Theirs, Inbound) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (dialer, listener) = tcp_pair().expect("loopback pair");
    // The dialer is the yamux client.
    let (ours, theirs, mode) = match role {
        Role::Client => (dialer, listener, yamux::Mode::Server),
        Role::Server => (listener, dialer, yamux::Mode::Client),
    };
    let readiness = mio_for(&ours);
    let driver = Driver::new(ours, role, Config::default(), readiness).expect("our session");
    (driver, spawn_theirs(theirs, mode, scenario))
}

/// Waits for the rust-yamux thread, re-raising its panic.
fn join<T>(handle: JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Ends our side politely (see `Driver::close`) and collects the rust-yamux
/// side's result; its scenarios end by waiting for the connection to end.
fn finish<T>(ours: Ours, theirs: JoinHandle<T>, deadline: &Deadline) -> T {
    ours.close(deadline.left()).expect("close our side");
    join(theirs)
}

// -------------------------------------------------------------- rust-yamux side

enum Command {
    Open(oneshot::Sender<yamux::Result<yamux::Stream>>),
    Close(oneshot::Sender<Result<(), String>>),
}

/// The scenario's handle on the rust-yamux connection.
#[derive(Clone)]
struct Theirs {
    commands: mpsc::UnboundedSender<Command>,
}

impl Theirs {
    async fn open(&self) -> yamux::Result<yamux::Stream> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .unbounded_send(Command::Open(tx))
            .expect("connection task alive");
        rx.await.expect("connection task answered")
    }

    /// `Connection::poll_close` to completion: rust-yamux sends what its
    /// streams queued, then GoAway, then closes the socket.
    async fn close(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .unbounded_send(Command::Close(tx))
            .expect("connection task alive");
        rx.await.expect("connection task answered")
    }
}

/// Inbound streams of the rust-yamux connection; `None` once it ended.
struct Inbound(mpsc::UnboundedReceiver<yamux::Result<yamux::Stream>>);

impl Inbound {
    async fn next(&mut self) -> Option<yamux::Result<yamux::Stream>> {
        self.0.next().await
    }

    /// Waits for the connection to end (our side closed the socket),
    /// failing on any further inbound stream.
    async fn until_end(&mut self) {
        if let Some(other) = self.next().await {
            panic!("unexpected inbound stream or error: {other:?}");
        }
    }
}

/// Owns the connection: polls it for inbound streams continuously (which is
/// what drives all its I/O) and serves the scenario's commands. Returns when
/// every [`Theirs`] handle is gone.
async fn drive_connection(
    mut conn: yamux::Connection<smol::Async<TcpStream>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    inbound: mpsc::UnboundedSender<yamux::Result<yamux::Stream>>,
) {
    let mut inbound = Some(inbound);
    let mut opening = std::collections::VecDeque::new();
    let mut closing: Option<oneshot::Sender<Result<(), String>>> = None;
    let mut closed = false;
    std::future::poll_fn(|cx| loop {
        while let Poll::Ready(cmd) = commands.poll_next_unpin(cx) {
            match cmd {
                Some(Command::Open(reply)) => opening.push_back(reply),
                Some(Command::Close(reply)) => closing = Some(reply),
                None => return Poll::Ready(()),
            }
        }
        if closing.is_some() || closed {
            if let Poll::Ready(result) = conn.poll_close(cx) {
                if let Some(reply) = closing.take() {
                    let _ = reply.send(result.map_err(|e| e.to_string()));
                }
                closed = true;
                inbound = None;
            }
        }
        if !opening.is_empty() {
            if let Poll::Ready(result) = conn.poll_new_outbound(cx) {
                let reply = opening.pop_front().expect("non-empty");
                let _ = reply.send(result);
                continue;
            }
        }
        if let Some(tx) = &inbound {
            if closing.is_none() {
                match conn.poll_next_inbound(cx) {
                    Poll::Ready(Some(result)) => {
                        let _ = tx.unbounded_send(result);
                        continue;
                    }
                    Poll::Ready(None) => {
                        inbound = None;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
        }
        return Poll::Pending;
    })
    .await
}

/// Runs `scenario` against a rust-yamux connection on `socket`, in a new
/// thread, within [`BUDGET`].
fn spawn_theirs<T, F, Fut>(socket: TcpStream, mode: yamux::Mode, scenario: F) -> JoinHandle<T>
where
    F: FnOnce(Theirs, Inbound) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    thread::spawn(move || {
        let io = smol::Async::new(socket).expect("register the socket with smol");
        let conn = yamux::Connection::new(io, yamux::Config::default(), mode);
        let (cmd_tx, cmd_rx) = mpsc::unbounded();
        let (in_tx, in_rx) = mpsc::unbounded();
        let work = async move {
            Some(
                scenario(
                    Theirs {
                        commands: cmd_tx.clone(),
                    },
                    Inbound(in_rx),
                )
                .await,
            )
        };
        let driver = async move {
            drive_connection(conn, cmd_rx, in_tx).await;
            std::future::pending::<Option<T>>().await
        };
        let timer = async {
            smol::Timer::after(BUDGET).await;
            None
        };
        smol::block_on(smol::future::or(work, smol::future::or(driver, timer)))
            .expect("the rust-yamux side timed out")
    })
}

/// Reads `stream` to its end, checking every byte against `expected`.
async fn read_exact_to_end<R>(stream: &mut R, expected: &[u8], what: &str) -> io::Result<()>
where
    R: futures::AsyncRead + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        assert!(
            at + n <= expected.len(),
            "{what}: more than {} bytes",
            expected.len()
        );
        assert!(
            buf[..n] == expected[at..at + n],
            "{what}: bytes differ in {at}..{}",
            at + n
        );
        at += n;
    }
    assert_eq!(at, expected.len(), "{what}: stream ended early");
    Ok(())
}

/// Echoes everything, then closes; returns the bytes echoed.
async fn echo(mut stream: yamux::Stream) -> io::Result<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).await?;
        total += n;
    }
    stream.close().await?;
    Ok(total)
}

// ------------------------------------------------------------------- payloads

const PATTERN_LEN: usize = 4 * 1024 * 1024;

/// Pseudo-random bytes (xorshift64); payloads are windows into them.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut v = Vec::with_capacity(PATTERN_LEN);
        while v.len() < PATTERN_LEN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    })
}

/// The `len` bytes stream number `index` carries: a different window of the
/// pattern for every index, so crossed streams show.
fn payload(index: usize, len: usize) -> &'static [u8] {
    assert!(len <= PATTERN_LEN / 2);
    let offset = index.wrapping_mul(40_503) % (PATTERN_LEN - len + 1);
    &pattern()[offset..offset + len]
}

// ----------------------------------------------------------- our applications

/// Writes `data[*sent..]` into the stream until blocked or done; closes once
/// everything is in. Returns whether the close happened.
fn send_all(s: &mut Session, id: StreamId, data: &[u8], sent: &mut usize) -> bool {
    while *sent < data.len() {
        match s.write(id, &data[*sent..]) {
            Ok(n) => *sent += n,
            Err(WriteError::Blocked) => return false,
            Err(e) => panic!("write on {id:?}: {e}"),
        }
    }
    s.close(id).expect("close after the last write");
    true
}

/// Reads (zero-copy) everything buffered on a stream, checking it against
/// `expected[*received..]`. Returns `Ok(true)` at the end of the stream.
fn receive_checked(
    s: &mut Session,
    id: StreamId,
    expected: &[u8],
    received: &mut usize,
) -> Result<bool, ReadError> {
    loop {
        match s.read_chunk(id, usize::MAX) {
            Ok(Some(chunk)) => {
                let end = *received + chunk.len();
                assert!(end <= expected.len(), "{id:?}: more data than sent");
                assert!(
                    chunk[..] == expected[*received..end],
                    "{id:?}: bytes differ in {}..{end}",
                    *received
                );
                *received = end;
            }
            Ok(None) => {
                assert_eq!(*received, expected.len(), "{id:?}: ended early");
                return Ok(true);
            }
            Err(ReadError::Blocked) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Our side opening `count` streams, each sending `len` bytes, half-closing,
/// and checking that exactly those bytes come back.
struct EchoClient {
    count: usize,
    len: usize,
    opened: usize,
    streams: HashMap<StreamId, Outgoing>,
    finished: usize,
}

struct Outgoing {
    index: usize,
    sent: usize,
    closed: bool,
    received: usize,
    eof: bool,
}

impl EchoClient {
    fn new(count: usize, len: usize) -> Self {
        EchoClient {
            count,
            len,
            opened: 0,
            streams: HashMap::new(),
            finished: 0,
        }
    }

    fn step(&mut self, s: &mut Session, event: Option<Event>) -> ControlFlow<()> {
        match event {
            None => {
                while self.opened < self.count {
                    match s.open_stream() {
                        Ok(id) => {
                            let index = self.opened;
                            self.opened += 1;
                            self.streams.insert(
                                id,
                                Outgoing {
                                    index,
                                    sent: 0,
                                    closed: false,
                                    received: 0,
                                    eof: false,
                                },
                            );
                            self.send(s, id);
                        }
                        Err(OpenError::AckBacklogFull | OpenError::TooManyStreams) => break,
                        Err(e) => panic!("open_stream: {e}"),
                    }
                }
            }
            Some(Event::StreamWritable { id }) => self.send(s, id),
            Some(Event::StreamReadable { id }) => {
                let len = self.len;
                if let Some(o) = self.streams.get_mut(&id) {
                    let expected = payload(o.index, len);
                    match receive_checked(s, id, expected, &mut o.received) {
                        Ok(eof) => o.eof |= eof,
                        Err(e) => panic!("read on {id:?}: {e}"),
                    }
                }
            }
            Some(Event::StreamClosed { id }) => {
                let o = self.streams.remove(&id).expect("a stream of ours");
                assert!(o.closed && o.eof, "{id:?} freed before both ends");
                self.finished += 1;
            }
            Some(Event::StreamsAvailable | Event::Pong { .. }) => {}
            Some(other) => panic!("unexpected event {other:?}"),
        }
        if self.finished == self.count {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn send(&mut self, s: &mut Session, id: StreamId) {
        if let Some(o) = self.streams.get_mut(&id) {
            if !o.closed {
                o.closed = send_all(s, id, payload(o.index, self.len), &mut o.sent);
            }
        }
    }
}

/// Our side accepting streams and echoing them: reads only while the
/// previous read has been written back, so memory stays bounded.
struct EchoServer {
    count: usize,
    streams: HashMap<StreamId, Echoing>,
    echoed: Vec<usize>,
}

struct Echoing {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    total: usize,
    eof: bool,
    closed: bool,
}

impl EchoServer {
    fn new(count: usize) -> Self {
        EchoServer {
            count,
            streams: HashMap::new(),
            echoed: Vec::new(),
        }
    }

    fn step(&mut self, s: &mut Session, event: Option<Event>) -> ControlFlow<Vec<usize>> {
        match event {
            None => {}
            Some(Event::InboundStream { id }) => {
                s.accept(id).expect("accept");
                self.streams.insert(
                    id,
                    Echoing {
                        buf: vec![0; 64 * 1024],
                        start: 0,
                        end: 0,
                        total: 0,
                        eof: false,
                        closed: false,
                    },
                );
                self.pump(s, id);
            }
            Some(Event::StreamReadable { id } | Event::StreamWritable { id }) => self.pump(s, id),
            Some(Event::StreamClosed { id }) => {
                let e = self.streams.remove(&id).expect("an echoed stream");
                assert!(e.eof && e.closed, "{id:?} freed before both ends");
                self.echoed.push(e.total);
            }
            Some(Event::Pong { .. }) => {}
            Some(other) => panic!("unexpected event {other:?}"),
        }
        if self.echoed.len() == self.count {
            ControlFlow::Break(std::mem::take(&mut self.echoed))
        } else {
            ControlFlow::Continue(())
        }
    }

    fn pump(&mut self, s: &mut Session, id: StreamId) {
        let Some(e) = self.streams.get_mut(&id) else {
            return;
        };
        while !e.closed {
            if e.start < e.end {
                match s.write(id, &e.buf[e.start..e.end]) {
                    Ok(n) => e.start += n,
                    Err(WriteError::Blocked) => return,
                    Err(err) => panic!("echo write on {id:?}: {err}"),
                }
            } else if e.eof {
                s.close(id).expect("close the echo");
                e.closed = true;
            } else {
                match s.read(id, &mut e.buf) {
                    Ok(0) => e.eof = true,
                    Ok(n) => {
                        e.start = 0;
                        e.end = n;
                        e.total += n;
                    }
                    Err(ReadError::Blocked) => return,
                    Err(err) => panic!("echo read on {id:?}: {err}"),
                }
            }
        }
    }
}

// ======================================================================= tests
//
// Each scenario is a function of our role; the tests run it for both.

const ECHO_STREAMS: usize = 100;
const ECHO_LEN: usize = 1024 * 1024;

/// 1a. We open 100 streams at once, each sends 1 MiB of its own pseudo-random
/// bytes and half-closes; rust-yamux echoes each and closes; we check every
/// byte and that each stream ends cleanly (FIN both ways, then freed).
fn echo_ours_open(role: Role) {
    let deadline = Deadline::start();
    let (mut ours, theirs) = connect(role, |_theirs, mut inbound| async move {
        let ex = smol::LocalExecutor::new();
        ex.run(async {
            let mut tasks = Vec::new();
            for _ in 0..ECHO_STREAMS {
                let stream = inbound.next().await.expect("inbound stream").expect("ok");
                tasks.push(ex.spawn(echo(stream)));
            }
            let mut totals = Vec::new();
            for t in tasks {
                totals.push(t.await.expect("echo"));
            }
            inbound.until_end().await;
            totals
        })
        .await
    });
    let mut app = EchoClient::new(ECHO_STREAMS, ECHO_LEN);
    ours.run(deadline.left(), |s, e| app.step(s, e))
        .expect("our side");
    assert_eq!(ours.session().stream_count(), 0);
    let totals = finish(ours, theirs, &deadline);
    assert_eq!(totals, vec![ECHO_LEN; ECHO_STREAMS]);
}

/// 1b. rust-yamux opens 100 streams at once and sends 1 MiB on each
/// (writing and reading concurrently); we echo everything and close; it
/// checks every byte.
fn echo_theirs_open(role: Role) {
    let deadline = Deadline::start();
    let (mut ours, theirs) = connect(role, |theirs, mut inbound| async move {
        let ex = smol::LocalExecutor::new();
        ex.run(async {
            let mut tasks = Vec::new();
            for index in 0..ECHO_STREAMS {
                let stream = theirs.open().await.expect("open");
                tasks.push(ex.spawn(async move {
                    let data = payload(index, ECHO_LEN);
                    let (mut r, mut w) = futures::AsyncReadExt::split(stream);
                    let write = async {
                        w.write_all(data).await?;
                        w.close().await
                    };
                    let read = read_exact_to_end(&mut r, data, "echo");
                    let (a, b) = futures::join!(write, read);
                    a.and(b)
                }));
            }
            for t in tasks {
                t.await.expect("stream echoed");
            }
            inbound.until_end().await;
        })
        .await
    });
    let mut app = EchoServer::new(ECHO_STREAMS);
    let echoed = ours
        .run(deadline.left(), |s, e| app.step(s, e))
        .expect("our side");
    assert_eq!(echoed, vec![ECHO_LEN; ECHO_STREAMS]);
    finish(ours, theirs, &deadline);
}

#[test]
fn echo_100_streams_ours_client_opening() {
    echo_ours_open(Role::Client);
}

#[test]
fn echo_100_streams_ours_server_opening() {
    echo_ours_open(Role::Server);
}

#[test]
fn echo_100_streams_theirs_client_opening() {
    echo_theirs_open(Role::Server);
}

#[test]
fn echo_100_streams_theirs_server_opening() {
    echo_theirs_open(Role::Client);
}

// ---------------------------------------------------------------- half-close

const REQUEST: usize = 64 * 1024;
/// Larger than the initial window, so it needs window updates after the
/// receiver's own half-close.
const RESPONSE: usize = 2 * 1024 * 1024;

/// One direction pair of a stream in our half-close app: what we send, what
/// we expect, and whether we answer only after the peer finished.
struct Leg {
    send: &'static [u8],
    sent: usize,
    closed: bool,
    expect: &'static [u8],
    received: usize,
    eof: bool,
    send_after_eof: bool,
    freed: bool,
}

impl Leg {
    fn new(send: &'static [u8], expect: &'static [u8], send_after_eof: bool) -> Self {
        Leg {
            send,
            sent: 0,
            closed: false,
            expect,
            received: 0,
            eof: false,
            send_after_eof,
            freed: false,
        }
    }

    fn pump(&mut self, s: &mut Session, id: StreamId) {
        if self.freed {
            return;
        }
        if !self.eof {
            match receive_checked(s, id, self.expect, &mut self.received) {
                Ok(eof) => self.eof = eof,
                Err(e) => panic!("read on {id:?}: {e}"),
            }
        }
        if !self.closed && (self.eof || !self.send_after_eof) {
            self.closed = send_all(s, id, self.send, &mut self.sent);
            if self.closed {
                // Our half is closed: writing is refused, reading goes on.
                assert_eq!(s.write(id, b"late"), Err(WriteError::Closed));
            }
        }
    }
}

/// A: we open, send a request and half-close first; rust-yamux reads to the
/// end, then sends a 2 MiB response and closes; we read all of it.
/// B: rust-yamux opens, sends a request and half-closes first; we read to the
/// end, then send a 2 MiB response and close; it reads all of it after its
/// own close.
fn half_close(role: Role) {
    let deadline = Deadline::start();
    let (mut ours, theirs) = connect(role, |theirs, mut inbound| async move {
        let a = async {
            let mut s = inbound.next().await.expect("stream A").expect("ok");
            read_exact_to_end(&mut s, payload(1, REQUEST), "A request").await?;
            s.write_all(payload(2, RESPONSE)).await?;
            s.close().await
        };
        let b = async {
            let mut s = theirs.open().await.expect("open B");
            s.write_all(payload(3, REQUEST)).await?;
            s.close().await?;
            read_exact_to_end(&mut s, payload(4, RESPONSE), "B response").await
        };
        let (a, b) = futures::join!(a, b);
        a.expect("stream A on their side");
        b.expect("stream B on their side");
        inbound.until_end().await;
    });
    let mut a: Option<(StreamId, Leg)> = None;
    let mut b: Option<(StreamId, Leg)> = None;
    ours.run(deadline.left(), |s, event| {
        match event {
            None if a.is_none() => {
                let id = s.open_stream().expect("open A");
                let mut leg = Leg::new(payload(1, REQUEST), payload(2, RESPONSE), false);
                leg.pump(s, id);
                a = Some((id, leg));
            }
            None | Some(Event::Pong { .. }) => {}
            Some(Event::InboundStream { id }) => {
                assert!(b.is_none(), "one inbound stream expected");
                s.accept(id).expect("accept B");
                let mut leg = Leg::new(payload(4, RESPONSE), payload(3, REQUEST), true);
                leg.pump(s, id);
                b = Some((id, leg));
            }
            Some(Event::StreamReadable { id } | Event::StreamWritable { id }) => {
                for (sid, leg) in a.iter_mut().chain(b.iter_mut()) {
                    if *sid == id {
                        leg.pump(s, id);
                    }
                }
            }
            Some(Event::StreamClosed { id }) => {
                for (sid, leg) in a.iter_mut().chain(b.iter_mut()) {
                    if *sid == id {
                        assert!(leg.eof && leg.closed, "{id:?} freed early");
                        leg.freed = true;
                    }
                }
            }
            Some(other) => panic!("unexpected event {other:?}"),
        }
        let freed = |x: &Option<(StreamId, Leg)>| x.as_ref().is_some_and(|(_, l)| l.freed);
        if freed(&a) && freed(&b) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("our side");
    finish(ours, theirs, &deadline);
}

#[test]
fn half_close_ours_client() {
    half_close(Role::Client);
}

#[test]
fn half_close_ours_server() {
    half_close(Role::Server);
}

// ----------------------------------------------------------------------- RST

const SMALL: usize = 10 * 1024;
const AFTER_RESET: usize = 256 * 1024;

/// What rust-yamux saw on the stream we reset.
#[derive(Debug, PartialEq, Eq)]
struct SeenReset {
    read_returned: usize,
    is_closed: bool,
    write_error: io::ErrorKind,
}

/// A: we open, send 10 KiB, wait for rust-yamux's "ok", and reset: rust-yamux
/// must see the stream end (its reads return 0) in the *closed* state although
/// it never closed it, and writes fail (`WriteZero`): that is how rust-yamux
/// reports a reset (a FIN alone leaves it writable).
/// B: rust-yamux opens, sends 10 KiB and drops the stream unclosed, which is
/// its reset: we must get `StreamReset` (code 0) or `ReadError::Reset`.
/// C: after both, a fresh stream echoes 256 KiB: the connection carries on.
fn reset(role: Role) {
    let deadline = Deadline::start();
    let (mut ours, theirs) = connect(role, |theirs, mut inbound| async move {
        let a = async {
            let mut s = inbound.next().await.expect("stream A").expect("ok");
            let mut got = vec![0u8; SMALL];
            s.read_exact(&mut got).await.expect("A data");
            assert!(got[..] == payload(5, SMALL)[..], "A data differs");
            s.write_all(b"ok").await.expect("A ok");
            s.flush().await.expect("A flush");
            let mut buf = [0u8; 16];
            let read_returned = s.read(&mut buf).await.expect("read after reset");
            let is_closed = s.is_closed();
            let write_error = s
                .write_all(b"more")
                .await
                .expect_err("write after reset")
                .kind();
            let seen = SeenReset {
                read_returned,
                is_closed,
                write_error,
            };
            let c = inbound.next().await.expect("stream C").expect("ok");
            let echoed = echo(c).await.expect("echo C");
            (seen, echoed)
        };
        let b = async {
            let mut s = theirs.open().await.expect("open B");
            s.write_all(payload(6, SMALL)).await.expect("B data");
            s.flush().await.expect("B flush");
            drop(s); // unclosed: rust-yamux sends RST
        };
        let (result, ()) = futures::join!(a, b);
        inbound.until_end().await;
        result
    });

    let mut a: Option<(StreamId, Vec<u8>)> = None;
    let mut a_reset = false;
    let mut b: Option<(StreamId, usize)> = None;
    let mut b_reset_code: Option<u32> = None;
    let mut c: Option<(StreamId, usize, bool, usize, bool)> = None;
    let mut c_freed = false;
    ours.run(deadline.left(), |s, event| {
        match event {
            None => {}
            Some(Event::InboundStream { id }) => {
                assert!(b.is_none(), "one inbound stream expected");
                s.accept(id).expect("accept B");
                b = Some((id, 0));
            }
            Some(Event::StreamReadable { id }) => {
                if let Some((aid, got)) = a.as_mut().filter(|(aid, _)| *aid == id && !a_reset) {
                    let mut buf = [0u8; 16];
                    loop {
                        match s.read(*aid, &mut buf) {
                            Ok(0) => panic!("A ended without reset"),
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(ReadError::Blocked) => break,
                            Err(e) => panic!("A read: {e}"),
                        }
                    }
                    if got.as_slice() == b"ok" {
                        s.reset(id).expect("reset A");
                        assert!(!s.contains_stream(id), "a reset stream is freed at once");
                        a_reset = true;
                    }
                }
                if let Some((bid, received)) = b.as_mut().filter(|(bid, _)| *bid == id) {
                    let expected = payload(6, SMALL);
                    loop {
                        if b_reset_code.is_some() {
                            break;
                        }
                        match s.read_chunk(*bid, usize::MAX) {
                            Ok(Some(chunk)) => {
                                let end = *received + chunk.len();
                                assert!(chunk[..] == expected[*received..end], "B data differs");
                                *received = end;
                            }
                            Ok(None) => panic!("B ended cleanly; a reset was expected"),
                            Err(ReadError::Blocked) => break,
                            Err(ReadError::Reset { code }) => b_reset_code = Some(code),
                            Err(e) => panic!("B read: {e}"),
                        }
                    }
                }
                if let Some((cid, _, _, received, eof)) = c.as_mut().filter(|x| x.0 == id) {
                    let expected = payload(7, AFTER_RESET);
                    *eof = receive_checked(s, *cid, expected, received).expect("C read");
                }
            }
            Some(Event::StreamReset { id, code }) => {
                assert!(
                    b.is_some_and(|(bid, _)| bid == id),
                    "only B is reset by them"
                );
                if b_reset_code.is_none() {
                    b_reset_code = Some(code);
                }
            }
            Some(Event::StreamWritable { id }) => {
                if let Some((cid, sent, closed, _, _)) = c.as_mut().filter(|x| x.0 == id) {
                    if !*closed {
                        *closed = send_all(s, *cid, payload(7, AFTER_RESET), sent);
                    }
                }
            }
            Some(Event::StreamClosed { id }) => {
                let (_, _, closed, _, eof) = c.expect("only C closes cleanly");
                assert!(c.is_some_and(|x| x.0 == id) && closed && eof);
                c_freed = true;
            }
            Some(Event::Pong { .. }) => {}
            Some(other) => panic!("unexpected event {other:?}"),
        }
        if a.is_none() {
            let id = s.open_stream().expect("open A");
            let mut sent = 0;
            assert!(!send_all_unclosed(s, id, payload(5, SMALL), &mut sent));
            a = Some((id, Vec::new()));
        }
        if a_reset && b_reset_code.is_some() && c.is_none() {
            let id = s.open_stream().expect("open C");
            let mut sent = 0;
            let closed = send_all(s, id, payload(7, AFTER_RESET), &mut sent);
            c = Some((id, sent, closed, 0, false));
        }
        if c_freed {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("our side");
    assert_eq!(b_reset_code, Some(0), "rust-yamux's RST carries no code");
    assert_eq!(ours.session().stream_count(), 0);
    let (seen, echoed) = finish(ours, theirs, &deadline);
    assert_eq!(
        seen,
        SeenReset {
            read_returned: 0,
            is_closed: true,
            write_error: io::ErrorKind::WriteZero,
        },
        "rust-yamux did not see our reset as one"
    );
    assert_eq!(echoed, AFTER_RESET);
}

/// Writes all of `data` (it fits in the send buffer) without closing;
/// returns whether anything was left over.
fn send_all_unclosed(s: &mut Session, id: StreamId, data: &[u8], sent: &mut usize) -> bool {
    while *sent < data.len() {
        match s.write(id, &data[*sent..]) {
            Ok(n) => *sent += n,
            Err(WriteError::Blocked) => return true,
            Err(e) => panic!("write on {id:?}: {e}"),
        }
    }
    false
}

#[test]
fn reset_ours_client() {
    reset(Role::Client);
}

#[test]
fn reset_ours_server() {
    reset(Role::Server);
}

// -------------------------------------------------------------------- GoAway

const GOAWAY_RESPONSE: usize = 200 * 1024;

/// Our `go_away(NORMAL)` with a stream still open on our side.
///
/// We open S and send a request without closing; rust-yamux answers 200 KiB
/// and closes its half. Once we have read all of it (S now waits only for
/// our FIN), we send GoAway: we may no longer open streams, rust-yamux's
/// inbound streams end (it treats any GoAway as the end of the connection)
/// and its own opens fail. Then we close S: the existing stream finishes
/// after the GoAway, and our session reports `Closed { error: None }` once
/// it is gone.
fn go_away_ours(role: Role) {
    let deadline = Deadline::start();
    let (mut ours, theirs) = connect(role, move |theirs, mut inbound| async move {
        let mut s = inbound.next().await.expect("stream S").expect("ok");
        let mut request = vec![0u8; REQUEST];
        s.read_exact(&mut request).await.expect("request");
        assert!(request[..] == payload(8, REQUEST)[..], "request differs");
        s.write_all(payload(9, GOAWAY_RESPONSE))
            .await
            .expect("response");
        s.close().await.expect("close S");
        // Our GoAway ends rust-yamux's connection: no more inbound streams...
        inbound.until_end().await;
        // ...and no new outbound ones.
        let open = theirs.open().await;
        matches!(open, Err(yamux::ConnectionError::Closed))
    });
    let mut s_id = None;
    let mut received = 0;
    let mut eof = false;
    let mut s_freed = false;
    let expected = payload(9, GOAWAY_RESPONSE);
    ours.run(deadline.left(), |s, event| {
        match event {
            None | Some(Event::StreamReadable { .. } | Event::Pong { .. }) => {}
            Some(Event::StreamClosed { id }) => {
                assert_eq!(Some(id), s_id);
                s_freed = true;
            }
            Some(Event::Closed { error }) => {
                assert_eq!(error, None, "our session must close cleanly");
                assert!(s_freed, "closed before S finished");
                return ControlFlow::Break(());
            }
            Some(other) => panic!("unexpected event {other:?}"),
        }
        let id = *s_id.get_or_insert_with(|| {
            let id = s.open_stream().expect("open S");
            let mut sent = 0;
            assert!(!send_all_unclosed(s, id, payload(8, REQUEST), &mut sent));
            id
        });
        if !eof {
            eof = receive_checked(s, id, expected, &mut received).expect("read S");
            if eof {
                assert!(s.contains_stream(id), "S waits for our FIN");
                s.go_away(GoAwayCode::NORMAL).expect("go away");
                assert_eq!(s.open_stream(), Err(OpenError::GoingAway));
                assert!(!s.is_closed(), "S is still open");
                s.close(id).expect("close S after GoAway");
            }
        }
        ControlFlow::Continue(())
    })
    .expect("our side");
    let theirs_open_failed = finish(ours, theirs, &deadline);
    assert!(
        theirs_open_failed,
        "rust-yamux could still open a stream after our GoAway"
    );
}

#[test]
fn go_away_ours_client() {
    go_away_ours(Role::Client);
}

#[test]
fn go_away_ours_server() {
    go_away_ours(Role::Server);
}

/// rust-yamux's `poll_close` with a stream of ours answered just before:
/// it sends what the stream queued (data, FIN), then GoAway(NORMAL), then
/// closes the socket. We must get the whole answer, `GoAwayReceived`
/// (after which `open_stream` fails with `RemoteGoAway`), and a clean
/// `Closed { error: None }`.
fn go_away_theirs(role: Role) {
    let deadline = Deadline::start();
    let (mut ours, theirs) = connect(role, |theirs, mut inbound| async move {
        let mut s = inbound.next().await.expect("stream T").expect("ok");
        read_exact_to_end(&mut s, payload(10, REQUEST), "T request")
            .await
            .expect("request");
        s.write_all(payload(11, GOAWAY_RESPONSE))
            .await
            .expect("response");
        s.close().await.expect("close T");
        theirs.close().await
    });
    let mut t_id = None;
    let mut received = 0;
    let mut eof = false;
    let mut go_away = None;
    let mut closed = false;
    let expected = payload(11, GOAWAY_RESPONSE);
    ours.run(deadline.left(), |s, event| {
        match event {
            None | Some(Event::Pong { .. }) | Some(Event::StreamClosed { .. }) => {}
            Some(Event::StreamReadable { .. }) => {}
            Some(Event::GoAwayReceived { code }) => {
                go_away = Some(code);
                assert_eq!(
                    s.open_stream(),
                    Err(OpenError::RemoteGoAway(GoAwayCode::NORMAL))
                );
            }
            Some(Event::Closed { error }) => {
                assert_eq!(error, None, "our session must close cleanly");
                assert!(go_away.is_some(), "closed without GoAway");
                closed = true;
            }
            Some(other) => panic!("unexpected event {other:?}"),
        }
        let id = *t_id.get_or_insert_with(|| {
            let id = s.open_stream().expect("open T");
            let mut sent = 0;
            assert!(send_all(s, id, payload(10, REQUEST), &mut sent));
            id
        });
        if !eof {
            eof = receive_checked(s, id, expected, &mut received).expect("read T");
        }
        if eof && closed {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("our side");
    assert_eq!(go_away, Some(GoAwayCode::NORMAL));
    assert_eq!(ours.session().stream_count(), 0);
    let closed_ok = finish(ours, theirs, &deadline);
    assert_eq!(closed_ok, Ok(()), "rust-yamux's close failed");
}

#[test]
fn go_away_theirs_ours_client() {
    go_away_theirs(Role::Client);
}

#[test]
fn go_away_theirs_ours_server() {
    go_away_theirs(Role::Server);
}
