//! A rust-libp2p circuit-relay-v2 peer driven over stdin/stdout, the Rust
//! twin of `conformance/js/relay.mjs`: same command line, same JSON-lines
//! protocol, so one test helper drives either (see `tests/relay_peers.rs`).
//! The `rust_relay_peer` binary runs [`main`].
//!
//! Usage: `rust_relay_peer --seed N [--port P] [--relay-server
//! [--reservation-ttl-ms MS] [--max-data BYTES] [--max-duration-ms MS]]`
//!
//! The identity is the Ed25519 key whose secret is the byte N repeated 32
//! times. The node listens on loopback TCP port P (a free one if unset: a
//! test restarting a relay gives it its old port back), speaks `/noise` and
//! `/yamux/1.0.0` (also inside relayed connections), runs
//! [`rust_peer::Behaviour`] (identify, ping, libp2p-stream with an
//! `/echo/1.0.0` server) and the relay client (it can dial and listen on
//! `/p2p-circuit` addresses). With `--relay-server` it also runs
//! [`relay::Behaviour`], every listen address being added as an external
//! address so that reservations carry it. `--reservation-ttl-ms` sets
//! `reservation_duration`, `--max-data` `max_circuit_bytes` and
//! `--max-duration-ms` `max_circuit_duration` (defaults: 1 h, 128 KiB, 2 min).
//!
//! Protocol, one JSON object per stdout line:
//! - at start: `{"event":"ready","impl":"rust","peer","addrs","agent","relayServer"}`
//! - events: `connection:open`, `connection:close` (a CONNECTION, plus
//!   `"cause"` on close), `listen` and `listen:expired` (`"addr"`: a listen
//!   address, TCP or circuit, came or went), `reservation` (a RESERVATION,
//!   plus `"renewal"`: each reservation we make or renew; its `addrs` may
//!   still be empty for a first reservation), `circuit:inbound` (`"src"`,
//!   `"limit"`) and `circuit:outbound` (`"relay"`, `"limit"`): a relayed
//!   connection through a relay client; relay side: `reservation:granted`
//!   (`"peer"`, `"renewed"`, `"expire"`, `"addrs"`, `"limit"`, `"voucher"`:
//!   null, rust-libp2p sends none), `reservation:denied` (`"peer"`,
//!   `"status"`), `reservation:closed`, `reservation:timed-out` (`"peer"`),
//!   `circuit:accepted`, `circuit:denied` (`"status"`), `circuit:closed`
//!   (`"error"`), each with `"src"` and `"dst"`.
//! - commands, one per stdin line, numbered 1, 2, ...; they run concurrently
//!   and each prints exactly one result line `{"seq":N,"cmd":NAME,"ok":true,
//!   ...}` or `{"seq":N,"cmd":NAME,"ok":false,"name":ERROR_NAME,"error":MESSAGE,
//!   ...}`:
//!   - `reserve RELAY_ADDR`: listen on `RELAY_ADDR/p2p-circuit` (RELAY_ADDR
//!     ends in `/p2p/<relay>`); answers when the reservation is accepted and
//!     its address is listened on, with a RESERVATION.
//!   - `dial MULTIADDR`: `{"connection":CONNECTION}`.
//!   - `echo PEER LEN [SEED]`: one `/echo/1.0.0` stream to PEER with LEN
//!     pseudo-random bytes: `{"seed","len","sent","received","checksum",
//!     "connection"}`; a stream that ends early or breaks is an error line
//!     that carries the same fields.
//!   - `connections PEER`: `{"connections":[CONNECTION, ...]}`, the open ones.
//!   - `close PEER`: `{"closed":[ID, ...]}`.
//! - CONNECTION = `{"id","peer","direction":"inbound"|"outbound","remoteAddr",
//!   "limited","limits":null,"encryption":"/noise","multiplexer":"/yamux/1.0.0",
//!   "status"}`. For an inbound relayed connection `remoteAddr` is built from
//!   the circuit address it came in on, `<relay addr>/p2p-circuit/p2p/<src>`,
//!   as js-libp2p reports it (rust-libp2p itself says `/p2p/<src>`).
//!   `limited` is "relayed" (rust-libp2p has no other notion of a
//!   limited connection and keeps no per-connection budget, hence `limits`
//!   null); the security and muxer are the only ones this node offers.
//! - RESERVATION = `{"relay","addrs","expire":null,"limit":LIMIT,"voucher":null,
//!   "voucherValid":null}`: rust-libp2p's client reports neither the expiry
//!   nor a voucher.
//! - LIMIT = `{"duration":SECONDS|null,"data":BYTES|null}` as the relay sent it,
//!   or null.
//!
//! `sent` and `checksum` are [`fnv1a`] of the bytes sent and echoed, made by
//! [`pseudo_random_bytes`]: the same as the js peers'. End of stdin stops the
//! node once the commands under way have answered.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::transport::ListenerId;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{identify, identity, noise, ping, relay, tcp, yamux, Multiaddr, PeerId, Swarm};
use libp2p_stream::Control;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::peer_process::{fnv1a, fnv1a_fold, pseudo_random_bytes, FNV1A_START};
use crate::rust_peer;

