//! Signed envelopes (libp2p RFC 0002): a payload signed by a peer's key for
//! one purpose (a *domain*), such as a relay's reservation voucher.
//!
//! On the wire, `Envelope { public_key = 1, payload_type = 2, payload = 3,
//! signature = 5 }`. The signature covers
//! `uvarint(len domain) | domain | uvarint(len type) | type | uvarint(len payload) | payload`,
//! so a signature made for one domain never verifies for another.
//!
//! ```
//! use sansp2p::identity::Envelope;
//! use sansp2p::Keypair;
//!
//! let key = Keypair::from_secret_bytes([3; 32]);
//! let bytes = Envelope::seal(&key, "example-domain", &[0x03, 0x01], b"payload");
//! let envelope = Envelope::open(&bytes, "example-domain").unwrap();
//! assert_eq!(envelope.payload, b"payload");
//! assert_eq!(envelope.signer.to_peer_id(), key.peer_id());
//! assert!(Envelope::open(&bytes, "another-domain").is_err());
//! ```

use alloc::vec::Vec;

use prost::Message as _;

use super::{KeyError, Keypair, PublicKey, PublicKeyProto};
use crate::varint;

#[derive(Clone, PartialEq, prost::Message)]
struct EnvelopeProto {
    #[prost(message, optional, tag = "1")]
    public_key: Option<PublicKeyProto>,
    #[prost(bytes = "vec", tag = "2")]
    payload_type: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    signature: Vec<u8>,
}

/// A verified envelope: who signed which payload of which type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The key that signed (check it is the peer you expect).
    pub signer: PublicKey,
    /// The multicodec naming the payload's format.
    pub payload_type: Vec<u8>,
    /// The signed bytes.
    pub payload: Vec<u8>,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not a valid `Envelope` protobuf.
    #[error("malformed Envelope protobuf")]
    Protobuf,
    /// No public key, or one this crate cannot use.
    #[error("envelope key: {0}")]
    Key(KeyError),
    /// The signature does not match the key, domain, type and payload.
    #[error("envelope signature does not verify")]
    BadSignature,
}

impl Envelope {
    /// Decodes `bytes` and checks the signature for `domain`.
    pub fn open(bytes: &[u8], domain: &str) -> Result<Self, EnvelopeError> {
        let proto = EnvelopeProto::decode(bytes).map_err(|_| EnvelopeError::Protobuf)?;
        let signer = proto
            .public_key
            .ok_or(EnvelopeError::Key(KeyError::MissingField("PublicKey")))?
            .into_key()
            .map_err(EnvelopeError::Key)?;
        let signed = signed_bytes(domain, &proto.payload_type, &proto.payload);
        if !signer.verify(&signed, &proto.signature) {
            return Err(EnvelopeError::BadSignature);
        }
        Ok(Envelope {
            signer,
            payload_type: proto.payload_type,
            payload: proto.payload,
        })
    }

    /// Signs `payload` for `domain` with `key` and encodes the envelope.
    pub fn seal(key: &Keypair, domain: &str, payload_type: &[u8], payload: &[u8]) -> Vec<u8> {
        let signature = key.sign(&signed_bytes(domain, payload_type, payload));
        EnvelopeProto {
            public_key: Some(key.public().to_proto()),
            payload_type: payload_type.to_vec(),
            payload: payload.to_vec(),
            signature: signature.to_vec(),
        }
        .encode_to_vec()
    }
}

/// What the signature covers.
fn signed_bytes(domain: &str, payload_type: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + payload_type.len() + payload.len() + 12);
    for part in [domain.as_bytes(), payload_type, payload] {
        varint::push_frame(part, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampering_with_any_signed_part_is_caught() {
        let key = Keypair::from_secret_bytes([9; 32]);
        let good = Envelope::seal(&key, "d", b"\x03\x02", b"hello");
        assert!(Envelope::open(&good, "d").is_ok());
        let mut proto = EnvelopeProto::decode(good.as_slice()).unwrap();
        proto.payload[0] ^= 1;
        let bad_payload = proto.encode_to_vec();
        let mut proto = EnvelopeProto::decode(good.as_slice()).unwrap();
        proto.payload_type = b"\x03\x01".to_vec();
        let bad_type = proto.encode_to_vec();
        let mut proto = EnvelopeProto::decode(good.as_slice()).unwrap();
        proto.public_key = Some(Keypair::from_secret_bytes([8; 32]).public().to_proto());
        let other_key = proto.encode_to_vec();
        for bytes in [bad_payload, bad_type, other_key] {
            assert_eq!(
                Envelope::open(&bytes, "d"),
                Err(EnvelopeError::BadSignature)
            );
        }
        assert_eq!(Envelope::open(&good, "e"), Err(EnvelopeError::BadSignature));
        assert_eq!(
            Envelope::open(&[0xff, 0xff], "d"),
            Err(EnvelopeError::Protobuf)
        );
        assert!(matches!(
            Envelope::open(&[], "d"),
            Err(EnvelopeError::Key(KeyError::MissingField(_)))
        ));
    }
}
