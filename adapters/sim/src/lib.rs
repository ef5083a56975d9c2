//! A deterministic network simulator for sansp2p nodes.
//!
//! Thousands of real [`Node`]s (the same machine users run: upgrade, yamux,
//! dialer, relay client and server, AutoRelay, heartbeats, monitor, peer
//! maintenance, connection manager) run in one thread against a simulated
//! network, on a virtual clock, with one seeded RNG and one event queue. No
//! socket, thread or wall clock is involved, so the same seed gives the same
//! run bit for bit: [`Sim::trace_hash`] digests every event every host
//! emitted, with its time.
//!
//! The network model:
//! - every host has an address (`/ip4/7.a.b.c/tcp/4001` when public,
//!   `/ip4/10.a.b.c/tcp/4001` behind a NAT) and a region; a connection has
//!   a one-way latency (the regions' base plus seeded jitter, fixed for its
//!   life, so bytes stay in order) and optionally a bandwidth;
//! - a connection is a TCP-like byte pipe with a socket buffer: a receiver
//!   that does not read stops the sender (the node's backpressure and
//!   write-stall rules are exercised as on a real socket);
//! - a host behind a NAT accepts no connection from outside it (the SYN is
//!   dropped; the dialer's attempt times out), so it is reachable only
//!   through relays; what it dials out to sees its NAT's public address;
//! - partitions: hosts in different groups cannot exchange bytes; bytes in
//!   flight wait (TCP retransmits) and arrive when the partition heals, or
//!   the connection is reset after [`NetConfig::partition_timeout`];
//! - connection loss ([`NetConfig::reset_rate`]), connect failures, host
//!   crash and restart (state lost, identity kept), and hostile hosts
//!   whose bytes are mutated or cut short ([`Fault`]).
//!
//! # A scenario
//!
//! ```
//! use sansp2p::node::Event;
//! use sansp2p_sim::{NetConfig, Sim, Template};
//! use std::time::Duration;
//!
//! let mut sim = Sim::new(7, NetConfig::default());
//! // Host 0 serves; every other host dials it once booted.
//! let server = sim.add_host(&Template::new());
//! let server_peer = sim.peer_id(server);
//! let server_addr = sim.addr(server).to_vec();
//! let client = Template::new().on_boot(move |ctx| {
//!     ctx.node.dial(ctx.now, Some(server_peer), vec![server_addr.clone()]).unwrap();
//! });
//! let clients = sim.add_hosts(8, &client);
//! let connected = sim.run_until(Duration::from_secs(10), |sim| {
//!     clients.iter().all(|&h| sim.node(h).is_some_and(|n| n.is_connected(&server_peer)))
//! });
//! assert!(connected.is_some(), "every client reached the server");
//! assert_eq!(sim.node(server).unwrap().connection_count(), 8);
//! println!("trace {:016x}, {} events", sim.trace_hash(), sim.stats().events);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng as _, SeedableRng as _};
use sansp2p::identity::{Keypair, PeerId};
use sansp2p::node::{Action, Config, ConnectionId, Event, Node, Output, TransportError};
use sansp2p::Instant;

mod trace;

pub use trace::TraceHasher;

/// A host of the simulation: its index, in the order hosts were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub u32);

impl HostId {
    /// The index as a `usize`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}", self.0)
    }
}

/// The network's parameters. [`Default`] gives a quiet LAN-like network:
/// 10 ms ± 5 ms one way, no bandwidth limit, no loss.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// One-way latency within a region.
    pub latency: Duration,
    /// Up to this much is added to a connection's latency (seeded, fixed
    /// per connection).
    pub jitter: Duration,
    /// Extra one-way latency between two hosts of different regions.
    pub inter_region: Duration,
    /// Bytes per second of one direction of a connection; `None`: no limit.
    pub bandwidth: Option<u64>,
    /// Bytes one direction holds unread (the socket buffers of both ends);
    /// beyond it the sender cannot write.
    pub socket_buffer: usize,
    /// Probability that a connect attempt fails with `Refused` although the
    /// target listens.
    pub connect_failure: f64,
    /// Probability, per delivered chunk, that the connection is reset
    /// instead (connection loss).
    pub reset_rate: f64,
    /// How long a connection cut by a partition survives (TCP's
    /// retransmission timeout): reset at both ends after it.
    pub partition_timeout: Duration,
    /// The unix time the virtual clock's zero stands for (relay vouchers
    /// and reservations are dated with it).
    pub unix_epoch: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            inter_region: Duration::from_millis(40),
            bandwidth: None,
            socket_buffer: 256 * 1024,
            connect_failure: 0.0,
            reset_rate: 0.0,
            partition_timeout: Duration::from_secs(30),
            unix_epoch: Duration::from_secs(1_700_000_000),
        }
    }
}

/// A message-level fault of a hostile host: applied to every byte it sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Each byte is replaced by a random one with this probability.
    Mutate {
        /// Per byte.
        probability: f64,
    },
    /// Every connection ends (end of file) after this many bytes sent.
    Truncate {
        /// Bytes per connection.
        after: usize,
    },
}

/// What a template's callbacks see: the host's node, the time, and the
/// directory of every host.
pub struct Ctx<'a> {
    /// The host.
    pub host: HostId,
    /// Its node.
    pub node: &'a mut Node,
    /// The virtual time.
    pub now: Instant,
    /// Every host's identity, address and state.
    pub dir: &'a Directory,
    /// The simulation's RNG (seeded: draws from it are replayed).
    pub rng: &'a mut SimRng,
    later: Vec<(Duration, Deferred)>,
}