const AGENT: &str = "sansp2p-conformance-rust-relay/1.0.0";
const ECHO: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/echo/1.0.0");
/// Every network operation gives up after this long, so a stall is reported
/// as an error line (the same as in relay.mjs).
const OP_TIMEOUT: Duration = Duration::from_secs(15);
const CHUNK: usize = 64 * 1024;
const USAGE: &str = "usage: rust_relay_peer --seed N [--port P] [--relay-server \
                     [--reservation-ttl-ms MS] [--max-data BYTES] [--max-duration-ms MS]]";

/// The command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The identity's secret is `[seed; 32]`.
    pub seed: u8,
    /// The loopback TCP port to listen on (`--port`); 0 picks a free one.
    pub port: u16,
    /// Run the relay server too.
    pub relay_server: bool,
    /// The relay's reservation lifetime (`--reservation-ttl-ms`).
    pub reservation_ttl: Option<Duration>,
    /// The relay's data limit per circuit (`--max-data`).
    pub max_data: Option<u64>,
    /// The relay's duration limit per circuit (`--max-duration-ms`).
    pub max_duration: Option<Duration>,
}

impl Options {
    /// Parses the arguments after the program name.
    ///
    /// # Errors
    /// A message with the usage line.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut seed = None;
        let mut options = Options {
            seed: 0,
            port: 0,
            relay_server: false,
            reservation_ttl: None,
            max_data: None,
            max_duration: None,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "--relay-server" {
                options.relay_server = true;
                continue;
            }
            let value = args
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("{flag} needs a non-negative integer\n{USAGE}"))?;
            match flag.as_str() {
                "--seed" => {
                    seed = Some(u8::try_from(value).map_err(|_| format!("--seed 0-255\n{USAGE}"))?)
                }
                "--port" => {
                    options.port =
                        u16::try_from(value).map_err(|_| format!("--port 0-65535\n{USAGE}"))?
                }
                "--reservation-ttl-ms" => {
                    options.reservation_ttl = Some(Duration::from_millis(value))
                }
                "--max-data" => options.max_data = Some(value),
                "--max-duration-ms" => options.max_duration = Some(Duration::from_millis(value)),
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        options.seed = seed.ok_or_else(|| format!("--seed is required\n{USAGE}"))?;
        let limits = [
            options.reservation_ttl.is_some(),
            options.max_data.is_some(),
            options.max_duration.is_some(),
        ];
        if !options.relay_server && limits.contains(&true) {
            return Err(format!("the limits are options of --relay-server\n{USAGE}"));
        }
        Ok(options)
    }

    /// The relay server's configuration: rust-libp2p's defaults with the
    /// limits given on the command line.
    pub fn relay_config(&self) -> relay::Config {
        let mut config = relay::Config::default();
        if let Some(ttl) = self.reservation_ttl {
            config.reservation_duration = ttl;
        }
        if let Some(bytes) = self.max_data {
            config.max_circuit_bytes = bytes;
        }
        if let Some(duration) = self.max_duration {
            config.max_circuit_duration = duration;
        }
        config
    }
}

