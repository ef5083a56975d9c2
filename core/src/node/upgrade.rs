//! The upgrade of a raw connection into an authenticated, multiplexed one:
//! multistream-select -> security -> multistream-select -> muxer.
//!
//! [`Upgrade`] is its own sans-IO machine so it can be tested and fuzzed
//! alone; the node runs one per connection until it reports
//! [`Upgraded`], then hands the bytes that follow to the yamux session.
//!
//! The security seam: [`Security`] names the protocols the pipeline can run
//! (noise, plaintext). The chosen protocol's handshake runs in the securing
//! stage; with noise, its [`Channel`] then carries every byte that follows,
//! from the muxer negotiation on, and [`Upgrade::take_channel`] hands it to
//! whoever runs the muxer.

use alloc::boxed::Box;
use alloc::vec::Vec;
use bytes::Bytes;

use crate::identity::{Keypair, PeerId, PublicKey};
use crate::multistream::{self, NegotiationError, Negotiator};
use crate::security::noise::{self, NoiseError};
use crate::security::plaintext::{self, PlaintextError};

/// The muxer protocol name.
pub const YAMUX: &str = "/yamux/1.0.0";

/// A security protocol the pipeline can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Security {
    /// `/noise`: Noise XX, authenticated and encrypted (the libp2p default).
    Noise,
    /// `/plaintext/2.0.0`: no encryption; for tests and trusted networks.
    Plaintext,
}

impl Security {
    /// The protocol name negotiated with multistream-select.
    pub fn protocol(self) -> &'static str {
        match self {
            Security::Noise => noise::PROTOCOL,
            Security::Plaintext => plaintext::PROTOCOL,
        }
    }

    fn from_protocol(name: &str) -> Option<Self> {
        [Security::Noise, Security::Plaintext]
            .into_iter()
            .find(|s| s.protocol() == name)
    }
}

/// Fresh random X25519 secrets for one noise handshake (static and
/// ephemeral); the caller's RNG makes them, since the core has none.
#[derive(Clone)]
pub struct NoiseSecrets {
    /// The static key of this handshake.
    pub static_secret: [u8; 32],
    /// The ephemeral key.
    pub ephemeral_secret: [u8; 32],
}

impl core::fmt::Debug for NoiseSecrets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NoiseSecrets(..)")
    }
}

/// What carries the muxer's bytes once the connection is secured.
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum Channel {
    /// Bytes go as they are (plaintext/2.0.0).
    #[default]
    Clear,
    /// Noise frames.
    Noise {
        /// The cipher of both directions.
        transport: Box<noise::Transport>,
        /// Decrypted bytes the muxer has not consumed yet.
        pending: Vec<u8>,
        /// A large frame decrypted into memory of its own, which the muxer
        /// keeps slices of instead of copies; its bytes follow `pending`'s.
        shared: Bytes,
    },
}

impl Channel {
    /// Appends `plain` to `out` the way the channel sends it.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        match self {
            Channel::Clear => {
                out.extend_from_slice(plain);
                Ok(())
            }
            Channel::Noise { transport, .. } => transport.encrypt(plain, out),
        }
    }

    /// Like [`seal`](Self::seal), with the plaintext written into `out`
    /// by `write` (see [`noise::Transport::encrypt_from`]), so that nothing
    /// is gathered in the clear first.
    pub fn seal_from(
        &mut self,
        out: &mut Vec<u8>,
        mut write: impl FnMut(&mut Vec<u8>, usize) -> bool,
    ) -> Result<(), NoiseError> {
        match self {
            Channel::Clear => {
                while write(out, usize::MAX) {}
                Ok(())
            }
            Channel::Noise { transport, .. } => transport.encrypt_from(out, write),
        }
    }
}

/// Which side of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// We opened the connection.
    Dialer,
    /// We accepted it.
    Listener,
}

/// What a finished upgrade established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgraded {
    /// The authenticated remote peer.
    pub peer: PeerId,
    /// Its public key.
    pub public_key: PublicKey,
    /// The security protocol in use.
    pub security: Security,
    /// The muxer protocol name.
    pub muxer: &'static str,
}

/// Why an upgrade failed. The connection is to be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// No security protocol agreed, or the negotiation broke.
    #[error("security negotiation: {0}")]
    SecurityNegotiation(NegotiationError),
    /// The plaintext handshake failed (includes reaching the wrong peer).
    #[error("plaintext handshake: {0}")]
    Plaintext(#[from] PlaintextError),
    /// The noise handshake or the channel after it failed (includes
    /// reaching the wrong peer).
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    /// No muxer agreed, or the negotiation broke.
    #[error("muxer negotiation: {0}")]
    MuxerNegotiation(NegotiationError),
    /// The upgrade did not finish in time.
    #[error("upgrade timed out")]
    Timeout,
}

