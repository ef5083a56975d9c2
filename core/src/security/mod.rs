//! Connection security: plaintext/2.0.0 (noise comes next).
//!
//! Each protocol is a handshake machine with the same shape: our first
//! message is ready in `poll_transmit` at once, `handle_read` consumes exactly
//! the handshake and leaves what follows to the next layer, and one `Done` or
//! `Failed` event ends it.
pub mod plaintext;