/// The behaviours of the relay peer.
#[allow(missing_debug_implementations)] // the derive's event type has none
#[derive(NetworkBehaviour)]
pub struct RelayPeerBehaviour {
    /// Identify, ping and libp2p-stream, as in the other rust-libp2p peer.
    pub base: rust_peer::Behaviour,
    /// The relay server, with `--relay-server`.
    pub relay: Toggle<relay::Behaviour>,
    /// The relay client.
    pub relay_client: relay::client::Behaviour,
}

/// Builds the swarm. Call it inside a tokio runtime context: the TCP
/// transport registers with that runtime.
///
/// # Errors
/// If a transport or the behaviour cannot be set up.
pub fn build_swarm(options: &Options) -> Result<Swarm<RelayPeerBehaviour>, String> {
    let key = identity::Keypair::ed25519_from_bytes([options.seed; 32])
        .map_err(|e| format!("identity: {e}"))?;
    let relay_config = options.relay_server.then(|| options.relay_config());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| format!("tcp transport: {e}"))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| format!("relay client transport: {e}"))?
        .with_behaviour(|key, relay_client| RelayPeerBehaviour {
            base: rust_peer::Behaviour {
                identify: identify::Behaviour::new(
                    identify::Config::new("ipfs/0.1.0".to_owned(), key.public())
                        .with_agent_version(AGENT.to_owned()),
                ),
                ping: ping::Behaviour::new(ping::Config::new()),
                stream: libp2p_stream::Behaviour::new(),
            },
            relay: relay_config
                .map(|config| relay::Behaviour::new(key.public().to_peer_id(), config))
                .into(),
            relay_client,
        })
        .map_err(|e| format!("behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// Runs the peer on a tokio runtime of its own until stdin ends.
///
/// # Errors
/// If the runtime or the swarm cannot start.
pub fn main(options: Options) -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?
        .block_on(serve(options))
}

/// Writes one protocol line to stdout.
fn emit(value: Value) {
    let mut out = io::stdout().lock();
    // Nobody to tell if stdout is gone: the test that reads it has ended.
    let _ = writeln!(out, "{value}").and_then(|()| out.flush());
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A relay's `Limit` (its type is private to libp2p-relay) as LIMIT.
macro_rules! limit_json {
    ($limit:expr) => {
        match $limit {
            Some(limit) => json!({
                "duration": limit.duration().map(|d| d.as_secs()),
                "data": limit.data_in_bytes(),
            }),
            None => Value::Null,
        }
    };
}

/// What we know of one connection.
#[derive(Debug, Clone)]
struct ConnectionInfo {
    peer: PeerId,
    endpoint: ConnectedPoint,
    open: bool,
}

/// The remote address in js-libp2p's form. rust-libp2p gives an inbound
/// relayed connection the remote address `/p2p/<src>` only; the relay is in
/// the local (listen) address `<relay addr>/p2p-circuit`, so the address
/// reported is that one plus `/p2p/<src>`.
fn remote_addr(c: &ConnectionInfo) -> Multiaddr {
    match &c.endpoint {
        ConnectedPoint::Listener { local_addr, .. } if c.endpoint.is_relayed() => {
            local_addr.clone().with(Protocol::P2p(c.peer))
        }
        endpoint => endpoint.get_remote_address().clone(),
    }
}

fn describe(id: ConnectionId, c: &ConnectionInfo) -> Value {
    json!({
        "id": id.to_string(),
        "peer": c.peer.to_string(),
        "direction": if c.endpoint.is_dialer() { "outbound" } else { "inbound" },
        "remoteAddr": remote_addr(c).to_string(),
        "limited": c.endpoint.is_relayed(),
        "limits": Value::Null,
        "encryption": "/noise",
        "multiplexer": "/yamux/1.0.0",
        "status": if c.open { "open" } else { "closed" },
    })
}

fn result_ok(seq: u64, cmd: &str, fields: Value) -> Value {
    let mut line = Map::new();
    line.insert("seq".into(), seq.into());
    line.insert("cmd".into(), cmd.into());
    line.insert("ok".into(), true.into());
    if let Value::Object(fields) = fields {
        line.extend(fields);
    }
    Value::Object(line)
}

fn result_err(seq: u64, cmd: &str, name: &str, error: &str, fields: Value) -> Value {
    let mut line = match fields {
        Value::Object(fields) => fields,
        _ => Map::new(),
    };
    line.insert("seq".into(), seq.into());
    line.insert("cmd".into(), cmd.into());
    line.insert("ok".into(), false.into());
    line.insert("name".into(), name.into());
    line.insert("error".into(), error.into());
    Value::Object(line)
}

/// A `reserve` that has not answered yet.
#[derive(Debug)]
struct PendingReserve {
    seq: u64,
    relay: PeerId,
    listener: ListenerId,
    /// The circuit addresses listened on so far.
    addrs: Vec<Multiaddr>,
    /// The relay's limit, once the reservation is accepted.
    accepted: Option<Value>,
    deadline: Instant,
}

/// A `dial` that has not answered yet.
#[derive(Debug)]
struct PendingDial {
    seq: u64,
    deadline: Instant,
}

/// The node's state between swarm events and commands.
struct Peer {
    swarm: Swarm<RelayPeerBehaviour>,
    relay_server: bool,
    reservation_ttl: Duration,
    /// The LIMIT our relay server puts into reservations and circuits.
    relay_limit: Value,
    connections: HashMap<ConnectionId, ConnectionInfo>,
    reserves: Vec<PendingReserve>,
    /// The circuit listeners: their relay and addresses.
    circuit_listeners: HashMap<ListenerId, (PeerId, Vec<Multiaddr>)>,
    dials: HashMap<ConnectionId, PendingDial>,
    /// The echo commands under way.
    echoes: tokio::task::JoinSet<()>,
    seq: u64,
}

async fn serve(options: Options) -> Result<(), String> {
    let swarm = build_swarm(&options)?;
    let mut peer = Peer {
        swarm,
        relay_server: options.relay_server,
        reservation_ttl: options.relay_config().reservation_duration,
        relay_limit: {
            let config = options.relay_config();
            json!({
                "duration": config.max_circuit_duration.as_secs(),
                "data": config.max_circuit_bytes,
            })
        },
        connections: HashMap::new(),
        reserves: Vec::new(),
        circuit_listeners: HashMap::new(),
        dials: HashMap::new(),
        echoes: tokio::task::JoinSet::new(),
        seq: 0,
    };
    serve_echo(peer.swarm.behaviour().base.stream.new_control())?;
    peer.swarm
        .listen_on(
            format!("/ip4/127.0.0.1/tcp/{}", options.port)
                .parse()
                .expect("a valid address"),
        )
        .map_err(|e| format!("listen: {e}"))?;
    let listen = loop {
        let event = peer.swarm.select_next_some().await;
        if let SwarmEvent::NewListenAddr { address, .. } = &event {
            let address = address.clone();
            peer.on_event(event);
            break address;
        }
        peer.on_event(event);
    };
    let local = *peer.swarm.local_peer_id();
    emit(json!({
        "event": "ready",
        "impl": "rust",
        "peer": local.to_string(),
        "addrs": [listen.with(Protocol::P2p(local)).to_string()],
        "agent": AGENT,
        "relayServer": options.relay_server,
    }));

    // Lines from stdin, then None at its end.
    let (line_tx, mut lines) = mpsc::unbounded_channel::<Option<String>>();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line_tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = line_tx.send(None);
    });

    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut stdin_open = true;
    loop {
        if !stdin_open && peer.is_idle() {
            return Ok(());
        }
        tokio::select! {
            line = lines.recv(), if stdin_open => match line {
                Some(Some(line)) => peer.on_line(&line),
                _ => stdin_open = false,
            },
            event = peer.swarm.select_next_some() => peer.on_event(event),
            Some(_) = peer.echoes.join_next(), if !peer.echoes.is_empty() => {}
            _ = tick.tick() => peer.expire(),
        }
    }
}

