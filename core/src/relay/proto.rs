//! The circuit relay v2 messages, as prost structs, and their framing:
//! `uvarint(len) | protobuf`, at most [`MAX_MESSAGE_LEN`] bytes.
//!
//! Field 1 of [`HopMessage`] and [`StopMessage`] (the type), `Peer.id` and
//! `Reservation.expire` are encoded even when zero: rust-libp2p decodes a
//! proto2 schema in which they are required, so a RESERVE (type 0) without
//! its type field would be refused there.
//!
//! ```
//! use sansp2p::relay::proto::{Frame, HopMessage, HopType, MessageReader};
//!
//! let bytes = HopMessage::reserve().to_frame();
//! assert_eq!(bytes, [0x02, 0x08, 0x00]); // length 2, field 1 = 0, written
//!
//! let mut reader = MessageReader::<HopMessage>::new();
//! let mut input = bytes.clone();
//! input.extend_from_slice(b"next");
//! let (used, message) = reader.feed(&input).unwrap();
//! assert_eq!(message.unwrap().kind(), Some(HopType::Reserve));
//! assert_eq!(&input[used..], b"next"); // nothing read past the message
//! ```

use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::varint::{self, FrameError, FrameReader};

/// Largest message (the protobuf, without its length prefix) read or written.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// `HopMessage.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration)]
#[repr(i32)]
pub enum HopType {
    /// Client -> relay: reserve a slot.
    Reserve = 0,
    /// Client -> relay: open a circuit to `peer`.
    Connect = 1,
    /// Relay -> client: the answer.
    Status = 2,
}

/// `StopMessage.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration)]
#[repr(i32)]
pub enum StopType {
    /// Relay -> target: `peer` wants a circuit to you.
    Connect = 0,
    /// Target -> relay: the answer.
    Status = 1,
}

/// The `Status` codes of both protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Status {
    /// Zero: never sent on purpose.
    Unused = 0,
    /// Accepted.
    Ok = 100,
    /// The relay will not reserve for this peer.
    ReservationRefused = 200,
    /// A relay resource limit (reservations, circuits) is reached.
    ResourceLimitExceeded = 201,
    /// Not allowed (for example over a relayed connection).
    PermissionDenied = 202,
    /// The relay could not reach the target, or the target refused.
    ConnectionFailed = 203,
    /// The target holds no reservation.
    NoReservation = 204,
    /// The message could not be decoded.
    MalformedMessage = 400,
    /// A message of the wrong type for this point of the exchange.
    UnexpectedMessage = 401,
}

/// The message of `/libp2p/circuit/relay/0.2.0/hop`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HopMessage {
    /// A [`HopType`]; always encoded.
    #[prost(enumeration = "HopType", required, tag = "1")]
    pub r#type: i32,
    /// CONNECT: the target. STATUS of a CONNECT from the relay: unused.
    #[prost(message, optional, tag = "2")]
    pub peer: Option<Peer>,
    /// STATUS OK of a RESERVE: the reservation.
    #[prost(message, optional, tag = "3")]
    pub reservation: Option<Reservation>,
    /// STATUS OK: the limit the relay applies to circuits.
    #[prost(message, optional, tag = "4")]
    pub limit: Option<Limit>,
    /// STATUS: a [`Status`].
    #[prost(enumeration = "Status", optional, tag = "5")]
    pub status: Option<i32>,
}

/// The message of `/libp2p/circuit/relay/0.2.0/stop`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopMessage {
    /// A [`StopType`]; always encoded.
    #[prost(enumeration = "StopType", required, tag = "1")]
    pub r#type: i32,
    /// CONNECT: the peer that opened the circuit.
    #[prost(message, optional, tag = "2")]
    pub peer: Option<Peer>,
    /// CONNECT: the limit the relay applies to the circuit.
    #[prost(message, optional, tag = "3")]
    pub limit: Option<Limit>,
    /// STATUS: a [`Status`].
    #[prost(enumeration = "Status", optional, tag = "4")]
    pub status: Option<i32>,
}

/// A peer and (optionally) its addresses, as binary multiaddrs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    /// The peer id's bytes; always encoded.
    #[prost(bytes = "vec", required, tag = "1")]
    pub id: Vec<u8>,
    /// Binary multiaddrs.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub addrs: Vec<Vec<u8>>,
}

/// A granted reservation.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reservation {
    /// Unix time (seconds) when it lapses; always encoded.
    #[prost(uint64, required, tag = "1")]
    pub expire: u64,
    /// The relay's addresses (binary multiaddrs) to advertise.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub addrs: Vec<Vec<u8>>,
    /// A signed envelope holding a [`Voucher`].
    #[prost(bytes = "vec", optional, tag = "3")]
    pub voucher: Option<Vec<u8>>,
}

