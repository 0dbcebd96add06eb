//! ApiVersions: which APIs and versions the broker speaks.
//!
//! A client may open with a version newer than the broker knows (KIP-511); the answer is then
//! UNSUPPORTED_VERSION encoded as v0, with the supported ranges, and the client retries with
//! the highest version both know.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;

use super::{encode_response, ready, Responder, SUPPORTED};
use crate::broker::Broker;

const MAX_VERSION: i16 = 3;

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect()
}

pub(super) fn handle(_broker: &Arc<Broker>, frame: Bytes, version: i16) -> Responder {
    let correlation_id = (&frame[4..8]).get_i32();
    if !(0..=MAX_VERSION).contains(&version) {
        let response = ApiVersionsResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code())
            .with_api_keys(api_keys());
        return ready(encode_response(correlation_id, 0, &response));
    }
    let mut buf = frame;
    let parsed = RequestHeader::decode(&mut buf, ApiKey::ApiVersions.request_header_version(version))
        .and_then(|_| ApiVersionsRequest::decode(&mut buf, version));
    let error = match parsed {
        Ok(req)
            if version >= 3
                && !(valid_software_field(&req.client_software_name)
                    && valid_software_field(&req.client_software_version)) =>
        {
            ResponseError::InvalidRequest.code()
        }
        Ok(_) => 0,
        Err(_) => ResponseError::InvalidRequest.code(),
    };
    let response = ApiVersionsResponse::default().with_error_code(error).with_api_keys(api_keys());
    ready(encode_response(correlation_id, version, &response))
}

/// KIP-511: client software name and version are non-empty, letters, digits, '.', '-'.
fn valid_software_field(value: &str) -> bool {
    !value.is_empty()
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && value.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::valid_software_field;

    #[test]
    fn software_fields() {
        assert!(valid_software_field("librdkafka"));
        assert!(valid_software_field("2.0.2"));
        assert!(valid_software_field("apache-kafka-java"));
        assert!(!valid_software_field(""));
        assert!(!valid_software_field("-x"));
        assert!(!valid_software_field("a b"));
    }
}
