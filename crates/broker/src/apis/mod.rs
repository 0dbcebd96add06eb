//! Request dispatch: one module per Kafka API.
//!
//! [`SUPPORTED`] is the single list of APIs and versions Freshet advertises; an API is listed
//! only once its semantics are fully honoured.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use crate::broker::Broker;

mod alter_configs;
mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_configs;
mod fetch;
mod groups;
mod list_offsets;
mod metadata;
mod offsets;
mod produce;
mod splice;
mod txn;

/// What the connection does once a request is handled.
#[derive(Debug)]
pub enum Reply {
    /// Send this frame (length prefix included).
    Frame(Bytes),
    /// Send these chunks, one after the other: a frame whose record batches are not copied.
    Chunks(Vec<Bytes>),
    /// Send nothing (Produce with acks=0).
    Nothing,
    /// Close the connection (the handler failed; the client must not wait for an answer).
    Close,
}

/// The response to one request.
pub type Responder = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Why a frame cannot be answered; the connection is closed, as Kafka closes it.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("API {0:?} is not supported")]
    UnsupportedApi(ApiKey),
    #[error("{api:?} version {version} is not supported (supported: {min}..={max})")]
    UnsupportedVersion { api: ApiKey, version: i16, min: i16, max: i16 },
    #[error("{api:?} version {version} is refused: it carries message format v0/v1; use version {min} or later")]
    RefusedVersion { api: ApiKey, version: i16, min: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed { api: ApiKey, version: i16, reason: String },
}

/// (API, min version, max version) Freshet advertises.
///
/// Produce is advertised from version 0 because librdkafka requires it, although versions 0-2
/// (message format v0/v1) are refused, as Kafka 4 does.
pub(crate) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 8),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
];

/// The APIs and version ranges the broker advertises.
pub fn supported_apis() -> &'static [(ApiKey, i16, i16)] {
    SUPPORTED
}

fn range(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(k, _, _)| *k == api).map(|&(_, lo, hi)| (lo, hi))
}

/// The lowest version the crate decodes, where Freshet advertises less (Produce).
fn decodable_min(api: ApiKey) -> i16 {
    match api {
        ApiKey::Produce => 3,
        _ => 0,
    }
}

/// Encodes a response frame: length, header, body. A response that cannot be encoded (a bug:
/// a field set that the version lacks) is logged and closes the connection.
pub(crate) fn encode_response<R: Encodable + HeaderVersion>(correlation_id: i32, version: i16, response: &R) -> Reply {
    let header_version = R::header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let encode = || -> Result<Bytes, String> {
        let size = header.compute_size(header_version).map_err(|e| e.to_string())?
            + response.compute_size(version).map_err(|e| e.to_string())?;
        let mut buf = BytesMut::with_capacity(4 + size);
        buf.put_i32(size as i32);
        header.encode(&mut buf, header_version).map_err(|e| e.to_string())?;
        response.encode(&mut buf, version).map_err(|e| e.to_string())?;
        debug_assert_eq!(buf.len(), 4 + size, "compute_size disagrees with encode");
        Ok(buf.freeze())
    };
    match encode() {
        Ok(frame) => Reply::Frame(frame),
        Err(e) => {
            debug_assert!(false, "encoding a {} v{version} response failed: {e}", std::any::type_name::<R>());
            tracing::error!(response = std::any::type_name::<R>(), version, error = %e, "cannot encode a response; closing the connection");
            Reply::Close
        }
    }
}

/// Like [`encode_response`], but the large `Bytes` in `records` are referenced, not copied.
pub(crate) fn encode_response_spliced<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    response: &R,
    records: Vec<Bytes>,
) -> Reply {
    let header_version = R::header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let encode = || -> Result<Vec<Bytes>, String> {
        let size = header.compute_size(header_version).map_err(|e| e.to_string())?
            + response.compute_size(version).map_err(|e| e.to_string())?;
        let mut buf = splice::SpliceBuf::new(16 * 1024, records);
        buf.put_i32(size as i32);
        header.encode(&mut buf, header_version).map_err(|e| e.to_string())?;
        response.encode(&mut buf, version).map_err(|e| e.to_string())?;
        let chunks = buf.into_chunks();
        debug_assert_eq!(chunks.iter().map(Bytes::len).sum::<usize>(), 4 + size, "compute_size disagrees with encode");
        Ok(chunks)
    };
    match encode() {
        Ok(chunks) => Reply::Chunks(chunks),
        Err(e) => {
            tracing::error!(response = std::any::type_name::<R>(), version, error = %e, "cannot encode a response; closing the connection");
            Reply::Close
        }
    }
}

pub(crate) fn ready(reply: Reply) -> Responder {
    Box::pin(std::future::ready(reply))
}

/// Context every handler gets.
pub(crate) struct Ctx {
    pub broker: Arc<Broker>,
    pub header: RequestHeader,
    pub version: i16,
    /// The client's address, as Kafka shows it ("/127.0.0.1").
    pub client_host: String,
}

impl Ctx {
    pub fn respond<R: Encodable + HeaderVersion>(&self, response: &R) -> Reply {
        encode_response(self.header.correlation_id, self.version, response)
    }
}

fn decode<T: Decodable>(buf: &mut Bytes, api: ApiKey, version: i16) -> Result<T, FrameError> {
    T::decode(buf, version).map_err(|e| FrameError::Malformed { api, version, reason: e.to_string() })
}

