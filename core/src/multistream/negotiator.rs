//! The multistream-select negotiation machine, for either role.

use alloc::borrow::Cow;
use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::codec::{self, Message, MessageError, DEFAULT_MAX_MESSAGE_LEN};
use crate::varint::FrameReader;

/// A protocol name; `&'static str` names cost no allocation.
pub type ProtocolName = Cow<'static, str>;

/// Options of a [`Negotiator`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest message body accepted, newline included (default 1024, as go-multistream).
    pub max_message_len: usize,
    /// Dialer only: lazy negotiation (rust-libp2p's `V1Lazy`, go's `NewMSSelect`).
    /// The dialer must have exactly one protocol; it reports `Negotiated` at
    /// once so the application can write right behind the proposal, and keeps
    /// reading the header and echo before handing any bytes on. Known unsound
    /// for nested negotiation (go-multistream#20): use it for the application
    /// protocol of a stream, not for security or muxer selection.
    pub lazy: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            lazy: false,
        }
    }
}

impl Config {
    /// The defaults with lazy negotiation switched on.
    pub fn lazy() -> Self {
        Config {
            lazy: true,
            ..Config::default()
        }
    }
}

/// A bad argument to a [`Negotiator`] constructor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiatorConfigError {
    /// A dialer needs at least one protocol to propose.
    #[error("a dialer needs at least one protocol")]
    NoProtocols,
    /// Names must start with `/`, contain no newline and fit the message limit.
    #[error("invalid protocol name {0:?}")]
    InvalidProtocol(String),
    /// Lazy negotiation works with exactly one protocol.
    #[error("lazy negotiation needs exactly one protocol, got {0}")]
    LazyNeedsOneProtocol(usize),
    /// A listener cannot be lazy; only the dialer decides that.
    #[error("only a dialer can be lazy")]
    LazyListener,
}

/// How the peer broke multistream-select.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// A message could not be decoded.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The first message was not `/multistream/1.0.0`.
    #[error("first message was not the multistream header")]
    ExpectedHeader,
    /// A message that makes no sense at this point (e.g. `na` to a listener).
    #[error("unexpected message")]
    UnexpectedMessage,
    /// The listener echoed a protocol other than the one proposed.
    #[error("listener answered with a protocol that was not proposed")]
    WrongEcho,
}

/// Why negotiation ended without a protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// No protocol was agreed: every proposal was refused (dialer), or the
    /// dialer gave up (closed, or sent garbage) right after our `na` (listener;
    /// rust-libp2p counts that as failure too, not as a violation).
    #[error("no protocol agreed")]
    NotAgreed,
    /// The stream ended before negotiation finished.
    #[error("stream closed during negotiation")]
    Closed,
    /// The peer broke the protocol; close the stream.
    #[error("protocol violation: {0}")]
    Violation(ProtocolViolation),
}

/// What happened during negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A protocol was agreed. Bytes after the last negotiation message are
    /// application data: [`Negotiator::handle_read`] does not consume them.
    /// A lazy dialer reports this at once, before the listener confirmed;
    /// feed it reads until [`Negotiator::is_finished`].
    Negotiated {
        /// The agreed protocol.
        protocol: ProtocolName,
    },
    /// Dialer: the listener refused this protocol (the next one is being
    /// proposed). Listener: we refused the dialer's proposal.
    NotAvailable {
        /// The refused protocol.
        protocol: ProtocolName,
    },
    /// Listener in asking mode: the dialer proposes this protocol; answer with
    /// [`Negotiator::accept`] or [`Negotiator::reject`]. No input is consumed
    /// until then.
    InboundProposal {
        /// The proposed protocol.
        protocol: String,
    },
    /// Negotiation failed; the stream should be closed (reset on a violation).
    Failed(NegotiationError),
}

/// A command that does not fit the machine's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecisionError {
    /// `accept`/`reject` without a pending [`Event::InboundProposal`].
    #[error("no inbound proposal is waiting for a decision")]
    NoPendingProposal,
}

