//! `/noise`: libp2p's Noise handshake, `Noise_XX_25519_ChaChaPoly_SHA256`,
//! and the encrypted transport that follows it.
//!
//! Wire format (libp2p noise spec): every handshake message and every
//! transport message is a frame of a 2-byte big-endian length (at most
//! 65 535) followed by that many bytes. The three XX messages are
//!
//! ```text
//! -> e                      initiator (the dialer), empty payload
//! <- e, ee, s, es           responder, payload = its identity
//! -> s, se                  initiator, payload = its identity
//! ```
//!
//! The identity payload is a protobuf `NoiseHandshakePayload` with the
//! libp2p public key and its signature over
//! `"noise-libp2p-static-key:" || static X25519 key`; each side checks the
//! signature against the static key the handshake authenticated, and the
//! dialer checks it reached the peer it meant to. Extensions are parsed and
//! ignored (we announce none, so early muxer negotiation never applies).
//!
//! [`Handshake`] has the shape of every security machine here: its first
//! message (if any) is ready in `poll_transmit` at once, `handle_read`
//! consumes exactly the handshake's frames, and one `Done` or `Failed` event
//! ends it. `Done` carries the [`Transport`], which then encrypts what we
//! send and decrypts what we read.
//!
//! The machine needs two random X25519 secrets per handshake (static and
//! ephemeral); the caller supplies them, so the core holds no RNG.
//!
//! The transport's ChaCha20-Poly1305 runs on a [`CipherBackend`]: RustCrypto's
//! pure-Rust `chacha20poly1305` (no_std, the only one by default), or, with
//! the `ring` feature, `ring`'s assembly implementation, about twice as fast
//! on x86-64 and the one rust-libp2p uses. Both produce the same bytes.
//!
//! ```
//! use sansp2p::security::noise::{Event, Handshake};
//! use sansp2p::Keypair;
//!
//! let (a, b) = (Keypair::from_secret_bytes([1; 32]), Keypair::from_secret_bytes([2; 32]));
//! let mut dialer = Handshake::initiator(&a, [3; 32], [4; 32], Some(b.peer_id()));
//! let mut listener = Handshake::responder(&b, [5; 32], [6; 32]);
//! // Three messages: dialer -> listener -> dialer -> listener.
//! for _ in 0..3 {
//!     let mut wire = Vec::new();
//!     dialer.poll_transmit(&mut wire);
//!     listener.handle_read(&wire);
//!     wire.clear();
//!     listener.poll_transmit(&mut wire);
//!     dialer.handle_read(&wire);
//! }
//! let Some(Event::Done { peer, transport: mut ours, .. }) = dialer.poll_event() else { panic!() };
//! assert_eq!(peer, b.peer_id());
//! let Some(Event::Done { peer, transport: mut theirs, .. }) = listener.poll_event() else { panic!() };
//! assert_eq!(peer, a.peer_id());
//!
//! let mut wire = Vec::new();
//! ours.encrypt(b"hello", &mut wire).unwrap();
//! let mut plain = Vec::new();
//! theirs.decrypt(&wire, &mut plain).unwrap();
//! assert_eq!(plain, b"hello");
//! ```

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use bytes::Bytes;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use curve25519_dalek::montgomery::MontgomeryPoint;
use hmac::{Hmac, Mac};
use prost::Message as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::identity::{KeyError, Keypair, PeerId, PublicKey};

/// The protocol name to negotiate.
pub const PROTOCOL: &str = "/noise";

/// Largest frame body (the length prefix is 2 bytes).
pub const MAX_FRAME_LEN: usize = 65_535;

/// Authentication tag added to every encrypted message.
pub const TAG_LEN: usize = 16;

/// Largest plaintext one transport frame carries.
pub const MAX_PLAINTEXT_LEN: usize = MAX_FRAME_LEN - TAG_LEN;

const PROTOCOL_NAME: &[u8; 32] = b"Noise_XX_25519_ChaChaPoly_SHA256";
const SIGNATURE_PREFIX: &[u8] = b"noise-libp2p-static-key:";
const DH_LEN: usize = 32;

#[derive(Clone, PartialEq, prost::Message)]
struct HandshakePayload {
    #[prost(bytes = "vec", tag = "1")]
    identity_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    identity_sig: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    extensions: Option<Extensions>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Extensions {
    #[prost(bytes = "vec", repeated, tag = "1")]
    webtransport_certhashes: Vec<Vec<u8>>,
    #[prost(string, repeated, tag = "2")]
    stream_muxers: Vec<String>,
}

/// Why the handshake or the transport failed. Every variant means: close the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// A handshake message has the wrong size for its place in XX.
    #[error("malformed handshake message {message} ({len} bytes)")]
    Malformed {
        /// Which of the three messages (1-based).
        message: u8,
        /// Its length.
        len: usize,
    },
    /// A message did not authenticate (wrong key, tampered or out of order).
    #[error("decryption failed")]
    Decrypt,
    /// A Diffie-Hellman result was all zeros: the peer sent a low-order point.
    #[error("low-order public key")]
    LowOrderKey,
    /// The identity payload is not a valid protobuf.
    #[error("invalid handshake payload")]
    InvalidPayload,
    /// The identity key in the payload does not decode.
    #[error("invalid identity key: {0}")]
    InvalidKey(#[from] KeyError),
    /// The identity signature does not cover the authenticated static key.
    #[error("identity signature does not match the static key")]
    BadSignature,
    /// The remote is not the peer the dialer meant to reach.
    #[error("expected peer {expected}, reached {found}")]
    UnexpectedPeer {
        /// The peer dialed.
        expected: PeerId,
        /// The peer that answered.
        found: PeerId,
    },
    /// The peer closed the connection during the handshake.
    #[error("connection closed during the handshake")]
    UnexpectedEof,
    /// 2^64 - 1 messages in one direction: the connection must end.
    #[error("nonce exhausted")]
    NonceExhausted,
}

/// What the handshake reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The remote is authenticated; `transport` carries the session from here.
    Done {
        /// The remote peer.
        peer: PeerId,
        /// Its identity key.
        public_key: PublicKey,
        /// The encrypted channel.
        transport: Box<Transport>,
    },
    /// The handshake failed.
    Failed(NoiseError),
}

