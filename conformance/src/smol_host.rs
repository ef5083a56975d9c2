//! Our node's side of the tests against peer processes (`tests/js_libp2p.rs`,
//! `tests/relay_interop.rs`): the smol host, serving and calling
//! `/echo/1.0.0`, every wait bounded.
//!
//! The test thread blocks on the peers' answers while the host's tasks run
//! on smol's global executor; [`within`] runs one host call from the test
//! thread, bounded by [`TIMEOUT`] like every wait for a peer.

use std::future::Future;

use futures::{AsyncReadExt, AsyncWriteExt};
use sansp2p::PeerId;
use sansp2p_smol::{new_host, Config, Host, Multiaddr};

use crate::peer_process::TIMEOUT;

/// The echo protocol every peer serves.
pub const ECHO: &str = "/echo/1.0.0";

/// Runs `fut` on smol; panics if it takes longer than [`TIMEOUT`].
pub fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    smol::block_on(smol::future::or(async { Some(fut.await) }, async {
        smol::Timer::after(TIMEOUT).await;
        None
    }))
    .unwrap_or_else(|| panic!("{what}: no result within {TIMEOUT:?}"))
}

/// Starts our host with `config`, serving [`ECHO`] (registered before any
/// connection, so our first identify lists it); `setup` runs next, then
/// the host listens on a free loopback port. Returns the host and the
/// address bound, `/ip4/127.0.0.1/tcp/PORT`.
///
/// # Panics
/// If the host or its listener does not start.
pub fn start_host(config: Config, setup: impl FnOnce(&Host)) -> (Host, Multiaddr) {
    let host = new_host(config).expect("our host starts");
    serve_echo(&host);
    setup(&host);
    let any = "/ip4/127.0.0.1/tcp/0".parse().expect("valid");
    let tcp = within("our listener", host.listen(&any)).expect("we listen on loopback");
    (host, tcp)
}

/// Echoes every `/echo/1.0.0` stream as it reads it, then half-closes.
///
/// # Panics
/// If the protocol cannot be registered.
pub fn serve_echo(host: &Host) {
    let incoming = host.accept(ECHO).expect("we register /echo/1.0.0");
    smol::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            smol::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = stream.close().await;
            })
            .detach();
        }
    })
    .detach();
}

/// One echo stream from us to `peer`: writes `data` while reading the echo,
/// half-closes once the first echoed byte is back, reads to the end; returns
/// what came back.
///
/// Why wait for that byte: we open streams with optimistic (lazy)
/// multistream-select, so protocol, data and FIN can all reach js before
/// its echo handler starts reading. js-libp2p 3 then loses the FIN (the
/// stream's async iterator only listens for `remoteCloseWrite`, which has
/// already fired), and its echo never ends. Waiting for the echo proves the
/// handler reads, and keeps this check about the bytes.
///
/// # Errors
/// How the stream failed.
pub async fn echo_via(host: &Host, peer: PeerId, data: &[u8]) -> Result<Vec<u8>, String> {
    let stream = host
        .open_stream(peer, ECHO)
        .await
        .map_err(|e| format!("open: {e}"))?;
    let (mut reader, mut writer) = stream.split();
    let (first_tx, first_rx) = futures::channel::oneshot::channel::<()>();
    let write = async {
        for chunk in data.chunks(64 * 1024) {
            writer.write_all(chunk).await?;
        }
        if !data.is_empty() {
            // Err only if the reader gave up: close anyway.
            let _ = first_rx.await;
        }
        writer.close().await
    };
    let read = async {
        let mut first_tx = Some(first_tx);
        let mut got = Vec::with_capacity(data.len());
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok(got);
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(tx) = first_tx.take() {
                let _ = tx.send(());
            }
        }
    };
    let (written, got): (std::io::Result<()>, std::io::Result<Vec<u8>>) =
        futures::join!(write, read);
    written.map_err(|e| format!("write: {e}"))?;
    got.map_err(|e| format!("read: {e}"))
}
