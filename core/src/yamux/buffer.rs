//! A stream's byte buffer as a queue of chunks.
//!
//! A single `BytesMut` looks simpler but costs a copy per byte under load:
//! every payload handed out (`poll_transmit`, `read_chunk`) keeps a share of
//! the allocation alive, so when the buffer must grow, `reserve` cannot reuse
//! it and moves everything still queued into a new one. Here bytes are only
//! ever appended into spare room at the tail or into a fresh chunk, and
//! taken from the front; nothing already queued is moved.
//!
//! Allocations: a stream that only ever carries small messages keeps small
//! chunks (the first is sized to the data, at least [`MIN_CHUNK`]); each new
//! chunk doubles up to [`CHUNK`]. Emptied chunks are kept (up to
//! [`MAX_SPARES`]) and reused once every payload sliced from them has been
//! dropped, so a busy stream does not allocate and free a chunk per 64 KiB
//! (which made the allocator hand pages back and fault them in again).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use bytes::{Buf, Bytes, BytesMut};

/// Largest chunk size reached by doubling (a single larger write still gets
/// one chunk of its own size).
pub(crate) const CHUNK: usize = 64 * 1024;
/// Size of a queue's first chunk, unless the data is larger.
pub(crate) const MIN_CHUNK: usize = 128;
/// Emptied chunks kept for reuse.
pub(crate) const MAX_SPARES: usize = 2;
/// A queue that empties having never allocated a chunk above this lets
/// all its memory go (chunks, spares and the chunk list): an idle stream
/// that only carried a negotiation or small messages keeps nothing, a busy
/// one keeps its large chunks for the next bytes.
pub(crate) const IDLE_RELEASE: usize = 4 * MIN_CHUNK;

