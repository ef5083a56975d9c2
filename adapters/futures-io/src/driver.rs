//! The node behind one mutex, the drive loop over [`Node::poll_output`], and
//! the tasks that carry its I/O: one accept loop per listener, a connect
//! task per outbound connection, a reader and a writer per connection, and
//! one timer.
//!
//! Every change to the node goes through [`Shared::with`], which drains the
//! node's outputs before it lets go of the lock and then wakes the tasks
//! and streams those outputs concern. Tasks keep their wakers in the
//! shared state and poll the socket only once the node said so
//! ([`Node::read_capacity`], [`Node::transmit_buffer`]); the lock is taken
//! inside `poll` calls only, never across an `.await`. The I/O rules
//! (what to read, when to FIN, when to drop a socket, every deadline) are
//! the node's.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use sansp2p::addr::TcpTarget;
use sansp2p::node::{Action, ConnectionId, ListenerId, Node, Output, TransportError};
use sansp2p::time::StdClock;
use sansp2p::{Instant, PeerId};

use crate::host::App;
use crate::runtime::{Listener, Runtime, Socket};
use crate::{multiaddr_of, Error};

/// The most one read hands to the node (the node may allow more).
const READ_SCRATCH: usize = 64 * 1024;
/// Writes in one go before the writer yields to other tasks.
const WRITE_BUDGET: usize = 16;
/// Pause after a failed accept (out of descriptors, say) before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) clock: StdClock,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) local_peer: PeerId,
}

pub(crate) struct State {
    pub(crate) node: Node,
    pub(crate) app: App,
    conns: HashMap<ConnectionId, ConnIo>,
    /// Each listener's accept loop, until it has dropped its socket.
    listeners: HashMap<ListenerId, ListenerIo>,
    timer: TimerIo,
    /// Woken once the lock is released.
    wake: Vec<Waker>,
}

/// The tasks of one connection, while the node has it.
#[derive(Default)]
struct ConnIo {
    /// The reader, waiting for input room or the socket.
    reader: Option<Waker>,
    /// The writer (or, while connecting, the connect task).
    writer: Option<Waker>,
    /// [`Action::CloseWrite`] to perform.
    fin: bool,
}

#[derive(Default)]
struct ListenerIo {
    waker: Option<Waker>,
    /// [`Action::StopListening`]: the accept loop ends.
    stopped: bool,
}

#[derive(Default)]
struct TimerIo {
    /// The node's next deadline, as of the last drain.
    next: Option<Instant>,
    /// The deadline the timer task sleeps until.
    armed: Option<Instant>,
    waker: Option<Waker>,
}

fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

impl State {
    pub(crate) fn wake_later(&mut self, waker: Option<Waker>) {
        self.wake.extend(waker);
    }

    /// The node is done with `conn` (or we are): its tasks end.
    fn forget(&mut self, conn: ConnectionId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.wake.extend(c.reader);
            self.wake.extend(c.writer);
        }
    }
}

impl Drop for State {
    /// The host is gone: every task wakes, finds no host and ends, which
    /// drops its socket.
    fn drop(&mut self) {
        let conns = self.conns.drain().flat_map(|(_, c)| [c.reader, c.writer]);
        let listeners = self.listeners.drain().map(|(_, l)| l.waker);
        let timer = self.timer.waker.take();
        conns
            .chain(listeners)
            .chain([timer])
            .flatten()
            .for_each(Waker::wake);
    }
}

