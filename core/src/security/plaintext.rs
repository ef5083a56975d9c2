//! `/plaintext/2.0.0`: identities exchanged in the clear. For tests and
//! trusted networks only; it authenticates nothing against an active attacker.
//!
//! Each side sends one varint-delimited `Exchange { id = 1, pubkey = 2 }`,
//! checks that the peer's id is the id of the peer's key, and the dialer
//! checks it reached the peer it meant to. Afterwards the stream carries raw
//! bytes; anything read past the peer's `Exchange` is handed back.
//!
//! ```
//! use sansp2p::security::plaintext::{Event, Handshake};
//! use sansp2p::Keypair;
//!
//! let (a, b) = (Keypair::from_secret_bytes([1; 32]), Keypair::from_secret_bytes([2; 32]));
//! let mut dialer = Handshake::new(&a.public(), Some(b.peer_id()));
//! let mut listener = Handshake::new(&b.public(), None);
//! let (mut ab, mut ba) = (Vec::new(), Vec::new());
//! dialer.poll_transmit(&mut ab);
//! listener.poll_transmit(&mut ba);
//! listener.handle_read(&ab);
//! dialer.handle_read(&ba);
//! assert!(matches!(dialer.poll_event(), Some(Event::Done { peer, .. }) if peer == b.peer_id()));
//! assert!(matches!(listener.poll_event(), Some(Event::Done { peer, .. }) if peer == a.peer_id()));
//! ```

use alloc::vec::Vec;

use prost::Message as _;

use crate::identity::{KeyError, PeerId, PeerIdError, PublicKey, PublicKeyProto};
use crate::varint::{self, FrameReader};

/// The protocol name to negotiate.
pub const PROTOCOL: &str = "/plaintext/2.0.0";

/// Default cap on the peer's `Exchange` message (an Ed25519 one is ~80 bytes;
/// even an RSA-4096 key fits).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 4096;

#[derive(Clone, PartialEq, prost::Message)]
struct Exchange {
    #[prost(bytes = "vec", optional, tag = "1")]
    id: Option<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    pubkey: Option<PublicKeyProto>,
}

