//! The upgrade of a raw connection into an authenticated, multiplexed one:
//! multistream-select -> security -> multistream-select -> muxer.
//!
//! [`Upgrade`] is its own sans-IO machine so it can be tested and fuzzed
//! alone; the node runs one per connection until it reports
//! [`Upgraded`], then hands the bytes that follow to the yamux session.
//!
//! The security seam: [`Security`] names the protocols the pipeline can run.
//! Today that is plaintext only; noise adds a variant whose handshake machine
//! sits in the securing stage and whose cipher then wraps every byte the
//! muxer reads and writes.

use alloc::vec::Vec;

use crate::identity::{Keypair, PeerId, PublicKey};
use crate::multistream::{self, NegotiationError, Negotiator};
use crate::security::plaintext::{self, PlaintextError};

/// The muxer protocol name.
pub const YAMUX: &str = "/yamux/1.0.0";

/// A security protocol the pipeline can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Security {
    /// `/plaintext/2.0.0`: no encryption; for tests and trusted networks.
    Plaintext,
}

impl Security {
    /// The protocol name negotiated with multistream-select.
    pub fn protocol(self) -> &'static str {
        match self {
            Security::Plaintext => plaintext::PROTOCOL,
        }
    }

    fn from_protocol(name: &str) -> Option<Self> {
        (name == plaintext::PROTOCOL).then_some(Security::Plaintext)
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
    Securing {
        security: Security,
        handshake: plaintext::Handshake,
    },
    NegotiatingMuxer {
        neg: Negotiator,
        upgraded: Upgraded,
    },
    Done,
}

/// The upgrade machine for one connection.
///
/// Inputs: [`handle_read`](Self::handle_read) (consumes exactly the upgrade;
/// what follows belongs to the muxer), [`handle_eof`](Self::handle_eof).
/// Outputs: [`poll_transmit`](Self::poll_transmit),
/// [`poll_outcome`](Self::poll_outcome). No timers: the node enforces the
/// upgrade timeout.
#[derive(Debug)]
pub struct Upgrade {
    endpoint: Endpoint,
    public_key: PublicKey,
    expected: Option<PeerId>,
    stage: Stage,
    out: Vec<u8>,
    outcome: Option<Result<Upgraded, UpgradeError>>,
}

impl Upgrade {
    /// Starts an upgrade offering `security` (in preference order; must not
    /// be empty). A dialer passes the peer it means to reach, if it knows it.
    pub fn new(
        endpoint: Endpoint,
        key: &Keypair,
        security: &[Security],
        expected: Option<PeerId>,
    ) -> Self {
        let names = security.iter().map(|s| s.protocol());
        let neg = match endpoint {
            Endpoint::Dialer => Negotiator::dialer(names),
            Endpoint::Listener => Negotiator::listener(names),
        }
        .expect("static protocol names are valid and the node checks the list is not empty");
        let mut up = Upgrade {
            endpoint,
            public_key: key.public(),
            expected,
            stage: Stage::NegotiatingSecurity(neg),
            out: Vec::new(),
            outcome: None,
        };
        up.collect_output();
        up
    }

    /// Whether the upgrade is over, one way or the other.
    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// Feeds bytes from the peer; returns how many belong to the upgrade.
    pub fn handle_read(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let n = match &mut self.stage {
                Stage::NegotiatingSecurity(neg) => neg.handle_read(&data[used..]),
                Stage::Securing { handshake, .. } => handshake.handle_read(&data[used..]),
                Stage::NegotiatingMuxer { neg, .. } => neg.handle_read(&data[used..]),
                Stage::Done => return used,
            };
            used += n;
            let advanced = self.advance();
            if !advanced && (n == 0 || used == data.len()) {
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
            Stage::Securing { handshake, .. } => handshake.handle_eof(),
            Stage::Done => return,
        }
        self.advance();
    }

    /// Ends the upgrade with a timeout (the node's upgrade deadline passed).
    pub fn fail_timeout(&mut self) {
        if !self.is_finished() {
            self.finish(Err(UpgradeError::Timeout));
        }
    }