/// Where the upgrade stands.
#[derive(Debug)]
enum Stage {
    NegotiatingSecurity(Negotiator),
    Securing(SecureHandshake),
    NegotiatingMuxer { neg: Negotiator, upgraded: Upgraded },
    Done,
}

/// The handshake of the negotiated security protocol. Short-lived and
/// inside the boxed [`Upgrade`]: its variants stay unboxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum SecureHandshake {
    Plaintext(plaintext::Handshake),
    Noise(noise::Handshake),
}

impl SecureHandshake {
    fn handle_read(&mut self, data: &[u8]) -> usize {
        match self {
            SecureHandshake::Plaintext(h) => h.handle_read(data),
            SecureHandshake::Noise(h) => h.handle_read(data),
        }
    }

    fn handle_eof(&mut self) {
        match self {
            SecureHandshake::Plaintext(h) => h.handle_eof(),
            SecureHandshake::Noise(h) => h.handle_eof(),
        }
    }

    fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        match self {
            SecureHandshake::Plaintext(h) => h.poll_transmit(out),
            SecureHandshake::Noise(h) => h.poll_transmit(out),
        }
    }

    /// The outcome, once: who the peer is and the channel, or why not.
    fn poll_event(
        &mut self,
    ) -> Option<Result<(Security, PeerId, PublicKey, Channel), UpgradeError>> {
        match self {
            SecureHandshake::Plaintext(h) => match h.poll_event()? {
                plaintext::Event::Done { peer, public_key } => {
                    Some(Ok((Security::Plaintext, peer, public_key, Channel::Clear)))
                }
                plaintext::Event::Failed(e) => Some(Err(e.into())),
            },
            SecureHandshake::Noise(h) => match h.poll_event()? {
                noise::Event::Done {
                    peer,
                    public_key,
                    transport,
                } => Some(Ok((
                    Security::Noise,
                    peer,
                    public_key,
                    Channel::Noise {
                        transport,
                        pending: Vec::new(),
                        shared: Bytes::new(),
                    },
                ))),
                noise::Event::Failed(e) => Some(Err(e.into())),
            },
        }
    }
}

/// The upgrade machine for one connection.
///
/// Inputs: [`handle_read`](Self::handle_read) (consumes exactly the upgrade;
/// what follows belongs to the muxer), [`handle_eof`](Self::handle_eof).
/// Outputs: [`poll_transmit`](Self::poll_transmit),
/// [`poll_event`](Self::poll_event), then
/// [`take_channel`](Self::take_channel). No timers: the node enforces the
/// upgrade timeout.
#[derive(Debug)]
pub struct Upgrade {
    endpoint: Endpoint,
    identity: Keypair,
    secrets: NoiseSecrets,
    expected: Option<PeerId>,
    stage: Stage,
    /// The secured channel, from the muxer negotiation on.
    channel: Channel,
    out: Vec<u8>,
    outcome: Option<Result<Upgraded, UpgradeError>>,
    /// The ChaCha20-Poly1305 backend of a noise transport.
    noise_cipher: noise::CipherBackend,
}

impl Upgrade {
    /// Starts an upgrade offering `security` (in preference order). A
    /// dialer passes the peer it means to reach, if it knows it. `secrets`
    /// are used if noise is chosen. An empty `security` list is refused.
    pub fn new(
        endpoint: Endpoint,
        key: &Keypair,
        security: &[Security],
        expected: Option<PeerId>,
        secrets: NoiseSecrets,
    ) -> Result<Self, super::ConfigError> {
        let names = security.iter().map(|s| s.protocol());
        let neg = match endpoint {
            Endpoint::Dialer => Negotiator::dialer(names),
            Endpoint::Listener => Negotiator::listener(names),
        }
        .map_err(|_| super::ConfigError::NoSecurity)?;
        let mut up = Upgrade {
            endpoint,
            identity: key.clone(),
            secrets,
            expected,
            stage: Stage::NegotiatingSecurity(neg),
            channel: Channel::Clear,
            out: Vec::new(),
            outcome: None,
            noise_cipher: noise::CipherBackend::default(),
        };
        up.collect_output();
        Ok(up)
    }

