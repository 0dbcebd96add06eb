//! DeleteRecords: moves a partition's log start offset forward; whole segments below it go.

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::{blocking, Ctx, Responder};

pub(super) fn handle(ctx: Ctx, req: DeleteRecordsRequest) -> Responder {
    blocking(move || {
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let topic = ctx.broker.topic(&t.name);
                // Kafka refuses DeleteRecords on its internal topics the same way.
                let internal = crate::broker::is_internal(&t.name);
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let resp = DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index)
                            .with_low_watermark(-1);
                        let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition_index)) else {
                            return resp.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                        };
                        if internal {
                            return resp.with_error_code(ResponseError::InvalidTopicException.code());
                        }
                        if p.offset < -1 {
                            return resp.with_error_code(ResponseError::OffsetOutOfRange.code());
                        }
                        match partition.delete_records(p.offset) {
                            Ok(low) => resp.with_low_watermark(low as i64),
                            Err(code) => resp.with_error_code(code.code()),
                        }
                    })
                    .collect();
                DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        ctx.respond(&DeleteRecordsResponse::default().with_topics(topics))
    })
}
