//! The trace hash: FNV-1a over every event, its time and its host.

use std::fmt::{self, Write as _};

use sansp2p::node::Event;
use sansp2p::Instant;

use crate::HostId;

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// A 64-bit FNV-1a digest. Events are hashed through their `Debug` form,
/// so every field counts without the core having to define a hash of its
/// own.
#[derive(Debug, Clone, Copy)]
pub struct TraceHasher(u64);

impl Default for TraceHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceHasher {
    /// The empty digest.
    pub fn new() -> Self {
        TraceHasher(OFFSET)
    }

    /// Adds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
    }

    /// Adds one event of `host` at `now`.
    pub fn event(&mut self, now: Instant, host: HostId, event: &Event) {
        self.write(&now.as_nanos().to_le_bytes());
        self.write(&host.0.to_le_bytes());
        // Formatting into the hasher allocates nothing.
        let _ = write!(self, "{event:?}");
    }

    /// The digest so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

impl fmt::Write for TraceHasher {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}
