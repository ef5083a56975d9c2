//! Yamux: frame codec and session (work in progress).
