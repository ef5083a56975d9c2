//! sansp2p on async-std.
//!
//! **async-std is discontinued upstream** (RUSTSEC-2025-0052); new code
//! should prefer `sansp2p-smol`. This crate stays a thin shim: the binding
//! is `sansp2p-futures-io`, shared by every async runtime, and this crate is
//! only its [`Runtime`] for async-std.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! async_std::task::block_on(async {
//!     let host = sansp2p_async_std::new_host(sansp2p_async_std::Config::new(
//!         sansp2p_async_std::random_keypair(),
//!     ))?;
//!     let addr = host.listen(&"/ip4/127.0.0.1/tcp/0".parse()?).await?;
//!     println!("listening on {addr}/p2p/{}", host.local_peer_id());
//!     Ok(())
//! })
//! # }
//! ```

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_std::io::{Read, Write};
use async_std::net::{TcpListener, TcpStream};

pub use multiaddr::Multiaddr;
pub use sansp2p;
pub use sansp2p::node::Config;
pub use sansp2p_futures_io::{
    multiaddr_of, random_keypair, Bytes, ConnectionInfo, Error, Events, Host, Incoming,
    Reservation, Stream,
};
use sansp2p_futures_io::{BoxFuture, Listener, Runtime, Socket};

/// async-std's executor and reactor.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

struct AsyncStdSocket(TcpStream);
struct AsyncStdListener(TcpListener);

impl Runtime for AsyncStd {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        async_std::task::spawn(task);
    }

    fn sleep_until(&self, at: std::time::Instant) -> BoxFuture<'static, ()> {
        Box::pin(async_std::task::sleep(
            at.saturating_duration_since(std::time::Instant::now()),
        ))
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Socket>>> {
        Box::pin(async move {
            let socket = TcpStream::connect(addr).await?;
            socket.set_nodelay(true)?;
            Ok(Box::new(AsyncStdSocket(socket)) as Box<dyn Socket>)
        })
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn Listener>> {
        let listener = TcpListener::from(sansp2p_futures_io::bind_std_listener(addr)?);
        Ok(Box::new(AsyncStdListener(listener)))
    }
}

impl Socket for AsyncStdSocket {
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
        self.0.shutdown(Shutdown::Write)
    }
}

impl Listener for AsyncStdListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Box<dyn Socket>, SocketAddr)>> {
        Box::pin(async move {
            let (socket, remote) = self.0.accept().await?;
            socket.set_nodelay(true)?;
            Ok((Box::new(AsyncStdSocket(socket)) as Box<dyn Socket>, remote))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Starts a host on async-std.
pub fn new_host(config: Config) -> Result<Host, Error> {
    Host::new(config, AsyncStd)
}
