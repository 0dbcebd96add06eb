//! Helpers shared by the storage engine's integration tests.
#![allow(dead_code)]

use freshet_log::batch::{self, SimpleRecord};
use freshet_log::{Log, ReadChunk};

/// A batch of `n` records whose values say which batch and record they are.
pub fn make_batch(tag: u64, n: usize, value_len: usize, ts: i64) -> Vec<u8> {
    let records: Vec<SimpleRecord> = (0..n)
        .map(|i| {
            let mut value = format!("b{tag}r{i}:").into_bytes();
            value.resize(value.len().max(value_len), b'x');
            SimpleRecord {
                timestamp: ts + i as i64,
                key: Some(format!("key-{}", (tag as usize + i) % 7).into_bytes().into()),
                value: Some(value.into()),
                headers: vec![("tag".into(), Some(tag.to_string().into_bytes()))],
            }
        })
        .collect();
    batch::encode_batch(&records)
}

/// Validates, appends and returns (base offset, stored bytes).
pub fn append(log: &mut Log, mut bytes: Vec<u8>, now: i64) -> (u64, Vec<u8>) {
    let header = batch::validate(&bytes).expect("valid batch");
    let info = log.append(&mut bytes, &header, now).expect("append");
    (info.base_offset, bytes)
}

/// Syncs everything appended.
pub fn sync(log: &mut Log, now: i64) {
    log.flush(now).expect("flush");
}

/// Reads every readable batch from `from`, as (base offset, bytes) pairs.
pub fn read_all(log: &mut Log, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        match log.read(offset, 64 * 1024, true).expect("read") {
            ReadChunk::Data { bytes, next_offset } => {
                assert!(!bytes.is_empty(), "a min_one_batch read returned nothing at {offset}");
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    let h = batch::validate_stored(&rest[..batch::peek_size(rest).unwrap()])
                        .expect("stored batch is valid");
                    out.push((h.base_offset as u64, rest[..h.size()].to_vec()));
                    rest = &rest[h.size()..];
                }
                assert!(next_offset > offset);
                offset = next_offset;
            }
            ReadChunk::AtEnd => return out,
            ReadChunk::NextSegment(_) => unreachable!("Log::read follows segments"),
        }
    }
}
