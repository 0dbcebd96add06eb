//! ListOffsets: the earliest offset, the latest, the first at or after a timestamp, or the one
//! with the largest timestamp.

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;

use super::{blocking, Ctx, Responder};
use crate::partition::Partition;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub(super) fn handle(ctx: Ctx, req: ListOffsetsRequest) -> Responder {
    // Timestamp lookups may read and decompress batches from disk.
    blocking(move || {
        let version = ctx.version;
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let topic = ctx.broker.topic(&t.name);
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let resp = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                        let partition = match &topic {
                            None => None,
                            Some(topic) => topic.partition(p.partition_index),
                        };
                        let Some(partition) = partition else {
                            return resp.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                        };
                        if version >= 4 && p.current_leader_epoch > 0 {
                            return resp.with_error_code(ResponseError::UnknownLeaderEpoch.code());
                        }
                        match lookup(&partition, p.timestamp, version, req.isolation_level == 1) {
                            Ok(Some((offset, ts))) => resp
                                .with_offset(offset)
                                .with_timestamp(ts)
                                .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
                            Ok(None) => resp.with_offset(-1).with_timestamp(-1).with_leader_epoch(-1),
                            Err(code) => resp.with_error_code(code.code()),
                        }
                    })
                    .collect();
                ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        ctx.respond(&ListOffsetsResponse::default().with_topics(topics))
    })
}

/// (offset, timestamp) for a ListOffsets query, or None when no record matches.
fn lookup(
    partition: &Partition,
    timestamp: i64,
    version: i16,
    read_committed: bool,
) -> Result<Option<(i64, i64)>, ResponseError> {
    let (start, hw, lso) = partition.stable_offsets()?;
    match timestamp {
        LATEST => Ok(Some((if read_committed { lso } else { hw } as i64, -1))),
        EARLIEST => Ok(Some((start as i64, -1))),
        MAX_TIMESTAMP if version >= 7 => {
            let Some(batch) = partition.find_batch_with_max_timestamp()? else { return Ok(None) };
            let records = decode(batch)?;
            let best = records.iter().filter(|r| r.0 >= start as i64).max_by_key(|r| (r.1, std::cmp::Reverse(r.0)));
            Ok(best.map(|&(o, t)| (o, t)))
        }
        ts if ts >= 0 => {
            let Some(batch) = partition.find_batch_by_timestamp(ts)? else { return Ok(None) };
            let records = decode(batch)?;
            Ok(records.into_iter().find(|&(o, t)| o >= start as i64 && t >= ts))
        }
        _ => Err(ResponseError::InvalidRequest),
    }
}

/// (offset, timestamp) of every record in a stored batch, decompressing it if needed.
fn decode(batch: Bytes) -> Result<Vec<(i64, i64)>, ResponseError> {
    let mut buf = batch;
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| {
        tracing::error!(error = %e, "a stored batch could not be decoded");
        ResponseError::KafkaStorageError
    })?;
    Ok(set.records.iter().map(|r| (r.offset, r.timestamp)).collect())
}