/// One run of queued bytes.
#[derive(Debug)]
enum Chunk {
    /// Our memory: bytes copied in, with room at the end for more.
    Owned(BytesMut),
    /// Bytes handed over whole; nothing is appended to them.
    Shared(Bytes),
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Owned(b) => b.len(),
            Chunk::Shared(b) => b.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory this chunk holds: a shared chunk counts its bytes only (what
    /// else its allocation holds is its owner's).
    fn capacity(&self) -> usize {
        match self {
            Chunk::Owned(b) => b.capacity(),
            Chunk::Shared(b) => b.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(b) => b,
            Chunk::Shared(b) => b,
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Chunk::Owned(b) => b.advance(n),
            Chunk::Shared(b) => b.advance(n),
        }
    }

    #[cfg(test)]
    fn as_ptr(&self) -> *const u8 {
        self.bytes().as_ptr()
    }

    fn split_to(&mut self, n: usize) -> Bytes {
        match self {
            Chunk::Owned(b) => b.split_to(n).freeze(),
            Chunk::Shared(b) => b.split_to(n),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct ByteQueue {
    chunks: VecDeque<Chunk>,
    len: usize,
    /// Emptied chunks whose memory may be reused once no payload shares it
    /// (a `Vec`, not inline: an idle stream pays 24 bytes, not 72, and the
    /// stream table holds thousands).
    spares: Vec<BytesMut>,
    /// Capacity of the next fresh chunk.
    next_chunk: usize,
}

impl ByteQueue {
    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes allocated (for memory accounting).
    pub(crate) fn capacity(&self) -> usize {
        let spares: usize = self.spares.iter().map(BytesMut::capacity).sum();
        self.chunks.iter().map(Chunk::capacity).sum::<usize>() + spares
    }

    /// Bytes in the front chunk: the most one [`Self::split_front`] returns.
    pub(crate) fn front_len(&self) -> usize {
        self.chunks.front().map_or(0, Chunk::len)
    }

    /// Appends a copy of `data`.
    pub(crate) fn push(&mut self, mut data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if let Some(Chunk::Owned(tail)) = self.chunks.back_mut() {
            let spare = tail.capacity() - tail.len();
            let n = spare.min(data.len());
            // Within the spare room `extend_from_slice` never reallocates.
            tail.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if !data.is_empty() {
            let mut chunk = self.fresh_chunk(data.len());
            chunk.extend_from_slice(data);
            self.chunks.push_back(Chunk::Owned(chunk));
        }
    }

    /// Appends `data` without copying it.
    pub(crate) fn push_shared(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        self.chunks.push_back(Chunk::Shared(data));
    }

    /// An empty chunk with room for `need` bytes: a spare whose payloads
    /// are all gone, else a new allocation.
    fn fresh_chunk(&mut self, need: usize) -> BytesMut {
        for i in 0..self.spares.len() {
            // Succeeds, without copying (the spare is empty), once this
            // handle is the only one left on its allocation.
            if self.spares[i].try_reclaim(need) {
                return self.spares.swap_remove(i);
            }
        }
        let size = need.max(self.next_chunk.max(MIN_CHUNK));
        self.next_chunk = (size.min(CHUNK) * 2).min(CHUNK);
        BytesMut::with_capacity(size)
    }

    /// Drops the emptied front chunk, keeping our memory for reuse.
    fn pop_emptied(&mut self) {
        if let Some(Chunk::Owned(emptied)) = self.chunks.pop_front() {
            self.recycle(emptied);
        }
    }

    /// Keeps an emptied chunk for reuse (the smaller one goes if full).
    fn recycle(&mut self, chunk: BytesMut) {
        debug_assert!(chunk.is_empty());
        if self.spares.len() < MAX_SPARES {
            self.spares.reserve_exact(MAX_SPARES - self.spares.len());
            self.spares.push(chunk);
        } else if let Some(smallest) = self.spares.iter_mut().min_by_key(|c| c.capacity()) {
            if smallest.capacity() < chunk.capacity() {
                *smallest = chunk;
            }
        }
    }

    /// Takes up to `n` bytes from the front chunk without copying (fewer if
    /// the front chunk is shorter).
    pub(crate) fn split_front(&mut self, n: usize) -> Bytes {
        let several = self.chunks.len() > 1;
        let Some(front) = self.chunks.front_mut() else {
            return Bytes::new();
        };
        let n = n.min(front.len());
        let out = front.split_to(n);
        self.len -= n;
        // An emptied front chunk is recycled, unless it is the last one and
        // still has room for the next bytes.
        if front.is_empty() && (several || front.capacity() == 0) {
            self.pop_emptied();
        }
        self.release_if_idle();
        out
    }

    /// Lets a small, empty queue's memory go (see [`IDLE_RELEASE`]):
    /// `next_chunk` is twice the largest chunk allocated so far (a chunk's
    /// `capacity` cannot tell, it shrinks as bytes are taken).
    fn release_if_idle(&mut self) {
        if self.len == 0 && self.next_chunk <= 2 * IDLE_RELEASE {
            self.clear();
        }
    }

    /// Copies up to `buf.len()` bytes from the front into `buf`; returns how many.
    pub(crate) fn copy_out(&mut self, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let last = self.chunks.len() == 1;
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let n = (buf.len() - done).min(front.len());
            buf[done..done + n].copy_from_slice(&front.bytes()[..n]);
            front.advance(n);
            done += n;
            self.len -= n;
            if front.is_empty() {
                if last && front.capacity() > 0 {
                    // Keep the last chunk's spare room for the next bytes.
                    break;
                }
                self.pop_emptied();
            }
        }
        self.release_if_idle();
        done
    }

    /// Drops everything and releases the memory.
    pub(crate) fn clear(&mut self) {
        *self = ByteQueue::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_queue_that_empties_keeps_no_memory_and_a_large_one_keeps_its_chunk() {
        // A negotiation's worth of bytes, taken both ways.
        for take in [true, false] {
            let mut q = ByteQueue::default();
            q.push(b"/multistream/1.0.0\n");
            q.push(b"/echo/1.0.0\n");
            assert!(q.capacity() > 0);
            if take {
                drop(q.split_front(usize::MAX));
            } else {
                let mut buf = [0u8; 64];
                assert_eq!(q.copy_out(&mut buf), 31);
            }
            assert_eq!((q.len(), q.capacity()), (0, 0), "nothing kept");
            assert_eq!(q.chunks.capacity(), 0, "not even the chunk list");
            // And it still works afterwards.
            q.push(b"again");
            assert_eq!(&q.split_front(5)[..], b"again");
        }
        // A bulk stream's chunk stays for the next bytes.
        let mut q = ByteQueue::default();
        q.push(&[7; 40_000]);
        let mut buf = alloc::vec![0u8; 40_000];
        assert_eq!(q.copy_out(&mut buf), 40_000);
        assert_eq!(q.spares.len() + q.chunks.len(), 1, "kept for reuse");
    }

    #[test]
    fn bytes_come_out_in_order_whatever_the_split() {
        let mut q = ByteQueue::default();
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        for piece in data.chunks(7_001) {
            q.push(piece);
        }
        assert_eq!(q.len(), data.len());
        let mut out = Vec::new();
        let mut buf = [0u8; 5_000];
        while !q.is_empty() {
            let b = q.split_front(16_384);
            out.extend_from_slice(&b);
            let n = q.copy_out(&mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, data);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn queued_bytes_are_never_moved_while_payloads_are_held() {
        let mut q = ByteQueue::default();
        q.push(&[1; 40_000]);
        let held = q.split_front(16_384);
        let ptr = q.chunks.front().unwrap().as_ptr();
        // Much more than the spare room: goes into new chunks.
        q.push(&[2; 100_000]);
        assert_eq!(
            q.chunks.front().unwrap().as_ptr(),
            ptr,
            "queued bytes stayed put"
        );
        assert_eq!(held.len(), 16_384);
        let spare_room = 40_000usize.max(MIN_CHUNK) - 40_000;
        assert_eq!(q.front_len(), 40_000 - 16_384 + spare_room);
        assert_eq!(q.len(), 40_000 - 16_384 + 100_000);
    }

    #[test]
    fn emptied_chunks_are_reused_once_their_payloads_are_dropped() {
        let mut q = ByteQueue::default();
        // Chunk A, exactly full: the next bytes go into a chunk B of 2000.
        q.push(&[1; 1_000]);
        let a = q.chunks[0].as_ptr();
        q.push(&[2; 10]);
        assert_eq!(q.chunks.len(), 2);
        assert_eq!(q.chunks[1].capacity(), 2_000);

        // All of A handed out: A is emptied and kept as a spare, but `held`
        // still shares its memory.
        let held = q.split_front(usize::MAX);
        assert_eq!(held.len(), 1_000);
        assert_eq!((q.chunks.len(), q.spares.len()), (1, 1));

        // B's last 1990 bytes of room, then 500 more need a new chunk: A is
        // not reusable while `held` lives, so this is a fresh chunk C (4000).
        q.push(&[3; 1_990 + 500]);
        assert_eq!(q.chunks.len(), 2);
        let c = q.chunks[1].as_ptr();
        assert_ne!(c, a, "a spare still shared by a payload was reused");
        assert_eq!(q.chunks[1].capacity(), 4_000);
        assert_eq!(q.spares.len(), 1);
        assert!(held.iter().all(|&b| b == 1), "held payload intact");
        drop(held);

        // Drain B (recycled: spares A and B) and C (kept: it is the last
        // chunk and has 3500 bytes of room).
        assert_eq!(q.split_front(usize::MAX).len(), 2_000);
        assert_eq!(q.split_front(usize::MAX).len(), 500);
        assert_eq!((q.chunks.len(), q.spares.len()), (1, 2));
        assert_eq!(q.chunks[0].as_ptr(), c.wrapping_add(500), "C kept");

        // C's room, then 600 more: spare A (the first and smallest that
        // fits, its payload gone) is taken back from the start of its
        // memory instead of allocating.
        q.push(&[4; 3_500 + 600]);
        assert_eq!(q.chunks.len(), 2);
        assert_eq!(q.chunks[1].as_ptr(), a, "spare A reused in place");
        // A fresh chunk would have been 8000 and left both spares in place.
        assert_eq!(q.chunks[1].capacity(), 1_000);
        assert_eq!(q.spares.len(), 1);

        // The reused memory carries the new bytes.
        let mut out = Vec::new();
        while !q.is_empty() {
            out.extend_from_slice(&q.split_front(usize::MAX));
        }
        assert_eq!(out, [4; 3_500 + 600]);
    }

    #[test]
    fn shared_bytes_are_queued_and_handed_out_in_place_between_copied_ones() {
        let mut q = ByteQueue::default();
        q.push(b"copied ");
        let shared = Bytes::from(alloc::vec![9u8; 10_000]);
        let at = shared.as_ptr();
        q.push_shared(shared);
        q.push_shared(Bytes::new());
        // Not appended to the shared chunk: a fresh one of our own.
        q.push(b" tail");
        assert_eq!(q.len(), 7 + 10_000 + 5);
        assert_eq!(q.chunks.len(), 3);
        let mut head = [0u8; 7];
        assert_eq!(q.copy_out(&mut head), 7);
        assert_eq!(&head, b"copied ");
        // The shared bytes leave from where they were, in two pieces.
        let first = q.split_front(4_000);
        assert_eq!(first.as_ptr(), at, "no copy on the way out");
        let second = q.split_front(usize::MAX);
        assert_eq!(second.as_ptr(), at.wrapping_add(4_000));
        assert_eq!((first.len(), second.len()), (4_000, 6_000));
        let mut rest = [0u8; 16];
        assert_eq!(q.copy_out(&mut rest), 5);
        assert_eq!(&rest[..5], b" tail");
        assert_eq!(q.len(), 0);
        // An emptied shared chunk is dropped, never kept as a spare.
        assert!(q.spares.iter().all(|c| c.capacity() < 10_000));
    }

    #[test]
    fn small_messages_keep_small_chunks() {
        let mut q = ByteQueue::default();
        q.push(b"x");
        assert!(q.capacity() <= MIN_CHUNK);
        let mut one = [0u8; 1];
        assert_eq!(q.copy_out(&mut one), 1);
        assert!(q.capacity() <= MIN_CHUNK);
    }

    #[test]
    fn clear_releases_memory() {
        let mut q = ByteQueue::default();
        q.push(&[0; 10]);
        q.clear();
        assert_eq!((q.len(), q.capacity()), (0, 0));
    }
}
