//! Every advertised API answers at every advertised version with a response that decodes at
//! that version: a field set that an old version lacks, or a tagged field a version does not
//! expect, would break old clients (librdkafka 2.0.x among them).

mod common;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use common::{call, frame, t};
use freshet_broker::{supported_apis, Broker, BrokerConfig, Reply};
use freshet_log::batch::{encode_batch, SimpleRecord};
use freshet_log::fs::StdFs;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let (_, min, max) = supported_apis().iter().find(|(k, _, _)| *k == key).copied().unwrap();
    // Produce v0-2 are advertised for librdkafka's sake but refused.
    let min = if key == ApiKey::Produce { 3 } else { min };
    min..=max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_answers_at_every_advertised_version() {
    let tmp = tempfile::tempdir().unwrap();
    let config = BrokerConfig { data_dir: tmp.path().to_path_buf(), ..BrokerConfig::default() };
    let broker = Broker::open(config, Arc::new(StdFs)).unwrap();
    let _background = broker.spawn_background();
    broker.create_topic("t", 2, Default::default(), false).unwrap();

    // Timestamps of now: the maintenance pass (running from the start) would delete records
    // older than the default retention, and a fetch below would find its offset gone.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for v in versions(ApiKey::Produce) {
        let batch = encode_batch(&[SimpleRecord {
            timestamp: now + v as i64,
            value: Some(b"v".to_vec().into()),
            ..Default::default()
        }]);
        let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
            produce_request::TopicProduceData::default().with_name(t("t")).with_partition_data(vec![
                produce_request::PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(batch))),
            ]),
        ]);
        let resp = call(&broker, &req, v).await;
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0, "produce v{v}");
    }
    for v in versions(ApiKey::Fetch) {
        let req =
            FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_session_epoch(-1).with_topics(
                vec![fetch_request::FetchTopic::default().with_topic(t("t")).with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(2)
                        .with_current_leader_epoch(-1)
                        .with_partition_max_bytes(1 << 20),
                ])],
            );
        let resp = call(&broker, &req, v).await;
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch v{v}");
        assert!(!p.records.as_ref().unwrap().is_empty(), "fetch v{v} returned no records");
    }
    for v in versions(ApiKey::ListOffsets) {
        let mut timestamps = vec![-1, -2, 0];
        if v >= 7 {
            timestamps.push(-3);
        }
        for ts in timestamps {
            let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default().with_name(t("t")).with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(ts),
                ]),
            ]);
            let resp = call(&broker, &req, v).await;
            assert_eq!(resp.topics[0].partitions[0].error_code, 0, "list offsets v{v} ts {ts}");
        }
    }
    for v in versions(ApiKey::Metadata) {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(t("t")))]))
            .with_include_topic_authorized_operations(v >= 8);
        let resp = call(&broker, &req, v).await;
        assert_eq!(resp.topics[0].partitions.len(), 2, "metadata v{v}");
        let all = call(&broker, &MetadataRequest::default().with_topics(None), v.max(1)).await;
        assert_eq!(all.topics.len(), 3, "t and the two internal topics");
        assert_eq!(all.topics.iter().filter(|t| t.is_internal).count(), 2);
    }
    for v in versions(ApiKey::CreateTopics) {
        let req = CreateTopicsRequest::default().with_validate_only(true).with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(t(&format!("new-{v}")))
                .with_num_partitions(3)
                .with_replication_factor(1)
                .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("1000")))]),
        ]);
        let resp = call(&broker, &req, v).await;
        assert_eq!(resp.topics[0].error_code, 0, "create topics v{v}");
    }
    for v in versions(ApiKey::DeleteTopics) {
        let req = if v >= 6 {
            DeleteTopicsRequest::default()
                .with_topics(vec![delete_topics_request::DeleteTopicState::default().with_name(Some(t("missing")))])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![t("missing")])
        };
        let resp = call(&broker, &req, v).await;
        assert_eq!(resp.responses[0].error_code, kafka_protocol::ResponseError::UnknownTopicOrPartition.code());
    }
    for v in versions(ApiKey::DeleteRecords) {
        let req =
            DeleteRecordsRequest::default().with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(t("t"))
                .with_partitions(vec![delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(1)
                    .with_offset(0)])]);
        let resp = call(&broker, &req, v).await;
        assert_eq!(resp.topics[0].partitions[0].error_code, 0, "delete records v{v}");
    }
    for v in versions(ApiKey::DescribeConfigs) {
        let req = DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_include_documentation(v >= 3)
            .with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t"))
                    .with_configuration_keys(None),
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(StrBytes::from_static_str("0"))
                    .with_configuration_keys(None),
            ]);
        let resp = call(&broker, &req, v).await;
        assert!(resp.results.iter().all(|r| r.error_code == 0 && !r.configs.is_empty()), "describe configs v{v}");
    }
    for v in versions(ApiKey::AlterConfigs) {
        let req = AlterConfigsRequest::default().with_validate_only(true).with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("5000")))]),
        ]);
        let resp = call(&broker, &req, v).await;
        assert_eq!(resp.responses[0].error_code, 0, "alter configs v{v}");
    }
    for v in versions(ApiKey::IncrementalAlterConfigs) {
        let req = IncrementalAlterConfigsRequest::default().with_validate_only(true).with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_configs(vec![incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("cleanup.policy"))
                    .with_config_operation(2)
                    .with_value(Some(StrBytes::from_static_str("delete")))]),
        ]);
        let resp = call(&broker, &req, v).await;
        assert_eq!(resp.responses[0].error_code, 0, "incremental alter configs v{v}");
    }
    for v in versions(ApiKey::CreatePartitions) {
        let req = CreatePartitionsRequest::default().with_validate_only(true).with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(t("t"))
                .with_count(4)
                .with_assignments(None),
        ]);
        let resp = call(&broker, &req, v).await;
        assert_eq!(resp.results[0].error_code, 0, "create partitions v{v}");
    }
    group_apis(&broker).await;
    transaction_apis(&broker).await;
    for v in versions(ApiKey::ApiVersions) {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("test"))
            .with_client_software_version(StrBytes::from_static_str("1.0"));
        let resp = call(&broker, &req, v).await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.api_keys.len(), supported_apis().len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_v3_response_has_no_default_tagged_fields() {
    // librdkafka 2.0.2 cannot parse an ApiVersions v3 response that carries tagged fields at their
    // default values: the body must end with an empty tagged-field section (one zero byte).
    let tmp = tempfile::tempdir().unwrap();
    let broker =
        Broker::open(BrokerConfig { data_dir: tmp.path().to_path_buf(), ..Default::default() }, Arc::new(StdFs))
            .unwrap();
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("librdkafka"))
        .with_client_software_version(StrBytes::from_static_str("2.0.2"));
    let Reply::Frame(bytes) = broker.handle(frame(&req, 3, 7)).unwrap().await else { panic!("no response") };
    // length(4) correlation(4) error(2) compact array: count+1 varint, then entries of
    // key(2) min(2) max(2) tags(1), throttle(4), tags(1).
    let n = supported_apis().len();
    assert_eq!(bytes.len(), 4 + 4 + 2 + 1 + n * 7 + 4 + 1);
    assert_eq!(*bytes.last().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_from_the_future_gets_a_v0_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let broker =
        Broker::open(BrokerConfig { data_dir: tmp.path().to_path_buf(), ..Default::default() }, Arc::new(StdFs))
            .unwrap();
    // ApiVersions v9 with a body this broker cannot know.
    let mut buf = BytesMut::new();
    buf.put_i16(ApiKey::ApiVersions as i16);
    buf.put_i16(9);
    buf.put_i32(42);
    buf.put_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let Reply::Frame(bytes) = broker.handle(buf.freeze()).unwrap().await else { panic!("no response") };
    let mut body = bytes.slice(4..);
    let header = ResponseHeader::decode(&mut body, 0).unwrap();
    assert_eq!(header.correlation_id, 42);
    let resp = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(resp.error_code, kafka_protocol::ResponseError::UnsupportedVersion.code());
    let av = resp.api_keys.iter().find(|k| k.api_key == ApiKey::ApiVersions as i16).unwrap();
    assert_eq!((av.min_version, av.max_version), (0, 3));
    let produce = resp.api_keys.iter().find(|k| k.api_key == ApiKey::Produce as i16).unwrap();
    assert_eq!(produce.min_version, 0, "librdkafka needs Produce advertised from v0");
}

