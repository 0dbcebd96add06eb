//! What the coordinators rely on being durable is durable whatever the flush settings, and the
//! transaction timer does not undo what an EndTxn just did.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{call, t};
use freshet_broker::txn::TxnState;
use freshet_broker::{Broker, BrokerConfig, Partition};
use freshet_common::config::TopicConfig;
use freshet_log::fs::StdFs;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

fn open(dir: &Path, topic_defaults: TopicConfig) -> Arc<Broker> {
    let config = BrokerConfig { data_dir: dir.to_path_buf(), topic_defaults, ..BrokerConfig::default() };
    Broker::open(config, Arc::new(StdFs)).unwrap()
}

fn relaxed() -> TopicConfig {
    TopicConfig::from_pairs([("flush.messages", "100")]).unwrap()
}

fn partition(broker: &Broker, topic: &str) -> Arc<Partition> {
    broker.topic(topic).unwrap().partition(0).unwrap()
}

/// Whether everything written to the partition is on stable storage now (nothing in the tests
/// runs the maintenance loop that would flush a relaxed log later).
async fn all_durable(p: &Partition) -> bool {
    let (_, end) = p.offsets().unwrap();
    p.wait_durable(end, Duration::from_millis(50)).await.is_ok()
}

/// An EndTxn racing the timer of its expired transaction: the timer must look again under the
/// transactional id's lock and leave the committed transaction alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_does_not_abort_a_transaction_that_just_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = open(tmp.path(), TopicConfig::default());
    broker.create_topic("t", 1, Default::default(), false).unwrap();
    let txns = broker.txns();
    let (pid, epoch) = txns.init(&broker, "tx", 1, None).await.unwrap();
    txns.add_partitions("tx", pid, epoch, vec![("t".into(), 0)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // EndTxn is polled first and takes the lock; the timer then finds the transaction expired
    // (still Ongoing in memory) and queues for the lock behind it.
    let (ended, ()) = tokio::join!(txns.end(&broker, "tx", pid, epoch, true), txns.tick(&broker));
    ended.unwrap();
    let meta = txns.state("tx").unwrap();
    assert_eq!(meta.state, TxnState::CompleteCommit, "the commit stands");
    assert_eq!(meta.epoch, epoch, "the producer was not fenced");
    // A retried EndTxn (commit) still succeeds.
    txns.end(&broker, "tx", pid, epoch, true).await.unwrap();
    // The timer still aborts (and fences) a transaction that has really expired.
    txns.add_partitions("tx", pid, epoch, vec![("t".into(), 0)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    txns.tick(&broker).await;
    let meta = txns.state("tx").unwrap();
    assert_eq!(meta.state, TxnState::CompleteAbort);
    assert_eq!(meta.epoch, epoch + 1);
}

/// With flush.messages > 1 a data write may wait for the next flush, but a transaction marker
/// is fsynced before the coordinator writes CompleteCommit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_are_durable_under_a_relaxed_flush_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = open(tmp.path(), TopicConfig::default());
    broker.create_topic("t", 1, relaxed(), false).unwrap();
    let txns = broker.txns();
    let (pid, epoch) = txns.init(&broker, "tx", 60_000, None).await.unwrap();
    for commit in [true, false] {
        txns.add_partitions("tx", pid, epoch, vec![("t".into(), 0)]).await.unwrap();
        txns.end(&broker, "tx", pid, epoch, commit).await.unwrap();
        let p = partition(&broker, "t");
        assert!(all_durable(&p).await, "the {} marker is durable", if commit { "commit" } else { "abort" });
    }
    let (_, end) = partition(&broker, "t").offsets().unwrap();
    assert_eq!(end, 2, "two markers");
}

/// Broker-wide defaults that relax flushing do not reach the internal topics: committed offsets
/// and transaction state are fsynced before they are acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_topics_stay_durable_under_relaxed_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    for restart in [false, true] {
        let broker = open(tmp.path(), relaxed());
        broker.txns().init(&broker, &format!("tx-{restart}"), 60_000, None).await.unwrap();
        assert!(all_durable(&partition(&broker, "__transaction_state")).await, "restart: {restart}");
        let committed =
            freshet_broker::groups::Committed { offset: 5, leader_epoch: -1, metadata: None, commit_timestamp: 0 };
        broker.groups().offsets.commit("g", vec![(("t".into(), 0), committed)]).await.unwrap();
        assert!(all_durable(&partition(&broker, "__consumer_offsets")).await, "restart: {restart}");
        // DescribeConfigs tells the truth about it.
        let req = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("__consumer_offsets"))
                .with_configuration_keys(Some(vec![StrBytes::from_static_str("flush.messages")])),
        ]);
        let resp = call(&broker, &req, 4).await;
        let value = resp.results[0].configs[0].value.as_ref().map(|v| v.to_string());
        assert_eq!(value.as_deref(), Some("1"));
        drop(broker);
    }
}

const INVALID_TOPIC: i16 = ResponseError::InvalidTopicException.code();

/// AlterConfigs, IncrementalAlterConfigs, CreatePartitions and DeleteRecords refuse the internal
/// topics (validate_only included), as Produce and DeleteTopics do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_to_internal_topics_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = open(tmp.path(), TopicConfig::default());
    for name in ["__consumer_offsets", "__transaction_state"] {
        for validate_only in [true, false] {
            let req = AlterConfigsRequest::default().with_validate_only(validate_only).with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_string(name.into()))
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("flush.messages"))
                        .with_value(Some(StrBytes::from_static_str("1000")))]),
            ]);
            let resp = call(&broker, &req, 1).await;
            assert_eq!(resp.responses[0].error_code, INVALID_TOPIC, "AlterConfigs {name}");

            let req = IncrementalAlterConfigsRequest::default().with_validate_only(validate_only).with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_string(name.into()))
                    .with_configs(vec![incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("cleanup.policy"))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_static_str("delete")))]),
            ]);
            let resp = call(&broker, &req, 1).await;
            assert_eq!(resp.responses[0].error_code, INVALID_TOPIC, "IncrementalAlterConfigs {name}");

            let req = CreatePartitionsRequest::default().with_validate_only(validate_only).with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(t(name))
                    .with_count(3)
                    .with_assignments(None),
            ]);
            let resp = call(&broker, &req, 1).await;
            assert_eq!(resp.results[0].error_code, INVALID_TOPIC, "CreatePartitions {name}");
        }
        let req =
            DeleteRecordsRequest::default().with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(t(name))
                .with_partitions(vec![delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(-1)])]);
        let resp = call(&broker, &req, 1).await;
        assert_eq!(resp.topics[0].partitions[0].error_code, INVALID_TOPIC, "DeleteRecords {name}");

        let topic = broker.topic(name).unwrap();
        assert_eq!(topic.partition_count(), 1);
        assert_eq!(topic.config().get_override("cleanup.policy"), Some("compact"));
        assert_eq!(topic.config().get_override("flush.messages"), Some("1"));
    }
}