// ------------------------------------------------------------------ crypto

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Noise's HKDF with two outputs.
fn hkdf2(chaining_key: &[u8; 32], input: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut temp = hmac(chaining_key, &[input]);
    let first = hmac(&temp, &[&[1]]);
    let second = hmac(&temp, &[&first, &[2]]);
    temp.zeroize();
    (first, second)
}

fn public_of(secret: &[u8; 32]) -> [u8; 32] {
    MontgomeryPoint::mul_base_clamped(*secret).to_bytes()
}

fn dh(secret: &[u8; 32], public: &[u8; 32]) -> Result<[u8; 32], NoiseError> {
    let shared = MontgomeryPoint(*public).mul_clamped(*secret).to_bytes();
    if shared == [0; 32] {
        return Err(NoiseError::LowOrderKey);
    }
    Ok(shared)
}

/// Which implementation of ChaCha20-Poly1305 a [`Transport`] uses. Both
/// are interchangeable on the wire; the choice is only about speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CipherBackend {
    /// RustCrypto's `chacha20poly1305`: pure Rust, no_std, SIMD where the
    /// CPU has it.
    Portable,
    /// `ring`'s assembly implementation (feature `ring`), the one
    /// rust-libp2p uses: about twice the throughput on x86-64.
    #[cfg(feature = "ring")]
    Ring,
}

impl Default for CipherBackend {
    /// The fastest one compiled in: `Ring` with the `ring` feature,
    /// [`Portable`](Self::Portable) without.
    fn default() -> Self {
        #[cfg(feature = "ring")]
        return CipherBackend::Ring;
        #[cfg(not(feature = "ring"))]
        return CipherBackend::Portable;
    }
}

/// A ChaCha20-Poly1305 key on one backend.
enum Aead {
    Portable(ChaCha20Poly1305),
    /// Boxed: ring's key holds its precomputed state (about 0.5 KiB).
    #[cfg(feature = "ring")]
    Ring(Box<ring::aead::LessSafeKey>),
}

/// A key and its nonce counter.
struct CipherState {
    aead: Aead,
    nonce: u64,
}

impl CipherState {
    fn new(mut key: [u8; 32], backend: CipherBackend) -> Self {
        let aead = match backend {
            CipherBackend::Portable => Aead::Portable(ChaCha20Poly1305::new(&key.into())),
            #[cfg(feature = "ring")]
            CipherBackend::Ring => {
                let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &key)
                    .expect("a 32-byte key is a ChaCha20-Poly1305 key");
                Aead::Ring(Box::new(ring::aead::LessSafeKey::new(key)))
            }
        };
        key.zeroize();
        CipherState { aead, nonce: 0 }
    }

    fn backend(&self) -> CipherBackend {
        match self.aead {
            Aead::Portable(_) => CipherBackend::Portable,
            #[cfg(feature = "ring")]
            Aead::Ring(_) => CipherBackend::Ring,
        }
    }

    fn next_nonce(&mut self) -> Result<[u8; 12], NoiseError> {
        // 2^64 - 1 is reserved by the Noise spec.
        if self.nonce == u64::MAX {
            return Err(NoiseError::NonceExhausted);
        }
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.nonce.to_le_bytes());
        self.nonce += 1;
        Ok(n)
    }

    /// Appends `plaintext` encrypted, then its tag, to `out`.
    fn encrypt(
        &mut self,
        ad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), NoiseError> {
        let start = out.len();
        out.extend_from_slice(plaintext);
        self.seal_in_place(ad, out, start)
    }

    /// Encrypts `out[start..]` where it is and appends its tag.
    fn seal_in_place(
        &mut self,
        ad: &[u8],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), NoiseError> {
        let nonce = self.next_nonce()?;
        let body = &mut out[start..];
        let tag: [u8; TAG_LEN] = match &self.aead {
            Aead::Portable(aead) => aead
                .encrypt_inout_detached(&Nonce::from(nonce), ad, body.into())
                .map_err(|_| NoiseError::Decrypt)?
                .into(),
            #[cfg(feature = "ring")]
            Aead::Ring(key) => {
                let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
                let tag = key
                    .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(ad), body)
                    .map_err(|_| NoiseError::Decrypt)?;
                let mut t = [0; TAG_LEN];
                t.copy_from_slice(tag.as_ref());
                t
            }
        };
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Appends the plaintext of `message` (ciphertext and tag) to `out`; on
    /// failure `out` is left as it was.
    fn decrypt(&mut self, ad: &[u8], message: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let Some(body_len) = message.len().checked_sub(TAG_LEN) else {
            return Err(NoiseError::Decrypt);
        };
        let nonce = self.next_nonce()?;
        let start = out.len();
        let opened = match &self.aead {
            Aead::Portable(aead) => {
                let (body, tag) = message.split_at(body_len);
                let tag = Tag::try_from(tag).map_err(|_| NoiseError::Decrypt)?;
                out.extend_from_slice(body);
                aead.decrypt_inout_detached(
                    &Nonce::from(nonce),
                    ad,
                    (&mut out[start..]).into(),
                    &tag,
                )
                .is_ok()
            }
            #[cfg(feature = "ring")]
            Aead::Ring(key) => {
                // ring opens ciphertext and tag in place; the tag is cut after.
                out.extend_from_slice(message);
                let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
                let opened = key
                    .open_in_place(nonce, ring::aead::Aad::from(ad), &mut out[start..])
                    .is_ok();
                out.truncate(start + body_len);
                opened
            }
        };
        if !opened {
            out.truncate(start);
            return Err(NoiseError::Decrypt);
        }
        Ok(())
    }
}

/// Chaining key, handshake hash, and the current key once there is one.
struct SymmetricState {
    chaining_key: [u8; 32],
    hash: [u8; 32],
    cipher: Option<CipherState>,
}