/// Why the handshake failed. Every variant means: close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaintextError {
    /// The length prefix is malformed.
    #[error("malformed length prefix")]
    BadLength,
    /// The peer's message exceeds the limit.
    #[error("exchange message of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Announced length.
        len: u64,
        /// Configured limit.
        max: usize,
    },
    /// The message is not a valid `Exchange` protobuf.
    #[error("malformed Exchange protobuf")]
    Protobuf,
    /// The message lacks its `id` or `pubkey`.
    #[error("Exchange lacks its {0} field")]
    MissingField(&'static str),
    /// The `id` field is not a valid peer id.
    #[error("invalid peer id: {0}")]
    PeerId(#[from] PeerIdError),
    /// The `pubkey` field is not a key we can use.
    #[error("invalid public key: {0}")]
    Key(#[from] KeyError),
    /// The `id` is not the id of `pubkey`.
    #[error("peer id does not match the public key")]
    IdMismatch,
    /// We dialed one peer and reached another.
    #[error("expected peer {expected}, reached {actual}")]
    UnexpectedPeer {
        /// The peer we dialed.
        expected: PeerId,
        /// The peer that answered.
        actual: PeerId,
    },
    /// The stream ended before the peer's `Exchange` arrived.
    #[error("stream closed during the handshake")]
    Closed,
}

/// What the handshake produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The peer is authenticated (as far as plaintext can).
    Done {
        /// The remote peer.
        peer: PeerId,
        /// Its public key.
        public_key: PublicKey,
    },
    /// The handshake failed; close the connection.
    Failed(PlaintextError),
}

/// Decodes an `Exchange` body and checks its id against its key.
pub fn decode_exchange(body: &[u8]) -> Result<(PeerId, PublicKey), PlaintextError> {
    let msg = Exchange::decode(body).map_err(|_| PlaintextError::Protobuf)?;
    let id = PeerId::from_bytes(&msg.id.ok_or(PlaintextError::MissingField("id"))?)?;
    let key = msg
        .pubkey
        .ok_or(PlaintextError::MissingField("pubkey"))?
        .into_key()?;
    if !id.matches(&key) {
        return Err(PlaintextError::IdMismatch);
    }
    Ok((id, key))
}

/// Encodes our `Exchange` body.
pub fn encode_exchange(key: &PublicKey) -> Vec<u8> {
    Exchange {
        id: Some(key.to_peer_id().to_bytes()),
        pubkey: Some(key.to_proto()),
    }
    .encode_to_vec()
}

/// The plaintext/2.0.0 handshake for one connection, either role.
///
/// Inputs: [`handle_read`](Self::handle_read), [`handle_eof`](Self::handle_eof).
/// Outputs: [`poll_transmit`](Self::poll_transmit) (our `Exchange`, ready at
/// once), [`poll_event`](Self::poll_event) (one `Done` or `Failed`). Drain both
/// after each input. No timers: the caller bounds the handshake.
#[derive(Debug)]
pub struct Handshake {
    expected: Option<PeerId>,
    max_message_len: usize,
    reader: FrameReader,
    out: Vec<u8>,
    event: Option<Event>,
    finished: bool,
}

impl Handshake {
    /// Starts a handshake presenting `local`; a dialer passes the peer it
    /// expects to reach.
    pub fn new(local: &PublicKey, expected: Option<PeerId>) -> Self {
        Self::with_max_message_len(local, expected, DEFAULT_MAX_MESSAGE_LEN)
    }

    /// Like [`Self::new`] with a custom cap on the peer's message.
    pub fn with_max_message_len(local: &PublicKey, expected: Option<PeerId>, max: usize) -> Self {
        let mut out = Vec::new();
        varint::push_frame(&encode_exchange(local), &mut out);
        Handshake {
            expected,
            max_message_len: max,
            reader: FrameReader::default(),
            out,
            event: None,
            finished: false,
        }
    }

    /// Whether the handshake is over (either way). Then `handle_read`
    /// consumes nothing more.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feeds bytes from the peer; returns how many were consumed. Bytes after
    /// the peer's `Exchange` are not consumed: they belong to the next layer.
    #[must_use]
    pub fn handle_read(&mut self, data: &[u8]) -> usize {
        if self.finished {
            return 0;
        }
        match self.reader.feed(data, self.max_message_len) {
            Ok((n, false)) => n,
            Ok((n, true)) => {
                let result = decode_exchange(self.reader.body()).and_then(|(peer, key)| match self
                    .expected
                {
                    Some(expected) if expected != peer => Err(PlaintextError::UnexpectedPeer {
                        expected,
                        actual: peer,
                    }),
                    _ => Ok((peer, key)),
                });
                self.reader.clear();
                self.finish(match result {
                    Ok((peer, public_key)) => Event::Done { peer, public_key },
                    Err(e) => Event::Failed(e),
                });
                n
            }
            Err(e) => {
                self.finish(Event::Failed(match e {
                    varint::FrameError::BadLength => PlaintextError::BadLength,
                    varint::FrameError::TooLong { len } => PlaintextError::TooLong {
                        len,
                        max: self.max_message_len,
                    },
                }));
                data.len()
            }
        }
    }

    /// The peer closed the stream.
    pub fn handle_eof(&mut self) {
        if !self.finished {
            self.finish(Event::Failed(PlaintextError::Closed));
        }
    }

    fn finish(&mut self, event: Event) {
        self.finished = true;
        self.event = Some(event);
    }

    /// Appends bytes to send to `out`; returns how many.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.out.len();
        out.append(&mut self.out);
        n
    }

    /// The outcome, once.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    fn key(n: u8) -> PublicKey {
        Keypair::from_secret_bytes([n; 32]).public()
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        varint::push_frame(body, &mut v);
        v
    }

    fn run(h: &mut Handshake, input: &[u8], chunk: usize) -> (usize, Option<Event>) {
        let mut pos = 0;
        while pos < input.len() && !h.is_finished() {
            pos += h.handle_read(&input[pos..(pos + chunk).min(input.len())]);
        }
        (pos, h.poll_event())
    }

    #[test]
    fn exchange_bytes_are_id_then_key() {
        let k = key(1);
        let body = encode_exchange(&k);
        let id = k.to_peer_id().to_bytes();
        assert_eq!(body[0], 0x0a);
        assert_eq!(body[1] as usize, id.len());
        assert_eq!(&body[2..2 + id.len()], &id[..]);
        assert_eq!(body[2 + id.len()], 0x12);
        assert_eq!(&body[4 + id.len()..], &k.encode_protobuf()[..]);
    }

    #[test]
    fn both_sides_learn_each_other_at_any_read_size_and_keep_leftovers() {
        for chunk in [1, 2, 7, 4096] {
            let (a, b) = (key(1), key(2));
            let mut d = Handshake::new(&a, Some(b.to_peer_id()));
            let mut l = Handshake::new(&b, None);
            let (mut ab, mut ba) = (Vec::new(), Vec::new());
            let _ = d.poll_transmit(&mut ab);
            let _ = l.poll_transmit(&mut ba);
            ab.extend_from_slice(b"/multistream/1.0.0");
            let (used, ev) = run(&mut l, &ab, chunk);
            assert_eq!(&ab[used..], b"/multistream/1.0.0");
            assert_eq!(
                ev,
                Some(Event::Done {
                    peer: a.to_peer_id(),
                    public_key: a
                })
            );
            let (used, ev) = run(&mut d, &ba, chunk);
            assert_eq!(used, ba.len());
            assert_eq!(
                ev,
                Some(Event::Done {
                    peer: b.to_peer_id(),
                    public_key: b
                })
            );
            assert_eq!(d.handle_read(b"x"), 0);
        }
    }

    #[test]
    fn dialer_refuses_the_wrong_peer() {
        let mut d = Handshake::new(&key(1), Some(key(3).to_peer_id()));
        let (_, ev) = run(&mut d, &framed(&encode_exchange(&key(2))), 64);
        assert_eq!(
            ev,
            Some(Event::Failed(PlaintextError::UnexpectedPeer {
                expected: key(3).to_peer_id(),
                actual: key(2).to_peer_id()
            }))
        );
    }

    #[test]
    fn id_must_match_key() {
        let lie = Exchange {
            id: Some(key(9).to_peer_id().to_bytes()),
            pubkey: Some(key(2).to_proto()),
        };
        assert_eq!(
            decode_exchange(&lie.encode_to_vec()),
            Err(PlaintextError::IdMismatch)
        );
    }

    #[test]
    fn malformed_exchanges_are_typed_errors() {
        assert_eq!(decode_exchange(&[0x0a]), Err(PlaintextError::Protobuf));
        assert_eq!(
            decode_exchange(&[]),
            Err(PlaintextError::MissingField("id"))
        );
        let no_key = Exchange {
            id: Some(key(1).to_peer_id().to_bytes()),
            pubkey: None,
        };
        assert_eq!(
            decode_exchange(&no_key.encode_to_vec()),
            Err(PlaintextError::MissingField("pubkey"))
        );
        let bad_id = Exchange {
            id: Some(alloc::vec![0x13, 0]),
            pubkey: Some(key(1).to_proto()),
        };
        assert_eq!(
            decode_exchange(&bad_id.encode_to_vec()),
            Err(PlaintextError::PeerId(PeerIdError::UnsupportedHash(0x13)))
        );
        let rsa = Exchange {
            id: Some(key(1).to_peer_id().to_bytes()),
            pubkey: Some(PublicKeyProto {
                key_type: Some(0),
                data: Some(alloc::vec![0; 10]),
            }),
        };
        assert!(matches!(
            decode_exchange(&rsa.encode_to_vec()),
            Err(PlaintextError::Key(KeyError::UnsupportedKeyType(_)))
        ));
    }

    #[test]
    fn oversized_and_truncated_input() {
        let mut h = Handshake::new(&key(1), None);
        assert_eq!(
            run(&mut h, &[0x81, 0x20], 64).1,
            Some(Event::Failed(PlaintextError::TooLong {
                len: 4097,
                max: 4096
            }))
        );
        let mut h = Handshake::new(&key(1), None);
        run(&mut h, &[0x10, 1, 2], 64);
        assert!(!h.is_finished());
        h.handle_eof();
        assert_eq!(h.poll_event(), Some(Event::Failed(PlaintextError::Closed)));
    }
}
