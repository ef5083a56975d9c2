//! Streams on top of the yamux sessions: multistream-select per stream,
//! the built-in protocols (identify, identify push, ping) and the
//! application's streams.

use alloc::vec::Vec;

use bytes::Bytes;

use super::{
    ConnState, ConnectionId, Event, Node, OpenStreamError, Ping, PingError, PingFailure, PingId,
    StreamError, StreamHandle, StreamOpenFailure, TimerKey,
};
use crate::identity::PeerId;
use crate::multistream::{self, Negotiator, ProtocolName};
use crate::protocols::{identify, ping};
use crate::time::Instant;
use crate::varint::{self, FrameReader};
use crate::yamux::{self, ReadError, StreamId, WriteError};

/// Largest piece read from a stream while the node itself handles it.
const READ_CHUNK: usize = 16 * 1024;

/// A protocol the node runs itself on an outbound stream.
#[derive(Debug, Clone, Copy)]
pub(super) enum Builtin {
    IdentifyRequest,
    IdentifyPush,
    Ping(PingId),
}

/// Who handles a stream's bytes once its protocol is agreed.
#[derive(Debug)]
enum Kind {
    /// Inbound, protocol not known yet.
    Inbound,
    /// The application's.
    User,
    /// We asked for the peer's identify: read one message.
    IdentifyRequest(FrameReader),
    /// The peer pushes its identify: read one message.
    IdentifyPushIn(FrameReader),
    /// We push our identify: the framed message, written once agreed.
    IdentifyPushOut(Vec<u8>),
    /// We answered or pushed identify: wait for the peer's end.
    Drain,
    /// Our ping: the payload sent and the echo so far.
    PingOut {
        ping: PingId,
        payload: [u8; ping::PAYLOAD_LEN],
        echo: Vec<u8>,
        sent: Option<Instant>,
    },
    /// Echoing the peer's pings.
    PingServe { buf: Vec<u8> },
}

/// Node-side state of one yamux stream.
#[derive(Debug)]
pub(super) struct NodeStream {
    outbound: bool,
    /// multistream-select, until finished.
    neg: Option<Negotiator>,
    /// Bytes to write before anything else (negotiation, built-in messages).
    out: Vec<u8>,
    /// Close our side once `out` is written.
    close_after_out: bool,
    /// Bytes read past the negotiation, not yet handed on.
    pending: Bytes,
    pub(super) protocol: Option<ProtocolName>,
    kind: Kind,
    /// The application has been told about this stream.
    user_visible: bool,
}

impl NodeStream {
    fn new(outbound: bool, neg: Option<Negotiator>, kind: Kind) -> Self {
        NodeStream {
            outbound,
            neg,
            out: Vec::new(),
            close_after_out: false,
            pending: Bytes::new(),
            protocol: None,
            kind,
            user_visible: false,
        }
    }

    fn negotiating(&self) -> bool {
        self.neg.as_ref().is_some_and(|n| !n.is_finished())
    }
}

/// What [`Node::pump`] found out that needs the node (events, cleanup).
enum Outcome {
    /// No progress possible now.
    Nothing,
    /// Progress made; call again.
    Progress,
    Identified(alloc::boxed::Box<identify::Info>),
    PingDone {
        ping: PingId,
        result: Result<core::time::Duration, PingFailure>,
    },
    Failed,
}

impl Node {
    // ------------------------------------------------------------ commands

    /// Opens a stream to `peer` proposing `protocols` in order, on the best
    /// connection. [`Event::StreamOpened`] or [`Event::StreamOpenFailed`]
    /// follows. With a single protocol that the peer listed in identify, the
    /// stream negotiates lazily (like go-libp2p): `StreamOpened` comes at
    /// once and data may be written right behind the proposal.
    pub fn open_stream<I, P>(
        &mut self,
        now: Instant,
        peer: PeerId,
        protocols: I,
    ) -> Result<StreamHandle, OpenStreamError>
    where
        I: IntoIterator<Item = P>,
        P: Into<ProtocolName>,
    {
        self.tick(now);
        let protocols: Vec<ProtocolName> = protocols.into_iter().map(Into::into).collect();
        let conn = self
            .best_connection(&peer)
            .ok_or(OpenStreamError::NotConnected)?;
        let lazy = protocols.len() == 1
            && self
                .peer_protocols
                .get(&peer)
                .is_some_and(|list| list.iter().any(|p| *p == protocols[0]));
        let config = if lazy {
            multistream::Config::lazy()
        } else {
            multistream::Config::default()
        };
        let neg = Negotiator::dialer_with(protocols, config)
            .map_err(|_| OpenStreamError::InvalidProtocols)?;
        self.open_outbound(conn, neg, Kind::User)
    }

