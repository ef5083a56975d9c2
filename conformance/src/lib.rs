//! Helpers for the conformance tests in `tests/`: they run one of sansp2p's
//! sans-IO machines over a blocking [`std::net::TcpStream`] and the
//! rust-libp2p side of the same loopback connection on smol.
//!
//! Everything here is bounded in time: our sockets get [`IO_TIMEOUT`] as read
//! and write timeouts, and the rust-libp2p side runs under the same deadline,
//! so a machine that stalls makes a test fail instead of hang.

use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sansp2p::multistream::{self, Negotiator};
use sansp2p::security::{noise, plaintext};

pub mod heartbeat_peer;
pub mod peer_process;
pub mod perf_peer;
pub mod relay_peer;
pub mod rust_peer;
pub mod rust_relay_peer;
pub mod smol_host;
pub mod yamux_driver;

/// Longest wait for any single socket operation or for the remote side as a whole.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Read size that leaves the machine every byte as a separate read.
pub const BYTE_BY_BYTE: usize = 1;

/// Read size large enough that whatever the peer already sent arrives in one read.
pub const LARGE_READS: usize = 64 * 1024;

/// The socket type the rust-libp2p side works on.
pub type RemoteStream = smol::Async<TcpStream>;

/// The common shape of sansp2p's handshake machines, as far as a driver needs it.
pub trait Machine {
    /// What the machine reports.
    type Event: fmt::Debug;

    /// Feeds bytes read from the peer; returns how many were consumed.
    fn handle_read(&mut self, data: &[u8]) -> usize;
    /// The peer closed its sending side.
    fn handle_eof(&mut self);
    /// Appends the bytes to send to `out`.
    fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize;
    /// The next event, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// Whether the machine consumes no more input.
    fn is_finished(&self) -> bool;
}

impl Machine for Negotiator {
    type Event = multistream::Event;

    fn handle_read(&mut self, data: &[u8]) -> usize {
        Negotiator::handle_read(self, data)
    }
    fn handle_eof(&mut self) {
        Negotiator::handle_eof(self)
    }
    fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        Negotiator::poll_transmit(self, out)
    }
    fn poll_event(&mut self) -> Option<Self::Event> {
        Negotiator::poll_event(self)
    }
    fn is_finished(&self) -> bool {
        Negotiator::is_finished(self)
    }
}

impl Machine for plaintext::Handshake {
    type Event = plaintext::Event;

    fn handle_read(&mut self, data: &[u8]) -> usize {
        plaintext::Handshake::handle_read(self, data)
    }
    fn handle_eof(&mut self) {
        plaintext::Handshake::handle_eof(self)
    }
    fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        plaintext::Handshake::poll_transmit(self, out)
    }
    fn poll_event(&mut self) -> Option<Self::Event> {
        plaintext::Handshake::poll_event(self)
    }
    fn is_finished(&self) -> bool {
        plaintext::Handshake::is_finished(self)
    }
}

impl Machine for noise::Handshake {
    type Event = noise::Event;

    fn handle_read(&mut self, data: &[u8]) -> usize {
        noise::Handshake::handle_read(self, data)
    }
    fn handle_eof(&mut self) {
        noise::Handshake::handle_eof(self)
    }
    fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        noise::Handshake::poll_transmit(self, out)
    }
    fn poll_event(&mut self) -> Option<Self::Event> {
        noise::Handshake::poll_event(self)
    }
    fn is_finished(&self) -> bool {
        noise::Handshake::is_finished(self)
    }
}

/// What a [`drive`] run produced.
#[derive(Debug)]
pub struct Outcome<E> {
    /// Every event the machine reported, in order (including events it had
    /// queued before the run, such as a lazy dialer's early `Negotiated`).
    pub events: Vec<E>,
    /// Bytes read from the socket (or passed in) that the machine did not
    /// consume: they belong to whatever runs on the stream next.
    pub leftover: Vec<u8>,
    /// Whether the run ended because the peer closed its sending side.
    pub eof: bool,
}

