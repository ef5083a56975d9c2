//! Our node's side of the tests against peer processes (`tests/js_libp2p.rs`,
//! `tests/relay_interop.rs`): the smol host, serving and calling
//! `/echo/1.0.0`, every wait bounded.
//!
//! The test thread blocks on the peers' answers while the host's tasks run
//! on smol's global executor; [`within`] runs one host call from the test
//! thread, bounded by [`TIMEOUT`] like every wait for a peer.

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use futures::{AsyncReadExt, AsyncWriteExt};
use sansp2p::node::{CloseReason, ConnectionId, Endpoint, Event};
use sansp2p::{Keypair, PeerId};
use sansp2p_smol::{new_host, Config, Host, Multiaddr};

use crate::peer_process::{fnv1a, pseudo_random_bytes, TIMEOUT};

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

/// Every event of a host but the per-stream ones, kept as they come (a
/// task drains the host's bounded queue all along), for the test thread to
/// wait on.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // a log of events, printed by `wait`
pub struct EventLog(Arc<(Mutex<Vec<Event>>, Condvar)>);

impl EventLog {
    pub fn start(host: &Host) -> EventLog {
        let log = EventLog(Arc::default());
        let events = host.events();
        let inner = log.0.clone();
        smol::spawn(async move {
            while let Ok(event) = events.recv().await {
                if matches!(
                    event,
                    Event::StreamReadable { .. }
                        | Event::StreamWritable { .. }
                        | Event::StreamOpened { .. }
                        | Event::StreamClosed { .. }
                        | Event::StreamReset { .. }
                        | Event::InboundStream { .. }
                ) {
                    continue;
                }
                inner.0.lock().unwrap().push(event);
                inner.1.notify_all();
            }
        })
        .detach();
        log
    }

    /// The first event so far that `pick` takes, waiting up to [`TIMEOUT`].
    pub fn wait<T>(&self, what: &str, pick: impl FnMut(&Event) -> Option<T>) -> T {
        self.wait_nth(what, 0, pick)
    }

    /// The event after the first `skip` so far that `pick` takes, waiting
    /// up to [`TIMEOUT`]: with `skip` the count of [`all`](Self::all), the
    /// next one to come.
    pub fn wait_nth<T>(
        &self,
        what: &str,
        skip: usize,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + TIMEOUT;
        let (lock, changed) = &*self.0;
        let mut events = lock.lock().unwrap();
        loop {
            if let Some(v) = events.iter().filter_map(&mut pick).nth(skip) {
                return v;
            }
            let now = Instant::now();
            if now >= deadline {
                let last: Vec<String> = events
                    .iter()
                    .rev()
                    .take(20)
                    .map(|e| format!("{e:?}"))
                    .collect();
                panic!(
                    "timed out ({TIMEOUT:?}) waiting for {what}; our last events, newest first:\n{}",
                    last.join("\n")
                );
            }
            events = changed.wait_timeout(events, deadline - now).unwrap().0;
        }
    }

    /// Every event so far that `pick` takes.
    pub fn all<T>(&self, pick: impl FnMut(&Event) -> Option<T>) -> Vec<T> {
        self.0 .0.lock().unwrap().iter().filter_map(pick).collect()
    }

    /// The inbound connection from `peer` whose remote address is `remote`.
    pub fn inbound(&self, peer: PeerId, remote: &Multiaddr) -> ConnectionId {
        let want = remote.to_vec();
        self.wait(
            &format!("an inbound connection from {remote}"),
            |e| match e {
                Event::ConnectionEstablished {
                    conn,
                    peer: p,
                    endpoint: Endpoint::Listener,
                    remote_addr,
                    ..
                } if *p == peer && *remote_addr == want => Some(*conn),
                _ => None,
            },
        )
    }

    /// Why `conn` closed, once it did.
    pub fn closed(&self, conn: ConnectionId) -> CloseReason {
        self.wait(&format!("{conn:?} to close"), |e| match e {
            Event::ConnectionClosed {
                conn: c, reason, ..
            } if *c == conn => Some(reason.clone()),
            _ => None,
        })
    }
}

/// Our node: smol host, identity `[seed; 32]`, listening on loopback,
/// serving `/echo/1.0.0` also on limited connections.
#[allow(missing_debug_implementations)] // the host has no Debug
pub struct Ours {
    /// The host.
    pub host: Host,
    /// Its peer id.
    pub peer: PeerId,
    /// Our listen address with `/p2p/<peer>`.
    pub addr: Multiaddr,
    /// Its events.
    pub log: EventLog,
}

impl Ours {
    pub fn start(seed: u8) -> Ours {
        Self::start_with(seed, |_| {})
    }

    /// The same, `before` running before we listen (to serve as a relay).
    pub fn start_with(seed: u8, before: impl FnOnce(&Host)) -> Ours {
        let config = Config::new(Keypair::from_secret_bytes([seed; 32]));
        let (host, tcp) = start_host(config, |host| {
            host.allow_on_limited(ECHO);
            before(host);
        });
        let log = EventLog::start(&host);
        let peer = host.local_peer_id();
        let addr = format!("{tcp}/p2p/{peer}").parse().expect("valid");
        Ours {
            host,
            peer,
            addr,
            log,
        }
    }

    /// Our one open connection to `peer`, limited, at `remote`.
    pub fn check_only_limited(&self, peer: PeerId, conn: ConnectionId, remote: &Multiaddr) {
        let conns = self.host.connections(&peer);
        assert_eq!(conns.len(), 1, "{conns:?}");
        assert_eq!(conns[0].conn, conn, "{conns:?}");
        assert_eq!(conns[0].remote_addr, *remote, "{conns:?}");
        assert!(
            self.host.is_limited(conn),
            "a relayed connection: {conns:?}"
        );
    }

    /// An echo of [`pseudo_random_bytes`]`(len, seed)` from us to `peer`
    /// that must come back whole.
    pub fn echo_ok(&self, peer: PeerId, len: u64, seed: u32) {
        let data = pseudo_random_bytes(len as usize, seed);
        let got = within(
            &format!("our echo of {len} bytes"),
            echo_via(&self.host, peer, &data),
        )
        .unwrap_or_else(|e| panic!("our echo of {len} bytes to {peer}: {e}"));
        assert_eq!(got.len() as u64, len, "short echo");
        assert_eq!(fnv1a(&got), fnv1a(&data), "corrupt echo");
    }
}

/// `<relay addr>/p2p-circuit/p2p/<peer>`.
pub fn circuit(relay_addr: &str, peer: impl std::fmt::Display) -> Multiaddr {
    format!("{relay_addr}/p2p-circuit/p2p/{peer}")
        .parse()
        .expect("a valid circuit address")
}