impl SymmetricState {
    fn new() -> Self {
        // The name is exactly HASHLEN bytes: it is the initial hash itself.
        let mut s = SymmetricState {
            chaining_key: *PROTOCOL_NAME,
            hash: *PROTOCOL_NAME,
            cipher: None,
        };
        s.mix_hash(&[]); // empty prologue
        s
    }

    fn mix_hash(&mut self, data: &[u8]) {
        let mut h = Sha256::new();
        h.update(self.hash);
        h.update(data);
        self.hash = h.finalize().into();
    }

    fn mix_key(&mut self, mut input: [u8; 32]) {
        let (ck, key) = hkdf2(&self.chaining_key, &input);
        input.zeroize();
        self.chaining_key = ck;
        // The handshake's few small messages stay on the portable cipher.
        self.cipher = Some(CipherState::new(key, CipherBackend::Portable));
    }

    fn encrypt_and_hash(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let start = out.len();
        match &mut self.cipher {
            Some(c) => c.encrypt(&self.hash, plaintext, out)?,
            None => out.extend_from_slice(plaintext),
        }
        self.mix_hash(&out[start..]);
        Ok(())
    }

    fn decrypt_and_hash(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        match &mut self.cipher {
            Some(c) => c.decrypt(&self.hash, message, out)?,
            None => out.extend_from_slice(message),
        }
        self.mix_hash(message);
        Ok(())
    }

    /// The two transport keys: (initiator to responder, responder to initiator).
    fn split(&self, backend: CipherBackend) -> (CipherState, CipherState) {
        let (a, b) = hkdf2(&self.chaining_key, &[]);
        (CipherState::new(a, backend), CipherState::new(b, backend))
    }
}

impl Drop for SymmetricState {
    fn drop(&mut self) {
        self.chaining_key.zeroize();
    }
}

// --------------------------------------------------------------- framing

/// Collects one length-prefixed frame from reads of any size.
#[derive(Default)]
struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    /// Takes bytes from `data` towards the next frame; returns how many it
    /// took and, once complete, the frame's body (valid until the next call).
    fn fill(&mut self, data: &[u8]) -> (usize, bool) {
        let mut used = 0;
        if self.buf.len() < 2 {
            let n = (2 - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            used = n;
            if self.buf.len() < 2 {
                return (used, false);
            }
        }
        let want = 2 + usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
        let n = (want - self.buf.len()).min(data.len() - used);
        self.buf.extend_from_slice(&data[used..used + n]);
        used += n;
        (used, self.buf.len() == want)
    }

    fn body(&self) -> &[u8] {
        &self.buf[2..]
    }

    fn clear(&mut self) {
        self.buf.clear();
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn push_frame(
    out: &mut Vec<u8>,
    write_body: impl FnOnce(&mut Vec<u8>) -> Result<(), NoiseError>,
) -> Result<(), NoiseError> {
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    write_body(out)?;
    let len = out.len() - at - 2;
    debug_assert!(len <= MAX_FRAME_LEN, "handshake messages are small");
    out[at..at + 2].copy_from_slice(&(len as u16).to_be_bytes());
    Ok(())
}

// -------------------------------------------------------------- handshake

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Initiator,
    Responder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Responder: waits for message 1.
    AwaitFirst,
    /// Initiator: waits for message 2.
    AwaitSecond,
    /// Responder: waits for message 3.
    AwaitThird,
    Done,
}

/// The XX handshake machine for one connection; see the [module docs](self).
pub struct Handshake {
    role: Role,
    state: SymmetricState,
    static_secret: [u8; 32],
    static_public: [u8; 32],
    ephemeral_secret: [u8; 32],
    ephemeral_public: [u8; 32],
    remote_ephemeral: [u8; 32],
    /// Our encoded identity payload.
    payload: Vec<u8>,
    expected: Option<PeerId>,
    step: Step,
    frame: FrameBuf,
    out: Vec<u8>,
    event: Option<Event>,
    /// The backend of the transport that follows.
    cipher: CipherBackend,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("step", &self.step)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.static_secret.zeroize();
        self.ephemeral_secret.zeroize();
    }
}

impl Handshake {
    /// The dialer's side. `static_secret` and `ephemeral_secret` must be
    /// fresh random bytes; `expected` is the peer the dialer means to reach.
    pub fn initiator(
        identity: &Keypair,
        static_secret: [u8; 32],
        ephemeral_secret: [u8; 32],
        expected: Option<PeerId>,
    ) -> Self {
        let mut h = Self::new(Role::Initiator, identity, static_secret, ephemeral_secret);
        h.expected = expected;
        // -> e (with an empty payload).
        let sent = h.send_message(|h, out| {
            let e = h.ephemeral_public;
            out.extend_from_slice(&e);
            h.state.mix_hash(&e);
            h.state.encrypt_and_hash(&[], out)
        });
        h.check(sent);
        h.step = Step::AwaitSecond;
        h
    }

    /// The listener's side, with fresh random secrets.
    pub fn responder(
        identity: &Keypair,
        static_secret: [u8; 32],
        ephemeral_secret: [u8; 32],
    ) -> Self {
        let mut h = Self::new(Role::Responder, identity, static_secret, ephemeral_secret);
        h.step = Step::AwaitFirst;
        h
    }

    fn new(
        role: Role,
        identity: &Keypair,
        static_secret: [u8; 32],
        ephemeral_secret: [u8; 32],
    ) -> Self {
        let static_public = public_of(&static_secret);
        let mut signed = Vec::with_capacity(SIGNATURE_PREFIX.len() + DH_LEN);
        signed.extend_from_slice(SIGNATURE_PREFIX);
        signed.extend_from_slice(&static_public);
        let payload = HandshakePayload {
            identity_key: identity.public().encode_protobuf(),
            identity_sig: identity.sign(&signed).to_vec(),
            extensions: None,
        }
        .encode_to_vec();
        Handshake {
            role,
            state: SymmetricState::new(),
            static_secret,
            static_public,
            ephemeral_public: public_of(&ephemeral_secret),
            ephemeral_secret,
            remote_ephemeral: [0; 32],
            payload,
            expected: None,
            step: Step::Done,
            frame: FrameBuf::default(),
            out: Vec::new(),
            event: None,
            cipher: CipherBackend::default(),
        }
    }

