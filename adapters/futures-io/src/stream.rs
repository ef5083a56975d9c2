//! One negotiated stream as `futures_io::{AsyncRead, AsyncWrite}`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use sansp2p::node::{StreamError, StreamHandle};

use crate::driver::State;
use crate::host::Host;

/// One negotiated stream: `futures_io::AsyncRead + AsyncWrite`.
///
/// `close` half-closes (FIN); reading goes on until the peer closes.
/// Dropping a stream that was not closed resets it; dropping a closed one
/// lets the node finish it in the background.
pub struct Stream {
    host: Host,
    handle: StreamHandle,
    closed: bool,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Stream").field(&self.handle).finish()
    }
}

impl Stream {
    pub(crate) fn new(host: Host, handle: StreamHandle) -> Self {
        Stream {
            host,
            handle,
            closed: false,
        }
    }

    /// The node's handle of this stream.
    pub fn handle(&self) -> StreamHandle {
        self.handle
    }
}

fn io_error(e: StreamError) -> io::Error {
    let kind = match e {
        StreamError::Reset => io::ErrorKind::ConnectionReset,
        StreamError::Closed => io::ErrorKind::BrokenPipe,
        _ => io::ErrorKind::NotConnected,
    };
    io::Error::new(kind, e)
}

/// The node forgets a stream once it is reset; to the reader and writer
/// that stays a reset, not an unknown stream.
fn gone_as_reset(st: &State, h: StreamHandle, e: StreamError) -> StreamError {
    match e {
        StreamError::UnknownStream if st.app.streams.get(&h).is_some_and(|w| w.reset) => {
            StreamError::Reset
        }
        e => e,
    }
}

impl futures_io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let h = self.handle;
        self.host
            .shared
            .with(|st, now| match st.node.stream_read(now, h, buf) {
                Ok(n) => Poll::Ready(Ok(n)),
                Err(StreamError::WouldBlock) => {
                    st.app.streams.entry(h).or_default().read = Some(cx.waker().clone());
                    Poll::Pending
                }
                Err(StreamError::UnknownStream)
                    if st.app.streams.get(&h).is_some_and(|w| w.finished) =>
                {
                    Poll::Ready(Ok(0))
                }
                Err(e) => Poll::Ready(Err(io_error(gone_as_reset(st, h, e)))),
            })
    }
}

impl futures_io::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let h = self.handle;
        self.host
            .shared
            .with(|st, now| match st.node.stream_write(now, h, buf) {
                Ok(n) => Poll::Ready(Ok(n)),
                Err(StreamError::WouldBlock) => {
                    st.app.streams.entry(h).or_default().write = Some(cx.waker().clone());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(io_error(gone_as_reset(st, h, e)))),
            })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are the node's; the connection's writer sends them
        // without further prompting.
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let h = self.handle;
        let result = self
            .host
            .shared
            .with(|st, now| st.node.stream_close(now, h));
        self.closed = true;
        Poll::Ready(match result {
            Ok(()) | Err(StreamError::UnknownStream) => Ok(()),
            Err(e) => Err(io_error(e)),
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let (h, closed) = (self.handle, self.closed);
        self.host.shared.with(|st, now| {
            let done = st
                .app
                .streams
                .remove(&h)
                .is_some_and(|w| w.finished || w.reset);
            match (done, closed) {
                (true, _) => {}
                (false, true) => st.node.stream_detach(now, h),
                (false, false) => st.node.stream_reset(now, h),
            }
        });
    }
}
