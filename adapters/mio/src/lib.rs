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
use sansp2p::node::{Action, Config, ConfigError, ConnectionId, Event, Node, TransportError};
use sansp2p::time::StdClock;
use sansp2p::Instant;

/// Bytes read from a socket per `read` call.
const READ_BUF: usize = 256 * 1024;
/// Bytes the node hands out per transmit call.
const WRITE_CHUNK: usize = 256 * 1024;
/// How long a closed connection keeps reading (and dropping) what the peer
/// still sends, waiting for its end of file, before the socket is shut.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

enum Socket {
    Listener(TcpListener),
    Conn(Box<ConnSocket>),
    /// Closed for the node, FIN sent; drained until the peer's FIN (a
    /// socket closed with unread bytes sends a reset, which can cost the
    /// peer the last frames we sent) or [`CLOSE_LINGER`].
    Lingering(TcpStream),
}

struct ConnSocket {
    socket: TcpStream,
    conn: ConnectionId,
    connecting: bool,
    /// Bytes the node took out of its queue but the socket did not take yet.
    out: Vec<u8>,
    /// Bytes read but not yet consumed by the node.
    inbuf: Vec<u8>,
    closing: bool,
    read_closed: bool,
    /// Reading stopped with `inbuf` full; mio is edge-triggered, so reading
    /// resumes from `step` once the node took some.
    stalled: bool,
}

/// A node whose sockets live on the caller's mio `Registry`.
pub struct MioNode {
    node: Node,
    clock: StdClock,
    first_token: usize,
    next_token: usize,
    sockets: HashMap<Token, Socket>,
    tokens: HashMap<ConnectionId, Token>,
    events: VecDeque<Event>,
    /// Connections with input the node has not taken yet.
    stalled: Vec<Token>,
    /// When each lingering socket is shut at the latest, oldest first.
    lingering: VecDeque<(Instant, Token)>,
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
            events: VecDeque::new(),
            stalled: Vec::new(),
            lingering: VecDeque::new(),
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

    /// The next node event, after [`step`](Self::step).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Handles one readiness event. Returns false if the token is not one
    /// of the node's (then it is yours).
    pub fn handle_event(&mut self, registry: &Registry, event: &MioEvent) -> bool {
        let token = event.token();
        if token.0 < self.first_token || !self.sockets.contains_key(&token) {
            return false;
        }
        let now = self.clock.now();
        match self.sockets.get_mut(&token) {
            Some(Socket::Listener(_)) => self.accept_all(registry, token, now),
            Some(Socket::Conn(c)) => {
                if c.connecting && (event.is_writable() || event.is_error()) {
                    let connected =
                        matches!(c.socket.take_error(), Ok(None)) && c.socket.peer_addr().is_ok();
                    let conn = c.conn;
                    if connected {
                        c.connecting = false;
                        let _ = c.socket.set_nodelay(true);
                        self.node.handle_connected(now, conn);
                    } else {
                        self.drop_socket(registry, token);
                        self.node
                            .handle_connect_failed(now, conn, TransportError::Refused);
                        return true;
                    }
                }
                if event.is_readable() || event.is_read_closed() {
                    self.read_all(token, now);
                }
                if event.is_writable() {
                    self.flush(registry, token, now);
                }
            }
            Some(Socket::Lingering(_)) => self.drain_lingering(registry, token),
            None => {}
        }
        true
    }

