//! Peer ids: multihashes of encoded public keys.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use sha2::Digest as _;

use super::PublicKey;
use crate::varint;

/// Multihash code of the identity "hash" (the key itself).
const IDENTITY: u64 = 0x00;
/// Multihash code of sha2-256.
const SHA2_256: u64 = 0x12;
/// Keys whose encoding is at most this long are inlined with the identity hash.
const MAX_INLINE_KEY_LEN: usize = 42;
/// Longest binary peer id: 1 byte code + 1 byte length + 42 bytes.
const MAX_LEN: usize = 2 + MAX_INLINE_KEY_LEN;
/// Multicodec of `libp2p-key`, the CID codec for peer ids.
const LIBP2P_KEY_CODEC: u64 = 0x72;
/// Longest text form we try to decode (base32 of a CID of the longest id is ~75).
const MAX_TEXT_LEN: usize = 128;

/// Why bytes or text are not a peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIdError {
    /// No bytes at all.
    #[error("empty peer id")]
    Empty,
    /// The multihash header (code, length) is cut short or not a valid varint.
    #[error("truncated or malformed multihash header")]
    BadHeader,
    /// A hash function other than identity or sha2-256.
    #[error("unsupported multihash code {0:#x}")]
    UnsupportedHash(u64),
    /// The digest length does not fit the hash (sha2-256 needs 32, identity at most 42).
    #[error("invalid digest length {0}")]
    InvalidDigestLength(u64),
    /// The bytes are longer or shorter than the header says.
    #[error("multihash length mismatch")]
    LengthMismatch,
    /// The text is neither base58btc nor a base32 `libp2p-key` CID.
    #[error("not a base58btc peer id or base32 CID")]
    BadEncoding,
    /// A CID that is not version 1 with the `libp2p-key` codec.
    #[error("CID is not a v1 libp2p-key")]
    BadCid,
}

/// The identity of a peer: the multihash of its encoded public key.
///
/// Small and `Copy`; compares by its bytes.
///
/// ```
/// use sansp2p::{Keypair, PeerId};
///
/// let id = Keypair::from_secret_bytes([1; 32]).peer_id();
/// let text = id.to_string();
/// assert!(text.starts_with("12D3KooW"));
/// assert_eq!(text.parse::<PeerId>().unwrap(), id);
/// assert_eq!(id.to_cid_string().parse::<PeerId>().unwrap(), id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    // Unused tail bytes are always zero, so the derived traits are correct.
    bytes: [u8; MAX_LEN],
    len: u8,
}

impl PeerId {
    /// The peer id of `key`: identity multihash of its protobuf encoding when
    /// that is at most 42 bytes, sha2-256 otherwise.
    pub fn from_public_key(key: &PublicKey) -> Self {
        let encoded = key.encode_protobuf();
        let mut out = Vec::with_capacity(MAX_LEN);
        if encoded.len() <= MAX_INLINE_KEY_LEN {
            varint::push(IDENTITY, &mut out);
            varint::push(encoded.len() as u64, &mut out);
            out.extend_from_slice(&encoded);
        } else {
            varint::push(SHA2_256, &mut out);
            varint::push(32, &mut out);
            out.extend_from_slice(&sha2::Sha256::digest(&encoded));
        }
        Self::from_valid(&out)
    }

    fn from_valid(mh: &[u8]) -> Self {
        let mut bytes = [0u8; MAX_LEN];
        bytes[..mh.len()].copy_from_slice(mh);
        PeerId {
            bytes,
            len: mh.len() as u8,
        }
    }

