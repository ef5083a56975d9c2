//! multistream-select 1.0.0: agreeing on a protocol for a connection or stream.
//!
//! [`codec`] holds the message format; [`Negotiator`] the machine for dialer
//! and listener, including lazy (`V1Lazy`) negotiation and `ls`.

pub mod codec;
mod negotiator;

pub use codec::{Message, MessageError, PROTOCOL_ID};
pub use negotiator::{
    Config, DecisionError, Event, NegotiationError, Negotiator, NegotiatorConfigError,
    ProtocolName, ProtocolViolation,
};

#[cfg(test)]
mod tests;