    /// Sets the ChaCha20-Poly1305 backend a noise transport will use
    /// (default [`noise::CipherBackend::default`]).
    #[must_use]
    pub fn with_noise_cipher(mut self, cipher: noise::CipherBackend) -> Self {
        self.noise_cipher = cipher;
        self
    }

    /// Whether the upgrade is over, one way or the other.
    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// Feeds bytes from the peer; returns how many belong to the upgrade.
    /// With noise, bytes decrypted past the muxer negotiation stay in the
    /// [`Channel`]'s `pending`.
    #[must_use]
    pub fn handle_read(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let n = match &mut self.stage {
                Stage::NegotiatingSecurity(neg) => neg.handle_read(&data[used..]),
                Stage::Securing(handshake) => handshake.handle_read(&data[used..]),
                Stage::NegotiatingMuxer { neg, .. } => match &mut self.channel {
                    Channel::Clear => neg.handle_read(&data[used..]),
                    Channel::Noise {
                        transport, pending, ..
                    } => match read_secured(neg, transport, pending, &data[used..]) {
                        Ok(n) => n,
                        Err(e) => {
                            self.finish(Err(e.into()));
                            return data.len();
                        }
                    },
                },
                Stage::Done => return used,
            };
            used += n;
            let before = self.out.len();
            let advanced = self.advance();
            if !advanced && (n == 0 || used == data.len()) {
                return used;
            }
            // A listener reads no further while an answer (`na`, an `ls`
            // reply) is unsent: each message of a peer that writes without
            // reading would otherwise queue one more answer.
            if self.endpoint == Endpoint::Listener
                && !advanced
                && self.out.len() > before
                && matches!(
                    self.stage,
                    Stage::NegotiatingSecurity(_) | Stage::NegotiatingMuxer { .. }
                )
            {
                return used;
            }
        }
    }

    /// The peer closed the connection.
    pub fn handle_eof(&mut self) {
        match &mut self.stage {
            Stage::NegotiatingSecurity(neg) | Stage::NegotiatingMuxer { neg, .. } => {
                neg.handle_eof()
            }
            Stage::Securing(handshake) => handshake.handle_eof(),
            Stage::Done => return,
        }
        self.advance();
    }

    /// Whether bytes are waiting for [`poll_transmit`](Self::poll_transmit).
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
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
    pub fn poll_event(&mut self) -> Option<Result<Upgraded, UpgradeError>> {
        self.outcome.take()
    }

    /// After a successful upgrade: the channel the muxer runs on, with any
    /// bytes already decrypted for it.
    pub fn take_channel(&mut self) -> Channel {
        core::mem::take(&mut self.channel)
    }

    fn finish(&mut self, result: Result<Upgraded, UpgradeError>) {
        self.stage = Stage::Done;
        self.outcome = Some(result);
    }

    fn collect_output(&mut self) {
        match &mut self.stage {
            Stage::NegotiatingSecurity(neg) => {
                let _ = neg.poll_transmit(&mut self.out);
            }
            Stage::NegotiatingMuxer { neg, .. } => {
                let mut plain = Vec::new();
                let _ = neg.poll_transmit(&mut plain);
                if !plain.is_empty() {
                    if let Err(e) = self.channel.seal(&plain, &mut self.out) {
                        self.finish(Err(e.into()));
                    }
                }
            }
            Stage::Securing(handshake) => {
                handshake.poll_transmit(&mut self.out);
            }
            Stage::Done => {}
        }
    }

    /// Processes the current stage's events; returns whether the stage changed.
    fn advance(&mut self) -> bool {
        self.collect_output();
        match &mut self.stage {
            Stage::NegotiatingSecurity(neg) => {
                while let Some(event) = neg.poll_event() {
                    match event {
                        multistream::Event::Negotiated { protocol } => {
                            let Some(security) = Security::from_protocol(&protocol) else {
                                self.finish(Err(UpgradeError::SecurityNegotiation(
                                    NegotiationError::NotAgreed,
                                )));
                                return true;
                            };
                            let expected = match self.endpoint {
                                Endpoint::Dialer => self.expected,
                                Endpoint::Listener => None,
                            };
                            let handshake = match (security, self.endpoint) {
                                (Security::Plaintext, _) => SecureHandshake::Plaintext(
                                    plaintext::Handshake::new(&self.identity.public(), expected),
                                ),
                                (Security::Noise, Endpoint::Dialer) => SecureHandshake::Noise(
                                    noise::Handshake::initiator(
                                        &self.identity,
                                        self.secrets.static_secret,
                                        self.secrets.ephemeral_secret,
                                        expected,
                                    )
                                    .with_cipher(self.noise_cipher),
                                ),
                                (Security::Noise, Endpoint::Listener) => SecureHandshake::Noise(
                                    noise::Handshake::responder(
                                        &self.identity,
                                        self.secrets.static_secret,
                                        self.secrets.ephemeral_secret,
                                    )
                                    .with_cipher(self.noise_cipher),
                                ),
                            };
                            self.stage = Stage::Securing(handshake);
                            self.collect_output();
                            return true;
                        }
                        multistream::Event::Failed(e) => {
                            self.finish(Err(UpgradeError::SecurityNegotiation(e)));
                            return true;
                        }
                        _ => {}
                    }
                }
                false
            }
            Stage::Securing(handshake) => match handshake.poll_event() {
                Some(Ok((security, peer, public_key, channel))) => {
                    let upgraded = Upgraded {
                        peer,
                        public_key,
                        security,
                        muxer: YAMUX,
                    };
                    let neg = match self.endpoint {
                        Endpoint::Dialer => Negotiator::dialer([YAMUX]),
                        Endpoint::Listener => Negotiator::listener([YAMUX]),
                    }
                    .expect("the muxer name is valid");
                    self.channel = channel;
                    self.stage = Stage::NegotiatingMuxer { neg, upgraded };
                    self.collect_output();
                    true
                }
                Some(Err(e)) => {
                    self.finish(Err(e));
                    true
                }
                None => false,
            },
            Stage::NegotiatingMuxer { neg, upgraded } => {
                while let Some(event) = neg.poll_event() {
                    match event {
                        multistream::Event::Negotiated { .. } => {
                            let upgraded = upgraded.clone();
                            self.finish(Ok(upgraded));
                            return true;
                        }
                        multistream::Event::Failed(e) => {
                            self.finish(Err(UpgradeError::MuxerNegotiation(e)));
                            return true;
                        }
                        _ => {}
                    }
                }
                false
            }
            Stage::Done => false,
        }
    }
}