fn sv(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Consumer group APIs at every advertised version: a member joins, syncs, heartbeats, commits
/// and fetches offsets, and leaves; groups are described, listed and deleted.
async fn group_apis(broker: &Arc<Broker>) {
    let clamp = |key: ApiKey, v: i16| v.clamp(*versions(key).start(), *versions(key).end());
    for v in versions(ApiKey::FindCoordinator) {
        let req = if v >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![sv("g")])
        } else {
            FindCoordinatorRequest::default().with_key(sv("g"))
        };
        let resp = call(broker, &req, v).await;
        let (code, port) = if v >= 4 {
            (resp.coordinators[0].error_code, resp.coordinators[0].port)
        } else {
            (resp.error_code, resp.port)
        };
        assert_eq!((code, port), (0, 9092), "find coordinator v{v}");
    }
    for v in versions(ApiKey::JoinGroup) {
        let group = GroupId(sv(&format!("g{v}")));
        let mut join = JoinGroupRequest::default()
            .with_group_id(group.clone())
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(sv(""))
            .with_protocol_type(sv("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                .with_name(sv("range"))
                .with_metadata(Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0]))]);
        let mut resp = call(broker, &join, v).await;
        if v >= 4 {
            assert_eq!(resp.error_code, kafka_protocol::ResponseError::MemberIdRequired.code());
            join = join.with_member_id(resp.member_id.clone());
            resp = call(broker, &join, v).await;
        }
        assert_eq!(resp.error_code, 0, "join v{v}");
        assert_eq!(resp.generation_id, 1);
        assert_eq!(resp.leader, resp.member_id);
        assert_eq!(resp.members.len(), 1);
        let member = resp.member_id.clone();
        let sv5 = clamp(ApiKey::SyncGroup, v);
        let sync = SyncGroupRequest::default()
            .with_group_id(group.clone())
            .with_generation_id(1)
            .with_member_id(member.clone())
            .with_protocol_type(if sv5 >= 5 { Some(sv("consumer")) } else { None })
            .with_protocol_name(if sv5 >= 5 { Some(sv("range")) } else { None })
            .with_assignments(vec![sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(member.clone())
                .with_assignment(Bytes::from_static(b"assigned"))]);
        let resp = call(broker, &sync, sv5).await;
        assert_eq!((resp.error_code, &resp.assignment[..]), (0, &b"assigned"[..]), "sync v{sv5}");
        let hb = HeartbeatRequest::default()
            .with_group_id(group.clone())
            .with_generation_id(1)
            .with_member_id(member.clone());
        assert_eq!(call(broker, &hb, clamp(ApiKey::Heartbeat, v)).await.error_code, 0);
        let ov = clamp(ApiKey::OffsetCommit, v);
        let commit = OffsetCommitRequest::default()
            .with_group_id(group.clone())
            .with_generation_id_or_member_epoch(1)
            .with_member_id(member.clone())
            .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(t("t"))
                .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(7)
                    .with_committed_metadata(Some(sv("meta")))])]);
        let resp = call(broker, &commit, ov).await;
        assert_eq!(resp.topics[0].partitions[0].error_code, 0, "offset commit v{ov}");
        let dv = clamp(ApiKey::DescribeGroups, v);
        let resp = call(broker, &DescribeGroupsRequest::default().with_groups(vec![group.clone()]), dv).await;
        assert_eq!(resp.groups[0].group_state.as_str(), "Stable", "describe v{dv}");
        assert_eq!(resp.groups[0].members[0].member_assignment, Bytes::from_static(b"assigned"));
        let lv = clamp(ApiKey::LeaveGroup, v);
        let leave = LeaveGroupRequest::default()
            .with_group_id(group.clone())
            .with_member_id(if lv < 3 { member.clone() } else { sv("") })
            .with_members(if lv >= 3 {
                vec![leave_group_request::MemberIdentity::default().with_member_id(member.clone())]
            } else {
                vec![]
            });
        let resp = call(broker, &leave, lv).await;
        let code = if lv >= 3 { resp.members[0].error_code } else { resp.error_code };
        assert_eq!((resp.error_code, code), (0, 0), "leave v{lv}");
    }
    for v in versions(ApiKey::OffsetFetch) {
        let req = if v >= 8 {
            OffsetFetchRequest::default().with_groups(vec![offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(sv("g5")))
                .with_topics(Some(vec![offset_fetch_request::OffsetFetchRequestTopics::default()
                    .with_name(t("t"))
                    .with_partition_indexes(vec![0, 1])]))])
        } else {
            OffsetFetchRequest::default().with_group_id(GroupId(sv("g5"))).with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(t("t"))
                    .with_partition_indexes(vec![0, 1]),
            ]))
        };
        let resp = call(broker, &req, v).await;
        let offsets: Vec<i64> = if v >= 8 {
            resp.groups[0].topics[0].partitions.iter().map(|p| p.committed_offset).collect()
        } else {
            resp.topics[0].partitions.iter().map(|p| p.committed_offset).collect()
        };
        assert_eq!(offsets, vec![-1, 7], "offset fetch v{v}");
    }
    for v in versions(ApiKey::ListGroups) {
        let resp = call(broker, &ListGroupsRequest::default(), v).await;
        assert!(resp.groups.iter().any(|g| g.group_id.as_str() == "g5"), "list groups v{v}");
    }
    for v in versions(ApiKey::OffsetDelete) {
        let req = OffsetDeleteRequest::default().with_group_id(GroupId(sv("g0"))).with_topics(vec![
            offset_delete_request::OffsetDeleteRequestTopic::default().with_name(t("t")).with_partitions(vec![
                offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(1),
            ]),
        ]);
        let resp = call(broker, &req, v).await;
        assert_eq!((resp.error_code, resp.topics[0].partitions[0].error_code), (0, 0), "offset delete v{v}");
    }
    for v in versions(ApiKey::DeleteGroups) {
        let group = GroupId(sv(&format!("g{}", v + 1)));
        let resp = call(broker, &DeleteGroupsRequest::default().with_groups_names(vec![group]), v).await;
        assert_eq!(resp.results[0].error_code, 0, "delete groups v{v}");
    }
}

