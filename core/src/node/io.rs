//! Connection I/O: the per-connection driver between a socket and the node.
//!
//! Every connection owns a [`ConnIo`]: the input the node could not take
//! yet, the output the socket has not taken yet, and where the close
//! sequence stands. The rules an adapter would otherwise have to get right
//! live here, once:
//!
//! - **Reading.** [`Node::read_capacity`] says how much to read (0: stop).
//!   [`Node::handle_read`] takes everything up to that. What the node
//!   refuses stays here and is offered again after every write and every
//!   application read; when it is gone, [`Output::Receive`] tells the
//!   adapter to read again. An end of file is handed on only after the
//!   buffered input.
//! - **Writing.** [`Node::transmit_buffer`] fills from the connection's
//!   machine (upgrade or session, sealed by noise) up to
//!   [`IoConfig::write_buffer`]; [`Node::handle_written`] reports what the
//!   socket took. Output that makes no progress for
//!   [`IoConfig::write_stall_timeout`] closes the connection.
//! - **Closing.** A connection the node gives up on becomes inert at once:
//!   it discards input and produces nothing beyond what it already owed.
//!   That is flushed within [`IoConfig::close_flush_timeout`], then
//!   [`Action::CloseWrite`] (FIN), then input is drained until the peer's
//!   FIN or [`IoConfig::close_linger`], then [`Action::Close`]. Every
//!   deadline sits in the node's one timer table.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use bytes::Bytes;

use super::{
    Action, AttemptError, CloseReason, ConnState, ConnectionId, Event, IoConfig, Node, Output,
    StreamHandle, TimerKey, UpgradeError,
};
use crate::time::Instant;
use crate::yamux;

/// Where the close sequence of a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Phase {
    /// Running.
    #[default]
    Open,
    /// Given up: writing what was owed until `deadline`, then FIN.
    Flushing { deadline: Instant },
    /// FIN sent: input is dropped until the peer's FIN or `deadline`.
    Lingering { deadline: Instant },
}

/// The peer's end of file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Eof {
    #[default]
    No,
    /// Seen by the adapter, held back behind buffered input.
    Pending,
    /// Handed to the connection's machine.
    Delivered,
}

/// The I/O state of one connection.
#[derive(Debug, Default)]
pub(super) struct ConnIo {
    /// Input the node refused, in order: `input[taken..]`, at most
    /// `read_buffer` bytes.
    input: Vec<u8>,
    taken: usize,
    /// Output for the socket, in order: the `pieces` (frame payloads of a
    /// plaintext connection, kept as the session handed them over, and the
    /// bytes before each), then `output`. `written` bytes of the front one
    /// (the first piece, or `output` when there is none) are gone; a piece
    /// is dropped once written, so none is ever empty.
    pieces: VecDeque<Bytes>,
    output: Vec<u8>,
    written: usize,
    eof: Eof,
    /// `read_capacity` went to 0; the adapter must hear when it is back.
    read_paused: bool,
    /// Named by `poll_wants_write` and not yet seen empty.
    pub(super) write_flagged: bool,
    /// While output is pending: when it last made progress.
    progress_at: Option<Instant>,
    pub(super) phase: Phase,
}

impl ConnIo {
    /// The front of the output: empty only when nothing is left to write.
    fn pending(&self) -> &[u8] {
        match self.pieces.front() {
            Some(piece) => &piece[self.written..],
            None => &self.output[self.written..],
        }
    }

    /// Everything left to write, in order, as slices (none empty).
    fn pending_slices(&self) -> impl Iterator<Item = &[u8]> {
        let front = self.written;
        let in_output = if self.pieces.is_empty() { front } else { 0 };
        self.pieces
            .iter()
            .enumerate()
            .map(move |(i, piece)| if i == 0 { &piece[front..] } else { &piece[..] })
            .chain(core::iter::once(&self.output[in_output..]))
            .filter(|s| !s.is_empty())
    }

