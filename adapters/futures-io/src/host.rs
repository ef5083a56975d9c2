//! The user-facing host: commands that go to the node, and the events that
//! answer them.

use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_channel::oneshot;
use multiaddr::Multiaddr;
use sansp2p::node::{
    Config, ConnectionId, DialId, Event, ListenerId, Node, OpenStreamError, PerfId, PerfParams,
    PerfReport, PingId, RelayCommandError, StreamHandle,
};
use sansp2p::protocols::identify;
use sansp2p::relay::{self, CircuitAddr, CircuitLimit, ServerConfig, Status};
use sansp2p::time::StdClock;
use sansp2p::{yamux, Instant, PeerId};

use crate::driver::Shared;
use crate::stream::Stream;
use crate::{ConnectionInfo, Error, Runtime};

/// Where a pending answer goes.
type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// The host's bookkeeping next to the node.
#[derive(Default)]
pub(crate) struct App {
    pub(crate) listen_replies: HashMap<ListenerId, Reply<Multiaddr>>,
    dials: HashMap<DialId, Reply<(PeerId, ConnectionId)>>,
    opens: HashMap<StreamHandle, Reply<()>>,
    pings: HashMap<PingId, Reply<Duration>>,
    perfs: HashMap<PerfId, Reply<PerfReport>>,
    /// `reserve` calls waiting for a relay's answer, by relay.
    reserves: HashMap<PeerId, Vec<Reply<relay::Reservation>>>,
    /// Which circuits through our relays we take (all when unset).
    circuit_filter: Option<CircuitFilter>,
    /// `open_stream`s waiting for a session to have room for a stream;
    /// dropping a sender wakes its waiter.
    room: HashMap<PeerId, Vec<oneshot::Sender<()>>>,
    pub(crate) streams: HashMap<StreamHandle, StreamWakers>,
    inbound: HashMap<String, async_channel::Sender<(PeerId, StreamHandle)>>,
    identified: HashMap<PeerId, identify::Info>,
    established: HashMap<ConnectionId, ConnectionInfo>,
    subscribers: Vec<async_channel::Sender<Event>>,
    /// [`Host::shutdown`] calls waiting for the last connection to go.
    shutdowns: Vec<oneshot::Sender<()>>,
}

/// Decides on a circuit to us: `(relay, initiator) -> accept?`.
type CircuitFilter = Arc<dyn Fn(&PeerId, &PeerId) -> bool + Send + Sync>;

/// A reservation held with a relay, as [`Host::reserve`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The relay.
    pub relay: PeerId,
    /// Where peers reach us through it:
    /// `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<us>`, one per relay
    /// address.
    pub addrs: Vec<Multiaddr>,
    /// When the relay drops it unless it is made again.
    pub expires: std::time::Instant,
    /// What the relay allows per circuit (`None`: no limit announced).
    pub limit: Option<CircuitLimit>,
    /// The relay's signed voucher, verified, when it sent one.
    pub voucher: Option<Vec<u8>>,
}

/// The application side of one stream.
#[derive(Default)]
pub(crate) struct StreamWakers {
    pub(crate) read: Option<Waker>,
    pub(crate) write: Option<Waker>,
    /// Closed cleanly (reads return end of file).
    pub(crate) finished: bool,
    /// Reset (reads and writes fail).
    pub(crate) reset: bool,
}