impl Shared {
    /// Starts the node on `runtime`, with its timer task.
    pub(crate) fn start(node: Node, clock: StdClock, runtime: Arc<dyn Runtime>) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            local_peer: node.local_peer_id(),
            state: Mutex::new(State {
                node,
                app: App::default(),
                conns: HashMap::new(),
                listeners: HashMap::new(),
                timer: TimerIo::default(),
                wake: Vec::new(),
            }),
            clock,
            runtime,
        });
        shared
            .runtime
            .spawn(Box::pin(timer_task(Arc::downgrade(&shared))));
        shared
    }

    /// The state, for reading only (nothing that makes the node output).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the state at the current time, drains the node's
    /// outputs, releases the lock and wakes whom the outputs concern.
    pub(crate) fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let mut st = self.lock();
        let now = self.clock.now();
        let r = f(&mut st, now);
        self.drive(&mut st, now);
        if st.node.is_shut_down() && st.listeners.is_empty() {
            crate::host::shut_down(&mut st.app);
        }
        let wake = std::mem::take(&mut st.wake);
        drop(st);
        for w in wake {
            w.wake();
        }
        r
    }

    /// The one drain loop: every output until [`Output::Timeout`].
    fn drive(self: &Arc<Self>, st: &mut State, now: Instant) {
        loop {
            match st.node.poll_output() {
                Output::Action(action) => self.act(st, action),
                Output::Transmit(conn) => {
                    let waker = st.conns.get_mut(&conn).and_then(|c| c.writer.take());
                    st.wake_later(waker);
                }
                Output::Receive(conn) => {
                    let waker = st.conns.get_mut(&conn).and_then(|c| c.reader.take());
                    st.wake_later(waker);
                }
                Output::Event(event) => {
                    crate::host::dispatch(&mut st.node, &mut st.app, event, now)
                }
                Output::Timeout(at) => {
                    st.timer.next = at;
                    // Wake the timer only to fire sooner: a later deadline is
                    // picked up when the armed one fires (early timeouts are
                    // no-ops), which spares a wake per ping.
                    if at.is_some_and(|t| st.timer.armed.is_none_or(|armed| t < armed)) {
                        st.timer.armed = at;
                        let waker = st.timer.waker.take();
                        st.wake_later(waker);
                    }
                    return;
                }
                _ => {}
            }
        }
    }

    fn act(self: &Arc<Self>, st: &mut State, action: Action) {
        let weak = Arc::downgrade(self);
        match action {
            Action::Listen { listener, addr } => {
                st.listeners.insert(listener, ListenerIo::default());
                self.runtime
                    .spawn(Box::pin(listen_task(weak, listener, addr)));
            }
            Action::Connect { conn, addr } => {
                st.conns.insert(conn, ConnIo::default());
                self.runtime.spawn(Box::pin(connect_task(weak, conn, addr)));
            }
            Action::CloseWrite { conn } => {
                if let Some(c) = st.conns.get_mut(&conn) {
                    c.fin = true;
                    let waker = c.writer.take();
                    st.wake_later(waker);
                }
            }
            Action::Close { conn } => st.forget(conn),
            Action::StopListening { listener } => {
                // Its accept loop wakes, drops the socket and says so.
                if let Some(l) = st.listeners.get_mut(&listener) {
                    l.stopped = true;
                    let waker = l.waker.take();
                    st.wake_later(waker);
                }
            }
            _ => {}
        }
    }

    /// Runs the reader and writer of a connection the node knows (if it
    /// forgot it meanwhile, both end at once and the socket is dropped).
    fn start_conn(&self, weak: Weak<Shared>, conn: ConnectionId, socket: Box<dyn Socket>) {
        let socket: Arc<dyn Socket> = Arc::from(socket);
        self.runtime
            .spawn(Box::pin(read_task(weak.clone(), conn, socket.clone())));
        self.runtime.spawn(Box::pin(write_task(weak, conn, socket)));
    }
}

