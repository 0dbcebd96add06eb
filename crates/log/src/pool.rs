//! Reusable read buffers.
//!
//! Fetch reads allocate a buffer per read; large fresh allocations cost page faults and zeroing
//! that showed up as a fifth of the broker's CPU time when serving consumers. Buffers handed
//! out as `Bytes` come back here when the last reference drops (after the response is written),
//! already initialized, so the next read neither faults nor zeroes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};

use bytes::Bytes;
use freshet_common::limits::{READ_BUFFER_POOL_BYTES, READ_BUFFER_POOL_MAX_BUFFER};

struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    /// Capacity of the buffers in `free`.
    held: AtomicUsize,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| Pool { free: Mutex::new(Vec::new()), held: AtomicUsize::new(0) });

/// The size class a request for `n` bytes is served from.
fn class(n: usize) -> usize {
    n.max(64 * 1024).next_power_of_two()
}

/// A fully initialized buffer of at least `n` bytes.
pub(crate) fn take(n: usize) -> Vec<u8> {
    let want = class(n);
    if want <= READ_BUFFER_POOL_MAX_BUFFER {
        let mut free = POOL.free.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = free.iter().position(|b| b.len() == want) {
            let buf = free.swap_remove(i);
            POOL.held.fetch_sub(buf.len(), Ordering::Relaxed);
            return buf;
        }
    }
    vec![0u8; want]
}

/// The first `used` bytes of `buf`, as `Bytes` that return `buf` to the pool when dropped.
pub(crate) fn into_bytes(buf: Vec<u8>, used: usize) -> Bytes {
    debug_assert!(used <= buf.len());
    if used == 0 {
        give_back(buf);
        return Bytes::new();
    }
    Bytes::from_owner(Pooled { buf: Some(buf), used })
}

fn give_back(buf: Vec<u8>) {
    let size = buf.len();
    if size > READ_BUFFER_POOL_MAX_BUFFER || size != class(size) {
        return;
    }
    if POOL.held.fetch_add(size, Ordering::Relaxed) + size > READ_BUFFER_POOL_BYTES {
        POOL.held.fetch_sub(size, Ordering::Relaxed);
        return;
    }
    POOL.free.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
}

struct Pooled {
    buf: Option<Vec<u8>>,
    used: usize,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf.as_ref().expect("present until drop")[..self.used]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            give_back(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_initialized_and_bounded() {
        let mut a = take(100_000);
        assert_eq!(a.len(), 131_072);
        a[..5].copy_from_slice(b"hello");
        let ptr = a.as_ptr();
        let bytes = into_bytes(a, 5);
        assert_eq!(&bytes[..], b"hello");
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(&clone[..], b"hello", "still referenced");
        drop(clone);
        let b = take(70_000);
        assert_eq!(b.as_ptr(), ptr, "the buffer was reused");
        assert_eq!(&b[..5], b"hello", "reused buffers are not zeroed again");
        // Oversized buffers are not pooled.
        let huge = take(READ_BUFFER_POOL_MAX_BUFFER * 2);
        drop(into_bytes(huge, 1));
    }
}
