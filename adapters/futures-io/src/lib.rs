//! The futures-io binding of the sansp2p [`Node`]: TCP sockets from
//! `async-net`, one timer from `async-io`, and streams that implement
//! `futures_io::{AsyncRead, AsyncWrite}`. The smol and async-std adapters are
//! this crate with their own spawner; it holds no protocol logic.
//!
//! Tasks: one accept loop per listener, a reader and a writer per
//! connection, and one timer task. They share the node behind a mutex that
//! is never held across an `.await`; after every call into the node the
//! holder drains its outputs (`Shared::drive`), waking whichever task or
//! stream each output concerns.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use event_listener::Event as Notify;
use futures_channel::oneshot;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use multiaddr::Multiaddr;

pub use sansp2p;
use sansp2p::addr::TcpTarget;
use sansp2p::node::{
    Action, ConnectionId, DialId, Event, ListenerId, Node, PingId, Security, StreamError,
    StreamHandle, StreamOpenFailure, TransportError,
};
use sansp2p::protocols::identify;
use sansp2p::time::StdClock;
use sansp2p::{Keypair, PeerId};

/// Runs a future to completion in the background (the runtime's `spawn`).
pub type Spawner = Arc<dyn Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync>;

/// What can go wrong in the host API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The address is not one this adapter can use (`/ip4|ip6|dns*/…/tcp/…`).
    UnsupportedAddress(String),
    /// Binding a listener failed.
    Listen(String),
    /// Every address of a dial failed; one line per address.
    Dial(Vec<String>),
    /// The node refused the request.
    Refused(String),
    /// The peer supports none of the protocols, or the stream broke.
    StreamOpen(String),
    /// The ping failed.
    Ping(String),
    /// The host was shut down.
    Shutdown,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnsupportedAddress(a) => write!(f, "unsupported address {a}"),
            Error::Listen(e) => write!(f, "listen failed: {e}"),
            Error::Dial(errors) => write!(f, "dial failed: {}", errors.join("; ")),
            Error::Refused(e) => write!(f, "refused: {e}"),
            Error::StreamOpen(e) => write!(f, "stream open failed: {e}"),
            Error::Ping(e) => write!(f, "ping failed: {e}"),
            Error::Shutdown => f.write_str("host shut down"),
        }
    }
}

impl std::error::Error for Error {}

/// What the host knows about one established connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection.
    pub conn: ConnectionId,
    /// The peer.
    pub peer: PeerId,
    /// The negotiated security protocol.
    pub security: Security,
    /// The negotiated muxer protocol.
    pub muxer: &'static str,
    /// The peer's address.
    pub remote_addr: Multiaddr,
}

#[derive(Default)]
struct StreamWakers {
    read: Option<Waker>,
    write: Option<Waker>,
    /// Closed cleanly (reads return end of file).
    finished: bool,
    /// Reset (reads and writes fail).
    reset: bool,
}

struct ConnIo {
    /// Wakes the writer: bytes to send or a close to perform.
    write: Arc<Notify>,
    /// Wakes a reader waiting for the node to take more input.
    progress: Arc<Notify>,
    closing: bool,
}

/// Where a pending answer goes.
type Reply<T> = oneshot::Sender<Result<T, Error>>;

struct State {
    node: Node,
    conns: HashMap<ConnectionId, ConnIo>,
    listeners: HashMap<ListenerId, Reply<Multiaddr>>,
    dials: HashMap<DialId, Reply<(PeerId, ConnectionId)>>,
    opens: HashMap<StreamHandle, Reply<()>>,
    pings: HashMap<PingId, Reply<Duration>>,
    streams: HashMap<StreamHandle, StreamWakers>,
    inbound: HashMap<String, async_channel::Sender<(PeerId, StreamHandle)>>,
    identified: HashMap<PeerId, identify::Info>,
    established: HashMap<ConnectionId, ConnectionInfo>,
    subscribers: Vec<async_channel::Sender<Event>>,
    /// The deadline the timer task is armed for (`None`: it waits for one).
    timer_deadline: Option<sansp2p::Instant>,
}

struct Shared {
    state: Mutex<State>,
    clock: StdClock,
    spawner: Spawner,
    timer: Notify,
}

