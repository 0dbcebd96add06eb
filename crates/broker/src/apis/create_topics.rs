//! CreateTopics.

use std::collections::HashMap;

use freshet_common::config::TopicConfig;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::describe_configs::topic_entries;
use super::{blocking, Ctx, Responder};
use crate::broker::BrokerError;

pub(super) fn handle(ctx: Ctx, req: CreateTopicsRequest) -> Responder {
    blocking(move || {
        let version = ctx.version;
        let broker = &ctx.broker;
        let node = broker.config.node_id;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for t in &req.topics {
            *seen.entry(t.name.to_string()).or_default() += 1;
        }
        let topics = req
            .topics
            .iter()
            .map(|t| {
                let name = t.name.to_string();
                let outcome = (|| -> Result<(uuid::Uuid, i32, TopicConfig), (ResponseError, String)> {
                    if seen[&name] > 1 {
                        return Err((ResponseError::InvalidRequest, format!("topic '{name}' appears more than once")));
                    }
                    let mut partitions = t.num_partitions;
                    if !t.assignments.is_empty() {
                        if t.num_partitions != -1 || t.replication_factor != -1 {
                            return Err((
                                ResponseError::InvalidRequest,
                                "give either assignments or num_partitions and replication_factor, not both".into(),
                            ));
                        }
                        if let Some(a) = t.assignments.iter().find(|a| a.broker_ids.iter().map(|b| b.0).ne([node])) {
                            return Err((
                                ResponseError::InvalidReplicaAssignment,
                                format!("partition {} must be assigned to broker {node} alone", a.partition_index),
                            ));
                        }
                        partitions = t.assignments.len() as i32;
                    } else if t.replication_factor != -1 && t.replication_factor != 1 {
                        return Err((
                            ResponseError::InvalidReplicationFactor,
                            format!(
                                "replication factor {} is larger than the 1 available broker",
                                t.replication_factor
                            ),
                        ));
                    }
                    let mut config = TopicConfig::default();
                    for c in &t.configs {
                        let value = c.value.as_ref().ok_or_else(|| {
                            (ResponseError::InvalidConfig, format!("config '{}' has a null value", c.name.as_str()))
                        })?;
                        config.set(&c.name, value).map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
                    }
                    let (id, partitions) = broker
                        .create_topic(&name, partitions, config.clone(), req.validate_only)
                        .map_err(|e| match e {
                            BrokerError::Kafka { code, message } => (code, message),
                            other => (ResponseError::KafkaStorageError, other.to_string()),
                        })?;
                    Ok((id, partitions, config))
                })();
                let result = CreatableTopicResult::default().with_name(t.name.clone());
                match outcome {
                    Ok((id, partitions, config)) => {
                        let configs = topic_entries(broker, &config)
                            .into_iter()
                            .map(|e| {
                                CreatableTopicConfigs::default()
                                    .with_name(StrBytes::from_string(e.name))
                                    .with_value(Some(StrBytes::from_string(e.value)))
                                    .with_read_only(e.read_only)
                                    .with_config_source(e.source)
                                    .with_is_sensitive(false)
                            })
                            .collect();
                        result
                            .with_topic_id(id)
                            .with_num_partitions(partitions)
                            .with_replication_factor(1)
                            .with_configs(if version >= 5 { Some(configs) } else { None })
                    }
                    Err((code, message)) => result
                        .with_error_code(code.code())
                        .with_error_message(Some(StrBytes::from_string(message)))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_configs(None),
                }
            })
            .collect();
        ctx.respond(&CreateTopicsResponse::default().with_topics(topics))
    })
}
