//! Connection security: `/noise` (XX, the libp2p default) and
//! `/plaintext/2.0.0` (tests and trusted networks).
//!
//! Each protocol is a handshake machine with the same shape: our first
//! message is ready in `poll_transmit` at once, `handle_read` consumes exactly
//! the handshake and leaves what follows to the next layer, and one `Done` or
//! `Failed` event ends it.
pub mod noise;
pub mod plaintext;
