//! A rust-libp2p perf node: `libp2p-perf` 0.3 (client and server side by
//! side), whose newest release belongs to the libp2p 0.53 generation, so
//! its swarm is built with that libp2p (`libp2p-053`) over TCP, `/noise`
//! and `/yamux/1.0.0`. It runs on a tokio runtime of its own, listening on
//! loopback; a driver task owns the swarm, runs the closures sent to it
//! ([`PerfPeer::command`]) and forwards the swarm events a filter keeps.
//! The perf interop tests and the perf bench share it.

use std::time::Duration;

use futures::StreamExt;
use libp2p_053 as old;
use libp2p_perf::{client, server};
use old::swarm::{NetworkBehaviour, SwarmEvent};
use tokio::sync::{mpsc, oneshot};

/// Their node's behaviour: perf client and server.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p_053::swarm::derive_prelude")]
pub struct PerfBehaviour {
    /// Runs perf against a peer.
    pub client: client::Behaviour,
    /// Serves perf to any peer.
    pub server: server::Behaviour,
}

impl std::fmt::Debug for PerfBehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfBehaviour").finish_non_exhaustive()
    }
}

/// Their swarm.
pub type PerfSwarm = old::Swarm<PerfBehaviour>;
/// What their driver forwards.
pub type PerfSwarmEvent = SwarmEvent<PerfBehaviourEvent>;
type Command = Box<dyn FnOnce(&mut PerfSwarm) + Send>;

/// A running libp2p-perf node.
pub struct PerfPeer {
    /// Its peer id.
    pub id: old::PeerId,
    /// Where it listens, with its `/p2p/` suffix.
    pub addr: old::Multiaddr,
    /// The swarm events `keep` let through, oldest first.
    pub events: mpsc::UnboundedReceiver<PerfSwarmEvent>,
    commands: mpsc::UnboundedSender<Command>,
    /// Dropped last: ends the swarm and its connections.
    _runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for PerfPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfPeer")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl PerfPeer {
    /// Starts a node with the identity of `seed`; connections idle for
    /// `idle` close (their perf handlers keep none alive by themselves);
    /// panics if it does not listen within `limit`. `keep` picks the
    /// events forwarded.
    pub fn start(
        seed: u8,
        idle: Duration,
        limit: Duration,
        keep: fn(&PerfSwarmEvent) -> bool,
    ) -> PerfPeer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("libp2p-perf")
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let _context = runtime.enter();
        let key = old::identity::Keypair::ed25519_from_bytes([seed; 32]).expect("a valid secret");
        let mut swarm = old::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                old::tcp::Config::default().nodelay(true),
                old::noise::Config::new,
                old::yamux::Config::default,
            )
            .expect("the TCP transport")
            .with_behaviour(|_| PerfBehaviour {
                client: client::Behaviour::new(),
                server: server::Behaviour::new(),
            })
            .expect("the behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();
        let id = *swarm.local_peer_id();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("valid"))
            .expect("listen");
        let listen_addr = runtime.block_on(async {
            let listening = async {
                loop {
                    if let SwarmEvent::NewListenAddr { address, .. } =
                        swarm.select_next_some().await
                    {
                        return address;
                    }
                }
            };
            tokio::time::timeout(limit, listening)
                .await
                .expect("libp2p-perf listens in time")
        });
        let (commands, mut command_rx) = mpsc::unbounded_channel::<Command>();
        let (event_tx, events) = mpsc::unbounded_channel();
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    command = command_rx.recv() => match command {
                        Some(f) => f(&mut swarm),
                        None => return,
                    },
                    event = swarm.select_next_some() => {
                        if keep(&event) && event_tx.send(event).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        PerfPeer {
            id,
            addr: format!("{listen_addr}/p2p/{id}").parse().expect("valid"),
            events,
            commands,
            _runtime: runtime,
        }
    }

    /// Runs `f` on the swarm in the driver task; its result comes on the
    /// receiver (the caller bounds the wait). Panics if the driver is gone.
    pub fn command<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut PerfSwarm) -> R + Send + 'static,
    ) -> oneshot::Receiver<R> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Box::new(move |swarm| {
                let _ = tx.send(f(swarm));
            }))
            .unwrap_or_else(|_| panic!("the libp2p-perf driver is gone"));
        rx
    }
}
