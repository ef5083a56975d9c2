//! Dial limits, after go-libp2p's `dialLimiter` (`p2p/net/swarm/limiter.go`).
//!
//! Every dial job first takes a per-peer token (at most
//! [`LimiterConfig::per_peer`], 8, running per peer), then, if its address
//! consumes a file descriptor (TCP, WebSocket, unix; never a relayed
//! address, whose relay connection is limited when it is dialed itself), an
//! fd token (at most [`LimiterConfig::fd_limit`], 160, in total). A job that
//! cannot take a token waits in a first-in first-out queue: one per peer for
//! peer tokens, one global queue for fd tokens (its peer token is already
//! held while it waits there, as in go-libp2p). Finishing or cancelling a job
//! releases its tokens and starts the next waiting job.
//!
//! The limiter has no timers. A job cancelled while it waits for an fd
//! token is skipped when its turn comes (as go-libp2p does); the queue is
//! compacted whenever such skipped entries outnumber the waiting jobs, so
//! its memory stays within twice the jobs it holds. Every command is O(1)
//! amortized (a per-peer queue is searched only when one of its waiting jobs
//! is cancelled, and holds at most the jobs of that peer).
//!
//! **When to call again:** after [`Limiter::submit`] or
//! [`Limiter::finish`], drain [`Limiter::poll_action`] until `None`; each job
//! it returns may start now.
//!
//! ```
//! use sansp2p::dial::{Limiter, LimiterConfig};
//! use sansp2p::Keypair;
//!
//! let mut config = LimiterConfig::default();
//! config.per_peer = 1;
//! let mut limiter = Limiter::new(config).unwrap();
//! let peer = Keypair::from_secret_bytes([1; 32]).peer_id();
//! limiter.submit(1, peer, true).unwrap();
//! limiter.submit(2, peer, true).unwrap();
//! assert_eq!(limiter.poll_action(), Some(1));
//! assert_eq!(limiter.poll_action(), None); // job 2 waits for the peer token
//! limiter.finish(1).unwrap();
//! assert_eq!(limiter.poll_action(), Some(2));
//! ```

use alloc::collections::VecDeque;

use crate::collections::HashMap;
use crate::identity::PeerId;
use slotmap::SlotMap;

slotmap::new_key_type! {
    /// A peer with jobs, so that each job names its peer in 8 bytes.
    struct PeerKey;
}

/// Identifies a job; the [`Dialer`](super::Dialer) uses its attempt ids.
pub type JobId = u64;

/// Token limits of a [`Limiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimiterConfig {
    /// Concurrent fd-consuming dials (go-libp2p `ConcurrentFdDials`, 160).
    pub fd_limit: usize,
    /// Concurrent dials per peer (go-libp2p `DefaultPerPeerRateLimit`, 8).
    pub per_peer: usize,
    /// Jobs held at once, running or waiting (ours: 1 000 000).
    pub max_jobs: usize,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            fd_limit: 160,
            per_peer: 8,
            max_jobs: 1_000_000,
        }
    }
}

/// A [`LimiterConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimiterConfigError {
    /// A limit of zero would never let a dial run.
    #[error("dial limits must be at least 1")]
    ZeroLimit,
}

impl LimiterConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), LimiterConfigError> {
        if self.fd_limit == 0 || self.per_peer == 0 || self.max_jobs == 0 {
            return Err(LimiterConfigError::ZeroLimit);
        }
        Ok(())
    }
}

/// Why a [`Limiter`] command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimiterError {
    /// The job id is already held.
    #[error("dial job {0} already submitted")]
    DuplicateJob(JobId),
    /// The job id is not held.
    #[error("unknown dial job {0}")]
    UnknownJob(JobId),
    /// [`LimiterConfig::max_jobs`] jobs are held already.
    #[error("too many dial jobs")]
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    WaitingPeer,
    /// Holds its peer token; `u64` is its place in the fd queue.
    WaitingFd(u64),
    Running,
}

#[derive(Debug, Clone, Copy)]
struct Job {
    peer: PeerKey,
    uses_fd: bool,
    state: JobState,
}

