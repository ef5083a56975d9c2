//! Runs a sansp2p yamux [`Session`] over a non-blocking [`TcpStream`], for
//! the yamux interop tests and the yamux benchmark.
//!
//! The driver owns the socket and the session and does all the I/O on the
//! calling thread: it reads into one large buffer and feeds whole reads to
//! [`Session::handle_read`], hands events to an application closure, and
//! writes the frames of [`Session::poll_transmit`] with vectored writes
//! (header and payload slices, no copy), keeping whatever the socket did not
//! take for the next write. Nothing is allocated per frame.
//!
//! The driver does not know how to sleep until the socket is ready: the
//! caller supplies a [`Readiness`] (the tests and the benchmark use mio). It
//! only waits after a read and, when there is output, a write both returned
//! `WouldBlock`, so edge-triggered readiness is enough.
//!
//! Every run has a deadline: a session that stalls makes the run fail with
//! [`io::ErrorKind::TimedOut`] instead of hanging.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::ControlFlow;
use std::time::Duration;

use sansp2p::time::{Instant, StdClock};
use sansp2p::yamux::{Config, Event, Role, Session, SessionConfigError, Transmit, HEADER_LEN};

/// Size of the buffer each socket read fills.
pub const READ_BUFFER: usize = 256 * 1024;

/// Frames pulled from the session and not yet written are capped at about
/// this many bytes; beyond it the session keeps its data (and so pushes back
/// on the application) until the socket takes some.
const OUT_HIGH_WATER: usize = 1024 * 1024;

/// Slices per vectored write: 64 frames of header plus payload.
const MAX_IOVECS: usize = 128;

/// Sleeps until the socket may have become readable or writable.
pub trait Readiness {
    /// Blocks until the socket may be readable or writable, or until
    /// `timeout` has passed. Spurious returns are fine.
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;
}

/// mio readiness for a driver's socket: a duplicate of the descriptor is
/// registered (edge-triggered) for both directions.
#[derive(Debug)]
pub struct MioReadiness {
    poll: mio::Poll,
    events: mio::Events,
    _source: mio::net::TcpStream,
}

impl MioReadiness {
    /// Watches `socket` (which the driver keeps using directly).
    pub fn for_socket(socket: &std::net::TcpStream) -> io::Result<Self> {
        let dup = socket.try_clone()?;
        dup.set_nonblocking(true)?;
        let mut source = mio::net::TcpStream::from_std(dup);
        let poll = mio::Poll::new()?;
        poll.registry().register(
            &mut source,
            mio::Token(0),
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )?;
        Ok(MioReadiness {
            poll,
            events: mio::Events::with_capacity(8),
            _source: source,
        })
    }
}

impl Readiness for MioReadiness {
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            other => other,
        }
    }
}

/// Counters of the socket work the driver did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStats {
    /// `read` calls that returned data.
    pub reads: u64,
    /// Bytes read from the socket.
    pub bytes_read: u64,
    /// `write_vectored` calls that wrote something.
    pub writes: u64,
    /// Bytes written to the socket.
    pub bytes_written: u64,
    /// Times the driver slept in [`Readiness::wait`].
    pub waits: u64,
}

/// A [`Session`] bound to a socket; see the module documentation.
pub struct Driver<R> {
    session: Session,
    socket: TcpStream,
    readiness: R,
    clock: StdClock,
    rbuf: Box<[u8]>,
    /// Bytes of `rbuf` read but not consumed by the session (backpressure).
    rstart: usize,
    rend: usize,
    /// Frames taken from the session, oldest first; the front one has
    /// `front_written` bytes on the wire already.
    out: VecDeque<Transmit>,
    front_written: usize,
    /// Bytes in `out` not yet written.
    out_bytes: usize,
    eof: bool,
    /// The peer reset the connection (a kind of end of input).
    peer_reset: bool,
    stats: IoStats,
}

