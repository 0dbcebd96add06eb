//! DescribeConfigs: topic configs (with where each value comes from) and the broker's.

use freshet_common::config::{ConfigSource, TopicConfig, TOPIC_CONFIGS};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{ready, Ctx, Responder};
use crate::broker::Broker;

pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;

/// Kafka's config source codes.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// One described config.
pub(crate) struct Entry {
    pub name: String,
    pub value: String,
    pub source: i8,
    pub read_only: bool,
    pub kind: i8,
    pub doc: &'static str,
    /// (name, value, source), most specific first.
    pub synonyms: Vec<(String, String, i8)>,
}

/// Every config of a topic with `overrides`, resolved against the broker defaults.
pub(crate) fn topic_entries(broker: &Broker, overrides: &TopicConfig) -> Vec<Entry> {
    let defaults = &broker.config.topic_defaults;
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let (value, source) = overrides.resolve(defaults, def.name);
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get_override(def.name) {
                synonyms.push((def.name.to_string(), v.to_string(), DYNAMIC_TOPIC_CONFIG));
            }
            if let Some(v) = defaults.get_override(def.name) {
                synonyms.push((def.broker_name.to_string(), v.to_string(), STATIC_BROKER_CONFIG));
            }
            synonyms.push((def.broker_name.to_string(), def.default.to_string(), DEFAULT_CONFIG));
            Entry {
                name: def.name.to_string(),
                value: value.to_string(),
                source: match source {
                    ConfigSource::Topic => DYNAMIC_TOPIC_CONFIG,
                    ConfigSource::Broker => STATIC_BROKER_CONFIG,
                    ConfigSource::Default => DEFAULT_CONFIG,
                },
                read_only: false,
                kind: def.kind.kafka_code(),
                doc: def.doc,
                synonyms,
            }
        })
        .collect()
}

/// The broker's configs: static (from its config file), read-only.
fn broker_entries(broker: &Broker) -> Vec<Entry> {
    let c = &broker.config;
    let fixed = |name: &str, value: String, kind: i8, doc: &'static str| Entry {
        name: name.to_string(),
        value,
        source: STATIC_BROKER_CONFIG,
        read_only: true,
        kind,
        doc,
        synonyms: vec![],
    };
    let mut out = vec![
        fixed("broker.id", c.node_id.to_string(), 3, "This node's id."),
        fixed("log.dirs", c.data_dir.display().to_string(), 2, "The data directory."),
        fixed(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            1,
            "Create topics named in Metadata on first use.",
        ),
        fixed("num.partitions", c.default_partitions.to_string(), 3, "Partitions of an auto-created topic."),
        fixed("default.replication.factor", "1".into(), 3, "A single node keeps one replica."),
    ];
    for def in TOPIC_CONFIGS {
        let (value, source) = match c.topic_defaults.get_override(def.name) {
            Some(v) => (v.to_string(), STATIC_BROKER_CONFIG),
            None => (def.default.to_string(), DEFAULT_CONFIG),
        };
        if out.iter().any(|e| e.name == def.broker_name) {
            continue;
        }
        out.push(Entry {
            name: def.broker_name.to_string(),
            value,
            source,
            read_only: true,
            kind: def.kind.kafka_code(),
            doc: def.doc,
            synonyms: vec![],
        });
    }
    out
}

pub(super) fn handle(ctx: Ctx, req: DescribeConfigsRequest) -> Responder {
    let version = ctx.version;
    let results = req
        .resources
        .iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = match r.resource_type {
                RESOURCE_TOPIC => match ctx.broker.topic(&r.resource_name) {
                    Some(topic) => Ok(topic_entries(&ctx.broker, &topic.config())),
                    None => Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic '{}' does not exist", r.resource_name.as_str()),
                    )),
                },
                RESOURCE_BROKER => {
                    let name = r.resource_name.as_str();
                    if name.is_empty() || name == ctx.broker.config.node_id.to_string() {
                        Ok(broker_entries(&ctx.broker))
                    } else {
                        Err((
                            ResponseError::InvalidRequest,
                            format!("this node's id is {}, not '{name}'", ctx.broker.config.node_id),
                        ))
                    }
                }
                other => Err((ResponseError::InvalidRequest, format!("resource type {other} is not supported"))),
            };
            match entries {
                Ok(entries) => {
                    let keys = r.configuration_keys.as_ref();
                    let configs = entries
                        .into_iter()
                        .filter(|e| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == e.name)))
                        .map(|e| {
                            let synonyms = if req.include_synonyms {
                                e.synonyms
                                    .into_iter()
                                    .map(|(n, v, s)| {
                                        DescribeConfigsSynonym::default()
                                            .with_name(StrBytes::from_string(n))
                                            .with_value(Some(StrBytes::from_string(v)))
                                            .with_source(s)
                                    })
                                    .collect()
                            } else {
                                vec![]
                            };
                            DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_string(e.name))
                                .with_value(Some(StrBytes::from_string(e.value)))
                                .with_read_only(e.read_only)
                                .with_config_source(e.source)
                                .with_is_sensitive(false)
                                .with_synonyms(synonyms)
                                .with_config_type(if version >= 3 { e.kind } else { 0 })
                                .with_documentation(if version >= 3 && req.include_documentation {
                                    Some(StrBytes::from_static_str(e.doc))
                                } else {
                                    None
                                })
                        })
                        .collect();
                    result.with_configs(configs)
                }
                Err((code, message)) => {
                    result.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(message)))
                }
            }
        })
        .collect();
    ready(ctx.respond(&DescribeConfigsResponse::default().with_results(results)))
}
