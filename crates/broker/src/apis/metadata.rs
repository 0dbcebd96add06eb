//! Metadata: brokers, topics and partition leaders; creates topics on first use when allowed.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{blocking, ready, Ctx, Responder};
use crate::broker::{Broker, BrokerError};
use crate::topics::Topic;

/// Operations a client may perform (all of them: Freshet has no ACLs yet), as Kafka's bitfield:
/// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
const TOPIC_OPERATIONS: i32 = (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// Kafka's "not requested" value for authorized operations.
const NOT_REQUESTED: i32 = i32::MIN;

enum Wanted {
    All,
    Some(Vec<(Option<String>, Uuid)>),
}

pub(super) fn handle(ctx: Ctx, req: MetadataRequest) -> Responder {
    let version = ctx.version;
    let wanted = match req.topics {
        None => Wanted::All,
        Some(t) if t.is_empty() && version == 0 => Wanted::All,
        Some(t) => Wanted::Some(t.into_iter().map(|t| (t.name.map(|n| n.to_string()), t.topic_id)).collect()),
    };
    let allow_create = ctx.broker.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let missing: Vec<String> = match &wanted {
        Wanted::All => vec![],
        Wanted::Some(list) => list
            .iter()
            .filter_map(|(name, _)| name.clone())
            .filter(|n| ctx.broker.topic(n).is_none() && freshet_common::validate_topic_name(n).is_ok())
            .collect(),
    };
    let topic_ops =
        if version >= 8 && req.include_topic_authorized_operations { TOPIC_OPERATIONS } else { NOT_REQUESTED };
    let cluster_ops =
        if (8..=10).contains(&version) && req.include_cluster_authorized_operations { 0 } else { NOT_REQUESTED };
    if allow_create && !missing.is_empty() {
        // Creating topics makes and fsyncs files: off the async workers.
        return blocking(move || {
            for name in &missing {
                match ctx.broker.create_topic(name, -1, Default::default(), false) {
                    Ok(_) | Err(BrokerError::Kafka { code: ResponseError::TopicAlreadyExists, .. }) => {}
                    Err(e) => tracing::warn!(topic = %name, error = %e, "auto-creating a topic failed"),
                }
            }
            ctx.respond(&response(&ctx.broker, version, &wanted, topic_ops, cluster_ops))
        });
    }
    ready(ctx.respond(&response(&ctx.broker, version, &wanted, topic_ops, cluster_ops)))
}

fn response(broker: &Broker, version: i16, wanted: &Wanted, topic_ops: i32, cluster_ops: i32) -> MetadataResponse {
    let config = &broker.config;
    let node = BrokerId(config.node_id);
    let brokers = vec![MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(StrBytes::from_string(config.advertised_host.clone()))
        .with_port(config.advertised_port as i32)];
    let topics = match wanted {
        Wanted::All => broker.topics().iter().map(|t| describe(t, node, topic_ops)).collect(),
        Wanted::Some(list) => list
            .iter()
            .map(|(name, id)| {
                let topic = match name {
                    Some(n) => broker.topic(n),
                    None => broker.topic_by_id(*id),
                };
                match (topic, name) {
                    (Some(t), _) => describe(&t, node, topic_ops),
                    (None, Some(n)) => {
                        let code = if freshet_common::validate_topic_name(n).is_err() {
                            ResponseError::InvalidTopicException
                        } else {
                            ResponseError::UnknownTopicOrPartition
                        };
                        MetadataResponseTopic::default()
                            .with_error_code(code.code())
                            .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                            .with_topic_authorized_operations(topic_ops)
                    }
                    (None, None) => MetadataResponseTopic::default()
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_topic_id(*id)
                        .with_topic_authorized_operations(topic_ops),
                }
            })
            .collect(),
    };
    let _ = version;
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(node)
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_ops)
}

fn describe(topic: &Topic, node: BrokerId, topic_ops: i32) -> MetadataResponseTopic {
    let partitions = topic
        .partitions()
        .iter()
        .map(|p| {
            let online = p.is_online();
            MetadataResponsePartition::default()
                .with_error_code(if online { 0 } else { ResponseError::LeaderNotAvailable.code() })
                .with_partition_index(p.index)
                .with_leader_id(if online { node } else { BrokerId(-1) })
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(if online { vec![node] } else { vec![] })
                .with_offline_replicas(if online { vec![] } else { vec![node] })
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(crate::broker::is_internal(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(topic_ops)
}
