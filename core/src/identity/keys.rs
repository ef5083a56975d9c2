//! Ed25519 keys and the libp2p `PublicKey` protobuf.

use alloc::vec::Vec;
use core::fmt;

use ed25519_dalek::{Signer as _, Verifier as _};
use prost::Message as _;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The key algorithms a libp2p `PublicKey` message can name (`KeyType` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// `RSA = 0`
    Rsa,
    /// `Ed25519 = 1`: the only type this crate signs and verifies with.
    Ed25519,
    /// `Secp256k1 = 2`
    Secp256k1,
    /// `ECDSA = 3`
    Ecdsa,
    /// A number the spec does not define.
    Unknown(i32),
}

impl KeyType {
    fn from_wire(v: i32) -> Self {
        match v {
            0 => KeyType::Rsa,
            1 => KeyType::Ed25519,
            2 => KeyType::Secp256k1,
            3 => KeyType::Ecdsa,
            other => KeyType::Unknown(other),
        }
    }
}

/// Why bytes could not be turned into a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not a valid protobuf `PublicKey` message.
    #[error("malformed PublicKey protobuf")]
    Protobuf,
    /// The message is missing its `Type` or `Data` field.
    #[error("PublicKey protobuf lacks its {0} field")]
    MissingField(&'static str),
    /// A key type this crate does not implement (RSA, secp256k1, ECDSA).
    #[error("unsupported key type {0:?}")]
    UnsupportedKeyType(KeyType),
    /// The key material has the wrong length for its type.
    #[error("invalid key length: expected {expected} bytes, got {actual}")]
    InvalidLength {
        /// Length the key type needs.
        expected: usize,
        /// Length found.
        actual: usize,
    },
    /// The bytes have the right length but are not a valid key.
    #[error("invalid key material")]
    InvalidKey,
}

/// The libp2p `PublicKey` message: `{ required KeyType Type = 1; required bytes Data = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PublicKeyProto {
    #[prost(int32, optional, tag = "1")]
    pub key_type: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub data: Option<Vec<u8>>,
}

impl PublicKeyProto {
    pub(crate) fn into_key(self) -> Result<PublicKey, KeyError> {
        let key_type = KeyType::from_wire(self.key_type.ok_or(KeyError::MissingField("Type"))?);
        let data = self.data.ok_or(KeyError::MissingField("Data"))?;
        if key_type != KeyType::Ed25519 {
            return Err(KeyError::UnsupportedKeyType(key_type));
        }
        PublicKey::from_ed25519_bytes(&data)
    }
}

