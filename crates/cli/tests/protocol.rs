//! Kafka error codes and hostile input, over TCP against a real `freshet serve`.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::Server;
use freshet_client::kafka_protocol::messages::*;
use freshet_client::kafka_protocol::protocol::StrBytes;
use freshet_client::kafka_protocol::ResponseError;
use freshet_client::records::{self, Compression, NewRecord};
use freshet_client::{Client, Connection};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// `n` records stamped now: old timestamps would fall to the topics' default retention
/// (seven days) while a test runs.
fn batch(n: usize) -> Bytes {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let recs: Vec<NewRecord> = (0..n)
        .map(|i| NewRecord {
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("v{i}"))),
            headers: vec![],
            timestamp: now + i as i64,
        })
        .collect();
    records::encode(&recs, Compression::None).unwrap()
}

async fn produce_code(client: &Client, topic: &str, partition: i32, batch: Bytes, acks: i16) -> i16 {
    let conn = client.bootstrap();
    let req = Client::produce_request(topic, partition, batch, acks, Duration::from_secs(10));
    let resp = conn.send(&req, 9).await.expect("produce response");
    resp.responses[0].partition_responses[0].error_code
}

#[test]
fn produce_errors_have_the_right_codes_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    rt().block_on(async {
        let client = Client::connect(&server.addr).await.unwrap();
        client.create_topic("t", 2, &[("max.message.bytes".into(), "500".into())]).await.unwrap();
        assert_eq!(
            produce_code(&client, "missing", 0, batch(1), -1).await,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(produce_code(&client, "t", 7, batch(1), -1).await, ResponseError::UnknownTopicOrPartition.code());
        assert_eq!(produce_code(&client, "t", 0, batch(1), 2).await, ResponseError::InvalidRequiredAcks.code());
        // A flipped bit inside the CRC-covered part.
        let mut corrupt = BytesMut::from(&batch(3)[..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x01;
        assert_eq!(produce_code(&client, "t", 0, corrupt.freeze(), -1).await, ResponseError::CorruptMessage.code());
        // Truncated batch.
        let b = batch(3);
        assert_eq!(
            produce_code(&client, "t", 0, b.slice(..b.len() - 5), -1).await,
            ResponseError::CorruptMessage.code()
        );
        // Two batches where v3+ allows one.
        let mut two = BytesMut::from(&batch(1)[..]);
        two.extend_from_slice(&batch(1));
        assert_eq!(produce_code(&client, "t", 0, two.freeze(), -1).await, ResponseError::InvalidRecord.code());
        // Message format v1 (magic 1).
        let mut old = BytesMut::from(&batch(1)[..]);
        old[16] = 1;
        assert_eq!(
            produce_code(&client, "t", 0, old.freeze(), -1).await,
            ResponseError::UnsupportedForMessageFormat.code()
        );
        // Larger than max.message.bytes.
        let big: Vec<NewRecord> = vec![NewRecord { value: Some(Bytes::from(vec![b'x'; 2000])), ..Default::default() }];
        let big = records::encode(&big, Compression::None).unwrap();
        assert_eq!(produce_code(&client, "t", 1, big, -1).await, ResponseError::MessageTooLarge.code());
        // None of it reached the log.
        assert_eq!(client.list_offset("t", 0, -1).await.unwrap(), 0);
        assert_eq!(client.list_offset("t", 1, -1).await.unwrap(), 0);
        // A good batch still works, at offset 0.
        assert_eq!(client.produce("t", 0, batch(2), -1).await.unwrap(), 0);
        // min.insync.replicas above 1 cannot be met by a single node.
        client.alter_topic_configs("t", &[("min.insync.replicas".into(), Some("2".into()))]).await.unwrap();
        assert_eq!(produce_code(&client, "t", 0, batch(1), -1).await, ResponseError::NotEnoughReplicas.code());
        assert_eq!(produce_code(&client, "t", 0, batch(1), 1).await, 0, "acks=1 does not need replicas");
    });
}

#[test]
fn admin_and_fetch_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(tmp.path(), 0, &["--auto-create-topics", "false"]);
    rt().block_on(async {
        let client = Client::connect(&server.addr).await.unwrap();
        let code = |r: Result<(), freshet_client::ClientError>| r.unwrap_err().code();
        assert_eq!(code(client.create_topic("bad name", 1, &[]).await), Some(ResponseError::InvalidTopicException));
        assert_eq!(
            code(client.create_topic(&"x".repeat(250), 1, &[]).await),
            Some(ResponseError::InvalidTopicException)
        );
        assert_eq!(code(client.create_topic("z", 0, &[]).await), Some(ResponseError::InvalidPartitions));
        assert_eq!(
            code(client.create_topic("z", 1, &[("retention.ms".into(), "soon".into())]).await),
            Some(ResponseError::InvalidConfig)
        );
        assert_eq!(
            code(client.create_topic("z", 1, &[("compression.type".into(), "gzip".into())]).await),
            Some(ResponseError::InvalidConfig),
            "recompression is not supported and must not be accepted silently"
        );
        client.create_topic("a.b", 1, &[]).await.unwrap();
        assert_eq!(code(client.create_topic("a.b", 1, &[]).await), Some(ResponseError::TopicAlreadyExists));
        assert_eq!(code(client.create_topic("a_b", 1, &[]).await), Some(ResponseError::InvalidTopicException));
        assert_eq!(code(client.create_partitions("a.b", 1).await), Some(ResponseError::InvalidPartitions));
        assert_eq!(code(client.create_partitions("nope", 3).await), Some(ResponseError::UnknownTopicOrPartition));
        assert_eq!(code(client.delete_topic("nope").await), Some(ResponseError::UnknownTopicOrPartition));
        assert_eq!(
            code(client.alter_topic_configs("a.b", &[("no.such.config".into(), Some("1".into()))]).await),
            Some(ResponseError::InvalidConfig)
        );
        // Metadata for a missing topic does not create it when auto-creation is off.
        let md = client.metadata(Some(&["ghost"]), true).await.unwrap();
        assert_eq!(md[0].error_code, ResponseError::UnknownTopicOrPartition.code());
        // Fetch and ListOffsets errors.
        client.produce("a.b", 0, batch(5), -1).await.unwrap();
        let err = client.fetch("a.b", 0, 99, Duration::from_millis(0), 1 << 20).await.unwrap_err();
        assert_eq!(err.code(), Some(ResponseError::OffsetOutOfRange));
        let err = client.delete_records("a.b", 0, 99).await.unwrap_err();
        assert_eq!(err.code(), Some(ResponseError::OffsetOutOfRange));
        assert_eq!(client.delete_records("a.b", 0, 2).await.unwrap(), 2);
        let err = client.fetch("a.b", 0, 1, Duration::from_millis(0), 1 << 20).await.unwrap_err();
        assert_eq!(err.code(), Some(ResponseError::OffsetOutOfRange));
        assert_eq!(client.list_offset("a.b", 0, -2).await.unwrap(), 2);
        // Fetch at the end waits max_wait_ms, then answers empty.
        let started = Instant::now();
        let (bytes, hw) = client.fetch("a.b", 0, 5, Duration::from_millis(400), 1 << 20).await.unwrap();
        assert!(bytes.is_empty() && hw == 5);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(350) && waited < Duration::from_secs(5), "waited {waited:?}");
    });
}

