//! Kafka record batches, format v2 (magic 2): the unit Freshet stores.
//!
//! A batch is stored byte for byte as the producer sent it, except for the fields the broker owns:
//! the base offset and partition leader epoch (outside the CRC), and with `LogAppendTime` the
//! timestamp type bit and max timestamp (inside it, so the CRC is recomputed).
//!
//! ```text
//! offset  size  field
//!      0     8  base offset                      (broker)
//!      8     4  batch length (bytes after this field)
//!     12     4  partition leader epoch           (broker)
//!     16     1  magic = 2
//!     17     4  CRC-32C of bytes 21..end
//!     21     2  attributes: compression (bits 0-2), timestamp type (3), transactional (4), control (5)
//!     23     4  last offset delta
//!     27     8  base timestamp
//!     35     8  max timestamp
//!     43     8  producer id
//!     51     2  producer epoch
//!     53     4  base sequence
//!     57     4  record count
//!     61     …  records (possibly compressed)
//! ```

use freshet_common::limits::{LOG_OVERHEAD, RECORD_BATCH_HEADER_BYTES};

/// Position of the CRC field.
const CRC_OFFSET: usize = 17;
/// First byte covered by the CRC.
const ATTRIBUTES_OFFSET: usize = 21;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;

/// Attribute bits.
pub const COMPRESSION_MASK: i16 = 0x07;
pub const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
pub const TRANSACTIONAL: i16 = 0x10;
pub const CONTROL: i16 = 0x20;

/// Why a record batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch is {len} bytes, shorter than the {RECORD_BATCH_HEADER_BYTES}-byte header")]
    TooShort { len: usize },
    #[error("record batch declares {declared} bytes but {actual} bytes were sent")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("record batch magic {0} is not supported (Freshet stores format v2, magic 2)")]
    UnsupportedMagic(i8),
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record batch has an unknown compression codec {0}")]
    UnknownCompression(i16),
    #[error("record batch is invalid: {0}")]
    Invalid(String),
}

impl BatchError {
    /// True for damage to the bytes (CRC, lengths), as opposed to a well-formed batch the broker
    /// refuses; the Kafka protocol answers the former with CORRUPT_MESSAGE.
    pub fn is_corruption(&self) -> bool {
        matches!(self, BatchError::TooShort { .. } | BatchError::LengthMismatch { .. } | BatchError::CrcMismatch { .. })
    }
}

/// The fixed header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (which must hold at least the 61 header bytes).
    /// Checks the magic byte, not the CRC.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < RECORD_BATCH_HEADER_BYTES {
            return Err(BatchError::TooShort { len: buf.len() });
        }
        let magic = buf[16] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: u32::from_be_bytes(buf[17..21].try_into().expect("4 bytes")),
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        };
        if (header.batch_length as i64) < (RECORD_BATCH_HEADER_BYTES - LOG_OVERHEAD) as i64 {
            return Err(BatchError::Invalid(format!("batch length {} is too small", header.batch_length)));
        }
        Ok(header)
    }

    /// Whole size of the batch in bytes, including the offset and length fields.
    pub fn size(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Offset just past the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }
}

/// Reads the size of the batch starting at `buf` from its length field, if `buf` holds it.
pub fn peek_size(buf: &[u8]) -> Option<usize> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let len = be_i32(buf, 8);
    (len >= 0).then(|| len as usize + LOG_OVERHEAD)
}

/// CRC-32C over the bytes the batch CRC covers.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// Checks that `batch` is exactly one well-formed v2 batch: length, magic, CRC, counts, and (when
/// uncompressed) the framing of every record. Returns its header.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate_stored(batch)?;
    if header.records_count <= 0 {
        return Err(BatchError::Invalid(format!("batch has {} records", header.records_count)));
    }
    if header.last_offset_delta != header.records_count - 1 {
        return Err(BatchError::Invalid(format!(
            "last offset delta {} does not match {} records",
            header.last_offset_delta, header.records_count
        )));
    }
    if header.compression() > 4 {
        return Err(BatchError::UnknownCompression(header.compression()));
    }
    if header.compression() == 0 {
        validate_records(&batch[RECORD_BATCH_HEADER_BYTES..], header.records_count)?;
    }
    Ok(header)
}

