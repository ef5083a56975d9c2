//! # sansp2p
//!
//! libp2p's connection machinery as pure state machines: no sockets, no
//! clocks, no threads and no global randomness. Bytes, timer expiries and
//! dial results go in; bytes to write, actions and events come out. Adapters
//! for tokio, smol, async-std and mio bind the machines to real sockets.
//!
//! ## The shape of every machine
//!
//! Each machine sorts its methods the same way:
//!
//! 1. getters (`&self`, no effects);
//! 2. inputs, `handle_*`: bytes read, a timer firing (`now` passed in);
//! 3. commands from the application, returning a small `Result`;
//! 4. outputs, drained until empty: `poll_transmit` (bytes to write),
//!    `poll_event` (what happened), `poll_timeout` (when to wake it).
//!
//! 5. composites (the node) also offer one `poll_output` that yields all
//!    of the above in turn and ends with the timeout.
//!
//! **When to call again:** after any input or command, drain the outputs
//! until they are empty, then sleep until `poll_timeout()` or new input.
//!
//! **Time, one rule:** inputs and commands that depend on time take
//! `now: Instant` as their first argument after `self`; a machine keeps the
//! latest `now` it saw and never moves backwards (an older `now` counts as
//! the latest). Constructors take `now` first when they need it, then the
//! role or identity, then the configuration.
//!
//! ## Example: multistream-select in memory
//!
//! ```
//! use sansp2p::multistream::{Event, Negotiator};
//!
//! let mut dialer = Negotiator::dialer(["/yamux/1.0.0"]).unwrap();
//! let mut listener = Negotiator::listener(["/mplex/6.7.0", "/yamux/1.0.0"]).unwrap();
//!
//! let (mut to_listener, mut to_dialer) = (Vec::new(), Vec::new());
//! dialer.poll_transmit(&mut to_listener);
//! listener.handle_read(&to_listener);
//! listener.poll_transmit(&mut to_dialer);
//! dialer.handle_read(&to_dialer);
//!
//! assert!(matches!(dialer.poll_event(), Some(Event::Negotiated { protocol }) if protocol == "/yamux/1.0.0"));
//! assert!(matches!(listener.poll_event(), Some(Event::Negotiated { protocol }) if protocol == "/yamux/1.0.0"));
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod addr;
pub mod dial;
pub mod identity;
pub mod liveness;
pub mod multistream;
pub mod node;
pub mod peers;
pub mod protocols;
pub mod relay;
pub mod security;
pub mod time;
pub mod yamux;

mod collections;
mod varint;

pub use identity::{Keypair, PeerId, PublicKey};
pub use time::Instant;
