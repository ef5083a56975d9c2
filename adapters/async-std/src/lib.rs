//! sansp2p on async-std.
//!
//! **async-std is discontinued upstream** (RUSTSEC-2025-0052); new code
//! should prefer `sansp2p-smol`. This crate stays a thin shim: all binding
//! code is `sansp2p-futures-io`, shared with the smol adapter, and only the
//! spawner comes from async-std.
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

use std::sync::Arc;

pub use multiaddr::Multiaddr;
pub use sansp2p;
pub use sansp2p::node::Config;
pub use sansp2p_futures_io::{
    multiaddr_of, random_keypair, ConnectionInfo, Error, Host, Incoming, Spawner, Stream,
};

/// The spawner that runs the host's tasks on async-std's executor.
pub fn spawner() -> Spawner {
    Arc::new(|task| {
        async_std::task::spawn(task);
    })
}

/// Starts a host on async-std.
pub fn new_host(config: Config) -> Result<Host, Error> {
    Host::new(config, spawner())
}
