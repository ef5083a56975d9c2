//! Identity: Ed25519 key pairs, the libp2p `PublicKey` protobuf, peer ids and
//! signed envelopes.
//!
//! Keys are Ed25519 only. RSA, secp256k1 and ECDSA keys decode to
//! [`KeyError::UnsupportedKeyType`] rather than panicking, and peer ids of such
//! keys (sha2-256 multihashes) still parse and compare.

mod envelope;
mod keys;
mod peer_id;

pub use envelope::{Envelope, EnvelopeError};
pub(crate) use keys::PublicKeyProto;
pub use keys::{KeyError, KeyType, Keypair, PublicKey, SIGNATURE_LEN};
pub use peer_id::{PeerId, PeerIdError};
