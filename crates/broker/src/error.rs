//! Kafka error codes for storage-level failures.

use freshet_log::BatchError;
use kafka_protocol::ResponseError;

/// The error code for a record batch the broker refused.
pub(crate) fn batch_error_code(err: &BatchError) -> ResponseError {
    match err {
        BatchError::TooShort { .. } | BatchError::LengthMismatch { .. } | BatchError::CrcMismatch { .. } => {
            ResponseError::CorruptMessage
        }
        BatchError::UnsupportedMagic(m) if *m < 2 => ResponseError::UnsupportedForMessageFormat,
        BatchError::UnsupportedMagic(_) => ResponseError::CorruptMessage,
        BatchError::UnknownCompression(_) => ResponseError::UnsupportedCompressionType,
        BatchError::Invalid(_) => ResponseError::InvalidRecord,
    }
}
