//! DeleteTopics, by name or (v6+) by topic id.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{blocking, Ctx, Responder};

pub(super) fn handle(ctx: Ctx, req: DeleteTopicsRequest) -> Responder {
    blocking(move || {
        let broker = &ctx.broker;
        // v0-5 name topics in `topic_names`; v6 in `topics`, by name or id.
        let wanted: Vec<(Option<String>, uuid::Uuid)> = if ctx.version >= 6 {
            req.topics.iter().map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id)).collect()
        } else {
            req.topic_names.iter().map(|n| (Some(n.to_string()), uuid::Uuid::nil())).collect()
        };
        let responses = wanted
            .into_iter()
            .map(|(name, id)| {
                let name = name.or_else(|| broker.topic_by_id(id).map(|t| t.name.clone()));
                let result = DeletableTopicResult::default()
                    .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))))
                    .with_topic_id(id);
                let Some(name) = name else {
                    return result
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_error_message(Some(StrBytes::from_string(format!("no topic has id {id}"))));
                };
                match broker.delete_topic(&name) {
                    Ok(id) => result.with_topic_id(id),
                    Err(e) => {
                        result.with_error_code(e.code()).with_error_message(Some(StrBytes::from_string(e.to_string())))
                    }
                }
            })
            .collect();
        ctx.respond(&DeleteTopicsResponse::default().with_responses(responses))
    })
}
