//! Streams on top of the yamux sessions: multistream-select per stream,
//! the dispatch to the built-in protocols ([`super::builtin`]) and the
//! application's streams.

use alloc::boxed::Box;
use alloc::vec::Vec;

use bytes::Bytes;
use rand_core::Rng as _;

use super::builtin::{self, Machine, Report, Step};
use super::{
    ConnState, ConnectionId, Event, Node, OpenStreamError, Ping, PingError, PingFailure, PingId,
    StreamError, StreamHandle, StreamOpenFailure, TimerKey,
};
use crate::identity::PeerId;
use crate::multistream::{self, Negotiator, ProtocolName};
use crate::protocols::identify;
use crate::time::Instant;
use crate::yamux::{self, ReadError, StreamId, WriteError};

pub(super) use builtin::Builtin;

/// Largest piece read from a stream while the node itself handles it.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// Who handles a stream's bytes once its protocol is agreed.
#[derive(Debug)]
pub(super) enum Kind {
    /// Inbound, protocol not known yet.
    Inbound,
    /// The application's.
    User,
    /// A protocol the node runs itself.
    Builtin(Box<dyn Machine>),
    /// A relay exchange, a relayed connection's carrier, or one half of a
    /// circuit our relay runs (see [`super::relay`]).
    Relay(Box<super::relay::RelayStream>),
    /// Done with (a finished built-in, a detached stream): what the peer
    /// sends is discarded, and our side closes when the peer's does.
    Drain,
}

/// Node-side state of one yamux stream.
#[derive(Debug)]
pub(super) struct NodeStream {
    outbound: bool,
    /// multistream-select, until finished (boxed: 200 bytes that every
    /// idle stream would otherwise keep in the connection's table).
    neg: Option<Box<Negotiator>>,
    /// Bytes to write before anything else (negotiation, built-in messages).
    pub(super) out: Vec<u8>,
    /// Close our side once `out` is written.
    pub(super) close_after_out: bool,
    /// Bytes read past the negotiation, not yet handed on.
    pub(super) pending: Bytes,
    pub(super) protocol: Option<ProtocolName>,
    pub(super) kind: Kind,
    /// The application has been told about this stream.
    user_visible: bool,
}