/// Producer ids and transactions at every advertised version: a transactional producer adds a
/// partition and a group, writes, commits offsets in the transaction and commits it.
async fn transaction_apis(broker: &Arc<Broker>) {
    for v in versions(ApiKey::InitProducerId) {
        let init = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
        let resp = call(broker, &init, v).await;
        assert_eq!(resp.error_code, 0, "idempotent init v{v}");
        assert!(resp.producer_id.0 >= 0);
    }
    let clamp = |key: ApiKey, v: i16| v.clamp(*versions(key).start(), *versions(key).end());
    for v in versions(ApiKey::EndTxn) {
        let txn = TransactionalId(sv(&format!("tx{v}")));
        let init = InitProducerIdRequest::default()
            .with_transactional_id(Some(txn.clone()))
            .with_transaction_timeout_ms(60_000);
        let resp = call(broker, &init, clamp(ApiKey::InitProducerId, v)).await;
        assert_eq!(resp.error_code, 0, "transactional init v{v}");
        let (pid, epoch) = (resp.producer_id, resp.producer_epoch);
        let add = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(txn.clone())
            .with_v3_and_below_producer_id(pid)
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(t("t"))
                .with_partitions(vec![0])]);
        let resp = call(broker, &add, clamp(ApiKey::AddPartitionsToTxn, v)).await;
        assert_eq!(
            resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 0,
            "add partitions v{v}"
        );
        let mut batch = encode_batch(&[SimpleRecord {
            timestamp: 1,
            value: Some(b"in-txn".to_vec().into()),
            ..Default::default()
        }]);
        freshet_log::batch::set_producer(&mut batch, pid.0, epoch, 0, true);
        let produce = ProduceRequest::default()
            .with_transactional_id(Some(txn.clone()))
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default().with_name(t("t")).with_partition_data(
                vec![produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch)))],
            )]);
        let resp = call(broker, &produce, 9).await;
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0, "transactional produce");
        let add = AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn.clone())
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(sv("txn-group")));
        assert_eq!(call(broker, &add, clamp(ApiKey::AddOffsetsToTxn, v)).await.error_code, 0, "add offsets v{v}");
        let commit = TxnOffsetCommitRequest::default()
            .with_transactional_id(txn.clone())
            .with_group_id(GroupId(sv("txn-group")))
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                .with_name(t("t"))
                .with_partitions(vec![txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(3)])]);
        let resp = call(broker, &commit, clamp(ApiKey::TxnOffsetCommit, v)).await;
        assert_eq!(resp.topics[0].partitions[0].error_code, 0, "txn offset commit v{v}");
        let end = EndTxnRequest::default()
            .with_transactional_id(txn)
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_committed(true);
        assert_eq!(call(broker, &end, v).await.error_code, 0, "end txn v{v}");
    }
}
