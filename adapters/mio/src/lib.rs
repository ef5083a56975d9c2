//! sansp2p inside your own [mio](https://docs.rs/mio) event loop.
//!
//! [`MioNode`] owns the node's sockets and registers them on *your*
//! `Registry`, with tokens from a range you give it. Your loop stays yours:
//!
//! ```no_run
//! use mio::{Events, Poll, Token};
//! use sansp2p::node::{Config, Event};
//! use sansp2p_mio::MioNode;
//!
//! # fn main() -> std::io::Result<()> {
//! let mut poll = Poll::new()?;
//! let mut events = Events::with_capacity(256);
//! let config = Config::new(sansp2p::Keypair::from_secret_bytes([1; 32]));
//! // Tokens 1000.. belong to the node; the rest are yours.
//! let mut p2p = MioNode::new(config, Token(1000)).expect("valid config");
//! p2p.node().listen_on(sansp2p::addr::tcp_multiaddr("127.0.0.1:4001".parse().unwrap()));
//! loop {
//!     let timeout = p2p.step(poll.registry())?;
//!     while let Some(event) = p2p.poll_event() {
//!         if let Event::InboundStream { stream, .. } = event {
//!             // p2p.node().stream_read(p2p.now(), stream, &mut buf) ...
//!             # let _ = stream;
//!         }
//!     }
//!     poll.poll(&mut events, timeout)?;
//!     for event in events.iter() {
//!         if !p2p.handle_event(poll.registry(), event) {
//!             // one of your own tokens
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! The rule: after handling readiness events or calling commands on
//! [`MioNode::node`], call [`MioNode::step`] before polling again; it runs the
//! node's actions, writes what it has to send, collects its events and
//! returns how long `poll` may sleep. Nothing here spawns a thread; DNS
//! addresses are not dialed (resolving would block your loop).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use mio::event::Event as MioEvent;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use sansp2p::addr::{tcp_multiaddr, tcp_target, TcpTarget};
use sansp2p::node::{
    Action, Config, ConfigError, ConnectionId, Event, ListenerId, Node, Output, TransportError,
};
use sansp2p::time::StdClock;
use sansp2p::Instant;

/// Bytes read from a socket per `read` call, at most.
const READ_BUF: usize = 256 * 1024;
/// Slices handed to one vectored write.
const WRITE_SLICES: usize = 16;

enum Socket {
    Listener(TcpListener),
    Conn {
        socket: TcpStream,
        conn: ConnectionId,
        /// The TCP handshake is still running.
        connecting: bool,
    },
}

/// A node whose sockets live on the caller's mio `Registry`.
pub struct MioNode {
    node: Node,
    clock: StdClock,
    first_token: usize,
    next_token: usize,
    sockets: HashMap<Token, Socket>,
    tokens: HashMap<ConnectionId, Token>,
    listeners: HashMap<ListenerId, Token>,
    events: VecDeque<Event>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for MioNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MioNode")
            .field("node", &self.node)
            .field("sockets", &self.sockets.len())
            .finish()
    }
}

impl MioNode {
    /// A node whose sockets get tokens from `first_token` upwards. The
    /// node's RNG is seeded from the OS unless the config sets a seed.
    pub fn new(mut config: Config, first_token: Token) -> Result<Self, ConfigError> {
        if config.rng_seed == [0; 32] {
            getrandom::fill(&mut config.rng_seed).expect("the OS RNG is available");
        }
        let clock = StdClock::new();
        Ok(MioNode {
            node: Node::new(clock.now(), config)?,
            clock,
            first_token: first_token.0,
            next_token: first_token.0,
            sockets: HashMap::new(),
            tokens: HashMap::new(),
            listeners: HashMap::new(),
            events: VecDeque::new(),
            scratch: vec![0; READ_BUF],
        })
    }

    /// The node, for commands (`listen_on`, `dial`, `open_stream`,
    /// `stream_read`, `stream_write`, ...). Call [`step`](Self::step) afterwards.
    pub fn node(&mut self) -> &mut Node {
        &mut self.node
    }