    /// Pings `peer` on a new stream; [`Event::PingSuccess`] with the round
    /// trip time or [`Event::PingFailed`] follows.
    pub fn ping(&mut self, now: Instant, peer: PeerId) -> Result<PingId, PingError> {
        let now = self.tick(now);
        let conn = self.best_connection(&peer).ok_or(PingError::NotConnected)?;
        let ping = PingId(self.fresh_id());
        match self.open_builtin_checked(conn, Builtin::Ping(ping)) {
            Ok(stream) => {
                let deadline = now + self.config.ping_timeout;
                self.pings.insert(
                    ping,
                    Ping {
                        peer,
                        stream,
                        deadline,
                    },
                );
                self.timers.insert((deadline, TimerKey::Ping(ping)));
                self.pump(stream);
                Ok(ping)
            }
            Err(OpenStreamError::Yamux(e)) => Err(PingError::Yamux(e)),
            Err(_) => Err(PingError::NotConnected),
        }
    }

    /// Reads from a stream into `buf`. `Ok(0)` is the end of the stream.
    pub fn stream_read(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        buf: &mut [u8],
    ) -> Result<usize, StreamError> {
        self.tick(now);
        let (_, st) = self.stream_parts(stream)?;
        if !matches!(st.kind, Kind::User) {
            return Err(StreamError::NotOpen);
        }
        if st.negotiating() && st.pending.is_empty() {
            // A lazy stream still waiting for the echo: the node reads it first.
            self.pump(stream);
            let (_, st) = self.stream_parts(stream)?;
            if st.negotiating() {
                return Err(StreamError::WouldBlock);
            }
        }
        let (session, st) = self.stream_parts(stream)?;
        if !st.pending.is_empty() {
            let n = st.pending.len().min(buf.len());
            buf[..n].copy_from_slice(&st.pending[..n]);
            let _ = st.pending.split_to(n);
            return Ok(n);
        }
        let sid = yamux_id(stream);
        let result = session.read(sid, buf);
        let out = match result {
            Ok(n) => Ok(n),
            Err(ReadError::Blocked) => Err(StreamError::WouldBlock),
            Err(ReadError::Reset { .. }) => Err(StreamError::Reset),
            Err(_) => Err(StreamError::UnknownStream),
        };
        self.after_session_command(stream.conn);
        out
    }

    /// Writes to a stream; returns how much was taken (fewer bytes, or
    /// [`StreamError::WouldBlock`], when the send buffer is full; an
    /// [`Event::StreamWritable`] follows).
    pub fn stream_write(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        data: &[u8],
    ) -> Result<usize, StreamError> {
        self.tick(now);
        let (_, st) = self.stream_parts(stream)?;
        if !matches!(st.kind, Kind::User) || !st.user_visible {
            return Err(StreamError::NotOpen);
        }
        if !st.out.is_empty() {
            // Negotiation bytes go first.
            self.pump(stream);
            if !self.stream_parts(stream)?.1.out.is_empty() {
                return Err(StreamError::WouldBlock);
            }
        }
        let (session, _) = self.stream_parts(stream)?;
        let result = session.write(yamux_id(stream), data);
        let out = match result {
            Ok(n) => Ok(n),
            Err(WriteError::Blocked) => Err(StreamError::WouldBlock),
            Err(WriteError::Closed) => Err(StreamError::Closed),
            Err(WriteError::Reset { .. }) => Err(StreamError::Reset),
            Err(_) => Err(StreamError::UnknownStream),
        };
        self.after_session_command(stream.conn);
        out
    }

