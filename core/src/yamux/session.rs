//! The yamux session machine.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::time::Duration;

use crate::collections::HashMap;
use bytes::{Buf, Bytes};
use smallvec::SmallVec;

use super::config::Config;
use super::error::{
    AcceptError, CloseError, ConnectionError, GoAwayError, OpenError, ReadError, ResetError,
    SessionConfigError, SessionPingError, WriteError,
};
use super::flow::RecvWindow;
use super::frame::{
    GoAwayCode, Header, PingKind, StreamFlags, StreamId, DEFAULT_WINDOW, HEADER_LEN,
};
use super::stream::{Open, Recv, Send, Stream};
use crate::time::Instant;

/// Which end of the connection this session is; decides the parity of the
/// stream ids it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The dialer: opens odd stream ids (1, 3, 5, ...).
    Client,
    /// The listener: opens even stream ids (2, 4, 6, ...).
    Server,
}

/// Something that happened, drained with [`Session::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The peer opened a stream. Answer with [`Session::accept`] or
    /// [`Session::reject`]; until then its data is buffered (within the
    /// window) and it counts against `accept_backlog`.
    InboundStream {
        /// The new stream.
        id: StreamId,
    },
    /// Data or the end of the stream can be read. Edge-triggered: emitted
    /// again only after a read returned [`ReadError::Blocked`].
    StreamReadable {
        /// The stream.
        id: StreamId,
    },
    /// The send buffer has room again after a write was short or blocked.
    StreamWritable {
        /// The stream.
        id: StreamId,
    },
    /// The peer reset the stream (or rejected our open). Unread data was
    /// discarded, unsent data dropped. This is the last event for the stream:
    /// once it has been polled the stream is freed.
    StreamReset {
        /// The stream.
        id: StreamId,
        /// Error code of a go-libp2p style RST, 0 when none.
        code: u32,
    },
    /// The stream finished cleanly in both directions and the application has
    /// read its end; it is freed and its id is no longer valid.
    StreamClosed {
        /// The stream.
        id: StreamId,
    },
    /// `open_stream` failed earlier for lack of room; it may succeed now.
    StreamsAvailable,
    /// The answer to a [`Session::ping`] arrived.
    Pong {
        /// Time from handing the ping to the transport to reading the answer.
        rtt: Duration,
    },
    /// The peer sent GoAway: [`Session::open_stream`] fails from now on;
    /// existing streams carry on.
    GoAwayReceived {
        /// The code it gave.
        code: GoAwayCode,
    },
    /// The session is over: no more inputs are processed. Keep draining
    /// [`Session::poll_transmit`] until `None` (a final GoAway may be
    /// queued), then close the transport. Buffered stream data stays
    /// readable.
    Closed {
        /// `None` for an orderly end (our GoAway went out and every stream
        /// finished, or end-of-file with nothing outstanding).
        error: Option<ConnectionError>,
    },
}

/// Writes and received payloads from this size on are taken over as they
/// are (see [`Session::write_bytes`], [`Session::handle_read_shared`]);
/// smaller ones are copied, which costs less than a chunk of their own.
pub const SHARE_MIN: usize = 1024;

/// A received payload is kept as a slice of its input only if it is at
/// least this fraction of it (1/5): one 16 KiB yamux frame cut to fit what
/// is left of a 64 KiB noise frame still is.
pub const SHARE_FRACTION: usize = 5;

/// One frame to write: the 12 header bytes, then `payload` (empty for every
/// frame but Data). Meant for vectored writes: `payload` is a slice of the
/// stream's send buffer, handed out without a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Encoded frame header.
    pub header: [u8; HEADER_LEN],
    /// Data payload (empty for control frames).
    pub payload: Bytes,
}

impl Transmit {
    /// Header plus payload length.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends header and payload to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&self.payload);
    }

    /// Appends at most `max` bytes of the frame's wire form, from byte
    /// `offset` on (header, then payload), to `out`; returns how many. For
    /// a writer that splits frames across its own records.
    pub fn write_part_to(&self, out: &mut Vec<u8>, offset: usize, max: usize) -> usize {
        let start = out.len();
        let mut at = offset;
        let mut room = max;
        if at < HEADER_LEN && room > 0 {
            let n = (HEADER_LEN - at).min(room);
            out.extend_from_slice(&self.header[at..at + n]);
            at += n;
            room -= n;
        }
        if at >= HEADER_LEN && room > 0 {
            let from = (at - HEADER_LEN).min(self.payload.len());
            let n = (self.payload.len() - from).min(room);
            out.extend_from_slice(&self.payload[from..from + n]);
        }
        out.len() - start
    }
}

/// Counters for benchmarks and diagnostics. Bytes "copied" are payload bytes
/// moved by this machine with memcpy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frame headers decoded.
    pub frames_received: u64,
    /// Frames handed out by `poll_transmit`/`poll_transmit_into`.
    pub frames_sent: u64,
    /// Payload bytes copied into send buffers by `write` (and by
    /// `write_bytes` for writes under [`SHARE_MIN`]).
    pub bytes_written: u64,
    /// Payload bytes taken over without a copy by `write_bytes`.
    pub bytes_written_zero_copy: u64,
    /// Payload bytes copied from `handle_read` input into receive buffers.
    pub bytes_received: u64,
    /// Payload bytes kept as slices of `handle_read_shared` input.
    pub bytes_received_zero_copy: u64,
    /// Payload bytes copied out by `read`.
    pub bytes_read_copied: u64,
    /// Payload bytes handed out without a copy by `read_chunk`.
    pub bytes_read_zero_copy: u64,
    /// Payload bytes copied into the caller's buffer by `poll_transmit_into`
    /// (or, of frames from `poll_transmit`, by the node's plaintext writer).
    pub bytes_transmit_copied: u64,
}

/// Received payload bytes on their way into a stream's buffer.
enum Payload<'a> {
    /// To be copied.
    Copied(&'a [u8]),
    /// A slice of the input, kept as it is.
    Shared(Bytes),
}

/// Where the frame parser stands.
#[derive(Debug, Clone, Copy)]
enum Rx {
    /// Collecting a header; `filled` bytes of it are in `buf`.
    Header {
        buf: [u8; HEADER_LEN],
        filled: usize,
    },
    /// Inside a Data payload; `target` is `None` when the bytes are discarded.
    Body {
        target: Option<StreamId>,
        remaining: u32,
        fin: bool,
    },
}

/// A ping of ours awaiting its pong.
#[derive(Debug, Clone, Copy)]
struct PendingPing {
    opaque: u32,
    /// When it was handed to the transport; `None` while still queued.
    sent: Option<Instant>,
    /// Requested by [`Session::ping`] (reported as [`Event::Pong`]).
    user: bool,
}