#[derive(Debug)]
enum Role {
    Dialer {
        protocols: Vec<ProtocolName>,
        current: usize,
    },
    Listener {
        protocols: Vec<ProtocolName>,
        asking: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the peer's header.
    ExpectHeader,
    /// Dialer: waiting for the echo of `protocols[current]` or `na`.
    /// Listener: waiting for a proposal.
    Negotiating,
    /// Listener in asking mode: waiting for `accept`/`reject`.
    AwaitingDecision(String),
    /// Done (agreed or failed); nothing more is consumed.
    Done,
}

/// The multistream-select 1.0.0 machine for one stream or connection.
///
/// Inputs: [`handle_read`](Self::handle_read) with bytes from the peer (any
/// split, down to one byte), [`handle_eof`](Self::handle_eof). Commands:
/// [`accept`](Self::accept), [`reject`](Self::reject) (listener in asking
/// mode). Outputs: [`poll_transmit`](Self::poll_transmit),
/// [`poll_event`](Self::poll_event). After any input or command, drain both.
/// The machine has no timers: the caller bounds negotiation with its own
/// upgrade timeout.
///
/// The dialer pipelines the header with its first proposal; the listener
/// sends its header at once and answers `ls` with its protocols.
#[derive(Debug)]
pub struct Negotiator {
    role: Role,
    state: State,
    config: Config,
    reader: FrameReader,
    out: Vec<u8>,
    events: VecDeque<Event>,
    /// Listener: the last thing we said was `na` (for the leniency rule).
    sent_na: bool,
    /// Lazy dialer: `Negotiated` already reported, confirmation pending.
    optimistic: bool,
    /// Listener: an answer is queued and not yet taken; nothing is read.
    answer_unsent: bool,
}

fn check_names(names: &[ProtocolName], config: &Config) -> Result<(), NegotiatorConfigError> {
    for name in names {
        if !codec::is_valid_protocol(name) || name.len() + 1 > config.max_message_len {
            return Err(NegotiatorConfigError::InvalidProtocol(name.to_string()));
        }
    }
    Ok(())
}

impl Negotiator {
    /// A dialer proposing `protocols` in order, with the default config.
    pub fn dialer<I, P>(protocols: I) -> Result<Self, NegotiatorConfigError>
    where
        I: IntoIterator<Item = P>,
        P: Into<ProtocolName>,
    {
        Self::dialer_with(protocols, Config::default())
    }

    /// A dialer proposing `protocols` in order.
    pub fn dialer_with<I, P>(protocols: I, config: Config) -> Result<Self, NegotiatorConfigError>
    where
        I: IntoIterator<Item = P>,
        P: Into<ProtocolName>,
    {
        let protocols: Vec<ProtocolName> = protocols.into_iter().map(Into::into).collect();
        if protocols.is_empty() {
            return Err(NegotiatorConfigError::NoProtocols);
        }
        check_names(&protocols, &config)?;
        if config.lazy && protocols.len() != 1 {
            return Err(NegotiatorConfigError::LazyNeedsOneProtocol(protocols.len()));
        }
        let mut n = Negotiator::new(
            Role::Dialer {
                protocols,
                current: 0,
            },
            config,
        );
        Message::Header.encode(&mut n.out);
        n.propose_current();
        if n.config.lazy {
            n.optimistic = true;
            let protocol = n.current_proposal();
            n.events.push_back(Event::Negotiated { protocol });
        }
        Ok(n)
    }

    /// A listener that answers proposals itself from `protocols` (may be empty:
    /// then it refuses everything).
    pub fn listener<I, P>(protocols: I) -> Result<Self, NegotiatorConfigError>
    where
        I: IntoIterator<Item = P>,
        P: Into<ProtocolName>,
    {
        Self::listener_with(protocols, false, Config::default())
    }