/// A running node: cheap to clone, every clone drives the same node.
#[derive(Clone)]
pub struct Host {
    shared: Arc<Shared>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("peer", &self.local_peer_id())
            .finish_non_exhaustive()
    }
}

/// A fresh random identity from the OS RNG.
pub fn random_keypair() -> Keypair {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the OS RNG is available");
    Keypair::from_secret_bytes(secret)
}

impl Host {
    /// Starts a node with `config` on `spawner`'s runtime. The node's RNG is
    /// seeded from the OS unless the config sets a seed.
    pub fn new(mut config: sansp2p::node::Config, spawner: Spawner) -> Result<Host, Error> {
        if config.rng_seed == [0; 32] {
            getrandom::fill(&mut config.rng_seed).expect("the OS RNG is available");
        }
        let clock = StdClock::new();
        let node = Node::new(clock.now(), config).map_err(|e| Error::Refused(e.to_string()))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                node,
                conns: HashMap::new(),
                listeners: HashMap::new(),
                dials: HashMap::new(),
                opens: HashMap::new(),
                pings: HashMap::new(),
                streams: HashMap::new(),
                inbound: HashMap::new(),
                identified: HashMap::new(),
                established: HashMap::new(),
                subscribers: Vec::new(),
                timer_deadline: None,
            }),
            clock,
            spawner,
            timer: Notify::new(),
        });
        let weak = Arc::downgrade(&shared);
        (shared.spawner)(Box::pin(timer_task(weak)));
        Ok(Host { shared })
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.shared.lock().node.local_peer_id()
    }

    /// Listens on a TCP multiaddr (`/ip4/127.0.0.1/tcp/0` picks a port);
    /// returns the address actually bound.
    pub async fn listen(&self, addr: &Multiaddr) -> Result<Multiaddr, Error> {
        tcp_target(addr)?;
        let (tx, rx) = oneshot::channel();
        self.shared.with(|st| {
            let id = st.node.listen_on(addr.to_vec());
            st.listeners.insert(id, tx);
        });
        rx.await.map_err(|_| Error::Shutdown)?
    }

    /// Dials `addr` (with or without a `/p2p/<id>` suffix; with one, the
    /// peer must authenticate as that id). Returns the peer reached.
    pub async fn dial(&self, addr: &Multiaddr) -> Result<PeerId, Error> {
        self.dial_addrs(None, vec![addr.clone()])
            .await
            .map(|(peer, _)| peer)
    }

    /// Dials `peer` at `addrs`, one after another; an existing connection
    /// answers at once.
    pub async fn dial_peer(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<ConnectionId, Error> {
        self.dial_addrs(Some(peer), addrs)
            .await
            .map(|(_, conn)| conn)
    }

    async fn dial_addrs(
        &self,
        peer: Option<PeerId>,
        addrs: Vec<Multiaddr>,
    ) -> Result<(PeerId, ConnectionId), Error> {
        let (tx, rx) = oneshot::channel();
        self.shared.try_with(|st, now| {
            let id = st
                .node
                .dial(now, peer, addrs.iter().map(|a| a.to_vec()).collect())
                .map_err(|e| Error::Refused(e.to_string()))?;
            st.dials.insert(id, tx);
            Ok(())
        })?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    /// Serves `protocol`: inbound streams for it arrive on the returned
    /// [`Incoming`]. Registering a protocol twice replaces the first receiver.
    ///
    /// Streams the application has not taken yet wait, up to the yamux
    /// accept backlog of the node's config (`yamux.accept_backlog`, 256 as in
    /// go-yamux) per protocol; a stream beyond that is reset, as is every
    /// stream once the [`Incoming`] is dropped.
    pub fn accept(&self, protocol: &str) -> Result<Incoming, Error> {
        let rx = self.shared.try_with(|st, _| {
            st.node
                .register_protocol(protocol.to_owned())
                .map_err(|e| Error::Refused(e.to_string()))?;
            let (tx, rx) = async_channel::bounded(st.node.config().yamux.accept_backlog);
            st.inbound.insert(protocol.to_owned(), tx);
            Ok(rx)
        })?;
        Ok(Incoming {
            host: self.clone(),
            rx,
        })
    }

    /// Opens a stream to a connected `peer` for `protocol`.
    pub async fn open_stream(&self, peer: PeerId, protocol: &str) -> Result<Stream, Error> {
        let (tx, rx) = oneshot::channel();
        let handle = self.shared.try_with(|st, now| {
            let h = st
                .node
                .open_stream(now, peer, [protocol.to_owned()])
                .map_err(|e| Error::StreamOpen(e.to_string()))?;
            st.streams.entry(h).or_default();
            st.opens.insert(h, tx);
            Ok(h)
        })?;
        // A lazy stream reports StreamOpened during open_stream itself.
        let stream = Stream {
            host: self.clone(),
            handle,
            closed: false,
        };
        rx.await.map_err(|_| Error::Shutdown)??;
        Ok(stream)
    }

    /// Pings a connected peer; returns the round trip time.
    pub async fn ping(&self, peer: PeerId) -> Result<Duration, Error> {
        let (tx, rx) = oneshot::channel();
        self.shared.try_with(|st, now| {
            let id = st
                .node
                .ping(now, peer)
                .map_err(|e| Error::Ping(e.to_string()))?;
            st.pings.insert(id, tx);
            Ok(())
        })?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    /// What `peer` told us in identify, once it did.
    pub fn identify_info(&self, peer: &PeerId) -> Option<identify::Info> {
        self.shared.lock().identified.get(peer).cloned()
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
        let wait = async {
            while let Ok(event) = events.recv().await {
                if matches!(event, Event::Identified { peer: p, .. } if p == *peer) {
                    return self.identify_info(peer);
                }
            }
            None
        };
        wait.or(async {
            async_io::Timer::after(timeout).await;
            None
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
        st.established
            .values()
            .filter(|c| c.peer == *peer)
            .cloned()
            .collect()
    }

    /// Closes every connection to `peer`.
    pub fn disconnect(&self, peer: &PeerId) {
        self.shared.with(|st| {
            let conns: Vec<_> = st.node.connections_to(peer).collect();
            for conn in conns {
                st.node.close_connection(conn);
            }
        });
    }

    /// Every node event from now on (a bounded queue: if the receiver falls
    /// 1024 events behind, further events are dropped for it).
    pub fn events(&self) -> async_channel::Receiver<Event> {
        let (tx, rx) = async_channel::bounded(1024);
        self.shared.lock().subscribers.push(tx);
        rx
    }
}

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
        Some((
            peer,
            Stream {
                host: self.host.clone(),
                handle,
                closed: false,
            },
        ))
    }
}

/// One negotiated stream: `futures_io::AsyncRead + AsyncWrite`.
///
/// `close` half-closes (FIN); reading goes on until the peer closes.
/// Dropping a stream that was not closed resets it; dropping a closed one
/// lets the node finish it in the background.
pub struct Stream {
    host: Host,
    handle: StreamHandle,
    closed: bool,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Stream").field(&self.handle).finish()
    }
}

impl Stream {
    /// The node's handle of this stream.
    pub fn handle(&self) -> StreamHandle {
        self.handle
    }
}

fn stream_io_error(e: StreamError) -> io::Error {
    match e {
        StreamError::Reset => io::Error::new(io::ErrorKind::ConnectionReset, "stream reset"),
        StreamError::Closed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "stream closed for writing")
        }
        other => io::Error::new(io::ErrorKind::NotConnected, other.to_string()),
    }
}

