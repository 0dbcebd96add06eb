//! Produce: validate each partition's record batch, queue it for the partition's writer, and
//! answer once it is as durable as `acks` asks (acks=all with flush.messages=1: after the
//! group-commit fsync).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use freshet_log::batch;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::{ready, Ctx, Reply, Responder};
use crate::broker::now_ms;
use crate::error::batch_error_code;
use crate::partition::{AppendResult, Partition};

type Refusal = (ResponseError, String);

/// A partition's answer: known now (refused), or waiting for its append.
enum Slot {
    Done(Refusal),
    Queued(Arc<Partition>, oneshot::Receiver<AppendResult>),
}

pub(super) fn handle(ctx: Ctx, req: ProduceRequest) -> Responder {
    let acks = req.acks;
    let now = now_ms();
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for topic_data in req.topic_data {
        let topic = ctx.broker.topic(&topic_data.name);
        let mut slots = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let slot = (|| -> Result<Slot, Refusal> {
                if !matches!(acks, -1..=1) {
                    return Err((ResponseError::InvalidRequiredAcks, format!("acks must be -1, 0 or 1, not {acks}")));
                }
                let topic = topic.as_ref().ok_or((
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{}' does not exist", topic_data.name.as_str()),
                ))?;
                if crate::broker::is_internal(&topic.name) {
                    return Err((
                        ResponseError::InvalidTopicException,
                        format!("'{}' is an internal topic", topic.name),
                    ));
                }
                let partition = topic.partition(data.index).ok_or((
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{}' has no partition {}", topic.name, data.index),
                ))?;
                let rules = topic.produce_rules();
                if acks == -1 {
                    let min_isr = rules.min_insync_replicas;
                    if min_isr > 1 {
                        return Err((
                            ResponseError::NotEnoughReplicas,
                            format!("min.insync.replicas is {min_isr} but a single node has one replica"),
                        ));
                    }
                }
                let records = data.records.unwrap_or_default();
                let size = batch::peek_size(&records).ok_or((
                    ResponseError::CorruptMessage,
                    format!("{} bytes of records are too short for a record batch", records.len()),
                ))?;
                if size != records.len() {
                    // As Kafka: "Produce requests with version 3 or higher must contain exactly
                    // one record batch".
                    return Err((
                        if size < records.len() { ResponseError::InvalidRecord } else { ResponseError::CorruptMessage },
                        format!("expected exactly one record batch of {size} bytes, got {} bytes", records.len()),
                    ));
                }
                let header = batch::validate(&records)
                    .map_err(|e| (batch_error_code(&e), format!("record batch refused: {e}")))?;
                if header.is_control() {
                    return Err((ResponseError::InvalidRecord, "producers may not write control batches".into()));
                }
                if header.is_transactional() {
                    ctx.broker.txns().check_write(
                        header.producer_id,
                        header.producer_epoch,
                        &topic.name,
                        data.index,
                    )?;
                }
                if rules.keys_required {
                    // A compacted topic keeps records by key: every record needs one.
                    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut records.clone())
                        .map_err(|e| (ResponseError::CorruptMessage, format!("record batch cannot be decoded: {e}")))?;
                    if set.records.iter().any(|r| r.key.is_none()) {
                        return Err((
                            ResponseError::InvalidRecord,
                            "a compacted topic only accepts records with a key".into(),
                        ));
                    }
                }
                tracing::trace!(topic = %topic.name, partition = data.index, pid = header.producer_id, epoch = header.producer_epoch, seq = header.base_sequence, count = header.records_count, "append");
                let rx = partition.append(BytesMut::from(&records[..]), header, now);
                Ok(Slot::Queued(partition, rx))
            })();
            let slot = slot.unwrap_or_else(Slot::Done);
            if let Slot::Done((code, message)) = &slot {
                tracing::debug!(topic = topic_data.name.as_str(), partition = data.index, ?code, %message, "produce refused");
            }
            slots.push((data.index, slot));
        }
        topics.push((topic_data.name, slots));
    }
    if acks == 0 {
        // No answer; the queued appends happen all the same.
        return ready(Reply::Nothing);
    }
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    Box::pin(async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, slots) in topics {
            let mut partitions = Vec::with_capacity(slots.len());
            for (index, slot) in slots {
                let resp = PartitionProduceResponse::default().with_index(index).with_base_offset(-1);
                let outcome = match slot {
                    Slot::Done(refusal) => Err(refusal),
                    Slot::Queued(partition, rx) => match rx.await {
                        Ok(Ok(appended)) => {
                            let durable = if acks == -1 && appended.needs_sync {
                                partition.wait_durable(appended.info.last_offset + 1, timeout).await.map_err(|code| {
                                    let why = match code {
                                        ResponseError::RequestTimedOut => {
                                            "the write did not become durable within the request timeout"
                                        }
                                        _ => "the write could not be made durable (fsync failed)",
                                    };
                                    (code, why.to_string())
                                })
                            } else {
                                Ok(())
                            };
                            durable.map(|()| appended)
                        }
                        Ok(Err(refusal)) => Err(refusal),
                        Err(_) => Err((ResponseError::KafkaStorageError, "the partition's writer stopped".into())),
                    },
                };
                partitions.push(match outcome {
                    Ok(a) => resp
                        .with_base_offset(a.info.base_offset as i64)
                        .with_log_append_time_ms(a.info.log_append_time.unwrap_or(-1))
                        .with_log_start_offset(a.log_start_offset as i64),
                    Err((code, message)) => {
                        resp.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(message)))
                    }
                });
            }
            responses.push(TopicProduceResponse::default().with_name(name).with_partition_responses(partitions));
        }
        ctx.respond(&ProduceResponse::default().with_responses(responses))
    })
}
