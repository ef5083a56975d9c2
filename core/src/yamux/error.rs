//! Error types: one small enum per operation, one fatal [`ConnectionError`].

use core::time::Duration;

use super::frame::{FrameType, GoAwayCode, StreamId};

/// A frame header that is not valid yamux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The version byte is not 0.
    #[error("unsupported yamux version {0}")]
    UnsupportedVersion(u8),
    /// The type byte is not one of Data, WindowUpdate, Ping, GoAway.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// Flag bits that this frame type may not carry (unknown bits, SYN with
    /// ACK, a Ping that is not exactly SYN or ACK, a GoAway with flags).
    #[error("invalid flags {flags:#06x} on a {frame_type:?} frame")]
    InvalidFlags {
        /// The frame's type.
        frame_type: FrameType,
        /// The flags as received.
        flags: u16,
    },
    /// A Ping or GoAway addressed to a stream instead of the session.
    #[error("{frame_type:?} frame on stream {stream}; it belongs to the session (0)")]
    SessionFrameOnStream {
        /// The frame's type.
        frame_type: FrameType,
        /// The non-zero stream id it carried.
        stream: u32,
    },
    /// A Data or WindowUpdate frame addressed to stream 0.
    #[error("{frame_type:?} frame on stream 0")]
    StreamFrameOnSession {
        /// The frame's type.
        frame_type: FrameType,
    },
}

/// Why a [`Config`](super::Config) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionConfigError {
    /// A limit that must be at least 1 is 0 (the field is named).
    #[error("`{0}` must be at least 1")]
    Zero(&'static str),
    /// `initial_window` below the 256 KiB every peer assumes.
    #[error("initial_window {0} is below the protocol's 262144")]
    InitialWindowTooSmall(u32),
    /// `max_window` smaller than `initial_window`.
    #[error("max_window {max} is below initial_window {initial}")]
    MaxWindowBelowInitial {
        /// `max_window`.
        max: u32,
        /// `initial_window`.
        initial: u32,
    },
    /// The receive budget cannot give every allowed stream its initial window.
    #[error("receive_budget {budget} < initial_window * max_streams = {needed}")]
    BudgetTooSmall {
        /// `receive_budget`.
        budget: u64,
        /// `initial_window * max_streams`.
        needed: u64,
    },
    /// `split_send_size` larger than `max_frame_body`: we would send frames we
    /// ourselves refuse to read.
    #[error("split_send_size {split} exceeds max_frame_body {max_body}")]
    SplitAboveFrameBody {
        /// `split_send_size`.
        split: u32,
        /// `max_frame_body`.
        max_body: u32,
    },
    /// `max_frame_body` below 16 KiB would refuse frames every peer sends.
    #[error("max_frame_body {0} is below 16384")]
    FrameBodyTooSmall(u32),
    /// A zero keep-alive interval would ping in a loop.
    #[error("keepalive_interval must not be zero")]
    ZeroKeepAlive,
    /// A zero ping timeout would fail every ping.
    #[error("ping_timeout must not be zero")]
    ZeroPingTimeout,
}

/// Why [`Session::open_stream`](super::Session::open_stream) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// `max_streams` streams are alive; wait for [`Event::StreamsAvailable`](super::Event::StreamsAvailable).
    #[error("too many streams")]
    TooManyStreams,
    /// `ack_backlog` opened streams are not acknowledged yet (refused, not
    /// queued); wait for [`Event::StreamsAvailable`](super::Event::StreamsAvailable).
    #[error("too many streams waiting for the peer's ACK")]
    AckBacklogFull,
    /// Every stream id of our parity below `u32::MAX - 1` has been used.
    #[error("stream ids exhausted")]
    IdsExhausted,
    /// We sent GoAway.
    #[error("we are going away")]
    GoingAway,
    /// The peer sent GoAway.
    #[error("the peer went away ({0})")]
    RemoteGoAway(GoAwayCode),
    /// The session is closed.
    #[error("session closed")]
    SessionClosed,
}

/// Why [`Session::accept`](super::Session::accept) or
/// [`Session::reject`](super::Session::reject) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// No such stream (never existed, or already gone).
    #[error("unknown stream")]
    UnknownStream,
    /// The stream is not an inbound stream waiting for a decision.
    #[error("stream is not waiting to be accepted")]
    NotPending,
    /// The session is closed.
    #[error("session closed")]
    SessionClosed,
}

/// Why [`Session::write`](super::Session::write) wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The send buffer is full; wait for [`Event::StreamWritable`](super::Event::StreamWritable).
    #[error("send buffer full")]
    Blocked,
    /// No such stream.
    #[error("unknown stream")]
    UnknownStream,
    /// An inbound stream that was not accepted yet.
    #[error("stream not accepted yet")]
    NotAccepted,
    /// We already closed (FIN) our sending direction.
    #[error("stream closed for writing")]
    Closed,
    /// The peer reset the stream (code from a go-libp2p RST, else 0).
    #[error("stream reset by peer (code {code})")]
    Reset {
        /// Error code carried by the RST, 0 when none.
        code: u32,
    },
    /// The session is closed.
    #[error("session closed")]
    SessionClosed,
}