    /// Sets the ChaCha20-Poly1305 implementation of the [`Transport`] this
    /// handshake ends in (default: [`CipherBackend::default`]). The
    /// handshake messages themselves always use the portable one.
    #[must_use]
    pub fn with_cipher(mut self, cipher: CipherBackend) -> Self {
        self.cipher = cipher;
        self
    }

    /// Whether the handshake is over, one way or the other.
    pub fn is_finished(&self) -> bool {
        self.step == Step::Done
    }

    /// Feeds bytes from the peer; returns how many belong to the handshake
    /// (never more than its frames: what follows is the transport's).
    #[must_use]
    pub fn handle_read(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        while self.step != Step::Done && used < data.len() {
            let (n, complete) = self.frame.fill(&data[used..]);
            used += n;
            if !complete {
                break;
            }
            let result = self.on_message();
            self.frame.clear();
            self.check(result);
        }
        used
    }

    /// The peer closed the connection.
    pub fn handle_eof(&mut self) {
        if self.step != Step::Done {
            self.fail(NoiseError::UnexpectedEof);
        }
    }

    /// Appends bytes to send; returns how many.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.out.len();
        out.append(&mut self.out);
        n
    }

    /// The result, once.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    fn check(&mut self, result: Result<(), NoiseError>) {
        if let Err(e) = result {
            self.fail(e);
        }
    }

    fn fail(&mut self, error: NoiseError) {
        self.step = Step::Done;
        self.out.clear();
        self.event = Some(Event::Failed(error));
    }

    fn on_message(&mut self) -> Result<(), NoiseError> {
        let body = core::mem::take(&mut self.frame.buf);
        let body = &body[2..];
        match self.step {
            Step::AwaitFirst => self.read_first(body),
            Step::AwaitSecond => self.read_second(body),
            Step::AwaitThird => self.read_third(body),
            Step::Done => Ok(()),
        }
    }

    /// Responder: `-> e`, then answers `<- e, ee, s, es` with our identity.
    fn read_first(&mut self, body: &[u8]) -> Result<(), NoiseError> {
        if body.len() < DH_LEN {
            return Err(NoiseError::Malformed {
                message: 1,
                len: body.len(),
            });
        }
        self.remote_ephemeral.copy_from_slice(&body[..DH_LEN]);
        self.state.mix_hash(&body[..DH_LEN]);
        // The initiator's payload is unencrypted and carries nothing for us.
        let mut ignored = Vec::new();
        self.state.decrypt_and_hash(&body[DH_LEN..], &mut ignored)?;
        self.send_message(|h, out| {
            let e = h.ephemeral_public;
            out.extend_from_slice(&e);
            h.state.mix_hash(&e);
            h.state
                .mix_key(dh(&h.ephemeral_secret, &h.remote_ephemeral)?);
            h.write_static_and_payload(out)
        })?;
        self.step = Step::AwaitThird;
        Ok(())
    }

    /// Initiator: `<- e, ee, s, es` with the responder's identity; answers
    /// `-> s, se` with ours and is done.
    fn read_second(&mut self, body: &[u8]) -> Result<(), NoiseError> {
        if body.len() < DH_LEN + DH_LEN + TAG_LEN + TAG_LEN {
            return Err(NoiseError::Malformed {
                message: 2,
                len: body.len(),
            });
        }
        self.remote_ephemeral.copy_from_slice(&body[..DH_LEN]);
        self.state.mix_hash(&body[..DH_LEN]);
        self.state
            .mix_key(dh(&self.ephemeral_secret, &self.remote_ephemeral)?);
        let (peer, public_key) = self.read_static_and_payload(&body[DH_LEN..])?;
        self.send_message(|h, out| h.write_static_and_payload(out))?;
        let (send, recv) = self.state.split(self.cipher);
        self.finish(peer, public_key, send, recv);
        Ok(())
    }

    /// Responder: `-> s, se` with the initiator's identity; done.
    fn read_third(&mut self, body: &[u8]) -> Result<(), NoiseError> {
        if body.len() < DH_LEN + TAG_LEN + TAG_LEN {
            return Err(NoiseError::Malformed {
                message: 3,
                len: body.len(),
            });
        }
        let (peer, public_key) = self.read_static_and_payload(body)?;
        let (recv, send) = self.state.split(self.cipher);
        self.finish(peer, public_key, send, recv);
        Ok(())
    }

    /// The remote's `s` then `es` (as initiator) or `se` (as responder), both
    /// DH(our ephemeral, their static), then its identity payload.
    fn read_static_and_payload(&mut self, body: &[u8]) -> Result<(PeerId, PublicKey), NoiseError> {
        let mut remote_static = Vec::with_capacity(DH_LEN);
        self.state
            .decrypt_and_hash(&body[..DH_LEN + TAG_LEN], &mut remote_static)?;
        let remote_static: [u8; 32] = remote_static.try_into().expect("32 bytes decrypted");
        self.state
            .mix_key(dh(&self.ephemeral_secret, &remote_static)?);
        let mut payload = Vec::new();
        self.state
            .decrypt_and_hash(&body[DH_LEN + TAG_LEN..], &mut payload)?;
        self.verify(&payload, &remote_static)
    }

    /// Our `s` then `es` (as responder) or `se` (as initiator), both
    /// DH(our static, their ephemeral), then our identity payload.
    fn write_static_and_payload(&mut self, out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let s = self.static_public;
        self.state.encrypt_and_hash(&s, out)?;
        self.state
            .mix_key(dh(&self.static_secret, &self.remote_ephemeral)?);
        let payload = core::mem::take(&mut self.payload);
        self.state.encrypt_and_hash(&payload, out)
    }

    /// Appends one handshake frame written by `write`.
    fn send_message(
        &mut self,
        write: impl FnOnce(&mut Self, &mut Vec<u8>) -> Result<(), NoiseError>,
    ) -> Result<(), NoiseError> {
        let mut out = core::mem::take(&mut self.out);
        let result = push_frame(&mut out, |out| write(self, out));
        self.out = out;
        result
    }

    /// Checks the remote's identity payload against its static key.
    fn verify(
        &self,
        payload: &[u8],
        remote_static: &[u8; 32],
    ) -> Result<(PeerId, PublicKey), NoiseError> {
        let payload = HandshakePayload::decode(payload).map_err(|_| NoiseError::InvalidPayload)?;
        let key = PublicKey::try_decode_protobuf(&payload.identity_key)?;
        let mut signed = Vec::with_capacity(SIGNATURE_PREFIX.len() + DH_LEN);
        signed.extend_from_slice(SIGNATURE_PREFIX);
        signed.extend_from_slice(remote_static);
        if !key.verify(&signed, &payload.identity_sig) {
            return Err(NoiseError::BadSignature);
        }
        let peer = key.to_peer_id();
        if let Some(expected) = self.expected {
            if expected != peer {
                return Err(NoiseError::UnexpectedPeer {
                    expected,
                    found: peer,
                });
            }
        }
        Ok((peer, key))
    }

    fn finish(
        &mut self,
        peer: PeerId,
        public_key: PublicKey,
        send: CipherState,
        recv: CipherState,
    ) {
        self.step = Step::Done;
        self.event = Some(Event::Done {
            peer,
            public_key,
            transport: Box::new(Transport {
                send,
                recv,
                frame: FrameBuf::default(),
            }),
        });
    }
}

