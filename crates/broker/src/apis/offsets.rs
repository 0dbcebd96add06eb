//! Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete.

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{ready, Ctx, Responder};
use crate::broker::now_ms;
use crate::groups::Committed;

/// Per topic, per partition: something, in request order.
type PerPartition<T> = Vec<(TopicName, Vec<(i32, T)>)>;

/// Largest commit metadata string (Kafka's `offset.metadata.max.bytes`).
const MAX_METADATA: usize = 4096;

pub(super) fn commit(ctx: Ctx, req: OffsetCommitRequest) -> Responder {
    Box::pin(async move {
        let broker = &ctx.broker;
        let group_error = if req.group_id.is_empty() {
            Some(ResponseError::InvalidGroupId)
        } else {
            broker
                .groups()
                .check_commit(
                    &req.group_id,
                    &req.member_id,
                    req.group_instance_id.as_deref(),
                    req.generation_id_or_member_epoch,
                )
                .err()
        };
        let now = now_ms();
        // Per partition: Ok(entry to commit) or the error.
        let mut results: PerPartition<Result<Committed, ResponseError>> = Vec::new();
        let mut to_commit = Vec::new();
        for t in &req.topics {
            let topic = broker.topic(&t.name);
            let mut parts = Vec::new();
            for p in &t.partitions {
                let r = if let Some(e) = group_error {
                    Err(e)
                } else if topic.as_ref().and_then(|t| t.partition(p.partition_index)).is_none() {
                    Err(ResponseError::UnknownTopicOrPartition)
                } else if p.committed_metadata.as_ref().is_some_and(|m| m.len() > MAX_METADATA) {
                    Err(ResponseError::OffsetMetadataTooLarge)
                } else {
                    let c = Committed {
                        offset: p.committed_offset,
                        leader_epoch: if ctx.version >= 6 { p.committed_leader_epoch } else { -1 },
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        commit_timestamp: now,
                    };
                    to_commit.push(((t.name.to_string(), p.partition_index), c.clone()));
                    Ok(c)
                };
                parts.push((p.partition_index, r));
            }
            results.push((t.name.clone(), parts));
        }
        let write_error = if to_commit.is_empty() {
            None
        } else {
            broker.groups().offsets.commit(&req.group_id, to_commit).await.err()
        };
        let topics = results
            .into_iter()
            .map(|(name, parts)| {
                OffsetCommitResponseTopic::default().with_name(name).with_partitions(
                    parts
                        .into_iter()
                        .map(|(index, r)| {
                            let code = match r {
                                Ok(_) => write_error.map(|e| e.code()).unwrap_or(0),
                                Err(e) => e.code(),
                            };
                            OffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code)
                        })
                        .collect(),
                )
            })
            .collect();
        ctx.respond(&OffsetCommitResponse::default().with_topics(topics))
    })
}

/// The offsets of one group: for the listed partitions, or every committed one.
fn group_offsets(
    ctx: &Ctx,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> PerPartition<Option<Committed>> {
    let committed = ctx.broker.groups().offsets.fetch(group);
    match topics {
        Some(list) => list
            .into_iter()
            .map(|(name, parts)| {
                let got = parts.into_iter().map(|p| (p, committed.get(&(name.to_string(), p)).cloned())).collect();
                (name, got)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Option<Committed>)>> = Default::default();
            for ((t, p), c) in committed {
                by_topic.entry(t).or_default().push((p, Some(c)));
            }
            by_topic.into_iter().map(|(t, parts)| (TopicName(StrBytes::from_string(t)), parts)).collect()
        }
    }
}

fn metadata_of(c: &Option<Committed>) -> Option<StrBytes> {
    Some(StrBytes::from_string(c.as_ref().and_then(|c| c.metadata.clone()).unwrap_or_default()))
}

pub(super) fn fetch(ctx: Ctx, req: OffsetFetchRequest) -> Responder {
    let version = ctx.version;
    let epoch =
        |c: &Option<Committed>| if version >= 5 { c.as_ref().map(|c| c.leader_epoch).unwrap_or(-1) } else { -1 };
    // require_stable: offsets still pending in an open transaction cannot be handed out yet.
    let unstable = |group: &str| req.require_stable && ctx.broker.txns().has_pending_offsets(group);
    if version >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let topics = g
                    .topics
                    .as_ref()
                    .map(|ts| ts.iter().map(|t| (t.name.clone(), t.partition_indexes.clone())).collect());
                let topics = group_offsets(&ctx, &g.group_id, topics)
                    .into_iter()
                    .map(|(name, parts)| {
                        OffsetFetchResponseTopics::default().with_name(name).with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, c)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(c.as_ref().map(|c| c.offset).unwrap_or(-1))
                                        .with_committed_leader_epoch(epoch(&c))
                                        .with_metadata(metadata_of(&c))
                                })
                                .collect(),
                        )
                    })
                    .collect();
                let code = if unstable(&g.group_id) { ResponseError::UnstableOffsetCommit.code() } else { 0 };
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics)
                    .with_error_code(code)
            })
            .collect();
        return ready(ctx.respond(&OffsetFetchResponse::default().with_groups(groups)));
    }
    let topics =
        req.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.clone(), t.partition_indexes.clone())).collect());
    let topics = group_offsets(&ctx, &req.group_id, topics)
        .into_iter()
        .map(|(name, parts)| {
            OffsetFetchResponseTopic::default().with_name(name).with_partitions(
                parts
                    .into_iter()
                    .map(|(p, c)| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(c.as_ref().map(|c| c.offset).unwrap_or(-1))
                            .with_committed_leader_epoch(epoch(&c))
                            .with_metadata(metadata_of(&c))
                    })
                    .collect(),
            )
        })
        .collect();
    let code = if version >= 2 && unstable(&req.group_id) { ResponseError::UnstableOffsetCommit.code() } else { 0 };
    ready(ctx.respond(&OffsetFetchResponse::default().with_topics(topics).with_error_code(code)))
}

pub(super) fn delete(ctx: Ctx, req: OffsetDeleteRequest) -> Responder {
    Box::pin(async move {
        let coordinator = ctx.broker.groups();
        if !coordinator.offsets.has_offsets(&req.group_id) && !coordinator.is_active(&req.group_id) {
            return ctx
                .respond(&OffsetDeleteResponse::default().with_error_code(ResponseError::GroupIdNotFound.code()));
        }
        let subscribed = coordinator.subscribed_topics(&req.group_id);
        let mut deletable = Vec::new();
        let topics: Vec<(TopicName, Vec<(i32, i16)>)> = req
            .topics
            .iter()
            .map(|t| {
                let busy = subscribed.iter().any(|s| s.as_str() == t.name.as_str());
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| {
                        if busy {
                            (p.partition_index, ResponseError::GroupSubscribedToTopic.code())
                        } else {
                            deletable.push((t.name.to_string(), p.partition_index));
                            (p.partition_index, 0)
                        }
                    })
                    .collect();
                (t.name.clone(), parts)
            })
            .collect();
        let error = coordinator.offsets.delete(&req.group_id, Some(deletable)).await.err();
        let topics = topics
            .into_iter()
            .map(|(name, parts)| {
                OffsetDeleteResponseTopic::default().with_name(name).with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, c)| {
                            let c = if c == 0 { error.map(|e| e.code()).unwrap_or(0) } else { c };
                            OffsetDeleteResponsePartition::default().with_partition_index(p).with_error_code(c)
                        })
                        .collect(),
                )
            })
            .collect();
        ctx.respond(&OffsetDeleteResponse::default().with_topics(topics))
    })
}