impl futures_io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let h = self.handle;
        self.host
            .shared
            .with_now(|st, now| match st.node.stream_read(now, h, buf) {
                Ok(n) => Poll::Ready(Ok(n)),
                Err(StreamError::WouldBlock) => {
                    st.streams.entry(h).or_default().read = Some(cx.waker().clone());
                    Poll::Pending
                }
                Err(StreamError::UnknownStream)
                    if st.streams.get(&h).is_some_and(|w| w.finished) =>
                {
                    Poll::Ready(Ok(0))
                }
                Err(e) => Poll::Ready(Err(stream_io_error(gone_as_reset(st, h, e)))),
            })
    }
}

/// The node forgets a stream once it is reset; to the reader and writer
/// that stays a reset, not an unknown stream.
fn gone_as_reset(st: &State, h: StreamHandle, e: StreamError) -> StreamError {
    match e {
        StreamError::UnknownStream if st.streams.get(&h).is_some_and(|w| w.reset) => {
            StreamError::Reset
        }
        e => e,
    }
}

impl futures_io::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let h = self.handle;
        self.host
            .shared
            .with_now(|st, now| match st.node.stream_write(now, h, buf) {
                Ok(n) => Poll::Ready(Ok(n)),
                Err(StreamError::WouldBlock) => {
                    st.streams.entry(h).or_default().write = Some(cx.waker().clone());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(stream_io_error(gone_as_reset(st, h, e)))),
            })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are in the node's queue; the connection's writer
        // task sends them without further prompting.
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let h = self.handle;
        let result = self
            .host
            .shared
            .with_now(|st, now| st.node.stream_close(now, h));
        self.closed = true;
        Poll::Ready(result.or_else(|e| match e {
            StreamError::UnknownStream => Ok(()),
            e => Err(stream_io_error(e)),
        }))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let h = self.handle;
        let closed = self.closed;
        self.host.shared.with_now(|st, now| {
            let finished = st.streams.remove(&h).is_some_and(|w| w.finished || w.reset);
            if !finished {
                if closed {
                    st.node.stream_detach(now, h);
                } else {
                    st.node.stream_reset(now, h);
                }
            }
        });
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the state, then drains the node's outputs.
    fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut State) -> R) -> R {
        self.with_now(|st, _| f(st))
    }

    fn try_with<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut State, sansp2p::Instant) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.with_now(f)
    }

    fn with_now<R>(self: &Arc<Self>, f: impl FnOnce(&mut State, sansp2p::Instant) -> R) -> R {
        let mut st = self.lock();
        let now = self.clock.now();
        let r = f(&mut st, now);
        self.drive(&mut st, now);
        r
    }

    /// Drains the node's actions, write requests and events.
    fn drive(self: &Arc<Self>, st: &mut State, now: sansp2p::Instant) {
        loop {
            let mut busy = false;
            while let Some(action) = st.node.poll_action() {
                busy = true;
                match action {
                    Action::Listen { listener, addr } => self.start_listener(listener, addr),
                    Action::Connect { conn, addr } => self.start_connect(conn, addr),
                    Action::Close { conn } => {
                        if let Some(io) = st.conns.get_mut(&conn) {
                            io.closing = true;
                            io.write.notify(1);
                        } else {
                            // No socket (never connected): nothing to close.
                            st.node.handle_connection_closed(now, conn);
                        }
                    }
                    // Actions added later by the core: nothing to do yet.
                    _ => {}
                }
            }
            while let Some(conn) = st.node.poll_wants_write() {
                busy = true;
                if let Some(io) = st.conns.get(&conn) {
                    io.write.notify(1);
                }
            }
            while let Some(event) = st.node.poll_event() {
                busy = true;
                dispatch(st, event, now);
            }
            if !busy {
                break;
            }
        }
        // The timer task sleeps until `timer_deadline`. Wake it only to fire
        // sooner: a later deadline (each ping sets one and drops it when it
        // completes) is picked up when the armed one fires, since the node
        // ignores early timeouts. Re-arming on every change cost a task wake
        // and a reactor notification per ping.
        let deadline = st.node.poll_timeout();
        if deadline.is_some_and(|d| st.timer_deadline.is_none_or(|armed| d < armed)) {
            st.timer_deadline = deadline;
            self.timer.notify(1);
        }
    }

    fn start_listener(self: &Arc<Self>, listener: ListenerId, addr: Vec<u8>) {
        let shared = self.clone();
        (self.spawner)(Box::pin(async move {
            let bound = async {
                let ma = Multiaddr::try_from(addr)
                    .map_err(|e| Error::UnsupportedAddress(e.to_string()))?;
                let sa = resolve(&ma).await?;
                let l = async_net::TcpListener::bind(sa)
                    .await
                    .map_err(|e| Error::Listen(e.to_string()))?;
                let local = l.local_addr().map_err(|e| Error::Listen(e.to_string()))?;
                Ok::<_, Error>((l, multiaddr_of(local)))
            }
            .await;
            let (listener_socket, ma) = match bound {
                Ok(v) => v,
                Err(e) => {
                    shared.with(|st| {
                        st.node.handle_listen_failed(shared.clock.now(), listener);
                        if let Some(tx) = st.listeners.remove(&listener) {
                            let _ = tx.send(Err(e));
                        }
                    });
                    return;
                }
            };
            shared.with(|st| {
                st.node
                    .handle_listening(shared.clock.now(), listener, ma.to_vec());
                if let Some(tx) = st.listeners.remove(&listener) {
                    let _ = tx.send(Ok(ma.clone()));
                }
            });
            let weak = Arc::downgrade(&shared);
            drop(shared);
            loop {
                let Ok((socket, remote)) = listener_socket.accept().await else {
                    continue;
                };
                let Some(shared) = weak.upgrade() else { return };
                let _ = socket.set_nodelay(true);
                let accepted = shared.with_now(|st, now| {
                    let conn = st
                        .node
                        .handle_inbound(now, multiaddr_of(remote).to_vec())
                        .ok()?;
                    Some(shared.register_conn(st, conn))
                });
                if let Some(io) = accepted {
                    shared.spawn_conn_tasks(io, socket);
                }
            }
        }));
    }

    fn start_connect(self: &Arc<Self>, conn: ConnectionId, addr: Vec<u8>) {
        let shared = self.clone();
        (self.spawner)(Box::pin(async move {
            let connected = async {
                let ma = Multiaddr::try_from(addr).map_err(|_| TransportError::Unsupported)?;
                tcp_target(&ma).map_err(|_| TransportError::Unsupported)?;
                let sa = resolve(&ma)
                    .await
                    .map_err(|_| TransportError::Unreachable)?;
                let socket =
                    async_net::TcpStream::connect(sa)
                        .await
                        .map_err(|e| match e.kind() {
                            io::ErrorKind::ConnectionRefused => TransportError::Refused,
                            _ => TransportError::Unreachable,
                        })?;
                let _ = socket.set_nodelay(true);
                Ok::<_, TransportError>(socket)
            }
            .await;
            match connected {
                Ok(socket) => {
                    let io = shared.with_now(|st, now| {
                        let io = shared.register_conn(st, conn);
                        st.node.handle_connected(now, conn);
                        io
                    });
                    shared.spawn_conn_tasks(io, socket);
                }
                Err(e) => shared.with_now(|st, now| st.node.handle_connect_failed(now, conn, e)),
            }
        }));
    }

    fn register_conn(
        &self,
        st: &mut State,
        conn: ConnectionId,
    ) -> (ConnectionId, Arc<Notify>, Arc<Notify>) {
        let io = ConnIo {
            write: Arc::new(Notify::new()),
            progress: Arc::new(Notify::new()),
            closing: false,
        };
        let handles = (conn, io.write.clone(), io.progress.clone());
        st.conns.insert(conn, io);
        handles
    }

    fn spawn_conn_tasks(
        self: &Arc<Self>,
        (conn, write, progress): (ConnectionId, Arc<Notify>, Arc<Notify>),
        socket: async_net::TcpStream,
    ) {
        // Dropped when the reader ends, which tells a lingering close it may
        // release the socket.
        let (reader_alive, reader_gone) = oneshot::channel::<()>();
        let reader = read_task(
            Arc::downgrade(self),
            conn,
            socket.clone(),
            progress.clone(),
            reader_alive,
        );
        let writer = write_task(
            Arc::downgrade(self),
            conn,
            socket,
            write,
            progress,
            reader_gone,
        );
        (self.spawner)(Box::pin(reader));
        (self.spawner)(Box::pin(writer));
    }
}

