//! A small asynchronous Kafka client on the `kafka-protocol` codecs: connections with
//! pipelined requests and version negotiation, metadata-based routing to partition leaders,
//! and the admin, produce and fetch calls the `freshet` CLI and benchmarks need.
//!
//! It talks to any Kafka-protocol broker, not only Freshet.

mod client;
mod connection;
pub mod records;

pub use client::{Client, Fetched, PartitionInfo, TopicInfo};
pub use connection::Connection;
pub use kafka_protocol;

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("connection to {addr} failed: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("connection to {0} is closed")]
    Closed(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the broker does not support {api} in a version this client speaks")]
    Unsupported { api: &'static str },
    #[error("{code:?}: {message}")]
    Kafka { code: kafka_protocol::ResponseError, message: String },
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl ClientError {
    /// Builds an error from a non-zero Kafka error code.
    pub fn kafka(code: i16, message: Option<&str>) -> ClientError {
        use kafka_protocol::error::ParseResponseErrorCode;
        let code = code.err().unwrap_or(kafka_protocol::ResponseError::UnknownServerError);
        ClientError::Kafka { code, message: message.map(str::to_string).unwrap_or_else(|| format!("{code:?}")) }
    }

    /// The Kafka error code, if the broker answered with one.
    pub fn code(&self) -> Option<kafka_protocol::ResponseError> {
        match self {
            ClientError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