    /// Parses a binary multihash, rejecting anything but a well-formed
    /// identity (at most 42 bytes) or sha2-256 multihash.
    pub fn from_bytes(mh: &[u8]) -> Result<Self, PeerIdError> {
        if mh.is_empty() {
            return Err(PeerIdError::Empty);
        }
        let (code, rest) = varint::decode_u64(mh).ok_or(PeerIdError::BadHeader)?;
        let (len, digest) = varint::decode_u64(rest).ok_or(PeerIdError::BadHeader)?;
        match code {
            IDENTITY if len > MAX_INLINE_KEY_LEN as u64 => {
                return Err(PeerIdError::InvalidDigestLength(len))
            }
            IDENTITY => {}
            SHA2_256 if len != 32 => return Err(PeerIdError::InvalidDigestLength(len)),
            SHA2_256 => {}
            other => return Err(PeerIdError::UnsupportedHash(other)),
        }
        if digest.len() as u64 != len {
            return Err(PeerIdError::LengthMismatch);
        }
        Ok(Self::from_valid(mh))
    }

    /// The binary multihash.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The binary multihash, owned.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    /// The public key, if it is inlined (identity multihash) and decodes.
    pub fn public_key(&self) -> Option<PublicKey> {
        let mh = self.as_bytes();
        if mh[0] != IDENTITY as u8 {
            return None;
        }
        PublicKey::try_decode_protobuf(&mh[2..]).ok()
    }

    /// Whether `key` is the key this peer id stands for.
    pub fn matches(&self, key: &PublicKey) -> bool {
        *self == Self::from_public_key(key)
    }

    /// The legacy text form: base58btc of the multihash (`12D3KooW…`, `Qm…`).
    pub fn to_base58(&self) -> String {
        bs58::encode(self.as_bytes()).into_string()
    }

    /// The CIDv1 text form: multibase base32 (`b…`) of
    /// `<version 1><libp2p-key codec><multihash>`.
    pub fn to_cid_string(&self) -> String {
        let mut cid = Vec::with_capacity(MAX_LEN + 2);
        varint::push(1, &mut cid);
        varint::push(LIBP2P_KEY_CODEC, &mut cid);
        cid.extend_from_slice(self.as_bytes());
        let mut text = String::from("b");
        text.push_str(
            &data_encoding::BASE32_NOPAD
                .encode(&cid)
                .to_ascii_lowercase(),
        );
        text
    }

    fn from_cid_bytes(cid: &[u8]) -> Result<Self, PeerIdError> {
        let (version, rest) = varint::decode_u64(cid).ok_or(PeerIdError::BadCid)?;
        let (codec, mh) = varint::decode_u64(rest).ok_or(PeerIdError::BadCid)?;
        if version != 1 || codec != LIBP2P_KEY_CODEC {
            return Err(PeerIdError::BadCid);
        }
        Self::from_bytes(mh)
    }
}

impl FromStr for PeerId {
    type Err = PeerIdError;

    /// Parses a legacy base58btc multihash (`1…`, `Qm…`) or a CIDv1 in any
    /// common multibase (`b`/`B` base32, `z` base58btc, `k`/`K` base36,
    /// `f`/`F` base16, `m` base64, `u` base64url), as peer-ids.md asks.
    fn from_str(s: &str) -> Result<Self, PeerIdError> {
        if s.len() > MAX_TEXT_LEN {
            return Err(PeerIdError::BadEncoding);
        }
        if s.starts_with('1') || s.starts_with("Qm") {
            let bytes = bs58::decode(s)
                .into_vec()
                .map_err(|_| PeerIdError::BadEncoding)?;
            return Self::from_bytes(&bytes);
        }
        let mut chars = s.chars();
        let prefix = chars.next().ok_or(PeerIdError::BadEncoding)?;
        let rest = chars.as_str();
        let cid = decode_multibase(prefix, rest).ok_or(PeerIdError::BadEncoding)?;
        Self::from_cid_bytes(&cid)
    }
}