/// Hands one node event to whoever waits for it, then to the subscribers.
pub(crate) fn dispatch(node: &mut Node, app: &mut App, event: Event, now: Instant) {
    match &event {
        Event::ConnectionEstablished {
            conn,
            peer,
            security,
            muxer,
            remote_addr,
            endpoint,
            ..
        } => {
            let remote_addr = crate::multiaddr_from(remote_addr.clone());
            let info = ConnectionInfo {
                conn: *conn,
                peer: *peer,
                security: *security,
                muxer,
                remote_addr,
                endpoint: *endpoint,
            };
            app.established.insert(*conn, info);
        }
        Event::ConnectionClosed { conn, peer, .. } => {
            app.established.remove(conn);
            // Waiting for room on this peer's connections: try again (on
            // another connection, or fail as not connected).
            if let Some(peer) = peer {
                app.room.remove(peer);
            }
        }
        Event::StreamsAvailable { peer, .. } => {
            app.room.remove(peer);
        }
        Event::Dialed { dial, peer, conn } => {
            if let Some(tx) = app.dials.remove(dial) {
                let _ = tx.send(Ok((*peer, *conn)));
            }
        }
        Event::DialFailed {
            dial,
            cause,
            errors,
            ..
        } => {
            if let Some(tx) = app.dials.remove(dial) {
                let errors = errors
                    .iter()
                    .map(|(addr, e)| {
                        let addr = crate::multiaddr_from(addr.clone());
                        (addr, e.clone())
                    })
                    .collect();
                let _ = tx.send(Err(Error::Dial {
                    cause: *cause,
                    errors,
                }));
            }
        }
        Event::Identified { peer, info, .. } => {
            app.identified.insert(*peer, (**info).clone());
        }
        Event::InboundStream {
            stream,
            peer,
            protocol,
        } => {
            app.streams.entry(*stream).or_default();
            let delivered = app
                .inbound
                .get(&**protocol)
                .is_some_and(|tx| tx.try_send((*peer, *stream)).is_ok());
            if !delivered {
                // Nobody takes it (receiver gone or full): refuse.
                app.streams.remove(stream);
                node.stream_reset(now, *stream);
            }
        }
        Event::StreamOpened { stream, .. } => {
            if let Some(tx) = app.opens.remove(stream) {
                let _ = tx.send(Ok(()));
            }
        }
        Event::StreamOpenFailed { stream, error } => {
            if let Some(tx) = app.opens.remove(stream) {
                let _ = tx.send(Err(Error::StreamOpen(error.clone())));
            }
            wake_stream(app, stream, |w| w.reset = true);
        }
        Event::StreamReadable { stream } => {
            if let Some(w) = app.streams.get_mut(stream).and_then(|w| w.read.take()) {
                w.wake();
            }
        }
        Event::StreamWritable { stream } => {
            if let Some(w) = app.streams.get_mut(stream).and_then(|w| w.write.take()) {
                w.wake();
            }
        }
        Event::StreamClosed { stream } => wake_stream(app, stream, |w| w.finished = true),
        Event::StreamReset { stream } => wake_stream(app, stream, |w| w.reset = true),
        Event::CircuitDialFailed { dial, error } => {
            if let Some(tx) = app.dials.remove(dial) {
                let _ = tx.send(Err(Error::CircuitDial(error.clone())));
            }
        }
        Event::ReservationAccepted { relay, reservation } => {
            for tx in app.reserves.remove(relay).into_iter().flatten() {
                let _ = tx.send(Ok(reservation.clone()));
            }
        }
        Event::ReservationFailed { relay, error } => {
            for tx in app.reserves.remove(relay).into_iter().flatten() {
                let _ = tx.send(Err(Error::Reservation(error.clone())));
            }
        }
        Event::CircuitRequest {
            request,
            relay,
            initiator,
        } => {
            let take = app
                .circuit_filter
                .as_ref()
                .is_none_or(|f| f(relay, initiator));
            let answer = if take {
                Ok(())
            } else {
                Err(Status::PermissionDenied)
            };
            // Only fails if the request timed out meanwhile: nothing to do.
            let _ = node.answer_circuit(now, *request, answer);
        }
        Event::PingSuccess { ping, rtt, .. } => {
            if let Some(tx) = app.pings.remove(ping) {
                let _ = tx.send(Ok(*rtt));
            }
        }
        Event::PingFailed { ping, error, .. } => {
            if let Some(tx) = app.pings.remove(ping) {
                let _ = tx.send(Err(Error::PingFailed(error.clone())));
            }
        }
        Event::PerfDone { perf, report, .. } => {
            if let Some(tx) = app.perfs.remove(perf) {
                let _ = tx.send(Ok(report.clone()));
            }
        }
        Event::PerfFailed { perf, error, .. } => {
            if let Some(tx) = app.perfs.remove(perf) {
                let _ = tx.send(Err(Error::PerfFailed(*error)));
            }
        }
        _ => {}
    }
    app.subscribers
        .retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) | Err(async_channel::TrySendError::Full(_)) => true,
            Err(async_channel::TrySendError::Closed(_)) => false,
        });
    if event == Event::ShutdownComplete {
        // Nothing more will come: inbound stream and event receivers end.
        app.inbound.clear();
        app.subscribers.clear();
    }
}