impl NodeStream {
    fn new(outbound: bool, neg: Option<Negotiator>, kind: Kind) -> Self {
        NodeStream {
            outbound,
            neg: neg.map(Box::new),
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
pub(super) enum Outcome {
    /// No progress possible now.
    Nothing,
    /// Progress made; call again.
    Progress,
    /// A built-in has news for the node.
    Report(Report),
    Failed,
}

impl NodeStream {
    /// Closes our side if that was asked for and all before it is written.
    fn close_when_written(&mut self, session: &mut yamux::Session, sid: StreamId) {
        if self.out.is_empty() && self.close_after_out && !self.negotiating() {
            self.close_after_out = false;
            let _ = session.close(sid);
        }
    }

    /// Carries out what a built-in asked for.
    fn apply(&mut self, step: Step) -> Outcome {
        match step {
            Step::Continue => Outcome::Progress,
            Step::Close => {
                self.close_after_out = true;
                Outcome::Progress
            }
            Step::Done { report, close } => {
                self.kind = Kind::Drain;
                self.close_after_out |= close;
                report.map_or(Outcome::Progress, Outcome::Report)
            }
            Step::Report(report) => Outcome::Report(report),
            Step::Failed => Outcome::Failed,
        }
    }

    /// Lets a built-in that makes its bytes as the stream drains (perf)
    /// refill `out` each time the session took all of it, until the session
    /// pushes back (its `StreamWritable` resumes the pump) or the machine
    /// has nothing more. The session's bounded send buffer bounds the loop.
    /// `None`: nothing happened.
    fn fill(
        &mut self,
        now: Instant,
        session: &mut yamux::Session,
        sid: StreamId,
    ) -> Result<Option<Outcome>, ()> {
        let mut wrote = false;
        while self.out.is_empty() {
            let Kind::Builtin(machine) = &mut self.kind else {
                break;
            };
            let step = machine.on_writable(now, &mut self.out);
            let produced = !self.out.is_empty();
            if produced {
                match session.write(sid, &self.out) {
                    Ok(n) => {
                        self.out.drain(..n);
                        wrote = true;
                    }
                    Err(WriteError::Blocked) => {}
                    Err(_) => return Err(()),
                }
            }
            match step {
                Step::Continue if produced => {}
                Step::Continue => break,
                step => return Ok(Some(self.apply(step))),
            }
        }
        Ok(wrote.then_some(Outcome::Progress))
    }
}

/// Where a user read takes its bytes from.
enum ReadFrom<'a> {
    /// Bytes that arrived with the negotiation.
    Leftover(&'a mut Bytes),
    /// The stream's session.
    Session(&'a mut yamux::Session, StreamId),
}

/// The node as a built-in sees it when it starts on a connection.
struct OnConn<'a> {
    node: &'a mut Node,
    conn: ConnectionId,
}

impl builtin::Local for OnConn<'_> {
    fn identify_info(&self) -> identify::Info {
        self.node.identify_info(self.conn)
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        self.node.rng.fill_bytes(buf);
    }
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
        if self.is_limited(conn) && !protocols.iter().all(|p| self.limited_protocols.contains(p)) {
            return Err(OpenStreamError::Limited);
        }
        let neg = Negotiator::dialer_with(protocols, config)
            .map_err(|_| OpenStreamError::InvalidProtocols)?;
        self.open_outbound(conn, neg, Kind::User)
    }

    /// Pings `peer`; [`Event::PingSuccess`] with the round trip time or
    /// [`Event::PingFailed`] follows. Every ping on a connection goes over
    /// one outbound stream, opened by the first and kept open (the spec
    /// allows one per peer); pings asked for while one is in flight wait
    /// their turn on it, each timed from when its payload goes out. A ping
    /// that times out resets the stream (a late echo would pass for the next
    /// ping's): the pings queued behind it fail with [`PingFailure::Stream`]
    /// and the next ping opens a new stream.
    pub fn ping(&mut self, now: Instant, peer: PeerId) -> Result<PingId, PingError> {
        let now = self.tick(now);
        let conn = self.best_connection(&peer).ok_or(PingError::NotConnected)?;
        let ping = PingId(self.fresh_id());
        let stream = match self.queue_on_ping_stream(now, conn, ping) {
            Some(stream) => stream,
            None => match self.open_builtin_checked(conn, Builtin::Ping(ping)) {
                Ok(stream) => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.ping_stream = Some(stream.id);
                    }
                    stream
                }
                Err(OpenStreamError::Yamux(e)) => return Err(PingError::Yamux(e)),
                Err(_) => return Err(PingError::NotConnected),
            },
        };
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
        self.after_session_command(conn);
        Ok(ping)
    }

    /// Hands `ping` to the connection's open ping stream, if it has one
    /// still running.
    fn queue_on_ping_stream(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        ping: PingId,
    ) -> Option<StreamHandle> {
        let id = self.conns.get(&conn)?.ping_stream?;
        let mut payload = [0; crate::protocols::ping::PAYLOAD_LEN];
        self.rng.fill_bytes(&mut payload);
        let c = self.conns.get_mut(&conn)?;
        let st = c.streams.get_mut(&id);
        let taken = match st {
            Some(st) => match &mut st.kind {
                Kind::Builtin(machine) => machine.queue_ping(now, ping, payload, &mut st.out),
                _ => false,
            },
            None => false,
        };
        if !taken {
            c.ping_stream = None;
            return None;
        }
        Some(StreamHandle { conn, id })
    }

    /// Reads from a stream into `buf`. `Ok(0)` is the end of the stream.
    pub fn stream_read(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        buf: &mut [u8],
    ) -> Result<usize, StreamError> {
        self.user_read(now, stream, |from| match from {
            ReadFrom::Leftover(pending) => {
                let n = pending.len().min(buf.len());
                buf[..n].copy_from_slice(&pending.split_to(n));
                Ok(n)
            }
            ReadFrom::Session(session, sid) => session.read(sid, buf),
        })
    }

    /// Takes up to `max` bytes of a stream without copying them out of the
    /// node; `Ok(None)` is the end of the stream. With `max == 0`, an empty
    /// chunk. Bytes the peer sent in large frames over noise have been
    /// copied once on their way here, by the decryption.
    ///
    /// ```
    /// # use sansp2p::node::{Node, StreamError, StreamHandle};
    /// # use sansp2p::Instant;
    /// # fn drain(node: &mut Node, now: Instant, stream: StreamHandle) -> Result<(), StreamError> {
    /// while let Some(chunk) = node.stream_read_chunk(now, stream, usize::MAX)? {
    ///     // `chunk` is a `bytes::Bytes`: keep it, pass it on, no copy.
    ///     let _ = chunk;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream_read_chunk(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        max: usize,
    ) -> Result<Option<Bytes>, StreamError> {
        self.user_read(now, stream, |from| match from {
            ReadFrom::Leftover(pending) => Ok(Some(pending.split_to(max.min(pending.len())))),
            ReadFrom::Session(session, sid) => session.read_chunk(sid, max),
        })
    }

    /// A user stream's read: bytes left from the negotiation first, then
    /// the session's.
    fn user_read<T>(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        read: impl FnOnce(ReadFrom<'_>) -> Result<T, ReadError>,
    ) -> Result<T, StreamError> {
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
            return read(ReadFrom::Leftover(&mut st.pending)).map_err(|_| StreamError::NotOpen);
        }
        let out = match read(ReadFrom::Session(session, yamux_id(stream))) {
            Ok(v) => Ok(v),
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
        self.user_write(now, stream, |session, sid| session.write(sid, data))
    }

    /// Like [`stream_write`](Self::stream_write), but takes the bytes over
    /// instead of copying them: what fits is split off the front of `data`
    /// (the rest stays there for a later call). Over noise, the bytes are
    /// then copied once, into the frame they are encrypted in; over
    /// plaintext, once into the output. See
    /// [`Session::write_bytes`](yamux::Session::write_bytes).
    pub fn stream_write_bytes(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        data: &mut Bytes,
    ) -> Result<usize, StreamError> {
        self.user_write(now, stream, |session, sid| session.write_bytes(sid, data))
    }

    fn user_write(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        write: impl FnOnce(&mut yamux::Session, StreamId) -> Result<usize, WriteError>,
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
        let out = match write(session, yamux_id(stream)) {
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

    pub(super) fn stream_parts(
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

    pub(super) fn after_session_command(&mut self, conn: ConnectionId) {
        self.process_session(conn);
        self.flag_write(conn);
        self.reschedule(conn);
    }

    /// Resets a stream at the application's request (or the node's, for a
    /// ping that timed out): only a built-in's pending business is settled.
    pub(super) fn reset_stream(&mut self, stream: StreamHandle) {
        let Some(st) = self.remove_stream(stream) else {
            return;
        };
        if let Kind::Builtin(machine) = st.kind {
            self.builtin_gone(stream.conn, machine);
        }
        self.after_session_command(stream.conn);
    }

    /// Resets a stream the node gave up on and tells whoever waits on it
    /// (a pending open, a ping, a reader), unlike a reset the application
    /// asked for.
    fn fail_stream(&mut self, stream: StreamHandle) {
        let Some(st) = self.remove_stream(stream) else {
            return;
        };
        self.stream_gone(stream, st);
        self.after_session_command(stream.conn);
    }

    /// Forgets a stream and resets it on the wire.
    fn remove_stream(&mut self, stream: StreamHandle) -> Option<NodeStream> {
        let c = self.conns.get_mut(&stream.conn)?;
        let st = c.streams.remove(&stream.id)?;
        if let ConnState::Muxed(session) = &mut c.state {
            let _ = session.reset(yamux_id(stream));
        }
        if !st.outbound && st.negotiating() {
            c.negotiating_inbound = c.negotiating_inbound.saturating_sub(1);
        }
        Some(st)
    }

    pub(super) fn open_builtin(&mut self, conn: ConnectionId, builtin: Builtin) {
        if let Ok(stream) = self.open_builtin_checked(conn, builtin) {
            self.pump(stream);
        }
    }

    pub(super) fn open_builtin_checked(
        &mut self,
        conn: ConnectionId,
        builtin: Builtin,
    ) -> Result<StreamHandle, OpenStreamError> {
        let (name, machine) = builtin.start(&mut OnConn { node: self, conn });
        let peer = self.conns.get(&conn).and_then(|c| c.peer);
        let lazy = peer
            .and_then(|p| self.peer_protocols.get(&p))
            .is_some_and(|list| list.iter().any(|p| p == name));
        let config = if lazy {
            multistream::Config::lazy()
        } else {
            multistream::Config::default()
        };
        let neg = Negotiator::dialer_with([name], config).expect("built-in names are valid");
        self.open_outbound(conn, neg, Kind::Builtin(machine))
    }

    pub(super) fn open_outbound(
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
        st.neg = Some(Box::new(neg));
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
        self.session_read_from(now, conn, data, None)
    }

    /// As [`session_read`](Self::session_read); with `shared`, `data` is
    /// its bytes and the session may keep slices of them (offered once:
    /// a remainder it refused is copied later, so no slice ever pins an
    /// allocation much larger than itself).
    fn session_read_from(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        data: &[u8],
        mut shared: Option<&Bytes>,
    ) -> usize {
        let mut used = 0;
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return data.len();
            };
            let ConnState::Muxed(session) = &mut c.state else {
                return data.len();
            };
            let n = match shared.take() {
                Some(all) => session.handle_read_shared(now, all),
                None => session.handle_read(now, &data[used..]),
            };
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
    /// `poll_transmit`). Large frames are decrypted into memory of their
    /// own that the session keeps slices of, so their bytes are copied
    /// once, by the decryption. Returns how many raw bytes were consumed.
    pub(super) fn channel_read(&mut self, now: Instant, conn: ConnectionId, data: &[u8]) -> usize {
        /// Decrypted bytes held for the session at most, per connection.
        const MAX_PENDING: usize = 64 * 1024;
        /// Frames of this much plaintext or more get memory of their own.
        const LARGE_FRAME: usize = 16 * 1024;
        let mut used = 0;
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return data.len();
            };
            if !matches!(c.state, ConnState::Muxed(_)) {
                return data.len();
            }
            let super::upgrade::Channel::Noise {
                pending, shared, ..
            } = &mut c.channel
            else {
                return self.session_read(now, conn, data);
            };
            // Refused bytes first, in order: the copied ones, then a frame
            // of its own.
            let plain = core::mem::take(pending);
            let big = core::mem::take(shared);
            let n = if plain.is_empty() {
                0
            } else {
                self.session_read(now, conn, &plain)
            };
            let Some((pending, shared)) = self.noise_buffers(conn) else {
                return data.len();
            };
            (*pending, *shared) = (plain, big);
            if n < pending.len() {
                // The session pushes back: keep the rest, take no more input.
                pending.drain(..n);
                return used;
            }
            pending.clear();
            let big = core::mem::take(shared);
            if !big.is_empty() {
                let n = self.session_read_from(now, conn, &big, Some(&big));
                let Some((pending, _)) = self.noise_buffers(conn) else {
                    return data.len();
                };
                if n < big.len() {
                    // Copied when offered again (see `session_read_from`).
                    pending.extend_from_slice(&big[n..]);
                    return used;
                }
            }
            if used == data.len() {
                return used;
            }
            let Some(c) = self.conns.get_mut(&conn) else {
                return data.len();
            };
            let super::upgrade::Channel::Noise {
                transport,
                pending,
                shared,
            } = &mut c.channel
            else {
                return data.len();
            };
            match transport.decrypt_up_to_shared(&data[used..], pending, MAX_PENDING, LARGE_FRAME) {
                Ok((k, big)) => {
                    used += k;
                    *shared = big.unwrap_or_default();
                }
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

    /// A muxed noise connection's buffers of decrypted bytes.
    fn noise_buffers(&mut self, conn: ConnectionId) -> Option<(&mut Vec<u8>, &mut Bytes)> {
        let c = self.conns.get_mut(&conn)?;
        if !matches!(c.state, ConnState::Muxed(_)) {
            return None;
        }
        match &mut c.channel {
            super::upgrade::Channel::Noise {
                pending, shared, ..
            } => Some((pending, shared)),
            super::upgrade::Channel::Clear => None,
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
                    let Ok(neg) = Negotiator::listener(self.inbound_protocols(conn)) else {
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
                        } else if let Kind::Relay(r) = st.kind {
                            self.relay_stream_closed(stream, r);
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
            Kind::Builtin(machine) => self.builtin_gone(stream.conn, machine),
            Kind::Relay(r) => self.relay_stream_gone(stream, r),
            _ => {}
        }
    }

    /// A built-in's stream vanished before it was done.
    fn builtin_gone(&mut self, conn: ConnectionId, machine: Box<dyn Machine>) {
        if let Some(report) = machine.on_gone() {
            self.on_report(conn, report);
        }
    }

    /// What a built-in found out, turned into the node's state and events.
    fn on_report(&mut self, conn: ConnectionId, report: Report) {
        match report {
            Report::Identified(info) => self.on_identified(conn, info),
            Report::PingDone { ping, result } => self.ping_done(ping, result),
            Report::PingsFailed(pings) => {
                for (ping, error) in pings {
                    self.ping_done(ping, Err(error));
                }
            }
            Report::Perf { perf, result } => self.perf_done(perf, result),
            Report::PerfServed => self.perf_served = self.perf_served.saturating_sub(1),
        }
    }

    fn ping_done(&mut self, ping: PingId, result: Result<core::time::Duration, PingFailure>) {
        let Some(p) = self.pings.remove(&ping) else {
            return;
        };
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
                    if st.outbound {
                        if matches!(st.kind, Kind::User) {
                            st.user_visible = true;
                            self.events
                                .push_back(Event::StreamOpened { stream, protocol });
                        }
                    } else {
                        c.negotiating_inbound = c.negotiating_inbound.saturating_sub(1);
                        let conn = stream.conn;
                        let relay = self.relay_inbound(conn, &protocol);
                        let perf = self.config.perf.serve;
                        let machine =
                            builtin::inbound(&protocol, perf, &mut OnConn { node: self, conn });
                        if machine.is_some()
                            && protocol.as_ref() == crate::protocols::perf::PROTOCOL
                        {
                            if self.perf_served >= self.config.perf.max_served {
                                // Served runs are bounded node-wide: each may
                                // hold a stream's whole send buffer.
                                self.fail_stream(stream);
                                return;
                            }
                            self.perf_served += 1;
                        }
                        let Ok((_, st)) = self.stream_parts(stream) else {
                            return;
                        };
                        if let Some(r) = relay {
                            st.kind = Kind::Relay(Box::new(r));
                        } else if let Some(machine) = machine {
                            st.kind = Kind::Builtin(machine);
                        } else {
                            st.kind = Kind::User;
                            st.user_visible = true;
                            let peer = peer.expect("muxed connections have a peer");
                            self.events.push_back(Event::InboundStream {
                                stream,
                                peer,
                                protocol,
                            });
                            self.events.push_back(Event::StreamReadable { stream });
                        }
                    }
                    let outcome = self.start_builtin(stream);
                    self.act(stream, outcome);
                }
                multistream::Event::Failed(error) => {
                    let st = c.streams.remove(&stream.id).expect("present");
                    if !st.outbound {
                        c.negotiating_inbound = c.negotiating_inbound.saturating_sub(1);
                    }
                    if let ConnState::Muxed(session) = &mut c.state {
                        let _ = session.reset(yamux_id(stream));
                    }
                    if matches!(st.kind, Kind::User) {
                        self.events.push_back(Event::StreamOpenFailed {
                            stream,
                            error: StreamOpenFailure::Negotiation(error),
                        });
                    } else {
                        self.stream_gone(stream, st);
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
            let outcome = self.pump_once(stream).unwrap_or(Outcome::Failed);
            if !self.act(stream, outcome) {
                return;
            }
            self.handle_negotiation_events(stream);
        }
    }

    /// Acts on an outcome; false when the stream can do no more for now
    /// (or is gone).
    fn act(&mut self, stream: StreamHandle, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Nothing => false,
            Outcome::Progress => true,
            Outcome::Report(report) => {
                self.on_report(stream.conn, report);
                true
            }
            Outcome::Failed => {
                self.fail_stream(stream);
                false
            }
        }
    }

    /// Starts the built-in of a stream whose protocol was just agreed.
    fn start_builtin(&mut self, stream: StreamHandle) -> Outcome {
        let now = self.now;
        let Ok((_, st)) = self.stream_parts(stream) else {
            return Outcome::Nothing;
        };
        let Kind::Builtin(machine) = &mut st.kind else {
            return Outcome::Nothing;
        };
        let step = machine.on_negotiated(now, &mut st.out);
        st.apply(step)
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
        st.close_when_written(session, sid);
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
            // Bytes the negotiator left when it paused for an answer come
            // before anything newer.
            let next = if st.pending.is_empty() {
                session.read_chunk(sid, READ_CHUNK)
            } else {
                Ok(Some(core::mem::take(&mut st.pending)))
            };
            match next {
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

        // 3. Relay streams have their own step.
        if matches!(st.kind, Kind::Relay(_)) {
            return self.relay_step(stream);
        }

        // 4. A built-in that writes as the stream drains fills its room.
        if let Some(outcome) = st.fill(now, session, sid)? {
            return Ok(outcome);
        }

        // 5. A built-in protocol reads its bytes (pending first).
        let chunk = if !st.pending.is_empty() {
            Some(core::mem::take(&mut st.pending))
        } else {
            match &st.kind {
                Kind::User | Kind::Inbound | Kind::Relay(_) => return Ok(Outcome::Nothing),
                Kind::Builtin(machine)
                    if !st.out.is_empty() && !machine.reads_while_output_pending() =>
                {
                    return Ok(Outcome::Nothing)
                }
                _ => match session.read_chunk(sid, READ_CHUNK) {
                    Ok(Some(chunk)) => Some(chunk),
                    Ok(None) => None,
                    Err(ReadError::Blocked) => return Ok(Outcome::Nothing),
                    Err(_) => return Err(()),
                },
            }
        };
        let machine = match &mut st.kind {
            Kind::User | Kind::Inbound | Kind::Relay(_) => {
                // Pending bytes of a user stream stay for the application.
                if let Some(chunk) = chunk {
                    st.pending = chunk;
                }
                return Ok(Outcome::Nothing);
            }
            Kind::Builtin(machine) => Some(machine),
            Kind::Drain => None,
        };
        let Some(chunk) = chunk else {
            // End of the peer's side; a finished stream closes ours too.
            let outcome = match machine {
                Some(machine) => {
                    let step = machine.on_eof(now);
                    st.apply(step)
                }
                None => {
                    st.close_after_out = true;
                    Outcome::Nothing
                }
            };
            // A built-in that answers the peer's end (perf's server) starts
            // writing; the session's StreamWritable carries it on.
            let outcome = match outcome {
                Outcome::Progress => st.fill(now, session, sid)?.unwrap_or(Outcome::Nothing),
                other => other,
            };
            st.close_when_written(session, sid);
            return Ok(match outcome {
                Outcome::Progress => Outcome::Nothing,
                other => other,
            });
        };
        let Some(machine) = machine else {
            // Discarded.
            return Ok(Outcome::Progress);
        };
        let (n, step) = machine.on_bytes(now, &chunk, &mut st.out);
        if n < chunk.len() {
            st.pending = chunk.slice(n..);
        }
        Ok(st.apply(step))
    }

    fn after_pump_progress(&mut self, stream: StreamHandle) -> Outcome {
        self.handle_negotiation_events(stream);
        // A user stream whose negotiation just finished keeps its leftover in
        // `pending` for the application; everything else pumps on.
        Outcome::Progress
    }

    pub(super) fn on_identified(&mut self, conn: ConnectionId, info: Box<identify::Info>) {
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

pub(super) fn yamux_id(stream: StreamHandle) -> StreamId {
    StreamId::new(stream.id).expect("stream ids are never zero")
}
