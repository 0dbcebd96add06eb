//! The binary batch ABI between the host and a guest (see `docs/functions-wasm-abi.md`):
//! [`encode_batch`] writes the input of `freshet_handle`, [`decode_reply`] reads its reply.
//!
//! All integers are little-endian and unaligned. A reply comes from untrusted guest memory:
//! every length and count is checked against the bytes that are actually there.

use bytes::Bytes;
use freshet_functions::{Event, Failure, Output, Reply};

/// A reply status: the batch was processed (outputs and failures follow).
pub const STATUS_OK: u32 = 0;
/// A reply status: the whole batch failed (a message follows).
pub const STATUS_BATCH_FAILED: u32 = 1;

/// Encodes `batch` into `buf` (cleared first). The topic is written once: every event of a
/// batch must be of the same topic, or this fails.
pub fn encode_batch(batch: &[Event], buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    let topic = batch.first().map(|e| &*e.topic).unwrap_or("");
    if batch.iter().any(|e| &*e.topic != topic) {
        return Err("a batch of events of more than one topic cannot be encoded".into());
    }
    buf.reserve(8 + topic.len() + batch.iter().map(encoded_len).sum::<usize>());
    put_u32(buf, len_u32(topic.len())?);
    buf.extend_from_slice(topic.as_bytes());
    put_u32(buf, len_u32(batch.len())?);
    for e in batch {
        buf.extend_from_slice(&e.partition.to_le_bytes());
        buf.extend_from_slice(&e.offset.to_le_bytes());
        buf.extend_from_slice(&e.timestamp.to_le_bytes());
        put_opt(buf, e.key.as_deref())?;
        put_opt(buf, e.value.as_deref())?;
        put_headers(buf, &e.headers)?;
    }
    Ok(())
}

fn encoded_len(e: &Event) -> usize {
    let opt = |b: Option<&[u8]>| 4 + b.map_or(0, <[u8]>::len);
    20 + opt(e.key.as_deref())
        + opt(e.value.as_deref())
        + 4
        + e.headers.iter().map(|(n, v)| 4 + n.len() + opt(v.as_deref())).sum::<usize>()
}

fn len_u32(n: usize) -> Result<u32, String> {
    // i32::MAX keeps every length representable as a non-negative i32 as well.
    if n > i32::MAX as usize {
        return Err(format!("a field of {n} bytes is too large for the WASM ABI"));
    }
    Ok(n as u32)
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_opt(buf: &mut Vec<u8>, bytes: Option<&[u8]>) -> Result<(), String> {
    match bytes {
        None => buf.extend_from_slice(&(-1i32).to_le_bytes()),
        Some(b) => {
            put_u32(buf, len_u32(b.len())?);
            buf.extend_from_slice(b);
        }
    }
    Ok(())
}

fn put_headers(buf: &mut Vec<u8>, headers: &[(String, Option<Vec<u8>>)]) -> Result<(), String> {
    put_u32(buf, len_u32(headers.len())?);
    for (name, value) in headers {
        put_u32(buf, len_u32(name.len())?);
        buf.extend_from_slice(name.as_bytes());
        put_opt(buf, value.as_deref())?;
    }
    Ok(())
}

/// What a guest replied.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Ok(Reply),
    /// Status 1: the whole batch failed with this message.
    BatchFailed(String),
}

/// Decodes a reply to a batch of `batch_len` events. `Err` names what is malformed. The reply
/// is copied out of guest memory once; the outputs' keys and values are slices of that copy
/// (no allocation per output).
pub fn decode_reply(bytes: &[u8], batch_len: usize) -> Result<Decoded, String> {
    let copy = Bytes::copy_from_slice(bytes);
    let mut r = Reader { bytes: &copy, pos: 0 };
    match r.u32("status")? {
        STATUS_OK => {}
        STATUS_BATCH_FAILED => {
            let n = r.u32("the error message's length")? as usize;
            let msg = String::from_utf8_lossy(r.bytes(n, "the error message")?).into_owned();
            r.end()?;
            return Ok(Decoded::BatchFailed(msg));
        }
        s => return Err(format!("unknown status {s}")),
    }
    let count = r.u32("the output count")? as usize;
    // Each output takes at least 16 bytes: never reserve more than the reply can hold.
    let mut outputs = Vec::with_capacity(count.min(r.remaining() / 16));
    for i in 0..count {
        outputs.push(r.output().map_err(|e| format!("output {i}: {e}"))?);
    }
    let count = r.u32("the failure count")? as usize;
    let mut failed = Vec::with_capacity(count.min(r.remaining() / 8));
    for i in 0..count {
        let index = r.u32("a failure's event index")? as usize;
        if index >= batch_len {
            return Err(format!("failure {i} names event {index} of a batch of {batch_len}"));
        }
        let n = r.u32("a failure's message length")? as usize;
        let error = String::from_utf8_lossy(r.bytes(n, "a failure's message")?).into_owned();
        failed.push(Failure { index, error });
    }
    r.end()?;
    Ok(Decoded::Ok(Reply { outputs, failed }))
}

fn utf8(b: &[u8], what: &str) -> Result<String, String> {
    std::str::from_utf8(b).map(str::to_owned).map_err(|_| format!("{what} is not UTF-8"))
}

type Headers = Vec<(String, Option<Vec<u8>>)>;