#[derive(Debug, Clone)]
struct PeerSlots {
    peer: PeerId,
    /// Jobs holding a peer token (running or waiting for an fd).
    active: usize,
    waiting: VecDeque<JobId>,
}

/// File-descriptor and per-peer dial limits; see the [module docs](self).
///
/// **When to call again:** after any command, drain
/// [`poll_action`](Self::poll_action) until `None`. It has no timers.
#[derive(Debug, Clone)]
pub struct Limiter {
    config: LimiterConfig,
    jobs: HashMap<JobId, Job>,
    peers: SlotMap<PeerKey, PeerSlots>,
    by_peer: HashMap<PeerId, PeerKey>,
    fd_in_use: usize,
    /// Jobs waiting for an fd token, oldest first, as (place, job). A job
    /// that leaves early stays until it reaches the front or the queue is
    /// compacted (when more than half of it is stale).
    waiting_fd: VecDeque<(u64, JobId)>,
    /// Live entries of `waiting_fd`.
    waiting_fd_live: usize,
    next_seq: u64,
    ready: VecDeque<JobId>,
    running: usize,
}

impl Limiter {
    /// An idle limiter.
    pub fn new(config: LimiterConfig) -> Result<Self, LimiterConfigError> {
        config.validate()?;
        Ok(Limiter {
            config,
            jobs: HashMap::default(),
            peers: SlotMap::with_key(),
            by_peer: HashMap::default(),
            fd_in_use: 0,
            waiting_fd: VecDeque::new(),
            waiting_fd_live: 0,
            next_seq: 0,
            ready: VecDeque::new(),
            running: 0,
        })
    }

    // ---- getters ----

    /// The configuration.
    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// fd tokens taken (by running jobs).
    pub fn fd_in_use(&self) -> usize {
        self.fd_in_use
    }

    /// Jobs allowed to run (returned or about to be returned by `poll_action`).
    pub fn running(&self) -> usize {
        self.running
    }

    /// Jobs waiting for a token.
    pub fn waiting(&self) -> usize {
        self.jobs.len() - self.running
    }

    /// Jobs of `peer` holding a peer token (running or waiting for an fd).
    pub fn active_for(&self, peer: &PeerId) -> usize {
        self.by_peer
            .get(peer)
            .and_then(|&k| self.peers.get(k))
            .map_or(0, |p| p.active)
    }

    /// Whether `job` is held and allowed to run.
    pub fn is_running(&self, job: JobId) -> bool {
        self.jobs
            .get(&job)
            .is_some_and(|j| j.state == JobState::Running)
    }

    /// Jobs held, running or waiting.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is held.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    // ---- commands ----

    /// Adds a dial job for `peer`; `uses_fd` says whether it takes an fd
    /// token (see [`Transport::uses_fd`](crate::addr::Transport::uses_fd);
    /// false for relayed addresses).
    pub fn submit(&mut self, job: JobId, peer: PeerId, uses_fd: bool) -> Result<(), LimiterError> {
        if self.jobs.contains_key(&job) {
            return Err(LimiterError::DuplicateJob(job));
        }
        if self.jobs.len() >= self.config.max_jobs {
            return Err(LimiterError::Full);
        }
        let peers = &mut self.peers;
        let key = *self.by_peer.entry(peer).or_insert_with(|| {
            peers.insert(PeerSlots {
                peer,
                active: 0,
                waiting: VecDeque::new(),
            })
        });
        self.jobs.insert(
            job,
            Job {
                peer: key,
                uses_fd,
                state: JobState::WaitingPeer,
            },
        );
        let slots = &mut self.peers[key];
        if slots.active >= self.config.per_peer {
            slots.waiting.push_back(job);
        } else {
            slots.active += 1;
            self.check_fd(job);
        }
        Ok(())
    }

