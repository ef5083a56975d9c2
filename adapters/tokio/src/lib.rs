//! sansp2p on [tokio](https://docs.rs/tokio): the node's sockets, timer and
//! tasks run on a tokio runtime; streams implement `tokio::io`'s traits.
//!
//! The binding is `sansp2p-futures-io`, shared by every async runtime; this
//! crate is its [`Runtime`] for tokio and a [`Stream`] wrapper.
//!
//! [`new_host`] must be called inside a tokio runtime (it keeps a handle to
//! it); the host's methods can then be used from anywhere.
//!
//! ```no_run
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = sansp2p_tokio::new_host(sansp2p_tokio::Config::new(sansp2p_tokio::random_keypair()))?;
//! let peer = host.dial(&"/ip4/127.0.0.1/tcp/4001".parse()?).await?;
//! let mut stream = sansp2p_tokio::Stream::from(host.open_stream(peer, "/echo/1.0.0").await?);
//! stream.write_all(b"Hello, world!\n").await?;
//! stream.shutdown().await?;
//! let mut reply = Vec::new();
//! stream.read_to_end(&mut reply).await?;
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use tokio::io::ReadBuf;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

pub use multiaddr::Multiaddr;
pub use sansp2p;
pub use sansp2p::node::Config;
pub use sansp2p_futures_io::{
    multiaddr_of, random_keypair, Bytes, ConnectionInfo, Error, Events, Host, Incoming, Reservation,
};
use sansp2p_futures_io::{BoxFuture, Listener, Runtime, Socket};

/// A tokio runtime, by its handle.
#[derive(Debug, Clone)]
pub struct Tokio(pub Handle);

struct TokioSocket(TcpStream);
struct TokioListener(TcpListener);

impl Runtime for Tokio {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        drop(self.0.spawn(task));
    }

    fn sleep_until(&self, at: std::time::Instant) -> BoxFuture<'static, ()> {
        let _runtime = self.0.enter();
        Box::pin(tokio::time::sleep_until(at.into()))
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Socket>>> {
        Box::pin(async move {
            let socket = TcpStream::connect(addr).await?;
            socket.set_nodelay(true)?;
            Ok(Box::new(TokioSocket(socket)) as Box<dyn Socket>)
        })
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn Listener>> {
        let _runtime = self.0.enter();
        let listener = sansp2p_futures_io::bind_std_listener(addr)?;
        Ok(Box::new(TokioListener(TcpListener::from_std(listener)?)))
    }
}

impl Socket for TokioSocket {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.0).shutdown(Shutdown::Write)
    }
}

impl Listener for TokioListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Box<dyn Socket>, SocketAddr)>> {
        Box::pin(async move {
            let (socket, remote) = self.0.accept().await?;
            socket.set_nodelay(true)?;
            Ok((Box::new(TokioSocket(socket)) as Box<dyn Socket>, remote))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Starts a host on the current tokio runtime.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn new_host(config: Config) -> Result<Host, Error> {
    Host::new(config, Tokio(Handle::current()))
}

/// A stream of the host as `tokio::io::{AsyncRead, AsyncWrite}`;
/// `shutdown` half-closes it, dropping it unclosed resets it.
#[derive(Debug)]
pub struct Stream(pub sansp2p_futures_io::Stream);

impl From<sansp2p_futures_io::Stream> for Stream {
    fn from(stream: sansp2p_futures_io::Stream) -> Self {
        Stream(stream)
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(Pin::new(&mut self.0).poll_read(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