/// Reads from the socket whenever the node has room, at most as much as it
/// has room for.
///
/// The bytes land in this thread's scratch buffer and go to the node in
/// the same `poll`, so a connection holds no read buffer of its own while
/// it waits: one [`READ_SCRATCH`] per executor thread serves every
/// connection (it was 64 KiB per connection end).
async fn read_task(weak: Weak<Shared>, conn: ConnectionId, socket: Arc<dyn Socket>) {
    poll_fn(|cx| loop {
        let Some(shared) = weak.upgrade() else {
            return Poll::Ready(());
        };
        let room = {
            let mut st = shared.lock();
            let room = st.node.read_capacity(conn);
            let Some(c) = st.conns.get_mut(&conn) else {
                return Poll::Ready(());
            };
            // Woken by Output::Receive, or when the node forgets conn.
            set_waker(&mut c.reader, cx);
            room
        };
        if room == 0 {
            return Poll::Pending;
        }
        let more = SCRATCH.with_borrow_mut(|buf| {
            let n = room.min(buf.len());
            let read = match socket.poll_read(cx, &mut buf[..n]) {
                Poll::Ready(read) => read,
                Poll::Pending => return None,
            };
            Some(shared.with(|st, now| match read {
                Ok(0) => {
                    st.node.handle_read_closed(now, conn);
                    false
                }
                Ok(n) => {
                    let taken = st.node.handle_read(now, conn, &buf[..n]);
                    debug_assert_eq!(taken, n, "the node takes what fits read_capacity");
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
                Err(_) => {
                    st.node.handle_connection_closed(now, conn);
                    st.forget(conn);
                    false
                }
            }))
        });
        match more {
            None => return Poll::Pending,
            Some(false) => return Poll::Ready(()),
            // Read on, until the socket has nothing or the node no room.
            Some(true) => {}
        }
    })
    .await;
}

std::thread_local! {
    /// The read buffer every reader task of this thread borrows within one
    /// `poll` (never across one).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; READ_SCRATCH]);
}

/// What the writer does after one step.
enum Step {
    Again,
    Wait,
    Done,
}

/// Slices handed to one vectored write.
const WRITE_SLICES: usize = 16;

/// Writes straight from the node's transmit buffers (vectored: a large
/// payload of a plaintext connection is a slice of its own) while they
/// have bytes and the socket takes them; performs the FIN; ends on close.
async fn write_task(weak: Weak<Shared>, conn: ConnectionId, socket: Arc<dyn Socket>) {
    poll_fn(|cx| {
        for _ in 0..WRITE_BUDGET {
            let Some(shared) = weak.upgrade() else {
                return Poll::Ready(());
            };
            let step = shared.with(|st, now| {
                let Some(c) = st.conns.get_mut(&conn) else {
                    return Step::Done;
                };
                if c.fin {
                    // Nothing is ever written after the FIN: the reader
                    // keeps the connection until the node releases it.
                    let _ = socket.shutdown_write();
                    return Step::Done;
                }
                // Woken by Output::Transmit and CloseWrite.
                set_waker(&mut c.writer, cx);
                let mut slices = [io::IoSlice::new(&[]); WRITE_SLICES];
                let k = st.node.transmit_io_slices(now, conn, &mut slices);
                if k == 0 {
                    return Step::Wait;
                }
                match socket.poll_write_vectored(cx, &slices[..k]) {
                    Poll::Pending => Step::Wait,
                    Poll::Ready(Ok(n)) if n > 0 => {
                        st.node.handle_written(now, conn, n);
                        Step::Again
                    }
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => Step::Again,
                    Poll::Ready(_) => {
                        st.node.handle_connection_closed(now, conn);
                        st.forget(conn);
                        Step::Done
                    }
                }
            });
            match step {
                Step::Again => {}
                Step::Wait => return Poll::Pending,
                Step::Done => return Poll::Ready(()),
            }
        }
        // Let other tasks run; carry on right after.
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

fn transport_error(e: &io::Error) -> TransportError {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => TransportError::Refused,
        K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable | K::TimedOut => {
            TransportError::Unreachable
        }
        _ => TransportError::Other,
    }
}

/// Why an address gave no socket address.
enum Unresolved {
    /// Not a TCP address.
    Unsupported,
    /// The DNS name did not resolve.
    Failed(io::ErrorKind),
}

async fn resolve(runtime: &dyn Runtime, addr: &[u8]) -> Result<SocketAddr, Unresolved> {
    match sansp2p::addr::tcp_target(addr).ok_or(Unresolved::Unsupported)? {
        TcpTarget::Ip(sa) => Ok(sa),
        TcpTarget::Dns(name, port) => match runtime.resolve(name, port).await {
            Ok(found) => found
                .into_iter()
                .next()
                .ok_or(Unresolved::Failed(io::ErrorKind::NotFound)),
            Err(e) => Err(Unresolved::Failed(e.kind())),
        },
    }
}

/// Connects, unless the node gives up on the connection first.
async fn connect_task(weak: Weak<Shared>, conn: ConnectionId, addr: Vec<u8>) {
    let Some(runtime) = weak.upgrade().map(|s| s.runtime.clone()) else {
        return;
    };
    let mut connecting = Box::pin(async move {
        let sa = resolve(&*runtime, &addr).await.map_err(|e| match e {
            Unresolved::Unsupported => TransportError::Unsupported,
            Unresolved::Failed(_) => TransportError::Unreachable,
        })?;
        runtime.connect(sa).await.map_err(|e| transport_error(&e))
    });
    let connected = poll_fn(|cx| {
        let Some(shared) = weak.upgrade() else {
            return Poll::Ready(None);
        };
        match shared.lock().conns.get_mut(&conn) {
            Some(c) => set_waker(&mut c.writer, cx),
            None => return Poll::Ready(None),
        }
        connecting.as_mut().poll(cx).map(Some)
    })
    .await;
    let (Some(connected), Some(shared)) = (connected, weak.upgrade()) else {
        return;
    };
    match connected {
        Ok(socket) => {
            shared.with(|st, now| st.node.handle_connected(now, conn));
            shared.start_conn(weak, conn, socket);
        }
        Err(e) => shared.with(|st, now| {
            st.conns.remove(&conn);
            st.node.handle_connect_failed(now, conn, e);
        }),
    }
}

/// Binds, answers the host's `listen`, then accepts until the host is gone.
async fn listen_task(weak: Weak<Shared>, listener: ListenerId, addr: Vec<u8>) {
    let Some(runtime) = weak.upgrade().map(|s| s.runtime.clone()) else {
        return;
    };
    let bound = async {
        let sa = resolve(&*runtime, &addr).await.map_err(|e| match e {
            Unresolved::Unsupported => {
                Error::UnsupportedAddress(crate::multiaddr_from(addr.clone()))
            }
            Unresolved::Failed(kind) => Error::Listen(kind),
        })?;
        let l = runtime.bind(sa).map_err(|e| Error::Listen(e.kind()))?;
        let local = l.local_addr().map_err(|e| Error::Listen(e.kind()))?;
        Ok::<_, Error>((l, local))
    }
    .await;
    let Some(shared) = weak.upgrade() else {
        return;
    };
    let l = shared.with(|st, now| {
        let reply = st.app.listen_replies.remove(&listener);
        let (result, l) = match bound {
            Ok((l, local)) => {
                let ma = multiaddr_of(local);
                st.node.handle_listening(now, listener, ma.to_vec());
                (Ok(ma), Some(l))
            }
            Err(e) => {
                st.node.handle_listen_failed(now, listener);
                st.listeners.remove(&listener);
                (Err(e), None)
            }
        };
        if let Some(tx) = reply {
            let _ = tx.send(result);
        }
        l
    });
    drop(shared);
    if let Some(l) = l {
        accept_loop(weak, listener, l).await;
    }
}

async fn accept_loop(weak: Weak<Shared>, listener: ListenerId, l: Box<dyn Listener>) {
    loop {
        let mut accept = l.accept();
        let accepted = poll_fn(|cx| {
            let Some(shared) = weak.upgrade() else {
                return Poll::Ready(None);
            };
            match shared.lock().listeners.get_mut(&listener) {
                Some(l) if !l.stopped => set_waker(&mut l.waker, cx),
                _ => return Poll::Ready(None),
            }
            accept.as_mut().poll(cx).map(Some)
        })
        .await;
        drop(accept);
        let Some(accepted) = accepted else {
            // Stopped (or the host is gone): the socket is closed before
            // the listener is forgotten, so a finished shutdown has freed
            // the port.
            drop(l);
            if let Some(shared) = weak.upgrade() {
                shared.with(|st, _| st.listeners.remove(&listener));
            }
            return;
        };
        let Some(shared) = weak.upgrade() else {
            return;
        };
        match accepted {
            Ok((socket, remote)) => {
                let remote = sansp2p::addr::tcp_multiaddr(remote);
                let conn = shared.with(|st, now| {
                    let conn = st.node.handle_inbound(now, remote).ok()?;
                    st.conns.insert(conn, ConnIo::default());
                    Some(conn)
                });
                // Refused (connection limit): the socket is dropped.
                if let Some(conn) = conn {
                    shared.start_conn(weak.clone(), conn, socket);
                }
            }
            Err(_) => {
                let pause = shared
                    .runtime
                    .sleep_until(std::time::Instant::now() + ACCEPT_RETRY);
                drop(shared);
                pause.await;
            }
        }
    }
}

/// What the timer task does next.
enum Timer {
    Fire,
    Rearm,
}

/// Sleeps until the node's next deadline and fires it.
async fn timer_task(weak: Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let target = {
            let mut st = shared.lock();
            st.timer.armed = st.timer.next;
            st.timer.armed
        };
        let mut sleep = target.map(|t| shared.runtime.sleep_until(shared.clock.to_std(t)));
        drop(shared);
        let next = poll_fn(|cx| {
            let Some(shared) = weak.upgrade() else {
                return Poll::Ready(None);
            };
            {
                let mut st = shared.lock();
                if st.timer.armed != target {
                    return Poll::Ready(Some(Timer::Rearm));
                }
                set_waker(&mut st.timer.waker, cx);
            }
            match sleep.as_mut() {
                Some(s) => s.as_mut().poll(cx).map(|()| Some(Timer::Fire)),
                None => Poll::Pending,
            }
        })
        .await;
        match next {
            None => return,
            Some(Timer::Rearm) => {}
            Some(Timer::Fire) => {
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                shared.with(|st, now| st.node.handle_timeout(now));
            }
        }
    }
}