impl<R> fmt::Debug for Driver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("session", &self.session)
            .field("socket", &self.socket)
            .field("queued_frames", &self.out.len())
            .field("queued_bytes", &self.out_bytes)
            .field("eof", &self.eof)
            .field("peer_reset", &self.peer_reset)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<R: Readiness> Driver<R> {
    /// A new session for `role` on `socket`, which is switched to
    /// non-blocking mode. `readiness` must watch the same socket.
    pub fn new(
        socket: TcpStream,
        role: Role,
        config: Config,
        readiness: R,
    ) -> Result<Self, DriverError> {
        socket.set_nonblocking(true)?;
        let clock = StdClock::new();
        let session = Session::new(clock.now(), role, config)?;
        Ok(Driver {
            session,
            socket,
            readiness,
            clock,
            rbuf: vec![0; READ_BUFFER].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            out: VecDeque::with_capacity(256),
            front_written: 0,
            out_bytes: 0,
            eof: false,
            peer_reset: false,
            stats: IoStats::default(),
        })
    }

    /// The session, for commands between runs.
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The current time on the session's clock.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Whether the peer closed its sending side of the socket.
    pub fn eof(&self) -> bool {
        self.eof
    }

    /// Whether the peer reset the connection instead of closing it (which
    /// the driver also reports to the session as end of input).
    pub fn peer_reset(&self) -> bool {
        self.peer_reset
    }

    /// Socket counters so far.
    pub fn io_stats(&self) -> &IoStats {
        &self.stats
    }

    /// Runs the session until `app` breaks, and returns its value.
    ///
    /// `app` sees every event as `Some(event)`, and is called with `None`
    /// at least once per turn of the loop (after the events of that turn), so it can
    /// act on state that events did not announce. It may issue any command
    /// on the session. Events it has not been shown yet when it breaks stay
    /// queued in the session for the next run, and frames not yet written
    /// stay queued in the driver.
    pub fn run<T>(
        &mut self,
        timeout: Duration,
        mut app: impl FnMut(&mut Session, Option<Event>) -> ControlFlow<T>,
    ) -> io::Result<T> {
        let deadline = self.clock.now() + timeout;
        loop {
            let now = self.clock.now();
            if now >= deadline {
                return Err(timed_out(timeout, &self.session));
            }
            let (mut busy, read_blocked) = self.input(now)?;
            if self.session.poll_timeout().is_some_and(|t| t <= now) {
                self.session.handle_timeout(now);
            }
            // Events and frames until neither has more (or enough frames are
            // queued): handling an event may queue frames, and pulling frames
            // may raise events (`StreamWritable`). There is no way to peek at
            // the event queue, so the event polled after a pull is handed
            // over before going round again.
            let mut next = None;
            loop {
                while let Some(event) = next.take().or_else(|| self.session.poll_event()) {
                    busy = true;
                    if let ControlFlow::Break(v) = app(&mut self.session, Some(event)) {
                        return Ok(v);
                    }
                }
                if let ControlFlow::Break(v) = app(&mut self.session, None) {
                    return Ok(v);
                }
                self.pull(now);
                match self.session.poll_event() {
                    Some(event) => next = Some(event),
                    None => break,
                }
            }
            let (wrote, write_blocked) = self.output()?;
            busy |= wrote;
            if !busy && read_blocked && (self.out.is_empty() || write_blocked) {
                self.sleep(now, deadline)?;
            }
        }
    }

    /// Writes every frame the session has to send (without showing events
    /// to anyone: they stay queued), reading meanwhile so the peer is never
    /// blocked on us.
    pub fn flush(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = self.clock.now() + timeout;
        loop {
            let now = self.clock.now();
            if now >= deadline {
                return Err(timed_out(timeout, &self.session));
            }
            let (busy, read_blocked) = self.input(now)?;
            self.pull(now);
            if self.out.is_empty() {
                return Ok(());
            }
            let (wrote, write_blocked) = self.output()?;
            if !busy && !wrote && read_blocked && write_blocked {
                self.sleep(now, deadline)?;
            }
        }
    }

    /// Ends the connection politely: writes what is queued, closes our
    /// sending side of the socket, then keeps reading (into the session, whose
    /// events stay queued) until the peer closes too, so neither side resets
    /// the connection with unread data. A peer that is already gone (reset,
    /// not connected, broken pipe) counts as closed.
    pub fn close(mut self, timeout: Duration) -> io::Result<()> {
        match self.close_inner(timeout) {
            Err(e) if peer_gone(&e) => Ok(()),
            other => other,
        }
    }

    fn close_inner(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = self.clock.now() + timeout;
        self.flush(timeout)?;
        self.socket.shutdown(Shutdown::Write)?;
        while !self.eof {
            let now = self.clock.now();
            if now >= deadline {
                return Err(timed_out(timeout, &self.session));
            }
            if self.rstart < self.rend {
                // Input the session refuses until it can send: nothing more
                // is sent now, so drop it.
                self.rstart = 0;
                self.rend = 0;
            }
            if let (false, true) = self.input(now)? {
                self.sleep(now, deadline)?;
            }
        }
        Ok(())
    }

    /// Feeds input left over from an earlier read, or reads once. Returns
    /// (made progress, reading would block or the peer closed).
    fn input(&mut self, now: Instant) -> io::Result<(bool, bool)> {
        if self.rstart < self.rend {
            let used = self
                .session
                .handle_read(now, &self.rbuf[self.rstart..self.rend]);
            self.rstart += used;
            if self.rstart == self.rend {
                self.rstart = 0;
                self.rend = 0;
            }
            // Leftover the session refuses waits for frames to go out, which
            // the caller's write (and its wait for writability) takes care of.
            return Ok((used > 0, used == 0));
        }
        if self.eof {
            return Ok((false, true));
        }
        match self.socket.read(&mut self.rbuf) {
            Ok(0) => {
                self.eof = true;
                self.session.handle_eof(now);
                Ok((true, true))
            }
            Ok(n) => {
                self.stats.reads += 1;
                self.stats.bytes_read += n as u64;
                let used = self.session.handle_read(now, &self.rbuf[..n]);
                if used < n {
                    self.rstart = used;
                    self.rend = n;
                }
                Ok((true, false))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((false, true)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok((true, false)),
            Err(e) if peer_gone(&e) => {
                self.on_peer_reset(now);
                Ok((true, true))
            }
            Err(e) => Err(e),
        }
    }

    /// The peer reset the connection: that ends the input (the session
    /// decides whether that was clean) and nothing queued can go out.
    fn on_peer_reset(&mut self, now: Instant) {
        self.peer_reset = true;
        self.out.clear();
        self.out_bytes = 0;
        self.front_written = 0;
        if !self.eof {
            self.eof = true;
            self.session.handle_eof(now);
        }
    }

    /// Moves frames from the session to the output queue, up to the cap.
    fn pull(&mut self, now: Instant) {
        while self.out_bytes < OUT_HIGH_WATER {
            match self.session.poll_transmit(now) {
                Some(t) => {
                    self.out_bytes += t.wire_len();
                    self.out.push_back(t);
                }
                None => break,
            }
        }
    }

    /// One vectored write of the queued frames. Returns (wrote something,
    /// writing would block).
    fn output(&mut self) -> io::Result<(bool, bool)> {
        if self.out.is_empty() {
            return Ok((false, false));
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut n = 0;
        let mut skip = self.front_written;
        for t in &self.out {
            if n + 2 > MAX_IOVECS {
                break;
            }
            if skip < HEADER_LEN {
                slices[n] = IoSlice::new(&t.header[skip..]);
                n += 1;
                skip = 0;
            } else {
                skip -= HEADER_LEN;
            }
            if skip < t.payload.len() {
                slices[n] = IoSlice::new(&t.payload[skip..]);
                n += 1;
            }
            skip = 0;
        }
        match self.socket.write_vectored(&slices[..n]) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "socket accepted no bytes",
            )),
            Ok(written) => {
                self.stats.writes += 1;
                self.stats.bytes_written += written as u64;
                self.consume(written);
                Ok((true, false))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((false, true)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok((false, false)),
            Err(e) if peer_gone(&e) => {
                self.on_peer_reset(self.clock.now());
                Ok((true, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Drops `written` bytes from the front of the output queue.
    fn consume(&mut self, mut written: usize) {
        self.out_bytes -= written;
        while let Some(front) = self.out.front() {
            let left = front.wire_len() - self.front_written;
            if written < left {
                self.front_written += written;
                return;
            }
            written -= left;
            self.front_written = 0;
            self.out.pop_front();
        }
    }

    fn sleep(&mut self, now: Instant, deadline: Instant) -> io::Result<()> {
        let mut wake = deadline;
        if let Some(t) = self.session.poll_timeout() {
            wake = wake.min(t);
        }
        self.stats.waits += 1;
        self.readiness.wait(wake.saturating_duration_since(now))
    }
}

fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::BrokenPipe
    )
}

fn timed_out(timeout: Duration, session: &Session) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "yamux driver: no result within {timeout:?} ({} streams alive, closed: {})",
            session.stream_count(),
            session.is_closed()
        ),
    )
}

/// Why a [`Driver`] could not be built.
#[derive(Debug)]
pub enum DriverError {
    /// The socket refused non-blocking mode.
    Io(io::Error),
    /// The session refused the configuration.
    Config(SessionConfigError),
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Io(e) => write!(f, "socket: {e}"),
            DriverError::Config(e) => write!(f, "yamux config: {e}"),
        }
    }
}

impl std::error::Error for DriverError {}

impl From<io::Error> for DriverError {
    fn from(e: io::Error) -> Self {
        DriverError::Io(e)
    }
}

impl From<SessionConfigError> for DriverError {
    fn from(e: SessionConfigError) -> Self {
        DriverError::Config(e)
    }
}
