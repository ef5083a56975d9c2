//! `/ipfs/ping/1.0.0`: the dialer writes 32 random bytes, the listener echoes
//! them; repeatable on one stream. The round trip time is the answer.

use core::time::Duration;

/// The protocol name.
pub const PROTOCOL: &str = "/ipfs/ping/1.0.0";

/// Size of one ping payload.
pub const PAYLOAD_LEN: usize = 32;

/// How long to wait for the echo before the ping fails (go-libp2p, rust-libp2p).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
