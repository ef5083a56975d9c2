//! Keeping peers: the connection manager (and, from another author, the
//! peer store). Both are policy machines: they take facts (connections
//! opened and closed, tags, protections) and emit actions in their own
//! vocabulary, knowing nothing of sockets or of the node.

pub mod connmgr;
pub mod store;