    /// A listener; with `asking`, every proposal becomes an
    /// [`Event::InboundProposal`] for the application to decide, and
    /// `protocols` is only what `ls` reports.
    pub fn listener_with<I, P>(
        protocols: I,
        asking: bool,
        config: Config,
    ) -> Result<Self, NegotiatorConfigError>
    where
        I: IntoIterator<Item = P>,
        P: Into<ProtocolName>,
    {
        if config.lazy {
            return Err(NegotiatorConfigError::LazyListener);
        }
        let protocols: Vec<ProtocolName> = protocols.into_iter().map(Into::into).collect();
        check_names(&protocols, &config)?;
        let mut n = Negotiator::new(Role::Listener { protocols, asking }, config);
        Message::Header.encode(&mut n.out);
        Ok(n)
    }

    fn new(role: Role, config: Config) -> Self {
        Negotiator {
            role,
            state: State::ExpectHeader,
            config,
            reader: FrameReader::default(),
            out: Vec::new(),
            events: VecDeque::new(),
            sent_na: false,
            optimistic: false,
            answer_unsent: false,
        }
    }

    // ---- getters ----

    /// Whether negotiation is over (agreed, confirmed if lazy, or failed).
    /// From then on `handle_read` consumes nothing.
    pub fn is_finished(&self) -> bool {
        self.state == State::Done
    }

    /// Whether this is the dialer.
    pub fn is_dialer(&self) -> bool {
        matches!(self.role, Role::Dialer { .. })
    }

    // ---- inputs ----

    /// Feeds bytes read from the peer. Returns how many were consumed: all of
    /// them while negotiating, none once finished or while a decision is
    /// pending; after the final message, the rest is the caller's
    /// (application data that followed the negotiation).
    #[must_use]
    pub fn handle_read(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        while used < data.len()
            && matches!(self.state, State::ExpectHeader | State::Negotiating)
            && !self.answer_unsent
        {
            match self.reader.feed(&data[used..], self.config.max_message_len) {
                Ok((n, complete)) => {
                    used += n;
                    if complete {
                        let body = self.reader.take_body();
                        let before = self.out.len();
                        self.on_frame(&body);
                        self.reader.clear_reusing(body);
                        // A listener answered (`na`, an `ls` reply) and goes
                        // on negotiating: it reads no further until the
                        // answer is taken, so a dialer that writes without
                        // reading cannot grow our output.
                        self.answer_unsent = matches!(self.role, Role::Listener { .. })
                            && self.state == State::Negotiating
                            && self.out.len() > before;
                    }
                }
                Err(e) => {
                    used = data.len();
                    self.on_bad_message(MessageError::from_frame(e, self.config.max_message_len));
                }
            }
        }
        used
    }

    /// The peer closed its sending side.
    pub fn handle_eof(&mut self) {
        if self.state == State::Done {
            return;
        }
        let err = if self.sent_na {
            NegotiationError::NotAgreed
        } else {
            NegotiationError::Closed
        };
        self.fail(err);
    }

    // ---- commands ----

    /// Listener in asking mode: accept the pending proposal.
    pub fn accept(&mut self) -> Result<(), DecisionError> {
        let State::AwaitingDecision(name) = core::mem::replace(&mut self.state, State::Negotiating)
        else {
            return Err(DecisionError::NoPendingProposal);
        };
        Message::Protocol(&name).encode(&mut self.out);
        self.state = State::Done;
        self.events.push_back(Event::Negotiated {
            protocol: Cow::Owned(name),
        });
        Ok(())
    }

    /// Listener in asking mode: refuse the pending proposal with `na`; the
    /// dialer may propose another.
    pub fn reject(&mut self) -> Result<(), DecisionError> {
        let State::AwaitingDecision(name) = core::mem::replace(&mut self.state, State::Negotiating)
        else {
            return Err(DecisionError::NoPendingProposal);
        };
        self.refuse(Cow::Owned(name));
        Ok(())
    }

