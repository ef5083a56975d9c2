//! Built-in protocols the node serves on every connection (identify and
//! ping) and on request (perf).
//!
//! These modules hold the wire formats and constants; the node drives them
//! over negotiated streams.

pub mod identify;
pub mod perf;
pub mod ping;
