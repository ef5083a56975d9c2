//! `/ipfs/id/1.0.0` and `/ipfs/id/push/1.0.0`: what a peer tells about itself.
//!
//! The responder (or pusher) writes one varint-delimited `Identify` message
//! and closes the stream. Fields: publicKey=1, listenAddrs=2, protocols=3,
//! observedAddr=4, protocolVersion=5, agentVersion=6, signedPeerRecord=8.
//! We send at most [`MAX_SEND_LEN`] bytes (trimming addresses, then
//! protocols, if needed) and read at most [`MAX_READ_LEN`].
//!
//! ```
//! use sansp2p::protocols::identify::{decode, encode, Info};
//! use sansp2p::Keypair;
//!
//! let info = Info {
//!     public_key: Keypair::from_secret_bytes([1; 32]).public(),
//!     protocol_version: "ipfs/0.1.0".into(),
//!     agent_version: "sansp2p/0.1.0".into(),
//!     listen_addrs: vec![vec![0x04, 127, 0, 0, 1, 0x06, 0x0f, 0xa1]],
//!     observed_addr: None,
//!     protocols: vec!["/ipfs/ping/1.0.0".into()],
//! };
//! assert_eq!(decode(&encode(&info)).unwrap(), info);
//! ```

use alloc::string::String;
use alloc::vec::Vec;

use prost::Message as _;

use crate::identity::{KeyError, PublicKey};

/// The protocol name of a request.
pub const PROTOCOL: &str = "/ipfs/id/1.0.0";
/// The protocol name of a push.
pub const PUSH_PROTOCOL: &str = "/ipfs/id/push/1.0.0";
/// Largest message we send.
pub const MAX_SEND_LEN: usize = 4096;
/// Largest message we accept.
pub const MAX_READ_LEN: usize = 8192;

#[derive(Clone, PartialEq, prost::Message)]
struct IdentifyProto {
    #[prost(bytes = "vec", optional, tag = "1")]
    public_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    listen_addrs: Vec<Vec<u8>>,
    #[prost(string, repeated, tag = "3")]
    protocols: Vec<String>,
    #[prost(bytes = "vec", optional, tag = "4")]
    observed_addr: Option<Vec<u8>>,
    #[prost(string, optional, tag = "5")]
    protocol_version: Option<String>,
    #[prost(string, optional, tag = "6")]
    agent_version: Option<String>,
    #[prost(bytes = "vec", optional, tag = "8")]
    signed_peer_record: Option<Vec<u8>>,
}

/// What a peer says about itself. Addresses are binary multiaddrs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The peer's public key (the node checks it against the connection's peer).
    pub public_key: PublicKey,
    /// e.g. `ipfs/0.1.0`.
    pub protocol_version: String,
    /// Implementation name and version, e.g. `rust-libp2p/0.57.0`.
    pub agent_version: String,
    /// Addresses the peer listens on.
    pub listen_addrs: Vec<Vec<u8>>,
    /// The address the peer sees us at.
    pub observed_addr: Option<Vec<u8>>,
    /// Protocols the peer supports.
    pub protocols: Vec<String>,
}

/// Why an identify message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifyError {
    /// Not a valid `Identify` protobuf.
    #[error("malformed Identify protobuf")]
    Protobuf,
    /// The message has no public key.
    #[error("Identify carries no public key")]
    MissingPublicKey,
    /// The public key does not decode.
    #[error("invalid public key in Identify: {0}")]
    Key(#[from] KeyError),
}

/// Encodes `info` as an `Identify` body of at most [`MAX_SEND_LEN`] bytes,
/// dropping trailing listen addresses, then trailing protocols, if needed.
pub fn encode(info: &Info) -> Vec<u8> {
    let mut msg = IdentifyProto {
        public_key: Some(info.public_key.encode_protobuf()),
        listen_addrs: info.listen_addrs.clone(),
        protocols: info.protocols.clone(),
        observed_addr: info.observed_addr.clone(),
        protocol_version: Some(info.protocol_version.clone()),
        agent_version: Some(info.agent_version.clone()),
        signed_peer_record: None,
    };
    while msg.encoded_len() > MAX_SEND_LEN {
        if msg.listen_addrs.pop().is_none() && msg.protocols.pop().is_none() {
            // Only the strings are left: cut the agent version.
            msg.agent_version = None;
            if msg.encoded_len() > MAX_SEND_LEN {
                msg.protocol_version = None;
                msg.observed_addr = None;
            }
            break;
        }
    }
    msg.encode_to_vec()
}

/// Decodes an `Identify` body (a push may omit fields; missing strings are empty).
pub fn decode(body: &[u8]) -> Result<Info, IdentifyError> {
    let msg = IdentifyProto::decode(body).map_err(|_| IdentifyError::Protobuf)?;
    let key = msg.public_key.ok_or(IdentifyError::MissingPublicKey)?;
    Ok(Info {
        public_key: PublicKey::try_decode_protobuf(&key)?,
        protocol_version: msg.protocol_version.unwrap_or_default(),
        agent_version: msg.agent_version.unwrap_or_default(),
        listen_addrs: msg.listen_addrs,
        observed_addr: msg.observed_addr,
        protocols: msg.protocols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;
    use alloc::{format, vec};

    fn info() -> Info {
        Info {
            public_key: Keypair::from_secret_bytes([5; 32]).public(),
            protocol_version: "ipfs/0.1.0".into(),
            agent_version: "sansp2p/0.1.0".into(),
            listen_addrs: vec![vec![0x04, 10, 0, 0, 1, 0x06, 0x10, 0x00]],
            observed_addr: Some(vec![0x04, 1, 2, 3, 4, 0x06, 0x00, 0x50]),
            protocols: vec![PROTOCOL.into(), "/ipfs/ping/1.0.0".into()],
        }
    }

    #[test]
    fn round_trip() {
        assert_eq!(decode(&encode(&info())).unwrap(), info());
    }

    #[test]
    fn field_numbers_match_the_spec() {
        let body = encode(&info());
        // publicKey (1, bytes) comes first: tag byte 0x0a.
        assert_eq!(body[0], 0x0a);
        let msg = IdentifyProto::decode(&body[..]).unwrap();
        assert_eq!(msg.agent_version.as_deref(), Some("sansp2p/0.1.0"));
        // agentVersion is field 6, wire type 2: tag 0x32 followed by its length.
        let needle = [0x32, 13];
        assert!(body.windows(2).any(|w| w == needle));
    }

    #[test]
    fn oversized_info_is_trimmed_to_the_send_cap() {
        let mut big = info();
        big.listen_addrs = (0..500)
            .map(|i| vec![0x04, 10, 0, (i >> 8) as u8, i as u8, 0x06, 0, 1])
            .collect();
        big.protocols = (0..500).map(|i| format!("/proto/{i}")).collect();
        let body = encode(&big);
        assert!(body.len() <= MAX_SEND_LEN);
        let back = decode(&body).unwrap();
        assert_eq!(back.public_key, big.public_key);
        assert!(back.listen_addrs.len() < 500);
    }

    #[test]
    fn bad_messages_are_typed_errors() {
        assert_eq!(decode(&[0x0a]), Err(IdentifyError::Protobuf));
        assert_eq!(decode(&[]), Err(IdentifyError::MissingPublicKey));
        assert!(matches!(
            decode(&[0x0a, 0x02, 0x08, 0x00]),
            Err(IdentifyError::Key(_))
        ));
    }
}