/// Echoes every inbound `/echo/1.0.0` stream, then half-closes it.
fn serve_echo(mut control: Control) -> Result<(), String> {
    let mut incoming = control
        .accept(ECHO)
        .map_err(|e| format!("register {ECHO}: {e}"))?;
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            tokio::spawn(async move {
                let (reader, mut writer) = stream.split();
                if futures::io::copy(reader, &mut writer).await.is_ok() {
                    let _ = writer.close().await;
                }
            });
        }
    });
    Ok(())
}

impl Peer {
    fn is_idle(&self) -> bool {
        self.reserves.is_empty() && self.dials.is_empty() && self.echoes.is_empty()
    }

    fn on_line(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&cmd, args)) = words.split_first() else {
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        if let Err((name, error)) = self.run(seq, cmd, args) {
            emit(result_err(seq, cmd, name, &error, Value::Null));
        }
    }

    /// Starts command `seq`; an error is its (immediate) result line.
    fn run(&mut self, seq: u64, cmd: &str, args: &[&str]) -> Result<(), (&'static str, String)> {
        let usage = |u: &str| ("UsageError", format!("usage: {u}"));
        let addr_arg = |u: &str| -> Result<Multiaddr, (&'static str, String)> {
            let a = args.first().ok_or_else(|| usage(u))?;
            a.parse()
                .map_err(|e| ("InvalidMultiaddrError", format!("{a}: {e}")))
        };
        let peer_arg = |u: &str| -> Result<PeerId, (&'static str, String)> {
            let p = args.first().ok_or_else(|| usage(u))?;
            p.parse()
                .map_err(|e| ("InvalidPeerIdError", format!("{p}: {e}")))
        };
        match cmd {
            "reserve" => {
                let relay_addr = addr_arg("reserve RELAY_MULTIADDR")?;
                let Some(Protocol::P2p(relay)) = relay_addr.iter().last() else {
                    return Err((
                        "InvalidMultiaddrError",
                        format!("no /p2p/<relay> at the end of {relay_addr}"),
                    ));
                };
                let listener = self
                    .swarm
                    .listen_on(relay_addr.with(Protocol::P2pCircuit))
                    .map_err(|e| ("ListenError", e.to_string()))?;
                self.circuit_listeners.insert(listener, (relay, Vec::new()));
                self.reserves.push(PendingReserve {
                    seq,
                    relay,
                    listener,
                    addrs: Vec::new(),
                    accepted: None,
                    deadline: Instant::now() + OP_TIMEOUT,
                });
            }
            "dial" => {
                let addr = addr_arg("dial MULTIADDR")?;
                let opts = match addr.iter().last() {
                    Some(Protocol::P2p(target)) => DialOpts::peer_id(target)
                        .addresses(vec![addr])
                        .condition(PeerCondition::Always)
                        .build(),
                    _ => DialOpts::unknown_peer_id().address(addr).build(),
                };
                let id = opts.connection_id();
                self.swarm
                    .dial(opts)
                    .map_err(|e| ("DialError", e.to_string()))?;
                self.dials.insert(
                    id,
                    PendingDial {
                        seq,
                        deadline: Instant::now() + OP_TIMEOUT,
                    },
                );
            }
            "echo" => {
                let peer = peer_arg("echo PEER LEN [SEED]")?;
                let number = |i: usize,
                              what: &str|
                 -> Result<Option<u64>, (&'static str, String)> {
                    args.get(i)
                        .map(|s| {
                            s.parse::<u64>()
                                .map_err(|_| ("UsageError", format!("{what}: not a count: {s}")))
                        })
                        .transpose()
                };
                let len = number(1, "LEN")?.ok_or_else(|| usage("echo PEER LEN [SEED]"))?;
                let seed = number(2, "SEED")?.unwrap_or(1);
                let len = usize::try_from(len).map_err(|_| usage("echo PEER LEN [SEED]"))?;
                let seed = u32::try_from(seed).map_err(|_| usage("echo PEER LEN [SEED]"))?;
                let open: Vec<_> = self
                    .connections
                    .iter()
                    .filter(|(_, c)| c.peer == peer && c.open)
                    .collect();
                if open.is_empty() {
                    return Err(("NotConnectedError", format!("not connected to {peer}")));
                }
                // libp2p-stream picks one of the open connections: name it
                // only when there is no choice.
                let connection = match open.as_slice() {
                    [(id, c)] => describe(**id, c),
                    _ => Value::Null,
                };
                let control = self.swarm.behaviour().base.stream.new_control();
                self.echoes.spawn(async move {
                    emit(echo(control, peer, len, seed, seq, connection).await);
                });
            }
            "connections" => {
                let peer = peer_arg("connections PEER")?;
                // Like js-libp2p's getConnections: the open ones.
                let mut conns: Vec<_> = self
                    .connections
                    .iter()
                    .filter(|(_, c)| c.peer == peer && c.open)
                    .collect();
                conns.sort_by_key(|(id, _)| **id);
                let list: Vec<Value> = conns.into_iter().map(|(id, c)| describe(*id, c)).collect();
                emit(result_ok(seq, cmd, json!({ "connections": list })));
            }
            "close" => {
                let peer = peer_arg("close PEER")?;
                let ids: Vec<String> = self
                    .connections
                    .iter()
                    .filter(|(_, c)| c.peer == peer && c.open)
                    .map(|(id, _)| id.to_string())
                    .collect();
                if ids.is_empty() || self.swarm.disconnect_peer_id(peer).is_err() {
                    return Err(("NotConnectedError", format!("not connected to {peer}")));
                }
                emit(result_ok(seq, cmd, json!({ "closed": ids })));
            }
            _ => return Err(("Error", format!("unknown command {cmd}"))),
        }
        Ok(())
    }

    /// Answers the commands whose time is up.
    fn expire(&mut self) {
        let now = Instant::now();
        let (late, keep): (Vec<_>, Vec<_>) =
            self.reserves.drain(..).partition(|r| now >= r.deadline);
        self.reserves = keep;
        for r in late {
            emit(result_err(
                r.seq,
                "reserve",
                "TimeoutError",
                "no reservation in time",
                Value::Null,
            ));
            self.swarm.remove_listener(r.listener);
        }
        let late: Vec<ConnectionId> = self
            .dials
            .iter()
            .filter(|(_, d)| now >= d.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let d = self.dials.remove(&id).expect("listed above");
            emit(result_err(
                d.seq,
                "dial",
                "TimeoutError",
                "no connection in time",
                Value::Null,
            ));
        }
    }

    /// Answers a `reserve` once both the acceptance and an address are in.
    fn settle_reserves(&mut self) {
        let (done, keep): (Vec<_>, Vec<_>) = self
            .reserves
            .drain(..)
            .partition(|r| r.accepted.is_some() && !r.addrs.is_empty());
        self.reserves = keep;
        for r in done {
            let addrs: Vec<String> = r.addrs.iter().map(|a| a.to_string()).collect();
            emit(result_ok(
                r.seq,
                "reserve",
                json!({
                    "relay": r.relay.to_string(),
                    "addrs": addrs,
                    "expire": Value::Null,
                    "limit": r.accepted.expect("settled"),
                    "voucher": Value::Null,
                    "voucherValid": Value::Null,
                }),
            ));
        }
    }

    fn fail_reserve(&mut self, listener: ListenerId, name: &str, error: String) {
        if let Some(i) = self.reserves.iter().position(|r| r.listener == listener) {
            let r = self.reserves.remove(i);
            emit(result_err(r.seq, "reserve", name, &error, Value::Null));
        }
    }

    fn on_event(&mut self, event: SwarmEvent<RelayPeerBehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                let relayed = address.iter().any(|p| p == Protocol::P2pCircuit);
                if self.relay_server && !relayed {
                    // The relay hands out only confirmed external addresses.
                    self.swarm.add_external_address(address.clone());
                }
                emit(json!({ "event": "listen", "addr": address.to_string() }));
                if let Some((_, addrs)) = self.circuit_listeners.get_mut(&listener_id) {
                    addrs.push(address.clone());
                }
                if let Some(r) = self.reserves.iter_mut().find(|r| r.listener == listener_id) {
                    r.addrs.push(address);
                    self.settle_reserves();
                }
            }
            SwarmEvent::ExpiredListenAddr {
                listener_id,
                address,
            } => {
                emit(json!({ "event": "listen:expired", "addr": address.to_string() }));
                if let Some((_, addrs)) = self.circuit_listeners.get_mut(&listener_id) {
                    addrs.retain(|a| *a != address);
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                self.circuit_listeners.remove(&listener_id);
                let why = match reason {
                    Ok(()) => "the listener closed".to_owned(),
                    Err(e) => format!("the listener closed: {e}"),
                };
                self.fail_reserve(listener_id, "ListenError", why);
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                self.fail_reserve(listener_id, "ListenError", error.to_string());
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let info = ConnectionInfo {
                    peer: peer_id,
                    endpoint,
                    open: true,
                };
                let mut open = describe(connection_id, &info);
                open["event"] = "connection:open".into();
                emit(open);
                if let Some(d) = self.dials.remove(&connection_id) {
                    emit(result_ok(
                        d.seq,
                        "dial",
                        json!({ "connection": describe(connection_id, &info) }),
                    ));
                }
                self.connections.insert(connection_id, info);
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                cause,
                ..
            } => {
                if let Some(info) = self.connections.get_mut(&connection_id) {
                    info.open = false;
                    let mut close = describe(connection_id, info);
                    close["event"] = "connection:close".into();
                    close["cause"] = cause.map(|c| c.to_string()).into();
                    emit(close);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(d) = self.dials.remove(&connection_id) {
                    emit(result_err(
                        d.seq,
                        "dial",
                        "DialError",
                        &error.to_string(),
                        Value::Null,
                    ));
                }
            }
            SwarmEvent::Behaviour(RelayPeerBehaviourEvent::RelayClient(e)) => self.on_client(e),
            SwarmEvent::Behaviour(RelayPeerBehaviourEvent::Relay(e)) => self.on_relay(e),
            _ => {}
        }
    }

    fn on_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                limit,
            } => {
                let limit = limit_json!(limit);
                // The addresses listened on through that relay so far (none
                // yet when rust-libp2p reports a first reservation before
                // its address: the `reserve` result waits for both).
                let addrs: Vec<String> = self
                    .circuit_listeners
                    .values()
                    .filter(|(relay, _)| *relay == relay_peer_id)
                    .flat_map(|(_, addrs)| addrs.iter().map(|a| a.to_string()))
                    .collect();
                emit(json!({
                    "event": "reservation",
                    "relay": relay_peer_id.to_string(),
                    "addrs": addrs,
                    "renewal": renewal,
                    "expire": Value::Null,
                    "limit": limit,
                    "voucher": Value::Null,
                    "voucherValid": Value::Null,
                }));
                for r in self
                    .reserves
                    .iter_mut()
                    .filter(|r| r.relay == relay_peer_id)
                {
                    r.accepted = Some(limit.clone());
                }
                self.settle_reserves();
            }
            relay::client::Event::OutboundCircuitEstablished {
                relay_peer_id,
                limit,
            } => emit(json!({
                "event": "circuit:outbound",
                "relay": relay_peer_id.to_string(),
                "limit": limit_json!(limit),
            })),
            relay::client::Event::InboundCircuitEstablished { src_peer_id, limit } => emit(json!({
                "event": "circuit:inbound",
                "src": src_peer_id.to_string(),
                "limit": limit_json!(limit),
            })),
        }
    }

    fn on_relay(&mut self, event: relay::Event) {
        let local = *self.swarm.local_peer_id();
        let line = match event {
            relay::Event::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => {
                let addrs: Vec<String> = self
                    .swarm
                    .external_addresses()
                    .map(|a| a.clone().with(Protocol::P2p(local)).to_string())
                    .collect();
                json!({
                    "event": "reservation:granted",
                    "peer": src_peer_id.to_string(),
                    "renewed": renewed,
                    // What the relay wrote, give or take the second it took.
                    "expire": unix_now() + self.reservation_ttl.as_secs(),
                    "addrs": addrs,
                    "limit": self.relay_limit.clone(),
                    "voucher": Value::Null,
                    "voucherValid": Value::Null,
                })
            }
            relay::Event::ReservationReqDenied {
                src_peer_id,
                status,
            } => json!({
                "event": "reservation:denied",
                "peer": src_peer_id.to_string(),
                "status": format!("{status:?}"),
            }),
            relay::Event::ReservationClosed { src_peer_id } => json!({
                "event": "reservation:closed",
                "peer": src_peer_id.to_string(),
            }),
            relay::Event::ReservationTimedOut { src_peer_id } => json!({
                "event": "reservation:timed-out",
                "peer": src_peer_id.to_string(),
            }),
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => json!({
                "event": "circuit:accepted",
                "src": src_peer_id.to_string(),
                "dst": dst_peer_id.to_string(),
            }),
            relay::Event::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                status,
            } => json!({
                "event": "circuit:denied",
                "src": src_peer_id.to_string(),
                "dst": dst_peer_id.to_string(),
                "status": format!("{status:?}"),
            }),
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                error,
            } => json!({
                "event": "circuit:closed",
                "src": src_peer_id.to_string(),
                "dst": dst_peer_id.to_string(),
                "error": error.map(|e| e.to_string()),
            }),
            other => json!({ "event": "relay", "detail": format!("{other:?}") }),
        };
        emit(line);
    }
}

