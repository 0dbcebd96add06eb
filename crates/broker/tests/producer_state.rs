//! An idempotent producer's sequence state outlives the broker: after a crash (no snapshot of
//! the latest writes) or a clean shutdown (snapshot), a retried batch is recognized as a
//! duplicate and answered with its original offset, and a gap in the sequence is refused.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::{call, t};
use freshet_broker::{Broker, BrokerConfig};
use freshet_log::batch::{encode_batch, set_producer, SimpleRecord};
use freshet_log::fs::StdFs;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

const OUT_OF_ORDER: i16 = ResponseError::OutOfOrderSequenceNumber.code();

fn open(dir: &Path) -> Arc<Broker> {
    let config = BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() };
    Broker::open(config, Arc::new(StdFs)).unwrap()
}

async fn init_producer(broker: &Arc<Broker>) -> (i64, i16) {
    let init = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
    let resp = call(broker, &init, 4).await;
    assert_eq!(resp.error_code, 0);
    (resp.producer_id.0, resp.producer_epoch)
}

/// Sends one idempotent batch of `values` starting at `seq`; returns (error code, base offset).
async fn send(broker: &Arc<Broker>, (pid, epoch): (i64, i16), seq: i32, values: &[&str]) -> (i16, i64) {
    let records: Vec<SimpleRecord> = values
        .iter()
        .map(|v| SimpleRecord { timestamp: 1_000, value: Some(v.as_bytes().to_vec().into()), ..Default::default() })
        .collect();
    let mut batch = encode_batch(&records);
    set_producer(&mut batch, pid, epoch, seq, false);
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        produce_request::TopicProduceData::default().with_name(t("t")).with_partition_data(vec![
            produce_request::PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(batch))),
        ]),
    ]);
    let resp = call(broker, &req, 9).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Writes two batches, "restarts" with `restart`, then checks retries and gaps.
async fn survives(restart: impl FnOnce(Arc<Broker>, &Path) -> Arc<Broker>) {
    let tmp = tempfile::tempdir().unwrap();
    let broker = open(tmp.path());
    broker.create_topic("t", 1, Default::default(), false).unwrap();
    let producer = init_producer(&broker).await;
    assert_eq!(send(&broker, producer, 0, &["a", "b", "c"]).await, (0, 0));
    assert_eq!(send(&broker, producer, 3, &["d", "e"]).await, (0, 3));

    let broker = restart(broker, tmp.path());

    // The retry of the last batch (its acknowledgement was lost) is a duplicate: same offset,
    // nothing appended. So is a retry of the batch before it.
    assert_eq!(send(&broker, producer, 3, &["d", "e"]).await, (0, 3));
    assert_eq!(send(&broker, producer, 0, &["a", "b", "c"]).await, (0, 0));
    // A gap (sequence 7 when 5 is next) is refused; the next sequence is appended.
    assert_eq!(send(&broker, producer, 7, &["h"]).await.0, OUT_OF_ORDER);
    assert_eq!(send(&broker, producer, 5, &["f", "g"]).await, (0, 5));
    let (_, end) = broker.topic("t").unwrap().partition(0).unwrap().offsets().unwrap();
    assert_eq!(end, 7, "duplicates appended nothing");
    // A new producer id starts from scratch.
    let other = init_producer(&broker).await;
    assert_ne!(other.0, producer.0, "producer ids are not reused after a restart");
    assert_eq!(send(&broker, other, 0, &["x"]).await, (0, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_sequences_survive_a_crash() {
    // Dropping the broker without close() leaves no fresh snapshot: the state is rebuilt from
    // the batches in the log.
    survives(|broker, dir| {
        drop(broker);
        open(dir)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_sequences_survive_a_clean_restart() {
    survives(|broker, dir| {
        broker.close();
        drop(broker);
        assert!(snapshot_path(dir).exists(), "a clean shutdown writes the producer state snapshot");
        open(dir)
    })
    .await;
}

fn partition_dir(dir: &Path) -> PathBuf {
    dir.join("topics").join("t").join("0")
}

fn snapshot_path(dir: &Path) -> PathBuf {
    partition_dir(dir).join("producer-state")
}

/// A snapshot taken past what survived of the log must not come back once the log grows past
/// its end again: it would describe batches that are no longer there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_ahead_of_the_log_is_discarded_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = open(tmp.path());
    broker.create_topic("t", 1, Default::default(), false).unwrap();
    let first = init_producer(&broker).await;
    assert_eq!(send(&broker, first, 0, &["a", "b", "c"]).await, (0, 0));
    let first_batch_bytes = std::fs::metadata(segment(tmp.path())).unwrap().len();
    assert_eq!(send(&broker, first, 3, &["d", "e"]).await, (0, 3));
    broker.close();
    drop(broker);
    assert!(snapshot_path(tmp.path()).exists());

    // The second batch is lost (as an unflushed tail is in a power cut).
    let file = std::fs::OpenOptions::new().write(true).open(segment(tmp.path())).unwrap();
    file.set_len(first_batch_bytes).unwrap();
    drop(file);
    let broker = open(tmp.path());
    assert!(!snapshot_path(tmp.path()).exists(), "the snapshot ahead of the log is removed");
    // Another producer fills offsets 3..5, then the broker crashes before a new snapshot.
    let second = init_producer(&broker).await;
    assert_eq!(send(&broker, second, 0, &["x", "y"]).await, (0, 3));
    assert_eq!(send(&broker, second, 2, &["z"]).await, (0, 5));
    drop(broker);
    let broker = open(tmp.path());
    // The first producer's retry of its lost batch is new data, not a duplicate of offset 3.
    assert_eq!(send(&broker, first, 3, &["d", "e"]).await, (0, 6));
    assert_eq!(send(&broker, second, 3, &["w"]).await, (0, 8));
}

fn segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(partition_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert_eq!(logs.len(), 1, "one segment: {logs:?}");
    logs.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_cannot_open_a_data_directory_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = open(tmp.path());
    let config = BrokerConfig { data_dir: tmp.path().to_path_buf(), ..BrokerConfig::default() };
    let err = Broker::open(config, Arc::new(StdFs)).unwrap_err();
    assert!(err.to_string().contains("in use by another freshet process"), "{err}");
    drop(broker);
    open(tmp.path());
}
