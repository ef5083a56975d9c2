//! Yamux (`/yamux/1.0.0`): frame codec and a sans-IO session machine.
//!
//! - [`frame`]: the 12-byte header as pure functions ([`Header::encode`],
//!   [`Header::decode`]); illegal flag/type combinations cannot be built.
//! - [`Session`]: one multiplexed connection, for either [`Role`]. Bytes in
//!   through [`Session::handle_read`], frames out through
//!   [`Session::poll_transmit`], events through [`Session::poll_event`],
//!   timers through [`Session::poll_timeout`]/[`Session::handle_timeout`].
//! - [`Config`]: every limit, with the reference defaults; memory a peer can
//!   make us hold is bounded by it.
//!
//! After any input or command, drain `poll_transmit` and `poll_event` until
//! both return `None`, then sleep until `poll_timeout()` or new input.
//!
//! # Example: a stream between two in-memory sessions
//!
//! ```
//! use sansp2p::time::Instant;
//! use sansp2p::yamux::{Config, Event, Role, Session};
//!
//! let now = Instant::ZERO;
//! let mut client = Session::new(now, Role::Client, Config::default()).unwrap();
//! let mut server = Session::new(now, Role::Server, Config::default()).unwrap();
//!
//! // Move everything one side wants to send into the other.
//! fn pump(from: &mut Session, to: &mut Session, now: Instant) {
//!     while let Some(frame) = from.poll_transmit(now) {
//!         let mut wire = Vec::new();
//!         frame.write_to(&mut wire);
//!         assert_eq!(to.handle_read(now, &wire), wire.len());
//!     }
//! }
//!
//! let id = client.open_stream().unwrap();
//! client.write(id, b"hello").unwrap();
//! client.close(id).unwrap();
//! pump(&mut client, &mut server, now);
//!
//! assert_eq!(server.poll_event(), Some(Event::InboundStream { id }));
//! server.accept(id).unwrap();
//! let mut buf = [0u8; 16];
//! let n = server.read(id, &mut buf).unwrap();
//! assert_eq!(&buf[..n], b"hello");
//! assert_eq!(server.read(id, &mut buf), Ok(0)); // the client's FIN
//!
//! server.write(id, b"bye").unwrap();
//! server.close(id).unwrap();
//! pump(&mut server, &mut client, now);
//! let chunk = client.read_chunk(id, usize::MAX).unwrap().unwrap(); // zero-copy
//! assert_eq!(&chunk[..], b"bye");
//! assert_eq!(client.read_chunk(id, usize::MAX), Ok(None));
//! // Both directions finished and read: the client freed the stream.
//! assert!(!client.contains_stream(id));
//! ```

mod buffer;
mod config;
mod error;
mod flow;
pub mod frame;
mod session;
mod stream;

pub use config::Config;
pub use error::{
    AcceptError, CloseError, ConnectionError, FrameError, GoAwayError, OpenError, ReadError,
    ResetError, SessionConfigError, SessionPingError, WriteError,
};
pub use frame::{
    FrameType, GoAwayCode, Handshake, Header, PingKind, StreamFlags, StreamId, DEFAULT_WINDOW,
    HEADER_LEN,
};
pub use session::{Event, Role, Session, Stats, Transmit, SHARE_FRACTION, SHARE_MIN};
