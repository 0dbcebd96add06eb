//! Encoding and decoding record batches (with any compression) for the CLI and tests.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
pub use kafka_protocol::records::{Compression, Record, TimestampType};
use kafka_protocol::records::{RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};

use crate::{ClientError, Result};

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp: i64,
}

/// Encodes records as one v2 batch.
pub fn encode(records: &[NewRecord], compression: Compression) -> Result<Bytes> {
    encode_as(records, compression, None)
}

/// Encodes records as one v2 batch of a transactional producer: `producer` is its (producer id,
/// epoch) and `sequence` the batch's base sequence (the partition's next one for the producer).
pub fn encode_transactional(records: &[NewRecord], producer: (i64, i16), sequence: i32) -> Result<Bytes> {
    encode_as(records, Compression::None, Some((producer, sequence)))
}

fn encode_as(records: &[NewRecord], compression: Compression, producer: Option<((i64, i16), i32)>) -> Result<Bytes> {
    let ((producer_id, producer_epoch), base_sequence) = producer.unwrap_or(((-1, -1), -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch wherever offset - sequence changes; the first
            // record's sequence (-1: not idempotent) becomes the batch's base sequence.
            sequence: if producer.is_some() { base_sequence.wrapping_add(i as i32) } else { i as i32 - 1 },
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(buf.freeze())
}

/// Decodes every complete batch in `bytes` (a fetch may end with a partial one), skipping
/// control batches.
pub fn decode(bytes: &Bytes) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut rest = bytes.clone();
    while rest.len() >= 12 {
        let size = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
        let size = 12 + size.max(0) as usize;
        if size > rest.len() {
            break;
        }
        let mut one = rest.split_to(size);
        let set = RecordBatchDecoder::decode(&mut one).map_err(|e| ClientError::Protocol(e.to_string()))?;
        out.extend(set.records.into_iter().filter(|r| !r.control));
    }
    Ok(out)
}
