//! Echo between two hosts in one process on async-std.

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use sansp2p_async_std::{new_host, random_keypair, Config};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    async_std::task::block_on(async {
        let server = new_host(Config::new(random_keypair()))?;
        let client = new_host(Config::new(random_keypair()))?;
        let incoming = server.accept("/echo/1.0.0")?;
        async_std::task::spawn(async move {
            while let Some((_, mut s)) = incoming.next().await {
                let mut buf = Vec::new();
                if s.read_to_end(&mut buf).await.is_ok() {
                    let _ = s.write_all(&buf).await;
                }
                let _ = s.close().await;
            }
        });
        let addr = server.listen(&"/ip4/127.0.0.1/tcp/0".parse()?).await?;
        println!("server {} at {addr}", server.local_peer_id());
        let peer = client.dial(&addr).await?;
        let mut s = client.open_stream(peer, "/echo/1.0.0").await?;
        s.write_all(b"Hello, world!\n").await?;
        s.close().await?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await?;
        println!("read reply: {:?}", String::from_utf8_lossy(&reply));
        Ok(())
    })
}