    /// Closes our sending side (FIN); reading goes on until the peer closes.
    pub fn stream_close(&mut self, now: Instant, stream: StreamHandle) -> Result<(), StreamError> {
        self.tick(now);
        let (session, st) = self.stream_parts(stream)?;
        // A lazy stream holds its FIN until the peer confirmed the protocol:
        // js-libp2p misses a close that arrives, with the proposal and the
        // data, before its protocol handler runs, and never finishes the
        // stream. Sending it after the echo costs nothing on the wire.
        if !st.out.is_empty() || st.negotiating() {
            st.close_after_out = true;
        } else {
            session
                .close(yamux_id(stream))
                .map_err(|_| StreamError::UnknownStream)?;
        }
        self.after_session_command(stream.conn);
        Ok(())
    }

    /// Hands a stream back to the node: our side is closed (after what was
    /// written), anything the peer still sends is discarded, and the stream
    /// is freed once the peer closes too. For handles dropped without reading
    /// to the end.
    pub fn stream_detach(&mut self, now: Instant, stream: StreamHandle) {
        self.tick(now);
        let Ok((session, st)) = self.stream_parts(stream) else {
            return;
        };
        st.kind = Kind::Drain;
        st.user_visible = false;
        st.pending = Bytes::new();
        if st.out.is_empty() {
            let _ = session.close(yamux_id(stream));
        } else {
            st.close_after_out = true;
        }
        self.pump(stream);
        self.after_session_command(stream.conn);
    }

    /// Resets a stream (RST); it is gone at once.
    pub fn stream_reset(&mut self, now: Instant, stream: StreamHandle) {
        self.tick(now);
        self.reset_stream(stream);
    }

    // ------------------------------------------------------------ internals

    fn stream_parts(
        &mut self,
        stream: StreamHandle,
    ) -> Result<(&mut yamux::Session, &mut NodeStream), StreamError> {
        let c = self
            .conns
            .get_mut(&stream.conn)
            .ok_or(StreamError::UnknownStream)?;
        let ConnState::Muxed(session) = &mut c.state else {
            return Err(StreamError::UnknownStream);
        };
        let st = c
            .streams
            .get_mut(&stream.id)
            .ok_or(StreamError::UnknownStream)?;
        Ok((session, st))
    }

    fn after_session_command(&mut self, conn: ConnectionId) {
        self.process_session(conn);
        self.flag_write(conn);
        self.reschedule(conn);
    }

    pub(super) fn reset_stream(&mut self, stream: StreamHandle) {
        let Some(c) = self.conns.get_mut(&stream.conn) else {
            return;
        };
        let Some(st) = c.streams.remove(&stream.id) else {
            return;
        };
        if let ConnState::Muxed(session) = &mut c.state {
            let _ = session.reset(yamux_id(stream));
        }
        if !st.outbound && st.negotiating() {
            c.negotiating_inbound = c.negotiating_inbound.saturating_sub(1);
        }
        if let Kind::PingOut { ping, .. } = st.kind {
            if let Some(p) = self.pings.remove(&ping) {
                self.timers.remove(&(p.deadline, TimerKey::Ping(ping)));
            }
        }
        self.after_session_command(stream.conn);
    }

    /// Resets a stream the node gave up on and tells whoever waits on it
    /// (a pending open, a ping, a reader), unlike a reset the application
    /// asked for.
    fn fail_stream(&mut self, stream: StreamHandle) {
        let Some(c) = self.conns.get_mut(&stream.conn) else {
            return;
        };
        let Some(st) = c.streams.remove(&stream.id) else {
            return;
        };
        if let ConnState::Muxed(session) = &mut c.state {
            let _ = session.reset(yamux_id(stream));
        }
        if !st.outbound && st.negotiating() {
            c.negotiating_inbound = c.negotiating_inbound.saturating_sub(1);
        }
        self.stream_gone(stream, st);
        self.after_session_command(stream.conn);
    }