fn dispatch(st: &mut State, event: Event, now: sansp2p::Instant) {
    match &event {
        Event::ConnectionEstablished {
            conn,
            peer,
            security,
            muxer,
            remote_addr,
            ..
        } => {
            let remote_addr =
                Multiaddr::try_from(remote_addr.clone()).unwrap_or_else(|_| Multiaddr::empty());
            st.established.insert(
                *conn,
                ConnectionInfo {
                    conn: *conn,
                    peer: *peer,
                    security: *security,
                    muxer,
                    remote_addr,
                },
            );
        }
        Event::ConnectionClosed { conn, .. } => {
            st.established.remove(conn);
            if let Some(io) = st.conns.remove(conn) {
                io.write.notify(usize::MAX);
                io.progress.notify(usize::MAX);
            }
        }
        Event::Dialed { dial, peer, conn } => {
            if let Some(tx) = st.dials.remove(dial) {
                let _ = tx.send(Ok((*peer, *conn)));
            }
        }
        Event::DialFailed { dial, errors, .. } => {
            if let Some(tx) = st.dials.remove(dial) {
                let lines = errors
                    .iter()
                    .map(|(addr, e)| {
                        let a = Multiaddr::try_from(addr.clone())
                            .map(|m| m.to_string())
                            .unwrap_or_default();
                        format!("{a}: {e}")
                    })
                    .collect();
                let _ = tx.send(Err(Error::Dial(lines)));
            }
        }
        Event::Identified { peer, info, .. } => {
            st.identified.insert(*peer, (**info).clone());
        }
        Event::InboundStream {
            stream,
            peer,
            protocol,
        } => {
            st.streams.entry(*stream).or_default();
            let delivered = st
                .inbound
                .get(&**protocol)
                .is_some_and(|tx| tx.try_send((*peer, *stream)).is_ok());
            if !delivered {
                // Nobody takes it (receiver gone or full): refuse.
                st.streams.remove(stream);
                st.node.stream_reset(now, *stream);
            }
        }
        Event::StreamOpened { stream, .. } => {
            if let Some(tx) = st.opens.remove(stream) {
                let _ = tx.send(Ok(()));
            }
        }
        Event::StreamOpenFailed { stream, error } => {
            if let Some(tx) = st.opens.remove(stream) {
                let msg = match error {
                    StreamOpenFailure::Negotiation(e) => format!("negotiation: {e}"),
                    other => other.to_string(),
                };
                let _ = tx.send(Err(Error::StreamOpen(msg)));
            }
            wake_stream(st, stream, |w| w.reset = true);
        }
        Event::StreamReadable { stream } => {
            if let Some(w) = st.streams.get_mut(stream).and_then(|w| w.read.take()) {
                w.wake();
            }
        }
        Event::StreamWritable { stream } => {
            if let Some(w) = st.streams.get_mut(stream).and_then(|w| w.write.take()) {
                w.wake();
            }
        }
        Event::StreamClosed { stream } => wake_stream(st, stream, |w| w.finished = true),
        Event::StreamReset { stream } => wake_stream(st, stream, |w| w.reset = true),
        Event::PingSuccess { ping, rtt, .. } => {
            if let Some(tx) = st.pings.remove(ping) {
                let _ = tx.send(Ok(*rtt));
            }
        }
        Event::PingFailed { ping, error, .. } => {
            if let Some(tx) = st.pings.remove(ping) {
                let _ = tx.send(Err(Error::Ping(error.to_string())));
            }
        }
        _ => {}
    }
    st.subscribers
        .retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) | Err(async_channel::TrySendError::Full(_)) => true,
            Err(async_channel::TrySendError::Closed(_)) => false,
        });
}

