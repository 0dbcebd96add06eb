//! Helpers shared by the broker's integration tests: frame a request, hand it to the broker
//! and decode the answer at the same version.

#![allow(dead_code)]

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use freshet_broker::{Broker, Reply};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

pub fn frame<R: Request>(req: &R, version: i16, correlation_id: i32) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("versions-test")));
    let hv = R::header_version(version);
    let mut buf = BytesMut::new();
    header.encode(&mut buf, hv).unwrap();
    req.encode(&mut buf, version).unwrap();
    buf.freeze()
}

pub async fn call<R: Request>(broker: &Arc<Broker>, req: &R, version: i16) -> R::Response {
    let correlation_id = 1000 + version as i32;
    let responder = broker.handle(frame(req, version, correlation_id)).unwrap_or_else(|e| panic!("{e}"));
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), responder)
        .await
        .unwrap_or_else(|_| panic!("{} v{version}: no answer within 10 s", std::any::type_name::<R>()));
    let bytes = match reply {
        Reply::Frame(b) => b,
        Reply::Chunks(c) => Bytes::from(c.concat()),
        other => panic!("{} v{version}: expected a response, got {other:?}", std::any::type_name::<R>()),
    };
    let mut body = bytes.slice(4..);
    let header = ResponseHeader::decode(&mut body, R::Response::header_version(version)).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    let resp = R::Response::decode(&mut body, version)
        .unwrap_or_else(|e| panic!("{} v{version} does not decode: {e}", std::any::type_name::<R>()));
    assert!(body.is_empty(), "{} v{version}: {} trailing bytes", std::any::type_name::<R>(), body.len());
    resp
}

pub fn t(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}
