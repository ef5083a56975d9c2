//! sansp2p on [smol](https://docs.rs/smol): the node's sockets, timer and
//! tasks run on smol's executor; streams are `futures_io` streams.
//!
//! All the binding code lives in `sansp2p-futures-io` (shared with the
//! async-std adapter); this crate only supplies smol's spawner.
//!
//! ```no_run
//! use futures_lite::{AsyncReadExt, AsyncWriteExt};
//! # use futures_lite as _;
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

use std::sync::Arc;

pub use multiaddr::Multiaddr;
pub use sansp2p;
pub use sansp2p::node::Config;
pub use sansp2p_futures_io::{
    multiaddr_of, random_keypair, ConnectionInfo, Error, Host, Incoming, Spawner, Stream,
};

/// The spawner that runs the host's tasks on smol's global executor.
pub fn spawner() -> Spawner {
    Arc::new(|task| smol::spawn(task).detach())
}

/// Starts a host on smol.
pub fn new_host(config: Config) -> Result<Host, Error> {
    Host::new(config, spawner())
}