    /// Ends a job, running or waiting (finished, failed or cancelled), and
    /// hands its tokens to the next waiting jobs.
    pub fn finish(&mut self, job: JobId) -> Result<(), LimiterError> {
        let j = self
            .jobs
            .remove(&job)
            .ok_or(LimiterError::UnknownJob(job))?;
        match j.state {
            JobState::WaitingPeer => {
                if let Some(slots) = self.peers.get_mut(j.peer) {
                    slots.waiting.retain(|w| *w != job);
                }
                self.forget_peer_if_idle(j.peer);
            }
            JobState::WaitingFd(_) => {
                self.waiting_fd_live -= 1;
                self.compact_waiting_fd();
                self.free_peer_token(j.peer);
            }
            JobState::Running => {
                self.running -= 1;
                if j.uses_fd {
                    self.fd_in_use -= 1;
                    self.free_fd_token();
                }
                self.free_peer_token(j.peer);
            }
        }
        Ok(())
    }

    // ---- outputs ----

    /// The next job that may start now.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<JobId> {
        self.ready.pop_front()
    }

    // ---- internals ----

    /// `job` holds its peer token; take an fd token or queue for one.
    fn check_fd(&mut self, job: JobId) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if j.uses_fd {
            if self.fd_in_use >= self.config.fd_limit {
                let seq = self.next_seq;
                self.next_seq += 1;
                j.state = JobState::WaitingFd(seq);
                self.waiting_fd.push_back((seq, job));
                self.waiting_fd_live += 1;
                return;
            }
            self.fd_in_use += 1;
        }
        j.state = JobState::Running;
        self.running += 1;
        self.ready.push_back(job);
    }

    fn free_fd_token(&mut self) {
        while let Some((seq, next)) = self.waiting_fd.pop_front() {
            let Some(j) = self.jobs.get_mut(&next) else {
                continue;
            };
            if j.state != JobState::WaitingFd(seq) {
                continue;
            }
            self.waiting_fd_live -= 1;
            self.fd_in_use += 1;
            j.state = JobState::Running;
            self.running += 1;
            self.ready.push_back(next);
            return;
        }
    }

    /// Drops the entries of jobs that left `waiting_fd` early once they are
    /// the majority (amortized O(1) per job).
    fn compact_waiting_fd(&mut self) {
        if self.waiting_fd.len() > 64 && self.waiting_fd.len() > 2 * self.waiting_fd_live {
            let jobs = &self.jobs;
            self.waiting_fd.retain(|&(seq, job)| {
                jobs.get(&job)
                    .is_some_and(|j| j.state == JobState::WaitingFd(seq))
            });
        }
    }

    fn free_peer_token(&mut self, peer: PeerKey) {
        let Some(slots) = self.peers.get_mut(peer) else {
            return;
        };
        slots.active -= 1;
        if let Some(next) = slots.waiting.pop_front() {
            slots.active += 1;
            self.check_fd(next);
        } else {
            self.forget_peer_if_idle(peer);
        }
    }

    fn forget_peer_if_idle(&mut self, peer: PeerKey) {
        if self
            .peers
            .get(peer)
            .is_some_and(|s| s.active == 0 && s.waiting.is_empty())
        {
            if let Some(s) = self.peers.remove(peer) {
                self.by_peer.remove(&s.peer);
            }
        }
    }
}