// -------------------------------------------------------------- transport

/// The encrypted channel after the handshake: frames what we send, checks
/// and opens what we read.
pub struct Transport {
    send: CipherState,
    recv: CipherState,
    /// A frame split across reads (at most 2 + [`MAX_FRAME_LEN`] bytes).
    frame: FrameBuf,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("sent", &self.send.nonce)
            .field("received", &self.recv.nonce)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// The ChaCha20-Poly1305 implementation in use.
    pub fn cipher(&self) -> CipherBackend {
        self.send.backend()
    }

    /// Appends `plaintext` to `out` as encrypted frames of at most
    /// [`MAX_PLAINTEXT_LEN`] bytes of plaintext each.
    pub fn encrypt(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        for chunk in plaintext.chunks(MAX_PLAINTEXT_LEN) {
            let len = chunk.len() + TAG_LEN;
            out.extend_from_slice(&(len as u16).to_be_bytes());
            self.send.encrypt(&[], chunk, out)?;
        }
        Ok(())
    }

    /// Like [`encrypt`](Self::encrypt), with the plaintext written straight
    /// into `out` (so it is not copied once more to be framed): `write(out,
    /// room)` appends at most `room` bytes (`room` is never zero) and
    /// returns whether it has more. A call that appends nothing but says
    /// it has more ends the frame early: the next call gets a new frame's
    /// full room (a writer whose next piece is too big for what is left);
    /// one that does so at the start of a frame ends the writing. Frames
    /// of at most [`MAX_PLAINTEXT_LEN`] plaintext bytes each, as `encrypt`
    /// makes them.
    ///
    /// ```
    /// # use sansp2p::security::noise::{Event, Handshake};
    /// # use sansp2p::Keypair;
    /// # let (a, b) = (Keypair::from_secret_bytes([1; 32]), Keypair::from_secret_bytes([2; 32]));
    /// # let mut dialer = Handshake::initiator(&a, [3; 32], [4; 32], None);
    /// # let mut listener = Handshake::responder(&b, [5; 32], [6; 32]);
    /// # for _ in 0..3 {
    /// #     let mut wire = Vec::new();
    /// #     dialer.poll_transmit(&mut wire);
    /// #     listener.handle_read(&wire);
    /// #     wire.clear();
    /// #     listener.poll_transmit(&mut wire);
    /// #     dialer.handle_read(&wire);
    /// # }
    /// # let Some(Event::Done { transport: mut ours, .. }) = dialer.poll_event() else { panic!() };
    /// # let Some(Event::Done { transport: mut theirs, .. }) = listener.poll_event() else { panic!() };
    /// // Two pieces, written where they will be sealed.
    /// let mut pieces = [&b"hello, "[..], b"world"].into_iter();
    /// let mut wire = Vec::new();
    /// ours.encrypt_from(&mut wire, |out, room| match pieces.next() {
    ///     Some(p) => {
    ///         out.extend_from_slice(&p[..p.len().min(room)]);
    ///         true
    ///     }
    ///     None => false,
    /// })
    /// .unwrap();
    /// let mut plain = Vec::new();
    /// theirs.decrypt(&wire, &mut plain).unwrap();
    /// assert_eq!(plain, b"hello, world");
    /// ```
    pub fn encrypt_from(
        &mut self,
        out: &mut Vec<u8>,
        mut write: impl FnMut(&mut Vec<u8>, usize) -> bool,
    ) -> Result<(), NoiseError> {
        loop {
            let at = out.len();
            out.extend_from_slice(&[0, 0]);
            let mut more = true;
            while more && out.len() - at - 2 < MAX_PLAINTEXT_LEN {
                let before = out.len();
                let room = MAX_PLAINTEXT_LEN - (before - at - 2);
                more = write(out, room);
                assert!(
                    out.len() - before <= room,
                    "encrypt_from: the writer overran its room"
                );
                if out.len() == before {
                    break;
                }
            }
            let len = out.len() - at - 2;
            if len == 0 {
                out.truncate(at);
                return Ok(());
            }
            self.send.seal_in_place(&[], out, at + 2)?;
            out[at..at + 2].copy_from_slice(&((len + TAG_LEN) as u16).to_be_bytes());
            if !more {
                return Ok(());
            }
        }
    }

    /// Consumes all of `data` (frames may span calls) and appends the
    /// plaintext of every complete frame to `out`. After an error the
    /// connection must be closed.
    pub fn decrypt(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let used = self.decrypt_up_to(data, out, usize::MAX)?;
        debug_assert_eq!(used, data.len());
        Ok(())
    }

