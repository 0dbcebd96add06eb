//! Fetch: stored batches served as they are, with long polling (`max_wait_ms` / `min_bytes`),
//! per-partition and per-response byte limits, and fetches from the middle of a batch (the
//! whole batch is returned; clients skip records before their offset).

use std::sync::Arc;
use std::time::Duration;

use freshet_common::limits::{MAX_FETCH_RESPONSE_BYTES, MAX_FETCH_WAIT_MS};
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::ResponseError;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{encode_response_spliced, ready, Ctx, Reply, Responder};
use crate::broker::Broker;
use crate::partition::Partition;

/// One requested partition.
struct Wanted {
    index: i32,
    offset: i64,
    max_bytes: i32,
    /// The partition, or why it cannot be read.
    target: Result<Arc<Partition>, ResponseError>,
}

struct TopicWanted {
    name: TopicName,
    topic_id: uuid::Uuid,
    partitions: Vec<Wanted>,
}

pub(super) fn handle(ctx: Ctx, req: FetchRequest) -> Responder {
    let version = ctx.version;
    if req.session_id != 0 || req.session_epoch > 0 {
        // Freshet never hands out fetch sessions (it answers session id 0), so a client can
        // only name one by mistake.
        let response = FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code());
        return ready(ctx.respond(&response));
    }
    let broker = ctx.broker.clone();
    let topics: Vec<TopicWanted> = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topic(&t.topic);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let target = match &topic {
                        None => Err(ResponseError::UnknownTopicOrPartition),
                        Some(_) if version >= 9 && p.current_leader_epoch > 0 => Err(ResponseError::UnknownLeaderEpoch),
                        Some(topic) => topic.partition(p.partition).ok_or(ResponseError::UnknownTopicOrPartition),
                    };
                    Wanted { index: p.partition, offset: p.fetch_offset, max_bytes: p.partition_max_bytes, target }
                })
                .collect();
            TopicWanted { name: t.topic, topic_id: t.topic_id, partitions }
        })
        .collect();
    let max_wait = Duration::from_millis(req.max_wait_ms.clamp(0, MAX_FETCH_WAIT_MS) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = req.max_bytes.clamp(0, MAX_FETCH_RESPONSE_BYTES) as usize;
    let read_committed = req.isolation_level == 1;
    // Subscribe before the first read, so an append that lands after it wakes the wait.
    let mut watches: Vec<watch::Receiver<u64>> = topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter_map(|w| w.target.as_ref().ok().map(|p| p.watch_high_watermark()))
        .collect();
    let (response, bytes, errors) = read_all(&broker, &topics, max_bytes, read_committed);
    if bytes >= min_bytes || max_wait.is_zero() || errors || watches.is_empty() {
        return ready(respond(&ctx, &response));
    }
    let deadline = Instant::now() + max_wait;
    Box::pin(async move {
        loop {
            for w in watches.iter_mut() {
                w.borrow_and_update();
            }
            let changed = futures::future::select_all(watches.iter().map(|w| {
                let mut w = w.clone();
                Box::pin(async move {
                    let _ = w.changed().await;
                })
            }));
            let timed_out = tokio::select! {
                _ = changed => false,
                _ = tokio::time::sleep_until(deadline) => true,
            };
            let (response, bytes, errors) = read_all(&broker, &topics, max_bytes, read_committed);
            if timed_out || bytes >= min_bytes || errors || Instant::now() >= deadline {
                return respond(&ctx, &response);
            }
        }
    })
}

/// Encodes the response with its record batches referenced, not copied.
fn respond(ctx: &Ctx, response: &FetchResponse) -> Reply {
    let records: Vec<bytes::Bytes> =
        response.responses.iter().flat_map(|t| t.partitions.iter()).filter_map(|p| p.records.clone()).collect();
    encode_response_spliced(ctx.header.correlation_id, ctx.version, response, records)
}

/// Reads every wanted partition once. Returns the response, the record bytes in it, and whether
/// any partition answered with an error (which ends a long poll).
fn read_all(
    broker: &Broker,
    topics: &[TopicWanted],
    max_bytes: usize,
    read_committed: bool,
) -> (FetchResponse, usize, bool) {
    let _ = broker;
    let mut total = 0usize;
    let mut errors = false;
    let mut responses = Vec::with_capacity(topics.len());
    for topic in topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in &topic.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(wanted.index)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_aborted_transactions(if read_committed { Some(vec![]) } else { None });
            let result = wanted.target.clone().and_then(|p| {
                if wanted.offset < 0 {
                    return Err(ResponseError::OffsetOutOfRange);
                }
                let room = max_bytes.saturating_sub(total);
                let limit = (wanted.max_bytes.max(0) as usize).min(room);
                if limit == 0 && total > 0 {
                    // The response is full: report offsets only.
                    let (start, hw, lso) = p.stable_offsets()?;
                    return Ok((bytes::Bytes::new(), hw, lso, start, vec![]));
                }
                let out = p.read(wanted.offset as u64, limit, total == 0, read_committed)?;
                Ok((out.records, out.high_watermark, out.last_stable_offset, out.log_start_offset, out.aborted))
            });
            match result {
                Ok((records, hw, lso, start, aborted)) => {
                    total += records.len();
                    data = data
                        .with_high_watermark(hw as i64)
                        .with_last_stable_offset(lso as i64)
                        .with_log_start_offset(start as i64)
                        .with_records(Some(records));
                    if read_committed {
                        data = data.with_aborted_transactions(Some(
                            aborted
                                .into_iter()
                                .map(|(pid, first)| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(pid))
                                        .with_first_offset(first as i64)
                                })
                                .collect(),
                        ));
                    }
                }
                Err(code) => {
                    errors = true;
                    data = data.with_error_code(code.code()).with_records(None);
                }
            }
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic.name.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        );
    }
    (FetchResponse::default().with_responses(responses), total, errors)
}