/// The node is shut down and every listener's socket closed: the
/// [`Host::shutdown`] calls return.
pub(crate) fn shut_down(app: &mut App) {
    for tx in app.shutdowns.drain(..) {
        let _ = tx.send(());
    }
}

fn wake_stream(app: &mut App, stream: &StreamHandle, mark: impl FnOnce(&mut StreamWakers)) {
    if let Some(w) = app.streams.get_mut(stream) {
        mark(w);
        w.read
            .take()
            .into_iter()
            .chain(w.write.take())
            .for_each(Waker::wake);
    }
}

/// A running node: cheap to clone, every clone drives the same node. Its
/// tasks run on the [`Runtime`] it was started with; its methods may be
/// called from any thread and awaited on any executor.
#[derive(Clone)]
pub struct Host {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("peer", &self.shared.local_peer)
            .field("runtime", &self.shared.runtime)
            .finish_non_exhaustive()
    }
}

/// Waits for `rx`; the host dropped the sender only if it shut down.
async fn answer<T>(rx: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
    rx.await.unwrap_or(Err(Error::Shutdown))
}

impl Host {
    /// Starts a node with `config` on `runtime`. The node's RNG is seeded
    /// from the OS unless the config sets a seed.
    pub fn new(mut config: Config, runtime: impl Runtime) -> Result<Host, Error> {
        if config.rng_seed == [0; 32] {
            getrandom::fill(&mut config.rng_seed).expect("the OS RNG is available");
        }
        let clock = StdClock::new();
        let node = Node::new(clock.now(), config).map_err(Error::Config)?;
        Ok(Host {
            shared: Shared::start(node, clock, Arc::new(runtime)),
        })
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.shared.local_peer
    }