/// Runs `machine` over `stream` until it is finished or the peer closes.
///
/// `initial` is input already read from the stream by a previous layer; it is
/// fed first. Then the driver alternates between writing everything the
/// machine wants sent and reading at most `read_size` bytes at a time. A read
/// that times out is an error.
pub fn drive<M: Machine>(
    machine: &mut M,
    stream: &mut TcpStream,
    initial: &[u8],
    read_size: usize,
) -> io::Result<Outcome<M::Event>> {
    assert!(read_size > 0, "read_size must be positive");
    let mut events = Vec::new();
    let mut pending = initial.to_vec();
    let mut buf = vec![0u8; read_size];
    loop {
        while !pending.is_empty() && !machine.is_finished() {
            let used = machine.handle_read(&pending);
            assert!(
                used <= pending.len(),
                "machine claims to have consumed more than it was given"
            );
            pending.drain(..used);
            if pending.is_empty() || machine.is_finished() {
                break;
            }
            // A machine may pause until what it said is taken (a listener
            // reads no further while its `na` is unsent): send, then offer
            // the rest again. Stuck only if neither moves.
            let mut out = Vec::new();
            let sent = machine.poll_transmit(&mut out);
            stream.write_all(&out)?;
            if used == 0 && sent == 0 {
                return Err(io::Error::other(format!(
                    "machine left {} bytes unconsumed without finishing",
                    pending.len()
                )));
            }
        }
        flush(machine, stream)?;
        events.extend(std::iter::from_fn(|| machine.poll_event()));
        if machine.is_finished() {
            return Ok(Outcome {
                events,
                leftover: pending,
                eof: false,
            });
        }
        let n = read_timed(stream, &mut buf)?;
        if n == 0 {
            machine.handle_eof();
            flush(machine, stream)?;
            events.extend(std::iter::from_fn(|| machine.poll_event()));
            return Ok(Outcome {
                events,
                leftover: pending,
                eof: true,
            });
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// Writes whatever the machine has to send.
pub fn flush<M: Machine>(machine: &mut M, stream: &mut TcpStream) -> io::Result<()> {
    let mut out = Vec::new();
    if machine.poll_transmit(&mut out) > 0 {
        stream.write_all(&out)?;
        stream.flush()?;
    }
    Ok(())
}

fn read_timed(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    match stream.read(buf) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out waiting for the rust-libp2p side",
            ))
        }
        other => other,
    }
}

/// Blocks until at least `n` bytes can be read from `stream` without
/// consuming them, so the next large read returns them together. Used to make
/// a machine see its final message and the application data behind it in one
/// read, which is what exercises the "hand back unconsumed bytes" path.
pub fn wait_for_bytes(stream: &TcpStream, n: usize) -> io::Result<()> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = vec![0u8; n];
    loop {
        let available = match stream.peek(&mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                0
            }
            other => other?,
        };
        if available >= n {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("only {available} of {n} bytes arrived"),
            ));
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// The application-data check on our side: sends `payload`, closes our
/// sending side, and returns everything the peer sends until it closes,
/// starting with `leftover` (bytes a machine read but did not consume).
pub fn exchange_local(
    stream: &mut TcpStream,
    leftover: Vec<u8>,
    payload: &[u8],
) -> io::Result<Vec<u8>> {
    stream.write_all(payload)?;
    stream.flush()?;
    stream.shutdown(Shutdown::Write)?;
    read_to_eof(stream, leftover)
}

/// Reads until the peer closes its sending side, appending to `received`.
pub fn read_to_eof(stream: &mut TcpStream, mut received: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut buf = [0u8; 4096];
    loop {
        match read_timed(stream, &mut buf)? {
            0 => return Ok(received),
            n => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// The same check on the rust-libp2p side, on any of its stream types.
pub async fn exchange_remote<S>(io: &mut S, payload: &[u8]) -> io::Result<Vec<u8>>
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};

    io.write_all(payload).await?;
    io.flush().await?;
    io.close().await?;
    let mut received = Vec::new();
    io.read_to_end(&mut received).await?;
    Ok(received)
}

/// A connected loopback TCP pair `(dialer, listener)`, the dialer being the
/// side that called `connect`. Both have [`IO_TIMEOUT`] as read and write
/// timeouts and Nagle's algorithm off.
pub fn tcp_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let dialer = TcpStream::connect(listener.local_addr()?)?;
    let (accepted, _) = listener.accept()?;
    for s in [&dialer, &accepted] {
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.set_nodelay(true)?;
    }
    Ok((dialer, accepted))
}

/// Runs the rust-libp2p side on its own thread: `f` gets `stream` as an async
/// socket and its future runs on smol, failing with a panic after
/// [`IO_TIMEOUT`]. Collect the result with [`join`].
pub fn spawn_remote<F, Fut, T>(stream: TcpStream, f: F) -> JoinHandle<T>
where
    F: FnOnce(RemoteStream) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    thread::spawn(move || {
        let io = smol::Async::new(stream).expect("register the socket with smol");
        block_on_timeout(f(io))
    })
}

/// Runs `fut` to completion on smol, panicking if it takes longer than [`IO_TIMEOUT`].
pub fn block_on_timeout<T>(fut: impl Future<Output = T>) -> T {
    smol::block_on(smol::future::or(async { Some(fut.await) }, async {
        smol::Timer::after(IO_TIMEOUT).await;
        None
    }))
    .expect("the rust-libp2p side timed out")
}

/// Waits for a [`spawn_remote`] thread, re-raising its panic in the caller.
pub fn join<T>(handle: JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Deterministic application data: `tag`, then `len` bytes of a pattern
/// that covers every byte value, so a lost, doubled or shifted byte shows.
pub fn payload(tag: &str, len: usize) -> Vec<u8> {
    let mut data = tag.as_bytes().to_vec();
    data.extend((0..len).map(|i| (i.wrapping_mul(7).wrapping_add(i / 256)) as u8));
    data
}