fn wake_stream(st: &mut State, stream: &StreamHandle, mark: impl FnOnce(&mut StreamWakers)) {
    if let Some(w) = st.streams.get_mut(stream) {
        mark(w);
        if let Some(r) = w.read.take() {
            r.wake();
        }
        if let Some(r) = w.write.take() {
            r.wake();
        }
    }
}

/// How long a closed connection keeps reading (and dropping) what the peer
/// still sends, waiting for its end of file, before the socket is shut.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Reads the socket into the node. Once the node is done with the
/// connection, reads on (dropping the bytes) until the peer closes, so that
/// unread bytes do not turn our close into a reset (see [`finish`]).
async fn read_task(
    shared: std::sync::Weak<Shared>,
    conn: ConnectionId,
    mut socket: async_net::TcpStream,
    progress: Arc<Notify>,
    _alive: oneshot::Sender<()>,
) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut filled = 0;
    loop {
        let n = match socket.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => {
                if let Some(shared) = shared.upgrade() {
                    shared.with_now(|st, now| st.node.handle_read_closed(now, conn));
                }
                return;
            }
            Ok(n) => n,
        };
        filled += n;
        loop {
            let Some(s) = shared.upgrade() else { return };
            let listener = progress.listen();
            let (used, gone) = s.with_now(|st, now| {
                let used = st.node.handle_read(now, conn, &buf[..filled]);
                (used, !st.conns.contains_key(&conn))
            });
            drop(s);
            if gone {
                while let Ok(1..) = socket.read(&mut buf).await {}
                return;
            }
            buf.copy_within(used..filled, 0);
            filled -= used;
            if filled < buf.len() / 2 {
                break;
            }
            // The node pushes back: wait until the writer made room.
            listener.await;
        }
    }
}