    /// Runs `task` on the host's runtime.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.shared.runtime.spawn(Box::pin(task));
    }

    /// Listens on a TCP multiaddr (`/ip4/127.0.0.1/tcp/0` picks a port);
    /// returns the address actually bound.
    pub async fn listen(&self, addr: &Multiaddr) -> Result<Multiaddr, Error> {
        if sansp2p::addr::tcp_target(&addr.to_vec()).is_none() {
            return Err(Error::UnsupportedAddress(addr.clone()));
        }
        let (tx, rx) = oneshot::channel();
        self.shared.with(|st, _| {
            let id = st.node.listen_on(addr.to_vec());
            st.app.listen_replies.insert(id, tx);
        });
        answer(rx).await
    }

    /// Dials `addr` (with or without a `/p2p/<id>` suffix; with one, the
    /// peer must authenticate as that id). Returns the peer reached.
    ///
    /// A circuit address, `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>`,
    /// is dialed through the relay: the relay first (an existing connection
    /// to it serves), then the circuit, then the upgrade over it. The
    /// connection is [limited](Self::is_limited) when the relay announced a
    /// limit.
    pub async fn dial(&self, addr: &Multiaddr) -> Result<PeerId, Error> {
        let bytes = addr.to_vec();
        if let Some(circuit) = CircuitAddr::parse(&bytes) {
            return self.dial_circuit(&circuit).await;
        }
        let (peer, _) = self.dial_addrs(None, vec![addr.clone()]).await?;
        Ok(peer)
    }

    async fn dial_circuit(&self, circuit: &CircuitAddr<'_>) -> Result<PeerId, Error> {
        self.connect_relay(circuit.relay, circuit.relay_addr)
            .await?;
        let (tx, rx) = oneshot::channel();
        let bytes = relay::circuit_addr(circuit.relay_addr, Some(&circuit.target));
        self.shared.with(|st, now| {
            let id = st.node.dial_circuit(now, &bytes).map_err(Error::Relay)?;
            st.app.dials.insert(id, tx);
            Ok::<_, Error>(())
        })?;
        let (peer, _) = answer(rx).await?;
        Ok(peer)
    }

    /// A direct connection to `relay`, dialed at `addr` (binary, ending in
    /// `/p2p/<relay>`) unless one exists.
    async fn connect_relay(&self, relay: PeerId, addr: &[u8]) -> Result<(), Error> {
        let connected = {
            let st = self.shared.lock();
            let direct = st
                .node
                .connections_to(&relay)
                .any(|c| !st.node.is_relayed(c));
            direct
        };
        if connected {
            return Ok(());
        }
        if addr == relay::p2p_suffix(&relay).as_slice() {
            // No transport to dial it at.
            return Err(Error::Relay(RelayCommandError::NotConnectedToRelay));
        }
        self.dial_peer(relay, vec![crate::multiaddr_from(addr.to_vec())])
            .await
            .map(drop)
    }

    /// Reserves a slot on the relay at `addr` (which must end in
    /// `/p2p/<relay>`), dialing it first unless connected: peers can then
    /// dial us at the returned [`Reservation::addrs`], and identify
    /// announces them. The reservation lasts until
    /// [`Reservation::expires`] or until the connection to the relay
    /// closes; calling `reserve` again renews it.
    pub async fn reserve(&self, addr: &Multiaddr) -> Result<Reservation, Error> {
        let bytes = addr.to_vec();
        let relay = match sansp2p::addr::classify(&bytes) {
            Ok(info) if !info.relayed => info.peer,
            _ => None,
        }
        .ok_or_else(|| Error::UnsupportedAddress(addr.clone()))?;
        self.connect_relay(relay, &bytes).await?;
        let (tx, rx) = oneshot::channel();
        self.shared.with(|st, now| {
            let clock = self.shared.clock.wall_clock();
            match st.node.reserve(now, clock, relay) {
                Ok(()) | Err(RelayCommandError::ReservePending) => {
                    st.app.reserves.entry(relay).or_default().push(tx);
                    Ok(())
                }
                Err(e) => Err(Error::Relay(e)),
            }
        })?;
        let held = answer(rx).await?;
        let us = self.local_peer_id();
        let addrs = held
            .addrs
            .iter()
            .map(|a| crate::multiaddr_from(relay::circuit_addr(a, Some(&us))))
            .collect();
        Ok(Reservation {
            relay,
            addrs,
            expires: self.shared.clock.to_std(held.expire),
            limit: held.limit,
            voucher: held.voucher,
        })
    }

    /// Where peers reach us through relays right now: for every
    /// reservation held, `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<us>`.
    pub fn relay_addrs(&self) -> Vec<Multiaddr> {
        let suffix = relay::p2p_suffix(&self.local_peer_id());
        let addrs = self.shared.lock().node.relay_addrs();
        addrs
            .into_iter()
            .map(|mut a| {
                a.extend_from_slice(&suffix);
                crate::multiaddr_from(a)
            })
            .collect()
    }

    /// Decides which circuits through our relays we take: `filter(relay,
    /// initiator)`; a refused one is answered PERMISSION_DENIED. Without a
    /// filter every circuit is taken (only relays we hold a reservation with
    /// can offer one).
    pub fn set_circuit_filter(
        &self,
        filter: impl Fn(&PeerId, &PeerId) -> bool + Send + Sync + 'static,
    ) {
        self.shared.lock().app.circuit_filter = Some(Arc::new(filter));
    }

    /// Serves as a circuit relay v2 (hop) with `config`'s limits: peers
    /// reserve slots with us and reach each other through us. The relay's
    /// public addresses, put in reservations, are our listen addresses
    /// unless [`set_relay_public_addrs`](Self::set_relay_public_addrs) says
    /// otherwise.
    pub fn serve_relay(&self, config: ServerConfig) {
        self.shared.with(|st, now| {
            let clock = self.shared.clock.wall_clock();
            st.node.serve_relay(now, clock, config);
        });
    }

    /// The addresses our relay puts in reservations (for a relay behind a
    /// port mapping or known by a public address).
    pub fn set_relay_public_addrs(&self, addrs: &[Multiaddr]) -> Result<(), Error> {
        let addrs = addrs.iter().map(Multiaddr::to_vec).collect();
        self.shared
            .with(|st, _| st.node.set_relay_public_addrs(addrs))
            .map_err(Error::Relay)
    }

    /// Starts AutoRelay: the host keeps reservations with relays (the
    /// config's static relays, else relays it meets and those given to
    /// [`add_relay_candidates`](Self::add_relay_candidates)), refreshes
    /// and replaces them; [`Event::AutoRelay`] on [`events`](Self::events)
    /// tells what it did, and [`relay_addrs`](Self::relay_addrs) where we
    /// are reachable.
    pub fn enable_autorelay(
        &self,
        config: sansp2p::relay::finder::FinderConfig,
    ) -> Result<(), Error> {
        self.shared.with(|st, now| {
            let clock = self.shared.clock.wall_clock();
            st.node
                .enable_autorelay(now, clock, config)
                .map_err(Error::AutoRelay)
        })
    }

    /// Tells AutoRelay whether we are publicly reachable.
    pub fn set_reachability(&self, reachability: sansp2p::relay::finder::Reachability) {
        self.shared
            .with(|st, now| st.node.set_reachability(now, reachability));
    }

    /// Offers AutoRelay peers that might be relays (the answer to
    /// [`Event::RelayCandidatesWanted`]); they are probed.
    pub fn add_relay_candidates(&self, peers: Vec<(PeerId, Vec<Multiaddr>)>) {
        let peers = peers
            .into_iter()
            .map(|(p, addrs)| (p, addrs.iter().map(Multiaddr::to_vec).collect()))
            .collect();
        self.shared
            .with(|st, now| st.node.add_relay_candidates(now, peers));
    }

    /// Starts beating to `target` (a multiaddr with `/p2p/<aggregator>`)
    /// on `fil/heartbeat/1.0.0`, with go-filecoin's timings changed by
    /// `tune`; `payload` gives each heartbeat when it is due. What happens
    /// comes as [`Event::Heartbeat`] on [`events`](Self::events).
    ///
    /// # Errors
    /// [`Error::Heartbeat`]: no `/p2p/`, the target is us, a zero period.
    pub fn start_heartbeat(
        &self,
        target: &Multiaddr,
        tune: impl FnOnce(&mut sansp2p::liveness::heartbeat::BeaterConfig),
        payload: impl FnMut() -> sansp2p::liveness::heartbeat::Heartbeat + Send + 'static,
    ) -> Result<sansp2p::node::BeatId, Error> {
        use sansp2p::liveness::heartbeat::{BeaterConfig, BeaterConfigError};
        let mut config = BeaterConfig::new(target.to_vec());
        tune(&mut config);
        self.shared.with(|st, now| {
            st.node
                .start_heartbeat(now, config, Box::new(payload))
                .map_err(Error::Heartbeat)?
                .ok_or(Error::Heartbeat(BeaterConfigError::NoTarget))
        })
    }

    /// Stops a heartbeat target.
    pub fn stop_heartbeat(&self, beat: sansp2p::node::BeatId) {
        self.shared
            .with(|st, now| st.node.stop_heartbeat(now, beat));
    }

    /// Serves `fil/heartbeat/1.0.0` as an aggregator: heartbeats come as
    /// [`Event::Aggregator`], and feed a peer monitor whose alerts and
    /// recoveries come as [`Event::Monitor`].
    ///
    /// # Errors
    /// [`Error::Monitor`] for a bad monitor configuration.
    pub fn serve_heartbeat(
        &self,
        config: sansp2p::liveness::aggregator::AggregatorConfig,
        monitor: sansp2p::liveness::monitor::MonitorConfig,
    ) -> Result<(), Error> {
        self.shared.with(|st, now| {
            st.node
                .serve_heartbeat(now, config, monitor)
                .map_err(Error::Monitor)
        })
    }

    /// The latest valid, unexpired metric `name` of every monitored peer
    /// (`heartbeat` for the aggregator's), sorted by peer.
    pub fn last_metrics(&self, name: &str) -> Vec<sansp2p::liveness::monitor::Metric> {
        self.shared.with(|st, _| {
            st.node
                .monitor()
                .map(|m| m.last_metrics(name).into_iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// The (peer, metric) series the monitor holds as down.
    pub fn alerted(&self) -> Vec<(PeerId, String)> {
        self.shared.with(|st, _| {
            st.node
                .monitor()
                .map(|m| m.alerted().map(|(p, n)| (*p, n.to_owned())).collect())
                .unwrap_or_default()
        })
    }

    /// Starts keeping peers (go-ethereum's dial scheduler over the node's
    /// dialer and a peer store): static peers always, bootnodes after a
    /// while with no peers, others up to the quotas from the store and
    /// from [`Event::PeerLookupWanted`], which the application answers
    /// with [`add_peer_candidates`](Self::add_peer_candidates) and
    /// [`peer_lookup_done`](Self::peer_lookup_done).
    ///
    /// # Errors
    /// [`Error::Maintain`] for a bad configuration.
    pub fn enable_peer_maintenance(
        &self,
        config: sansp2p::node::MaintainConfig,
    ) -> Result<(), Error> {
        self.shared.with(|st, now| {
            st.node
                .enable_peer_maintenance(now, config)
                .map_err(Error::Maintain)
        })
    }

    /// Peers that may be dialled, for [`Event::PeerLookupWanted`].
    pub fn add_peer_candidates(&self, peers: Vec<(PeerId, Vec<Multiaddr>)>) {
        let peers = peers
            .into_iter()
            .map(|(p, addrs)| (p, addrs.iter().map(Multiaddr::to_vec).collect()))
            .collect();
        self.shared
            .with(|st, now| st.node.add_peer_candidates(now, peers));
    }

    /// The lookup of the last [`Event::PeerLookupWanted`] is over.
    pub fn peer_lookup_done(&self) {
        self.shared.with(|st, now| st.node.peer_lookup_done(now));
    }

    /// Answers [`Event::ResolveWanted`] with the static peer's addresses
    /// (none: not found).
    pub fn resolved(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let addrs = addrs.iter().map(Multiaddr::to_vec).collect();
        self.shared
            .with(|st, now| st.node.resolved(now, peer, addrs));
    }

    /// Peers connected, as peer maintenance counts them (dialed, all), or
    /// `None` when it is off.
    pub fn peer_counts(&self) -> Option<(usize, usize)> {
        self.shared.with(|st, _| {
            st.node
                .scheduler()
                .map(|s| (s.dialed_peers(), s.connected_peers()))
        })
    }

    /// Starts go-libp2p's connection manager (water marks, grace period,
    /// tags); peers protected with [`Node::protect`](sansp2p::node::Node::protect)
    /// tags (static peers, AutoRelay's relays) are never trimmed.
    ///
    /// # Errors
    /// [`Error::ConnManager`] for a bad configuration.
    pub fn enable_conn_manager(
        &self,
        config: sansp2p::peers::connmgr::ConnManagerConfig,
    ) -> Result<(), Error> {
        self.shared.with(|st, now| {
            st.node
                .enable_conn_manager(now, config)
                .map_err(Error::ConnManager)
        })
    }

    /// Gives `peer` a tag worth `weight` to the connection manager.
    ///
    /// # Errors
    /// [`Error::Tag`] if the peer is not connected or has too many tags.
    pub fn tag_peer(&self, peer: PeerId, tag: &str, weight: i32) -> Result<(), Error> {
        self.shared
            .with(|st, _| st.node.tag_peer(peer, tag, weight).map_err(Error::Tag))
    }

    /// How long until `t`, an instant of the node's clock (as events
    /// carry them, for example a reservation's expiry); zero if past.
    pub fn time_until(&self, t: Instant) -> Duration {
        let now = self.shared.clock.now();
        t.saturating_duration_since(now)
    }

    /// Lets `protocol` run on limited (relayed) connections, in both
    /// directions: by default only ping and identify do, as in go-libp2p
    /// and js-libp2p; a relay's data and time limit applies.
    pub fn allow_on_limited(&self, protocol: &str) {
        self.shared
            .with(|st, _| st.node.allow_on_limited(protocol.to_owned()));
    }

    /// Whether `conn` is limited: relayed, with a limit from the relay.
    pub fn is_limited(&self, conn: ConnectionId) -> bool {
        self.shared.lock().node.is_limited(conn)
    }

    /// Dials `peer` at `addrs` (ranked, one batch after another); an
    /// existing connection answers at once.
    pub async fn dial_peer(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<ConnectionId, Error> {
        let (_, conn) = self.dial_addrs(Some(peer), addrs).await?;
        Ok(conn)
    }

    async fn dial_addrs(
        &self,
        peer: Option<PeerId>,
        addrs: Vec<Multiaddr>,
    ) -> Result<(PeerId, ConnectionId), Error> {
        let (tx, rx) = oneshot::channel();
        self.shared.with(|st, now| {
            let addrs = addrs.iter().map(Multiaddr::to_vec).collect();
            let id = st.node.dial(now, peer, addrs).map_err(Error::Refused)?;
            st.app.dials.insert(id, tx);
            Ok::<_, Error>(())
        })?;
        answer(rx).await
    }

    /// Serves `protocol`: inbound streams for it arrive on the returned
    /// [`Incoming`]. Registering a protocol twice replaces the first receiver.
    ///
    /// Streams the application has not taken yet wait, up to the yamux
    /// accept backlog of the node's config (`yamux.accept_backlog`, 256 as in
    /// go-yamux) per protocol; a stream beyond that is reset, as is every
    /// stream once the [`Incoming`] is dropped.
    pub fn accept(&self, protocol: &str) -> Result<Incoming, Error> {
        let rx = self.shared.with(|st, _| {
            st.node
                .register_protocol(protocol.to_owned())
                .map_err(Error::Register)?;
            let (tx, rx) = async_channel::bounded(st.node.config().yamux.accept_backlog);
            st.app.inbound.insert(protocol.to_owned(), tx);
            Ok::<_, Error>(rx)
        })?;
        Ok(Incoming {
            host: self.clone(),
            rx,
        })
    }

    /// Opens a stream to a connected `peer` for `protocol`. While the
    /// connection has no room for another stream (yamux's stream limit or
    /// ACK backlog), it waits for [`Event::StreamsAvailable`] and tries
    /// again.
    pub async fn open_stream(&self, peer: PeerId, protocol: &str) -> Result<Stream, Error> {
        loop {
            let (tx, rx) = oneshot::channel();
            let (room_tx, room_rx) = oneshot::channel();
            let opened = self.shared.with(|st, now| {
                match st.node.open_stream(now, peer, [protocol.to_owned()]) {
                    Ok(h) => {
                        st.app.streams.entry(h).or_default();
                        st.app.opens.insert(h, tx);
                        Ok(Some(h))
                    }
                    Err(OpenStreamError::Yamux(
                        yamux::OpenError::AckBacklogFull | yamux::OpenError::TooManyStreams,
                    )) => {
                        st.app.room.entry(peer).or_default().push(room_tx);
                        Ok(None)
                    }
                    Err(e) => Err(Error::OpenStream(e)),
                }
            })?;
            let Some(handle) = opened else {
                // Room, or the connection closed: try again.
                let _ = room_rx.await;
                continue;
            };
            // Made first: dropped on failure, it frees the node's stream.
            let stream = Stream::new(self.clone(), handle);
            answer(rx).await?;
            return Ok(stream);
        }
    }

    /// Pings a connected peer; returns the round trip time.
    pub async fn ping(&self, peer: PeerId) -> Result<Duration, Error> {
        let (tx, rx) = oneshot::channel();
        self.shared.with(|st, now| {
            let id = st.node.ping(now, peer).map_err(Error::Ping)?;
            st.app.pings.insert(id, tx);
            Ok::<_, Error>(())
        })?;
        answer(rx).await
    }

    /// Runs perf (`/perf/1.0.0`) against a connected `peer`: `upload` bytes
    /// up, then `download` bytes back; returns what moved and how long it
    /// took. The peer must serve perf ([`serve_perf`](Self::serve_perf)
    /// on ours). The run fails after the node's `perf.timeout` (60 s by
    /// default). Neither side buffers the transfer: any size costs a
    /// chunk and the stream's send buffer.
    pub async fn perf(
        &self,
        peer: PeerId,
        upload: u64,
        download: u64,
    ) -> Result<PerfReport, Error> {
        let (tx, rx) = oneshot::channel();
        self.shared.with(|st, now| {
            let params = PerfParams { upload, download };
            let id = st.node.perf(now, peer, params).map_err(Error::Perf)?;
            st.app.perfs.insert(id, tx);
            Ok::<_, Error>(())
        })?;
        answer(rx).await
    }

    /// Serves perf to peers that ask, or stops (off by default, as the
    /// spec wants: a client may ask for any amount of work; for trusted
    /// networks only). Connected peers hear of it by identify push. The
    /// node's `Config::perf.serve` sets it from the start.
    pub fn serve_perf(&self, on: bool) {
        self.shared.with(|st, _| st.node.serve_perf(on));
    }

    /// What `peer` told us in identify, once it did.
    pub fn identify_info(&self, peer: &PeerId) -> Option<identify::Info> {
        self.shared.lock().app.identified.get(peer).cloned()
    }

    /// Waits until `peer` has identified (or `timeout` passes).
    pub async fn wait_identified(
        &self,
        peer: &PeerId,
        timeout: Duration,
    ) -> Option<identify::Info> {
        let events = self.events();
        if let Some(info) = self.identify_info(peer) {
            return Some(info);
        }
        let mut identified = pin!(async {
            while let Ok(event) = events.recv().await {
                if matches!(event, Event::Identified { peer: p, .. } if p == *peer) {
                    return self.identify_info(peer);
                }
            }
            None
        });
        let mut expired = self
            .shared
            .runtime
            .sleep_until(std::time::Instant::now() + timeout);
        poll_fn(|cx| match identified.as_mut().poll(cx) {
            Poll::Ready(info) => Poll::Ready(info),
            Poll::Pending => expired.as_mut().poll(cx).map(|()| None),
        })
        .await
    }

    /// Whether dials of `peer` at `addr` are in backoff after recent failures.
    pub fn is_backed_off(&self, peer: &PeerId, addr: &Multiaddr) -> bool {
        self.shared.lock().node.is_backed_off(peer, &addr.to_vec())
    }

    /// The established connections to `peer`.
    pub fn connections(&self, peer: &PeerId) -> Vec<ConnectionInfo> {
        let st = self.shared.lock();
        let all = st.app.established.values();
        all.filter(|c| c.peer == *peer).cloned().collect()
    }

    /// The muxer's counters of each established connection to `peer`
    /// (see [`sansp2p::yamux::Stats`]): frames, and payload bytes copied or
    /// passed on without a copy.
    pub fn muxer_stats(&self, peer: &PeerId) -> Vec<sansp2p::yamux::Stats> {
        let st = self.shared.lock();
        let conns = st.node.connections_to(peer);
        conns
            .filter_map(|c| st.node.muxer_stats(c).cloned())
            .collect()
    }

    /// Closes every connection to `peer`.
    pub fn disconnect(&self, peer: &PeerId) {
        self.shared.with(|st, _| {
            let conns: Vec<_> = st.node.connections_to(peer).collect();
            for conn in conns {
                st.node.close_connection(conn);
            }
        });
    }

    /// Shuts the host down gracefully and waits until it is done: dials
    /// under way fail, every connection is closed with a GoAway after what
    /// it owes is written, listeners close, and AutoRelay, heartbeats, peer
    /// maintenance and the connection manager stop
    /// ([`Node::shutdown`]). Then [`Incoming::next`] and [`Host::events`]
    /// end, and later commands fail. It returns within the node's close
    /// flush timeout plus its linger, whatever the peers do.
    pub async fn shutdown(&self) {
        let rx = self.shared.with(|st, now| {
            let (tx, rx) = oneshot::channel();
            st.app.shutdowns.push(tx);
            st.node.shutdown(now);
            rx
        });
        let _ = rx.await;
    }

    /// Every node event from now on (a bounded queue: if the receiver falls
    /// 1024 events behind, further events are dropped for it).
    pub fn events(&self) -> Events {
        let (tx, rx) = async_channel::bounded(1024);
        self.shared.lock().app.subscribers.push(tx);
        rx
    }
}

/// The node's events, as [`Host::events`] hands them out.
pub type Events = async_channel::Receiver<Event>;

/// Inbound streams of one protocol.
#[derive(Debug)]
pub struct Incoming {
    host: Host,
    rx: async_channel::Receiver<(PeerId, StreamHandle)>,
}

impl Incoming {
    /// The next inbound stream and its peer.
    pub async fn next(&self) -> Option<(PeerId, Stream)> {
        let (peer, handle) = self.rx.recv().await.ok()?;
        Some((peer, Stream::new(self.host.clone(), handle)))
    }
}