    /// The current time on the node's clock (for commands that take `now`).
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The wall clock now, for the relay commands
    /// ([`Node::reserve`], [`Node::serve_relay`]) that date unix expiries.
    pub fn wall_clock(&self) -> sansp2p::relay::WallClock {
        self.clock.wall_clock()
    }

    /// The next node event, after [`step`](Self::step).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Handles one readiness event. Returns false if the token is not one
    /// of the node's (then it is yours).
    pub fn handle_event(&mut self, registry: &Registry, event: &MioEvent) -> bool {
        let token = event.token();
        if token.0 < self.first_token {
            return false;
        }
        let now = self.clock.now();
        match self.sockets.get_mut(&token) {
            None => return false,
            Some(Socket::Listener(_)) => self.accept_all(registry, token, now),
            Some(Socket::Conn {
                socket,
                conn,
                connecting,
            }) => {
                let conn = *conn;
                if *connecting && (event.is_writable() || event.is_error()) {
                    if matches!(socket.take_error(), Ok(None)) && socket.peer_addr().is_ok() {
                        *connecting = false;
                        let _ = socket.set_nodelay(true);
                        self.node.handle_connected(now, conn);
                    } else {
                        self.drop_socket(registry, token);
                        self.node
                            .handle_connect_failed(now, conn, TransportError::Refused);
                        return true;
                    }
                }
                if event.is_readable() || event.is_read_closed() {
                    self.read(registry, token, now);
                }
                if event.is_writable() {
                    self.write(registry, token, now);
                }
            }
        }
        true
    }

    /// Runs the node: timers, actions, reads and writes it asks for;
    /// collects its events. Returns how long the caller's `poll` may sleep
    /// (`None`: until a socket is ready).
    pub fn step(&mut self, registry: &Registry) -> io::Result<Option<Duration>> {
        let now = self.clock.now();
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        loop {
            match self.node.poll_output() {
                Output::Action(action) => self.perform(registry, action, now)?,
                Output::Transmit(conn) => {
                    if let Some(&token) = self.tokens.get(&conn) {
                        self.write(registry, token, now);
                    }
                }
                Output::Receive(conn) => {
                    if let Some(&token) = self.tokens.get(&conn) {
                        self.read(registry, token, now);
                    }
                }
                Output::Event(event) => self.events.push_back(event),
                Output::Timeout(next) => {
                    return Ok(next.map(|t| t.saturating_duration_since(self.clock.now())));
                }
                // Outputs added later by the core.
                _ => {}
            }
        }
    }