#[test]
fn a_long_poll_returns_as_soon_as_data_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    rt().block_on(async {
        let client = std::sync::Arc::new(Client::connect(&server.addr).await.unwrap());
        client.create_topic("lp", 1, &[]).await.unwrap();
        let reader = client.clone();
        let started = Instant::now();
        let fetch = tokio::spawn(async move { reader.fetch("lp", 0, 0, Duration::from_secs(20), 1 << 20).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A second connection produces while the first waits.
        let writer = Client::connect(&server.addr).await.unwrap();
        writer.produce("lp", 0, batch(3), -1).await.unwrap();
        let (bytes, hw) = tokio::time::timeout(Duration::from_secs(10), fetch).await.unwrap().unwrap().unwrap();
        assert_eq!(hw, 3);
        assert_eq!(records::decode(&bytes).unwrap().len(), 3);
        assert!(started.elapsed() < Duration::from_secs(5), "the fetch waited {:?}", started.elapsed());
    });
}

/// Sends raw bytes on a fresh socket and says whether the server closed the connection.
async fn closes_on(addr: &str, bytes: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[test]
fn malformed_frames_close_the_connection_and_the_broker_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    rt().block_on(async {
        let client = Client::connect(&server.addr).await.unwrap();
        client.create_topic("safe", 1, &[]).await.unwrap();
        client.produce("safe", 0, batch(2), -1).await.unwrap();
        let frame = |body: &[u8]| {
            let mut b = BytesMut::new();
            b.put_i32(body.len() as i32);
            b.put_slice(body);
            b.to_vec()
        };
        // Negative and huge sizes.
        assert!(closes_on(&server.addr, &(-5i32).to_be_bytes()).await);
        assert!(closes_on(&server.addr, &(1i32 << 30).to_be_bytes()).await);
        // Too short for a header; an unknown API key; an unsupported API; an unsupported version.
        assert!(closes_on(&server.addr, &frame(&[0, 1])).await);
        assert!(closes_on(&server.addr, &frame(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0])).await);
        assert!(closes_on(&server.addr, &frame(&[0, 11, 0, 5, 0, 0, 0, 1, 0, 0])).await, "a JoinGroup cut short");
        assert!(
            closes_on(&server.addr, &frame(&[0, 57, 0, 0, 0, 0, 0, 1, 0, 0])).await,
            "UpdateFeatures is not served"
        );
        assert!(closes_on(&server.addr, &frame(&[0, 3, 0, 99, 0, 0, 0, 1, 0, 0])).await);
        assert!(closes_on(&server.addr, &frame(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0])).await, "Produce v1 is refused");
        // A Metadata v0 request whose topic array claims a billion entries.
        let mut md = vec![0, 3, 0, 0, 0, 0, 0, 1, 0, 0];
        md.extend_from_slice(&(1_000_000_000i32).to_be_bytes());
        assert!(closes_on(&server.addr, &frame(&md)).await);
        // Random garbage after a valid header.
        let mut junk = vec![0, 0, 0, 9, 0, 0, 0, 1, 0, 0];
        junk.extend((0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        assert!(closes_on(&server.addr, &frame(&junk)).await);
        // The broker is still up, and the data is as it was.
        let again = Client::connect(&server.addr).await.unwrap();
        assert_eq!(again.list_offset("safe", 0, -1).await.unwrap(), 2);
        let (bytes, _) = again.fetch("safe", 0, 0, Duration::from_millis(0), 1 << 20).await.unwrap();
        assert_eq!(records::decode(&bytes).unwrap().len(), 2);
    });
}

#[test]
fn api_versions_fallback_for_a_newer_client() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    rt().block_on(async {
        let conn = Connection::connect(&server.addr, "test").await.unwrap();
        // v4 does not exist here yet: the answer is a v0 response with UNSUPPORTED_VERSION.
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("future-client"))
            .with_client_software_version(StrBytes::from_static_str("9.9"));
        let mut b = BytesMut::new();
        use freshet_client::kafka_protocol::protocol::Encodable;
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(4)
            .with_correlation_id(77)
            .with_client_id(Some(StrBytes::from_static_str("future")));
        header.encode(&mut b, 2).unwrap();
        req.encode(&mut b, 4).unwrap();
        let mut framed = BytesMut::new();
        framed.put_i32(b.len() as i32);
        framed.put_slice(&b);
        let body = conn.send_raw(framed.freeze(), 77).await.unwrap();
        use freshet_client::kafka_protocol::protocol::Decodable;
        let mut body = body.slice(4..);
        let resp = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(resp.error_code, ResponseError::UnsupportedVersion.code());
        assert!(resp.api_keys.iter().any(|k| k.api_key == ApiKey::Fetch as i16));
    });
}