struct Reader<'a> {
    bytes: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "{what} ({n} bytes at byte {}) runs past the end of the reply ({} bytes)",
                self.pos,
                self.bytes.len()
            ));
        }
        let all: &'a [u8] = self.bytes;
        let b = &all[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    /// Like [`Reader::opt`], as a slice of the reply's copy.
    fn opt_bytes(&mut self, what: &str) -> Result<Option<Bytes>, String> {
        let start = self.pos;
        Ok(self.opt(what)?.map(|b| self.bytes.slice(start + 4..start + 4 + b.len())))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An i32 length (-1 = null) and that many bytes.
    fn opt(&mut self, what: &str) -> Result<Option<&'a [u8]>, String> {
        match self.u32(what)? as i32 {
            -1 => Ok(None),
            n if n < 0 => Err(format!("{what} has the length {n}")),
            n => self.bytes(n as usize, what).map(Some),
        }
    }

    fn output(&mut self) -> Result<Output, String> {
        let topic = match self.opt("the topic")? {
            None => None,
            Some(b) => Some(utf8(b, "the topic")?),
        };
        let key = self.opt_bytes("the key")?;
        let value = self.opt_bytes("the value")?;
        let headers = self.headers()?;
        Ok(Output { topic, key, value, headers })
    }

    fn headers(&mut self) -> Result<Headers, String> {
        let count = self.u32("a header count")? as usize;
        // Each header takes at least 8 bytes.
        let mut headers = Vec::with_capacity(count.min(self.remaining() / 8));
        for h in 0..count {
            let n = self.u32("a header name's length")? as usize;
            let name =
                utf8(self.bytes(n, "a header name")?, "a header name").map_err(|e| format!("header {h}: {e}"))?;
            let value = self.opt("a header value")?.map(<[u8]>::to_vec);
            headers.push((name, value));
        }
        Ok(headers)
    }

    fn end(&self) -> Result<(), String> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(format!("{n} bytes after the end of the reply")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: Option<&[u8]>, value: Option<&[u8]>) -> Event {
        Event {
            topic: "in".into(),
            partition: 3,
            offset: 42,
            timestamp: 1_700_000_000_000,
            key: key.map(bytes::Bytes::copy_from_slice),
            value: value.map(bytes::Bytes::copy_from_slice),
            headers: vec![("h".into(), Some(b"v".to_vec())), ("n".into(), None)],
        }
    }

    #[test]
    fn encodes_the_documented_layout() {
        let mut buf = Vec::new();
        encode_batch(&[event(None, Some(b"ab"))], &mut buf).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(b"in");
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&3i32.to_le_bytes());
        want.extend_from_slice(&42i64.to_le_bytes());
        want.extend_from_slice(&1_700_000_000_000i64.to_le_bytes());
        want.extend_from_slice(&(-1i32).to_le_bytes());
        want.extend_from_slice(&2i32.to_le_bytes());
        want.extend_from_slice(b"ab");
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(b"h");
        want.extend_from_slice(&1i32.to_le_bytes());
        want.extend_from_slice(b"v");
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(b"n");
        want.extend_from_slice(&(-1i32).to_le_bytes());
        assert_eq!(buf, want);
        assert_eq!(buf.len(), 8 + 2 + encoded_len(&event(None, Some(b"ab"))));
    }

    #[test]
    fn refuses_mixed_topics() {
        let mut other = event(None, None);
        other.topic = "other".into();
        assert!(encode_batch(&[event(None, None), other], &mut Vec::new()).is_err());
    }

    #[test]
    fn decodes_and_rejects_malformed_replies() {
        let mut ok = Vec::new();
        ok.extend_from_slice(&0u32.to_le_bytes());
        ok.extend_from_slice(&1u32.to_le_bytes());
        ok.extend_from_slice(&3i32.to_le_bytes());
        ok.extend_from_slice(b"out");
        ok.extend_from_slice(&(-1i32).to_le_bytes());
        ok.extend_from_slice(&1i32.to_le_bytes());
        ok.extend_from_slice(b"x");
        ok.extend_from_slice(&0u32.to_le_bytes());
        ok.extend_from_slice(&1u32.to_le_bytes());
        ok.extend_from_slice(&0u32.to_le_bytes());
        ok.extend_from_slice(&2u32.to_le_bytes());
        ok.extend_from_slice(b"no");
        let want = Reply {
            outputs: vec![Output {
                topic: Some("out".into()),
                key: None,
                value: Some(Bytes::from_static(b"x")),
                headers: vec![],
            }],
            failed: vec![Failure { index: 0, error: "no".into() }],
        };
        assert_eq!(decode_reply(&ok, 1), Ok(Decoded::Ok(want)));
        // Every truncation is an error, and so are trailing bytes and a bad failure index.
        for n in 0..ok.len() {
            assert!(decode_reply(&ok[..n], 1).is_err(), "truncated to {n}");
        }
        let mut trailing = ok.clone();
        trailing.push(0);
        assert!(decode_reply(&trailing, 1).is_err());
        assert!(decode_reply(&ok, 0).is_err());
        // A huge count does not allocate for it.
        let mut huge = 0u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_reply(&huge, 1).is_err());
        let mut neg = 0u32.to_le_bytes().to_vec();
        neg.extend_from_slice(&1u32.to_le_bytes());
        neg.extend_from_slice(&(-2i32).to_le_bytes());
        assert!(decode_reply(&neg, 1).is_err());
        let mut failed = 1u32.to_le_bytes().to_vec();
        failed.extend_from_slice(&3u32.to_le_bytes());
        failed.extend_from_slice(b"bad");
        assert_eq!(decode_reply(&failed, 1), Ok(Decoded::BatchFailed("bad".into())));
        assert!(decode_reply(&7u32.to_le_bytes(), 1).is_err());
    }
}