    fn fresh_token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    fn perform(&mut self, registry: &Registry, action: Action, now: Instant) -> io::Result<()> {
        match action {
            Action::Listen { listener, addr } => {
                let bound = match tcp_target(&addr) {
                    Some(TcpTarget::Ip(sa)) => bind(sa),
                    _ => Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "not an ip/tcp address",
                    )),
                };
                match bound {
                    Ok(mut socket) => {
                        let token = self.fresh_token();
                        registry.register(&mut socket, token, Interest::READABLE)?;
                        let local = socket.local_addr()?;
                        self.sockets.insert(token, Socket::Listener(socket));
                        self.listeners.insert(listener, token);
                        self.node
                            .handle_listening(now, listener, tcp_multiaddr(local));
                    }
                    Err(_) => self.node.handle_listen_failed(now, listener),
                }
            }
            Action::Connect { conn, addr } => match tcp_target(&addr) {
                Some(TcpTarget::Ip(sa)) => match TcpStream::connect(sa) {
                    Ok(socket) => self.insert_conn(registry, socket, conn, true)?,
                    Err(e) => self
                        .node
                        .handle_connect_failed(now, conn, transport_error(&e)),
                },
                _ => self
                    .node
                    .handle_connect_failed(now, conn, TransportError::Unsupported),
            },
            Action::CloseWrite { conn } => {
                if let Some(Socket::Conn { socket, .. }) =
                    self.tokens.get(&conn).and_then(|t| self.sockets.get(t))
                {
                    let _ = socket.shutdown(Shutdown::Write);
                }
            }
            Action::Close { conn } => {
                if let Some(token) = self.tokens.get(&conn).copied() {
                    self.drop_socket(registry, token);
                }
            }
            Action::StopListening { listener } => {
                if let Some(token) = self.listeners.remove(&listener) {
                    self.drop_socket(registry, token);
                }
            }
            // Actions added later by the core.
            _ => {}
        }
        Ok(())
    }

    fn insert_conn(
        &mut self,
        registry: &Registry,
        mut socket: TcpStream,
        conn: ConnectionId,
        connecting: bool,
    ) -> io::Result<()> {
        let token = self.fresh_token();
        registry.register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)?;
        self.tokens.insert(conn, token);
        self.sockets.insert(
            token,
            Socket::Conn {
                socket,
                conn,
                connecting,
            },
        );
        Ok(())
    }

    fn accept_all(&mut self, registry: &Registry, token: Token, now: Instant) {
        loop {
            let Some(Socket::Listener(socket)) = self.sockets.get(&token) else {
                return;
            };
            let (stream, remote) = match socket.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let Ok(conn) = self.node.handle_inbound(now, tcp_multiaddr(remote)) else {
                continue; // refused: dropping the socket closes it
            };
            let _ = stream.set_nodelay(true);
            if self.insert_conn(registry, stream, conn, false).is_err() {
                self.node.handle_connection_closed(now, conn);
            }
        }
    }

    /// Reads while the node takes input and the socket has some (mio is
    /// edge-triggered: stopping early is resumed by `Output::Receive`).
    fn read(&mut self, registry: &Registry, token: Token, now: Instant) {
        loop {
            let Some(Socket::Conn {
                socket,
                conn,
                connecting: false,
            }) = self.sockets.get_mut(&token)
            else {
                return;
            };
            let conn = *conn;
            let room = self.node.read_capacity(conn).min(self.scratch.len());
            if room == 0 {
                return;
            }
            match socket.read(&mut self.scratch[..room]) {
                Ok(0) => {
                    self.node.handle_read_closed(now, conn);
                    return;
                }
                Ok(n) => {
                    let taken = self.node.handle_read(now, conn, &self.scratch[..n]);
                    debug_assert_eq!(taken, n, "the node takes what read_capacity allowed");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_socket(registry, token);
                    self.node.handle_connection_closed(now, conn);
                    return;
                }
            }
        }
    }

    /// Writes straight from the node's buffer until it is empty or the
    /// socket is full.
    fn write(&mut self, registry: &Registry, token: Token, now: Instant) {
        loop {
            let Some(Socket::Conn {
                socket,
                conn,
                connecting: false,
            }) = self.sockets.get_mut(&token)
            else {
                return;
            };
            let conn = *conn;
            let mut slices = [io::IoSlice::new(&[]); WRITE_SLICES];
            let k = self.node.transmit_io_slices(now, conn, &mut slices);
            if k == 0 {
                return;
            }
            match socket.write_vectored(&slices[..k]) {
                Ok(n) => self.node.handle_written(now, conn, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_socket(registry, token);
                    self.node.handle_connection_closed(now, conn);
                    return;
                }
            }
        }
    }

    fn drop_socket(&mut self, registry: &Registry, token: Token) {
        match self.sockets.remove(&token) {
            Some(Socket::Conn {
                mut socket, conn, ..
            }) => {
                let _ = registry.deregister(&mut socket);
                self.tokens.remove(&conn);
            }
            Some(Socket::Listener(mut socket)) => {
                let _ = registry.deregister(&mut socket);
            }
            None => {}
        }
    }
}

/// Connections the kernel queues for `accept` per listener. std and mio
/// use 128, which a burst of a few hundred connects overflows (the kernel
/// then answers with SYN cookies and drops the handshake's last ACK, so
/// the peer holds a socket we never see).
const LISTEN_BACKLOG: i32 = 1024;

fn bind(sa: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(sa),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&sa.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

fn transport_error(e: &io::Error) -> TransportError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => TransportError::Refused,
        io::ErrorKind::Unsupported | io::ErrorKind::InvalidInput => TransportError::Unsupported,
        _ => TransportError::Unreachable,
    }
}