/// A yamux session over one transport connection, for either role.
///
/// The machine does no I/O and reads no clock: bytes read from the transport
/// go in through [`handle_read`](Self::handle_read), bytes to write come out
/// of [`poll_transmit`](Self::poll_transmit), time comes in as `now`
/// arguments. Its methods fall in four groups:
///
/// 1. getters (`&self`): [`role`](Self::role), [`rtt`](Self::rtt),
///    [`is_closed`](Self::is_closed), ...;
/// 2. inputs: [`handle_read`](Self::handle_read),
///    [`handle_timeout`](Self::handle_timeout), [`handle_eof`](Self::handle_eof);
/// 3. commands: [`open_stream`](Self::open_stream), [`accept`](Self::accept),
///    [`reject`](Self::reject), [`write`](Self::write), [`read`](Self::read),
///    [`read_chunk`](Self::read_chunk), [`close`](Self::close),
///    [`reset`](Self::reset), [`ping`](Self::ping), [`go_away`](Self::go_away);
/// 4. outputs: [`poll_transmit`](Self::poll_transmit) (or
///    [`poll_transmit_into`](Self::poll_transmit_into)),
///    [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
///
/// **When to call again:** after any input or command, drain the outputs —
/// `poll_transmit` and `poll_event`, repeating both until both return `None`
/// (handling an event may issue commands that queue more) — then sleep until
/// `poll_timeout()` or new input. `handle_timeout` is safe to call at any
/// time. Commands use the `now` of the latest input or `poll_transmit`.
///
/// **Ordering and fairness:** control frames (pings, pongs, GoAway, RST, SYN,
/// ACK, window updates) always go out before data; streams with data take
/// turns, one frame of at most `split_send_size` each (round robin). Ready
/// streams sit in queues, so an idle poll is O(1).
///
/// **Stream lifetime:** a stream is freed when both directions are finished
/// (FIN sent and received, or reset) and the application has read the end
/// (`read` returned `Ok(0)`, `read_chunk` `Ok(None)`), or when it saw the
/// reset (an `Err(Reset)` or the [`Event::StreamReset`] event), or right away
/// on [`reset`](Self::reset)/[`reject`](Self::reject).
#[derive(Debug)]
pub struct Session {
    role: Role,
    config: Config,
    /// Latest time seen in any input.
    now: Instant,
    streams: HashMap<u32, Stream>,
    next_id: u32,
    rx: Rx,
    /// Last time any byte arrived.
    last_rx: Instant,
    /// Session-level frames (pings, pongs, GoAway, RSTs of gone streams).
    /// Each with `true` when it is an RST refusing a peer's SYN (counted
    /// against `max_queued_resets`).
    ctrl: VecDeque<(Header, bool)>,
    queued_pongs: usize,
    queued_resets: usize,
    /// Streams with a stream-control frame due.
    stream_ctrl: VecDeque<u32>,
    /// Streams with data to send (round robin).
    data_q: VecDeque<u32>,
    events: VecDeque<Event>,
    pings: SmallVec<[PendingPing; 4]>,
    next_opaque: u32,
    /// When the next keep-alive ping is due (None while one is outstanding).
    keepalive_due: Option<Instant>,
    srtt: Option<Duration>,
    ack_backlog_used: usize,
    pending_accept: usize,
    /// Sum of the receive windows of all streams.
    budget_used: u64,
    local_go_away: Option<GoAwayCode>,
    remote_go_away: Option<GoAwayCode>,
    closed: bool,
    close_error: Option<ConnectionError>,
    /// `open_stream` failed for lack of room; emit `StreamsAvailable` later.
    open_blocked: bool,
    stats: Stats,
}

impl Session {
    /// A new session. It queues one ping at once so the RTT (which drives
    /// window auto-tuning) is known early.
    pub fn new(now: Instant, role: Role, config: Config) -> Result<Session, SessionConfigError> {
        config.validate()?;
        let mut s = Session {
            role,
            config,
            now,
            streams: HashMap::default(),
            next_id: match role {
                Role::Client => 1,
                Role::Server => 2,
            },
            rx: Rx::Header {
                buf: [0; HEADER_LEN],
                filled: 0,
            },
            last_rx: now,
            ctrl: VecDeque::new(),
            queued_pongs: 0,
            queued_resets: 0,
            stream_ctrl: VecDeque::new(),
            data_q: VecDeque::new(),
            events: VecDeque::new(),
            pings: SmallVec::new(),
            next_opaque: 1,
            keepalive_due: None,
            srtt: None,
            ack_backlog_used: 0,
            pending_accept: 0,
            budget_used: 0,
            local_go_away: None,
            remote_go_away: None,
            closed: false,
            close_error: None,
            open_blocked: false,
            stats: Stats::default(),
        };
        s.queue_ping(false);
        Ok(s)
    }

    // ----------------------------------------------------------------- getters

    /// Client or server.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the session has ended (see [`Event::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The fatal error that ended the session, if any.
    pub fn close_error(&self) -> Option<&ConnectionError> {
        self.close_error.as_ref()
    }

    /// Smoothed round-trip time from pings, once one was answered.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Streams alive (including those not yet accepted or not yet freed).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Whether `id` names a live stream.
    pub fn contains_stream(&self, id: StreamId) -> bool {
        self.streams.contains_key(&id.get())
    }

    /// The GoAway code we sent, if any.
    pub fn local_go_away(&self) -> Option<GoAwayCode> {
        self.local_go_away
    }

    /// The GoAway code the peer sent, if any.
    pub fn remote_go_away(&self) -> Option<GoAwayCode> {
        self.remote_go_away
    }

    /// Bytes buffered for reading on a stream.
    pub fn readable_bytes(&self, id: StreamId) -> Option<usize> {
        self.streams.get(&id.get()).map(|s| s.recv_buf.len())
    }

    /// Bytes written to a stream and not yet transmitted.
    pub fn queued_bytes(&self, id: StreamId) -> Option<usize> {
        self.streams.get(&id.get()).map(|s| s.send_buf.len())
    }

    /// Bytes the peer currently lets us send on a stream.
    pub fn send_window(&self, id: StreamId) -> Option<u32> {
        self.streams.get(&id.get()).map(|s| s.send_credit)
    }

    /// The current size of a stream's receive window (grows by auto-tuning).
    pub fn receive_window(&self, id: StreamId) -> Option<u32> {
        self.streams.get(&id.get()).map(|s| s.window.max)
    }

    /// Sum of all stream receive windows (bounded by `receive_budget`).
    pub fn receive_budget_used(&self) -> u64 {
        self.budget_used
    }

    /// Counters for benchmarks and diagnostics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    // ------------------------------------------------------------------ inputs

    /// Feeds bytes read from the transport; returns how many were consumed.
    ///
    /// Frames may be split anywhere, down to one byte per call. Fewer bytes
    /// than given are consumed only for backpressure, when
    /// `max_queued_pongs` pongs or `max_queued_resets` RSTs wait for
    /// [`poll_transmit`](Self::poll_transmit): drain it and offer the rest
    /// again. After the session closed, everything is consumed and ignored.
    #[must_use = "bytes not consumed must be offered again"]
    pub fn handle_read(&mut self, now: Instant, data: &[u8]) -> usize {
        self.read_frames(now, data, None)
    }