    /// Counts `n` bytes as written, across pieces; returns how many there
    /// were.
    fn advance(&mut self, mut n: usize) -> usize {
        let mut done = 0;
        while n > 0 {
            let left = self.pending().len();
            if left == 0 {
                break;
            }
            let take = n.min(left);
            self.written += take;
            done += take;
            n -= take;
            if take == left && self.pieces.pop_front().is_some() {
                self.written = 0;
            }
        }
        done
    }

    /// Appends `payload` as a piece of its own, after what `output` holds.
    fn push_piece(&mut self, payload: Bytes) {
        let start = if self.pieces.is_empty() {
            core::mem::take(&mut self.written)
        } else {
            0
        };
        if start < self.output.len() {
            // What precedes it (frame headers, small frames) becomes a
            // piece first: a copy of a few bytes, not of the payload.
            self.pieces
                .push_back(Bytes::copy_from_slice(&self.output[start..]));
        }
        self.output.clear();
        self.pieces.push_back(payload);
    }

    fn held(&self) -> usize {
        self.input.len() - self.taken
    }

    /// Queues input behind what is held, up to `room` bytes held in all.
    fn hold(&mut self, data: &[u8], room: usize) -> usize {
        if self.taken > 0 {
            self.input.drain(..self.taken);
            self.taken = 0;
        }
        let take = data.len().min(room.saturating_sub(self.input.len()));
        self.input.extend_from_slice(&data[..take]);
        if take > 0 {
            self.read_paused = true;
        }
        take
    }

    /// Appends to the output through `f`, keeping the stall clock.
    pub(super) fn produce(&mut self, now: Instant, f: impl FnOnce(&mut Vec<u8>)) {
        self.produce_pieces(now, |io| f(&mut io.output));
    }

    /// [`produce`](Self::produce) for a producer that may add pieces.
    fn produce_pieces(&mut self, now: Instant, f: impl FnOnce(&mut ConnIo)) {
        if self.pending().is_empty() {
            self.output.clear();
            self.written = 0;
        }
        f(self);
        if self.progress_at.is_none() && !self.pending().is_empty() {
            self.progress_at = Some(now);
        }
    }

    fn discard_output(&mut self) {
        self.pieces.clear();
        self.output.clear();
        self.written = 0;
        self.progress_at = None;
    }

    /// The earliest deadline of the I/O itself.
    pub(super) fn deadline(&self, config: &IoConfig) -> Option<Instant> {
        match self.phase {
            Phase::Open => self.progress_at.map(|t| t + config.write_stall_timeout),
            Phase::Flushing { deadline } | Phase::Lingering { deadline } => Some(deadline),
        }
    }
}

impl Node {
    // ------------------------------------------------------------ reading

    /// How many bytes to read from `conn`'s socket now, at most. 0 means do
    /// not read until [`Output::Receive`] names the connection (the node
    /// holds input it could not take yet) or it is unknown.
    pub fn read_capacity(&self, conn: ConnectionId) -> usize {
        let Some(c) = self.conns.get(&conn) else {
            return 0;
        };
        let discarding = matches!(c.state, ConnState::Closed);
        if discarding || (c.io.held() == 0 && c.io.eof == Eof::No) {
            self.config.io.read_buffer
        } else {
            0
        }
    }

    /// Bytes read from `conn`. Takes all of `data` when it is no longer
    /// than [`read_capacity`](Self::read_capacity) said; returns how many
    /// bytes it took (keep the rest for later). A connection the node has
    /// given up on takes and drops everything.
    #[must_use = "bytes not taken must be offered again"]
    pub fn handle_read(&mut self, now: Instant, conn: ConnectionId, data: &[u8]) -> usize {
        let now = self.tick(now);
        let room = self.config.io.read_buffer;
        let Some(c) = self.conns.get_mut(&conn) else {
            return data.len();
        };
        if matches!(c.state, ConnState::Closed) || c.io.eof != Eof::No {
            return data.len();
        }
        if c.io.held() > 0 {
            // Still refusing earlier input: queue behind it.
            let take = c.io.hold(data, room);
            c.io.read_paused = true;
            return take;
        }
        let used = self.consume(now, conn, data);
        let Some(c) = self.conns.get_mut(&conn) else {
            return data.len();
        };
        if matches!(c.state, ConnState::Closed) {
            return data.len();
        }
        let take = c.io.hold(&data[used..], room);
        self.flag_write(conn);
        self.reschedule(conn);
        used + take
    }

