//! CreatePartitions: grow a topic.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{blocking, Ctx, Responder};

pub(super) fn handle(ctx: Ctx, req: CreatePartitionsRequest) -> Responder {
    blocking(move || {
        let broker = &ctx.broker;
        let node = broker.config.node_id;
        let results = req
            .topics
            .iter()
            .map(|t| {
                let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
                let outcome = (|| {
                    if let Some(assignments) = &t.assignments {
                        let current = broker.topic(&t.name).map(|t| t.partition_count()).unwrap_or(0);
                        if assignments.len() as i32 != t.count - current {
                            return Err((
                                ResponseError::InvalidReplicaAssignment,
                                format!(
                                    "{} assignments given for {} new partitions",
                                    assignments.len(),
                                    t.count - current
                                ),
                            ));
                        }
                        if assignments.iter().any(|a| a.broker_ids.iter().map(|b| b.0).ne([node])) {
                            return Err((
                                ResponseError::InvalidReplicaAssignment,
                                format!("new partitions must be assigned to broker {node} alone"),
                            ));
                        }
                    }
                    broker.create_partitions(&t.name, t.count, req.validate_only).map_err(|e| {
                        let code = kafka_protocol::error::ParseResponseErrorCode::err(e.code())
                            .unwrap_or(ResponseError::UnknownServerError);
                        (code, e.to_string())
                    })
                })();
                match outcome {
                    Ok(()) => result,
                    Err((code, message)) => {
                        result.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(message)))
                    }
                }
            })
            .collect();
        ctx.respond(&CreatePartitionsResponse::default().with_results(results))
    })
}