    pub(super) fn open_builtin(&mut self, conn: ConnectionId, builtin: Builtin) {
        if let Ok(stream) = self.open_builtin_checked(conn, builtin) {
            self.pump(stream);
        }
    }

    fn open_builtin_checked(
        &mut self,
        conn: ConnectionId,
        builtin: Builtin,
    ) -> Result<StreamHandle, OpenStreamError> {
        let peer = self.conns.get(&conn).and_then(|c| c.peer);
        let (name, kind) = match builtin {
            Builtin::IdentifyRequest => (
                identify::PROTOCOL,
                Kind::IdentifyRequest(FrameReader::default()),
            ),
            Builtin::IdentifyPush => (
                identify::PUSH_PROTOCOL,
                Kind::IdentifyPushOut(framed(&identify::encode(&self.identify_info(conn)))),
            ),
            Builtin::Ping(ping) => (
                ping::PROTOCOL,
                Kind::PingOut {
                    ping,
                    payload: self.random_payload(),
                    echo: Vec::new(),
                    sent: None,
                },
            ),
        };
        let lazy = peer
            .and_then(|p| self.peer_protocols.get(&p))
            .is_some_and(|list| list.iter().any(|p| p == name));
        let config = if lazy {
            multistream::Config::lazy()
        } else {
            multistream::Config::default()
        };
        let neg = Negotiator::dialer_with([name], config).expect("built-in names are valid");
        self.open_outbound(conn, neg, kind)
    }

    fn open_outbound(
        &mut self,
        conn: ConnectionId,
        mut neg: Negotiator,
        kind: Kind,
    ) -> Result<StreamHandle, OpenStreamError> {
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or(OpenStreamError::NotConnected)?;
        let ConnState::Muxed(session) = &mut c.state else {
            return Err(OpenStreamError::NotConnected);
        };
        let sid = session.open_stream()?;
        let mut st = NodeStream::new(true, None, kind);
        let _ = neg.poll_transmit(&mut st.out);
        st.neg = Some(neg);
        c.streams.insert(sid.get(), st);
        let stream = StreamHandle {
            conn,
            id: sid.get(),
        };
        self.handle_negotiation_events(stream);
        self.pump(stream);
        self.after_session_command(conn);
        Ok(stream)
    }

