//! Produce: validate each partition's record batch, append it, and answer once it is as
//! durable as `acks` asks (acks=all with flush.messages=1: after the group-commit fsync).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use freshet_log::batch;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{ready, Ctx, Reply, Responder};
use crate::broker::now_ms;
use crate::error::batch_error_code;
use crate::partition::Partition;

/// A partition response still waiting for its batch to become durable.
struct Pending {
    topic: usize,
    partition: usize,
    log: Arc<Partition>,
    end_offset: u64,
}

pub(super) fn handle(ctx: Ctx, req: ProduceRequest) -> Responder {
    let acks = req.acks;
    let version = ctx.version;
    let now = now_ms();
    let mut pending = Vec::new();
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for (ti, topic_data) in req.topic_data.into_iter().enumerate() {
        let topic = ctx.broker.topic(&topic_data.name);
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for (pi, data) in topic_data.partition_data.into_iter().enumerate() {
            let mut resp = PartitionProduceResponse::default().with_index(data.index).with_base_offset(-1);
            let outcome = (|| {
                if !matches!(acks, -1..=1) {
                    return Err((ResponseError::InvalidRequiredAcks, format!("acks must be -1, 0 or 1, not {acks}")));
                }
                if req.transactional_id.is_some() {
                    return Err((
                        ResponseError::TransactionalIdAuthorizationFailed,
                        "transactions are not supported yet".to_string(),
                    ));
                }
                let topic = topic.as_ref().ok_or((
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{}' does not exist", topic_data.name.as_str()),
                ))?;
                let partition = topic.partition(data.index).ok_or((
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{}' has no partition {}", topic.name, data.index),
                ))?;
                if acks == -1 {
                    let min_isr = topic.config().resolve_i64(&ctx.broker.config.topic_defaults, "min.insync.replicas");
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
                    // Kafka: "Produce requests with version 3 or higher must contain exactly one record batch".
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
                let mut bytes = BytesMut::from(&records[..]);
                let (info, log_start, needs_sync) = partition.append(&mut bytes, &header, now)?;
                Ok((info, log_start, needs_sync, partition))
            })();
            match outcome {
                Ok((info, log_start, needs_sync, partition)) => {
                    resp = resp
                        .with_base_offset(info.base_offset as i64)
                        .with_log_append_time_ms(info.log_append_time.unwrap_or(-1))
                        .with_log_start_offset(log_start as i64);
                    if acks == -1 && needs_sync {
                        pending.push(Pending {
                            topic: ti,
                            partition: pi,
                            log: partition,
                            end_offset: info.last_offset + 1,
                        });
                    }
                }
                Err((code, message)) => {
                    tracing::debug!(topic = topic_data.name.as_str(), partition = data.index, ?code, %message, "produce refused");
                    resp = resp.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(message)));
                }
            }
            partitions.push(resp);
        }
        responses.push(TopicProduceResponse::default().with_name(topic_data.name).with_partition_responses(partitions));
    }
    if acks == 0 {
        return Box::pin(std::future::ready(Reply::Nothing));
    }
    let _ = version;
    let response = ProduceResponse::default().with_responses(responses);
    if pending.is_empty() {
        return ready(ctx.respond(&response));
    }
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    Box::pin(async move {
        let mut response = response;
        let waits = pending.iter().map(|p| p.log.wait_durable(p.end_offset, timeout));
        let results = futures::future::join_all(waits).await;
        for (p, result) in pending.iter().zip(results) {
            if let Err(code) = result {
                let resp = &mut response.responses[p.topic].partition_responses[p.partition];
                resp.error_code = code.code();
                resp.base_offset = -1;
                resp.error_message = Some(StrBytes::from_static_str(match code {
                    ResponseError::RequestTimedOut => "the write did not become durable within the request timeout",
                    _ => "the write could not be made durable (fsync failed)",
                }));
            }
        }
        ctx.respond(&response)
    })
}