/// What the relay allows a circuit; absent or zero fields mean no limit.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Limit {
    /// Seconds the circuit may live.
    #[prost(uint32, optional, tag = "1")]
    pub duration: Option<u32>,
    /// Bytes the circuit may carry in each direction.
    #[prost(uint64, optional, tag = "2")]
    pub data: Option<u64>,
}

/// The payload of a reservation voucher's envelope (payload type 0x0302).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Voucher {
    /// The relay's peer id.
    #[prost(bytes = "vec", required, tag = "1")]
    pub relay: Vec<u8>,
    /// The reserving peer's id.
    #[prost(bytes = "vec", required, tag = "2")]
    pub peer: Vec<u8>,
    /// Unix seconds, as in the reservation.
    #[prost(uint64, required, tag = "3")]
    pub expiration: u64,
}

impl HopMessage {
    /// A RESERVE request.
    pub fn reserve() -> Self {
        HopMessage {
            r#type: HopType::Reserve as i32,
            ..Default::default()
        }
    }

    /// A CONNECT request for `target` (peer id bytes).
    pub fn connect(target: Vec<u8>) -> Self {
        HopMessage {
            r#type: HopType::Connect as i32,
            peer: Some(Peer {
                id: target,
                addrs: Vec::new(),
            }),
            ..Default::default()
        }
    }

    /// A STATUS answer.
    pub fn with_status(status: Status) -> Self {
        HopMessage {
            r#type: HopType::Status as i32,
            status: Some(status as i32),
            ..Default::default()
        }
    }

    /// The type, `None` when the number is not one the spec defines.
    pub fn kind(&self) -> Option<HopType> {
        HopType::try_from(self.r#type).ok()
    }

    /// The status of a STATUS message (`None` when absent or unknown).
    pub fn status_code(&self) -> Option<Status> {
        self.status.and_then(|s| Status::try_from(s).ok())
    }
}

impl StopMessage {
    /// A CONNECT from the relay, announcing `initiator` (peer id bytes).
    pub fn connect(initiator: Vec<u8>, limit: Option<Limit>) -> Self {
        StopMessage {
            r#type: StopType::Connect as i32,
            peer: Some(Peer {
                id: initiator,
                addrs: Vec::new(),
            }),
            limit,
            status: None,
        }
    }

    /// A STATUS answer.
    pub fn with_status(status: Status) -> Self {
        StopMessage {
            r#type: StopType::Status as i32,
            status: Some(status as i32),
            ..Default::default()
        }
    }

    /// The type, `None` when the number is not one the spec defines.
    pub fn kind(&self) -> Option<StopType> {
        StopType::try_from(self.r#type).ok()
    }

    /// The status of a STATUS message (`None` when absent or unknown).
    pub fn status_code(&self) -> Option<Status> {
        self.status.and_then(|s| Status::try_from(s).ok())
    }
}

/// A relay message with its framing.
pub trait Frame: prost::Message + Default + Sized {
    /// `uvarint(len) | protobuf`.
    fn to_frame(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.push_frame(&mut out);
        out
    }

    /// Appends `uvarint(len) | protobuf` to `out`.
    fn push_frame(&self, out: &mut Vec<u8>) {
        varint::push(self.encoded_len() as u64, out);
        // Writing into a Vec cannot run out of room.
        let _ = self.encode(out);
    }
}

impl Frame for HopMessage {}
impl Frame for StopMessage {}

/// Why bytes are not a relay message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The length prefix is not a minimal varint of at most 10 bytes.
    #[error("malformed length prefix")]
    BadLength,
    /// The announced length is above [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes exceeds the limit of {MAX_MESSAGE_LEN}")]
    TooLong {
        /// The announced length.
        len: u64,
    },
    /// The body is not a valid protobuf of the expected message.
    #[error("malformed protobuf")]
    Protobuf,
}

impl From<FrameError> for MessageError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::BadLength => MessageError::BadLength,
            FrameError::TooLong { len } => MessageError::TooLong { len },
        }
    }
}

/// Reads one framed message from bytes fed in pieces of any size, taking
/// exactly the message's bytes: what follows stays with the caller.
/// Memory is bounded by [`MAX_MESSAGE_LEN`].
#[derive(Debug)]
pub struct MessageReader<M> {
    frame: FrameReader,
    _message: PhantomData<fn() -> M>,
}

impl<M: Frame> Default for MessageReader<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Frame> MessageReader<M> {
    /// A reader waiting for the first byte of a message.
    pub fn new() -> Self {
        MessageReader {
            frame: FrameReader::default(),
            _message: PhantomData,
        }
    }