impl Broker {
    /// Handles one request frame (without the length prefix). The synchronous work of the
    /// request is done before this returns; the future completes the response.
    pub fn handle(self: &Arc<Self>, frame: Bytes) -> Result<Responder, FrameError> {
        self.handle_from(frame, "")
    }

    /// [`Broker::handle`] for a request from a client at `client_host` ("/ip").
    pub fn handle_from(self: &Arc<Self>, frame: Bytes, client_host: &str) -> Result<Responder, FrameError> {
        if frame.len() < 8 {
            return Err(FrameError::TooShort(frame.len()));
        }
        let api_key = (&frame[0..2]).get_i16();
        let version = (&frame[2..4]).get_i16();
        let api = ApiKey::try_from(api_key).map_err(|_| FrameError::UnknownApi(api_key))?;
        if api == ApiKey::ApiVersions {
            return Ok(api_versions::handle(self, frame, version));
        }
        let (min, max) = range(api).ok_or(FrameError::UnsupportedApi(api))?;
        if version < min || version > max {
            return Err(FrameError::UnsupportedVersion { api, version, min, max });
        }
        if version < decodable_min(api) {
            return Err(FrameError::RefusedVersion { api, version, min: decodable_min(api) });
        }
        let mut buf = frame;
        let header_version = api.request_header_version(version);
        let header = RequestHeader::decode(&mut buf, header_version).map_err(|e| FrameError::Malformed {
            api,
            version,
            reason: e.to_string(),
        })?;
        let ctx = Ctx { broker: self.clone(), header, version, client_host: client_host.to_string() };
        let responder = match api {
            ApiKey::Produce => produce::handle(ctx, decode(&mut buf, api, version)?),
            ApiKey::Fetch => fetch::handle(ctx, decode(&mut buf, api, version)?),
            ApiKey::ListOffsets => list_offsets::handle(ctx, decode(&mut buf, api, version)?),
            ApiKey::Metadata => metadata::handle(ctx, decode(&mut buf, api, version)?),
            ApiKey::CreateTopics => create_topics::handle(ctx, decode(&mut buf, api, version)?),
            ApiKey::DeleteTopics => delete_topics::handle(ctx, decode(&mut buf, api, version)?),
            ApiKey::DeleteRecords => delete_records::handle(ctx, decode(&mut buf, api, version)?),
            ApiKey::DescribeConfigs => describe_configs::handle(ctx, decode(&mut buf, api, version)?),
            ApiKey::AlterConfigs => alter_configs::handle_legacy(ctx, decode(&mut buf, api, version)?),
            ApiKey::IncrementalAlterConfigs => alter_configs::handle_incremental(ctx, decode(&mut buf, api, version)?),
            ApiKey::CreatePartitions => create_partitions::handle(ctx, decode(&mut buf, api, version)?),
            ApiKey::FindCoordinator => groups::find_coordinator(ctx, decode(&mut buf, api, version)?),
            ApiKey::JoinGroup => groups::join(ctx, decode(&mut buf, api, version)?),
            ApiKey::SyncGroup => groups::sync(ctx, decode(&mut buf, api, version)?),
            ApiKey::Heartbeat => groups::heartbeat(ctx, decode(&mut buf, api, version)?),
            ApiKey::LeaveGroup => groups::leave(ctx, decode(&mut buf, api, version)?),
            ApiKey::DescribeGroups => groups::describe(ctx, decode(&mut buf, api, version)?),
            ApiKey::ListGroups => groups::list(ctx, decode(&mut buf, api, version)?),
            ApiKey::DeleteGroups => groups::delete(ctx, decode(&mut buf, api, version)?),
            ApiKey::OffsetCommit => offsets::commit(ctx, decode(&mut buf, api, version)?),
            ApiKey::OffsetFetch => offsets::fetch(ctx, decode(&mut buf, api, version)?),
            ApiKey::OffsetDelete => offsets::delete(ctx, decode(&mut buf, api, version)?),
            ApiKey::ConsumerGroupHeartbeat => groups::consumer_heartbeat(ctx, decode(&mut buf, api, version)?),
            ApiKey::ConsumerGroupDescribe => groups::consumer_describe(ctx, decode(&mut buf, api, version)?),
            ApiKey::InitProducerId => txn::init_producer_id(ctx, decode(&mut buf, api, version)?),
            ApiKey::AddPartitionsToTxn => txn::add_partitions(ctx, decode(&mut buf, api, version)?),
            ApiKey::AddOffsetsToTxn => txn::add_offsets(ctx, decode(&mut buf, api, version)?),
            ApiKey::EndTxn => txn::end(ctx, decode(&mut buf, api, version)?),
            ApiKey::TxnOffsetCommit => txn::commit_offsets(ctx, decode(&mut buf, api, version)?),
            other => return Err(FrameError::UnsupportedApi(other)),
        };
        Ok(responder)
    }
}

/// Runs blocking work (file creation, fsyncs) off the async workers and answers with its frame.
pub(crate) fn blocking(f: impl FnOnce() -> Reply + Send + 'static) -> Responder {
    Box::pin(async move {
        match tokio::task::spawn_blocking(f).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::error!(error = %e, "request handler panicked; closing the connection");
                Reply::Close
            }
        }
    })
}