/// Decodes the multibase body `rest` of base `prefix`; `None` if malformed.
fn decode_multibase(prefix: char, rest: &str) -> Option<Vec<u8>> {
    use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD, BASE64_NOPAD, HEXLOWER, HEXUPPER};
    let is_lower = |t: &str| !t.bytes().any(|c| c.is_ascii_uppercase());
    let is_upper = |t: &str| !t.bytes().any(|c| c.is_ascii_lowercase());
    match prefix {
        'b' if is_lower(rest) => BASE32_NOPAD
            .decode(rest.to_ascii_uppercase().as_bytes())
            .ok(),
        'B' if is_upper(rest) => BASE32_NOPAD.decode(rest.as_bytes()).ok(),
        'z' => bs58::decode(rest).into_vec().ok(),
        'k' if is_lower(rest) => decode_base36(rest),
        'K' if is_upper(rest) => decode_base36(rest),
        'f' => HEXLOWER.decode(rest.as_bytes()).ok(),
        'F' => HEXUPPER.decode(rest.as_bytes()).ok(),
        'm' => BASE64_NOPAD.decode(rest.as_bytes()).ok(),
        'u' => BASE64URL_NOPAD.decode(rest.as_bytes()).ok(),
        _ => None,
    }
}

/// Base36 (digits then letters, case-insensitive) to bytes, big-endian;
/// each leading `0` stands for a leading zero byte. Inputs are at most
/// [`MAX_TEXT_LEN`] characters, so the quadratic conversion is cheap.
fn decode_base36(text: &str) -> Option<Vec<u8>> {
    let zeros = text.bytes().take_while(|&c| c == b'0').count();
    let mut num: Vec<u8> = Vec::new(); // little-endian base-256 digits
    for c in text.bytes().skip(zeros) {
        let mut carry = char::from(c).to_digit(36)?;
        for byte in num.iter_mut() {
            let v = u32::from(*byte) * 36 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            num.push(carry as u8);
            carry >>= 8;
        }
    }
    let mut out = alloc::vec![0u8; zeros];
    out.extend(num.iter().rev());
    Some(out)
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base58())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;
    use alloc::string::ToString;

    #[test]
    fn ed25519_ids_are_inlined() {
        let key = Keypair::from_secret_bytes([3; 32]).public();
        let id = key.to_peer_id();
        assert_eq!(id.as_bytes().len(), 38);
        assert_eq!(&id.as_bytes()[..2], &[0x00, 36]);
        assert_eq!(id.public_key(), Some(key));
        assert!(id.matches(&key));
        assert!(!id.matches(&Keypair::from_secret_bytes([4; 32]).public()));
    }

    // peer-ids.md: "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe" is the
    // CIDv1 form of "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N".
    #[test]
    fn spec_cid_and_base58_name_the_same_peer() {
        let a: PeerId = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
            .parse()
            .unwrap();
        let b: PeerId = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"
            .parse()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.to_cid_string(),
            "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"
        );
        assert_eq!(
            b.to_string(),
            "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
        );
        assert_eq!(a.public_key(), None);
    }

    // Every multibase form of one CID names the same peer (peer-ids.md:
    // "decode it according to the multibase and CID spec").
    #[test]
    fn cids_parse_in_every_common_multibase() {
        let id = Keypair::from_secret_bytes([1; 32]).peer_id();
        let mut cid = alloc::vec![1, 0x72];
        cid.extend_from_slice(id.as_bytes());
        let forms = [
            id.to_cid_string(),
            alloc::format!("B{}", data_encoding::BASE32_NOPAD.encode(&cid)),
            alloc::format!("z{}", bs58::encode(&cid).into_string()),
            alloc::format!("f{}", data_encoding::HEXLOWER.encode(&cid)),
            alloc::format!("F{}", data_encoding::HEXUPPER.encode(&cid)),
            alloc::format!("m{}", data_encoding::BASE64_NOPAD.encode(&cid)),
            alloc::format!("u{}", data_encoding::BASE64URL_NOPAD.encode(&cid)),
        ];
        for form in forms {
            assert_eq!(form.parse::<PeerId>(), Ok(id), "{form}");
        }
        // base36, as IPFS writes libp2p-key CIDs, lower and upper case.
        let k = alloc::format!("k{}", encode_base36_for_test(&cid));
        assert_eq!(k.parse::<PeerId>(), Ok(id), "{k}");
        assert_eq!(k.to_ascii_uppercase().parse::<PeerId>(), Ok(id));
        assert_eq!(decode_base36("00a"), Some(alloc::vec![0, 0, 10]));
        assert_eq!(decode_base36("!"), None);
    }

    /// Base36 encoding by repeated division, independent of the decoder.
    fn encode_base36_for_test(bytes: &[u8]) -> alloc::string::String {
        let zeros = bytes.iter().take_while(|&&b| b == 0).count();
        let mut num: Vec<u8> = bytes[zeros..].to_vec();
        let mut digits = Vec::new();
        while !num.is_empty() {
            let mut rem = 0u32;
            let mut next = Vec::new();
            for &b in &num {
                let v = rem * 256 + u32::from(b);
                let q = v / 36;
                rem = v % 36;
                if !(next.is_empty() && q == 0) {
                    next.push(q as u8);
                }
            }
            digits.push(char::from_digit(rem, 36).unwrap());
            num = next;
        }
        let mut s: alloc::string::String = core::iter::repeat_n('0', zeros).collect();
        s.extend(digits.iter().rev());
        s
    }

    #[test]
    fn bad_multihashes_are_typed_errors() {
        assert_eq!(PeerId::from_bytes(&[]), Err(PeerIdError::Empty));
        assert_eq!(PeerId::from_bytes(&[0x12]), Err(PeerIdError::BadHeader));
        assert_eq!(PeerId::from_bytes(&[0x80]), Err(PeerIdError::BadHeader));
        assert_eq!(
            PeerId::from_bytes(&[0x13, 0x01, 0x00]),
            Err(PeerIdError::UnsupportedHash(0x13))
        );
        assert_eq!(
            PeerId::from_bytes(&[0x12, 0x10]),
            Err(PeerIdError::InvalidDigestLength(16))
        );
        assert_eq!(
            PeerId::from_bytes(&[0x00, 43]),
            Err(PeerIdError::InvalidDigestLength(43))
        );
        assert_eq!(
            PeerId::from_bytes(&[0x12, 0x20, 0x00]),
            Err(PeerIdError::LengthMismatch)
        );
        let mut long = alloc::vec![0x00, 0x01, 0xaa];
        long.push(0);
        assert_eq!(PeerId::from_bytes(&long), Err(PeerIdError::LengthMismatch));
    }

    #[test]
    fn bad_text_is_a_typed_error() {
        for s in ["", "x", "12D3KooW0000", "bAFZ", "b!!!", "zQm"] {
            assert!(s.parse::<PeerId>().is_err(), "{s}");
        }
        // A CID with another codec (dag-pb 0x70) is not a peer id.
        let mut cid = alloc::vec![1, 0x70, 0x00, 0x01, 0xaa];
        let text = alloc::format!(
            "b{}",
            data_encoding::BASE32_NOPAD
                .encode(&cid)
                .to_ascii_lowercase()
        );
        assert_eq!(text.parse::<PeerId>(), Err(PeerIdError::BadCid));
        cid[1] = 0x72;
        let text = alloc::format!(
            "b{}",
            data_encoding::BASE32_NOPAD
                .encode(&cid)
                .to_ascii_lowercase()
        );
        assert!(text.parse::<PeerId>().is_ok());
        let huge = "1".repeat(10_000);
        assert_eq!(huge.parse::<PeerId>(), Err(PeerIdError::BadEncoding));
    }

    #[test]
    fn identity_without_a_valid_key_is_still_an_id_but_has_no_key() {
        let id = PeerId::from_bytes(&[0x00, 0x01, 0xaa]).unwrap();
        assert_eq!(id.public_key(), None);
        assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
    }
}