    /// Bytes read on a muxed connection.
    pub(super) fn session_read(&mut self, now: Instant, conn: ConnectionId, data: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return data.len();
            };
            let ConnState::Muxed(session) = &mut c.state else {
                return data.len();
            };
            let n = session.handle_read(now, &data[used..]);
            used += n;
            self.process_session(conn);
            // The session stops consuming when a bounded queue is full or a
            // stream's buffer is; handling its events may make room (a read
            // by the node), so try once more before pushing back.
            if used == data.len() || n == 0 {
                return used;
            }
        }
    }

    /// Bytes read from a muxed connection, through its channel: clear bytes
    /// go straight to the session; noise frames are decrypted a bounded
    /// amount at a time, and no more raw input is taken while the session
    /// still refuses decrypted bytes (they are offered again after each
    /// `poll_transmit`). Returns how many raw bytes were consumed.
    pub(super) fn channel_read(&mut self, now: Instant, conn: ConnectionId, data: &[u8]) -> usize {
        /// Decrypted bytes held for the session at most, per connection.
        const MAX_PENDING: usize = 64 * 1024;
        let mut used = 0;
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return data.len();
            };
            if !matches!(c.state, ConnState::Muxed(_)) {
                return data.len();
            }
            let super::upgrade::Channel::Noise { pending, .. } = &mut c.channel else {
                return self.session_read(now, conn, data);
            };
            let plain = core::mem::take(pending);
            let n = if plain.is_empty() {
                0
            } else {
                self.session_read(now, conn, &plain)
            };
            let Some(c) = self.conns.get_mut(&conn) else {
                return data.len();
            };
            let super::upgrade::Channel::Noise { transport, pending } = &mut c.channel else {
                return data.len();
            };
            if n < plain.len() {
                // The session pushes back: keep the rest, take no more input.
                *pending = plain;
                pending.drain(..n);
                return used;
            }
            *pending = plain;
            pending.clear();
            if used == data.len() {
                return used;
            }
            match transport.decrypt_up_to(&data[used..], pending, MAX_PENDING) {
                Ok(k) => used += k,
                Err(_) => {
                    // The peer's frames no longer authenticate: tell it (our
                    // sending side still works) and close.
                    pending.clear();
                    if let ConnState::Muxed(session) = &mut c.state {
                        let _ = session.go_away(yamux::GoAwayCode::PROTOCOL_ERROR);
                    }
                    self.shut(conn, super::CloseReason::Decrypt);
                    return data.len();
                }
            }
        }
    }

    /// Drains the session's events and dispatches them.
    pub(super) fn process_session(&mut self, conn: ConnectionId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let ConnState::Muxed(session) = &mut c.state else {
                return;
            };
            let Some(event) = session.poll_event() else {
                return;
            };
            match event {
                yamux::Event::InboundStream { id } => {
                    if c.negotiating_inbound >= self.config.max_negotiating_inbound_streams {
                        let _ = session.reject(id);
                        continue;
                    }
                    if session.accept(id).is_err() {
                        continue;
                    }
                    // Registered names are checked by `register_protocol`;
                    // should one still be refused, the stream is.
                    let Ok(neg) = Negotiator::listener(self.inbound_protocols()) else {
                        if let Some(ConnState::Muxed(session)) =
                            self.conns.get_mut(&conn).map(|c| &mut c.state)
                        {
                            let _ = session.reset(id);
                        }
                        continue;
                    };
                    let Some(c) = self.conns.get_mut(&conn) else {
                        return;
                    };
                    let mut st = NodeStream::new(false, Some(neg), Kind::Inbound);
                    if let Some(n) = &mut st.neg {
                        let _ = n.poll_transmit(&mut st.out);
                    }
                    c.streams.insert(id.get(), st);
                    c.negotiating_inbound += 1;
                    self.pump(StreamHandle { conn, id: id.get() });
                }
                yamux::Event::StreamReadable { id } | yamux::Event::StreamWritable { id } => {
                    let readable = matches!(event, yamux::Event::StreamReadable { .. });
                    let stream = StreamHandle { conn, id: id.get() };
                    let user_open = c.streams.get(&id.get()).is_some_and(|st| {
                        matches!(st.kind, Kind::User)
                            && st.user_visible
                            && st.out.is_empty()
                            && !st.negotiating()
                    });
                    if user_open {
                        self.events.push_back(if readable {
                            Event::StreamReadable { stream }
                        } else {
                            Event::StreamWritable { stream }
                        });
                    } else {
                        self.pump(stream);
                    }
                }
                yamux::Event::StreamReset { id, .. } => {
                    if let Some(st) = c.streams.remove(&id.get()) {
                        if !st.outbound && st.negotiating() {
                            c.negotiating_inbound = c.negotiating_inbound.saturating_sub(1);
                        }
                        self.stream_gone(StreamHandle { conn, id: id.get() }, st);
                    }
                }
                yamux::Event::StreamClosed { id } => {
                    if let Some(st) = c.streams.remove(&id.get()) {
                        let stream = StreamHandle { conn, id: id.get() };
                        if matches!(st.kind, Kind::User) && st.user_visible {
                            self.events.push_back(Event::StreamClosed { stream });
                        } else {
                            self.stream_gone(stream, st);
                        }
                    }
                }
                yamux::Event::StreamsAvailable => {
                    if let Some(peer) = c.peer {
                        self.events
                            .push_back(Event::StreamsAvailable { conn, peer });
                    }
                }
                yamux::Event::Closed { error } => {
                    let reason = Node::session_close_reason(session, error);
                    self.shut(conn, reason);
                }
                _ => {}
            }
        }
    }

    /// A stream vanished without a clean close: tell whoever cared.
    pub(super) fn stream_gone(&mut self, stream: StreamHandle, st: NodeStream) {
        match st.kind {
            Kind::User if st.user_visible => self.events.push_back(Event::StreamReset { stream }),
            Kind::User if st.outbound => self.events.push_back(Event::StreamOpenFailed {
                stream,
                error: StreamOpenFailure::Reset,
            }),
            Kind::PingOut { ping, .. } => {
                if let Some(p) = self.pings.remove(&ping) {
                    self.timers.remove(&(p.deadline, TimerKey::Ping(ping)));
                    self.events.push_back(Event::PingFailed {
                        ping,
                        peer: p.peer,
                        error: PingFailure::Stream,
                    });
                }
            }
            _ => {}
        }
    }

    /// Handles what the stream's negotiator reported.
    fn handle_negotiation_events(&mut self, stream: StreamHandle) {
        loop {
            let Some(c) = self.conns.get_mut(&stream.conn) else {
                return;
            };
            let peer = c.peer;
            let Some(st) = c.streams.get_mut(&stream.id) else {
                return;
            };
            let Some(neg) = st.neg.as_mut() else { return };
            let _ = neg.poll_transmit(&mut st.out);
            let Some(event) = neg.poll_event() else {
                if neg.is_finished() {
                    st.neg = None;
                    if matches!(st.kind, Kind::User) && st.user_visible {
                        // A lazy stream got its confirmation (maybe with data
                        // behind it): whoever waits to read may go on, and a
                        // writer whose StreamWritable came while negotiating
                        // (and went to `pump`) must retry.
                        self.events.push_back(Event::StreamReadable { stream });
                        self.events.push_back(Event::StreamWritable { stream });
                    }
                }
                return;
            };
            match event {
                multistream::Event::Negotiated { protocol } => {
                    st.protocol = Some(protocol.clone());
                    if !st.outbound {
                        c.negotiating_inbound = c.negotiating_inbound.saturating_sub(1);
                        st.kind = match &*protocol {
                            identify::PROTOCOL => {
                                st.close_after_out = true;
                                Kind::Drain
                            }
                            identify::PUSH_PROTOCOL => Kind::IdentifyPushIn(FrameReader::default()),
                            ping::PROTOCOL => Kind::PingServe { buf: Vec::new() },
                            _ => Kind::User,
                        };
                        match st.kind {
                            Kind::User => {
                                st.user_visible = true;
                                let peer = peer.expect("muxed connections have a peer");
                                self.events.push_back(Event::InboundStream {
                                    stream,
                                    peer,
                                    protocol,
                                });
                                self.events.push_back(Event::StreamReadable { stream });
                            }
                            Kind::Drain => {
                                let body = identify::encode(&self.identify_info(stream.conn));
                                if let Ok((_, st)) = self.stream_parts(stream) {
                                    st.out.extend_from_slice(&framed(&body));
                                }
                            }
                            _ => {}
                        }
                    } else {
                        match &mut st.kind {
                            Kind::User => {
                                st.user_visible = true;
                                self.events
                                    .push_back(Event::StreamOpened { stream, protocol });
                            }
                            Kind::PingOut { payload, sent, .. } => {
                                st.out.extend_from_slice(payload);
                                *sent = Some(self.now);
                            }
                            Kind::IdentifyPushOut(msg) => {
                                // Behind the proposal (lazy) or the echo.
                                st.out.extend_from_slice(msg);
                                st.kind = Kind::Drain;
                                st.close_after_out = true;
                            }
                            Kind::IdentifyRequest(_) => st.close_after_out = true,
                            _ => {}
                        }
                    }
                }
                multistream::Event::Failed(error) => {
                    let st = c.streams.remove(&stream.id).expect("present");
                    if !st.outbound {
                        c.negotiating_inbound = c.negotiating_inbound.saturating_sub(1);
                    }
                    if let ConnState::Muxed(session) = &mut c.state {
                        let _ = session.reset(yamux_id(stream));
                    }
                    match st.kind {
                        Kind::User => self.events.push_back(Event::StreamOpenFailed {
                            stream,
                            error: StreamOpenFailure::Negotiation(error),
                        }),
                        other => {
                            let st = NodeStream { kind: other, ..st };
                            self.stream_gone(stream, st);
                        }
                    }
                    return;
                }
                _ => {}
            }
        }
    }

    /// Drives a stream the node is handling itself (negotiation, built-ins):
    /// writes what is queued, reads what is there.
    pub(super) fn pump(&mut self, stream: StreamHandle) {
        let mut guard = 0;
        loop {
            guard += 1;
            if guard > 1024 {
                // Bounded work per call; the session's next event resumes it.
                return;
            }
            let outcome = self.pump_once(stream);
            match outcome {
                Ok(Outcome::Nothing) => return,
                Ok(Outcome::Progress) => {}
                Ok(Outcome::Identified(info)) => self.on_identified(stream.conn, info),
                Ok(Outcome::PingDone { ping, result }) => {
                    if let Some(p) = self.pings.remove(&ping) {
                        self.timers.remove(&(p.deadline, TimerKey::Ping(ping)));
                        self.events.push_back(match result {
                            Ok(rtt) => Event::PingSuccess {
                                ping,
                                peer: p.peer,
                                rtt,
                            },
                            Err(error) => Event::PingFailed {
                                ping,
                                peer: p.peer,
                                error,
                            },
                        });
                    }
                }
                Ok(Outcome::Failed) | Err(()) => {
                    self.fail_stream(stream);
                    return;
                }
            }
            self.handle_negotiation_events(stream);
        }
    }

    /// One step of [`Self::pump`]: `Ok(Nothing)` when no progress is possible.
    fn pump_once(&mut self, stream: StreamHandle) -> Result<Outcome, ()> {
        let now = self.now;
        let c = self.conns.get_mut(&stream.conn).ok_or(())?;
        let ConnState::Muxed(session) = &mut c.state else {
            return Err(());
        };
        let sid = yamux_id(stream);
        let st = c.streams.get_mut(&stream.id).ok_or(())?;

        // 1. Whatever is queued goes first.
        if !st.out.is_empty() {
            match session.write(sid, &st.out) {
                Ok(n) => {
                    st.out.drain(..n);
                }
                Err(WriteError::Blocked) => {}
                Err(_) => return Err(()),
            }
        }
        if st.out.is_empty() && st.close_after_out && !st.negotiating() {
            st.close_after_out = false;
            let _ = session.close(sid);
        }
        let mut progressed = false;

        // 2. Negotiation reads through the negotiator. A listener answers
        // each proposal (`na` or the echo); while an answer is still unsent
        // it reads no further, so a dialer proposing without reading cannot
        // grow our queue.
        if st.negotiating() && !st.outbound && !st.out.is_empty() {
            return Ok(Outcome::Nothing);
        }
        if st.negotiating() {
            let neg = st.neg.as_mut().expect("negotiating");
            match session.read_chunk(sid, READ_CHUNK) {
                Ok(Some(chunk)) => {
                    let n = neg.handle_read(&chunk);
                    if n < chunk.len() {
                        st.pending = chunk.slice(n..);
                    }
                    progressed = true;
                }
                Ok(None) => {
                    neg.handle_eof();
                    progressed = true;
                }
                // A reset comes as the session's StreamReset event, which
                // tells whoever waits on the stream (stream_gone).
                Err(ReadError::Blocked | ReadError::Reset { .. }) => {}
                Err(_) => return Err(()),
            }
            return Ok(if progressed {
                self.after_pump_progress(stream)
            } else {
                Outcome::Nothing
            });
        }

        // 3. A built-in protocol reads its bytes (pending first).
        let chunk = if !st.pending.is_empty() {
            Some(core::mem::take(&mut st.pending))
        } else {
            match &st.kind {
                Kind::User | Kind::Inbound => return Ok(Outcome::Nothing),
                // Echoes the peer has not taken yet: read no more pings until
                // they are out, so a peer that pings without reading runs into
                // its own flow-control window instead of our memory.
                Kind::PingServe { .. } if !st.out.is_empty() => return Ok(Outcome::Nothing),
                _ => match session.read_chunk(sid, READ_CHUNK) {
                    Ok(Some(chunk)) => Some(chunk),
                    Ok(None) => None,
                    Err(ReadError::Blocked) => return Ok(Outcome::Nothing),
                    Err(_) => return Err(()),
                },
            }
        };
        if matches!(st.kind, Kind::User | Kind::Inbound) {
            // Pending bytes of a user stream stay for the application.
            if let Some(chunk) = chunk {
                st.pending = chunk;
            }
            return Ok(Outcome::Nothing);
        }
        let Some(chunk) = chunk else {
            // End of the peer's side.
            return match &mut st.kind {
                Kind::PingServe { .. } | Kind::Drain | Kind::IdentifyPushOut(_) => {
                    let _ = session.close(sid);
                    Ok(Outcome::Nothing)
                }
                Kind::PingOut { ping, .. } => Ok(Outcome::PingDone {
                    ping: *ping,
                    result: Err(PingFailure::Stream),
                }),
                Kind::IdentifyRequest(_) | Kind::IdentifyPushIn(_) => Ok(Outcome::Failed),
                Kind::User | Kind::Inbound => Ok(Outcome::Nothing),
            };
        };
        match &mut st.kind {
            Kind::IdentifyRequest(reader) | Kind::IdentifyPushIn(reader) => {
                match reader.feed(&chunk, identify::MAX_READ_LEN) {
                    Ok((n, true)) => {
                        let result = identify::decode(reader.body());
                        st.kind = Kind::Drain;
                        if n < chunk.len() {
                            st.pending = chunk.slice(n..);
                        }
                        match result {
                            Ok(info) => Ok(Outcome::Identified(alloc::boxed::Box::new(info))),
                            Err(_) => Ok(Outcome::Failed),
                        }
                    }
                    // Incomplete: keep reading, more may be buffered.
                    Ok((_, false)) => Ok(Outcome::Progress),
                    Err(_) => Ok(Outcome::Failed),
                }
            }
            Kind::PingServe { buf } => {
                buf.extend_from_slice(&chunk);
                let whole = buf.len() / ping::PAYLOAD_LEN * ping::PAYLOAD_LEN;
                st.out.extend(buf.drain(..whole));
                Ok(Outcome::Progress)
            }
            Kind::PingOut {
                ping,
                payload,
                echo,
                sent,
            } => {
                let want = ping::PAYLOAD_LEN - echo.len();
                echo.extend_from_slice(&chunk[..want.min(chunk.len())]);
                if echo.len() < ping::PAYLOAD_LEN {
                    return Ok(Outcome::Progress);
                }
                let ping = *ping;
                let result = if echo[..] == payload[..] {
                    Ok(now.saturating_duration_since(sent.unwrap_or(now)))
                } else {
                    Err(PingFailure::WrongEcho)
                };
                st.kind = Kind::Drain;
                st.close_after_out = true;
                Ok(Outcome::PingDone { ping, result })
            }
            Kind::Drain | Kind::IdentifyPushOut(_) => Ok(Outcome::Progress),
            Kind::User | Kind::Inbound => Ok(Outcome::Nothing),
        }
    }

    fn after_pump_progress(&mut self, stream: StreamHandle) -> Outcome {
        self.handle_negotiation_events(stream);
        // A user stream whose negotiation just finished keeps its leftover in
        // `pending` for the application; everything else pumps on.
        Outcome::Progress
    }

    pub(super) fn on_identified(
        &mut self,
        conn: ConnectionId,
        info: alloc::boxed::Box<identify::Info>,
    ) {
        let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer) else {
            return;
        };
        if info.public_key.to_peer_id() != peer {
            // A peer describing someone else's key: ignore the message.
            return;
        }
        self.peer_protocols.insert(peer, info.protocols.clone());
        self.events
            .push_back(Event::Identified { peer, conn, info });
    }
}

fn yamux_id(stream: StreamHandle) -> StreamId {
    StreamId::new(stream.id).expect("stream ids are never zero")
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 3);
    varint::push_frame(body, &mut out);
    out
}