/// Checks length, magic and CRC only: what recovery checks on batches read back from disk.
pub fn validate_stored(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.size() != batch.len() {
        return Err(BatchError::LengthMismatch { declared: header.size(), actual: batch.len() });
    }
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch { stored: header.crc, computed });
    }
    if header.last_offset_delta < 0 {
        return Err(BatchError::Invalid(format!("negative last offset delta {}", header.last_offset_delta)));
    }
    Ok(header)
}

/// Reads a zig-zag varint (Kafka's record encoding); returns the value and bytes used.
pub fn read_varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Some((decoded, i + 1));
        }
    }
    None
}

/// Walks the records of an uncompressed batch, checking every length and that offset deltas run
/// 0, 1, 2, ... so a consumer can never be handed a batch it cannot parse.
fn validate_records(mut buf: &[u8], count: i32) -> Result<(), BatchError> {
    let bad = |what: &str, i: i32| BatchError::Invalid(format!("record {i}: {what}"));
    for i in 0..count {
        let (len, n) = read_varint(buf).ok_or_else(|| bad("truncated length", i))?;
        buf = &buf[n..];
        if len < 0 || len as usize > buf.len() {
            return Err(bad("length runs past the batch", i));
        }
        let (mut rec, rest) = buf.split_at(len as usize);
        buf = rest;
        // attributes (1 byte), timestamp delta, offset delta
        rec = rec.get(1..).ok_or_else(|| bad("truncated attributes", i))?;
        let (_, n) = read_varint(rec).ok_or_else(|| bad("truncated timestamp delta", i))?;
        rec = &rec[n..];
        let (offset_delta, n) = read_varint(rec).ok_or_else(|| bad("truncated offset delta", i))?;
        rec = &rec[n..];
        if offset_delta != i as i64 {
            return Err(bad(&format!("offset delta {offset_delta}, expected {i}"), i));
        }
        rec = skip_bytes_field(rec, true).ok_or_else(|| bad("bad key", i))?;
        rec = skip_bytes_field(rec, true).ok_or_else(|| bad("bad value", i))?;
        let (headers, n) = read_varint(rec).ok_or_else(|| bad("truncated header count", i))?;
        rec = &rec[n..];
        if headers < 0 {
            return Err(bad("negative header count", i));
        }
        for _ in 0..headers {
            rec = skip_bytes_field(rec, false).ok_or_else(|| bad("bad header key", i))?;
            rec = skip_bytes_field(rec, true).ok_or_else(|| bad("bad header value", i))?;
        }
        if !rec.is_empty() {
            return Err(bad("trailing bytes", i));
        }
    }
    if !buf.is_empty() {
        return Err(BatchError::Invalid(format!("{} bytes after the last record", buf.len())));
    }
    Ok(())
}

/// Skips a varint-length-prefixed field (length -1 is null where `nullable`).
fn skip_bytes_field(buf: &[u8], nullable: bool) -> Option<&[u8]> {
    let (len, n) = read_varint(buf)?;
    let buf = &buf[n..];
    match len {
        -1 if nullable => Some(buf),
        l if l >= 0 && l as usize <= buf.len() => Some(&buf[l as usize..]),
        _ => None,
    }
}

