//! What the binding needs from an async runtime: spawning, one kind of
//! sleep, TCP connect and bind. Everything else (the node, the drive loop,
//! the per-connection tasks) is runtime-agnostic and lives in this crate.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An async runtime, as the binding uses it. Implementations are a few
/// lines over the runtime's own types (see `sansp2p-smol`,
/// `sansp2p-async-std`, `sansp2p-tokio`).
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// Runs `task` in the background until it finishes.
    fn spawn(&self, task: BoxFuture<'static, ()>);

    /// A future that completes at `at` (or soon after).
    fn sleep_until(&self, at: std::time::Instant) -> BoxFuture<'static, ()>;

    /// Opens a TCP connection to `addr`, with `TCP_NODELAY` set.
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Socket>>>;

    /// Binds a TCP listener on `addr`. It may be called from any thread.
    fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn Listener>>;

    /// Resolves a DNS name. The default asks the system resolver on a
    /// thread of its own, so that the runtime's threads never block.
    fn resolve(&self, name: String, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let (tx, rx) = futures_channel::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(
                (name.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect),
            );
        });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(io::ErrorKind::Other.into()))
        })
    }
}

/// A connected TCP socket, shared by the connection's reader and writer
/// tasks: the reader only calls `poll_read`, the writer only `poll_write`
/// and `shutdown_write`, so each direction has one waker.
pub trait Socket: Send + Sync + 'static {
    /// Reads into `buf` (0: end of file), or registers `cx` for readability.
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;

    /// Writes a prefix of `buf`, or registers `cx` for writability.
    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;

    /// Writes a prefix of `bufs` one after another (`writev`), or
    /// registers `cx` for writability. The default writes the first
    /// non-empty one with [`poll_write`](Self::poll_write).
    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        self.poll_write(cx, first)
    }

    /// Shuts the sending side (TCP FIN); reading goes on.
    fn shutdown_write(&self) -> io::Result<()>;
}

/// A bound TCP listener.
pub trait Listener: Send + Sync + 'static {
    /// The next accepted socket (with `TCP_NODELAY` set) and its peer's
    /// address. An `async` method rather than a poll one: not every runtime
    /// (async-std) offers a poll-based accept.
    fn accept(&self) -> BoxFuture<'_, io::Result<(Box<dyn Socket>, SocketAddr)>>;

    /// The address it is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Connections the kernel queues for `accept` per listener. std binds with
/// 128, which a burst of a few hundred connects overflows (SYN cookies,
/// then client sockets the node never sees); tokio's own bind uses 1024.
pub const LISTEN_BACKLOG: i32 = 1024;

/// A bound, non-blocking std listener with a backlog of
/// [`LISTEN_BACKLOG`], for a runtime's [`Runtime::bind`] to wrap.
pub fn bind_std_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