    /// Consumes bytes of the message from `data`. Returns how many were
    /// taken and, once complete, the message (the reader is then ready for
    /// the next one).
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<M>), MessageError> {
        let (used, done) = self.frame.feed(data, MAX_MESSAGE_LEN)?;
        if !done {
            return Ok((used, None));
        }
        let message = M::decode(self.frame.body()).map_err(|_| MessageError::Protobuf);
        self.frame.clear();
        Ok((used, Some(message?)))
    }
}

/// Decodes one complete framed message at the start of `bytes`; returns it
/// and the number of bytes it took. `Ok(None)` when `bytes` ends first.
pub fn decode<M: Frame>(bytes: &[u8]) -> Result<Option<(M, usize)>, MessageError> {
    let (used, message) = MessageReader::<M>::new().feed(bytes)?;
    Ok(message.map(|m| (m, used)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use prost::Message as _;

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    #[test]
    fn vectors_of_every_message_type() {
        // Field numbers and wire types by hand: tag = field << 3 | wire type.
        let id = vec![0x00, 0x02, 0xaa, 0xbb];
        let cases: [(Vec<u8>, &str); 6] = [
            // RESERVE: 08 00, the zero type written explicitly.
            (HopMessage::reserve().to_frame(), "020800"),
            // CONNECT: 08 01 | 12 06 (0a 04 <id>)
            (
                HopMessage::connect(id.clone()).to_frame(),
                "0a080112060a040002aabb",
            ),
            // STATUS NO_RESERVATION (204 = cc 01): 08 02 | 28 cc 01
            (
                HopMessage::with_status(Status::NoReservation).to_frame(),
                "05080228cc01",
            ),
            // STOP CONNECT (type 0 written) with a limit {duration 120, data 131072}
            (
                StopMessage::connect(
                    id.clone(),
                    Some(Limit {
                        duration: Some(120),
                        data: Some(131_072),
                    }),
                )
                .to_frame(),
                "12080012060a040002aabb1a06087810808008",
            ),
            // STOP STATUS OK (100 = 64)
            (
                StopMessage::with_status(Status::Ok).to_frame(),
                "0408012064",
            ),
            // STATUS OK with a reservation {expire 0 written, one addr, voucher}
            (
                HopMessage {
                    reservation: Some(Reservation {
                        expire: 0,
                        addrs: vec![vec![1, 2]],
                        voucher: Some(vec![9]),
                    }),
                    ..HopMessage::with_status(Status::Ok)
                }
                .to_frame(),
                "0f08021a090800120201021a01092864",
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(data_encoding::HEXLOWER.encode(&bytes), want);
        }
    }

    #[test]
    fn a_message_without_its_type_field_decodes_as_type_zero() {
        // What a proto3 peer may send for RESERVE: an empty message.
        let (m, used) = decode::<HopMessage>(&hex("00")).unwrap().unwrap();
        assert_eq!((m.kind(), used), (Some(HopType::Reserve), 1));
        let (m, _) = decode::<StopMessage>(&hex("00")).unwrap().unwrap();
        assert_eq!(m.kind(), Some(StopType::Connect));
    }

    #[test]
    fn unknown_numbers_are_reported_not_guessed() {
        let m = HopMessage {
            r#type: 7,
            status: Some(555),
            ..Default::default()
        };
        let (m, _) = decode::<HopMessage>(&m.to_frame()).unwrap().unwrap();
        assert_eq!((m.kind(), m.status_code()), (None, None));
    }

    #[test]
    fn limits_and_garbage_are_typed_errors() {
        let mut big = Vec::new();
        varint::push(MAX_MESSAGE_LEN as u64 + 1, &mut big);
        assert_eq!(
            decode::<HopMessage>(&big),
            Err(MessageError::TooLong {
                len: MAX_MESSAGE_LEN as u64 + 1
            })
        );
        assert_eq!(
            decode::<HopMessage>(&[0x80, 0x00]),
            Err(MessageError::BadLength)
        );
        // A length of 2 and a body that is a truncated varint field.
        assert_eq!(
            decode::<HopMessage>(&[0x02, 0x08, 0x80]),
            Err(MessageError::Protobuf)
        );
        assert_eq!(decode::<HopMessage>(&[0x05, 0x08]), Ok(None));
    }

    #[test]
    fn a_reader_fed_one_byte_at_a_time_stops_at_the_message_end() {
        let mut stream = HopMessage::connect(vec![1; 38]).to_frame();
        let end = stream.len();
        stream.extend_from_slice(&[0xee; 5]);
        let mut r = MessageReader::<HopMessage>::new();
        let mut pos = 0;
        let message = loop {
            let (used, m) = r.feed(&stream[pos..pos + 1]).unwrap();
            pos += used;
            if let Some(m) = m {
                break m;
            }
        };
        assert_eq!(pos, end);
        assert_eq!(message.peer.unwrap().id, vec![1; 38]);
        assert_eq!(Limit::default().encoded_len(), 0);
    }
}
