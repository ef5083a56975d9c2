//! Liveness: go-filecoin's heartbeat service and ipfs-cluster's peer
//! monitor as sans-IO machines.
//!
//! - [`heartbeat`]: the `fil/heartbeat/1.0.0` wire format (one JSON object
//!   per line) and the [`Beater`](heartbeat::Beater), which keeps a stream
//!   open to an aggregator and writes a heartbeat on it every period;
//! - [`aggregator`]: the receiving side, an incremental, bounded decoder
//!   per inbound stream;
//! - [`monitor`]: the [`PeerMonitor`](monitor::PeerMonitor), metrics per
//!   peer in bounded windows and alerts when a peer's metric expires, once
//!   per outage.

pub mod aggregator;
pub mod heartbeat;
pub mod monitor;