#[test]
fn too_many_connections_are_refused_without_harm() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(tmp.path(), 0, &["--max-connections", "3"]);
    rt().block_on(async {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(Client::connect(&server.addr).await.unwrap());
        }
        // The fourth is closed at once.
        assert!(closes_on(&server.addr, &[]).await);
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let c = Client::connect(&server.addr).await.unwrap();
        c.create_topic("ok", 1, &[]).await.unwrap();
    });
}

#[test]
fn sigterm_shuts_down_cleanly_and_nothing_needs_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    rt().block_on(async {
        let client = Client::connect(&server.addr).await.unwrap();
        client.create_topic("clean", 2, &[]).await.unwrap();
        for i in 0..20 {
            client.produce("clean", i % 2, batch(10), 1).await.unwrap();
        }
    });
    assert!(server.stop().success(), "serve exits 0 on SIGTERM");
    // Every index is complete: a restart scans nothing and finds everything.
    let seg = tmp.path().join("topics/clean/0/00000000000000000000.index");
    assert!(seg.exists());
    server.restart();
    rt().block_on(async {
        let client = Client::connect(&server.addr).await.unwrap();
        assert_eq!(client.list_offset("clean", 0, -1).await.unwrap(), 100);
        assert_eq!(client.list_offset("clean", 1, -1).await.unwrap(), 100);
    });
}