    // ---- outputs ----

    /// Appends the bytes to send to `out`; returns how many.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.out.len();
        out.append(&mut self.out);
        self.answer_unsent = false;
        n
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- internals ----

    fn current_proposal(&self) -> ProtocolName {
        match &self.role {
            Role::Dialer { protocols, current } => protocols[*current].clone(),
            Role::Listener { .. } => unreachable!("only dialers propose"),
        }
    }

    fn propose_current(&mut self) {
        if let Role::Dialer { protocols, current } = &self.role {
            Message::Protocol(&protocols[*current]).encode(&mut self.out);
        }
    }

    fn refuse(&mut self, protocol: ProtocolName) {
        Message::Na.encode(&mut self.out);
        self.sent_na = true;
        self.events.push_back(Event::NotAvailable { protocol });
    }

    fn fail(&mut self, err: NegotiationError) {
        self.state = State::Done;
        self.events.push_back(Event::Failed(err));
    }

    fn violation(&mut self, v: ProtocolViolation) {
        self.fail(NegotiationError::Violation(v));
    }

    fn on_bad_message(&mut self, e: MessageError) {
        // rust-libp2p's leniency: garbage right after our `na` is a dialer
        // giving up, not a violation.
        if self.sent_na && self.state == State::Negotiating {
            self.fail(NegotiationError::NotAgreed);
        } else {
            self.violation(e.into());
        }
    }

    fn on_frame(&mut self, body: &[u8]) {
        match Message::parse(body) {
            Ok(msg) => self.on_message(msg),
            Err(e) => self.on_bad_message(e),
        }
    }

    fn on_message(&mut self, msg: Message<'_>) {
        if self.state == State::ExpectHeader {
            match msg {
                Message::Header => self.state = State::Negotiating,
                _ => self.violation(ProtocolViolation::ExpectedHeader),
            }
            return;
        }
        match &mut self.role {
            Role::Dialer { protocols, current } => match msg {
                Message::Protocol(p) if p == protocols[*current] => {
                    self.state = State::Done;
                    if !self.optimistic {
                        let protocol = protocols[*current].clone();
                        self.events.push_back(Event::Negotiated { protocol });
                    }
                }
                Message::Protocol(_) => self.violation(ProtocolViolation::WrongEcho),
                Message::Na if self.optimistic => self.fail(NegotiationError::NotAgreed),
                Message::Na => {
                    let protocol = protocols[*current].clone();
                    self.events.push_back(Event::NotAvailable { protocol });
                    *current += 1;
                    if *current == protocols.len() {
                        self.fail(NegotiationError::NotAgreed);
                    } else {
                        self.propose_current();
                    }
                }
                Message::Header | Message::Ls => {
                    self.violation(ProtocolViolation::UnexpectedMessage)
                }
            },
            Role::Listener { protocols, asking } => match msg {
                Message::Protocol(p) if *asking => {
                    self.sent_na = false;
                    self.state = State::AwaitingDecision(p.to_string());
                    self.events.push_back(Event::InboundProposal {
                        protocol: p.to_string(),
                    });
                }
                Message::Protocol(p) => {
                    if let Some(known) = protocols.iter().find(|known| **known == p) {
                        let protocol = known.clone();
                        Message::Protocol(p).encode(&mut self.out);
                        self.sent_na = false;
                        self.state = State::Done;
                        self.events.push_back(Event::Negotiated { protocol });
                    } else {
                        let refused = Cow::Owned(p.to_string());
                        self.refuse(refused);
                    }
                }
                Message::Ls => {
                    codec::encode_ls_response(protocols.iter().map(|p| &**p), &mut self.out);
                    self.sent_na = false;
                }
                Message::Header | Message::Na => {
                    self.violation(ProtocolViolation::UnexpectedMessage)
                }
            },
        }
    }
}
