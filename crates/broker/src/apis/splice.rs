//! Encoding a response without copying the record batches it carries.
//!
//! The codec writes a `records` field with one `put_slice` of the field's bytes. [`SpliceBuf`]
//! recognizes those slices (by address and length, among the `Bytes` it was given) and, instead
//! of copying them, ends the current chunk and keeps a reference to the `Bytes`. The response is
//! then written as a list of chunks: a Fetch of 8 MiB costs one copy (page cache to socket)
//! instead of two.

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied: a chunk boundary costs more than a small copy.
const SPLICE_MIN: usize = 16 * 1024;

pub(crate) struct SpliceBuf {
    head: BytesMut,
    /// Finished chunks, in order.
    chunks: Vec<Bytes>,
    /// Total bytes in `chunks`.
    chunked: usize,
    spliceable: Vec<Bytes>,
}

impl SpliceBuf {
    pub fn new(capacity: usize, spliceable: Vec<Bytes>) -> SpliceBuf {
        SpliceBuf { head: BytesMut::with_capacity(capacity), chunks: Vec::new(), chunked: 0, spliceable }
    }

    pub fn into_chunks(mut self) -> Vec<Bytes> {
        if !self.head.is_empty() {
            self.chunks.push(self.head.freeze());
        }
        self.chunks
    }
}

// SAFETY: every method delegates to the inner `BytesMut`, whose implementation upholds the
// `BufMut` contract; `put_slice` only appends (by copy or by reference), never exposing
// uninitialized memory.
unsafe impl BufMut for SpliceBuf {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller guarantees `cnt` bytes of `chunk_mut()` were initialized, and
        // `chunk_mut()` is the head's.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SPLICE_MIN {
            if let Some(b) = self.spliceable.iter().find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len()) {
                let done = self.head.split().freeze();
                self.chunked += done.len() + b.len();
                if !done.is_empty() {
                    self.chunks.push(done);
                }
                self.chunks.push(b.clone());
                return;
            }
        }
        self.head.extend_from_slice(src);
    }
}

impl ByteBufMut for SpliceBuf {
    fn offset(&self) -> usize {
        self.chunked + self.head.len()
    }

    fn seek(&mut self, offset: usize) {
        // Gaps (seeking back to fill in a length) stay within the current chunk.
        assert!(offset >= self.chunked, "seek into a spliced chunk");
        self.head.resize(offset - self.chunked, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        assert!(r.start >= self.chunked, "range into a spliced chunk");
        &mut self.head[r.start - self.chunked..r.end - self.chunked]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn spliced_encoding_equals_copied_encoding() {
        let big = Bytes::from(vec![7u8; 100_000]);
        let small = Bytes::from(vec![9u8; 100]);
        let response = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_partitions(vec![
                PartitionData::default().with_partition_index(0).with_records(Some(big.clone())),
                PartitionData::default().with_partition_index(1).with_records(Some(small.clone())),
            ])]);
        for version in [4, 11, 12] {
            let mut plain = BytesMut::new();
            response.encode(&mut plain, version).unwrap();
            let mut spliced = SpliceBuf::new(64, vec![big.clone(), small.clone()]);
            response.encode(&mut spliced, version).unwrap();
            let chunks = spliced.into_chunks();
            assert_eq!(chunks.len(), 3, "head, records, tail");
            assert_eq!(chunks[1].as_ptr(), big.as_ptr(), "the big batch is referenced, not copied");
            assert_eq!(chunks.concat(), plain.to_vec(), "v{version}");
        }
    }
}