/// Writes what the node has for the connection; closes it on request.
async fn write_task(
    shared: std::sync::Weak<Shared>,
    conn: ConnectionId,
    mut socket: async_net::TcpStream,
    wake: Arc<Notify>,
    progress: Arc<Notify>,
    reader_gone: oneshot::Receiver<()>,
) {
    let finish = |socket: &async_net::TcpStream, reader_gone| {
        finish(&shared, conn, socket, &progress, reader_gone)
    };
    let mut buf = Vec::with_capacity(256 * 1024);
    loop {
        let listener = wake.listen();
        let Some(s) = shared.upgrade() else { return };
        let (n, closing, gone) = s.with_now(|st, now| {
            let n = st.node.poll_transmit(now, conn, &mut buf, 256 * 1024);
            let io = st.conns.get(&conn);
            (n, io.is_none_or(|io| io.closing), io.is_none())
        });
        drop(s);
        if n > 0 {
            if socket.write_all(&buf).await.is_err() {
                finish(&socket, reader_gone);
                return;
            }
            buf.clear();
            progress.notify(usize::MAX);
            continue;
        }
        if closing {
            let _ = socket.flush().await;
            if !gone {
                finish(&socket, reader_gone);
            }
            return;
        }
        listener.await;
    }
}

/// Ends a connection: the node forgets it at once, the peer gets our FIN
/// after the last byte written, and the reader drains what the peer still
/// sends until its FIN (a socket closed with unread bytes sends a reset,
/// which can cost the peer the last frames we sent it). The socket is shut
/// when the reader is done, or after [`CLOSE_LINGER`] at the latest.
fn finish(
    shared: &std::sync::Weak<Shared>,
    conn: ConnectionId,
    socket: &async_net::TcpStream,
    progress: &Notify,
    reader_gone: oneshot::Receiver<()>,
) {
    let _ = socket.shutdown(std::net::Shutdown::Write);
    // A reader waiting for the node to take input learns it never will.
    progress.notify(usize::MAX);
    if let Some(s) = shared.upgrade() {
        let socket = socket.clone();
        (s.spawner)(Box::pin(async move {
            let reader_done = async {
                let _ = reader_gone.await;
            };
            let linger_over = async {
                async_io::Timer::after(CLOSE_LINGER).await;
            };
            reader_done.or(linger_over).await;
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }));
        s.with_now(|st, now| {
            st.conns.remove(&conn);
            st.node.handle_connection_closed(now, conn);
        });
    }
}

