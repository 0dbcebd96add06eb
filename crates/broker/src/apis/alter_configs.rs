//! AlterConfigs (replace a topic's overrides) and IncrementalAlterConfigs (set, delete, append
//! to or subtract from single configs). Broker configs are static: set them in the config file.

use freshet_common::config::{config_def, ConfigKind, TopicConfig};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{blocking, Ctx, Responder};
use crate::broker::{Broker, BrokerError};

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

type Outcome = Result<(), (ResponseError, String)>;

fn check_resource(broker: &Broker, resource_type: i8, name: &str) -> Outcome {
    match resource_type {
        RESOURCE_TOPIC => match broker.topic(name) {
            Some(_) => Broker::refuse_internal(name).map_err(|e| (ResponseError::InvalidTopicException, e.to_string())),
            None => Err((ResponseError::UnknownTopicOrPartition, format!("topic '{name}' does not exist"))),
        },
        RESOURCE_BROKER => Err((
            ResponseError::InvalidRequest,
            "broker configs are static in Freshet: set them in its config file".to_string(),
        )),
        other => Err((ResponseError::InvalidRequest, format!("resource type {other} is not supported"))),
    }
}

fn apply(broker: &Broker, name: &str, config: TopicConfig, validate_only: bool) -> Outcome {
    if validate_only {
        return Ok(());
    }
    broker.set_topic_config(name, config).map_err(|e| match e {
        BrokerError::Kafka { code, message } => (code, message),
        other => (ResponseError::KafkaStorageError, other.to_string()),
    })
}

fn invalid(e: impl ToString) -> (ResponseError, String) {
    (ResponseError::InvalidConfig, e.to_string())
}

pub(super) fn handle_legacy(ctx: Ctx, req: AlterConfigsRequest) -> Responder {
    blocking(move || {
        let responses = req
            .resources
            .iter()
            .map(|r| {
                let name = r.resource_name.as_str();
                let outcome = check_resource(&ctx.broker, r.resource_type, name).and_then(|()| {
                    // AlterConfigs replaces the whole set of overrides.
                    let mut config = TopicConfig::default();
                    for c in &r.configs {
                        if let Some(value) = &c.value {
                            config.set(&c.name, value).map_err(invalid)?;
                        }
                    }
                    apply(&ctx.broker, name, config, req.validate_only)
                });
                let resp = alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone());
                match outcome {
                    Ok(()) => resp,
                    Err((code, msg)) => {
                        resp.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(msg)))
                    }
                }
            })
            .collect();
        ctx.respond(&AlterConfigsResponse::default().with_responses(responses))
    })
}

pub(super) fn handle_incremental(ctx: Ctx, req: IncrementalAlterConfigsRequest) -> Responder {
    blocking(move || {
        let responses = req
            .resources
            .iter()
            .map(|r| {
                let name = r.resource_name.as_str();
                let outcome = check_resource(&ctx.broker, r.resource_type, name).and_then(|()| {
                    let topic = ctx.broker.topic(name).expect("checked above");
                    let mut config = topic.config();
                    for c in &r.configs {
                        let key = c.name.as_str();
                        let def = config_def(key).ok_or_else(|| invalid(format!("unknown topic config '{key}'")))?;
                        let value = c.value.as_ref().map(|v| v.to_string());
                        match c.config_operation {
                            SET => {
                                let v = value.ok_or_else(|| invalid(format!("SET {key} needs a value")))?;
                                config.set(key, &v).map_err(invalid)?;
                            }
                            DELETE => config.remove(key).map_err(invalid)?,
                            APPEND | SUBTRACT => {
                                if def.kind != ConfigKind::List {
                                    return Err(invalid(format!(
                                        "{key} is not a list: APPEND and SUBTRACT need a list config"
                                    )));
                                }
                                let current = config.resolve_str(&ctx.broker.config.topic_defaults, key).to_string();
                                let mut items: Vec<String> =
                                    current.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
                                for v in value.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                                    if c.config_operation == APPEND {
                                        if !items.iter().any(|i| i == v) {
                                            items.push(v.to_string());
                                        }
                                    } else {
                                        items.retain(|i| i != v);
                                    }
                                }
                                config.set(key, &items.join(",")).map_err(invalid)?;
                            }
                            op => {
                                return Err((ResponseError::InvalidRequest, format!("unknown config operation {op}")))
                            }
                        }
                    }
                    apply(&ctx.broker, name, config, req.validate_only)
                });
                let resp = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone());
                match outcome {
                    Ok(()) => resp,
                    Err((code, msg)) => {
                        resp.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(msg)))
                    }
                }
            })
            .collect();
        ctx.respond(&IncrementalAlterConfigsResponse::default().with_responses(responses))
    })
}