    /// Like [`decrypt`](Self::decrypt), but starts no new frame once `out`
    /// holds `limit` bytes or more: returns how many bytes of `data` it
    /// consumed; give the rest again later. A frame split across calls is
    /// kept inside (at most 2 + [`MAX_FRAME_LEN`] bytes), so the count covers
    /// partial frames too.
    pub fn decrypt_up_to(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<usize, NoiseError> {
        self.decrypt_up_to_shared(data, out, limit, usize::MAX)
            .map(|(used, _)| used)
    }

    /// Like [`decrypt_up_to`](Self::decrypt_up_to), but a frame whose
    /// plaintext is `large` bytes or more goes into an allocation of its
    /// own, exactly its size, returned beside `out` (its bytes come after
    /// `out`'s); decrypting stops after it. Such a frame can then be handed
    /// on without another copy (to
    /// [`Session::handle_read_shared`](crate::yamux::Session::handle_read_shared)).
    pub fn decrypt_up_to_shared(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
        large: usize,
    ) -> Result<(usize, Option<Bytes>), NoiseError> {
        let mut used = 0;
        while out.len() < limit && used < data.len() {
            let rest = &data[used..];
            let whole = self.frame.is_empty()
                && rest.len() >= 2
                && rest.len() >= 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let (sealed, taken) = if whole {
                // Straight from the input, no copy into the frame buffer.
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                (&rest[2..2 + len], 2 + len)
            } else {
                let (n, complete) = self.frame.fill(rest);
                used += n;
                if !complete {
                    break;
                }
                (self.frame.body(), 0)
            };
            let result = if sealed.len().saturating_sub(TAG_LEN) >= large {
                let mut own = Vec::with_capacity(sealed.len());
                self.recv.decrypt(&[], sealed, &mut own).map(|()| Some(own))
            } else {
                self.recv.decrypt(&[], sealed, out).map(|()| None)
            };
            if !whole {
                self.frame.clear();
            }
            used += taken;
            if let Some(own) = result? {
                return Ok((used, Some(Bytes::from(own))));
            }
        }
        Ok((used, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn keys() -> (Keypair, Keypair) {
        (
            Keypair::from_secret_bytes([1; 32]),
            Keypair::from_secret_bytes([2; 32]),
        )
    }

    /// Runs both sides to the end, delivering each side's bytes in chunks
    /// of the given sizes (cycled); returns both events and what each side
    /// left unconsumed of `tail`, bytes the peer sent right after its last
    /// handshake message.
    fn run(
        init: &mut Handshake,
        resp: &mut Handshake,
        chunks: &[usize],
        tail: &[u8],
    ) -> (Option<Event>, Option<Event>, Vec<u8>) {
        let mut to_resp = Vec::new();
        let mut to_init = Vec::new();
        let mut k = 0;
        let mut leftover = Vec::new();
        for _ in 0..8 {
            let _ = init.poll_transmit(&mut to_resp);
            if init.is_finished() && !to_resp.is_empty() {
                to_resp.extend_from_slice(tail);
            }
            while !to_resp.is_empty() {
                let n = chunks[k % chunks.len()].clamp(1, to_resp.len());
                k += 1;
                let used = resp.handle_read(&to_resp[..n]);
                assert!(used <= n);
                if used < n {
                    assert!(resp.is_finished(), "consumed less without finishing");
                    leftover.extend_from_slice(&to_resp[used..n]);
                }
                to_resp.drain(..n);
            }
            let _ = resp.poll_transmit(&mut to_init);
            while !to_init.is_empty() {
                let n = chunks[k % chunks.len()].clamp(1, to_init.len());
                k += 1;
                let used = init.handle_read(&to_init[..n]);
                assert_eq!(
                    used, n,
                    "the initiator's handshake ends with its own message"
                );
                to_init.drain(..n);
            }
        }
        (init.poll_event(), resp.poll_event(), leftover)
    }

    fn pair(expected: Option<PeerId>) -> (Handshake, Handshake) {
        let (a, b) = keys();
        (
            Handshake::initiator(&a, [3; 32], [4; 32], expected),
            Handshake::responder(&b, [5; 32], [6; 32]),
        )
    }

    fn transports(events: (Option<Event>, Option<Event>)) -> (Box<Transport>, Box<Transport>) {
        let (a, b) = keys();
        match events {
            (
                Some(Event::Done {
                    peer: pa,
                    transport: ta,
                    public_key: ka,
                }),
                Some(Event::Done {
                    peer: pb,
                    transport: tb,
                    public_key: kb,
                }),
            ) => {
                assert_eq!((pa, ka), (b.peer_id(), b.public()));
                assert_eq!((pb, kb), (a.peer_id(), a.public()));
                (ta, tb)
            }
            other => panic!("handshake did not complete: {other:?}"),
        }
    }

    /// Every backend compiled in.
    fn backends() -> Vec<CipherBackend> {
        #[allow(unused_mut)]
        let mut all = vec![CipherBackend::Portable];
        #[cfg(feature = "ring")]
        all.push(CipherBackend::Ring);
        all
    }

    #[test]
    fn every_backend_pair_talks_and_refuses_tampered_frames() {
        for a in backends() {
            for b in backends() {
                let (i, r) = pair(None);
                let (mut i, mut r) = (i.with_cipher(a), r.with_cipher(b));
                let (ei, er, _) = run(&mut i, &mut r, &[1000], &[]);
                let (mut ti, mut tr) = transports((ei, er));
                assert_eq!((ti.cipher(), tr.cipher()), (a, b));
                // Frames of every size class, both ways, including a
                // plaintext above one frame.
                for len in [0, 1, 16, 1000, MAX_PLAINTEXT_LEN, MAX_PLAINTEXT_LEN + 7] {
                    let msg: Vec<u8> = (0..len).map(|k| (k * 31 % 251) as u8).collect();
                    for forward in [true, false] {
                        let (from, to) = if forward {
                            (&mut ti, &mut tr)
                        } else {
                            (&mut tr, &mut ti)
                        };
                        let mut wire = Vec::new();
                        from.encrypt(&msg, &mut wire).unwrap();
                        let mut plain = Vec::new();
                        to.decrypt(&wire, &mut plain).unwrap();
                        assert_eq!(plain, msg, "{a:?} <-> {b:?}, {len} bytes");
                    }
                }
                // One flipped bit in a tag: a typed error, nothing appended.
                let mut wire = Vec::new();
                ti.encrypt(b"tamper", &mut wire).unwrap();
                *wire.last_mut().unwrap() ^= 1;
                let mut plain = b"kept".to_vec();
                assert_eq!(tr.decrypt(&wire, &mut plain), Err(NoiseError::Decrypt));
                assert_eq!(plain, b"kept");
            }
        }
    }

    #[test]
    fn encrypt_from_frames_as_encrypt_does_whatever_the_writer_hands_over() {
        for len in [
            0,
            1,
            1000,
            MAX_PLAINTEXT_LEN - 1,
            MAX_PLAINTEXT_LEN,
            MAX_PLAINTEXT_LEN + 1,
            200_000,
        ] {
            let data: Vec<u8> = (0..len).map(|k| (k * 13 % 251) as u8).collect();
            for piece in [1usize, 7, 16_396, 70_000] {
                let (mut i, mut r) = pair(None);
                let (ei, er, _) = run(&mut i, &mut r, &[1000], &[]);
                let (mut a, mut b) = transports((ei, er));
                // The same keys and nonces on two fresh pairs: `encrypt`'s
                // bytes are the reference.
                let (mut i2, mut r2) = pair(None);
                let (ei2, er2, _) = run(&mut i2, &mut r2, &[1000], &[]);
                let (mut reference, _) = transports((ei2, er2));
                let mut expected = Vec::new();
                reference.encrypt(&data, &mut expected).unwrap();

                let mut at = 0;
                let mut wire = Vec::new();
                a.encrypt_from(&mut wire, |out, room| {
                    let n = piece.min(room).min(data.len() - at);
                    out.extend_from_slice(&data[at..at + n]);
                    at += n;
                    at < data.len()
                })
                .unwrap();
                assert_eq!(wire, expected, "{len} bytes in pieces of {piece}");
                let mut plain = Vec::new();
                b.decrypt(&wire, &mut plain).unwrap();
                assert_eq!(plain, data);
            }
        }
    }

    #[cfg(feature = "ring")]
    #[test]
    fn both_backends_seal_the_same_bytes() {
        let mut wires = Vec::new();
        for backend in backends() {
            let mut c = CipherState::new([9; 32], backend);
            let mut wire = Vec::new();
            for msg in [&b""[..], b"ad and body", &[0xa5; 5000]] {
                c.encrypt(b"associated", msg, &mut wire).unwrap();
            }
            wires.push(wire);
        }
        assert_eq!(wires[0], wires[1]);
    }

    proptest! {
        // Each case runs a full handshake and up to 3 frames each way in a
        // debug build: a few dozen cases cover the read-size space.
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_read_sizes_complete_and_hand_back_what_follows(
            chunks in prop::collection::vec(1usize..200, 1..8),
            tail in prop::collection::vec(any::<u8>(), 0..100),
            data in prop::collection::vec(any::<u8>(), 0..140_000),
        ) {
            let (mut i, mut r) = pair(Some(keys().1.peer_id()));
            let (ei, er, leftover) = run(&mut i, &mut r, &chunks, &tail);
            prop_assert_eq!(&leftover, &tail);
            let (mut ti, mut tr) = transports((ei, er));
            // Both directions, the receiver fed in the same odd chunks.
            for flip in [false, true] {
                let (tx, rx) = if flip { (&mut tr, &mut ti) } else { (&mut ti, &mut tr) };
                let mut wire = Vec::new();
                tx.encrypt(&data, &mut wire).unwrap();
                let frames = data.len().div_ceil(MAX_PLAINTEXT_LEN);
                prop_assert_eq!(wire.len(), data.len() + frames * (2 + TAG_LEN));
                let mut got = Vec::new();
                let mut at = 0;
                let mut k = 0;
                while at < wire.len() {
                    let n = (chunks[k % chunks.len()] * 97).min(wire.len() - at);
                    k += 1;
                    rx.decrypt(&wire[at..at + n], &mut got).unwrap();
                    at += n;
                }
                prop_assert!(got == data);
            }
        }
    }

    #[test]
    fn both_sides_agree_on_the_handshake_hash_and_keys() {
        let (mut i, mut r) = pair(None);
        run(&mut i, &mut r, &[1000], &[]);
        // Peeking at the internals: the same transcript on both sides.
        assert_eq!(i.state.hash, r.state.hash);
        assert_eq!(i.state.chaining_key, r.state.chaining_key);
    }

    #[test]
    fn replayed_reordered_and_truncated_frames_are_refused() {
        let (mut i, mut r) = pair(None);
        let (ei, er, _) = run(&mut i, &mut r, &[1000], &[]);
        let (mut ti, mut tr) = transports((ei, er));
        let mut first = Vec::new();
        ti.encrypt(b"one", &mut first).unwrap();
        let mut second = Vec::new();
        ti.encrypt(b"two", &mut second).unwrap();
        let mut got = Vec::new();
        // Out of order: the second frame under the first nonce.
        assert_eq!(tr.decrypt(&second, &mut got), Err(NoiseError::Decrypt));
        assert!(got.is_empty());

        let (mut i, mut r) = pair(None);
        let (ei, er, _) = run(&mut i, &mut r, &[1000], &[]);
        let (mut ti, mut tr) = transports((ei, er));
        let mut wire = Vec::new();
        ti.encrypt(b"one", &mut wire).unwrap();
        tr.decrypt(&wire, &mut got).unwrap();
        assert_eq!(got, b"one");
        // Replayed: the nonce moved on.
        assert_eq!(tr.decrypt(&wire, &mut got), Err(NoiseError::Decrypt));
        // A frame too short to hold a tag.
        let (mut i, mut r) = pair(None);
        let (ei, er, _) = run(&mut i, &mut r, &[1000], &[]);
        let (_, mut tr) = transports((ei, er));
        assert_eq!(
            tr.decrypt(&[0, 3, 1, 2, 3], &mut got),
            Err(NoiseError::Decrypt)
        );
        assert_eq!(tr.decrypt(&[0, 0], &mut got), Err(NoiseError::Decrypt));
    }

    #[test]
    fn a_tampered_handshake_fails_with_a_typed_error() {
        // Flip each byte of message 2 in turn: the initiator must fail, and
        // never with a panic.
        let (mut i, mut r) = pair(None);
        let mut m1 = Vec::new();
        let _ = i.poll_transmit(&mut m1);
        let _ = r.handle_read(&m1);
        let mut m2 = Vec::new();
        let _ = r.poll_transmit(&mut m2);
        for at in 2..m2.len() {
            let (a, _) = keys();
            let mut fresh = Handshake::initiator(&a, [3; 32], [4; 32], None);
            let mut tampered = m2.clone();
            tampered[at] ^= 0x80;
            let _ = fresh.handle_read(&tampered);
            match fresh.poll_event() {
                Some(Event::Failed(NoiseError::Decrypt | NoiseError::LowOrderKey)) => {}
                other => panic!("byte {at}: {other:?}"),
            }
            let mut out = Vec::new();
            assert_eq!(
                fresh.poll_transmit(&mut out),
                0,
                "nothing sent after a failure"
            );
        }
    }

    #[test]
    fn a_signature_over_another_static_key_is_refused() {
        // The responder signs a static key other than the one it uses.
        let (a, b) = keys();
        let mut i = Handshake::initiator(&a, [3; 32], [4; 32], None);
        let mut r = Handshake::responder(&b, [5; 32], [6; 32]);
        let forged = Handshake::responder(&b, [9; 32], [6; 32]);
        r.payload = forged.payload.clone();
        let (ei, _, _) = run(&mut i, &mut r, &[1000], &[]);
        assert!(
            matches!(ei, Some(Event::Failed(NoiseError::BadSignature))),
            "{ei:?}"
        );
    }

    #[test]
    fn the_dialer_refuses_an_unexpected_peer() {
        let other = Keypair::from_secret_bytes([77; 32]).peer_id();
        let (mut i, mut r) = pair(Some(other));
        let (ei, er, _) = run(&mut i, &mut r, &[1000], &[]);
        match ei {
            Some(Event::Failed(NoiseError::UnexpectedPeer { expected, found })) => {
                assert_eq!((expected, found), (other, keys().1.peer_id()));
            }
            other => panic!("{other:?}"),
        }
        assert!(er.is_none(), "the responder never gets message 3");
    }

    #[test]
    fn low_order_and_short_messages_are_refused() {
        let (_, b) = keys();
        // Message 1 with the all-zero point: DH would give all zeros.
        let mut r = Handshake::responder(&b, [5; 32], [6; 32]);
        let mut m1 = vec![0, 32];
        m1.extend_from_slice(&[0; 32]);
        assert_eq!(r.handle_read(&m1), m1.len());
        assert!(matches!(
            r.poll_event(),
            Some(Event::Failed(NoiseError::LowOrderKey))
        ));
        // Too short for an ephemeral key.
        let mut r = Handshake::responder(&b, [5; 32], [6; 32]);
        let _ = r.handle_read(&[0, 5, 1, 2, 3, 4, 5]);
        assert!(matches!(
            r.poll_event(),
            Some(Event::Failed(NoiseError::Malformed { message: 1, len: 5 }))
        ));
        // Message 2 too short for e, s and two tags.
        let (a, _) = keys();
        let mut i = Handshake::initiator(&a, [3; 32], [4; 32], None);
        let mut m2 = vec![0, 95];
        m2.extend_from_slice(&[9; 95]);
        let _ = i.handle_read(&m2);
        assert!(matches!(
            i.poll_event(),
            Some(Event::Failed(NoiseError::Malformed {
                message: 2,
                len: 95
            }))
        ));
        // The peer leaves mid-handshake.
        let mut r = Handshake::responder(&b, [5; 32], [6; 32]);
        let _ = r.handle_read(&[0, 32, 1]);
        r.handle_eof();
        assert!(matches!(
            r.poll_event(),
            Some(Event::Failed(NoiseError::UnexpectedEof))
        ));
    }

    #[test]
    fn decrypt_up_to_starts_no_frame_past_the_limit() {
        let (mut i, mut r) = pair(None);
        let (ei, er, _) = run(&mut i, &mut r, &[1000], &[]);
        let (mut ti, mut tr) = transports((ei, er));
        let mut wire = Vec::new();
        ti.encrypt(b"first", &mut wire).unwrap();
        let first = wire.len();
        ti.encrypt(b"second", &mut wire).unwrap();
        let mut got = Vec::new();
        assert_eq!(tr.decrypt_up_to(&wire, &mut got, 1).unwrap(), first);
        assert_eq!(got, b"first");
        assert_eq!(tr.decrypt_up_to(&wire[first..], &mut got, 1).unwrap(), 0);
        // A partial frame is taken in (and counted) while under the limit.
        got.clear();
        assert_eq!(
            tr.decrypt_up_to(&wire[first..first + 3], &mut got, 1)
                .unwrap(),
            3
        );
        assert!(got.is_empty());
        assert_eq!(
            tr.decrypt_up_to(&wire[first + 3..], &mut got, 1).unwrap(),
            wire.len() - first - 3
        );
        assert_eq!(got, b"second");
    }

    #[test]
    fn nonce_exhaustion_ends_the_channel() {
        let (mut i, mut r) = pair(None);
        let (ei, er, _) = run(&mut i, &mut r, &[1000], &[]);
        let (mut ti, _) = transports((ei, er));
        ti.send.nonce = u64::MAX - 1;
        let mut wire = Vec::new();
        ti.encrypt(b"last", &mut wire).unwrap();
        assert_eq!(
            ti.encrypt(b"one too many", &mut wire),
            Err(NoiseError::NonceExhausted)
        );
    }
}
