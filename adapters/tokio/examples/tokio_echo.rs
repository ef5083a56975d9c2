//! Echo between two hosts in one process on tokio, over loopback TCP.

use sansp2p_tokio::{new_host, random_keypair, Config, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO: &str = "/echo/1.0.0";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = new_host(Config::new(random_keypair()))?;
    let client = new_host(Config::new(random_keypair()))?;
    let incoming = server.accept(ECHO)?;
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            tokio::spawn(async move {
                let mut s = Stream::from(stream);
                let mut buf = Vec::new();
                if s.read_to_end(&mut buf).await.is_ok() {
                    let _ = s.write_all(&buf).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    let addr = server.listen(&"/ip4/127.0.0.1/tcp/0".parse()?).await?;
    println!("server {} at {addr}", server.local_peer_id());
    let peer = client.dial(&addr).await?;
    println!("ping: {:?}", client.ping(peer).await?);
    let mut s = Stream::from(client.open_stream(peer, ECHO).await?);
    s.write_all(b"Hello, world!\n").await?;
    s.shutdown().await?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await?;
    println!("read reply: {:?}", String::from_utf8_lossy(&reply));
    Ok(())
}
