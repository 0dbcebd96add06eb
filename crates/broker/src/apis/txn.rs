//! Idempotent and transactional producers: InitProducerId, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit, EndTxn.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::{Ctx, Responder};
use crate::broker::now_ms;
use crate::groups::Committed;

pub(super) fn init_producer_id(ctx: Ctx, req: InitProducerIdRequest) -> Responder {
    Box::pin(async move {
        let broker = &ctx.broker;
        let result = match &req.transactional_id {
            None => broker.txns().ids.next().map(|id| (id, 0)).map_err(|e| (e, String::new())),
            Some(id) if id.is_empty() => Err((ResponseError::InvalidRequest, "empty transactional id".into())),
            Some(id) => {
                let given =
                    (ctx.version >= 3 && req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
                broker.txns().init(broker, id, req.transaction_timeout_ms, given).await
            }
        };
        let response = match result {
            Ok((id, epoch)) => {
                InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(epoch)
            }
            Err((code, why)) => {
                tracing::debug!(?code, %why, "InitProducerId refused");
                InitProducerIdResponse::default()
                    .with_error_code(code.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            }
        };
        ctx.respond(&response)
    })
}

pub(super) fn add_partitions(ctx: Ctx, req: AddPartitionsToTxnRequest) -> Responder {
    Box::pin(async move {
        let broker = &ctx.broker;
        let topics = &req.v3_and_below_topics;
        // Every partition must exist; otherwise none is added.
        let unknown: Vec<(String, i32)> = topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), *p)))
            .filter(|(t, p)| broker.topic(t).and_then(|t| t.partition(*p)).is_none())
            .collect();
        let outcome = if !unknown.is_empty() {
            Err((ResponseError::UnknownTopicOrPartition, String::new()))
        } else {
            let partitions =
                topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), *p))).collect();
            broker
                .txns()
                .add_partitions(
                    &req.v3_and_below_transactional_id,
                    req.v3_and_below_producer_id.0,
                    req.v3_and_below_producer_epoch,
                    partitions,
                )
                .await
        };
        let results = topics
            .iter()
            .map(|t| {
                AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let code = match &outcome {
                                Ok(()) => 0,
                                Err((ResponseError::UnknownTopicOrPartition, _)) => {
                                    if unknown.contains(&(t.name.to_string(), *p)) {
                                        ResponseError::UnknownTopicOrPartition.code()
                                    } else {
                                        ResponseError::OperationNotAttempted.code()
                                    }
                                }
                                Err((code, _)) => code.code(),
                            };
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
            })
            .collect::<Vec<_>>();
        ctx.respond(&AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results))
    })
}

pub(super) fn add_offsets(ctx: Ctx, req: AddOffsetsToTxnRequest) -> Responder {
    Box::pin(async move {
        let code = ctx
            .broker
            .txns()
            .add_offsets(&req.transactional_id, req.producer_id.0, req.producer_epoch, &req.group_id)
            .await
            .err()
            .map(|(c, _)| c.code())
            .unwrap_or(0);
        ctx.respond(&AddOffsetsToTxnResponse::default().with_error_code(code))
    })
}

pub(super) fn commit_offsets(ctx: Ctx, req: TxnOffsetCommitRequest) -> Responder {
    Box::pin(async move {
        let broker = &ctx.broker;
        // v3+ carries the group member, checked like a plain commit.
        let member_error = if ctx.version >= 3 && req.generation_id >= 0 {
            broker
                .groups()
                .check_commit(&req.group_id, &req.member_id, req.group_instance_id.as_deref(), req.generation_id)
                .err()
        } else {
            None
        };
        let now = now_ms();
        let mut entries = Vec::new();
        let mut unknown = Vec::new();
        for t in &req.topics {
            for p in &t.partitions {
                if broker.topic(&t.name).and_then(|tp| tp.partition(p.partition_index)).is_none() {
                    unknown.push((t.name.to_string(), p.partition_index));
                    continue;
                }
                entries.push((
                    (t.name.to_string(), p.partition_index),
                    Committed {
                        offset: p.committed_offset,
                        leader_epoch: if ctx.version >= 2 { p.committed_leader_epoch } else { -1 },
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        commit_timestamp: now,
                    },
                ));
            }
        }
        let error = match member_error {
            Some(e) => Some(e),
            None if unknown.is_empty() => broker
                .txns()
                .commit_offsets(&req.transactional_id, req.producer_id.0, req.producer_epoch, &req.group_id, entries)
                .await
                .err()
                .map(|(c, _)| c),
            None => None,
        };
        let topics = req
            .topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let code = if unknown.contains(&(t.name.to_string(), p.partition_index)) {
                                ResponseError::UnknownTopicOrPartition.code()
                            } else if !unknown.is_empty() {
                                ResponseError::OperationNotAttempted.code()
                            } else {
                                error.map(|e| e.code()).unwrap_or(0)
                            };
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
            })
            .collect();
        ctx.respond(&TxnOffsetCommitResponse::default().with_topics(topics))
    })
}

pub(super) fn end(ctx: Ctx, req: EndTxnRequest) -> Responder {
    Box::pin(async move {
        let broker = &ctx.broker;
        let result = broker
            .txns()
            .end(broker, &req.transactional_id, req.producer_id.0, req.producer_epoch, req.committed)
            .await;
        let code = match result {
            Ok(()) => 0,
            Err((code, why)) => {
                tracing::debug!(?code, %why, "EndTxn refused");
                code.code()
            }
        };
        ctx.respond(&EndTxnResponse::default().with_error_code(code))
    })
}