/// Sets the broker-owned fields outside the CRC.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Stamps the batch with the broker's clock (`LogAppendTime`) and recomputes its CRC.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_LOG_APPEND;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Appends a zig-zag varint.
pub fn write_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One record to encode with [`encode_batch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimpleRecord {
    pub timestamp: i64,
    pub key: Option<bytes::Bytes>,
    pub value: Option<bytes::Bytes>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A record as [`encode_batch_into`] reads it: encoded from where it is, not converted first.
pub trait EncodeRecord {
    fn timestamp(&self) -> i64;
    fn key(&self) -> Option<&[u8]>;
    fn value(&self) -> Option<&[u8]>;
    fn headers(&self) -> &[(String, Option<Vec<u8>>)];
}

/// Both record types keep the four parts in fields of the same names.
macro_rules! encode_record_fields {
    ($($ty:ty),*) => {$(
        impl EncodeRecord for $ty {
            fn timestamp(&self) -> i64 {
                self.timestamp
            }
            fn key(&self) -> Option<&[u8]> {
                self.key.as_deref()
            }
            fn value(&self) -> Option<&[u8]> {
                self.value.as_deref()
            }
            fn headers(&self) -> &[(String, Option<Vec<u8>>)] {
                &self.headers
            }
        }
    )*};
}

encode_record_fields!(SimpleRecord, freshet_common::topics::Record);

/// At least the bytes [`encode_batch_into`] writes for `records`: the header, then per record
/// its fields and at most 5 varints of 5 bytes (a length, timestamp and offset deltas, key and
/// value lengths) plus the header count, headers with 2 varints each.
pub fn encoded_size_bound<R: EncodeRecord>(records: &[R]) -> usize {
    RECORD_BATCH_HEADER_BYTES
        + records
            .iter()
            .map(|r| {
                let fields = r.key().map_or(0, <[u8]>::len) + r.value().map_or(0, <[u8]>::len);
                let headers: usize =
                    r.headers().iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 10).sum();
                fields + headers + 40
            })
            .sum::<usize>()
}

/// Encodes an uncompressed v2 batch (base offset 0, no producer id). Used by tests, tools and
/// the benchmark; clients bring their own encoders.
pub fn encode_batch(records: &[SimpleRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_size_bound(records));
    encode_batch_into(&mut out, records);
    out
}

/// Appends an uncompressed v2 batch of `records` (base offset 0, no producer id) to `out`, which
/// may already hold other batches: the writer's path, into a buffer it reuses (reserve
/// [`encoded_size_bound`] first to write without growing).
pub fn encode_batch_into<B, R>(out: &mut B, records: &[R])
where
    B: bytes::BufMut + AsMut<[u8]>,
    R: EncodeRecord,
{
    assert!(!records.is_empty(), "a batch holds at least one record");
    let start = out.as_mut().len();
    let base_ts = records[0].timestamp();
    let max_ts = records.iter().map(|r| r.timestamp()).max().unwrap_or(base_ts);
    out.put_bytes(0, RECORD_BATCH_HEADER_BYTES);
    // Records are written straight after the header, each one's length before it (a small
    // scratch buffer holds one record's head to know it).
    let mut head = [0u8; 24];
    for (i, r) in records.iter().enumerate() {
        let (key, value, headers) = (r.key(), r.value(), r.headers());
        let mut h = 1; // attributes: 0
        h += put_varint_at(&mut head[h..], r.timestamp() - base_ts);
        h += put_varint_at(&mut head[h..], i as i64);
        let mut len = h;
        for field in [key, value] {
            len += match field {
                Some(b) => varint_len(b.len() as i64) + b.len(),
                None => varint_len(-1),
            };
        }
        len += varint_len(headers.len() as i64);
        for (k, v) in headers {
            len += varint_len(k.len() as i64) + k.len();
            len += match v {
                Some(v) => varint_len(v.len() as i64) + v.len(),
                None => varint_len(-1),
            };
        }
        put_varint(out, len as i64);
        out.put_slice(&head[..h]);
        for field in [key, value] {
            match field {
                Some(b) => {
                    put_varint(out, b.len() as i64);
                    out.put_slice(b);
                }
                None => put_varint(out, -1),
            }
        }
        put_varint(out, headers.len() as i64);
        for (k, v) in headers {
            put_varint(out, k.len() as i64);
            out.put_slice(k.as_bytes());
            match v {
                Some(v) => {
                    put_varint(out, v.len() as i64);
                    out.put_slice(v);
                }
                None => put_varint(out, -1),
            }
        }
    }
    let batch = &mut out.as_mut()[start..];
    let body_len = batch.len() - RECORD_BATCH_HEADER_BYTES;
    let mut h = Vec::with_capacity(RECORD_BATCH_HEADER_BYTES);
    h.extend_from_slice(&0i64.to_be_bytes());
    h.extend_from_slice(&((RECORD_BATCH_HEADER_BYTES - LOG_OVERHEAD + body_len) as i32).to_be_bytes());
    h.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    h.push(2); // magic
    h.extend_from_slice(&[0; 4]); // crc, filled below
    h.extend_from_slice(&0i16.to_be_bytes()); // attributes
    h.extend_from_slice(&((records.len() - 1) as i32).to_be_bytes());
    h.extend_from_slice(&base_ts.to_be_bytes());
    h.extend_from_slice(&max_ts.to_be_bytes());
    h.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    h.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    h.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    h.extend_from_slice(&(records.len() as i32).to_be_bytes());
    debug_assert_eq!(h.len(), RECORD_BATCH_HEADER_BYTES);
    batch[..RECORD_BATCH_HEADER_BYTES].copy_from_slice(&h);
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Writes a zig-zag varint at the start of `buf` (at least 10 bytes); returns its length.
fn put_varint_at(buf: &mut [u8], value: i64) -> usize {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    let mut n = 0;
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    n + 1
}

/// Appends a zig-zag varint to a buffer.
fn put_varint<B: bytes::BufMut>(out: &mut B, value: i64) {
    let mut buf = [0u8; 10];
    let n = put_varint_at(&mut buf, value);
    out.put_slice(&buf[..n]);
}

/// Bytes of `v` as a zigzag varint.
fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Encodes a transaction marker: a control batch of one record whose key says commit or abort
/// (version 0, type 1 or 0) and whose value holds the coordinator epoch.
pub fn encode_marker(producer_id: i64, producer_epoch: i16, commit: bool, timestamp: i64) -> Vec<u8> {
    let mut key = 0i16.to_be_bytes().to_vec();
    key.extend_from_slice(&(commit as i16).to_be_bytes());
    let mut value = 0i16.to_be_bytes().to_vec();
    value.extend_from_slice(&0i32.to_be_bytes());
    let mut b =
        encode_batch(&[SimpleRecord { timestamp, key: Some(key.into()), value: Some(value.into()), headers: vec![] }]);
    b[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&CONTROL.to_be_bytes());
    set_producer(&mut b, producer_id, producer_epoch, -1, true);
    b
}

/// Stamps an encoded batch with a producer id, epoch and base sequence (and the transactional
/// bit), then recomputes its CRC: how idempotent and transactional producers send batches.
pub fn set_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32, transactional: bool) {
    assert!(batch.len() >= RECORD_BATCH_HEADER_BYTES, "not an encoded batch");
    batch[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_OFFSET..PRODUCER_EPOCH_OFFSET + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES_OFFSET], batch[ATTRIBUTES_OFFSET + 1]]);
    let attributes = if transactional { attributes | TRANSACTIONAL } else { attributes & !TRANSACTIONAL };
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// One record of an uncompressed batch, borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// The records of an uncompressed batch (the broker's own internal topics are written
/// uncompressed). None for a compressed or malformed batch.
pub fn records(batch: &[u8]) -> Option<Vec<RecordView<'_>>> {
    let header = BatchHeader::parse(batch).ok()?;
    let mut out = Vec::with_capacity((header.records_count.max(0) as usize).min(batch.len()));
    for_each_record(batch, |r| {
        out.push(r);
        true
    })?;
    Some(out)
}

/// Calls `f` with each record of an uncompressed batch in order, until it returns false (no
/// vector of them: for readers that convert each record at once). None for a compressed or
/// malformed batch (`f` may have seen records before the damage).
pub fn for_each_record<'a>(batch: &'a [u8], mut f: impl FnMut(RecordView<'a>) -> bool) -> Option<()> {
    let header = BatchHeader::parse(batch).ok()?;
    if header.compression() != 0 {
        return None;
    }
    let mut buf = batch.get(RECORD_BATCH_HEADER_BYTES..header.size())?;
    fn field(buf: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
        let (len, n) = read_varint(buf)?;
        let buf = &buf[n..];
        if len < 0 {
            return Some((None, buf));
        }
        let len = usize::try_from(len).ok()?;
        Some((Some(buf.get(..len)?), &buf[len..]))
    }
    for _ in 0..header.records_count {
        let (len, n) = read_varint(buf)?;
        buf = buf.get(n..)?;
        let mut rec = buf.get(..usize::try_from(len).ok()?)?;
        buf = &buf[rec.len()..];
        rec = rec.get(1..)?; // attributes
        let (ts_delta, n) = read_varint(rec)?;
        rec = &rec[n..];
        let (offset_delta, n) = read_varint(rec)?;
        rec = &rec[n..];
        let (key, rest) = field(rec)?;
        let (value, rest) = field(rest)?;
        let (count, n) = read_varint(rest)?;
        let mut rest = &rest[n..];
        let mut headers = Vec::new();
        for _ in 0..count {
            let (k, r) = field(rest)?;
            let (v, r) = field(r)?;
            headers.push((k?, v));
            rest = r;
        }
        let timestamp =
            if header.is_log_append_time() { header.max_timestamp } else { header.base_timestamp + ts_delta };
        if !f(RecordView { offset: header.base_offset + offset_delta, timestamp, key, value, headers }) {
            break;
        }
    }
    Some(())
}

/// Iterates over the records of an uncompressed batch as (offset, timestamp) pairs; used to
/// answer timestamp lookups inside one batch. Returns None for a malformed batch.
pub fn record_timestamps(batch: &[u8]) -> Option<Vec<(i64, i64)>> {
    let header = BatchHeader::parse(batch).ok()?;
    let mut buf = batch.get(RECORD_BATCH_HEADER_BYTES..header.size())?;
    let mut out = Vec::with_capacity((header.records_count.max(0) as usize).min(buf.len()));
    for _ in 0..header.records_count {
        let (len, n) = read_varint(buf)?;
        buf = buf.get(n..)?;
        let rec = buf.get(..usize::try_from(len).ok()?)?;
        buf = &buf[rec.len()..];
        let (ts_delta, n) = read_varint(rec.get(1..)?)?;
        let (offset_delta, _) = read_varint(rec.get(1 + n..)?)?;
        let ts = if header.is_log_append_time() { header.max_timestamp } else { header.base_timestamp + ts_delta };
        out.push((header.base_offset + offset_delta, ts));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        let records: Vec<SimpleRecord> = (0..n)
            .map(|i| SimpleRecord {
                timestamp: 1_000 + i as i64,
                key: Some(format!("k{i}").into_bytes().into()),
                value: if i % 3 == 0 { None } else { Some(vec![i as u8; i].into()) },
                headers: vec![("h".into(), Some(b"v".to_vec())), ("n".into(), None)],
            })
            .collect();
        encode_batch(&records)
    }

    #[test]
    fn encoded_batches_validate() {
        for n in [1, 2, 17] {
            let b = sample(n);
            let h = validate(&b).unwrap();
            assert_eq!(h.records_count, n as i32);
            assert_eq!(h.last_offset_delta, n as i32 - 1);
            assert_eq!(h.base_timestamp, 1_000);
            assert_eq!(h.max_timestamp, 1_000 + n as i64 - 1);
            assert_eq!(h.size(), b.len());
            assert_eq!(peek_size(&b), Some(b.len()));
        }
    }

    #[test]
    fn records_encode_in_place_after_other_batches() {
        use freshet_common::topics::Record;
        let records: Vec<Record> = (0..5)
            .map(|i| Record {
                key: (i % 2 == 0).then(|| bytes::Bytes::from(format!("k{i}"))),
                value: Some(vec![b'v'; 300 * i].into()),
                timestamp: 5 - i as i64,
                headers: if i == 3 { vec![("h".into(), Some(b"x".to_vec())), ("n".into(), None)] } else { vec![] },
            })
            .collect();
        let simple: Vec<SimpleRecord> = records
            .iter()
            .map(|r| SimpleRecord {
                timestamp: r.timestamp,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
            })
            .collect();
        let expected = encode_batch(&simple);
        let mut out = bytes::BytesMut::new();
        out.extend_from_slice(&sample(2));
        let first = out.len();
        out.reserve(encoded_size_bound(&records));
        let capacity = out.capacity();
        encode_batch_into(&mut out, &records);
        assert_eq!(out.capacity(), capacity, "the bound is enough");
        assert_eq!(&out[first..], &expected[..]);
        let h = validate(&out[first..]).unwrap();
        assert_eq!((h.records_count, h.base_timestamp, h.max_timestamp), (5, 5, 5));
        let got = super::records(&out[first..]).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!((got[2].key, got[2].value.map(<[u8]>::len)), (Some(&b"k2"[..]), Some(600)));
    }

    #[test]
    fn rejects_damage() {
        let b = sample(3);
        assert!(matches!(validate(&b[..40]), Err(BatchError::TooShort { len: 40 })));
        assert!(matches!(validate(&b[..b.len() - 1]), Err(BatchError::LengthMismatch { .. })));
        let mut flipped = b.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(validate(&flipped), Err(BatchError::CrcMismatch { .. })));
        let mut magic = b.clone();
        magic[16] = 1;
        assert_eq!(validate(&magic), Err(BatchError::UnsupportedMagic(1)));
    }

    #[test]
    fn rejects_bad_record_framing_with_good_crc() {
        let mut b = sample(2);
        // Claim three records where two are present, and fix up the CRC.
        b[57..61].copy_from_slice(&3i32.to_be_bytes());
        b[23..27].copy_from_slice(&2i32.to_be_bytes());
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate(&b), Err(BatchError::Invalid(_))));
        assert!(validate_stored(&b).is_ok());
    }

    #[test]
    fn broker_fields() {
        let mut b = sample(2);
        set_base_offset(&mut b, 42, 7);
        let h = validate(&b).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (42, 7));
        set_log_append_time(&mut b, 99_999);
        let h = validate(&b).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99_999);
        assert_eq!(record_timestamps(&b).unwrap(), vec![(42, 99_999), (43, 99_999)]);
    }

    #[test]
    fn markers() {
        let m = encode_marker(42, 3, true, 1_000);
        let h = validate(&m).unwrap();
        assert!(h.is_control() && h.is_transactional());
        assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (42, 3, -1));
        let r = &records(&m).unwrap()[0];
        assert_eq!(r.key, Some(&[0u8, 0, 0, 1][..]));
    }

    #[test]
    fn record_views() {
        let b = sample(4);
        let recs = records(&b).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[1].key, Some(&b"k1"[..]));
        assert_eq!(recs[0].value, None);
        assert_eq!(recs[2].value, Some(&[2u8, 2][..]));
        assert_eq!(recs[3].headers, vec![(&b"h"[..], Some(&b"v"[..])), (&b"n"[..], None)]);
        assert_eq!(recs[3].timestamp, 1_003);
    }

    #[test]
    fn varints_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, -300, i32::MAX as i64, i64::MIN, i64::MAX] {
            let mut buf = Vec::new();
            write_varint(&mut buf, v);
            assert_eq!(read_varint(&buf), Some((v, buf.len())));
        }
        assert_eq!(read_varint(&[0x80, 0x80]), None);
    }
}