    /// Runs the node: timers, actions, writes; collects events. Returns how
    /// long the caller's `poll` may sleep (`None`: until a socket is ready).
    pub fn step(&mut self, registry: &Registry) -> io::Result<Option<Duration>> {
        let now = self.clock.now();
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        while let Some(&(at, token)) = self.lingering.front() {
            if at > now {
                break;
            }
            self.lingering.pop_front();
            if let Some(Socket::Lingering(s)) = self.sockets.get(&token) {
                let _ = s.shutdown(Shutdown::Both);
                self.drop_socket(registry, token);
            }
        }
        loop {
            let mut busy = false;
            while let Some(action) = self.node.poll_action() {
                busy = true;
                self.perform(registry, action, now)?;
            }
            while let Some(conn) = self.node.poll_wants_write() {
                busy = true;
                if let Some(&token) = self.tokens.get(&conn) {
                    self.flush(registry, token, now);
                }
            }
            // Input the node pushed back earlier may fit now.
            for token in std::mem::take(&mut self.stalled) {
                if let Some(Socket::Conn(c)) = self.sockets.get_mut(&token) {
                    c.stalled = false;
                }
                if self.feed(token, now) {
                    busy = true;
                    self.read_all(token, now);
                }
            }
            while let Some(event) = self.node.poll_event() {
                busy = true;
                self.events.push_back(event);
            }
            if !busy {
                break;
            }
        }
        let linger = self.lingering.front().map(|&(at, _)| at);
        let next = match (self.node.poll_timeout(), linger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(next.map(|t| t.saturating_duration_since(self.clock.now())))
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
                    Some(TcpTarget::Ip(sa)) => TcpListener::bind(sa),
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
                        self.node
                            .handle_listening(now, listener, tcp_multiaddr(local));
                    }
                    Err(_) => self.node.handle_listen_failed(now, listener),
                }
            }
            Action::Connect { conn, addr } => match tcp_target(&addr) {
                Some(TcpTarget::Ip(sa)) => match TcpStream::connect(sa) {
                    Ok(mut socket) => {
                        let token = self.fresh_token();
                        registry.register(
                            &mut socket,
                            token,
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        self.insert_conn(token, socket, conn, true);
                    }
                    Err(e) => self
                        .node
                        .handle_connect_failed(now, conn, transport_error(&e)),
                },
                _ => self
                    .node
                    .handle_connect_failed(now, conn, TransportError::Unsupported),
            },
            Action::Close { conn } => match self.tokens.get(&conn).copied() {
                Some(token) => {
                    let mut connecting = false;
                    if let Some(Socket::Conn(c)) = self.sockets.get_mut(&token) {
                        c.closing = true;
                        connecting = c.connecting;
                    }
                    if connecting {
                        // An attempt given up while connecting: nothing to flush.
                        self.drop_socket(registry, token);
                        self.node.handle_connection_closed(now, conn);
                    } else {
                        self.flush(registry, token, now);
                    }
                }
                None => self.node.handle_connection_closed(now, conn),
            },
            // Actions added later by the core.
            _ => {}
        }
        Ok(())
    }

    fn insert_conn(
        &mut self,
        token: Token,
        socket: TcpStream,
        conn: ConnectionId,
        connecting: bool,
    ) {
        self.tokens.insert(conn, token);
        let c = ConnSocket {
            socket,
            conn,
            connecting,
            out: Vec::new(),
            inbuf: Vec::new(),
            closing: false,
            read_closed: false,
            stalled: false,
        };
        self.sockets.insert(token, Socket::Conn(Box::new(c)));
    }

    fn accept_all(&mut self, registry: &Registry, token: Token, now: Instant) {
        loop {
            let Some(Socket::Listener(socket)) = self.sockets.get(&token) else {
                return;
            };
            let (mut stream, remote) = match socket.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            };
            let Ok(conn) = self.node.handle_inbound(now, tcp_multiaddr(remote)) else {
                continue; // over the limit: dropping the socket closes it
            };
            let _ = stream.set_nodelay(true);
            let t = self.fresh_token();
            if registry
                .register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                self.node.handle_connection_closed(now, conn);
                continue;
            }
            self.insert_conn(t, stream, conn, false);
        }
    }

    /// Reads until the socket would block, feeding the node.
    fn read_all(&mut self, token: Token, now: Instant) {
        loop {
            let Some(Socket::Conn(c)) = self.sockets.get_mut(&token) else {
                return;
            };
            if c.read_closed || c.inbuf.len() >= READ_BUF {
                return;
            }
            match c.socket.read(&mut self.scratch) {
                Ok(0) => {
                    c.read_closed = true;
                    let conn = c.conn;
                    self.feed(token, now);
                    self.node.handle_read_closed(now, conn);
                    return;
                }
                Ok(n) => {
                    c.inbuf.extend_from_slice(&self.scratch[..n]);
                    self.feed(token, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.read_closed = true;
                    let conn = c.conn;
                    self.node.handle_read_closed(now, conn);
                    return;
                }
            }
        }
    }

    /// Hands buffered input to the node; returns whether it took any.
    fn feed(&mut self, token: Token, now: Instant) -> bool {
        let Some(Socket::Conn(c)) = self.sockets.get_mut(&token) else {
            return false;
        };
        if c.inbuf.is_empty() {
            return false;
        }
        let used = self.node.handle_read(now, c.conn, &c.inbuf);
        c.inbuf.drain(..used);
        if !c.inbuf.is_empty() && !c.stalled {
            c.stalled = true;
            self.stalled.push(token);
        }
        used > 0
    }

    /// Writes what the node has for the connection until the socket is full;
    /// completes a requested close once everything is out.
    fn flush(&mut self, registry: &Registry, token: Token, now: Instant) {
        loop {
            let Some(Socket::Conn(c)) = self.sockets.get_mut(&token) else {
                return;
            };
            if c.connecting {
                return;
            }
            if c.out.is_empty()
                && self
                    .node
                    .poll_transmit(now, c.conn, &mut c.out, WRITE_CHUNK)
                    == 0
            {
                if c.closing {
                    let conn = c.conn;
                    self.linger(registry, token, now);
                    self.node.handle_connection_closed(now, conn);
                }
                return;
            }
            match c.socket.write(&c.out) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let conn = c.conn;
                    self.drop_socket(registry, token);
                    self.node.handle_connection_closed(now, conn);
                    return;
                }
            }
        }
    }

    /// Our side of the connection is done: FIN to the peer, then drain what
    /// it still sends (see [`Socket::Lingering`]).
    fn linger(&mut self, registry: &Registry, token: Token, now: Instant) {
        let Some(Socket::Conn(c)) = self.sockets.remove(&token) else {
            return;
        };
        self.tokens.remove(&c.conn);
        let mut socket = c.socket;
        let _ = socket.shutdown(Shutdown::Write);
        if c.read_closed {
            let _ = registry.deregister(&mut socket);
            return;
        }
        self.sockets.insert(token, Socket::Lingering(socket));
        self.lingering.push_back((now + CLOSE_LINGER, token));
        // Edge-triggered: what already arrived will not be announced again.
        self.drain_lingering(registry, token);
    }

    /// Reads and drops what a lingering socket has; ends it at end of file.
    fn drain_lingering(&mut self, registry: &Registry, token: Token) {
        loop {
            let Some(Socket::Lingering(s)) = self.sockets.get_mut(&token) else {
                return;
            };
            match s.read(&mut self.scratch) {
                Ok(1..) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => {
                    self.drop_socket(registry, token);
                    return;
                }
            }
        }
    }

    fn drop_socket(&mut self, registry: &Registry, token: Token) {
        match self.sockets.remove(&token) {
            Some(Socket::Conn(mut c)) => {
                let _ = registry.deregister(&mut c.socket);
                self.tokens.remove(&c.conn);
            }
            Some(Socket::Lingering(mut socket)) => {
                let _ = registry.deregister(&mut socket);
            }
            Some(Socket::Listener(mut socket)) => {
                let _ = registry.deregister(&mut socket);
            }
            None => {}
        }
    }
}

fn transport_error(e: &io::Error) -> TransportError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => TransportError::Refused,
        io::ErrorKind::Unsupported | io::ErrorKind::InvalidInput => TransportError::Unsupported,
        _ => TransportError::Unreachable,
    }
}