/// Feeds the muxer negotiation from noise frames, one frame at a time so
/// that nothing past the negotiation is decrypted before it ends; returns
/// how many raw bytes were consumed.
fn read_secured(
    neg: &mut Negotiator,
    transport: &mut noise::Transport,
    pending: &mut Vec<u8>,
    data: &[u8],
) -> Result<usize, NoiseError> {
    let mut used = 0;
    loop {
        let n = neg.handle_read(pending);
        pending.drain(..n);
        if neg.is_finished() || used == data.len() {
            return Ok(used);
        }
        // `pending` holds at most a partial negotiation message: take one
        // more frame (or the start of one).
        let k = transport.decrypt_up_to(&data[used..], pending, pending.len() + 1)?;
        used += k;
        if k == 0 {
            return Ok(used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(n: u8) -> NoiseSecrets {
        NoiseSecrets {
            static_secret: [n; 32],
            ephemeral_secret: [n + 1; 32],
        }
    }

    fn pair_with(
        expected: Option<PeerId>,
        security: &[Security],
    ) -> (Upgrade, Upgrade, Keypair, Keypair) {
        let (a, b) = (
            Keypair::from_secret_bytes([1; 32]),
            Keypair::from_secret_bytes([2; 32]),
        );
        let d = Upgrade::new(Endpoint::Dialer, &a, security, expected, secrets(10)).unwrap();
        let l = Upgrade::new(Endpoint::Listener, &b, security, None, secrets(20)).unwrap();
        (d, l, a, b)
    }

    fn pair(expected: Option<PeerId>) -> (Upgrade, Upgrade, Keypair, Keypair) {
        pair_with(expected, &[Security::Plaintext])
    }

    /// What the muxer on `up`'s side gets: the channel's pending bytes, then
    /// `raw` (left unconsumed by the upgrade) opened by the channel.
    fn muxer_input(up: &mut Upgrade, raw: &[u8]) -> Vec<u8> {
        match up.take_channel() {
            Channel::Clear => raw.to_vec(),
            Channel::Noise {
                mut transport,
                mut pending,
                ..
            } => {
                transport.decrypt(raw, &mut pending).unwrap();
                pending
            }
        }
    }

    /// Runs both until quiet, `chunk` bytes per read; returns the unconsumed
    /// bytes each side was left with.
    fn drive(d: &mut Upgrade, l: &mut Upgrade, chunk: usize, extra: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (mut to_l, mut to_d) = (Vec::new(), Vec::new());
        let (mut left_l, mut left_d) = (Vec::new(), Vec::new());
        let mut extra_sent = false;
        for _ in 0..100 {
            let _ = d.poll_transmit(&mut to_l);
            let _ = l.poll_transmit(&mut to_d);
            if d.is_finished() && !extra_sent {
                // The dialer's muxer speaks first, through the channel.
                let mut channel = d.take_channel();
                channel.seal(extra, &mut to_l).unwrap();
                extra_sent = true;
            }
            if to_l.is_empty() && to_d.is_empty() {
                break;
            }
            for (m, buf, left) in [
                (&mut *l, &mut to_l, &mut left_l),
                (&mut *d, &mut to_d, &mut left_d),
            ] {
                let mut pos = 0;
                while pos < buf.len() {
                    let end = (pos + chunk).min(buf.len());
                    pos += m.handle_read(&buf[pos..end]);
                    if pos < end {
                        left.extend_from_slice(&buf[pos..]);
                        break;
                    }
                }
                buf.clear();
            }
        }
        (left_d, left_l)
    }

    #[test]
    fn upgrade_completes_at_every_read_size_and_keeps_muxer_bytes() {
        for security in [Security::Plaintext, Security::Noise] {
            for chunk in [1, 2, 7, 65536] {
                let (mut d, mut l, a, b) = pair_with(None, &[security]);
                let yamux_frame = [0u8, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
                let (_, left_l) = drive(&mut d, &mut l, chunk, &yamux_frame);
                let ud = d.poll_event().unwrap().unwrap();
                let ul = l.poll_event().unwrap().unwrap();
                assert_eq!(
                    (ud.peer, ul.peer),
                    (b.peer_id(), a.peer_id()),
                    "{security:?} chunk {chunk}"
                );
                assert_eq!((ud.security, ud.muxer), (security, YAMUX));
                assert_eq!(ul.security, security);
                assert_eq!(
                    muxer_input(&mut l, &left_l),
                    yamux_frame,
                    "{security:?} chunk {chunk}: bytes after the upgrade are the muxer's"
                );
            }
        }
    }

    #[test]
    fn the_listener_picks_the_dialers_first_choice_it_supports() {
        let (a, b) = (
            Keypair::from_secret_bytes([1; 32]),
            Keypair::from_secret_bytes([2; 32]),
        );
        let both = [Security::Noise, Security::Plaintext];
        for (ours, theirs, want) in [
            (&both[..], &both[..], Some(Security::Noise)),
            (&both[1..], &both[..], Some(Security::Plaintext)),
            (&both[..1], &both[1..], None),
        ] {
            let mut d = Upgrade::new(Endpoint::Dialer, &a, ours, None, secrets(1)).unwrap();
            let mut l = Upgrade::new(Endpoint::Listener, &b, theirs, None, secrets(3)).unwrap();
            drive(&mut d, &mut l, 64, &[]);
            let got = d.poll_event().unwrap();
            assert_eq!(got.as_ref().ok().map(|u| u.security), want, "{got:?}");
        }
    }

    #[test]
    fn noise_dialer_reaching_the_wrong_peer_fails() {
        let wrong = Keypair::from_secret_bytes([9; 32]).peer_id();
        let (mut d, mut l, _, b) = pair_with(Some(wrong), &[Security::Noise]);
        drive(&mut d, &mut l, 64, &[]);
        assert_eq!(
            d.poll_event(),
            Some(Err(UpgradeError::Noise(NoiseError::UnexpectedPeer {
                expected: wrong,
                found: b.peer_id()
            })))
        );
    }

    #[test]
    fn dialer_reaching_the_wrong_peer_fails() {
        let wrong = Keypair::from_secret_bytes([9; 32]).peer_id();
        let (mut d, mut l, _, b) = pair(Some(wrong));
        drive(&mut d, &mut l, 64, &[]);
        assert_eq!(
            d.poll_event(),
            Some(Err(UpgradeError::Plaintext(
                PlaintextError::UnexpectedPeer {
                    expected: wrong,
                    actual: b.peer_id()
                }
            )))
        );
    }

    #[test]
    fn garbage_and_eof_fail_cleanly() {
        let (_, mut l, _, _) = pair(None);
        let _ = l.handle_read(b"\x05hello");
        assert!(matches!(
            l.poll_event(),
            Some(Err(UpgradeError::SecurityNegotiation(_)))
        ));
        let (mut d, _, _, _) = pair(None);
        d.handle_eof();
        assert!(matches!(
            d.poll_event(),
            Some(Err(UpgradeError::SecurityNegotiation(_)))
        ));
    }
}