// Configs are `#[non_exhaustive]`: tests set fields the way users must.
#[allow(clippy::field_reassign_with_default)]
#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn peer(n: u64) -> PeerId {
        let mut mh = [0u8; 10];
        mh[1] = 8;
        mh[2..].copy_from_slice(&n.to_be_bytes());
        PeerId::from_bytes(&mh).unwrap()
    }

    fn drain(l: &mut Limiter) -> Vec<JobId> {
        core::iter::from_fn(|| l.poll_action()).collect()
    }

    #[test]
    fn saturation_with_200_peers() {
        let mut l = Limiter::new(LimiterConfig::default()).unwrap();
        // 200 peers x 10 TCP dials each, plus 1 QUIC dial each.
        for p in 0..200u64 {
            for k in 0..10u64 {
                l.submit(p * 100 + k, peer(p), true).unwrap();
            }
            l.submit(p * 100 + 50, peer(p), false).unwrap();
        }
        let ready = drain(&mut l);
        // 160 fd tokens go to the first 20 peers (8 each); every peer's
        // QUIC dial queues behind its own 8 TCP dials for a peer token.
        assert_eq!(l.fd_in_use(), 160);
        let fd_running = ready.iter().filter(|j| *j % 100 < 50).count();
        assert_eq!(fd_running, 160);
        for p in 0..200u64 {
            assert!(l.active_for(&peer(p)) <= 8);
        }
        assert_eq!(l.len(), 200 * 11);
        // Finish everything that is running, repeatedly: limits hold at
        // every step and every job eventually runs exactly once.
        let mut ran: Vec<JobId> = ready;
        let mut queue: VecDeque<JobId> = ran.iter().copied().collect();
        while let Some(j) = queue.pop_front() {
            l.finish(j).unwrap();
            for r in drain(&mut l) {
                assert!(l.fd_in_use() <= 160);
                ran.push(r);
                queue.push_back(r);
            }
            assert!(l.fd_in_use() <= 160);
        }
        ran.sort_unstable();
        ran.dedup();
        assert_eq!(ran.len(), 200 * 11);
        assert!(l.is_empty() && l.fd_in_use() == 0 && l.peers.is_empty() && l.by_peer.is_empty());
    }

    #[test]
    fn jobs_leaving_the_fd_queue_do_not_pile_up() {
        let mut config = LimiterConfig::default();
        config.fd_limit = 1;
        let mut l = Limiter::new(config).unwrap();
        l.submit(0, peer(0), true).unwrap();
        assert_eq!(drain(&mut l), [0]);
        // The only fd token is held; 100 000 dials queue for it and are
        // cancelled while waiting, ten at a time.
        for round in 0..10_000u64 {
            for k in 0..10 {
                l.submit(1 + round * 10 + k, peer(1 + k), true).unwrap();
            }
            for k in 0..10 {
                l.finish(1 + round * 10 + k).unwrap();
            }
            assert!(l.waiting_fd.len() <= 2 * 64, "{}", l.waiting_fd.len());
        }
        // Later waiters still get the token in order.
        l.submit(7, peer(7), true).unwrap();
        l.submit(8, peer(8), true).unwrap();
        l.finish(0).unwrap();
        assert_eq!(drain(&mut l), [7]);
        l.finish(7).unwrap();
        assert_eq!(drain(&mut l), [8]);
    }

    #[test]
    fn relay_and_quic_dials_take_no_fd_token() {
        let mut config = LimiterConfig::default();
        config.fd_limit = 1;
        let mut l = Limiter::new(config).unwrap();
        l.submit(1, peer(1), true).unwrap();
        l.submit(2, peer(2), true).unwrap();
        l.submit(3, peer(3), false).unwrap();
        assert_eq!(drain(&mut l), [1, 3]);
        assert_eq!(l.waiting(), 1);
        l.finish(1).unwrap();
        assert_eq!(drain(&mut l), [2]);
    }

    #[test]
    fn fd_waiters_hold_their_peer_token_and_cancel_cleanly() {
        let mut config = LimiterConfig::default();
        config.fd_limit = 1;
        config.per_peer = 2;
        let mut l = Limiter::new(config).unwrap();
        l.submit(1, peer(1), true).unwrap(); // runs
        l.submit(2, peer(2), true).unwrap(); // waits on fd, holds peer 2 token
        l.submit(3, peer(2), true).unwrap(); // waits on fd
        l.submit(4, peer(2), false).unwrap(); // waits on the peer token
        assert_eq!(drain(&mut l), [1]);
        assert_eq!(l.active_for(&peer(2)), 2);
        // Cancelling a fd waiter passes its peer token to job 4, which needs
        // no fd and runs at once.
        l.finish(2).unwrap();
        assert_eq!(drain(&mut l), [4]);
        l.finish(1).unwrap();
        assert_eq!(drain(&mut l), [3]);
        assert_eq!(l.finish(9), Err(LimiterError::UnknownJob(9)));
        assert_eq!(
            l.submit(3, peer(1), true),
            Err(LimiterError::DuplicateJob(3))
        );
        l.finish(3).unwrap();
        l.finish(4).unwrap();
        assert!(l.is_empty() && l.fd_in_use() == 0 && l.peers.is_empty() && l.by_peer.is_empty());
    }

    #[test]
    fn config_validation() {
        let mut c = LimiterConfig::default();
        c.per_peer = 0;
        assert_eq!(Limiter::new(c).unwrap_err(), LimiterConfigError::ZeroLimit);
    }
}