    /// Like [`handle_read`](Self::handle_read), but payloads of at least
    /// [`SHARE_MIN`] bytes and a fifth of `data` are kept as slices of
    /// `data` instead of copies, and later leave through
    /// [`read_chunk`](Self::read_chunk) as they are.
    ///
    /// A slice keeps all of `data`'s allocation alive, so give buffers
    /// whose allocation is about their length (a decrypted frame, not a
    /// large read buffer): what the session then holds stays under
    /// [`SHARE_FRACTION`] times the bytes it buffers.
    #[must_use = "bytes not consumed must be offered again"]
    pub fn handle_read_shared(&mut self, now: Instant, data: &Bytes) -> usize {
        self.read_frames(now, data, Some(data))
    }

    fn read_frames(&mut self, now: Instant, data: &[u8], shared: Option<&Bytes>) -> usize {
        self.advance(now);
        if self.closed {
            return data.len();
        }
        if !data.is_empty() {
            self.last_rx = self.now;
        }
        let mut pos = 0;
        while !self.closed {
            match self.rx {
                Rx::Body {
                    target,
                    remaining,
                    fin,
                } => {
                    if remaining > 0 {
                        if pos == data.len() {
                            break;
                        }
                        let take = (remaining as usize).min(data.len() - pos);
                        if let Some(id) = target {
                            let range = pos..pos + take;
                            match shared {
                                Some(all)
                                    if take >= SHARE_MIN && take * SHARE_FRACTION >= all.len() =>
                                {
                                    self.deliver(id, Payload::Shared(all.slice(range)));
                                }
                                _ => self.deliver(id, Payload::Copied(&data[range])),
                            }
                        }
                        pos += take;
                        let remaining = remaining - take as u32;
                        if remaining > 0 {
                            self.rx = Rx::Body {
                                target,
                                remaining,
                                fin,
                            };
                            continue;
                        }
                    }
                    self.rx = Rx::Header {
                        buf: [0; HEADER_LEN],
                        filled: 0,
                    };
                    if let (Some(id), true) = (target, fin) {
                        self.on_remote_fin(id);
                    }
                }
                Rx::Header { mut buf, filled } => {
                    if pos == data.len() {
                        break;
                    }
                    let header = if filled == 0 {
                        if self.queued_pongs >= self.config.max_queued_pongs
                            || self.queued_resets >= self.config.max_queued_resets
                        {
                            break;
                        }
                        match data[pos..].first_chunk::<HEADER_LEN>() {
                            Some(h) => {
                                pos += HEADER_LEN;
                                Header::decode(h)
                            }
                            None => {
                                let take = data.len() - pos;
                                buf[..take].copy_from_slice(&data[pos..]);
                                pos += take;
                                self.rx = Rx::Header { buf, filled: take };
                                continue;
                            }
                        }
                    } else {
                        let take = (HEADER_LEN - filled).min(data.len() - pos);
                        buf[filled..filled + take].copy_from_slice(&data[pos..pos + take]);
                        pos += take;
                        if filled + take < HEADER_LEN {
                            self.rx = Rx::Header {
                                buf,
                                filled: filled + take,
                            };
                            continue;
                        }
                        self.rx = Rx::Header {
                            buf: [0; HEADER_LEN],
                            filled: 0,
                        };
                        Header::decode(&buf)
                    };
                    self.stats.frames_received += 1;
                    let result = match header {
                        Ok(h) => self.on_header(h),
                        Err(e) => Err(ConnectionError::Frame(e)),
                    };
                    if let Err(e) = result {
                        self.fail(e);
                    }
                }
            }
        }
        if self.closed {
            data.len()
        } else {
            pos
        }
    }