/// Fires the node's timer.
async fn timer_task(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let listener = s.timer.listen();
        let deadline = {
            let mut st = s.lock();
            st.timer_deadline = st.node.poll_timeout();
            st.timer_deadline.map(|t| s.clock.to_std(t))
        };
        drop(s);
        match deadline {
            Some(at) => {
                let fired = async {
                    async_io::Timer::at(at).await;
                    true
                }
                .or(async {
                    listener.await;
                    false
                })
                .await;
                if fired {
                    let Some(s) = shared.upgrade() else { return };
                    s.with_now(|st, now| st.node.handle_timeout(now));
                }
            }
            None => listener.await,
        }
    }
}

fn tcp_target(ma: &Multiaddr) -> Result<TcpTarget, Error> {
    sansp2p::addr::tcp_target(&ma.to_vec()).ok_or_else(|| Error::UnsupportedAddress(ma.to_string()))
}

async fn resolve(ma: &Multiaddr) -> Result<SocketAddr, Error> {
    match tcp_target(ma)? {
        TcpTarget::Ip(sa) => Ok(sa),
        TcpTarget::Dns(name, port) => async_net::resolve((name.as_str(), port))
            .await
            .ok()
            .and_then(|v| v.into_iter().next())
            .ok_or_else(|| Error::UnsupportedAddress(ma.to_string())),
    }
}

/// `/ip4|ip6/<ip>/tcp/<port>` of a socket address.
pub fn multiaddr_of(sa: SocketAddr) -> Multiaddr {
    Multiaddr::try_from(sansp2p::addr::tcp_multiaddr(sa)).expect("a valid tcp multiaddr")
}