/// One echo stream to `peer`: sends `len` bytes from `seed` while reading the
/// echo, half-closes, reads to the end; the command's result line.
async fn echo(
    mut control: Control,
    peer: PeerId,
    len: usize,
    seed: u32,
    seq: u64,
    connection: Value,
) -> Value {
    let data = pseudo_random_bytes(len, seed);
    let report = |received: usize, checksum: u32| {
        json!({
            "seed": seed,
            "len": len,
            "sent": fnv1a(&data),
            "received": received,
            "checksum": checksum,
            "connection": connection.clone(),
        })
    };
    let run = async {
        let stream = control
            .open_stream(peer, ECHO)
            .await
            .map_err(|e| ("OpenStreamError", e.to_string(), 0, FNV1A_START))?;
        let (mut reader, mut writer) = stream.split();
        let write = async {
            for chunk in data.chunks(CHUNK) {
                writer.write_all(chunk).await?;
            }
            writer.close().await
        };
        let read = async {
            let (mut received, mut checksum) = (0, FNV1A_START);
            let mut buf = vec![0u8; CHUNK];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) => return (received, checksum, Ok(())),
                    Ok(n) => {
                        received += n;
                        checksum = fnv1a_fold(checksum, &buf[..n]);
                    }
                    Err(e) => return (received, checksum, Err(e)),
                }
            }
        };
        let (written, (received, checksum, read)) = futures::join!(write, read);
        if let Err(e) = read.and(written) {
            return Err(("StreamError", e.to_string(), received, checksum));
        }
        if received != len {
            let why = format!("the echo ended after {received} of {len} bytes");
            return Err(("ShortEchoError", why, received, checksum));
        }
        Ok((received, checksum))
    };
    match tokio::time::timeout(OP_TIMEOUT, run).await {
        Ok(Ok((received, checksum))) => result_ok(seq, "echo", report(received, checksum)),
        Ok(Err((name, error, received, checksum))) => {
            result_err(seq, "echo", name, &error, report(received, checksum))
        }
        Err(_) => result_err(
            seq,
            "echo",
            "TimeoutError",
            &format!("no echo within {OP_TIMEOUT:?}"),
            report(0, FNV1A_START),
        ),
    }
}