/// A peer's public key. Only Ed25519 keys are supported; others decode to
/// [`KeyError::UnsupportedKeyType`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// The key from its 32 raw Ed25519 bytes.
    pub fn from_ed25519_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let raw: &[u8; 32] = bytes.try_into().map_err(|_| KeyError::InvalidLength {
            expected: 32,
            actual: bytes.len(),
        })?;
        ed25519_dalek::VerifyingKey::from_bytes(raw)
            .map(PublicKey)
            .map_err(|_| KeyError::InvalidKey)
    }

    /// The 32 raw Ed25519 bytes.
    pub fn to_ed25519_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The key's algorithm.
    pub fn key_type(&self) -> KeyType {
        KeyType::Ed25519
    }

    /// The deterministic protobuf encoding of the key (what peer ids hash).
    pub fn encode_protobuf(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    pub(crate) fn to_proto(self) -> PublicKeyProto {
        PublicKeyProto {
            key_type: Some(1),
            data: Some(self.0.to_bytes().to_vec()),
        }
    }

    /// Decodes the protobuf `PublicKey` message.
    ///
    /// ```
    /// use sansp2p::identity::{KeyError, KeyType, PublicKey};
    ///
    /// // An RSA key is well-formed but not supported.
    /// let rsa = [0x08, 0x00, 0x12, 0x01, 0x00];
    /// assert_eq!(PublicKey::try_decode_protobuf(&rsa), Err(KeyError::UnsupportedKeyType(KeyType::Rsa)));
    /// ```
    pub fn try_decode_protobuf(bytes: &[u8]) -> Result<Self, KeyError> {
        PublicKeyProto::decode(bytes)
            .map_err(|_| KeyError::Protobuf)?
            .into_key()
    }

    /// Verifies an Ed25519 signature of `msg`.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <&[u8; SIGNATURE_LEN]>::try_from(signature) else {
            return false;
        };
        self.0
            .verify(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    }

    /// The peer id this key stands for.
    pub fn to_peer_id(&self) -> super::PeerId {
        super::PeerId::from_public_key(self)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(ed25519:")?;
        for b in self.0.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// An Ed25519 key pair: our identity.
///
/// ```
/// use sansp2p::Keypair;
///
/// let key = Keypair::from_secret_bytes([7; 32]);
/// let sig = key.sign(b"hello");
/// assert!(key.public().verify(b"hello", &sig));
/// assert!(!key.public().verify(b"hullo", &sig));
/// ```
#[derive(Clone)]
pub struct Keypair(ed25519_dalek::SigningKey);

impl Keypair {
    /// A key pair from 32 secret bytes (the Ed25519 seed).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Keypair(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    /// A fresh key pair from a cryptographic RNG.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let pair = Self::from_secret_bytes(secret);
        secret.fill(0);
        pair
    }

    /// The 32 secret bytes. Handle with care.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Our peer id.
    pub fn peer_id(&self) -> super::PeerId {
        self.public().to_peer_id()
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // REFERENCE.md, Identity: the spec's Ed25519 public key vector (peer-ids.md).
    const SPEC_ED25519: &str =
        "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e";

    #[test]
    fn spec_vector_round_trips() {
        let bytes = hex(SPEC_ED25519);
        let key = PublicKey::try_decode_protobuf(&bytes).unwrap();
        assert_eq!(key.to_ed25519_bytes().as_slice(), &bytes[4..]);
        assert_eq!(key.encode_protobuf(), bytes);
    }

    #[test]
    fn other_key_types_are_unsupported_not_panics() {
        for (t, kt) in [
            (0, KeyType::Rsa),
            (2, KeyType::Secp256k1),
            (3, KeyType::Ecdsa),
            (9, KeyType::Unknown(9)),
        ] {
            let mut msg = Vec::new();
            PublicKeyProto {
                key_type: Some(t),
                data: Some(alloc::vec![1; 33]),
            }
            .encode(&mut msg)
            .unwrap();
            assert_eq!(
                PublicKey::try_decode_protobuf(&msg),
                Err(KeyError::UnsupportedKeyType(kt))
            );
        }
    }

    #[test]
    fn malformed_keys_are_typed_errors() {
        assert_eq!(
            PublicKey::try_decode_protobuf(&[0x08]),
            Err(KeyError::Protobuf)
        );
        assert_eq!(
            PublicKey::try_decode_protobuf(&[]),
            Err(KeyError::MissingField("Type"))
        );
        assert_eq!(
            PublicKey::try_decode_protobuf(&[0x08, 0x01]),
            Err(KeyError::MissingField("Data"))
        );
        assert_eq!(
            PublicKey::try_decode_protobuf(&[0x08, 0x01, 0x12, 0x01, 0x00]),
            Err(KeyError::InvalidLength {
                expected: 32,
                actual: 1
            })
        );
    }

    #[test]
    fn encoding_is_deterministic_field_order() {
        let key = Keypair::from_secret_bytes([1; 32]).public();
        let enc = key.encode_protobuf();
        assert_eq!(&enc[..4], &[0x08, 0x01, 0x12, 0x20]);
        assert_eq!(enc.len(), 36);
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let a = Keypair::from_secret_bytes([1; 32]);
        let b = Keypair::from_secret_bytes([2; 32]);
        let sig = a.sign(b"msg");
        assert!(a.public().verify(b"msg", &sig));
        assert!(!b.public().verify(b"msg", &sig));
        assert!(!a.public().verify(b"msg", &sig[..63]));
    }

    #[test]
    fn generate_uses_the_rng() {
        use rand_core::SeedableRng;
        let a = Keypair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1));
        let b = Keypair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1));
        let c = Keypair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(2));
        assert_eq!(a.public(), b.public());
        assert_ne!(a.public(), c.public());
    }
}
