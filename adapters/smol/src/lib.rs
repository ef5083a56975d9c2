//! sansp2p on [smol](https://docs.rs/smol): the node's sockets, timer and
//! tasks run on smol's executor; streams are `futures_io` streams.
//!
//! The binding is `sansp2p-futures-io`, shared by every async runtime; this
//! crate is its [`Runtime`] for smol.
//!
//! ```no_run
//! use futures_lite::{AsyncReadExt, AsyncWriteExt};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let host = sansp2p_smol::new_host(sansp2p_smol::Config::new(sansp2p_smol::random_keypair()))?;
//!     let peer = host.dial(&"/ip4/127.0.0.1/tcp/4001".parse()?).await?;
//!     let mut stream = host.open_stream(peer, "/echo/1.0.0").await?;
//!     stream.write_all(b"Hello, world!\n").await?;
//!     stream.close().await?;
//!     let mut reply = Vec::new();
//!     stream.read_to_end(&mut reply).await?;
//!     Ok(())
//! })
//! # }
//! ```

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use smol::Async;

pub use multiaddr::Multiaddr;
pub use sansp2p;
pub use sansp2p::node::Config;
pub use sansp2p_futures_io::{
    multiaddr_of, random_keypair, Bytes, ConnectionInfo, Error, Events, Host, Incoming,
    Reservation, Stream,
};
use sansp2p_futures_io::{BoxFuture, Listener, Runtime, Socket};

/// smol's global executor and its reactor (async-io).
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

struct SmolSocket(Async<TcpStream>);
struct SmolListener(Async<TcpListener>);

impl Runtime for Smol {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        smol::spawn(task).detach();
    }

    fn sleep_until(&self, at: std::time::Instant) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            smol::Timer::at(at).await;
        })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Socket>>> {
        Box::pin(async move {
            let socket = Async::<TcpStream>::connect(addr).await?;
            socket.get_ref().set_nodelay(true)?;
            Ok(Box::new(SmolSocket(socket)) as Box<dyn Socket>)
        })
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn Listener>> {
        let listener = sansp2p_futures_io::bind_std_listener(addr)?;
        Ok(Box::new(SmolListener(Async::new(listener)?)))
    }
}

impl Socket for SmolSocket {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &self.0).poll_read(cx, buf)
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &self.0).poll_write_vectored(cx, bufs)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.0.get_ref().shutdown(Shutdown::Write)
    }
}

impl Listener for SmolListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Box<dyn Socket>, SocketAddr)>> {
        Box::pin(async move {
            let (socket, remote) = self.0.accept().await?;
            socket.get_ref().set_nodelay(true)?;
            Ok((Box::new(SmolSocket(socket)) as Box<dyn Socket>, remote))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }
}

/// Starts a host on smol.
pub fn new_host(config: Config) -> Result<Host, Error> {
    Host::new(config, Smol)
}