    /// Runs timers: sends a keep-alive ping when due, and closes the session
    /// with [`ConnectionError::KeepAliveTimeout`] when a ping went out and
    /// nothing at all arrived for `ping_timeout` since. Safe to call at any
    /// time.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.closed {
            return;
        }
        if let Some(deadline) = self.ping_deadline() {
            if deadline <= self.now {
                self.fail(ConnectionError::KeepAliveTimeout(self.config.ping_timeout));
                return;
            }
        }
        if let Some(due) = self.keepalive_due {
            if due <= self.now {
                self.keepalive_due = None;
                self.queue_ping(false);
            }
        }
    }

    /// The transport reached end-of-file (or was closed). Ends the session;
    /// the error is [`ConnectionError::TransportClosed`] when a stream could
    /// still have received data or a frame was cut short, else `None`.
    pub fn handle_eof(&mut self, now: Instant) {
        self.advance(now);
        if self.closed {
            return;
        }
        let mid_frame = match self.rx {
            Rx::Header { filled, .. } => filled > 0,
            Rx::Body { remaining, .. } => remaining > 0,
        };
        let incomplete = self.streams.values().any(|s| s.recv == Recv::Open);
        let error = (mid_frame || incomplete).then_some(ConnectionError::TransportClosed);
        self.closed = true;
        // Control frames already queued (pongs to pings that arrived before
        // the end of file) still go out: a peer that half-closed reads on.
        // Stream frames do not: every stream is over.
        self.stream_ctrl.clear();
        self.data_q.clear();
        self.close_error = error.clone();
        self.events.push_back(Event::Closed { error });
    }

    // ---------------------------------------------------------------- commands

    /// Opens a stream. Its SYN (a WindowUpdate frame) goes out at the next
    /// `poll_transmit`; data may be written at once and follows the SYN
    /// without waiting for the ACK.
    ///
    /// Refused (not queued) when `max_streams` streams are alive or
    /// `ack_backlog` opened streams are unacknowledged; an
    /// [`Event::StreamsAvailable`] follows once there is room.
    pub fn open_stream(&mut self) -> Result<StreamId, OpenError> {
        if self.closed {
            return Err(OpenError::SessionClosed);
        }
        if self.local_go_away.is_some() {
            return Err(OpenError::GoingAway);
        }
        if let Some(code) = self.remote_go_away {
            return Err(OpenError::RemoteGoAway(code));
        }
        if self.next_id >= u32::MAX - 1 {
            return Err(OpenError::IdsExhausted);
        }
        if self.streams.len() >= self.config.max_streams {
            self.open_blocked = true;
            return Err(OpenError::TooManyStreams);
        }
        if self.ack_backlog_used >= self.config.ack_backlog {
            self.open_blocked = true;
            return Err(OpenError::AckBacklogFull);
        }
        let raw = self.next_id;
        self.next_id += 2;
        let id = StreamId::new(raw).expect("stream ids start at 1 or 2");
        let initial = self.config.initial_window;
        let mut stream = Stream::new(
            Open::SynQueued,
            RecvWindow::new(initial, self.now),
            DEFAULT_WINDOW,
            initial - DEFAULT_WINDOW,
        );
        stream.in_ack_backlog = true;
        stream.in_ctrl_q = true;
        self.ack_backlog_used += 1;
        self.budget_used += u64::from(initial);
        self.streams.insert(raw, stream);
        self.stream_ctrl.push_back(raw);
        Ok(id)
    }

    /// Accepts an inbound stream: its ACK goes out at the next
    /// `poll_transmit`, and it becomes readable and writable. Data that
    /// arrived before is readable at once ([`Event::StreamReadable`] is
    /// emitted if there is any).
    pub fn accept(&mut self, id: StreamId) -> Result<(), AcceptError> {
        if self.closed {
            return Err(AcceptError::SessionClosed);
        }
        let s = self
            .streams
            .get_mut(&id.get())
            .ok_or(AcceptError::UnknownStream)?;
        if s.open != Open::Pending {
            return Err(AcceptError::NotPending);
        }
        self.pending_accept -= 1;
        if s.recv == Recv::Reset {
            s.open = Open::Established;
        } else {
            s.open = Open::AckQueued;
            enqueue(&mut self.stream_ctrl, &mut s.in_ctrl_q, id.get());
        }
        if !s.recv_buf.is_empty() || s.recv == Recv::Fin {
            s.notify_read = false;
            self.events.push_back(Event::StreamReadable { id });
        } else {
            s.notify_read = true;
        }
        if s.sendable() {
            enqueue(&mut self.data_q, &mut s.in_data_q, id.get());
        }
        Ok(())
    }

    /// Rejects an inbound stream: it is answered with RST and freed at once.
    pub fn reject(&mut self, id: StreamId) -> Result<(), AcceptError> {
        if self.closed {
            return Err(AcceptError::SessionClosed);
        }
        let s = self
            .streams
            .get(&id.get())
            .ok_or(AcceptError::UnknownStream)?;
        if s.open != Open::Pending {
            return Err(AcceptError::NotPending);
        }
        self.abort_stream(id, 0);
        Ok(())
    }

    /// Queues bytes on a stream; returns how many were taken, which is fewer
    /// than offered when the stream's send buffer (`max_stream_send_buffer`)
    /// fills. [`WriteError::Blocked`] when nothing fit; either way an
    /// [`Event::StreamWritable`] follows once there is room. Copies `data`
    /// once; the bytes later leave through `poll_transmit` without another
    /// copy. [`write_bytes`](Self::write_bytes) takes them without a copy.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        let n = self.send_room(id, data.len())?;
        let s = self
            .streams
            .get_mut(&id.get())
            .expect("checked by send_room");
        s.send_buf.push(&data[..n]);
        self.stats.bytes_written += n as u64;
        self.queue_data(id);
        Ok(n)
    }

    /// Like [`write`](Self::write), but takes the bytes over instead of
    /// copying them: what fits is split off the front of `data` (no copy
    /// either; the rest stays in `data` for a later call) and leaves
    /// through `poll_transmit` as it is. Writes under [`SHARE_MIN`] bytes
    /// are copied, which lets small messages share frames.
    ///
    /// ```
    /// # use sansp2p::yamux::{Config, Role, Session};
    /// # use sansp2p::Instant;
    /// use bytes::Bytes;
    /// let mut session = Session::new(Instant::ZERO, Role::Client, Config::default()).unwrap();
    /// let id = session.open_stream().unwrap();
    /// let mut data = Bytes::from(vec![7u8; 300 * 1024]);
    /// // The send buffer holds 256 KiB: that much is taken, the rest waits.
    /// assert_eq!(session.write_bytes(id, &mut data), Ok(256 * 1024));
    /// assert_eq!(data.len(), 44 * 1024);
    /// ```
    pub fn write_bytes(&mut self, id: StreamId, data: &mut Bytes) -> Result<usize, WriteError> {
        if data.len() < SHARE_MIN {
            let n = self.write(id, data)?;
            data.advance(n);
            return Ok(n);
        }
        let n = self.send_room(id, data.len())?;
        let s = self
            .streams
            .get_mut(&id.get())
            .expect("checked by send_room");
        s.send_buf.push_shared(data.split_to(n));
        self.stats.bytes_written_zero_copy += n as u64;
        self.queue_data(id);
        Ok(n)
    }

    /// How many of `len` bytes a stream's send buffer takes now (at least
    /// one), or why none.
    fn send_room(&mut self, id: StreamId, len: usize) -> Result<usize, WriteError> {
        let s = self
            .streams
            .get_mut(&id.get())
            .ok_or(WriteError::UnknownStream)?;
        if s.open == Open::Pending {
            return Err(WriteError::NotAccepted);
        }
        match s.send {
            Send::Open => {}
            Send::Reset => {
                let code = s.reset_code;
                s.end_seen = true;
                self.maybe_free(id);
                return Err(WriteError::Reset { code });
            }
            Send::FinQueued | Send::FinSent => return Err(WriteError::Closed),
        }
        if self.closed {
            return Err(WriteError::SessionClosed);
        }
        if len == 0 {
            return Ok(0);
        }
        let room = self
            .config
            .max_stream_send_buffer
            .saturating_sub(s.send_buf.len());
        if room == 0 {
            s.notify_write = true;
            return Err(WriteError::Blocked);
        }
        if room < len {
            s.notify_write = true;
        }
        Ok(room.min(len))
    }

    /// Puts a stream that has something to send in the data queue.
    fn queue_data(&mut self, id: StreamId) {
        let s = self.streams.get_mut(&id.get()).expect("a known stream");
        if s.sendable() {
            enqueue(&mut self.data_q, &mut s.in_data_q, id.get());
        }
    }

    /// Copies buffered bytes of a stream into `buf`.
    ///
    /// `Ok(0)` for a non-empty `buf` is end-of-stream (the peer's FIN, after
    /// all its data); [`ReadError::Blocked`] means nothing yet (an
    /// [`Event::StreamReadable`] follows). Reading returns window to the
    /// peer. Data buffered when the session closed stays readable.
    pub fn read(&mut self, id: StreamId, buf: &mut [u8]) -> Result<usize, ReadError> {
        let s = self.readable_stream(id)?;
        if buf.is_empty() {
            return Ok(0);
        }
        if s.recv_buf.is_empty() {
            return self.read_empty(id).map(|()| 0);
        }
        let n = s.recv_buf.copy_out(buf);
        self.stats.bytes_read_copied += n as u64;
        self.on_consumed(id, n);
        Ok(n)
    }

    /// Takes up to `max` buffered bytes of a stream without copying them.
    ///
    /// `Ok(None)` is end-of-stream; `max == 0` yields an empty chunk without
    /// looking further; otherwise as [`read`](Self::read).
    pub fn read_chunk(&mut self, id: StreamId, max: usize) -> Result<Option<Bytes>, ReadError> {
        let s = self.readable_stream(id)?;
        if max == 0 {
            return Ok(Some(Bytes::new()));
        }
        if s.recv_buf.is_empty() {
            return self.read_empty(id).map(|()| None);
        }
        let chunk = s.recv_buf.split_front(max);
        let n = chunk.len();
        self.stats.bytes_read_zero_copy += n as u64;
        self.on_consumed(id, n);
        Ok(Some(chunk))
    }

    /// Half-closes a stream: FIN goes out after the data already written.
    /// Reading continues until the peer closes too. Idempotent.
    pub fn close(&mut self, id: StreamId) -> Result<(), CloseError> {
        let s = self
            .streams
            .get_mut(&id.get())
            .ok_or(CloseError::UnknownStream)?;
        if s.open == Open::Pending {
            return Err(CloseError::NotAccepted);
        }
        match s.send {
            Send::Reset => {
                let code = s.reset_code;
                s.end_seen = true;
                self.maybe_free(id);
                Err(CloseError::Reset { code })
            }
            Send::FinQueued | Send::FinSent => Ok(()),
            Send::Open if self.closed => Err(CloseError::SessionClosed),
            Send::Open => {
                s.send = Send::FinQueued;
                if s.send_buf.is_empty() {
                    enqueue(&mut self.stream_ctrl, &mut s.in_ctrl_q, id.get());
                }
                Ok(())
            }
        }
    }

    /// Resets a stream: RST goes out (unless the peer never heard of it),
    /// buffered data in both directions is dropped, and the stream is freed
    /// at once.
    pub fn reset(&mut self, id: StreamId) -> Result<(), ResetError> {
        self.reset_with_code(id, 0)
    }

    /// [`reset`](Self::reset) with an error code in the RST's length field
    /// (a go-libp2p extension; peers without it read it as a window delta on
    /// a dead stream and ignore it).
    pub fn reset_with_code(&mut self, id: StreamId, code: u32) -> Result<(), ResetError> {
        if !self.streams.contains_key(&id.get()) {
            return Err(ResetError::UnknownStream);
        }
        self.abort_stream(id, code);
        Ok(())
    }

    /// Sends a ping; its [`Event::Pong`] reports the round-trip time.
    pub fn ping(&mut self) -> Result<(), SessionPingError> {
        if self.closed {
            return Err(SessionPingError::SessionClosed);
        }
        if self.pings.iter().filter(|p| p.user).count() >= self.config.max_outstanding_pings {
            return Err(SessionPingError::TooManyOutstanding);
        }
        self.queue_ping(true);
        Ok(())
    }

    /// Sends GoAway: no new streams either way from now on (inbound SYNs are
    /// answered with RST), existing streams finish normally. Once none is
    /// left the session closes with [`Event::Closed`] `{ error: None }`.
    pub fn go_away(&mut self, code: GoAwayCode) -> Result<(), GoAwayError> {
        if self.closed {
            return Err(GoAwayError::SessionClosed);
        }
        if self.local_go_away.is_some() {
            return Err(GoAwayError::AlreadySent);
        }
        self.local_go_away = Some(code);
        self.ctrl.push_back((Header::GoAway { code }, false));
        self.check_drained();
        Ok(())
    }

    // ----------------------------------------------------------------- outputs

    /// The next frame to write, or `None` when there is nothing to send.
    ///
    /// Zero-copy: a Data frame's payload is a slice of the stream's send
    /// buffer. Write `header` then `payload` (a vectored write suits). `now`
    /// timestamps pings as they leave, so RTT samples exclude our own queue.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.advance(now);
        self.next_frame(usize::MAX)
    }

    /// Appends whole frames to `out`, at most `max` bytes in all (Data frames
    /// are cut to fit), and returns how many bytes were appended. Copies the
    /// payload once more than [`poll_transmit`](Self::poll_transmit); call
    /// until it returns 0.
    #[must_use]
    pub fn poll_transmit_into(&mut self, now: Instant, out: &mut Vec<u8>, max: usize) -> usize {
        self.advance(now);
        let start = out.len();
        loop {
            let room = max - (out.len() - start);
            if room < HEADER_LEN {
                break;
            }
            match self.next_frame(room - HEADER_LEN) {
                Some(t) => {
                    self.stats.bytes_transmit_copied += t.payload.len() as u64;
                    t.write_to(out);
                }
                None => break,
            }
        }
        out.len() - start
    }

    /// Counts `n` payload bytes of a frame from
    /// [`poll_transmit`](Self::poll_transmit) that the caller copied (the
    /// node's plaintext writer, for small frames), so
    /// [`Stats::bytes_transmit_copied`] covers them.
    pub(crate) fn count_transmit_copied(&mut self, n: usize) {
        self.stats.bytes_transmit_copied += n as u64;
    }

    /// The next event, or `None`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if let Event::StreamReset { id, .. } = event {
            if let Some(s) = self.streams.get_mut(&id.get()) {
                if s.recv == Recv::Reset {
                    s.end_seen = true;
                    self.maybe_free(id);
                }
            }
        }
        Some(event)
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        match (self.keepalive_due, self.ping_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Asserts the session's internal invariants (tests and fuzzing only).
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let mut budget = 0u64;
        let mut backlog = 0;
        let mut pending = 0;
        for (&raw, s) in &self.streams {
            budget += u64::from(s.window.max);
            assert!(
                s.window.max <= self.config.max_window,
                "stream {raw}: window above cap"
            );
            if s.in_ack_backlog {
                backlog += 1;
                assert!(
                    matches!(s.open, Open::SynQueued | Open::SynSent),
                    "stream {raw}"
                );
            }
            if s.open == Open::Pending {
                pending += 1;
            }
            assert!(
                s.send_buf.len() <= self.config.max_stream_send_buffer,
                "stream {raw}"
            );
            if s.recv == Recv::Open {
                let buffered = s.recv_buf.len() as u64;
                let sum = u64::from(s.window.credit) + buffered + u64::from(s.window.unacked);
                assert_eq!(
                    sum,
                    u64::from(s.window.max),
                    "stream {raw}: window accounting"
                );
            } else if s.recv == Recv::Reset {
                assert!(
                    s.recv_buf.is_empty() && s.send_buf.is_empty(),
                    "stream {raw}"
                );
            }
            if s.sendable() && !self.closed {
                assert!(s.in_data_q, "stream {raw}: sendable but not queued");
            }
            if s.needs_ctrl() && !self.closed {
                assert!(s.in_ctrl_q, "stream {raw}: control due but not queued");
            }
            if s.in_data_q {
                assert!(
                    self.data_q.contains(&raw),
                    "stream {raw}: flag without entry"
                );
            }
            if s.in_ctrl_q {
                assert!(
                    self.stream_ctrl.contains(&raw),
                    "stream {raw}: flag without entry"
                );
            }
            let ours = StreamId::new(raw)
                .is_some_and(|id| id.is_client_initiated() == (self.role == Role::Client));
            let allowed = if ours {
                matches!(s.open, Open::SynQueued | Open::SynSent | Open::Established)
            } else {
                matches!(s.open, Open::Pending | Open::AckQueued | Open::Established)
            };
            assert!(
                allowed,
                "stream {raw}: handshake state {:?} for its parity",
                s.open
            );
        }
        assert_eq!(budget, self.budget_used, "budget accounting");
        assert!(self.budget_used <= self.config.receive_budget);
        assert_eq!(backlog, self.ack_backlog_used, "ack backlog accounting");
        assert!(self.ack_backlog_used <= self.config.ack_backlog);
        assert_eq!(pending, self.pending_accept, "accept backlog accounting");
        assert!(self.pending_accept <= self.config.accept_backlog);
        assert!(self.streams.len() <= self.config.max_streams);
        let pongs = self
            .ctrl
            .iter()
            .filter(|(h, _)| {
                matches!(
                    h,
                    Header::Ping {
                        kind: PingKind::Response,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(pongs, self.queued_pongs, "pong accounting");
        let resets = self
            .ctrl
            .iter()
            .filter(|(h, refusal)| {
                *refusal && matches!(h, Header::WindowUpdate { flags, .. } if flags.rst)
            })
            .count();
        assert_eq!(resets, self.queued_resets, "reset accounting");
        assert!(self.queued_pongs <= self.config.max_queued_pongs + 1);
        assert!(self.queued_resets <= self.config.max_queued_resets + 1);
        assert!(self.pings.len() <= self.config.max_outstanding_pings + 2);
    }

    /// Estimated bytes of memory this session holds: the struct itself, its
    /// tables and queues (by capacity) and every stream buffer (by capacity).
    /// Buffers shared with `Bytes` handed out are counted in full.
    #[doc(hidden)]
    pub fn memory_footprint(&self) -> usize {
        use core::mem::size_of;
        let table = self.streams.capacity() * (size_of::<(u32, Stream)>() + 1);
        let buffers: usize = self
            .streams
            .values()
            .map(|s| s.send_buf.capacity() + s.recv_buf.capacity())
            .sum();
        let queues = (self.stream_ctrl.capacity() + self.data_q.capacity()) * size_of::<u32>()
            + self.ctrl.capacity() * size_of::<(Header, bool)>()
            + self.events.capacity() * size_of::<Event>()
            + if self.pings.spilled() {
                self.pings.capacity() * size_of::<PendingPing>()
            } else {
                0
            };
        size_of::<Session>() + table + buffers + queues
    }

    /// Sets the next stream id to open (tests of id exhaustion only). The
    /// parity must match the role.
    #[doc(hidden)]
    pub fn set_next_stream_id(&mut self, raw: u32) {
        let odd = raw % 2 == 1;
        assert_eq!(odd, self.role == Role::Client, "wrong parity for role");
        self.next_id = raw;
    }

    // --------------------------------------------------------------- internals

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    fn queue_ping(&mut self, user: bool) {
        let opaque = self.next_opaque;
        self.next_opaque = self.next_opaque.wrapping_add(1);
        self.pings.push(PendingPing {
            opaque,
            sent: None,
            user,
        });
        self.ctrl.push_back((
            Header::Ping {
                kind: PingKind::Request,
                opaque,
            },
            false,
        ));
    }

    /// When the oldest ping on the wire times out: `ping_timeout` after it
    /// was sent or after the last byte arrived, whichever is later.
    fn ping_deadline(&self) -> Option<Instant> {
        let oldest = self.pings.iter().filter_map(|p| p.sent).min()?;
        Some(oldest.max(self.last_rx) + self.config.ping_timeout)
    }

    /// Ends the session on a fatal error, queueing the GoAway it calls for.
    fn fail(&mut self, error: ConnectionError) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.ctrl.clear();
        self.queued_pongs = 0;
        self.queued_resets = 0;
        self.stream_ctrl.clear();
        self.data_q.clear();
        for s in self.streams.values_mut() {
            s.in_ctrl_q = false;
            s.in_data_q = false;
        }
        if let Some(code) = error.go_away_sent() {
            if self.local_go_away.is_none() {
                self.local_go_away = Some(code);
            }
            self.ctrl.push_back((Header::GoAway { code }, false));
        }
        self.close_error = Some(error.clone());
        self.events.push_back(Event::Closed { error: Some(error) });
    }

    fn on_header(&mut self, header: Header) -> Result<(), ConnectionError> {
        match header {
            Header::Ping {
                kind: PingKind::Request,
                opaque,
            } => {
                self.ctrl.push_back((
                    Header::Ping {
                        kind: PingKind::Response,
                        opaque,
                    },
                    false,
                ));
                self.queued_pongs += 1;
                Ok(())
            }
            Header::Ping {
                kind: PingKind::Response,
                opaque,
            } => self.on_pong(opaque),
            Header::GoAway { code } => {
                if self.remote_go_away.is_none() {
                    self.remote_go_away = Some(code);
                    self.events.push_back(Event::GoAwayReceived { code });
                }
                Ok(())
            }
            Header::Data { stream, flags, len } => self.on_stream_frame(stream, flags, len, true),
            Header::WindowUpdate {
                stream,
                flags,
                delta,
            } => self.on_stream_frame(stream, flags, delta, false),
        }
    }

    fn on_pong(&mut self, opaque: u32) -> Result<(), ConnectionError> {
        let index = self
            .pings
            .iter()
            .position(|p| p.opaque == opaque && p.sent.is_some())
            .ok_or(ConnectionError::UnexpectedPong { opaque })?;
        let ping = self.pings.remove(index);
        let sample = self
            .now
            .saturating_duration_since(ping.sent.unwrap_or(self.now));
        self.srtt = Some(match self.srtt {
            None => sample,
            Some(srtt) => (srtt * 7 + sample) / 8,
        });
        if ping.user {
            self.events.push_back(Event::Pong { rtt: sample });
        } else if let Some(interval) = self.config.keepalive_interval {
            self.keepalive_due = Some(self.now + interval);
        }
        Ok(())
    }

    /// The body of a Data frame (or nothing) follows; set the parser up for it.
    fn expect_body(&mut self, target: Option<StreamId>, len: u32, fin: bool) {
        self.rx = Rx::Body {
            target,
            remaining: len,
            fin,
        };
    }

    fn on_stream_frame(
        &mut self,
        id: StreamId,
        flags: StreamFlags,
        len: u32,
        is_data: bool,
    ) -> Result<(), ConnectionError> {
        let raw = id.get();
        let max_body = self.config.max_frame_body;
        if flags.syn() {
            if id.is_client_initiated() != (self.role == Role::Server) {
                return Err(ConnectionError::WrongParity { id });
            }
            if self.streams.contains_key(&raw) {
                return Err(ConnectionError::DuplicateSyn { id });
            }
            let initial = self.config.initial_window;
            if is_data && len > initial {
                return Err(ConnectionError::WindowExceeded {
                    id,
                    len,
                    window: initial,
                });
            }
            if is_data && len > max_body {
                return Err(ConnectionError::FrameTooLarge { len, max: max_body });
            }
            if flags.rst {
                if is_data {
                    self.expect_body(None, len, false);
                }
                return Ok(());
            }
            let refuse = self.local_go_away.is_some()
                || self.streams.len() >= self.config.max_streams
                || self.pending_accept >= self.config.accept_backlog;
            if refuse {
                self.queue_rst(id, 0, true);
                if is_data {
                    self.expect_body(None, len, false);
                }
                return Ok(());
            }
            let mut credit = DEFAULT_WINDOW;
            if !is_data {
                credit = credit
                    .checked_add(len)
                    .ok_or(ConnectionError::WindowOverflow { id })?;
            }
            let stream = Stream::new(
                Open::Pending,
                RecvWindow::new(initial, self.now),
                credit,
                initial - DEFAULT_WINDOW,
            );
            self.streams.insert(raw, stream);
            self.pending_accept += 1;
            self.budget_used += u64::from(initial);
            self.events.push_back(Event::InboundStream { id });
            if is_data {
                self.expect_body(Some(id), len, flags.fin);
            } else if flags.fin {
                self.on_remote_fin(id);
            }
            return Ok(());
        }

        let Some(s) = self.streams.get_mut(&raw) else {
            // Unknown or already freed stream: discard, not fatal.
            if is_data {
                if len > max_body {
                    return Err(ConnectionError::FrameTooLarge { len, max: max_body });
                }
                self.expect_body(None, len, false);
            }
            return Ok(());
        };
        if flags.rst {
            if is_data && len > max_body {
                return Err(ConnectionError::FrameTooLarge { len, max: max_body });
            }
            let code = if is_data { 0 } else { len };
            self.remote_reset(id, code);
            if is_data {
                self.expect_body(None, len, false);
            }
            return Ok(());
        }
        // Any other frame from the peer on a stream we opened means it
        // accepted it (an ACK is expected, but be lenient).
        if s.in_ack_backlog {
            s.in_ack_backlog = false;
            s.open = Open::Established;
            self.ack_backlog_used -= 1;
            if s.sendable() {
                enqueue(&mut self.data_q, &mut s.in_data_q, raw);
            }
            self.maybe_unblock_open();
        }
        let s = self.streams.get_mut(&raw).expect("looked up above");
        if !is_data {
            if len > 0 {
                s.send_credit = s
                    .send_credit
                    .checked_add(len)
                    .ok_or(ConnectionError::WindowOverflow { id })?;
                if s.sendable() {
                    enqueue(&mut self.data_q, &mut s.in_data_q, raw);
                }
            }
            if flags.fin {
                self.on_remote_fin(id);
            }
            return Ok(());
        }
        if s.recv != Recv::Open {
            // Data after FIN: discard, not fatal.
            if len > max_body {
                return Err(ConnectionError::FrameTooLarge { len, max: max_body });
            }
            self.expect_body(None, len, false);
            return Ok(());
        }
        if len > s.window.credit {
            return Err(ConnectionError::WindowExceeded {
                id,
                len,
                window: s.window.credit,
            });
        }
        if len > max_body {
            return Err(ConnectionError::FrameTooLarge { len, max: max_body });
        }
        self.expect_body(Some(id), len, flags.fin);
        Ok(())
    }

    /// Payload bytes for a stream (already checked against its window).
    fn deliver(&mut self, id: StreamId, bytes: Payload<'_>) {
        let Some(s) = self.streams.get_mut(&id.get()) else {
            return;
        };
        if s.recv != Recv::Open {
            return;
        }
        let n = match &bytes {
            Payload::Copied(b) => b.len(),
            Payload::Shared(b) => b.len(),
        } as u32;
        let ok = s.window.on_data(n);
        debug_assert!(ok, "frame length was checked against the window");
        match bytes {
            Payload::Copied(b) => {
                s.recv_buf.push(b);
                self.stats.bytes_received += u64::from(n);
            }
            Payload::Shared(b) => {
                s.recv_buf.push_shared(b);
                self.stats.bytes_received_zero_copy += u64::from(n);
            }
        }
        if s.notify_read && s.open != Open::Pending {
            s.notify_read = false;
            self.events.push_back(Event::StreamReadable { id });
        }
    }

    fn on_remote_fin(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id.get()) else {
            return;
        };
        if s.recv != Recv::Open {
            return;
        }
        s.recv = Recv::Fin;
        s.wu_pending = 0;
        if s.notify_read && s.open != Open::Pending {
            s.notify_read = false;
            self.events.push_back(Event::StreamReadable { id });
        }
    }

    fn remote_reset(&mut self, id: StreamId, code: u32) {
        let Some(s) = self.streams.get_mut(&id.get()) else {
            return;
        };
        if s.recv == Recv::Reset {
            return;
        }
        s.recv = Recv::Reset;
        s.send = Send::Reset;
        s.reset_code = code;
        s.recv_buf.clear();
        s.send_buf.clear();
        s.wu_pending = 0;
        if s.in_ack_backlog {
            s.in_ack_backlog = false;
            self.ack_backlog_used -= 1;
            self.maybe_unblock_open();
        }
        self.events.push_back(Event::StreamReset { id, code });
    }

    /// Local reset or reject: RST if the peer knows the stream, then free it.
    fn abort_stream(&mut self, id: StreamId, code: u32) {
        let Some(s) = self.streams.get(&id.get()) else {
            return;
        };
        let peer_knows = s.open != Open::SynQueued && s.recv != Recv::Reset;
        if peer_knows && !self.closed {
            self.queue_rst(id, code, false);
        }
        self.free(id, false);
    }

    /// Queues an RST; `refusal` when it answers a SYN we refuse (those are
    /// peer-driven and count against `max_queued_resets`).
    fn queue_rst(&mut self, id: StreamId, code: u32, refusal: bool) {
        let rst = Header::WindowUpdate {
            stream: id,
            flags: StreamFlags::RST,
            delta: code,
        };
        self.ctrl.push_back((rst, refusal));
        if refusal {
            self.queued_resets += 1;
        }
    }

    /// The application consumed `n` bytes of a stream: maybe grant window.
    fn on_consumed(&mut self, id: StreamId, n: usize) {
        let Some(s) = self.streams.get_mut(&id.get()) else {
            return;
        };
        if s.recv != Recv::Open {
            return;
        }
        let budget_left = self.config.receive_budget.saturating_sub(self.budget_used);
        let grant = s.window.on_consumed(
            n as u32,
            self.now,
            self.srtt,
            self.config.max_window,
            budget_left,
        );
        if let Some(g) = grant {
            self.budget_used += u64::from(g.growth);
            s.wu_pending = s.wu_pending.saturating_add(g.delta);
            if !self.closed {
                enqueue(&mut self.stream_ctrl, &mut s.in_ctrl_q, id.get());
            }
        }
    }

    /// Common checks of `read`/`read_chunk`.
    fn readable_stream(&mut self, id: StreamId) -> Result<&mut Stream, ReadError> {
        let s = self
            .streams
            .get_mut(&id.get())
            .ok_or(ReadError::UnknownStream)?;
        if s.open == Open::Pending {
            return Err(ReadError::NotAccepted);
        }
        if s.recv == Recv::Reset {
            let code = s.reset_code;
            s.end_seen = true;
            self.maybe_free(id);
            return Err(ReadError::Reset { code });
        }
        // Re-borrow to satisfy the borrow checker after the early returns.
        Ok(self.streams.get_mut(&id.get()).expect("present"))
    }

    /// What a read finds on an empty buffer: `Ok(())` for end-of-stream (also
    /// marks it seen and may free the stream), else session closed or
    /// blocked (which arms the readable event).
    fn read_empty(&mut self, id: StreamId) -> Result<(), ReadError> {
        let s = self.streams.get_mut(&id.get()).expect("checked by caller");
        if s.recv == Recv::Fin {
            s.end_seen = true;
            s.recv_buf.clear();
            self.maybe_free(id);
            return Ok(());
        }
        if self.closed {
            return Err(ReadError::SessionClosed);
        }
        s.notify_read = true;
        Err(ReadError::Blocked)
    }

    fn maybe_free(&mut self, id: StreamId) {
        if self.streams.get(&id.get()).is_some_and(Stream::finished) {
            let clean = self.streams[&id.get()].recv == Recv::Fin;
            self.free(id, clean);
        }
    }

    fn free(&mut self, id: StreamId, emit: bool) {
        let Some(s) = self.streams.remove(&id.get()) else {
            return;
        };
        self.budget_used -= u64::from(s.window.max);
        if s.in_ack_backlog {
            self.ack_backlog_used -= 1;
        }
        if s.open == Open::Pending {
            self.pending_accept -= 1;
        }
        if emit {
            self.events.push_back(Event::StreamClosed { id });
        }
        self.maybe_unblock_open();
        self.check_drained();
    }

    fn maybe_unblock_open(&mut self) {
        if self.open_blocked
            && self.streams.len() < self.config.max_streams
            && self.ack_backlog_used < self.config.ack_backlog
        {
            self.open_blocked = false;
            self.events.push_back(Event::StreamsAvailable);
        }
    }

    /// After our GoAway, the session ends once no stream is left.
    fn check_drained(&mut self) {
        if !self.closed && self.local_go_away.is_some() && self.streams.is_empty() {
            self.closed = true;
            self.stream_ctrl.clear();
            self.data_q.clear();
            self.events.push_back(Event::Closed { error: None });
        }
    }

    /// Produces the next frame; Data payloads are at most `max_payload` bytes.
    fn next_frame(&mut self, max_payload: usize) -> Option<Transmit> {
        if let Some((h, refusal)) = self.ctrl.pop_front() {
            if refusal {
                self.queued_resets -= 1;
            }
            match h {
                Header::Ping {
                    kind: PingKind::Request,
                    opaque,
                } => {
                    if let Some(p) = self.pings.iter_mut().find(|p| p.opaque == opaque) {
                        p.sent = Some(self.now);
                    }
                }
                Header::Ping {
                    kind: PingKind::Response,
                    ..
                } => self.queued_pongs -= 1,
                _ => {}
            }
            self.stats.frames_sent += 1;
            return Some(Transmit {
                header: h.encode(),
                payload: Bytes::new(),
            });
        }
        if self.closed {
            return None;
        }
        while let Some(raw) = self.stream_ctrl.pop_front() {
            let Some(s) = self.streams.get_mut(&raw) else {
                continue;
            };
            if !s.in_ctrl_q {
                continue;
            }
            s.in_ctrl_q = false;
            let id = StreamId::new(raw).expect("nonzero key");
            let Some(h) = s.take_ctrl(id) else { continue };
            if s.sendable() {
                enqueue(&mut self.data_q, &mut s.in_data_q, raw);
            }
            if s.send == Send::FinSent {
                self.maybe_free(id);
            }
            self.stats.frames_sent += 1;
            return Some(Transmit {
                header: h.encode(),
                payload: Bytes::new(),
            });
        }
        if max_payload == 0 {
            return None;
        }
        while let Some(raw) = self.data_q.pop_front() {
            let Some(s) = self.streams.get_mut(&raw) else {
                continue;
            };
            if !s.in_data_q {
                continue;
            }
            s.in_data_q = false;
            if !s.sendable() {
                continue;
            }
            let n = s
                .send_buf
                .front_len()
                .min(s.send_credit as usize)
                .min(self.config.split_send_size as usize)
                .min(max_payload);
            // The FIN never rides on a frame that carries data: it follows
            // in a frame of its own (a bare WindowUpdate from the
            // stream-control queue), as rust-yamux, go-yamux and js-libp2p
            // send it. js-libp2p's yamux applies a frame's flags before its
            // payload and drops the payload when that FIN ends the stream.
            if s.send == Send::FinQueued && n == s.send_buf.len() {
                enqueue(&mut self.stream_ctrl, &mut s.in_ctrl_q, raw);
            }
            let payload = s.send_buf.split_front(n);
            s.send_credit -= n as u32;
            if s.sendable() {
                enqueue(&mut self.data_q, &mut s.in_data_q, raw);
            }
            let id = StreamId::new(raw).expect("nonzero key");
            if s.notify_write
                && s.send == Send::Open
                && s.send_buf.len() <= self.config.max_stream_send_buffer / 2
            {
                s.notify_write = false;
                self.events.push_back(Event::StreamWritable { id });
            }
            let header = Header::Data {
                stream: id,
                flags: StreamFlags::NONE,
                len: n as u32,
            };
            self.stats.frames_sent += 1;
            return Some(Transmit {
                header: header.encode(),
                payload,
            });
        }
        None
    }
}

fn enqueue(queue: &mut VecDeque<u32>, flag: &mut bool, raw: u32) {
    if !*flag {
        *flag = true;
        queue.push_back(raw);
    }
}

#[cfg(test)]
mod transmit_tests {
    use super::*;

    #[test]
    fn a_frame_written_in_parts_is_the_frame_written_whole() {
        let frame = Transmit {
            header: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            payload: Bytes::from_static(b"payload bytes"),
        };
        let mut whole = Vec::new();
        frame.write_to(&mut whole);
        for part in 1..=whole.len() + 1 {
            let mut out = Vec::new();
            let mut done = 0;
            while done < frame.wire_len() {
                let n = frame.write_part_to(&mut out, done, part);
                assert!(n > 0 && n <= part, "part {part}: wrote {n}");
                done += n;
            }
            assert_eq!(out, whole, "in parts of {part}");
            assert_eq!(
                frame.write_part_to(&mut out, done, part),
                0,
                "nothing past the end"
            );
        }
        assert_eq!(frame.write_part_to(&mut Vec::new(), 0, 0), 0);
    }
}
