//! The rust-libp2p side of the node interop tests and the node bench: one
//! swarm (tcp, noise or plaintext, yamux, identify, ping, libp2p-stream)
//! owned by a tokio task that runs commands and forwards every event.

use std::convert::Infallible;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, identity, noise, ping, plaintext, tcp, yamux, Swarm};
use sansp2p::node::Security;
use tokio::sync::mpsc;

/// The behaviours the peer runs.
#[allow(missing_debug_implementations)] // the derive's event type has none
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// `/ipfs/id/1.0.0` and push.
    pub identify: identify::Behaviour,
    /// `/ipfs/ping/1.0.0`.
    pub ping: ping::Behaviour,
    /// Custom protocols such as `/echo/1.0.0`.
    pub stream: libp2p_stream::Behaviour,
}

/// Everything the swarm reports.
pub type TheirEvent = SwarmEvent<BehaviourEvent>;
/// Work to run on the swarm inside its task.
pub type Command = Box<dyn FnOnce(&mut Swarm<Behaviour>) + Send>;

/// How the peer differs between the tests and the bench.
#[derive(Debug, Clone)]
pub struct Options {
    /// Identify `protocolVersion`.
    pub protocol_version: String,
    /// Identify `agentVersion`, if not rust-libp2p's default.
    pub agent_version: Option<String>,
    /// The ping behaviour's settings.
    pub ping: ping::Config,
    /// How long a connection without streams stays open.
    pub idle_timeout: Duration,
    /// The one security protocol the peer speaks.
    pub security: Security,
}

/// Builds the swarm for identity `[seed; 32]`. Call it inside a tokio
/// runtime context: the TCP transport registers with that runtime.
pub fn build_swarm(seed: u8, options: Options) -> Swarm<Behaviour> {
    let key = identity::Keypair::ed25519_from_bytes([seed; 32]).expect("a valid secret");
    let behaviour = |k: &identity::Keypair| {
        let mut identify = identify::Config::new(options.protocol_version.clone(), k.public());
        if let Some(agent) = &options.agent_version {
            identify = identify.with_agent_version(agent.clone());
        }
        Behaviour {
            identify: identify::Behaviour::new(identify),
            ping: ping::Behaviour::new(options.ping.clone()),
            stream: libp2p_stream::Behaviour::new(),
        }
    };
    let idle = options.idle_timeout;
    // The security upgrade fixes the builder's type: finish each branch.
    macro_rules! finish {
        ($with_tcp:expr) => {
            $with_tcp
                .expect("the TCP transport")
                .with_behaviour(behaviour)
                .expect("the behaviour")
                .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
                .build()
        };
    }
    let builder = libp2p::SwarmBuilder::with_existing_identity(key).with_tokio();
    let tcp = tcp::Config::default().nodelay(true);
    match options.security {
        Security::Plaintext => finish!(builder.with_tcp(
            tcp,
            |k: &identity::Keypair| Ok::<_, Infallible>(plaintext::Config::new(k)),
            yamux::Config::default,
        )),
        _ => finish!(builder.with_tcp(tcp, noise::Config::new, yamux::Config::default)),
    }
}

/// Moves the swarm into a task on the current tokio runtime that runs the
/// commands sent to it and forwards every event; the task ends when the
/// command sender or the event receiver is dropped.
pub fn spawn_driver(
    mut swarm: Swarm<Behaviour>,
) -> (
    mpsc::UnboundedSender<Command>,
    mpsc::UnboundedReceiver<TheirEvent>,
) {
    let (commands, mut command_rx) = mpsc::unbounded_channel::<Command>();
    let (event_tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                command = command_rx.recv() => match command {
                    Some(f) => f(&mut swarm),
                    None => return,
                },
                event = swarm.select_next_some() => {
                    if event_tx.send(event).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (commands, events)
}