type Deferred = Box<dyn FnOnce(&mut Ctx<'_>)>;

impl fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("host", &self.host)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl Ctx<'_> {
    /// The relay and reservation clock of this simulation.
    pub fn wall_clock(&self) -> sansp2p::relay::WallClock {
        self.dir.wall_clock()
    }

    /// Runs `f` on this host `delay` from now (a lookup's latency, an
    /// application's think time). It is dropped if the host restarts or
    /// dies first.
    pub fn after(&mut self, delay: Duration, f: impl FnOnce(&mut Ctx<'_>) + 'static) {
        self.later.push((delay, Box::new(f)));
    }
}

type BootFn = dyn Fn(&mut Ctx<'_>);
type EventFn = dyn Fn(&mut Ctx<'_>, &Event);
type ConfigFn = dyn Fn(HostId, &mut Config);
type ObserverFn = dyn FnMut(Instant, HostId, &Event);

/// How to build a kind of host: its node configuration, what it does when
/// it boots (and boots again after a restart), how it answers its events,
/// and where it sits in the network. Cheap to clone.
#[derive(Clone)]
pub struct Template {
    config: Rc<ConfigFn>,
    boot: Rc<BootFn>,
    on_event: Rc<EventFn>,
    private: bool,
    region: u8,
    boot_within: Duration,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("private", &self.private)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Default for Template {
    fn default() -> Self {
        Self::new()
    }
}

impl Template {
    /// A public host in region 0 with the node's default configuration
    /// (noise, yamux), listening on its address and doing nothing else.
    pub fn new() -> Self {
        Template {
            config: Rc::new(|_, _| {}),
            boot: Rc::new(|_| {}),
            on_event: Rc::new(|_, _| {}),
            private: false,
            region: 0,
            boot_within: Duration::ZERO,
        }
    }

    /// Hosts of this template boot at a random moment within `spread` of
    /// being added (a network does not start in one instant).
    pub fn boot_within(mut self, spread: Duration) -> Self {
        self.boot_within = spread;
        self
    }

    /// Adjusts the node's configuration (the key and the RNG seed are the
    /// simulation's).
    pub fn config(mut self, f: impl Fn(HostId, &mut Config) + 'static) -> Self {
        self.config = Rc::new(f);
        self
    }

    /// Runs when the host boots and each time it restarts, after it
    /// listens: enable services, dial, start heartbeats.
    pub fn on_boot(mut self, f: impl Fn(&mut Ctx<'_>) + 'static) -> Self {
        self.boot = Rc::new(f);
        self
    }

    /// Sees every event of the host's node (answer lookups, accept
    /// circuits, read streams).
    pub fn on_event(mut self, f: impl Fn(&mut Ctx<'_>, &Event) + 'static) -> Self {
        self.on_event = Rc::new(f);
        self
    }

    /// Behind a NAT: no inbound connection from outside it.
    pub fn private(mut self) -> Self {
        self.private = true;
        self
    }

    /// The host's region (latency between regions is higher).
    pub fn region(mut self, region: u8) -> Self {
        self.region = region;
        self
    }
}

/// The simulation's RNG (ChaCha8, seeded by [`Sim::new`]).
#[derive(Debug, Clone)]
pub struct SimRng(ChaCha8Rng);

impl SimRng {
    fn new(seed: u64) -> Self {
        SimRng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A uniform value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        // Lemire's multiply-shift: unbiased enough for a simulation.
        ((u128::from(self.0.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.0.next_u64() as f64 / u64::MAX as f64) < p
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Moves `k` (at most all) elements of `pool`, picked uniformly, to
    /// its front in random order (a partial Fisher-Yates shuffle).
    pub fn shuffle_prefix<T>(&mut self, pool: &mut [T], k: usize) {
        for i in 0..k.min(pool.len()) {
            let j = i + self.below((pool.len() - i) as u64) as usize;
            pool.swap(i, j);
        }
    }

    /// Up to `max`, uniformly.
    pub fn duration_up_to(&mut self, max: Duration) -> Duration {
        let ns = max.as_nanos() as u64;
        if ns == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.below(ns + 1))
    }
}

/// One host in the [`Directory`].
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// Its peer id (kept across restarts).
    pub peer: PeerId,
    /// Its listen address (binary multiaddr).
    pub addr: Vec<u8>,
    /// Behind a NAT.
    pub private: bool,
    /// Its region.
    pub region: u8,
    /// Running (not killed).
    pub up: bool,
    /// How many times it was restarted.
    pub generation: u32,
    /// Its side of the current partitions (0 when there are none): hosts
    /// of different groups cannot reach each other.
    pub group: u32,
}

/// Every host's identity, address and state: what a template's callbacks
/// use to answer lookups and find relays.
#[derive(Debug, Default)]
pub struct Directory {
    hosts: Vec<HostInfo>,
    by_peer: HashMap<PeerId, HostId>,
    by_addr: HashMap<Vec<u8>, HostId>,
    unix_epoch: Duration,
}

impl Directory {
    /// The number of hosts (up or not).
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// No hosts yet.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// One host.
    pub fn get(&self, host: HostId) -> &HostInfo {
        &self.hosts[host.index()]
    }

    /// The host with this peer id.
    pub fn host_of(&self, peer: &PeerId) -> Option<HostId> {
        self.by_peer.get(peer).copied()
    }

    /// Every host, with its id.
    pub fn iter(&self) -> impl Iterator<Item = (HostId, &HostInfo)> + '_ {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (HostId(i as u32), h))
    }

    /// Up to `n` distinct random hosts that are up, pass `filter` and are
    /// not `except`, as lookup answers (peer id and address). Hosts are
    /// drawn by index, so a call costs about `n` draws; when draws find too
    /// few (few hosts qualify) it falls back to a scan, so it returns
    /// fewer than `n` only when fewer qualify.
    pub fn sample(
        &self,
        rng: &mut SimRng,
        n: usize,
        except: HostId,
        filter: impl Fn(&HostInfo) -> bool,
    ) -> Vec<(PeerId, Vec<Vec<u8>>)> {
        let ok = |h: HostId| {
            let info = &self.hosts[h.index()];
            h != except && info.up && filter(info)
        };
        let len = self.hosts.len() as u64;
        let mut picked: Vec<HostId> = Vec::with_capacity(n);
        if len > 0 {
            for _ in 0..n.saturating_mul(4) {
                if picked.len() == n {
                    break;
                }
                let h = HostId(rng.below(len) as u32);
                if ok(h) && !picked.contains(&h) {
                    picked.push(h);
                }
            }
        }
        if picked.len() < n {
            let mut pool: Vec<HostId> = (0..len as u32)
                .map(HostId)
                .filter(|&h| ok(h) && !picked.contains(&h))
                .collect();
            let more = (n - picked.len()).min(pool.len());
            rng.shuffle_prefix(&mut pool, more);
            picked.extend_from_slice(&pool[..more]);
        }
        picked
            .into_iter()
            .map(|h| {
                let info = &self.hosts[h.index()];
                (info.peer, vec![info.addr.clone()])
            })
            .collect()
    }

    /// The relay and reservation clock of this simulation.
    pub fn wall_clock(&self) -> sansp2p::relay::WallClock {
        sansp2p::relay::WallClock::new(Instant::ZERO, self.unix_epoch)
    }
}

/// Counters of one host (summed over its restarts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Events its nodes emitted.
    pub events: u64,
    /// Connections established (`Event::ConnectionEstablished`).
    pub established: u64,
    /// Connections closed (`Event::ConnectionClosed`).
    pub closed: u64,
    /// Bytes it wrote.
    pub bytes_sent: u64,
    /// Bytes its nodes consumed.
    pub bytes_received: u64,
    /// Connects it started.
    pub connects: u64,
    /// Inbound connections it refused (limits, shutting down).
    pub inbound_refused: u64,
}

/// Counters of the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events emitted by all nodes.
    pub events: u64,
    /// Items taken from the event queue (deliveries, connects, tasks).
    pub deliveries: u64,
    /// Timer firings.
    pub timers: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Connections reset by the network (loss, partitions, crashes).
    pub resets: u64,
}

/// One end of a connection: a host, which life of it, and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct End {
    host: HostId,
    generation: u32,
    conn: ConnectionId,
}

/// One direction's state, kept at the sending end.
#[derive(Debug)]
struct LinkEnd {
    peer: End,
    latency: Duration,
    /// When the last byte sent this way arrives (bytes arrive in order).
    last_arrival: Instant,
    /// When the sender's line is free again (bandwidth).
    line_free: Instant,
    /// Bytes sent this way not yet consumed by the peer.
    unread: usize,
    /// The sender wanted to write but the buffer was full.
    blocked: bool,
    /// Bytes sent this way (for `Fault::Truncate`).
    sent: usize,
    /// A FIN went this way.
    fin_sent: bool,
    /// Input that arrived for this end and the node has not taken.
    inbox: Vec<u8>,
    /// The peer's FIN arrived (handed on after the inbox).
    eof: bool,
}

/// An item of the event queue.
enum Item {
    /// A dialer's SYN reaches the host listening at the address.
    Syn {
        from: End,
        to: HostId,
        observed: Vec<u8>,
    },
    /// The connect finished.
    SynAck {
        to: End,
        peer: End,
        latency: Duration,
    },
    /// The connect failed.
    ConnectFailed { to: End, error: TransportError },
    /// Bytes arrive.
    Data { to: End, bytes: Vec<u8> },
    /// The peer's FIN arrives.
    Fin { to: End },
    /// The peer reset the connection (or the network did).
    Reset { to: End },
    /// A connection cut by a partition gives up.
    PartitionTimeout { a: End, epoch: u64 },
    /// Something the scenario scheduled.
    Task(Box<dyn FnOnce(&mut Sim)>),
}

impl Item {
    fn end(&self) -> Option<End> {
        match self {
            Item::SynAck { to, .. }
            | Item::ConnectFailed { to, .. }
            | Item::Data { to, .. }
            | Item::Fin { to }
            | Item::Reset { to } => Some(*to),
            _ => None,
        }
    }
}

struct Host {
    node: Option<Node>,
    template: Template,
    key: [u8; 32],
    listening: bool,
    timer: Option<Instant>,
    fault: Option<Fault>,
    stats: HostStats,
}

/// The simulator: hosts, the network between them, the virtual clock and
/// the event queue. See the [crate documentation](crate) for the model.
pub struct Sim {
    seed: u64,
    net: NetConfig,
    now: Instant,
    rng: SimRng,
    hosts: Vec<Host>,
    dir: Directory,
    queue: BTreeMap<(Instant, u64), Item>,
    seq: u64,
    timers: BTreeSet<(Instant, HostId)>,
    links: BTreeMap<End, LinkEnd>,
    /// Items that reached a host across a partition: they wait for the heal.
    parked: Vec<(Instant, Item)>,
    /// Bumped by every partition and heal; a partition timeout of an older
    /// epoch is stale.
    partition_epoch: u64,
    dirty: BTreeSet<HostId>,
    hash: TraceHasher,
    stats: Stats,
    observer: Option<Rc<RefCell<ObserverFn>>>,
    check_every: Duration,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("hosts", &self.hosts.len())
            .field("queued", &self.queue.len())
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// An empty network; `seed` decides every random draw (jitter, loss,
    /// host keys, node RNGs, lookups).
    pub fn new(seed: u64, net: NetConfig) -> Self {
        let dir = Directory {
            unix_epoch: net.unix_epoch,
            ..Directory::default()
        };
        Sim {
            seed,
            net,
            now: Instant::ZERO,
            rng: SimRng::new(seed),
            hosts: Vec::new(),
            dir,
            queue: BTreeMap::new(),
            seq: 0,
            timers: BTreeSet::new(),
            links: BTreeMap::new(),
            parked: Vec::new(),
            partition_epoch: 0,
            dirty: BTreeSet::new(),
            hash: TraceHasher::new(),
            stats: Stats::default(),
            observer: None,
            check_every: Duration::from_millis(100),
        }
    }

    // ------------------------------------------------------------ building

    /// Adds one host built from `template`; it boots when the run reaches
    /// the current time (so its template may refer to hosts added after it).
    pub fn add_host(&mut self, template: &Template) -> HostId {
        let id = HostId(self.hosts.len() as u32);
        let key = self.derive(b"key", id, 0);
        let peer = Keypair::from_secret_bytes(key).peer_id();
        let addr = host_addr(id, template.private);
        self.dir.by_peer.insert(peer, id);
        self.dir.by_addr.insert(addr.clone(), id);
        self.dir.hosts.push(HostInfo {
            peer,
            addr,
            private: template.private,
            region: template.region,
            up: false,
            generation: 0,
            group: 0,
        });
        self.hosts.push(Host {
            node: None,
            template: template.clone(),
            key,
            listening: false,
            timer: None,
            fault: None,
            stats: HostStats::default(),
        });
        // Booted by the run, so that a template may name hosts added later.
        let at = self.now + self.rng.duration_up_to(template.boot_within);
        self.push(at, Item::Task(Box::new(move |sim: &mut Sim| sim.boot(id))));
        id
    }

    /// Adds `n` hosts from one template; returns their ids.
    pub fn add_hosts(&mut self, n: usize, template: &Template) -> Vec<HostId> {
        (0..n).map(|_| self.add_host(template)).collect()
    }

    /// Sees every event of every host (metrics, traces).
    pub fn observe(&mut self, f: impl FnMut(Instant, HostId, &Event) + 'static) {
        self.observer = Some(Rc::new(RefCell::new(f)));
    }

    /// How often [`run_until`](Self::run_until) checks its predicate, in
    /// virtual time (default 100 ms): the granularity of measured times.
    pub fn set_check_interval(&mut self, every: Duration) {
        self.check_every = every.max(Duration::from_nanos(1));
    }

    // ------------------------------------------------------------ getters

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Every host's identity, address and state.
    pub fn directory(&self) -> &Directory {
        &self.dir
    }

    /// The host's node, while it is up.
    pub fn node(&self, host: HostId) -> Option<&Node> {
        self.hosts[host.index()].node.as_ref()
    }

    /// The host's node, to give it a command. Drain happens at the next
    /// step of the simulation.
    pub fn node_mut(&mut self, host: HostId) -> Option<&mut Node> {
        self.dirty.insert(host);
        self.hosts[host.index()].node.as_mut()
    }

    /// The host's peer id.
    pub fn peer_id(&self, host: HostId) -> PeerId {
        self.dir.get(host).peer
    }

    /// The host's listen address (binary multiaddr).
    pub fn addr(&self, host: HostId) -> &[u8] {
        &self.dir.get(host).addr
    }

    /// Whether the host is up.
    pub fn is_up(&self, host: HostId) -> bool {
        self.dir.get(host).up
    }

    /// The number of hosts.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Ids of every host.
    pub fn hosts(&self) -> impl Iterator<Item = HostId> + Clone + 'static {
        (0..self.hosts.len() as u32).map(HostId)
    }

    /// A host's counters.
    pub fn host_stats(&self, host: HostId) -> HostStats {
        self.hosts[host.index()].stats
    }

    /// The run's counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// A digest of every event every host emitted, with its time and host:
    /// equal for two runs with one seed and one scenario.
    pub fn trace_hash(&self) -> u64 {
        self.hash.value()
    }

    /// Connections the network holds (both ends counted).
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// The simulation's RNG, for scenario choices that must replay.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    // ------------------------------------------------------------ scenario events

    /// Runs `task` at virtual time `at` (now if it has passed).
    pub fn at(&mut self, at: Instant, task: impl FnOnce(&mut Sim) + 'static) {
        let at = at.max(self.now);
        self.push(at, Item::Task(Box::new(task)));
    }

    /// Crashes the host: its node and all its state are gone; its peers see
    /// their connections reset one latency later.
    pub fn kill(&mut self, host: HostId) {
        let h = &mut self.hosts[host.index()];
        if h.node.take().is_none() {
            return;
        }
        h.listening = false;
        if let Some(t) = h.timer.take() {
            self.timers.remove(&(t, host));
        }
        self.dir.hosts[host.index()].up = false;
        self.dirty.remove(&host);
        let ends: Vec<End> = self
            .links
            .keys()
            .filter(|e| e.host == host)
            .copied()
            .collect();
        for end in ends {
            if let Some(link) = self.links.remove(&end) {
                let at = self.now + link.latency;
                self.push(at, Item::Reset { to: link.peer });
            }
        }
    }

    /// Starts a killed host again: a new node with the same identity (and a
    /// new RNG seed), which listens and runs its template's boot.
    pub fn restart(&mut self, host: HostId) {
        if self.is_up(host) {
            return;
        }
        self.dir.hosts[host.index()].generation += 1;
        self.boot(host);
    }

    /// Cuts `side` off from every host not in it (a new group). Bytes
    /// between the two sides wait; connections across are reset after
    /// [`NetConfig::partition_timeout`] unless healed first.
    pub fn partition(&mut self, side: impl IntoIterator<Item = HostId>) {
        let group = self.dir.hosts.iter().map(|h| h.group).max().unwrap_or(0) + 1;
        for h in side {
            self.dir.hosts[h.index()].group = group;
        }
        self.partition_epoch += 1;
        let epoch = self.partition_epoch;
        let cut: Vec<End> = self
            .links
            .iter()
            .filter(|(a, l)| self.crosses(a.host, l.peer.host))
            .map(|(a, _)| *a)
            .collect();
        let at = self.now + self.net.partition_timeout;
        for a in cut {
            self.push(at, Item::PartitionTimeout { a, epoch });
        }
    }

    /// Ends every partition: waiting bytes arrive one latency later.
    pub fn heal(&mut self) {
        for h in &mut self.dir.hosts {
            h.group = 0;
        }
        self.partition_epoch += 1;
        // What waited arrives now, in order, ahead of anything still queued.
        let parked = std::mem::take(&mut self.parked);
        for (_, item) in parked {
            self.apply(item);
        }
    }

    /// Puts the host behind a NAT (`true`) or in public (`false`) from now
    /// on: its reachability changes, its connections stay. Its address is
    /// kept; only whether outsiders' SYNs reach it changes.
    pub fn set_private(&mut self, host: HostId, private: bool) {
        self.dir.hosts[host.index()].private = private;
    }

    /// Makes the host hostile: `fault` applies to every byte it sends from
    /// now on (`None` makes it honest again).
    pub fn set_fault(&mut self, host: HostId, fault: Option<Fault>) {
        self.hosts[host.index()].fault = fault;
    }

    // ------------------------------------------------------------ running

    /// Runs until `done` holds (checked every check interval of virtual
    /// time and once the queue is empty) or `limit` of virtual time has
    /// passed. Returns how long it took, or `None` at the limit.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let deadline = start + limit;
        let mut next_check = self.now;
        loop {
            self.drain_dirty();
            if self.now >= next_check {
                if done(self) {
                    return Some(self.now.saturating_duration_since(start));
                }
                next_check = self.now + self.check_every;
            }
            let next_item = self.queue.keys().next().map(|k| k.0);
            let next_timer = self.timers.first().map(|t| t.0);
            let next = match (next_item, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => next_check.max(self.now),
            };
            // Stop at a check point first: the predicate sees every interval.
            let next = next.min(next_check);
            if next > deadline {
                self.now = deadline;
                return done(self).then_some(limit);
            }
            self.now = self.now.max(next);
            self.step_at_now();
        }
    }

    /// Runs `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let _ = self.run_until(duration, |_| false);
    }

    /// Handles every queue item and timer due at the current time.
    fn step_at_now(&mut self) {
        let now = self.now;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let item = entry.remove();
            self.stats.deliveries += 1;
            self.apply(item);
        }
        while let Some(&(t, host)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, host));
            let h = &mut self.hosts[host.index()];
            h.timer = None;
            if let Some(node) = h.node.as_mut() {
                self.stats.timers += 1;
                node.handle_timeout(now);
                self.dirty.insert(host);
            }
        }
    }

    fn drain_dirty(&mut self) {
        while let Some(host) = self.dirty.pop_first() {
            self.drain(host);
        }
    }

    // ------------------------------------------------------------ internals

    fn push(&mut self, at: Instant, item: Item) {
        self.seq += 1;
        self.queue.insert((at, self.seq), item);
    }

    /// 32 bytes derived from the seed, a purpose, a host and a generation.
    fn derive(&self, purpose: &[u8], host: HostId, generation: u32) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let mut h = TraceHasher::new();
            h.write(purpose);
            h.write(&self.seed.to_le_bytes());
            h.write(&host.0.to_le_bytes());
            h.write(&generation.to_le_bytes());
            h.write(&[i as u8]);
            chunk.copy_from_slice(&h.value().to_le_bytes());
        }
        out
    }

    fn boot(&mut self, host: HostId) {
        let generation = self.dir.get(host).generation;
        let mut config = Config::new(Keypair::from_secret_bytes(self.hosts[host.index()].key));
        config.rng_seed = self.derive(b"rng", host, generation);
        (self.hosts[host.index()].template.config)(host, &mut config);
        let mut node = match Node::new(self.now, config) {
            Ok(node) => node,
            Err(e) => panic!("template of {host} gives a bad node configuration: {e}"),
        };
        let addr = self.dir.get(host).addr.clone();
        node.listen_on(addr);
        self.dir.hosts[host.index()].up = true;
        self.hosts[host.index()].node = Some(node);
        self.dirty.insert(host);
        // Take the listen action now so that boot code sees a listening node.
        self.drain(host);
        let boot = self.hosts[host.index()].template.boot.clone();
        self.with_ctx(host, |ctx| boot(ctx));
        self.dirty.insert(host);
    }

    fn with_ctx(&mut self, host: HostId, f: impl FnOnce(&mut Ctx<'_>)) {
        let Sim {
            hosts, dir, rng, ..
        } = self;
        let Some(node) = hosts[host.index()].node.as_mut() else {
            return;
        };
        let mut ctx = Ctx {
            host,
            node,
            now: self.now,
            dir,
            rng,
            later: Vec::new(),
        };
        f(&mut ctx);
        let later = ctx.later;
        self.dirty.insert(host);
        if later.is_empty() {
            return;
        }
        let generation = self.dir.get(host).generation;
        for (delay, f) in later {
            let at = self.now + delay;
            self.push(
                at,
                Item::Task(Box::new(move |sim: &mut Sim| {
                    let info = sim.dir.get(host);
                    if info.up && info.generation == generation {
                        sim.with_ctx(host, f);
                    }
                })),
            );
        }
    }

    fn crosses(&self, a: HostId, b: HostId) -> bool {
        self.dir.get(a).group != self.dir.get(b).group
    }

    fn current(&self, end: End) -> bool {
        self.dir.get(end.host).up && self.dir.get(end.host).generation == end.generation
    }

    fn end(&self, host: HostId, conn: ConnectionId) -> End {
        End {
            host,
            generation: self.dir.get(host).generation,
            conn,
        }
    }

    /// Drains one host's outputs until its node reports its next timeout.
    fn drain(&mut self, host: HostId) {
        loop {
            let Some(node) = self.hosts[host.index()].node.as_mut() else {
                return;
            };
            match node.poll_output() {
                Output::Action(action) => self.act(host, action),
                Output::Transmit(conn) => self.flush(host, conn),
                Output::Receive(conn) => {
                    let end = self.end(host, conn);
                    self.feed(end);
                }
                Output::Event(event) => self.on_event(host, event),
                Output::Timeout(t) => {
                    let h = &mut self.hosts[host.index()];
                    if h.timer != t {
                        if let Some(old) = h.timer.take() {
                            self.timers.remove(&(old, host));
                        }
                        if let Some(t) = t {
                            h.timer = Some(t);
                            self.timers.insert((t.max(self.now), host));
                            if t < self.now {
                                h.timer = Some(self.now);
                            }
                        }
                    }
                    return;
                }
                _ => {}
            }
        }
    }

    fn on_event(&mut self, host: HostId, event: Event) {
        self.stats.events += 1;
        let stats = &mut self.hosts[host.index()].stats;
        stats.events += 1;
        match &event {
            Event::ConnectionEstablished { .. } => stats.established += 1,
            Event::ConnectionClosed { .. } => stats.closed += 1,
            _ => {}
        }
        self.hash.event(self.now, host, &event);
        if let Some(observer) = self.observer.clone() {
            (observer.borrow_mut())(self.now, host, &event);
        }
        let on_event = self.hosts[host.index()].template.on_event.clone();
        self.with_ctx(host, |ctx| on_event(ctx, &event));
    }

    fn act(&mut self, host: HostId, action: Action) {
        let now = self.now;
        match action {
            Action::Listen { listener, addr } => {
                let ok = addr == self.dir.get(host).addr;
                let h = &mut self.hosts[host.index()];
                let node = h.node.as_mut().expect("up");
                if ok {
                    h.listening = true;
                    node.handle_listening(now, listener, addr);
                } else {
                    node.handle_listen_failed(now, listener);
                }
            }
            Action::StopListening { .. } => self.hosts[host.index()].listening = false,
            Action::Connect { conn, addr } => {
                self.hosts[host.index()].stats.connects += 1;
                let from = self.end(host, conn);
                let latency = self.net.latency;
                match self.dir.by_addr.get(&addr).copied() {
                    Some(to) if !self.rng.chance(self.net.connect_failure) => {
                        let observed = self.observed_addr(host, conn);
                        let lat = self.link_latency(host, to);
                        self.push(now + lat, Item::Syn { from, to, observed });
                    }
                    Some(_) => self.push(
                        now + latency * 2,
                        Item::ConnectFailed {
                            to: from,
                            error: TransportError::Refused,
                        },
                    ),
                    None => self.push(
                        now + latency,
                        Item::ConnectFailed {
                            to: from,
                            error: TransportError::Unreachable,
                        },
                    ),
                }
            }
            Action::CloseWrite { conn } => {
                let end = self.end(host, conn);
                self.flush(host, conn);
                if let Some(link) = self.links.get_mut(&end) {
                    if !link.fin_sent {
                        link.fin_sent = true;
                        let at = link.last_arrival.max(now + link.latency);
                        link.last_arrival = at;
                        let to = link.peer;
                        self.push(at, Item::Fin { to });
                    }
                }
            }
            Action::Close { conn } => {
                let end = self.end(host, conn);
                if let Some(link) = self.links.remove(&end) {
                    if !link.fin_sent {
                        let at = link.last_arrival.max(now + link.latency);
                        self.push(at, Item::Fin { to: link.peer });
                    }
                }
            }
            _ => {}
        }
    }

    /// What the listener sees as the dialer's address: its own IP (or its
    /// NAT's) and an ephemeral port.
    fn observed_addr(&self, host: HostId, conn: ConnectionId) -> Vec<u8> {
        let info = self.dir.get(host);
        let mut ip = [info.addr[1], info.addr[2], info.addr[3], info.addr[4]];
        if info.private {
            ip[0] = 8;
        }
        let port = 10_000 + (conn.get() % 50_000) as u16;
        tcp_addr(ip, port)
    }

    fn link_latency(&mut self, a: HostId, b: HostId) -> Duration {
        let mut lat = self.net.latency + self.rng.duration_up_to(self.net.jitter);
        if self.dir.get(a).region != self.dir.get(b).region {
            lat += self.net.inter_region;
        }
        lat
    }

    fn apply(&mut self, item: Item) {
        let now = self.now;
        // Across a partition, an item for a connection waits.
        if let Some(to) = item.end() {
            if let Some(from) = self.links.get(&to).map(|l| l.peer) {
                if self.crosses(from.host, to.host) {
                    self.parked.push((now, item));
                    return;
                }
            }
        }
        match item {
            Item::Syn { from, to, observed } => {
                if !self.current(from) {
                    return;
                }
                let crossed = self.crosses(from.host, to);
                let target = &self.hosts[to.index()];
                if crossed || self.dir.get(to).private {
                    // Dropped SYN: no answer; the dialer's attempt times out.
                    return;
                }
                if !target.listening {
                    // No listener, or a machine whose process is dead: RST.
                    let lat = self.net.latency;
                    self.push(
                        now + lat,
                        Item::ConnectFailed {
                            to: from,
                            error: TransportError::Refused,
                        },
                    );
                    return;
                }
                let node = self.hosts[to.index()].node.as_mut().expect("listening");
                match node.handle_inbound(now, observed) {
                    Ok(conn) => {
                        let lat = self.link_latency(from.host, to);
                        let end = self.end(to, conn);
                        self.links.insert(end, LinkEnd::new(from, lat, now));
                        self.dirty.insert(to);
                        self.push(
                            now + lat,
                            Item::SynAck {
                                to: from,
                                peer: end,
                                latency: lat,
                            },
                        );
                        if let Some(l) = self.links.get_mut(&end) {
                            l.last_arrival = now + lat;
                        }
                    }
                    Err(_) => {
                        self.hosts[to.index()].stats.inbound_refused += 1;
                        let lat = self.net.latency;
                        self.push(
                            now + lat,
                            Item::ConnectFailed {
                                to: from,
                                error: TransportError::Refused,
                            },
                        );
                    }
                }
            }
            Item::SynAck { to, peer, latency } => {
                if self.crosses(to.host, peer.host) {
                    // Lost in the cut: the listener's half-open end gives
                    // up like any connection across it; the dialer's
                    // attempt times out.
                    let epoch = self.partition_epoch;
                    let at = now + self.net.partition_timeout;
                    self.push(at, Item::PartitionTimeout { a: peer, epoch });
                    return;
                }
                if !self.current(to) {
                    // The dialer is gone: the listener sees a reset.
                    if self.links.remove(&peer).is_some() {
                        self.push(now + latency, Item::Reset { to: peer });
                    }
                    return;
                }
                if !self.links.contains_key(&peer) {
                    // The listener is gone already.
                    let node = self.hosts[to.host.index()].node.as_mut().expect("current");
                    node.handle_connect_failed(now, to.conn, TransportError::Refused);
                    self.dirty.insert(to.host);
                    return;
                }
                self.links.insert(to, LinkEnd::new(peer, latency, now));
                let node = self.hosts[to.host.index()].node.as_mut().expect("current");
                node.handle_connected(now, to.conn);
                self.dirty.insert(to.host);
            }
            Item::ConnectFailed { to, error } => {
                if let Some(node) = self.node_of(to) {
                    node.handle_connect_failed(now, to.conn, error);
                    self.dirty.insert(to.host);
                }
            }
            Item::Data { to, bytes } => {
                if self.net.reset_rate > 0.0 && self.rng.chance(self.net.reset_rate) {
                    self.stats.resets += 1;
                    self.reset_both(to);
                    return;
                }
                self.stats.bytes += bytes.len() as u64;
                if let Some(link) = self.links.get_mut(&to) {
                    link.inbox.extend_from_slice(&bytes);
                    self.feed(to);
                }
            }
            Item::Fin { to } => {
                if let Some(link) = self.links.get_mut(&to) {
                    link.eof = true;
                    self.feed(to);
                }
            }
            Item::Reset { to } => {
                if self.links.remove(&to).is_some() {
                    if let Some(node) = self.node_of(to) {
                        node.handle_connection_closed(now, to.conn);
                        self.dirty.insert(to.host);
                    }
                }
            }
            Item::PartitionTimeout { a, epoch } => {
                if epoch == self.partition_epoch {
                    if let Some(b) = self.links.get(&a).map(|l| l.peer) {
                        if self.crosses(a.host, b.host) {
                            self.stats.resets += 1;
                            self.reset_both(a);
                        }
                    }
                }
            }
            Item::Task(task) => task(self),
        }
    }

    /// The network drops the connection: both ends see a reset now.
    fn reset_both(&mut self, a: End) {
        let now = self.now;

        let Some(link) = self.links.remove(&a) else {
            return;
        };
        let b = link.peer;
        self.links.remove(&b);
        for end in [a, b] {
            if let Some(node) = self.node_of(end) {
                node.handle_connection_closed(now, end.conn);
                self.dirty.insert(end.host);
            }
        }
        self.parked
            .retain(|(_, item)| item.end().is_none_or(|e| e != a && e != b));
    }

    fn node_of(&mut self, end: End) -> Option<&mut Node> {
        if !self.current(end) {
            return None;
        }
        self.hosts[end.host.index()].node.as_mut()
    }

    /// Offers `end`'s waiting input to its node, as much as it takes; the
    /// sender's buffer frees up by what was taken.
    fn feed(&mut self, end: End) {
        let now = self.now;
        if !self.current(end) {
            return;
        }
        let Some(link) = self.links.get_mut(&end) else {
            return;
        };
        let node = self.hosts[end.host.index()].node.as_mut().expect("current");
        let mut taken = 0;
        while taken < link.inbox.len() {
            let cap = node.read_capacity(end.conn);
            if cap == 0 {
                break;
            }
            let stop = (taken + cap).min(link.inbox.len());
            let n = node.handle_read(now, end.conn, &link.inbox[taken..stop]);
            taken += n;
            if n == 0 {
                break;
            }
        }
        link.inbox.drain(..taken);
        let eof = link.eof && link.inbox.is_empty();
        if eof {
            link.eof = false;
            node.handle_read_closed(now, end.conn);
        }
        let peer = link.peer;
        self.hosts[end.host.index()].stats.bytes_received += taken as u64;
        if taken > 0 || eof {
            self.dirty.insert(end.host);
        }
        if taken > 0 {
            // The sender's side of this direction is kept at the peer's end.
            if let Some(back) = self.links.get_mut(&peer) {
                back.unread = back.unread.saturating_sub(taken);
                if back.blocked {
                    back.blocked = false;
                    let (host, conn) = (peer.host, peer.conn);
                    if self.current(peer) {
                        self.flush(host, conn);
                    }
                }
            }
        }
    }

    /// Moves what `conn` has to send into the network, as far as the socket
    /// buffer allows.
    fn flush(&mut self, host: HostId, conn: ConnectionId) {
        let now = self.now;
        let end = self.end(host, conn);
        let fault = self.hosts[host.index()].fault;
        loop {
            let Some(link) = self.links.get_mut(&end) else {
                // Not connected (yet, or any more): nothing can be sent; a
                // closed connection's node drops its output itself.
                return;
            };
            if link.fin_sent {
                return;
            }
            let room = self.net.socket_buffer.saturating_sub(link.unread);
            if room == 0 {
                link.blocked = true;
                return;
            }
            let node = self.hosts[host.index()].node.as_mut().expect("current");
            let buf = node.transmit_buffer(now, conn);
            if buf.is_empty() {
                return;
            }
            let n = buf.len().min(room);
            let mut bytes = buf[..n].to_vec();
            node.handle_written(now, conn, n);
            self.hosts[host.index()].stats.bytes_sent += n as u64;
            self.dirty.insert(host);
            let mut truncate = false;
            match fault {
                Some(Fault::Mutate { probability }) => {
                    for b in &mut bytes {
                        if self.rng.chance(probability) {
                            *b = self.rng.next_u64() as u8;
                        }
                    }
                }
                Some(Fault::Truncate { after }) => {
                    let left = after.saturating_sub(link.sent);
                    if bytes.len() >= left {
                        bytes.truncate(left);
                        truncate = true;
                    }
                }
                None => {}
            }
            let link = self.links.get_mut(&end).expect("checked");
            link.sent += bytes.len();
            link.unread += bytes.len();
            let start = link.line_free.max(now);
            let serialize = self.net.bandwidth.map_or(Duration::ZERO, |bw| {
                Duration::from_nanos((bytes.len() as u64).saturating_mul(1_000_000_000) / bw.max(1))
            });
            link.line_free = start + serialize;
            let at = (link.line_free + link.latency).max(link.last_arrival);
            link.last_arrival = at;
            let to = link.peer;
            if truncate {
                link.fin_sent = true;
            }
            if !bytes.is_empty() {
                self.push(at, Item::Data { to, bytes });
            }
            if truncate {
                self.push(at, Item::Fin { to });
                return;
            }
        }
    }
}

impl LinkEnd {
    fn new(peer: End, latency: Duration, now: Instant) -> Self {
        LinkEnd {
            peer,
            latency,
            last_arrival: now,
            line_free: now,
            unread: 0,
            blocked: false,
            sent: 0,
            fin_sent: false,
            inbox: Vec::new(),
            eof: false,
        }
    }
}

/// `/ip4/<ip>/tcp/<port>` as a binary multiaddr.
fn tcp_addr(ip: [u8; 4], port: u16) -> Vec<u8> {
    let [p0, p1] = port.to_be_bytes();
    vec![0x04, ip[0], ip[1], ip[2], ip[3], 0x06, p0, p1]
}

/// Public hosts live in 7.0.0.0/8, private ones in 10.0.0.0/8 (their NAT
/// shows them as 8.x.y.z); the index fills the other three bytes.
fn host_addr(host: HostId, private: bool) -> Vec<u8> {
    let n = host.0 + 1;
    let [_, a, b, c] = n.to_be_bytes();
    tcp_addr([if private { 10 } else { 7 }, a, b, c], 4001)
}
