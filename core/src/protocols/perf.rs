//! `/perf/1.0.0` (libp2p/specs `perf/perf.md`): a client-driven benchmark
//! on one stream.
//!
//! The client opens a stream, writes how many bytes it wants back as one
//! big-endian `u64` ([`HEADER_LEN`] bytes; zero and `u64::MAX` are both
//! valid), uploads any number of bytes and closes its sending side. The
//! server reads the number, reads and discards everything up to the
//! client's close, only then sends the number of bytes asked for, and
//! closes. The client reads to the server's close; the bytes are
//! meaningless (we send zeros, as rust-libp2p does).
//!
//! The spec says a node SHOULD NOT serve perf by default (a client asks
//! the server for any amount of work): the node serves it only when told
//! to ([`PerfConfig::serve`](crate::node::PerfConfig::serve)).
//!
//! ```
//! use sansp2p::protocols::perf::{decode_header, encode_header};
//!
//! let header = encode_header(1 << 20);
//! assert_eq!(header, [0, 0, 0, 0, 0, 0x10, 0, 0]);
//! assert_eq!(decode_header(header), 1 << 20);
//! ```

/// The protocol name.
pub const PROTOCOL: &str = "/perf/1.0.0";

/// Size of the client's request: the download size as a big-endian `u64`.
pub const HEADER_LEN: usize = 8;

/// The client's request for `download` bytes back.
pub fn encode_header(download: u64) -> [u8; HEADER_LEN] {
    download.to_be_bytes()
}

/// How many bytes a request asks for.
pub fn decode_header(header: [u8; HEADER_LEN]) -> u64 {
    u64::from_be_bytes(header)
}
