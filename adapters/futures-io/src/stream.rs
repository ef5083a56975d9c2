//! One negotiated stream as `futures_io::{AsyncRead, AsyncWrite}`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use sansp2p::node::{Node, StreamError, StreamHandle};
use sansp2p::Instant;

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

    /// Writes all of `data` without copying it into the node: the bytes
    /// wait in the stream's send buffer as they are, and over noise are
    /// copied once, into the frame they are encrypted in (`AsyncWrite`
    /// copies them in first). Waits while the send buffer is full.
    ///
    /// ```no_run
    /// # async fn send(stream: &mut sansp2p_futures_io::Stream) -> std::io::Result<()> {
    /// use sansp2p_futures_io::Bytes;
    /// let payload = Bytes::from(vec![0u8; 1 << 20]);
    /// stream.write_bytes(payload.clone()).await?; // `payload` stays usable
    /// # Ok(()) }
    /// ```
    pub async fn write_bytes(&mut self, mut data: Bytes) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_bytes(cx, &mut data)).await
    }

    /// Polls [`write_bytes`](Self::write_bytes): takes from the front of
    /// `data` what fits; `Ready(Ok(()))` once `data` is empty.
    pub fn poll_write_bytes(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<io::Result<()>> {
        while !data.is_empty() {
            match self.poll_write_with(cx, |node, now, h| node.stream_write_bytes(now, h, data)) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads up to `max` bytes as they lie in the node, without copying
    /// them out; `Ok(None)` is the end of the stream.
    ///
    /// ```no_run
    /// # async fn recv(stream: &mut sansp2p_futures_io::Stream) -> std::io::Result<()> {
    /// while let Some(chunk) = stream.read_chunk(usize::MAX).await? {
    ///     println!("{} bytes", chunk.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_read_chunk(cx, max)).await
    }

    /// Polls [`read_chunk`](Self::read_chunk).
    pub fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Option<Bytes>>> {
        self.poll_read_with(cx, None, |node, now, h| node.stream_read_chunk(now, h, max))
    }

    /// One read on the node; `end` is what a read of a stream the node has
    /// finished and forgotten returns.
    fn poll_read_with<T>(
        &self,
        cx: &mut Context<'_>,
        end: T,
        read: impl FnOnce(&mut Node, Instant, StreamHandle) -> Result<T, StreamError>,
    ) -> Poll<io::Result<T>> {
        let h = self.handle;
        self.host
            .shared
            .with(|st, now| match read(&mut st.node, now, h) {
                Ok(v) => Poll::Ready(Ok(v)),
                Err(StreamError::WouldBlock) => {
                    st.app.streams.entry(h).or_default().read = Some(cx.waker().clone());
                    Poll::Pending
                }
                Err(StreamError::UnknownStream)
                    if st.app.streams.get(&h).is_some_and(|w| w.finished) =>
                {
                    Poll::Ready(Ok(end))
                }
                Err(e) => Poll::Ready(Err(io_error(gone_as_reset(st, h, e)))),
            })
    }

    /// One write on the node.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&mut Node, Instant, StreamHandle) -> Result<usize, StreamError>,
    ) -> Poll<io::Result<usize>> {
        let h = self.handle;
        self.host
            .shared
            .with(|st, now| match write(&mut st.node, now, h) {
                Ok(n) => Poll::Ready(Ok(n)),
                Err(StreamError::WouldBlock) => {
                    st.app.streams.entry(h).or_default().write = Some(cx.waker().clone());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(io_error(gone_as_reset(st, h, e)))),
            })
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
        self.poll_read_with(cx, 0, |node, now, h| node.stream_read(now, h, buf))
    }
}

impl futures_io::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |node, now, h| node.stream_write(now, h, buf))
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