/// Why [`Session::read`](super::Session::read) returned no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Nothing buffered yet; wait for [`Event::StreamReadable`](super::Event::StreamReadable).
    #[error("no data available")]
    Blocked,
    /// No such stream.
    #[error("unknown stream")]
    UnknownStream,
    /// An inbound stream that was not accepted yet.
    #[error("stream not accepted yet")]
    NotAccepted,
    /// The peer reset the stream; data it had sent and we had not read was
    /// discarded.
    #[error("stream reset by peer (code {code})")]
    Reset {
        /// Error code carried by the RST, 0 when none.
        code: u32,
    },
    /// The session closed before the peer finished this stream.
    #[error("session closed")]
    SessionClosed,
}

/// Why [`Session::close`](super::Session::close) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// No such stream.
    #[error("unknown stream")]
    UnknownStream,
    /// An inbound stream that was not accepted yet (use `reject`).
    #[error("stream not accepted yet")]
    NotAccepted,
    /// The peer reset the stream.
    #[error("stream reset by peer (code {code})")]
    Reset {
        /// Error code carried by the RST, 0 when none.
        code: u32,
    },
    /// The session is closed.
    #[error("session closed")]
    SessionClosed,
}

/// Why [`Session::reset`](super::Session::reset) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResetError {
    /// No such stream.
    #[error("unknown stream")]
    UnknownStream,
}

/// Why [`Session::ping`](super::Session::ping) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionPingError {
    /// `max_outstanding_pings` of our pings await their pong.
    #[error("too many pings outstanding")]
    TooManyOutstanding,
    /// The session is closed.
    #[error("session closed")]
    SessionClosed,
}

/// Why [`Session::go_away`](super::Session::go_away) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GoAwayError {
    /// A GoAway was already sent.
    #[error("GoAway already sent")]
    AlreadySent,
    /// The session is closed.
    #[error("session closed")]
    SessionClosed,
}

/// The fatal errors that end a session. [`ConnectionError::go_away_sent`] says
/// which GoAway frame (if any) went out because of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer sent a header that is not valid yamux. GoAway(1) sent.
    #[error("invalid frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer opened a stream with an id of our parity. GoAway(1) sent.
    #[error("peer opened stream {id} with our parity")]
    WrongParity {
        /// The offending id.
        id: StreamId,
    },
    /// The peer sent SYN for a stream that exists. GoAway(1) sent.
    #[error("duplicate SYN for stream {id}")]
    DuplicateSyn {
        /// The offending id.
        id: StreamId,
    },
    /// The peer sent more data than the window allowed (including a first
    /// Data|SYN frame larger than the initial window). GoAway(1) sent.
    #[error("stream {id}: {len} bytes sent with only {window} bytes of window")]
    WindowExceeded {
        /// The stream.
        id: StreamId,
        /// The frame's length.
        len: u32,
        /// The window that was left.
        window: u32,
    },
    /// A Data frame longer than `max_frame_body`. GoAway(1) sent.
    #[error("data frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// The frame's length.
        len: u32,
        /// `max_frame_body`.
        max: u32,
    },
    /// A window update that would push the send window past `u32::MAX`.
    /// GoAway(1) sent.
    #[error("stream {id}: window update overflows u32")]
    WindowOverflow {
        /// The stream.
        id: StreamId,
    },
    /// A Ping response (ACK) we have no request outstanding for. GoAway(1) sent.
    #[error("unexpected pong {opaque}")]
    UnexpectedPong {
        /// The opaque value it echoed.
        opaque: u32,
    },
    /// Nothing arrived for `ping_timeout` after we sent a ping. No GoAway sent
    /// (the peer is presumed gone).
    #[error("no pong within {0:?}")]
    KeepAliveTimeout(Duration),
    /// The transport reached end-of-file while streams were open or in the
    /// middle of a frame. No GoAway sent.
    #[error("transport closed")]
    TransportClosed,
}

impl ConnectionError {
    /// The GoAway code sent to the peer because of this error, if one was.
    pub fn go_away_sent(&self) -> Option<GoAwayCode> {
        match self {
            ConnectionError::Frame(_)
            | ConnectionError::WrongParity { .. }
            | ConnectionError::DuplicateSyn { .. }
            | ConnectionError::WindowExceeded { .. }
            | ConnectionError::FrameTooLarge { .. }
            | ConnectionError::WindowOverflow { .. }
            | ConnectionError::UnexpectedPong { .. } => Some(GoAwayCode::PROTOCOL_ERROR),
            ConnectionError::KeepAliveTimeout(_) | ConnectionError::TransportClosed => None,
        }
    }
}