    /// Appends bytes to send; returns how many.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.out.len();
        out.append(&mut self.out);
        n
    }

    /// The result, once.
    pub fn poll_outcome(&mut self) -> Option<Result<Upgraded, UpgradeError>> {
        self.outcome.take()
    }

    fn finish(&mut self, result: Result<Upgraded, UpgradeError>) {
        self.stage = Stage::Done;
        self.outcome = Some(result);
    }

    fn collect_output(&mut self) {
        match &mut self.stage {
            Stage::NegotiatingSecurity(neg) | Stage::NegotiatingMuxer { neg, .. } => {
                neg.poll_transmit(&mut self.out);
            }
            Stage::Securing { handshake, .. } => {
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
                            let handshake = plaintext::Handshake::new(
                                &self.public_key,
                                match self.endpoint {
                                    Endpoint::Dialer => self.expected,
                                    Endpoint::Listener => None,
                                },
                            );
                            self.stage = Stage::Securing {
                                security,
                                handshake,
                            };
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
            Stage::Securing {
                security,
                handshake,
            } => match handshake.poll_event() {
                Some(plaintext::Event::Done { peer, public_key }) => {
                    let upgraded = Upgraded {
                        peer,
                        public_key,
                        security: *security,
                        muxer: YAMUX,
                    };
                    let neg = match self.endpoint {
                        Endpoint::Dialer => Negotiator::dialer([YAMUX]),
                        Endpoint::Listener => Negotiator::listener([YAMUX]),
                    }
                    .expect("the muxer name is valid");
                    self.stage = Stage::NegotiatingMuxer { neg, upgraded };
                    self.collect_output();
                    true
                }
                Some(plaintext::Event::Failed(e)) => {
                    self.finish(Err(e.into()));
                    true
                }
                _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(expected: Option<PeerId>) -> (Upgrade, Upgrade, Keypair, Keypair) {
        let (a, b) = (
            Keypair::from_secret_bytes([1; 32]),
            Keypair::from_secret_bytes([2; 32]),
        );
        let d = Upgrade::new(Endpoint::Dialer, &a, &[Security::Plaintext], expected);
        let l = Upgrade::new(Endpoint::Listener, &b, &[Security::Plaintext], None);
        (d, l, a, b)
    }

    /// Runs both until quiet, `chunk` bytes per read; returns the unconsumed
    /// bytes each side was left with.
    fn drive(d: &mut Upgrade, l: &mut Upgrade, chunk: usize, extra: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (mut to_l, mut to_d) = (Vec::new(), Vec::new());
        let (mut left_l, mut left_d) = (Vec::new(), Vec::new());
        let mut extra_sent = false;
        for _ in 0..100 {
            d.poll_transmit(&mut to_l);
            l.poll_transmit(&mut to_d);
            if d.is_finished() && !extra_sent {
                to_l.extend_from_slice(extra);
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
        for chunk in [1, 2, 7, 65536] {
            let (mut d, mut l, a, b) = pair(None);
            let yamux_frame = [0u8, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
            let (_, left_l) = drive(&mut d, &mut l, chunk, &yamux_frame);
            let ud = d.poll_outcome().unwrap().unwrap();
            let ul = l.poll_outcome().unwrap().unwrap();
            assert_eq!(
                (ud.peer, ul.peer),
                (b.peer_id(), a.peer_id()),
                "chunk {chunk}"
            );
            assert_eq!((ud.security, ud.muxer), (Security::Plaintext, YAMUX));
            assert_eq!(
                left_l, yamux_frame,
                "bytes after the upgrade are the muxer's"
            );
        }
    }

    #[test]
    fn dialer_reaching_the_wrong_peer_fails() {
        let wrong = Keypair::from_secret_bytes([9; 32]).peer_id();
        let (mut d, mut l, _, b) = pair(Some(wrong));
        drive(&mut d, &mut l, 64, &[]);
        assert_eq!(
            d.poll_outcome(),
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
        l.handle_read(b"\x05hello");
        assert!(matches!(
            l.poll_outcome(),
            Some(Err(UpgradeError::SecurityNegotiation(_)))
        ));
        let (mut d, _, _, _) = pair(None);
        d.handle_eof();
        assert!(matches!(
            d.poll_outcome(),
            Some(Err(UpgradeError::SecurityNegotiation(_)))
        ));
        let (mut d, _, _, _) = pair(None);
        d.fail_timeout();
        assert_eq!(d.poll_outcome(), Some(Err(UpgradeError::Timeout)));
    }
}