    /// The peer closed its sending side of `conn` (end of file). Input
    /// still held is handed on first.
    pub fn handle_read_closed(&mut self, now: Instant, conn: ConnectionId) {
        let now = self.tick(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Phase::Lingering { .. } = c.io.phase {
            self.release(conn);
            return;
        }
        if c.io.eof != Eof::No {
            return;
        }
        c.io.eof = Eof::Pending;
        if c.io.held() == 0 {
            self.deliver_eof(now, conn);
        }
    }

    /// The socket of `conn` failed or was closed under us: the node drops
    /// the connection at once (no [`Action::Close`] follows).
    pub fn handle_connection_closed(&mut self, now: Instant, conn: ConnectionId) {
        self.tick(now);
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if matches!(c.state, ConnState::Connecting | ConnState::Upgrading(_)) {
            self.upgrade_failed(conn, AttemptError::Closed);
        }
        self.shut(conn, CloseReason::Transport);
        self.forget(conn);
    }

    // ------------------------------------------------------------ writing

    /// The bytes to write on `conn` now (empty: nothing for now). Write a
    /// prefix of them, then report it with
    /// [`handle_written`](Self::handle_written).
    pub fn transmit_buffer(&mut self, now: Instant, conn: ConnectionId) -> &[u8] {
        let now = self.tick(now);
        self.fill_output(now, conn);
        // A fill may start the write-stall clock.
        self.reschedule(conn);
        match self.conns.get(&conn) {
            Some(c) => c.io.pending(),
            None => &[],
        }
    }

    /// Everything to write on `conn` now, as slices in order, for a
    /// vectored write (`writev`): [`transmit_buffer`](Self::transmit_buffer)
    /// is the first of them. On a plaintext connection large payloads come
    /// as slices of their own, never copied into one buffer. Report what
    /// the socket took with [`handle_written`](Self::handle_written), which
    /// takes counts that span slices.
    ///
    pub fn transmit_slices(
        &mut self,
        now: Instant,
        conn: ConnectionId,
    ) -> impl Iterator<Item = &[u8]> {
        let _ = self.transmit_buffer(now, conn);
        self.conns
            .get(&conn)
            .into_iter()
            .flat_map(|c| c.io.pending_slices())
    }

    /// [`transmit_slices`](Self::transmit_slices) as `IoSlice`s, into
    /// `out` (as many as fit); returns how many, 0 when nothing is left to
    /// write.
    ///
    /// ```
    /// # use sansp2p::node::{ConnectionId, Node};
    /// # use sansp2p::time::Instant;
    /// # fn write(node: &mut Node, now: Instant, conn: ConnectionId, socket: &mut std::net::TcpStream) -> std::io::Result<()> {
    /// use std::io::{IoSlice, Write};
    /// let mut slices = [IoSlice::new(&[]); 16];
    /// let k = node.transmit_io_slices(now, conn, &mut slices);
    /// if k > 0 {
    ///     let n = socket.write_vectored(&slices[..k])?;
    ///     node.handle_written(now, conn, n);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "std")]
    pub fn transmit_io_slices<'a>(
        &'a mut self,
        now: Instant,
        conn: ConnectionId,
        out: &mut [std::io::IoSlice<'a>],
    ) -> usize {
        let mut k = 0;
        for (slot, slice) in out.iter_mut().zip(self.transmit_slices(now, conn)) {
            *slot = std::io::IoSlice::new(slice);
            k += 1;
        }
        k
    }

    /// The socket took the first `n` bytes of
    /// [`transmit_buffer`](Self::transmit_buffer) (or of
    /// [`transmit_slices`](Self::transmit_slices), across them).
    pub fn handle_written(&mut self, now: Instant, conn: ConnectionId, n: usize) {
        let now = self.tick(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let n = c.io.advance(n);
        if c.io.pending().is_empty() {
            c.io.discard_output();
        } else if n > 0 {
            c.io.progress_at = Some(now);
        }
        self.after_transmit(now, conn);
    }

    /// Copies up to `max` bytes to send on `conn` into `out` and counts
    /// them as written: [`transmit_buffer`](Self::transmit_buffer) and
    /// [`handle_written`](Self::handle_written) in one call, for callers
    /// with a buffer of their own. Returns how many; 0 means nothing is
    /// left for now. It honours `max` in every state.
    #[must_use = "the bytes appended to `out` must be sent"]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        out: &mut Vec<u8>,
        max: usize,
    ) -> usize {
        let buf = self.transmit_buffer(now, conn);
        let n = buf.len().min(max);
        out.extend_from_slice(&buf[..n]);
        self.handle_written(now, conn, n);
        n
    }

    // ------------------------------------------------------------ outputs

    /// A connection that may have bytes to send. Once named, it is the
    /// adapter's job to write [`transmit_buffer`](Self::transmit_buffer)
    /// (now or when its socket is writable) until it is empty; only then
    /// will it be named again. Part of [`poll_output`](Self::poll_output).
    #[must_use]
    pub fn poll_wants_write(&mut self) -> Option<ConnectionId> {
        self.run_relays();
        while let Some(conn) = self.wants_write.pop_front() {
            if self.conns.contains_key(&conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Everything the adapter has to do or hand on, one at a time: actions,
    /// then connections to write, connections to read again, events, and
    /// finally [`Output::Timeout`], which ends the loop. After any input or
    /// command, call this until it returns `Timeout`.
    #[must_use]
    pub fn poll_output(&mut self) -> Output {
        if let Some(action) = self.poll_action() {
            return Output::Action(action);
        }
        if let Some(conn) = self.poll_wants_write() {
            return Output::Transmit(conn);
        }
        while let Some(conn) = self.resume.pop_front() {
            if self.read_capacity(conn) > 0 {
                return Output::Receive(conn);
            }
        }
        if let Some(event) = self.next_event() {
            return Output::Event(event);
        }
        Output::Timeout(self.poll_timeout())
    }

    // ------------------------------------------------------------ internals

    /// Hands `data` to the connection's machine; returns how much it took.
    fn consume(&mut self, now: Instant, conn: ConnectionId, data: &[u8]) -> usize {
        let Some(c) = self.conns.get_mut(&conn) else {
            return data.len();
        };
        match &mut c.state {
            ConnState::Connecting | ConnState::Closed => data.len(),
            ConnState::Upgrading(up) => {
                // The upgrade reads no further while anything it said is
                // unsent: a peer that writes without reading (`ls` after
                // `ls`) meets its own socket buffer, not our memory.
                if !c.io.pending().is_empty() || up.has_output() {
                    return 0;
                }
                let n = up.handle_read(data);
                match up.poll_event() {
                    None => n,
                    Some(Ok(upgraded)) => {
                        if self.on_upgraded(conn, upgraded) {
                            n + self.channel_read(now, conn, &data[n..])
                        } else {
                            data.len()
                        }
                    }
                    Some(Err(e)) => {
                        self.upgrade_failed(conn, AttemptError::Upgrade(e));
                        data.len()
                    }
                }
            }
            ConnState::Muxed(_) => self.channel_read(now, conn, data),
        }
    }

    /// Offers held input (and decrypted bytes the session refused) again.
    pub(super) fn offer_input(&mut self, now: Instant, conn: ConnectionId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let muxed = matches!(c.state, ConnState::Muxed(_));
        if c.io.held() == 0 && !muxed {
            return;
        }
        let input = core::mem::take(&mut c.io.input);
        let from = c.io.taken;
        let used = self.consume(now, conn, &input[from..]);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.state, ConnState::Closed) {
            return;
        }
        c.io.input = input;
        c.io.taken = from + used;
        if c.io.held() == 0 {
            c.io.input.clear();
            c.io.taken = 0;
        }
        if used > 0 {
            self.flag_write(conn);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.io.held() == 0 {
            if core::mem::take(&mut c.io.read_paused) && c.io.eof == Eof::No {
                if c.carrier.is_some() {
                    // Its carrier reads for it.
                    self.relay.queue.push_back(conn);
                } else {
                    self.resume.push_back(conn);
                }
            }
            if c.io.eof == Eof::Pending {
                self.deliver_eof(now, conn);
            }
        }
    }

    fn deliver_eof(&mut self, now: Instant, conn: ConnectionId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.io.eof = Eof::Delivered;
        match &mut c.state {
            ConnState::Connecting => {}
            ConnState::Closed => {
                if let Phase::Lingering { .. } = c.io.phase {
                    self.release(conn);
                }
                return;
            }
            ConnState::Upgrading(_) => self.upgrade_failed(conn, AttemptError::Closed),
            ConnState::Muxed(_) => {
                // Decrypted bytes the session refused earlier come first.
                self.channel_read(now, conn, &[]);
                if let Some(ConnState::Muxed(session)) =
                    self.conns.get_mut(&conn).map(|c| &mut c.state)
                {
                    session.handle_eof(now);
                }
                self.process_session(conn);
            }
        }
        self.flag_write(conn);
        self.reschedule(conn);
    }

    /// Fills the output from the connection's machine when it is empty.
    fn fill_output(&mut self, now: Instant, conn: ConnectionId) {
        let limit = self.config.io.write_buffer;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.io.pending().is_empty() {
            return;
        }
        let mut spent = false;
        match &mut c.state {
            ConnState::Connecting | ConnState::Closed => {}
            ConnState::Upgrading(up) => c.io.produce(now, |out| {
                let _ = up.poll_transmit(out);
            }),
            ConnState::Muxed(session) => {
                let channel = &mut c.channel;
                c.io.produce_pieces(now, |io| {
                    spent = gather_frames(now, session, channel, io, limit).is_err();
                });
            }
        }
        if c.io.pending().is_empty() {
            c.io.write_flagged = false;
        }
        if spent {
            self.shut(conn, CloseReason::ChannelSpent);
        }
    }

    /// After a write: the session may take refused input now, and sending
    /// can free send-buffer room (StreamWritable) or start ping clocks.
    fn after_transmit(&mut self, now: Instant, conn: ConnectionId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let flushed = c.io.pending().is_empty();
        match c.state {
            ConnState::Closed => {
                if flushed && matches!(c.io.phase, Phase::Flushing { .. }) {
                    self.close_write(conn);
                }
                return;
            }
            ConnState::Muxed(_) => self.process_session(conn),
            _ => {}
        }
        if flushed {
            self.offer_input(now, conn);
        }
        self.reschedule(conn);
    }

    /// Gives up on a connection: it turns inert (input dropped, nothing new
    /// produced), what it owed is flushed, then FIN and linger. Streams,
    /// peer bookkeeping and [`Event::ConnectionClosed`] happen now.
    pub(super) fn shut(&mut self, conn: ConnectionId, reason: CloseReason) {
        let now = self.now;
        let limit = self.config.io.write_buffer;
        let flush = self.config.io.close_flush_timeout;
        self.end_admission(conn);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match &mut c.state {
            ConnState::Closed => return,
            ConnState::Connecting => {
                // No socket yet, or one still connecting: nothing to flush.
                self.forget(conn);
                self.actions.push_back(Action::Close { conn });
                return;
            }
            ConnState::Upgrading(up) => {
                if reason != CloseReason::WriteStall {
                    c.io.produce(now, |out| {
                        let _ = up.poll_transmit(out);
                    });
                }
            }
            ConnState::Muxed(session) => {
                if reason != CloseReason::WriteStall {
                    // What the session owes (a final GoAway first: control
                    // frames lead), bounded by one write buffer.
                    let channel = &mut c.channel;
                    c.io.produce_pieces(now, |io| {
                        let _ = gather_frames(now, session, channel, io, limit);
                    });
                }
            }
        }
        if reason == CloseReason::WriteStall {
            c.io.discard_output();
        }
        c.io.input = Vec::new();
        c.io.taken = 0;
        c.io.read_paused = false;
        c.io.phase = Phase::Flushing {
            deadline: now + flush,
        };
        c.deadline = None;
        let old = core::mem::replace(&mut c.state, ConnState::Closed);
        let streams = core::mem::take(&mut c.streams);
        let peer = c.peer;
        let flushed = c.io.pending().is_empty();
        if let ConnState::Muxed(_) = old {
            for (id, s) in streams {
                self.stream_gone(StreamHandle { conn, id }, s);
            }
            if let Some(peer) = peer {
                if let Some(list) = self.peers.get_mut(&peer) {
                    list.retain(|x| *x != conn);
                    if list.is_empty() {
                        self.peers.remove(&peer);
                        self.peer_protocols.remove(&peer);
                    }
                }
            }
            let last_direct = peer.is_some_and(|p| {
                !self
                    .connections_to(&p)
                    .any(|id| self.conns.get(&id).is_some_and(|c| c.carrier.is_none()))
            });
            self.relay_connection_closed(conn, peer, last_direct);
            self.events
                .push_back(Event::ConnectionClosed { conn, peer, reason });
        }
        if flushed {
            self.close_write(conn);
        } else {
            self.flag_write(conn);
            self.reschedule(conn);
        }
    }

    /// Everything owed is out (or the flush deadline passed): FIN, then
    /// linger until the peer's FIN.
    fn close_write(&mut self, conn: ConnectionId) {
        let now = self.now;
        let linger = self.config.io.close_linger;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.io.discard_output();
        self.actions.push_back(Action::CloseWrite { conn });
        if c.io.eof != Eof::No {
            self.release(conn);
            return;
        }
        c.io.phase = Phase::Lingering {
            deadline: now + linger,
        };
        self.reschedule(conn);
    }

    /// The socket can go: [`Action::Close`], and the node forgets `conn`.
    fn release(&mut self, conn: ConnectionId) {
        if self.forget(conn) {
            self.actions.push_back(Action::Close { conn });
        }
    }

    /// Drops `conn` and everything that counts it (timer, inbound limits).
    /// Returns whether it existed.
    pub(super) fn forget(&mut self, conn: ConnectionId) -> bool {
        self.end_admission(conn);
        let Some(c) = self.conns.remove(&conn) else {
            return false;
        };
        if let Some(t) = c.timer {
            self.timers.remove(&(t, TimerKey::Conn(conn)));
        }
        if let Some(ip) = c.counted_ip {
            self.inbound.leave(ip);
        }
        self.check_shut_down();
        true
    }

    /// An inbound connection's upgrade is over (done or given up): it no
    /// longer counts as pending; its subnets count until it is forgotten.
    pub(super) fn end_admission(&mut self, conn: ConnectionId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Some(ip) = c.admitted.take() {
                c.counted_ip = ip;
                self.inbound.upgraded();
            }
        }
    }

    /// The I/O deadlines of `conn` that have passed: write stall, flush,
    /// linger. Returns whether one fired.
    pub(super) fn io_timeout(&mut self, now: Instant, conn: ConnectionId) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        if c.io.deadline(&self.config.io).is_none_or(|d| d > now) {
            return false;
        }
        match c.io.phase {
            Phase::Open => self.shut(conn, CloseReason::WriteStall),
            Phase::Flushing { .. } => self.close_write(conn),
            Phase::Lingering { .. } => self.release(conn),
        }
        true
    }

    /// Why a session that ended did so.
    pub(super) fn session_close_reason(
        session: &yamux::Session,
        error: Option<yamux::ConnectionError>,
    ) -> CloseReason {
        match (error, session.remote_go_away()) {
            // The peer said goodbye first, whatever happened after.
            (_, Some(code)) if session.local_go_away().is_none() => CloseReason::GoAway(code),
            // End of file with streams still open is how most peers hang
            // up (rust-libp2p closes the socket): not a protocol error.
            (None | Some(yamux::ConnectionError::TransportClosed), _)
                if session.local_go_away().is_none() =>
            {
                CloseReason::Eof
            }
            (None, _) => CloseReason::Local,
            (Some(e), _) => CloseReason::Session(e),
        }
    }

    /// An upgrade that did not finish by its deadline.
    pub(super) fn upgrade_timed_out(&mut self, conn: ConnectionId) {
        self.upgrade_failed(conn, AttemptError::Upgrade(UpgradeError::Timeout));
    }
}

/// A Data payload of a plaintext connection at least this long goes to the
/// socket as a piece of its own ([`Node::transmit_slices`]), uncopied;
/// shorter ones are copied behind their header (a piece costs a writer
/// without vectored writes one more write call).
pub const PIECE_MIN: usize = 4 * 1024;

/// Appends the session's frames to `io`'s output, up to about `limit`
/// bytes, in the channel's form (noise frames of up to 64 KiB, or as they
/// are, large payloads as pieces of their own). Fails only when the noise
/// channel is spent.
fn gather_frames(
    now: Instant,
    session: &mut yamux::Session,
    channel: &mut super::Channel,
    io: &mut ConnIo,
    limit: usize,
) -> Result<(), crate::security::noise::NoiseError> {
    match channel {
        super::Channel::Clear => {
            let mut taken = 0;
            while taken < limit {
                let Some(frame) = session.poll_transmit(now) else {
                    break;
                };
                taken += frame.wire_len();
                io.output.extend_from_slice(&frame.header);
                if frame.payload.len() >= PIECE_MIN {
                    io.push_piece(frame.payload);
                } else {
                    session.count_transmit_copied(frame.payload.len());
                    io.output.extend_from_slice(&frame.payload);
                }
            }
            Ok(())
        }
        channel => {
            let out = &mut io.output;
            // Written where they are sealed, whole: a frame that does not
            // fit what is left of a noise frame is cut to fit (Data) or
            // starts the next one, so the peer finds every frame in one
            // noise frame and can keep payloads without copying them.
            let mut taken = 0;
            channel.seal_from(out, |out, room| {
                if taken >= limit {
                    return false;
                }
                let n = session.poll_transmit_into(now, out, room);
                taken += n;
                // Stopped for want of room (there may be more): go on, in
                // the next noise frame once this one has no room for a
                // header. Else there was nothing more.
                room - n <= yamux::HEADER_LEN
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What can happen to a connection's output between writes.
    #[derive(Debug, Clone)]
    enum Op {
        /// Bytes appended to the output (headers, sealed frames).
        Copy(Vec<u8>),
        /// A payload queued as a piece of its own.
        Piece(Vec<u8>),
        /// The socket took this many bytes.
        Write(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let bytes = proptest::collection::vec(any::<u8>(), 1..40);
        prop_oneof![
            bytes.clone().prop_map(Op::Copy),
            bytes.prop_map(Op::Piece),
            (0usize..100).prop_map(Op::Write),
        ]
    }

    proptest! {
        /// Whatever the mix of copied bytes, pieces and partial writes, the
        /// slices offered are exactly the bytes not yet written, in order,
        /// none empty, the first one being `pending`.
        #[test]
        fn slices_are_the_unwritten_bytes_in_order(ops in proptest::collection::vec(op(), 0..60)) {
            let mut io = ConnIo::default();
            let mut model: VecDeque<u8> = VecDeque::new();
            let now = Instant::ZERO;
            for op in ops {
                match op {
                    Op::Copy(b) => {
                        model.extend(&b);
                        io.produce(now, |out| out.extend_from_slice(&b));
                    }
                    Op::Piece(b) => {
                        model.extend(&b);
                        io.produce_pieces(now, |io| io.push_piece(Bytes::from(b)));
                    }
                    Op::Write(n) => {
                        let done = io.advance(n);
                        prop_assert_eq!(done, n.min(model.len()));
                        model.drain(..done);
                    }
                }
                let slices: Vec<&[u8]> = io.pending_slices().collect();
                prop_assert!(slices.iter().all(|s| !s.is_empty()));
                prop_assert_eq!(slices.first().copied().unwrap_or(&[]), io.pending());
                let offered: Vec<u8> = slices.concat();
                prop_assert_eq!(offered, model.iter().copied().collect::<Vec<u8>>());
            }
        }
    }
}
